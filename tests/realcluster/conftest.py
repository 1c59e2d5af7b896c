"""Fixtures for the real-cluster tier.

Outside CI, a machine that cannot run the tier (not root, no network namespaces, no
way to fetch PostgreSQL/Patroni) skips it with the reason; in CI (CI=true or
PGHA_NO_SKIP=1) that is a failure instead.  PGHA_RC_PROFILE picks the timing profile
of the scenarios that do not pin one (default: fast = ttl 20, loopWait 5,
retryTimeout 5).  Logs of a failed test are kept under PGHA_RC_LOGS
(default /tmp/pgha-realcluster-logs/<test>).

Every node's watchdog records Patroni's keepalives (tests/realcluster/watchdog.py): a
test fails when a node would have been reset, unless the test expected it
(Cluster.expect_watchdog_fire).
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.realcluster import harness as h

PROFILE = os.environ.get("PGHA_RC_PROFILE", "fast")
LOG_ROOT = Path(os.environ.get("PGHA_RC_LOGS", "/tmp/pgha-realcluster-logs"))


def _skips_forbidden() -> bool:
    return os.environ.get("PGHA_NO_SKIP") == "1" or \
        os.environ.get("CI", "").lower() in ("1", "true", "yes")


def skip_or_fail(reason: str) -> None:
    if _skips_forbidden():
        pytest.fail(f"real-cluster tier cannot run here (skips are forbidden in CI): {reason}",
                    pytrace=False)
    pytest.skip(reason)


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)


@pytest.fixture(scope="session")
def runtime() -> h.Runtime:
    problem = h.environment_problem()
    if problem:
        skip_or_fail(problem)
    h.install_signal_handlers()
    h.sweep_stale_state()
    try:
        return h.ensure_runtime()
    except (h.HarnessError, OSError) as e:
        skip_or_fail(f"cannot provision PostgreSQL {h.PG_RELEASE} / Patroni: {e}")
        raise


@pytest.fixture
def make_cluster(runtime, request):
    """make_cluster(node_count=3, profile=None, settings=None, cls=Cluster, **extra)
    -> a healthy Cluster (or subclass, given `extra`)."""
    clusters: list[h.Cluster] = []

    def make(node_count: int = 3, profile: str | None = None,
             settings: dict | None = None, cls: type = h.Cluster, **extra) -> h.Cluster:
        cluster = cls(runtime, node_count, profile or PROFILE, settings,
                      label=request.node.name, **extra)
        clusters.append(cluster)
        cluster.start()
        return cluster

    yield make
    failed = any(getattr(getattr(request.node, f"rep_{w}", None), "failed", False)
                 for w in ("setup", "call"))
    # The verdict of the recording watchdogs, taken before the clusters stop (stopping
    # kills Patroni, which a softdog would not forgive either).
    misses = [miss for cluster in clusters for miss in cluster.watchdog_misses()]
    for cluster in clusters:
        counts = {n: r.keepalive_count() for n, r in cluster.watchdogs.items()}
        print(f"\n{cluster.label}: watchdog keepalives per node {counts}")
    for miss in misses:
        print(f"watchdog: {miss}")
    for cluster in clusters:
        try:
            if failed:
                dest = cluster.save_logs(LOG_ROOT / request.node.name)
                print(f"\nlogs of {cluster.label} kept in {dest}")
                for t, label in cluster.events:
                    print(f"  {t:.3f} {label}")
                for name, node in cluster.nodes.items():
                    tail = node.log_lines()[-25:]
                    print(f"--- {name} ({node.ip}) patroni.log, last {len(tail)} lines")
                    print("\n".join(tail))
        finally:
            cluster.stop()
            cluster.remove_files()
    if misses and not failed:
        pytest.fail("a watchdog would have reset a node:\n" +
                    "\n".join(str(miss) for miss in misses), pytrace=False)


def describe(result: h.ScenarioResult) -> str:
    """A one-screen account of a scenario for assertion messages."""
    lines = [f"{k}: {v}" for k, v in result.summary().items()]
    t0 = result.t_event or (result.events[0][0] if result.events else 0.0)
    lines += [f"  {t - t0:+8.2f}s {label}" for t, label in result.events]
    return "\n".join(lines)
