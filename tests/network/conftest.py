"""
A corporate network on loopback: the emulator over TLS with a private CA made for the run (trustme),
one that demands a client certificate, and an authenticating proxy. Each is stopped by its test.
"""

from __future__ import annotations

import ssl
from datetime import date

import pytest
import trustme

from airflow_provider_kaleyra_email.testing import KaleyraEmailEmulator
from tests.network.proxy import AuthProxy

DAY = date(2026, 11, 2)
#: Every variable through which the environment can steer requests or httpx.
NETWORK_VARIABLES = (
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "all_proxy",
    "no_proxy",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
)


@pytest.fixture(autouse=True)
def clean_network_environment(monkeypatch):
    """No proxy or CA setting of the machine running the tests leaks into them."""
    for name in NETWORK_VARIABLES:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="session")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def ca_bundle(ca, tmp_path) -> str:
    """The private CA's certificate as a PEM file: what a corporate CA bundle is."""
    path = tmp_path / "corp-ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


@pytest.fixture
def client_cert(ca, tmp_path) -> str:
    """A client certificate signed by the private CA, with its key, in one PEM."""
    path = tmp_path / "client.pem"
    ca.issue_cert("airflow-worker@corp.example").private_key_and_cert_chain_pem.write_to_path(str(path))
    return str(path)


def server_context(ca: trustme.CA, *, client_certificate: bool = False) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    if client_certificate:
        ca.configure_trust(context)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


@pytest.fixture
def tls_emulator(ca):
    with KaleyraEmailEmulator(start_date=DAY, days=1, rows_per_day=300, ssl_context=server_context(ca)) as emulator:
        yield emulator


@pytest.fixture
def mtls_emulator(ca):
    context = server_context(ca, client_certificate=True)
    with KaleyraEmailEmulator(start_date=DAY, days=1, rows_per_day=300, ssl_context=context) as emulator:
        yield emulator


@pytest.fixture
def plain_emulator():
    with KaleyraEmailEmulator(start_date=DAY, days=1, rows_per_day=300) as emulator:
        yield emulator


@pytest.fixture
def proxy():
    with AuthProxy() as running:
        yield running
