"""How requests travel: the sync hook's urllib3 pool, the async hooks' shared httpx client, each answer read whole."""

from __future__ import annotations

import asyncio
import http.client
import io
import logging
import os
import time
import urllib.request
import weakref
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple
from urllib.parse import urlsplit

import certifi
import httpx
import urllib3
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.exceptions import ConnectTimeoutError, DecodeError, HTTPError, NewConnectionError, ReadTimeoutError

from airflow_provider_kaleyra_email import __version__
from airflow_provider_kaleyra_email.exceptions import KaleyraEmailAPIError
from airflow_provider_kaleyra_email.hooks._api import TransientError, scrub

if TYPE_CHECKING:
    import socket
    from collections.abc import Awaitable, Callable, Hashable, Mapping

    from airflow_provider_kaleyra_email.connection import ConnectionConfig


class Answer(NamedTuple):
    """An answer as it came, its body whole (decompressed): the arguments of ``interpret_response``."""

    status: int
    reason: str
    headers: Mapping[str, str]
    content: bytes


#: Bytes read at a time; the size cap is checked between reads (the deadline, within each: _DeadlineReader).
READ_CHUNK_BYTES = 256 * 1024


def request_headers(api_key: str) -> dict[str, str]:
    """Return the headers of every request: the key in ``api-key`` and nowhere else."""
    user_agent = f"airflow-provider-kaleyra-email/{__version__}"
    return {"api-key": api_key, "Accept": "application/json", "User-Agent": user_agent}


class _ScrubKeys(logging.Filter):
    """Scrub our keys from urllib3's own log lines, which quote what a server sent (a header it cannot parse)."""

    LOGGERS = ("urllib3.connection", "urllib3.connectionpool", "urllib3.response")

    def __init__(self) -> None:
        super().__init__()
        self.keys: set[str] = set()

    def watch(self, key: str) -> None:
        self.keys.add(key)
        for name in self.LOGGERS:
            if self not in logging.getLogger(name).filters:
                logging.getLogger(name).addFilter(self)

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if record.exc_info:
            text = f"{text}\n{logging.Formatter().formatException(record.exc_info)}"
        scrubbed = text
        for key in self.keys:
            scrubbed = scrub(scrubbed, key)
        if scrubbed != text:
            record.msg, record.args, record.exc_info, record.exc_text = scrubbed, (), None, None
        return True


_URLLIB3_SCRUB = _ScrubKeys()


def pool_manager(config: ConnectionConfig, *, maxsize: int) -> urllib3.PoolManager:
    """Return a urllib3 pool for ``config.base_url``: proxy and CA bundle as requests reads them, never ``~/.netrc``."""
    _URLLIB3_SCRUB.watch(config.api_key)
    ca_certs = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or certifi.where()
    headers = request_headers(config.api_key)
    options: dict[str, Any] = {"maxsize": maxsize, "block": False, "headers": headers, "ca_certs": ca_certs}
    parts = urlsplit(config.base_url)
    proxy = urllib.request.getproxies().get(parts.scheme)
    if proxy and not urllib.request.proxy_bypass(parts.hostname or ""):
        manager: urllib3.PoolManager = urllib3.ProxyManager(proxy, **options)
    else:
        manager = urllib3.PoolManager(**options)
    manager.pool_classes_by_scheme = {"http": _HTTPPool, "https": _HTTPSPool}
    return manager


def send(
    http: urllib3.PoolManager, method: str, target: str, *, body: bytes | None, config: ConnectionConfig
) -> Answer:
    """
    Send one request to ``target`` (path and query) and read its whole answer, within ``config.timeout``.

    A deadline bounds every read of the answer, its status line and headers too, so an answer that
    trickles in a byte at a time cannot hold a worker for ever. The transport's failures raise
    ``TransientError``.
    """
    deadline = _DEADLINE.set(time.monotonic() + config.timeout)
    try:
        response = http.request(
            method,
            config.base_url + target,
            body=body,
            # Headers given here replace the pool's, so they carry the key too.
            headers=None if body is None else {**http.headers, "Content-Type": "application/json"},
            timeout=urllib3.Timeout(connect=config.timeout, read=config.timeout),
            redirect=False,  # the api-key header must reach the configured host and no other
            retries=False,
            preload_content=False,
        )
        try:
            body_read = Body(response.headers, limit=config.max_response_bytes, endpoint=f"{method} {target}")
            content = body_read.read_all(response)
        except BaseException:
            response.close()  # a half-read connection must not be reused
            raise
        finally:
            response.release_conn()
    except (HTTPError, OSError) as exc:
        raise exchange_failure(exc, timeout=config.timeout, api_key=config.api_key) from None
    finally:
        _DEADLINE.reset(deadline)
    return Answer(response.status, response.reason or "", response.headers, content)


class Body:
    """A response body as it arrives, refused (an error not retried: it would not shrink) past ``limit`` bytes."""

    def __init__(self, headers: Mapping[str, str], *, limit: int, endpoint: str):
        self.limit = limit
        self.endpoint = endpoint
        self.size = 0
        self.chunks: list[bytes] = []
        declared = headers.get("Content-Length", "")
        if declared.isascii() and declared.isdigit():  # "²".isdigit() too
            self._check(int(declared) if len(declared) < 19 else 10**19)
        codings = [coding for coding in headers.get("Content-Encoding", "").split(",") if coding.strip()]
        if len(codings) > 1:  # each layer may multiply the size, decoded whole before it is counted (httpx)
            message = f"the body is encoded {len(codings)} times over (Content-Encoding), as no API answer is; not read"
            raise KaleyraEmailAPIError(endpoint=self.endpoint, status_code=None, error_code=None, message=message)

    def add(self, chunk: bytes) -> None:
        self.size += len(chunk)
        self._check(self.size, at_least=True)
        self.chunks.append(chunk)

    def content(self) -> bytes:
        return b"".join(self.chunks)

    def read_all(self, response: urllib3.BaseHTTPResponse) -> bytes:
        """Read a urllib3 ``response`` to its end (its reads are bounded by the request's deadline)."""
        while chunk := response.read1(READ_CHUNK_BYTES, decode_content=True):
            self.add(chunk)
        return self.content()

    def _check(self, size: int, *, at_least: bool = False) -> None:
        if size > self.limit:
            more = "more than " if at_least else ""
            message = (
                f"the response body is {more}{size:,} bytes, over the limit of {self.limit:,} (max_response_bytes); "
                "no page of this API is that large, so it was not read"
            )
            raise KaleyraEmailAPIError(endpoint=self.endpoint, status_code=None, error_code=None, message=message)


#: When the answer to the request this thread is sending must be in, headers and body: ``send`` sets it.
_DEADLINE: ContextVar[float | None] = ContextVar("kaleyra_email_deadline", default=None)


class _DeadlineReader(io.RawIOBase):
    """A socket's bytes, each read given only the time left until the deadline: a trickle cannot outlast it."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        super().__init__()
        self._sock = sock
        # The socket's own reader, which keeps it open while the response is read (http.client
        # closes the connection of a close-delimited answer before its body is read).
        self._raw = sock.makefile("rb", buffering=0)
        self._deadline = deadline

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int | None:
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("no complete answer by the deadline")
        self._sock.settimeout(remaining)
        return self._raw.readinto(buffer)

    def close(self) -> None:
        self._raw.close()
        super().close()


class _Deadlined:
    """What ``http.client.HTTPResponse`` takes of a socket: ``makefile``, here over a :class:`_DeadlineReader`."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self._sock = sock
        self._deadline = deadline

    def makefile(self, mode: str) -> io.BufferedReader:
        return io.BufferedReader(_DeadlineReader(self._sock, self._deadline))


class _DeadlineResponse(http.client.HTTPResponse):
    """``http.client``'s response, read through a :class:`_DeadlineReader` while ``send`` has set a deadline."""

    def __init__(self, sock: Any, *args: Any, **kwargs: Any) -> None:
        deadline = _DEADLINE.get()
        source: Any = sock if deadline is None else _Deadlined(sock, deadline)  # all it uses is makefile()
        super().__init__(source, *args, **kwargs)

    def _read_status(self) -> tuple[str, int, str]:
        # begin() skips a 100 and reads on; so it does an informational 102 or 103 (Early Hints), which
        # http.client would take for the answer. 101 (switching protocols) stays the answer it is.
        version, status, reason = super()._read_status()  # type: ignore[misc]
        informational = 100 < status < 200 and status != http.client.SWITCHING_PROTOCOLS
        return version, http.client.CONTINUE if informational else status, reason


class _HTTPConnection(HTTPConnection):
    response_class = _DeadlineResponse


class _HTTPSConnection(HTTPSConnection):
    response_class = _DeadlineResponse


class _HTTPPool(urllib3.HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSPool(urllib3.HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


def exchange_failure(exc: BaseException, *, timeout: float, api_key: str | None) -> TransientError:
    """Return what an exchange that failed on the way (a urllib3 or httpx error, a timeout) means."""
    causes = [exc]  # and the errors it wraps: urllib3 keeps them in ``reason`` or ``args[0]``
    while True:
        inner = getattr(causes[-1], "reason", None)
        if not isinstance(inner, BaseException):
            args = causes[-1].args
            inner = args[0] if args and isinstance(args[0], BaseException) else None
        if inner is None or inner in causes:
            break
        causes.append(inner)
    text = scrub(str(causes[-1]), api_key)[:200]  # the root cause, without the long urllib3 wrapper text
    reason = f"{type(causes[-1]).__name__}: {text}" if text else type(causes[-1]).__name__
    if any(isinstance(cause, NewConnectionError) for cause in causes):  # refused, or no such host
        return TransientError(f"connection failed: {reason}", unsent=True, kind="connection")
    if isinstance(exc, ConnectTimeoutError | httpx.ConnectTimeout):
        return TransientError(f"could not connect within {timeout:g} s", unsent=True, kind="timeout")
    if isinstance(exc, ReadTimeoutError | TimeoutError | asyncio.TimeoutError | httpx.TimeoutException):
        return TransientError(f"no complete answer within {timeout:g} s (timeout)", kind="timeout")
    if isinstance(exc, DecodeError | httpx.DecodingError):
        return TransientError(f"a body that could not be decompressed ({reason})")
    return TransientError(f"connection failed: {reason}", kind="connection")


class SharedClient:
    """
    What every async hook on one connection shares within one event loop (a triggerer's).

    One connection lookup, one ``httpx.AsyncClient`` (one TLS context, a pool of at most
    ``max_concurrency`` connections), at most ``max_concurrency`` requests in flight, and after a
    429 a pause of its ``Retry-After`` for every request on the connection: a thousand waiting
    triggers cost one client. The last hook to leave closes it.
    """

    _registry: ClassVar[weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[Hashable, SharedClient]]] = (
        weakref.WeakKeyDictionary()
    )

    def __init__(self, key: Hashable) -> None:
        self.key = key
        self.users = 0
        self.config: ConnectionConfig | None = None
        self._client: httpx.AsyncClient | None = None
        self._lookup = asyncio.Lock()
        self._in_flight: asyncio.Semaphore | None = None
        self._resume_at = 0.0

    @classmethod
    def join(cls, key: Hashable) -> SharedClient:
        """Return the shared state of connection ``key`` in the running event loop, counting one more user."""
        by_key = cls._registry.setdefault(asyncio.get_running_loop(), {})
        shared = by_key.get(key) or by_key.setdefault(key, cls(key))
        shared.users += 1
        return shared

    async def leave(self) -> None:
        self.users -= 1
        if self.users > 0:
            return
        self._registry.get(asyncio.get_running_loop(), {}).pop(self.key, None)
        if self._client is not None:
            await self._client.aclose()

    async def get_config(self, read: Callable[[], Awaitable[ConnectionConfig]]) -> ConnectionConfig:
        """Return the connection's settings: ``read()`` by the first hook, the others wait for its answer."""
        async with self._lookup:
            if self.config is None:
                config = await read()
                self._in_flight = asyncio.Semaphore(config.max_concurrency)
                self.config = config
        return self.config

    async def client(self) -> httpx.AsyncClient:
        assert self.config is not None, "get_config() comes first"
        if self._client is None:
            # Building a client builds a TLS context: tens of milliseconds of CPU, kept off the loop.
            client = await asyncio.to_thread(
                httpx.AsyncClient,
                headers=request_headers(self.config.api_key),
                timeout=self.config.timeout,
                follow_redirects=False,
                limits=httpx.Limits(max_connections=self.config.max_concurrency),
            )
            if self._client is None:
                self._client = client
            else:  # another hook built one meanwhile
                await client.aclose()
        return self._client

    async def get(self, config: ConnectionConfig, target: str) -> Answer:
        """GET ``target`` (path and query) in a free slot, after any 429 pause; the whole answer within ``timeout``."""
        assert self._in_flight is not None, "get_config() comes first"
        try:
            async with self._in_flight:
                while (wait := self._resume_at - time.monotonic()) > 0:
                    await asyncio.sleep(wait)
                client = await self.client()
                return await asyncio.wait_for(_read(client, config, target), timeout=config.timeout)
        except (httpx.RequestError, asyncio.TimeoutError) as exc:
            raise exchange_failure(exc, timeout=config.timeout, api_key=config.api_key) from None

    def pause(self, seconds: float) -> None:
        """Hold every request on the connection for ``seconds`` (a 429's Retry-After)."""
        self._resume_at = max(self._resume_at, time.monotonic() + seconds)


async def _read(client: httpx.AsyncClient, config: ConnectionConfig, target: str) -> Answer:
    async with client.stream("GET", config.base_url + target) as response:
        body = Body(response.headers, limit=config.max_response_bytes, endpoint=f"GET {target}")
        async for chunk in response.aiter_bytes():
            body.add(chunk)
        return Answer(response.status_code, response.reason_phrase, response.headers, body.content())
