"""The campaign example DAG, run end to end with ``dag.test()`` against the emulator, deferral included."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import pytest

from tests.dags import run_dag, xcom_value

EXAMPLE = Path(__file__).resolve().parents[2] / "example_dags" / "example_kaleyra_email_campaign.py"


@pytest.fixture
def example(airflow_db, kaleyra_email_connection, monkeypatch, tmp_path):
    monkeypatch.setenv("KALEYRA_EMAIL_EXAMPLE_POKE_INTERVAL", "0.3")
    monkeypatch.setenv("AIRFLOW_VAR_KALEYRA_EMAIL_EXPORT_URL", tmp_path.as_uri())
    try:
        from airflow.dag_processing.dagbag import DagBag
    except ImportError:  # Airflow 2
        from airflow.models.dagbag import DagBag  # noqa: TID251
    bag = DagBag(str(EXAMPLE))
    assert bag.import_errors == {}
    return bag.get_dag("example_kaleyra_email_campaign")


@pytest.mark.kaleyra_email_emulator(send_time_scale=0.1)  # delivered 2 s after the send
def test_one_task_waits_for_the_whole_campaign_and_writes_its_failures(example, kaleyra_email_emulator, tmp_path):
    recipients = [f"reader{n}@example.com" for n in range(1, 12)] + ["gone.bounce@example.com"]

    dag_run = run_dag(example, datetime(2026, 11, 2, tzinfo=timezone.utc), run_conf={"recipients": recipients})

    states = {ti.task_id: str(ti.state) for ti in dag_run.get_task_instances()}
    assert states == {"send_newsletter": "success", "wait_for_campaign": "success", "summarize": "success"}
    message_ids = xcom_value(dag_run, "send_newsletter")
    assert len(message_ids) == 12
    result = xcom_value(dag_run, "wait_for_campaign")
    assert (result["messages"], result["recipients"], result["delivered"], result["failed"]) == (12, 12, 11, 1)
    (failure,) = result["failures"]
    assert (failure["recipient"], failure["status"]) == ("gone.bounce@example.com", "BOUNCE")
    assert (failure["error_code"], failure["error_message"][:9]) == ("550", "550 5.1.1"), "Kaleyra's error"
    assert failure["message_id"] == message_ids[-1]
    (written,) = tmp_path.glob("campaigns/*/failures.jsonl")
    assert [json.loads(line) for line in written.read_text().splitlines()] == [failure]
    assert result["output_path"].endswith("/failures.jsonl")
    assert xcom_value(dag_run, "summarize").startswith("Newsletter: 11 of 12 recipients have it, 1 failed")


@pytest.mark.kaleyra_email_emulator(send_time_scale=0.1)
def test_too_many_bounces_fail_the_campaign_wait(example, kaleyra_email_emulator, tmp_path):
    recipients = ["a@example.com", "b.bounce@example.com", "c.suppress@example.com", "d@example.com"]

    dag_run = run_dag(example, datetime(2026, 11, 3, tzinfo=timezone.utc), run_conf={"recipients": recipients})

    states = {ti.task_id: str(ti.state) for ti in dag_run.get_task_instances()}
    assert states["wait_for_campaign"] == "failed"
    assert states["summarize"] == "upstream_failed"
    (written,) = tmp_path.glob("campaigns/*/failures.jsonl")
    assert {json.loads(line)["recipient"] for line in written.read_text().splitlines()} == {
        "b.bounce@example.com",
        "c.suppress@example.com",
    }
