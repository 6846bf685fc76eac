"""
Backfill a long range of Kaleyra email logs: one mapped task per day.

Dynamic task mapping turns the range into independent tasks, which Airflow's Celery or
Kubernetes executors spread over workers, each shown under the day it exports
(``map_index_template``). Each day lands in its own object, so a failed day is retried alone
(``retries``: a worker lost mid-export is retried elsewhere) and a rerun replaces only what it
rewrites. Trigger it with ``{"first_day": ..., "last_day": ...}``.

Where the days go: the Airflow Variable ``kaleyra_email_export_url`` (required: a run fails
before any request without it) and ``kaleyra_email_export_conn_id``, the connection for that
store (empty: the store's default credentials). On one machine (LocalExecutor) a ``file://`` URL
works; with several workers it must be object storage (``s3://bucket/kaleyra``, ``gs://...``):
each worker would write to its own disk.

The account's rate limit is shared by every task that calls it: the tasks take a slot of the
Airflow pool ``kaleyra_email_api``, so at most ``slots x max_concurrency`` requests (the
connection extra, pages a task keeps in flight) are in flight across every worker and DAG. Each
takes at least Kaleyra's answer time, so size them as ``slots x max_concurrency <= limit x
answer time``: 2 slots x 2 pages for 20 requests a second at 0.25 s. Create the pool once:
``airflow pools set kaleyra_email_api 2 "Kaleyra Email API"`` (the scheduler leaves a task whose
pool does not exist unscheduled, with a warning in its log). See docs/deployment.md.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from typing import Any

from airflow.providers.common.compat.sdk import DAG, Param, task

from airflow_provider_kaleyra_email.operators.kaleyra_email import KaleyraEmailFetchLogsOperator

POOL = "kaleyra_email_api"
EXPORT_URL = "{{ var.value.kaleyra_email_export_url }}"
EXPORT_CONN_ID = "{{ var.value.get('kaleyra_email_export_conn_id', '') }}"


@task
def days_between(params: dict[str, Any]) -> list[dict[str, str]]:
    """One mapping per day, first to last inclusive."""
    first, last = date.fromisoformat(params["first_day"]), date.fromisoformat(params["last_day"])
    if first > last:
        raise ValueError(f"first_day={params['first_day']!r} is after last_day={params['last_day']!r}")
    days = [first + timedelta(days=n) for n in range((last - first).days + 1)]
    return [{"from_date": day.isoformat(), "to_date": day.isoformat()} for day in days]


with DAG(
    dag_id="example_kaleyra_email_backfill",
    schedule=None,
    start_date=datetime(2026, 1, 1, tzinfo=timezone.utc),
    catchup=False,
    params={
        "first_day": Param("2026-11-01", type="string", format="date"),
        "last_day": Param("2026-11-07", type="string", format="date"),
    },
    default_args={"retries": 2},  # after [core] default_task_retry_delay (5 minutes unless set)
    tags=["kaleyra", "example"],
) as dag:
    KaleyraEmailFetchLogsOperator.partial(
        task_id="export_day",
        output_path=EXPORT_URL + "/logs/date={from_date}/logs.jsonl",
        output_conn_id=EXPORT_CONN_ID,
        map_index_template="{{ task.from_date }}",
        pool=POOL,
    ).expand_kwargs(days_between())
