"""
The README's first command: run the daily export DAG end to end, on embedded defaults.

- the Kaleyra Email API is the emulator, on loopback, with 20 ms per request;
- Airflow's metadata database is SQLite in a throwaway AIRFLOW_HOME under demo-output/;
- the connection comes from AIRFLOW_CONN_KALEYRA_EMAIL_DEFAULT;
- the lake is file:// object storage under demo-output/lake.

It runs ``example_dags/example_kaleyra_email_daily_export.py`` with ``dag.test()`` for today's
run (which exports yesterday and refreshes the day before) and prints what it wrote; then
``example_dags/example_kaleyra_email_deliverability_report.py`` for the same run, against a second
emulator with a month of lighter traffic, which writes the deliverability report of the 30 days up
to yesterday (HTML and PNG) under demo-output/lake/reports, mails its summary (to the emulator),
and prints where the report is.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import time
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
OUTPUT = PROJECT / "demo-output"
ROWS_PER_DAY = 20_000
LATENCY_SECONDS = 0.02
#: The report reads a month of failed rows through the emulator's search, which scans every row
#: of the range per request: a lighter month keeps the demo quick.
REPORT_DAYS = 30
REPORT_ROWS_PER_DAY = 500


def prepare_airflow() -> None:
    home = OUTPUT / "airflow-home"
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    os.environ["AIRFLOW_HOME"] = str(home)
    os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(PROJECT / "example_dags")
    os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
    os.environ["AIRFLOW__LOGGING__LOGGING_LEVEL"] = "WARNING"
    os.environ["AIRFLOW_VAR_KALEYRA_EMAIL_EXPORT_URL"] = (OUTPUT / "lake").as_uri()
    subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def main() -> int:
    print("Preparing a throwaway Airflow home and SQLite database ...", flush=True)
    shutil.rmtree(OUTPUT / "lake", ignore_errors=True)
    prepare_airflow()

    from airflow_provider_kaleyra_email.testing import Faults, KaleyraEmailEmulator

    today = datetime.now(timezone.utc).date()
    yesterday = today - timedelta(days=1)
    emulator = KaleyraEmailEmulator(
        start_date=today - timedelta(days=7),
        days=8,
        rows_per_day=ROWS_PER_DAY,
        faults=Faults(latency=LATENCY_SECONDS),
    )
    with emulator:
        os.environ["AIRFLOW_CONN_KALEYRA_EMAIL_DEFAULT"] = emulator.connection_json()
        print(
            f"Emulator at {emulator.base_url}: {ROWS_PER_DAY:,} emails a day, "
            f"{LATENCY_SECONDS * 1000:.0f} ms per request",
            flush=True,
        )
        from airflow.providers.common.compat.sdk import DAG  # noqa: F401  (Airflow is configured by now)

        sys.path.insert(0, str(PROJECT / "example_dags"))
        from example_kaleyra_email_daily_export import dag

        started = time.monotonic()
        dag_run = dag.test(logical_date=datetime.combine(today, datetime.min.time(), tzinfo=timezone.utc))
        seconds = time.monotonic() - started
    print(f"\nDAG run {dag_run.dag_id} for {yesterday}: {dag_run.state} in {seconds:.1f} s\n")
    if str(dag_run.state) != "success":
        return 1
    report(yesterday)
    return deliverability_report(today)


def deliverability_report(today: date) -> int:
    """The report DAG, on its own emulator with a month of traffic: the 30 days it covers."""
    from airflow_provider_kaleyra_email.testing import Faults, KaleyraEmailEmulator

    yesterday = today - timedelta(days=1)
    emulator = KaleyraEmailEmulator(
        start_date=today - timedelta(days=REPORT_DAYS),
        days=REPORT_DAYS + 1,
        rows_per_day=REPORT_ROWS_PER_DAY,
        faults=Faults(latency=LATENCY_SECONDS),
    )
    with emulator:
        os.environ["AIRFLOW_CONN_KALEYRA_EMAIL_DEFAULT"] = emulator.connection_json()
        print(
            f"\nEmulator at {emulator.base_url}: {REPORT_ROWS_PER_DAY:,} emails a day for {REPORT_DAYS} days",
            flush=True,
        )
        from example_kaleyra_email_deliverability_report import dag

        started = time.monotonic()
        dag_run = dag.test(logical_date=datetime.combine(today, datetime.min.time(), tzinfo=timezone.utc))
        seconds = time.monotonic() - started
    print(f"\nDAG run {dag_run.dag_id} for {yesterday}: {dag_run.state} in {seconds:.1f} s")
    if str(dag_run.state) != "success":
        return 1
    page = OUTPUT / "lake" / "reports" / f"deliverability-{yesterday}.html"
    print(f"Deliverability report, {REPORT_DAYS} days to {yesterday}: {page}")
    print(f"Its main chart: {page.with_suffix('.png')}")
    return 0


def report(day: date) -> None:
    lake = OUTPUT / "lake"
    for path in sorted(lake.rglob("*")):
        if path.is_file():
            rows = sum(1 for _ in path.open()) - (1 if path.suffix == ".csv" else 0)
            print(f"  {path.relative_to(PROJECT)}  {rows:>7,} rows  {path.stat().st_size:>11,} bytes")
    stats_path = lake / "summary_stats" / f"date={day}" / "stats.csv"
    (stats,) = csv.DictReader(stats_path.open())
    stats.update(json.loads(stats.pop("extra", None) or "{}"))  # metrics the API page does not list
    accepted, delivered = int(stats["accepted"]), int(stats["delivered"])
    print(
        f"\n{day}: {accepted:,} emails accepted, "
        f"{delivered / accepted:.1%} delivered, "
        f"{int(stats['opens']) / delivered:.1%} of those opened, "
        f"{int(stats['bounces']) / accepted:.1%} bounced, "
        f"{int(stats['blocks']) / accepted:.1%} blocked"
    )
    print(f"Files are under {lake}")


if __name__ == "__main__":
    sys.exit(main())
