"""The trigger that waits, on the triggerer, until a Kaleyra message reached its recipients."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_kaleyra_email import validation
from airflow_provider_kaleyra_email.delivery import (
    DEFAULT_DELIVERED_STATUSES,
    DEFAULT_FAILED_STATUSES,
    DEFAULT_NOT_FOUND_GRACE,
    DeliveryOutcome,
    DeliveryRule,
)
from airflow_provider_kaleyra_email.exceptions import KaleyraEmailAPIError
from airflow_provider_kaleyra_email.hooks.kaleyra_email import KaleyraEmailAsyncHook

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Sequence

CLASSPATH = "airflow_provider_kaleyra_email.triggers.kaleyra_email.KaleyraEmailMessageDeliveredTrigger"


class KaleyraEmailMessageDeliveredTrigger(BaseTrigger):
    """
    Poll one message's ``stats/<message id>`` until it is delivered, has failed, or time is up.

    Each poll is one request through
    :class:`~airflow_provider_kaleyra_email.hooks.kaleyra_email.KaleyraEmailAsyncHook`, judged by the
    :class:`~airflow_provider_kaleyra_email.delivery.DeliveryRule` the sensor uses, with
    ``asyncio.sleep`` between polls. A failure worth another try is "not yet", so only ``end_time``
    ends a wait on a failing API; one more poll is made at the deadline before ``timeout`` is reported.
    The trigger fires exactly one event, a
    :class:`~airflow_provider_kaleyra_email.delivery.DeliveryOutcome` as a plain JSON dict, and
    returns. It only reads, so running twice is harmless; it carries the connection id, never the key.

    :param message_id: the message to wait for, as Kaleyra returned it on send.
    :param kaleyra_email_conn_id: the Kaleyra Email connection.
    :param recipients: the recipients to wait for (default: all of the message's).
    :param require: ``"all"`` or ``"any"`` of those recipients.
    :param delivered_statuses: statuses that count as delivered.
    :param failed_statuses: statuses that count as a terminal failure.
    :param poke_interval: seconds between polls.
    :param started_at: when the wait began (seconds since the epoch), from which ``not_found_grace``
        runs; default: when the trigger first runs.
    :param end_time: the deadline (seconds since the epoch); ``None`` waits for ever.
    :param not_found_grace: seconds after ``started_at`` during which HTTP 404 means "not visible yet".
    :param first_poll_at: no poll before this time (seconds since the epoch): the sensor has just
        checked. Default: poll at once.
    :param max_consecutive_errors: ignored; accepted from triggers serialized by earlier releases.
    :param consecutive_errors: ignored, as ``max_consecutive_errors``.
    """

    def __init__(
        self,
        *,
        message_id: str,
        kaleyra_email_conn_id: str = KaleyraEmailAsyncHook.default_conn_name,
        recipients: Sequence[str] | None = None,
        require: str = "all",
        delivered_statuses: Sequence[str] = DEFAULT_DELIVERED_STATUSES,
        failed_statuses: Sequence[str] = DEFAULT_FAILED_STATUSES,
        poke_interval: float = 60.0,
        started_at: float | None = None,
        end_time: float | None = None,
        not_found_grace: float = DEFAULT_NOT_FOUND_GRACE,
        first_poll_at: float | None = None,
        max_consecutive_errors: int | None = None,
        consecutive_errors: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)  # type: ignore[no-untyped-call]
        self.message_id = validation.message_id(message_id)
        self.kaleyra_email_conn_id = kaleyra_email_conn_id
        self.rule = DeliveryRule(
            recipients=recipients,
            require=require,
            delivered_statuses=delivered_statuses,
            failed_statuses=failed_statuses,
            not_found_grace=not_found_grace,
        )
        self.poke_interval = validation.positive_number(poke_interval, parameter="poke_interval")
        self.started_at, self.end_time, self.first_poll_at = (
            None if moment is None else float(moment) for moment in (started_at, end_time, first_poll_at)
        )

    def serialize(self) -> tuple[str, dict[str, Any]]:
        """Return the classpath and JSON-safe kwargs: the connection id, never the key."""
        return CLASSPATH, {
            "message_id": self.message_id,
            "kaleyra_email_conn_id": self.kaleyra_email_conn_id,
            **self.rule.serialize(),
            "poke_interval": self.poke_interval,
            "started_at": self.started_at,
            "end_time": self.end_time,
            "first_poll_at": self.first_poll_at,
        }

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """Poll until the wait ends, then fire its one event; any unexpected failure is an ``error`` event."""
        hook = KaleyraEmailAsyncHook(self.kaleyra_email_conn_id)
        try:
            outcome = await self._wait(hook)
        except Exception as exc:
            # Whatever went wrong (a bad connection, a bug) ends the wait as one error event; a
            # trigger that raises leaves the task to Airflow's generic "trigger failure".
            text = f"The wait for message {self.message_id} failed: {type(exc).__name__}: {exc}"
            outcome = DeliveryOutcome("error", self.message_id, hook.scrub(text))
        finally:
            await hook.aclose()
        yield TriggerEvent(outcome.to_event())  # type: ignore[no-untyped-call]

    async def _wait(self, hook: KaleyraEmailAsyncHook) -> DeliveryOutcome:
        started_at = self.started_at if self.started_at is not None else time.time()
        self.log.info("Waiting for message %s: a poll every %g s.", self.message_id, self.poke_interval)
        if self.first_poll_at is not None:
            await asyncio.sleep(self._pause(until=self.first_poll_at))
        last = None
        while True:
            polled_at = time.time()
            try:
                outcome = self.rule.judge(self.message_id, await hook.get_message_stats(self.message_id))
            except KaleyraEmailAPIError as error:
                outcome = self.rule.judge_error(self.message_id, error, waited=polled_at - started_at)
            if outcome.done:
                self.log.info("%s", outcome.message)
                return outcome
            if outcome.message != last:  # a line per change, not per poll: a triggerer runs thousands
                self.log.info("Message %s: %s.", self.message_id, outcome.message)
                last = outcome.message
            if self.end_time is not None and polled_at >= self.end_time:
                # That poll was the last check, made at the deadline, not skipped (#62306).
                return outcome.timed_out(self.end_time - started_at)
            # Poll starts are poke_interval apart, however long a poll took (waiting for a slot, say).
            await asyncio.sleep(self._pause(until=polled_at + self.poke_interval))

    def _pause(self, *, until: float) -> float:
        """Return the seconds to sleep until ``until``, cut short so that the last poll lands on the deadline."""
        if self.end_time is not None:
            until = min(until, self.end_time)
        return max(0.0, until - time.time())


#: The name an earlier release serialized its triggers under; those still load, as this trigger.
KaleyraEmailMessageStatusTrigger = KaleyraEmailMessageDeliveredTrigger
