"""pgBackRest rendering: the configs are checked by pgBackRest's own option parser, the
Patroni additions by Patroni's validator, and the secrets stay where they belong."""
import configparser
import shutil
import socket
import subprocess
import sys
import time

import pytest
import yaml

from components import backup, clone, rendering
from components.config import ConfigError, build_spec, parse_restore_target
from tests.conftest import skip_or_fail
from tests.unit.test_rendering import SECRETS, gate_python, keys_of, patroni_known_keys

SETTINGS = {"osFamily": "debian12", "postgresSource": "distro", "postgresVersion": 15}
SPEC = build_spec(SETTINGS)
ADDRESSES = {n.name: n.address for n in SPEC.nodes}
REPO_ADDRESS = "192.168.130.9"
PASSPHRASE = "repo-pass-%-x"
DATA_DIR, SOCKET_DIR = SPEC.layout.pg_data_dir, "/run/postgresql"


def backup_spec(**changes):
    values = dict(stanza=SPEC.cluster_name, repo_address=REPO_ADDRESS, retention_full=2,
                  full_schedule="Sun *-*-* 01:00:00", diff_schedule="Mon..Sat *-*-* 01:00:00",
                  encrypt=True, compress_type="zst", compress_level=None,
                  archive_push_queue_max="1GiB")
    values.update(changes)
    return backup.BackupSpec(**values)


def ini(text: str) -> configparser.ConfigParser:
    # pgBackRest repeats tls-server-auth; configparser keeps the last, so count by hand.
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.read_string(text)
    return parser


def node_conf(spec=None, node="srv1"):
    return backup.render_node_conf(spec or backup_spec(), node, DATA_DIR, SOCKET_DIR)


def repo_conf(spec=None, passphrase=PASSPHRASE):
    return backup.render_repo_conf(spec or backup_spec(), ADDRESSES, DATA_DIR, SOCKET_DIR,
                                   passphrase)


def test_a_node_archives_to_the_repository_host_over_tls_and_admits_only_it():
    conf = ini(node_conf())
    g = conf["global"]
    assert (g["repo1-host"], g["repo1-host-type"]) == (REPO_ADDRESS, "tls")
    assert g["archive-async"] == "y" and g["archive-push-queue-max"] == "1GiB"
    assert g["tls-server-auth"] == f"{SPEC.cluster_name}-repository={SPEC.cluster_name}"
    assert dict(conf[SPEC.cluster_name]) == {
        "pg1-path": DATA_DIR, "pg1-socket-path": SOCKET_DIR, "pg1-user": "postgres"}
    # The passphrase never reaches a database node: the repository host encrypts.
    assert PASSPHRASE not in node_conf() and "cipher" not in node_conf()


def test_the_repository_host_reaches_every_node_and_admits_exactly_their_name_and_clones():
    text = repo_conf()
    stanza = ini(text)[SPEC.cluster_name]
    for i, (name, address) in enumerate(ADDRESSES.items(), start=1):
        assert stanza[f"pg{i}-host"] == address and stanza[f"pg{i}-host-type"] == "tls"
        assert stanza[f"pg{i}-path"] == DATA_DIR
    assert f"pg{len(ADDRESSES) + 1}-host" not in stanza
    auth = [line.split("=", 1)[1] for line in text.splitlines()
            if line.startswith("tls-server-auth=")]
    # One name for all the nodes: a node leaving the stack keeps archiving until it stops,
    # after the repository's configuration no longer lists it.
    assert auth == [f"{SPEC.cluster_name}-database={SPEC.cluster_name}",
                    f"{SPEC.cluster_name}-clone={SPEC.cluster_name}"]
    g = ini(text)["global"]
    assert g["repo1-cipher-type"] == "aes-256-cbc" and g["repo1-cipher-pass"] == PASSPHRASE
    assert g["backup-standby"] == "y" and g["repo1-retention-full"] == "2"


def test_an_unencrypted_repository_has_no_cipher_and_an_encrypted_one_needs_a_passphrase():
    assert "cipher" not in repo_conf(backup_spec(encrypt=False), passphrase="")
    with pytest.raises(ValueError, match="passphrase"):
        repo_conf(passphrase="")


def clone_conf():
    source = clone.CloneSource(stack="organization/pgha/prod", stanza="prod",
                               host="192.168.131.9", port=backup.TLS_PORT,
                               postgres_version=15, ca_cert="CA", cert="CERT", key="KEY")
    return clone.render_conf(source, DATA_DIR)


def test_every_pgbackrest_session_whose_peer_vanished_ends_within_minutes():
    """A session's server side otherwise waits for a vanished client up to pgBackRest's
    default protocol-timeout (30 min), holding the archive lock of an archive-push."""
    limits = set()
    for role, text in {"node": node_conf(), "repo": repo_conf(), "clone": clone_conf()}.items():
        g = ini(text)["global"]
        idle, interval, count, protocol = (
            int(g[k]) for k in ("tcp-keep-alive-idle", "tcp-keep-alive-interval",
                                "tcp-keep-alive-count", "protocol-timeout"))
        assert idle + interval * count <= 60 and protocol <= 300, role
        assert "sck-keep-alive" not in g and "db-timeout" not in g, role  # defaults
        limits.add((idle, interval, count, protocol))
    # The same on every side: a client's no-ops keep its remote's session alive only if
    # it sends them at least as often as the remote expects.
    assert len(limits) == 1


@pytest.mark.parametrize("level", [None, 6])
def test_pgbackrest_itself_accepts_every_option_and_value_we_render(tmp_path, level):
    if shutil.which("pgbackrest") is None:
        skip_or_fail("pgbackrest is not installed (apt-get install pgbackrest)")
    spec = backup_spec(compress_level=level)
    configs = {"node": node_conf(spec), "repo": repo_conf(spec), "clone": clone_conf()}
    for role, text in configs.items():
        path = tmp_path / f"{role}.conf"
        path.write_text(text)
        # `help` loads the configuration file and rejects unknown options and values.
        checks = [["help", "server"]] + [[f"--stanza={spec.stanza}", "help", command]
                                          for command in ("archive-push", "archive-get",
                                                          "backup", "restore", "expire")]
        for args in checks:
            p = subprocess.run(["pgbackrest", f"--config={path}", *args],
                               capture_output=True, text=True)
            assert p.returncode == 0 and "WARN" not in p.stderr + p.stdout, (role, args, p)
    # ... so a wrong value would be caught here too.
    bad = tmp_path / "bad.conf"
    bad.write_text(node_conf(backup_spec(compress_type="brotli")))
    p = subprocess.run(["pgbackrest", f"--config={bad}", f"--stanza={SPEC.cluster_name}",
                        "help", "archive-push"],
                       capture_output=True, text=True)
    assert p.returncode != 0 and "compress-type" in p.stderr + p.stdout


def test_patroni_archives_through_pgbackrest_and_builds_replicas_from_the_repository():
    settings = backup.patroni_settings(backup_spec(), backup.BackupPaths())
    text = rendering.render_patroni_yml(SPEC, SPEC.nodes[0], ADDRESSES, SECRETS,
                                        backup=settings)
    config = yaml.safe_load(text)
    params = config["bootstrap"]["dcs"]["postgresql"]["parameters"]
    assert params["archive_mode"] == "on"
    assert params["archive_command"] == (
        "/usr/local/sbin/pgha-archive-push "
        f"/usr/bin/pgbackrest --stanza={SPEC.cluster_name} archive-push \"%p\"")
    pg = config["postgresql"]
    assert pg["create_replica_methods"] == ["pgbackrest", "basebackup"]
    assert pg["pgbackrest"]["command"].endswith("--delta restore")
    assert pg["pgbackrest"]["keep_data"] is True and pg["pgbackrest"]["no_params"] is True
    # A standby's archive-get asks a repository that accepts a connection, within 5 s
    # (templates/pgha-archive-get.sh says why), with pgBackRest's own waits: its "not
    # found" must be the archive's word; a recovery's own (pgBackRest's, from the
    # restore) has no wrapper.
    assert pg["recovery_conf"]["restore_command"] == (
        f"/usr/local/sbin/pgha-archive-get {REPO_ADDRESS} 8432 5 "
        f'/usr/bin/pgbackrest --stanza={SPEC.cluster_name} archive-get %f "%p"')
    restore = backup.restore_bootstrap(backup_spec(), backup.BackupPaths(),
                                       parse_restore_target("latest"))
    assert "timeout" not in str(restore) and "pgha-archive-get" not in str(restore)
    # A replica method's section is named by create_replica_methods, not by Patroni.
    unknown = sorted(set(keys_of(config)) - patroni_known_keys()
                     - set(pg["create_replica_methods"]))
    assert not unknown, unknown
    from patroni.validator import schema
    errors = [e for e in schema(config) if "does not exist" not in e and "in use" not in e]
    assert errors == []


def test_archiving_wins_over_a_users_archive_parameters_and_is_absent_without_backups():
    spec = build_spec({"postgresParameters": {"archive_mode": "off", "work_mem": "8MB"}})
    addresses = {n.name: n.address for n in spec.nodes}
    settings = backup.patroni_settings(backup_spec(), backup.BackupPaths())
    with_backups = yaml.safe_load(rendering.render_patroni_yml(
        spec, spec.nodes[0], addresses, SECRETS, backup=settings))
    params = with_backups["bootstrap"]["dcs"]["postgresql"]["parameters"]
    assert params["archive_mode"] == "on" and params["work_mem"] == "8MB"
    assert params["archive_timeout"] == "60s"


def test_a_users_archive_timeout_wins_and_archive_command_is_refused_with_backups_on():
    spec = build_spec({"postgresParameters": {"ARCHIVE_TIMEOUT": "5min"}})
    addresses = {n.name: n.address for n in spec.nodes}
    settings = backup.patroni_settings(backup_spec(), backup.BackupPaths())
    params = yaml.safe_load(rendering.render_patroni_yml(
        spec, spec.nodes[0], addresses, SECRETS, backup=settings))[
            "bootstrap"]["dcs"]["postgresql"]["parameters"]
    assert params["ARCHIVE_TIMEOUT"] == "5min" and "archive_timeout" not in params
    assert params["archive_mode"] == "on"
    for name in ("archive_command", "Archive_Mode", "restore_command"):
        with pytest.raises(ConfigError) as error:
            build_spec({"backups": True, "postgresParameters": {name: "x"}})
        assert (f"pgha:postgresParameters = '{name}': set by the program when backups "
                "is true") in str(error.value), error.value
    build_spec({"backups": True, "postgresParameters": {"archive_timeout": "5min"}})
    without = yaml.safe_load(rendering.render_patroni_yml(spec, spec.nodes[0], addresses,
                                                          SECRETS))
    assert "create_replica_methods" not in without["postgresql"]
    assert "recovery_conf" not in without["postgresql"]


def test_scheduled_backups_are_a_timer_per_type_run_as_the_repository_user():
    units = backup.render_backup_units(backup_spec())
    assert sorted(units) == ["pgha-backup-diff.service", "pgha-backup-diff.timer",
                             "pgha-backup-full.service", "pgha-backup-full.timer"]
    full = units["pgha-backup-full.service"]
    assert "User=pgbackrest" in full and "--type=full backup" in full
    assert "OnCalendar=Sun *-*-* 01:00:00" in units["pgha-backup-full.timer"]
    assert "Persistent=true" in units["pgha-backup-diff.timer"]
    # No differential schedule: only full backups.
    assert sorted(backup.render_backup_units(backup_spec(diff_schedule=""))) == [
        "pgha-backup-full.service", "pgha-backup-full.timer"]
    if shutil.which("systemd-analyze"):
        for text in units.values():
            for line in text.splitlines():
                if line.startswith("OnCalendar="):
                    p = subprocess.run(["systemd-analyze", "calendar", line.split("=", 1)[1]],
                                       capture_output=True, text=True)
                    assert p.returncode == 0, p.stderr


def test_the_server_unit_never_gives_up_and_runs_as_the_given_user():
    unit = backup.render_server_unit(user="postgres")
    assert "User=postgres" in unit and "Restart=always" in unit
    assert "StartLimitIntervalSec=0" in unit
    assert "ExecStart=/usr/bin/pgbackrest server" in unit
    assert backup.info_command(SPEC.cluster_name) == (
        f"sudo -u pgbackrest /usr/bin/pgbackrest --stanza={SPEC.cluster_name} info")


# ---- provisioning scripts ---------------------------------------------------------------
KEY = "-----BEGIN PRIVATE KEY-----\nsecret-key-material\n-----END PRIVATE KEY-----\n"


def backup_scripts():
    families = {"debian12-distro": {"osFamily": "debian12", "postgresSource": "distro",
                                    "postgresVersion": 15},
                "debian12-pgdg": {"osFamily": "debian12"}, "rocky8-default": {}}
    for family, settings in families.items():
        spec = build_spec(settings)
        for role in ("database", "repository"):
            yield f"{family}/install-{role}", backup.render_install_script(spec, role)
    yield "repository-disk", backup.render_repository_disk_script("/dev/vdb")
    yield "configure-database", backup.render_configure_script(
        "database", "srv1", node_conf(), "CA", "CERT", KEY)
    yield "configure-repository", backup.render_configure_script(
        "repository", "repository", repo_conf(), "CA", "CERT", KEY, backup_spec())
    yield "init-backups", backup.render_init_backups_script(backup_spec())
    yield "init-backups-after-restore", backup.render_init_backups_script(
        backup_spec(restore_request="time:2026-11-26 14:05:00+00"))
    for target in ("latest", "time:2026-11-26 14:05:00+00", "name:before migration",
                   "lsn:0/3000060"):
        parsed = parse_restore_target(target)
        kind = parsed.kind
        yield f"restore-check-{kind}", backup.render_restore_check_script(backup_spec(), parsed)
        restoring = build_spec({**SETTINGS, "backups": True, "restoreTarget": target})
        yield f"restore-reset-{kind}", backup.render_restore_reset_script(restoring)
        yield f"start-{kind}", rendering.render_start_script(restoring, restoring.nodes[0])
    cloning = build_spec({**SETTINGS, "cloneFromStack": "organization/pgha/prod",
                          "restoreTarget": "time:2026-11-26 14:05:00+00"})
    source = clone.CloneSource(stack="organization/pgha/prod", stanza="prod",
                               host="192.168.131.9", port=backup.TLS_PORT,
                               postgres_version=15, ca_cert="CA", cert="CERT", key=KEY)
    yield "configure-clone-source", clone.render_configure_script(cloning, source)
    yield "restore-reset-clone", backup.render_restore_reset_script(cloning)
    yield "start-clone", rendering.render_start_script(cloning, cloning.nodes[0])


BACKUP_SCRIPTS = dict(backup_scripts())


@pytest.mark.parametrize("script_id", BACKUP_SCRIPTS)
def test_backup_scripts_pass_shellcheck_are_strict_and_hold_no_plain_secret(script_id):
    script = BACKUP_SCRIPTS[script_id]
    if shutil.which("shellcheck") is None:
        skip_or_fail("shellcheck is not installed (apt-get install shellcheck)")
    result = subprocess.run(["shellcheck", "--shell=bash", "--severity=style", "-"],
                            input=script, text=True, capture_output=True)
    assert result.returncode == 0, result.stdout
    assert script.startswith("#!/usr/bin/env bash\n") and "set -Eeuo pipefail" in script
    assert script.rstrip().endswith("main </dev/null") and "set -x" not in script
    # Secrets travel base64-encoded inside heredocs only, never printed.
    assert "secret-key-material" not in script and PASSPHRASE not in script


def test_the_repository_script_installs_the_passphrase_for_its_user_only_and_the_timers():
    import base64
    import re
    script = BACKUP_SCRIPTS["configure-repository"]
    blobs = re.findall(r"<<'B64'; then\n(.*?)\nB64", script, re.S)
    decoded = [base64.b64decode("".join(b.split())).decode() for b in blobs]
    assert repo_conf() in decoded and KEY in decoded
    assert "install_file /etc/pgbackrest/pgbackrest.conf 0640 root:pgbackrest" in script
    assert "install_file /etc/pgbackrest/tls/server.key 0600 pgbackrest:pgbackrest" in script
    for timer in ("pgha-backup-full.timer", "pgha-backup-diff.timer"):
        assert f"systemctl enable {timer}" in script and f"systemctl start {timer}" in script
    database = BACKUP_SCRIPTS["configure-database"]
    assert "0600 postgres:postgres" in database and "timer" not in database


def test_the_repository_disk_is_formatted_only_when_it_holds_no_filesystem():
    script = BACKUP_SCRIPTS["repository-disk"]
    guard = script.index('if ! blkid "$disk"')
    assert guard < script.index("mkfs.ext4") and script.count("mkfs") == 1
    assert "nofail" in script


def test_health_gate_with_backups_judges_archiving_and_is_valid_python():
    spec = build_spec({"backups": True})
    script = rendering.render_health_gate_script(spec, ADDRESSES)
    gate = gate_python(script)
    compile(gate, "health-gate.py", "exec")
    assert "def archiver_problem" in gate and "pg_stat_archiver" in gate
    plain = rendering.render_health_gate_script(SPEC, ADDRESSES)
    assert "archiver" not in plain


def test_restore_check_refuses_before_anything_is_stopped(tmp_path):
    """The check's own Python judges `pgbackrest info` output: no backup, a target before
    the oldest backup, a target in the future; a good target names the backup."""
    import json
    import re
    target = parse_restore_target("time:2026-11-26 14:05:00+00")
    script = backup.render_restore_check_script(backup_spec(), target)
    program = re.search(r"python3 -c '\n(.*?)\n'\n", script, re.S).group(1)

    def judge(backups, epoch):
        info = json.dumps([{"backup": backups}])
        return subprocess.run([sys.executable, "-c", program], input=info, text=True,
                              capture_output=True,
                              env={"TARGET_EPOCH": str(epoch), "TARGET": target.text,
                                   "STANZA": "pg-raft"})
    full = {"label": "20261126-100000F", "timestamp": {"start": 1795690000, "stop": 1795690800}}
    assert "holds no backup" in judge([], 1795701900).stderr
    early = judge([full], 1795690000)
    assert early.returncode != 0 and "no backup ended before" in early.stderr
    assert "in the future" in judge([full], 4102444800).stderr
    good = judge([full], 1795701900)
    assert good.returncode == 0 and "20261126-100000F" in good.stdout
    assert judge([full], 0).returncode == 0  # latest / name / lsn: any backup will do


FAKE_PGBACKREST = """#!/usr/bin/env bash
# runuser -u USER -- pgbackrest ARGS: records the command, answers `info` with one backup.
shift 3
echo "$*" >> "$PGHA_FAKE_LOG"
case " $* " in
  *" info "*) echo '[{"status": {"code": 0}, "backup": [{"label": "20261126-140000F"}]}]' ;;
esac
"""


def run_init_backups(tmp_path, restore_request: str) -> tuple[str, list[str]]:
    """The rendered init-backups script against a recording pgBackRest, its marker in
    tmp_path; returns its stdout and the pgBackRest commands it ran."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "runuser").write_text(FAKE_PGBACKREST)
    (bin_dir / "runuser").chmod(0o755)
    log = tmp_path / "pgbackrest.log"
    log.write_text("")
    script = rendering._env.get_template("init-backups.sh.j2").render(
        backup=backup_spec(restore_request=restore_request), user=backup.REPO_USER,
        restore_marker=str(tmp_path / "pgha" / "backup-after-restore"))
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "PGHA_FAKE_LOG": str(log)}
    result = subprocess.run(["bash", "-s"], input=script, text=True, capture_output=True,
                            env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout, log.read_text().splitlines()


def test_after_a_point_in_time_recovery_the_repository_takes_one_full_backup(tmp_path):
    """The recovery restores an older backup and starts a new timeline; without a backup of
    the new history, a replica added later replays every timeline since that backup."""
    request = "time:2026-11-26 14:05:00+00"
    out, commands = run_init_backups(tmp_path, request)
    assert "took a full backup after the point-in-time recovery" in out
    assert any("--type=full backup" in c for c in commands), commands
    assert (tmp_path / "pgha" / "backup-after-restore").read_text() == request + "\n"
    # Once per recovery: the step run again takes none.
    out, commands = run_init_backups(tmp_path, request)
    assert "pgha: no changes" in out and not any(" backup" in c for c in commands)
    # A later recovery (another target) takes its own.
    out, commands = run_init_backups(tmp_path, "name:before migration")
    assert any("--type=full backup" in c for c in commands), commands
    # A stack that asks for no recovery never does (its repository has a backup).
    plain = tmp_path / "plain"
    plain.mkdir()
    out, commands = run_init_backups(plain, "")
    assert "pgha: no changes" in out and not any(" backup" in c for c in commands)


@pytest.mark.parametrize("name, wrapper", [("pgha-archive-push", backup.archive_push_wrapper),
                                           ("pgha-archive-get", backup.archive_get_wrapper),
                                           ("pgha-after-restore", backup.after_restore_script)])
def test_the_archive_wrappers_are_strict_and_shellcheck_clean(name, wrapper):
    if shutil.which("shellcheck") is None:
        skip_or_fail("shellcheck is not installed (apt-get install shellcheck)")
    script = wrapper()
    result = subprocess.run(["shellcheck", "--shell=bash", "--severity=style", "-"],
                            input=script, text=True, capture_output=True)
    assert result.returncode == 0, result.stdout
    assert script.startswith("#!/usr/bin/env bash\n") and "set -Eeuo pipefail" in script
    # The node's configure step installs it where PostgreSQL runs it.
    configure = BACKUP_SCRIPTS["configure-database"]
    assert f"install_file /usr/local/sbin/{name} 0755 root:root" in configure
    assert name not in BACKUP_SCRIPTS["configure-repository"]


def run_archive_get(tmp_path, host, port, status=0, sync_status=0):
    """The restore_command wrapper as PostgreSQL runs it, around a fake pgbackrest that
    records its arguments and exits with `status` (`sync_status` when told
    --no-archive-async)."""
    fake = tmp_path / "pgbackrest"
    fake.write_text(f"#!/bin/sh\necho \"$@\" >> {tmp_path}/calls\n"
                    f"case \" $* \" in *\" --no-archive-async \"*) exit {sync_status};; esac\n"
                    f"exit {status}\n")
    fake.chmod(0o755)
    wrapper = tmp_path / "pgha-archive-get"
    wrapper.write_text(backup.archive_get_wrapper())
    t0 = time.monotonic()
    p = subprocess.run(["bash", str(wrapper), host, str(port), "2", str(fake), "--stanza=s",
                        "archive-get", "000000030000000000000012", "pg_wal/RECOVERYXLOG"],
                       capture_output=True, text=True, timeout=30)
    calls = tmp_path / "calls"
    return p, time.monotonic() - t0, calls.read_text() if calls.exists() else ""


ASKED = "--stanza=s archive-get 000000030000000000000012 pg_wal/RECOVERYXLOG\n"


@pytest.mark.parametrize("status", [0, 1])
def test_archive_get_runs_pgbackrest_when_the_repository_accepts_and_passes_its_status(
        tmp_path, status):
    """Found (0) or not found (1): pgBackRest's answer, asked once."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        p, _, calls = run_archive_get(tmp_path, "127.0.0.1", server.getsockname()[1],
                                      status)
    assert p.returncode == status, p
    assert calls == ASKED


@pytest.mark.parametrize("sync_status", [0, 1, 49])
def test_a_failed_asynchronous_get_is_asked_again_synchronously(tmp_path, sync_status):
    """archive-timeout (82), as pgBackRest 2.45 reports a fetch lost across a timeline
    switch: PostgreSQL would read the old timeline's copy; the synchronous answer goes to
    PostgreSQL instead, whatever it is."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        p, _, calls = run_archive_get(tmp_path, "127.0.0.1", server.getsockname()[1],
                                      82, sync_status)
    assert p.returncode == sync_status, p
    assert calls == ASKED + "--no-archive-async " + ASKED
    assert ("pgha: 000000030000000000000012: asynchronous archive-get failed (status 82); "
            "asking again synchronously") in p.stderr


def test_archive_get_reports_not_there_yet_at_once_when_the_repository_refuses(tmp_path):
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
    p, took, calls = run_archive_get(tmp_path, "127.0.0.1", port)
    assert p.returncode == 1 and calls == "" and took < 2, (p, took)
    assert ("the backup repository 127.0.0.1:%d did not answer within 2s: "
            "000000030000000000000012 not fetched" % port) in p.stderr


def test_archive_get_gives_up_within_its_bound_on_a_repository_that_never_answers(tmp_path):
    """A listener whose backlog is full leaves a new connection's SYN unanswered, as a
    vanished host does."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(0)
        port = server.getsockname()[1]
        clients = []
        try:
            for _ in range(8):  # fill the accept queue (never accepted)
                client = socket.socket()
                client.setblocking(False)
                client.connect_ex(("127.0.0.1", port))
                clients.append(client)
            time.sleep(0.2)
            p, took, calls = run_archive_get(tmp_path, "127.0.0.1", port)
        finally:
            for client in clients:
                client.close()
    assert p.returncode == 1 and calls == "", p
    assert 1.9 <= took < 4, took


@pytest.mark.parametrize("segment, histories, pushed, status", [
    # A duplicate of an ancestor timeline's segment (copied in by pg_rewind): dropped.
    ("000000020000000000000010", [2, 3, 8], 45, 0),
    # The current timeline's own segment refused: two histories, passed on.
    ("000000080000000000000012", [2, 3, 8], 45, 45),
    # The first timeline has no history file: nothing is older.
    ("000000010000000000000003", [], 45, 45),
    # Any other status is pgBackRest's, as it is.
    ("000000020000000000000010", [8], 0, 0),
    ("000000020000000000000010", [8], 1, 1),
    ("00000002.history", [8], 45, 45),
])
def test_archive_push_drops_only_an_ancestor_timelines_duplicate(tmp_path, segment,
                                                                 histories, pushed, status):
    data = tmp_path / "data"
    (data / "pg_wal").mkdir(parents=True)
    for timeline in histories:
        (data / "pg_wal" / f"{timeline:08X}.history").write_text("")
    (data / "pg_wal" / segment).write_text("")
    wrapper = tmp_path / "pgha-archive-push"
    wrapper.write_text(backup.archive_push_wrapper())
    fake = tmp_path / "pgbackrest"
    fake.write_text(f"#!/bin/sh\necho \"$@\" >> {tmp_path}/calls\nexit {pushed}\n")
    fake.chmod(0o755)
    # As PostgreSQL runs archive_command: in the data directory, %p relative to it.
    p = subprocess.run(["bash", str(wrapper), str(fake), "--stanza=s", "archive-push",
                        f"pg_wal/{segment}"], cwd=data, capture_output=True, text=True)
    assert p.returncode == status, p
    assert (tmp_path / "calls").read_text() == f"--stanza=s archive-push pg_wal/{segment}\n"
    assert ("not archived again" in p.stderr) == (pushed == 45 and status == 0)


def run_after_restore(tmp_path, archived_after: int, seconds: int):
    """pgha-after-restore as Patroni runs it, against a fake psql whose archiver reports
    the switched segment archived from its `archived_after`-th question on (0: never)."""
    fake = tmp_path / "psql"
    fake.write_text(f"""#!/bin/sh
echo "$@" >> {tmp_path}/queries
case "$*" in
  *pg_switch_wal*) echo 00000002000000000000000A ;;
  *pg_stat_archiver*)
    n=$(grep -c pg_stat_archiver {tmp_path}/queries)
    if [ {archived_after} -gt 0 ] && [ "$n" -ge {archived_after} ]; then echo t; else echo f; fi ;;
esac
""")
    fake.chmod(0o755)
    script = tmp_path / "pgha-after-restore"
    script.write_text(backup.after_restore_script())
    t0 = time.monotonic()
    p = subprocess.run(["bash", str(script), str(seconds), str(fake),
                        "postgresql://postgres@%2Frun%2Fpostgresql:5432/postgres"],
                       capture_output=True, text=True, timeout=30)
    return p, time.monotonic() - t0, (tmp_path / "queries").read_text().splitlines()


def test_after_a_restore_the_new_leader_waits_until_its_timelines_first_segment_is_archived(
        tmp_path):
    p, took, queries = run_after_restore(tmp_path, archived_after=3, seconds=30)
    assert p.returncode == 0, p
    assert "00000002000000000000000A (where this timeline begins) is archived" in p.stderr
    # One switch and a record after it, then the archiver asked until it has the
    # segment (a second apart).
    assert ["pg_switch_wal" in q for q in queries] == [True, False, False, False, False]
    assert queries[1].endswith("-c CHECKPOINT"), queries
    assert all("-d postgresql://postgres@%2Frun%2Fpostgresql:5432/postgres" in q
               for q in queries)
    assert ">= '00000002000000000000000A' FROM pg_stat_archiver" in queries[-1]
    assert 1.5 < took < 10, took


def test_after_a_restore_an_archive_that_lags_is_reported_and_does_not_fail_the_bootstrap(
        tmp_path):
    p, took, queries = run_after_restore(tmp_path, archived_after=0, seconds=2)
    # Patroni would remove the restored data directory on a failure: the script says
    # what it could not do and lets Patroni go on.
    assert p.returncode == 0, p
    assert "is not archived after 2s" in p.stderr and 1.5 < took < 10, (p, took)


def test_after_a_restore_a_postgresql_that_cannot_be_asked_does_not_fail_the_bootstrap(
        tmp_path):
    script = tmp_path / "pgha-after-restore"
    script.write_text(backup.after_restore_script())
    p = subprocess.run(["bash", str(script), "5", str(tmp_path / "no-psql"), "dbname=x"],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 0 and "could not switch WAL after the restore" in p.stderr, p
