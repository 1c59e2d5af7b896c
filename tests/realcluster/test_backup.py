"""Backups with pgBackRest on the real cluster: WAL archived from whichever node leads,
across a failover and a switchover, with no gap; full, differential and incremental backups from a
standby; retention; a replica rebuilt from the repository."""
from __future__ import annotations

import json
import time

from components import backup
from components.config import RestoreTarget
from tests import workload
from tests.realcluster import harness as h
from tests.realcluster.backups import BackupCluster
from tests.realcluster.conftest import describe
from tests.wal import (lineage_segments, parse_lsn, segment_name, segment_number,
                       segment_of)


def test_wal_is_archived_across_failover_and_switchover_without_a_gap_and_expires(
        make_cluster):
    c = make_cluster(3, cls=BackupCluster)
    t0 = time.time()
    c.start_backups()
    print(f"stanza created and archive checked in {time.time() - t0:.1f} s")
    leader = c.wait_healthy()
    c.pgbackrest("--type=full", "backup")
    (full,) = c.backups()
    assert full["type"] == "full"
    assert full["database"]["id"] and full["archive"]["start"]
    c.sql(leader, "CREATE TABLE archived (id int); INSERT INTO archived SELECT 1")

    # The leader dies; the new one archives on its own timeline.
    c.crash(leader)
    others = [n for n in c.nodes if n != leader]
    new = c.wait_healthy(members=others, timeout=120)
    c.sql(new, "INSERT INTO archived SELECT 2")
    c.start_patroni(leader)
    c.wait_healthy(timeout=180)
    # A switchover to the synchronous standby: a third timeline, archived by its leader.
    candidate = c.wait_for("a synchronous standby", c.sync_standbys, 60)[0]
    switched = c.patronictl(new, "switchover", "--leader", new, "--candidate", candidate,
                            "--force", timeout=120)
    assert switched.returncode == 0, switched.stdout + switched.stderr
    c.wait_for(f"{candidate} leading", lambda: c.health()[0] == candidate, 180, 1)
    leader = candidate
    c.sql(leader, "INSERT INTO archived SELECT 3")
    c.pgbackrest("check", timeout=180)
    c.pgbackrest("--type=diff", "backup")
    c.pgbackrest("--type=incr", "backup")
    # pgBackRest's own check of the repository, then every WAL segment from the first
    # backup on, fetched as a restore_command would, timeline by timeline: each one from
    # the segment of its switch point (the newest timeline's history lists them all).
    verified = c.pgbackrest("verify")
    assert verified.returncode == 0 and "ERROR" not in verified.stderr, verified
    newest = c.info()["archive"][0]["max"]
    timeline = int(newest[:8], 16)
    assert timeline == 3, newest
    history = c.archive_get(f"{timeline:08X}.history", via=leader).decode()
    switches = [segment_of(parse_lsn(line.split()[1]))
                for line in history.splitlines() if line.strip()]
    expected = lineage_segments(full["archive"]["start"], history, newest)
    for segment in expected:
        assert len(c.archive_get(segment, via=new)) == 16 * 2**20, segment
    print(f"{len(expected)} WAL segments fetched from the archive over {timeline} "
          f"timelines, switches at segments {', '.join(f'{n:X}' for n in switches)}")

    # Two more full backups: retention (2) expires the first and what depends on it.
    c.pgbackrest("--type=full", "backup")
    c.pgbackrest("--type=full", "backup")
    kinds = [b["type"] for b in c.backups()]
    assert kinds == ["full", "full"], kinds
    assert full["label"] not in [b["label"] for b in c.backups()]


def test_point_in_time_recovery_keeps_exactly_the_rows_before_the_target(make_cluster):
    c = make_cluster(3, cls=BackupCluster)
    c.start_backups()
    c.pgbackrest("--type=full", "backup")
    leader = c.wait_healthy()
    timeline = c.statuses()[leader]["timeline"]
    c.sql(leader, "CREATE TABLE pitr (id int PRIMARY KEY)")
    for i in range(1, 41):  # one transaction each
        c.sql(leader, f"INSERT INTO pitr VALUES ({i})")
    time.sleep(1)
    target = c.sql(leader, "SELECT clock_timestamp()")
    time.sleep(1)
    for i in range(41, 81):
        c.sql(leader, f"INSERT INTO pitr VALUES ({i})")
    # Everything up to here is in the archive (check switches WAL and waits for it).
    c.pgbackrest("check", timeout=180)

    t0 = time.time()
    c.restore_to(RestoreTarget("time", target))
    leader = c.wait_healthy(timeout=300)
    print(f"restored to {target}: healthy in {time.time() - t0:.1f} s, leader {leader}")
    expected = "\n".join(str(i) for i in range(1, 41))
    for name in c.nodes:
        c.wait_for(f"the restored rows on {name}", lambda n=name: c.sql(
            n, "SELECT id FROM pitr ORDER BY id", check=False) == expected, 60)
    assert c.statuses()[leader]["timeline"] > timeline
    # The new timeline's first segment was archived before any replica restored
    # (pgha-after-restore), so the replicas, rebuilt from the repository and not from the
    # leader, replayed the new history: none followed the old timeline past the fork and
    # had to be rewound.
    for name in c.nodes:
        if name != leader:
            lines = c.nodes[name].log_lines(since=t0)
            assert any("replica has been created using pgbackrest" in line
                       for line in lines), name
            assert not [line for line in lines if "running pg_rewind" in line], name
    assert any("(where this timeline begins) is archived; replicas may restore" in line
               for line in c.nodes[leader].log_lines(since=t0))
    # The restored cluster archives on its new timeline.
    c.pgbackrest("check", timeout=180)


def test_a_replica_is_rebuilt_from_the_repository_while_the_leader_takes_writes(
        make_cluster):
    c = make_cluster(3, cls=BackupCluster)
    c.start_backups()
    c.pgbackrest("--type=full", "backup")
    leader = c.wait_healthy()
    replica = next(n for n in c.nodes if n != leader)
    writer = c.start_writer(first_id=c.next_write_id())
    try:
        c.wait_for("writes acknowledged", lambda: len(writer.records()) > 20, 30)
        t0 = time.time()
        reinit = c.patronictl(leader, "reinit", c.spec.cluster_name, replica, "--force",
                              "--wait")
        assert reinit.returncode == 0, reinit
        c.wait_healthy(timeout=180)
        print(f"{replica} rebuilt from the repository in {time.time() - t0:.1f} s")
        c.wait_for("writes after the rebuild", lambda: len(writer.records()) > 40, 30)
    finally:
        records = writer.stop()
    assert any("replica has been created using pgbackrest" in line
               for line in c.nodes[replica].log_lines(since=t0))
    acknowledged = workload.acknowledged_ids(records)
    assert acknowledged and acknowledged <= c.committed_ids(leader)
    # The rebuilt replica holds every acknowledged row once it has caught up.
    c.wait_for(f"{replica} caught up", lambda: acknowledged <= c.committed_ids(replica), 60)


def test_an_unreachable_repository_queues_wal_and_the_archive_catches_up_without_a_gap(
        make_cluster):
    c = make_cluster(3, cls=BackupCluster)
    c.start_backups()
    leader = c.wait_healthy()
    first = c.info()["archive"][0]["max"]
    # Archiving failed at bootstrap too, until the stanza existed.
    failures = int(c.sql(leader, "SELECT failed_count FROM pg_stat_archiver"))
    writer = c.start_writer(first_id=c.next_write_id())
    try:
        # The worst moment to lose the repository: while an archive-push session holds the
        # stanza's archive lock there. The session's server side must let go of it once
        # its client is gone, or no node can archive until pgBackRest's protocol-timeout.
        c.wait_for("an archive-push holding the repository's archive lock",
                   lambda: archive_push_in_flight(c, leader), 120, 0)
        c.net.cut("repo")
        t_cut = time.time()
        c.sql(leader, "CREATE TABLE filler (v text)")
        for _ in range(5):  # five segments' worth of WAL, each switched out
            c.sql(leader, "INSERT INTO filler SELECT repeat('x', 1000) "
                          "FROM generate_series(1, 12000); SELECT pg_switch_wal()")
        queued = c.wait_for("WAL queued on the leader", lambda: len(c.archive_queue(leader))
                            >= 5 and c.archive_queue(leader), 120)
        # PostgreSQL reports the failing archive_command (after pgBackRest's
        # archive-timeout, 60 s by default, without an answer from the repository).
        c.wait_for("a failed archive_command in pg_stat_archiver", lambda: int(c.sql(
            leader, "SELECT failed_count FROM pg_stat_archiver")) > failures, 150, 2)
        print(f"pg_stat_archiver reported the failure {time.time() - t_cut:.1f} s after "
              f"the repository went away")
        # The primary keeps its role and keeps committing while the repository is away.
        acks_during = [r for r in writer.records() if r.get("ok") and r["t"] > t_cut + 5]
        assert len(acks_during) > 20, len(acks_during)
        assert c.health()[0] == leader
        # Within pgBackRest's protocol-timeout as the product sets it (the keepalives end
        # the session sooner where its server side has nothing unacknowledged).
        limit = backup.SESSION_LIMITS["protocol_timeout"] + 30
        c.wait_for("the repository's archive lock released", lambda: not
                   c.repository_lock_held(), limit - (time.time() - t_cut), 0.5)
        print(f"the repository's archive lock was released {time.time() - t_cut:.1f} s "
              f"after the cut")
        c.net.restore("repo")
        t_back = time.time()
        c.wait_for("the archive queue drained", lambda: not c.archive_queue(leader), 240, 1)
        print(f"{len(queued)} segments queued while the repository was away; drained "
              f"{time.time() - t_back:.1f} s after it came back")
    finally:
        records = writer.stop()
    c.pgbackrest("check", timeout=180)
    newest = c.info()["archive"][0]["max"]
    for n in range(segment_number(first), segment_number(newest) + 1):
        assert len(c.archive_get(segment_name(1, n), via=leader)) == 16 * 2**20, n
    assert workload.acknowledged_ids(records) <= c.committed_ids(leader)


def test_the_leader_and_the_repository_lost_at_once_fail_over_within_ttl(make_cluster):
    """One hypervisor held the leader and the backup repository (the default placement
    puts the repository beside the first node, which leads at creation). A standby whose
    WAL stream stops asks the archive (restore_command) and PostgreSQL acts on Patroni's
    promote only between those calls: with pgBackRest's defaults each call to a vanished
    repository waits 60 s, and the new leader took writes 2 minutes after the loss."""
    c = make_cluster(3, cls=BackupCluster, profile="default")  # ttl 30 / 10 / 10
    c.start_backups()
    r = h.scenario_leader_failure(c, "cut", "default", with_leader=("repo",))
    why = describe(r)
    print(why)
    assert r.metrics["new_leader_s"] <= c.spec.ttl + 2 * c.spec.loop_wait + 15, why
    # Writable soon after the lock: the archive's bounded waits, not 60 s per call.
    assert r.metrics["first_ack_after_event_s"] <= r.metrics["new_leader_s"] + 30, why
    assert r.notes["rejoined_by"] in ("pg_rewind", "follow"), why


def archive_push_in_flight(c: BackupCluster, leader: str, within: float = 2) -> bool:
    """Switch the leader's WAL and watch for `within` s for the archive-push it starts to
    take the repository's archive lock."""
    c.sql(leader, "SELECT pg_switch_wal()")
    deadline = time.time() + within
    while time.time() < deadline:
        if c.repository_lock_held():
            return True
        time.sleep(0.002)
    return False


def test_a_clone_is_created_from_another_stacks_repository_and_never_writes_to_it(
        make_cluster):
    """cloneFromStack: a new cluster (another scope, stanza and name) bootstrapped from
    this cluster's backups at a point in time, through the product's clone-source
    configuration and the client identity a source exports."""
    c = make_cluster(3, cls=BackupCluster)
    c.start_backups()
    c.pgbackrest("--type=full", "backup")
    leader = c.wait_healthy()
    c.sql(leader, "CREATE TABLE migrated (id int PRIMARY KEY)")
    c.sql(leader, "INSERT INTO migrated SELECT generate_series(1, 50)")
    c.sql(leader, "SELECT pg_create_restore_point('before-migration')")
    c.sql(leader, "INSERT INTO migrated SELECT generate_series(51, 100)")
    c.pgbackrest("check", timeout=180)
    source = c.spec.cluster_name
    archived = c.info()["archive"][0]["max"]
    labels = [b["label"] for b in c.backups()]

    t0 = time.time()
    c.become_clone("staging", RestoreTarget("name", "before-migration"))
    leader = c.wait_healthy(timeout=300)
    print(f"clone healthy in {time.time() - t0:.1f} s, leader {leader}")
    assert c.rest(leader, "/patroni")[1]["patroni"]["scope"] == "staging"
    expected = "\n".join(str(i) for i in range(1, 51))
    for name in c.nodes:
        c.wait_for(f"the cloned rows on {name}", lambda n=name: c.sql(
            n, "SELECT id FROM migrated ORDER BY id", check=False) == expected, 120)
    # The clone writes, switches WAL and does not archive anywhere: the source's
    # repository holds exactly what it held, under its own stanza only.
    c.sql(leader, "INSERT INTO migrated SELECT generate_series(1000, 1100)")
    c.sql(leader, "SELECT pg_switch_wal()")
    assert c.sql(leader, "SHOW archive_mode") == "off"
    time.sleep(3)
    assert c.info()["archive"][0]["max"] == archived
    assert [b["label"] for b in c.backups()] == labels
    every = json.loads(h.run(["ip", "netns", "exec", c.net.ns("repo"), "runuser", "-u",
                              "postgres", "--", "env", f"PGBACKREST_CONFIG={c.configs['repo']}",
                              c.bin, "--output=json", "info"], cwd="/").stdout)
    assert [s["name"] for s in every] == [source]
    # The clone's node reads the source through its clone-source file (what the
    # configure-clone-source step checks on a VM).
    (listed,) = json.loads(c.clone_pgbackrest(leader, "--output=json", "info").stdout)
    assert [b["label"] for b in listed["backup"]] == labels
