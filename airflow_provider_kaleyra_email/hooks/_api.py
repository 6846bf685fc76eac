"""The Kaleyra Email API on the wire, as both hooks read it: paths, responses, retries, scrubbing."""

from __future__ import annotations

import base64
import functools
import random
import re
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import KW_ONLY, dataclass, field
from email.utils import parsedate_to_datetime
from http import HTTPStatus
from operator import itemgetter
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlencode

import msgspec
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_random_exponential,
)

from airflow_provider_kaleyra_email.exceptions import KaleyraEmailAPIError, KaleyraEmailRetriesExhaustedError
from airflow_provider_kaleyra_email.hooks._paging import Cancelled, Log, Page

if TYPE_CHECKING:
    import threading
    from collections.abc import Awaitable, Callable
    from datetime import date

R = TypeVar("R")

_json_decoder = msgspec.json.Decoder()


def page_target(path: str, params: Iterable[tuple[str, str]], page: int, limit: int) -> str:
    """Return ``path`` with a query of ``params``, then ``page`` and ``limit``."""
    return f"{path}?{urlencode([*params, ('page', str(page)), ('limit', str(limit))])}"


def date_params(start: date | None, end: date | None) -> dict[str, str]:
    return {name: day.isoformat() for name, day in (("start_date", start), ("end_date", end)) if day is not None}


def error_detail(body: Any, reason: str | None = None) -> tuple[str | None, str] | None:
    """
    Return Kaleyra's ``(error code, message)`` in a body; ``None`` when there is none, unless ``reason`` is given.

    The API page shows no failure, so we take the shapes of Kaleyra's other v1 APIs: ``{"error": {"code",
    "message"}}``, a top-level ``code``/``message``, or an ``error`` object mapping a field to its message.
    """
    code = message = None
    if isinstance(body, Mapping):
        code, message = _text(body.get("code")), _text(body.get("message"))
        error = body.get("error")
        if isinstance(error, str) and error.strip():
            return code, error.strip()
        if isinstance(error, Mapping) and error:
            fields = "; ".join(f"{key}: {value}" for key, value in error.items() if key != "code")
            found = _text(error.get("message")) or message or fields or "error object without a message"
            return _text(error.get("code")) or code, found
    if reason is None:
        return None
    return (code, message) if message else (None, reason or "no error message in the response")


def _text(value: Any) -> str | None:
    text = "" if value is None else str(value).strip()
    return text or None


def interpret_response(
    *,
    status: int,
    reason: str,
    headers: Mapping[str, str],
    content: bytes,
    endpoint: str,
    api_key: str | None = None,
    page: int | None = None,
) -> Any:
    """
    Return the decoded body of a response that succeeded (a listing's ``page`` as a :class:`Page`), or raise.

    Both hooks read Kaleyra through it: 429, 5xx and an unreadable body raise ``TransientError``; a
    redirect, another 4xx and a 200 with an ``error`` raise :class:`KaleyraEmailAPIError`. Every text
    taken from the response is scrubbed of ``api_key``.
    """
    if status == HTTPStatus.TOO_MANY_REQUESTS:
        retry_after = _retry_after_seconds(headers.get("Retry-After"))
        wait = f", Retry-After {retry_after:g} s" if retry_after is not None else ""
        raise TransientError(f"HTTP 429 (rate limited{wait})", status_code=status, retry_after=retry_after, unsent=True)
    if HTTPStatus.MULTIPLE_CHOICES <= status < HTTPStatus.BAD_REQUEST:
        location = scrub(headers.get("Location", ""), api_key)
        message = f"redirect to {location!r} not followed: the API key is only sent to the configured host"
        raise KaleyraEmailAPIError(endpoint=endpoint, status_code=status, message=message)
    try:
        body = _json_decoder.decode(content)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):  # RecursionError: JSON nested too deep
        if status < HTTPStatus.BAD_REQUEST:
            # Scrubbed before it is cut, so no part of a key remains; 2 KB hold 80 characters and a key.
            text = scrub(content[:2048].decode("utf-8", "replace"), api_key)
            raise TransientError(f"HTTP {status} with a body that is not JSON: {_preview(text, 80)!r}") from None
        body = None
    detail = error_detail(body, reason if status >= HTTPStatus.BAD_REQUEST else None)
    if detail is not None:
        code, message = detail[0] and scrub(detail[0], api_key), scrub(detail[1], api_key)
        if status >= HTTPStatus.INTERNAL_SERVER_ERROR:
            raise TransientError(f"HTTP {status} ({message})", status_code=status, error_code=code)
        raise KaleyraEmailAPIError(endpoint=endpoint, status_code=status, error_code=code, message=message)
    return body if page is None else page_of(body, number=page, endpoint=endpoint, api_key=api_key)


def _preview(text: str, limit: int) -> str:
    return "".join(char if char.isprintable() else " " for char in text[:limit]) + ("…" if len(text) > limit else "")


def data_of(body: Any, *, endpoint: str, page: int | None = None, api_key: str | None = None) -> list[Any]:
    """Return the ``data`` list of a response; on a listing's ``page`` all JSON objects (no row dropped in silence)."""
    data = body.get("data") if isinstance(body, Mapping) else None
    if not isinstance(body, Mapping):
        problem = f"expected a JSON object, got {type(body).__name__}"
    elif data is not None and not isinstance(data, list):
        problem = f"expected 'data' to be a list, got {type(data).__name__}"
    elif page is not None and not all(isinstance(entry, dict) for entry in data or ()):
        index, entry = next((i, entry) for i, entry in enumerate(data or ()) if not isinstance(entry, dict))
        entry_text = _preview(scrub(repr(entry), api_key), 40)
        problem = f"data[{index}] is {entry_text} ({type(entry).__name__}), not a JSON object"
    else:
        return data or []
    message = f"{'unexpected body' if page is None else f'page {page}'}: {problem}"
    raise KaleyraEmailAPIError(endpoint=endpoint, status_code=HTTPStatus.OK, message=message)


def message_from_body(body: Any, *, message_id: str, endpoint: str) -> dict[str, Any]:
    """Return the one message of a ``stats/<message id>`` body, ``recipients`` always a list; none is a 404."""
    messages = data_of(body, endpoint=endpoint)
    if not messages or not isinstance(messages[0], Mapping):
        unknown = f"no message with id {message_id!r} in the response"
        raise KaleyraEmailAPIError(endpoint=endpoint, status_code=HTTPStatus.NOT_FOUND, message=unknown)
    message = dict(messages[0])
    answered, recipients = _text(message.get("message_id")), message.get("recipients")
    if answered is not None and answered != message_id:  # another message's statuses would judge this one
        problem = f"asked for message {message_id!r}, the answer is about {_preview(answered, 80)!r}"
    elif recipients is not None and not isinstance(recipients, list):
        problem = f"message {message_id!r}: 'recipients' is {type(recipients).__name__}, not a list"
    else:
        message["recipients"] = recipients or []
        return message
    raise KaleyraEmailAPIError(endpoint=endpoint, status_code=HTTPStatus.OK, message=problem)


def page_of(body: Any, *, number: int, endpoint: str, api_key: str | None = None) -> Page:
    """Return page ``number`` of a listing, with its ``total`` as a count or, when it is not one, as sent."""
    rows = data_of(body, endpoint=endpoint, page=number, api_key=api_key)
    return _counted(Page(number, rows), body.get("total"), api_key)


#: The largest ``total`` taken for a count; a larger one is no listing's size, and is reported as sent.
MAX_TOTAL = 10**15


def _counted(page: Page, total: Any, api_key: str | None) -> Page:
    """Set the page's ``total``: a whole number (``250``, ``250.0``, ``"250"``) up to ``MAX_TOTAL``, else as sent."""
    text = total.strip() if isinstance(total, str) else ""
    if text.isascii() and text.isdigit() and len(text) <= len(str(MAX_TOTAL)):
        total = int(text)
    elif isinstance(total, float) and total.is_integer():
        total = int(total)
    if isinstance(total, int) and not isinstance(total, bool) and 0 <= total <= MAX_TOTAL:
        page.total = total
    elif total is not None:
        page.odd_total = _preview(scrub(repr(total), api_key), 40)
    return page


def flatten_day(day: Mapping[str, Any], *, endpoint: str) -> dict[str, Any]:
    """
    Turn one ``stats`` day into a flat row ``{"date": ..., <metric>: <value>, ...}``, every metric kept.

    The numeric metrics of several ``stats`` entries are added up; a ``stats`` that is not a list is
    an error, as its metrics would be lost in silence.
    """
    row: dict[str, Any] = {"date": day.get("date")}
    stats = day.get("stats")
    if stats is not None and not isinstance(stats, list):
        problem = f"day {_preview(repr(row['date']), 40)}: 'stats' is {type(stats).__name__}, not a list"
        raise KaleyraEmailAPIError(endpoint=endpoint, status_code=HTTPStatus.OK, message=problem)
    for entry in stats or []:
        metrics = entry.get("metrics") if isinstance(entry, Mapping) else None
        if not isinstance(metrics, Mapping):
            continue
        for name, value in metrics.items():
            if name in row and name != "date" and _is_number(row[name]) and _is_number(value):
                row[name] += value
            else:
                row.setdefault(name, value)
    return row


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def log_row_key(row: Mapping[str, Any]) -> tuple[Any, Any]:
    """Return a log row's identity: one row per message per recipient batch."""
    return (row.get("message_id"), row.get("to_mail"))


_complete_row_key = itemgetter("message_id", "to_mail")  # log_row_key, for rows that have both


def log_row_keys(rows: Sequence[Mapping[str, Any]]) -> list[tuple[Any, Any] | None]:
    """Return ``log_row_key`` of every row of a page, ``None`` for a row missing either part."""
    try:
        keys: list[tuple[Any, Any] | None] = list(map(_complete_row_key, rows))  # in C, the usual case
        if all(map(all, keys)):  # type: ignore[arg-type]
            return keys
    except KeyError:
        pass
    return [key if all(key) else None for key in map(log_row_key, rows)]


def day_keys(days: list[dict[str, Any]]) -> list[Any]:
    """Return each summary stats day's identity, its date; a day without one is never merged."""
    return [day.get("date") or None for day in days]


def scrub(text: str, secret: str | None) -> str:
    """Return ``text`` with every echo of ``secret`` (as is, percent-encoded in any way, or in base64) as ``***``."""
    if not secret or not text:
        return text
    return _echoes_of(secret).sub("***", text)


@functools.lru_cache(maxsize=16)
def _echoes_of(secret: str) -> re.Pattern[str]:
    """Return the pattern of ``secret``'s echoes: each character as is or percent-encoded (any mix), or base64."""

    def character(char: str) -> str:
        encoded = "".join(f"%{byte:02x}" for byte in char.encode())
        return f"(?:{re.escape(char)}|{encoded}{'|[+]' if char == ' ' else ''})"

    forms = ["".join(map(character, secret))]
    raw = secret.encode()
    for offset in range(3):
        encoded = base64.b64encode(b"\0" * offset + raw).decode()
        # Drop the characters that also depend on the bytes before and after the secret.
        core = encoded[(4 if offset else 0) : 4 * ((offset + len(raw)) // 3)]
        if len(core) >= 8:
            forms += [re.escape(core), re.escape(core.replace("+", "-").replace("/", "_"))]
    return re.compile("|".join(forms), re.IGNORECASE)


def _retry_after_seconds(value: str | None) -> float | None:
    """Return ``Retry-After`` as seconds: it is a number of seconds or an HTTP date."""
    value = value or ""
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError, OverflowError):  # OverflowError: a year no platform can hold
        return None


@dataclass(eq=False)
class TransientError(Exception):
    """A failure worth retrying; it never leaves the hook, whose caller sees what the retries made of it."""

    description: str
    _: KW_ONLY
    status_code: int | None = None
    error_code: str | None = None
    retry_after: float | None = None
    #: The server cannot have acted on it (a refused connection, a 429): even a send may be repeated.
    unsent: bool = False
    #: ``"timeout"``, ``"connection"`` (no answer at all) or ``"answer"`` (a bad one).
    kind: str = "answer"

    def __post_init__(self) -> None:
        super().__init__(self.description)


@dataclass(kw_only=True)
class Attempts:
    """
    The retry policy of both hooks for one request, over tenacity's ``Retrying`` or ``AsyncRetrying``.

    429 waits its ``Retry-After``; other transient failures back off with full jitter. A request that
    is not ``idempotent`` (a send) is repeated only when the server cannot have acted on it.
    """

    endpoint: str
    max_retries: int
    idempotent: bool
    wait_initial: float
    wait_max: float
    log: Log
    tries: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)

    def call(self, once: Callable[[], R], *, cancel: threading.Event) -> R:
        """Return ``once()``, retried by this policy; setting ``cancel`` ends a back-off early (``Cancelled``)."""

        def sleep(seconds: float) -> None:
            if cancel.wait(seconds):
                raise Cancelled

        try:
            for attempt in Retrying(**self._retry_args(), sleep=sleep):
                with attempt:
                    return once()
        except TransientError as exc:
            raise self._failure(exc) from None
        raise AssertionError("unreachable: tenacity either returns or raises")

    async def acall(self, once: Callable[[], Awaitable[R]]) -> R:
        """Return ``await once()``, retried by this policy."""
        try:
            if self.max_retries == 0:  # a trigger's poll: no retry loop to build (a third of its CPU)
                return await once()
            async for attempt in AsyncRetrying(**self._retry_args()):
                with attempt:
                    return await once()
        except TransientError as exc:
            raise self._failure(exc) from None
        raise AssertionError("unreachable: tenacity either returns or raises")

    def _retry_args(self) -> dict[str, Any]:
        return {
            "stop": stop_after_attempt(self.max_retries + 1),
            "wait": self._wait,
            "retry": retry_if_exception(self._worth_retrying),
            "before_sleep": self._retrying,
            "reraise": True,
        }

    def _failure(self, error: TransientError) -> KaleyraEmailAPIError:
        cls: type[KaleyraEmailAPIError] = KaleyraEmailRetriesExhaustedError
        if self._worth_retrying(error):
            tries = Counter([*self.tries, error.description])
            message = (
                f"gave up after {tries.total()} attempt(s) in {time.monotonic() - self.started:.1f} s "
                f"(max_retries={self.max_retries}): "
                + "; ".join(f"{what} (x{n})" if n > 1 else what for what, n in tries.items())
            )
        else:
            cls = KaleyraEmailAPIError
            message = (
                f"{error.description}; not retried, because Kaleyra may have acted on it already "
                "(check the logs before sending again)"
            )
        return cls(endpoint=self.endpoint, status_code=error.status_code, error_code=error.error_code, message=message)

    def _worth_retrying(self, error: BaseException) -> bool:
        return isinstance(error, TransientError) and (self.idempotent or error.unsent)

    def _wait(self, state: RetryCallState) -> float:
        """Honour ``Retry-After`` up to ``wait_max`` (plus a little jitter, so threads part); else back off."""
        error = state.outcome.exception() if state.outcome is not None else None
        if isinstance(error, TransientError) and error.retry_after is not None:
            delay = min(error.retry_after, self.wait_max)
            return delay + random.uniform(0, 0.1 * delay + 0.05)
        return float(wait_random_exponential(multiplier=self.wait_initial, max=self.wait_max)(state))

    def _retrying(self, state: RetryCallState) -> None:
        self.tries.append(str(state.outcome.exception() if state.outcome is not None else ""))
        delay = state.next_action.sleep if state.next_action is not None else 0.0
        self.log.warning(
            "%s: %s; retry %d of %d in %.1f s", self.endpoint, self.tries[-1], len(self.tries), self.max_retries, delay
        )
