"""Every example DAG imports cleanly, and runs end to end against the emulator."""

from __future__ import annotations

import csv
import json
import warnings
from datetime import date, datetime, timezone
from pathlib import Path

import airflow
import pytest

from tests.dags import run_dag, task_states, xcom_value

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
    assert xcom_value(dag_run, "export_logs")["rows"] == 3_000


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
