"""
When has a message reached its recipients? One rule, for the sensor and the trigger alike.

- A chosen recipient (default: every one the message has) is delivered when its status is one of
  ``delivered``, failed when it is one of ``failed``, and otherwise in flight: also with no status
  yet, or with a status Kaleyra does not document (logged once).
- ``require="all"`` succeeds when all are delivered and fails when one has failed; ``require="any"``
  succeeds when one is delivered and fails when all have. A recipient the message lacks is an error.
- A failed poll: a failure worth another try (429, 5xx, timeout, dropped connection) is "not yet";
  a 404 is "not visible yet" for ``not_found_grace`` seconds into the wait (callers say how long
  they waited), then an error; any other refusal (400, 401, 403) is an error. No error streak is
  kept: ``timeout`` alone bounds the wait.
- A list of message ids is one wait counted by recipient, with thresholds: :class:`CampaignWait`.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
from collections.abc import Iterable, Iterator, Mapping
from datetime import date, datetime, timedelta, tzinfo
from enum import Enum
from http import HTTPStatus
from typing import Any, Literal

from airflow_provider_kaleyra_email import validation
from airflow_provider_kaleyra_email.exceptions import KaleyraEmailAPIError, KaleyraEmailTransientError

log = logging.getLogger(__name__)

#: Kaleyra documents no delay before a sent message is visible; 2 minutes covers it and fails a typo fast.
DEFAULT_NOT_FOUND_GRACE = 120.0


class MessageStatus(str, Enum):
    """A delivery status Kaleyra documents; it knows what it means for a wait by default."""

    ACCEPTED = "ACCEPTED"
    DEFERRED = "DEFERRED"
    DELIVERED = "DELIVERED"
    OPEN = "OPEN"
    BOUNCE = "BOUNCE"
    BLOCKED = "BLOCKED"
    FAILED = "FAILED"
    SUPPRESSED = "SUPPRESSED"

    @property
    def is_delivered(self) -> bool:
        """Return whether the mail reached the recipient (delivered, or already opened)."""
        return self in (MessageStatus.DELIVERED, MessageStatus.OPEN)

    @property
    def is_failed(self) -> bool:
        """Return whether the mail will never reach the recipient."""
        return self in (MessageStatus.BOUNCE, MessageStatus.BLOCKED, MessageStatus.FAILED, MessageStatus.SUPPRESSED)

    @property
    def is_terminal(self) -> bool:
        """Return whether a wait for this recipient is over, delivered or failed."""
        return self.is_delivered or self.is_failed

    @classmethod
    def parse(cls, text: Any) -> MessageStatus | None:
        """Return the status ``text`` names in any case; ``None`` (in flight) for none or an unknown one."""
        name = "" if text is None else str(text).strip().upper()
        if name and name not in cls.__members__:
            _log_unknown_once(name)
        return cls.__members__.get(name)


@functools.lru_cache(maxsize=256)
def _log_unknown_once(name: str) -> None:
    log.warning("Kaleyra status %r is not one it documents; treating it as still in flight.", name)


DEFAULT_DELIVERED_STATUSES = tuple(status for status in MessageStatus if status.is_delivered)
DEFAULT_FAILED_STATUSES = tuple(status for status in MessageStatus if status.is_failed)


@dataclasses.dataclass(frozen=True)
class DeliveryOutcome:
    """
    What a poll, or a whole wait, came to; the trigger fires it as a plain-JSON event.

    :param status: ``success``, ``failure``, ``waiting``, ``error`` or ``timeout``; all but ``waiting`` end a wait.
    :param message_id: the message waited on; for a list, how many (``CampaignWait.label``).
    :param message: a sentence for the log, or the task's error.
    :param statuses: every recipient of the message and its status as Kaleyra spelled it, once it answered.
    :param failures: the chosen recipients that failed: ``recipient``, ``status``, ``error_code``,
        ``error_message`` (and ``message_id``, for a list).
    :param counts: for a list, :meth:`CampaignWait.counts`.
    """

    status: Literal["success", "failure", "waiting", "error", "timeout"]
    message_id: str
    message: str
    statuses: dict[str, str] | None = None
    failures: tuple[dict[str, str], ...] = ()
    counts: dict[str, Any] | None = None

    @property
    def done(self) -> bool:
        """Return whether the outcome ends the wait."""
        return self.status != "waiting"

    def timed_out(self, timeout: float) -> DeliveryOutcome:
        """Return the timeout of a wait whose last check, made at the deadline, came to this outcome."""
        seen = _listing(self.statuses) if self.statuses else self.message
        what = f"{self.message_id} were" if self.counts is not None else f"Message {self.message_id} was"
        text = f"{what} not delivered within timeout={timeout:g} s (the last check: {seen})."
        return DeliveryOutcome("timeout", self.message_id, text, self.statuses, self.failures, self.counts)

    def to_event(self) -> dict[str, Any]:
        """Return the outcome as a plain JSON dict: what the trigger fires and ``execute_complete`` reads."""
        event = {**dataclasses.asdict(self), "failures": [dict(failure) for failure in self.failures]}
        if self.counts is None:  # a single id's event, as earlier releases fired it
            del event["counts"]
        return event

    @classmethod
    def from_event(cls, event: Any) -> DeliveryOutcome:
        """Read an event back; anything that is not a final outcome is an error, never a success."""
        data: Mapping[str, Any] = event if isinstance(event, Mapping) else {}
        status, message_id, statuses = data.get("status"), str(data.get("message_id") or ""), data.get("statuses")
        if status not in ("success", "failure", "error", "timeout"):
            return cls("error", message_id, f"The trigger sent an event with no final status: {event!r}")
        failures = tuple(
            {**({"message_id": _text(f["message_id"])} if "message_id" in f else {}), **_failure(f.get("recipient"), f)}
            for f in data.get("failures") or []
            if isinstance(f, Mapping)
        )
        statuses = {str(k): str(v) for k, v in statuses.items()} if isinstance(statuses, Mapping) else None
        counts = data.get("counts") if isinstance(data.get("counts"), Mapping) else None
        return cls(status, message_id, str(data.get("message") or status), statuses, failures, counts)


class DeliveryRule:
    """
    The rule of this module's docstring, each argument checked (a ``ValueError`` names a bad one).

    :param recipients: the address, or addresses, to wait for; ``None`` means all of the message's.
    :param require: ``"all"`` or ``"any"`` of them.
    :param delivered_statuses: status names that count as delivered.
    :param failed_statuses: status names that count as a terminal failure (may be empty).
    :param not_found_grace: seconds (or a ``timedelta``) into the wait during which a 404 means "not visible yet".
    """

    def __init__(
        self,
        *,
        recipients: Any = None,
        require: Any = "all",
        delivered_statuses: Any = DEFAULT_DELIVERED_STATUSES,
        failed_statuses: Any = DEFAULT_FAILED_STATUSES,
        not_found_grace: Any = DEFAULT_NOT_FOUND_GRACE,
    ) -> None:
        if require not in ("all", "any"):
            raise ValueError(f"require={require!r} is not one of ('all', 'any').")
        self.recipients, self.require = _recipients(recipients), str(require)
        self.delivered = parse_statuses(delivered_statuses, "delivered_statuses")
        self.failed = parse_statuses(failed_statuses, "failed_statuses", allow_empty=True)
        if both := sorted(status.value for status in self.delivered & self.failed):
            raise ValueError(f"delivered_statuses and failed_statuses both hold {both}; a status cannot mean both.")
        grace = not_found_grace.total_seconds() if isinstance(not_found_grace, timedelta) else not_found_grace
        self.not_found_grace = validation.positive_number(grace, parameter="not_found_grace")

    def serialize(self) -> dict[str, Any]:
        """Return the rule as JSON-safe keyword arguments that rebuild it."""
        return {
            "recipients": None if self.recipients is None else list(self.recipients),
            "require": self.require,
            "delivered_statuses": sorted(status.value for status in self.delivered),
            "failed_statuses": sorted(status.value for status in self.failed),
            "not_found_grace": self.not_found_grace,
        }

    def judge(self, message_id: str, answer: Mapping[str, Any]) -> DeliveryOutcome:
        """Return what one ``stats/<message id>`` answer, with its ``recipients``, means for the wait."""
        rows = {_text(r.get("to")).casefold(): r for r in answer.get("recipients") or [] if isinstance(r, Mapping)}
        rows.pop("", None)
        statuses = {_text(row["to"]): _text(row.get("status")) for row in rows.values()}
        if rows and (missing := [a for a in self.recipients or () if a.casefold() not in rows]):
            text = f"Message {message_id} has no recipient {', '.join(missing)}; it has {_listing(statuses)}."
            hint = "Check recipients= (each message id of a send covers one recipient batch)."
            return DeliveryOutcome("error", message_id, f"{text} {hint}", statuses)
        keys = rows if self.recipients is None else [a.casefold() for a in self.recipients if a.casefold() in rows]
        chosen = {_text(rows[key]["to"]): MessageStatus.parse(rows[key].get("status")) for key in keys}
        delivered = [address for address, status in chosen.items() if status in self.delivered]
        failed = [address for address, status in chosen.items() if status in self.failed]
        failures = [_failure(address, rows[address.casefold()]) for address in failed]
        who = f"{self.require} of {'its recipients' if self.recipients is None else ', '.join(self.recipients)}"
        if chosen and (len(delivered) == len(chosen) or (delivered and self.require == "any")):
            text = f"Message {message_id} reached {who}: {_listing(statuses)}."
            return DeliveryOutcome("success", message_id, text, statuses)
        if failures and (self.require == "all" or len(failures) == len(chosen)):
            text = f"Message {message_id} will not reach {who}: {'; '.join(map(_describe, failures))}."
            return DeliveryOutcome("failure", message_id, text, statuses, tuple(failures))
        pending = [f"{a} ({statuses[a] or 'no status'})" for a in chosen if a not in delivered + failed]
        waiting_for = ", ".join(pending) or "Kaleyra to list its recipients"
        return DeliveryOutcome("waiting", message_id, f"waiting for {waiting_for}", statuses)

    def judge_error(self, message_id: str, error: KaleyraEmailAPIError, *, waited: float) -> DeliveryOutcome:
        """Return what a failed poll, ``waited`` seconds into the wait, means for it."""
        if isinstance(error, KaleyraEmailTransientError):
            log.warning("Message %s: the poll failed; still waiting, within timeout: %s", message_id, error)
            return DeliveryOutcome("waiting", message_id, f"the poll failed: {error}")
        if error.status_code != HTTPStatus.NOT_FOUND:
            return DeliveryOutcome("error", message_id, f"Cannot check message {message_id}: {error}")
        if waited < self.not_found_grace:
            log.info("Message %s is not visible yet (HTTP 404 %.1f s into the wait).", message_id, waited)
            return DeliveryOutcome("waiting", message_id, "not visible yet (HTTP 404)")
        when = f"{waited:.0f} s into the wait (not_found_grace={self.not_found_grace:g} s)"
        text = f"Kaleyra still does not know message {message_id} {when}; check the id. {error}"
        return DeliveryOutcome("error", message_id, text)


def parse_statuses(value: Any, parameter: str, allow_empty: bool = False) -> frozenset[MessageStatus]:
    """Return the statuses ``value`` names (one or a list, any case); a ``ValueError`` names ``parameter``."""
    # A typo such as "BOUNCED" is refused: ignored, it would make a bounce wait until the timeout.
    items = list(value) if isinstance(value, Iterable) and not isinstance(value, str | bytes | Mapping) else [value]
    known = ", ".join(MessageStatus.__members__)
    if bad := [i for i in items if not isinstance(i, str) or i.strip().upper() not in MessageStatus.__members__]:
        raise ValueError(f"{parameter} holds {bad[0]!r}, which is not a Kaleyra status; use any of {known}.")
    if not items and not allow_empty:
        raise ValueError(f"{parameter}={value!r} is empty; give at least one of {known}.")
    return frozenset(MessageStatus[item.strip().upper()] for item in items)


def _recipients(value: Any) -> tuple[str, ...] | None:
    # Compared without regard to case, first spelling kept. A rendered list ("['a@x.com']") is a common slip.
    if value is None:
        return None
    items = list(value) if isinstance(value, list | tuple | set | frozenset) else [value]
    if not items or (isinstance(value, str) and value.strip().startswith(("[", "("))):
        hint = "or render templates as native objects (render_template_as_native_obj=True)"
        raise ValueError(f"recipients={value!r} is not an address or a list of them; pass None for all, {hint}.")
    addresses: dict[str, str] = {}
    for index, item in enumerate(items):
        address = validation.email_address(item, parameter=f"recipients[{index}]").strip()
        addresses.setdefault(address.casefold(), address)
    return tuple(addresses.values())


def _failure(recipient: Any, row: Mapping[str, Any]) -> dict[str, str]:
    fields = ("status", "error_code", "error_message")
    return {"recipient": _text(recipient), **{field: _text(row.get(field)) for field in fields}}


def _describe(failure: Mapping[str, str]) -> str:
    code, text = failure["error_code"], failure["error_message"]
    why = f"Kaleyra error {code}: {text}" if code and text else text or (f"Kaleyra error {code}" if code else "")
    return f"{failure['recipient']} is {failure['status']} ({why or 'Kaleyra gave no error text'})"


def _listing(statuses: Mapping[str, str] | None) -> str:
    return ", ".join(f"{address} {status}" for address, status in (statuses or {}).items()) or "no recipients"


def _text(value: Any) -> str:
    return "" if value is None else str(value).strip()


#: The most failures a list's outcome carries (its trigger event is stored in Airflow's database).
MAX_FAILURES_IN_OUTCOME = 5_000
#: Rows per page of a list's logs listing: the API's maximum.
LISTING_PAGE_SIZE = 100


def campaign_days(started_at: float, tz: tzinfo) -> tuple[date, date]:
    """Return the send window of a wait begun at ``started_at``: the account-local days from the one before to today."""
    first = datetime.fromtimestamp(started_at, tz).date() - timedelta(days=1)
    return first, max(first, datetime.now(tz).date())


class CampaignWait:
    """
    A wait on many message ids at once, counted by recipient (one per address of each message).

    Until a message is found, it counts as one recipient in flight. With ``n`` recipients, the
    wait fails once more than ``max_failed_fraction`` of ``n`` failed, or once
    ``min_delivered_fraction`` of ``n`` can no longer be delivered; it succeeds once that many
    are delivered. Each fraction defaults to one minus the other; with neither, every recipient
    must be delivered and one failure fails the wait. Only unresolved messages are polled again.

    :param message_ids: the messages, in the order given; repeats are dropped.
    :param rule: the statuses that count as delivered and failed, and ``not_found_grace``.
    :param min_delivered_fraction: the share of recipients to be delivered, in (0, 1].
    :param max_failed_fraction: the share of recipients allowed to fail, in [0, 1).
    """

    def __init__(
        self,
        message_ids: Iterable[str],
        rule: DeliveryRule,
        *,
        min_delivered_fraction: Any = None,
        max_failed_fraction: Any = None,
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
        self.statuses: dict[str, dict[str, Mapping[str, Any]]] = {}  # message id: recipient: its stats row
        self.unresolved = dict.fromkeys(self.message_ids)
        self.error: DeliveryOutcome | None = None
        #: Pages the last logs listing took; before one, what the messages alone would fill.
        self.listing_pages = math.ceil(len(self.message_ids) / LISTING_PAGE_SIZE)

    @property
    def label(self) -> str:
        """Return how messages name the wait."""
        return f"{len(self.message_ids):,} messages"

    def record_stats(self, message_id: str, answer: Mapping[str, Any]) -> None:
        """Note a ``stats/<message id>`` answer."""
        rows = [r for r in answer.get("recipients") or [] if isinstance(r, Mapping) and _text(r.get("to"))]
        self._note(message_id, {_text(row["to"]): row for row in rows})

    def record_error(self, message_id: str, error: KaleyraEmailAPIError, *, waited: float) -> None:
        """Note a failed ``stats/<message id>`` poll: "not yet", or an error that ends the wait."""
        outcome = self.rule.judge_error(message_id, error, waited=waited)
        if outcome.done:
            self.error = DeliveryOutcome("error", self.label, outcome.message)

    def record_rows(self, rows: Iterable[Mapping[str, Any]]) -> None:
        """Note log rows: each gives its status to every address of its batch (``to_mail``)."""
        for row in rows:
            message_id = _text(row.get("message_id"))
            if message_id in self.unresolved:
                stats = {"status": row.get("status"), "error_code": "", "error_message": row.get("description")}
                self._note(message_id, {address: stats for address in map(_text, str(row.get("to_mail")).split(","))})

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
        failures = tuple(self.failures())
        summary = (
            f"{delivered:,} of {total:,} recipients delivered, {failed:,} failed, {counts['in_flight']:,} in flight"
        )
        if failed > allowed or total - failed < needed:
            limits = f"max_failed_fraction={self.max_failed:g}, min_delivered_fraction={self.min_delivered:g}"
            text = f"{self.label} will not reach enough recipients ({limits}): {summary}."
            return DeliveryOutcome("failure", self.label, text, None, failures[:MAX_FAILURES_IN_OUTCOME], counts)
        if delivered >= needed:
            text = f"{self.label} reached their recipients: {summary}."
            return DeliveryOutcome("success", self.label, text, None, failures[:MAX_FAILURES_IN_OUTCOME], counts)
        # A waiting outcome carries the failures too: it is what a timeout reports and writes.
        return DeliveryOutcome("waiting", self.label, summary, None, failures[:MAX_FAILURES_IN_OUTCOME], counts)

    def counts(self) -> dict[str, Any]:
        """Return the recipients: in all, delivered, failed and in flight, and per status as Kaleyra spelled it."""
        per_status: dict[str, int] = {}
        delivered = failed = 0
        for rows in self.statuses.values():
            for row in rows.values():
                status = MessageStatus.parse(row.get("status"))
                delivered += status in self.rule.delivered
                failed += status in self.rule.failed
                text = _text(row.get("status")).upper() or "NO STATUS"
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
                    yield {"message_id": message_id, **_failure(address, row)}

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
