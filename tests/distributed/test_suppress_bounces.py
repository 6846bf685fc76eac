"""
The event-driven example with two runs asked for at once: the second waits for the first
(``max_active_runs=1``), so neither writes the suppression list without the other's addresses.
"""

from __future__ import annotations

import itertools
import time
from typing import TYPE_CHECKING, Any

import pytest

from tests.distributed.cluster import BUCKET
from tests.system.airflow_api import FINISHED

if TYPE_CHECKING:
    from tests.distributed.cluster import Cluster

pytestmark = pytest.mark.timeout(300, method="signal")

DAG_ID = "example_kaleyra_email_suppress_bounces"
ASSET = "kaleyra_email_failed_deliveries"


def runs(cluster: Cluster) -> list[dict[str, Any]]:
    return cluster.query(
        "SELECT run_id, state, start_date, end_date FROM dag_run WHERE dag_id = %s ORDER BY id", DAG_ID
    )


def wait_for(cluster: Cluster, condition: Any, what: str, timeout: float = 180) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while not condition(found := runs(cluster)):
        cluster.check_alive()
        assert time.monotonic() < deadline, f"{what}: {found}\n{cluster.diagnostics()}"
        time.sleep(0.2)
    return found


def event(addresses: list[str]) -> dict[str, Any]:
    rows = [{"message_id": f"m{n}:1", "to_mail": address, "status": "BOUNCE"} for n, address in enumerate(addresses)]
    return {"payload": {"count": len(rows), "rows": rows}}


def test_two_events_at_once_run_one_after_the_other_and_keep_every_address(cluster: Cluster) -> None:
    assert cluster.s3 is not None
    (asset,) = cluster.api.get("/api/v2/assets", params={"name_pattern": ASSET}).raise_for_status().json()["assets"]
    first = [f"first{n}@bounced.example.com" for n in range(200)]
    second = [f"second{n}@bounced.example.com" for n in range(200)]
    before = len(runs(cluster))

    cluster.api.post("/api/v2/assets/events", json={"asset_id": asset["id"], "extra": event(first)}).raise_for_status()
    wait_for(cluster, lambda found: len(found) > before, "no run for the first event")
    cluster.api.post("/api/v2/assets/events", json={"asset_id": asset["id"], "extra": event(second)}).raise_for_status()
    wait_for(cluster, lambda found: len(found) > before + 1, "no run for the second event")
    done = wait_for(cluster, lambda found: all(r["state"] in FINISHED for r in found), "runs still active")

    assert [r["state"] for r in done] == ["success"] * len(done), done
    suppressed = cluster.s3.read(BUCKET, "suppressed.txt").decode().split()
    assert set(first + second) <= set(suppressed)
    assert suppressed == sorted(set(suppressed))
    for earlier, later in itertools.pairwise(sorted(done, key=lambda r: r["start_date"])):
        assert later["start_date"] >= earlier["end_date"], f"two runs at once: {earlier} and {later}"
    print(f"\nsuppress_bounces: {len(done)} runs one after the other, {len(suppressed)} addresses kept")
