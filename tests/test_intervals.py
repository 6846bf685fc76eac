"""
Which account-local days a run exports: each day only once it is over, and every day exactly once.

The expectations come from the definition, not from the code: a day of the account is over at the
next day's local midnight (``end_of_day``), and a run over ``[start, end)`` must export exactly the
days that end within ``(start, end]``.
"""

from __future__ import annotations

from collections import Counter
from datetime import date, datetime, time, timedelta, timezone
from itertools import pairwise
from types import SimpleNamespace
from zoneinfo import ZoneInfo

import pytest

from airflow_provider_kaleyra_email.intervals import days_for_interval, days_for_run, today

UTC = timezone.utc
ONE_DAY = timedelta(days=1)
ZONES = [
    "UTC",
    "America/Los_Angeles",
    "America/New_York",
    "Asia/Kolkata",
    "Pacific/Auckland",
    "Pacific/Chatham",  # +12:45 / +13:45
]


def end_of_day(day: date, tz) -> datetime:
    """When ``day`` is over in ``tz``: the next day's local midnight, as a UTC instant."""
    moment = datetime.combine(day + ONE_DAY, time(0), tzinfo=tz).astimezone(UTC)
    # None of these zones moves its clocks at midnight, so that midnight happens once.
    assert (moment - timedelta(seconds=1)).astimezone(tz).date() == day
    return moment


def exported(start: datetime, end: datetime, tz) -> list[date]:
    first, last = days_for_interval(start, end, tz)
    return [first + n * ONE_DAY for n in range((last - first).days + 1)]


def local_midnights(zone: str, first: date, last: date, step_days: int = 1, hour: int = 0) -> list[datetime]:
    """The instants a schedule in ``zone`` fires at: every ``step_days`` days at ``hour`` local time."""
    tz = ZoneInfo(zone)
    days = range(0, (last - first).days + 1, step_days)
    return [datetime.combine(first + n * ONE_DAY, time(hour), tzinfo=tz).astimezone(UTC) for n in days]


def hourly(zone: str, first: date, last: date) -> list[datetime]:
    """Every hour (in real time) from ``zone``'s midnight of ``first`` to that of ``last``."""
    start, stop = local_midnights(zone, first, first)[0], local_midnights(zone, last, last)[0]
    return [start + timedelta(hours=n) for n in range(int((stop - start) / timedelta(hours=1)) + 1)]


#: (name, the instants a schedule fires at); each pair of neighbours is one run's data interval.
#: Two years of days and weeks, and the months around every DST change of 2026 for hours.
SCHEDULES = {
    "daily": lambda zone: local_midnights(zone, date(2026, 1, 1), date(2028, 1, 1)),
    "daily at 07:00": lambda zone: local_midnights(zone, date(2026, 1, 1), date(2028, 1, 1), hour=7),
    "weekly": lambda zone: local_midnights(zone, date(2025, 12, 29), date(2028, 1, 3), step_days=7),
    "hourly, March-April": lambda zone: hourly(zone, date(2026, 3, 1), date(2026, 4, 15)),
    "hourly, September-November": lambda zone: hourly(zone, date(2026, 9, 20), date(2026, 11, 10)),
}


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("schedule_zone", ZONES)
@pytest.mark.parametrize("account_zone", ZONES)
def test_consecutive_runs_export_every_day_exactly_once_and_only_after_it_ended(schedule, schedule_zone, account_zone):
    tz = ZoneInfo(account_zone)
    fires = SCHEDULES[schedule](schedule_zone)
    counts: Counter[date] = Counter()
    for start, end in pairwise(fires):
        for day in exported(start, end, tz):
            counts[day] += 1
            # Over by the end of the run's interval, and not over before it began (no run waits a day late).
            assert start < end_of_day(day, tz) <= end, (day, start, end)

    near = range((fires[-1] - fires[0]).days + 5)
    candidates = [fires[0].date() - 2 * ONE_DAY + n * ONE_DAY for n in near]
    expected = [day for day in candidates if fires[0] < end_of_day(day, tz) <= fires[-1]]
    assert counts == Counter(expected)


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


def at(zone: str, *parts: int) -> datetime:
    return datetime(*parts, tzinfo=ZoneInfo(zone))


@pytest.mark.parametrize(
    ("start", "end", "account_zone", "days"),
    [
        # A UTC daily run over [Nov 2, Nov 3): each account gets the day of its own that ended inside it.
        (utc(2026, 11, 2), utc(2026, 11, 3), "UTC", [date(2026, 11, 2)]),
        (utc(2026, 11, 2), utc(2026, 11, 3), "America/Los_Angeles", [date(2026, 11, 1)]),  # over at 08:00 UTC
        (utc(2026, 11, 2), utc(2026, 11, 3), "America/New_York", [date(2026, 11, 1)]),  # over at 05:00 UTC
        (utc(2026, 11, 2), utc(2026, 11, 3), "Asia/Kolkata", [date(2026, 11, 2)]),  # over at 18:30 UTC
        (utc(2026, 11, 2), utc(2026, 11, 3), "Pacific/Auckland", [date(2026, 11, 2)]),  # over at 11:00 UTC
        (utc(2026, 11, 2), utc(2026, 11, 3), "Pacific/Chatham", [date(2026, 11, 2)]),  # over at 10:15 UTC
        # A Kolkata daily run on a UTC account: the UTC day that ended at 05:30 Kolkata time.
        (at("Asia/Kolkata", 2026, 11, 2), at("Asia/Kolkata", 2026, 11, 3), "UTC", [date(2026, 11, 1)]),
        # Schedules in the account's zone, across its DST changes: a 23-hour day and a 25-hour day.
        (at("America/Los_Angeles", 2026, 3, 8), at("America/Los_Angeles", 2026, 3, 9), "America/Los_Angeles", [date(2026, 3, 8)]),
        (at("America/New_York", 2026, 11, 1), at("America/New_York", 2026, 11, 2), "America/New_York", [date(2026, 11, 1)]),
        (at("Pacific/Auckland", 2026, 4, 5), at("Pacific/Auckland", 2026, 4, 6), "Pacific/Auckland", [date(2026, 4, 5)]),
        # Hourly UTC runs on a Los Angeles account: only the run whose hour ends the day (08:00 UTC) exports it.
        (utc(2026, 11, 2, 6), utc(2026, 11, 2, 7), "America/Los_Angeles", []),
        (utc(2026, 11, 2, 7), utc(2026, 11, 2, 8), "America/Los_Angeles", [date(2026, 11, 1)]),
        (utc(2026, 11, 2, 8), utc(2026, 11, 2, 9), "America/Los_Angeles", []),
        (utc(2026, 7, 2, 6), utc(2026, 7, 2, 7), "America/Los_Angeles", [date(2026, 7, 1)]),  # 07:00 UTC in summer
        # A weekly UTC run: seven days, the account's own.
        (utc(2026, 11, 2), utc(2026, 11, 9), "UTC", [date(2026, 11, 2) + n * ONE_DAY for n in range(7)]),
        (utc(2026, 11, 2), utc(2026, 11, 9), "America/Los_Angeles", [date(2026, 11, 1) + n * ONE_DAY for n in range(7)]),
    ],
)  # fmt: skip
def test_which_days_a_run_exports(start, end, account_zone, days):
    assert exported(start, end, ZoneInfo(account_zone)) == days


NOV_2_10H = utc(2026, 11, 2, 10)


@pytest.mark.parametrize(
    ("context", "account_zone", "day"),
    [
        # Airflow 3's manual run without a logical date: the last day over at run_after, in the account's zone.
        ({"dag_run": SimpleNamespace(run_after=NOV_2_10H)}, "UTC", date(2026, 11, 1)),
        ({"dag_run": SimpleNamespace(run_after=utc(2026, 11, 1, 20))}, "Asia/Kolkata", date(2026, 11, 1)),  # 01:30
        ({"dag_run": SimpleNamespace(run_after=utc(2026, 11, 1, 20))}, "UTC", date(2026, 10, 31)),
        ({"dag_run": SimpleNamespace(run_after=NOV_2_10H)}, "America/Los_Angeles", date(2026, 11, 1)),  # 02:00
        ({"dag_run": SimpleNamespace(run_after=utc(2026, 11, 2, 7))}, "America/Los_Angeles", date(2026, 10, 31)),
        # A zero-length interval (a trigger timetable): the last day over at its end, whenever the run ran.
        (
            {"data_interval_start": NOV_2_10H, "data_interval_end": NOV_2_10H, "dag_run": SimpleNamespace(run_after=utc(2026, 12, 1))},
            "UTC",
            date(2026, 11, 1),
        ),
        # Airflow 2.11 without an interval: the logical date.
        ({"data_interval_start": None, "data_interval_end": None, "logical_date": NOV_2_10H}, "UTC", date(2026, 11, 1)),
    ],
)  # fmt: skip
def test_a_run_without_an_interval_exports_the_last_day_over_when_it_was_asked_for(context, account_zone, day):
    assert days_for_run(context, ZoneInfo(account_zone)) == (day, day)


def test_an_interval_decides_whatever_else_the_context_holds():
    context = {
        "data_interval_start": utc(2026, 11, 2),
        "data_interval_end": utc(2026, 11, 3),
        "dag_run": SimpleNamespace(run_after=utc(2026, 12, 1)),
        "logical_date": utc(2026, 11, 2),
    }
    assert days_for_run(context, UTC) == (date(2026, 11, 2), date(2026, 11, 2))


def test_a_run_with_nothing_to_go_by_exports_yesterday_and_today_is_the_accounts():
    tz = ZoneInfo("Pacific/Chatham")
    now = datetime.now(UTC)
    assert days_for_run({}, tz) == (now.astimezone(tz).date() - ONE_DAY,) * 2
    assert today(tz) == now.astimezone(tz).date()
