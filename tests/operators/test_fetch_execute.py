"""The fetch operators called directly: dates, the XCom cap, bad input, atomic and repeatable writes."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from datetime import date, datetime, timezone

import pytest
from airflow.providers.common.compat.sdk import AirflowFailException, AirflowOptionalProviderFeatureException

from airflow_provider_kaleyra_email.operators.kaleyra_email import (
    KaleyraEmailFetchLogsOperator,
    KaleyraEmailFetchSummaryStatsOperator,
)
from airflow_provider_kaleyra_email.testing import Faults

pytestmark = pytest.mark.kaleyra_email_emulator(start_date=date(2026, 10, 30), days=6, rows_per_day=2_000)


def interval(start: datetime, end: datetime) -> dict:
    return {"data_interval_start": start, "data_interval_end": end}


DAILY_NOV_2 = interval(datetime(2026, 11, 2, tzinfo=timezone.utc), datetime(2026, 11, 3, tzinfo=timezone.utc))


def requested_days(emulator) -> set[tuple[str, str]]:
    return {(r.query["start_date"][0], r.query["end_date"][0]) for r in emulator.requests}


@pytest.mark.parametrize(
    ("account_timezone", "start", "end", "day"),
    [
        ("UTC", datetime(2026, 11, 2, tzinfo=timezone.utc), datetime(2026, 11, 3, tzinfo=timezone.utc), "2026-11-02"),
        (
            "Asia/Kolkata",
            datetime(2026, 11, 1, 18, 30, tzinfo=timezone.utc),  # midnight Nov 2 in Kolkata
            datetime(2026, 11, 2, 18, 30, tzinfo=timezone.utc),
            "2026-11-02",
        ),
        # A UTC schedule, a Kolkata account: one day all the same, never two.
        (
            "Asia/Kolkata",
            datetime(2026, 11, 2, tzinfo=timezone.utc),
            datetime(2026, 11, 3, tzinfo=timezone.utc),
            "2026-11-02",
        ),
        # New York leaves DST on Nov 1: a 25-hour local day.
        (
            "America/New_York",
            datetime(2026, 11, 1, 4, tzinfo=timezone.utc),
            datetime(2026, 11, 2, 5, tzinfo=timezone.utc),
            "2026-11-01",
        ),
        # An hourly run asks for the day that contains it (02:00 UTC is the evening before in New York).
        (
            "America/New_York",
            datetime(2026, 11, 3, 2, tzinfo=timezone.utc),
            datetime(2026, 11, 3, 3, tzinfo=timezone.utc),
            "2026-11-02",
        ),
    ],
)
def test_the_data_interval_becomes_one_account_day(
    kaleyra_email_emulator, monkeypatch, account_timezone, start, end, day
):
    monkeypatch.setenv(
        "AIRFLOW_CONN_KALEYRA_EMAIL_DEFAULT", kaleyra_email_emulator.connection_json(timezone=account_timezone)
    )
    operator = KaleyraEmailFetchSummaryStatsOperator(task_id="stats")

    rows = operator.execute(interval(start, end))

    assert requested_days(kaleyra_email_emulator) == {(day, day)}
    assert [row["date"] for row in rows] == [day]


def test_explicit_dates_win_over_the_interval(kaleyra_email_connection, kaleyra_email_emulator):
    operator = KaleyraEmailFetchSummaryStatsOperator(task_id="stats", from_date="2026-10-30", to_date="2026-11-01")
    rows = operator.execute(DAILY_NOV_2)
    assert [row["date"] for row in rows] == ["2026-10-30", "2026-10-31", "2026-11-01"]


def test_a_run_without_an_interval_fails_clearly(kaleyra_email_connection, kaleyra_email_emulator):
    moment = datetime(2026, 11, 2, tzinfo=timezone.utc)
    with pytest.raises(ValueError, match="no data interval to export") as error:
        KaleyraEmailFetchLogsOperator(task_id="logs").execute(interval(moment, moment))
    assert "from_date" in str(error.value)
    assert list(kaleyra_email_emulator.requests) == []


def test_more_rows_than_the_xcom_cap_fails_after_one_request(kaleyra_email_connection, kaleyra_email_emulator):
    operator = KaleyraEmailFetchLogsOperator(task_id="logs", max_xcom_rows=500)

    with pytest.raises(AirflowFailException, match="more than max_xcom_rows=500 log rows") as error:
        operator.execute(DAILY_NOV_2)

    assert "the API reports 2,000" in str(error.value)
    assert "set output_path" in str(error.value)
    assert len(kaleyra_email_emulator.requests) == 1


def test_the_cap_also_holds_without_a_total(kaleyra_email_connection, kaleyra_email_emulator):
    operator = KaleyraEmailFetchSummaryStatsOperator(
        task_id="stats", from_date="2026-10-30", to_date="2026-11-04", max_xcom_rows=3
    )
    with pytest.raises(AirflowFailException, match="more than max_xcom_rows=3 days"):
        operator.execute({})


@pytest.mark.parametrize(
    ("arguments", "named"),
    [
        ({"output_path": "/tmp/logs.jsonl"}, "output_path='/tmp/logs.jsonl' is not a URL"),
        ({"output_path": "bogus://bucket/logs.jsonl"}, "uses the scheme 'bogus'"),
        ({"output_path": "file:///tmp/kaleyra/"}, "names a folder"),
        ({"output_path": 42}, "output_path=42 (int) must be a URL string"),
        ({"from_date": "2026-11-31"}, "from_date='2026-11-31' is not a real calendar date"),
        ({"from_date": "2026-11-03", "to_date": "2026-11-02"}, "is after to_date"),
        ({"search": ["BOUNCE", None]}, "search[1]=None"),
        ({"message_id": "a/../b"}, "message_id='a/../b'"),
        ({"to_date": "2026-11-02", "output_path": "file:///tmp/x/{from_date}.jsonl"}, "uses {from_date}"),
    ],
)
def test_bad_input_fails_before_any_request_or_write(
    kaleyra_email_connection, kaleyra_email_emulator, tmp_path, arguments, named
):
    operator = KaleyraEmailFetchLogsOperator(task_id="logs", **arguments)
    with pytest.raises(ValueError, match=re.escape(named)):
        operator.execute(DAILY_NOV_2)
    assert list(kaleyra_email_emulator.requests) == []


@pytest.mark.parametrize(
    ("arguments", "named"),
    [
        ({"output_format": "xml"}, "output_format='xml'"),
        ({"max_xcom_rows": -1}, "max_xcom_rows=-1"),
        ({"page_size": 500}, "page_size=500"),
    ],
)
def test_bad_arguments_fail_when_the_dag_is_parsed(arguments, named):
    with pytest.raises(ValueError, match=re.escape(named)):
        KaleyraEmailFetchLogsOperator(task_id="logs", **arguments)


def test_parquet_without_pyarrow_fails_before_any_request(
    kaleyra_email_connection, kaleyra_email_emulator, tmp_path, monkeypatch
):
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # what an environment without the extra looks like
    operator = KaleyraEmailFetchLogsOperator(
        task_id="logs", output_path=f"file://{tmp_path}/l.parquet", output_format="parquet"
    )
    with pytest.raises(
        AirflowOptionalProviderFeatureException, match=re.escape("airflow-provider-kaleyra-email[parquet]")
    ):
        operator.execute(DAILY_NOV_2)
    assert list(kaleyra_email_emulator.requests) == []
    assert list(tmp_path.iterdir()) == []


def test_a_rerun_replaces_the_object(kaleyra_email_connection, kaleyra_email_emulator, tmp_path):
    path = tmp_path / "logs.jsonl"
    operator = KaleyraEmailFetchLogsOperator(task_id="logs", output_path=f"file://{path}")
    operator.execute(DAILY_NOV_2)
    first = path.read_text()
    kaleyra_email_emulator.dataset.rows_per_day = 300  # the day now looks different

    summary = operator.execute(DAILY_NOV_2)

    lines = path.read_text().splitlines()
    assert len(first.splitlines()) == 2_000
    assert len(lines) == summary["rows"] == 300
    assert [json.loads(line) for line in lines] == list(
        kaleyra_email_emulator.dataset.expected_logs(date(2026, 11, 2), date(2026, 11, 2))
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["logs.jsonl"]


def test_retries_run_out_and_nothing_is_left_at_the_output_path(kaleyra_email_emulator, monkeypatch, tmp_path):
    monkeypatch.setenv("AIRFLOW_CONN_KALEYRA_EMAIL_DEFAULT", kaleyra_email_emulator.connection_json(max_retries=1))
    kaleyra_email_emulator.set_faults(Faults(server_errors=1.0))
    operator = KaleyraEmailFetchLogsOperator(task_id="logs", output_path=f"file://{tmp_path}/out/logs.jsonl")

    with pytest.raises(Exception, match=r"gave up after 2 attempt\(s\)"):
        operator.execute(DAILY_NOV_2)

    assert list((tmp_path / "out").iterdir()) == []


KILLED_WRITER = textwrap.dedent(
    """
    import sys
    from datetime import datetime, timezone
    from airflow_provider_kaleyra_email.operators.kaleyra_email import KaleyraEmailFetchLogsOperator
    operator = KaleyraEmailFetchLogsOperator(task_id="logs", output_path=sys.argv[1], max_xcom_rows=0)
    operator.execute({
        "data_interval_start": datetime(2026, 11, 2, tzinfo=timezone.utc),
        "data_interval_end": datetime(2026, 11, 3, tzinfo=timezone.utc),
    })
    """
)


@pytest.mark.kaleyra_email_emulator(start_date=date(2026, 11, 2), days=1, rows_per_day=20_000)
def test_a_task_killed_mid_write_leaves_no_object_at_the_final_path(kaleyra_email_emulator, tmp_path):
    kaleyra_email_emulator.set_faults(Faults(latency=0.05))
    folder = tmp_path / "lake"
    final = folder / "logs.jsonl"
    environment = {**os.environ, "AIRFLOW_CONN_KALEYRA_EMAIL_DEFAULT": kaleyra_email_emulator.connection_json()}
    process = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, f"file://{final}"], env=environment)
    try:
        deadline = time.monotonic() + 120
        temporary = []
        while time.monotonic() < deadline and process.poll() is None:
            temporary = [p for p in folder.glob(".logs.jsonl.*.tmp") if p.stat().st_size > 0] if folder.exists() else []
            if temporary:
                break
            time.sleep(0.02)
        assert temporary, "the writer should be part-way through"
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()

    assert not final.exists()
    assert all(p.name.startswith(".") and p.name.endswith(".tmp") for p in folder.iterdir())
