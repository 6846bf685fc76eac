"""
Serve the emulator from a shell until interrupted.

``python -m airflow_provider_kaleyra_email.testing --port 8080 --rows-per-day 5000 --latency-ms 20``
prints the base URL and an ``AIRFLOW_CONN_KALEYRA_EMAIL_DEFAULT`` line to export.
``--delivery-seconds 60`` keeps sent mail in flight for a minute, long enough to watch a sensor
defer and its trigger find the delivery (or a bounce): see ``docs/emulator.md`` for the markers
a recipient address can carry.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import date

from airflow_provider_kaleyra_email.testing._dataset import SyntheticDataset, _send_fate
from airflow_provider_kaleyra_email.testing._server import (
    DEFAULT_API_KEY,
    DEFAULT_SID,
    Faults,
    KaleyraEmailEmulator,
)


def _share(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a share between 0 and 1")
    return value


def _seconds(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of seconds")
    return value


#: Seconds an ordinary sent message stays ACCEPTED at ``send_time_scale=1``.
_BASE_DELIVERY_SECONDS = _send_fate("someone@example.com", 1.0).deliver_after


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m airflow_provider_kaleyra_email.testing",
        description="Serve a Kaleyra Email API emulator on loopback.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080, help="0 picks a free port")
    parser.add_argument("--sid", default=DEFAULT_SID)
    parser.add_argument("--api-key", default=DEFAULT_API_KEY)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--start-date", type=date.fromisoformat, help="first day with traffic (YYYY-MM-DD)")
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--rows-per-day", type=int, default=1_000)
    parser.add_argument("--timezone", default="UTC", help="the account's IANA time zone")
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--rate-limit", type=_share, default=0.0, help="share of requests answered 429")
    parser.add_argument("--retry-after", type=float, default=1.0)
    parser.add_argument("--server-errors", type=_share, default=0.0, help="share answered 500/503")
    parser.add_argument("--drops", type=_share, default=0.0, help="share of dropped connections")
    parser.add_argument("--malformed", type=_share, default=0.0, help="share of truncated/HTML bodies")
    parser.add_argument("--fault-seed", type=int, default=0)
    parser.add_argument(
        "--delivery-seconds",
        type=_seconds,
        default=1.0,
        help="seconds a sent message stays ACCEPTED before its final status (default 1)",
    )
    return parser.parse_args(argv)


def emulator_from(args: argparse.Namespace) -> KaleyraEmailEmulator:
    """Return the (not yet started) emulator the parsed command line describes."""
    dataset = SyntheticDataset(
        seed=args.seed,
        start_date=args.start_date,
        days=args.days,
        rows_per_day=args.rows_per_day,
        timezone=args.timezone,
        send_time_scale=args.delivery_seconds / _BASE_DELIVERY_SECONDS,
    )
    faults = Faults(
        latency=args.latency_ms / 1000,
        rate_limit=args.rate_limit,
        retry_after=args.retry_after,
        server_errors=args.server_errors,
        drops=args.drops,
        malformed=args.malformed,
        seed=args.fault_seed,
    )
    return KaleyraEmailEmulator(
        host=args.host, port=args.port, sid=args.sid, api_key=args.api_key, dataset=dataset, faults=faults
    )


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    emulator = emulator_from(args)
    dataset = emulator.dataset
    emulator.start()
    print(
        json.dumps(
            {
                "base_url": emulator.base_url,
                "sid": emulator.sid,
                "first_day": dataset.dates()[0].isoformat(),
                "last_day": dataset.end_date.isoformat(),
                "rows_per_day": args.rows_per_day,
            }
        ),
        flush=True,
    )
    print(f"export AIRFLOW_CONN_KALEYRA_EMAIL_DEFAULT='{emulator.connection_json()}'", flush=True)
    try:
        assert emulator._thread is not None
        emulator._thread.join()
    except KeyboardInterrupt:
        print("stopping", file=sys.stderr)
    finally:
        emulator.stop()


if __name__ == "__main__":
    main()
