"""
Send a newsletter to many recipients, then wait for the whole campaign in one task.

The send returns one message id per recipient batch; the sensor takes the list, so one deferred
task waits for every recipient, however many there are (5,000 messages in flight cost about 50
requests per poll: the sensor lists the send window's logs instead of asking for each message).
A few bounces are normal for a campaign: with ``max_failed_fraction=0.1`` the wait succeeds once
90% of the recipients have the email, and fails once more than 10% bounced, were blocked or
suppressed. Every failure, with Kaleyra's error text, is written to ``output_path`` as JSON
Lines (for a suppression list); ``summarize`` reads the counts from XCom.

The failures go under the Airflow Variable ``kaleyra_email_export_url`` (required), with the
connection named by ``kaleyra_email_export_conn_id`` (empty: the store's default credentials):
``file://`` on one machine, object storage (``s3://``, ``gs://``) when tasks run on several
workers. The wait holds no worker while deferred; whichever worker is free runs ``summarize``.
The send is never retried (a retry would mail everyone again); the wait and ``summarize`` are.

Against the emulator (``python -m airflow_provider_kaleyra_email.testing``), an address
containing ``bounce``, ``block`` or ``suppress`` gets that fate::

    airflow dags test example_kaleyra_email_campaign \\
        -c '{"recipients": ["ann@example.com", "bob@example.com", "nobody.bounce@example.com"]}'
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta, timezone
from typing import Any

from airflow.providers.common.compat.sdk import DAG, Param, task

from airflow_provider_kaleyra_email.operators.kaleyra_email import KaleyraEmailSendOperator
from airflow_provider_kaleyra_email.sensors.kaleyra_email import KaleyraEmailMessageDeliveredSensor

#: Polling every 30 s on the triggerer costs nothing; the test suite polls faster against the emulator.
POKE_INTERVAL = float(os.environ.get("KALEYRA_EMAIL_EXAMPLE_POKE_INTERVAL", "30"))
EXPORT_URL = "{{ var.value.kaleyra_email_export_url }}"
EXPORT_CONN_ID = "{{ var.value.get('kaleyra_email_export_conn_id', '') }}"
RECIPIENTS = [f"reader{n}@example.com" for n in range(1, 10)] + ["gone.bounce@example.com"]


@task
def summarize(result: dict[str, Any]) -> str:
    """The step after the campaign reached its recipients: a line for the team channel."""
    line = (
        f"Newsletter: {result['delivered']:,} of {result['recipients']:,} recipients have it, "
        f"{result['failed']:,} failed (listed in {result['output_path']})."
    )
    print(line)
    return line


with DAG(
    dag_id="example_kaleyra_email_campaign",
    schedule=None,
    start_date=datetime(2026, 1, 1, tzinfo=timezone.utc),
    catchup=False,
    params={"recipients": Param(RECIPIENTS, type="array", items={"type": "string"}, minItems=1)},
    # ``to`` renders to the list itself, not to its text.
    render_template_as_native_obj=True,
    default_args={"retries": 2},
    tags=["kaleyra", "example"],
) as dag:
    send = KaleyraEmailSendOperator(
        task_id="send_newsletter",
        retries=0,
        from_email="news@shop.example.com",
        to="{{ params.recipients }}",
        subject="November news ({{ run_id }})",
        html_body="<p>What is new this month.</p>",
    )
    wait = KaleyraEmailMessageDeliveredSensor(
        task_id="wait_for_campaign",
        message_id=send.output,
        max_failed_fraction=0.1,
        search="news@shop.example.com",  # narrows the logs listing to this sender
        output_path=EXPORT_URL + "/campaigns/{{ run_id | replace(':', '_') }}/failures.jsonl",
        output_conn_id=EXPORT_CONN_ID,
        deferrable=True,
        poke_interval=POKE_INTERVAL,
        timeout=timedelta(hours=2),
    )
    summarize(wait.output)
