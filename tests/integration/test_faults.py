"""
The fault suite: a flaky, rate-limited API still yields every row exactly once, and when
retries run out the task says what it tried and leaves nothing at the output path.
"""

from __future__ import annotations

import json
from datetime import date, datetime, timezone

import pytest

from airflow_provider_kaleyra_email.hooks import _api as api
from airflow_provider_kaleyra_email.hooks.kaleyra_email import KaleyraEmailRetriesExhaustedError
from airflow_provider_kaleyra_email.operators.kaleyra_email import KaleyraEmailFetchLogsOperator
from airflow_provider_kaleyra_email.testing import Faults

DAY = date(2026, 11, 2)
CONTEXT = {
    "data_interval_start": datetime(2026, 11, 2, tzinfo=timezone.utc),
    "data_interval_end": datetime(2026, 11, 3, tzinfo=timezone.utc),
}
#: The mix the issue asks for: 20 % rate limited (Retry-After: 1), 10 % 500/503, and some
#: connections dropped (before or mid-body) or answered with a truncated or HTML body.
FAULT_MIX = Faults(rate_limit=0.2, retry_after=1, server_errors=0.1, drops=0.05, malformed=0.05, seed=7)


def pairs(rows):
    """(message id, recipient) for every recipient of every row."""
    return [(row["message_id"], recipient) for row in rows for recipient in row["to_mail"].split(",")]


@pytest.mark.kaleyra_email_emulator(start_date=DAY, days=1, rows_per_day=3_000)
@pytest.mark.parametrize("output_format", ["jsonl", "csv"])
def test_every_row_arrives_exactly_once_through_the_fault_mix(
    kaleyra_email_emulator, monkeypatch, tmp_path, output_format
):
    monkeypatch.setenv(
        "AIRFLOW_CONN_KALEYRA_EMAIL_DEFAULT",
        kaleyra_email_emulator.connection_json(max_retries=12, timeout=5, page_size=100),
    )
    kaleyra_email_emulator.set_faults(FAULT_MIX)
    # Each kind at least once, whatever the random draws do, then the shares above.
    kaleyra_email_emulator.queue_faults("429", "500", "drop", "drop_mid_body", "truncated", "html", "503")
    path = tmp_path / f"logs.{output_format}"
    operator = KaleyraEmailFetchLogsOperator(task_id="logs", output_path=f"file://{path}", output_format=output_format)
    # The fault mix is about correctness, not patience: short backoffs (a Retry-After capped by them too).
    operator.hook.retry_wait_initial, operator.hook.retry_wait_max = 0.05, 0.5

    summary = operator.execute(CONTEXT)

    expected = list(kaleyra_email_emulator.dataset.expected_logs(DAY, DAY))
    if output_format == "jsonl":
        got = [json.loads(line) for line in path.read_text().splitlines()]
        assert got == expected
    else:
        import csv

        got = list(csv.DictReader(path.open()))
        assert [(r["message_id"], r["to_mail"]) for r in got] == [api.log_row_key(r) for r in expected]
    assert sorted(pairs(got)) == sorted(pairs(expected))
    assert len(set(pairs(got))) == len(pairs(got))
    assert summary["rows"] == 3_000
    faults = [r.fault for r in kaleyra_email_emulator.requests if r.fault]
    assert {"429", "500", "503", "drop", "drop_mid_body", "truncated", "html"} <= set(faults)
    assert len(faults) > 10
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]


@pytest.mark.kaleyra_email_emulator(start_date=DAY, days=1, rows_per_day=2_000)
def test_when_retries_run_out_the_task_says_what_it_tried(kaleyra_email_emulator, monkeypatch, tmp_path):
    monkeypatch.setenv("AIRFLOW_CONN_KALEYRA_EMAIL_DEFAULT", kaleyra_email_emulator.connection_json(max_retries=3))
    path = tmp_path / "lake" / "logs.jsonl"
    operator = KaleyraEmailFetchLogsOperator(task_id="logs", output_path=f"file://{path}")
    operator.hook.retry_wait_initial = 0.01
    kaleyra_email_emulator.queue_faults("500", "drop", "html", "503")

    with pytest.raises(KaleyraEmailRetriesExhaustedError) as error:
        operator.execute(CONTEXT)

    message = str(error.value)
    assert "gave up after 4 attempt(s)" in message
    assert "max_retries=3" in message
    for tried in ("HTTP 500", "connection failed", "not JSON", "HTTP 503"):
        assert tried in message
    assert [p.name for p in path.parent.iterdir()] == []


@pytest.mark.kaleyra_email_emulator(start_date=DAY, days=1, rows_per_day=2_000)
def test_a_failure_after_rows_were_written_leaves_nothing_either(kaleyra_email_emulator, monkeypatch, tmp_path):
    monkeypatch.setenv(
        "AIRFLOW_CONN_KALEYRA_EMAIL_DEFAULT", kaleyra_email_emulator.connection_json(max_retries=2, page_size=10)
    )
    path = tmp_path / "lake" / "logs.csv"
    operator = KaleyraEmailFetchLogsOperator(task_id="logs", output_path=f"file://{path}", output_format="csv")
    operator.hook.retry_wait_initial = 0.01
    kaleyra_email_emulator.queue_faults(*["ok"] * 30)  # 300 rows come through, then the API breaks
    kaleyra_email_emulator.set_faults(Faults(server_errors=1.0))

    with pytest.raises(KaleyraEmailRetriesExhaustedError, match=r"gave up after 3 attempt\(s\)"):
        operator.execute(CONTEXT)

    assert [p.name for p in path.parent.iterdir()] == []


@pytest.mark.kaleyra_email_emulator(start_date=DAY, days=1, rows_per_day=1_000)
def test_a_slow_api_hits_the_request_timeout_and_the_retry_succeeds(kaleyra_email_emulator, monkeypatch, tmp_path):
    monkeypatch.setenv("AIRFLOW_CONN_KALEYRA_EMAIL_DEFAULT", kaleyra_email_emulator.connection_json(timeout=0.5))
    kaleyra_email_emulator.set_faults(Faults(slow_seconds=2))
    kaleyra_email_emulator.queue_faults("slow", "slow")
    path = tmp_path / "logs.jsonl"
    operator = KaleyraEmailFetchLogsOperator(task_id="logs", output_path=f"file://{path}")
    operator.hook.retry_wait_initial = 0.01

    summary = operator.execute(CONTEXT)

    assert summary["rows"] == 1_000
    assert len(path.read_text().splitlines()) == 1_000
