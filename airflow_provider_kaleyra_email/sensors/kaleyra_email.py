"""The sensor that waits until a Kaleyra email reached its recipients."""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any

import msgspec
from airflow.providers.common.compat.sdk import (
    AirflowFailException,
    AirflowSensorTimeout,
    AirflowSkipException,
    BaseSensorOperator,
    PokeReturnValue,
    conf,
)

from airflow_provider_kaleyra_email import output, validation
from airflow_provider_kaleyra_email.campaign import CampaignWait
from airflow_provider_kaleyra_email.delivery import (
    DEFAULT_DELIVERED_STATUSES,
    DEFAULT_FAILED_STATUSES,
    DEFAULT_NOT_FOUND_GRACE,
    DeliveryOutcome,
    DeliveryRule,
    MessageStatus,
)
from airflow_provider_kaleyra_email.exceptions import (
    KaleyraEmailAPIError,
    KaleyraEmailWaitError,
)
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
    Wait until a Kaleyra message, or a list of them, reached its recipients.

    One message: succeed when the chosen recipients reached a delivered status, returning
    ``{recipient: status}``; fail at once (``AirflowFailException``, a skip with ``soft_fail``) when
    one reached a failed status. A list: one wait counted by recipient, with thresholds
    (:class:`~airflow_provider_kaleyra_email.campaign.CampaignWait`), returning the counts and the
    failures. A poll that failed in a way worth another try is "not yet": ``timeout`` bounds the wait.
    With ``deferrable=True`` it pokes once, then defers to
    :class:`~airflow_provider_kaleyra_email.triggers.kaleyra_email.KaleyraEmailMessageDeliveredTrigger`.
    The whole behaviour, with the start of the wait in each mode: ``docs/sensor.md``.

    :param message_id: the message to wait for, or a list of them (templated), as
        :class:`~airflow_provider_kaleyra_email.operators.kaleyra_email.KaleyraEmailSendOperator`
        returns them (``message_id=send.output``).
    :param recipients: the recipients of one message to wait for (templated; an address or a
        list). Default: all of the message's recipients. Not for a list of ids.
    :param require: ``"all"`` (default): every chosen recipient must be delivered, and one failing
        fails the wait. ``"any"``: one delivered recipient is enough, and the wait fails only when
        every chosen recipient has failed. Not for a list of ids: see the fractions.
    :param min_delivered_fraction: for a list of ids, the share of recipients that must be
        delivered (default: ``1 - max_failed_fraction``, else 1).
    :param max_failed_fraction: for a list of ids, the share of recipients that may fail
        (default: ``1 - min_delivered_fraction``, else 0: one failure fails the wait).
    :param search: for a list of ids, terms that narrow the logs listing (templated; all must
        match), such as the sender or the template name.
    :param max_failures_in_xcom: for a list of ids, the most failures in the XCom result (default 100).
    :param output_path: for a list of ids, an object URL (templated) to write every failure to,
        as JSON Lines, when the wait ends.
    :param output_conn_id: the connection of ``output_path``'s file system (templated).
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

    template_fields: Sequence[str] = (
        "message_id",
        "recipients",
        "search",
        "output_path",
        "output_conn_id",
        "kaleyra_email_conn_id",
    )
    template_fields_renderers = {"message_id": "json", "recipients": "json"}
    ui_color = "#e8f1fb"

    def __init__(
        self,
        *,
        message_id: str | list[str],
        recipients: str | list[str] | None = None,
        require: str = "all",
        min_delivered_fraction: float | None = None,
        max_failed_fraction: float | None = None,
        search: str | list[str] | None = None,
        max_failures_in_xcom: int = 100,
        output_path: str | None = None,
        output_conn_id: str | None = None,
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
        self.min_delivered_fraction, self.max_failed_fraction = min_delivered_fraction, max_failed_fraction
        self.search, self.output_path, self.output_conn_id = search, output_path, output_conn_id
        self.max_failures_in_xcom = validation.int_in_range(
            max_failures_in_xcom, parameter="max_failures_in_xcom", low=0, high=10_000
        )
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
        self._campaign: CampaignWait | None = None
        self._failures_path: Any = None
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
        many: dict[str, Any] = {}
        if self._campaign is not None:
            many = {**self._campaign.thresholds(), "search": self._campaign.search}
        trigger = KaleyraEmailMessageDeliveredTrigger(
            message_id=self._campaign.message_ids if self._campaign is not None else self.message_id,
            kaleyra_email_conn_id=self.kaleyra_email_conn_id,
            **rule.serialize(),
            **many,
            poke_interval=self.poke_interval,
            started_at=self._started_at,
            end_time=end_time,
            # This poke just happened: the trigger's first poll is one interval later.
            first_poll_at=time.time() + self.poke_interval,
        )
        what = self._campaign.label if self._campaign is not None else f"message {self.message_id}"
        self.log.info("Deferring the wait for %s to the triggerer.", what)
        backstop = max(0.0, end_time - time.time()) + self.hook.config.timeout + DEFERRAL_TIMEOUT_MARGIN
        self.defer(trigger=trigger, method_name="execute_complete", timeout=timedelta(seconds=backstop))

    def poke(self, context: Context) -> PokeReturnValue:
        """Read the statuses once; done with them (XCom), not yet, or raise what the end means."""
        rule = self._rule or self._start(context)
        if self._campaign is not None:
            outcome = self._campaign.poll(self.hook)
        else:
            message_id = str(self.message_id)
            try:
                outcome = rule.judge(message_id, self.hook.get_message_stats(message_id))
            except KaleyraEmailAPIError as error:
                outcome = rule.judge_error(message_id, error, waited=time.time() - self._started_at)
        deadline = not outcome.done and not self.deferrable and time.time() - self._started_at >= self.timeout
        if self._campaign is not None and (outcome.done or deadline):
            outcome = self._campaign.detail_failures(self.hook)
        if deadline and not outcome.done:
            # This poke reached the deadline: it reports the timeout with what it saw (and a list's
            # failures), as the trigger does, before Airflow's own check would with neither.
            outcome = outcome.timed_out(self.timeout)
        if not outcome.done:
            self.log.info("%s: %s.", self._what, outcome.message)
            return PokeReturnValue(is_done=False)
        return PokeReturnValue(is_done=True, xcom_value=self._finish(outcome))

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> dict[str, Any]:
        """Return the statuses when the trigger's event says delivered; raise what it means otherwise."""
        self._start(context)
        return self._finish(DeliveryOutcome.from_event(event))

    @property
    def _what(self) -> str:
        return self._campaign.label if self._campaign is not None else f"Message {self.message_id}"

    def _start(self, context: Context) -> DeliveryRule:
        """Check the rendered arguments, before any request, and note when the wait began."""
        many = isinstance(self.message_id, list | tuple)
        thresholds = (self.min_delivered_fraction, self.max_failed_fraction)
        if not many and thresholds != (None, None):
            raise ValueError(
                "min_delivered_fraction and max_failed_fraction are for a list of message ids; "
                f"message_id={self.message_id!r} is one (use recipients= and require= for its recipients)."
            )
        if many and (self.recipients is not None or self.require != "all"):
            raise ValueError(
                "recipients= and require= choose among one message's recipients; with a list of message "
                "ids every recipient counts: use min_delivered_fraction or max_failed_fraction instead."
            )
        if not many:
            validation.message_id(self.message_id)
        self._rule = DeliveryRule(
            recipients=None if many else self.recipients,
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
            self._started_at = first.timestamp() if isinstance(first, datetime) else self._started_at
        self._campaign = None
        if many:
            self._campaign = CampaignWait(
                self.message_id,
                self._rule,
                min_delivered_fraction=self.min_delivered_fraction,
                max_failed_fraction=self.max_failed_fraction,
                started_at=self._started_at,
                search=validation.search_terms(self.search),
            )
            if self.output_path:
                self._failures_path = output.object_path(
                    self.output_path,
                    conn_id=self.output_conn_id,
                    from_date=None,
                    to_date=None,
                    example="failures.jsonl",
                )
        return self._rule

    def _finish(self, outcome: DeliveryOutcome) -> dict[str, Any]:
        """Return the result of a success; raise the exception that any other end of the wait means."""
        skip = self.soft_fail or bool(getattr(self, "never_fail", False))
        result = self._campaign_result(outcome) if outcome.counts is not None else dict(outcome.statuses or {})
        if outcome.status == "success":
            self.log.info("%s", outcome.message)
            return result
        if outcome.status in ("failure", "timeout") and skip:
            raise AirflowSkipException(f"{outcome.message} Skipped: soft_fail is set.")
        if outcome.status == "failure":
            raise AirflowFailException(outcome.message)
        if outcome.status == "timeout":
            raise AirflowSensorTimeout(outcome.message)
        raise KaleyraEmailWaitError(outcome.message)

    def _campaign_result(self, outcome: DeliveryOutcome) -> dict[str, Any]:
        """Return a list's XCom result; write every failure to ``output_path``, if one is given."""
        failures = [dict(failure) for failure in outcome.failures]
        counts = dict(outcome.counts or {})
        written = None
        if self.output_path and outcome.status != "error":
            path = self._failures_path
            output.write_bytes(path, msgspec.json.Encoder().encode_lines(failures))
            written = str(path)
            self.log.info("Wrote %d failure(s) to %s.", len(failures), written)
            if len(failures) < counts.get("failed", 0):  # a wait's outcome (a trigger event) carries so many
                self.log.warning(
                    "Only the first %d of %d failures were kept and written.", len(failures), counts["failed"]
                )
        return {
            **counts,
            "failures": failures[: self.max_failures_in_xcom],
            "failures_total": counts.get("failed", len(failures)),
            "output_path": written,
        }
