"""How an Airflow connection becomes the settings the hook and the trigger use, read the same way by both."""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from functools import partial
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from airflow_provider_kaleyra_email import api_facts, validation
from airflow_provider_kaleyra_email.provider_info import CONN_FIELDS

if TYPE_CHECKING:
    from collections.abc import Callable

log = logging.getLogger(__name__)

#: Extras we read. Airflow 2's connection form may store them as ``extra__kaleyra_email__<name>``.
KNOWN_EXTRAS = tuple(CONN_FIELDS)


class ConnectionConfigError(ValueError):
    """
    A connection this provider cannot use, named by its id.

    ``problem`` reads after "This connection": Airflow tests a connection under a random id, not to be named.
    """

    def __init__(self, conn_id: str, problem: str) -> None:
        super().__init__(f"Connection {conn_id!r} {problem}")
        self.problem = problem


@dataclass(frozen=True)
class ConnectionConfig:
    """Everything a client needs from the connection, checked once. ``repr`` leaves out the key and the proxies."""

    base_url: str
    sid: str
    api_key: str = field(repr=False)
    timezone: str = "UTC"
    timeout: float = 30.0
    max_retries: int = 5
    page_size: int = api_facts.MAX_PAGE_SIZE  # the API's largest page, not its default of 50: half the round trips
    max_concurrency: int = 16  # hides a 20 ms round trip and stays a modest load
    max_response_bytes: int = api_facts.MAX_RESPONSE_BYTES
    #: The network settings as ``HttpHook`` names them; ``None``: the environment decides.
    proxies: Mapping[str, str] | None = field(default=None, repr=False)  # may hold a password
    verify: bool | str | None = None
    cert: str | tuple[str, str] | None = None
    trust_env: bool = True
    unknown_extras: tuple[str, ...] = ()  # set on the connection but not read, e.g. a typo such as time_zone

    def ignored_extras(self) -> str:
        """Return a note naming the unknown extras, or ``""`` when there are none."""
        return _ignored(self.unknown_extras)


def config_of(conn: Any, extra: Mapping[str, Any], *, conn_id: str, overrides: Mapping[str, Any]) -> ConnectionConfig:
    """Check an Airflow ``Connection``'s fields and extras (``extra`` already parsed), then apply ``overrides``."""
    extras = {key.removeprefix("extra__kaleyra_email__"): v for key, v in extra.items() if v not in (None, "")}
    unknown = tuple(sorted(set(extras) - set(KNOWN_EXTRAS)))
    if unknown:  # a hook reads its connection once, so it warns once
        log.warning("Connection %r: %s.", conn_id, _ignored(unknown))
    sid = (conn.login or "").strip()
    if not sid:
        raise ConnectionConfigError(conn_id, "has no account SID: put it in the login field.")
    if not conn.password:
        raise ConnectionConfigError(conn_id, "has no API key: put it in the password field.")
    settings = {
        name: _CHECKS[name](value, parameter=f"Connection extra {name}")
        for name, value in extras.items()
        if name in KNOWN_EXTRAS and name in _CHECKS
    }
    base_url = _base_url(conn, extras.get("region"), allow_insecure_http=settings.pop("allow_insecure_http", False))
    config = ConnectionConfig(base_url, sid, conn.password, unknown_extras=unknown, **settings)
    return replace(config, **overrides)


def check_overrides(**overrides: Any) -> dict[str, Any]:
    """Check a hook's overrides of the connection's settings, dropping those left at ``None``."""
    # Checked when the hook is built, applied when the connection is read: no secrets lookup before a request.
    return {name: _CHECKS[name](value, parameter=name) for name, value in overrides.items() if value is not None}


def _ignored(unknown: tuple[str, ...]) -> str:
    names = ", ".join(repr(name) for name in unknown)
    return f"ignored unknown extra field(s) {names} (known: {', '.join(KNOWN_EXTRAS)})" if unknown else ""


#: The user information of a host given as ``[scheme://]user:password@host``.
_CREDENTIALS = re.compile(r"^((?:[^:/@]+://)?)[^/@]*@")


def _base_url(conn: Any, region: Any, *, allow_insecure_http: bool) -> str:
    """Return the connection's host (a bare name takes ``schema``, default https), else its region's URL."""
    region_key = region.strip().lower() if isinstance(region, str) else region
    if region_key and region_key not in api_facts.REGION_BASE_URLS:
        known = ", ".join(repr(name) for name in api_facts.REGION_BASE_URLS)
        raise ValueError(f"Connection extra region={region!r} is not a Kaleyra region; use one of {known}.")
    host = (conn.host or "").strip()
    shown = _CREDENTIALS.sub(r"\1***@", host)  # what an error may quote: a password in the host stays out
    if not host:
        url = api_facts.REGION_BASE_URLS[region_key] if region_key else api_facts.DEFAULT_BASE_URL
    else:
        url = host if "://" in host else f"{(conn.schema or '').strip().lower() or 'https'}://{host}"
    try:
        parts = urlsplit(url)
        url_port = parts.port
    except ValueError:
        raise ValueError(f"Connection host={shown!r} is not a valid URL.") from None
    if conn.port and url_port is None:
        url = f"{parts.scheme}://{parts.netloc}:{conn.port}{parts.path}"
        parts = urlsplit(url)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise ValueError(f"Connection host={shown!r} is not an http(s) URL; use e.g. {api_facts.DEFAULT_BASE_URL!r}.")
    if parts.username or parts.password:
        raise ValueError("Connection host must not carry credentials: the SID goes in login, the API key in password.")
    if parts.query or parts.fragment:
        raise ValueError(f"Connection host={url!r} must not carry a query or a fragment.")
    # The API key travels in a header: plain http only to loopback (the emulator) unless allowed.
    if parts.scheme == "http" and not (allow_insecure_http or _is_loopback(parts.hostname)):
        raise ValueError(
            f"Connection host={url!r} uses plain http, which would send the API key unencrypted. "
            "Use https, or set the connection extra allow_insecure_http=true if you really mean it."
        )
    return url.rstrip("/")


def _is_loopback(hostname: str) -> bool:
    with contextlib.suppress(ValueError):
        return hostname == "localhost" or ipaddress.ip_address(hostname).is_loopback
    return False


def _json_or_value(value: Any) -> Any:
    """Return what ``value`` holds as JSON when it is text that starts like JSON (the form stores text), else itself."""
    if isinstance(value, str) and value.strip()[:1] in ("{", "["):
        with contextlib.suppress(ValueError):
            return json.loads(value)
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
    if isinstance(value, bool) or (isinstance(value, str) and value.strip().lower() in validation.FLAG_WORDS):
        return validation.boolean(value, parameter=parameter)
    return _existing_file(value, parameter)


def _cert(value: Any, *, parameter: str) -> str | tuple[str, str]:
    """Check ``cert``: a PEM holding the client certificate and its key, or ``[cert, key]``."""
    cert = _json_or_value(value)
    if isinstance(cert, list | tuple) and len(cert) == 2:
        return _existing_file(cert[0], f"{parameter}[0]"), _existing_file(cert[1], f"{parameter}[1]")
    return _existing_file(cert, parameter)


def _zone(value: Any, *, parameter: str) -> str:
    return validation.account_timezone(value, parameter=parameter).key


def _form_bounds(name: str) -> Callable[..., int]:
    schema = CONN_FIELDS[name]["schema"]
    return partial(validation.int_in_range, low=schema["minimum"], high=schema["maximum"])


#: How each setting an extra or a hook argument gives is checked (``region`` is the base URL's).
_CHECKS: dict[str, Callable[..., Any]] = {
    "timezone": _zone,
    "allow_insecure_http": validation.boolean,
    "timeout": validation.positive_number,
    **{name: _form_bounds(name) for name in ("max_retries", "page_size", "max_concurrency")},
    "max_response_bytes": partial(validation.int_in_range, low=1024, high=2**40),
    "proxies": _proxies,
    "verify": _verify,
    "cert": _cert,
    "trust_env": validation.boolean,
}
