"""nodeCount 3 -> 5 -> 3 under a steady writer, the leader among the departing nodes:
Raft and Patroni membership exact after each step, no acknowledged write lost, never two
writable primaries, and the shrunken cluster still survives losing its leader."""
from __future__ import annotations

import time

from tests.realcluster import harness as h
from tests.workload import acknowledged_ids
from tests.realcluster.scaling import ScalingCluster, wait_exact_membership


def test_grow_to_five_and_shrink_to_three_with_the_leader_leaving(make_cluster):
    # Asynchronous replication: a switchover may then pick any replica, so the test can
    # put the leadership on a node that is about to leave (in synchronous mode only the
    # synchronous standby may take it over).
    c = make_cluster(3, settings={"synchronousMode": False}, cls=ScalingCluster)
    writer = c.start_writer()
    probes = c.start_probes("-a")
    figures = {}
    try:
        t0 = time.monotonic()
        added = c.grow(5)
        assert added == ["srv4", "srv5"]
        c.wait_healthy(timeout=240)
        wait_exact_membership(c)
        figures["grow 3 -> 5 to healthy (s)"] = round(time.monotonic() - t0, 1)
        probes.update(c.start_probes("-b", names=added))

        # The leadership on the highest-numbered node, which leaves first.
        switched = c.patronictl("srv1", "switchover", "--candidate", "srv5", "--force")
        assert switched.returncode == 0, switched.stdout + switched.stderr
        c.wait_for("srv5 to lead", lambda: c.leaders() == ["srv5"], 60)
        c.wait_healthy()

        t0 = time.monotonic()
        departed = c.shrink(3)
        assert departed == ["srv5", "srv4"]
        leader = c.wait_healthy()
        wait_exact_membership(c)
        figures["shrink 5 -> 3 to healthy (s)"] = round(time.monotonic() - t0, 1)
        assert leader in ("srv1", "srv2", "srv3")
        handover = dict(c.steps)["srv5: handover"]
        assert handover.startswith("changed: switched over from srv5"), c.steps
        assert "not the leader" in dict(c.steps)["srv4: handover"], c.steps

        # Three members again: losing the leader still leaves a majority that fails over.
        c.crash(leader)
        new = c.wait_for("a new leader", lambda: [n for n in c.leaders() if n != leader],
                         c.spec.ttl * 3, 0.5)[0]
        c.wait_healthy(members=[n for n in c.addresses if n != leader], timeout=120)
        time.sleep(2)
    finally:
        acks = writer.stop()
        series = {name: h.probe_series(p.stop()) for name, p in probes.items()}
    print("steps:", c.steps)
    print("figures:", figures)
    acknowledged = acknowledged_ids(acks)
    assert len(acknowledged) > 100, len(acknowledged)
    assert acknowledged - c.committed_ids(new) == set()
    assert h.overlapping_primaries(series) == []
