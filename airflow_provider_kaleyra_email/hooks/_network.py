"""
The network settings both hooks apply, resolved once per connection, and the failures no retry mends.

The connection's extras come first, then, unless ``trust_env`` is false, the environment as requests
reads it, else certifi's bundle. ``~/.netrc`` is never read.
"""

from __future__ import annotations

import os
import re
import socket
import ssl
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

import certifi
import requests.utils
from urllib3.exceptions import NameResolutionError

from airflow_provider_kaleyra_email.exceptions import KaleyraEmailAPIError

if TYPE_CHECKING:
    from airflow_provider_kaleyra_email.connection import ConnectionConfig

_CA_BUNDLE_VARIABLES = ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")
#: A proxy's 407 as urllib3 ("Tunnel connection failed: 407 ...") and httpx ("407 ...") word it; not a
#: port such as 127.0.0.1:40712 in a refused connection's text.
_PROXY_REFUSED = re.compile(r"(?<![\d:])407(?!\d)")
#: TLS errors of a connection that ended, not of a handshake refused: those stay worth a retry.
_DROPPED = (ssl.SSLEOFError, ssl.SSLZeroReturnError, ssl.SSLSyscallError, ssl.SSLWantReadError, ssl.SSLWantWriteError)


@dataclass(frozen=True)
class Network:
    """
    Where requests go and how TLS is checked, with where each setting came from (for messages).

    :param proxy: the proxy URL, credentials included (kept out of ``repr``), or ``None``.
    :param verify: ``True`` (``verify_from`` names the bundle), ``False``, or a CA bundle path.
    :param cert: the client certificate: a PEM with its key, or ``(cert, key)``.
    """

    proxy: str | None = field(default=None, repr=False)
    proxy_from: str = ""
    verify: bool | str = True
    verify_from: str = "certifi's bundle"
    cert: str | tuple[str, str] | None = None

    @classmethod
    def of(cls, config: ConnectionConfig) -> Network:
        """Resolve the settings of ``config``: its extras first, then the environment unless ``trust_env`` is off."""
        url, from_env = config.base_url, config.trust_env
        proxy, proxy_from = None, ""
        if config.proxies is not None:
            proxy, proxy_from = requests.utils.select_proxy(url, dict(config.proxies)), "connection extra proxies"
        elif from_env:
            proxy = requests.utils.select_proxy(url, requests.utils.get_environ_proxies(url))
            proxy_from = _variable_holding(proxy, urlsplit(url).scheme)
        verify: bool | str = True
        verify_from = "certifi's bundle"
        if config.verify is not None:
            verify, verify_from = config.verify, "connection extra verify"
        elif from_env and (variable := next((v for v in _CA_BUNDLE_VARIABLES if os.environ.get(v)), None)):
            verify, verify_from = os.environ[variable], variable
        return cls(proxy or None, proxy_from if proxy else "", verify, verify_from, config.cert)

    @property
    def proxy_address(self) -> str:
        """Return the proxy as ``host:port``, without credentials."""
        parts = urlsplit(self.proxy if self.proxy and "://" in self.proxy else f"http://{self.proxy}")
        return f"{parts.hostname}:{parts.port or (443 if parts.scheme == 'https' else 80)}"

    @property
    def proxy_password(self) -> str | None:
        """Return the proxy's password, percent-decoded, to scrub from any text."""
        if not self.proxy:
            return None
        password = urlsplit(self.proxy if "://" in self.proxy else f"http://{self.proxy}").password
        return unquote(password) if password else None

    def describe(self) -> str:
        """Return what a connection test reports: the proxy, the CA bundle and the client certificate used."""
        route = f"through proxy {self.proxy_address} ({self.proxy_from})" if self.proxy else "directly (no proxy)"
        cert = f", client certificate {self.cert if isinstance(self.cert, str) else self.cert[0]}" if self.cert else ""
        return f"{route}, {self._trust()}{cert}"

    def requests_options(self, scheme: str) -> dict[str, Any]:
        """Return the ``requests.Session`` attributes that apply these settings."""
        return {"proxies": {scheme: self.proxy} if self.proxy else {}, "verify": self.verify, "cert": self.cert}

    def ssl_context(self) -> ssl.SSLContext:
        """Return the TLS context httpx uses: the same trust and client certificate as requests'."""
        context = ssl.create_default_context()
        if self.verify is False:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        else:
            bundle = certifi.where() if self.verify is True else self.verify
            if os.path.isdir(bundle):
                context.load_verify_locations(capath=bundle)
            else:
                context.load_verify_locations(cafile=bundle)
        if self.cert is not None:
            context.load_cert_chain(*((self.cert,) if isinstance(self.cert, str) else self.cert))
        return context

    def failure(self, exc: BaseException, *, endpoint: str, host: str) -> KaleyraEmailAPIError | None:
        """Return the error of a failure no retry mends (TLS refused or unverified, the proxy's), or ``None``."""
        chain = causes(exc)
        message = None
        verify_failed = next((c for c in chain if isinstance(c, ssl.SSLCertVerificationError)), None)
        refused = next((c for c in chain if isinstance(c, ssl.SSLError) and not isinstance(c, _DROPPED)), None)
        if self.proxy and any(_PROXY_REFUSED.search(str(c)) for c in chain):
            return self.proxy_refused(endpoint)
        if self.proxy and any(isinstance(c, socket.gaierror | NameResolutionError) for c in chain):
            message = f"the proxy {self.proxy_address} ({self.proxy_from}) cannot be resolved; check {self.proxy_from}"
        elif verify_failed is not None:
            message = (
                f"the TLS certificate of {host} did not verify against {self._trust()}: "
                f"{verify_failed.verify_message or verify_failed.reason}. Set the connection extra verify "
                "(or REQUESTS_CA_BUNDLE) to the CA bundle that signs it"
            )
        elif refused is not None:
            sent = "none was sent" if self.cert is None else "the one in the connection extra cert was refused"
            message = (
                f"the TLS handshake with {host} failed ({refused.reason or refused}); if the server asks for a "
                f"client certificate ({sent}), set the connection extra cert"
            )
        if message is None:
            return None
        return KaleyraEmailAPIError(endpoint=endpoint, message=message)

    def proxy_refused(self, endpoint: str) -> KaleyraEmailAPIError:
        """Return the error of a proxy's HTTP 407: its credentials are wrong or missing."""
        message = (
            f"the proxy {self.proxy_address} ({self.proxy_from}) refused the request (HTTP 407 Proxy "
            f"Authentication Required); check the user and password in {self.proxy_from}"
        )
        return KaleyraEmailAPIError(endpoint=endpoint, status_code=407, message=message)

    def _trust(self) -> str:
        if self.verify is False:
            return "TLS verification off (connection extra verify=false)"
        bundle = certifi.where() if self.verify is True else self.verify
        return f"CA bundle {bundle} ({self.verify_from})"


def causes(exc: BaseException) -> list[BaseException]:
    """Return ``exc`` and the errors it wraps (urllib3 keeps them in ``reason`` or ``args``, httpx in ``__cause__``)."""
    found = [exc]
    for error in found:  # grows as it goes
        inner = [getattr(error, "reason", None), error.__cause__, error.__context__, *error.args]
        found += [e for e in inner if isinstance(e, BaseException) and e not in found]
    return found


def _variable_holding(proxy: str | None, scheme: str) -> str:
    """Return the name of the environment variable that set ``proxy``, as requests reads them."""
    names = (f"{scheme}_proxy", f"{scheme.upper()}_PROXY", "all_proxy", "ALL_PROXY")
    return next(
        (f"environment variable {name}" for name in names if proxy and os.environ.get(name) == proxy), "the environment"
    )
