"""The fetch operators in a real DAG run: a day of 10,000 rows, in XCom and in every format."""

from __future__ import annotations

import csv
import io
import json
from datetime import date, datetime, timezone

import pyarrow.parquet as pq
import pytest

from tests.dag_files.fetch import dag
from tests.dags import asset_event_extras, run_dag, task_states, xcom_value

DAY = date(2026, 11, 2)
#: The log fields in the order the API page lists them; our CSV and Parquet lead with these.
DOCUMENTED_LOG_FIELDS = [
    "message_id", "company_id", "status", "description", "from_mail", "to_mail", "template_name",
    "submitted_at", "delivered_at", "sale_price", "source", "source_type", "user_details",
    "email_body", "service_id", "route",
]  # fmt: skip
DOCUMENTED_METRICS = ["accepted", "delivered", "opens", "deferred", "blocks"]


def as_text(value):
    """How a value reads in CSV: JSON for nested values, nothing for a missing one."""
    if value is None:
        return ""
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def extra_of(row, documented):
    """The ``extra`` column: compact JSON of the undocumented fields, in the row's order; None without any."""
    others = {name: value for name, value in row.items() if name not in documented}
    return json.dumps(others, separators=(",", ":")) if others else None


@pytest.fixture(scope="module")
def run(tmp_path_factory, airflow_db):
    """One run of the test DAG for 2026-11-02 against a 10,000-rows-a-day emulator."""
    from airflow_provider_kaleyra_email.testing import KaleyraEmailEmulator

    out = tmp_path_factory.mktemp("lake")
    with KaleyraEmailEmulator(start_date=date(2026, 10, 30), days=6, rows_per_day=10_000) as emulator:
        monkeypatch = pytest.MonkeyPatch()
        monkeypatch.setenv("AIRFLOW_CONN_KALEYRA_EMAIL_DEFAULT", emulator.connection_json())
        try:
            # A CronDataIntervalTimetable run on Nov 3 covers [Nov 2, Nov 3).
            dag_run = run_dag(dag, datetime(2026, 11, 3, tzinfo=timezone.utc), run_conf={"out": f"file://{out}"})
        finally:
            monkeypatch.undo()
        expected_logs = list(emulator.dataset.expected_logs(DAY, DAY))
        expected_stats = [{"date": DAY.isoformat(), **emulator.dataset.day_metrics(DAY)}]
        logs_requests = emulator.requests_to("/logs")
    return {
        "dag_run": dag_run,
        "out": out,
        "logs": expected_logs,
        "stats": expected_stats,
        "logs_requests": logs_requests,
    }


def test_every_task_succeeds(run):
    assert set(task_states(run["dag_run"]).values()) == {"success"}


def test_the_run_asks_for_its_data_interval_day_only(run):
    assert {(r.query["start_date"][0], r.query["end_date"][0]) for r in run["logs_requests"]} == {
        ("2026-11-02", "2026-11-02")
    }


def test_xcom_mode_returns_exactly_the_emulators_rows(run):
    assert len(run["logs"]) == 10_000
    assert xcom_value(run["dag_run"], "logs_xcom") == run["logs"]
    assert xcom_value(run["dag_run"], "stats_xcom") == run["stats"]


def test_jsonl_holds_every_row_once(run):
    path = run["out"] / "logs" / "date=2026-11-02" / "logs.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert rows == run["logs"]
    summary = xcom_value(run["dag_run"], "logs_jsonl")
    assert summary == {
        "path": f"file://{path}",
        "format": "jsonl",
        "rows": 10_000,
        "bytes": path.stat().st_size,
        "from_date": "2026-11-02",
        "to_date": "2026-11-02",
        "pages": 100,
        "complete": True,
    }


def test_the_summary_reaches_the_asset_event(run):
    (extra,) = asset_event_extras(run["dag_run"], "kaleyra_email_test_logs")
    assert extra == xcom_value(run["dag_run"], "logs_jsonl")


def test_csv_holds_every_row_under_the_fixed_header(run):
    path = run["out"] / "logs" / "date=2026-11-02" / "logs.csv"
    reader = csv.DictReader(io.StringIO(path.read_text(), newline=""))
    assert reader.fieldnames == [*DOCUMENTED_LOG_FIELDS, "extra"]
    assert any("type" in row for row in run["logs"]), "the emulator adds an undocumented field"
    expected = [
        {
            **{name: as_text(row.get(name)) for name in DOCUMENTED_LOG_FIELDS},
            "extra": as_text(extra_of(row, DOCUMENTED_LOG_FIELDS)),
        }
        for row in run["logs"]
    ]
    assert list(reader) == expected


def test_parquet_holds_every_row_in_the_fixed_schema(run):
    table = pq.read_table(run["out"] / "logs" / "date=2026-11-02" / "logs.parquet")
    assert table.column_names == [*DOCUMENTED_LOG_FIELDS, "extra"]
    assert {name: str(table.schema.field(name).type) for name in table.column_names} == {
        **dict.fromkeys(DOCUMENTED_LOG_FIELDS, "string"),
        "sale_price": "double",
        "extra": "string",
    }
    expected = [
        {
            **{name: None if row.get(name) is None else as_text(row[name]) for name in DOCUMENTED_LOG_FIELDS},
            "sale_price": float(row["sale_price"]),
            "extra": extra_of(row, DOCUMENTED_LOG_FIELDS),
        }
        for row in run["logs"]
    ]
    assert table.to_pylist() == expected


@pytest.mark.parametrize("output_format", ["jsonl", "csv", "parquet"])
def test_summary_stats_in_every_format(run, output_format):
    path = run["out"] / "stats" / f"2026-11-02.{output_format}"
    if output_format == "jsonl":
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        assert rows == run["stats"]
        return
    documented = ["date", *DOCUMENTED_METRICS]
    expected = [
        {**{name: row[name] for name in documented}, "extra": extra_of(row, documented)} for row in run["stats"]
    ]
    assert expected[0]["extra"], "the emulator sends metrics the page does not document"
    if output_format == "csv":
        rows = list(csv.DictReader(io.StringIO(path.read_text())))
        assert rows == [{name: str(value) for name, value in row.items()} for row in expected]
    else:
        table = pq.read_table(path)
        assert [str(t) for t in table.schema.types] == ["string", *["int64"] * 5, "string"]
        assert table.to_pylist() == expected
