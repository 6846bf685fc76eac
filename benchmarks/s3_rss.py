"""
Peak RSS growth of ``KaleyraEmailFetchLogsOperator`` writing one day to ``s3://``, per format.

``.venv/bin/python -m benchmarks.s3_rss`` (default: 20,000 and 1,000,000 rows, every format;
``--rows 20000,200000 --formats jsonl`` for a subset) starts moto's S3 server
(``moto_server -H 127.0.0.1``, its own process) and, per day size, the benchmark's API server
(``benchmarks/server.py``). Each write runs alone in a fresh process: imports, Airflow's set-up
and the ``aws`` connection's file system come first; then its RSS is the baseline, and the
write's cost is the process's peak RSS (``ru_maxrss``) minus that baseline. s3fs keeps the
default block size (50 MiB): an object up to one block goes up in one ``PutObject``, a larger
one as a multipart upload, a part per full block. The table also counts the parts, and gives
the same write to ``file://`` (what the formats' writers cost without s3fs).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterator

DAY = "2026-11-02"
BUCKET = "kaleyra-rss"
FORMATS = ("jsonl", "csv", "parquet")
ACCESS_KEY, SECRET_KEY, REGION = "bench-access-key", "bench-secret-key", "us-east-1"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextlib.contextmanager
def moto_server() -> Iterator[str]:
    """Moto's S3 server on a free loopback port, in its own process, stopped by its pid."""
    port = _free_port()
    executable = shutil.which("moto_server", path=str(Path(sys.executable).parent)) or "moto_server"
    process = subprocess.Popen(
        [executable, "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise SystemExit("moto_server did not start") from None
                time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextlib.contextmanager
def api_server(rows: int) -> Iterator[dict[str, Any]]:
    """``benchmarks/server.py`` serving one day of ``rows``, every page encoded before it listens."""
    process = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.server", "--day", DAY, "--rows", str(rows), "--latencies", "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        info: dict[str, Any] = json.loads(process.stdout.readline())
        yield info
    finally:
        process.terminate()
        process.wait(timeout=30)


def aws_connection(endpoint_url: str) -> str:
    extra = {"endpoint_url": endpoint_url, "region_name": REGION}
    return json.dumps({"conn_type": "aws", "login": ACCESS_KEY, "password": SECRET_KEY, "extra": extra})


def s3_client(endpoint_url: str) -> Any:
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=endpoint_url,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        region_name=REGION,
    )


def measure(endpoint_url: str, api: dict[str, Any], output_format: str, rows: int, folder: Path) -> dict[str, Any]:
    """The write to ``s3://`` and, for comparison, to ``file://``, each in a fresh process (see :func:`child`)."""
    environment = {
        **os.environ,
        "AIRFLOW_CONN_KALEYRA_EMAIL_DEFAULT": json.dumps(
            {"conn_type": "kaleyra_email", "login": api["sid"], "password": api["key"], "host": api["base_urls"]["0"]}
        ),
        "AIRFLOW_CONN_BENCH_S3": aws_connection(endpoint_url),
    }
    environment.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="kaleyra-s3-rss-airflow-"))
    environment.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    environment.setdefault("AIRFLOW__LOGGING__LOGGING_LEVEL", "WARNING")
    key = f"{rows}/logs.{output_format}"
    s3, local = (
        _run_child(environment, output_format, url, rows)
        for url in (f"s3://{BUCKET}/{key}", f"file://{folder}/logs.{output_format}")
    )
    client = s3_client(endpoint_url)
    head = client.head_object(Bucket=BUCKET, Key=key)
    if s3["rows"] != rows or head["ContentLength"] != s3["bytes"]:
        raise SystemExit(f"{output_format}: wrote {s3} but the object holds {head['ContentLength']} bytes")
    client.delete_object(Bucket=BUCKET, Key=key)  # moto keeps objects in memory and temporary files
    (folder / f"logs.{output_format}").unlink()
    return {**s3, "file_peak_growth_mb": local["peak_growth_mb"], "file_seconds": local["seconds"]}


def _run_child(environment: dict[str, str], output_format: str, url: str, rows: int) -> dict[str, Any]:
    completed = subprocess.run(
        [sys.executable, "-m", "benchmarks.s3_rss", "--child", output_format, url],
        env=environment,
        capture_output=True,
        text=True,
    )
    if completed.returncode:
        raise SystemExit(f"the {output_format} write of {rows:,} rows to {url} failed:\n{completed.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(completed.stdout.strip().splitlines()[-1])
    return result


def child(output_format: str, url: str) -> None:
    """Write the day to ``url``; print rows, bytes, seconds, parts and the peak RSS growth (MB)."""
    import psutil
    import s3fs.core
    from airflow.providers.common.compat.sdk import ObjectStoragePath

    from airflow_provider_kaleyra_email.operators.kaleyra_email import KaleyraEmailFetchLogsOperator
    from airflow_provider_kaleyra_email.output import require_parquet_support

    calls: list[str] = []
    call_s3 = s3fs.core.S3File._call_s3

    def counting(self: Any, method: str, *args: Any, **kwargs: Any) -> Any:
        calls.append(method)
        return call_s3(self, method, *args, **kwargs)

    s3fs.core.S3File._call_s3 = counting  # type: ignore[method-assign]
    # Airflow's set-up and the connection's file system, before the baseline.
    require_parquet_support()
    conn_id = "bench_s3" if url.startswith("s3://") else None
    ObjectStoragePath(url, conn_id=conn_id).parent.exists()
    operator = KaleyraEmailFetchLogsOperator(
        task_id=f"s3_{output_format}",
        from_date=DAY,
        to_date=DAY,
        output_path=url,
        output_conn_id=conn_id,
        output_format=output_format,
    )
    baseline = psutil.Process().memory_info().rss
    started = time.perf_counter()
    summary = operator.execute({})
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    result = {
        "format": output_format,
        "rows": summary["rows"],
        "bytes": summary["bytes"],
        "seconds": round(seconds, 2),
        "parts": calls.count("upload_part"),
        "one_shot_puts": calls.count("put_object"),
        "baseline_mb": round(baseline / 2**20, 1),
        "peak_growth_mb": round((peak - baseline) / 2**20, 1),
    }
    print(json.dumps(result), flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.s3_rss", description=__doc__)
    parser.add_argument("--rows", default="20000,1000000", help="comma-separated day sizes")
    parser.add_argument("--formats", default=",".join(FORMATS), help="comma-separated subset of " + ", ".join(FORMATS))
    parser.add_argument("--child", nargs=2, metavar=("FORMAT", "URL"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(*args.child)
        return
    formats = [f for f in args.formats.split(",") if f]
    results = []
    with moto_server() as endpoint_url, tempfile.TemporaryDirectory(prefix="kaleyra-s3-rss-") as folder:
        s3_client(endpoint_url).create_bucket(Bucket=BUCKET)
        for rows in (int(value) for value in args.rows.split(",")):
            with api_server(rows) as api:
                for output_format in formats:
                    result = measure(endpoint_url, api, output_format, rows, Path(folder))
                    print(json.dumps(result), file=sys.stderr, flush=True)
                    results.append(result)
    print("| rows | format | MB written | s | parts | peak RSS growth (MB) | the same to file:// (MB) |")
    print("| ---: | --- | ---: | ---: | ---: | ---: | ---: |")
    for r in results:
        parts = str(r["parts"]) if r["parts"] else "0 (one PUT)"
        print(
            f"| {r['rows']:,} | {r['format']} | {r['bytes'] / 1e6:,.1f} | {r['seconds']:.1f} | {parts} "
            f"| {r['peak_growth_mb']:,.1f} | {r['file_peak_growth_mb']:,.1f} |"
        )


if __name__ == "__main__":
    main()
