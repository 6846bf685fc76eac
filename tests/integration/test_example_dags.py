"""Every example DAG imports cleanly, and runs end to end against the emulator."""

from __future__ import annotations

import csv
import json
import warnings
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import airflow
import pytest

from tests.dags import asset_event_extras, run_dag, task_states, xcom_value

AIRFLOW_2 = airflow.__version__.startswith("2.")
EXAMPLES = Path(__file__).resolve().parents[2] / "example_dags"


def load_examples():
    try:
        from airflow.dag_processing.dagbag import DagBag
    except ImportError:  # Airflow 2
        from airflow.models.dagbag import DagBag  # noqa: TID251
    return DagBag(str(EXAMPLES))


def test_every_example_imports_without_errors_or_deprecation_warnings():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        bag = load_examples()

    assert bag.import_errors == {}
    event_driven = {"example_kaleyra_email_suppress_bounces"}  # Airflow 3 only: no DAG on 2.11
    expected = {path.stem for path in EXAMPLES.glob("example_*.py")} - (event_driven if AIRFLOW_2 else set())
    assert set(bag.dag_ids) == expected
    ours = [
        f"{w.category.__name__}: {w.message} ({w.filename})"
        for w in caught
        if str(EXAMPLES) in w.filename or "airflow_provider_kaleyra_email" in w.filename
    ]
    assert ours == []


@pytest.fixture
def lake(tmp_path, monkeypatch):
    monkeypatch.setenv("AIRFLOW_VAR_KALEYRA_EMAIL_EXPORT_URL", f"file://{tmp_path}")
    return tmp_path


@pytest.fixture
def examples(airflow_db):
    return load_examples()


@pytest.mark.kaleyra_email_emulator(start_date=date(2026, 10, 30), days=6, rows_per_day=3_000)
def test_the_daily_export_writes_the_day_and_refreshes_the_one_before(
    examples, lake, kaleyra_email_connection, kaleyra_email_emulator
):
    dag = examples.get_dag("example_kaleyra_email_daily_export")

    dag_run = run_dag(dag, datetime(2026, 11, 3, tzinfo=timezone.utc))

    assert set(task_states(dag_run).values()) == {"success"}
    dataset = kaleyra_email_emulator.dataset
    for day in (date(2026, 11, 2), date(2026, 11, 1)):
        lines = (lake / "logs" / f"date={day}" / "logs.jsonl").read_text().splitlines()
        assert [json.loads(line) for line in lines] == list(dataset.expected_logs(day, day))
    (stats,) = csv.DictReader((lake / "summary_stats" / "date=2026-11-02" / "stats.csv").open())
    assert stats["date"] == "2026-11-02"
    assert int(stats["accepted"]) == 3_000
    summary = xcom_value(dag_run, "export_logs")
    assert (summary["rows"], summary["complete"]) == (3_000, True)
    assert asset_event_extras(dag_run, "kaleyra_email_logs") == [summary]


#: The emulator's clock in the next test: when the scheduler would start each run.
CLOCK = {"now": datetime(2026, 11, 3, tzinfo=timezone.utc)}


@pytest.mark.kaleyra_email_emulator(
    start_date=date(2026, 10, 30), days=6, rows_per_day=600, timezone="America/Los_Angeles", clock=lambda: CLOCK["now"]
)
def test_a_utc_schedule_on_a_los_angeles_account_exports_each_los_angeles_day_once_it_is_over(
    examples, lake, kaleyra_email_connection, kaleyra_email_emulator
):
    """
    Runs over [Nov 2, Nov 3) and [Nov 3, Nov 4) UTC (a manual run on date X covers the day before X),
    each started when its interval ends (16:00 the day before in Los Angeles, whose day is then two
    thirds through): each exports the Los Angeles day that ended inside it, whole (Nov 1, over at
    08:00 UTC on Nov 2; then Nov 2), never the day still running.
    """
    dag = examples.get_dag("example_kaleyra_email_daily_export")
    dataset = kaleyra_email_emulator.dataset
    exported = []
    for logical_date in (datetime(2026, 11, 3, tzinfo=timezone.utc), datetime(2026, 11, 4, tzinfo=timezone.utc)):
        CLOCK["now"] = logical_date + timedelta(minutes=1)
        running = CLOCK["now"].astimezone(ZoneInfo("America/Los_Angeles")).date()
        assert 0 < dataset.visible_rows(running) < dataset.planned_rows(running), "a day still running"

        dag_run = run_dag(dag, logical_date)

        assert set(task_states(dag_run).values()) == {"success"}
        summary = xcom_value(dag_run, "export_logs")
        day = date.fromisoformat(summary["from_date"])
        assert (summary["to_date"], summary["complete"]) == (day.isoformat(), True)
        assert day < running
        rows = [json.loads(line) for line in (lake / "logs" / f"date={day}" / "logs.jsonl").read_text().splitlines()]
        assert len(rows) == dataset.planned_rows(day) == 600, "every row of the day: it was over"
        assert rows == list(dataset.expected_logs(day, day))
        assert asset_event_extras(dag_run, "kaleyra_email_logs") == [summary]
        exported.append(day)
    assert exported == [date(2026, 11, 1), date(2026, 11, 2)]


@pytest.mark.kaleyra_email_emulator(start_date=None, days=3, rows_per_day=300)
def test_a_chosen_day_is_exported_instead_of_the_run_s_and_today_says_it_is_incomplete(
    examples, lake, kaleyra_email_connection, kaleyra_email_emulator
):
    dag = examples.get_dag("example_kaleyra_email_daily_export")
    today = kaleyra_email_emulator.dataset.end_date
    logical_date = datetime.combine(today - timedelta(days=5), datetime.min.time(), tzinfo=timezone.utc)

    dag_run = run_dag(dag, logical_date, run_conf={"day": today.isoformat()})

    assert set(task_states(dag_run).values()) == {"success"}
    logs, stats = xcom_value(dag_run, "export_logs"), xcom_value(dag_run, "export_summary_stats")
    refreshed = xcom_value(dag_run, "refresh_previous_day")
    assert (logs["from_date"], logs["to_date"], logs["complete"]) == (today.isoformat(), today.isoformat(), False)
    assert (stats["from_date"], stats["complete"]) == (today.isoformat(), False)
    assert (refreshed["from_date"], refreshed["complete"]) == ((today - timedelta(days=1)).isoformat(), True)
    assert asset_event_extras(dag_run, "kaleyra_email_logs") == [logs]
    assert asset_event_extras(dag_run, "kaleyra_email_summary_stats") == [stats]
    assert sorted(path.name for path in (lake / "logs").iterdir()) == [
        f"date={today - timedelta(days=1)}",
        f"date={today}",
    ]


@pytest.mark.skipif(AIRFLOW_2, reason="Airflow 2.11 gives every run a logical date and an inferred interval")
@pytest.mark.kaleyra_email_emulator(start_date=date(2026, 10, 30), days=6, rows_per_day=300)
def test_a_manual_run_without_a_logical_date_exports_the_day_before_it(
    examples, lake, kaleyra_email_connection, kaleyra_email_emulator
):
    dag = examples.get_dag("example_kaleyra_email_daily_export")

    dag_run = run_dag(dag, None, run_after=datetime(2026, 11, 3, 10, tzinfo=timezone.utc))

    assert set(task_states(dag_run).values()) == {"success"}
    dataset = kaleyra_email_emulator.dataset
    for day in (date(2026, 11, 2), date(2026, 11, 1)):
        lines = (lake / "logs" / f"date={day}" / "logs.jsonl").read_text().splitlines()
        assert [json.loads(line) for line in lines] == list(dataset.expected_logs(day, day))
    assert (lake / "summary_stats" / "date=2026-11-02" / "stats.csv").exists()


@pytest.mark.kaleyra_email_emulator(start_date=date(2026, 10, 30), days=6, rows_per_day=3_000)
def test_the_bounce_report_gets_the_rows_through_xcom(examples, kaleyra_email_connection, kaleyra_email_emulator):
    dag = examples.get_dag("example_kaleyra_email_bounce_report")
    day = date(2026, 11, 2)
    bounces = list(kaleyra_email_emulator.dataset.expected_logs(day, day, search=["BOUNCE"]))
    blocks = list(kaleyra_email_emulator.dataset.expected_logs(day, day, search=["BLOCKED"]))

    dag_run = run_dag(dag, datetime(2026, 11, 3, tzinfo=timezone.utc))

    assert set(task_states(dag_run).values()) == {"success"}
    assert xcom_value(dag_run, "fetch_bounces") == bounces
    summary = xcom_value(dag_run, "report")
    assert (summary["bounces"], summary["blocks"]) == (len(bounces), len(blocks))
    assert sum(summary["top_domains"].values()) <= sum(len(r["to_mail"].split(",")) for r in bounces + blocks)


@pytest.mark.kaleyra_email_emulator(start_date=date(2026, 10, 30), days=6, rows_per_day=3_000)
def test_the_bounce_report_fails_when_there_are_too_many(examples, kaleyra_email_connection):
    dag = examples.get_dag("example_kaleyra_email_bounce_report")

    dag_run = run_dag(dag, datetime(2026, 11, 3, tzinfo=timezone.utc), run_conf={"max_failed_deliveries": 10})

    states = task_states(dag_run)
    assert (states["fetch_bounces"], states["report"]) == ("success", "failed")


@pytest.mark.kaleyra_email_emulator(start_date=date(2026, 10, 30), days=6, rows_per_day=1_000)
def test_the_backfill_maps_one_task_per_day(examples, lake, kaleyra_email_connection, kaleyra_email_emulator):
    dag = examples.get_dag("example_kaleyra_email_backfill")

    dag_run = run_dag(
        dag, datetime(2026, 11, 10, tzinfo=timezone.utc), run_conf={"first_day": "2026-10-31", "last_day": "2026-11-02"}
    )

    instances = [ti for ti in dag_run.get_task_instances() if ti.task_id == "export_day"]
    assert sorted(ti.map_index for ti in instances) == [0, 1, 2]
    assert sorted(ti.rendered_map_index for ti in instances) == ["2026-10-31", "2026-11-01", "2026-11-02"]
    assert {ti.pool for ti in instances} == {"kaleyra_email_api"}
    assert {str(ti.state) for ti in instances} == {"success"}
    for day in ("2026-10-31", "2026-11-01", "2026-11-02"):
        lines = (lake / "logs" / f"date={day}" / "logs.jsonl").read_text().splitlines()
        assert len(lines) == 1_000
