"""The recording watchdog sees what a softdog would punish: the leader arms it with the
timeout the settings give (ttl - watchdogSafetyMargin), keeps it alive every loop, and a
leader whose Patroni stops for longer than that timeout is one the softdog would have
reset. Every other real-cluster test fails on such a gap (conftest.make_cluster)."""
from __future__ import annotations

import os
import signal
import time


def test_a_frozen_leader_is_a_node_the_watchdog_would_reset(make_cluster):
    # ttl 20, loopWait 5 (the fast profile) and a 10 s watchdog: a frozen loop of 13 s
    # outlasts the watchdog, not the leader key (updated at most 5 s before the freeze).
    c = make_cluster(3, settings={"watchdogSafetyMargin": 10})
    leader = c.wait_healthy()
    timeout = c.spec.ttl - c.spec.watchdog_safety_margin
    recording = c.watchdogs[leader]
    c.wait_for("keepalives on the leader", lambda: recording.keepalive_count() >= 3, 30)
    assert [s.timeout for s in recording.sessions] == [timeout]
    # Only a leader arms its watchdog.
    assert all(not c.watchdogs[n].sessions for n in c.nodes if n != leader)
    assert c.watchdog_misses() == []

    c.expect_watchdog_fire(leader)
    frozen = time.time()
    os.killpg(c.nodes[leader].patroni_pid, signal.SIGSTOP)
    try:
        time.sleep(timeout + 3)
    finally:
        os.killpg(c.nodes[leader].patroni_pid, signal.SIGCONT)
    count = recording.keepalive_count()
    c.wait_for("keepalives again", lambda: recording.keepalive_count() > count, 30)

    (miss,) = recording.misses()
    assert miss.node == leader and miss.timeout == timeout and not miss.still_open
    assert miss.start <= frozen and miss.gap > timeout + 3, str(miss)
    assert miss.gap < timeout + 3 + 2 * c.spec.loop_wait, str(miss)
    # The leader key outlived the freeze: same leader, and the verdict that every other
    # test takes leaves out what this test expected.
    assert c.wait_healthy() == leader
    assert c.watchdog_misses() == []
