"""
The send-and-wait example on real services: the sensor defers, the triggerer resumes it.

The emulator delivers a sent message ``DELIVERY_SECONDS`` (15 s) after the send, long enough for
the sensor's first check (on a worker, a few seconds after the send) to find it undelivered and
hand the wait to the triggerer; an address containing ``bounce`` bounces after as long.
"""

from __future__ import annotations

import re
import time
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

import pytest

from tests.system.airflow_api import midnight, task_log, task_states, trigger, wait_for_run, wait_until_idle, xcom

if TYPE_CHECKING:
    from tests.system.services import AirflowStack

pytestmark = pytest.mark.timeout(300, method="signal")

DAG_ID = "example_kaleyra_email_send_and_wait"
TRIGGER = "airflow_provider_kaleyra_email.triggers.kaleyra_email.KaleyraEmailMessageDeliveredTrigger"
RECIPIENTS = ["cfo@example.com", "ops@example.com"]
#: The task states of a run whose two messages are delivered: the report published, the failure branch skipped.
ALL_DELIVERED = {
    "publish_report": ["success"],
    "report_undelivered": ["skipped"],
    "send_report": ["success"],
    "wait_for_delivery": ["success", "success"],
}
BOUNCE_TEXT = "550 5.1.1 The email account that you tried to reach does not exist."


class WaitObserver:
    """Every state each mapped ``wait_for_delivery`` went through, and what it was deferred to."""

    def __init__(self) -> None:
        self.states: dict[int, list[str | None]] = {}
        self.deferred_to: dict[int, dict[str, Any]] = {}

    def __call__(self, task_instances: list[dict[str, Any]]) -> None:
        for ti in task_instances:
            if ti["task_id"] != "wait_for_delivery" or ti["map_index"] < 0:
                continue
            seen = self.states.setdefault(ti["map_index"], [])
            if not seen or seen[-1] != ti["state"]:
                seen.append(ti["state"])
            if ti["state"] == "deferred":
                self.deferred_to[ti["map_index"]] = {"trigger": ti["trigger"], "triggerer_job": ti["triggerer_job"]}


def test_the_sensor_defers_and_the_triggerer_resumes_it(airflow_stack: AirflowStack) -> None:
    api = airflow_stack.api
    wait_until_idle(airflow_stack)  # the first check must come before the delivery: no queue in front of it
    run = trigger(api, DAG_ID, logical_date=None, conf={"recipients": RECIPIENTS})
    run_id = run["dag_run_id"]
    observer = WaitObserver()

    result = wait_for_run(airflow_stack, DAG_ID, run_id, observe=observer, interval=0.25, timeout=150)

    assert task_states(api, DAG_ID, run_id) == ALL_DELIVERED
    assert result["state"] == "success"
    message_ids = xcom(api, DAG_ID, run_id, "send_report")
    assert len(message_ids) == len(RECIPIENTS)
    for index, address in enumerate(RECIPIENTS):
        # Deferred at some point, then resumed and done: no failure or retry in between.
        states = observer.states[index]
        assert "deferred" in states, f"map index {index} never seen deferred: {states}"
        assert [s for s in states[states.index("deferred") :] if s in ("failed", "up_for_retry")] == [], states
        assert states[-1] == "success"
        deferred = observer.deferred_to[index]
        assert deferred["trigger"]["classpath"] == TRIGGER
        assert airflow_stack.emulator.api_key not in str(deferred)
        triggerer = deferred["triggerer_job"]
        assert triggerer is not None, "no triggerer took the trigger"
        assert (triggerer["job_type"], triggerer["state"]) == ("TriggererJob", "running")
        assert deferred["trigger"]["triggerer_id"] == triggerer["id"]
        assert xcom(api, DAG_ID, run_id, "wait_for_delivery", map_index=index) == {address: "DELIVERED"}

        message_id = message_ids[index]
        log = [
            (entry.get("logger"), entry["event"])
            for entry in task_log(api, DAG_ID, run_id, "wait_for_delivery", map_index=index)
        ]
        events = [event for _, event in log]
        # On the worker: one check, then the hand-over.
        assert f"Deferring the wait for message {message_id} to the triggerer." in events, events
        # On the triggerer (its lines go to the task's log): the trigger starts, polls, finds the delivery.
        started = [
            e
            for e in events
            if re.fullmatch(rf"trigger {DAG_ID}/{re.escape(run_id)}/wait_for_delivery/{index}/1 \(ID \d+\) starting", e)
        ]
        assert len(started) == 1, events
        assert (TRIGGER, f"Waiting for message {message_id}: a poll every 1 s.") in log, log
        delivered = f"Message {message_id} reached all of its recipients: {address} DELIVERED."
        assert (TRIGGER, delivered) in log, log
        assert events.index(started[0]) < events.index("Trigger fired event") < events.index("trigger completed")
    assert xcom(api, DAG_ID, run_id, "publish_report") == sorted(RECIPIENTS)
    triggerer_output = airflow_stack.services["triggerer"].log()
    assert "Traceback" not in triggerer_output, triggerer_output


def test_with_a_logical_date_and_a_bounce(airflow_stack: AirflowStack) -> None:
    """A run with a logical date delivers; a bounce fails its wait at once and the failure branch reports it."""
    api = airflow_stack.api
    logical_date = midnight(datetime.now(timezone.utc).date() - timedelta(days=2))
    delivered = trigger(
        api, DAG_ID, logical_date=logical_date, conf={"recipients": ["it@example.com", "sales@example.com"]}
    )
    bounced = trigger(
        api, DAG_ID, logical_date=None, conf={"recipients": ["ops@example.com", "nobody.bounce@example.com"]}
    )

    result = wait_for_run(airflow_stack, DAG_ID, delivered["dag_run_id"], timeout=150)
    assert result["logical_date"] == logical_date.isoformat().replace("+00:00", "Z")
    assert task_states(api, DAG_ID, delivered["dag_run_id"]) == ALL_DELIVERED
    assert result["state"] == "success"
    assert xcom(api, DAG_ID, delivered["dag_run_id"], "publish_report") == ["it@example.com", "sales@example.com"]

    result = wait_for_run(airflow_stack, DAG_ID, bounced["dag_run_id"], timeout=150)
    run_id = bounced["dag_run_id"]
    assert task_states(api, DAG_ID, run_id) == {
        "publish_report": ["upstream_failed"],
        "report_undelivered": ["success"],
        "send_report": ["success"],
        "wait_for_delivery": ["success", "failed"],
    }
    assert result["state"] == "failed"
    bounced_id = xcom(api, DAG_ID, run_id, "send_report")[1]
    assert xcom(api, DAG_ID, run_id, "report_undelivered") == [
        {"message_id": bounced_id, "recipient": "nobody.bounce@example.com", "status": "BOUNCE", "error": BOUNCE_TEXT}
    ]
    failed_wait = next(
        ti
        for ti in api.get(f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances").json()["task_instances"]
        if ti["task_id"] == "wait_for_delivery" and ti["map_index"] == 1
    )
    assert failed_wait["try_number"] == 1  # failed at once: no retry spent on a bounce
    # The task's log file may still be written a moment after its state is (the supervisor flushes it): read again.
    deadline = time.monotonic() + 15
    while True:
        events = [entry["event"] for entry in task_log(api, DAG_ID, run_id, "wait_for_delivery", map_index=1)]
        if any("nobody.bounce@example.com is BOUNCE" in event for event in events) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert any("nobody.bounce@example.com is BOUNCE" in event for event in events), events
