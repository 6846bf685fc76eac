"""
Export every day's Kaleyra email logs and summary stats to object storage.

Each run exports one day of the account's time zone: the schedule is an interval timetable in
that zone, so a run's data interval is exactly that day, and the operators ask the API for it
(``from_date = to_date = that day``). A manual run without a logical date (Airflow 3's
``airflow dags trigger``) exports the last whole day before it was triggered. Statuses keep
changing after a day ends (late deliveries, opens), so each run also refreshes the day before
(``days_back=1``); re-exporting replaces the objects whole.

Set the Airflow Variable ``kaleyra_email_export_url`` to your lake (``s3://bucket/kaleyra``,
``gs://...``, ``file:///...``) and ``output_conn_id`` for its credentials.
"""

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

ACCOUNT_TIMEZONE = "UTC"  # the Kaleyra account's time zone (the connection extra "timezone")
EXPORT_URL = "{{ var.value.get('kaleyra_email_export_url', 'file:///tmp/kaleyra-email-export') }}"

with DAG(
    dag_id="example_kaleyra_email_daily_export",
    schedule=CronDataIntervalTimetable("0 0 * * *", timezone=ACCOUNT_TIMEZONE),
    start_date=datetime(2026, 1, 1, tzinfo=timezone.utc),
    catchup=False,
    max_active_runs=1,
    tags=["kaleyra", "example"],
) as dag:
    export_logs = KaleyraEmailFetchLogsOperator(
        task_id="export_logs",
        output_path=EXPORT_URL + "/logs/date={from_date}/logs.jsonl",
        outlets=[Asset("kaleyra_email_logs")],
    )

    refresh_previous_day = KaleyraEmailFetchLogsOperator(
        task_id="refresh_previous_day",
        days_back=1,
        output_path=EXPORT_URL + "/logs/date={from_date}/logs.jsonl",
    )

    export_stats = KaleyraEmailFetchSummaryStatsOperator(
        task_id="export_summary_stats",
        output_path=EXPORT_URL + "/summary_stats/date={from_date}/stats.csv",
        output_format="csv",
        outlets=[Asset("kaleyra_email_summary_stats")],
    )
