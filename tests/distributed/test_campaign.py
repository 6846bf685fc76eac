"""
The campaign example with its wait deferred: a worker sends and checks once, the triggerer waits
(no worker held), and a worker, whichever is free, resumes the sensor and runs the step after it.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import pytest

from tests.distributed.cluster import BUCKET, WORKERS
from tests.system.airflow_api import task_states, trigger, wait_for_run, xcom

if TYPE_CHECKING:
    from tests.distributed.cluster import Cluster

pytestmark = pytest.mark.timeout(300, method="signal")

DAG_ID = "example_kaleyra_email_campaign"
TRIGGER = "airflow_provider_kaleyra_email.triggers.kaleyra_email.KaleyraEmailMessageDeliveredTrigger"
RECIPIENTS = [f"reader{n}@example.com" for n in range(1, 12)] + ["gone.bounce@example.com"]


def test_the_triggerer_resumes_the_deferred_wait_and_a_worker_runs_the_step_after(cluster: Cluster) -> None:
    assert cluster.s3 is not None
    run_id = trigger(cluster.api, DAG_ID, logical_date=None, conf={"recipients": RECIPIENTS})["dag_run_id"]
    deferred: list[dict[str, Any]] = []

    def observe(task_instances: list[dict[str, Any]]) -> None:
        deferred.extend(
            ti for ti in task_instances if ti["task_id"] == "wait_for_campaign" and ti["state"] == "deferred"
        )

    run = wait_for_run(cluster, DAG_ID, run_id, observe=observe, interval=0.5, timeout=240)

    states = task_states(cluster.api, DAG_ID, run_id)
    assert run["state"] == "success", states
    assert states == {"send_newsletter": ["success"], "summarize": ["success"], "wait_for_campaign": ["success"]}
    assert deferred, "the campaign's wait was never seen deferred"
    assert deferred[0]["trigger"]["classpath"] == TRIGGER
    (trigger_log,) = (cluster.root / "triggerer" / "logs").glob(f"dag_id={DAG_ID}/run_id={run_id}/**/*.trigger.*")
    assert "Trigger fired event" in trigger_log.read_text()  # in the triggerer's own directory
    ran_on = {task: cluster.workers_of(DAG_ID, run_id, task)[-1] for task in states}
    assert set(ran_on.values()) <= set(WORKERS), ran_on
    counts = xcom(cluster.api, DAG_ID, run_id, "wait_for_campaign")
    assert (counts["recipients"], counts["delivered"], counts["failed"]) == (12, 11, 1)
    (failures,) = cluster.s3.keys(BUCKET, "kaleyra/campaigns/")
    assert failures.endswith("/failures.jsonl")
    written = [json.loads(line) for line in cluster.s3.read(BUCKET, failures).decode().splitlines()]
    assert [(f["recipient"], f["status"]) for f in written] == [("gone.bounce@example.com", "BOUNCE")]
    assert xcom(cluster.api, DAG_ID, run_id, "summarize").startswith("Newsletter: 11 of 12 recipients have it")
    print(f"\ncampaign: tasks ran on {ran_on}; the wait was seen deferred {len(deferred)} times")
