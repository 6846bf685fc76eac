"""
Which account-local days a DAG run exports, from its data interval.

The API works in whole days of the account's time zone; a run's data interval is an
instant range. The rule, chosen so that consecutive runs export every day exactly once:

- an interval shorter than a day (hourly runs) exports the day holding its middle;
- an interval of a day or more exports the days whose local noon falls inside it, so a daily
  run over ``[D, D+1)`` exports ``D`` alone, also when the schedule's midnight is not the
  account's (a UTC-midnight schedule on an ``Asia/Kolkata`` account still exports one day per run).

A missing or zero-length interval (a manual run of an unscheduled DAG, or Airflow 3's default
``CronTriggerTimetable``) names no days, and is refused with a message that says what to do.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta, tzinfo

ONE_DAY = timedelta(days=1)


class NoDataIntervalError(ValueError):
    """The run has no data interval to export."""


def days_for_interval(start: datetime | None, end: datetime | None, tz: tzinfo) -> tuple[date, date]:
    """Return the first and last account-local day (inclusive) that a run over ``[start, end)`` exports."""
    if start is None or end is None or end <= start:
        raise NoDataIntervalError(
            f"This run has no data interval to export (data_interval_start={_text(start)}, "
            f"data_interval_end={_text(end)}): it is a manual run of an unscheduled DAG, or the "
            "DAG uses a trigger timetable (Airflow 3's default for cron strings). Pass from_date and "
            "to_date (e.g. from_date='{{ ds }}'), or schedule the DAG with an interval timetable such "
            "as CronDataIntervalTimetable('0 0 * * *', timezone=<account time zone>)."
        )
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


def _noon(day: date, tz: tzinfo) -> datetime:
    return datetime.combine(day, time(12), tzinfo=tz)


def _text(moment: datetime | None) -> str:
    return "None" if moment is None else moment.isoformat()
