"""
``python -m benchmarks``: how fast one day of logs comes out of the emulator, our way and the
ways users would otherwise pick, in one run on this machine.

For each scenario (rows in the day, latency the emulator adds to every request), the emulator
runs in its own process, and each client runs alone in another (see ``benchmarks/clients.py``).
The emulator reads the whole day once before the clients run, so that each of them meets a
server that has its rows rendered already: what is measured is the client, not the order.
The table gives wall time, rows per second, the speed-up over each peer in the same scenario,
and each client's peak RSS.
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

DAY = "2026-11-02"
OURS = ("hook", "fetch_jsonl", "fetch_parquet")
PEERS = ("requests_loop", "http_operator")
FULL = ((20_000, (0, 20, 100)), (200_000, (0, 20)), (1_000_000, (0,)))
QUICK = ((2_000, (0,)),)
#: The emulator keeps rows it has rendered (about 450 bytes each) for days that have settled.
ROW_CACHE_MB = 1_000


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


class Emulator:
    """The emulator's command line, in its own process."""

    def __init__(self, rows: int, latency_ms: int):
        self.process = subprocess.Popen(
            [
                sys.executable, "-m", "airflow_provider_kaleyra_email.testing", "--port", "0",
                "--start-date", DAY, "--days", "1", "--rows-per-day", str(rows), "--latency-ms", str(latency_ms),
                "--row-cache-mb", str(ROW_CACHE_MB),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        assert self.process.stdout is not None
        self.info = json.loads(self.process.stdout.readline())
        connection = json.loads(self.process.stdout.readline().split("=", 1)[1].strip().strip("'"))
        self.key = connection["password"]

    def warm_up(self) -> None:
        """Read the whole day once, so every measured client meets a server with its rows rendered."""
        import requests

        session = requests.Session()
        session.headers["api-key"] = self.key
        url = f"{self.info['base_url']}/v1/{self.info['sid']}/email/logs"
        page = 1
        while True:
            params = {"start_date": DAY, "end_date": DAY, "page": page, "limit": 100}
            if len(session.get(url, params=params, timeout=60).json()["data"]) < 100:
                return
            page += 1

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


def run_client(client: str, emulator: Emulator, out: Path) -> dict[str, float]:
    completed = subprocess.run(
        [
            sys.executable, "-m", "benchmarks.clients", client, "--base-url", emulator.info["base_url"],
            "--sid", emulator.info["sid"], "--key", emulator.key, "--day", DAY, "--out", str(out),
        ],
        check=True,
        capture_output=True,
        text=True,
    )  # fmt: skip
    return json.loads(completed.stdout.strip().splitlines()[-1])


def run(scenarios: tuple[tuple[int, tuple[int, ...]], ...], clients: list[str], repeat: int = 1) -> list[Result]:
    results = []
    for rows, latencies in scenarios:
        for latency in latencies:
            emulator = Emulator(rows, latency)
            try:
                emulator.warm_up()
                for client in clients:
                    runs = []
                    for _ in range(repeat):
                        with tempfile.TemporaryDirectory(prefix="kaleyra-bench-") as out:
                            runs.append(run_client(client, emulator, Path(out)))
                    measured = sorted(runs, key=lambda run: run["seconds"])[len(runs) // 2]  # the median run
                    result = Result(
                        rows, latency, client, int(measured["rows"]), measured["seconds"], measured["peak_rss_mb"]
                    )
                    if result.rows != rows:
                        raise SystemExit(f"{client} returned {result.rows} rows of {rows} at {latency} ms")
                    print(f"  {rows:>9,} rows {latency:>3} ms  {client:<14} {result.seconds:8.2f} s", file=sys.stderr)
                    results.append(result)
            finally:
                emulator.stop()
    return results


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
    scenarios = QUICK if args.quick else FULL
    if args.rows:
        latencies = tuple(int(value) for value in args.latencies.split(","))
        scenarios = tuple((int(value), latencies) for value in args.rows.split(","))
    results = run(scenarios, clients, repeat=1 if args.quick else args.repeat)
    report = "\n\n".join(
        part
        for part in (
            f"Machine: {platform.machine()}, {_cpus()} CPUs, Python {platform.python_version()}; "
            f"median of {1 if args.quick else args.repeat} run(s) each; "
            f"benchmark took {time.monotonic() - started:,.0f} s.",
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
