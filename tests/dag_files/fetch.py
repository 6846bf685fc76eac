"""A DAG for tests: both fetch operators, in XCom mode and into each output format."""

from __future__ import annotations

from datetime import datetime, timezone

from airflow.providers.common.compat.sdk import DAG, Asset

from airflow_provider_kaleyra_email.operators.kaleyra_email import (
    KaleyraEmailFetchLogsOperator,
    KaleyraEmailFetchSummaryStatsOperator,
)

try:
    from airflow.sdk import CronDataIntervalTimetable
except ImportError:  # Airflow 2
    from airflow.timetables.interval import CronDataIntervalTimetable

OUT = "{{ dag_run.conf['out'] }}"
LOGS_ASSET = Asset("kaleyra_email_test_logs")

with DAG(
    "test_fetch",
    schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),
    start_date=datetime(2026, 1, 1, tzinfo=timezone.utc),
    catchup=False,
) as dag:
    KaleyraEmailFetchLogsOperator(task_id="logs_xcom", max_xcom_rows=20_000)
    KaleyraEmailFetchSummaryStatsOperator(task_id="stats_xcom")
    for output_format in ("jsonl", "csv", "parquet"):
        KaleyraEmailFetchLogsOperator(
            task_id=f"logs_{output_format}",
            output_path=f"{OUT}/logs/date={{from_date}}/logs.{output_format}",
            output_format=output_format,
            outlets=[LOGS_ASSET] if output_format == "jsonl" else [],
        )
        KaleyraEmailFetchSummaryStatsOperator(
            task_id=f"stats_{output_format}",
            output_path=f"{OUT}/stats/{{from_date}}.{output_format}",
            output_format=output_format,
        )
