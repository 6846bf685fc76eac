"""
Which account-local days a DAG run exports.

The API works in whole days of the account's time zone; a run's data interval is an instant range
``[start, end)``. The rule: **a run exports the account-local days that end within** ``(start, end]``.
So each day is exported once it is over and, as consecutive intervals meet, exactly once, whatever
the schedule's and the account's time zones and their DST changes: a daily run aligned with the
account over ``[D, D+1)`` exports ``D``; a UTC daily run on a Los Angeles account, the Los Angeles day
that ended inside it; an hourly run, the day that ended within its hour, if one did.

A run without an interval (Airflow 3's manual run with no logical date) or with a zero-length one
(a trigger timetable) exports the last day over by then: the interval's end, else ``run_after``.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone, tzinfo
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Mapping

ONE_DAY = timedelta(days=1)


def days_for_interval(start: datetime, end: datetime, tz: tzinfo) -> tuple[date, date]:
    """Return the first and last account-local day (inclusive) that end within ``(start, end]`` (none: first > last)."""
    # A day ends when the next begins: from the day ``start`` falls in to the one before the day ``end`` falls in.
    return start.astimezone(tz).date(), end.astimezone(tz).date() - ONE_DAY


def days_for_run(context: Mapping[str, Any], tz: tzinfo) -> tuple[date, date]:
    """Return the first and last account-local day (inclusive) that the run in ``context`` exports."""
    start, end = context.get("data_interval_start"), context.get("data_interval_end")
    if start is not None and end is not None and end > start:
        return days_for_interval(start, end, tz)
    asked = end or getattr(context.get("dag_run"), "run_after", None) or context.get("logical_date")
    if not isinstance(asked, datetime):
        asked = datetime.now(timezone.utc)
    day = asked.astimezone(tz).date() - ONE_DAY
    return day, day


def today(tz: tzinfo) -> date:
    """Return the account-local day not over yet: the days before it are complete, the days after it have not begun."""
    return datetime.now(timezone.utc).astimezone(tz).date()
