"""
The DAG of tests/integration/test_s3.py: both fetch operators writing to ``s3://`` through an
``aws`` connection, one task per output format.

Airflow 3's ``dag.test()`` runs a DAG only if a DAG bundle holds it: the tests add a bundle
whose one file imports ``dag`` from here (see ``bundle_file_text``).
"""

from __future__ import annotations

from datetime import datetime, timezone

from airflow.providers.common.compat.sdk import DAG

from airflow_provider_kaleyra_email.operators.kaleyra_email import (
    KaleyraEmailFetchLogsOperator,
    KaleyraEmailFetchSummaryStatsOperator,
)

try:
    from airflow.sdk import CronDataIntervalTimetable
except ImportError:  # Airflow 2
    from airflow.timetables.interval import CronDataIntervalTimetable

#: The ``aws`` connection the tasks write through; the tests set ``AIRFLOW_CONN_KALEYRA_S3``.
S3_CONN_ID = "kaleyra_s3"
#: The URL prefix of the run's objects, e.g. ``s3://lake/run-1``.
OUT = "{{ dag_run.conf['out'] }}"
FORMATS = ("jsonl", "csv", "parquet")
DAG_ID = "test_s3_export"


def logs_key(output_format: str, day: str) -> str:
    """Where ``logs_<format>`` writes, under the run's prefix."""
    return f"logs/date={day}/logs.{output_format}"


def stats_key(day: str) -> str:
    return f"stats/{day}.csv"


with DAG(
    DAG_ID,
    schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),
    start_date=datetime(2026, 1, 1, tzinfo=timezone.utc),
    catchup=False,
) as dag:
    for output_format in FORMATS:
        KaleyraEmailFetchLogsOperator(
            task_id=f"logs_{output_format}",
            output_path=f"{OUT}/{logs_key(output_format, '{from_date}')}",
            output_conn_id=S3_CONN_ID,
            output_format=output_format,
        )
    KaleyraEmailFetchSummaryStatsOperator(
        task_id="stats_csv",
        output_path=f"{OUT}/{stats_key('{from_date}')}",
        output_conn_id=S3_CONN_ID,
        output_format="csv",
    )


def bundle_file_text() -> str:
    """The one file of the tests' DAG bundle: Airflow parses it and finds ``dag`` (by its id)."""
    return (
        f"# An Airflow DAG bundle for tests/integration/test_s3.py: the DAG {DAG_ID!r}.\nfrom {__name__} import dag\n"
    )
