"""How an Airflow connection becomes the settings the hook and the trigger use, read the same way by both."""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from airflow_provider_kaleyra_email import validation
from airflow_provider_kaleyra_email.api_facts import (
    DEFAULT_BASE_URL,
    MAX_PAGE_SIZE,
    MAX_RESPONSE_BYTES,
    REGION_BASE_URLS,
)
from airflow_provider_kaleyra_email.provider_info import CONN_FIELDS

if TYPE_CHECKING:
    from collections.abc import Callable

log = logging.getLogger(__name__)

#: Extras we read. Airflow 2's connection form may store them as ``extra__kaleyra_email__<name>``.
KNOWN_EXTRAS = tuple(CONN_FIELDS)


def _form_range(name: str) -> Callable[..., int]:
    """Check a whole number against the bounds the connection form shows."""
    schema = CONN_FIELDS[name]["schema"]
    return partial(validation.int_in_range, low=schema["minimum"], high=schema["maximum"])


#: The settings a connection extra or a hook argument may give, and how each is checked.
_CHECKS: dict[str, Callable[..., Any]] = {
    "timeout": validation.positive_number,
    "max_retries": _form_range("max_retries"),
    "page_size": validation.page_size,
    "max_concurrency": _form_range("max_concurrency"),
    "max_response_bytes": partial(validation.int_in_range, low=1024, high=2**40),
}


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
    timeout: float = 30.0
    max_retries: int = 5
    page_size: int = MAX_PAGE_SIZE  # the API's largest page, not its default of 50: half the round trips
    #: Most pages in flight, halved on HTTP 429: 16 hide a 20 ms round trip and stay a modest load.
    max_concurrency: int = 16
    max_response_bytes: int = MAX_RESPONSE_BYTES
    #: Network settings as ``HttpHook`` names them (``None``: not set, so the environment decides).
    #: ``proxies`` may hold a password, so it stays out of ``repr`` too.
    proxies: Mapping[str, str] | None = field(default=None, repr=False)
    verify: bool | str | None = None
    cert: str | tuple[str, str] | None = None
    trust_env: bool = True
    #: Extras the connection sets that this provider does not read (a typo such as ``time_zone``).
    unknown_extras: tuple[str, ...] = ()

    def ignored_extras(self) -> str:
        """Return a note naming the unknown extras, or ``""`` when there are none."""
        return _ignored_extras(self.unknown_extras)


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
    extras = {
        key.removeprefix("extra__kaleyra_email__"): value for key, value in extra.items() if value not in (None, "")
    }
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
    timezone = extras.get("timezone", "UTC")
    validation.account_timezone(timezone, parameter="Connection extra timezone")
    tuning = {
        name: check(value, parameter=f"Connection extra {name}")
        for name, value in extras.items()
        if name in KNOWN_EXTRAS and (check := _CHECKS.get(name) or _NETWORK_CHECKS.get(name)) is not None
    }
    return ConnectionConfig(
        base_url=base_url, sid=sid, api_key=password, timezone=timezone.strip(), unknown_extras=unknown, **tuning
    )


def _json_or_value(value: Any) -> Any:
    """Return ``value``, or what it holds as JSON when it is a string that starts like JSON (the form stores text)."""
    if isinstance(value, str) and value.strip()[:1] in ("{", "["):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _proxies(value: Any, *, parameter: str) -> dict[str, str]:
    """Check ``proxies``: requests' shape, ``{"http": url, "https": url}``; credentials in a URL allowed."""
    proxies = _json_or_value(value)
    if not isinstance(proxies, Mapping) or not all(isinstance(v, str) for v in proxies.values()):
        shape = 'a JSON object such as {"https": "http://proxy.corp:3128"}'
        raise ValueError(f"{parameter} must be {shape}, not {type(proxies).__name__}.")
    for scheme, url in proxies.items():
        parts = urlsplit(url if "://" in url else f"http://{url}")
        if parts.scheme not in {"http", "https"} or not parts.hostname:
            shown = f"{parts.scheme}://{parts.hostname}" if parts.hostname else "a URL without a host"
            raise ValueError(f"{parameter}[{scheme!r}] is {shown}; use an http:// or https:// proxy URL.")
    return {str(scheme): url.strip() for scheme, url in proxies.items()}


def _existing_file(path: Any, parameter: str) -> str:
    if not isinstance(path, str) or not os.path.exists(path.strip()):
        raise ValueError(f"{parameter}={path!r} is no file on this machine.")
    return path.strip()


def _verify(value: Any, *, parameter: str) -> bool | str:
    """Check ``verify``: ``true``, ``false`` or the path of a CA bundle (a file, or a directory of certificates)."""
    if isinstance(value, bool) or (isinstance(value, str) and value.strip().lower() in _BOOLEAN_WORDS):
        return validation.boolean(value, parameter=parameter)
    return _existing_file(value, parameter)


def _cert(value: Any, *, parameter: str) -> str | tuple[str, str]:
    """Check ``cert``: a PEM holding the client certificate and its key, or ``[cert, key]``."""
    cert = _json_or_value(value)
    if isinstance(cert, list | tuple) and len(cert) == 2:
        return _existing_file(cert[0], f"{parameter}[0]"), _existing_file(cert[1], f"{parameter}[1]")
    return _existing_file(cert, parameter)


_BOOLEAN_WORDS = frozenset({"true", "false", "yes", "no", "on", "off", "1", "0"})

#: The network extras, named and shaped as ``HttpHook``'s; connection extras only (a hook takes no override).
_NETWORK_CHECKS: dict[str, Callable[..., Any]] = {
    "proxies": _proxies,
    "verify": _verify,
    "cert": _cert,
    "trust_env": validation.boolean,
}


def check_overrides(**overrides: Any) -> dict[str, Any]:
    """Check a hook's overrides of the connection's settings, dropping those left at ``None``."""
    # Checked when the hook is built, applied when the connection is read: no secrets lookup before a request.
    return {name: _CHECKS[name](value, parameter=name) for name, value in overrides.items() if value is not None}


def config_of(conn: Any, extra: Mapping[str, Any], *, conn_id: str, overrides: Mapping[str, Any]) -> ConnectionConfig:
    """Return the settings of an Airflow ``Connection`` (its ``extra`` already parsed), with ``overrides`` applied."""
    fields = {name: getattr(conn, name) for name in ("login", "password", "host", "port", "schema")}
    return dataclasses.replace(config_from_connection(conn_id=conn_id, extra=extra, **fields), **overrides)


def _ignored_extras(unknown: tuple[str, ...]) -> str:
    names = ", ".join(repr(name) for name in unknown)
    return f"ignored unknown extra field(s) {names} (known: {', '.join(KNOWN_EXTRAS)})" if unknown else ""


def _is_loopback(hostname: str) -> bool:
    try:
        return hostname == "localhost" or ipaddress.ip_address(hostname).is_loopback
    except ValueError:
        return False


def base_url_from_fields(
    *, host: str | None, port: int | None, schema: str | None, region: Any, allow_insecure_http: bool
) -> str:
    """
    Return the base URL from the connection's ``host`` (with ``port``/``schema``) or its ``region``.

    ``host`` may be a full URL or a bare host name, whose scheme then comes from ``schema``
    (default ``https``); it wins over ``region``. Plain ``http`` is refused unless the host is
    loopback (the emulator) or ``allow_insecure_http`` is set: the API key travels in a header.
    """
    region_key = region.strip().lower() if isinstance(region, str) else region
    if region_key and region_key not in REGION_BASE_URLS:
        known = ", ".join(repr(name) for name in REGION_BASE_URLS)
        raise ValueError(f"Connection extra region={region!r} is not a Kaleyra region; use one of {known}.")
    host = (host or "").strip()
    if not host:
        url = REGION_BASE_URLS[region_key] if region_key else DEFAULT_BASE_URL
    elif "://" in host:
        url = host
    else:
        url = f"{(schema or '').strip().lower() or 'https'}://{host}"
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
    if parts.scheme == "http" and not (allow_insecure_http or _is_loopback(parts.hostname)):
        raise ValueError(
            f"Connection host={url!r} uses plain http, which would send the API key unencrypted. "
            "Use https, or set the connection extra allow_insecure_http=true if you really mean it."
        )
    return url.rstrip("/")
