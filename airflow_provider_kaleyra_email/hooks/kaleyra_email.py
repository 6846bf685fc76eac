"""
The hooks of the Kaleyra Email API: ``KaleyraEmailHook`` (sync) and ``KaleyraEmailAsyncHook``.

The sync hook holds one urllib3 connection pool, with paging and retries; the async
hook is its ``httpx`` counterpart for triggers. Both read a response, and retry, by the rules
of :mod:`airflow_provider_kaleyra_email.hooks._api`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import threading
import time
import weakref
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from functools import cached_property
from http import HTTPStatus
from typing import Any, ClassVar
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

import httpx
import msgspec
import urllib3
from airflow.providers.common.compat.connection import get_async_connection
from airflow.providers.common.compat.sdk import BaseHook
from tenacity import AsyncRetrying, Retrying
from urllib3.exceptions import ConnectTimeoutError, DecodeError, HTTPError, NewConnectionError, ReadTimeoutError

from airflow_provider_kaleyra_email import provider_info, validation
from airflow_provider_kaleyra_email.connection import (
    ConnectionConfig,
    ConnectionConfigError,
    check_overrides,
    config_of,
)
from airflow_provider_kaleyra_email.exceptions import (
    KaleyraEmailAPIError,
    KaleyraEmailRetriesExhaustedError,
    KaleyraEmailTransientError,
)
from airflow_provider_kaleyra_email.hooks import _api
from airflow_provider_kaleyra_email.hooks._api import interpret_response
from airflow_provider_kaleyra_email.hooks._paging import (
    AdaptiveConcurrency,
    Listing,
    Page,
    cancellable_sleep,
    list_pages,
)

try:
    from airflow.providers.common.compat.sdk import mask_secret
except ImportError:  # common-compat before 1.21 (Airflow 2.11 installs 1.20)
    from airflow.utils.log.secrets_masker import mask_secret  # type: ignore[no-redef]

_json_encode = msgspec.json.Encoder().encode

__all__ = [
    "KaleyraEmailAPIError",
    "KaleyraEmailAsyncHook",
    "KaleyraEmailHook",
    "KaleyraEmailRetriesExhaustedError",
    "KaleyraEmailTransientError",
    "interpret_response",
]


@dataclass(frozen=True)
class _LogsQuery:
    params: tuple[tuple[str, str], ...]
    page_size: int
    label: str


class KaleyraEmailHook(BaseHook):
    """
    Talks to the Kaleyra Email API: message stats, summary stats and logs.

    Callers get plain dict rows and never see pages. Retryable failures (429 with its
    ``Retry-After``, 5xx, timeouts, dropped connections, unreadable bodies) are retried with
    exponential backoff and jitter; anything else raises :class:`KaleyraEmailAPIError`.

    :param kaleyra_email_conn_id: connection with the SID in ``login`` and the API key in ``password``.
    :param timeout: seconds a whole response may take (default: connection extra, else 30).
    :param max_retries: retries after the first attempt (default: connection extra, else 5).
    :param page_size: rows per request, 1 to 100 (default: connection extra, else 100).
    :param max_concurrency: most log pages fetched at once (default: connection extra, else 16).
    :param max_response_bytes: the largest response body read (default 64 MiB); a larger one is an error.
    :param retry_wait_initial: backoff scale in seconds: retry ``n`` waits a random time up to
        ``retry_wait_initial * 2**n``, capped at ``retry_wait_max``.
    :param retry_wait_max: longest backoff in seconds.
    """

    conn_name_attr = "kaleyra_email_conn_id"
    default_conn_name = "kaleyra_email_default"
    conn_type = "kaleyra_email"
    hook_name = "Kaleyra Email"

    def __init__(
        self,
        kaleyra_email_conn_id: str = default_conn_name,
        *,
        timeout: float | None = None,
        max_retries: int | None = None,
        page_size: int | None = None,
        max_concurrency: int | None = None,
        max_response_bytes: int | None = None,
        retry_wait_initial: float = 1.0,
        retry_wait_max: float = 60.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.kaleyra_email_conn_id = kaleyra_email_conn_id
        self._overrides = check_overrides(
            timeout=timeout,
            max_retries=max_retries,
            page_size=page_size,
            max_concurrency=max_concurrency,
            max_response_bytes=max_response_bytes,
        )
        self.retry_wait_initial = validation.positive_number(retry_wait_initial, parameter="retry_wait_initial")
        self.retry_wait_max = validation.positive_number(retry_wait_max, parameter="retry_wait_max")
        #: What the most recent ``iter_logs``/``iter_summary_stats`` did, for summaries and tests.
        self.last_fetch: Listing | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(kaleyra_email_conn_id={self.kaleyra_email_conn_id!r})"

    # ----------------------------------------------------------------------------------------
    # Connection
    # ----------------------------------------------------------------------------------------

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        """Return the connection form's layout (Airflow 2.11 to 3.1; 3.2+ reads provider info)."""
        return provider_info.ui_field_behaviour()

    @classmethod
    def get_connection_form_widgets(cls) -> dict[str, Any]:
        """Return the connection form's named extra fields (Airflow 2.11 to 3.1)."""
        return provider_info.connection_form_widgets()

    @cached_property
    def config(self) -> ConnectionConfig:
        """The connection's settings, read and checked once, with this hook's overrides applied."""
        conn = self.get_connection(self.kaleyra_email_conn_id)
        config = config_of(conn, conn.extra_dejson, conn_id=self.kaleyra_email_conn_id, overrides=self._overrides)
        # Airflow masks a connection's password as it loads it in a task; a hook used anywhere
        # else (a script, a test, a callback) registers it here, so no log line can hold it.
        mask_secret(config.api_key)
        return config

    @cached_property
    def http(self) -> urllib3.PoolManager:
        """One connection pool per hook (urllib3, without requests' per-request layers), shared by its threads."""
        return _api.pool_manager(self.config, maxsize=max(4, self.config.max_concurrency))

    @cached_property
    def _concurrency(self) -> AdaptiveConcurrency:
        return AdaptiveConcurrency(self.config.max_concurrency, log=self.log)

    @property
    def timezone(self) -> ZoneInfo:
        """The account's time zone, in which the API reads and writes dates."""
        return ZoneInfo(self.config.timezone)

    def close(self) -> None:
        if "http" in self.__dict__:
            self.http.clear()
            del self.__dict__["http"]

    # ----------------------------------------------------------------------------------------
    # Public API
    # ----------------------------------------------------------------------------------------

    def get_message_stats(self, message_id: str) -> dict[str, Any]:
        """
        Return one message with its ``recipients``.

        Each recipient has ``status``, ``delivery_datetime``, ``error_code`` and ``error_message``.

        :raises KaleyraEmailAPIError: with ``status_code`` 404 when Kaleyra does not know the id.
        """
        message_id = validation.message_id(message_id)
        path = _api.message_stats_path(self.config.sid, message_id)
        return _api.message_from_body(self._call("GET", path), message_id=message_id, endpoint=f"GET {path}")

    def send_email(
        self,
        *,
        from_email: str,
        to: str | Sequence[str],
        subject: str,
        html_body: str | None = None,
        text_body: str | None = None,
        message_type: str | None = None,
    ) -> list[str]:
        """
        Send an email with ``POST /v1/<SID>/email``; return the message ids Kaleyra assigned.

        Kaleyra answers 202 with one ``message_id`` per recipient batch (``<uuid>:1``, ``<uuid>:2``,
        ...). A send is not idempotent, so it is retried only when Kaleyra cannot have acted on
        it (HTTP 429, a refused connection); after a timeout or a 5xx it fails instead of
        risking a second email.

        :param from_email: the sender; its domain must be registered with Kaleyra.
        :param to: one recipient or a list of them.
        :param subject: the subject line.
        :param html_body: the HTML body; give it, ``text_body``, or both.
        :param text_body: the plain-text body.
        :param message_type: Kaleyra's ``type`` of the message (e.g. ``"MKT"``), sent only when given.
        """
        body = validation.send_body(
            from_email=from_email,
            to=to,
            subject=subject,
            html_body=html_body,
            text_body=text_body,
            message_type=message_type,
        )
        path = _api.send_path(self.config.sid)
        response = self._call("POST", path, json_body=body, idempotent=False)
        ids = [
            str(entry["message_id"])
            for entry in _api.data_of(response, endpoint=f"POST {path}")
            if isinstance(entry, Mapping) and entry.get("message_id")
        ]
        if not ids:
            raise KaleyraEmailAPIError(
                endpoint=f"POST {path}",
                status_code=HTTPStatus.ACCEPTED,
                error_code=None,
                message="the send was accepted but the response carries no message_id",
            )
        self.log.info("Kaleyra accepted the email to %d recipient(s): %s", len(body["to"]), ", ".join(ids))
        return ids

    def iter_logs(
        self,
        from_date: str | date | datetime | None = None,
        to_date: str | date | datetime | None = None,
        *,
        to_mail: str | None = None,
        message_id: str | None = None,
        search: str | list[str] | tuple[str, ...] | None = None,
        page_size: int | None = None,
        allow_count_mismatch: bool = False,
    ) -> Iterator[dict[str, Any]]:
        """
        Every log row matching the filters, exactly once, newest first, across all pages.

        Arguments are checked now, before any request; the rows come as you iterate. After the
        first page the hook knows ``total`` and fetches the next pages ``max_concurrency`` at a
        time, keeping only a few pages in memory. The listing always ends (see
        :mod:`airflow_provider_kaleyra_email.hooks._paging` for the rules); when its answers do not
        add up (rows and ``total`` disagree, a page repeated another) it raises
        :class:`KaleyraEmailAPIError` once the rows are out, unless ``allow_count_mismatch``.

        :param from_date: first day (inclusive) in the account's time zone.
        :param to_date: last day (inclusive) in the account's time zone.
        :param to_mail: only mail to this recipient.
        :param message_id: only this message.
        :param search: a term, or a list of terms that must all match (status, from, to or
            template name; case-insensitive).
        :param page_size: rows per request, 1 to 100.
        :param allow_count_mismatch: log a warning instead of failing when the counts do not add
            up, for listings that can legitimately move while read (a status search over a live day).
        """
        pages = self.iter_log_pages(
            from_date,
            to_date,
            to_mail=to_mail,
            message_id=message_id,
            search=search,
            page_size=page_size,
            allow_count_mismatch=allow_count_mismatch,
        )
        return _rows_of(pages)

    def iter_log_pages(
        self,
        from_date: str | date | datetime | None = None,
        to_date: str | date | datetime | None = None,
        *,
        to_mail: str | None = None,
        message_id: str | None = None,
        search: str | list[str] | tuple[str, ...] | None = None,
        page_size: int | None = None,
        allow_count_mismatch: bool = False,
        as_sent: bool = False,
    ) -> Iterator[list[dict[str, Any]]]:
        """
        Return the rows of :meth:`iter_logs`, one list per page, for callers that handle rows in batches.

        Takes the same parameters as :meth:`iter_logs`; a page whose rows were all listed
        before yields nothing. With ``as_sent``, for a writer of JSON Lines, a row is its JSON as
        the API sent it (a ``msgspec.Raw``, which ``msgspec.json.Encoder.encode_lines`` copies)
        wherever the page allows, else a dict.
        """
        query = self._logs_query(
            from_date, to_date, to_mail=to_mail, message_id=message_id, search=search, page_size=page_size
        )
        allow = validation.boolean(allow_count_mismatch, parameter="allow_count_mismatch")
        return self._iter_log_pages(query, allow_mismatch=allow, as_sent=as_sent)

    def iter_summary_stats(
        self,
        from_date: str | date | datetime | None = None,
        to_date: str | date | datetime | None = None,
        *,
        page_size: int | None = None,
        allow_count_mismatch: bool = False,
    ) -> Iterator[dict[str, Any]]:
        """
        One flat row per day, ``{"date": ..., <every metric the API sent>}``, each day once.

        The endpoint gives no ``total``, so pages are fetched one after another until one
        comes back short, empty or with no day not seen before. A page holds up to 100 days,
        so even a year is four requests; concurrency would buy nothing here.

        :param from_date: first day (inclusive) in the account's time zone.
        :param to_date: last day (inclusive) in the account's time zone.
        :param page_size: days per request, 1 to 100.
        :param allow_count_mismatch: log a warning instead of failing when a page repeats an
            earlier one other than at the end.
        """
        start, end = validation.date_range(from_date, to_date, tz=self.timezone)
        size = self._page_size(page_size)
        allow = validation.boolean(allow_count_mismatch, parameter="allow_count_mismatch")
        return self._iter_summary_rows(_api.date_params(start, end), size, allow_mismatch=allow)

    def test_connection(self) -> tuple[bool, str]:
        """
        One cheap authenticated request (today's summary stats, one row), without retries.

        Airflow tests a connection under a random temporary id, so the result says "This
        connection" rather than that id, and names any extra this provider ignores.
        """
        try:
            config = self.config
        except ConnectionConfigError as exc:
            return False, f"This connection {exc.problem}"
        except Exception as exc:
            return False, f"This connection is not usable: {self._scrub(str(exc))}"
        today = datetime.now(self.timezone).date()
        path = _api.summary_stats_path(config.sid)
        target = f"{path}?{urlencode([*_api.date_params(today, today).items(), ('page', '1'), ('limit', '1')])}"
        ok = False
        try:
            self._send_once("GET", target, None, f"GET {path}")
            ok, message = True, f"Connected to {config.base_url} as account {config.sid}."
        except KaleyraEmailAPIError as exc:
            message = str(exc)
            if exc.status_code in (HTTPStatus.UNAUTHORIZED, HTTPStatus.FORBIDDEN):
                message = (
                    f"Kaleyra rejected the credentials (HTTP {exc.status_code}): {exc.message}. "
                    "Check the account SID (login) and the API key (password)."
                )
        except _api.TransientError as exc:
            message = f"{config.base_url} answered, but not usefully: {exc.description}."
            if exc.kind == "timeout":
                message = f"Timed out: {config.base_url} did not answer within {config.timeout:g} s."
            elif exc.kind == "connection":
                message = f"Cannot reach {config.base_url}: {exc.description}."
        # A misspelled extra (time_zone, regoin) often explains the failure, so every result names it.
        ignored = config.ignored_extras()
        return ok, f"{message.rstrip('.')}; {ignored}." if ignored else message

    # ----------------------------------------------------------------------------------------
    # Paging
    # ----------------------------------------------------------------------------------------

    def _logs_query(
        self,
        from_date: Any,
        to_date: Any,
        *,
        to_mail: Any,
        message_id: Any,
        search: Any,
        page_size: Any,
    ) -> _LogsQuery:
        start, end = validation.date_range(from_date, to_date, tz=self.timezone)
        params = list(_api.date_params(start, end).items())
        if to_mail is not None:
            params.append(("toMail", validation.email_address(to_mail, parameter="to_mail")))
        if message_id is not None:
            params.append(("messageId", validation.message_id(message_id)))
        params.extend(("search", term) for term in validation.search_terms(search))
        label = f"logs {start or '…'}..{end or '…'}"
        return _LogsQuery(params=tuple(params), page_size=self._page_size(page_size), label=label)

    def _page_size(self, page_size: Any) -> int:
        return self.config.page_size if page_size is None else validation.page_size(page_size)

    def _iter_log_pages(
        self, query: _LogsQuery, *, allow_mismatch: bool, as_sent: bool = False
    ) -> Iterator[list[dict[str, Any]]]:
        path = _api.logs_path(self.config.sid)
        listing = Listing(
            label=query.label,
            endpoint=f"GET {path}",
            page_size=query.page_size,
            key_of=_api.log_row_keys,
            log=self.log,
            lookahead=2 * self.config.max_concurrency,
            allow_mismatch=allow_mismatch,
        )
        self.last_fetch = listing
        return list_pages(
            lambda page, cancel: self._get_page(
                path, query.params, page, query.page_size, cancel=cancel, as_sent=as_sent
            ),
            listing,
            concurrency=self.config.max_concurrency,
            in_flight=lambda: self._concurrency.limit,
        )

    def _iter_summary_rows(
        self, params: dict[str, str], page_size: int, *, allow_mismatch: bool
    ) -> Iterator[dict[str, Any]]:
        path = _api.summary_stats_path(self.config.sid)
        listing = Listing(
            label=f"summary stats {params.get('start_date', '…')}..{params.get('end_date', '…')}",
            endpoint=f"GET {path}",
            page_size=page_size,
            key_of=_api.day_keys,
            log=self.log,
            allow_mismatch=allow_mismatch,
        )
        self.last_fetch = listing
        pages = list_pages(
            lambda page, cancel: self._get_page(path, tuple(params.items()), page, page_size, cancel=cancel),
            listing,
            concurrency=1,  # no total to plan with; and a page holds 100 days
        )
        return map(_api.flatten_day, _rows_of(pages))

    def _get_page(
        self,
        path: str,
        params: tuple[tuple[str, str], ...],
        page: int,
        page_size: int,
        *,
        cancel: threading.Event | None = None,
        as_sent: bool = False,
    ) -> Page:
        query = [*params, ("page", str(page)), ("limit", str(page_size))]
        body = self._call("GET", path, params=query, cancel=cancel, as_sent_page=page if as_sent else None)
        return body if isinstance(body, Page) else _api.page_of(body, number=page, endpoint=f"GET {path}")

    # ----------------------------------------------------------------------------------------
    # One request
    # ----------------------------------------------------------------------------------------

    def _call(
        self,
        method: str,
        path: str,
        *,
        params: list[tuple[str, str]] | None = None,
        json_body: Any = None,
        idempotent: bool = True,
        cancel: threading.Event | None = None,
        as_sent_page: int | None = None,
    ) -> Any:
        """
        Send one request, retrying what is worth retrying; return the decoded JSON body.

        A request that is not ``idempotent`` (a send) is repeated only when the server cannot
        have acted on it: after a 429 or a refused connection, never after a timeout or a 5xx.
        Setting ``cancel`` (the listing ended or failed elsewhere) cuts a back-off sleep short
        and sends nothing more. With ``as_sent_page``, the log page of that number comes as
        :func:`~airflow_provider_kaleyra_email.hooks._api.log_page_as_sent` reads it, when it can.
        """
        target = path + (f"?{urlencode(params)}" if params else "")
        endpoint = f"{method} {target}"
        attempts = _attempts(self, self.config, endpoint, idempotent=idempotent)
        try:
            for attempt in Retrying(**attempts.retry_args, sleep=cancellable_sleep(cancel or threading.Event())):
                with attempt:
                    return self._send_once(method, target, json_body, endpoint, as_sent_page)
        except _api.TransientError as exc:
            raise attempts.failure(exc) from None
        raise AssertionError("unreachable: tenacity either returns or raises")

    def _send_once(
        self, method: str, target: str, json_body: Any, endpoint: str, as_sent_page: int | None = None
    ) -> Any:
        """Send one request to ``target`` (path and query), no retries; return the decoded body."""
        url = self.config.base_url + target
        timeout = self.config.timeout
        body = None if json_body is None else _json_encode(json_body)
        try:
            with self._concurrency.slot():
                deadline = time.monotonic() + timeout
                response = self.http.request(
                    method,
                    url,
                    body=body,
                    # Headers given here replace the pool's, so they carry the key too.
                    headers=None if body is None else {**self.http.headers, "Content-Type": "application/json"},
                    timeout=urllib3.Timeout(connect=timeout, read=timeout),
                    # The api-key header must reach the configured host and no other.
                    redirect=False,
                    retries=False,
                    preload_content=False,
                )
                try:
                    content = _api.read_body(response, deadline=deadline, limit=self.config.max_response_bytes)
                except BaseException:
                    response.close()  # a half-read connection must not be reused
                    raise
                finally:
                    response.release_conn()
        except _api.TooLarge as exc:
            raise KaleyraEmailAPIError(endpoint=endpoint, status_code=None, error_code=None, message=str(exc)) from None
        except NewConnectionError as exc:  # refused, or no such host: nothing reached the server
            raise _api.TransientError(
                f"connection failed: {self._scrub(_api.reason_of(exc))}", unsent=True, kind="connection"
            ) from None
        except ConnectTimeoutError:
            raise _api.TransientError(f"could not connect within {timeout:g} s", unsent=True, kind="timeout") from None
        except (ReadTimeoutError, TimeoutError):
            raise _api.TransientError(f"no complete answer within {timeout:g} s (timeout)", kind="timeout") from None
        except DecodeError as exc:
            raise _api.TransientError(
                f"a body that could not be decompressed ({self._scrub(_api.reason_of(exc))})"
            ) from None
        except (HTTPError, OSError) as exc:
            raise _api.TransientError(
                f"connection failed: {self._scrub(_api.reason_of(exc))}",
                unsent=_api.never_connected(exc),
                kind="connection",
            ) from None
        return self._interpret(response, content, endpoint=endpoint, as_sent_page=as_sent_page)

    def _interpret(
        self, response: urllib3.BaseHTTPResponse, content: bytes, *, endpoint: str, as_sent_page: int | None = None
    ) -> Any:
        if as_sent_page is not None and response.status == HTTPStatus.OK:
            page = _api.log_page_as_sent(content, number=as_sent_page)
            if page is not None:
                self._concurrency.succeeded()
                return page
        try:
            body = interpret_response(
                status=response.status,
                reason=response.reason or "",
                headers=response.headers,
                content=content,
                endpoint=endpoint,
                api_key=self._known_api_key(),
            )
        except _api.TransientError as exc:
            if exc.status_code == HTTPStatus.TOO_MANY_REQUESTS:
                self._concurrency.throttled()
            raise
        self._concurrency.succeeded()
        return body

    def _known_api_key(self) -> str | None:
        """Return the key, if the connection was read already; never a reason to read it."""
        config = self.__dict__.get("config")
        return config.api_key if isinstance(config, ConnectionConfig) else None

    def _scrub(self, text: str) -> str:
        """Kaleyra should never echo the key, but if it ever does, it stops here."""
        return _api.scrub(text, self._known_api_key())


class KaleyraEmailAsyncHook(BaseHook):
    """
    The async counterpart of :class:`KaleyraEmailHook`, for triggers: one ``httpx.AsyncClient``.

    It reads the connection the way async code must on Airflow 3 (``get_async_connection``, and
    the extra without a blocking call on the event loop), turns it into the same
    :class:`~airflow_provider_kaleyra_email.connection.ConnectionConfig`, and reads responses with
    the same :func:`interpret_response` as the sync hook. Redirects are never followed, so the
    ``api-key`` header reaches the configured host and no other.

    It retries with the sync hook's policy (``AsyncRetrying`` over the same arguments): a
    failure worth another try (429, 5xx, timeout, dropped connection, unreadable body) raises
    :class:`KaleyraEmailRetriesExhaustedError` once ``max_retries`` ran out; anything else raises
    :class:`KaleyraEmailAPIError`. By default it makes one attempt: its callers, triggers, poll
    again anyway, and a poll must stay within one ``timeout``.

    :param kaleyra_email_conn_id: connection with the SID in ``login`` and the API key in ``password``.
    :param timeout: seconds a whole response may take (default: connection extra, else 30).
    :param max_retries: retries after the first attempt (default 0, see above).
    :param max_response_bytes: the largest response body read (default 64 MiB); a larger one is an error.
    :param retry_wait_initial: backoff scale in seconds, as for :class:`KaleyraEmailHook`.
    :param retry_wait_max: longest backoff in seconds.
    """

    conn_name_attr = "kaleyra_email_conn_id"
    default_conn_name = "kaleyra_email_default"
    hook_name = "Kaleyra Email (async)"

    def __init__(
        self,
        kaleyra_email_conn_id: str = default_conn_name,
        *,
        timeout: float | None = None,
        max_retries: int = 0,
        max_response_bytes: int | None = None,
        retry_wait_initial: float = 1.0,
        retry_wait_max: float = 60.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.kaleyra_email_conn_id = kaleyra_email_conn_id
        self._overrides = check_overrides(
            timeout=timeout, max_retries=max_retries, max_response_bytes=max_response_bytes
        )
        self.retry_wait_initial = validation.positive_number(retry_wait_initial, parameter="retry_wait_initial")
        self.retry_wait_max = validation.positive_number(retry_wait_max, parameter="retry_wait_max")
        self._config: ConnectionConfig | None = None
        self._joined: _SharedConnection | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(kaleyra_email_conn_id={self.kaleyra_email_conn_id!r})"

    async def get_config(self) -> ConnectionConfig:
        """Return the connection's settings, looked up once for every hook on it in this event loop."""
        if self._config is None:
            self._config = await self._shared().get_config()
        return self._config

    def _shared(self) -> _SharedConnection:
        if self._joined is None:
            self._joined = _SharedConnection.join(self.kaleyra_email_conn_id, self._overrides)
        return self._joined

    async def get_message_stats(self, message_id: str) -> dict[str, Any]:
        """
        One message with its ``recipients``, as :meth:`KaleyraEmailHook.get_message_stats` returns it.

        :raises KaleyraEmailAPIError: with ``status_code`` 404 when Kaleyra does not know the id.
        :raises KaleyraEmailTransientError: when the one attempt failed in a way worth retrying.
        """
        message_id = validation.message_id(message_id)
        config = await self.get_config()
        path = _api.message_stats_path(config.sid, message_id)
        endpoint = f"GET {path}"
        body = await self._get(config, path, endpoint=endpoint)
        return _api.message_from_body(body, message_id=message_id, endpoint=endpoint)

    async def iter_log_rows(
        self, from_date: date, to_date: date, *, search: Sequence[str] = ()
    ) -> AsyncIterator[list[dict[str, Any]]]:
        """
        Yield the log rows of an account-local day range, page by page, in order, each row once.

        For watchers, which read small, recent listings often: pages one after another, ending on a
        short page, and never more pages than the first ``total`` calls for (plus one), nor a page
        that repeats the one before (a server that clamps ``page``).
        """
        config = await self.get_config()
        path = _api.logs_path(config.sid)
        params = [*_api.date_params(from_date, to_date).items(), *(("search", t) for t in search)]
        seen: set[Any] = set()
        previous: list[Any] = []
        last_page = None
        for number in itertools.count(1):
            query = urlencode([*params, ("page", str(number)), ("limit", str(config.page_size))])
            body = await self._get(config, f"{path}?{query}", endpoint=f"GET {path}")
            page = _api.page_of(body, number=number, endpoint=f"GET {path}")
            keys = _api.log_row_keys(page.rows)
            if not page.rows or keys == previous:
                return
            fresh = [row for row, key in zip(page.rows, keys, strict=True) if key is None or key not in seen]
            seen.update(key for key in keys if key is not None)
            yield fresh
            if isinstance(page.total, int) and last_page is None:
                last_page = -(-page.total // config.page_size) + 1
            if len(page.rows) < config.page_size or (last_page is not None and number >= last_page):
                return
            previous = keys

    def scrub(self, text: str) -> str:
        """``text`` without the API key, should anything ever have echoed it."""
        return _api.scrub(text, self._config.api_key if self._config is not None else None)

    async def aclose(self) -> None:
        """Leave the shared connection; the last hook to leave closes its HTTP client."""
        if self._joined is not None:
            shared, self._joined, self._config = self._joined, None, None
            await shared.leave()

    async def _get(self, config: ConnectionConfig, path: str, *, endpoint: str) -> Any:
        attempts = _attempts(self, config, endpoint)
        if config.max_retries == 0:  # a trigger's poll: no retry loop to build (a third of its CPU)
            try:
                return await self._get_once(config, path, endpoint=endpoint)
            except _api.TransientError as exc:
                raise attempts.failure(exc) from None
        try:
            async for attempt in AsyncRetrying(**attempts.retry_args):
                with attempt:
                    return await self._get_once(config, path, endpoint=endpoint)
        except _api.TransientError as exc:
            raise attempts.failure(exc) from None
        raise AssertionError("unreachable: tenacity either returns or raises")

    async def _get_once(self, config: ConnectionConfig, path: str, *, endpoint: str) -> Any:
        shared = self._shared()
        try:
            async with shared.turn():
                # ``timeout`` bounds the whole response, headers and body, not each socket read.
                status, reason, headers, content = await asyncio.wait_for(
                    self._read(await shared.client(), config.base_url + path, limit=config.max_response_bytes),
                    timeout=config.timeout,
                )
        except _api.TooLarge as exc:
            raise KaleyraEmailAPIError(endpoint=endpoint, status_code=None, error_code=None, message=str(exc)) from None
        except httpx.ConnectTimeout:
            raise _api.TransientError(f"could not connect within {config.timeout:g} s", unsent=True) from None
        except (httpx.TimeoutException, asyncio.TimeoutError):
            raise _api.TransientError(f"no complete answer within {config.timeout:g} s (timeout)") from None
        except httpx.DecodingError:
            raise _api.TransientError("a body that could not be decompressed") from None
        except httpx.TransportError as exc:
            text = f"{type(exc).__name__}: {str(exc)[:200]}" if str(exc) else type(exc).__name__
            raise _api.TransientError(f"connection failed: {_api.scrub(text, config.api_key)}") from None
        try:
            return interpret_response(
                status=status,
                reason=reason,
                headers=headers,
                content=content,
                endpoint=endpoint,
                api_key=config.api_key,
            )
        except _api.TransientError as exc:
            if exc.retry_after is not None:
                shared.pause(exc.retry_after)
            raise

    @staticmethod
    async def _read(client: httpx.AsyncClient, url: str, *, limit: int) -> tuple[int, str, httpx.Headers, bytes]:
        """Return status, reason, headers and the decompressed body of a GET, at most ``limit`` bytes of it."""
        async with client.stream("GET", url) as response:
            body = _api.Body(response.headers, limit)
            async for chunk in response.aiter_bytes():
                body.add(chunk)
            return response.status_code, response.reason_phrase, response.headers, body.content()


class _SharedConnection:
    """
    What every async hook on one connection shares within one event loop (a triggerer's).

    One connection lookup, one ``httpx.AsyncClient`` (one TLS context, one pool of at most
    ``max_concurrency`` connections), at most ``max_concurrency`` requests in flight, and, after
    a 429, a pause of its ``Retry-After`` for every request on the connection. A thousand waiting
    triggers thus cost one client, not a thousand. The last hook to leave closes the client; the
    settings are looked up again by the next hook to join.
    """

    _registry: ClassVar[weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[Any, _SharedConnection]]] = (
        weakref.WeakKeyDictionary()
    )

    def __init__(self, conn_id: str, overrides: Mapping[str, Any], key: Any) -> None:
        self.conn_id, self.overrides, self.key = conn_id, overrides, key
        self.users = 0
        self.config: ConnectionConfig | None = None
        self._client: httpx.AsyncClient | None = None
        self._lookup = asyncio.Lock()
        self._in_flight: asyncio.Semaphore | None = None
        self._resume_at = 0.0

    @classmethod
    def join(cls, conn_id: str, overrides: Mapping[str, Any]) -> _SharedConnection:
        """Return the connection's shared state in the running event loop, counting one more user."""
        by_key = cls._registry.setdefault(asyncio.get_running_loop(), {})
        key = (conn_id, tuple(sorted(overrides.items())))
        shared = by_key.get(key) or by_key.setdefault(key, cls(conn_id, overrides, key))
        shared.users += 1
        return shared

    async def leave(self) -> None:
        self.users -= 1
        if self.users > 0:
            return
        self._registry.get(asyncio.get_running_loop(), {}).pop(self.key, None)
        if self._client is not None:
            await self._client.aclose()

    async def get_config(self) -> ConnectionConfig:
        async with self._lookup:  # the first hook looks it up; the others wait for its answer
            if self.config is None:
                conn = await get_async_connection(self.conn_id)
                extra = await _async_extra_dejson(conn)
                config = config_of(conn, extra, conn_id=self.conn_id, overrides=self.overrides)
                await _amask_secret(config.api_key)
                self._in_flight = asyncio.Semaphore(config.max_concurrency)
                self.config = config
        return self.config

    async def client(self) -> httpx.AsyncClient:
        if self._client is None:
            config = await self.get_config()
            limit = httpx.Limits(max_connections=config.max_concurrency)
            # Building a client builds a TLS context: tens of milliseconds of CPU, kept off the loop.
            client = await asyncio.to_thread(
                httpx.AsyncClient,
                headers=_api.request_headers(config.api_key),
                timeout=config.timeout,
                follow_redirects=False,
                limits=limit,
            )
            if self._client is None:
                self._client = client
            else:  # another hook built one meanwhile
                await client.aclose()
        return self._client

    @contextlib.asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        """Wait for a free slot, and out any 429 pause, then hold the slot for one request."""
        await self.get_config()
        assert self._in_flight is not None
        async with self._in_flight:
            while (wait := self._resume_at - time.monotonic()) > 0:
                await asyncio.sleep(wait)
            yield

    def pause(self, seconds: float) -> None:
        """Hold every request on the connection for ``seconds`` (a 429's Retry-After, capped)."""
        self._resume_at = max(self._resume_at, time.monotonic() + min(seconds, _api.MAX_RETRY_AFTER_SECONDS))


def _attempts(
    hook: KaleyraEmailHook | KaleyraEmailAsyncHook, config: ConnectionConfig, endpoint: str, *, idempotent: bool = True
) -> _api.Attempts:
    """Return the one retry policy, as this hook and its connection set it, for one request."""
    return _api.Attempts(
        endpoint=endpoint,
        max_retries=config.max_retries,
        idempotent=idempotent,
        wait_initial=hook.retry_wait_initial,
        wait_max=hook.retry_wait_max,
        log=hook.log,
    )


async def _amask_secret(secret: str) -> None:
    """Register ``secret`` with Airflow's masker from async code, without a blocking call on the loop."""
    try:
        from airflow.sdk.log import amask_secret
    except ImportError:  # Airflow 2.11: the masker is local to the process, and the call does no I/O
        mask_secret(secret)
        return
    await amask_secret(secret)


async def _async_extra_dejson(conn: Any) -> dict[str, Any]:
    """
    Return the connection's extra as a dict, without a blocking call on the event loop.

    ``extra_dejson`` masks the extra's secrets with a synchronous call that, on Airflow 3 before
    3.3.2, may dead-lock on an event loop; common-compat 1.23+ has the async way. Older
    common-compat (what Airflow 2.11 installs) lacks it, and there ``extra_dejson`` runs in a
    worker thread, as common-compat itself does on versions without the async masking.
    """
    try:
        from airflow.providers.common.compat.connection import get_async_extra_dejson
    except ImportError:
        return dict(await asyncio.to_thread(lambda: conn.extra_dejson))
    return dict(await get_async_extra_dejson(conn))


def _rows_of(pages: Iterator[list[dict[str, Any]]]) -> Iterator[dict[str, Any]]:
    """Return the rows of ``pages`` one by one; closing it closes the listing (and its requests)."""
    try:
        for page in pages:
            yield from page
    finally:
        close = getattr(pages, "close", None)
        if close is not None:
            close()
