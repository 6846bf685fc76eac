"""
The campaign example on real services: one sensor over every message id of a send, deferred to the
triggerer, resumed with the campaign's counts; its failures written to the lake.

The emulator delivers a sent message 15 s after the send, so the first check (on a worker) finds
the campaign in flight and hands it to the triggerer; ``gone.bounce@...`` bounces after as long.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import pytest

from tests.system.airflow_api import task_states, trigger, wait_for_run, xcom

if TYPE_CHECKING:
    from tests.system.services import AirflowStack

pytestmark = pytest.mark.timeout(300, method="signal")

DAG_ID = "example_kaleyra_email_campaign"
TRIGGER = "airflow_provider_kaleyra_email.triggers.kaleyra_email.KaleyraEmailMessageDeliveredTrigger"
RECIPIENTS = [f"reader{n}@example.com" for n in range(1, 12)] + ["gone.bounce@example.com"]


def test_one_deferred_sensor_waits_for_the_whole_campaign(airflow_stack: AirflowStack) -> None:
    api = airflow_stack.api
    run_id = trigger(api, DAG_ID, logical_date=None, conf={"recipients": RECIPIENTS})["dag_run_id"]
    seen: list[dict[str, Any]] = []

    def observe(task_instances: list[dict[str, Any]]) -> None:
        seen.extend(ti for ti in task_instances if ti["task_id"] == "wait_for_campaign" and ti["state"] == "deferred")

    result = wait_for_run(airflow_stack, DAG_ID, run_id, observe=observe, interval=0.5, timeout=200)

    states = task_states(api, DAG_ID, run_id)
    assert result["state"] == "success", states
    assert states == {"send_newsletter": ["success"], "summarize": ["success"], "wait_for_campaign": ["success"]}
    assert seen, "the campaign's wait was never seen deferred"
    assert seen[0]["trigger"]["classpath"] == TRIGGER
    assert airflow_stack.emulator.api_key not in json.dumps(seen[0])
    message_ids = xcom(api, DAG_ID, run_id, "send_newsletter")
    counts = xcom(api, DAG_ID, run_id, "wait_for_campaign")
    assert (counts["messages"], counts["recipients"], counts["delivered"], counts["failed"]) == (12, 12, 11, 1)
    (failure,) = counts["failures"]
    assert (failure["error_code"], failure["error_message"][:9]) == ("550", "550 5.1.1"), "Kaleyra's error"
    assert (failure["recipient"], failure["status"], failure["message_id"]) == (
        "gone.bounce@example.com",
        "BOUNCE",
        message_ids[-1],
    )
    (written,) = airflow_stack.lake.glob("campaigns/*/failures.jsonl")
    assert [json.loads(line) for line in written.read_text().splitlines()] == [failure]
    assert xcom(api, DAG_ID, run_id, "summarize").startswith("Newsletter: 11 of 12 recipients have it, 1 failed")
