"""
A worker killed (SIGKILL to its whole process group, as when its machine dies) in the middle of an
export: the scheduler notices the silent task at the heartbeat timeout, fails that try, and the
retry runs on the other worker. The object at the final path is the old one until the retry
replaces it whole, and no temporary object is left.

The states and timestamps are read from the metadata database as they change, and printed.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from typing import TYPE_CHECKING, Any

import pytest

from tests.distributed.cluster import BUCKET, KILL_DAY, LOST_TASK_SETTINGS, WORKERS
from tests.system.airflow_api import FINISHED, trigger

if TYPE_CHECKING:
    from datetime import datetime

    from tests.distributed.cluster import Cluster

pytestmark = pytest.mark.timeout(300, method="signal")

DAG_ID = "example_kaleyra_email_backfill"
KEY = f"kaleyra/logs/date={KILL_DAY}/logs.jsonl"
#: Log pages of the day answered before the kill (the day has 80).
PAGES_BEFORE_THE_KILL = 10
SELECT_EXPORT = (
    "SELECT state, try_number, external_executor_id, start_date, end_date FROM {table} "
    "WHERE dag_id = %s AND run_id = %s AND task_id = 'export_day' ORDER BY try_number"
)


class Timeline:
    """The export task's and the run's rows in the metadata database, noted each time they change."""

    def __init__(self, cluster: Cluster, run_id: str):
        self.cluster, self.run_id = cluster, run_id
        self.steps: list[tuple[float, str]] = []
        self.started = time.monotonic()
        self._last: str | None = None

    def poll(self) -> dict[str, Any]:
        query = self.cluster.query
        (run,) = query("SELECT state FROM dag_run WHERE dag_id = %s AND run_id = %s", DAG_ID, self.run_id)
        current = query(SELECT_EXPORT.format(table="task_instance"), DAG_ID, self.run_id)
        history = query(SELECT_EXPORT.format(table="task_instance_history"), DAG_ID, self.run_id)
        ti = current[0] if current else {}
        line = f"run {run['state']}; export_day: {self._describe(ti)}" + "".join(
            f"; try {old['try_number']} (history): {self._describe(old)}" for old in history
        )
        if line != self._last:
            self.note(line)
            self._last = line
        return {"run": run, "ti": ti, "history": history}

    def note(self, text: str) -> None:
        self.steps.append((time.monotonic() - self.started, text))

    def _describe(self, ti: dict[str, Any]) -> str:
        if not ti:
            return "not created"
        worker = self.cluster.worker_of(ti["external_executor_id"])
        return (
            f"{ti['state']} try {ti['try_number']} on {worker} "
            f"(start {_clock(ti['start_date'])}, end {_clock(ti['end_date'])})"
        )

    def __str__(self) -> str:
        return "\n".join(f"  +{at:6.1f} s  {text}" for at, text in self.steps)


def _clock(moment: datetime | None) -> str:
    return moment.strftime("%H:%M:%S.%f")[:-3] if moment else "-"


def kill_worker(cluster: Cluster, name: str) -> None:
    """SIGKILL every process of the worker (its Celery pool, the task supervisor, the task): a dead machine."""
    service = cluster.services.pop(name)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(service.pid, signal.SIGKILL)
    service.process.wait(timeout=10)
    service.log_file.close()


def test_a_task_on_a_killed_worker_is_retried_elsewhere_and_the_object_is_never_partial(cluster: Cluster) -> None:
    assert cluster.kaleyra is not None
    assert cluster.s3 is not None
    expected = list(cluster.kaleyra.dataset.expected_logs(KILL_DAY, KILL_DAY))
    old = b'{"an":"earlier export"}\n'  # what a reader finds there until the retry replaces it
    cluster.s3.client().put_object(Bucket=BUCKET, Key=KEY, Body=old)
    first_request = len(cluster.kaleyra.requests)
    conf = {"first_day": KILL_DAY.isoformat(), "last_day": KILL_DAY.isoformat()}

    run_id = trigger(cluster.api, DAG_ID, logical_date=None, conf=conf)["dag_run_id"]
    timeline = Timeline(cluster, run_id)
    deadline = time.monotonic() + 120
    while True:
        seen = timeline.poll()
        pages = [
            r
            for r in list(cluster.kaleyra.requests)[first_request:]
            if r.path.endswith("/email/logs")
            and r.query.get("start_date") == [KILL_DAY.isoformat()]
            and r.status == 200
        ]
        if len(pages) >= PAGES_BEFORE_THE_KILL:
            break
        assert time.monotonic() < deadline, f"the export did not start:\n{timeline}\n{cluster.diagnostics()}"
        time.sleep(0.05)
    victim = cluster.worker_of(seen["ti"].get("external_executor_id"))
    assert victim in WORKERS, f"no worker received the export:\n{timeline}"
    kill_worker(cluster, victim)
    timeline.note(f"SIGKILL to {victim}'s process group after {len(pages)} of the day's pages")
    assert seen["ti"]["state"] == "running"

    finals: list[bytes | None] = []
    deadline = time.monotonic() + 150
    while (seen := timeline.poll())["run"]["state"] not in FINISHED:
        keys = cluster.s3.keys(BUCKET, f"kaleyra/logs/date={KILL_DAY}/")
        finals.append(cluster.s3.read(BUCKET, KEY) if KEY in keys else None)
        cluster.check_alive()
        assert time.monotonic() < deadline, f"the run did not finish:\n{timeline}\n{cluster.diagnostics()}"
        time.sleep(0.25)
    reads = {"old": sum(final == old for final in finals), "new": sum(final not in (None, old) for final in finals)}
    print(f"\nkilled worker ({LOST_TASK_SETTINGS}):\n{timeline}\nreads of the final path meanwhile: {reads}")

    assert seen["run"]["state"] == "success", str(timeline)
    (lost,) = seen["history"]
    assert (lost["try_number"], lost["state"]) == (1, "failed")
    retry = seen["ti"]
    assert (retry["try_number"], retry["state"]) == (2, "success")
    assert cluster.worker_of(retry["external_executor_id"]) == ({*WORKERS} - {victim}).pop()
    written = cluster.s3.read(BUCKET, KEY)
    assert [json.loads(line) for line in written.splitlines()] == expected
    assert finals[0] == old  # after the kill, before the retry
    for seen_final in finals:  # the old object, or the whole new one; never part of one
        assert seen_final in (old, written), (len(seen_final or b""), len(written))
    assert cluster.s3.keys(BUCKET, f"kaleyra/logs/date={KILL_DAY}/") == [KEY]  # no temporary object
    assert cluster.s3.multipart_uploads(BUCKET) == []
