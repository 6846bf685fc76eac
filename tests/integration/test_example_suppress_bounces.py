"""The event-driven example: a real watcher event from the emulator, handed to the example's task."""

from __future__ import annotations

import asyncio
import contextlib
import runpy
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import airflow
import pytest

from tests.integration.test_example_dags import EXAMPLES

TODAY = datetime.now(timezone.utc).date()

pytestmark = pytest.mark.skipif(airflow.__version__.startswith("2."), reason="event-driven scheduling is Airflow 3's")


async def first_event(trigger) -> dict:
    async def first():
        async for event in trigger.run():
            return event.payload
        raise AssertionError("the watcher ended without an event")

    task = asyncio.ensure_future(first())
    try:
        return await asyncio.wait_for(task, timeout=30)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@pytest.mark.kaleyra_email_emulator(start_date=TODAY - timedelta(days=2), days=3, rows_per_day=300)
def test_the_watcher_s_event_suppresses_every_failed_recipient_once(tmp_path, kaleyra_email_connection):
    example = runpy.run_path(str(EXAMPLES / "example_kaleyra_email_suppress_bounces.py"))
    dag, (watcher,) = example["dag"], example["failed_deliveries"].watchers
    payload = asyncio.run(first_event(watcher.trigger))
    events = {"kaleyra_email_failed_deliveries": [SimpleNamespace(extra={"from_trigger": True, "payload": payload})]}
    url = (tmp_path / "suppressed.txt").as_uri()
    suppress = dag.get_task("suppress_recipients").python_callable

    first = suppress(triggering_asset_events=events, templates_dict={"url": url})
    again = suppress(triggering_asset_events=events, templates_dict={"url": url})  # a restarted triggerer

    recipients = {a.strip().lower() for row in payload["rows"] for a in row["to_mail"].split(",") if a.strip()}
    assert payload["count"] > 0
    assert (tmp_path / "suppressed.txt").read_text().splitlines() == sorted(recipients)
    assert first == {"new_addresses": len(recipients), "suppressed": len(recipients)}
    assert again == {"new_addresses": 0, "suppressed": len(recipients)}
