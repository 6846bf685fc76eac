"""The send-and-wait example DAG, run end to end with ``dag.test()`` against the emulator, deferral included."""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from tests.dags import run_dag, xcom_value

EXAMPLE = Path(__file__).resolve().parents[2] / "example_dags" / "example_kaleyra_email_send_and_wait.py"
POKE_INTERVAL = 0.3


@pytest.fixture
def example(airflow_db, kaleyra_email_connection, monkeypatch):
    monkeypatch.setenv("KALEYRA_EMAIL_EXAMPLE_POKE_INTERVAL", str(POKE_INTERVAL))
    try:
        from airflow.dag_processing.dagbag import DagBag
    except ImportError:  # Airflow 2
        from airflow.models.dagbag import DagBag  # noqa: TID251
    bag = DagBag(str(EXAMPLE))
    assert bag.import_errors == {}
    return bag.get_dag("example_kaleyra_email_send_and_wait")


def states(dag_run) -> dict[str, list[str]]:
    """Every task's state(s), mapped instances in map-index order."""
    found: dict[str, list[tuple[int, str]]] = {}
    for ti in dag_run.get_task_instances():
        found.setdefault(ti.task_id, []).append((ti.map_index, str(ti.state)))
    return {task_id: [state for _, state in sorted(entries)] for task_id, entries in found.items()}


@pytest.mark.kaleyra_email_emulator(send_time_scale=0.1)  # delivered 2 s after the send
def test_delivered_the_sensor_defers_and_the_downstream_step_runs(example, kaleyra_email_emulator, capfd):
    started = time.monotonic()

    dag_run = run_dag(
        example,
        datetime(2026, 11, 2, tzinfo=timezone.utc),
        run_conf={"recipients": ["ops@example.com", "cfo@example.com"]},
    )

    run_seconds = time.monotonic() - started
    assert states(dag_run) == {
        "send_report": ["success"],
        "wait_for_delivery": ["success", "success"],
        "publish_report": ["success"],
        "report_undelivered": ["skipped"],
    }
    assert xcom_value(dag_run, "publish_report") == ["cfo@example.com", "ops@example.com"]
    assert xcom_value(dag_run, "wait_for_delivery", map_index=0) == {"ops@example.com": "DELIVERED"}
    out, err = capfd.readouterr()
    ids = xcom_value(dag_run, "send_report")
    # The wait that ran first checked once on the worker, deferred, and the trigger polled until
    # the emulator delivered. dag.test() runs the trigger in-process before the next task, so the
    # other message is delivered by the time its wait checks.
    deferred = [m for m in ids if f"Deferring the wait for message {m} to the triggerer." in out + err]
    assert len(deferred) >= 1
    (post,) = [r for r in kaleyra_email_emulator.requests if r.method == "POST"]
    polls = kaleyra_email_emulator.requests_to(f"/stats/{deferred[0]}")
    assert len(polls) >= 3
    assert polls[-1].status == 200
    assert polls[-1].at - post.at >= 1.9
    print(
        f"\nexample DAG, delivered: whole run {run_seconds:.1f} s; send to delivery seen "
        f"{polls[-1].at - post.at:.2f} s; deferred wait: {len(polls)} stats calls "
        f"(1 on the worker, {len(polls) - 1} by the trigger) over {polls[-1].at - polls[0].at:.2f} s; "
        f"stats calls per message: {[len(kaleyra_email_emulator.requests_to(f'/stats/{m}')) for m in ids]}"
    )


def test_a_bounce_fails_its_wait_at_once_and_the_failure_branch_reports_it(example, kaleyra_email_emulator, capfd):
    dag_run = run_dag(
        example,
        datetime(2026, 11, 3, tzinfo=timezone.utc),
        run_conf={"recipients": ["ops@example.com", "nobody.bounce@example.com"]},
    )

    assert states(dag_run) == {
        "send_report": ["success"],
        "wait_for_delivery": ["success", "failed"],
        "publish_report": ["upstream_failed"],
        "report_undelivered": ["success"],
    }
    bounced_id = xcom_value(dag_run, "send_report")[1]
    text = "550 5.1.1 The email account that you tried to reach does not exist."
    assert xcom_value(dag_run, "report_undelivered") == [
        {"message_id": bounced_id, "recipient": "nobody.bounce@example.com", "status": "BOUNCE", "error": text}
    ]
    out, err = capfd.readouterr()
    assert f"nobody.bounce@example.com is BOUNCE (Kaleyra error 550: {text})" in out + err
    # Failed at the first answer that showed the bounce (no retry, not at the 2-hour timeout).
    waits = {ti.map_index: ti for ti in dag_run.get_task_instances() if ti.task_id == "wait_for_delivery"}
    assert waits[1].try_number == 1
    polls = kaleyra_email_emulator.requests_to(f"/stats/{bounced_id}")
    assert polls[-1].at - polls[0].at < 60


def test_imports_with_no_warnings_once_airflow_itself_is_loaded():
    """A fresh interpreter: Airflow's own start-up warnings first, then the example with warnings as errors."""
    code = (
        "import warnings\n"
        "from airflow.providers.common.compat.sdk import DAG, BaseOperator, BaseSensorOperator, task\n"
        "import airflow.triggers.base\n"
        "warnings.simplefilter('error')\n"
        f"import runpy; runpy.run_path({str(EXAMPLE)!r})\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
