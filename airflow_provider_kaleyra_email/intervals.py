"""
Which account-local days a DAG run exports.

The API works in whole days of the account's time zone; a run's data interval is an
instant range. The rule, chosen so that consecutive runs export every day exactly once:

- an interval shorter than a day (hourly runs) exports the day holding its middle;
- an interval of a day or more exports the days whose local noon falls inside it, so a daily
  run over ``[D, D+1)`` exports ``D`` alone, also when the schedule's midnight is not the
  account's (a UTC-midnight schedule on an ``Asia/Kolkata`` account still exports one day per run);
- a run without an interval (Airflow 3's manual run with no logical date), or with a
  zero-length one (a trigger timetable, an unscheduled DAG), exports the last whole
  account-local day before the run was triggered: "yesterday", as a daily export would.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta, timezone, tzinfo
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Mapping

ONE_DAY = timedelta(days=1)


def days_for_run(context: Mapping[str, Any], tz: tzinfo) -> tuple[date, date]:
    """Return the first and last account-local day (inclusive) that the run in ``context`` exports."""
    start, end = context.get("data_interval_start"), context.get("data_interval_end")
    if start is not None and end is not None and end > start:
        return days_for_interval(start, end, tz)
    day = _triggered_at(context).astimezone(tz).date() - ONE_DAY
    return day, day


def days_for_interval(start: datetime, end: datetime, tz: tzinfo) -> tuple[date, date]:
    """Return the first and last account-local day (inclusive) that a run over ``[start, end)`` exports."""
    local_start, local_end = start.astimezone(tz), end.astimezone(tz)
    first = local_start.date()
    if _noon(first, tz) < local_start:
        first += ONE_DAY
    last = local_end.date()
    if _noon(last, tz) >= local_end:
        last -= ONE_DAY
    if end - start < ONE_DAY or first > last:
        # Shorter than a day, or a day-long interval that a DST shift let slip between two noons.
        day = (start + (end - start) / 2).astimezone(tz).date()
        return day, day
    return first, last


def _triggered_at(context: Mapping[str, Any]) -> datetime:
    """When the run was asked for: ``run_after`` on Airflow 3, the logical date on 2.11, else now."""
    moment = getattr(context.get("dag_run"), "run_after", None) or context.get("logical_date")
    return moment if isinstance(moment, datetime) else datetime.now(timezone.utc)


def _noon(day: date, tz: tzinfo) -> datetime:
    return datetime.combine(day, time(12), tzinfo=tz)
