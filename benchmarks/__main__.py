"""
``python -m benchmarks``: how fast one day of logs comes out of the API, our way and the ways
users would otherwise pick, in one run on this machine.

For each day size, the benchmark's server (``benchmarks/server.py``) encodes the day's pages
before the clock starts and runs in its own process, one port per latency; each client runs
alone in another (see ``benchmarks/clients.py``). Before the clients, a raw-socket reader
measures how many rows per second the server serves at 0 ms, and the report compares that with
the fastest client: what is measured is the client, not the server. The table gives wall time,
rows per second, the speed-up over each peer in the same scenario, and each client's peak RSS.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.clients import CLIENTS
from benchmarks.server import read_throughput

DAY = "2026-11-02"
OURS = ("hook", "fetch_jsonl", "fetch_parquet")
PEERS = ("requests_loop", "http_operator")
FULL = ((20_000, (0, 20, 100)), (200_000, (0, 20)), (1_000_000, (0,)))
QUICK = ((2_000, (0,)),)


@dataclass
class Result:
    rows_in_day: int
    latency_ms: int
    client: str
    rows: int
    seconds: float
    peak_rss_mb: float

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds else 0.0


@dataclass
class ServerCheck:
    """What the server could serve, measured before the clients ran."""

    rows_in_day: int
    rows_per_second: float
    pages: int
    encoded_mb: float
    encode_seconds: float


class Server:
    """``benchmarks/server.py`` in its own process: one day, pre-encoded, a port per latency."""

    def __init__(self, rows: int, latencies: tuple[int, ...]):
        self.process = subprocess.Popen(
            [
                sys.executable, "-m", "benchmarks.server", "--day", DAY, "--rows", str(rows),
                "--latencies", ",".join(map(str, latencies)),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        assert self.process.stdout is not None
        self.info = json.loads(self.process.stdout.readline())
        self.rows = rows
        self.sid, self.key = self.info["sid"], self.info["key"]

    def base_url(self, latency: int) -> str:
        return str(self.info["base_urls"][str(latency)])

    def check(self, seconds: float) -> ServerCheck:
        """Measure the rows per second the server serves at 0 ms to a reader that does nothing (median of 3)."""
        runs = sorted(
            read_throughput(self.base_url(0), self.sid, self.key, DAY, self.rows, seconds=seconds) for _ in range(3)
        )
        info = self.info
        return ServerCheck(self.rows, runs[1], info["pages"], info["encoded_mb"], info["encode_seconds"])

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


def run_client(client: str, base_url: str, server: Server, out: Path) -> dict[str, float]:
    completed = subprocess.run(
        [
            sys.executable, "-m", "benchmarks.clients", client, "--base-url", base_url,
            "--sid", server.sid, "--key", server.key, "--day", DAY, "--out", str(out),
        ],
        check=True,
        capture_output=True,
        text=True,
    )  # fmt: skip
    measured: dict[str, float] = json.loads(completed.stdout.strip().splitlines()[-1])
    return measured


def run(
    scenarios: tuple[tuple[int, tuple[int, ...]], ...], clients: list[str], repeat: int = 1, check_seconds: float = 0.5
) -> tuple[list[Result], list[ServerCheck]]:
    results, checks = [], []
    for rows, latencies in scenarios:
        server = Server(rows, latencies)
        try:
            checks.append(server.check(check_seconds))
            print(f"  {rows:>9,} rows: the server serves {checks[-1].rows_per_second:,.0f} rows/s", file=sys.stderr)
            for latency in latencies:
                for client in clients:
                    runs = []
                    for _ in range(repeat):
                        with tempfile.TemporaryDirectory(prefix="kaleyra-bench-") as out:
                            runs.append(run_client(client, server.base_url(latency), server, Path(out)))
                    measured = sorted(runs, key=lambda run: run["seconds"])[len(runs) // 2]  # the median run
                    result = Result(
                        rows, latency, client, int(measured["rows"]), measured["seconds"], measured["peak_rss_mb"]
                    )
                    if result.rows != rows:
                        raise SystemExit(f"{client} returned {result.rows} rows of {rows} at {latency} ms")
                    print(f"  {rows:>9,} rows {latency:>3} ms  {client:<14} {result.seconds:8.2f} s", file=sys.stderr)
                    results.append(result)
        finally:
            server.stop()
    return results, checks


def server_report(checks: list[ServerCheck], results: list[Result]) -> str:
    """Say, per day size, how much faster the server serves than the fastest client reads."""
    lines = []
    for check in checks:
        same_day = [r for r in results if r.rows_in_day == check.rows_in_day]
        fastest = max((r for r in same_day if r.latency_ms == 0), key=lambda r: r.rows_per_second, default=None) or max(
            same_day, key=lambda r: r.rows_per_second, default=None
        )
        line = (
            f"- {check.rows_in_day:,} rows ({check.pages:,} pages, {check.encoded_mb:,.1f} MB, encoded in "
            f"{check.encode_seconds:,.1f} s before the clock starts): the server serves "
            f"{check.rows_per_second:,.0f} rows/s at 0 ms to a raw-socket reader"
        )
        if fastest is not None:
            ratio = check.rows_per_second / fastest.rows_per_second
            verdict = "so the server is not the bound" if ratio >= 2 else "SO THE SERVER MAY BE THE BOUND"
            line += (
                f", {ratio:,.1f}x the fastest client ({fastest.client} at {fastest.latency_ms} ms, "
                f"{fastest.rows_per_second:,.0f} rows/s): {verdict}"
            )
        lines.append(line + ".")
    return "\n".join(lines)


def table(results: list[Result]) -> str:
    by_key = {(r.rows_in_day, r.latency_ms, r.client): r for r in results}
    lines = [
        "| rows | latency | client | seconds | rows/s | vs requests loop | vs HttpOperator | peak RSS (MB) |",
        "|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        ratios = []
        for peer in PEERS:
            other = by_key.get((r.rows_in_day, r.latency_ms, peer))
            ratios.append(f"{other.seconds / r.seconds:.2f}" if other and r.client not in PEERS else "")
        lines.append(
            f"| {r.rows_in_day:,} | {r.latency_ms} ms | {r.client} | {r.seconds:.2f} | {r.rows_per_second:,.0f} "
            f"| {ratios[0]} | {ratios[1]} | {r.peak_rss_mb:,.0f} |"
        )
    return "\n".join(lines)


def rss_growth(results: list[Result]) -> str:
    sizes = sorted({r.rows_in_day for r in results})
    if len(sizes) < 2:
        return ""
    low, high = sizes[0], sizes[-1]
    lines = []
    for client in OURS:
        small = [r for r in results if r.client == client and r.rows_in_day == low and r.latency_ms == 0]
        large = [r for r in results if r.client == client and r.rows_in_day == high and r.latency_ms == 0]
        if small and large:
            growth = large[0].peak_rss_mb - small[0].peak_rss_mb
            lines.append(f"- {client}: peak RSS {small[0].peak_rss_mb:,.0f} MB at {low:,} rows, "
                         f"{large[0].peak_rss_mb:,.0f} MB at {high:,} rows (+{growth:,.0f} MB)")  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="one small scenario, as the test suite runs it")
    parser.add_argument("--clients", default=",".join(CLIENTS), help="comma-separated subset of " + ", ".join(CLIENTS))
    parser.add_argument("--rows", help="comma-separated day sizes, instead of the default matrix")
    parser.add_argument("--latencies", default="0,20,100", help="with --rows: comma-separated latencies (ms)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per client and scenario; the median is reported")
    parser.add_argument("--output", type=Path, help="also write the report (Markdown) here")
    args = parser.parse_args(argv)
    clients = [c for c in args.clients.split(",") if c]
    unknown = sorted(set(clients) - set(CLIENTS))
    if unknown:
        parser.error(f"unknown clients {unknown}")
    started = time.monotonic()
    scenarios: tuple[tuple[int, tuple[int, ...]], ...] = QUICK if args.quick else FULL
    if args.rows:
        latencies = tuple(int(value) for value in args.latencies.split(","))
        scenarios = tuple((int(value), latencies) for value in args.rows.split(","))
    results, checks = run(
        scenarios, clients, repeat=1 if args.quick else args.repeat, check_seconds=0.1 if args.quick else 0.5
    )
    report = "\n\n".join(
        part
        for part in (
            f"Machine: {platform.machine()}, {_cpus()} CPUs, Python {platform.python_version()}; "
            f"median of {1 if args.quick else args.repeat} run(s) each; "
            f"benchmark took {time.monotonic() - started:,.0f} s.",
            "Server (`benchmarks/server.py`, every page encoded before the clock starts), as a raw-socket reader "
            "(one keep-alive connection, 8 requests in flight) measured it before the clients:\n"
            + server_report(checks, results),
            table(results),
            rss_growth(results),
        )
        if part
    )
    print(report)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(report + "\n")


def _cpus() -> int:
    import os

    return os.cpu_count() or 0


if __name__ == "__main__":
    main()
