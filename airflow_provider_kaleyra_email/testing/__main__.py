"""
Serve the emulator from a shell until interrupted.

``python -m airflow_provider_kaleyra_email.testing --rows-per-day 5000 --latency-ms 20`` serves
on port 8780 (not Airflow's 8080) and prints the base URL and an ``AIRFLOW_CONN_KALEYRA_EMAIL_DEFAULT`` line to export.
``--delivery-seconds 60`` keeps sent mail in flight for a minute, long enough to watch a sensor
defer and its trigger find the delivery (or a bounce): see ``docs/emulator.md`` for the markers
a recipient address can carry.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from datetime import date
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from airflow_provider_kaleyra_email.testing._dataset import SyntheticDataset, _send_fate
from airflow_provider_kaleyra_email.testing._server import (
    DEFAULT_API_KEY,
    DEFAULT_SID,
    Faults,
    KaleyraEmailEmulator,
)

if TYPE_CHECKING:
    from collections.abc import Callable

#: Airflow's api-server and webserver take 8080, its log servers 8793/8794.
DEFAULT_PORT = 8780


def _checked(convert: Callable[[str], Any], test: Callable[[Any], bool], what: str) -> Callable[[str], Any]:
    """Return an argparse ``type``: ``convert`` a value, refused unless it passes ``test``."""

    def parse(text: str) -> Any:
        try:
            value = convert(text)
        except ValueError:
            value = None
        if value is None or not test(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}")
        return value

    return parse


def _zone(text: str) -> str:
    try:
        ZoneInfo(text)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(text) from None
    return text


_share = _checked(float, lambda value: 0 <= value <= 1, "a share between 0 and 1")
_seconds = _checked(float, lambda value: 0 < value < math.inf, "a positive number of seconds")
_wait = _checked(float, lambda value: 0 <= value < math.inf, "a number, 0 or more")
_port = _checked(int, lambda value: 0 <= value <= 65_535, "a port number (0-65535)")
_days = _checked(int, lambda value: value >= 1, "a whole number of days, 1 or more")
_count = _checked(int, lambda value: value >= 0, "a whole number, 0 or more")
_timezone = _checked(_zone, bool, "an IANA time zone (e.g. Asia/Kolkata)")


#: Seconds an ordinary sent message stays ACCEPTED at ``send_time_scale=1``.
_BASE_DELIVERY_SECONDS = _send_fate("someone@example.com", 1.0).deliver_after


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m airflow_provider_kaleyra_email.testing",
        usage="%(prog)s [options] (see --help)",
        description="Serve a Kaleyra Email API emulator on loopback.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=_port, default=DEFAULT_PORT, help=f"default {DEFAULT_PORT}; 0 picks a free port")
    parser.add_argument("--sid", default=DEFAULT_SID)
    parser.add_argument("--api-key", default=DEFAULT_API_KEY)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--start-date", type=date.fromisoformat, help="first day with traffic (YYYY-MM-DD)")
    parser.add_argument("--days", type=_days, default=7)
    parser.add_argument("--rows-per-day", type=_count, default=1_000)
    parser.add_argument("--timezone", type=_timezone, default="UTC", help="the account's IANA time zone")
    parser.add_argument("--latency-ms", type=_wait, default=0.0)
    parser.add_argument("--rate-limit", type=_share, default=0.0, help="share of requests answered 429")
    parser.add_argument("--retry-after", type=_wait, default=1.0)
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
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Return the parsed command line; a bad value exits 2 with a line naming its argument."""
    return _parser().parse_args(argv)


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
    parser = _parser()
    args = parser.parse_args(argv)
    emulator = emulator_from(args)
    dataset = emulator.dataset
    try:
        emulator.start()
    except OSError as error:
        parser.error(f"cannot listen on --host {args.host} --port {args.port}: {error.strerror or error}")
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
