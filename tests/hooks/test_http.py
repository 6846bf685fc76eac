"""How requests travel: the body's limits as its headers declare them, and transport failures without the key."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from airflow_provider_kaleyra_email.connection import ConnectionConfig
from airflow_provider_kaleyra_email.exceptions import KaleyraEmailAPIError
from airflow_provider_kaleyra_email.hooks._http import AdaptiveConcurrency, Body, exchange_failure
from airflow_provider_kaleyra_email.hooks._network import Network
from airflow_provider_kaleyra_email.hooks.kaleyra_email import KaleyraEmailHook
from tests.hooks.conftest import http_answer


def body(**headers: str) -> Body:
    return Body({name.replace("_", "-"): value for name, value in headers.items()}, limit=1000, endpoint="GET /x")


@pytest.mark.parametrize("declared", ["1001", "9" * 5000])
def test_a_declared_length_over_the_limit_is_refused_before_reading(declared):
    with pytest.raises(KaleyraEmailAPIError, match="over the limit of 1,000"):
        body(Content_Length=declared)


@pytest.mark.parametrize("declared", ["\u00b2", "-5", "12abc", ""])
def test_a_declared_length_that_is_no_number_is_left_to_the_count_of_bytes_read(declared):
    read = body(Content_Length=declared)
    read.add(b"x" * 1000)
    with pytest.raises(KaleyraEmailAPIError, match="more than 1,001 bytes"):
        read.add(b"x")


@pytest.mark.parametrize("codings", ["gzip, gzip, gzip", "gzip,br", "deflate, gzip"])
def test_a_body_encoded_more_than_once_is_refused_before_any_decoding(codings):
    # httpx decodes each layer whole before the size is counted: 269 bytes can become gigabytes.
    with pytest.raises(KaleyraEmailAPIError, match=r"encoded [23] times over"):
        body(Content_Encoding=codings)
    body(Content_Encoding="gzip")  # one layer is read, and counted as it is decoded


def test_a_transport_failure_is_scrubbed_before_it_is_shortened():
    # Cut first, a key at the cut would leave its first characters behind.
    key = "sk_live_SECRETKEY_0123456789abcdef"
    config = ConnectionConfig(base_url="https://api.kaleyra.io", sid="SID", api_key=key, timeout=2)
    failure = exchange_failure(ValueError("Z" * 190 + key), config=config, network=Network(), endpoint="GET /x")
    assert "sk_live" not in failure.description
    assert "ZZZ***" in failure.description


def test_urllib3s_own_warning_about_a_header_it_cannot_parse_does_not_hold_the_key(scripted_server, caplog):
    body = b'{"data": [{"message_id": "abc:1", "recipients": []}], "error": {}}'
    key = scripted_server(lambda request, sent: http_answer("200 OK", body, f"not a header {sent}"))
    caplog.set_level(logging.DEBUG)

    KaleyraEmailHook(max_retries=0).get_message_stats("abc:1")

    warnings = [record for record in caplog.records if record.name.startswith("urllib3")]
    assert any("Failed to parse headers" in record.getMessage() for record in warnings), "the case happened"
    assert key not in caplog.text


def test_a_100_continue_before_the_answer_is_skipped(scripted_server):
    body = b'{"data": [{"message_id": "abc:1", "recipients": []}], "error": {}}'
    scripted_server(lambda request, sent: b"HTTP/1.1 100 Continue\r\n\r\n" + http_answer("200 OK", body))

    assert KaleyraEmailHook(max_retries=0).get_message_stats("abc:1")["message_id"] == "abc:1"


@pytest.mark.parametrize("informational", ["102 Processing", "103 Early Hints"])
def test_another_informational_answer_is_a_clear_error_not_a_wrong_result(scripted_server, informational):
    # http.client (under requests) skips only a 100; the API sends no other 1xx, so none is special-cased.
    body = b'{"data": [{"message_id": "abc:1", "recipients": []}], "error": {}}'
    first = f"HTTP/1.1 {informational}\r\nLink: </style.css>; rel=preload\r\n\r\n".encode()
    scripted_server(lambda request, sent: first + http_answer("200 OK", body))

    with pytest.raises(KaleyraEmailAPIError, match=f"HTTP {informational[:3]} with a body that is not JSON"):
        KaleyraEmailHook(max_retries=0).get_message_stats("abc:1")


class TestAdaptiveConcurrency:
    @pytest.mark.parametrize(
        ("wait", "cpu", "expected"),
        [
            (0.020, 0.0005, 41),  # Kaleyra's 20 ms: more than any limit, so the limit decides
            (0.0021, 0.0005, 6),  # a short trip: enough to keep our CPU busy through one wait
            (0.0001, 0.0005, 1),  # loopback: waiting costs less than our CPU, more would fight over the GIL
        ],
    )
    def test_what_is_worth_it_keeps_our_cpu_busy_through_a_wait(self, wait, cpu, expected, monkeypatch):
        limit = AdaptiveConcurrency(16)
        assert limit.worth == 16, "all of them until the first answers say otherwise"
        clock = iter([0.0, wait + cpu])
        cpu_clock = iter([0.0, cpu])
        monkeypatch.setattr(time, "monotonic", lambda: next(clock))
        monkeypatch.setattr(time, "thread_time", lambda: next(cpu_clock))
        with limit.slot():
            pass
        assert limit.worth == expected

    def test_a_429_halves_the_limit_once_per_burst_and_successes_raise_it_again(self):
        limit = AdaptiveConcurrency(8)
        assert limit.limit == 8, "all of them until Kaleyra says otherwise"
        limit.throttled()
        limit.throttled()
        assert limit.limit == 4
        limit._last_decrease -= AdaptiveConcurrency.COOLDOWN_SECONDS
        limit.throttled()
        assert limit.limit == 2
        for _ in range(2):
            limit.succeeded()
        assert limit.limit == 3, "one more per window of successes"
        for _ in range(100):
            limit.succeeded()
        assert limit.limit == 8, "never above the maximum"

    def test_slots_block_at_the_limit(self):
        limit = AdaptiveConcurrency(2)
        active, peak = 0, 0
        lock = threading.Lock()

        def work():
            nonlocal active, peak
            with limit.slot():
                with lock:
                    active += 1
                    peak = max(peak, active)
                time.sleep(0.02)
                with lock:
                    active -= 1

        threads = [threading.Thread(target=work) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert peak == 2


def test_a_port_with_407_in_it_is_no_proxy_refusal():
    # A refused connection names the proxy's port; only a 407 status means wrong credentials.
    network = Network(proxy="http://user:pw@127.0.0.1:40712", proxy_from="connection extra proxies")
    refused = ConnectionError("HTTPConnectionPool(host='127.0.0.1', port=40712): [Errno 111] Connection refused")
    assert network.failure(refused, endpoint="GET /x", host="api.kaleyra.io") is None
    tunnel = OSError("Tunnel connection failed: 407 Proxy Authentication Required")
    assert network.failure(tunnel, endpoint="GET /x", host="api.kaleyra.io").status_code == 407
