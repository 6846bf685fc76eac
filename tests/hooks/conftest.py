from __future__ import annotations

import json
import socket
import threading
from datetime import date
from typing import TYPE_CHECKING

import pytest

from airflow_provider_kaleyra_email.hooks.kaleyra_email import KaleyraEmailHook

if TYPE_CHECKING:
    from collections.abc import Callable

DAY = date(2026, 11, 2)


@pytest.fixture
def hook(kaleyra_email_connection: str) -> KaleyraEmailHook:
    """A hook on the emulator with backoffs short enough for tests."""
    return KaleyraEmailHook(kaleyra_email_connection, retry_wait_initial=0.01, retry_wait_max=0.05)


@pytest.fixture
def scripted_server(monkeypatch):
    """
    Start a server on loopback that answers every request with ``answer(request text, api key sent)``.

    For answers the emulator cannot give (a header urllib3 cannot parse, an id that is an object);
    the default connection points at it. Stopped by the test.
    """
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.1)
    stop = threading.Event()

    def start(answer: Callable[[str, str], bytes], key: str = "sk_live_SECRETKEY_0123456789abcdef") -> str:
        def serve() -> None:
            while not stop.is_set():
                try:
                    conn, _ = listener.accept()
                except TimeoutError:
                    continue
                except OSError:  # closed: the test is over
                    return
                with conn:
                    request = conn.recv(65536).decode("latin-1")
                    sent = next(
                        (line[8:].strip() for line in request.split("\r\n") if line.lower().startswith("api-key:")), ""
                    )
                    conn.sendall(answer(request, sent))

        threading.Thread(target=serve, daemon=True).start()
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        conn = {"conn_type": "kaleyra_email", "login": "SID", "password": key, "host": url}
        monkeypatch.setenv("AIRFLOW_CONN_KALEYRA_EMAIL_DEFAULT", json.dumps(conn))
        return key

    yield start
    stop.set()
    listener.close()


def http_answer(status: str, body: bytes, *extra_headers: str) -> bytes:
    """Return a whole HTTP/1.1 answer that closes the connection."""
    head = [f"HTTP/1.1 {status}", f"Content-Length: {len(body)}", *extra_headers, "Connection: close"]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body
