"""
An authenticating forward proxy on loopback, as corporate networks run them: ``CONNECT`` tunnels for
https, absolute-form requests for plain http, HTTP 407 without the right Basic credentials.
"""

from __future__ import annotations

import base64
import contextlib
import selectors
import socket
import threading
from urllib.parse import urlsplit


class AuthProxy:
    """
    A proxy on ``127.0.0.1`` that wants ``user``/``password`` (Basic); ``requests`` counts what it was asked.

    Use it as a context manager; it stops its own threads and listening socket.
    """

    def __init__(self, user: str = "corp user", password: str = "p@ss:w/rd%") -> None:  # noqa: S107
        self.user, self.password = user, password
        self.requests: list[str] = []  # each request line, e.g. "CONNECT 127.0.0.1:4443 HTTP/1.1"
        self.refused = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    @property
    def port(self) -> int:
        return int(self._listener.getsockname()[1])

    def url(self, user: str | None = None, password: str | None = None) -> str:
        """Return the proxy's URL with credentials percent-encoded, as users write them in ``HTTPS_PROXY``."""
        from urllib.parse import quote

        user, password = user or self.user, password or self.password
        return f"http://{quote(user, safe='')}:{quote(password, safe='')}@127.0.0.1:{self.port}"

    def __enter__(self) -> AuthProxy:
        self._listener.settimeout(0.1)
        self._spawn(self._accept)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._listener.close()
        for thread in self._threads:
            thread.join(timeout=5)

    def _spawn(self, target, *args) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self._spawn(self._serve, client)

    def _serve(self, client: socket.socket) -> None:
        with client:
            client.settimeout(10)
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = client.recv(65536)
                if not chunk:
                    return
                head += chunk
            head, _, rest = head.partition(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            self.requests.append(lines[0])
            method, target, version = lines[0].split(" ", 2)
            headers = {name.strip().lower(): value.strip() for name, _, value in (h.partition(":") for h in lines[1:])}
            expected = base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
            if headers.get("proxy-authorization") != f"Basic {expected}":
                self.refused += 1
                client.sendall(
                    b'HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm="corp"\r\n'
                    b"Content-Length: 0\r\nConnection: close\r\n\r\n"
                )
                return
            if method == "CONNECT":
                host, _, port = target.rpartition(":")
                with socket.create_connection((host.strip("[]"), int(port)), timeout=10) as upstream:
                    client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                    self._pipe(client, upstream, rest)
                return
            url = urlsplit(target)  # absolute form: forward it as origin form, without our header
            kept = [h for h in lines[1:] if not h.lower().startswith(("proxy-authorization:", "connection:"))]
            request = "\r\n".join([f"{method} {url.path}?{url.query} {version}", *kept, "Connection: close"])
            with socket.create_connection((url.hostname, url.port or 80), timeout=10) as upstream:
                upstream.sendall(request.encode("latin-1") + b"\r\n\r\n" + rest)
                self._pipe(client, upstream, b"")

    def _pipe(self, client: socket.socket, upstream: socket.socket, pending: bytes) -> None:
        """Copy bytes both ways until either side closes or the proxy stops."""
        if pending:
            upstream.sendall(pending)
        with selectors.DefaultSelector() as selector:
            selector.register(client, selectors.EVENT_READ, upstream)
            selector.register(upstream, selectors.EVENT_READ, client)
            while not self._stop.is_set():
                for key, _ in selector.select(timeout=0.1):
                    with contextlib.suppress(OSError):
                        data = key.fileobj.recv(65536)  # type: ignore[union-attr]
                        if data:
                            key.data.sendall(data)
                            continue
                    return
