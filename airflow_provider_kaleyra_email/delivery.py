"""
When has a message reached its recipients? The one answer the sensor and the trigger both use.

:class:`DeliveryRule` reads one ``stats/<message id>`` answer and gives a verdict: delivered,
failed (with the recipient, its status and Kaleyra's error text) or still waiting.
:class:`DeliveryWatch` adds what waiting needs across polls: the streak of consecutive transient
errors and the grace for a message that is not visible yet, and turns every poll, answer or
error, into a :class:`Check`: succeed, fail, keep waiting, or give up.

The sensor (sync, ``requests``) and the trigger (async, ``httpx``) only fetch, and then ask the
watch, so every mode decides the same way. Nothing here does I/O or reads a clock: callers pass
``now``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from enum import Enum
from http import HTTPStatus
from typing import Any

from airflow_provider_kaleyra_email import validation
from airflow_provider_kaleyra_email.api import MessageStatus, StatusClass
from airflow_provider_kaleyra_email.exceptions import KaleyraEmailAPIError, KaleyraEmailRetriesExhaustedError

log = logging.getLogger(__name__)

#: The statuses DESIGN.md gives each class; derived from the enum so there is one list.
DEFAULT_DELIVERED_STATUSES: tuple[MessageStatus, ...] = tuple(
    status for status in MessageStatus if status.default_class is StatusClass.DELIVERED
)
DEFAULT_FAILED_STATUSES: tuple[MessageStatus, ...] = tuple(
    status for status in MessageStatus if status.default_class is StatusClass.FAILED
)
REQUIRE_CHOICES = ("all", "any")
#: How long a 404 counts as "sent a moment ago, not visible yet". Kaleyra does not document the
#: delay; two minutes covers any sane indexing lag and still fails a mistyped id quickly.
DEFAULT_NOT_FOUND_GRACE = 120.0
#: Polls in a row that may fail with 429, 5xx, a timeout or a dropped connection before the
#: wait gives up. With a 60 s poke interval, five is an outage of four minutes or more.
DEFAULT_MAX_CONSECUTIVE_ERRORS = 5
MAX_CONSECUTIVE_ERRORS = 1_000


# --------------------------------------------------------------------------------------------
# Arguments
# --------------------------------------------------------------------------------------------


def parse_require(value: Any) -> str:
    """``"all"`` (every chosen recipient) or ``"any"`` (at least one)."""
    if not isinstance(value, str) or value not in REQUIRE_CHOICES:
        raise ValueError(f"require={value!r} is not one of {REQUIRE_CHOICES}.")
    return value


def parse_statuses(value: Any, *, parameter: str, allow_empty: bool = False) -> frozenset[MessageStatus]:
    """
    A set of Kaleyra statuses from names (any case) or :class:`MessageStatus` members.

    A single string is one status. An unknown name is refused rather than ignored: a typo such as
    ``"BOUNCED"`` would otherwise make a bounce wait until the timeout.
    """
    items: list[Any]
    if isinstance(value, str | MessageStatus):
        items = [value]
    elif isinstance(value, Iterable) and not isinstance(value, Mapping | bytes):
        items = list(value)
    else:
        raise ValueError(f"{parameter}={value!r} must be a list of status names such as ['DELIVERED', 'OPEN'].")
    known = ", ".join(status.value for status in MessageStatus)
    statuses = set()
    for item in items:
        status = item if isinstance(item, MessageStatus) else None
        if status is None and isinstance(item, str):
            status = MessageStatus.parse(item)
        if status is None:
            raise ValueError(f"{parameter} holds {item!r}, which is not a Kaleyra status; use any of {known}.")
        statuses.add(status)
    if not statuses and not allow_empty:
        raise ValueError(f"{parameter}={value!r} is empty; give at least one of {known}.")
    return frozenset(statuses)


def parse_recipients(value: Any) -> tuple[str, ...] | None:
    """
    The recipients to wait for: ``None`` for all of the message's, else addresses (one string is one).

    Addresses are compared without regard to case and de-duplicated, first spelling kept.
    """
    if value is None:
        return None
    items: list[Any]
    if isinstance(value, str):
        if value.strip().startswith(("[", "(")):
            raise ValueError(
                f"recipients={value!r} is a rendered list, not an address; give a list of addresses, "
                "or render templates as native objects (render_template_as_native_obj=True)."
            )
        items = [value]
    elif isinstance(value, list | tuple | set | frozenset):
        items = list(value)
    else:
        raise ValueError(f"recipients={value!r} ({type(value).__name__}) must be an email address or a list of them.")
    if not items:
        raise ValueError("recipients=[] is empty; pass None to wait for all of the message's recipients.")
    addresses: dict[str, str] = {}
    for index, item in enumerate(items):
        address = validation.email_address(item, parameter=f"recipients[{index}]").strip()
        addresses.setdefault(address.casefold(), address)
    return tuple(addresses.values())


def seconds(value: Any, *, parameter: str) -> float:
    """A positive duration: seconds as a number, or a ``timedelta``."""
    if isinstance(value, timedelta):
        value = value.total_seconds()
    return validation.positive_number(value, parameter=parameter)


def error_limit(value: Any, *, parameter: str = "max_consecutive_errors") -> int:
    return validation.int_in_range(value, parameter=parameter, low=1, high=MAX_CONSECUTIVE_ERRORS)


# --------------------------------------------------------------------------------------------
# One answer
# --------------------------------------------------------------------------------------------


class Verdict(str, Enum):
    DELIVERED = "delivered"
    FAILED = "failed"
    WAITING = "waiting"


@dataclass(frozen=True)
class RecipientFailure:
    """A chosen recipient whose status is a failure, with Kaleyra's own words about it."""

    recipient: str
    status: str
    error_code: str = ""
    error_message: str = ""

    def describe(self) -> str:
        if self.error_code and self.error_message:
            why = f"Kaleyra error {self.error_code}: {self.error_message}"
        else:
            why = self.error_message or (f"Kaleyra error {self.error_code}" if self.error_code else "")
        return f"{self.recipient} is {self.status} ({why or 'Kaleyra gave no error text'})"

    def to_json(self) -> dict[str, str]:
        return {
            "recipient": self.recipient,
            "status": self.status,
            "error_code": self.error_code,
            "error_message": self.error_message,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RecipientFailure:
        return cls(
            recipient=str(data.get("recipient", "")),
            status=str(data.get("status", "")),
            error_code=str(data.get("error_code") or ""),
            error_message=str(data.get("error_message") or ""),
        )


@dataclass(frozen=True)
class Evaluation:
    """
    What one answer says about the chosen recipients.

    :param verdict: delivered, failed or waiting.
    :param statuses: every recipient of the message and its status, as Kaleyra spelled them.
    :param failures: chosen recipients in a failed status.
    :param pending: chosen recipients still in flight, as ``"address (STATUS)"``.
    :param unknown_statuses: statuses Kaleyra has not documented (treated as in flight).
    :param missing: chosen recipients the message does not have.
    """

    verdict: Verdict
    statuses: dict[str, str]
    failures: tuple[RecipientFailure, ...] = ()
    pending: tuple[str, ...] = ()
    unknown_statuses: frozenset[str] = frozenset()
    missing: tuple[str, ...] = ()


@dataclass(frozen=True)
class DeliveryRule:
    """
    Which recipients must reach which statuses.

    :param recipients: the recipients to wait for; ``None`` means all of the message's.
    :param require: ``"all"``: every chosen recipient is delivered, and any one failing fails the
        wait. ``"any"``: one delivered recipient is enough, and the wait fails only when every
        chosen recipient has failed.
    :param delivered: statuses that count as delivered.
    :param failed: statuses that count as a terminal failure. Any other status, including one
        Kaleyra has not documented, is still in flight.
    """

    recipients: tuple[str, ...] | None = None
    require: str = "all"
    delivered: frozenset[MessageStatus] = frozenset(DEFAULT_DELIVERED_STATUSES)
    failed: frozenset[MessageStatus] = frozenset(DEFAULT_FAILED_STATUSES)

    @classmethod
    def build(
        cls,
        *,
        recipients: Any = None,
        require: Any = "all",
        delivered_statuses: Any = DEFAULT_DELIVERED_STATUSES,
        failed_statuses: Any = DEFAULT_FAILED_STATUSES,
    ) -> DeliveryRule:
        """The rule from user arguments, each checked, with a ``ValueError`` naming the bad one."""
        delivered = parse_statuses(delivered_statuses, parameter="delivered_statuses")
        failed = parse_statuses(failed_statuses, parameter="failed_statuses", allow_empty=True)
        both = sorted(status.value for status in delivered & failed)
        if both:
            raise ValueError(f"delivered_statuses and failed_statuses both hold {both}; a status cannot mean both.")
        return cls(
            recipients=parse_recipients(recipients),
            require=parse_require(require),
            delivered=delivered,
            failed=failed,
        )

    def serialize(self) -> dict[str, Any]:
        """The rule as JSON-safe keyword arguments of :meth:`build`."""
        return {
            "recipients": None if self.recipients is None else list(self.recipients),
            "require": self.require,
            "delivered_statuses": sorted(status.value for status in self.delivered),
            "failed_statuses": sorted(status.value for status in self.failed),
        }

    def classify(self, status: str) -> StatusClass | None:
        """The class of a status under this rule; ``None`` for one Kaleyra has not documented."""
        parsed = MessageStatus.parse(status)
        if parsed is None:
            return None
        if parsed in self.delivered:
            return StatusClass.DELIVERED
        if parsed in self.failed:
            return StatusClass.FAILED
        return StatusClass.IN_FLIGHT

    def evaluate(self, message: Mapping[str, Any]) -> Evaluation:
        """The verdict on one ``stats/<message id>`` entry (with its ``recipients`` list)."""
        entries: dict[str, Mapping[str, Any]] = {}
        statuses: dict[str, str] = {}
        for entry in message.get("recipients") or []:
            if not isinstance(entry, Mapping) or not isinstance(entry.get("to"), str) or not entry["to"].strip():
                continue
            address = entry["to"].strip()
            entries[address.casefold()] = entry
            statuses[address] = _text(entry.get("status"))
        unknown = frozenset(status for status in statuses.values() if MessageStatus.parse(status) is None)
        if not entries:
            # Kaleyra has not listed anyone yet: nothing to decide on.
            return Evaluation(Verdict.WAITING, statuses, pending=("no recipients listed yet",))
        chosen = self.recipients if self.recipients is not None else tuple(statuses)
        missing = tuple(address for address in chosen if address.casefold() not in entries)
        if missing:
            return Evaluation(Verdict.WAITING, statuses, unknown_statuses=unknown, missing=missing)

        delivered: list[str] = []
        failures: list[RecipientFailure] = []
        pending: list[str] = []
        for address in chosen:
            entry = entries[address.casefold()]
            status = _text(entry.get("status"))
            kind = self.classify(status)
            if kind is StatusClass.DELIVERED:
                delivered.append(address)
            elif kind is StatusClass.FAILED:
                failures.append(
                    RecipientFailure(
                        recipient=_text(entry.get("to")),
                        status=status,
                        error_code=_text(entry.get("error_code")),
                        error_message=_text(entry.get("error_message")),
                    )
                )
            else:
                pending.append(f"{address} ({status or 'no status'})")

        if self.require == "all":
            if failures:
                verdict = Verdict.FAILED
            elif len(delivered) == len(chosen):
                verdict = Verdict.DELIVERED
            else:
                verdict = Verdict.WAITING
        elif delivered:
            verdict = Verdict.DELIVERED
        elif len(failures) == len(chosen):
            verdict = Verdict.FAILED
        else:
            verdict = Verdict.WAITING
        return Evaluation(verdict, statuses, tuple(failures), tuple(pending), unknown)


def _text(value: Any) -> str:
    return "" if value is None else str(value).strip()


# --------------------------------------------------------------------------------------------
# Polls
# --------------------------------------------------------------------------------------------


class CheckKind(str, Enum):
    """What a poll means; every kind but ``waiting`` ends the wait, and is a trigger event's ``status``."""

    SUCCESS = "success"
    FAILURE = "failure"
    WAITING = "waiting"
    ERROR = "error"
    TIMEOUT = "timeout"


@dataclass(frozen=True)
class Check:
    """
    The meaning of one poll, and, when it ends the wait, the trigger event that carries it.

    :param kind: success, failure, waiting, error or timeout.
    :param message_id: the message waited on.
    :param message: a sentence for the log or the task's error.
    :param statuses: every recipient and its status, when Kaleyra answered (the sensor's XCom).
    :param failures: the chosen recipients that failed.
    """

    kind: CheckKind
    message_id: str
    message: str
    statuses: dict[str, str] | None = None
    failures: tuple[RecipientFailure, ...] = ()

    @property
    def done(self) -> bool:
        return self.kind is not CheckKind.WAITING

    def to_event(self) -> dict[str, Any]:
        """A plain JSON dict: what the trigger fires and ``execute_complete`` reads."""
        return {
            "status": self.kind.value,
            "message_id": self.message_id,
            "message": self.message,
            "statuses": None if self.statuses is None else dict(self.statuses),
            "failures": [failure.to_json() for failure in self.failures],
        }

    @classmethod
    def from_event(cls, event: Any) -> Check:
        """Read an event back; anything that is not one of ours becomes an error, never a success."""
        if not isinstance(event, Mapping):
            return cls(CheckKind.ERROR, "", f"the trigger sent an event that is not a dict: {event!r}")
        message_id = str(event.get("message_id") or "")
        try:
            kind = CheckKind(event.get("status"))
        except ValueError:
            kind = CheckKind.WAITING
        if kind is CheckKind.WAITING:
            return cls(CheckKind.ERROR, message_id, f"the trigger sent an event with no final status: {event!r}")
        statuses = event.get("statuses")
        failures = event.get("failures") or []
        return cls(
            kind=kind,
            message_id=message_id,
            message=str(event.get("message") or f"the trigger reported {kind.value}"),
            statuses={str(k): str(v) for k, v in statuses.items()} if isinstance(statuses, Mapping) else None,
            failures=tuple(RecipientFailure.from_json(f) for f in failures if isinstance(f, Mapping)),
        )


@dataclass
class WatchState:
    """What must outlive one poll, JSON-safe so it can travel in trigger kwargs or a state store."""

    consecutive_errors: int = 0
    last_error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"consecutive_errors": self.consecutive_errors, "last_error": self.last_error}

    @classmethod
    def from_json(cls, data: Any) -> WatchState:
        if not isinstance(data, Mapping):
            return cls()
        errors = data.get("consecutive_errors")
        last = data.get("last_error")
        return cls(
            consecutive_errors=errors if isinstance(errors, int) and not isinstance(errors, bool) and errors > 0 else 0,
            last_error=last if isinstance(last, str) else None,
        )


@dataclass
class DeliveryWatch:
    """
    Waiting for one message: turns each poll into a :class:`Check`.

    - An answer is judged by the rule, and ends any error streak.
    - A transient failure (429, 5xx, timeout, dropped connection, unreadable body: the hooks raise
      :class:`KaleyraEmailRetriesExhaustedError` for these) is one more error in a row; the wait
      goes on until ``max_consecutive_errors`` polls in a row have failed.
    - HTTP 404 means "not visible yet" until ``not_found_grace`` seconds after ``started_at``
      (when the wait began; a message is sent just before it is waited on), then it is an error.
    - Any other API error (400, 401, 403, an error inside an HTTP 200, a redirect) ends the wait.

    :param message_id: the message waited on.
    :param rule: when the message counts as delivered or failed.
    :param started_at: when the wait began, in seconds since the epoch.
    :param not_found_grace: seconds after ``started_at`` during which a 404 is not an error.
    :param max_consecutive_errors: failed polls in a row after which the wait gives up.
    :param state: the error streak so far (from an earlier poke, or the sensor's poke before deferring).
    :param logger: where the watch says what it sees; statuses Kaleyra has not documented are
        logged once per watch.
    """

    message_id: str
    rule: DeliveryRule
    started_at: float
    not_found_grace: float = DEFAULT_NOT_FOUND_GRACE
    max_consecutive_errors: int = DEFAULT_MAX_CONSECUTIVE_ERRORS
    state: WatchState = field(default_factory=WatchState)
    logger: Any = field(default=log, repr=False)
    polls: int = field(default=0, init=False)
    _reported_unknown: set[str] = field(default_factory=set, init=False, repr=False)

    @property
    def in_error_streak(self) -> bool:
        return self.state.consecutive_errors > 0

    def observe_message(self, message: Mapping[str, Any]) -> Check:
        """The meaning of an answer: delivered, failed, or still waiting."""
        self.polls += 1
        self.state = WatchState()
        evaluation = self.rule.evaluate(message)
        new_unknown = sorted(evaluation.unknown_statuses - self._reported_unknown)
        if new_unknown:
            self._reported_unknown.update(new_unknown)
            self.logger.warning(
                "Message %s: status %s is not one Kaleyra documents; treating it as still in flight.",
                self.message_id,
                ", ".join(repr(status) for status in new_unknown),
            )
        statuses = evaluation.statuses
        if evaluation.missing:
            return Check(
                CheckKind.ERROR,
                self.message_id,
                f"Message {self.message_id} has no recipient {', '.join(evaluation.missing)}; "
                f"its recipients are {', '.join(statuses) or 'none'}. Check recipients= "
                "(each message id of a send covers one recipient batch).",
                statuses,
            )
        if evaluation.verdict is Verdict.DELIVERED:
            return Check(
                CheckKind.SUCCESS,
                self.message_id,
                f"Message {self.message_id} reached {self._who()}: {_listing(statuses)}.",
                statuses,
            )
        if evaluation.verdict is Verdict.FAILED:
            details = "; ".join(failure.describe() for failure in evaluation.failures)
            return Check(
                CheckKind.FAILURE,
                self.message_id,
                f"Message {self.message_id} will not reach {self._who()}: {details}.",
                statuses,
                evaluation.failures,
            )
        self.logger.info(
            "Message %s: waiting for %s (poll %d).",
            self.message_id,
            ", ".join(evaluation.pending) or "recipients",
            self.polls,
        )
        return Check(CheckKind.WAITING, self.message_id, f"waiting for {', '.join(evaluation.pending)}", statuses)

    def observe_error(self, error: KaleyraEmailAPIError, *, now: float) -> Check:
        """The meaning of a failed poll: keep waiting, or give up."""
        self.polls += 1
        if isinstance(error, KaleyraEmailRetriesExhaustedError):
            streak = self.state.consecutive_errors + 1
            self.state = WatchState(consecutive_errors=streak, last_error=str(error))
            if streak >= self.max_consecutive_errors:
                return Check(
                    CheckKind.ERROR,
                    self.message_id,
                    f"Gave up waiting for message {self.message_id}: {streak} polls in a row failed "
                    f"(max_consecutive_errors={self.max_consecutive_errors}); the last: {error}",
                )
            self.logger.warning(
                "Message %s: poll failed (%d in a row; the wait gives up at %d): %s. Still waiting.",
                self.message_id,
                streak,
                self.max_consecutive_errors,
                error,
            )
            return Check(CheckKind.WAITING, self.message_id, f"poll failed: {error}")
        if error.status_code == HTTPStatus.NOT_FOUND:
            # Kaleyra answered, so the API is up: the error streak ends here too.
            self.state = WatchState()
            waited = max(0.0, now - self.started_at)
            if waited < self.not_found_grace:
                self.logger.info(
                    "Message %s is not visible yet (HTTP 404 %.1f s into the wait; not_found_grace=%g s).",
                    self.message_id,
                    waited,
                    self.not_found_grace,
                )
                return Check(CheckKind.WAITING, self.message_id, "not visible yet (HTTP 404)")
            return Check(
                CheckKind.ERROR,
                self.message_id,
                f"Kaleyra still does not know message {self.message_id} {waited:.0f} s into the wait "
                f"(not_found_grace={self.not_found_grace:g} s); check the id. {error}",
            )
        return Check(CheckKind.ERROR, self.message_id, f"Cannot check message {self.message_id}: {error}")

    def timed_out(self, last: Check, *, timeout: float) -> Check:
        """The wait ran out of time; ``last`` is the final check, made at the deadline."""
        seen = _listing(last.statuses) if last.statuses else last.message
        return Check(
            CheckKind.TIMEOUT,
            self.message_id,
            f"Message {self.message_id} did not reach {self._who()} within timeout={timeout:g} s "
            f"(the last check, at the deadline: {seen}).",
            last.statuses,
        )

    def _who(self) -> str:
        if self.rule.recipients is None:
            return "all of its recipients" if self.rule.require == "all" else "any of its recipients"
        names = ", ".join(self.rule.recipients)
        return names if len(self.rule.recipients) == 1 else f"{self.rule.require} of {names}"


def _listing(statuses: Mapping[str, str] | None) -> str:
    return ", ".join(f"{address} {status}" for address, status in (statuses or {}).items()) or "no recipients"
