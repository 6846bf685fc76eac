"""
The benchmark's API server: one day of logs, every page encoded before the clock starts.

``python -m benchmarks.server --day 2026-11-02 --rows 200000 --latencies 0,20`` generates the
day once from the emulator's ``SyntheticDataset`` and encodes it in pages of 100 with the
envelope the emulator sends (``{"data": [...], "error": {}, "total": N, "limit": "100",
"offset": ""}``, the same bytes), each page a whole HTTP response. It then listens on
127.0.0.1, one port per latency (0 ms always, for :func:`read_throughput`), and answers
``GET /v1/<sid>/email/logs?start_date&end_date&page&limit`` (and ``stats/<message id>``, a
message still in flight, for ``benchmarks/triggers.py``; a logs query with ``search=campaign-N``
lists ``N`` messages in flight, ``bench-0`` to ``bench-<N-1>``, whatever its dates, and with a
second term ``busy-R`` then ``R`` rows of other senders' mail (the emulator's background traffic,
each page computed when asked); and
``GET /bench/requests`` counts the requests answered) by checking the ``api-key``,
waiting the port's latency and writing the page: nothing else happens per request, so a client
meets a server that is not its bound. It prints one JSON line (``sid``, ``key``, ``base_urls``
by latency, ``pages``, ``encoded_mb``, ``encode_seconds``), one ``export`` line per latency,
and serves until terminated.

The emulator (``airflow_provider_kaleyra_email.testing``) is for tests: it computes every row
when asked, records requests and can misbehave, which makes it the bound of a fast client.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import socket
import sys
import time
from datetime import date, datetime, timedelta, timezone
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlsplit

import msgspec

from airflow_provider_kaleyra_email.testing import DEFAULT_API_KEY, DEFAULT_SID, SyntheticDataset

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

PAGE_SIZE = 100
_encode = msgspec.json.Encoder().encode


def encode_pages(day: date, rows: int) -> list[bytes]:
    """
    Return one day's pages of ``PAGE_SIZE`` rows as whole HTTP responses, and an empty page last.

    The rows are the emulator's, as its clock reads a week after ``day`` (every status settled),
    so the benchmark serves the same day whenever it runs.
    """
    later = datetime.combine(day + timedelta(days=7), datetime.min.time(), timezone.utc)
    listing = SyntheticDataset(start_date=day, days=1, rows_per_day=rows, clock=lambda: later).listing(day, day)
    return _listing_pages(listing)


def _listing_pages(rows: Sequence[object]) -> list[bytes]:
    """Return ``rows`` in pages of ``PAGE_SIZE``, whole HTTP responses (the emulator's envelope), an empty one last."""
    envelope = {"error": {}, "total": len(rows), "limit": str(PAGE_SIZE), "offset": ""}
    pages = [rows[first : first + PAGE_SIZE] for first in range(0, len(rows), PAGE_SIZE)]
    return [_response(200, {"data": page, **envelope}) for page in [*pages, []]]


def _response(status: int, payload: object, *, close: bool = False) -> bytes:
    body = _encode(payload)
    reason = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 405: "Method Not Allowed"}
    head = f"HTTP/1.1 {status} {reason[status]}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    return head.encode() + (b"Connection: close\r\n" if close else b"") + b"\r\n" + body


def campaign_page(messages: int, busy: int, page: int) -> bytes:
    """Return page ``page`` of a listing of ``messages`` messages in flight (``bench-<n>``), then ``busy`` others."""
    first, total = (page - 1) * PAGE_SIZE, messages + busy
    rows = [
        _in_flight_row(n) if n < messages else _background(busy).background_row(BUSY_DAY, n - messages)
        for n in range(first, min(first + PAGE_SIZE, total))
    ]
    return _response(200, {"data": rows, "error": {}, "total": total, "limit": str(PAGE_SIZE), "offset": ""})


#: The day a busy account's other mail is dated (any past day: it is settled).
BUSY_DAY = date(2026, 11, 2)


def _in_flight_row(n: int) -> dict[str, object]:
    address, sender = f"someone{n}@example.com", "news@shop.example.com"
    return {"message_id": f"bench-{n}", "status": "ACCEPTED", "description": "Message is accepted.",
            "to_mail": address, "from_mail": sender, "template_name": "campaign"}  # fmt: skip


@functools.lru_cache(maxsize=8)
def _background(rows: int) -> SyntheticDataset:
    return SyntheticDataset(start_date=BUSY_DAY, days=1, rows_per_day=0, background_rows_per_day=rows)


def in_flight(message_id: str) -> bytes:
    """Answer ``stats/<message id>`` for a message still in flight: what a waiting trigger polls for."""
    recipient = {"to": "someone@example.com", "status": "ACCEPTED", "error_code": "", "error_message": ""}
    return _response(200, {"data": [{"message_id": message_id, "recipients": [recipient]}], "error": {}})


def _error(status: int, message: str) -> bytes:
    return _response(status, {"data": [], "error": {"code": f"E{status}", "message": message}})


class PageServer:
    """Serve pre-encoded pages of one day on loopback, one port per latency."""

    def __init__(
        self,
        pages: list[bytes],
        *,
        day: date,
        sid: str = DEFAULT_SID,
        key: str = DEFAULT_API_KEY,
    ):
        self.pages = pages
        self.answered = 0
        self.day = day.isoformat()
        self.sid = sid
        self.path = f"/v1/{sid}/email/logs".encode()
        self.stats_path = f"/v1/{sid}/email/stats/".encode()
        self.key = key.encode()
        self.base_urls: dict[int, str] = {}

    async def start(self, latencies: Iterable[int]) -> None:
        for latency in sorted({0, *latencies}):
            server = await asyncio.start_server(functools.partial(self._serve, latency=latency / 1000), "127.0.0.1", 0)
            port = server.sockets[0].getsockname()[1]
            self.base_urls[latency] = f"http://127.0.0.1:{port}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, latency: float) -> None:
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                    return
                request_line, headers = _parse(head)
                answer, close = self._answer(request_line, headers)
                if headers.get(b"content-length", b"0") != b"0":  # read a body, so the next request starts right
                    await reader.readexactly(int(headers[b"content-length"]))
                if latency:
                    await asyncio.sleep(latency)
                writer.write(answer)
                await writer.drain()
                if close:
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            with contextlib.suppress(ConnectionError):
                writer.close()

    def _answer(self, request_line: bytes, headers: dict[bytes, bytes]) -> tuple[bytes, bool]:
        """Return the response to a request, and whether to close the connection after it."""
        method, target, version = [*request_line.split(b" "), b"", b""][:3]
        close = version != b"HTTP/1.1" or headers.get(b"connection", b"").lower() == b"close"
        path, _, query_text = target.partition(b"?")
        if path == b"/bench/requests":
            return _response(200, {"requests": self.answered}), close
        self.answered += 1
        if method != b"GET":
            return _error(405, "the benchmark server answers GET only"), close
        if path.endswith(b"/email/logs") and (path != self.path or headers.get(b"api-key") != self.key):
            return _error(401, "Invalid API key or SID"), close
        if path.startswith(self.stats_path) and headers.get(b"api-key") == self.key:
            return in_flight(path[len(self.stats_path) :].decode()), close
        if path != self.path:
            return _error(404, f"No route for {path.decode(errors='replace')}"), close
        query = parse_qs(query_text.decode(), keep_blank_values=True)
        terms = dict(term.partition("-")[::2] for term in query.get("search", []))
        if terms.get("campaign", "").isdigit():
            page = query.get("page", ["1"])[-1]
            busy = int(terms.get("busy", "0"))
            return campaign_page(int(terms["campaign"]), busy, int(page) if page.isdigit() else 1), close
        if query.get("start_date") != [self.day] or query.get("end_date") != [self.day]:
            return _error(400, f"the benchmark server serves {self.day} only"), close
        if query.get("limit") != [str(PAGE_SIZE)]:
            return _error(400, f"the benchmark server serves limit={PAGE_SIZE} only"), close
        page = query.get("page", ["1"])[-1]
        if not page.isdigit() or int(page) < 1:
            return _error(400, "The page number cannot have a zero or a negative value"), close
        return self.pages[min(int(page), len(self.pages)) - 1], close


def _parse(head: bytes) -> tuple[bytes, dict[bytes, bytes]]:
    """Split a request's head into its request line and its headers (names in lower case)."""
    request_line, *lines = head[:-4].split(b"\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    return request_line, headers


def read_throughput(
    base_url: str, sid: str, key: str, day: str, rows: int, *, seconds: float = 0.5, in_flight: int = 8
) -> float:
    """
    Return the rows per second the server at ``base_url`` serves to a reader that does nothing.

    One keep-alive connection, ``in_flight`` requests sent at a time, each response read by its
    ``Content-Length`` and its rows counted without decoding; the day over and over until
    ``seconds`` have passed.
    """
    address = urlsplit(base_url)
    host, port = address.hostname or "127.0.0.1", address.port or 80
    pages = max(1, -(-rows // PAGE_SIZE))
    requests = [
        f"GET /v1/{sid}/email/logs?start_date={day}&end_date={day}&page={page}&limit={PAGE_SIZE} HTTP/1.1\r\n"
        f"Host: {host}\r\napi-key: {key}\r\n\r\n".encode()
        for page in range(1, pages + 1)
    ]
    served = sent = 0
    with socket.create_connection((host, port)) as connection, connection.makefile("rb") as stream:
        connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        started = time.perf_counter()
        while sent < pages or time.perf_counter() - started < seconds:
            batch = [requests[(sent + n) % pages] for n in range(in_flight)]
            connection.sendall(b"".join(batch))
            for _ in batch:
                length = 0
                while (line := stream.readline()) not in (b"\r\n", b""):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                served += stream.read(length).count(b'"message_id"')
            sent += in_flight
        elapsed = time.perf_counter() - started
    return served / elapsed


async def _main(args: argparse.Namespace) -> None:
    started = time.perf_counter()
    pages = encode_pages(args.day, args.rows)
    encode_seconds = time.perf_counter() - started
    server = PageServer(pages, day=args.day, sid=args.sid, key=args.key)
    await server.start(args.latencies)
    info = {
        "sid": server.sid,
        "key": args.key,
        "day": server.day,
        "rows": args.rows,
        "pages": len(pages),
        "encoded_mb": round(sum(map(len, pages)) / 1e6, 1),
        "encode_seconds": round(encode_seconds, 2),
        "base_urls": {str(latency): url for latency, url in server.base_urls.items()},
    }
    print(json.dumps(info), flush=True)
    for latency, url in server.base_urls.items():
        connection = {"conn_type": "kaleyra_email", "login": server.sid, "password": args.key, "host": url}
        print(f"export AIRFLOW_CONN_KALEYRA_EMAIL_DEFAULT='{json.dumps(connection)}'  # {latency} ms", flush=True)
    await asyncio.Event().wait()  # until terminated


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.server", description="Serve one day of logs, pre-encoded."
    )
    parser.add_argument("--day", type=date.fromisoformat, default=date(2026, 11, 2))
    parser.add_argument("--rows", type=int, required=True, help="rows in the day")
    parser.add_argument("--latencies", default="0", help="comma-separated latencies (ms), one port each")
    parser.add_argument("--sid", default=DEFAULT_SID)
    parser.add_argument("--key", default=DEFAULT_API_KEY)
    args = parser.parse_args(argv)
    args.latencies = [int(value) for value in args.latencies.split(",") if value]
    try:
        asyncio.run(_main(args))
    except KeyboardInterrupt:
        print("stopping", file=sys.stderr)


if __name__ == "__main__":
    main()
