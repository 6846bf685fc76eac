"""
The emulator's data: a seeded, deterministic stream of email traffic of any size.

Nothing is stored per row. Row ``i`` of a day is computed from ``(seed, day, i)`` when it is
asked for, so a 10⁶-row day costs no memory until it is listed, and the same seed always gives
the same rows. Message ids encode their day and row, so ``stats/<message id>`` needs no index.
Statuses are a function of the clock: every recipient has a fate (delivered and maybe opened,
deferred, bounced, blocked, ...) and the times at which it moves there. Background traffic (a busy
account: other senders' mail on every day) repeats a pattern of ``BACKGROUND_PERIOD`` rows, so a
search over any number of its rows is counted, not scanned.
"""

from __future__ import annotations

import bisect
import functools
import hashlib
import itertools
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import Any, NamedTuple, TypeVar, cast
from zoneinfo import ZoneInfo

DESCRIPTIONS = {
    "ACCEPTED": "Message is accepted.",
    "DEFERRED": "Message delivery is deferred by the recipient's mail server; it will be retried.",
    "DELIVERED": "Message is delivered.",
    "OPEN": "Message is opened by the recipient.",
    "BOUNCE": (
        "Message has not been delivered maybe because of wrong email address or the recipient's "
        "inbox is full or a connection timeout from the sender's domain."
    ),
    "BLOCKED": "Message has not been delivered because sender domain is not whitelisted",
    "FAILED": (
        "Message has not been processed because maybe due to internal server error or due to insufficient balance."
    ),
    "SUPPRESSED": "Message has not been sent because the recipient is on the suppression list.",
}

ERROR_TEXT = {
    "BOUNCE": ("550", "550 5.1.1 The email account that you tried to reach does not exist."),
    "BLOCKED": ("", "invalid sender domain"),
    "FAILED": ("", "insufficient balance"),
    "SUPPRESSED": ("", "recipient is on the suppression list"),
}

SENDERS = ("alerts@shop.example.com", "billing@shop.example.com", "news@mail.example.org")
#: Who sends the background traffic: other senders of the account.
BACKGROUND_SENDERS = ("receipts@store.example.net", "digest@forum.example.org", "noreply@bank.example.com")
#: Background rows repeat every this many rows (but their ids and times).
BACKGROUND_PERIOD = 1_000
TEMPLATES = ("", "welcome", "invoice", "password_reset", "newsletter", "order_shipped")
DOMAINS = ("example.com", "example.net", "example.org", "mail.example.com")
DATETIME_FORMAT = "%Y-%m-%d %H:%M:%S"

_T = TypeVar("_T")

#: Rows per request: message ids ``<uuid>:1`` and ``<uuid>:2`` share a request, as in the API page.
BATCHES_PER_REQUEST = 2


class Fate(NamedTuple):
    """Where one recipient's message ends up, and when (seconds after submission)."""

    final: str
    deliver_after: float
    open_after: float | None = None
    defer_after: float | None = None

    def status_at(self, elapsed: float) -> str:
        if self.defer_after is not None and elapsed >= self.defer_after and elapsed < self.deliver_after:
            return "DEFERRED"
        if elapsed < (self.defer_after if self.defer_after is not None else self.deliver_after):
            return "ACCEPTED"
        if self.final == "DELIVERED" and self.open_after is not None and elapsed >= self.open_after:
            return "OPEN"
        if self.final == "ACCEPTED":
            return "ACCEPTED"
        return self.final


def fate_from(digest: bytes, *, scale: float = 1.0) -> Fate:
    """Draw a fate from 8 bytes of hash: 70 % delivered (half of those opened later), 10 % deferred first, ..."""
    roll = digest[0] % 100
    deliver = (2 + digest[1] % 58) * scale
    if roll < 70:
        opened = digest[2] % 2 == 0
        return Fate("DELIVERED", deliver, open_after=deliver + (600 + digest[3] * 300) * scale if opened else None)
    if roll < 80:
        defer = deliver
        return Fate("DELIVERED", defer + (300 + digest[4] * 12) * scale, defer_after=defer)
    if roll < 88:
        return Fate("BOUNCE", deliver)
    if roll < 92:
        return Fate("BLOCKED", deliver)
    if roll < 95:
        return Fate("FAILED", deliver)
    if roll < 97:
        return Fate("SUPPRESSED", deliver)
    if roll < 99:
        return Fate("DEFERRED", deliver, defer_after=deliver)  # stays deferred
    return Fate("ACCEPTED", deliver)  # never leaves ACCEPTED


@dataclass
class SentMessage:
    """A message accepted by ``POST /v1/<SID>/email``: its batches, recipients and fates."""

    request_id: str
    submitted: datetime  # aware, UTC
    from_mail: str
    subject: str
    template_name: str
    batches: list[list[tuple[str, Fate]]]

    def message_ids(self) -> list[str]:
        return [f"{self.request_id}:{n}" for n in range(1, len(self.batches) + 1)]


@dataclass
class SyntheticDataset:
    """
    Seeded synthetic email traffic for the emulator.

    :param seed: changes every row; the same seed always gives the same rows.
    :param start_date: first day with traffic (default: ``days - 1`` days before today).
    :param days: number of days with traffic, ending at ``start_date + days - 1``.
    :param rows_per_day: log rows per day, or a mapping of day to rows (days not in it get 0).
    :param timezone: the account's time zone; dates and times in the API are in it.
    :param clock: returns the current time (aware); tests may freeze or speed it up.
    :param send_time_scale: how fast sent messages move (1.0: delivered within a minute;
        0.05: within seconds), so a sensor test sees a real but short wait.
    :param background_rows_per_day: log rows per day of other senders' settled mail, on every day
        from ``start_date`` to today (today's as the day goes): a busy account. They are listed,
        searched and counted in the summary stats, never looked up by id, and cost nothing until read.
    """

    seed: int = 0
    start_date: date | None = None
    days: int = 7
    rows_per_day: int | Mapping[date, int] = 1_000
    timezone: str = "UTC"
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(timezone.utc))
    send_time_scale: float = 0.05
    send_visibility_delay: float = 0.5
    background_rows_per_day: int = 0

    def __post_init__(self) -> None:
        if self.background_rows_per_day < 0:
            raise ValueError(f"background_rows_per_day={self.background_rows_per_day!r} must be 0 or more")
        self.tz = ZoneInfo(self.timezone)
        if self.start_date is None:
            self.start_date = self.clock().astimezone(self.tz).date() - timedelta(days=self.days - 1)
        self._key = hashlib.blake2b(str(self.seed).encode(), digest_size=16).digest()
        self._sent: dict[str, SentMessage] = {}
        self._sent_lock = threading.Lock()
        self._cache: OrderedDict[tuple[Any, ...], Any] = OrderedDict()
        self._cache_lock = threading.Lock()

    # ---------------------------------------------------------------------------------------
    # Days and rows
    # ---------------------------------------------------------------------------------------

    @property
    def end_date(self) -> date:
        assert self.start_date is not None
        return self.start_date + timedelta(days=self.days - 1)

    def dates(self) -> list[date]:
        assert self.start_date is not None
        return [self.start_date + timedelta(days=n) for n in range(self.days)]

    def planned_rows(self, day: date) -> int:
        """Rows the day will have once it is over (today's are still arriving)."""
        assert self.start_date is not None
        if not self.start_date <= day <= self.end_date:
            return 0
        if isinstance(self.rows_per_day, Mapping):
            return int(self.rows_per_day.get(day, 0))
        return self.rows_per_day

    def local_now(self) -> datetime:
        """Return the clock in the account's time zone, as a naive wall-clock time like the API's strings."""
        return self.clock().astimezone(self.tz).replace(tzinfo=None)

    def visible_rows(self, day: date, now: datetime | None = None) -> int:
        """Rows of ``day`` submitted by now: all of a past day, part of today, none of a future day."""
        planned = self.planned_rows(day)
        if planned == 0:
            return 0
        now = now or self.local_now()
        elapsed = (now - datetime.combine(day, datetime.min.time())).total_seconds()
        if elapsed >= 86_400:
            return planned
        if elapsed <= 0:
            return 0
        requests = self._requests(planned)
        visible_requests = min(requests, int(elapsed / (86_400 / requests)))
        return min(planned, visible_requests * BATCHES_PER_REQUEST)

    @staticmethod
    def _requests(rows: int) -> int:
        return -(-rows // BATCHES_PER_REQUEST)

    def _day(self, day: date) -> _Day:
        """Return what every row of ``day`` shares, from the plan as it is now (tests may change it)."""
        return _day_info(day, self._requests(self.planned_rows(day)))

    def _digest(self, info: _Day, number: int, salt: bytes, size: int = 16) -> bytes:
        return hashlib.blake2b(info.key + number.to_bytes(4, "big") + salt, key=self._key, digest_size=size).digest()

    def _request(self, info: _Day, request: int) -> tuple[str, int]:
        """Return a request's uuid and submission time (seconds after local midnight), shared by its batches."""
        return _request_info(self._key, info, request)

    def message_id(self, day: date, row: int) -> str:
        request, batch = divmod(row, BATCHES_PER_REQUEST)
        return f"{self._request(self._day(day), request)[0]}:{batch + 1}"

    def locate(self, message_id: str) -> tuple[date, int] | None:
        """Return the (day, row) a synthetic message id stands for, or ``None`` if it is not one of ours."""
        request_id, _, batch_text = message_id.rpartition(":")
        if not batch_text.isdigit() or not request_id:
            return None
        try:
            raw = uuid.UUID(request_id).bytes
        except ValueError:
            return None
        tag, body = raw[:6], raw[6:]
        payload = _xor(body, hashlib.blake2b(tag, key=self._key, digest_size=10).digest())
        try:
            day = date.fromordinal(int.from_bytes(payload[:4], "big"))
        except (OverflowError, ValueError):
            return None
        request = int.from_bytes(payload[4:8], "big")
        if payload[8:] != tag[:2] or self._digest(self._day(day), request, b"q")[:6] != tag:
            return None
        row = request * BATCHES_PER_REQUEST + int(batch_text) - 1
        if int(batch_text) < 1 or row >= self.visible_rows(day):
            return None
        return day, row

    def submitted_at(self, day: date, row: int) -> datetime:
        info = self._day(day)
        return info.midnight + timedelta(seconds=self._request(info, row // BATCHES_PER_REQUEST)[1])

    def recipients(self, day: date, row: int) -> list[tuple[str, Fate]]:
        return _recipients(self._digest(self._day(day), row, b"r", 32))

    def log_row(self, day: date, row: int, now: datetime | None = None) -> dict[str, Any]:
        """Row ``row`` of ``day`` as the logs endpoint lists it, with its status at ``now``."""
        now = now or self.local_now()
        info = self._day(day)
        request_id, offset = self._request(info, row // BATCHES_PER_REQUEST)
        digest = self._digest(info, row, b"r", 32)
        people = _recipients(digest)
        elapsed = (now - info.midnight).total_seconds() - offset
        fate = people[0][1]
        status = fate.status_at(elapsed)
        submitted = info.midnight + timedelta(seconds=offset)
        record = _log_record(
            f"{request_id}:{row % BATCHES_PER_REQUEST + 1}",
            status,
            from_mail=SENDERS[digest[0] % len(SENDERS)],
            to_mail=",".join(address for address, _ in people),
            template_name=TEMPLATES[digest[1] % len(TEMPLATES)],
            submitted=submitted,
            delivered=submitted + timedelta(seconds=int(fate.deliver_after)) if status in _DELIVERY_SEEN else None,
        )
        if digest[2] % 4 == 0:
            record["type"] = "MKT"  # the API adds keys the page does not document
        return record

    def status(self, day: date, row: int, now: datetime) -> str:
        """Return a row's status at ``now``: its first recipient's."""
        info = self._day(day)
        elapsed = (now - info.midnight).total_seconds() - self._request(info, row // BATCHES_PER_REQUEST)[1]
        return fate_from(self._digest(info, row, b"r", 32)[10:18]).status_at(elapsed)

    def message_stats(self, day: date, row: int, now: datetime | None = None) -> dict[str, Any]:
        """Return the ``stats/<message id>`` body entry for a synthetic message."""
        now = now or self.local_now()
        submitted = self.submitted_at(day, row)
        digest = self._digest(self._day(day), row, b"r", 32)
        elapsed = (now - submitted).total_seconds()
        return {
            "message_id": self.message_id(day, row),
            "from_mail": SENDERS[digest[0] % len(SENDERS)],
            "request_datetime": submitted.strftime(DATETIME_FORMAT),
            "recipients": [
                _recipient_stats(address, fate, submitted, elapsed) for address, fate in self.recipients(day, row)
            ],
        }

    # ---------------------------------------------------------------------------------------
    # Listings
    # ---------------------------------------------------------------------------------------

    def days_in(self, start: date | None, end: date | None) -> list[date]:
        """Days with traffic between ``start`` and ``end`` (inclusive; either may be open)."""
        first = max(d for d in (start, self.start_date) if d is not None)
        last = min(d for d in (end, self.end_date) if d is not None)
        return [first + timedelta(days=n) for n in range((last - first).days + 1)] if first <= last else []

    def listing(
        self,
        start: date | None,
        end: date | None,
        *,
        to_mail: str | None = None,
        message_id: str | None = None,
        search: Sequence[str] = (),
        now: datetime | None = None,
    ) -> Listing:
        """Return the rows a logs query matches, newest first: sent mail, synthetic rows, background rows."""
        now = now or self.local_now()
        days = sorted(self.days_in(start, end), reverse=True)
        sent = self._sent_rows(start, end, now, to_mail=to_mail, message_id=message_id, search=search)
        if message_id is not None:
            located = self.locate(message_id)
            refs = [located] if located is not None and located[0] in days else []
            return Listing([sent, _Lazy(len(refs), lambda n: self.log_row(*refs[n], now))])
        if to_mail is None and not search:
            counts = [(day, self.visible_rows(day, now)) for day in days]
            synthetic = [_Lazy(count, functools.partial(self._row_back, day, count, now)) for day, count in counts]
        else:
            refs = self._filtered(days, now, to_mail, tuple(search))
            synthetic = [_Lazy(len(refs), lambda n: self.log_row(*refs[n], now))]
        background = [self._background(day, now, to_mail, tuple(search)) for day in self._busy_days(start, end, now)]
        return Listing([sent, *synthetic, *background])

    def _row_back(self, day: date, count: int, now: datetime, index: int) -> dict[str, Any]:
        return self.log_row(day, count - 1 - index, now)

    def _filtered(
        self, days: list[date], now: datetime, to_mail: str | None, search: tuple[str, ...]
    ) -> list[tuple[date, int]]:
        counts = tuple(self.visible_rows(day, now) for day in days)
        return self._cached(
            ("filter", tuple(days), counts, to_mail, search, int(now.timestamp())),
            lambda: [
                (day, row)
                for day, count in zip(days, counts, strict=True)
                for row in range(count - 1, -1, -1)
                if matches(self.log_row(day, row, now), to_mail, search)
            ],
        )

    def _cached(self, key: tuple[Any, ...], compute: Callable[[], _T]) -> _T:
        """
        Return ``compute()``, kept for the same key.

        Filtered listings and day metrics read every row of their days, on every page without
        this (a filtered listing paged one row at a time: 35 s of tests instead of 0.7 s). Keys
        end with the clock's second, as statuses move.
        """
        with self._cache_lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return cast("_T", self._cache[key])
        value = compute()
        with self._cache_lock:
            self._cache[key] = value
            while len(self._cache) > 64:
                self._cache.popitem(last=False)
        return value

    def expected_logs(
        self,
        start: date | None,
        end: date | None,
        *,
        to_mail: str | None = None,
        message_id: str | None = None,
        search: Sequence[str] = (),
        now: datetime | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Every row a logs query should return, for tests to compare with what a client got."""
        yield from self.listing(start, end, to_mail=to_mail, message_id=message_id, search=search, now=now)

    def day_metrics(self, day: date, now: datetime | None = None) -> dict[str, int]:
        """Return a day's ``metrics``: the five the page shows, plus ``bounces``, ``failed`` and ``suppressed``."""
        now = now or self.local_now()
        count = self.visible_rows(day, now)
        metrics = dict(
            self._cached(("metrics", day, count, int(now.timestamp())), lambda: self._row_metrics(day, count, now))
        )
        for message in self._sent_on(day):
            for batch in message.batches:
                elapsed = (now - _local(message.submitted, self.tz)).total_seconds()
                _count_status(metrics, batch[0][1].status_at(elapsed))
        full, rest = divmod(self._busy_rows(day, now), BACKGROUND_PERIOD)
        for offset, (status, *_) in enumerate(self._background_pattern):
            _count_status(metrics, status, full + (offset < rest))
        return metrics

    def _row_metrics(self, day: date, count: int, now: datetime) -> dict[str, int]:
        metrics = dict.fromkeys(
            ("accepted", "delivered", "opens", "deferred", "blocks", "bounces", "failed", "suppressed"), 0
        )
        for row in range(count):
            _count_status(metrics, self.status(day, row, now))
        return metrics

    def summary_days(self, start: date | None, end: date | None, now: datetime | None = None) -> list[dict[str, Any]]:
        """Days with any traffic, oldest first, each ``{"date", "stats": [{"metrics": ...}]}``."""
        now = now or self.local_now()
        sent_days = {_local(m.submitted, self.tz).date() for m in self._sent_snapshot()}
        in_range = {day for day in sent_days if (start is None or day >= start) and (end is None or day <= end)}
        days = []
        for day in sorted(in_range.union(self.days_in(start, end), self._busy_days(start, end, now))):
            metrics = self.day_metrics(day, now)
            if metrics["accepted"]:
                days.append({"date": day.isoformat(), "stats": [{"metrics": metrics}]})
        return days

    # ---------------------------------------------------------------------------------------
    # Background traffic
    # ---------------------------------------------------------------------------------------

    def _busy_days(self, start: date | None, end: date | None, now: datetime) -> list[date]:
        """Days with background rows from ``start`` (else ``start_date``) to ``end`` or today, newest first."""
        assert self.start_date is not None
        if not self.background_rows_per_day:
            return []
        first, last = start or self.start_date, min(end or now.date(), now.date())
        return [last - timedelta(days=n) for n in range((last - first).days + 1)]

    def _busy_rows(self, day: date, now: datetime) -> int:
        """Background rows of ``day`` submitted by ``now`` (all of a past day, part of today)."""
        if not self.background_rows_per_day or not self._busy_days(day, day, now):
            return 0
        elapsed = (now - datetime.combine(day, datetime.min.time())).total_seconds()
        return min(self.background_rows_per_day, int(self.background_rows_per_day * elapsed / 86_400))

    @functools.cached_property
    def _background_pattern(self) -> list[tuple[str, str, str, str, int]]:
        """The repeating pattern: (status, from, to, template, seconds to delivery) of each row of a period."""
        pattern = []
        for offset in range(BACKGROUND_PERIOD):
            digest = hashlib.blake2b(b"background" + offset.to_bytes(4, "big"), key=self._key, digest_size=16).digest()
            fate = fate_from(digest[8:])
            address = f"reader{digest[0] * 256 + digest[1]:05d}@{DOMAINS[digest[2] % len(DOMAINS)]}"
            sender, template = BACKGROUND_SENDERS[digest[3] % 3], TEMPLATES[digest[4] % len(TEMPLATES)]
            pattern.append((fate.status_at(float("inf")), sender, address, template, int(fate.deliver_after)))
        return pattern

    def _background(self, day: date, now: datetime, to_mail: str | None, search: tuple[str, ...]) -> _Lazy:
        """Return ``day``'s background rows that match, newest first: counted per period, never scanned."""
        offsets = self._cached(
            ("background", to_mail, search),
            lambda: [n for n in range(BACKGROUND_PERIOD) if matches(self.background_row(day, n), to_mail, search)],
        )
        full, rest = divmod(self._busy_rows(day, now), BACKGROUND_PERIOD)
        count = full * len(offsets) + bisect.bisect_left(offsets, rest)

        def row(index: int) -> dict[str, Any]:
            period, position = divmod(count - 1 - index, len(offsets))
            return self.background_row(day, period * BACKGROUND_PERIOD + offsets[position])

        return _Lazy(count, row)

    def background_row(self, day: date, number: int) -> dict[str, Any]:
        """Row ``number`` (in order of submission) of ``day``'s background traffic, as the logs endpoint lists it."""
        status, sender, address, template, deliver_after = self._background_pattern[number % BACKGROUND_PERIOD]
        step = 86_400 / max(1, self.background_rows_per_day)
        submitted = datetime.combine(day, datetime.min.time()) + timedelta(seconds=int(number * step))
        return _log_record(
            f"{uuid.UUID(int=day.toordinal() << 64 | number)}:1",
            status,
            from_mail=sender,
            to_mail=address,
            template_name=template,
            submitted=submitted,
            delivered=submitted + timedelta(seconds=deliver_after) if status in _DELIVERY_SEEN else None,
        )

    # ---------------------------------------------------------------------------------------
    # Sends
    # ---------------------------------------------------------------------------------------

    def send(
        self,
        *,
        from_mail: str,
        to: Sequence[str],
        subject: str,
        template_name: str = "",
        sent_at: datetime | None = None,
    ) -> SentMessage:
        """
        Accept a message as ``POST /v1/<SID>/email`` does: one batch per recipient.

        A recipient address containing ``bounce``, ``block``, ``fail`` or ``suppress`` gets that
        fate; ``defer`` is deferred first; ``slow`` is delivered after a longer wait; every
        other address is delivered and then opened. ``sent_at`` (aware) backdates the send, to any
        day: its logs rows are on that day, its fate as far along as the time since.
        """
        submitted = (sent_at or self.clock()).astimezone(timezone.utc)
        request_id = str(uuid.uuid4())
        batches = [[(address, _send_fate(address, self.send_time_scale))] for address in to]
        message = SentMessage(request_id, submitted, from_mail, subject, template_name, batches)
        with self._sent_lock:
            self._sent[request_id] = message
        return message

    def sent_message_stats(self, message_id: str) -> dict[str, Any] | str | None:
        """Return a sent message's stats entry; ``"not yet"`` in its first moments; ``None`` if unknown."""
        request_id, _, batch_text = message_id.rpartition(":")
        with self._sent_lock:
            message = self._sent.get(request_id)
        if message is None or not batch_text.isdigit() or not 1 <= int(batch_text) <= len(message.batches):
            return None
        elapsed = (self.clock() - message.submitted).total_seconds()
        if elapsed < self.send_visibility_delay:
            return "not yet"
        submitted = _local(message.submitted, self.tz)
        return {
            "message_id": message_id,
            "from_mail": message.from_mail,
            "request_datetime": submitted.strftime(DATETIME_FORMAT),
            "recipients": [
                _recipient_stats(address, fate, submitted, elapsed)
                for address, fate in message.batches[int(batch_text) - 1]
            ],
        }

    def _sent_snapshot(self) -> list[SentMessage]:
        with self._sent_lock:
            return list(self._sent.values())

    def _sent_on(self, day: date) -> list[SentMessage]:
        return [m for m in self._sent_snapshot() if _local(m.submitted, self.tz).date() == day]

    def _sent_rows(
        self,
        start: date | None,
        end: date | None,
        now: datetime,
        *,
        to_mail: str | None,
        message_id: str | None,
        search: Sequence[str],
    ) -> Sequence[dict[str, Any]]:
        """Return the sent mail's rows a query matches, newest first; without filters, built only when read."""
        refs: list[tuple[SentMessage, int]] = []
        for message in sorted(self._sent_snapshot(), key=lambda m: m.submitted, reverse=True):
            day = _local(message.submitted, self.tz).date()
            if (start is None or day >= start) and (end is None or day <= end):
                numbers = range(len(message.batches), 0, -1)
                refs.extend((message, n) for n in numbers if message_id in (None, f"{message.request_id}:{n}"))
        if to_mail is None and not search:
            return _Lazy(len(refs), lambda index: self._sent_row(*refs[index], now))
        rows = (self._sent_row(message, number, now) for message, number in refs)
        return [row for row in rows if matches(row, to_mail, search)]

    def _sent_row(self, message: SentMessage, number: int, now: datetime) -> dict[str, Any]:
        submitted = _local(message.submitted, self.tz)
        fate = message.batches[number - 1][0][1]
        return _log_record(
            f"{message.request_id}:{number}",
            fate.status_at((now - submitted).total_seconds()),
            from_mail=message.from_mail,
            to_mail=",".join(address for address, _ in message.batches[number - 1]),
            template_name=message.template_name,
            submitted=submitted,
            delivered=_delivered_at(submitted, fate, (now - submitted).total_seconds()),
        )


class _Lazy(Sequence[dict[str, Any]]):
    """``length`` rows, row ``n`` being ``row(n)``, computed when read."""

    def __init__(self, length: int, row: Callable[[int], dict[str, Any]]):
        self._length, self._row = length, row

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, index: Any) -> Any:
        if not 0 <= index < self._length:
            raise IndexError(index)
        return self._row(index)


class Listing(Sequence[dict[str, Any]]):
    """A logs result: its parts one after another, each row computed only when read."""

    def __init__(self, parts: Sequence[Sequence[dict[str, Any]]]):
        self._parts = [part for part in parts if len(part)]
        self._starts = list(itertools.accumulate(map(len, self._parts), initial=0))

    def __len__(self) -> int:
        return self._starts[-1]

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(index)
        part = bisect.bisect_right(self._starts, index) - 1
        return self._parts[part][index - self._starts[part]]


def matches(row: Mapping[str, Any], to_mail: str | None, search: Sequence[str]) -> bool:
    """
    Apply the logs filters to a row.

    ``toMail`` is one of the recipients; every ``search`` term is found (case-insensitive, as a
    substring) in the status, from, to or template name.
    """
    if to_mail is not None and to_mail.lower() not in row["to_mail"].lower().split(","):
        return False
    haystack = [str(row[name]).lower() for name in ("status", "from_mail", "to_mail", "template_name")]
    return all(any(term.lower() in field for field in haystack) for term in search)


def _count_status(metrics: dict[str, int], status: str, times: int = 1) -> None:
    metrics["accepted"] += times
    name = {
        "DELIVERED": "delivered",
        "DEFERRED": "deferred",
        "BLOCKED": "blocks",
        "BOUNCE": "bounces",
        "FAILED": "failed",
        "SUPPRESSED": "suppressed",
    }.get(status)
    if status == "OPEN":
        metrics["delivered"] += times
        metrics["opens"] += times
    elif name:
        metrics[name] += times


def _delivered_at(submitted: datetime, fate: Fate, elapsed: float) -> datetime | None:
    if fate.status_at(elapsed) not in _DELIVERY_SEEN:
        return None
    return submitted + timedelta(seconds=int(fate.deliver_after))


def _recipient_stats(address: str, fate: Fate, submitted: datetime, elapsed: float) -> dict[str, str]:
    status = fate.status_at(elapsed)
    error_code, error_message = ERROR_TEXT.get(status, ("", ""))
    return {
        "delivery_datetime": _text(_delivered_at(submitted, fate, elapsed)),
        "to": address,
        "status": status,
        "error_code": error_code,
        "error_message": error_message,
    }


def _send_fate(address: str, scale: float) -> Fate:
    lowered = address.lower()
    deliver = 20 * scale
    for marker, final in (
        ("bounce", "BOUNCE"),
        ("block", "BLOCKED"),
        ("fail", "FAILED"),
        ("suppress", "SUPPRESSED"),
    ):
        if marker in lowered:
            return Fate(final, deliver)
    if "defer" in lowered:
        return Fate("DELIVERED", deliver * 3, defer_after=deliver)
    if "slow" in lowered:
        return Fate("DELIVERED", deliver * 10)
    return Fate("DELIVERED", deliver, open_after=deliver * 4)


def _local(moment: datetime, tz: ZoneInfo) -> datetime:
    return moment.astimezone(tz).replace(tzinfo=None)


class _Day(NamedTuple):
    step: float  # seconds between two requests of the day
    midnight: datetime  # local, naive
    key: bytes  # the day in the rows' hashes


@functools.lru_cache(maxsize=256)
def _day_info(day: date, requests: int) -> _Day:
    return _Day(
        86_400 / max(1, requests), datetime.combine(day, datetime.min.time()), day.toordinal().to_bytes(4, "big")
    )


# Tests list the same rows twice (served, then expected) and count statuses per day: without
# this cache, their emulator work doubles (test_emulator.py and the hook's tests: 1 s of 12 s).
@functools.lru_cache(maxsize=65_536)
def _request_info(secret: bytes, info: _Day, request: int) -> tuple[str, int]:
    digest = hashlib.blake2b(info.key + request.to_bytes(4, "big") + b"q", key=secret, digest_size=16).digest()
    # The first 6 bytes look random; the other 10 carry (day, request, check) masked by them,
    # so the id can be decoded without an index and a forged id fails the check.
    tag = digest[:6]
    payload = info.key + request.to_bytes(4, "big") + tag[:2]
    raw = (tag + _xor(payload, hashlib.blake2b(tag, key=secret, digest_size=10).digest())).hex()
    return f"{raw[:8]}-{raw[8:12]}-{raw[12:16]}-{raw[16:20]}-{raw[20:]}", int((request + digest[6] / 256) * info.step)


#: Statuses whose log row shows when the recipient's server answered.
_DELIVERY_SEEN = frozenset({"DELIVERED", "OPEN", "BOUNCE"})


def _recipients(digest: bytes) -> list[tuple[str, Fate]]:
    """One or two recipients (15 %) with their fates, from 32 bytes of a row's hash."""
    count = 2 if digest[3] % 100 < 15 else 1
    people = []
    for n in range(count):
        person = digest[4 + 3 * n] * 256 + digest[5 + 3 * n]
        address = f"user{person:05d}@{DOMAINS[digest[6 + 3 * n] % len(DOMAINS)]}"
        people.append((address, fate_from(digest[10 + 8 * n : 18 + 8 * n])))
    return people


def _text(moment: datetime | None) -> str:
    return "" if moment is None else moment.strftime(DATETIME_FORMAT)


def _log_record(
    message_id: str,
    status: str,
    *,
    from_mail: str,
    to_mail: str,
    template_name: str,
    submitted: datetime,
    delivered: datetime | None,
) -> dict[str, Any]:
    """Return a row as the logs endpoint lists it."""
    return {
        "message_id": message_id,
        "company_id": "Z*****d",
        "status": status,
        "description": DESCRIPTIONS[status],
        "from_mail": from_mail,
        "to_mail": to_mail,
        "template_name": template_name,
        "submitted_at": _text(submitted),
        "delivered_at": _text(delivered),
        "sale_price": 0 if status == "FAILED" else 1,
        "source": "API",
        "source_type": "API",
        "user_details": {},
        "email_body": "",
        "service_id": "",
        "route": "",
    }


def _xor(data: bytes, mask: bytes) -> bytes:
    return (int.from_bytes(data, "big") ^ int.from_bytes(mask, "big")).to_bytes(len(data), "big")
