"""The trigger that waits, on the triggerer, for a Kaleyra message to reach its recipients."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_kaleyra_email import validation
from airflow_provider_kaleyra_email.delivery import (
    DEFAULT_DELIVERED_STATUSES,
    DEFAULT_FAILED_STATUSES,
    DEFAULT_MAX_CONSECUTIVE_ERRORS,
    DEFAULT_NOT_FOUND_GRACE,
    Check,
    CheckKind,
    DeliveryRule,
    DeliveryWatch,
    WatchState,
    error_limit,
    seconds,
)
from airflow_provider_kaleyra_email.exceptions import KaleyraEmailAPIError
from airflow_provider_kaleyra_email.hooks.kaleyra_email import KaleyraEmailAsyncHook

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Sequence

CLASSPATH = "airflow_provider_kaleyra_email.triggers.kaleyra_email.KaleyraEmailMessageStatusTrigger"
_DELIVERED_NAMES = tuple(status.value for status in DEFAULT_DELIVERED_STATUSES)
_FAILED_NAMES = tuple(status.value for status in DEFAULT_FAILED_STATUSES)


class KaleyraEmailMessageStatusTrigger(BaseTrigger):
    """
    Poll one message's ``stats/<message id>`` until it is delivered, has failed, or time is up.

    Each poll is one request through :class:`~airflow_provider_kaleyra_email.hooks.kaleyra_email.KaleyraEmailAsyncHook`,
    judged by the same :class:`~airflow_provider_kaleyra_email.delivery.DeliveryWatch` the sensor
    uses, with ``asyncio.sleep`` between polls. The trigger fires exactly one event, a plain JSON
    dict whose ``status`` is ``success`` (with every recipient's status), ``failure`` (with the
    recipients that failed and Kaleyra's error text), ``timeout`` or ``error``, and then returns.
    It only reads, so running it twice (a triggerer restart) is harmless.

    It carries the connection id, never the key, and looks the connection up itself. Every
    argument but ``message_id`` has a default, so a trigger serialized by an earlier release loads.

    :param message_id: the message to wait for, as Kaleyra returned it on send.
    :param kaleyra_email_conn_id: the Kaleyra Email connection.
    :param recipients: the recipients to wait for (default: all of the message's).
    :param require: ``"all"`` or ``"any"`` of those recipients.
    :param delivered_statuses: statuses that count as delivered.
    :param failed_statuses: statuses that count as a terminal failure.
    :param poke_interval: seconds between polls.
    :param started_at: when the wait began (seconds since the epoch), from which the 404 grace
        runs; default: when this trigger first runs.
    :param end_time: the deadline (seconds since the epoch). A poll is made at the deadline before
        the trigger reports ``timeout``; ``None`` waits for ever.
    :param not_found_grace: seconds after ``started_at`` during which HTTP 404 means "not visible yet".
    :param max_consecutive_errors: failed polls in a row (429, 5xx, timeouts) before giving up.
    :param consecutive_errors: failed polls in a row already seen (by the sensor, before it deferred).
    :param first_poll_at: no poll before this time (seconds since the epoch): the sensor has just
        checked, so polling again at once would only repeat its answer. Default: poll at once.
    """

    def __init__(
        self,
        *,
        message_id: str,
        kaleyra_email_conn_id: str = KaleyraEmailAsyncHook.default_conn_name,
        recipients: Sequence[str] | None = None,
        require: str = "all",
        delivered_statuses: Sequence[str] = _DELIVERED_NAMES,
        failed_statuses: Sequence[str] = _FAILED_NAMES,
        poke_interval: float = 60.0,
        started_at: float | None = None,
        end_time: float | None = None,
        not_found_grace: float = DEFAULT_NOT_FOUND_GRACE,
        max_consecutive_errors: int = DEFAULT_MAX_CONSECUTIVE_ERRORS,
        consecutive_errors: int = 0,
        first_poll_at: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)  # type: ignore[no-untyped-call]
        self.message_id = validation.message_id(message_id)
        self.kaleyra_email_conn_id = kaleyra_email_conn_id
        self.rule = DeliveryRule.build(
            recipients=recipients,
            require=require,
            delivered_statuses=delivered_statuses,
            failed_statuses=failed_statuses,
        )
        self.poke_interval = seconds(poke_interval, parameter="poke_interval")
        self.started_at = None if started_at is None else float(started_at)
        self.end_time = None if end_time is None else float(end_time)
        self.not_found_grace = seconds(not_found_grace, parameter="not_found_grace")
        self.max_consecutive_errors = error_limit(max_consecutive_errors)
        self.consecutive_errors = validation.int_in_range(
            consecutive_errors, parameter="consecutive_errors", low=0, high=self.max_consecutive_errors
        )
        self.first_poll_at = None if first_poll_at is None else float(first_poll_at)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            CLASSPATH,
            {
                "message_id": self.message_id,
                "kaleyra_email_conn_id": self.kaleyra_email_conn_id,
                **self.rule.serialize(),
                "poke_interval": self.poke_interval,
                "started_at": self.started_at,
                "end_time": self.end_time,
                "not_found_grace": self.not_found_grace,
                "max_consecutive_errors": self.max_consecutive_errors,
                "consecutive_errors": self.consecutive_errors,
                "first_poll_at": self.first_poll_at,
            },
        )

    @cached_property
    def hook(self) -> KaleyraEmailAsyncHook:
        return KaleyraEmailAsyncHook(self.kaleyra_email_conn_id)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        try:
            check = await self._wait()
        except Exception as exc:
            # Whatever went wrong (a bad connection, a bug) ends the wait as one error event; a
            # trigger that raises leaves the task to Airflow's generic "trigger failure".
            check = Check(
                CheckKind.ERROR,
                self.message_id,
                self.hook.scrub(f"The wait for message {self.message_id} failed: {type(exc).__name__}: {exc}"),
            )
        yield TriggerEvent(check.to_event())  # type: ignore[no-untyped-call]

    async def _wait(self) -> Check:
        started_at = self.started_at if self.started_at is not None else time.time()
        watch = DeliveryWatch(
            message_id=self.message_id,
            rule=self.rule,
            started_at=started_at,
            not_found_grace=self.not_found_grace,
            max_consecutive_errors=self.max_consecutive_errors,
            state=WatchState(consecutive_errors=self.consecutive_errors),
            logger=self.log,
        )
        self.log.info(
            "Waiting for message %s: a poll every %g s%s.",
            self.message_id,
            self.poke_interval,
            f" until {self._deadline_text()}" if self.end_time is not None else "",
        )
        try:
            if self.first_poll_at is not None:
                await asyncio.sleep(self._pause(time.time(), until=self.first_poll_at))
            while True:
                polled_at = time.time()
                check = await self._poll(watch, now=polled_at)
                if check.done:
                    self.log.info("%s (%d polls)", check.message, watch.polls)
                    return check
                if self.end_time is not None and polled_at >= self.end_time:
                    # That poll was the last check, made at the deadline (not skipped: #62306).
                    return watch.timed_out(check, timeout=self.end_time - started_at)
                now = time.time()
                await asyncio.sleep(self._pause(now, until=now + self.poke_interval))
        finally:
            await self.hook.aclose()

    async def _poll(self, watch: DeliveryWatch, *, now: float) -> Check:
        try:
            message = await self.hook.get_message_stats(self.message_id)
        except KaleyraEmailAPIError as exc:
            return watch.observe_error(exc, now=now)
        return watch.observe_message(message)

    def _pause(self, now: float, *, until: float) -> float:
        """Seconds to wait for ``until``, cut short so that the last poll lands on the deadline."""
        if self.end_time is not None:
            until = min(until, self.end_time)
        return max(0.0, until - now)

    def _deadline_text(self) -> str:
        assert self.end_time is not None
        return f"{timedelta(seconds=round(max(0.0, self.end_time - time.time())))} from now"
