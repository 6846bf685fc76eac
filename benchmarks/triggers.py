"""
``python -m benchmarks.triggers``: many delivery waits in one event loop, as a triggerer runs them.

For each number of waits, a fresh process starts that many
``KaleyraEmailMessageDeliveredTrigger`` runs at once in one asyncio loop, each waiting for a
message that stays in flight, polling every ``--poll`` seconds until its ``end_time``
``--duration`` seconds later, against ``benchmarks/server.py`` with ``--latency-ms`` per request.
It reports:

- polls made of those asked: a trigger is asked for one poll at the start, one every ``--poll``
  seconds, and one at the deadline; a loop that stalls makes fewer;
- the event loop's stall: how late a 50 ms ``asyncio.sleep`` wakes up (p99 and max), which is
  what every other trigger in the triggerer waits through;
- memory: peak RSS growth of the process over its RSS before the triggers were made.

With ``--batched``, each size is one trigger waiting on that many message ids at once (a
campaign: the sensor given a list), which the server lists in flight for its logs query; the
report adds the requests each poll made (counted by the server).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import subprocess
import sys
import time
import urllib.request

import psutil

TICK = 0.05


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else 0.0


async def _measure(waits: int, poll: float, duration: float) -> dict[str, float]:
    from airflow_provider_kaleyra_email.hooks.kaleyra_email import KaleyraEmailAsyncHook
    from airflow_provider_kaleyra_email.triggers.kaleyra_email import KaleyraEmailMessageDeliveredTrigger

    polls = 0
    original = KaleyraEmailAsyncHook.get_message_stats

    async def counted(self: KaleyraEmailAsyncHook, message_id: str) -> dict[str, object]:
        nonlocal polls
        answer = await original(self, message_id)
        polls += 1
        return answer

    KaleyraEmailAsyncHook.get_message_stats = counted  # type: ignore[method-assign]
    process = psutil.Process()
    rss_before = process.memory_info().rss
    cpu_before = sum(process.cpu_times()[:2])
    peak = rss_before
    stalls: list[float] = []
    started = time.time()
    triggers = [
        KaleyraEmailMessageDeliveredTrigger(
            message_id=f"bench-{n}", poke_interval=poll, started_at=started, end_time=started + duration
        )
        for n in range(waits)
    ]

    async def run(trigger: KaleyraEmailMessageDeliveredTrigger) -> str:
        async for event in trigger.run():
            return str(event.payload["status"])
        return "none"

    tasks = [asyncio.ensure_future(run(trigger)) for trigger in triggers]
    while not all(task.done() for task in tasks):
        before = time.perf_counter()
        await asyncio.sleep(TICK)
        stalls.append(time.perf_counter() - before - TICK)
        peak = max(peak, process.memory_info().rss)
    outcomes = [task.result() for task in tasks]
    cpu = sum(process.cpu_times()[:2]) - cpu_before
    asked = waits * (math.ceil(duration / poll) + 1)  # the first poll, one per interval, one at the deadline
    return {
        "waits": waits,
        "polls_made": polls,
        "polls_asked": asked,
        "made_share": polls / asked,
        "timeouts": outcomes.count("timeout"),
        "stall_p99_s": _percentile(stalls, 0.99),
        "stall_max_s": max(stalls, default=0.0),
        "rss_growth_mb": (peak - rss_before) / 1e6,
        "cpu_ms_per_poll": cpu * 1000 / max(polls, 1),
        "seconds": time.time() - started,
    }


async def _measure_batched(messages: int, poll: float, duration: float) -> dict[str, float]:
    from airflow_provider_kaleyra_email.campaign import CampaignWait
    from airflow_provider_kaleyra_email.triggers.kaleyra_email import KaleyraEmailMessageDeliveredTrigger

    polls = 0
    original = CampaignWait.outcome

    def counted(self: CampaignWait) -> object:
        nonlocal polls
        polls += 1  # once per poll, whichever way it polled
        return original(self)

    CampaignWait.outcome = counted  # type: ignore[method-assign,assignment]
    requests_before = _server_requests()
    process = psutil.Process()
    rss_before = process.memory_info().rss
    peak, stalls, started = rss_before, [], time.time()
    trigger = KaleyraEmailMessageDeliveredTrigger(
        message_id=[f"bench-{n}" for n in range(messages)],
        search=[f"campaign-{messages}"],
        poke_interval=poll,
        started_at=started,
        end_time=started + duration,
    )

    async def run() -> str:
        async for event in trigger.run():
            return str(event.payload["status"])
        return "none"

    task = asyncio.ensure_future(run())
    while not task.done():
        before = time.perf_counter()
        await asyncio.sleep(TICK)
        stalls.append(time.perf_counter() - before - TICK)
        peak = max(peak, process.memory_info().rss)
    requests = _server_requests() - requests_before
    return {
        "waits": messages,
        "polls_made": polls,
        "polls_asked": math.ceil(duration / poll) + 1,
        "made_share": polls / (math.ceil(duration / poll) + 1),
        "requests_per_poll": requests / max(polls, 1),
        "timeouts": int(task.result() == "timeout"),
        "stall_p99_s": _percentile(stalls, 0.99),
        "stall_max_s": max(stalls, default=0.0),
        "rss_growth_mb": (peak - rss_before) / 1e6,
        "seconds": time.time() - started,
    }


def _server_requests() -> int:
    """Return how many requests the benchmark server answered (its ``/bench/requests``)."""
    host = json.loads(os.environ["AIRFLOW_CONN_KALEYRA_EMAIL_DEFAULT"])["host"]
    with urllib.request.urlopen(f"{host}/bench/requests", timeout=10) as response:
        return int(json.load(response)["requests"])


def run_one(
    waits: int, base_url: str, sid: str, key: str, poll: float, duration: float, *, batched: bool = False
) -> dict[str, float]:
    """Measure ``waits`` triggers in a fresh process, so each size starts from the same memory."""
    connection = {"conn_type": "kaleyra_email", "login": sid, "password": key, "host": base_url}
    env = {**os.environ, "AIRFLOW_CONN_KALEYRA_EMAIL_DEFAULT": json.dumps(connection)}
    command = [sys.executable, "-m", "benchmarks.triggers", "--one", str(waits), "--poll", str(poll)]
    command += ["--duration", str(duration), *(["--batched"] if batched else [])]
    completed = subprocess.run(command, env=env, check=True, capture_output=True, text=True, timeout=duration * 20)
    result: dict[str, float] = json.loads(completed.stdout.strip().splitlines()[-1])
    return result


def table(results: list[dict[str, float]], *, latency_ms: int, poll: float, duration: float, batched: bool) -> str:
    what = "message ids in one trigger" if batched else "waiting triggers"
    lines = [
        f"{latency_ms} ms per request, a poll every {poll:g} s for {duration:g} s, every message in flight:",
        "",
        f"| {what} | polls made of those asked |{' requests per poll |' if batched else ''}"
        " event-loop stall p99 | stall max | memory growth |",
        "|---:|---:|---:|---:|---:|" + ("---:|" if batched else ""),
    ]
    for r in results:
        per_poll = f" {r['requests_per_poll']:.0f} |" if batched else ""
        lines.append(
            f"| {r['waits']:,} | {r['made_share']:.0%} ({r['polls_made']:,} of {r['polls_asked']:,}) |{per_poll}"
            f" {r['stall_p99_s']:.2f} s | {r['stall_max_s']:.2f} s | {r['rss_growth_mb']:,.0f} MB |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.triggers", description=__doc__.split("\n\n")[0])
    parser.add_argument("--waits", default="100,1000,5000", help="comma-separated numbers of waiting triggers")
    parser.add_argument("--poll", type=float, default=2.0, help="seconds between polls")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds each trigger waits")
    parser.add_argument("--latency-ms", type=int, default=20)
    parser.add_argument("--batched", action="store_true", help="one trigger waiting on that many message ids")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # the child process: measure this many
    args = parser.parse_args(argv)
    if args.one is not None:
        measure = _measure_batched if args.batched else _measure
        print(json.dumps(asyncio.run(measure(args.one, args.poll, args.duration))))
        return
    sizes = [int(value) for value in args.waits.split(",")]
    server_args = ["--rows", "100", "--latencies", str(args.latency_ms)]
    server = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.server", *server_args],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        info = json.loads(server.stdout.readline())
        base_url = info["base_urls"][str(args.latency_ms)]
        results = []
        for waits in sizes:
            one = run_one(waits, base_url, info["sid"], info["key"], args.poll, args.duration, batched=args.batched)
            results.append(one)
            print(json.dumps(one), file=sys.stderr)
        print(table(results, latency_ms=args.latency_ms, poll=args.poll, duration=args.duration, batched=args.batched))
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
