"""
When has a message reached its recipients? One rule, for the sensor and the trigger alike.

- A chosen recipient (default: all the message has) is delivered when its status is one of
  ``delivered``, failed when one of ``failed``, else in flight (no status yet, or one Kaleyra does
  not document, logged once). ``require="all"`` succeeds when all are delivered, fails when one
  failed; ``"any"`` succeeds when one is delivered, fails when all failed. A recipient the message
  lacks is an error.
- A failed poll worth another try (429, 5xx, timeout, dropped connection) is "not yet"; a 404 is
  "not visible yet" for ``not_found_grace`` seconds into the wait; any other is an error.
  ``timeout`` alone bounds the wait. A list of message ids is one wait: :mod:`.campaign`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import time
from collections.abc import Iterable, Mapping
from datetime import timedelta
from enum import Enum
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, Literal

from airflow_provider_kaleyra_email import validation
from airflow_provider_kaleyra_email.exceptions import KaleyraEmailAPIError, KaleyraEmailTransientError

if TYPE_CHECKING:
    from airflow_provider_kaleyra_email.hooks.kaleyra_email import KaleyraEmailAsyncHook, KaleyraEmailHook

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
        name = text_of(text).upper()
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

    :param status: all but ``waiting`` end a wait.
    :param message_id: the message waited on; for a list, the wait's label.
    :param message: a sentence for the log, or the task's error.
    :param statuses: every recipient of the message and its status as Kaleyra spelled it.
    :param failures: the chosen recipients that failed (:func:`failure_of`; for a list, with ``message_id``).
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

    def timed_out(self, deadline: float | None, started_at: float) -> DeliveryOutcome:
        """Return this outcome of a check, or past ``deadline`` the timeout of a wait begun at ``started_at``."""
        if self.done or deadline is None or time.time() < deadline:
            return self
        seen = _listing(self.statuses) if self.statuses else self.message
        what = f"{self.message_id} were" if self.counts is not None else f"Message {self.message_id} was"
        text = f"{what} not delivered within timeout={deadline - started_at:g} s (the last check: {seen})."
        return dataclasses.replace(self, status="timeout", message=text)

    def to_event(self) -> dict[str, Any]:
        """Return the outcome as a plain JSON dict: what the trigger fires and ``execute_complete`` reads."""
        event = {**dataclasses.asdict(self), "failures": [dict(failure) for failure in self.failures]}
        if self.counts is None:
            del event["counts"]
        return event

    @classmethod
    def from_event(cls, event: Any) -> DeliveryOutcome:
        """Read an event back; anything that is not a final outcome is an error, never a success."""
        data: Mapping[str, Any] = event if isinstance(event, Mapping) else {}
        status, message_id = data.get("status"), str(data.get("message_id") or "")
        if status not in ("success", "failure", "error", "timeout"):
            return cls("error", message_id, f"The trigger sent an event with no final status: {event!r}")
        failures = tuple(dict(failure) for failure in data.get("failures") or () if isinstance(failure, Mapping))
        statuses, counts = (
            data.get(name) if isinstance(data.get(name), Mapping) else None for name in ("statuses", "counts")
        )
        return cls(status, message_id, str(data.get("message") or status), statuses, failures, counts)


class DeliveryRule:
    """What the statuses and a 404 mean for a wait; a ``ValueError`` names a bad argument (see the sensor's)."""

    def __init__(
        self,
        *,
        require: Any = "all",
        delivered_statuses: Any = DEFAULT_DELIVERED_STATUSES,
        failed_statuses: Any = DEFAULT_FAILED_STATUSES,
        not_found_grace: Any = DEFAULT_NOT_FOUND_GRACE,
    ) -> None:
        if require not in ("all", "any"):
            raise ValueError(f"require={require!r} is not one of ('all', 'any').")
        self.require = str(require)
        self.delivered = parse_statuses(delivered_statuses, "delivered_statuses")
        self.failed = parse_statuses(failed_statuses, "failed_statuses", allow_empty=True)
        if both := sorted(status.value for status in self.delivered & self.failed):
            raise ValueError(f"delivered_statuses and failed_statuses both hold {both}; a status cannot mean both.")
        grace = not_found_grace.total_seconds() if isinstance(not_found_grace, timedelta) else not_found_grace
        self.not_found_grace = validation.positive_number(grace, parameter="not_found_grace")

    def serialize(self) -> dict[str, Any]:
        """Return the rule as JSON-safe keyword arguments that rebuild it."""
        return {
            "require": self.require,
            "delivered_statuses": sorted(status.value for status in self.delivered),
            "failed_statuses": sorted(status.value for status in self.failed),
            "not_found_grace": self.not_found_grace,
        }

    def classify(self, status: Any) -> Literal["delivered", "failed"] | None:
        """Return what a recipient's status means: ``delivered``, ``failed``, or ``None`` (in flight)."""
        parsed = MessageStatus.parse(status)
        return "delivered" if parsed in self.delivered else "failed" if parsed in self.failed else None

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


class MessageWait:
    """A wait on one message's ``recipients`` (``None``: all) by ``rule``, polled through either hook."""

    def __init__(
        self, message_id: Any, rule: DeliveryRule, *, recipients: Any = None, started_at: float | None = None
    ) -> None:
        self.message_id, self.label = validation.message_id(message_id), f"message {message_id}"
        self.rule, self.recipients = rule, _recipients(recipients)
        self.started_at = time.time() if started_at is None else started_at

    def serialize(self) -> dict[str, Any]:
        """Return the wait as JSON-safe keyword arguments of the trigger."""
        recipients = None if self.recipients is None else list(self.recipients)
        return {"message_id": self.message_id, "recipients": recipients, **self.rule.serialize()}

    def poll(self, hook: KaleyraEmailHook, *, deadline: float | None = None) -> DeliveryOutcome:
        """Poll through the sync hook; return the outcome, a timeout once ``deadline`` passed."""
        (answer,) = lookups(hook, [self.message_id])
        return self.judge(answer).timed_out(deadline, self.started_at)

    async def apoll(self, hook: KaleyraEmailAsyncHook, *, deadline: float | None = None) -> DeliveryOutcome:
        """Do what :meth:`poll` does, through the async hook."""
        (answer,) = await alookups(hook, [self.message_id])
        return self.judge(answer).timed_out(deadline, self.started_at)

    def judge(self, answer: Mapping[str, Any] | KaleyraEmailAPIError) -> DeliveryOutcome:
        """Return what one ``stats/<message id>`` answer, or its API error, means for the wait."""
        mid = self.message_id
        if isinstance(answer, KaleyraEmailAPIError):
            return self.rule.judge_error(mid, answer, waited=time.time() - self.started_at)
        rows = recipient_rows(answer)
        statuses = {address: text_of(row.get("status")) for address, row in rows.items()}
        known = {address.casefold() for address in rows}
        if rows and (missing := [a for a in self.recipients or () if a.casefold() not in known]):
            text = f"Message {mid} has no recipient {', '.join(missing)}; it has {_listing(statuses)}."
            hint = "Check recipients= (each message id of a send covers one recipient batch)."
            return DeliveryOutcome("error", mid, f"{text} {hint}", statuses)
        wanted = known if self.recipients is None else {address.casefold() for address in self.recipients}
        chosen = {a: self.rule.classify(status) for a, status in statuses.items() if a.casefold() in wanted}
        delivered = [address for address, state in chosen.items() if state == "delivered"]
        failures = [failure_of(address, rows[address]) for address, state in chosen.items() if state == "failed"]
        who = f"{self.rule.require} of {'its recipients' if self.recipients is None else ', '.join(self.recipients)}"
        if chosen and (len(delivered) == len(chosen) or (delivered and self.rule.require == "any")):
            return DeliveryOutcome("success", mid, f"Message {mid} reached {who}: {_listing(statuses)}.", statuses)
        if failures and (self.rule.require == "all" or len(failures) == len(chosen)):
            text = f"Message {mid} will not reach {who}: {'; '.join(map(_describe, failures))}."
            return DeliveryOutcome("failure", mid, text, statuses, tuple(failures))
        pending = [f"{a} ({statuses[a] or 'no status'})" for a, state in chosen.items() if state is None]
        waiting_for = ", ".join(pending) or "Kaleyra to list its recipients"
        return DeliveryOutcome("waiting", mid, f"waiting for {waiting_for}", statuses)


def lookups(hook: KaleyraEmailHook, ids: Iterable[str]) -> list[Any]:
    """Return each id's ``stats/<id>``, or the API error it met, one after another."""
    answers: list[Any] = []
    for message_id in ids:
        try:
            answers.append(hook.get_message_stats(message_id))
        except KaleyraEmailAPIError as error:
            answers.append(error)
    return answers


async def alookups(hook: KaleyraEmailAsyncHook, ids: Iterable[str]) -> list[Any]:
    """Return each id's ``stats/<id>``, or the API error it met, all at once."""
    answers = await asyncio.gather(*map(hook.get_message_stats, ids), return_exceptions=True)
    for answer in answers:
        if isinstance(answer, BaseException) and not isinstance(answer, KaleyraEmailAPIError):
            raise answer
    return answers


def parse_statuses(value: Any, parameter: str, allow_empty: bool = False) -> frozenset[MessageStatus]:
    """Return the statuses ``value`` names (one or a list, any case); a ``ValueError`` names ``parameter``."""
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


def recipient_rows(answer: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    """Return a ``stats/<message id>`` answer's recipient rows by address, those without one left out."""
    rows = (row for row in answer.get("recipients") or [] if isinstance(row, Mapping))
    return {text_of(row.get("to")): row for row in rows if text_of(row.get("to"))}


def failure_of(recipient: Any, row: Mapping[str, Any]) -> dict[str, str]:
    """Return a failed recipient as outcomes list it."""
    fields = ("status", "error_code", "error_message")
    return {"recipient": text_of(recipient), **{field: text_of(row.get(field)) for field in fields}}


def _describe(failure: Mapping[str, str]) -> str:
    code, text = failure["error_code"], failure["error_message"]
    why = f"Kaleyra error {code}: {text}" if code and text else text or (f"Kaleyra error {code}" if code else "")
    return f"{failure['recipient']} is {failure['status']} ({why or 'Kaleyra gave no error text'})"


def _listing(statuses: Mapping[str, str] | None) -> str:
    return ", ".join(f"{address} {status}" for address, status in (statuses or {}).items()) or "no recipients"


def text_of(value: Any) -> str:
    """Return ``value`` as stripped text, ``""`` for ``None``."""
    return "" if value is None else str(value).strip()
