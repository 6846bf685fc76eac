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
campaign: the sensor given a list), which the server lists in flight for its logs query, on a
quiet account and, with ``--busy 300000``, on one whose send window also holds that many rows of
other mail; the report adds the requests each poll made (counted by the server, the most in one
poll and the mean). With ``--sync`` as well, the same wait is polled as a sensor on a worker pokes
(``poke``, ``reschedule``): through the sync hook, three polls back to back, peak RSS growth.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import resource
import subprocess
import sys
import time
import urllib.request
from typing import Any

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


async def _measure_batched(messages: int, poll: float, duration: float, busy: int = 0) -> dict[str, Any]:
    from airflow_provider_kaleyra_email.campaign import CampaignWait
    from airflow_provider_kaleyra_email.triggers.kaleyra_email import KaleyraEmailMessageDeliveredTrigger

    per_poll: list[int] = []
    original = CampaignWait.apoll

    async def counted(self: CampaignWait, hook: object, **kwargs: Any) -> object:
        before = await asyncio.to_thread(_server_requests)
        outcome = await original(self, hook, **kwargs)  # type: ignore[arg-type]
        per_poll.append(await asyncio.to_thread(_server_requests) - before)
        return outcome

    CampaignWait.apoll = counted  # type: ignore[method-assign,assignment]
    process = psutil.Process()
    rss_before = process.memory_info().rss
    peak, stalls, started = rss_before, [], time.time()
    trigger = KaleyraEmailMessageDeliveredTrigger(
        message_id=[f"bench-{n}" for n in range(messages)],
        search=[f"campaign-{messages}", *([f"busy-{busy}"] if busy else [])],
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
    asked = math.ceil(duration / poll) + 1
    return {
        "waits": messages,
        "busy": busy,
        "polls_made": len(per_poll),
        "polls_asked": asked,
        "made_share": len(per_poll) / asked,
        "requests_per_poll": sum(per_poll) / max(len(per_poll), 1),
        "requests_max_poll": max(per_poll, default=0),
        "timeouts": int(task.result() == "timeout"),
        "event": task.result(),
        "stall_p99_s": _percentile(stalls, 0.99),
        "stall_max_s": max(stalls, default=0.0),
        "rss_growth_mb": (peak - rss_before) / 1e6,
        "seconds": time.time() - started,
    }


def _measure_sync(messages: int, busy: int, polls: int = 3) -> dict[str, Any]:
    """Poll one campaign wait ``polls`` times through the sync hook, as the sensor's pokes do."""
    from airflow_provider_kaleyra_email.campaign import CampaignWait
    from airflow_provider_kaleyra_email.delivery import DeliveryRule
    from airflow_provider_kaleyra_email.hooks.kaleyra_email import KaleyraEmailHook

    search = [f"campaign-{messages}", *([f"busy-{busy}"] if busy else [])]
    wait = CampaignWait([f"bench-{n}" for n in range(messages)], DeliveryRule(), search=search)
    hook, per_poll = KaleyraEmailHook(max_retries=0), []
    rss_before = psutil.Process().memory_info().rss
    for _ in range(polls):
        before = _server_requests()
        wait.poll(hook)
        per_poll.append(_server_requests() - before)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    return {
        "waits": messages,
        "busy": busy,
        "polls_made": polls,
        "polls_asked": polls,
        "made_share": 1.0,
        "requests_per_poll": sum(per_poll) / polls,
        "requests_max_poll": max(per_poll),
        "stall_p99_s": 0.0,
        "stall_max_s": 0.0,
        "rss_growth_mb": max(0, peak - rss_before) / 1e6,
    }


def _server_requests() -> int:
    """Return how many requests the benchmark server answered (its ``/bench/requests``)."""
    host = json.loads(os.environ["AIRFLOW_CONN_KALEYRA_EMAIL_DEFAULT"])["host"]
    with urllib.request.urlopen(f"{host}/bench/requests", timeout=10) as response:
        return int(json.load(response)["requests"])


def run_one(
    waits: int,
    base_url: str,
    sid: str,
    key: str,
    poll: float,
    duration: float,
    *,
    batched: bool = False,
    busy: int = 0,
    sync: bool = False,
) -> dict[str, float]:
    """Measure ``waits`` triggers in a fresh process, so each size starts from the same memory."""
    connection = {"conn_type": "kaleyra_email", "login": sid, "password": key, "host": base_url}
    env = {**os.environ, "AIRFLOW_CONN_KALEYRA_EMAIL_DEFAULT": json.dumps(connection)}
    command = [sys.executable, "-m", "benchmarks.triggers", "--one", str(waits), "--poll", str(poll)]
    command += ["--duration", str(duration), *(["--batched", "--busy", str(busy)] if batched else [])]
    command += ["--sync"] if sync else []
    completed = subprocess.run(command, env=env, check=True, capture_output=True, text=True, timeout=duration * 20)
    result: dict[str, float] = json.loads(completed.stdout.strip().splitlines()[-1])
    return result


def table(
    results: list[dict[str, float]], *, latency_ms: int, poll: float, duration: float, batched: bool, sync: bool = False
) -> str:
    what = "account | message ids in one wait" if batched else "waiting triggers"
    how = "three polls back to back through the sync hook" if sync else f"a poll every {poll:g} s for {duration:g} s"
    lines = [
        f"{latency_ms} ms per request, {how}, every message in flight:",
        "",
        f"| {what} | polls made of those asked |{' requests per poll (most, mean) |' if batched else ''}"
        " event-loop stall p99 | stall max | memory growth |",
        "|---:|---:|---:|---:|---:|" + ("---:|---:|" if batched else ""),
    ]
    for r in results:
        account = (f"{r['busy']:,} other rows |" if r["busy"] else "quiet |") if batched else ""
        per_poll = f" {r['requests_max_poll']:,}, {r['requests_per_poll']:,.0f} |" if batched else ""
        stalls = " n/a | n/a |" if sync else f" {r['stall_p99_s']:.2f} s | {r['stall_max_s']:.2f} s |"
        lines.append(
            f"| {account} {r['waits']:,} | {r['made_share']:.0%} ({r['polls_made']:,} of {r['polls_asked']:,}) |"
            f"{per_poll}{stalls} {r['rss_growth_mb']:,.0f} MB |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.triggers", description=__doc__.split("\n\n")[0])
    parser.add_argument("--waits", default="100,1000,5000", help="comma-separated numbers of waiting triggers")
    parser.add_argument("--poll", type=float, default=2.0, help="seconds between polls")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds each trigger waits")
    parser.add_argument("--latency-ms", type=int, default=20)
    parser.add_argument("--batched", action="store_true", help="one trigger waiting on that many message ids")
    parser.add_argument(
        "--busy", default="0", help="with --batched, comma-separated rows of other mail in the send window (0: quiet)"
    )
    parser.add_argument("--sync", action="store_true", help="with --batched, poll through the sync hook, as a sensor")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # the child process: measure this many
    args = parser.parse_args(argv)
    if args.one is not None:
        if args.batched and args.sync:
            print(json.dumps(_measure_sync(args.one, int(args.busy))))
        elif args.batched:
            print(json.dumps(asyncio.run(_measure_batched(args.one, args.poll, args.duration, int(args.busy)))))
        else:
            print(json.dumps(asyncio.run(_measure(args.one, args.poll, args.duration))))
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
        for busy in [int(value) for value in args.busy.split(",")] if args.batched else [0]:
            for waits in sizes:
                options = {"batched": args.batched, "busy": busy, "sync": args.sync}
                one = run_one(waits, base_url, info["sid"], info["key"], args.poll, args.duration, **options)
                results.append(one)
                print(json.dumps(one), file=sys.stderr)
        options = {"poll": args.poll, "duration": args.duration, "batched": args.batched, "sync": args.sync}
        print(table(results, latency_ms=args.latency_ms, **options))
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
