"""
The backfill example over 14 days on two Celery workers, sharing one account's rate limit through
the ``kaleyra_email_api`` pool; the connection and the lake's Variables reach the workers through
their environment only.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import TYPE_CHECKING

import pytest

from tests.distributed.cluster import (
    BACKFILL_DAYS,
    BUCKET,
    LATENCY_SECONDS,
    MAX_CONCURRENCY,
    POOL_SLOTS,
    REQUESTS_PER_SECOND,
    WORKERS,
)
from tests.system.airflow_api import task_states, trigger, wait_for_run

if TYPE_CHECKING:
    from tests.distributed.cluster import Cluster

pytestmark = pytest.mark.timeout(400, method="signal")

DAG_ID = "example_kaleyra_email_backfill"


def busiest_second(moments: list[float]) -> int:
    """The most requests that arrived within any one second."""
    moments = sorted(moments)
    most, start = 0, 0
    for end, moment in enumerate(moments):
        while moment - moments[start] >= 1.0:
            start += 1
        most = max(most, end - start + 1)
    return most


def test_fourteen_days_on_two_workers_each_once_on_s3_under_the_account_s_rate_limit(cluster: Cluster) -> None:
    assert cluster.kaleyra is not None
    assert cluster.s3 is not None
    first_request = len(cluster.kaleyra.requests)
    conf = {"first_day": BACKFILL_DAYS[0].isoformat(), "last_day": BACKFILL_DAYS[-1].isoformat()}

    run_id = trigger(cluster.api, DAG_ID, logical_date=None, conf=conf)["dag_run_id"]
    run = wait_for_run(cluster, DAG_ID, run_id, timeout=360)

    states = task_states(cluster.api, DAG_ID, run_id)
    assert run["state"] == "success", states
    assert states == {"days_between": ["success"], "export_day": ["success"] * 14}
    keys = cluster.s3.keys(BUCKET, "kaleyra/")
    assert keys == [f"kaleyra/logs/date={day}/logs.jsonl" for day in BACKFILL_DAYS]  # no temporary, no other day
    dataset = cluster.kaleyra.dataset
    for day in BACKFILL_DAYS:
        written = cluster.s3.read(BUCKET, f"kaleyra/logs/date={day}/logs.jsonl").decode().splitlines()
        assert [json.loads(line) for line in written] == list(dataset.expected_logs(day, day)), day
    workers = cluster.workers_of(DAG_ID, run_id, "export_day")
    assert set(workers.values()) == set(WORKERS), workers

    requests = [r for r in list(cluster.kaleyra.requests)[first_request:] if r.path.endswith("/email/logs")]
    statuses = Counter(r.status for r in requests)
    per_second = busiest_second([r.at for r in requests])
    span = max(r.at for r in requests) - min(r.at for r in requests)
    print(
        f"\nbackfill of 14 days, pool {POOL_SLOTS} slots x max_concurrency {MAX_CONCURRENCY}, "
        f"{LATENCY_SECONDS:g} s answers, limit {REQUESTS_PER_SECOND:g}/s: {len(requests)} log requests in "
        f"{span:.1f} s, answers {dict(statuses)}, busiest second {per_second} requests; "
        f"tasks per worker {dict(Counter(workers.values()))}"
    )
    assert statuses[429] <= len(BACKFILL_DAYS), statuses  # bounded: a few bursts at most, not a storm
    assert set(statuses) <= {200, 429}, statuses


def test_no_connection_or_variable_is_stored_where_the_scheduler_reads(cluster: Cluster) -> None:
    """The workers found the Kaleyra and lake connections in their own environment (a secrets backend's job)."""
    assert cluster.api.get("/api/v2/connections").raise_for_status().json()["total_entries"] == 0
    assert cluster.api.get("/api/v2/variables").raise_for_status().json()["total_entries"] == 0
    assert cluster.query("SELECT conn_id FROM connection") == []
    for name in ("scheduler", "api-server", "dag-processor"):
        assert not [key for key in cluster.service_envs[name] if key.startswith(("AIRFLOW_CONN_", "AIRFLOW_VAR_"))]
    for name in WORKERS:
        assert "AIRFLOW_CONN_KALEYRA_EMAIL_DEFAULT" in cluster.service_envs[name]
