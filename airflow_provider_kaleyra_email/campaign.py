"""
A wait on many messages at once (a campaign), counted by recipient; the sensor and the trigger poll it alike.

- Each address of each message is one recipient; a message not found yet counts as one, in flight.
- With ``n`` recipients the wait fails once more than ``max_failed_fraction`` of ``n`` failed, or
  once ``min_delivered_fraction`` of ``n`` is out of reach; it succeeds once that many are
  delivered. Each fraction defaults to one minus the other; with neither, all must be delivered.
- A poll reads only unresolved messages, the cheaper way: ``stats/<id>`` for each while they are
  no more than the pages the last logs listing took (before one: ids / 100), else one logs
  listing of the send window (the account-local day before the wait began, to today).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import date, datetime, timedelta, tzinfo
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from airflow_provider_kaleyra_email import validation
from airflow_provider_kaleyra_email.delivery import (
    DeliveryOutcome,
    DeliveryRule,
    MessageStatus,
    failure_of,
    log,
    text_of,
)
from airflow_provider_kaleyra_email.exceptions import KaleyraEmailAPIError, KaleyraEmailTransientError

if TYPE_CHECKING:
    from airflow_provider_kaleyra_email.hooks.kaleyra_email import KaleyraEmailAsyncHook, KaleyraEmailHook

#: The most failures an outcome carries (a trigger event is stored in Airflow's database).
MAX_FAILURES_IN_OUTCOME = 5_000
#: Rows per page of the logs listing: the API's maximum.
LISTING_PAGE_SIZE = 100


class CampaignWait:
    """
    The wait of this module's docstring, on ``message_ids`` (in the order given; repeats dropped).

    :param message_ids: the messages.
    :param rule: the statuses that count as delivered and failed, and ``not_found_grace``.
    :param min_delivered_fraction: the share of recipients to be delivered, in (0, 1].
    :param max_failed_fraction: the share of recipients allowed to fail, in [0, 1).
    :param started_at: when the wait began (seconds since the epoch): the send window and the 404 grace start there.
    :param search: terms that narrow the logs listing (all must match).
    """

    def __init__(
        self,
        message_ids: Iterable[str],
        rule: DeliveryRule,
        *,
        min_delivered_fraction: Any = None,
        max_failed_fraction: Any = None,
        started_at: float | None = None,
        search: Sequence[str] = (),
    ) -> None:
        ids = [validation.message_id(m, parameter=f"message_id[{n}]") for n, m in enumerate(message_ids)]
        self.message_ids = list(dict.fromkeys(ids))
        if not self.message_ids:
            raise ValueError("message_id=[] is empty; give one message id or a list of them.")
        self.rule = rule
        least = _fraction(min_delivered_fraction, "min_delivered_fraction", zero=False, one=True)
        most = _fraction(max_failed_fraction, "max_failed_fraction", zero=True, one=False)
        self.min_delivered = least if least is not None else 1.0 - (most or 0.0)
        self.max_failed = most if most is not None else 1.0 - (least or 1.0)
        self.started_at = time.time() if started_at is None else started_at
        self.search = list(search)
        self.statuses: dict[str, dict[str, Mapping[str, Any]]] = {}  # message id: recipient: its stats row
        self.unresolved = dict.fromkeys(self.message_ids)
        self.error: DeliveryOutcome | None = None
        #: Pages the last logs listing took; before one, what the messages alone would fill.
        self.listing_pages = math.ceil(len(self.message_ids) / LISTING_PAGE_SIZE)

    @property
    def label(self) -> str:
        """Return how messages name the wait."""
        return f"{len(self.message_ids):,} messages"

    def thresholds(self) -> dict[str, float]:
        """Return the fractions as resolved (each default filled in), as keyword arguments that rebuild them."""
        return {"min_delivered_fraction": self.min_delivered, "max_failed_fraction": self.max_failed}

    def send_window(self, tz: tzinfo) -> tuple[date, date]:
        """Return the account-local days the messages were sent in: from the day before the wait began to today."""
        first = datetime.fromtimestamp(self.started_at, tz).date() - timedelta(days=1)
        return first, max(first, datetime.now(tz).date())

    def poll(self, hook: KaleyraEmailHook) -> DeliveryOutcome:
        """Poll what is unresolved, the cheaper way, through the sync hook; return the outcome."""
        if self.poll_by_stats():
            for message_id in list(self.unresolved):
                try:
                    self.record_stats(message_id, hook.get_message_stats(message_id))
                except KaleyraEmailAPIError as error:
                    self.record_error(message_id, error)
            return self.outcome()
        first, last = self.send_window(hook.timezone)
        try:
            self.record_listing(
                hook.iter_log_pages(first, last, search=self.search or None, page_size=LISTING_PAGE_SIZE)
            )
        except KaleyraEmailAPIError as error:
            self.record_listing_error(error)
        return self.outcome()

    async def apoll(self, hook: KaleyraEmailAsyncHook) -> DeliveryOutcome:
        """Poll as :meth:`poll` does, through the async hook, the ``stats/<id>`` requests at once."""
        if self.poll_by_stats():
            ids = list(self.unresolved)
            answers = await asyncio.gather(*map(hook.get_message_stats, ids), return_exceptions=True)
            for message_id, answer in zip(ids, answers, strict=True):
                if isinstance(answer, KaleyraEmailAPIError):
                    self.record_error(message_id, answer)
                elif isinstance(answer, BaseException):
                    raise answer
                else:
                    self.record_stats(message_id, answer)
            return self.outcome()
        first, last = self.send_window(ZoneInfo((await hook.get_config()).timezone))
        try:
            self.record_listing([page.rows async for page in hook.iter_log_rows(first, last, search=self.search)])
        except KaleyraEmailAPIError as error:
            self.record_listing_error(error)
        return self.outcome()

    def record_stats(self, message_id: str, answer: Mapping[str, Any]) -> None:
        """Note a ``stats/<message id>`` answer."""
        rows = [r for r in answer.get("recipients") or [] if isinstance(r, Mapping) and text_of(r.get("to"))]
        self._note(message_id, {text_of(row["to"]): row for row in rows})

    def record_error(self, message_id: str, error: KaleyraEmailAPIError) -> None:
        """Note a failed ``stats/<message id>`` poll: "not yet", or an error that ends the wait."""
        outcome = self.rule.judge_error(message_id, error, waited=time.time() - self.started_at)
        if outcome.done:
            self.error = DeliveryOutcome("error", self.label, outcome.message)

    def record_rows(self, rows: Iterable[Mapping[str, Any]]) -> None:
        """Note log rows: each gives its status to every address of its batch (``to_mail``)."""
        for row in rows:
            message_id = text_of(row.get("message_id"))
            if message_id in self.unresolved:
                stats = {"status": row.get("status"), "error_code": "", "error_message": row.get("description")}
                addresses = map(text_of, str(row.get("to_mail")).split(","))
                self._note(message_id, {address: stats for address in addresses})

    def record_listing_error(self, error: KaleyraEmailAPIError) -> None:
        """Note a failed logs listing: "not yet" when worth another try, else an error that ends the wait."""
        if isinstance(error, KaleyraEmailTransientError):
            log.warning("%s: the logs listing failed; still waiting, within timeout: %s", self.label, error)
        else:
            self.error = DeliveryOutcome("error", self.label, f"Cannot list the logs for {self.label}: {error}")

    def record_listing(self, pages: Iterable[Iterable[Mapping[str, Any]]]) -> None:
        """Note a logs listing's pages of rows (:meth:`record_rows`), and their number: the price of the next one."""
        count = 0
        for rows in pages:
            self.record_rows(rows)
            count += 1
        self.listing_pages = max(1, count)

    def poll_by_stats(self) -> bool:
        """Return whether a request per unresolved message costs no more than a logs listing."""
        return len(self.unresolved) <= self.listing_pages

    def outcome(self) -> DeliveryOutcome:
        """Return what the wait has come to: an error noted, success, failure, or still waiting."""
        if self.error is not None:
            return self.error
        counts = self.counts()
        total, delivered, failed = counts["recipients"], counts["delivered"], counts["failed"]
        needed = math.ceil(self.min_delivered * total - 1e-9)
        allowed = math.floor(self.max_failed * total + 1e-9)
        # Every outcome carries the failures, a waiting one too: it is what a timeout reports and writes.
        failures = tuple(self.failures())[:MAX_FAILURES_IN_OUTCOME]
        summary = (
            f"{delivered:,} of {total:,} recipients delivered, {failed:,} failed, {counts['in_flight']:,} in flight"
        )
        if failed > allowed or total - failed < needed:
            limits = f"max_failed_fraction={self.max_failed:g}, min_delivered_fraction={self.min_delivered:g}"
            text = f"{self.label} will not reach enough recipients ({limits}): {summary}."
            return DeliveryOutcome("failure", self.label, text, None, failures, counts)
        if delivered >= needed:
            text = f"{self.label} reached their recipients: {summary}."
            return DeliveryOutcome("success", self.label, text, None, failures, counts)
        return DeliveryOutcome("waiting", self.label, summary, None, failures, counts)

    def counts(self) -> dict[str, Any]:
        """Return the recipients: in all, delivered, failed and in flight, and per status as Kaleyra spelled it."""
        per_status: dict[str, int] = {}
        delivered = failed = 0
        for rows in self.statuses.values():
            for row in rows.values():
                status = MessageStatus.parse(row.get("status"))
                delivered += status in self.rule.delivered
                failed += status in self.rule.failed
                text = text_of(row.get("status")).upper() or "NO STATUS"
                per_status[text] = per_status.get(text, 0) + 1
        total = sum(map(len, self.statuses.values())) + len(self.message_ids) - len(self.statuses)
        return {
            "messages": len(self.message_ids),
            "recipients": total,
            "delivered": delivered,
            "failed": failed,
            "in_flight": total - delivered - failed,
            "statuses": per_status,
        }

    def failures(self) -> Iterator[dict[str, str]]:
        """Yield each failed recipient: ``message_id``, ``recipient``, ``status``, ``error_code``, ``error_message``."""
        for message_id, rows in self.statuses.items():
            for address, row in rows.items():
                if MessageStatus.parse(row.get("status")) in self.rule.failed:
                    yield {"message_id": message_id, **failure_of(address, row)}

    def _note(self, message_id: str, rows: dict[str, Mapping[str, Any]]) -> None:
        rows.pop("", None)
        if not rows:
            return
        self.statuses[message_id] = rows
        terminal = self.rule.delivered | self.rule.failed
        if all(MessageStatus.parse(row.get("status")) in terminal for row in rows.values()):
            self.unresolved.pop(message_id, None)


def _fraction(value: Any, parameter: str, *, zero: bool, one: bool) -> float | None:
    """Return ``value`` as a fraction, ``None`` for none; 0 and 1 only where ``zero`` and ``one`` allow."""
    if value is None:
        return None
    try:
        number = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError):
        number = math.nan
    if not ((number > 0 or (zero and number == 0)) and (number < 1 or (one and number == 1))):
        raise ValueError(f"{parameter}={value!r} is not a fraction in {'[' if zero else '('}0, 1{']' if one else ')'}.")
    return number
