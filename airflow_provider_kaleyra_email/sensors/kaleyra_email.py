"""The sensor that waits until a Kaleyra email reached its recipients."""

from __future__ import annotations

import time
from datetime import datetime, timedelta
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
from airflow_provider_kaleyra_email.exceptions import KaleyraEmailAPIError, KaleyraEmailWaitError
from airflow_provider_kaleyra_email.hooks.kaleyra_email import KaleyraEmailHook
from airflow_provider_kaleyra_email.triggers.kaleyra_email import KaleyraEmailMessageStatusTrigger

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from airflow.sdk import Context

    from airflow_provider_kaleyra_email.api import MessageStatus

#: Key of the sensor's entry in Airflow 3.3's per-task-instance state store (reschedule mode).
STATE_KEY = "kaleyra_email_delivery_watch"
#: Airflow's own deferral timeout is only a backstop for a triggerer that is gone: the trigger
#: reports the timeout itself after a last check at the deadline, which may take a request timeout.
DEFERRAL_TIMEOUT_MARGIN = 60.0
#: Longest pause between the retries of one reschedule-mode poke (see ``_retry_within_poke``).
MAX_IN_POKE_PAUSE = 30.0


class KaleyraEmailMessageDeliveredSensor(BaseSensorOperator):
    """
    Wait until one Kaleyra message reached its recipients; return every recipient's status.

    Each poke reads ``stats/<message id>`` once. The wait succeeds when the chosen recipients
    reached a delivered status, and returns ``{recipient: status}`` for every recipient of the
    message (XCom). It fails at once, with ``AirflowFailException`` so that no retry is spent,
    when a chosen recipient reaches a failed status; the error names the recipient, the status
    and Kaleyra's error text. With ``soft_fail=True`` that failure is a skip instead.

    Transient API trouble (429, 5xx, timeouts, dropped connections) does not fail the wait: it
    goes on, and gives up only after ``max_consecutive_errors`` polls in a row have failed. An
    HTTP 404 is "not visible yet" for ``not_found_grace`` seconds after the wait began (Kaleyra
    needs a moment to list a message it has just accepted), then an error.

    Works in ``poke`` and ``reschedule`` mode and with ``deferrable=True``, where it checks once
    here and then hands the wait to
    :class:`~airflow_provider_kaleyra_email.triggers.kaleyra_email.KaleyraEmailMessageStatusTrigger`,
    holding no worker slot. ``timeout`` counts in every mode, and the status is checked once more
    at the deadline before the wait times out. Sensor and trigger judge every poll with the same
    :class:`~airflow_provider_kaleyra_email.delivery.DeliveryWatch`.

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
    :param not_found_grace: seconds (or a ``timedelta``) after the wait began during which HTTP 404
        means "not visible yet", not a wrong id (default 120).
    :param max_consecutive_errors: polls in a row that may fail transiently before the wait gives up
        (default 5).
    :param kaleyra_email_conn_id: the Kaleyra Email connection.
    :param deferrable: wait on the triggerer instead of a worker (default: Airflow's
        ``[operators] default_deferrable``).
    """

    template_fields: Sequence[str] = ("message_id", "recipients")
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
        max_consecutive_errors: int = DEFAULT_MAX_CONSECUTIVE_ERRORS,
        kaleyra_email_conn_id: str = KaleyraEmailHook.default_conn_name,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.message_id = message_id
        self.recipients = recipients
        self.kaleyra_email_conn_id = kaleyra_email_conn_id
        self.deferrable = deferrable
        # What is not templated is checked now, at parse time; message_id and recipients once
        # rendered, in execute. Neither check sends a request.
        rule = DeliveryRule.build(
            require=require, delivered_statuses=delivered_statuses, failed_statuses=failed_statuses
        )
        self.require = rule.require
        self.delivered_statuses = sorted(status.value for status in rule.delivered)
        self.failed_statuses = sorted(status.value for status in rule.failed)
        self.not_found_grace = seconds(not_found_grace, parameter="not_found_grace")
        self.max_consecutive_errors = error_limit(max_consecutive_errors)
        if not self.poke_interval > 0:
            raise ValueError(
                f"poke_interval={self.poke_interval!r} must be positive: every poke is a request to Kaleyra."
            )
        self._watch: DeliveryWatch | None = None
        self._stored: dict[str, Any] | None = None

    @cached_property
    def hook(self) -> KaleyraEmailHook:
        # One request per poke, no retries inside it: the watch counts failed polls itself, and
        # the poke interval is the backoff.
        return KaleyraEmailHook(self.kaleyra_email_conn_id, max_retries=0)

    # ----------------------------------------------------------------------------------------
    # Airflow's entry points
    # ----------------------------------------------------------------------------------------

    def execute(self, context: Context) -> Any:
        self._watch = self._new_watch(context)
        if self.deferrable:
            return self._check_then_defer()
        # Airflow's loop pokes first and compares the time spent with ``timeout`` after, so the
        # poke that ends the wait on time is itself a last look at the status.
        return super().execute(context)

    def poke(self, context: Context) -> PokeReturnValue:
        if self._watch is None:
            self._watch = self._new_watch(context)
        watch = self._watch
        check = self._poll(watch)
        if self._retry_within_poke(context):
            while not check.done and watch.in_error_streak:
                time.sleep(min(self.poke_interval, 2.0 ** (watch.state.consecutive_errors - 1), MAX_IN_POKE_PAUSE))
                check = self._poll(watch)
        self._save_state(context, watch, check)
        if not check.done:
            return PokeReturnValue(is_done=False)
        return PokeReturnValue(is_done=True, xcom_value=self._finish(check))

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> dict[str, str]:
        """Where the task resumes when the trigger fired: the event decides, as a poke's check would."""
        return self._finish(Check.from_event(event))

    # ----------------------------------------------------------------------------------------
    # Deferral
    # ----------------------------------------------------------------------------------------

    def _check_then_defer(self) -> dict[str, str]:
        watch = self._watch
        assert watch is not None
        check = self._poll(watch)
        if check.done:
            return self._finish(check)
        deadline = watch.started_at + self.timeout
        remaining = deadline - time.time()
        if remaining <= 0:
            return self._finish(watch.timed_out(check, timeout=self.timeout))
        trigger = KaleyraEmailMessageStatusTrigger(
            message_id=watch.message_id,
            kaleyra_email_conn_id=self.kaleyra_email_conn_id,
            **watch.rule.serialize(),
            poke_interval=self.poke_interval,
            started_at=watch.started_at,
            end_time=deadline,
            not_found_grace=self.not_found_grace,
            max_consecutive_errors=self.max_consecutive_errors,
            # The streak so far travels with the wait, so a failed first check counts.
            consecutive_errors=watch.state.consecutive_errors,
            # This check just happened: the trigger's first poll is one interval later.
            first_poll_at=time.time() + self.poke_interval,
        )
        self.log.info("Deferring the wait for message %s to the triggerer.", watch.message_id)
        # The trigger reports the timeout itself, after checking once more at the deadline;
        # Airflow's deferral timeout only backs that up, in case no triggerer runs it. On Airflow 3
        # its expiry arrives as AirflowSensorTimeout, on 2.11 as TaskDeferralTimeout; both skip
        # under soft_fail.
        self.defer(
            trigger=trigger,
            method_name="execute_complete",
            timeout=timedelta(seconds=remaining + self.hook.config.timeout + DEFERRAL_TIMEOUT_MARGIN),
        )
        raise AssertionError("unreachable: defer() raises TaskDeferred")

    # ----------------------------------------------------------------------------------------
    # One poll
    # ----------------------------------------------------------------------------------------

    def _new_watch(self, context: Context) -> DeliveryWatch:
        """Check the rendered arguments (before any request) and start judging polls."""
        message_id = validation.message_id(self.message_id)
        rule = DeliveryRule.build(
            recipients=self.recipients,
            require=self.require,
            delivered_statuses=self.delivered_statuses,
            failed_statuses=self.failed_statuses,
        )
        return DeliveryWatch(
            message_id=message_id,
            rule=rule,
            started_at=self._wait_began(context),
            not_found_grace=self.not_found_grace,
            max_consecutive_errors=self.max_consecutive_errors,
            state=self._load_state(context, message_id),
            logger=self.log,
        )

    def _poll(self, watch: DeliveryWatch) -> Check:
        try:
            message = self.hook.get_message_stats(watch.message_id)
        except KaleyraEmailAPIError as exc:
            return watch.observe_error(exc, now=time.time())
        return watch.observe_message(message)

    def _finish(self, check: Check) -> dict[str, str]:
        """The task's result for a check that ends the wait: the statuses, or the right exception."""
        if check.kind is CheckKind.SUCCESS:
            self.log.info("%s", check.message)
            return dict(check.statuses or {})
        skip = self.soft_fail or bool(getattr(self, "never_fail", False))
        if check.kind is CheckKind.FAILURE:
            if skip:
                raise AirflowSkipException(f"{check.message} Skipped: soft_fail is set.")
            raise AirflowFailException(check.message)
        if check.kind is CheckKind.TIMEOUT:
            if skip:
                raise AirflowSkipException(f"{check.message} Skipped: soft_fail is set.")
            raise AirflowSensorTimeout(check.message)
        raise KaleyraEmailWaitError(check.message)

    # ----------------------------------------------------------------------------------------
    # State across pokes
    #
    # In poke mode one execute() runs every poke, so the watch lives on the instance. Deferred,
    # the trigger holds it, and gets the first check's streak in its kwargs. In reschedule mode
    # every poke is a fresh task execution and Airflow clears the task's XComs before each, so:
    #
    # - when the wait began (which the 404 grace counts from) is derived, not stored: it is the
    #   start of the first reschedule of this try series, the same instant Airflow's own sensor
    #   timeout counts from;
    # - the error streak is stored in Airflow 3.3's per-task-instance state store
    #   (``context["task_state_store"]``), tagged with the try number so a retry starts afresh;
    # - where that store does not exist (Airflow 2.11 to 3.2) there is nowhere supported to keep
    #   it, so a poke that fails transiently polls again within the same execution, with a short
    #   backoff, until it gets an answer or the streak reaches the limit. The limit means the same
    #   number of failed polls; they are closer together, and the worker slot is held only while
    #   the API is failing.
    # ----------------------------------------------------------------------------------------

    def _wait_began(self, context: Context) -> float:
        if self.reschedule and not self.deferrable:
            first = self._first_reschedule_date(context)
            if first is not None:
                return first.timestamp()
        return time.time()

    def _first_reschedule_date(self, context: Context) -> datetime | None:
        ti: Any = context["ti"]
        getter = getattr(ti, "get_first_reschedule_date", None)
        if callable(getter):  # Airflow 3
            first: datetime | None = getter(context)
            return first
        # Airflow 2.11: the helper its own BaseSensorOperator.execute uses for the timeout.
        from airflow.sensors.base import _orig_start_date  # noqa: TID251 (Airflow 2 only)

        first_try = (ti.max_tries or 0) - (self.retries or 0) + 1
        start: datetime | None = _orig_start_date(
            dag_id=ti.dag_id, task_id=ti.task_id, run_id=ti.run_id, map_index=ti.map_index, try_number=first_try
        )
        return start

    def _state_store(self, context: Context) -> Any:
        if not self.reschedule or self.deferrable:
            return None
        return context.get("task_state_store")

    def _retry_within_poke(self, context: Context) -> bool:
        return self.reschedule and not self.deferrable and self._state_store(context) is None

    def _load_state(self, context: Context, message_id: str) -> WatchState:
        store = self._state_store(context)
        if store is None:
            return WatchState()
        stored = store.get(STATE_KEY)
        ti: Any = context["ti"]
        if (
            isinstance(stored, dict)
            and stored.get("try_number") == ti.try_number
            and stored.get("message_id") == message_id
        ):
            self._stored = stored
            return WatchState.from_json(stored.get("watch"))
        return WatchState()

    def _save_state(self, context: Context, watch: DeliveryWatch, check: Check) -> None:
        store = self._state_store(context)
        if store is None:
            return
        if check.done:
            if self._stored is not None:
                store.delete(STATE_KEY)
                self._stored = None
            return
        ti: Any = context["ti"]
        entry = {"try_number": ti.try_number, "message_id": watch.message_id, "watch": watch.state.to_json()}
        if entry != self._stored and (watch.in_error_streak or self._stored is not None):
            store.set(STATE_KEY, entry)
            self._stored = entry
