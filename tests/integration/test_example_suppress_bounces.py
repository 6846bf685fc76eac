"""The event-driven example: a real watcher event from the emulator, handed to the example's task."""

from __future__ import annotations

import asyncio
import contextlib
import runpy
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import airflow
import pytest

from tests.dags import xcom_value
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


@pytest.mark.kaleyra_email_emulator(start_date=TODAY - timedelta(days=2), days=3, rows_per_day=300)
def test_a_run_started_by_the_watchers_event_suppresses_its_recipients(
    tmp_path, airflow_db, kaleyra_email_connection, monkeypatch
):
    """
    The whole chain under ``dag.test()``: the watcher's event is recorded on the asset in the
    metadata database and consumed by the run, as the scheduler's asset-triggered run would.
    """
    import airflow.models.dagrun as dagrun_module
    from airflow.models.asset import AssetEvent, AssetModel

    example = runpy.run_path(str(EXAMPLES / "example_kaleyra_email_suppress_bounces.py"))
    (watcher,) = example["failed_deliveries"].watchers
    payload = asyncio.run(first_event(watcher.trigger))
    target = tmp_path / "suppressed.txt"
    monkeypatch.setenv("AIRFLOW_VAR_KALEYRA_EMAIL_SUPPRESSION_LIST", target.as_uri())
    create = dagrun_module.get_or_create_dagrun

    def consuming_the_event(*, session, **kwargs):
        run = create(session=session, **kwargs)
        asset = session.query(AssetModel).filter(AssetModel.name == "kaleyra_email_failed_deliveries").one()
        event = AssetEvent(asset_id=asset.id, extra={"from_trigger": True, "payload": payload})
        session.add(event)
        run.consumed_asset_events.append(event)
        session.commit()
        return run

    monkeypatch.setattr(dagrun_module, "get_or_create_dagrun", consuming_the_event)

    dag_run = example["dag"].test()

    assert str(dag_run.state) == "success"
    recipients = {a.strip().lower() for row in payload["rows"] for a in row["to_mail"].split(",") if a.strip()}
    assert target.read_text().splitlines() == sorted(recipients)
    assert xcom_value(dag_run, "suppress_recipients") == {
        "new_addresses": len(recipients),
        "suppressed": len(recipients),
    }
