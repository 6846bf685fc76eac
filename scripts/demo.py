"""
The README's first command: start the emulator, fetch yesterday's logs and the week's summary
stats through the hook, and print what came back.
"""

from __future__ import annotations

import os
import sys
import time
from collections import Counter
from datetime import date, timedelta
from pathlib import Path

ROWS_PER_DAY = 20_000


def main() -> None:
    home = Path(__file__).resolve().parent.parent / "demo-output" / "airflow-home"
    home.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("AIRFLOW_HOME", str(home))
    os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")

    from airflow_provider_kaleyra_email.hooks.kaleyra_email import KaleyraEmailHook
    from airflow_provider_kaleyra_email.testing import Faults, KaleyraEmailEmulator

    yesterday = date.today() - timedelta(days=1)
    emulator = KaleyraEmailEmulator(
        start_date=yesterday - timedelta(days=6),
        days=8,
        rows_per_day=ROWS_PER_DAY,
        faults=Faults(latency=0.02),
    )
    with emulator:
        os.environ["AIRFLOW_CONN_KALEYRA_EMAIL_DEFAULT"] = emulator.connection_json()
        print(f"Emulator at {emulator.base_url} ({ROWS_PER_DAY:,} emails a day, 20 ms per request)")
        hook = KaleyraEmailHook()

        started = time.monotonic()
        statuses = Counter(row["status"] for row in hook.iter_logs(yesterday, yesterday))
        seconds = time.monotonic() - started
        fetch = hook.last_fetch
        assert fetch is not None
        rows = sum(statuses.values())
        print(
            f"\nLogs for {yesterday}: {rows:,} rows in {fetch.pages} pages, "
            f"{seconds:.2f} s ({rows / seconds:,.0f} rows/s)"
        )
        for status, count in statuses.most_common():
            print(f"  {status:<11} {count:>7,}  {count / rows:6.1%}")

        print("\nSummary stats, last 7 days:")
        for day in hook.iter_summary_stats(yesterday - timedelta(days=6), yesterday):
            delivered = day["delivered"] / day["accepted"] if day["accepted"] else 0.0
            bounced = day.get("bounces", 0) / day["accepted"] if day["accepted"] else 0.0
            print(
                f"  {day['date']}  accepted {day['accepted']:>7,}  delivered {delivered:6.1%}  bounced {bounced:5.1%}"
            )


if __name__ == "__main__":
    sys.exit(main())
