"""
How an Airflow connection becomes the settings the hook and the trigger use.

Pure functions of the connection's fields, so the sync hook (``get_connection``) and the
trigger (``get_async_connection``) read a connection the same way.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from airflow_provider_kaleyra_email import validation
from airflow_provider_kaleyra_email.hooks._api import (
    DEFAULT_BASE_URL,
    MAX_PAGE_SIZE,
    MAX_RESPONSE_BYTES,
    REGION_BASE_URLS,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 30.0
DEFAULT_MAX_RETRIES = 5
#: We ask for the API's largest page, not its default of 50: half the round trips.
DEFAULT_PAGE_SIZE = MAX_PAGE_SIZE
#: Most pages in flight at once. The hook keeps as many as hide the round trip (see
#: ``AdaptiveConcurrency``), halving on HTTP 429: 16 hide a 20 ms round trip, and stay a modest
#: load for the API.
DEFAULT_MAX_CONCURRENCY = 16
MAX_CONCURRENCY = 32
MAX_RETRIES = 20

#: Extras we read. Airflow 2's connection form may store them as ``extra__kaleyra_email__<name>``.
KNOWN_EXTRAS = (
    "region",
    "timezone",
    "timeout",
    "max_retries",
    "page_size",
    "max_concurrency",
    "allow_insecure_http",
)
_FORM_PREFIX = "extra__kaleyra_email__"


class ConnectionConfigError(ValueError):
    """
    A connection this provider cannot use, named by its id.

    :param conn_id: the connection's id.
    :param problem: what is wrong, worded to follow "This connection" (Airflow tests a
        connection under a random temporary id, which a test result should not name).
    """

    def __init__(self, conn_id: str, problem: str) -> None:
        super().__init__(f"Connection {conn_id!r} {problem}")
        self.problem = problem


@dataclass(frozen=True)
class ConnectionConfig:
    """Everything a client needs from the connection, checked once. ``repr`` leaves the key out."""

    base_url: str
    sid: str
    api_key: str = field(repr=False)
    timezone: str = "UTC"
    timeout: float = DEFAULT_TIMEOUT
    max_retries: int = DEFAULT_MAX_RETRIES
    page_size: int = DEFAULT_PAGE_SIZE
    max_concurrency: int = DEFAULT_MAX_CONCURRENCY
    max_response_bytes: int = MAX_RESPONSE_BYTES
    #: Extras the connection sets that this provider does not read (a typo such as ``time_zone``).
    unknown_extras: tuple[str, ...] = ()

    def ignored_extras(self) -> str:
        """Return a note naming the unknown extras, or ``""`` when there are none."""
        return _ignored_extras(self.unknown_extras) if self.unknown_extras else ""


def config_from_connection(
    *,
    conn_id: str,
    login: str | None,
    password: str | None,
    host: str | None,
    port: int | None,
    schema: str | None,
    extra: Mapping[str, Any],
) -> ConnectionConfig:
    """Check the connection's fields and extras and return its settings."""
    extras = _normalized_extras(extra)
    unknown = tuple(sorted(set(extras) - set(KNOWN_EXTRAS)))
    if unknown:  # a hook reads its connection once, so it warns once
        log.warning("Connection %r: %s.", conn_id, _ignored_extras(unknown))
    sid = (login or "").strip()
    if not sid:
        raise ConnectionConfigError(conn_id, "has no account SID: put it in the login field.")
    if not password:
        raise ConnectionConfigError(conn_id, "has no API key: put it in the password field.")
    allow_http = validation.boolean(
        extras.get("allow_insecure_http", False), parameter="Connection extra allow_insecure_http"
    )
    base_url = base_url_from_fields(
        host=host, port=port, schema=schema, region=extras.get("region"), allow_insecure_http=allow_http
    )
    timezone = extras.get("timezone") or "UTC"
    validation.account_timezone(timezone, parameter="Connection extra timezone")
    return ConnectionConfig(
        base_url=base_url,
        sid=sid,
        api_key=password,
        timezone=str(timezone).strip(),
        timeout=validation.positive_number(
            extras.get("timeout", DEFAULT_TIMEOUT), parameter="Connection extra timeout"
        ),
        max_retries=validation.int_in_range(
            extras.get("max_retries", DEFAULT_MAX_RETRIES),
            parameter="Connection extra max_retries",
            low=0,
            high=MAX_RETRIES,
        ),
        page_size=validation.page_size(
            extras.get("page_size", DEFAULT_PAGE_SIZE), parameter="Connection extra page_size"
        ),
        max_concurrency=validation.int_in_range(
            extras.get("max_concurrency", DEFAULT_MAX_CONCURRENCY),
            parameter="Connection extra max_concurrency",
            low=1,
            high=MAX_CONCURRENCY,
        ),
        unknown_extras=unknown,
    )


def check_overrides(**overrides: Any) -> dict[str, Any]:
    """
    Check a hook's keyword overrides of the connection's settings; drop those left at ``None``.

    They are checked when the hook is built, but applied only when the connection is read, so
    no connection lookup (and no secrets backend call) happens before the first request.
    """
    checks: dict[str, Callable[[Any], Any]] = {
        "timeout": lambda v: validation.positive_number(v, parameter="timeout"),
        "max_retries": lambda v: validation.int_in_range(v, parameter="max_retries", low=0, high=MAX_RETRIES),
        "page_size": validation.page_size,
        "max_concurrency": lambda v: validation.int_in_range(
            v, parameter="max_concurrency", low=1, high=MAX_CONCURRENCY
        ),
        "max_response_bytes": lambda v: validation.int_in_range(
            v, parameter="max_response_bytes", low=1024, high=2**40
        ),
    }
    return {name: checks[name](value) for name, value in overrides.items() if value is not None}


def config_of(conn: Any, extra: Mapping[str, Any], *, conn_id: str, overrides: Mapping[str, Any]) -> ConnectionConfig:
    """Return the settings of an Airflow ``Connection`` (its ``extra`` already parsed), with ``overrides`` applied."""
    config = config_from_connection(
        conn_id=conn_id,
        login=conn.login,
        password=conn.password,
        host=conn.host,
        port=conn.port,
        schema=conn.schema,
        extra=extra,
    )
    return dataclasses.replace(config, **overrides)


def _ignored_extras(unknown: tuple[str, ...]) -> str:
    names = ", ".join(repr(name) for name in unknown)
    return f"ignored unknown extra field(s) {names} (known: {', '.join(KNOWN_EXTRAS)})"


def _normalized_extras(extra: Mapping[str, Any]) -> dict[str, Any]:
    """Extras by their short names; empty form fields count as unset."""
    extras: dict[str, Any] = {}
    for key, value in extra.items():
        name = key[len(_FORM_PREFIX) :] if key.startswith(_FORM_PREFIX) else key
        if value is None or value == "":
            continue
        extras[name] = value
    return extras


def is_loopback_host(hostname: str | None) -> bool:
    if not hostname:
        return False
    if hostname.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(hostname.strip("[]")).is_loopback
    except ValueError:
        return False


def base_url_from_fields(
    *, host: str | None, port: int | None, schema: str | None, region: Any, allow_insecure_http: bool
) -> str:
    """
    Return the base URL from the connection's ``host`` (with ``port``/``schema``) or its ``region``.

    ``host`` may be a full URL (``https://api.kaleyra.io``) or a bare host name, whose scheme
    then comes from ``schema`` (default ``https``). An explicit host wins over ``region``. Plain
    ``http`` is refused unless the host is loopback (the emulator) or the connection sets
    ``allow_insecure_http``, because the API key travels in a header.
    """
    region_key = validation.region(region)
    host = (host or "").strip()
    if not host:
        url = REGION_BASE_URLS[region_key] if region_key else DEFAULT_BASE_URL
    elif "://" in host:
        url = host
    else:
        scheme = (schema or "").strip().lower() or "https"
        url = f"{scheme}://{host}"
    try:
        parts = urlsplit(url)
        url_port = parts.port
    except ValueError:
        raise ValueError(f"Connection host={host!r} is not a valid URL.") from None
    if port and url_port is None:
        url = f"{parts.scheme}://{parts.netloc}:{port}{parts.path}"
        parts = urlsplit(url)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise ValueError(f"Connection host={host!r} is not an http(s) URL; use e.g. {DEFAULT_BASE_URL!r}.")
    if parts.username or parts.password:
        raise ValueError(
            "Connection host must not carry credentials; put the SID in login and the API key in password."
        )
    if parts.query or parts.fragment:
        raise ValueError(f"Connection host={url!r} must not carry a query or a fragment.")
    if parts.scheme == "http" and not (allow_insecure_http or is_loopback_host(parts.hostname)):
        raise ValueError(
            f"Connection host={url!r} uses plain http, which would send the API key unencrypted. "
            "Use https, or set the connection extra allow_insecure_http=true if you really mean it."
        )
    return url.rstrip("/")
