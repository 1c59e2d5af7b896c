"""systemd calendar expressions (systemd.time(7), "Calendar Events"), checked before
anything is created: the backup timers' OnCalendar would otherwise fail only on the
repository host, late in an `up`.

    [weekdays] [[year-]month-day] [hour:minute[:second]] [timezone]

or a shorthand (daily, weekly, ...). Each date and time component is `*`, or values,
ranges `a..b` and repetitions `a/step` separated by commas; a day may count from the
month's end (`~`). At least one part is given; the unit tier checks this against
`systemd-analyze calendar` where it exists.
"""
from __future__ import annotations

import re

SHORTHANDS = frozenset({"minutely", "hourly", "daily", "monthly", "weekly", "yearly",
                        "annually", "quarterly", "semiannually"})
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
# Bounds of each component, as systemd accepts them.
BOUNDS = {"year": (1970, 2199), "month": (1, 12), "day": (1, 31), "hour": (0, 23),
          "minute": (0, 59), "second": (0, 59)}
ZONE_RE = re.compile(r"^(UTC|[A-Z][A-Za-z_+-]*(/[A-Za-z0-9_+-]+)+)$")
VALUE_RE = re.compile(r"^(\d+)(?:\.\.(\d+))?(?:/(\d+))?$")
SECOND_RE = re.compile(r"^(\d+)(?:\.\d{1,6})?(?:/(\d+)(?:\.\d{1,6})?)?$")


def calendar_problem(expression: str) -> str | None:
    """None when systemd accepts `expression`, else what is wrong with it."""
    words = expression.split()
    if not words:
        return "empty"
    if len(words) == 1 and words[0].lower() in SHORTHANDS:
        return None
    if ZONE_RE.match(words[-1]) and len(words) > 1:
        words = words[:-1]
    parts = {"weekdays": None, "date": None, "time": None}
    for word in words:
        kind = "time" if ":" in word else "date" if "-" in word and word[0] != "-" \
            else "weekdays"
        if parts[kind] is not None or any(parts[k] is not None for k in
                                          list(parts)[list(parts).index(kind) + 1:]):
            return f"{word!r} is out of place (weekdays, then date, then time)"
        parts[kind] = word
    checks = {"weekdays": _weekdays_problem, "date": _date_problem, "time": _time_problem}
    for kind, word in parts.items():
        if word is not None:
            problem = checks[kind](word)
            if problem:
                return problem
    return None


def _weekday(word: str) -> bool:
    word = word.lower()
    return len(word) >= 3 and any(day.startswith(word) for day in WEEKDAYS) \
        and (len(word) == 3 or word in WEEKDAYS)


def _weekdays_problem(word: str) -> str | None:
    for item in word.split(","):
        if not all(_weekday(day) for day in item.split("..", 1)):
            return f"{item!r} is not a weekday (Mon..Sun) nor a range of them"
    return None


def _values_problem(text: str, component: str, pattern: re.Pattern = VALUE_RE
                    ) -> str | None:
    low, high = BOUNDS[component]
    if text == "*":
        return None
    for item in text.split(","):
        match = pattern.match(item)
        if not match:
            return f"{item!r} is not a {component} (a number, a..b, a/step or *)"
        numbers = [int(n) for n in match.groups()[:2] if n is not None]
        if any(not low <= n <= high for n in numbers):
            return f"{item!r} is not a {component} between {low} and {high}"
    return None


def _date_problem(word: str) -> str | None:
    day_sep = "~" if "~" in word else "-"
    head, _, day = word.rpartition(day_sep)
    fields = head.split("-")
    if len(fields) not in (1, 2) or not day:
        return f"{word!r} is not a date ([year-]month-day)"
    named = dict(zip(("year", "month")[-len(fields):], fields), day=day)
    for component, text in named.items():
        problem = _values_problem(text, component)
        if problem:
            return problem
    return None


def _time_problem(word: str) -> str | None:
    fields = word.split(":")
    if len(fields) not in (2, 3):
        return f"{word!r} is not a time (hour:minute[:second])"
    for component, text in zip(("hour", "minute", "second"), fields):
        problem = _values_problem(text, component,
                                  SECOND_RE if component == "second" else VALUE_RE)
        if problem:
            return problem
    return None
