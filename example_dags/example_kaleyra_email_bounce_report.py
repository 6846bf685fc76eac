"""
A daily bounce and block report: the rows reach a downstream task through XCom.

``search`` terms must all match, so bounces and blocks are two small fetches. The report task
counts them by recipient domain and fails (so your alerting fires) when there are more than
``max_failed_deliveries`` of them.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timezone
from typing import Any

from airflow.providers.common.compat.sdk import DAG, AirflowFailException, Param, task

from airflow_provider_kaleyra_email.operators.kaleyra_email import KaleyraEmailFetchLogsOperator

try:
    from airflow.sdk import CronDataIntervalTimetable
except ImportError:  # Airflow 2
    from airflow.timetables.interval import CronDataIntervalTimetable


@task
def report(bounced: list[dict[str, Any]], blocked: list[dict[str, Any]], params: dict[str, Any]) -> dict[str, Any]:
    """Count failed deliveries by recipient domain; fail when there are too many."""
    domains = Counter(
        address.rsplit("@", 1)[-1] for row in [*bounced, *blocked] for address in row["to_mail"].split(",")
    )
    summary = {"bounces": len(bounced), "blocks": len(blocked), "top_domains": dict(domains.most_common(5))}
    print(f"Failed deliveries: {summary}")
    if len(bounced) + len(blocked) > params["max_failed_deliveries"]:
        raise AirflowFailException(
            f"{len(bounced)} bounces and {len(blocked)} blocks, more than {params['max_failed_deliveries']}: {summary}"
        )
    return summary


with DAG(
    dag_id="example_kaleyra_email_bounce_report",
    schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),
    start_date=datetime(2026, 1, 1, tzinfo=timezone.utc),
    catchup=False,
    params={"max_failed_deliveries": Param(1_000, type="integer", minimum=0)},
    default_args={"retries": 2},  # the report's verdict is final: it raises AirflowFailException
    tags=["kaleyra", "example"],
) as dag:
    bounces = KaleyraEmailFetchLogsOperator(task_id="fetch_bounces", search="BOUNCE", max_xcom_rows=5_000)
    blocks = KaleyraEmailFetchLogsOperator(task_id="fetch_blocks", search="BLOCKED", max_xcom_rows=5_000)
    report(bounces.output, blocks.output)
