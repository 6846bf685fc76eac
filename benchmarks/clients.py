"""
The ways to pull one day of Kaleyra email logs that the benchmark compares, each run alone in
its own process so that its peak RSS is its own:

- ``hook``: ``KaleyraEmailHook.iter_logs``, rows counted as they come;
- ``fetch_jsonl`` / ``fetch_parquet``: ``KaleyraEmailFetchLogsOperator`` writing to ``file://``;
- ``requests_loop``: the hand-written loop most people write: one page after another with a
  ``requests.Session``, every row appended to a list;
- ``http_operator``: Airflow's ``HttpOperator`` with a ``pagination_function``, rows counted
  in its ``response_filter`` (it keeps every response until the end).

``python -m benchmarks.clients NAME --base-url URL --sid SID --key KEY --day YYYY-MM-DD --out DIR``
prints one JSON line: ``{"client", "rows", "seconds", "peak_rss_mb"}``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import resource
import sys
import tempfile
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable

PAGE_SIZE = 100


def _environment(args: argparse.Namespace) -> None:
    os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="kaleyra-bench-airflow-"))
    os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    os.environ.setdefault("AIRFLOW__LOGGING__LOGGING_LEVEL", "WARNING")
    os.environ["AIRFLOW_CONN_KALEYRA_EMAIL_DEFAULT"] = json.dumps(
        {"conn_type": "kaleyra_email", "login": args.sid, "password": args.key, "host": args.base_url}
    )
    host, port = args.base_url.removeprefix("http://").split(":")
    os.environ["AIRFLOW_CONN_EMULATOR_HTTP"] = json.dumps(
        {"conn_type": "http", "host": host, "port": int(port), "schema": "http"}
    )


def hook(args: argparse.Namespace) -> int:
    from airflow_provider_kaleyra_email.hooks.kaleyra_email import KaleyraEmailHook

    return sum(1 for _ in KaleyraEmailHook().iter_logs(args.day, args.day))


def _fetch(output_format: str) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        from airflow_provider_kaleyra_email.operators.kaleyra_email import KaleyraEmailFetchLogsOperator

        operator = KaleyraEmailFetchLogsOperator(
            task_id=f"fetch_{output_format}",
            from_date=args.day,
            to_date=args.day,
            output_path=f"file://{args.out}/logs.{output_format}",
            output_format=output_format,
        )
        summary = operator.execute({})
        return int(summary["rows"])

    return run


def requests_loop(args: argparse.Namespace) -> int:
    import requests

    session = requests.Session()
    session.headers["api-key"] = args.key
    url = f"{args.base_url}/v1/{args.sid}/email/logs"
    rows: list[dict[str, Any]] = []
    page = 1
    while True:
        response = session.get(
            url, params={"start_date": args.day, "end_date": args.day, "page": page, "limit": PAGE_SIZE}, timeout=60
        )
        response.raise_for_status()
        data = response.json()["data"]
        rows.extend(data)
        if len(data) < PAGE_SIZE:
            return len(rows)
        page += 1


def http_operator(args: argparse.Namespace) -> int:
    from airflow.providers.http.operators.http import HttpOperator

    params = {"start_date": args.day, "end_date": args.day, "page": 1, "limit": PAGE_SIZE}

    def next_page(response: Any) -> dict[str, Any] | None:
        if len(response.json()["data"]) < PAGE_SIZE:
            return None
        page = int(dict(part.split("=") for part in response.request.url.split("?", 1)[1].split("&"))["page"])
        return {"data": {**params, "page": page + 1}}

    operator = HttpOperator(
        task_id="http_operator",
        http_conn_id="emulator_http",
        endpoint=f"/v1/{args.sid}/email/logs",
        method="GET",
        data=params,
        headers={"api-key": args.key},
        pagination_function=next_page,
        response_filter=lambda responses: sum(len(r.json()["data"]) for r in responses),
        log_response=False,
    )
    return int(operator.execute({}))


def _import_everything() -> None:
    """Pay for imports and Airflow's per-process set-up before the clock starts, the same for every client."""
    import pyarrow.parquet  # noqa: F401
    import requests  # noqa: F401
    from airflow.providers.common.compat.sdk import get_hook_lineage_collector
    from airflow.providers.common.compat.sdk import io as airflow_io
    from airflow.providers.http.operators.http import HttpOperator  # noqa: F401

    from airflow_provider_kaleyra_email.operators.kaleyra_email import KaleyraEmailFetchLogsOperator  # noqa: F401

    # Airflow's one-time set-up in a process: its file-system registry (providers) and its
    # plugins (hook lineage), which a bare process would otherwise meet on its first write
    # through ObjectStoragePath, about a second in all.
    airflow_io.has_fs("file")
    get_hook_lineage_collector()
    # What a first connection lookup and a first local object path import (Airflow 3's task SDK
    # supervisor, universal-pathlib's local paths), tens of milliseconds here.
    for module in ("airflow.sdk.execution_time.supervisor", "upath.implementations.local"):
        with contextlib.suppress(ImportError):  # Airflow 2 has neither
            importlib.import_module(module)


CLIENTS: dict[str, Callable[[argparse.Namespace], int]] = {
    "hook": hook,
    "fetch_jsonl": _fetch("jsonl"),
    "fetch_parquet": _fetch("parquet"),
    "requests_loop": requests_loop,
    "http_operator": http_operator,
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.clients")
    parser.add_argument("client", choices=sorted(CLIENTS))
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--sid", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--day", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    _environment(args)
    _import_everything()
    client = CLIENTS[args.client]
    started = time.perf_counter()
    rows = client(args)
    seconds = time.perf_counter() - started
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"client": args.client, "rows": rows, "seconds": seconds, "peak_rss_mb": peak_kb / 1024}))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
