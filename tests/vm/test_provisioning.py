"""`pulumi up`'s own steps built a healthy cluster, and running them again changes
nothing; a changed PostgreSQL parameter re-runs only what it must and is live."""
import json
from pathlib import Path

import pytest

from components import node_image, rendering
from components.config import ConfigError, build_spec

from tests.vm.plan import plan_for


def test_up_builds_a_healthy_cluster_with_the_watchdog_held(vm_cluster):
    c = vm_cluster
    gate = next(r for n, r in c.provisioning.items() if n.endswith("-health-gate"))
    assert '"leader"' in gate.stdout
    leader = c.wait_healthy()
    warnings, summary = c.health()
    assert warnings == [] and summary.startswith(f"cluster healthy: leader {leader}")
    # Patroni itself holds /dev/watchdog open on the leader (mode required).
    held = c.sh(leader, "sudo sh -c 'ls -l /proc/$(systemctl show -p MainPID --value "
                        "patroni)/fd' | grep -c /dev/watchdog")
    assert held.stdout.strip() == "1", held
    # ... and every node flushes its Raft files to disk every second.
    for name in c.names:
        assert c.sh(name, "systemctl is-active pgha-raft-flush").stdout.strip() == "active"


def test_every_node_booted_from_its_seed_on_the_ide_cdrom_and_grew_its_disk(vm_cluster):
    # The seed is attached as pulumi-libvirt attaches a cloud-init disk (IDE cdrom hdd on
    # machine pc); the image's kernel must find it there, and the root filesystem must
    # fill the disk the stack asks for, not the image's 3 GiB.
    c = vm_cluster
    for name in c.names:
        xml = c.lab.dumpxml(c.domain(name))
        assert "<target dev='hdd' bus='ide'/>" in xml
        # cloud-init's own record of its last run (no Python start: ~25 s here), the SSH
        # host keys (only the one the program pinned) and the root filesystem's size.
        seen = c.sh(name, "sudo tr -d '\\n' </var/lib/cloud/data/result.json; echo; "
                          "ls /etc/ssh/ | grep -c '^ssh_host_.*_key$'; "
                          "df --output=size -B1 / | tail -n1; "
                          "test -e /etc/cloud/cloud-init.disabled && echo off || echo on"
                    ).stdout.splitlines()
        result = json.loads(seen[0])["v1"]
        assert "DataSourceNoCloud" in result["datasource"], result
        assert "seed=/dev/sr0" in result["datasource"] and result["errors"] == [], result
        assert seen[1] == "1", (name, seen)
        size_gib = int(seen[2]) / 2**30
        assert c.spec.disk_gib - 1 < size_gib <= c.spec.disk_gib, (name, size_gib)
        # ... and later boots skip cloud-init (the prepare step's marker).
        assert seen[3] == "off", (name, seen)
    # What the program rendered is valid for the image's cloud-init. One node suffices:
    # the seeds differ only in hostname and keys.
    schema = c.sh(c.names[0], "sudo cloud-init schema --system")
    assert schema.returncode == 0 and "Valid cloud-config" in schema.stdout, schema
    # ... and so is what the node image's build VM booted with (nobody logs in there).
    build_seed = node_image.render_build_user_data(c.spec, node_image.manifest(
        c.spec, "0" * 64, {"path": "base.qcow2", "sha256": "0" * 64}))
    schema = c.ssh.run(c.login(c.names[0]), "cat >/tmp/build-seed.yaml && "
                       "cloud-init schema --config-file /tmp/build-seed.yaml", build_seed)
    assert schema.returncode == 0 and "Valid cloud-config" in schema.stdout, schema


def test_a_row_written_through_the_read_write_dsn_is_read_through_the_read_only_dsn(
        vm_cluster):
    c = vm_cluster
    c.wait_healthy()
    # TLS: the stack's DSN verifies the server against the saved caCertificate.
    assert c.sql(c.dsn("dsnReadWrite"), "SELECT ssl FROM pg_stat_ssl "
                                        "WHERE pid = pg_backend_pid()") == [(True,)]
    c.sql(c.dsn("dsnReadWrite"), "CREATE TABLE IF NOT EXISTS vm_probe (v text)")
    c.sql(c.dsn("dsnReadWrite"), "INSERT INTO vm_probe VALUES ('through the rw dsn')")
    assert c.sql(c.dsn("dsnReadOnly"), "SELECT pg_is_in_recovery()") == [(True,)]
    c.wait_for("the row on a replica", lambda: ("through the rw dsn",) in c.sql(
        c.dsn("dsnReadOnly"), "SELECT v FROM vm_probe"), timeout=30)


def test_running_every_step_again_changes_nothing(vm_cluster):
    c = vm_cluster
    c.wait_healthy()
    pids = c.patroni_pids()
    results = c.run_steps()
    changed = {n: r.changes for n, r in results.items() if r.changes != "pgha: no changes"}
    assert changed == {}
    assert c.patroni_pids() == pids


def test_a_changed_parameter_reruns_only_the_configure_steps_and_is_live(vm_cluster):
    c = vm_cluster
    c.wait_healthy()
    current = c.sql(c.dsn("dsnReadWrite"), "SHOW work_mem")[0][0]
    wanted = "6MB" if current != "6MB" else "7MB"
    before = c.plan
    parameters = {**before.settings.get("postgresParameters", {}), "work_mem": wanted}
    after = plan_for({**before.settings, "postgresParameters": parameters}, c.mocks)
    changed = sorted(after.steps_changed_since(before))
    configure = sorted(n for n in after.steps if n.endswith("-provision-configure"))
    # The gate, and with backups on the repository's check, re-run after any config change.
    checks = [n for n in after.steps if n.endswith(("-health-gate", "-init-backups"))]
    assert changed == sorted(configure + checks)
    pids = c.patroni_pids()
    c.plan = after  # the stack now says so, as a user's would after `pulumi up`
    results = c.run_steps(changed)
    assert all("reloaded patroni" in results[n].changes for n in configure)
    for name in c.names:
        c.wait_for(f"work_mem={wanted} on {name}", lambda n=name: c.sql(
            c.node_dsn(n), "SHOW work_mem") == [(wanted,)], timeout=60)
    assert c.patroni_pids() == pids


def test_a_renewed_certificate_is_served_without_restarting_postgresql_or_patroni(vm_cluster):
    """What an `up` in the renewal window does: pulumi-tls replaces one node's certificate
    (same key), only that node's configure step and the gate re-run, and the node serves
    the new certificate on PostgreSQL and the REST API without a restart."""
    from cryptography import x509

    from tests.unit.test_rendering import installed_files
    c = vm_cluster
    c.wait_healthy()
    name = c.names[0]
    started = c.sql(c.node_dsn(name), "SELECT pg_postmaster_start_time()")
    pids = c.patroni_pids()
    before = c.plan
    c.mocks.kept.pop(f"{c.spec.cluster_name}-{name}-server-cert")  # the renewal
    after = plan_for(before.settings, c.mocks)
    configure = f"{c.spec.cluster_name}-{name}-provision-configure"
    # The gate, and with backups on the repository's check, re-run after any config change.
    assert sorted(after.steps_changed_since(before)) == sorted(
        [configure] + [n for n in after.steps if n.endswith(("-health-gate",
                                                             "-init-backups"))])
    renewed = x509.load_pem_x509_certificate(installed_files(
        after.steps[configure].script)["/etc/patroni/tls/server.crt"][1].encode())
    assert c.served_serials(name) != (renewed.serial_number,) * 2
    c.plan = after
    results = c.run_steps(after.steps_changed_since(before))
    assert "reloaded postgresql's certificate" in results[configure].changes
    # Both reloads are signals: the new certificate is served moments later.
    c.wait_for(f"{name} to serve its renewed certificate", lambda: c.served_serials(
        name) == (renewed.serial_number,) * 2, timeout=60, interval=2)
    assert c.sql(c.node_dsn(name), "SELECT pg_postmaster_start_time()") == started
    assert c.patroni_pids() == pids
    c.wait_healthy()


def test_the_nodes_came_from_the_node_image_and_their_installs_changed_nothing(vm_cluster):
    c = vm_cluster
    image = Path(c.plan.settings["baseImage"])
    beside = json.loads(node_image.manifest_path(image).read_text())
    assert beside["builtFor"] == {"osFamily": "debian12", "postgresSource": "distro",
                                  "postgresVersion": 15}
    assert beside["installed"]["postgresql-15"] and beside["installed"]["patroni"] == \
        c.spec.patroni_version and beside["installed"]["pgbackrest"]
    for name in c.names:
        assert json.loads(c.sh(name, "cat /etc/pgha/image.json").stdout) == beside
        installs = {n.rsplit("-provision-", 1)[1]: r.changes
                    for n, r in c.provisioning.items() if f"-{name}-provision-install-" in n}
        # pgBackRest is in the image either way; its step runs only with backups on.
        assert set(installs) == {"install-postgres", "install-patroni"} | (
            {"install-pgbackrest"} if c.spec.backups else set()), installs
        assert set(installs.values()) == {"pgha: no changes"}, installs
        firewall = c.provisioning[f"{c.spec.cluster_name}-{name}-provision-firewall"]
        assert "installed nftables" not in firewall.changes, firewall.changes


def test_a_node_image_for_other_settings_is_refused_before_and_on_a_new_host(vm_cluster):
    c = vm_cluster
    other = {**c.plan.settings, "postgresSource": "pgdg", "postgresVersion": 16}
    with pytest.raises(ConfigError, match=r"pgha:postgresVersion = 16: baseImage .* was "
                                          r"built for postgresVersion 15"):
        build_spec(other)
    # Where the manifest beside the image is not at hand (an image served over http), the
    # prepare step of a host not configured yet refuses it: a replica's patroni.yml set
    # aside for the moment (Patroni reads it only when it starts or reloads).
    leader = c.wait_healthy()
    replica = next(n for n in c.names if n != leader)
    prepare = rendering.render_prepare_script(build_spec({**other, "baseImage": ""}))
    config = "/etc/patroni/patroni.yml"
    refused = c.ssh.run(c.login(replica), f"sudo mv {config} {config}.aside && "
                        f"{{ sudo bash -s; rc=$?; sudo mv {config}.aside {config}; "
                        f"exit $rc; }}", prepare)
    assert c.sh(replica, f"sudo test -f {config}").returncode == 0
    assert refused.returncode != 0, refused
    assert ("pgha: this node's image was built for osFamily=debian12 postgresSource=distro "
            "postgresVersion=15") in refused.stderr, refused.stderr
