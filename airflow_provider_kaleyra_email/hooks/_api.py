"""
The Kaleyra Email API on the wire: paths, parameters, reading a response, retries.

Both hooks send requests through this module's rules, so there is one place that says how a
path is built, what a response envelope means, which failures are worth another try (and how
long to wait for it), and how the API key is kept out of every text taken from a response.
``../shared/kaleyra-email-stats-and-logs-api.txt`` is the source; comments say where we had to
interpret it. The HTTP clients themselves stay in the hooks.
"""

from __future__ import annotations

import base64
import os
import random
import re
import time
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from http import HTTPStatus
from operator import itemgetter
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, quote_plus, urlsplit

import certifi
import msgspec
import urllib3
from tenacity import RetryCallState, retry_if_exception, stop_after_attempt, wait_random_exponential
from urllib3.exceptions import NewConnectionError

from airflow_provider_kaleyra_email import __version__
from airflow_provider_kaleyra_email.exceptions import KaleyraEmailAPIError, KaleyraEmailRetriesExhaustedError

if TYPE_CHECKING:
    from datetime import date

DEFAULT_BASE_URL = "https://api.kaleyra.io"

#: Kaleyra's regional pods, chosen with the connection extra ``region``. An explicit host wins.
REGION_BASE_URLS: Mapping[str, str] = {
    "in": "https://api.in.kaleyra.io",
    "sg": "https://api.ap.kaleyra.io",
    "eu": "https://api.eu.kaleyra.io",
}

#: The API's own bound for ``limit``; its default is 50.
MAX_PAGE_SIZE = 100

#: The header that carries the API key, and nothing else does.
API_KEY_HEADER = "api-key"

#: The largest response body we read (after decompression). A page of 100 log rows is about
#: 50 KB; anything near this is not an answer we can use, and must not exhaust a worker's memory.
MAX_RESPONSE_BYTES = 64 * 1024 * 1024

#: Characters a message id may hold. Kaleyra's ids look like ``<uuid>:<n>``; we treat them as
#: opaque but refuse characters that no id has and that would change a URL (``/ ? # %``),
#: white space, and quotes or brackets, which are the signature of a rendered Python list.
MESSAGE_ID_ALLOWED = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.:~@+=")


#: A Retry-After longer than this is capped, so one odd header cannot park a task for hours.
MAX_RETRY_AFTER_SECONDS = 300.0
#: Bytes read from the socket at a time; the deadline and the size cap are checked between reads.
READ_CHUNK_BYTES = 256 * 1024

_json_decoder = msgspec.json.Decoder()


# --------------------------------------------------------------------------------------------
# Paths
# --------------------------------------------------------------------------------------------


def path_segment(value: str) -> str:
    """
    Percent-encode ``value`` so that it is exactly one URL path segment.

    ``/``, ``?``, ``#`` and ``%`` are encoded, so no id can add a segment, start a query or a
    fragment, or smuggle an already-encoded character; ``.`` and ``..`` alone, which a URL
    library may resolve as dot segments, are encoded too.
    """
    encoded = quote(value, safe=":@-._~+=")
    if encoded in {".", ".."}:
        return encoded.replace(".", "%2E")
    return encoded


def account_path(sid: str) -> str:
    return f"/v1/{path_segment(sid)}/email"


def logs_path(sid: str) -> str:
    return f"{account_path(sid)}/logs"


def summary_stats_path(sid: str) -> str:
    return f"{account_path(sid)}/stats"


def message_stats_path(sid: str, message_id: str) -> str:
    return f"{account_path(sid)}/stats/{path_segment(message_id)}"


def send_path(sid: str) -> str:
    return account_path(sid)


# --------------------------------------------------------------------------------------------
# Responses
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ApiErrorDetail:
    """Kaleyra's own words about a failure, taken from whatever shape the body had."""

    error_code: str | None
    message: str


def error_detail(body: Any) -> ApiErrorDetail | None:
    """
    Return the error a response body carries, or ``None`` when it carries none.

    The page shows ``"error": {}`` on success and never shows a failure, so we accept the
    shapes Kaleyra's other v1 APIs use: ``{"error": {"code", "message"}}``, a top-level
    ``code``/``message``, or an ``error`` object mapping a field to its message.
    """
    if not isinstance(body, Mapping):
        return None
    error = body.get("error")
    if isinstance(error, str) and error.strip():
        return ApiErrorDetail(_text_or_none(body.get("code")), error.strip())
    if not isinstance(error, Mapping) or not error:
        return None
    code = _text_or_none(error.get("code")) or _text_or_none(body.get("code"))
    message = _text_or_none(error.get("message")) or _text_or_none(body.get("message"))
    if message is None:
        message = "; ".join(f"{key}: {value}" for key, value in error.items() if key != "code")
    return ApiErrorDetail(code, message or "error object without a message")


def error_detail_for_status(body: Any, reason: str) -> ApiErrorDetail:
    """Return the error of a non-2xx response: what the body says, else the HTTP reason phrase."""
    detail = error_detail(body)
    if detail is not None:
        return detail
    if isinstance(body, Mapping):
        message = _text_or_none(body.get("message"))
        if message:
            return ApiErrorDetail(_text_or_none(body.get("code")), message)
    return ApiErrorDetail(None, reason or "no error message in the response")


def _text_or_none(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def envelope_data(body: Any) -> list[Any]:
    """Return the ``data`` list of a successful response; raises ``ValueError`` for any other shape."""
    if not isinstance(body, Mapping):
        raise ValueError(f"expected a JSON object, got {type(body).__name__}")
    data = body.get("data")
    if data is None:
        return []
    if not isinstance(data, list):
        raise ValueError(f"expected 'data' to be a list, got {type(data).__name__}")
    return data


def envelope_rows(body: Any) -> list[dict[str, Any]]:
    """
    Return the ``data`` list of a listing page, every entry a JSON object.

    An entry that is not an object is not a row we can export or count, and dropping it would
    lose data in silence: it raises ``ValueError``.
    """
    data = envelope_data(body)
    for index, entry in enumerate(data):
        if not isinstance(entry, dict):
            raise ValueError(f"data[{index}] is {_preview_value(entry)} ({type(entry).__name__}), not a JSON object")
    return data


def _preview_value(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:40] + "…"


def envelope_total(body: Mapping[str, Any]) -> int | None:
    """Return the logs endpoint's ``total`` (an int, or a numeric string); ``None`` when absent or unreadable."""
    total = body.get("total")
    if isinstance(total, bool):
        return None
    if isinstance(total, int):
        return total if total >= 0 else None
    if isinstance(total, str) and total.strip().isdigit():
        return int(total)
    return None


def odd_total(body: Mapping[str, Any]) -> str | None:
    """``total`` as sent when it is present but not a count (``"many"``, ``-1``, ``1.5``), for messages."""
    if "total" not in body or body["total"] is None or envelope_total(body) is not None:
        return None
    return _preview_value(body["total"])


# --------------------------------------------------------------------------------------------
# Secrets
# --------------------------------------------------------------------------------------------


def secret_forms(secret: str) -> list[str]:
    """
    Return the forms in which an echo of ``secret`` may come back.

    As is, URL-encoded, and in base64 (as in an ``Authorization: Basic`` header), at any
    alignment inside a longer base64 text.
    """
    forms = {secret, quote(secret, safe=""), quote_plus(secret)}
    raw = secret.encode()
    for offset in range(3):
        encoded = base64.b64encode(b"\0" * offset + raw).decode()
        # Drop the characters that also depend on the bytes before and after the secret.
        core = encoded[(4 if offset else 0) : 4 * ((offset + len(raw)) // 3)]
        if len(core) >= 8:
            forms.update({core, core.replace("+", "-").replace("/", "_")})
    return sorted(forms, key=len, reverse=True)


def scrub(text: str, secret: str | None) -> str:
    """``text`` with every form of ``secret`` (see :func:`secret_forms`) replaced by ``***``."""
    if not secret or not text:
        return text
    pattern = re.compile("|".join(re.escape(form) for form in secret_forms(secret)), re.IGNORECASE)
    return pattern.sub("***", text)


def flatten_day(day: Mapping[str, Any]) -> dict[str, Any]:
    """
    Turn one ``stats`` day into a flat row ``{"date": ..., <metric>: <value>, ...}``.

    Every metric the API sends is kept, including ones the page does not list. ``stats`` is a
    list; the page only ever shows one entry, and if there are more we add their numeric
    metrics up so the row still stands for the whole day.
    """
    row: dict[str, Any] = {"date": day.get("date")}
    for entry in day.get("stats") or []:
        metrics = entry.get("metrics") if isinstance(entry, Mapping) else None
        if not isinstance(metrics, Mapping):
            continue
        for name, value in metrics.items():
            if name == "date":
                continue
            if name in row and _is_number(row[name]) and _is_number(value):
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


def log_row_keys(rows: list[Mapping[str, Any]]) -> list[tuple[Any, Any] | None]:
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


def date_params(start: date | None, end: date | None) -> dict[str, str]:
    params = {}
    if start is not None:
        params["start_date"] = start.isoformat()
    if end is not None:
        params["end_date"] = end.isoformat()
    return params


# --------------------------------------------------------------------------------------------
# Reading a response
# --------------------------------------------------------------------------------------------


class TooLarge(Exception):
    """A response body over ``max_response_bytes``: retrying would not make it smaller."""


class Deadline(Exception):
    """A response still incomplete when its ``timeout`` ran out (a body that trickles in)."""


class TransientError(Exception):
    """A failure worth retrying. It never leaves the hook: the caller sees what tenacity made of it."""

    def __init__(
        self,
        description: str,
        *,
        status_code: int | None = None,
        error_code: str | None = None,
        retry_after: float | None = None,
        unsent: bool = False,
        kind: str = "answer",
    ):
        super().__init__(description)
        self.description = description
        #: ``"timeout"``, ``"connection"`` (no answer at all) or ``"answer"`` (a bad one).
        self.kind = kind
        self.status_code = status_code
        self.error_code = error_code
        self.retry_after = retry_after
        #: The server cannot have acted on the request (refused connection, 429), so even a
        #: request that is not idempotent, like a send, may be repeated.
        self.unsent = unsent


def pool_manager(config: Any, *, maxsize: int) -> urllib3.PoolManager:
    """
    Return a urllib3 pool for ``config.base_url`` that sends the API key and nothing else of ours.

    The environment's proxy (``HTTPS_PROXY``/``HTTP_PROXY``, minus ``NO_PROXY``) and CA bundle
    (``REQUESTS_CA_BUNDLE``/``CURL_CA_BUNDLE``, else certifi's, as requests does) are read once;
    ``~/.netrc`` is never read, so it cannot add credentials.
    """
    headers = request_headers(config.api_key)
    ca_certs = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or certifi.where()
    options: dict[str, Any] = {"maxsize": maxsize, "block": False, "headers": headers, "ca_certs": ca_certs}
    parts = urlsplit(config.base_url)
    proxy = urllib.request.getproxies().get(parts.scheme)
    if proxy and not urllib.request.proxy_bypass(parts.hostname or ""):
        return urllib3.ProxyManager(proxy, **options)
    return urllib3.PoolManager(**options)


def request_headers(api_key: str) -> dict[str, str]:
    """Return the headers of every request: the key in ``api-key`` and nowhere else."""
    return {
        API_KEY_HEADER: api_key,
        "Accept": "application/json",
        "User-Agent": f"airflow-provider-kaleyra-email/{__version__}",
    }


# --------------------------------------------------------------------------------------------
# What a response means: shared by the sync hook (urllib3) and the async hook (httpx)
# --------------------------------------------------------------------------------------------


def interpret_response(
    *,
    status: int,
    reason: str,
    headers: Mapping[str, str],
    content: bytes,
    endpoint: str,
    api_key: str | None = None,
) -> Any:
    """
    Return the decoded body of a response that succeeded, or raise what its failure means.

    A pure function of the response, so the sync hook and the async hook read Kaleyra the same
    way: 429 (with its ``Retry-After``), 5xx and an unreadable body raise ``TransientError``
    (worth another try); a redirect, 400/401/403/404 and an HTTP 200 whose ``error`` object is not
    empty raise :class:`KaleyraEmailAPIError`. Every text taken from the response (Kaleyra's
    message, the reason phrase, a ``Location``, a preview of a body) is scrubbed of ``api_key``
    in every form an echo of it may take (:func:`scrub`).

    :param status: the HTTP status code.
    :param reason: the HTTP reason phrase, used when the body says nothing.
    :param headers: the response headers (a case-insensitive mapping).
    :param content: the raw body.
    :param endpoint: method and path for error messages (never the key).
    :param api_key: the connection's key, so that an echo of it never reaches a message.
    """

    def clean(text: str) -> str:
        return scrub(text, api_key)

    if status == HTTPStatus.TOO_MANY_REQUESTS:
        retry_after = _retry_after_seconds(headers.get("Retry-After"))
        raise TransientError(
            "HTTP 429 (rate limited" + (f", Retry-After {retry_after:g} s)" if retry_after is not None else ")"),
            status_code=status,
            retry_after=retry_after,
            unsent=True,
        )
    if status >= HTTPStatus.INTERNAL_SERVER_ERROR:
        detail = error_detail_for_status(_decode(content), reason)
        raise TransientError(
            f"HTTP {status} ({clean(detail.message)})", status_code=status, error_code=detail.error_code
        )
    if HTTPStatus.MULTIPLE_CHOICES <= status < HTTPStatus.BAD_REQUEST:
        location = clean(headers.get("Location", ""))
        raise KaleyraEmailAPIError(
            endpoint=endpoint,
            status_code=status,
            error_code=None,
            message=f"redirect to {location!r} not followed: the API key is only sent to the configured host",
        )
    body = _decode(content)
    if status >= HTTPStatus.BAD_REQUEST:
        detail = error_detail_for_status(body, reason)
        raise KaleyraEmailAPIError(
            endpoint=endpoint, status_code=status, error_code=detail.error_code, message=clean(detail.message)
        )
    if body is _UNREADABLE:
        raise TransientError(f"HTTP {status} with a body that is not JSON: {_preview(content, api_key)}")
    error_in_body = error_detail(body)
    if error_in_body is not None:
        raise KaleyraEmailAPIError(
            endpoint=endpoint,
            status_code=status,
            error_code=error_in_body.error_code,
            message=clean(error_in_body.message),
        )
    return body


def data_of(body: Any, *, endpoint: str) -> list[Any]:
    """Return the ``data`` list of a successful response; an unexpected shape is a :class:`KaleyraEmailAPIError`."""
    try:
        return envelope_data(body)
    except ValueError as exc:
        raise KaleyraEmailAPIError(
            endpoint=endpoint,
            status_code=HTTPStatus.OK,
            error_code=None,
            message=f"unexpected body: {exc}",
        ) from None


def message_from_body(body: Any, *, message_id: str, endpoint: str) -> dict[str, Any]:
    """
    Return the one message of a ``stats/<message id>`` body, with ``recipients`` always a list.

    An empty ``data`` list means Kaleyra does not know the id (yet): that is a 404, like the
    status Kaleyra answers for an unknown id.
    """
    messages = data_of(body, endpoint=endpoint)
    if not messages or not isinstance(messages[0], Mapping):
        raise KaleyraEmailAPIError(
            endpoint=endpoint,
            status_code=HTTPStatus.NOT_FOUND,
            error_code=None,
            message=f"no message with id {message_id!r} in the response",
        )
    message = dict(messages[0])
    if not isinstance(message.get("recipients"), list):
        message["recipients"] = []
    return message


_UNREADABLE: Any = object()


def _decode(content: bytes) -> Any:
    try:
        return _json_decoder.decode(content)
    except msgspec.DecodeError:
        return _UNREADABLE


def _preview(content: bytes, api_key: str | None, limit: int = 80) -> str:
    """Return the start of a body, for a message: scrubbed before it is cut, so no part of a key remains."""
    text = scrub(content[: 4 * limit + 1024].decode("utf-8", "replace"), api_key)
    text = "".join(char if char.isprintable() else " " for char in text[:limit])
    return repr(text + ("…" if len(content) > limit else ""))


class Body:
    """
    A response body as it arrives, refused once it passes ``limit`` bytes (decompressed).

    A ``Content-Length`` over the limit is refused before anything is read.
    """

    def __init__(self, headers: Mapping[str, str], limit: int):
        declared = headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > limit:
            raise TooLarge(_too_large(int(declared), limit))
        self.limit = limit
        self.size = 0
        self.chunks: list[bytes] = []

    def add(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self.limit:
            raise TooLarge(_too_large(self.size, self.limit, at_least=True))
        self.chunks.append(chunk)

    def content(self) -> bytes:
        return b"".join(self.chunks)


def read_body(raw: Any, *, deadline: float, limit: int) -> bytes:
    """
    Return a urllib3 response's whole body, decompressed, by ``deadline`` and at most ``limit`` bytes.

    The socket timeout bounds each read; the deadline bounds them all, so a body that trickles
    in a byte at a time fails like any timeout instead of holding the worker for ever.
    """
    body = Body(raw.headers, limit)
    sock = getattr(raw.connection, "sock", None)
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise Deadline
        if sock is not None:
            sock.settimeout(remaining)  # so that no single read outlasts the deadline either
        chunk = raw.read1(READ_CHUNK_BYTES, decode_content=True)
        if not chunk:
            return body.content()
        body.add(chunk)


def _too_large(size: int, limit: int, *, at_least: bool = False) -> str:
    more = "more than " if at_least else ""
    return (
        f"the response body is {more}{size:,} bytes, over the limit of {limit:,} "
        "(max_response_bytes); no page of this API is that large, so it was not read"
    )


def _retry_after_seconds(value: str | None) -> float | None:
    """``Retry-After`` as seconds: a number of seconds or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _causes(exc: BaseException) -> list[BaseException]:
    """Return ``exc`` and the errors it wraps (urllib3 keeps them in ``reason`` or ``args[0]``)."""
    chain = [exc]
    while True:
        inner = getattr(chain[-1], "reason", None)
        if not isinstance(inner, BaseException):
            args = chain[-1].args
            inner = args[0] if args and isinstance(args[0], BaseException) else None
        if inner is None or inner in chain:
            return chain
        chain.append(inner)


def reason_of(exc: BaseException) -> str:
    """Return the root cause of a connection error, without the long urllib3 wrapper text."""
    cause = _causes(exc)[-1]
    text = str(cause)
    return f"{type(cause).__name__}: {text[:200]}" if text else type(cause).__name__


def never_connected(exc: BaseException) -> bool:
    """Tell whether a connection error happened before the request reached the server."""
    return any(isinstance(cause, NewConnectionError) for cause in _causes(exc))


def _summarize(tries: list[str]) -> list[str]:
    """``['HTTP 503', 'HTTP 503', 'timeout']`` -> ``['HTTP 503 (x2)', 'timeout']``."""
    counts: dict[str, int] = {}
    for outcome in tries:
        counts[outcome] = counts.get(outcome, 0) + 1
    return [f"{outcome} (x{count})" if count > 1 else outcome for outcome, count in counts.items()]


# --------------------------------------------------------------------------------------------
# Retrying
# --------------------------------------------------------------------------------------------


class Attempts:
    """
    The one retry policy of both hooks (as dbt Cloud's ``retry_args``), for one request.

    ``retry_args`` go to tenacity's ``Retrying`` (sync) or ``AsyncRetrying`` (async) alike:
    429 waits its ``Retry-After``, other transient failures back off with full jitter, up to
    ``max_retries``. A request that is not ``idempotent`` (a send) is repeated only when the
    server cannot have acted on it. ``failure`` turns the last transient error into what the
    caller sees, listing what each attempt got.
    """

    def __init__(
        self, *, endpoint: str, max_retries: int, idempotent: bool, wait_initial: float, wait_max: float, log: Any
    ) -> None:
        self.endpoint = endpoint
        self.max_retries = max_retries
        self.idempotent = idempotent
        self.log = log
        self.tries: list[str] = []
        self.started = time.monotonic()
        # "Full jitter": a random wait up to an exponentially growing cap, so many workers that
        # failed together do not come back together.
        self._backoff = wait_random_exponential(multiplier=wait_initial, max=wait_max)

    @property
    def retry_args(self) -> dict[str, Any]:
        return {
            "stop": stop_after_attempt(self.max_retries + 1),
            "wait": self._wait,
            "retry": retry_if_exception(self._worth_retrying),
            "after": self._record,
            "before_sleep": self._log_retry,
            "reraise": True,
        }

    def failure(self, error: TransientError) -> KaleyraEmailAPIError:
        """Return what the caller sees once tenacity gave up (``after`` has recorded every retryable try)."""
        if not self._worth_retrying(error):
            return KaleyraEmailAPIError(
                endpoint=self.endpoint,
                status_code=error.status_code,
                error_code=error.error_code,
                message=(
                    f"{error.description}; not retried, because Kaleyra may have acted on it already "
                    "(check the logs before sending again)"
                ),
            )
        return KaleyraEmailRetriesExhaustedError(
            endpoint=self.endpoint,
            status_code=error.status_code,
            error_code=error.error_code,
            message=(
                f"gave up after {len(self.tries)} attempt(s) in {time.monotonic() - self.started:.1f} s "
                f"(max_retries={self.max_retries}): " + "; ".join(_summarize(self.tries))
            ),
        )

    def _worth_retrying(self, error: BaseException) -> bool:
        return isinstance(error, TransientError) and (self.idempotent or error.unsent)

    def _record(self, state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome is not None else None
        if isinstance(error, TransientError):
            self.tries.append(error.description)

    def _wait(self, state: RetryCallState) -> float:
        """Honour ``Retry-After`` (plus a little jitter so threads do not return in step); else back off."""
        error = state.outcome.exception() if state.outcome is not None else None
        if isinstance(error, TransientError) and error.retry_after is not None:
            delay = min(error.retry_after, MAX_RETRY_AFTER_SECONDS)
            return delay + random.uniform(0, 0.1 * delay + 0.05)
        return float(self._backoff(state))

    def _log_retry(self, state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome is not None else None
        delay = state.next_action.sleep if state.next_action is not None else 0.0
        self.log.warning(
            "%s: %s; retry %d of %d in %.1f s",
            self.endpoint,
            error.description if isinstance(error, TransientError) else error,
            state.attempt_number,
            self.max_retries,
            delay,
        )
