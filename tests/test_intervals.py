"""Which account-local days a run exports, for the schedules and time zones users have."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from types import SimpleNamespace
from zoneinfo import ZoneInfo

import pytest

from airflow_provider_kaleyra_email.intervals import days_for_interval, days_for_run

UTC = timezone.utc
KOLKATA = ZoneInfo("Asia/Kolkata")
NEW_YORK = ZoneInfo("America/New_York")
LOS_ANGELES = ZoneInfo("America/Los_Angeles")


def local(tz, *parts):
    return datetime(*parts, tzinfo=tz)


@pytest.mark.parametrize(
    ("start", "end", "tz", "expected"),
    [
        # A daily run over [D, D+1) in the account's own zone asks for D alone.
        (local(UTC, 2026, 11, 2), local(UTC, 2026, 11, 3), UTC, (date(2026, 11, 2), date(2026, 11, 2))),
        (local(KOLKATA, 2026, 11, 2), local(KOLKATA, 2026, 11, 3), KOLKATA, (date(2026, 11, 2),) * 2),
        # A UTC-midnight schedule on a Kolkata account (+05:30): still one day, the one it mostly covers.
        (local(UTC, 2026, 11, 2), local(UTC, 2026, 11, 3), KOLKATA, (date(2026, 11, 2),) * 2),
        # ... and on a Los Angeles account (-08:00), whose day D is mostly inside UTC day D.
        (local(UTC, 2026, 11, 2), local(UTC, 2026, 11, 3), LOS_ANGELES, (date(2026, 11, 2),) * 2),
        # DST ends in New York on 2026-11-01: that local day has 25 hours.
        (local(NEW_YORK, 2026, 11, 1), local(NEW_YORK, 2026, 11, 2), NEW_YORK, (date(2026, 11, 1),) * 2),
        # DST starts on 2026-03-08: a 23-hour day.
        (local(NEW_YORK, 2026, 3, 8), local(NEW_YORK, 2026, 3, 9), NEW_YORK, (date(2026, 3, 8),) * 2),
        # A UTC daily schedule across New York's DST switch still gives one day per run.
        (local(UTC, 2026, 11, 1), local(UTC, 2026, 11, 2), NEW_YORK, (date(2026, 11, 1),) * 2),
        (local(UTC, 2026, 11, 2), local(UTC, 2026, 11, 3), NEW_YORK, (date(2026, 11, 2),) * 2),
        # An hourly run asks for the day that contains it.
        (local(UTC, 2026, 11, 2, 23), local(UTC, 2026, 11, 3, 0), UTC, (date(2026, 11, 2),) * 2),
        (local(UTC, 2026, 11, 2, 23), local(UTC, 2026, 11, 3, 0), KOLKATA, (date(2026, 11, 3),) * 2),
        # A weekly run asks for its seven days.
        (local(UTC, 2026, 11, 2), local(UTC, 2026, 11, 9), UTC, (date(2026, 11, 2), date(2026, 11, 8))),
    ],
)
def test_days_for_interval(start, end, tz, expected):
    assert days_for_interval(start, end, tz) == expected


@pytest.mark.parametrize("tz", [UTC, KOLKATA, NEW_YORK, LOS_ANGELES])
def test_consecutive_daily_runs_export_every_day_exactly_once(tz):
    """Whatever zone the schedule and the account are in, a year of runs covers each day once."""
    exported = []
    start = datetime(2026, 1, 1, 7, 0, tzinfo=UTC)  # a schedule at 07:00 UTC, misaligned with all zones
    for n in range(365):
        first, last = days_for_interval(start + timedelta(days=n), start + timedelta(days=n + 1), tz)
        exported.extend(first + timedelta(days=k) for k in range((last - first).days + 1))
    assert len(exported) == len(set(exported)) == 365
    assert sorted(exported) == [exported[0] + timedelta(days=k) for k in range(365)]


NOV_2_10H = local(UTC, 2026, 11, 2, 10)


@pytest.mark.parametrize(
    ("context", "tz", "expected"),
    [
        # An interval decides, whatever else the context holds.
        ({"data_interval_start": local(UTC, 2026, 11, 2), "data_interval_end": local(UTC, 2026, 11, 3)}, UTC, 2),
        # Airflow 3's manual run without a logical date: the day before run_after, in the account's zone.
        ({"dag_run": SimpleNamespace(run_after=NOV_2_10H)}, UTC, 1),
        ({"dag_run": SimpleNamespace(run_after=local(UTC, 2026, 11, 1, 20))}, KOLKATA, 1),  # 01:30 on Nov 2 there
        ({"dag_run": SimpleNamespace(run_after=local(UTC, 2026, 11, 1, 20))}, UTC, 31),
        # A zero-length interval (trigger timetable, unscheduled DAG on 2.11): the day before the logical date.
        ({"data_interval_start": NOV_2_10H, "data_interval_end": NOV_2_10H, "logical_date": NOV_2_10H}, UTC, 1),
        ({"data_interval_start": None, "data_interval_end": None, "logical_date": NOV_2_10H}, UTC, 1),
    ],
)
def test_days_for_run(context, tz, expected):
    first, last = days_for_run(context, tz)
    assert first == last
    assert first.day == expected


def test_a_run_with_nothing_to_go_by_exports_yesterday():
    first, last = days_for_run({}, UTC)
    assert first == last == datetime.now(UTC).date() - timedelta(days=1)
