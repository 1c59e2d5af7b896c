"""Backups on real VMs: the repository VM the program declares, the first backup taken by
`pulumi up`, WAL archived from the leader, and a point-in-time recovery of the whole
cluster driven by the stack's restoreTarget setting, as a user would run it."""
import time

from components.config import REPOSITORY_NAME
from tests.vm.plan import plan_for


def test_up_took_the_first_backup_and_the_leader_archives_wal(vm_cluster):
    c = vm_cluster
    leader = c.wait_healthy()
    init = next(r for n, r in c.provisioning.items() if n.endswith("-init-backups"))
    label = init.stdout.strip().splitlines()[-2].split()[-1]
    info = c.repository_info()
    assert [b["label"] for b in info["backup"]] == [label] and label.endswith("F"), info
    assert info["status"]["code"] == 0, info
    # The repository's own disk holds it, not the system disk.
    mounts = c.sh(REPOSITORY_NAME, "findmnt -n -o SOURCE /var/lib/pgbackrest").stdout
    assert mounts.strip() == "/dev/vdb", mounts
    c.wait_archived(leader)
    # pgBackRest's own end-to-end proof (archive_command round trip through the server).
    c.pgbackrest("check", timeout=300)


def test_restore_target_recovers_the_cluster_to_a_point_in_time(vm_cluster):
    c = vm_cluster
    leader = c.wait_healthy()
    rw = c.dsn("dsnReadWrite")  # its sslrootcert is the saved caCertificate
    c.sql(rw, "CREATE TABLE IF NOT EXISTS pitr_probe (id int PRIMARY KEY, phase text)")
    c.sql(rw, "INSERT INTO pitr_probe SELECT g, 'before' FROM generate_series(1, 100) g")
    timeline = c.sql(c.node_dsn(leader), "SELECT timeline_id FROM pg_control_checkpoint()")
    target = c.sql(rw, "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', "
                       "'YYYY-MM-DD HH24:MI:SS.US') || '+00'")[0][0]
    time.sleep(1.5)
    c.sql(rw, "INSERT INTO pitr_probe SELECT g, 'after' FROM generate_series(101, 200) g")
    c.wait_archived(leader)

    before = c.plan
    restored = plan_for({**before.settings, "restoreTarget": f"time:{target}"}, c.mocks)
    changed = sorted(restored.steps_changed_since(before))
    names = [n for n in restored.steps]
    # The start step names the request too (a node that starts empty records it), so it
    # runs again: Patroni is running there, so it changes nothing.
    expected = sorted(n for n in names if n.endswith(
        ("-provision-configure", "-provision-start", "-restore-reset", "-restore-start",
         "-restore-check", "-health-gate", "-init-backups")))
    assert changed == expected
    c.plan = restored  # the stack now says so, as a user's would before `pulumi up`
    # Each node's own clock, for reading its journal from here on.
    since = {name: c.sh(name, "date +%s").stdout.strip() for name in c.names}
    t0 = time.monotonic()
    results = c.run_steps(changed)
    c.timings.add("point-in-time recovery: restore steps to healthy", time.monotonic() - t0)
    assert all("emptied" in results[n].changes for n in changed if n.endswith("-reset"))
    # The new history has a full backup of its own: a replica added later (the scaling
    # test's grow) restores it instead of replaying every timeline since the old one.
    (init,) = [n for n in changed if n.endswith("-init-backups")]
    assert "took a full backup after the point-in-time recovery" in results[init].changes
    leader = c.wait_healthy()
    rows = c.sql(c.node_dsn(leader), "SELECT phase, count(*) FROM pitr_probe GROUP BY 1")
    assert rows == [("before", 100)], rows
    new_timeline = c.sql(c.node_dsn(leader),
                         "SELECT timeline_id FROM pg_control_checkpoint()")
    assert new_timeline[0][0] > timeline[0][0], (timeline, new_timeline)
    for name in c.names:
        if name != leader:
            c.wait_streaming(name, timeout=300)
            assert c.sql(c.node_dsn(name), "SELECT count(*) FROM pitr_probe") == [(100,)]
    # The new leader archived where its timeline begins before the replicas restored
    # (pgha-after-restore), so none replayed the old timeline past the fork and none was
    # rewound.
    journals = {name: c.sh(name, f"sudo journalctl -u patroni --since @{since[name]} "
                                 "--no-pager -o cat").stdout for name in c.names}
    assert "(where this timeline begins) is archived" in journals[leader]
    assert [name for name in c.names if "running pg_rewind" in journals[name]] == []

    # The restore happens once: its steps run again (as a later `up` that re-ran them would)
    # change nothing and restart nothing. (The whole plan's re-run is
    # test_running_every_step_again_changes_nothing; it costs minutes on four VMs.)
    pids = c.patroni_pids()
    again = c.run_steps([n for n in expected if n.endswith(
        ("-restore-reset", "-restore-start", "-restore-check", "-provision-start"))])
    assert {n: r.changes for n, r in again.items() if r.changes != "pgha: no changes"} == {}
    assert c.patroni_pids() == pids


    # Clearing the setting re-renders patroni.yml (no restore method) without a restart.
    cleared = plan_for(before.settings, c.mocks)
    changed = sorted(cleared.steps_changed_since(restored))
    assert changed == sorted(n for n in cleared.steps if n.endswith(
        ("-provision-configure", "-provision-start", "-health-gate", "-init-backups")))
    c.plan = cleared
    c.run_steps(changed)
    assert c.patroni_pids() == pids
    c.wait_archived(c.wait_healthy())
