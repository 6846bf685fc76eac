"""
The emulator: a real HTTP/1.1 server on loopback that answers like the Kaleyra Email API.

It serves ``GET /v1/<SID>/email/stats/<message id>``, ``GET /v1/<SID>/email/stats``,
``GET /v1/<SID>/email/logs`` and ``POST /v1/<SID>/email`` from a :class:`SyntheticDataset`,
checks the ``api-key`` header, validates ``page``/``limit``/dates like the API (HTTP 400), and
can misbehave on purpose: latency, 429 with ``Retry-After``, 5xx, dropped connections,
truncated or HTML bodies, slow answers, and errors inside an HTTP 200.

It can also play a hostile server. One-off fault kinds (``queue_faults``, see ``FAULT_KINDS``):

- ``"trickle"``: the real answer, body one byte every ``Faults.trickle_seconds``;
  ``"trickle_headers"``: the status line and headers too;
- ``"close_delimited"``: the real answer framed by closing the connection (no ``Content-Length``),
  its body a moment after its headers: legal HTTP that a client must read whole;
- ``"oversized"`` / ``"oversized_chunked"``: a valid JSON body of ``Faults.oversized_bytes``,
  with or without ``Content-Length``, streamed, never built in memory;
- ``"bad_gzip"``: ``Content-Encoding: gzip`` on a body that is not gzip;
- ``"echo_error"`` / ``"echo_html"`` / ``"echo_redirect"``: a 400 JSON error, a 502 HTML page or
  a 302 ``Location`` that echo the API key the client sent (raw, URL-encoded, base64 Basic);
- ``"non_object_rows"``: the real answer with ``1, "x", null, []`` ahead of the rows.

And persistent lies of a broken server, proxy or API release on the paged endpoints
(:class:`Quirks`, ``set_quirks``): clamped pages, pages that repeat others, a wrong or missing
``total``, empty pages from some page on, more rows per page than ``limit``, and log rows
missing fields.
"""

from __future__ import annotations

import base64
import contextlib
import enum
import json
import math
import os
import random
import re
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

import msgspec

from airflow_provider_kaleyra_email.testing._dataset import SyntheticDataset

if TYPE_CHECKING:
    import ssl

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
    "trickle",  # the real answer, its body one byte every Faults.trickle_seconds
    "trickle_headers",  # the real answer, status line and headers too, one byte every Faults.trickle_seconds
    "close_delimited",  # the real answer without Content-Length, ended by closing the connection
    "oversized",  # 200 with a valid JSON body of Faults.oversized_bytes, Content-Length declared
    "oversized_chunked",  # the same body, chunked: no Content-Length to refuse it by
    "bad_gzip",  # 200, Content-Encoding: gzip, a body that is not gzip
    "echo_error",  # 400 JSON error echoing the api-key the client sent (raw, URL-encoded, base64)
    "echo_html",  # 502 HTML page echoing the sent api-key in the same three forms
    "echo_redirect",  # 302 to a Location carrying the sent api-key URL-encoded and base64
    "non_object_rows",  # the real answer with 1, "x", null and [] ahead of the rows (logs, summary stats)
)

#: What a fault answers, as recorded; 0 means no HTTP status reached the client.
_FAULT_STATUS = {
    "429": HTTPStatus.TOO_MANY_REQUESTS,
    "500": HTTPStatus.INTERNAL_SERVER_ERROR,
    "503": HTTPStatus.SERVICE_UNAVAILABLE,
    "redirect": HTTPStatus.FOUND,
    "echo_error": HTTPStatus.BAD_REQUEST,
    "echo_html": HTTPStatus.BAD_GATEWAY,
    "echo_redirect": HTTPStatus.FOUND,
    "drop": 0,
    "drop_mid_body": 0,
}
#: Faults that replace the API's answer; the others delay, change or trickle it instead.
_SHORT_CIRCUITS = frozenset(FAULT_KINDS) - {
    "ok", "slow", "error200", "trickle", "trickle_headers", "close_delimited", "non_object_rows"
}  # fmt: skip
#: What "non_object_rows" puts ahead of the real rows.
_NON_OBJECT_ROWS: tuple[Any, ...] = (1, "x", None, [])
_CHUNK = 64 * 1024
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_encode = msgspec.json.Encoder().encode


@dataclass
class Faults:
    """
    How often the emulator misbehaves, as shares of requests (0 to 1), drawn from a seeded RNG.

    :param latency: seconds added before every answer.
    :param rate_limit: share answered 429 with ``Retry-After: retry_after``.
    :param requests_per_second: the account's rate limit, as an API gateway keeps it (0: none): a
        bucket of ``burst`` requests (default: one second's worth) refilled at this rate, shared by
        every connection; a request that finds it empty is answered 429 with ``Retry-After``, the
        whole seconds until the bucket has a request again.
    :param burst: the most requests at once before the limit bites.
    :param server_errors: share answered 500 or 503.
    :param drops: share whose connection closes: half before answering, half mid-body.
    :param malformed: share answered 200 with a truncated JSON body or an HTML page.
    :param slow: share answered only after ``slow_seconds``.
    :param error_on_200: share answered 200 with a non-empty ``error`` object.
    :param trickle_seconds: pause between the body's bytes of a ``"trickle"`` fault.
    :param oversized_bytes: body size of an ``"oversized"`` or ``"oversized_chunked"`` fault.
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
    trickle_seconds: float = 0.5
    oversized_bytes: int = 80 * 1024 * 1024
    requests_per_second: float = 0.0
    burst: float | None = None

    def __post_init__(self) -> None:
        if not self.requests_per_second >= 0:
            raise ValueError(f"requests_per_second={self.requests_per_second!r} must be 0 (no limit) or more")
        if self.burst is not None and not self.burst >= 1:
            raise ValueError(f"burst={self.burst!r} must be at least 1 request")

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


class _Bucket:
    """A token bucket: ``rate`` requests a second, ``size`` at once; shared by every connection."""

    def __init__(self, rate: float, size: float | None):
        self.rate, self.size = rate, size or max(1.0, rate)
        self.tokens, self.at = self.size, time.monotonic()

    def take(self) -> float:
        """Take a request's token; return 0, or the seconds until one is there (none taken). Call under a lock."""
        if not self.rate:
            return 0.0
        now = time.monotonic()
        self.tokens, self.at = min(self.size, self.tokens + (now - self.at) * self.rate), now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate


class _Omit(enum.Enum):
    OMIT = "OMIT"

    def __repr__(self) -> str:
        return "OMIT"


#: What a ``Quirks.total`` function returns to leave ``total`` out of the envelope.
OMIT = _Omit.OMIT


@dataclass
class Quirks:
    """
    Persistent lies of a broken server, proxy or API release.

    On ``GET .../logs`` and ``GET .../stats`` (summary stats) unless noted. They change what is
    served, never what ``dataset.expected_logs(...)`` returns.

    :param clamp_pages: a page past the last one answers the last page's rows again.
    :param page_rows_from: ``page -> served page``: page ``p`` shows the rows of page ``f(p)``.
    :param total: logs only: ``(true_total, page) -> envelope total``; return ``OMIT`` to leave it out.
    :param empty_from_page: pages from this one on answer ``data: []`` (``total`` unchanged).
    :param rows_per_page: rows per page whatever ``limit`` says (``limit`` is still echoed).
    :param drop_row_fields: logs only: fields removed from every log row served.
    """

    clamp_pages: bool = False
    page_rows_from: Callable[[int], int] | None = None
    total: Callable[[int, int], Any] | None = None
    empty_from_page: int | None = None
    rows_per_page: int | None = None
    drop_row_fields: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in ("empty_from_page", "rows_per_page"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be at least 1, not {value}")
        self.drop_row_fields = tuple(self.drop_row_fields)


_NO_QUIRKS = Quirks()


@dataclass(frozen=True)
class RecordedRequest:
    """
    One request as the emulator saw it; ``api_key_ok`` says if the key matched.

    Of the headers only their names are kept (lower case), never a value, so no secret is stored.
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
    :param quirks: persistent lies on the paged endpoints (see :class:`Quirks`).
    :param redirect_location: where a ``"redirect"`` fault points.
    :param ssl_context: serve HTTPS with this server-side context (a private CA's certificate, say;
        ``verify_mode = CERT_REQUIRED`` demands a client certificate); plain HTTP without one.
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
        quirks: Quirks | None = None,
        redirect_location: str = "http://127.0.0.1:9/elsewhere",
        ssl_context: ssl.SSLContext | None = None,
        **dataset_options: Any,
    ):
        self.host = host
        self.port = port
        self.sid = sid
        self.api_key = api_key
        self.dataset = dataset or SyntheticDataset(**dataset_options)
        self.faults = faults or Faults()
        self.quirks = quirks or Quirks()
        self.redirect_location = redirect_location
        self.ssl_context = ssl_context
        self.requests: deque[RecordedRequest] = deque(maxlen=200_000)
        self._queued_faults: deque[str] = deque()
        self._lock = threading.Lock()
        self._rng = random.Random(self.faults.seed)
        self._bucket = _Bucket(self.faults.requests_per_second, self.faults.burst)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        # Set by stop(): handlers that trickle or stream a big body give up at once.
        self._stopping = threading.Event()

    def __repr__(self) -> str:
        state = self.base_url if self._server else "stopped"
        return f"KaleyraEmailEmulator({state}, sid={self.sid!r})"

    # ---------------------------------------------------------------------------------------
    # Life cycle
    # ---------------------------------------------------------------------------------------

    def start(self) -> KaleyraEmailEmulator:
        handler = type("Handler", (_Handler,), {"emulator": self})
        server = ThreadingHTTPServer((self.host, self.port), handler)
        # Handler threads are daemons: server_close() does not wait for them (a trickle may run long).
        server.daemon_threads = True
        server.request_queue_size = 128
        if self.ssl_context is not None:
            # The handshake happens in the handler's thread, at its first read: a client that never
            # finishes one (or is refused) holds no other connection up.
            server.socket = self.ssl_context.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)
        self._server = server
        self.port = server.server_address[1]
        self._stopping = threading.Event()
        self._thread = threading.Thread(
            target=server.serve_forever,
            # serve_forever checks for shutdown() between polls: 0.05 s keeps stop() short.
            kwargs={"poll_interval": 0.05},
            name="kaleyra-email-emulator",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()  # handlers still trickling or streaming give up
        server, self._server = self._server, None
        if server is not None:
            # serve_forever() sees shutdown() at its next poll, or at once when a connection wakes it.
            stopper = threading.Thread(target=server.shutdown, name="kaleyra-email-emulator-stop", daemon=True)
            stopper.start()
            address = (str(server.server_address[0]), int(server.server_address[1]))
            deadline = time.monotonic() + 5
            while stopper.is_alive() and time.monotonic() < deadline:
                with contextlib.suppress(OSError):
                    socket.create_connection(address, timeout=0.1).close()
                stopper.join(timeout=0.01)
            server.server_close()  # closes the listening socket; daemon handler threads are not awaited
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
        return f"{'https' if self.ssl_context is not None else 'http'}://{host}:{self.port}"

    def connection(self, **extra: Any) -> dict[str, Any]:
        """Return the Airflow connection (as a dict) that reaches this emulator."""
        return {
            "conn_type": "kaleyra_email",
            "login": self.sid,
            "password": self.api_key,
            "host": self.base_url,
            # UTC is the default; leaving it out also spares Airflow's secrets masker a short value.
            "extra": {**({"timezone": self.dataset.timezone} if self.dataset.timezone != "UTC" else {}), **extra},
        }

    def connection_json(self, **extra: Any) -> str:
        """Return the connection as JSON, for ``AIRFLOW_CONN_<ID>``."""
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
            self._bucket = _Bucket(faults.requests_per_second, faults.burst)

    def set_quirks(self, quirks: Quirks) -> None:
        """Lie from the next request on as ``quirks`` says; ``Quirks()`` stops lying."""
        with self._lock:
            self.quirks = quirks

    def clear(self) -> None:
        """Forget recorded requests, queued faults, fault rates and quirks."""
        with self._lock:
            self.requests.clear()
            self._queued_faults.clear()
            self.faults = Faults()
            self.quirks = Quirks()
            self._rng = random.Random(0)
            self._bucket = _Bucket(0, None)

    def requests_to(self, endpoint: str) -> list[RecordedRequest]:
        """Return the recorded requests whose path ends with ``endpoint`` (``"/logs"``, ``"/stats"``, ...)."""
        return [request for request in list(self.requests) if request.path.endswith(endpoint)]

    def _next_fault(self) -> tuple[str | None, float]:
        """Return the next request's fault (``"rate_limit"`` past the account's limit) and, then, its wait."""
        with self._lock:
            if wait := self._bucket.take():
                return "rate_limit", wait
            if self._queued_faults:
                return self._queued_faults.popleft(), 0.0
            return self.faults.draw(self._rng), 0.0

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
        except OSError as error:
            self.close_connection = True
            if type(error).__name__ == "SSLError":  # a refused handshake: no TLS left to speak
                self._linger()

    def _linger(self) -> None:
        """
        Close as web servers do (nginx's lingering close): stop sending, then drain what the client sent.

        Closed at once, a socket with the client's unread request resets the connection, and the
        reset can overtake the TLS alert that says why (a client certificate required).
        """
        raw = socket.socket(fileno=os.dup(self.connection.fileno()))
        with raw, contextlib.suppress(OSError):
            raw.shutdown(socket.SHUT_WR)
            raw.settimeout(1.0)
            while raw.recv(65536):
                pass

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
        fault, wait = emulator._next_fault()
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

        if fault == "rate_limit":
            record(HTTPStatus.TOO_MANY_REQUESTS)
            headers = {"Retry-After": str(math.ceil(wait))}
            self._send_error(HTTPStatus.TOO_MANY_REQUESTS, "Rate limit exceeded for this account", headers)
            return
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
        elif fault == "non_object_rows" and status == HTTPStatus.OK and parts.path.endswith(("/logs", "/stats")):
            payload = {**payload, "data": [*_NON_OBJECT_ROWS, *payload["data"]]}
        record(int(status))
        if fault in {"trickle", "trickle_headers"}:
            self._trickle(status, _encode(payload), head_too=fault == "trickle_headers")
        elif fault == "close_delimited":
            self._close_delimited(status, _encode(payload))
        else:
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
        elif fault in {"oversized", "oversized_chunked"}:
            self._oversized(chunked=fault == "oversized_chunked")
        elif fault == "bad_gzip":
            self._send(HTTPStatus.OK, b"\x1f\x8b\x08\x00garbage-not-gzip-at-all", headers={"Content-Encoding": "gzip"})
        elif fault.startswith("echo_"):
            self._echo_key(fault)

    def _echo_key(self, fault: str) -> None:
        """Echo the API key the client sent, as careless servers and proxies do."""
        raw, encoded, basic = _key_forms(self.headers.get("api-key") or "")
        if fault == "echo_error":
            message = f"Invalid api-key {raw} (url: {encoded}; Authorization: Basic {basic})"
            payload = {"data": [], "error": {"code": "E400", "message": message}}
            self._send(HTTPStatus.BAD_REQUEST, _encode(payload), headers={"X-Echo-Api-Key": raw})
        elif fault == "echo_html":
            # Not escaped on purpose: a debugging proxy's page, the key as it came.
            page = (
                "<html><head><title>502 Bad Gateway</title></head><body><h1>502 Bad Gateway</h1>"
                f"<pre>upstream refused GET {self.path}\napi-key: {raw}\n"
                f"query: ?api-key={encoded}\nAuthorization: Basic {basic}</pre></body></html>"
            )
            self._send(HTTPStatus.BAD_GATEWAY, page.encode("utf-8"), "text/html; charset=utf-8")
        elif fault == "echo_redirect":
            location = f"http://127.0.0.1:9/login?api-key={encoded}&auth={basic}"
            self._send(HTTPStatus.FOUND, b"", "text/plain", {"Location": location})

    def _trickle(self, status: HTTPStatus, body: bytes, *, head_too: bool) -> None:
        """Send ``body`` with a true ``Content-Length``, a byte every ``trickle_seconds``; ``head_too``: headers too."""
        pause = self.emulator.faults.trickle_seconds
        stopping = self.emulator._stopping
        head = (
            f"{self.protocol_version} {status.value} {status.phrase}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        if head_too:
            body = head + body
        else:
            self.wfile.write(head)  # headers at once
        try:
            for index in range(len(body)):
                if index and stopping.wait(pause):
                    self.close_connection = True
                    return
                self.wfile.write(body[index : index + 1])
        except OSError:  # the client went away
            self.close_connection = True

    def _close_delimited(self, status: HTTPStatus, body: bytes) -> None:
        """Send the headers without ``Content-Length``, then ``body`` a moment later, then close the connection."""
        head = f"{self.protocol_version} {status.value} {status.phrase}\r\nContent-Type: application/json\r\n"
        self.wfile.write(f"{head}Connection: close\r\n\r\n".encode())
        time.sleep(0.05)  # the body in a later segment than the headers
        with contextlib.suppress(OSError):  # the client went away
            self.wfile.write(body)
        self.close_connection = True

    def _oversized(self, *, chunked: bool) -> None:
        """Send a valid JSON envelope of ``oversized_bytes`` bytes, streamed in 64 KB chunks."""
        head, tail = b'{"data": [], "error": {}, "padding": "', b'"}'
        padding = max(0, self.emulator.faults.oversized_bytes - len(head) - len(tail))
        stopping = self.emulator._stopping
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "application/json")
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Content-Length", str(len(head) + padding + len(tail)))
        self.end_headers()

        def write(data: bytes) -> None:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data) if chunked else data)

        filler = b"x" * _CHUNK
        try:
            write(head)
            while padding and not stopping.is_set():
                step = min(padding, _CHUNK)
                write(filler if step == _CHUNK else filler[:step])
                padding -= step
            if padding:  # the emulator is stopping
                self.close_connection = True
                return
            write(tail)
            if chunked:
                self.wfile.write(b"0\r\n\r\n")
        except OSError:  # the client went away
            self.close_connection = True

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
        quirks = self.emulator.quirks
        first, stop = _page_bounds(quirks, page, limit, len(listing))
        rows = listing[first:stop]
        if quirks.drop_row_fields:
            rows = [{k: v for k, v in row.items() if k not in quirks.drop_row_fields} for row in rows]
        total = len(listing) if quirks.total is None else quirks.total(len(listing), page)
        envelope: dict[str, Any] = {"data": rows, "error": {}, "total": total, "limit": str(limit)}
        if total is OMIT:
            del envelope["total"]
        # The page shows both spellings of "where we are": offset "" and, with search, page "0".
        envelope.update({"page": "0"} if search else {"offset": ""})
        return envelope

    def _summary_stats(self, query: dict[str, list[str]]) -> dict[str, Any]:
        start, end = _date(query, "start_date"), _date(query, "end_date")
        page, limit = _page(query), _limit(query)
        days = self.emulator.dataset.summary_days(start, end)
        quirks = self.emulator.quirks
        first, stop = (
            ((page - 1) * limit, page * limit) if quirks == _NO_QUIRKS else _page_bounds(quirks, page, limit, len(days))
        )
        return {"data": days[first:stop], "error": {}}

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


def _page_bounds(quirks: Quirks, page: int, limit: int, count: int) -> tuple[int, int]:
    """Return the rows ``[first, stop)`` that page ``page`` shows, as ``quirks`` lie."""
    if quirks.empty_from_page is not None and page >= quirks.empty_from_page:
        return 0, 0
    size = quirks.rows_per_page or limit
    served = quirks.page_rows_from(page) if quirks.page_rows_from is not None else page
    if quirks.clamp_pages:
        served = min(served, max(1, -(-count // size)))  # with no rows, page 1: empty
    if served < 1:
        return 0, 0
    return (served - 1) * size, min(served * size, count)


def _key_forms(key: str) -> tuple[str, str, str]:
    """Return a sent API key raw, URL-encoded and as the base64 of a Basic ``user:<key>``."""
    basic = base64.b64encode(f"user:{key}".encode()).decode("ascii")
    return key, quote(key, safe=""), basic


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
