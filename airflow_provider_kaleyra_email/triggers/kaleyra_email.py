"""The triggers of the Kaleyra Email API: a wait for delivery, and a watcher of new log rows for an ``AssetWatcher``."""

from __future__ import annotations

import asyncio
import time
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from airflow.providers.common.compat.sdk import AirflowOptionalProviderFeatureException
from airflow.triggers.base import BaseTrigger, TriggerEvent

try:
    from airflow.triggers.base import BaseEventTrigger
except ImportError:  # Airflow 2.11: no event-driven scheduling
    BaseEventTrigger = BaseTrigger  # type: ignore[misc,assignment]

from airflow_provider_kaleyra_email import validation
from airflow_provider_kaleyra_email.campaign import wait_for
from airflow_provider_kaleyra_email.delivery import (
    DEFAULT_DELIVERED_STATUSES,
    DEFAULT_FAILED_STATUSES,
    DEFAULT_NOT_FOUND_GRACE,
    DeliveryOutcome,
    DeliveryRule,
    parse_statuses,
    text_of,
)
from airflow_provider_kaleyra_email.exceptions import KaleyraEmailAPIError
from airflow_provider_kaleyra_email.hooks.kaleyra_email import KaleyraEmailAsyncHook

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Hashable, Sequence

CLASSPATH = "airflow_provider_kaleyra_email.triggers.kaleyra_email.KaleyraEmailMessageDeliveredTrigger"
NEW_ROWS_CLASSPATH = "airflow_provider_kaleyra_email.triggers.kaleyra_email.KaleyraEmailNewLogRowsTrigger"
DEFAULT_WATCHED_STATUSES = tuple(status.value for status in DEFAULT_FAILED_STATUSES)


class KaleyraEmailMessageDeliveredTrigger(BaseTrigger):
    """
    Poll a message, or a list of them, until delivered, failed, or time is up; fire one event.

    Each poll is the sensor's, with ``asyncio.sleep`` between polls and one more at the deadline
    before ``timeout``; the event is a :class:`~airflow_provider_kaleyra_email.delivery.DeliveryOutcome`
    as a plain JSON dict. Its kwargs carry the connection id, never the key.

    :param message_id: the message to wait for, or a list of them (one wait, counted by recipient).
    :param kaleyra_email_conn_id: the Kaleyra Email connection.
    :param recipients: the recipients to wait for (default: all of the message's).
    :param require: ``"all"`` or ``"any"`` of those recipients.
    :param delivered_statuses: statuses that count as delivered.
    :param failed_statuses: statuses that count as a terminal failure.
    :param poke_interval: seconds between polls.
    :param started_at: when the wait began (seconds since the epoch; default: when the trigger runs).
    :param end_time: the deadline (seconds since the epoch); ``None`` waits for ever.
    :param not_found_grace: seconds after ``started_at`` during which HTTP 404 means "not visible yet".
    :param first_poll_at: no poll before this time (seconds since the epoch), as the sensor has just checked;
        default: poll at once.
    :param min_delivered_fraction: for a list, the share of recipients to be delivered.
    :param max_failed_fraction: for a list, the share of recipients that may fail.
    :param search: for a list, terms that narrow its logs listing.
    """

    def __init__(
        self,
        *,
        message_id: str | Sequence[str],
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
        min_delivered_fraction: float | None = None,
        max_failed_fraction: float | None = None,
        search: Sequence[str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)  # type: ignore[no-untyped-call]
        self.kaleyra_email_conn_id = kaleyra_email_conn_id
        rule = DeliveryRule(
            require=require,
            delivered_statuses=delivered_statuses,
            failed_statuses=failed_statuses,
            not_found_grace=not_found_grace,
        )
        fractions = {"min_delivered_fraction": min_delivered_fraction, "max_failed_fraction": max_failed_fraction}
        self.wait = wait_for(message_id, rule, recipients=recipients, search=search, **fractions, started_at=started_at)
        self.poke_interval = validation.positive_number(poke_interval, parameter="poke_interval")
        self.started_at, self.end_time, self.first_poll_at = (
            None if moment is None else float(moment) for moment in (started_at, end_time, first_poll_at)
        )

    def serialize(self) -> tuple[str, dict[str, Any]]:
        """Return the classpath and JSON-safe kwargs: the connection id, never the key."""
        return CLASSPATH, {
            "kaleyra_email_conn_id": self.kaleyra_email_conn_id,
            **self.wait.serialize(),
            "poke_interval": self.poke_interval,
            "started_at": self.started_at,
            "end_time": self.end_time,
            "first_poll_at": self.first_poll_at,
        }

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """Poll until the wait ends, then fire its one event; any unexpected failure is an ``error`` event."""
        hook = KaleyraEmailAsyncHook(self.kaleyra_email_conn_id)
        try:
            outcome = await self._poll_until_done(hook)
        except Exception as exc:
            # One error event: a trigger that raises leaves the task to Airflow's generic "trigger failure".
            text = f"The wait for {self.wait.label} failed: {type(exc).__name__}: {exc}"
            outcome = DeliveryOutcome("error", self.wait.label, hook.scrub(text))
        finally:
            await hook.aclose()
        yield TriggerEvent(outcome.to_event())  # type: ignore[no-untyped-call]

    async def _poll_until_done(self, hook: KaleyraEmailAsyncHook) -> DeliveryOutcome:
        wait, said = self.wait, None
        wait.started_at = self.started_at if self.started_at is not None else time.time()
        self.log.info("Waiting for %s: a poll every %g s.", wait.label, self.poke_interval)
        poll_at = self.first_poll_at if self.first_poll_at is not None else time.time()
        while True:
            # The last poll lands on the deadline; poll starts are poke_interval apart, however long a poll took.
            until = poll_at if self.end_time is None else min(poll_at, self.end_time)
            await asyncio.sleep(max(0.0, until - time.time()))
            poll_at = time.time() + self.poke_interval
            last_check = self.end_time is not None and time.time() >= self.end_time  # made at the deadline
            outcome = await wait.apoll(hook, deadline=self.end_time if last_check else None)
            if outcome.done:
                self.log.info("%s", outcome.message)
                return outcome
            if outcome.message != said:  # a line per change, not per poll: a triggerer runs thousands
                self.log.info("%s: %s.", wait.label, outcome.message)
                said = outcome.message


#: The trigger's first name: triggers stored in a metadata database under it still load.
KaleyraEmailMessageStatusTrigger = KaleyraEmailMessageDeliveredTrigger


class KaleyraEmailNewLogRowsTrigger(BaseEventTrigger):  # type: ignore[misc,valid-type]
    """
    Watch the logs for new rows in the watched statuses; fire one event per batch of them (Airflow 3).

    For an ``AssetWatcher``: every ``poll_interval`` seconds it lists the days from ``days_back``
    days ago to today, once per status, and fires the rows not fired before (remembered in memory:
    a restart fires them again). Siblings share one poll on Airflow 3.3+. See ``docs/sensor.md``.

    :param kaleyra_email_conn_id: the Kaleyra Email connection.
    :param statuses: the statuses to watch (default: ``BOUNCE``, ``BLOCKED``, ``FAILED``, ``SUPPRESSED``).
    :param search: more terms every row must match, e.g. a sender or a template name.
    :param poll_interval: seconds between polls (default 60).
    :param days_back: days before today (account time zone) to watch as well: yesterday's mail bounces today.
    :param max_rows_per_event: most rows in one event; more new rows make more events.
    """

    def __init__(
        self,
        *,
        kaleyra_email_conn_id: str = KaleyraEmailAsyncHook.default_conn_name,
        statuses: Sequence[str] = DEFAULT_WATCHED_STATUSES,
        search: Sequence[str] | str | None = None,
        poll_interval: float = 60.0,
        days_back: int = 1,
        max_rows_per_event: int = 1_000,
        **kwargs: Any,
    ) -> None:
        if BaseEventTrigger is BaseTrigger:
            raise AirflowOptionalProviderFeatureException(
                "KaleyraEmailNewLogRowsTrigger starts DAG runs through an AssetWatcher, which needs "
                "Airflow 3 (event-driven scheduling); on Airflow 2.11 schedule a DAG that runs "
                "KaleyraEmailFetchLogsOperator with search=['BOUNCE'] instead."
            )
        super().__init__(**kwargs)  # type: ignore[no-untyped-call]
        self.kaleyra_email_conn_id = kaleyra_email_conn_id
        self.statuses = sorted(status.value for status in parse_statuses(statuses, "statuses"))
        self.search = validation.search_terms(search)
        self.poll_interval = validation.positive_number(poll_interval, parameter="poll_interval")
        self.days_back = validation.int_in_range(days_back, parameter="days_back", low=0, high=30)
        self.max_rows_per_event = validation.int_in_range(
            max_rows_per_event, parameter="max_rows_per_event", low=1, high=100_000
        )

    def serialize(self) -> tuple[str, dict[str, Any]]:
        """Return the classpath and JSON-safe kwargs: the connection id, never the key."""
        return NEW_ROWS_CLASSPATH, {
            "kaleyra_email_conn_id": self.kaleyra_email_conn_id,
            "statuses": self.statuses,
            "search": self.search,
            "poll_interval": self.poll_interval,
            "days_back": self.days_back,
            "max_rows_per_event": self.max_rows_per_event,
        }

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """Poll for ever; fire the rows not fired before, in batches (the shared stream's path, unshared)."""
        async for event in self.filter_shared_stream(self.open_shared_stream(self.serialize()[1])):
            yield event

    def shared_stream_key(self) -> Hashable:
        """Return what sibling watchers share one poll by (Airflow 3.3's shared streams): all that shapes it."""
        watched = (tuple(self.statuses), tuple(self.search), self.poll_interval, self.days_back)
        return (NEW_ROWS_CLASSPATH, self.kaleyra_email_conn_id, *watched)

    @classmethod
    async def open_shared_stream(cls, kwargs: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """Poll for ever; yield each poll's rows not yielded before, with the days they cover."""
        watcher = cls(**kwargs)
        hook = KaleyraEmailAsyncHook(watcher.kaleyra_email_conn_id)
        seen: dict[tuple[Any, ...], date] = {}  # each row fired: the day it was submitted on
        try:
            tz = ZoneInfo((await hook.get_config()).timezone)
            while True:
                polled_at, today = time.time(), datetime.now(tz).date()
                first = today - timedelta(days=watcher.days_back)
                seen = {key: day for key, day in seen.items() if day >= first}  # what is still watched
                try:
                    fresh = await watcher._new_rows(hook, first, today, seen)
                except KaleyraEmailAPIError as error:  # the next poll tries again
                    watcher.log.warning("Watching the Kaleyra logs: this poll failed: %s", error)
                    fresh = []
                if fresh:
                    watcher.log.info("%d new log row(s) in %s for %s..%s.", len(fresh), watcher.statuses, first, today)
                    yield {"rows": fresh, "from_date": first.isoformat(), "to_date": today.isoformat()}
                await asyncio.sleep(max(0.0, polled_at + watcher.poll_interval - time.time()))
        finally:
            await hook.aclose()

    async def filter_shared_stream(self, shared_stream: AsyncIterator[Any]) -> AsyncIterator[TriggerEvent]:
        """
        Fire each batch of new rows as events of at most ``max_rows_per_event`` rows.

        :param shared_stream: the batches of the poll loop this watcher shares (:meth:`open_shared_stream`).
        """
        async for batch in shared_stream:
            rows = batch["rows"]
            for start in range(0, len(rows), self.max_rows_per_event):
                chunk = rows[start : start + self.max_rows_per_event]
                window = {"from_date": batch["from_date"], "to_date": batch["to_date"]}
                payload = {"rows": chunk, "count": len(chunk), **window, "statuses": self.statuses}
                yield NewLogRowsEvent(payload=payload)

    async def _new_rows(
        self, hook: KaleyraEmailAsyncHook, first: date, last: date, seen: dict[tuple[Any, ...], date]
    ) -> list[dict[str, Any]]:
        fresh = []
        for status in self.statuses:
            async for page in hook.iter_log_rows(first, last, search=[status, *self.search]):
                for row in page.rows:
                    key = (row.get("message_id"), row.get("to_mail"), text_of(row.get("status")).upper())
                    if key[2] == status and key not in seen:  # search also matches addresses ("bounce@...")
                        seen[key] = _row_day(row, default=last)
                        fresh.append(row)
        return fresh


class NewLogRowsEvent(TriggerEvent):  # type: ignore[misc]
    """A watcher's event: its rows go to the asset event, and what a triggerer logs of it (its repr) is its count."""

    def __repr__(self) -> str:
        p = self.payload
        return f"TriggerEvent<{p['count']} new log row(s) in {p['statuses']} for {p['from_date']}..{p['to_date']}>"

    __str__ = __repr__


def _row_day(row: dict[str, Any], *, default: date) -> date:
    """Return the account-local day a row was submitted on (its ``submitted_at``), else ``default``."""
    try:
        return date.fromisoformat(str(row.get("submitted_at") or "")[:10])
    except ValueError:
        return default
