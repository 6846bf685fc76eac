"""
Export every day's Kaleyra email logs and summary stats to object storage.

A run exports the account-local days that ended within its data interval. The schedule here is
daily at midnight in the account's time zone, so a run over ``[D, D+1)`` exports ``D``, as soon as
``D`` is over; in another zone it exports the account's day that ended inside the interval
(``docs/operators.md``, "Which days"). A manual run without a logical date (Airflow 3's
``airflow dags trigger``) exports the last whole day before it. Statuses keep changing after a day
ends (late deliveries, opens), so each run also refreshes the day before (``days_back=1``);
re-exporting replaces the objects whole.

To re-export a chosen day, give it as ``day``: the trigger form's field, or
``airflow dags trigger example_kaleyra_email_daily_export -c '{"day": "2026-11-20"}'``; the run
exports that day and refreshes the one before it.

Set the Airflow Variable ``kaleyra_email_export_url`` to your lake (``s3://bucket/kaleyra``,
``gs://...``; the tasks fail before any request without it) and ``kaleyra_email_export_conn_id`` to
the connection for it (an ``aws`` connection for ``s3://``; empty: the store's default credentials).
On one machine a ``file:///...`` lake works; with several workers (Celery, Kubernetes) each would
write to its own disk, so use object storage (``docs/deployment.md``). ``retries``: a worker lost
mid-export is retried elsewhere, and the rerun replaces the object whole.
"""

from __future__ import annotations

from datetime import datetime, timezone

from airflow.providers.common.compat.sdk import DAG, Asset, Param

from airflow_provider_kaleyra_email.operators.kaleyra_email import (
    KaleyraEmailFetchLogsOperator,
    KaleyraEmailFetchSummaryStatsOperator,
)

try:
    from airflow.sdk import CronDataIntervalTimetable
except ImportError:  # Airflow 2
    from airflow.timetables.interval import CronDataIntervalTimetable

ACCOUNT_TIMEZONE = "UTC"  # the Kaleyra account's time zone (the connection extra "timezone")
EXPORT_URL = "{{ var.value.kaleyra_email_export_url }}"
EXPORT_CONN_ID = "{{ var.value.get('kaleyra_email_export_conn_id', '') }}"
DAY = "{{ params.day or '' }}"  # the chosen day; blank: the run's own days

with DAG(
    dag_id="example_kaleyra_email_daily_export",
    schedule=CronDataIntervalTimetable("0 0 * * *", timezone=ACCOUNT_TIMEZONE),
    start_date=datetime(2026, 1, 1, tzinfo=timezone.utc),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 2},
    params={
        "day": Param(
            None,
            type=["null", "string"],
            format="date",
            description="Re-export this day (YYYY-MM-DD, the account's time zone) instead of the run's own.",
        )
    },
    tags=["kaleyra", "example"],
) as dag:
    export_logs = KaleyraEmailFetchLogsOperator(
        task_id="export_logs",
        from_date=DAY,
        to_date=DAY,
        output_path=EXPORT_URL + "/logs/date={from_date}/logs.jsonl",
        output_conn_id=EXPORT_CONN_ID,
        outlets=[Asset("kaleyra_email_logs")],
    )

    refresh_previous_day = KaleyraEmailFetchLogsOperator(
        task_id="refresh_previous_day",
        from_date=DAY,
        to_date=DAY,
        days_back=1,
        output_path=EXPORT_URL + "/logs/date={from_date}/logs.jsonl",
        output_conn_id=EXPORT_CONN_ID,
    )

    export_stats = KaleyraEmailFetchSummaryStatsOperator(
        task_id="export_summary_stats",
        from_date=DAY,
        to_date=DAY,
        output_path=EXPORT_URL + "/summary_stats/date={from_date}/stats.csv",
        output_conn_id=EXPORT_CONN_ID,
        output_format="csv",
        outlets=[Asset("kaleyra_email_summary_stats")],
    )
