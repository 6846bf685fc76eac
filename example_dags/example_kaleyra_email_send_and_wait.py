"""
Send the report email, wait until it reached its recipients, then publish the report.

The send returns one message id per recipient batch, and the sensor is mapped over them. It is
deferrable: after one check on the worker it hands the wait to the triggerer, so no worker slot
is held while Kaleyra delivers. ``publish_report`` runs only once every message is delivered.

When a recipient bounces (or is blocked, or suppressed), its wait fails at once, without
spending retries, and names the recipient, the status and Kaleyra's error text;
``report_undelivered`` then runs and lists who did not get the report, and why.

The send is never retried (a retry after a lost worker could mail twice); the waits and the
steps after them are, on whichever worker is free.

Recipients come from the ``recipients`` param, so a run can choose them. Against the emulator
(``python -m airflow_provider_kaleyra_email.testing``), any address containing ``bounce``,
``block`` or ``suppress`` gets that fate::

    airflow dags test example_kaleyra_email_send_and_wait \\
        -c '{"recipients": ["cfo@example.com", "nobody.bounce@example.com"]}'
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta, timezone
from typing import Any

from airflow.providers.common.compat.sdk import DAG, Param, TriggerRule, task

from airflow_provider_kaleyra_email.delivery import MessageStatus
from airflow_provider_kaleyra_email.hooks.kaleyra_email import KaleyraEmailHook
from airflow_provider_kaleyra_email.operators.kaleyra_email import KaleyraEmailSendOperator
from airflow_provider_kaleyra_email.sensors.kaleyra_email import KaleyraEmailMessageDeliveredSensor

#: Kaleyra usually delivers within seconds; polling every 30 s on the triggerer costs nothing.
#: The environment variable lets the test suite and the demo poll faster against the emulator.
POKE_INTERVAL = float(os.environ.get("KALEYRA_EMAIL_EXAMPLE_POKE_INTERVAL", "30"))


@task
def publish_report(statuses: list[dict[str, str]]) -> list[str]:
    """The step that must not run before the email arrived; here it says who has it."""
    delivered = sorted(address for per_message in statuses for address in per_message)
    print(f"The report reached {', '.join(delivered)}; publishing it.")
    return delivered


@task(trigger_rule=TriggerRule.ONE_FAILED)
def report_undelivered(**context: Any) -> list[dict[str, str]]:
    """Runs when a wait failed: who did not get the report, and what Kaleyra said about it."""
    message_ids = context["ti"].xcom_pull(task_ids="send_report") or []
    hook = KaleyraEmailHook()
    undelivered = []
    for message_id in message_ids:
        for recipient in hook.get_message_stats(message_id)["recipients"]:
            status = MessageStatus.parse(recipient.get("status"))
            if status is not None and status.is_failed:
                undelivered.append(
                    {
                        "message_id": message_id,
                        "recipient": str(recipient.get("to")),
                        "status": status.value,
                        "error": str(recipient.get("error_message") or ""),
                    }
                )
    for entry in undelivered:
        print(f"Not delivered to {entry['recipient']}: {entry['status']} ({entry['error'] or 'no error text'})")
    return undelivered


with DAG(
    dag_id="example_kaleyra_email_send_and_wait",
    schedule=None,
    start_date=datetime(2026, 1, 1, tzinfo=timezone.utc),
    catchup=False,
    params={
        "recipients": Param(["reports@example.com"], type="array", items={"type": "string"}, minItems=1),
    },
    # ``to`` renders to the list itself, not to its text.
    render_template_as_native_obj=True,
    default_args={"retries": 2},
    tags=["kaleyra", "example"],
) as dag:
    send = KaleyraEmailSendOperator(
        task_id="send_report",
        retries=0,
        from_email="reports@shop.example.com",
        to="{{ params.recipients }}",
        subject="Your daily report ({{ run_id }})",
        html_body="<p>The daily report is ready.</p>",
    )
    wait = KaleyraEmailMessageDeliveredSensor.partial(
        task_id="wait_for_delivery",
        deferrable=True,
        poke_interval=POKE_INTERVAL,
        timeout=timedelta(hours=2),
    ).expand(message_id=send.output)
    publish_report(wait.output)
    wait >> report_undelivered()
