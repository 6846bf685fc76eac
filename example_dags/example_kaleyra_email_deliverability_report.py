"""
A daily deliverability report of the last 30 days, mailed to the people who look after email.

``KaleyraEmailDeliverabilityReportOperator`` writes one self-contained HTML page (charts
embedded, opens offline) and a PNG of its main chart beside it, to object storage. A small task
turns the operator's summary (rates, top failure reasons) into a short mail with the report's
address, and ``KaleyraEmailSendOperator`` sends it. Needs the ``report`` extra:
``pip install 'airflow-provider-kaleyra-email[report]'``.

Set the Airflow Variable ``kaleyra_email_export_url`` to your lake (``s3://bucket/kaleyra``;
``file:///...`` only when every worker sees the same disk, as on one machine) and
``kaleyra_email_export_conn_id`` to its connection (empty: the store's default credentials). The
report is retried; the mail is not (a retry after a lost worker could mail twice).
"""

from __future__ import annotations

import html
from datetime import datetime, timezone
from typing import Any

from airflow.providers.common.compat.sdk import DAG, Asset, task

from airflow_provider_kaleyra_email.operators.kaleyra_email import (
    KaleyraEmailDeliverabilityReportOperator,
    KaleyraEmailSendOperator,
)

try:
    from airflow.sdk import CronDataIntervalTimetable
except ImportError:  # Airflow 2
    from airflow.timetables.interval import CronDataIntervalTimetable

ACCOUNT_TIMEZONE = "UTC"  # the Kaleyra account's time zone (the connection extra "timezone")
EXPORT_URL = "{{ var.value.kaleyra_email_export_url }}"
EXPORT_CONN_ID = "{{ var.value.get('kaleyra_email_export_conn_id', '') }}"
REPORT_TO = ["deliverability@shop.example.com"]


@task(multiple_outputs=True)
def compose_mail(summary: dict[str, Any]) -> dict[str, str]:
    """A subject with the headline rates, and a short HTML body pointing at the full report."""

    def percent(rate: float | None) -> str:
        return "n/a" if rate is None else f"{rate:.1%}"

    rates = summary["rates"]
    period = f"{summary['from_date']} to {summary['to_date']}"
    items = "".join(f"<li>{name}: {percent(rate)}</li>" for name, rate in rates.items())
    reasons = "".join(
        f"<li>{r['status']}: {html.escape(r['reason'])} ({r['count']:,})</li>" for r in summary["top_reasons"][:3]
    )
    return {
        "subject": f"Email deliverability {period}: {percent(rates['delivered'])} delivered",
        "html_body": (
            f"<p>Email deliverability, {period} ({summary['timezone']}).</p><ul>{items}</ul>"
            f"<p>Top failure reasons:</p><ul>{reasons or '<li>none</li>'}</ul>"
            f"<p>Full report: {html.escape(summary['path'])} (chart: {html.escape(summary['png_path'])})</p>"
        ),
    }


with DAG(
    dag_id="example_kaleyra_email_deliverability_report",
    schedule=CronDataIntervalTimetable("0 0 * * *", timezone=ACCOUNT_TIMEZONE),
    start_date=datetime(2026, 1, 1, tzinfo=timezone.utc),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 2},
    tags=["kaleyra", "example"],
) as dag:
    report = KaleyraEmailDeliverabilityReportOperator(
        task_id="deliverability_report",
        output_path=EXPORT_URL + "/reports/deliverability-{to_date}.html",
        output_conn_id=EXPORT_CONN_ID,
        outlets=[Asset("kaleyra_email_deliverability_report")],
    )
    mail = compose_mail(report.output)
    KaleyraEmailSendOperator(
        task_id="mail_report",
        retries=0,
        from_email="reports@shop.example.com",
        to=REPORT_TO,
        subject=mail["subject"],
        html_body=mail["html_body"],
    )
