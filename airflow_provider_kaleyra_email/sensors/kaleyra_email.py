"""The sensor that waits until a Kaleyra email reached its recipients."""

from __future__ import annotations

import time
from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import (
    AirflowFailException,
    AirflowSensorTimeout,
    AirflowSkipException,
    BaseSensorOperator,
    PokeReturnValue,
    conf,
)

from airflow_provider_kaleyra_email import validation
from airflow_provider_kaleyra_email.delivery import (
    DEFAULT_DELIVERED_STATUSES,
    DEFAULT_FAILED_STATUSES,
    DEFAULT_NOT_FOUND_GRACE,
    DeliveryOutcome,
    DeliveryRule,
    MessageStatus,
)
from airflow_provider_kaleyra_email.exceptions import KaleyraEmailAPIError, KaleyraEmailWaitError
from airflow_provider_kaleyra_email.hooks.kaleyra_email import KaleyraEmailHook
from airflow_provider_kaleyra_email.triggers.kaleyra_email import KaleyraEmailMessageDeliveredTrigger

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from airflow.sdk import Context

#: Airflow's deferral timeout only backs up the trigger, which reports the timeout itself after a
#: last check at the deadline; that check may take a request timeout, and this much to spare.
DEFERRAL_TIMEOUT_MARGIN = 60.0


class KaleyraEmailMessageDeliveredSensor(BaseSensorOperator):
    """
    Wait until a Kaleyra message reached its recipients; return every recipient's status.

    Each poke reads ``stats/<message id>`` once (no retries: the poke interval is the backoff, and a
    poke lasts at most about one request ``timeout``). The wait succeeds when the chosen recipients
    reached a delivered status, and returns ``{recipient: status}`` for every recipient (XCom). It
    fails at once, with ``AirflowFailException`` so that no retry is spent, when a chosen recipient
    reaches a failed status, naming the recipient, the status and Kaleyra's error text;
    ``soft_fail=True`` makes that a skip. A failure worth another try (429, 5xx, timeout, dropped
    connection) is "not yet", logged as a warning: ``timeout`` bounds the wait. 400, 401 and 403
    end it at once. The rule is :class:`~airflow_provider_kaleyra_email.delivery.DeliveryRule`.

    With ``deferrable=True`` it pokes once, then hands the wait to
    :class:`~airflow_provider_kaleyra_email.triggers.kaleyra_email.KaleyraEmailMessageDeliveredTrigger`,
    which checks once more at the deadline before it reports a timeout.

    A 404 is "not visible yet" for ``not_found_grace`` seconds from the start of the wait: this try's
    first poke in ``poke`` and deferrable mode (the trigger is given that time). In ``reschedule``
    mode, the instant Airflow's own ``timeout`` counts from: ``ti.get_first_reschedule_date()`` on
    Airflow 3, the task instance's ``start_date`` (the try's first poke) on 2.11. Where neither is
    known, the current poke: a 404 then waits until ``timeout`` rather than failing early.

    :param message_id: the message to wait for (templated), as
        :class:`~airflow_provider_kaleyra_email.operators.kaleyra_email.KaleyraEmailSendOperator`
        returns it; map over that operator's output for a send with several recipient batches.
    :param recipients: the recipients to wait for (templated; an address or a list). Default: all
        of the message's recipients.
    :param require: ``"all"`` (default): every chosen recipient must be delivered, and one failing
        fails the wait. ``"any"``: one delivered recipient is enough, and the wait fails only when
        every chosen recipient has failed.
    :param delivered_statuses: statuses that count as delivered (default ``DELIVERED``, ``OPEN``;
        ``["OPEN"]`` waits until the mail is opened).
    :param failed_statuses: statuses that end the wait as failed (default ``BOUNCE``, ``BLOCKED``,
        ``FAILED``, ``SUPPRESSED``). Any other status is still in flight.
    :param not_found_grace: seconds (or a ``timedelta``) from the start of the wait during which
        HTTP 404 means "not visible yet", not a wrong id (default 120).
    :param max_consecutive_errors: ignored, and kept so that DAGs which pass it still load: failed
        polls are no longer counted, ``timeout`` alone bounds a wait on a failing API.
    :param kaleyra_email_conn_id: the Kaleyra Email connection (templated).
    :param deferrable: wait on the triggerer instead of a worker (default: Airflow's
        ``[operators] default_deferrable``).
    """

    template_fields: Sequence[str] = ("message_id", "recipients", "kaleyra_email_conn_id")
    template_fields_renderers = {"recipients": "json"}
    ui_color = "#e8f1fb"

    def __init__(
        self,
        *,
        message_id: str,
        recipients: str | list[str] | None = None,
        require: str = "all",
        delivered_statuses: Iterable[str | MessageStatus] = DEFAULT_DELIVERED_STATUSES,
        failed_statuses: Iterable[str | MessageStatus] = DEFAULT_FAILED_STATUSES,
        not_found_grace: float | timedelta = DEFAULT_NOT_FOUND_GRACE,
        max_consecutive_errors: int | None = None,
        kaleyra_email_conn_id: str = KaleyraEmailHook.default_conn_name,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.message_id = message_id
        self.recipients = recipients
        self.kaleyra_email_conn_id = kaleyra_email_conn_id
        self.deferrable = deferrable
        self.max_consecutive_errors = max_consecutive_errors
        # What is not templated is checked at parse time, the rest once rendered; neither sends a request.
        rule = DeliveryRule(
            require=require,
            delivered_statuses=delivered_statuses,
            failed_statuses=failed_statuses,
            not_found_grace=not_found_grace,
        )
        self.require, self.not_found_grace = rule.require, rule.not_found_grace
        self.delivered_statuses = sorted(status.value for status in rule.delivered)
        self.failed_statuses = sorted(status.value for status in rule.failed)
        if not self.poke_interval > 0:
            raise ValueError(f"poke_interval={self.poke_interval!r} must be positive: every poke is a request.")
        self._rule: DeliveryRule | None = None
        self._started_at = 0.0

    @cached_property
    def hook(self) -> KaleyraEmailHook:
        """Return the hook; one attempt per request, so that a poke lasts about one request timeout."""
        return KaleyraEmailHook(self.kaleyra_email_conn_id, max_retries=0)

    def execute(self, context: Context) -> Any:
        """Poke until done (``poke``, ``reschedule``); deferrable, poke once, then defer to the trigger."""
        rule = self._start(context)
        if not self.deferrable:
            return super().execute(context)
        poked = self.poke(context)
        if poked:
            return poked.xcom_value
        end_time = self._started_at + self.timeout
        trigger = KaleyraEmailMessageDeliveredTrigger(
            message_id=self.message_id,
            kaleyra_email_conn_id=self.kaleyra_email_conn_id,
            **rule.serialize(),
            poke_interval=self.poke_interval,
            started_at=self._started_at,
            end_time=end_time,
            # This poke just happened: the trigger's first poll is one interval later.
            first_poll_at=time.time() + self.poke_interval,
        )
        self.log.info("Deferring the wait for message %s to the triggerer.", self.message_id)
        backstop = max(0.0, end_time - time.time()) + self.hook.config.timeout + DEFERRAL_TIMEOUT_MARGIN
        self.defer(trigger=trigger, method_name="execute_complete", timeout=timedelta(seconds=backstop))

    def poke(self, context: Context) -> PokeReturnValue:
        """Read the message's statuses once; done with them (XCom), not yet, or raise what the end means."""
        rule = self._rule or self._start(context)
        try:
            outcome = rule.judge(self.message_id, self.hook.get_message_stats(self.message_id))
        except KaleyraEmailAPIError as error:
            outcome = rule.judge_error(self.message_id, error, waited=time.time() - self._started_at)
        if not outcome.done:
            self.log.info("Message %s: %s.", self.message_id, outcome.message)
            return PokeReturnValue(is_done=False)
        return PokeReturnValue(is_done=True, xcom_value=self._finish(outcome))

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> dict[str, str]:
        """Return the statuses when the trigger's event says delivered; raise what it means otherwise."""
        return self._finish(DeliveryOutcome.from_event(event))

    def _start(self, context: Context) -> DeliveryRule:
        """Check the rendered arguments, before any request, and note when the wait began."""
        validation.message_id(self.message_id)
        self._rule = DeliveryRule(
            recipients=self.recipients,
            require=self.require,
            delivered_statuses=self.delivered_statuses,
            failed_statuses=self.failed_statuses,
            not_found_grace=self.not_found_grace,
        )
        self._started_at = time.time()
        ti: Any = context.get("ti")
        if self.reschedule and not self.deferrable and ti is not None:
            getter = getattr(ti, "get_first_reschedule_date", None)
            first = getter(context) if callable(getter) else getattr(ti, "start_date", None)
            self._started_at = first.timestamp() if first is not None else self._started_at
        return self._rule

    def _finish(self, outcome: DeliveryOutcome) -> dict[str, str]:
        """Return the statuses for a success; raise the exception that any other end of the wait means."""
        skip = self.soft_fail or bool(getattr(self, "never_fail", False))
        if outcome.status == "success":
            self.log.info("%s", outcome.message)
            return dict(outcome.statuses or {})
        if outcome.status in ("failure", "timeout") and skip:
            raise AirflowSkipException(f"{outcome.message} Skipped: soft_fail is set.")
        if outcome.status == "failure":
            raise AirflowFailException(outcome.message)
        if outcome.status == "timeout":
            raise AirflowSensorTimeout(outcome.message)
        raise KaleyraEmailWaitError(outcome.message)
