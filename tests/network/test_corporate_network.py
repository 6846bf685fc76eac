"""
Both hooks behind an authenticating proxy and a private CA, as most companies reach SaaS APIs:
settings from the connection or the environment, applied alike by requests and httpx, and what
no retry can mend failing at once with what to fix.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

import pytest

from airflow_provider_kaleyra_email.exceptions import KaleyraEmailAPIError, KaleyraEmailTransientError
from airflow_provider_kaleyra_email.hooks.kaleyra_email import KaleyraEmailAsyncHook, KaleyraEmailHook
from tests.network.conftest import DAY

if TYPE_CHECKING:
    from tests.network.proxy import AuthProxy

#: Retrying would take about 20 s (6 attempts); what cannot get better fails in one (a generous bound for a
#: loaded runner: ``failure_of`` checks that no retry happened).
AT_ONCE = 10.0


def use(monkeypatch, emulator, **extra) -> str:
    """Point the default connection at ``emulator`` with these extras; return a message id it knows."""
    monkeypatch.setenv("AIRFLOW_CONN_KALEYRA_EMAIL_DEFAULT", emulator.connection_json(**extra))
    return emulator.dataset.message_id(DAY, 0)


def sync_reads(message_id: str) -> None:
    hook = KaleyraEmailHook()
    assert hook.get_message_stats(message_id)["message_id"] == message_id
    assert [row["date"] for row in hook.iter_summary_stats(DAY, DAY)] == ["2026-11-02"]


def async_reads(message_id: str) -> None:
    async def read() -> None:
        hook = KaleyraEmailAsyncHook()
        try:
            assert (await hook.get_message_stats(message_id))["message_id"] == message_id
        finally:
            await hook.aclose()

    asyncio.run(read())


READS = {"sync": sync_reads, "async": async_reads}


def failure_of(kind: str, message_id: str) -> tuple[KaleyraEmailAPIError, float]:
    """Return the error one read raises, and the seconds it took."""
    started = time.monotonic()
    with pytest.raises(KaleyraEmailAPIError) as raised:
        READS[kind](message_id)
    # Only a transient failure is retried, and what retries end in is transient too: this one was the first attempt's.
    assert not isinstance(raised.value, KaleyraEmailTransientError), "not retried: it cannot get better"
    return raised.value, time.monotonic() - started


def tunnels(proxy: AuthProxy, emulator) -> list[str]:
    return [line for line in proxy.requests if line.startswith(f"CONNECT 127.0.0.1:{emulator.port} ")]


# ------------------------------------------------------------------------------------------
# A private CA
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", READS)
def test_a_ca_bundle_in_the_connection_extra_verify_is_trusted(kind, monkeypatch, tls_emulator, ca_bundle):
    READS[kind](use(monkeypatch, tls_emulator, verify=ca_bundle))
    assert tls_emulator.requests, "the requests reached the emulator over TLS"


@pytest.mark.parametrize("variable", ["REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"])
@pytest.mark.parametrize("kind", READS)
def test_a_ca_bundle_from_the_environment_is_trusted_by_both_hooks(
    kind, variable, monkeypatch, tls_emulator, ca_bundle
):
    message_id = use(monkeypatch, tls_emulator)
    monkeypatch.setenv(variable, ca_bundle)
    READS[kind](message_id)


@pytest.mark.parametrize("kind", READS)
def test_an_unknown_ca_fails_at_once_naming_the_bundle_and_the_fix(kind, monkeypatch, tls_emulator):
    error, seconds = failure_of(kind, use(monkeypatch, tls_emulator))

    assert "did not verify against CA bundle" in error.message
    assert "certifi's bundle" in error.message
    assert "Set the connection extra verify (or REQUESTS_CA_BUNDLE)" in error.message
    assert seconds < AT_ONCE
    assert not tls_emulator.requests, "no request got through"


@pytest.mark.parametrize("kind", READS)
def test_verify_false_skips_the_check(kind, monkeypatch, tls_emulator):
    READS[kind](use(monkeypatch, tls_emulator, verify="false"))


@pytest.mark.parametrize("kind", READS)
def test_trust_env_false_ignores_the_environments_ca_bundle_and_proxy(
    kind, monkeypatch, tls_emulator, ca_bundle, proxy
):
    message_id = use(monkeypatch, tls_emulator, trust_env=False)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", ca_bundle)
    monkeypatch.setenv("HTTPS_PROXY", proxy.url())

    error, _ = failure_of(kind, message_id)

    assert "certifi's bundle" in error.message, "the environment's bundle was not read"
    assert proxy.requests == [], "nor its proxy"


# ------------------------------------------------------------------------------------------
# A client certificate
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", READS)
def test_a_server_that_demands_a_client_certificate_is_reached_with_cert(
    kind, monkeypatch, mtls_emulator, ca_bundle, client_cert
):
    READS[kind](use(monkeypatch, mtls_emulator, verify=ca_bundle, cert=client_cert))
    assert mtls_emulator.requests


@pytest.mark.parametrize("kind", READS)
def test_without_the_client_certificate_the_refused_handshake_fails_at_once(
    kind, monkeypatch, mtls_emulator, ca_bundle
):
    error, seconds = failure_of(kind, use(monkeypatch, mtls_emulator, verify=ca_bundle))

    assert "TLS handshake with 127.0.0.1" in error.message
    assert "set the connection extra cert" in error.message
    assert seconds < AT_ONCE


# ------------------------------------------------------------------------------------------
# An authenticating proxy
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", READS)
def test_both_hooks_tunnel_through_an_authenticating_proxy_from_the_environment(
    kind, monkeypatch, tls_emulator, ca_bundle, proxy
):
    message_id = use(monkeypatch, tls_emulator, verify=ca_bundle)
    monkeypatch.setenv("HTTPS_PROXY", proxy.url())  # user and password percent-encoded, as users write them

    READS[kind](message_id)

    assert tunnels(proxy, tls_emulator), "the requests went through the proxy"
    assert proxy.refused == 0, "with Proxy-Authorization from the URL's (decoded) credentials"


@pytest.mark.parametrize("kind", READS)
def test_the_connection_extra_proxies_wins_over_the_environment(kind, monkeypatch, tls_emulator, ca_bundle, proxy):
    message_id = use(monkeypatch, tls_emulator, verify=ca_bundle, proxies={"https": proxy.url()})
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")  # nothing listens there

    READS[kind](message_id)

    assert tunnels(proxy, tls_emulator)


@pytest.mark.parametrize("kind", READS)
def test_no_proxy_sends_the_api_host_direct(kind, monkeypatch, tls_emulator, ca_bundle, proxy):
    message_id = use(monkeypatch, tls_emulator, verify=ca_bundle)
    monkeypatch.setenv("HTTPS_PROXY", proxy.url())
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")

    READS[kind](message_id)

    assert proxy.requests == []


@pytest.mark.parametrize("kind", READS)
@pytest.mark.parametrize("source", ["environment", "extra"])
def test_a_wrong_proxy_password_is_one_clear_error(kind, source, monkeypatch, tls_emulator, ca_bundle, proxy, caplog):
    wrong = proxy.url(password="not-the-password-4711")
    proxies = {"proxies": {"https": wrong}} if source == "extra" else {}
    message_id = use(monkeypatch, tls_emulator, verify=ca_bundle, **proxies)
    if source == "environment":
        monkeypatch.setenv("HTTPS_PROXY", wrong)
    caplog.set_level(logging.DEBUG)

    error, seconds = failure_of(kind, message_id)

    named = "connection extra proxies" if source == "extra" else "environment variable HTTPS_PROXY"
    assert error.message == (
        f"the proxy 127.0.0.1:{proxy.port} ({named}) refused the request (HTTP 407 Proxy Authentication "
        f"Required); check the user and password in {named}"
    )
    assert proxy.refused == 1, "one attempt, no retries"
    assert seconds < AT_ONCE
    assert "not-the-password-4711" not in caplog.text + str(error)


@pytest.mark.parametrize("kind", READS)
def test_a_plain_http_api_is_forwarded_by_the_proxy_and_its_407_named(kind, monkeypatch, plain_emulator, proxy):
    message_id = use(monkeypatch, plain_emulator)
    monkeypatch.setenv("HTTP_PROXY", proxy.url())
    READS[kind](message_id)
    assert any(line.startswith("GET http://127.0.0.1:") for line in proxy.requests), "forwarded, not tunnelled"

    monkeypatch.setenv("HTTP_PROXY", proxy.url(user="someone-else"))
    error, _ = failure_of(kind, message_id)
    assert error.status_code == 407
    assert "check the user and password in environment variable HTTP_PROXY" in error.message


@pytest.mark.parametrize("kind", READS)
def test_a_proxy_that_cannot_be_resolved_fails_at_once(kind, monkeypatch, tls_emulator, ca_bundle):
    proxies = {"https": "http://proxy.invalid:3128"}  # .invalid never resolves (RFC 2606)
    error, seconds = failure_of(kind, use(monkeypatch, tls_emulator, verify=ca_bundle, proxies=proxies))

    assert error.message == (
        "the proxy proxy.invalid:3128 (connection extra proxies) cannot be resolved; check connection extra proxies"
    )
    assert seconds < AT_ONCE


# ------------------------------------------------------------------------------------------
# The connection: its test, and extras it cannot use
# ------------------------------------------------------------------------------------------


def test_a_connection_test_names_the_proxy_and_the_ca_bundle_it_used(monkeypatch, tls_emulator, ca_bundle, proxy):
    use(monkeypatch, tls_emulator, verify=ca_bundle, proxies={"https": proxy.url()})

    ok, message = KaleyraEmailHook().test_connection()

    assert ok, message
    assert f"through proxy 127.0.0.1:{proxy.port} (connection extra proxies)" in message
    assert f"CA bundle {ca_bundle} (connection extra verify)" in message
    assert proxy.password not in message


def test_a_failed_connection_test_says_which_way_it_tried(monkeypatch, tls_emulator):
    use(monkeypatch, tls_emulator)

    ok, message = KaleyraEmailHook().test_connection()

    assert not ok
    assert "did not verify" in message
    assert "(tried directly (no proxy), CA bundle" in message


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        ({"proxies": "proxy.corp:3128"}, r"proxies must be a JSON object .* not str"),
        ({"proxies": {"https": "socks5://proxy.corp:1080"}}, r"proxies\['https'\] is socks5://proxy.corp"),
        ({"verify": "/etc/ssl/no-such-bundle.pem"}, r"verify='/etc/ssl/no-such-bundle.pem' is no file"),
        ({"cert": ["/no/cert.pem", "/no/key.pem"]}, r"cert\[0\]='/no/cert.pem' is no file"),
        ({"trust_env": "sometimes"}, r"trust_env='sometimes' is not true or false"),
    ],
)
def test_network_extras_it_cannot_use_are_named_before_any_request(monkeypatch, plain_emulator, extra, match):
    use(monkeypatch, plain_emulator, **extra)

    with pytest.raises(ValueError, match=match):
        KaleyraEmailHook().get_message_stats("abc:1")
    assert not plain_emulator.requests


def test_a_proxy_password_stays_out_of_errors_about_it(monkeypatch, plain_emulator):
    use(monkeypatch, plain_emulator, proxies={"https": "ftp://user:hunter2-secret@proxy.corp"})

    with pytest.raises(ValueError, match=r"proxies\['https'\] is ftp://proxy.corp") as raised:
        KaleyraEmailHook().get_message_stats("abc:1")
    assert "hunter2-secret" not in str(raised.value)
