"""Scenario 8: five nodes survive losing two members (the leader among them)."""
from __future__ import annotations

from tests.realcluster import harness as h
from tests.realcluster.conftest import describe


def test_five_nodes_survive_losing_leader_and_a_replica(make_cluster):
    c = make_cluster(5)
    r = h.scenario_two_lost(c, c.profile)
    print(describe(r))
    why = describe(r)
    assert r.new_leader and r.new_leader not in r.notes["lost_members"], why
    assert r.lost_ids == [] and r.overlaps == [], why
    assert r.metrics["old_leader_readonly_s"] < r.metrics["new_leader_s"], why
    raft = c.raft_status(r.new_leader)
    assert raft["has_quorum"] == "True" and raft["partner_nodes_count"] == "4", raft
