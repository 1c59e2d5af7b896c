import ast
import ipaddress
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from components import firewall, membership, rendering
from components.config import build_spec
from tests.conftest import skip_or_fail

SECRETS = rendering.ClusterSecrets("su-pw'\"x", "repl-pw", "rewind-pw", "rest-pw", "raft-pw")
TLS_PEMS = rendering.NodeTlsPems(
    "-----BEGIN CERTIFICATE-----\nthe-ca\n-----END CERTIFICATE-----\n",
    "-----BEGIN CERTIFICATE-----\nthe-node\n-----END CERTIFICATE-----\n",
    "-----BEGIN PRIVATE KEY-----\nnode-key-pw\n-----END PRIVATE KEY-----\n")
SPECS = {
    "rocky8-default": {},
    "rocky8-five-proxy-ca": {"nodeCount": 5, "httpProxy": "http://10.0.0.1:3128",
                             "extraCaCertificates": "-----BEGIN CERTIFICATE-----\nMIIB\n"
                                                    "-----END CERTIFICATE-----\n",
                             "pythonIndexUrl": "http://10.0.0.1:8000/simple",
                             "watchdogMode": "off"},
    "debian12-distro": {"osFamily": "debian12", "postgresSource": "distro",
                        "postgresVersion": 15, "httpProxy": "http://10.0.0.1:3128"},
    "debian12-pgdg": {"osFamily": "debian12", "postgresVersion": 17,
                      "nodeTags": {"srv3": {"nofailover": True, "failover_priority": 0}}},
    "debian12-tls-off": {"osFamily": "debian12", "tls": False},
}


def spec_and_addresses(name):
    spec = build_spec(SPECS[name])
    return spec, {n.name: n.address for n in spec.nodes}


def rendered(name, node_index=0):
    spec, addresses = spec_and_addresses(name)
    text = rendering.render_patroni_yml(spec, spec.nodes[node_index], addresses, SECRETS)
    return spec, addresses, yaml.safe_load(text), text


def patroni_known_keys() -> set[str]:
    """Every key Patroni's validator names, plus every string literal in its source."""
    patroni = pytest.importorskip("patroni")
    from patroni import validator
    known: set[str] = set()

    def walk(obj, seen):
        if id(obj) in seen:
            return
        seen.add(id(obj))
        if isinstance(obj, str):
            known.add(obj)
        elif isinstance(obj, dict):
            for key, value in obj.items():
                walk(key, seen)
                walk(value, seen)
        elif isinstance(obj, (list, tuple, set)):
            for item in obj:
                walk(item, seen)
        elif type(obj).__module__.startswith("patroni") and hasattr(obj, "__dict__"):
            for value in vars(obj).values():
                walk(value, seen)

    walk(validator.schema.validator, set())
    for source in Path(patroni.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                known.add(node.value)
    return known


def keys_of(config, free_form=("parameters", "tags", "authentication", "initdb", "pg_hba",
                               "basebackup")):
    """Every mapping key path in config, not descending into user-defined maps."""
    for key, value in config.items():
        yield key
        if isinstance(value, dict) and key not in free_form:
            yield from keys_of(value, free_form)


@pytest.mark.parametrize("name", SPECS)
def test_each_node_has_itself_as_self_addr_and_exactly_the_others_as_partners(name):
    spec, addresses, _, _ = rendered(name)
    for node in spec.nodes:
        config = yaml.safe_load(rendering.render_patroni_yml(spec, node, addresses, SECRETS))
        own = addresses[node.name]
        assert config["name"] == node.name
        assert config["raft"]["self_addr"] == f"{own}:5010"
        partners = config["raft"]["partner_addrs"]
        assert sorted(partners) == sorted(f"{ip}:5010" for n, ip in addresses.items()
                                          if n != node.name)
        assert f"{own}:5010" not in partners
        assert config["restapi"]["connect_address"] == f"{own}:8008"
        assert config["postgresql"]["connect_address"] == f"{own}:5432"


def test_patroni_yml_holds_the_safety_settings_and_secrets_verbatim():
    spec, addresses, config, _ = rendered("rocky8-default")
    dcs = config["bootstrap"]["dcs"]
    assert dcs["postgresql"]["use_pg_rewind"] is True and dcs["postgresql"]["use_slots"] is True
    assert dcs["synchronous_mode"] is True and (dcs["ttl"], dcs["loop_wait"]) == (30, 10)
    assert "data-checksums" in config["bootstrap"]["initdb"]
    assert {"auth-host": "scram-sha-256"} in config["bootstrap"]["initdb"]
    assert config["raft"]["password"] == "raft-pw"
    assert config["postgresql"]["authentication"]["superuser"]["password"] == "su-pw'\"x"
    assert config["restapi"]["authentication"] == {"username": "patroni", "password": "rest-pw"}
    assert config["watchdog"] == {"mode": "required", "device": "/dev/watchdog",
                                  "safety_margin": 5}
    assert config["scope"] == "pg-raft" and config["namespace"] == "/db/"


def test_pg_hba_allows_peers_per_address_and_only_the_configured_networks():
    spec, addresses, config, _ = rendered("rocky8-default")
    # Admitting lines (the last one refuses plain text from anywhere, see the TLS test).
    hba = config["postgresql"]["pg_hba"][:-1]
    for ip in addresses.values():
        assert f"hostssl replication replicator {ip}/32 scram-sha-256" in hba
    networks = [line.split()[3] for line in hba if line.startswith("host")]
    for cidr in networks:
        assert ipaddress.ip_network(cidr).subnet_of(ipaddress.ip_network("192.168.130.0/24")) \
            or cidr == "127.0.0.1/32"
    # Patroni reads a replica's own timeline over a local replication connection.
    assert "host replication replicator 127.0.0.1/32 scram-sha-256" in hba
    assert not any("0.0.0.0/0" in line or " trust" in line or " md5" in line for line in hba)
    custom = build_spec({"clientCidrs": ["10.9.0.0/16"], "tls": False})
    custom_hba = yaml.safe_load(rendering.render_patroni_yml(
        custom, custom.nodes[0], addresses, SECRETS))["postgresql"]["pg_hba"]
    assert "host all all 10.9.0.0/16 scram-sha-256" in custom_hba
    assert not any("192.168.130.0/24" in line for line in custom_hba)


def test_user_parameters_and_tags_are_rendered():
    spec = build_spec({"postgresParameters": {"shared_buffers": "2GB", "max_connections": 300},
                       "nodeTags": {"srv2": {"nofailover": True}}})
    addresses = {n.name: n.address for n in spec.nodes}
    config = yaml.safe_load(rendering.render_patroni_yml(spec, spec.nodes[1], addresses, SECRETS))
    params = config["bootstrap"]["dcs"]["postgresql"]["parameters"]
    assert params["shared_buffers"] == "2GB" and params["max_connections"] == 300
    assert params["wal_log_hints"] == "on"
    assert config["tags"] == {"nofailover": True}


@pytest.mark.parametrize("name", SPECS)
def test_patroni_knows_every_key_we_render(name):
    known = patroni_known_keys()
    _, _, config, _ = rendered(name)
    unknown = sorted(set(keys_of(config)) - known)
    assert not unknown, f"keys Patroni does not know: {unknown}"
    from patroni.validator import schema
    # Paths and ports of the VM do not exist on the test machine; everything else must pass.
    errors = [e for e in schema(config) if "does not exist" not in e and "in use" not in e]
    assert errors == []


def test_local_override_changes_only_paths_and_watchdog():
    spec, addresses, config, _ = rendered("rocky8-default")
    paths = rendering.NodePaths(config_dir="/x", config="/x/p.yml", venv="/v", raft_dir="/r",
                                data_dir="/d", bin_dir="/b", pgpass="/p", socket_dir="/s",
                                watchdog_script="/w", journal_check="/j", tls_dir="/t")
    local = rendering.with_local_paths(config, paths, "/x/watchdog")
    assert local["raft"]["data_dir"] == "/r" and local["postgresql"]["bin_dir"] == "/b"
    # The mode stays as rendered (required): only the device is a recording one.
    assert local["watchdog"] == {**config["watchdog"], "driver": "testing",
                                 "device": "/x/watchdog"}
    assert local["watchdog"]["mode"] == "required"
    assert local["postgresql"]["parameters"]["ssl_key_file"] == "/t/server.key"
    assert local["restapi"]["certfile"] == "/t/server.crt" and local["ctl"]["cacert"] == "/t/ca.crt"
    assert local["postgresql"]["authentication"]["rewind"]["sslrootcert"] == "/t/ca.crt"
    local["raft"]["data_dir"] = config["raft"]["data_dir"]
    local["postgresql"].update({k: config["postgresql"][k] for k in ("data_dir", "bin_dir",
                                                                      "pgpass")})
    local["postgresql"]["parameters"] = config["postgresql"]["parameters"]
    local["postgresql"]["authentication"] = config["postgresql"]["authentication"]
    local["restapi"], local["ctl"] = config["restapi"], config["ctl"]
    local["watchdog"] = config["watchdog"]
    assert local == config


def test_unit_runs_patroni_as_postgres_with_restart_and_reload():
    unit = rendering.render_unit(build_spec({}))
    assert "User=postgres" in unit
    # A node that cannot reach its peers yet is restarted for as long as it takes.
    assert "Restart=always" in unit and "StartLimitIntervalSec=0" in unit
    assert "StartLimitBurst" not in unit
    assert "ExecReload=/bin/kill -HUP $MAINPID" in unit and "KillMode=process" in unit
    assert "ExecStart=/opt/patroni/bin/patroni /etc/patroni/patroni.yml" in unit
    check = ("ExecStartPre=/opt/patroni/bin/python -I -S /usr/local/sbin/pgha-raft-journal-check "
             "/var/lib/pgha/raft")
    assert "ExecStartPre=+/usr/local/sbin/pgha-ensure-softdog" in unit and check in unit
    # The softdog goes with the watchdog; the journal check never does.
    without_watchdog = rendering.render_unit(build_spec({"watchdogMode": "off"}))
    assert "softdog" not in without_watchdog and check in without_watchdog


def test_cloud_init_is_cloud_config_with_key_and_pinned_host_key():
    spec = build_spec({})
    text = rendering.render_cloud_init(spec, spec.nodes[1], "ssh-ed25519 AAAAuser me",
                                       "-----BEGIN OPENSSH PRIVATE KEY-----\nx\n"
                                       "-----END OPENSSH PRIVATE KEY-----\n",
                                       "ssh-ed25519 AAAAhost")
    assert text.startswith("#cloud-config\n")
    data = yaml.safe_load(text)
    assert data["hostname"] == "srv2"
    user = data["users"][0]
    assert user["name"] == "pgha" and user["lock_passwd"] is True
    assert user["ssh_authorized_keys"] == ["ssh-ed25519 AAAAuser me"]
    assert data["ssh_genkeytypes"] == ["ed25519"] and data["ssh_deletekeys"] is True
    assert data["ssh_keys"]["ed25519_public"] == "ssh-ed25519 AAAAhost"
    assert "passwd" not in user and "password" not in text


def all_scripts():
    for name in SPECS:
        spec, addresses = spec_and_addresses(name)
        node = spec.nodes[0]
        yield f"{name}/prepare", rendering.render_prepare_script(spec)
        yield f"{name}/install-postgres", rendering.render_install_postgres_script(spec)
        yield f"{name}/watchdog", rendering.render_watchdog_script(spec)
        yield f"{name}/install-patroni", rendering.render_install_patroni_script(spec)
        yield f"{name}/configure", rendering.render_configure_script(
            spec, node, addresses, SECRETS, tls_pems=TLS_PEMS if spec.tls else None)
        yield f"{name}/start", rendering.render_start_script(spec, node)
        yield f"{name}/health-gate", rendering.render_health_gate_script(spec, addresses)
        yield f"{name}/firewall", firewall.render_configure_script(
            spec, node.name, firewall.node_ruleset(node.name, addresses, spec.admin_cidrs,
                                                   spec.hba_cidrs))
        for elastic in (n for n in spec.nodes if membership.is_elastic(n)):
            yield f"{name}/{elastic.name}-raft-join", membership.render_join_script(
                spec, elastic)
            yield f"{name}/{elastic.name}-raft-leave", membership.render_leave_script(
                spec, elastic)
            yield f"{name}/{elastic.name}-raft-forget", membership.render_forget_script(
                spec, elastic, addresses[elastic.name])
            yield f"{name}/{elastic.name}-admitted", firewall.render_admission_script(
                node.name, elastic.name, addresses[elastic.name])
        moved = spec.nodes[2]  # a move to another host (components/moves.py)
        yield f"{name}/move-leave", membership.render_move_leave_script(spec, moved)
        yield f"{name}/move-forget", membership.render_move_forget_script(
            spec, moved, addresses[moved.name])


SCRIPTS = dict(all_scripts())


@pytest.mark.parametrize("script_id", SCRIPTS)
def test_rendered_scripts_pass_shellcheck(script_id):
    if shutil.which("shellcheck") is None:
        skip_or_fail("shellcheck is not installed (apt-get install shellcheck)")
    result = subprocess.run(["shellcheck", "--shell=bash", "--severity=style", "-"],
                            input=SCRIPTS[script_id], text=True, capture_output=True)
    assert result.returncode == 0, result.stdout


@pytest.mark.parametrize("script_id", SCRIPTS)
def test_scripts_are_strict_and_never_trace_or_print_secrets(script_id):
    script = SCRIPTS[script_id]
    assert script.startswith("#!/usr/bin/env bash\n")
    assert "set -Eeuo pipefail" in script and "set -x" not in script and "-euxo" not in script
    # The whole script is parsed before it runs, so commands cannot eat the rest of stdin.
    assert script.rstrip().endswith(("main </dev/null", 'main "$@" </dev/null'))
    for secret in ("repl-pw", "rewind-pw", "rest-pw", "raft-pw", "su-pw", "node-key-pw"):
        assert secret not in script  # secrets travel base64-encoded inside heredocs only


def installed_files(script: str) -> dict[str, tuple[str, str]]:
    """What a script's install_file calls write: destination -> (mode, decoded text)."""
    import base64
    import re
    return {dest: (mode, base64.b64decode("".join(body.split())).decode())
            for dest, mode, body in re.findall(
                r"install_file (\S+) (\S+) \S+ <<'B64'(?:; then| \|\| true)?\n(.*?)\nB64",
                script, re.S)}


def test_configure_script_carries_the_exact_patroni_yml_and_the_tls_files():
    spec, addresses = spec_and_addresses("rocky8-default")
    script = SCRIPTS["rocky8-default/configure"]
    files = installed_files(script)
    assert files["/etc/patroni/patroni.yml"] == (
        "0600", rendering.render_patroni_yml(spec, spec.nodes[0], addresses, SECRETS))
    assert "install_file /etc/patroni/patroni.yml 0600 postgres:postgres" in script
    # The key is readable by postgres only (PostgreSQL refuses anything looser).
    assert files["/etc/patroni/tls/server.key"] == ("0600", TLS_PEMS.key)
    assert files["/etc/patroni/tls/server.crt"] == ("0644", TLS_PEMS.cert)
    assert files["/etc/patroni/tls/ca.crt"] == ("0644", TLS_PEMS.ca)
    # A renewed certificate is reloaded, not restarted.
    assert "SELECT pg_reload_conf()" in script and "systemctl restart patroni" not in script
    plain = installed_files(SCRIPTS["debian12-tls-off/configure"])
    assert not any("/tls/" in dest for dest in plain)


def test_install_patroni_pins_exact_versions_in_a_virtualenv():
    script = SCRIPTS["rocky8-default/install-patroni"]
    assert "/usr/bin/python3.11 -m venv /opt/patroni" in script
    assert "'patroni[raft,psycopg3]==4.1.5' pysyncobj==0.3.17 'psycopg[binary]==3.3.9'" in script
    assert "--user" not in script
    # What decides a re-install: the requirements the venv was installed with, pins
    # included, and Patroni's files; not a start of Patroni (seconds under emulation).
    assert ("local wanted='patroni[raft,psycopg3]==4.1.5 pysyncobj==0.3.17 "
            "psycopg[binary]==3.3.9 cryptography==46.0.7'") in script
    assert '"$(cat "$stamp" 2>/dev/null || true)" != "$wanted"' in script
    assert "/site-packages/patroni-4.1.5.dist-info" in script
    assert "patroni --version" not in script


def test_postgres_install_disables_the_distribution_service():
    rocky = SCRIPTS["rocky8-default/install-postgres"]
    assert "dnf -y -q module disable postgresql" in rocky
    assert "postgresql14-server" in rocky and "service=postgresql-14.service" in rocky
    assert 'systemctl disable --now "$service"' in rocky
    debian = SCRIPTS["debian12-distro/install-postgres"]
    assert "apt-get -y -q install postgresql-15" in debian and "pgdg" not in debian.split(
        "createcluster.conf")[1].split("dpkg-query")[0]
    assert "apt.postgresql.org" in SCRIPTS["debian12-pgdg/install-postgres"]


def test_dsn_lists_every_host_and_no_password_and_verifies_the_server():
    spec, addresses = spec_and_addresses("rocky8-default")
    dsn = rendering.libpq_dsn(spec, addresses, "read-write")
    assert dsn == ("postgresql://postgres@192.168.130.10:5432,192.168.130.11:5432,"
                   "192.168.130.12:5432/postgres?target_session_attrs=read-write"
                   "&connect_timeout=5&sslmode=verify-full&sslrootcert=pg-raft-ca.crt")
    plain, addresses = spec_and_addresses("debian12-tls-off")
    assert rendering.libpq_dsn(plain, addresses, "read-only").endswith(
        "?target_session_attrs=read-only&connect_timeout=5")


def test_with_tls_every_remote_connection_is_tls_and_verifies_the_primary():
    spec, addresses, config, _ = rendered("rocky8-default")
    pg = config["postgresql"]
    assert (pg["parameters"]["ssl"], pg["parameters"]["ssl_cert_file"],
            pg["parameters"]["ssl_key_file"]) == ("on", "/etc/patroni/tls/server.crt",
                                                  "/etc/patroni/tls/server.key")
    for role in ("replication", "rewind"):
        assert pg["authentication"][role]["sslmode"] == "verify-full"
        assert pg["authentication"][role]["sslrootcert"] == "/etc/patroni/tls/ca.crt"
    hba = pg["pg_hba"]
    # Plain text only on loopback; everything from outside the node is hostssl, and
    # plain text from anywhere else is refused by an explicit line.
    assert [line for line in hba if line.startswith("host ")] == [
        "host all all 127.0.0.1/32 scram-sha-256",
        "host replication replicator 127.0.0.1/32 scram-sha-256"]
    assert hba[-1] == "hostnossl all all 0.0.0.0/0 reject"
    for ip in addresses.values():
        assert f"hostssl replication replicator {ip}/32 scram-sha-256" in hba
    assert "hostssl all all 192.168.130.0/24 scram-sha-256" in hba
    assert config["restapi"]["certfile"] == "/etc/patroni/tls/server.crt"
    assert config["restapi"]["keyfile"] == "/etc/patroni/tls/server.key"
    assert config["ctl"] == {"insecure": False, "cacert": "/etc/patroni/tls/ca.crt"}
    # Off (debugging only): no TLS anywhere.
    _, _, plain, text = rendered("debian12-tls-off")
    assert "ssl" not in plain["postgresql"]["parameters"] and "ctl" not in plain
    assert "certfile" not in plain["restapi"] and "hostssl" not in text
    assert "sslmode" not in plain["postgresql"]["authentication"]["replication"]


def test_tls_turns_the_nodes_own_checks_to_https_with_the_ca():
    start = SCRIPTS["rocky8-default/start"]
    assert "--cacert /etc/patroni/tls/ca.crt \"https://127.0.0.1:8008/liveness\"" in start
    assert '"http://127.0.0.1:8008/liveness"' in SCRIPTS["debian12-tls-off/start"]
    gate = SCRIPTS["rocky8-default/health-gate"]
    assert 'CA_FILE = "/etc/patroni/tls/ca.crt"' in gate and 'f"https://{address}' in gate
    assert 'f"http://{address}' in SCRIPTS["debian12-tls-off/health-gate"]


def gate_python(script: str) -> str:
    """The health gate's Python: the script's last heredoc (the membership tool's comes
    first)."""
    return script.rsplit("<<'PY'\n", 1)[1].split("\nPY\n", 1)[0]


def test_health_gate_first_hands_a_departing_leader_to_a_node_that_stays():
    """Shrinking 5 -> 3, the gate runs before any node leaves: a leader among the leaving
    nodes hands over to one of the stack's nodes before the gate (and the repository's
    check after it) judges the cluster."""
    spec = build_spec({})
    script = rendering.render_health_gate_script(spec, {n.name: n.address
                                                        for n in spec.nodes})
    main = script.split("\nmain() {\n", 1)[1]
    handover = main.index("run_membership handover --candidates srv1,srv2,srv3\n")
    assert handover < main.index("/bin/python - <<'PY'")
    assert membership.tool_text().rstrip("\n") in script
    compile(gate_python(script), "health-gate.py", "exec")


@pytest.mark.parametrize("sync", [True, False])
def test_health_gate_is_valid_python_and_waits_for_a_sync_standby_in_sync_mode(sync):
    spec = build_spec({"synchronousMode": sync})
    addresses = {n.name: n.address for n in spec.nodes}
    script = rendering.render_health_gate_script(spec, addresses)
    gate = gate_python(script)
    compile(gate, "health-gate.py", "exec")
    assert f"NEEDS_SYNC_STANDBY = {sync}" in gate
    assert all(ip in gate for ip in addresses.values())


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_every_step_reports_what_it_changed(name):
    """A re-run of an unchanged step must be able to say "pgha: no changes"."""
    script = SCRIPTS[name]
    assert "report_changes\n" in script.split("main() {", 1)[1]


def test_raft_files_are_flushed_every_second_by_a_unit_the_configure_step_enables():
    spec = build_spec({})
    unit = rendering.render_raft_flush_unit(spec)
    assert "User=postgres" in unit and "Restart=always" in unit
    assert "sync /var/lib/pgha/raft /var/lib/pgha/raft/*" in unit and "sleep 1" in unit
    configure = SCRIPTS["rocky8-default/configure"]
    assert "/etc/systemd/system/pgha-raft-flush.service" in configure
    assert "systemctl enable pgha-raft-flush.service" in configure


def test_membership_steps_act_only_on_their_own_verb_and_read_secrets_from_the_node():
    """Join acts when created; leave and forget only when deleted (the node leaves the
    stack). The tool reads the Raft and REST passwords from patroni.yml, so no secret is
    in a script, on a command line or in the tool's output."""
    spec, addresses = spec_and_addresses("rocky8-five-proxy-ca")
    srv5 = spec.nodes[4]
    join = membership.render_join_script(spec, srv5)
    leave = membership.render_leave_script(spec, srv5)
    forget = membership.render_forget_script(spec, srv5, addresses["srv5"])

    def branch(script, verb):
        return script.split(f"    {verb})\n", 1)[1].split(";;", 1)[0]
    assert "run_membership join" in branch(join, "create")
    assert "run_membership" not in branch(join, "delete")
    assert "run_membership" not in branch(leave, "create")
    assert "run_membership handover --candidates srv1,srv2,srv3" in branch(leave, "delete")
    assert "systemctl disable --now patroni.service" in branch(leave, "delete")
    assert "systemctl" not in branch(forget, "delete")
    assert (f"run_membership forget --address {addresses['srv5']}:5010 --name srv5"
            in branch(forget, "delete"))
    tool = membership.tool_text()
    compile(tool, "raft-membership.py", "exec")
    assert tool in join and tool in leave and tool in forget
    assert 'config["raft"]' in tool and 'rest.get("authentication")' in tool
    assert "print(" not in tool.split("def join", 1)[0]  # the class prints nothing
    assert not any(membership.is_elastic(n) for n in spec.nodes[:membership.CORE_NODES])


def test_configure_installs_pgha_raft_which_reads_the_raft_password_from_patroni_yml():
    files = installed_files(SCRIPTS["rocky8-default/configure"])
    assert files["/usr/local/lib/pgha/raft-membership.py"] == (
        "0644", rendering.MEMBERSHIP_TOOL.read_text())
    mode, wrapper = files["/usr/local/sbin/pgha-raft"]
    paths = rendering.node_paths(spec_and_addresses("rocky8-default")[0])
    assert mode == "0755"
    assert f"exec {paths.venv}/bin/python /usr/local/lib/pgha/raft-membership.py " \
           f"--config {paths.config} \"$@\"" in wrapper
    assert "raft-pw" not in wrapper


def run_with_lib(body: str) -> tuple[str, subprocess.CompletedProcess]:
    """`body` after the shared shell helpers (templates/_lib.sh.j2), run by bash as a
    step's script is: the rendered script and its result."""
    script = rendering._env.from_string(
        '#!/usr/bin/env bash\n{% include "_lib.sh.j2" %}\n' + body).render()
    return script, subprocess.run(["bash", "-s"], input=script, text=True,
                                  capture_output=True)


def test_a_failing_command_fed_by_a_heredoc_is_named_by_its_first_line_only():
    """The health gate's Python arrives in a heredoc; when it fails, its own diagnostics
    (which members are not streaming, and why) must stay the last thing on stderr but
    one line, not be followed by the whole heredoc."""
    script, result = run_with_lib(
        "main() {\n  python3 - <<'PY'\nimport sys\nprint('srv4: not streaming', file=sys.stderr)\n"
        "sys.exit(1)\nPY\n  echo never\n}\nmain </dev/null\n")
    assert result.returncode == 1 and "never" not in result.stdout
    line = script.splitlines().index("  python3 - <<'PY'") + 1
    assert result.stderr.strip().splitlines() == [
        "srv4: not streaming",
        f"pgha: failed with exit status 1 at line {line}: python3 - <<'PY'"]


def test_a_failing_command_in_a_step_names_its_line_status_and_text(tmp_path):
    """What ends the error `pulumi up` shows for a failed step (pulumi-command appends
    the step's output to it): the failing command as written, inside a function too."""
    script, result = run_with_lib(
        'check_disk() {\n  test -d "$missing_dir"\n}\n'
        'main() {\n  echo step output\n  missing_dir=/nonexistent/pgha\n  check_disk\n'
        '  echo never\n}\nmain </dev/null\n')
    assert result.returncode == 1 and "never" not in result.stdout
    line = script.splitlines().index('  test -d "$missing_dir"') + 1
    assert result.stderr.strip().splitlines()[-1] == (
        f'pgha: failed with exit status 1 at line {line}: test -d "$missing_dir"')
    # A command whose failure is handled (if, ||) is no failure.
    handled = script.replace("  check_disk\n", "  check_disk || echo handled\n")
    result = subprocess.run(["bash", "-s"], input=handled, text=True, capture_output=True)
    assert result.returncode == 0 and "pgha: failed" not in result.stderr


def test_the_dcs_push_runs_patronictl_only_when_bootstrap_dcs_changed(tmp_path):
    """The configure step's DCS push (templates/apply-dcs.py.j2), run for real against a
    recording patronictl: the first push and a changed bootstrap.dcs reach patronictl; a
    patroni.yml that changed elsewhere only (new Raft partners in a grow) does not."""
    import dataclasses
    import sys
    spec, addresses = spec_and_addresses("debian12-distro")
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    calls = tmp_path / "calls"
    patronictl = venv / "bin" / "patronictl"
    patronictl.write_text(f"#!/bin/sh\ncat >> {calls}\necho '--- pushed' >> {calls}\n")
    patronictl.chmod(0o755)
    paths = dataclasses.replace(rendering.node_paths(spec), venv=str(venv))
    script = tmp_path / "apply-dcs.py"
    script.write_text(rendering._render("apply-dcs.py.j2", paths=paths))
    config, pushed = tmp_path / "patroni.yml", tmp_path / "dcs-pushed.yml"

    def push(patroni: dict) -> str:
        config.write_text(yaml.safe_dump(patroni))
        run = subprocess.run([sys.executable, str(script), str(config), str(pushed)],
                             capture_output=True, text=True, check=True)
        return run.stdout

    patroni = yaml.safe_load(rendering.render_patroni_yml(
        spec, spec.nodes[0], addresses, SECRETS))
    push(patroni)
    assert calls.read_text().count("--- pushed") == 1
    assert yaml.safe_load(pushed.read_text()) == patroni["bootstrap"]["dcs"]

    patroni["raft"]["partner_addrs"].append("10.0.0.99:5010")
    assert "not pushed again" in push(patroni)
    assert calls.read_text().count("--- pushed") == 1

    patroni["bootstrap"]["dcs"]["ttl"] = 40
    push(patroni)
    assert calls.read_text().count("--- pushed") == 2
    assert "ttl: 40" in calls.read_text().split("--- pushed")[1]
