"""The async hook of the Kaleyra Email API, for triggers: httpx, one client shared per connection and event loop."""

from __future__ import annotations

import asyncio
import itertools
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.connection import get_async_connection

from airflow_provider_kaleyra_email import api_facts, validation
from airflow_provider_kaleyra_email.connection import ConnectionConfig, config_of
from airflow_provider_kaleyra_email.hooks import _api, _http
from airflow_provider_kaleyra_email.hooks._api import interpret_response
from airflow_provider_kaleyra_email.hooks._base import _KaleyraEmailBaseHook, mask_secret
from airflow_provider_kaleyra_email.hooks._paging import Listing, Page

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Sequence
    from datetime import date


class KaleyraEmailAsyncHook(_KaleyraEmailBaseHook):
    """
    Talk to the Kaleyra Email API from triggers, as :class:`KaleyraEmailHook` does, over a shared ``httpx`` client.

    It makes one attempt by default: triggers poll again anyway, and a poll must stay within one ``timeout``.

    :param kaleyra_email_conn_id: connection with the SID in ``login`` and the API key in ``password``.
    :param timeout: seconds a whole response may take (default: connection extra, else 30).
    :param max_retries: retries after the first attempt (default 0, see above).
    :param max_response_bytes: the largest response body read (default 64 MiB); a larger one is an error.
    :param retry_wait_initial: backoff scale in seconds, as for :class:`KaleyraEmailHook`.
    :param retry_wait_max: longest wait in seconds after a 429 (the ``Retry-After`` capped), as for the sync hook.
    """

    hook_name = "Kaleyra Email (async)"

    def __init__(
        self,
        kaleyra_email_conn_id: str = _KaleyraEmailBaseHook.default_conn_name,
        *,
        timeout: float | None = None,
        max_retries: int = 0,
        max_response_bytes: int | None = None,
        retry_wait_initial: float = 1.0,
        retry_wait_max: float = 60.0,
        **kwargs: Any,
    ) -> None:
        overrides = {"timeout": timeout, "max_retries": max_retries, "max_response_bytes": max_response_bytes}
        super().__init__(kaleyra_email_conn_id, overrides, retry_wait_initial, retry_wait_max, **kwargs)
        self._config: ConnectionConfig | None = None
        self._joined: _http.SharedClient | None = None

    async def get_config(self) -> ConnectionConfig:
        """Return the connection's settings, looked up once for every hook on it in this event loop."""
        if self._config is None:
            self._config = await self._shared().get_config(self._read_config)
        return self._config

    async def _read_config(self) -> ConnectionConfig:
        conn = await get_async_connection(self.kaleyra_email_conn_id)
        extra = await _async_extra_dejson(conn)
        config = config_of(conn, extra, conn_id=self.kaleyra_email_conn_id, overrides=self._overrides)
        await _amask_secret(config.api_key)
        return config

    def _shared(self) -> _http.SharedClient:
        if self._joined is None:
            self._joined = _http.SharedClient.join((self.kaleyra_email_conn_id, tuple(sorted(self._overrides.items()))))
        return self._joined

    async def get_message_stats(self, message_id: str) -> dict[str, Any]:
        """
        Return one message with its ``recipients``, as :meth:`KaleyraEmailHook.get_message_stats` does.

        :param message_id: the id Kaleyra gave the message (``<uuid>:<n>``).
        :raises KaleyraEmailAPIError: with ``status_code`` 404 when Kaleyra does not know the id.
        :raises KaleyraEmailTransientError: when the one attempt failed in a way worth retrying.
        """
        message_id = validation.message_id(message_id)
        config = await self.get_config()
        path = api_facts.message_stats_path(config.sid, message_id)
        body = await self._get(config, path)
        return _api.message_from_body(body, message_id=message_id, endpoint=f"GET {path}")

    async def iter_log_rows(self, from_date: date, to_date: date, *, search: Sequence[str] = ()) -> AsyncIterator[Page]:
        """
        Yield the log rows of an account-local day range, page after page, each row once, without a final count check.

        Each :class:`Page` holds the rows not seen before and the ``total`` its answer gave, so a
        caller knows the listing's size from the first page.

        :param from_date: first day (inclusive) in the account's time zone.
        :param to_date: last day (inclusive) in the account's time zone.
        :param search: terms that must all match (status, from, to or template name).
        """
        config = await self.get_config()
        path = api_facts.logs_path(config.sid)
        params = [*_api.date_params(from_date, to_date).items(), *(("search", term) for term in search)]
        listing = Listing(
            label=f"logs {from_date}..{to_date}",
            endpoint=f"GET {path}",
            page_size=config.page_size,
            key_of=_api.log_row_keys,
            log=self.log,
        )
        for number in itertools.count(1):
            page = await self._get(config, _api.page_target(path, params, number, config.page_size), page=number)
            fresh = listing.accept(page)
            if page.rows:
                yield Page(page.number, fresh, total=page.total)
            if not listing.more:
                return

    def scrub(self, text: str) -> str:
        """
        Return ``text`` without the API key, should anything have echoed it.

        :param text: what to scrub, e.g. an error message built from an answer.
        """
        return _api.scrub(text, self._config.api_key if self._config is not None else None)

    async def aclose(self) -> None:
        """Leave the shared connection; the last hook to leave closes its HTTP client."""
        if self._joined is not None:
            shared, self._joined, self._config = self._joined, None, None
            await shared.leave()

    async def _get(self, config: ConnectionConfig, target: str, *, page: int | None = None) -> Any:
        endpoint = f"GET {target}"
        return await self._attempts(config, endpoint).acall(lambda: self._get_once(config, target, endpoint, page))

    async def _get_once(self, config: ConnectionConfig, target: str, endpoint: str, page: int | None) -> Any:
        shared = self._shared()
        answer = await shared.get(config, target)
        try:
            return interpret_response(**answer._asdict(), endpoint=endpoint, api_key=config.api_key, page=page)
        except _api.TransientError as exc:
            if exc.retry_after is not None:
                shared.pause(min(exc.retry_after, self.retry_wait_max))
            raise


async def _amask_secret(secret: str) -> None:
    """Register ``secret`` with Airflow's masker from async code, without a blocking call on the loop."""
    try:
        from airflow.sdk.log import amask_secret
    except ImportError:  # Airflow 2.11: the masker is local to the process, and the call does no I/O
        mask_secret(secret)
        return
    await amask_secret(secret)


async def _async_extra_dejson(conn: Any) -> dict[str, Any]:
    """Return the connection's extra as a dict, without a blocking call on the event loop."""
    try:
        from airflow.providers.common.compat.connection import get_async_extra_dejson
    except ImportError:  # common-compat before 1.23 (Airflow 2.11): extra_dejson's masking in a thread
        return dict(await asyncio.to_thread(lambda: conn.extra_dejson))
    return dict(await get_async_extra_dejson(conn))
