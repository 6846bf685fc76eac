"""How requests travel: the body's limits as its headers declare them, and transport failures without the key."""

from __future__ import annotations

import json
import logging
import socket
import threading

import pytest

from airflow_provider_kaleyra_email.exceptions import KaleyraEmailAPIError
from airflow_provider_kaleyra_email.hooks._http import Body, exchange_failure
from airflow_provider_kaleyra_email.hooks.kaleyra_email import KaleyraEmailHook


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
    failure = exchange_failure(ValueError("Z" * 190 + key), timeout=2, api_key=key)
    assert "sk_live" not in failure.description
    assert "ZZZ***" in failure.description


@pytest.fixture
def header_echoing_server():
    """A server on loopback whose answer holds a header line urllib3 cannot parse, quoting the key it was sent."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with conn:
                request = conn.recv(65536).decode("latin-1")
                key = next(line[8:].strip() for line in request.split("\r\n") if line.lower().startswith("api-key:"))
                body = b'{"data": [{"message_id": "abc:1", "recipients": []}], "error": {}}'
                head = (
                    f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\nnot a header {key}\r\nConnection: close\r\n\r\n"
                )
                conn.sendall(head.encode() + body)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    stop.set()
    thread.join(5)
    listener.close()


def test_urllib3s_own_warning_about_a_header_it_cannot_parse_does_not_hold_the_key(
    header_echoing_server, monkeypatch, caplog
):
    key = "sk_live_SECRETKEY_0123456789abcdef"
    conn = {"conn_type": "kaleyra_email", "login": "SID", "password": key, "host": header_echoing_server}
    monkeypatch.setenv("AIRFLOW_CONN_KALEYRA_EMAIL_DEFAULT", json.dumps(conn))
    caplog.set_level(logging.DEBUG)

    KaleyraEmailHook(max_retries=0).get_message_stats("abc:1")

    warnings = [record for record in caplog.records if record.name.startswith("urllib3")]
    assert any("Failed to parse headers" in record.getMessage() for record in warnings), "the case happened"
    assert key not in caplog.text
