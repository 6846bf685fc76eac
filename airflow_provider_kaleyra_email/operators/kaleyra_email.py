"""Operators for the Kaleyra Email API."""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import BaseOperator

from airflow_provider_kaleyra_email.hooks.kaleyra_email import KaleyraEmailHook

if TYPE_CHECKING:
    from collections.abc import Sequence

    from airflow.sdk import Context


class KaleyraEmailSendOperator(BaseOperator):
    """
    Send an email through Kaleyra and return its message ids (XCom), one per recipient batch.

    The ids are what :class:`~airflow_provider_kaleyra_email.sensors.kaleyra_email.KaleyraEmailMessageDeliveredSensor`
    waits on, e.g. ``KaleyraEmailMessageDeliveredSensor.partial(...).expand(message_id=send.output)``.

    A send is not idempotent: the hook repeats it only when Kaleyra cannot have acted on it.
    Airflow's own task ``retries`` would send again, so think before giving this task retries.

    :param from_email: the sender; its domain must be registered with Kaleyra.
    :param to: one recipient or a list of them.
    :param subject: the subject line.
    :param html_body: the HTML body; give it, ``text_body``, or both.
    :param text_body: the plain-text body.
    :param message_type: Kaleyra's ``type`` of the message, sent only when given.
    :param kaleyra_email_conn_id: the Kaleyra Email connection.
    """

    template_fields: Sequence[str] = ("from_email", "to", "subject", "html_body", "text_body", "message_type")
    template_fields_renderers = {"html_body": "html", "to": "json"}
    ui_color = "#e8f1fb"

    def __init__(
        self,
        *,
        from_email: str,
        to: str | list[str],
        subject: str,
        html_body: str | None = None,
        text_body: str | None = None,
        message_type: str | None = None,
        kaleyra_email_conn_id: str = KaleyraEmailHook.default_conn_name,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.from_email = from_email
        self.to = to
        self.subject = subject
        self.html_body = html_body
        self.text_body = text_body
        self.message_type = message_type
        self.kaleyra_email_conn_id = kaleyra_email_conn_id

    @cached_property
    def hook(self) -> KaleyraEmailHook:
        return KaleyraEmailHook(self.kaleyra_email_conn_id)

    def execute(self, context: Context) -> list[str]:
        return self.hook.send_email(
            from_email=self.from_email,
            to=self.to,
            subject=self.subject,
            html_body=self.html_body,
            text_body=self.text_body,
            message_type=self.message_type,
        )
