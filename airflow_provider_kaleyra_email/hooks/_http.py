"""How requests travel: the sync hook's ``requests.Session``, the async hooks' shared httpx client."""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
import weakref
from contextlib import contextmanager
from http import HTTPStatus
from typing import TYPE_CHECKING, ClassVar, NamedTuple, TypeVar
from urllib.parse import urlsplit

import httpx
import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import ConnectTimeoutError, DecodeError, HTTPError, NewConnectionError, ReadTimeoutError

from airflow_provider_kaleyra_email import __version__
from airflow_provider_kaleyra_email.exceptions import KaleyraEmailAPIError
from airflow_provider_kaleyra_email.hooks._api import TransientError, scrub
from airflow_provider_kaleyra_email.hooks._network import Network, causes

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Hashable, Iterator, Mapping

    import urllib3

    from airflow_provider_kaleyra_email.connection import ConnectionConfig
    from airflow_provider_kaleyra_email.hooks._paging import Log

R = TypeVar("R")


class Answer(NamedTuple):
    """An answer as it came, its body whole (decompressed): the arguments of ``interpret_response``."""

    status: int
    reason: str
    headers: Mapping[str, str]
    content: bytes


#: Bytes read at a time; the size cap and the deadline are checked between reads.
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


def session(config: ConnectionConfig, network: Network, *, pool_size: int) -> requests.Session:
    """Return the sync hook's ``requests.Session``: ``network`` applied, no retries of its own, a pool per host."""
    _URLLIB3_SCRUB.watch(config.api_key)
    http = requests.Session()
    http.trust_env = False  # the environment was read once, into ``network``; and ~/.netrc is never read
    http.headers.update(request_headers(config.api_key))
    for name, value in network.requests_options(urlsplit(config.base_url).scheme).items():
        setattr(http, name, value)
    adapter = HTTPAdapter(pool_connections=1, pool_maxsize=pool_size, max_retries=0)
    http.mount("https://", adapter)
    http.mount("http://", adapter)
    return http


def send(
    http: requests.Session,
    method: str,
    target: str,
    *,
    body: bytes | None,
    config: ConnectionConfig,
    network: Network,
) -> Answer:
    """
    Send one request to ``target`` (path and query) and read its whole answer, the body by ``config.timeout``.

    Failures worth retrying raise ``TransientError``; those no retry mends (TLS, the proxy) raise
    :class:`KaleyraEmailAPIError`.
    """
    endpoint = f"{method} {target}"
    deadline = time.monotonic() + config.timeout
    try:
        response = http.request(
            method,
            config.base_url + target,
            data=body,
            headers=None if body is None else {"Content-Type": "application/json"},
            timeout=config.timeout,
            allow_redirects=False,  # the api-key header must reach the configured host and no other
            stream=True,
        )
        try:
            content = Body(response.headers, limit=config.max_response_bytes, endpoint=endpoint).read_all(
                response.raw, deadline=deadline
            )
        except BaseException:
            response.close()  # a half-read connection must not be reused
            raise
        response.raw.release_conn()
    except (requests.RequestException, HTTPError, OSError) as exc:
        raise exchange_failure(exc, config=config, network=network, endpoint=endpoint) from None
    if response.status_code == HTTPStatus.PROXY_AUTHENTICATION_REQUIRED and network.proxy:
        raise network.proxy_refused(endpoint)  # a plain-http request's proxy answers in place of the API
    return Answer(response.status_code, response.reason or "", response.headers, content)


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
            raise KaleyraEmailAPIError(endpoint=self.endpoint, message=message)

    def add(self, chunk: bytes) -> None:
        self.size += len(chunk)
        self._check(self.size, at_least=True)
        self.chunks.append(chunk)

    def content(self) -> bytes:
        return b"".join(self.chunks)

    def read_all(self, response: urllib3.BaseHTTPResponse, *, deadline: float) -> bytes:
        """Read a urllib3 ``response`` to its end, by ``deadline`` (``time.monotonic()``), checked between reads."""
        while chunk := response.read1(READ_CHUNK_BYTES, decode_content=True):
            self.add(chunk)
            if time.monotonic() > deadline:
                raise TimeoutError("no complete answer by the deadline")
        return self.content()

    def _check(self, size: int, *, at_least: bool = False) -> None:
        if size > self.limit:
            more = "more than " if at_least else ""
            message = (
                f"the response body is {more}{size:,} bytes, over the limit of {self.limit:,} (max_response_bytes); "
                "no page of this API is that large, so it was not read"
            )
            raise KaleyraEmailAPIError(endpoint=self.endpoint, message=message)


def exchange_failure(
    exc: BaseException, *, config: ConnectionConfig, network: Network, endpoint: str
) -> TransientError | KaleyraEmailAPIError:
    """Return what an exchange that failed on the way (a requests, urllib3 or httpx error, a timeout) means."""
    host = urlsplit(config.base_url).netloc
    if (lasting := network.failure(exc, endpoint=endpoint, host=host)) is not None:
        return lasting
    chain = causes(exc)
    # The root cause, without the long wrapper text; scrubbed before it is cut, so no part of a secret remains.
    text = scrub(scrub(str(chain[-1]), config.api_key), network.proxy_password)[:200]
    reason = f"{type(chain[-1]).__name__}: {text}" if text else type(chain[-1]).__name__
    timeout = config.timeout
    if any(isinstance(cause, NewConnectionError) for cause in chain):  # refused, or no such host
        return TransientError(f"connection failed: {reason}", unsent=True, kind="connection")
    if any(isinstance(cause, ConnectTimeoutError | httpx.ConnectTimeout) for cause in chain):
        return TransientError(f"could not connect within {timeout:g} s", unsent=True, kind="timeout")
    if any(isinstance(cause, _TIMEOUTS) for cause in chain):
        return TransientError(f"no complete answer within {timeout:g} s (timeout)", kind="timeout")
    if any(isinstance(cause, DecodeError | httpx.DecodingError) for cause in chain):
        return TransientError(f"a body that could not be decompressed ({reason})")
    return TransientError(f"connection failed: {reason}", kind="connection")


_TIMEOUTS = (ReadTimeoutError, TimeoutError, asyncio.TimeoutError, httpx.TimeoutException, requests.Timeout)


class AdaptiveConcurrency:
    """
    Requests in flight: as many as are worth it, within a limit halved on HTTP 429 and raised after ``limit`` successes.

    Worth it is ``ceil(wait / cpu) + 1`` from the least wait and CPU of recent answers: the limit at 20 ms
    and more, one where an answer costs more CPU than waiting for it (more would fight over the GIL).
    """

    #: Requests in flight see the same 429 burst: it counts once per this many seconds.
    COOLDOWN_SECONDS = 1.0

    def __init__(self, maximum: int, *, log: Log | None = None):
        self.maximum = maximum
        self.limit = maximum
        self.worth = maximum  # until the first answers say otherwise
        self._active = 0
        self._successes = 0
        self._last_decrease = float("-inf")
        self._wait = self._cpu = float("inf")
        self._cond = threading.Condition()
        self._log: Log = log or logging.getLogger(__name__)

    @contextmanager
    def slot(self) -> Iterator[None]:
        with self._cond:
            while self._active >= min(self.limit, self.worth):
                self._cond.wait()
            self._active += 1
        started, cpu_started = time.monotonic(), time.thread_time()
        try:
            yield
        finally:
            cpu = time.thread_time() - cpu_started
            with self._cond:
                self._active -= 1
                # Least values, drifting up slowly: other threads and the garbage collector only inflate either.
                self._cpu = min(self._cpu * 1.01, max(cpu, 1e-6))
                self._wait = min(self._wait * 1.01, max(time.monotonic() - started - cpu, 0.0))
                self.worth = math.ceil(self._wait / self._cpu) + 1 if self._wait >= self._cpu else 1
                self._cond.notify()

    def throttled(self) -> None:
        with self._cond:
            now = time.monotonic()
            if now - self._last_decrease < self.COOLDOWN_SECONDS or self.limit == 1:
                return
            self._last_decrease = now
            self._successes = 0
            self.limit = max(1, self.limit // 2)
            self._log.warning("Rate limited by Kaleyra (HTTP 429): concurrency lowered to %d.", self.limit)

    def succeeded(self) -> None:
        with self._cond:
            if self.limit >= self.maximum:
                return
            self._successes += 1
            if self._successes >= self.limit:
                self._successes = 0
                self.limit += 1
                self._cond.notify()


class SharedClient:
    """
    What every async hook on one connection shares within one event loop: a thousand triggers cost one client.

    One connection lookup, one ``httpx.AsyncClient``, at most ``max_concurrency`` requests in flight,
    and after a 429 a pause of its ``Retry-After`` for them all. The last hook to leave closes it.
    """

    _registry: ClassVar[weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[Hashable, SharedClient]]] = (
        weakref.WeakKeyDictionary()
    )

    def __init__(self, key: Hashable) -> None:
        self.key = key
        self.users = 0
        self.config: ConnectionConfig | None = None
        self._client: httpx.AsyncClient | None = None
        self.network = Network()
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

    async def client(self) -> tuple[httpx.AsyncClient, Network]:
        """Return the connection's client and the network settings it applies, built once, off the event loop."""
        assert self.config is not None, "get_config() comes first"
        if self._client is None:
            # Resolving the settings reads the environment, and a TLS context costs tens of milliseconds of CPU.
            client, network = await asyncio.to_thread(_async_client, self.config)
            if self._client is None:
                self._client, self.network = client, network
            else:  # another hook built one meanwhile
                await client.aclose()
        return self._client, self.network

    async def get(self, config: ConnectionConfig, target: str) -> Answer:
        """GET ``target`` (path and query) in a free slot, after any 429 pause; the whole answer within ``timeout``."""
        assert self._in_flight is not None, "get_config() comes first"
        network = Network()
        try:
            async with self._in_flight:
                while (wait := self._resume_at - time.monotonic()) > 0:
                    await asyncio.sleep(wait)
                client, network = await self.client()
                answer = await within(config.timeout, _read(client, config, target))
        except (httpx.RequestError, OSError) as exc:  # OSError: TimeoutError, and a TLS alert httpx lets through
            raise exchange_failure(exc, config=config, network=network, endpoint=f"GET {target}") from None
        if answer.status == HTTPStatus.PROXY_AUTHENTICATION_REQUIRED and network.proxy:
            raise network.proxy_refused(f"GET {target}")
        return answer

    def pause(self, seconds: float) -> None:
        """Hold every request on the connection for ``seconds`` (a 429's Retry-After)."""
        self._resume_at = max(self._resume_at, time.monotonic() + seconds)


def _async_client(config: ConnectionConfig) -> tuple[httpx.AsyncClient, Network]:
    network = Network.of(config)
    client = httpx.AsyncClient(
        headers=request_headers(config.api_key),
        timeout=config.timeout,
        follow_redirects=False,
        limits=httpx.Limits(max_connections=config.max_concurrency),
        verify=network.ssl_context(),
        proxy=network.proxy,
        trust_env=False,  # the environment was read once, into ``network``, as for the sync hook
    )
    return client, network


async def within(seconds: float, awaitable: Awaitable[R]) -> R:
    """
    Return ``await awaitable``, or raise ``TimeoutError`` after ``seconds``; a cancellation always goes through.

    ``asyncio.wait_for`` before Python 3.12 can drop a cancellation that raced with a result.
    """
    task = asyncio.ensure_future(awaitable)
    try:
        done, _ = await asyncio.wait({task}, timeout=seconds)
    finally:
        if not task.done():
            task.cancel()
    if not done:
        raise TimeoutError(f"no answer within {seconds:g} s")
    return task.result()


async def _read(client: httpx.AsyncClient, config: ConnectionConfig, target: str) -> Answer:
    async with client.stream("GET", config.base_url + target) as response:
        body = Body(response.headers, limit=config.max_response_bytes, endpoint=f"GET {target}")
        async for chunk in response.aiter_bytes():
            body.add(chunk)
        return Answer(response.status_code, response.reason_phrase, response.headers, body.content())
