"""The benchmark still runs: a tiny scenario, checking the report's shape, not any speed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent


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
    rows = [line for line in report.read_text().splitlines() if line.startswith("| 2,000 ")]
    assert [row.split("|")[3].strip() for row in rows] == ["hook", "fetch_jsonl", "requests_loop"]
    hook_row = rows[0].split("|")
    assert float(hook_row[5].replace(",", "")) > 0, "rows per second"
    assert float(hook_row[6]) > 0, "the ratio to the requests loop"
