"""A DAG for tests: send one email. Recipients come from ``dag_run.conf``."""

from __future__ import annotations

from datetime import datetime, timezone

from airflow.providers.common.compat.sdk import DAG

from airflow_provider_kaleyra_email.operators.kaleyra_email import KaleyraEmailSendOperator

with DAG(
    "test_send",
    schedule=None,
    start_date=datetime(2026, 1, 1, tzinfo=timezone.utc),
    render_template_as_native_obj=True,
) as dag:
    KaleyraEmailSendOperator(
        task_id="send",
        from_email="reports@shop.example.com",
        to="{{ dag_run.conf['to'] }}",
        subject="Report for {{ ds }}",
        html_body="<p>Done</p>",
    )
