"""
Every example DAG, triggered through the REST API on real services, with a logical date and without one.

All runs are triggered at once (the module's first test), so they share the scheduler and the
executor as they would in production; each test then waits for its run and checks what it
wrote to the lake, its XComs and its Asset events, against the emulator's deterministic data.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

import pytest

from airflow_provider_kaleyra_email.testing._dataset import SyntheticDataset
from tests.system.airflow_api import (
    asset_events,
    day_before,
    midnight,
    parse_time,
    task_instances,
    task_states,
    trigger,
    wait_for_run,
    xcom,
)

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from tests.system.services import AirflowStack

pytestmark = pytest.mark.timeout(480, method="signal")

DAILY_EXPORT = "example_kaleyra_email_daily_export"
BOUNCE_REPORT = "example_kaleyra_email_bounce_report"
DELIVERABILITY = "example_kaleyra_email_deliverability_report"
BACKFILL = "example_kaleyra_email_backfill"


@dataclass(frozen=True)
class Run:
    dag_id: str
    run_id: str
    triggered: dict[str, Any]  # the API's answer to the trigger

    @property
    def run_after(self) -> datetime:
        return parse_time(self.triggered["run_after"])


@dataclass(frozen=True)
class Days:
    """The days the runs are about, all inside the emulator's data set and none shared by two writers."""

    today: date

    def ago(self, days: int) -> date:
        return self.today - timedelta(days=days)


@pytest.fixture(scope="module")
def days() -> Days:
    return Days(datetime.now(timezone.utc).date())


@pytest.fixture(scope="module")
def dataset(airflow_stack: AirflowStack) -> SyntheticDataset:
    """The emulator's data, rebuilt here from the same parameters (it is a function of them)."""
    emulator = airflow_stack.emulator
    return SyntheticDataset(
        start_date=emulator.first_day,
        days=(emulator.last_day - emulator.first_day).days + 1,
        rows_per_day=emulator.rows_per_day,
    )


@pytest.fixture(scope="module")
def runs(airflow_stack: AirflowStack, days: Days) -> dict[str, Run]:
    """Trigger every run up front; the tests wait for them."""
    api = airflow_stack.api
    plans: dict[str, tuple[str, dict[str, Any]]] = {
        # A logical date and the data interval of one UTC day: exports that day.
        "daily_export/logical_date": (
            DAILY_EXPORT,
            {
                "logical_date": midnight(days.ago(10)),
                "data_interval": (midnight(days.ago(10)), midnight(days.ago(9))),
            },
        ),
        # No logical date: the last whole UTC day before run_after.
        "daily_export/manual": (DAILY_EXPORT, {"logical_date": None}),
        # A logical date alone: the timetable infers the interval that ends there.
        "bounce_report/logical_date": (BOUNCE_REPORT, {"logical_date": midnight(days.ago(7))}),
        "bounce_report/manual": (BOUNCE_REPORT, {"logical_date": None}),
        "deliverability/logical_date": (
            DELIVERABILITY,
            {"logical_date": midnight(days.ago(5)), "data_interval": (midnight(days.ago(5)), midnight(days.ago(4)))},
        ),
        "deliverability/manual": (DELIVERABILITY, {"logical_date": None}),
        "backfill/logical_date": (
            BACKFILL,
            {
                "logical_date": midnight(days.ago(1)),
                "conf": {"first_day": days.ago(20).isoformat(), "last_day": days.ago(18).isoformat()},
            },
        ),
        "backfill/manual": (
            BACKFILL,
            {
                "logical_date": None,
                "conf": {"first_day": days.ago(15).isoformat(), "last_day": days.ago(14).isoformat()},
            },
        ),
    }
    triggered = {}
    for name, (dag_id, kwargs) in plans.items():
        answer = trigger(api, dag_id, **kwargs)
        triggered[name] = Run(dag_id, answer["dag_run_id"], answer)
    return triggered


def finished(stack: AirflowStack, run: Run, timeout: float = 240) -> dict[str, Any]:
    """Wait for the run; fail unless it and every task succeeded."""
    result = wait_for_run(stack, run.dag_id, run.run_id, timeout=timeout)
    states = task_states(stack.api, run.dag_id, run.run_id)
    assert result["state"] == "success", f"{run.dag_id} {run.run_id}: {result['state']}; tasks {states}"
    assert {state for per_task in states.values() for state in per_task} == {"success"}, states
    return result


def iso_day(day: date) -> str:
    """Midnight UTC of ``day`` as the API writes it."""
    return f"{day.isoformat()}T00:00:00Z"


def jsonl(path: Path) -> list[dict[str, Any]]:
    assert path.is_file(), f"{path} was not written"
    assert path.stat().st_size > 0, f"{path} is empty"
    return [json.loads(line) for line in path.read_text().splitlines()]


def check_logs_file(lake: Path, day: date, dataset: SyntheticDataset, *, settled: bool) -> list[dict[str, Any]]:
    """The day's JSONL holds exactly the day's rows; ``settled`` days (statuses final) compare row for row."""
    rows = jsonl(lake / "logs" / f"date={day.isoformat()}" / "logs.jsonl")
    expected = list(dataset.expected_logs(day, day))
    assert len(rows) == len(expected) == dataset.planned_rows(day) > 0
    if settled:
        assert rows == expected
    else:  # statuses of yesterday's rows still move (opened later): the same messages, in the same order
        assert [row["message_id"] for row in rows] == [row["message_id"] for row in expected]
    assert {row["submitted_at"][:10] for row in rows} == {day.isoformat()}
    return rows


def check_stats_file(lake: Path, day: date, dataset: SyntheticDataset) -> None:
    path = lake / "summary_stats" / f"date={day.isoformat()}" / "stats.csv"
    assert path.is_file(), f"{path} was not written"
    (stats,) = csv.DictReader(path.open())
    assert stats["date"] == day.isoformat()
    assert int(stats["accepted"]) == dataset.planned_rows(day)


def check_export_summary(summary: dict[str, Any], lake: Path, kind: str, name: str, day: date, rows: int) -> None:
    path = lake / kind / f"date={day.isoformat()}" / name
    assert summary["path"] == f"file://{path}"  # the lake's URL (a Variable) and the day's object
    assert (summary["from_date"], summary["to_date"], summary["rows"]) == (day.isoformat(), day.isoformat(), rows)
    assert summary["bytes"] == path.stat().st_size


def check_daily_export(stack: AirflowStack, run: Run, day: date, dataset: SyntheticDataset, *, settled: bool) -> None:
    lake, api = stack.lake, stack.api
    rows = check_logs_file(lake, day, dataset, settled=settled)
    check_logs_file(lake, day - timedelta(days=1), dataset, settled=True)
    check_stats_file(lake, day, dataset)

    logs_summary = xcom(api, run.dag_id, run.run_id, "export_logs")
    check_export_summary(logs_summary, lake, "logs", "logs.jsonl", day, len(rows))
    refresh = xcom(api, run.dag_id, run.run_id, "refresh_previous_day")
    previous = day - timedelta(days=1)
    check_export_summary(refresh, lake, "logs", "logs.jsonl", previous, dataset.planned_rows(previous))
    stats_summary = xcom(api, run.dag_id, run.run_id, "export_summary_stats")
    check_export_summary(stats_summary, lake, "summary_stats", "stats.csv", day, 1)

    events = asset_events(api, run.dag_id, run.run_id)
    assert sorted(events) == ["kaleyra_email_logs", "kaleyra_email_summary_stats"]
    (logs_event,) = events["kaleyra_email_logs"]
    assert logs_event["source_task_id"] == "export_logs"
    assert logs_event["extra"] == logs_summary
    (stats_event,) = events["kaleyra_email_summary_stats"]
    assert stats_event["extra"] == stats_summary


def test_daily_export_with_a_logical_date_and_data_interval(
    airflow_stack: AirflowStack, runs: dict[str, Run], days: Days, dataset: SyntheticDataset
) -> None:
    run = runs["daily_export/logical_date"]
    result = finished(airflow_stack, run)

    assert (result["data_interval_start"], result["data_interval_end"]) == (iso_day(days.ago(10)), iso_day(days.ago(9)))
    check_daily_export(airflow_stack, run, days.ago(10), dataset, settled=True)


def test_daily_export_without_a_logical_date_exports_yesterday(
    airflow_stack: AirflowStack, runs: dict[str, Run], dataset: SyntheticDataset
) -> None:
    """Airflow 3's manual run: the last whole UTC day before ``run_after``, and the day before it refreshed."""
    run = runs["daily_export/manual"]
    result = finished(airflow_stack, run)

    assert result["logical_date"] is None
    check_daily_export(airflow_stack, run, day_before(run.run_after), dataset, settled=False)


def check_bounce_report(stack: AirflowStack, run: Run, day: date, dataset: SyntheticDataset) -> None:
    api = stack.api
    bounces = list(dataset.expected_logs(day, day, search=["BOUNCE"]))
    blocks = list(dataset.expected_logs(day, day, search=["BLOCKED"]))
    assert bounces  # a day of the data set has both
    assert blocks

    assert xcom(api, run.dag_id, run.run_id, "fetch_bounces") == bounces
    assert xcom(api, run.dag_id, run.run_id, "fetch_blocks") == blocks
    summary = xcom(api, run.dag_id, run.run_id, "report")
    assert (summary["bounces"], summary["blocks"]) == (len(bounces), len(blocks))
    recipients = [address for row in bounces + blocks for address in row["to_mail"].split(",")]
    assert sum(summary["top_domains"].values()) <= len(recipients)
    assert set(summary["top_domains"]) <= {address.rsplit("@", 1)[1] for address in recipients}
    assert asset_events(api, run.dag_id, run.run_id) == {}  # no outlets


def test_bounce_report_with_a_logical_date(
    airflow_stack: AirflowStack, runs: dict[str, Run], days: Days, dataset: SyntheticDataset
) -> None:
    """A logical date alone: the daily timetable's interval ending at it, so the day before it."""
    run = runs["bounce_report/logical_date"]
    result = finished(airflow_stack, run)

    assert result["data_interval_end"] == iso_day(days.ago(7))
    check_bounce_report(airflow_stack, run, days.ago(8), dataset)


def check_deliverability_report(stack: AirflowStack, run: Run, last_day: date, dataset: SyntheticDataset) -> None:
    api, lake = stack.api, stack.lake
    first_day = last_day - timedelta(days=29)
    page = lake / "reports" / f"deliverability-{last_day.isoformat()}.html"
    chart = page.with_suffix(".png")
    assert page.is_file(), f"{page} was not written"
    assert page.stat().st_size > 0
    assert chart.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert "<html" in page.read_text().lower()

    summary = xcom(api, run.dag_id, run.run_id, "deliverability_report")
    assert (summary["from_date"], summary["to_date"]) == (first_day.isoformat(), last_day.isoformat())
    assert (summary["path"], summary["png_path"]) == (f"file://{page}", f"file://{chart}")
    expected_accepted = sum(dataset.planned_rows(first_day + timedelta(days=n)) for n in range(30))
    assert summary["totals"]["accepted"] == expected_accepted
    assert 0 < summary["rates"]["delivered"] < 1

    mail = xcom(api, run.dag_id, run.run_id, "compose_mail")
    assert f"{first_day.isoformat()} to {last_day.isoformat()}" in mail["subject"]
    sent = xcom(api, run.dag_id, run.run_id, "mail_report")
    assert isinstance(sent, list)
    assert len(sent) == 1  # one message id: one recipient

    events = asset_events(api, run.dag_id, run.run_id)
    (event,) = events["kaleyra_email_deliverability_report"]
    assert event["extra"] == summary


def test_deliverability_report_with_a_logical_date_and_data_interval(
    airflow_stack: AirflowStack, runs: dict[str, Run], days: Days, dataset: SyntheticDataset
) -> None:
    run = runs["deliverability/logical_date"]
    finished(airflow_stack, run)

    check_deliverability_report(airflow_stack, run, days.ago(5), dataset)


@pytest.mark.parametrize(
    ("name", "check"), [("bounce_report", check_bounce_report), ("deliverability", check_deliverability_report)]
)
def test_a_report_without_a_logical_date_ends_the_day_before_the_run(
    airflow_stack: AirflowStack,
    runs: dict[str, Run],
    dataset: SyntheticDataset,
    name: str,
    check: Callable[[AirflowStack, Run, date, SyntheticDataset], None],
) -> None:
    run = runs[f"{name}/manual"]
    finished(airflow_stack, run)

    check(airflow_stack, run, day_before(run.run_after), dataset)


def check_backfill(stack: AirflowStack, run: Run, first: date, last: date, dataset: SyntheticDataset) -> None:
    api = stack.api
    wanted = [first + timedelta(days=n) for n in range((last - first).days + 1)]
    mapped = sorted(
        (ti["map_index"], ti["rendered_map_index"], ti["pool"], ti["state"])
        for ti in task_instances(api, run.dag_id, run.run_id)
        if ti["task_id"] == "export_day"
    )
    # One task per day, each shown under its day (map_index_template), each in the API's pool.
    assert mapped == [(index, day.isoformat(), "kaleyra_email_api", "success") for index, day in enumerate(wanted)]
    for index, day in enumerate(wanted):
        rows = check_logs_file(stack.lake, day, dataset, settled=True)
        summary = xcom(api, run.dag_id, run.run_id, "export_day", map_index=index)
        check_export_summary(summary, stack.lake, "logs", "logs.jsonl", day, len(rows))


@pytest.mark.parametrize("kind", ["logical_date", "manual"])
def test_backfill_maps_one_task_per_day(
    airflow_stack: AirflowStack, runs: dict[str, Run], days: Days, dataset: SyntheticDataset, kind: str
) -> None:
    run = runs[f"backfill/{kind}"]
    finished(airflow_stack, run)

    conf = run.triggered["conf"]
    check_backfill(
        airflow_stack, run, date.fromisoformat(conf["first_day"]), date.fromisoformat(conf["last_day"]), dataset
    )
