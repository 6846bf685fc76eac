"""
The event-driven example on real services: the triggerer runs its asset watcher, which finds the
failed deliveries in the emulator's logs and records them as an event on the asset.

The tier runs with the scheduler's job schedule off (only the runs the tests trigger exist), so
the asset-triggered run itself is not created here; the example's task is run on the recorded
event's payload in ``tests/integration/test_example_suppress_bounces.py``.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.system.services import AirflowStack

pytestmark = pytest.mark.timeout(300, method="signal")

ASSET = "kaleyra_email_failed_deliveries"


def test_the_triggerer_s_watcher_records_the_failed_deliveries_on_the_asset(airflow_stack: AirflowStack) -> None:
    api = airflow_stack.api
    deadline = time.monotonic() + 150
    while True:  # nobody triggers anything: the watcher in the triggerer process polls on its own
        events = api.get("/api/v2/assets/events", params={"limit": 100}).raise_for_status().json()["asset_events"]
        fired = [event for event in events if event["name"] == ASSET]
        if fired:
            break
        assert time.monotonic() < deadline, f"no event on {ASSET}:\n{airflow_stack.diagnostics()}"
        time.sleep(1)
    extra = fired[0]["extra"]
    assert extra["from_trigger"] is True
    payload = extra["payload"]
    assert payload["count"] == len(payload["rows"]) > 0
    assert {row["status"] for row in payload["rows"]} <= {"BOUNCE", "BLOCKED", "FAILED", "SUPPRESSED"}
    keys = [(row["message_id"], row["to_mail"], row["status"]) for row in payload["rows"]]
    assert len(keys) == len(set(keys))
    assert "KaleyraEmailNewLogRowsTrigger" in airflow_stack.services["triggerer"].log()
