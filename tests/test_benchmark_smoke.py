"""The benchmark still runs (a tiny scenario, checking the report's shape, not any speed), and its server answers as the emulator does."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import date, datetime, timezone
from pathlib import Path

import pytest
import requests

from airflow_provider_kaleyra_email.testing import KaleyraEmailEmulator, SyntheticDataset

PROJECT = Path(__file__).resolve().parent.parent
DAY = date(2026, 11, 2)


@pytest.mark.slow
def test_the_benchmark_runs_and_reports_every_client(tmp_path):
    report = tmp_path / "report.md"
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks",
            "--quick",
            "--clients",
            "hook,fetch_jsonl,requests_loop",
            "--output",
            str(report),
        ],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    text = report.read_text()
    rows = [line for line in text.splitlines() if line.startswith("| 2,000 ")]
    assert [row.split("|")[3].strip() for row in rows] == ["hook", "fetch_jsonl", "requests_loop"]
    hook_row = rows[0].split("|")
    assert float(hook_row[5].replace(",", "")) > 0, "rows per second"
    assert float(hook_row[6]) > 0, "the ratio to the requests loop"
    assert "rows/s at 0 ms to a raw-socket reader" in text, "the report says what the server itself can serve"
    assert "x the fastest client" in text


def test_the_benchmark_server_sends_the_emulators_bytes():
    server = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.server", "--day", DAY.isoformat(), "--rows", "250", "--latencies", "0,5"],
        cwd=PROJECT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        info = json.loads(server.stdout.readline())
        assert set(info["base_urls"]) == {"0", "5"}
        week_later = datetime(2026, 11, 9, tzinfo=timezone.utc)  # the clock the server's rows are read at
        dataset = SyntheticDataset(start_date=DAY, days=1, rows_per_day=250, clock=lambda: week_later)
        with KaleyraEmailEmulator(dataset=dataset, sid=info["sid"], api_key=info["key"]) as emulator:
            for page in (1, 3, 4, 9):  # full pages, the short last one, and past the end
                params = {"start_date": DAY.isoformat(), "end_date": DAY.isoformat(), "page": page, "limit": 100}
                path = f"/v1/{info['sid']}/email/logs"
                ours = requests.get(
                    info["base_urls"]["5"] + path, params=params, headers={"api-key": info["key"]}, timeout=10
                )
                theirs = requests.get(
                    emulator.base_url + path, params=params, headers={"api-key": info["key"]}, timeout=10
                )
                assert (ours.status_code, ours.content) == (theirs.status_code, theirs.content), page
            params["limit"] = 50
            assert (
                requests.get(
                    info["base_urls"]["0"] + path, params=params, headers={"api-key": info["key"]}, timeout=10
                ).status_code
                == 400
            )
            assert (
                requests.get(
                    info["base_urls"]["0"] + path, params=params, headers={"api-key": "wrong"}, timeout=10
                ).status_code
                == 401
            )
    finally:
        server.terminate()
        server.wait(timeout=30)
