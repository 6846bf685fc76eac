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
from airflow_provider_kaleyra_email.campaign import CampaignWait, wait_for
from airflow_provider_kaleyra_email.delivery import (
    DEFAULT_DELIVERED_STATUSES,
    DEFAULT_FAILED_STATUSES,
    DEFAULT_NOT_FOUND_GRACE,
    DeliveryOutcome,
    DeliveryRule,
)
from airflow_provider_kaleyra_email.exceptions import KaleyraEmailWaitError
from airflow_provider_kaleyra_email.hooks.kaleyra_email import KaleyraEmailHook
from airflow_provider_kaleyra_email.triggers.kaleyra_email import KaleyraEmailMessageDeliveredTrigger

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from airflow.sdk import Context

    from airflow_provider_kaleyra_email.delivery import MessageStatus, MessageWait

#: Airflow's deferral timeout only backs up the trigger's own, which a last check may exceed by a request timeout.
DEFERRAL_TIMEOUT_MARGIN = 60.0
#: What the end of a wait raises, but for success and a skip; an error or anything else is KaleyraEmailWaitError.
_RAISED: dict[str, type[Exception]] = {"failure": AirflowFailException, "timeout": AirflowSensorTimeout}


class KaleyraEmailMessageDeliveredSensor(BaseSensorOperator):
    """
    Wait until a Kaleyra message, or a list of them, reached its recipients; see ``docs/sensor.md``.

    One message: return ``{recipient: status}`` once the chosen recipients are delivered; fail at
    once (``AirflowFailException``, a skip with ``soft_fail``) when one failed. A list: one wait
    counted by recipient (:class:`~airflow_provider_kaleyra_email.campaign.CampaignWait`), returning
    the counts and the failures. Deferrable, it pokes once, then defers to
    :class:`~airflow_provider_kaleyra_email.triggers.kaleyra_email.KaleyraEmailMessageDeliveredTrigger`.

    :param message_id: the message to wait for, or a list of them (templated), e.g. ``send.output``.
    :param recipients: the recipients of one message to wait for (templated; default: all of them).
    :param require: ``"all"`` (default): every chosen recipient must be delivered, and one failure fails the
        wait; ``"any"``: one delivered recipient is enough, and the wait fails when all have failed.
    :param min_delivered_fraction: for a list, the share of recipients to be delivered (default
        ``1 - max_failed_fraction``, else 1).
    :param max_failed_fraction: for a list, the share of recipients that may fail (default
        ``1 - min_delivered_fraction``, else 0).
    :param search: for a list, terms that narrow the logs listing (templated), e.g. the sender.
    :param max_failures_in_xcom: for a list, the most failures in the XCom result (default 100).
    :param output_path: for a list, an object URL (templated) to write every failure to, as JSON Lines.
    :param output_conn_id: the connection of ``output_path``'s file system (templated).
    :param delivered_statuses: statuses that count as delivered (default ``DELIVERED``, ``OPEN``;
        ``["OPEN"]`` waits for the open).
    :param failed_statuses: statuses that end the wait as failed (default ``BOUNCE``, ``BLOCKED``, ``FAILED``,
        ``SUPPRESSED``); any other is still in flight.
    :param not_found_grace: seconds (or a ``timedelta``) into the wait during which HTTP 404 means "not
        visible yet" (default 120).
    :param kaleyra_email_conn_id: the Kaleyra Email connection (templated).
    :param deferrable: wait on the triggerer (default: Airflow's ``[operators] default_deferrable``).
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
        kaleyra_email_conn_id: str = KaleyraEmailHook.default_conn_name,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.message_id, self.recipients, self.search = message_id, recipients, search
        self.min_delivered_fraction, self.max_failed_fraction = min_delivered_fraction, max_failed_fraction
        self.output_path, self.output_conn_id = output_path, output_conn_id
        self.max_failures_in_xcom = validation.int_in_range(
            max_failures_in_xcom, parameter="max_failures_in_xcom", low=0, high=10_000
        )
        self.kaleyra_email_conn_id, self.deferrable = kaleyra_email_conn_id, deferrable
        # What is not templated is checked at parse time, the rest once rendered (_start).
        self._rule = DeliveryRule(
            require=require,
            delivered_statuses=delivered_statuses,
            failed_statuses=failed_statuses,
            not_found_grace=not_found_grace,
        )
        rule = self._rule.serialize()  # the arguments, normalised, as the trigger gets them
        self.require, self.not_found_grace = rule["require"], rule["not_found_grace"]
        self.delivered_statuses, self.failed_statuses = rule["delivered_statuses"], rule["failed_statuses"]
        if not self.poke_interval > 0:
            raise ValueError(f"poke_interval={self.poke_interval!r} must be positive: every poke is a request.")
        self._wait: MessageWait | CampaignWait | None = None
        self._failures_path: Any = None

    @cached_property
    def hook(self) -> KaleyraEmailHook:
        """Return the hook; one attempt per request, so that a poke lasts about one request timeout."""
        return KaleyraEmailHook(self.kaleyra_email_conn_id, max_retries=0)

    def execute(self, context: Context) -> Any:
        """Poke until done (``poke``, ``reschedule``); deferrable, poke once, then defer to the trigger."""
        wait = self._start(context)
        if not self.deferrable:
            return super().execute(context)
        if poked := self.poke(context):
            return poked.xcom_value
        end_time = wait.started_at + self.timeout
        trigger = KaleyraEmailMessageDeliveredTrigger(
            kaleyra_email_conn_id=self.kaleyra_email_conn_id,
            **wait.serialize(),
            poke_interval=self.poke_interval,
            started_at=wait.started_at,
            end_time=end_time,
            first_poll_at=time.time() + self.poke_interval,  # this poke just happened
        )
        self.log.info("Deferring the wait for %s to the triggerer.", wait.label)
        backstop = max(0.0, end_time - time.time()) + self.hook.config.timeout + DEFERRAL_TIMEOUT_MARGIN
        self.defer(trigger=trigger, method_name="execute_complete", timeout=timedelta(seconds=backstop))

    def poke(self, context: Context) -> PokeReturnValue:
        """Read the statuses once; done with them (XCom), not yet, or raise what the end means."""
        wait = self._wait or self._start(context)
        # Deferrable, the trigger times out; else a poke past the deadline does, with what it saw,
        # before Airflow's own check would without it.
        outcome = wait.poll(self.hook, deadline=None if self.deferrable else wait.started_at + self.timeout)
        if not outcome.done:
            self.log.info("%s: %s.", wait.label, outcome.message)
            return PokeReturnValue(is_done=False)
        return PokeReturnValue(is_done=True, xcom_value=self._finish(outcome))

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> dict[str, Any]:
        """Return the statuses when the trigger's event says delivered; raise what it means otherwise."""
        self._start(context)
        return self._finish(DeliveryOutcome.from_event(event))

    def _start(self, context: Context) -> MessageWait | CampaignWait:
        """Check the rendered arguments, before any request, and note when the wait began."""
        started_at = time.time()
        ti: Any = context.get("ti")
        if self.reschedule and not self.deferrable and ti is not None:
            getter = getattr(ti, "get_first_reschedule_date", None)
            first = getter(context) if callable(getter) else getattr(ti, "start_date", None)
            started_at = first.timestamp() if isinstance(first, datetime) else started_at
        self._wait = wait_for(
            self.message_id,
            self._rule,
            recipients=self.recipients,
            search=self.search,
            min_delivered_fraction=self.min_delivered_fraction,
            max_failed_fraction=self.max_failed_fraction,
            started_at=started_at,
        )
        if isinstance(self._wait, CampaignWait) and self.output_path:
            self._failures_path = output.object_path(
                self.output_path, conn_id=self.output_conn_id, from_date=None, to_date=None, example="failures.jsonl"
            )
        return self._wait

    def _finish(self, outcome: DeliveryOutcome) -> dict[str, Any]:
        """Return the result of a success; raise the exception that any other end of the wait means."""
        result = self._campaign_result(outcome) if outcome.counts is not None else dict(outcome.statuses or {})
        if outcome.status == "success":
            self.log.info("%s", outcome.message)
            return result
        if outcome.status in ("failure", "timeout") and (self.soft_fail or getattr(self, "never_fail", False)):
            raise AirflowSkipException(f"{outcome.message} Skipped: soft_fail is set.")
        raise _RAISED.get(outcome.status, KaleyraEmailWaitError)(outcome.message)

    def _campaign_result(self, outcome: DeliveryOutcome) -> dict[str, Any]:
        """Return a list's XCom result; write every failure to ``output_path``, if one is given."""
        failures, counts = [dict(failure) for failure in outcome.failures], dict(outcome.counts or {})
        written = None
        if self._failures_path is not None and outcome.status != "error":
            output.write_bytes(self._failures_path, msgspec.json.Encoder().encode_lines(failures))
            written = str(self._failures_path)
            self.log.info("Wrote %d failure(s) to %s.", len(failures), written)
            if len(failures) < counts.get("failed", 0):  # an outcome carries MAX_FAILURES_IN_OUTCOME at most
                self.log.warning(
                    "Only the first %d of %d failures were kept and written.", len(failures), counts["failed"]
                )
        return {
            **counts,
            "failures": failures[: self.max_failures_in_xcom],
            "failures_total": counts.get("failed", len(failures)),
            "output_path": written,
        }
