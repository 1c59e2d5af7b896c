"""The backup schedules' calendar expressions, judged as systemd judges them: a corpus of
expressions that systemd accepts and refuses, each checked by the program's parser and,
where it exists, by `systemd-analyze calendar` itself."""
import shutil
import subprocess

import pytest

from components.calendar import calendar_problem
from tests.conftest import skip_or_fail

ACCEPTED = ["Sun *-*-* 01:00:00", "Mon..Sat *-*-* 01:00:00", "daily", "weekly", "Hourly",
            "*-*-* 4:00", "Mon,Fri 03:00", "*:0/15", "2026-*-01 00:00:00 UTC",
            "Sat,Sun 12:00", "*-*-1 02:30", "*-02~03 00:00", "Mon..Wed,Fri 1:2:3",
            "monday 05:00", "*-*-* 00:00:30.5", "2027-01..06-01", "Tue 23:59:59",
            "*-*-* 01:00:00 Europe/Berlin"]
REFUSED = ["every sunday at 1", "Sun 25:00", "*-13-01 00:00", "Funday 01:00",
           "*-*-* 01:60", "01:00 Sun", "*-*-32", "Mon 01:00 02:00", "noon", "*:*:*:*"]


def systemd_accepts(expression: str) -> bool:
    result = subprocess.run(["systemd-analyze", "calendar", expression],
                            capture_output=True, text=True)
    return result.returncode == 0


@pytest.mark.parametrize("expression", ACCEPTED)
def test_what_systemd_accepts_passes(expression):
    assert calendar_problem(expression) is None


@pytest.mark.parametrize("expression", REFUSED)
def test_what_systemd_refuses_is_refused_with_a_reason(expression):
    assert calendar_problem(expression)


@pytest.mark.parametrize("expression", ACCEPTED + REFUSED)
def test_the_corpus_is_what_systemd_itself_says(expression):
    if shutil.which("systemd-analyze") is None:
        skip_or_fail("systemd-analyze is needed (apt-get install systemd)")
    assert systemd_accepts(expression) == (expression in ACCEPTED)
