"""
The emulator: a real HTTP/1.1 server on loopback that answers like the Kaleyra Email API.

It serves ``GET /v1/<SID>/email/stats/<message id>``, ``GET /v1/<SID>/email/stats``,
``GET /v1/<SID>/email/logs`` and ``POST /v1/<SID>/email`` from a :class:`SyntheticDataset`,
checks the ``api-key`` header, validates ``page``/``limit``/dates like the API (HTTP 400), and
can misbehave on purpose: latency, 429 with ``Retry-After``, 5xx, dropped connections,
truncated or HTML bodies, slow answers, and errors inside an HTTP 200.
"""

from __future__ import annotations

import contextlib
import json
import random
import re
import socket
import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import msgspec

from airflow_provider_kaleyra_email.testing._dataset import SyntheticDataset

DEFAULT_SID = "HXEMULATOR0000001"
DEFAULT_API_KEY = "emulator-key-1b8c0f9e2d4a"

FAULT_KINDS = (
    "ok",  # answer normally: lets a script of faults start after some good answers
    "429",
    "500",
    "503",
    "drop",
    "drop_mid_body",
    "truncated",
    "html",
    "slow",
    "error200",
    "redirect",
)

#: What a fault answers, as recorded; 0 means no HTTP status reached the client.
_FAULT_STATUS = {
    "429": HTTPStatus.TOO_MANY_REQUESTS,
    "500": HTTPStatus.INTERNAL_SERVER_ERROR,
    "503": HTTPStatus.SERVICE_UNAVAILABLE,
    "redirect": HTTPStatus.FOUND,
    "drop": 0,
    "drop_mid_body": 0,
}
#: Faults that replace the API's answer; "slow" and "error200" change it instead.
_SHORT_CIRCUITS = frozenset(FAULT_KINDS) - {"ok", "slow", "error200"}
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_encode = msgspec.json.Encoder().encode


@dataclass
class Faults:
    """
    How often the emulator misbehaves, as shares of requests (0 to 1), drawn from a seeded RNG.

    :param latency: seconds added before every answer.
    :param rate_limit: share answered 429 with ``Retry-After: retry_after``.
    :param server_errors: share answered 500 or 503.
    :param drops: share whose connection closes: half before answering, half mid-body.
    :param malformed: share answered 200 with a truncated JSON body or an HTML page.
    :param slow: share answered only after ``slow_seconds``.
    :param error_on_200: share answered 200 with a non-empty ``error`` object.
    """

    latency: float = 0.0
    rate_limit: float = 0.0
    retry_after: float = 1.0
    server_errors: float = 0.0
    drops: float = 0.0
    malformed: float = 0.0
    slow: float = 0.0
    slow_seconds: float = 5.0
    error_on_200: float = 0.0
    seed: int = 0

    def draw(self, rng: random.Random) -> str | None:
        """One fault kind for the next request, or ``None`` to answer normally."""
        roll = rng.random()
        for share, kinds in (
            (self.rate_limit, ("429",)),
            (self.server_errors, ("500", "503")),
            (self.drops, ("drop", "drop_mid_body")),
            (self.malformed, ("truncated", "html")),
            (self.slow, ("slow",)),
            (self.error_on_200, ("error200",)),
        ):
            if roll < share:
                return rng.choice(kinds)
            roll -= share
        return None


@dataclass(frozen=True)
class RecordedRequest:
    """
    One request as the emulator saw it; ``api_key_ok`` says if the key matched. Of the headers
    only their names are kept (lower case), never a value, so no secret is stored.
    """

    method: str
    path: str
    query: dict[str, list[str]]
    api_key_ok: bool
    status: int
    fault: str | None
    header_names: frozenset[str] = frozenset()
    at: float = field(default_factory=time.monotonic)


class KaleyraEmailEmulator:
    """
    A Kaleyra Email API on loopback, for tests, demos and benchmarks.

    Use it as a context manager::

        with KaleyraEmailEmulator(rows_per_day=2_000) as emulator:
            os.environ["AIRFLOW_CONN_KALEYRA_EMAIL_DEFAULT"] = emulator.connection_json()
            ...

    :param host: interface to bind (loopback by default).
    :param port: port to bind; 0 picks a free one.
    :param sid: the account SID it accepts.
    :param api_key: the API key it accepts.
    :param dataset: the data it serves; by default built from ``dataset_options``.
    :param faults: how often it misbehaves (see :class:`Faults`).
    :param redirect_location: where a ``"redirect"`` fault points.
    :param dataset_options: passed to :class:`SyntheticDataset` (``seed``, ``start_date``,
        ``days``, ``rows_per_day``, ``timezone``, ``clock``, ...).
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        sid: str = DEFAULT_SID,
        api_key: str = DEFAULT_API_KEY,
        dataset: SyntheticDataset | None = None,
        faults: Faults | None = None,
        redirect_location: str = "http://127.0.0.1:9/elsewhere",
        **dataset_options: Any,
    ):
        self.host = host
        self.port = port
        self.sid = sid
        self.api_key = api_key
        self.dataset = dataset or SyntheticDataset(**dataset_options)
        self.faults = faults or Faults()
        self.redirect_location = redirect_location
        self.requests: deque[RecordedRequest] = deque(maxlen=200_000)
        self._queued_faults: deque[str] = deque()
        self._lock = threading.Lock()
        self._rng = random.Random(self.faults.seed)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:
        state = self.base_url if self._server else "stopped"
        return f"KaleyraEmailEmulator({state}, sid={self.sid!r})"

    # ---------------------------------------------------------------------------------------
    # Life cycle
    # ---------------------------------------------------------------------------------------

    def start(self) -> KaleyraEmailEmulator:
        handler = type("Handler", (_Handler,), {"emulator": self})
        server = ThreadingHTTPServer((self.host, self.port), handler)
        server.daemon_threads = True
        server.request_queue_size = 128
        self._server = server
        self.port = server.server_address[1]
        self._thread = threading.Thread(target=server.serve_forever, name="kaleyra-email-emulator", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> KaleyraEmailEmulator:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # ---------------------------------------------------------------------------------------
    # What clients need
    # ---------------------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def connection(self, **extra: Any) -> dict[str, Any]:
        """The Airflow connection (as a dict) that reaches this emulator."""
        return {
            "conn_type": "kaleyra_email",
            "login": self.sid,
            "password": self.api_key,
            "host": self.base_url,
            # UTC is the default; leaving it out also spares Airflow's secrets masker a short value.
            "extra": {**({"timezone": self.dataset.timezone} if self.dataset.timezone != "UTC" else {}), **extra},
        }

    def connection_json(self, **extra: Any) -> str:
        """The connection as JSON, for ``AIRFLOW_CONN_<ID>``."""
        return json.dumps(self.connection(**extra))

    # ---------------------------------------------------------------------------------------
    # Faults and inspection
    # ---------------------------------------------------------------------------------------

    def queue_faults(self, *kinds: str) -> None:
        """Make the next requests misbehave, one kind each, in order (see ``FAULT_KINDS``)."""
        unknown = [kind for kind in kinds if kind not in FAULT_KINDS]
        if unknown:
            raise ValueError(f"unknown fault kinds {unknown}; use any of {FAULT_KINDS}")
        with self._lock:
            self._queued_faults.extend(kinds)

    def set_faults(self, faults: Faults) -> None:
        with self._lock:
            self.faults = faults
            self._rng = random.Random(faults.seed)

    def clear(self) -> None:
        """Forget recorded requests, queued faults and fault rates."""
        with self._lock:
            self.requests.clear()
            self._queued_faults.clear()
            self.faults = Faults()
            self._rng = random.Random(0)

    def requests_to(self, endpoint: str) -> list[RecordedRequest]:
        """Recorded requests whose path ends with ``endpoint`` (``"/logs"``, ``"/stats"``, ...)."""
        return [request for request in list(self.requests) if request.path.endswith(endpoint)]

    def _next_fault(self) -> str | None:
        with self._lock:
            if self._queued_faults:
                return self._queued_faults.popleft()
            return self.faults.draw(self._rng)

    def _record(self, request: RecordedRequest) -> None:
        self.requests.append(request)


class _ApiError(Exception):
    def __init__(self, status: HTTPStatus, message: str, code: str | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code or f"E{status.value}"


class _Handler(BaseHTTPRequestHandler):
    emulator: KaleyraEmailEmulator
    protocol_version = "HTTP/1.1"
    server_version = "KaleyraEmailEmulator/1.0"
    # Without this, keep-alive requests wait for the client's delayed ACK (about 40 ms).
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: tests read ``emulator.requests`` instead."""

    def handle_one_request(self) -> None:
        # A client that timed out, or a connection we dropped on purpose, is not an error here.
        try:
            super().handle_one_request()
        except OSError:
            self.close_connection = True

    def finish(self) -> None:
        with contextlib.suppress(OSError):
            super().finish()

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    # ---------------------------------------------------------------------------------------

    def _handle(self, method: str) -> None:
        emulator = self.emulator
        parts = urlsplit(self.path)
        query = parse_qs(parts.query, keep_blank_values=True)
        body = self._read_body()
        key_ok = self.headers.get("api-key") == emulator.api_key
        header_names = frozenset(name.lower() for name in self.headers)
        fault = emulator._next_fault()
        if fault == "ok":
            fault = None
        delay = emulator.faults.latency + (emulator.faults.slow_seconds if fault == "slow" else 0.0)
        if delay:
            time.sleep(delay)

        def record(status: int) -> None:
            # Recorded before the client can see an answer, so a test that got its answer
            # always finds the request here.
            emulator._record(
                RecordedRequest(method, parts.path, query, key_ok, status, fault, header_names=header_names)
            )

        if fault in _SHORT_CIRCUITS:
            record(int(_FAULT_STATUS.get(fault, HTTPStatus.OK)))
            self._misbehave(fault)
            return
        try:
            status, payload = self._route(method, parts.path, query, body, key_ok=key_ok)
        except _ApiError as error:
            status, payload = (
                error.status,
                {"data": [], "error": {"code": error.code, "message": error.message}},
            )
        if fault == "error200":
            payload = {"data": [], "error": {"code": "E500", "message": "Internal error while reading logs"}}
        record(int(status))
        self._send(status, _encode(payload))

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _misbehave(self, fault: str) -> None:
        """Answer with one of the ``_SHORT_CIRCUITS`` faults instead of the API's answer."""
        if fault == "429":
            retry_after = f"{self.emulator.faults.retry_after:g}"
            self._send_error(HTTPStatus.TOO_MANY_REQUESTS, "Too many requests", {"Retry-After": retry_after})
        elif fault in {"500", "503"}:
            self._send_error(HTTPStatus(int(fault)), "Service temporarily unavailable")
        elif fault == "drop":
            self._drop()
        elif fault == "drop_mid_body":
            self._drop_mid_body()
        elif fault == "truncated":
            self._send(HTTPStatus.OK, b'{"data": [{"message_id": "4d0cc5e0-8324-4042-b65e-20d0')
        elif fault == "html":
            self._send(HTTPStatus.OK, b"<html><body><h1>502 Bad Gateway</h1></body></html>", "text/html")
        elif fault == "redirect":
            self._send(HTTPStatus.FOUND, b"", "text/plain", {"Location": self.emulator.redirect_location})

    def _drop(self) -> None:
        self.close_connection = True
        self.connection.shutdown(socket.SHUT_RDWR)

    def _drop_mid_body(self) -> None:
        body = _encode({"data": [{"message_id": "x" * 64}] * 20, "error": {}})
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[: len(body) // 2])
        self.wfile.flush()
        self._drop()

    def _send_error(self, status: HTTPStatus, message: str, headers: Mapping[str, str] | None = None) -> None:
        payload = {"data": [], "error": {"code": f"E{status.value}", "message": message}}
        self._send(status, _encode(payload), headers=headers)

    def _send(
        self,
        status: HTTPStatus,
        body: bytes,
        content_type: str = "application/json",
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        # Headers and body in one write: one system call, and no small segment waiting on an ACK.
        buffered: list[bytes] = self._headers_buffer  # type: ignore[has-type,attr-defined]
        self.wfile.write(b"".join([*buffered, b"\r\n", body]))
        buffered.clear()

    # ---------------------------------------------------------------------------------------
    # The API
    # ---------------------------------------------------------------------------------------

    def _route(
        self, method: str, path: str, query: dict[str, list[str]], body: bytes, *, key_ok: bool
    ) -> tuple[HTTPStatus, Any]:
        segments = path.split("/")
        if len(segments) < 4 or segments[:2] != ["", "v1"] or segments[3] != "email":
            raise _ApiError(HTTPStatus.NOT_FOUND, f"No route for {path}")
        if unquote(segments[2]) != self.emulator.sid or not key_ok:
            raise _ApiError(HTTPStatus.UNAUTHORIZED, "Invalid API key or SID", "E401")
        rest = segments[4:]
        if method == "POST" and rest == []:
            return HTTPStatus.ACCEPTED, self._send_email(body)
        if method == "GET" and rest == ["logs"]:
            return HTTPStatus.OK, self._logs(query)
        if method == "GET" and rest == ["stats"]:
            return HTTPStatus.OK, self._summary_stats(query)
        if method == "GET" and len(rest) == 2 and rest[0] == "stats":
            return HTTPStatus.OK, self._message_stats(unquote(rest[1]))
        raise _ApiError(HTTPStatus.NOT_FOUND, f"No route for {method} {path}")

    def _logs(self, query: dict[str, list[str]]) -> dict[str, Any]:
        start, end = _date(query, "start_date"), _date(query, "end_date")
        page, limit = _page(query), _limit(query)
        search = [term for term in query.get("search", []) if term]
        listing = self.emulator.dataset.listing(
            start,
            end,
            to_mail=_single(query, "toMail"),
            message_id=_single(query, "messageId"),
            search=search,
        )
        rows = listing.encoded((page - 1) * limit, page * limit)
        envelope: dict[str, Any] = {"data": rows, "error": {}, "total": len(listing), "limit": str(limit)}
        # The page shows both spellings of "where we are": offset "" and, with search, page "0".
        envelope.update({"page": "0"} if search else {"offset": ""})
        return envelope

    def _summary_stats(self, query: dict[str, list[str]]) -> dict[str, Any]:
        start, end = _date(query, "start_date"), _date(query, "end_date")
        page, limit = _page(query), _limit(query)
        days = self.emulator.dataset.summary_days(start, end)
        return {"data": days[(page - 1) * limit : page * limit], "error": {}}

    def _message_stats(self, message_id: str) -> dict[str, Any]:
        dataset = self.emulator.dataset
        located = dataset.locate(message_id)
        if located is not None:
            return {"data": [dataset.message_stats(*located)], "error": {}}
        sent = dataset.sent_message_stats(message_id)
        if isinstance(sent, dict):
            return {"data": [sent], "error": {}}
        raise _ApiError(HTTPStatus.NOT_FOUND, f"Message {message_id} not found", "E404")

    def _send_email(self, body: bytes) -> dict[str, Any]:
        try:
            request = json.loads(body or b"null")
        except ValueError:
            raise _ApiError(HTTPStatus.BAD_REQUEST, "Body is not JSON") from None
        if not isinstance(request, dict):
            raise _ApiError(HTTPStatus.BAD_REQUEST, "Body must be a JSON object")
        sender = _address(request.get("from"))
        recipients = [_address(entry) for entry in _as_list(request.get("to"))]
        subject = request.get("subject")
        if not sender or not recipients or not all(recipients):
            raise _ApiError(HTTPStatus.BAD_REQUEST, "'from' and 'to' need email addresses")
        if not isinstance(subject, str) or not subject.strip():
            raise _ApiError(HTTPStatus.BAD_REQUEST, "'subject' is required")
        if not (request.get("html_body") or request.get("text_body") or request.get("template_name")):
            raise _ApiError(HTTPStatus.BAD_REQUEST, "one of 'html_body', 'text_body' or 'template_name' is required")
        message = self.emulator.dataset.send(
            from_mail=sender,
            to=[r for r in recipients if r],
            subject=subject,
            template_name=str(request.get("template_name") or ""),
        )
        data = [
            {"message_id": message_id, "to": address}
            for message_id, address in zip(message.message_ids(), recipients, strict=True)
        ]
        return {"data": data, "error": {}}


def _single(query: Mapping[str, list[str]], name: str) -> str | None:
    values = query.get(name)
    return values[-1] if values and values[-1] != "" else None


def _date(query: Mapping[str, list[str]], name: str) -> date | None:
    value = _single(query, name)
    if value is None:
        return None
    if not _DATE.fullmatch(value):
        raise _ApiError(HTTPStatus.BAD_REQUEST, f"{name} must be in the format YYYY-MM-DD")
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise _ApiError(HTTPStatus.BAD_REQUEST, f"{name} is not a valid date") from None


def _page(query: Mapping[str, list[str]]) -> int:
    value = _single(query, "page") or "1"
    if not value.isdigit() or int(value) < 1:
        raise _ApiError(HTTPStatus.BAD_REQUEST, "The page number cannot have a zero or a negative value")
    return int(value)


def _limit(query: Mapping[str, list[str]]) -> int:
    value = _single(query, "limit") or "50"
    if not value.isdigit() or not 1 <= int(value) <= 100:
        raise _ApiError(HTTPStatus.BAD_REQUEST, "limit must be between 1 and 100")
    return int(value)


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, list | tuple) else [value]


def _address(value: Any) -> str | None:
    if isinstance(value, Mapping):
        value = value.get("email")
    if isinstance(value, str) and "@" in value and not any(c.isspace() for c in value):
        return value
    return None


def recorded_statuses(requests: Iterable[RecordedRequest]) -> dict[int, int]:
    """How many recorded requests got each HTTP status."""
    counts: dict[int, int] = {}
    for request in requests:
        counts[request.status] = counts.get(request.status, 0) + 1
    return counts
