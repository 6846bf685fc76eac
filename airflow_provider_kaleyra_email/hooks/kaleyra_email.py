"""The hooks of the Kaleyra Email API: ``KaleyraEmailHook`` (requests, paging) and ``KaleyraEmailAsyncHook`` (httpx)."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, Sequence
from datetime import date, datetime
from functools import cached_property, partial
from http import HTTPStatus
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import msgspec

from airflow_provider_kaleyra_email import api_facts, provider_info, validation
from airflow_provider_kaleyra_email.connection import ConnectionConfig, ConnectionConfigError, config_of
from airflow_provider_kaleyra_email.exceptions import (
    KaleyraEmailAPIError,
    KaleyraEmailRetriesExhaustedError,
    KaleyraEmailTransientError,
)
from airflow_provider_kaleyra_email.hooks import _api, _http
from airflow_provider_kaleyra_email.hooks._api import interpret_response
from airflow_provider_kaleyra_email.hooks._async import KaleyraEmailAsyncHook
from airflow_provider_kaleyra_email.hooks._base import _KaleyraEmailBaseHook, mask_secret
from airflow_provider_kaleyra_email.hooks._network import Network
from airflow_provider_kaleyra_email.hooks._paging import Listing, Page, Pages, list_pages

if TYPE_CHECKING:
    from collections.abc import Callable

    import requests

_json_encode = msgspec.json.Encoder().encode

__all__ = [
    "KaleyraEmailAPIError",
    "KaleyraEmailAsyncHook",
    "KaleyraEmailHook",
    "KaleyraEmailRetriesExhaustedError",
    "KaleyraEmailTransientError",
    "Page",
    "Pages",
    "interpret_response",
]


class KaleyraEmailHook(_KaleyraEmailBaseHook):
    """
    Talk to the Kaleyra Email API: send, message stats, summary stats and logs, as plain dict rows.

    429 (after its ``Retry-After``), 5xx, timeouts, dropped connections and unreadable bodies are retried
    with exponential backoff and jitter; anything else raises :class:`KaleyraEmailAPIError`.

    :param kaleyra_email_conn_id: connection with the SID in ``login`` and the API key in ``password``.
    :param timeout: seconds a whole response may take (default: connection extra, else 30).
    :param max_retries: retries after the first attempt (default: connection extra, else 5).
    :param page_size: rows per request, 1 to 100 (default: connection extra, else 100).
    :param max_concurrency: most log pages fetched at once (default: connection extra, else 16).
    :param max_response_bytes: the largest response body read (default 64 MiB); a larger one is an error.
    :param retry_wait_initial: backoff scale in seconds: retry ``n`` waits a random time up to
        ``retry_wait_initial * 2**n``, capped at ``retry_wait_max``.
    :param retry_wait_max: longest wait between attempts in seconds, a 429's ``Retry-After`` included.
    """

    conn_type = "kaleyra_email"
    hook_name = "Kaleyra Email"

    def __init__(
        self,
        kaleyra_email_conn_id: str = _KaleyraEmailBaseHook.default_conn_name,
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
        overrides = {
            "timeout": timeout,
            "max_retries": max_retries,
            "page_size": page_size,
            "max_concurrency": max_concurrency,
            "max_response_bytes": max_response_bytes,
        }
        super().__init__(kaleyra_email_conn_id, overrides, retry_wait_initial, retry_wait_max, **kwargs)

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
        mask_secret(config.api_key)  # Airflow does it in a task; not in a script, a test or a callback
        return config

    @cached_property
    def network(self) -> Network:
        """The proxy, CA bundle and client certificate requests use: the connection's, else the environment's."""
        return Network.of(self.config)

    @cached_property
    def http(self) -> requests.Session:
        """One session per hook, shared by its threads, with a connection pool as large as its concurrency."""
        return _http.session(self.config, self.network, pool_size=max(4, self.config.max_concurrency))

    @cached_property
    def _concurrency(self) -> _http.AdaptiveConcurrency:
        return _http.AdaptiveConcurrency(self.config.max_concurrency, log=self.log)

    @property
    def timezone(self) -> ZoneInfo:
        """The account's time zone, in which the API reads and writes dates."""
        return ZoneInfo(self.config.timezone)

    def close(self) -> None:
        """Close the session and its connections; the next request opens new ones."""
        if "http" in self.__dict__:
            self.__dict__.pop("http").close()

    def get_message_stats(self, message_id: str) -> dict[str, Any]:
        """
        Return one message with its ``recipients``, each with its ``status`` and ``error_code``.

        :param message_id: the id Kaleyra gave the message (``<uuid>:<n>``).
        :raises KaleyraEmailAPIError: with ``status_code`` 404 when Kaleyra does not know the id.
        """
        message_id = validation.message_id(message_id)
        path = api_facts.message_stats_path(self.config.sid, message_id)
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
        Send an email with ``POST /v1/<SID>/email``; return the message ids Kaleyra assigned, one per recipient batch.

        A send is retried only when Kaleyra cannot have acted on it (HTTP 429, a refused connection);
        after a timeout or a 5xx it fails rather than risk a second email.

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
        path = api_facts.send_path(self.config.sid)
        entries = _api.data_of(self._call("POST", path, json_body=body, idempotent=False), endpoint=f"POST {path}")
        found = [entry.get("message_id") if isinstance(entry, Mapping) else None for entry in entries]
        # Only strings: an object could hold anything the server echoed.
        ids = [_api.scrub(i.strip(), self.config.api_key) for i in found if isinstance(i, str) and i.strip()]
        if len(ids) < len(found):
            self.log.warning(
                "%d of the %d entries Kaleyra answered hold no message id string.", len(found) - len(ids), len(found)
            )
        if not ids:
            no_id = "the send was accepted but the response carries no message_id"
            raise KaleyraEmailAPIError(endpoint=f"POST {path}", status_code=202, message=no_id)
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
        Return every log row matching the filters, exactly once, newest first: :meth:`iter_log_pages` row by row.

        Arguments are checked now, rows fetched as you iterate, ``max_concurrency`` pages at a time. The
        listing always ends; answers that do not add up raise :class:`KaleyraEmailAPIError` after the rows.

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
        return pages.rows()

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
    ) -> Pages:
        """
        Return the log rows, one list per page; ``pages.listing`` is what the listing learned (``total`` from page 1).

        Closing it ends the listing. The rules it follows: :mod:`~airflow_provider_kaleyra_email.hooks._paging`.

        :param from_date: first day (inclusive) in the account's time zone.
        :param to_date: last day (inclusive) in the account's time zone.
        :param to_mail: only mail to this recipient.
        :param message_id: only this message.
        :param search: a term, or a list of terms that must all match.
        :param page_size: rows per request, 1 to 100.
        :param allow_count_mismatch: log a warning instead of failing when the counts do not add up.
        """
        start, end = validation.date_range(from_date, to_date, tz=self.timezone)
        params = list(_api.date_params(start, end).items())
        if to_mail is not None:
            params.append(("toMail", validation.email_address(to_mail, parameter="to_mail")))
        if message_id is not None:
            params.append(("messageId", validation.message_id(message_id)))
        params.extend(("search", term) for term in validation.search_terms(search))
        path = api_facts.logs_path(self.config.sid)
        keys, concurrency = _api.log_row_keys, self.config.max_concurrency
        return self._list("logs", start, end, path, params, page_size, allow_count_mismatch, keys, concurrency)

    def iter_summary_stats(
        self,
        from_date: str | date | datetime | None = None,
        to_date: str | date | datetime | None = None,
        *,
        page_size: int | None = None,
        allow_count_mismatch: bool = False,
    ) -> Iterator[dict[str, Any]]:
        """
        Return one flat row per day, ``{"date": ..., <every metric the API sent>}``, each day once.

        Pages come one after another: there is no ``total`` to plan with, and a year is four requests.

        :param from_date: first day (inclusive) in the account's time zone.
        :param to_date: last day (inclusive) in the account's time zone.
        :param page_size: days per request, 1 to 100.
        :param allow_count_mismatch: log a warning instead of failing when a page repeats an
            earlier one other than at the end.
        """
        return self.iter_summary_stats_pages(
            from_date, to_date, page_size=page_size, allow_count_mismatch=allow_count_mismatch
        ).rows()

    def iter_summary_stats_pages(
        self,
        from_date: str | date | datetime | None = None,
        to_date: str | date | datetime | None = None,
        *,
        page_size: int | None = None,
        allow_count_mismatch: bool = False,
    ) -> Pages:
        """
        Return the rows of :meth:`iter_summary_stats`, one list per page, and what the listing learned.

        :param from_date: first day (inclusive) in the account's time zone.
        :param to_date: last day (inclusive) in the account's time zone.
        :param page_size: days per request, 1 to 100.
        :param allow_count_mismatch: as for :meth:`iter_summary_stats`.
        """
        start, end = validation.date_range(from_date, to_date, tz=self.timezone)
        path, params = api_facts.summary_stats_path(self.config.sid), list(_api.date_params(start, end).items())
        pages = self._list("summary stats", start, end, path, params, page_size, allow_count_mismatch, _api.day_keys, 1)
        return pages.map(partial(_api.flatten_day, endpoint=f"GET {path}"))

    def test_connection(self) -> tuple[bool, str]:
        """
        Make one cheap authenticated request (today's summary stats, one row), without retries.

        The result says "This connection" (Airflow tests under a random id) and names ignored extras.
        """
        try:
            config = self.config
        except ConnectionConfigError as exc:
            return False, f"This connection {exc.problem}"
        except Exception as exc:
            return False, f"This connection is not usable: {exc}"  # no key to scrub: none was read
        today = datetime.now(self.timezone).date()
        target = _api.page_target(
            api_facts.summary_stats_path(config.sid), _api.date_params(today, today).items(), 1, 1
        )
        ok = False
        try:
            self._send_once("GET", target)
            ok, message = True, f"Connected to {config.base_url} as account {config.sid}, {self.network.describe()}."
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
        if not ok:  # the way there often explains a failure: a proxy, a CA bundle
            message = f"{message.rstrip('.')} (tried {self.network.describe()})."
        ignored = config.ignored_extras()  # a misspelled extra (time_zone) often explains a failure
        return ok, f"{message.rstrip('.')}; {ignored}." if ignored else message

    def _list(
        self,
        what: str,
        start: date | None,
        end: date | None,
        path: str,
        params: list[tuple[str, str]],
        page_size: int | None,
        allow_count_mismatch: bool,
        key_of: Callable[[list[Any]], list[Any]],
        concurrency: int,
    ) -> Pages:
        """Return the pages of a listing, ``concurrency`` at a time (only a ``total`` can plan them)."""
        size = self.config.page_size if page_size is None else validation.page_size(page_size)
        allow = validation.boolean(allow_count_mismatch, parameter="allow_count_mismatch")
        label = f"{what} {start or '…'}..{end or '…'}"
        listing = Listing(label, f"GET {path}", size, key_of, self.log, lookahead=2 * concurrency, allow_mismatch=allow)

        def fetch(page: int, cancel: threading.Event) -> Page:
            target = _api.page_target(path, params, page, size)
            return self._call("GET", target, cancel=cancel, page=page)  # type: ignore[no-any-return]

        limits = self._concurrency
        return list_pages(fetch, listing, concurrency=concurrency, worth=lambda: min(limits.limit, limits.worth))

    def _call(
        self,
        method: str,
        target: str,
        *,
        json_body: Any = None,
        idempotent: bool = True,
        cancel: threading.Event | None = None,
        page: int | None = None,
    ) -> Any:
        """Send one request to ``target`` (path and query), retried as worth it; setting ``cancel`` ends the retries."""
        once = partial(self._send_once, method, target, json_body=json_body, page=page)
        attempts = self._attempts(self.config, f"{method} {target}", idempotent=idempotent)
        return attempts.call(once, cancel=cancel or threading.Event())

    def _send_once(self, method: str, target: str, *, json_body: Any = None, page: int | None = None) -> Any:
        """Send one request to ``target``, without retries; return what :func:`interpret_response` reads."""
        body = None if json_body is None else _json_encode(json_body)
        with self._concurrency.slot():
            answer = _http.send(self.http, method, target, body=body, config=self.config, network=self.network)
        endpoint, api_key = f"{method} {target}", self.config.api_key
        try:
            read = interpret_response(**answer._asdict(), endpoint=endpoint, api_key=api_key, page=page)
        except _api.TransientError as exc:
            if exc.status_code == HTTPStatus.TOO_MANY_REQUESTS:
                self._concurrency.throttled()
            raise
        self._concurrency.succeeded()
        return read
