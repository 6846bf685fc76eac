"""
The API key never appears in a log line, an exception, XCom, rendered fields, the metadata
database or a repr, at any log level, including when requests fail.

Airflow's secrets masker would hide a leak in task logs, so these tests switch it off: what
is checked is that our code never hands the key to logging or to anything it returns.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from datetime import date, datetime, timezone
from pathlib import Path

import pytest

from airflow_provider_kaleyra_email.hooks.kaleyra_email import KaleyraEmailHook
from airflow_provider_kaleyra_email.operators.kaleyra_email import (
    KaleyraEmailFetchLogsOperator,
    KaleyraEmailSendOperator,
)
from airflow_provider_kaleyra_email.testing import Faults, KaleyraEmailEmulator

SECRET = "sk-live-7f3a9c0e51d24b8aSECRET"
DAY = date(2026, 11, 2)
CONTEXT = {
    "data_interval_start": datetime(2026, 11, 2, tzinfo=timezone.utc),
    "data_interval_end": datetime(2026, 11, 3, tzinfo=timezone.utc),
}


@pytest.fixture
def unmasked(monkeypatch):
    """Airflow's secrets masker off, so a leak would show instead of becoming ***."""
    for module in ("airflow.sdk._shared.secrets_masker.secrets_masker", "airflow.utils.log.secrets_masker"):
        with contextlib.suppress(ImportError):
            masker = __import__(module, fromlist=["SecretsMasker"]).SecretsMasker
            monkeypatch.setattr(masker, "redact", lambda self, item, *args, **kwargs: item)
            monkeypatch.setattr(masker, "filter", lambda self, record: True)


@pytest.fixture
def emulator(monkeypatch, unmasked):
    with KaleyraEmailEmulator(api_key=SECRET, start_date=DAY, days=1, rows_per_day=500) as running:
        monkeypatch.setenv("AIRFLOW_CONN_KALEYRA_EMAIL_DEFAULT", running.connection_json(max_retries=2))
        yield running


@pytest.fixture
def everything_said(caplog, capfd):
    """All log records at DEBUG (every logger) and everything printed, as one text at the end."""
    caplog.set_level(logging.DEBUG)
    for name in ("airflow", "airflow.task", "urllib3", "requests", "httpx"):
        caplog.set_level(logging.DEBUG, logger=name)
    said: list[str] = []

    def collect(*extra: object) -> str:
        out, err = capfd.readouterr()
        records = [f"{r.getMessage()} {r.exc_text or ''} {r.args!r}" for r in caplog.records]
        said.extend([out, err, *records, *(f"{x!s} {x!r}" for x in extra)])
        return "\n".join(said)

    return collect


def fails_with(call) -> BaseException:
    with pytest.raises(Exception) as error:  # noqa: PT011 - any failure: we read what it says
        call()
    return error.value


def hook(**options) -> KaleyraEmailHook:
    return KaleyraEmailHook(retry_wait_initial=0.01, retry_wait_max=0.05, **options)


def test_retried_and_failing_requests_never_say_the_key(emulator, everything_said):
    emulator.queue_faults("429", "500", "drop", "drop_mid_body", "html", "truncated")
    emulator.set_faults(Faults(retry_after=0.05))
    rows = list(hook(max_retries=8).iter_logs(DAY, DAY))
    emulator.set_faults(Faults(server_errors=1.0))
    exhausted = fails_with(lambda: list(hook().iter_logs(DAY, DAY)))
    emulator.set_faults(Faults())
    emulator.queue_faults("error200", "redirect", "503")
    in_body = fails_with(lambda: hook().get_message_stats(rows[0]["message_id"]))
    redirected = fails_with(lambda: list(hook().iter_summary_stats(DAY, DAY)))
    send = fails_with(lambda: hook().send_email(from_email="a@b.co", to="c@d.co", subject="s", text_body="t"))

    said = everything_said(exhausted, in_body, redirected, send, hook(), hook().config)

    assert len(rows) == 500
    assert "gave up" in str(exhausted)
    assert SECRET not in said


def test_a_rejected_key_is_not_repeated_back(emulator, monkeypatch, everything_said):
    connection = emulator.connection()
    wrong = "sk-live-0000000000000000WRONG"
    monkeypatch.setenv("AIRFLOW_CONN_KALEYRA_EMAIL_DEFAULT", json.dumps({**connection, "password": wrong}))

    error = fails_with(lambda: list(hook().iter_logs(DAY, DAY)))
    ok, message = hook().test_connection()

    said = everything_said(error, message)
    assert not ok
    assert "401" in str(error)
    assert wrong not in said
    assert SECRET not in said


def test_test_connection_messages_never_say_the_key(emulator, everything_said):
    emulator.set_faults(Faults(slow_seconds=1))
    emulator.queue_faults("slow")
    timed_out = KaleyraEmailHook(timeout=0.2).test_connection()
    emulator.stop()
    unreachable = hook().test_connection()

    said = everything_said(timed_out, unreachable)
    assert not timed_out[0]
    assert not unreachable[0]
    assert SECRET not in said


def test_operators_keep_the_key_out_of_reprs_results_and_rendered_fields(emulator, tmp_path, everything_said):
    fetch = KaleyraEmailFetchLogsOperator(task_id="logs", output_path=f"file://{tmp_path}/logs.jsonl")
    summary = fetch.execute(CONTEXT)
    to_xcom = KaleyraEmailFetchLogsOperator(task_id="xcom").execute(CONTEXT)
    send = KaleyraEmailSendOperator(task_id="send", from_email="a@b.co", to=["c@d.co"], subject="s", text_body="t")
    ids = send.execute({})
    fields = {name: getattr(op, name) for op in (fetch, send) for name in op.template_fields}

    said = everything_said(summary, to_xcom, ids, fields, fetch, send, fetch.hook)
    assert summary["rows"] == len(to_xcom) == 500
    assert SECRET not in said
    assert SECRET not in (tmp_path / "logs.jsonl").read_text()


@pytest.mark.usefixtures("airflow_db")
def test_a_dag_run_leaves_the_key_nowhere_in_airflow(emulator, tmp_path, everything_said):
    """XCom, rendered fields, task logs, the whole metadata database: no trace of the key."""
    from tests.dag_files.fetch import dag
    from tests.dags import run_dag, task_states

    emulator.queue_faults("503", "429")
    emulator.set_faults(Faults(retry_after=0.05))
    # A minute past midnight: the same day exported, but a run id of its own (tests/operators runs
    # this DAG at midnight, and Airflow 2 would mix the two runs' asset events).
    logical_date = datetime(2026, 11, 3, 0, 1, tzinfo=timezone.utc)
    dag_run = run_dag(dag, logical_date, run_conf={"out": f"file://{tmp_path}"})

    assert set(task_states(dag_run).values()) == {"success"}
    home = Path(os.environ["AIRFLOW_HOME"])
    stored = [path for path in home.rglob("*") if path.is_file()]
    assert any(path.suffix == ".db" for path in stored), "the SQLite metadata database is searched too"
    for path in stored:
        assert SECRET.encode() not in path.read_bytes(), path
    assert SECRET not in everything_said(dag_run)
