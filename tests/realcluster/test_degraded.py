"""Scenarios 5-7: a replica's link cut, Raft quorum loss, maximum_lag_on_failover and
patronictl reinit."""
from __future__ import annotations

from tests.realcluster import harness as h
from tests.realcluster.conftest import describe


def test_replica_link_cut_keeps_leader_and_writes_and_replica_catches_up(make_cluster):
    c = make_cluster(3)
    r = h.scenario_replica_cut(c, c.profile)
    print(describe(r))
    why = describe(r)
    assert r.metrics["leader_changes"] == 0, why
    assert r.lost_ids == [] and r.overlaps == [], why
    # The leader drops the unreachable synchronous standby and names the other one.
    assert r.metrics["acks_in_last_5s_of_cut"] > 0, why
    assert r.metrics["write_outage_s"] < c.spec.ttl, why


def test_quorum_loss_makes_primary_read_only_within_ttl_and_service_returns(make_cluster):
    c = make_cluster(3)
    r = h.scenario_quorum_loss(c, c.profile)
    print(describe(r))
    why = describe(r)
    assert r.metrics["old_leader_readonly_s"] <= c.spec.ttl, why
    assert r.lost_ids == [] and r.overlaps == [], why
    assert r.metrics["service_back_s"] is not None, why


def test_lagging_replica_is_not_promoted_and_reinit_rebuilds_it(make_cluster):
    c = make_cluster(3, settings={"synchronousMode": False})
    r = h.scenario_lagging_replica(c, c.profile)
    print(describe(r))
    why = describe(r)
    lagger = r.notes["lagging_replica"]
    assert r.metrics["lag_bytes"] > c.spec.maximum_lag_on_failover, why
    assert r.notes["switchover_refused"], why
    assert r.notes["leaders_after_refusal"] == [r.old_leader], why
    assert r.notes["refusal_logged"], f"no 'Member {lagger} exceeds maximum replication lag'\n{why}"
    assert r.notes["reinit_rc"] == 0, why
    assert r.notes["reinit_removed_data"], why
    assert r.notes["bulk_rows_on_replica"] == r.notes["bulk_rows_on_leader"], why
