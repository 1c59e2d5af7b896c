"""A whole hypervisor lost under a writer: the host holding the leader (and, as placed,
the backup repository) fails at one instant, its link to the LAN cut, its VMs and its
libvirtd gone. The two other hosts' nodes keep a Raft majority: one of them leads within
ttl, writes go on, and no acknowledged write is lost. Then the host comes back (link,
libvirtd, its VMs started) and its node rejoins as a streaming replica by itself.

The fault and the waits are `lose_the_leaders_host`, the verdict `check_host_loss`, the
two under a writer `host_loss_under_a_writer`, which the real-engine test
(tests/e2e/test_real_engine.py) runs on its own stack."""
from __future__ import annotations

import time
from dataclasses import dataclass

from tests import workload
from tests.vm.cluster import VmCluster
from tests.vm.test_power_loss import (REJOIN_BOUND_S, note_a_slow_rejoin, rewind_seconds,
                                      wait_booted)


@dataclass
class HostLoss:
    leader: str      # the node that led when its host was lost
    host: str        # that host
    new_leader: str
    lost_at: float   # time.time() of each moment
    failover_at: float
    writable_at: float
    restored_at: float
    booted_at: float
    streaming_at: float


def lose_the_leaders_host(c: VmCluster, away_s: float = 30) -> HostLoss:
    """The fault: the leader's host lost, the cluster left on the others for `away_s`,
    then the host restored; waits for the new leader, the node's boot and its streaming
    (the waits fail only on their generous timeouts; the verdict is the caller's)."""
    leader = c.wait_healthy()
    host = c.plan.placement[leader]
    lost = sorted(name for name, h in c.plan.placement.items() if h == host)
    t_lost = time.time()
    c.lab.lose_host(host)
    new = c.wait_new_leader(leader, timeout=c.spec.ttl * 4)
    t_failover = time.time()
    # The host stays away while the cluster takes writes on the others: from the end of
    # the new leader's promotion, away_s.
    c.wait_writable(new, timeout=c.spec.ttl * 4)
    t_writable = time.time()
    time.sleep(away_s)
    t_restore = time.time()
    started = c.lab.restore_host(host)
    assert started == sorted(c.domain(name) for name in lost), started
    t_boot = wait_booted(c, leader)
    c.wait_streaming(leader, timeout=REJOIN_BOUND_S)
    return HostLoss(leader, host, new, t_lost, t_failover, t_writable, t_restore, t_boot,
                    time.time())


def check_host_loss(c: VmCluster, loss: HostLoss, records: list[dict],
                    acknowledged: set[int]) -> None:
    """The verdict, with the figures into the run's timings."""
    ok = sorted(r["t"] for r in records if r["ok"])
    pause = workload.max_ack_gap(records)
    rejoin_s = loss.streaming_at - loss.booted_at
    rewind_s = rewind_seconds(c, loss.leader)
    c.timings.add("host lost -> new leader", loss.failover_at - loss.lost_at)
    c.timings.add("host lost -> new leader writable", loss.writable_at - loss.lost_at)
    c.timings.add("host lost: longest pause between acknowledged writes", pause)
    c.timings.add("host restored -> its node booted", loss.booted_at - loss.restored_at)
    c.timings.add("host restored: boot -> streaming again", rejoin_s)
    c.timings.add("host restored: of which pg_rewind", rewind_s)
    assert c.plan.placement[loss.new_leader] != loss.host
    # Writes went on while the host was gone, and the failover came within ttl.
    assert [t for t in ok if loss.writable_at < t < loss.restored_at], (
        "no write while the host was gone")
    assert loss.failover_at - loss.lost_at <= c.spec.ttl + c.spec.loop_wait
    note_a_slow_rejoin(c, loss.leader, rejoin_s, rewind_s)
    assert c.lost_writes(acknowledged) == set()


def host_loss_under_a_writer(c: VmCluster, tag: str) -> set[int]:
    """The scenario: a writer (the workload), the fault, then the verdict once the writer
    stopped. Returns the acknowledged writes."""
    writer = c.start_writer(tag)
    try:
        time.sleep(5)
        loss = lose_the_leaders_host(c)
    finally:
        acknowledged = writer.stop()
    check_host_loss(c, loss, writer.records(), acknowledged)
    return acknowledged


def test_losing_the_leaders_host_costs_one_node_and_it_comes_back_by_itself(vm_cluster):
    c = vm_cluster
    c.wait_healthy()
    host_loss_under_a_writer(c, "host-loss")
    c.wait_healthy()
