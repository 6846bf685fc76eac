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
- A list of message ids is one wait counted by recipient, with thresholds: :mod:`.campaign`.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Iterable, Mapping
from datetime import timedelta
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
            {
                **({"message_id": text_of(f["message_id"])} if "message_id" in f else {}),
                **failure_of(f.get("recipient"), f),
            }
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
        rows = {text_of(r.get("to")).casefold(): r for r in answer.get("recipients") or [] if isinstance(r, Mapping)}
        rows.pop("", None)
        statuses = {text_of(row["to"]): text_of(row.get("status")) for row in rows.values()}
        if rows and (missing := [a for a in self.recipients or () if a.casefold() not in rows]):
            text = f"Message {message_id} has no recipient {', '.join(missing)}; it has {_listing(statuses)}."
            hint = "Check recipients= (each message id of a send covers one recipient batch)."
            return DeliveryOutcome("error", message_id, f"{text} {hint}", statuses)
        keys = rows if self.recipients is None else [a.casefold() for a in self.recipients if a.casefold() in rows]
        chosen = {text_of(rows[key]["to"]): MessageStatus.parse(rows[key].get("status")) for key in keys}
        delivered = [address for address, status in chosen.items() if status in self.delivered]
        failed = [address for address, status in chosen.items() if status in self.failed]
        failures = [failure_of(address, rows[address.casefold()]) for address in failed]
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


def failure_of(recipient: Any, row: Mapping[str, Any]) -> dict[str, str]:
    fields = ("status", "error_code", "error_message")
    return {"recipient": text_of(recipient), **{field: text_of(row.get(field)) for field in fields}}


def _describe(failure: Mapping[str, str]) -> str:
    code, text = failure["error_code"], failure["error_message"]
    why = f"Kaleyra error {code}: {text}" if code and text else text or (f"Kaleyra error {code}" if code else "")
    return f"{failure['recipient']} is {failure['status']} ({why or 'Kaleyra gave no error text'})"


def _listing(statuses: Mapping[str, str] | None) -> str:
    return ", ".join(f"{address} {status}" for address, status in (statuses or {}).items()) or "no recipients"


def text_of(value: Any) -> str:
    return "" if value is None else str(value).strip()
