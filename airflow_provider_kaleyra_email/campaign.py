"""
A wait on many messages at once (a campaign), counted by recipient; the sensor and the trigger poll it alike.

- Each address of each message is one recipient; a message not found yet counts as one. The wait
  fails once more than ``max_failed_fraction`` of them failed, or ``min_delivered_fraction`` is out
  of reach, and succeeds once that many are delivered. Each defaults to one minus the other, else 1.
- A poll reads what is unresolved the cheaper way: ``stats/<id>`` each while they are no more than
  the pages of the send window's logs listing (from the account-local day before the wait began),
  else that listing, left after page 1 when its ``total`` says the rest outnumbers them.
- What a whole listing did not show is looked up by id, ``MAX_LOOKUPS_PER_POLL`` a poll, the longest
  ago first. When the wait ends, failures seen only in the logs get Kaleyra's error by id (at most
  ``MAX_FAILURE_LOOKUPS``).
"""

from __future__ import annotations

import collections
import itertools
import math
import time
from contextlib import aclosing, closing
from datetime import date, datetime, timedelta, tzinfo
from typing import TYPE_CHECKING, Any, cast
from zoneinfo import ZoneInfo

from airflow_provider_kaleyra_email import validation
from airflow_provider_kaleyra_email.delivery import (
    DeliveryOutcome,
    DeliveryRule,
    MessageWait,
    alookups,
    failure_of,
    log,
    lookups,
    recipient_rows,
    text_of,
)
from airflow_provider_kaleyra_email.exceptions import KaleyraEmailAPIError, KaleyraEmailTransientError

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, Iterable, Iterator, Mapping, Sequence

    from airflow_provider_kaleyra_email.hooks.kaleyra_email import KaleyraEmailAsyncHook, KaleyraEmailHook, Page

#: A trigger event is stored in Airflow's database: the most failures an outcome carries.
MAX_FAILURES_IN_OUTCOME = 5_000
LISTING_PAGE_SIZE = 100  # the API's maximum
MAX_LOOKUPS_PER_POLL = 100  # a listing page's worth
MAX_FAILURE_LOOKUPS = 200


def wait_for(
    message_id: Any,
    rule: DeliveryRule,
    *,
    recipients: Any = None,
    search: Any = None,
    min_delivered_fraction: Any = None,
    max_failed_fraction: Any = None,
    started_at: float | None = None,
) -> MessageWait | CampaignWait:
    """Return the wait on one message id, or on a list of them; a ``ValueError`` refuses what only the other takes."""
    if not isinstance(message_id, list | tuple):
        if (min_delivered_fraction, max_failed_fraction) != (None, None):
            raise ValueError(
                "min_delivered_fraction and max_failed_fraction are for a list of message ids; "
                f"message_id={message_id!r} is one (use recipients= and require= for its recipients)."
            )
        return MessageWait(message_id, rule, recipients=recipients, started_at=started_at)
    if recipients is not None or rule.require != "all":
        raise ValueError(
            f"recipients={recipients!r} and require={rule.require!r} choose among one message's recipients; with a "
            "list of message ids every recipient counts: use min_delivered_fraction or max_failed_fraction instead."
        )
    fractions = {"min_delivered_fraction": min_delivered_fraction, "max_failed_fraction": max_failed_fraction}
    return CampaignWait(message_id, rule, **fractions, started_at=started_at, search=validation.search_terms(search))


class CampaignWait:
    """The wait of this module's docstring on ``message_ids`` (repeats dropped), begun at ``started_at``."""

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
        self.rule, self.search, self.label = rule, list(search), f"{len(self.message_ids):,} messages"
        least = _fraction(min_delivered_fraction, "min_delivered_fraction", zero=False, one=True)
        most = _fraction(max_failed_fraction, "max_failed_fraction", zero=True, one=False)
        self.min_delivered = least if least is not None else 1.0 - (most or 0.0)
        self.max_failed = most if most is not None else 1.0 - (least or 1.0)
        self.started_at = time.time() if started_at is None else started_at
        self.statuses: dict[str, dict[str, Mapping[str, Any]]] = {}  # message id: recipient: its stats row
        self.unresolved = dict.fromkeys(self.message_ids)
        self.error: DeliveryOutcome | None = None
        self.listing_pages = 1  # from the last ``total`` seen
        self.looked_up: dict[str, float] = {}  # message id: when
        self.from_logs: set[str] = set()  # their statuses came from logs rows, which have no error code
        # The listing being read: the messages it showed, its pages read, whether it is read to its end.
        self._shown: set[str] = set()
        self._pages, self._whole = 0, True

    def serialize(self) -> dict[str, Any]:
        """Return the wait, its fractions resolved, as JSON-safe keyword arguments of the trigger."""
        fractions = {"min_delivered_fraction": self.min_delivered, "max_failed_fraction": self.max_failed}
        return {"message_id": self.message_ids, **self.rule.serialize(), **fractions, "search": self.search}

    def send_window(self, tz: tzinfo) -> tuple[date, date]:
        """Return the account-local days the messages were sent in: from the day before the wait began to today."""
        first = datetime.fromtimestamp(self.started_at, tz).date() - timedelta(days=1)
        return first, max(first, datetime.now(tz).date())

    def poll(self, hook: KaleyraEmailHook, *, deadline: float | None = None) -> DeliveryOutcome:
        """Poll what is unresolved, the cheaper way, through the sync hook; a timeout once ``deadline`` passed."""
        ids = list(self.unresolved)
        if not self.poll_by_stats():
            first, last = self.send_window(hook.timezone)
            self._shown, self._pages, self._whole = set(), 0, True
            try:
                # The window includes today, whose rows move while they are listed: counts need not add up.
                pages = hook.iter_log_pages(
                    first, last, search=self.search or None, page_size=LISTING_PAGE_SIZE, allow_count_mismatch=True
                )
                with closing(pages):
                    for rows in pages:
                        if not self.take_page(rows, pages.listing.total):
                            break
                ids = self.to_look_up()
            except KaleyraEmailAPIError as error:
                self.record_listing_error(error)
                ids = []
        self.record_answers(ids, lookups(hook, ids))
        ended = _passed(deadline)
        outcome = self.outcome().timed_out(ended, self.started_at)
        if ids := self.undetailed(outcome):
            self.record_answers(ids, lookups(hook, ids), detail=True)
            outcome = self.outcome().timed_out(ended, self.started_at)
        return outcome

    async def apoll(self, hook: KaleyraEmailAsyncHook, *, deadline: float | None = None) -> DeliveryOutcome:
        """Do what :meth:`poll` does, through the async hook: pages used as they come, ``stats/<id>`` at once."""
        ids = list(self.unresolved)
        if not self.poll_by_stats():
            config = await hook.get_config()
            first, last = self.send_window(ZoneInfo(config.timezone))
            self._shown, self._pages, self._whole = set(), 0, True
            listing = cast("AsyncGenerator[Page, None]", hook.iter_log_rows(first, last, search=self.search))
            try:
                async with aclosing(listing) as pages:
                    async for page in pages:
                        if not self.take_page(page.rows, page.total, config.page_size):
                            break
                ids = self.to_look_up()
            except KaleyraEmailAPIError as error:
                self.record_listing_error(error)
                ids = []
        self.record_answers(ids, await alookups(hook, ids))
        ended = _passed(deadline)
        outcome = self.outcome().timed_out(ended, self.started_at)
        if ids := self.undetailed(outcome):
            self.record_answers(ids, await alookups(hook, ids), detail=True)
            outcome = self.outcome().timed_out(ended, self.started_at)
        return outcome

    def record_answers(self, ids: Sequence[str], answers: Sequence[Any], *, detail: bool = False) -> None:
        """Note ``stats/<id>`` answers or their API errors; with ``detail``, an error keeps what the logs said."""
        for message_id, answer in zip(ids, answers, strict=True):
            if isinstance(answer, KaleyraEmailAPIError) and detail:
                log.warning("%s: keeping the logs' description of its failure: %s", message_id, answer)
            elif isinstance(answer, KaleyraEmailAPIError):
                self.record_error(message_id, answer)
            else:
                self.record_stats(message_id, answer)

    def undetailed(self, outcome: DeliveryOutcome) -> list[str]:
        """Return, once ``outcome`` ends the wait, the first ``MAX_FAILURE_LOOKUPS`` messages failed only in logs."""
        if self.error is not None or not outcome.done:
            return []
        ids = (m for m in self.message_ids if m in self.from_logs)
        failed = (m for m in ids if any(self._state(row) == "failed" for row in self.statuses[m].values()))
        return list(itertools.islice(failed, MAX_FAILURE_LOOKUPS))

    def take_page(
        self, rows: Iterable[Mapping[str, Any]], total: int | None, page_size: int = LISTING_PAGE_SIZE
    ) -> bool:
        """Note a listing's next page; return whether to read on: after page 1, if the rest costs no more than by id."""
        self._shown.update(self.record_rows(rows))
        self._pages += 1
        if self._pages > 1:
            return True
        if total is None:  # a listing of unknown size may cost anything
            self._whole = False
            return False
        self.listing_pages = max(1, math.ceil(total / page_size))
        self._whole = self.listing_pages - 1 <= len(self.unresolved)
        if not self._whole:
            log.info(
                "%s: the logs listing has %s rows (%s pages); polling its %s unresolved messages by id instead.",
                self.label, f"{total:,}", f"{self.listing_pages:,}", f"{len(self.unresolved):,}",
            )  # fmt: skip
        return self._whole

    def to_look_up(self) -> list[str]:
        """Return what to look up by id after a listing: all unresolved if it was left, else what it did not show."""
        if not self._whole:
            return list(self.unresolved)
        missing = [m for m in self.unresolved if m not in self._shown]
        return sorted(missing, key=lambda message_id: self.looked_up.get(message_id, 0.0))[:MAX_LOOKUPS_PER_POLL]

    def record_stats(self, message_id: str, answer: Mapping[str, Any]) -> None:
        """Note a ``stats/<message id>`` answer."""
        self.looked_up[message_id] = time.time()
        if self._note(message_id, recipient_rows(answer)):
            self.from_logs.discard(message_id)

    def record_error(self, message_id: str, error: KaleyraEmailAPIError) -> None:
        """Note a failed ``stats/<message id>`` poll: "not yet", or an error that ends the wait."""
        self.looked_up[message_id] = time.time()
        outcome = self.rule.judge_error(message_id, error, waited=time.time() - self.started_at)
        if outcome.done:
            self.error = DeliveryOutcome("error", self.label, outcome.message)

    def record_rows(self, rows: Iterable[Mapping[str, Any]]) -> set[str]:
        """Note log rows: each gives its status to every address of its batch (``to_mail``); return the ids noted."""
        noted = set()
        for row in rows:
            message_id = text_of(row.get("message_id"))
            if message_id in self.unresolved:
                stats = {"status": row.get("status"), "error_code": "", "error_message": row.get("description")}
                addresses = map(text_of, str(row.get("to_mail")).split(","))
                if self._note(message_id, {address: stats for address in addresses if address}):
                    self.from_logs.add(message_id)
                    noted.add(message_id)
        return noted

    def record_listing_error(self, error: KaleyraEmailAPIError) -> None:
        """Note a failed logs listing: "not yet" when worth another try, else an error that ends the wait."""
        if isinstance(error, KaleyraEmailTransientError):
            log.warning("%s: the logs listing failed; still waiting, within timeout: %s", self.label, error)
        else:
            self.error = DeliveryOutcome("error", self.label, f"Cannot list the logs for {self.label}: {error}")

    def poll_by_stats(self) -> bool:
        """Return whether a request per unresolved message costs no more than the send window's listing."""
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
        failures = tuple(itertools.islice(self.failures(), MAX_FAILURES_IN_OUTCOME))
        summary = (
            f"{delivered:,} of {total:,} recipients delivered, {failed:,} failed, {counts['in_flight']:,} in flight"
        )
        if not_found := counts["not_found"]:
            summary += f", {not_found:,} message{'s' if not_found > 1 else ''} not found yet"
        if failed > allowed or total - failed < needed:
            limits = f"max_failed_fraction={self.max_failed:g}, min_delivered_fraction={self.min_delivered:g}"
            text = f"{self.label} will not reach enough recipients ({limits}): {summary}."
            return DeliveryOutcome("failure", self.label, text, None, failures, counts)
        if delivered >= needed:
            text = f"{self.label} reached their recipients: {summary}."
            return DeliveryOutcome("success", self.label, text, None, failures, counts)
        return DeliveryOutcome("waiting", self.label, summary, None, failures, counts)

    def counts(self) -> dict[str, Any]:
        """Return the recipients: in all, delivered, failed, in flight, of messages not found yet, and per status."""
        rows = [row for recipients in self.statuses.values() for row in recipients.values()]
        states = collections.Counter(map(self._state, rows))
        not_found = len(self.message_ids) - len(self.statuses)
        return {
            "messages": len(self.message_ids),
            "recipients": len(rows) + not_found,
            "delivered": states["delivered"],
            "failed": states["failed"],
            "in_flight": states[None],
            "not_found": not_found,
            "statuses": dict(collections.Counter(text_of(row.get("status")).upper() or "NO STATUS" for row in rows)),
        }

    def failures(self) -> Iterator[dict[str, str]]:
        """Yield each failed recipient: ``message_id``, ``recipient``, ``status``, ``error_code``, ``error_message``."""
        for message_id, rows in self.statuses.items():
            for address, row in rows.items():
                if self._state(row) == "failed":
                    yield {"message_id": message_id, **failure_of(address, row)}

    def _state(self, row: Mapping[str, Any]) -> str | None:
        return self.rule.classify(row.get("status"))

    def _note(self, message_id: str, rows: dict[str, Mapping[str, Any]]) -> bool:
        """Note a message's recipients and their statuses; return whether there were any."""
        if not rows:
            return False
        self.statuses[message_id] = rows
        if all(self._state(row) for row in rows.values()):
            self.unresolved.pop(message_id, None)
        return True


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


def _passed(deadline: float | None) -> float | None:
    """Return ``deadline`` once it has passed, else ``None``: read once per poll, so its parts cannot disagree."""
    return deadline if deadline is not None and time.time() >= deadline else None
