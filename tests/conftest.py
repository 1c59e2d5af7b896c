"""Shared test settings: in CI (PGHA_NO_SKIP=1) a skipped test is a failure."""
import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

NO_SKIP = os.environ.get("PGHA_NO_SKIP") == "1"
# The one skip CI may allow, and only when it says so: the real-engine test
# (tests/e2e/test_real_engine.py) runs only where the Pulumi CLI and provider plugins are
# installed (no package registry ships them) and only when asked (PGHA_REAL_ENGINE=1).
REAL_ENGINE_SKIP = "real-engine test not run"
ALLOW_SKIP_REAL_ENGINE = os.environ.get("PGHA_ALLOW_SKIP_REAL_ENGINE") == "1"


def skip_or_fail(reason: str) -> None:
    """Skip with the reason, or fail when skips are forbidden (CI)."""
    if NO_SKIP:
        pytest.fail(f"PGHA_NO_SKIP=1 forbids skipping: {reason}")
    pytest.skip(reason)


def pytest_runtest_logreport(report):
    # Skips raised by pytest itself or by plugins are failures too in CI.
    if ALLOW_SKIP_REAL_ENGINE and report.skipped and REAL_ENGINE_SKIP in str(report.longrepr):
        return
    if NO_SKIP and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"skipped, but PGHA_NO_SKIP=1 forbids skips: {report.longrepr}"
