"""Scaling under mocks: nodeCount 3 -> 5 -> 3 in the resource graph (components/membership.py).
New nodes add only their own resources and join one after another; each node past the
third carries delete-time steps ordered so that a shrink leaves one node at a time
(leave, then forget through the first node, then the next node) before any VM goes."""
from __future__ import annotations

import pytest

from components import membership
from components.config import build_spec
from components.provisioner import DELETE_DIAL_LIMIT
from tests.pulumi_mocks import COMMAND
from tests.unit.test_program import run_program
from tests.unit.test_program_backups import run_program as run_with_backups
from tests.unit.test_rendering import installed_files


def names(prog, typ=None) -> set[str]:
    return {r.name for r in prog.registrations
            if (typ is None or r.type == typ) and r.type != "pulumi:pulumi:Stack"}


@pytest.fixture(scope="module")
def three_five():
    return run_program({"nodeCount": 3}), run_program({"nodeCount": 5})


def test_growing_adds_only_the_new_nodes_resources(three_five):
    three, five = three_five
    added = names(five) - names(three)
    assert names(three) <= names(five)
    assert added and all("-srv4" in n or "-srv5" in n for n in added), sorted(added)
    # The first three nodes' resources are the same resources: their steps' inputs only
    # change where the stack's addresses appear (configure, the gate).
    for reg in three.registrations:
        # Domains, disks and seeds keep every input: nothing forces their replacement.
        if reg.type.startswith("libvirt:"):
            assert five.named(reg.name).inputs == reg.inputs, reg.name
    assert not any(membership.is_elastic(n) for n in build_spec({"nodeCount": 3}).nodes)


def test_new_nodes_join_one_after_another_before_the_gate(three_five):
    _, five = three_five
    join4, join5 = (five.named(f"pg-raft-srv{i}-provision-raft-join") for i in (4, 5))
    assert join4.urn in join5.dependencies
    for i, join in ((4, join4), (5, join5)):
        assert five.named(f"pg-raft-srv{i}-provision-start").urn in join.dependencies
        # ... once every node's firewall admits it to the Raft port.
        assert {five.named(f"pg-raft-srv{n}-provision-firewall").urn
                for n in range(1, 6)} <= join.dependencies
        assert join.inputs["create"] == membership.CREATE_SHELL
        assert "delete" not in join.inputs or not join.inputs["delete"]
        assert "run_membership join" in join.inputs["stdin"]
    gate = five.named("pg-raft-health-gate")
    assert {join4.urn, join5.urn} <= gate.dependencies
    # Only nodes past the third have membership steps.
    steps = [n for n in names(five, COMMAND) if n.endswith(("-raft-join", "-raft-leave",
                                                            "-raft-forget"))]
    assert len(steps) == 6 and all("-srv4-" in n or "-srv5-" in n for n in steps), steps


def test_leaving_is_ordered_one_node_at_a_time_before_any_vm_is_deleted(three_five):
    _, five = three_five
    domains = {r.name: r.urn for r in five.of_type("libvirt:index/domain:Domain")}
    leave = {i: five.named(f"pg-raft-srv{i}-provision-raft-leave") for i in (4, 5)}
    forget = {i: five.named(f"pg-raft-srv{i}-provision-raft-forget") for i in (4, 5)}
    for i in (4, 5):
        # Pulumi deletes a resource before what it depends on: leave, then forget, then
        # the node's VM and the first three VMs.
        assert forget[i].urn in leave[i].dependencies
        # (depending on a node's component is depending on its domain, seed and disk)
        assert domains[f"pg-raft-srv{i}-domain"] in forget[i].dependencies
        assert {domains[f"pg-raft-srv{n}-domain"] for n in (1, 2, 3)} <= forget[i].dependencies
        for step in (leave[i], forget[i]):
            assert step.inputs["create"] == membership.CREATE_SHELL
            assert step.inputs["delete"] == membership.DELETE_SHELL
            # Finite dialling: a departed-for-good node fails the step instead of hanging.
            assert step.inputs["connection"]["dialErrorLimit"] == DELETE_DIAL_LIMIT > 0
        assert leave[i].inputs["connection"]["host"] == f"203.0.113.{10 + i}"
        # forget runs on the first node and names the departing node's Raft address.
        assert forget[i].inputs["connection"]["host"] == "203.0.113.11"
        assert f"--address 203.0.113.{10 + i}:5010 --name srv{i}" in forget[i].inputs["stdin"]
        assert "run_membership handover --candidates srv1,srv2,srv3" in leave[i].inputs["stdin"]
        assert "systemctl disable --now patroni.service" in leave[i].inputs["stdin"]
    # srv5 leaves before srv4: srv5's forget waits (at deletion) for srv4's leave.
    assert leave[4].urn in forget[5].dependencies
    assert leave[5].urn not in forget[4].dependencies


def test_a_scaled_node_is_admitted_by_every_other_firewall_while_it_is_a_member(three_five):
    three, five = three_five
    for i in (4, 5):
        admitted = {n: five.named(f"pg-raft-srv{i}-admitted-by-srv{n}")
                    for n in range(1, 6) if n != i}
        for n, step in admitted.items():
            assert step.inputs["connection"]["host"] == f"203.0.113.{10 + n}"
            assert step.inputs["connection"]["dialErrorLimit"] == DELETE_DIAL_LIMIT > 0
            assert step.inputs["create"] == membership.CREATE_SHELL
            assert step.inputs["delete"] == membership.DELETE_SHELL
            mode, text = installed_files(step.inputs["stdin"])[
                f"/etc/pgha/firewall.d/srv{i}.nft"]
            assert f"add element inet pgha elastic_members {{ 203.0.113.{10 + i} }}" in text
            assert five.named(f"pg-raft-srv{n}-domain").urn in step.dependencies
        urns = {step.urn for step in admitted.values()}
        # In force before the node's Patroni starts ...
        assert urns <= five.named(f"pg-raft-srv{i}-provision-start").dependencies
        # ... and deleted only after Raft forgot the node (Pulumi deletes a resource
        # before what it depends on).
        assert urns <= five.named(f"pg-raft-srv{i}-provision-raft-forget").dependencies
    # The rendered rulesets name only the first three nodes: growing or shrinking never
    # changes a firewall step, so no update can cut a member off before it left.
    for n in range(1, 4):
        step = f"pg-raft-srv{n}-provision-firewall"
        assert five.named(step).inputs["stdin"] == three.named(step).inputs["stdin"]
    assert five.named("pg-raft-srv4-provision-firewall").inputs["stdin"].replace(
        "srv4", "srv1") != three.named("pg-raft-srv1-provision-firewall").inputs["stdin"]


def test_with_backups_the_repository_admits_each_scaled_node_too():
    five = run_with_backups({"nodeCount": 5, "backups": True})
    three = run_with_backups({"nodeCount": 3, "backups": True})
    for i in (4, 5):
        step = five.named(f"pg-raft-srv{i}-admitted-by-repository")
        assert step.inputs["connection"]["dialErrorLimit"] == DELETE_DIAL_LIMIT
        assert five.named("pg-raft-repository-domain").urn in step.dependencies
    firewall = "pg-raft-repository-firewall"
    assert five.named(firewall).inputs["stdin"] == three.named(firewall).inputs["stdin"]


def test_without_the_firewall_nothing_is_admitted():
    prog = run_program({"nodeCount": 5, "firewall": False})
    assert not [n for n in names(prog, COMMAND) if "-admitted-by-" in n]


def test_shrinking_back_registers_exactly_the_three_node_graph(three_five):
    three, five = three_five
    again = run_program({"nodeCount": 3})
    assert names(again) == names(three)
    for reg in again.registrations:
        if reg.type == COMMAND:
            assert reg.inputs == three.named(reg.name).inputs, reg.name


@pytest.mark.parametrize("count", [1, 2, 4, 9])
def test_an_even_count_or_fewer_than_three_is_refused(count):
    from components.config import ConfigError
    with pytest.raises(ConfigError) as err:
        build_spec({"nodeCount": count})
    assert "nodeCount" in str(err.value) and str(count) in str(err.value)
