"""The few Airflow REST API v2 calls the system tests make, with the waiting they need."""

from __future__ import annotations

import time
from datetime import date, datetime, timedelta, timezone
from datetime import time as clock
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable

    import httpx

    from tests.system.services import AirflowStack

FINISHED = ("success", "failed")


def midnight(day: date) -> datetime:
    return datetime.combine(day, clock(0), tzinfo=timezone.utc)


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def trigger(
    api: httpx.Client,
    dag_id: str,
    *,
    logical_date: datetime | None,
    data_interval: tuple[datetime, datetime] | None = None,
    conf: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """``POST /dags/{dag_id}/dagRuns``; ``logical_date=None`` is Airflow 3's manual run without one."""
    body: dict[str, Any] = {"logical_date": None if logical_date is None else iso(logical_date), "conf": conf or {}}
    if data_interval is not None:
        body["data_interval_start"], body["data_interval_end"] = (iso(moment) for moment in data_interval)
    response = api.post(f"/api/v2/dags/{dag_id}/dagRuns", json=body)
    assert response.status_code == 200, f"trigger {dag_id} {body}: HTTP {response.status_code} {response.text}"
    return dict(response.json())


def dag_run(api: httpx.Client, dag_id: str, run_id: str) -> dict[str, Any]:
    return dict(api.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}").raise_for_status().json())


def task_instances(api: httpx.Client, dag_id: str, run_id: str) -> list[dict[str, Any]]:
    response = api.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances", params={"limit": 100})
    return list(response.raise_for_status().json()["task_instances"])


def task_states(api: httpx.Client, dag_id: str, run_id: str) -> dict[str, list[str | None]]:
    """Every task's state(s), mapped instances in map-index order."""
    found: dict[str, list[tuple[int, str | None]]] = {}
    for ti in task_instances(api, dag_id, run_id):
        found.setdefault(ti["task_id"], []).append((ti["map_index"], ti["state"]))
    return {task_id: [state for _, state in sorted(entries)] for task_id, entries in sorted(found.items())}


def wait_for_run(
    stack: AirflowStack,
    dag_id: str,
    run_id: str,
    *,
    timeout: float = 180.0,
    observe: Callable[[list[dict[str, Any]]], None] | None = None,
    interval: float = 1.0,
) -> dict[str, Any]:
    """
    Poll until the run has finished; return it. ``observe`` sees every poll's task instances.

    A service that died, or a run that does not finish in time, fails with the task states and
    the end of every service's output.
    """
    deadline = time.monotonic() + timeout
    while True:
        if observe is not None:
            observe(task_instances(stack.api, dag_id, run_id))
        run = dag_run(stack.api, dag_id, run_id)
        if run["state"] in FINISHED:
            return run
        stack.check_alive()
        if time.monotonic() > deadline:
            raise AssertionError(
                f"{dag_id} {run_id} still {run['state']} after {timeout:g} s; tasks: "
                f"{task_states(stack.api, dag_id, run_id)}\n{stack.diagnostics()}"
            )
        time.sleep(interval)


def wait_until_idle(stack: AirflowStack, timeout: float = 240.0) -> None:
    """Wait until no DAG run is queued or running (so a timing-sensitive run has the machine to itself)."""
    deadline = time.monotonic() + timeout
    while True:
        response = stack.api.get("/api/v2/dags/~/dagRuns", params=[("state", "queued"), ("state", "running")])
        if response.raise_for_status().json()["total_entries"] == 0:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"runs still active after {timeout:g} s: {response.json()}")
        time.sleep(1)


def xcom(api: httpx.Client, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> Any:
    """What the task returned (``return_value``), as the API serves it."""
    response = api.get(
        f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/return_value",
        params={"map_index": map_index},
    )
    assert response.status_code == 200, f"XCom of {dag_id}.{task_id}[{map_index}]: {response.text}"
    return response.json()["value"]


def asset_events(api: httpx.Client, dag_id: str, run_id: str) -> dict[str, list[dict[str, Any]]]:
    """The asset events the run emitted, by asset name."""
    response = api.get("/api/v2/assets/events", params={"source_dag_id": dag_id, "source_run_id": run_id, "limit": 100})
    events: dict[str, list[dict[str, Any]]] = {}
    for event in response.raise_for_status().json()["asset_events"]:
        events.setdefault(event["name"], []).append(event)
    return events


def task_log(
    api: httpx.Client, dag_id: str, run_id: str, task_id: str, *, map_index: int = -1, try_number: int = 1
) -> list[dict[str, Any]]:
    """The task's log through the API, one dict per event (``event``, ``logger``, ...), the trigger's included."""
    response = api.get(
        f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/logs/{try_number}",
        params={"map_index": map_index, "full_content": True},
        headers={"Accept": "application/json"},
    )
    response.raise_for_status()
    content = response.json()["content"]
    assert isinstance(content, list), content
    return [entry for entry in content if isinstance(entry, dict)]


def day_before(moment: datetime) -> date:
    """The last whole UTC day before ``moment``."""
    return moment.astimezone(timezone.utc).date() - timedelta(days=1)
