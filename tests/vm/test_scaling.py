"""Scaling on real VMs: nodeCount 3 -> 5 -> 3, each change the steps `pulumi up` runs for
it (new domains from the node image, the new nodes' steps and admissions, the changed
configure steps; then the departing nodes' leave, forget and admission deletes, and their
domains destroyed), with a writer running and the watchdog required. The leader keeps its
lock and PostgreSQL throughout, no node of the first three is reset, and no acknowledged
write is lost.

It runs last. The tier's stack has Patroni's timing for emulation (tests/vm/conftest.py),
which this scenario needs most: six emulated VMs on two host cores (five nodes and the
repository) starve each other's CPU while two of them boot."""
import time

from components.config import RAFT_PORT
from tests.vm.cluster import VmCluster
from tests.vm.plan import plan_for

PARTNER = "partner_node_status_server_"


def raft_members(c: VmCluster, name: str) -> set[str]:
    """The Raft membership as `name` sees it: itself and its partners."""
    status = dict(line.split(": ", 1) for line in c.sh(
        name, "sudo pgha-raft status").stdout.splitlines() if ": " in line)
    return {status["self"]} | {k[len(PARTNER):] for k in status if k.startswith(PARTNER)}


def postmaster_starts(c: VmCluster, names) -> dict[str, str]:
    return {n: c.rest(n, "/patroni")["postmaster_start_time"] for n in names}


def boot_ids(c: VmCluster, names) -> dict[str, str]:
    return {n: c.sh(n, "cat /proc/sys/kernel/random/boot_id").stdout.strip() for n in names}


def test_three_to_five_and_back_to_three_keeping_the_leader(vm_cluster):
    c = vm_cluster
    leader = c.wait_healthy()
    core = list(c.names)
    starts, boots = postmaster_starts(c, core), boot_ids(c, core)
    writer = c.start_writer("scaling")
    try:
        for count in (5, 3):
            t0 = time.monotonic()
            c.apply(plan_for({**c.plan.settings, "nodeCount": count}, c.mocks))
            c.timings.add(f"scaling: steps of nodeCount -> {count}", time.monotonic() - t0)
            assert c.wait_healthy() == leader, f"the leader changed (nodeCount {count})"
            assert sorted(c.members()) == sorted(c.names) and len(c.names) == count
            raft = {f"{ip}:{RAFT_PORT}" for ip in c.addresses.values()}
            for name in c.names:
                assert raft_members(c, name) == raft, name
            assert postmaster_starts(c, core) == starts, "a node of the first three restarted"
            assert boot_ids(c, core) == boots, "a node of the first three was reset"
    finally:
        acknowledged = writer.stop()
    assert len(acknowledged) > 100
    assert c.lost_writes(acknowledged) == set()
    # The departed nodes' VMs and disks are gone, as `pulumi up` leaves them.
    listed = c.lab.domain_names()
    assert all(c.plan.domains[n]["name"] in listed for n in c.names)
    assert not [d for d in listed if d.endswith(("-srv4", "-srv5"))], listed
