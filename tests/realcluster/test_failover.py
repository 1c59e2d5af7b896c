"""Scenarios 2-4: the leader's link cut (the reference post's experiment, with the
product's default timing), the leader crashing, and a switchover."""
from __future__ import annotations

from tests.realcluster import harness as h
from tests.realcluster.conftest import describe


def _common(r: h.ScenarioResult) -> None:
    why = describe(r)
    assert r.new_leader and r.new_leader != r.old_leader, why
    assert r.metrics["acked_writes"] > 20, why
    assert r.lost_ids == [], f"acknowledged writes lost: {r.lost_ids}\n{why}"
    assert r.overlaps == [], f"two writable primaries at once: {r.overlaps[:5]}\n{why}"


def test_leader_link_cut_fails_over_and_old_leader_rewinds_against_idle_primary(make_cluster):
    c = make_cluster(3, profile="default")  # the product's defaults: ttl 30 / 10 / 10
    r = h.scenario_leader_failure(c, "cut", "default")
    print(describe(r))
    _common(r)
    why = describe(r)
    ttl = c.spec.ttl
    # The isolated leader stops taking writes before anybody else is promoted.
    assert r.metrics["old_leader_readonly_s"] < r.metrics["new_leader_s"], why
    assert r.metrics["old_leader_readonly_s"] <= ttl, why
    assert r.metrics["new_leader_s"] <= ttl + 2 * c.spec.loop_wait + 15, why
    # Back on the network it follows the new timeline through pg_rewind, although the
    # writer stopped before the link returned (idle new primary), without a reinit.
    assert r.notes["rejoined_by"] == "pg_rewind", why
    assert r.metrics["rejoin_s"] <= 2 * ttl + 30, why


def test_leader_crash_fails_over_and_node_rejoins_on_restart(make_cluster):
    c = make_cluster(3)
    r = h.scenario_leader_failure(c, "crash", c.profile)
    print(describe(r))
    _common(r)
    why = describe(r)
    assert r.metrics["old_leader_readonly_s"] < 2, why
    assert r.metrics["new_leader_s"] <= c.spec.ttl + 2 * c.spec.loop_wait + 15, why
    assert r.notes["rejoined_by"] in ("pg_rewind", "follow"), why
    assert r.metrics["rejoin_s"] <= 2 * c.spec.ttl + 30, why


def test_switchover_to_sync_standby(make_cluster):
    c = make_cluster(3)
    r = h.scenario_switchover(c, c.profile)
    print(describe(r))
    _common(r)
    why = describe(r)
    assert r.notes["patronictl_rc"] == 0, why
    assert r.metrics["switchover_command_s"] < 60, why
    assert r.metrics["write_outage_s"] < 15, why
    assert r.notes["rejoined_by"] != "basebackup", why
