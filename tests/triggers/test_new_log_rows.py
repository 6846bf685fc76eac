"""KaleyraEmailNewLogRowsTrigger against the emulator: every failed row once, new ones as they come."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import date, datetime, timedelta, timezone

import airflow
import pytest

from airflow_provider_kaleyra_email.triggers.kaleyra_email import KaleyraEmailNewLogRowsTrigger

AIRFLOW_3 = not airflow.__version__.startswith("2.")
TODAY = datetime.now(timezone.utc).date()
FAILED = ("BOUNCE", "BLOCKED", "FAILED", "SUPPRESSED")

pytestmark = pytest.mark.usefixtures("kaleyra_email_connection")


def key(row):
    return (row["message_id"], row["to_mail"], row["status"])


async def events_within(trigger, seconds: float) -> list[dict]:
    """Every event the trigger fires within ``seconds``; then it is cancelled, as a triggerer would."""
    fired: list[dict] = []

    async def collect():
        async for event in trigger.run():
            fired.append(event.payload)

    task = asyncio.ensure_future(collect())
    await asyncio.sleep(seconds)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return fired


@pytest.mark.skipif(not AIRFLOW_3, reason="event-driven scheduling is Airflow 3's")
@pytest.mark.asyncio
@pytest.mark.kaleyra_email_emulator(start_date=TODAY - timedelta(days=3), days=4, rows_per_day=400)
async def test_fires_every_failed_row_of_the_watched_days_once_across_polls(kaleyra_email_emulator):
    dataset = kaleyra_email_emulator.dataset
    expected = {
        key(row)
        for status in FAILED
        for row in dataset.expected_logs(TODAY - timedelta(days=1), TODAY, search=[status])
        if row["status"] == status  # search also matches addresses
    }
    assert expected, "the emulator's day has failures to find"

    fired = await events_within(KaleyraEmailNewLogRowsTrigger(poll_interval=0.4), 1.5)

    rows = [row for event in fired for row in event["rows"]]
    assert len(rows) == len({key(row) for row in rows}), "no row fired twice, over three polls or more"
    assert {key(row) for row in rows} == expected
    assert all(event["count"] == len(event["rows"]) for event in fired)
    assert {(e["from_date"], e["to_date"]) for e in fired} == {
        ((TODAY - timedelta(days=1)).isoformat(), TODAY.isoformat())
    }
    polls = [r for r in kaleyra_email_emulator.requests if r.path.endswith("/logs")]
    assert {r.query["search"][0] for r in polls} == set(FAILED), "one listing per status"


@pytest.mark.skipif(not AIRFLOW_3, reason="event-driven scheduling is Airflow 3's")
@pytest.mark.asyncio
@pytest.mark.kaleyra_email_emulator(start_date=TODAY - timedelta(days=3), days=4, rows_per_day=50)
async def test_a_new_bounce_fires_once_in_a_later_event(kaleyra_email_emulator):
    trigger = KaleyraEmailNewLogRowsTrigger(poll_interval=0.3, days_back=0, max_rows_per_event=5)
    fired: list[dict] = []

    async def collect():
        async for event in trigger.run():
            fired.append(event.payload)

    task = asyncio.ensure_future(collect())
    await asyncio.sleep(1.0)
    before = len(fired)
    assert all(len(event["rows"]) <= 5 for event in fired)
    sent = kaleyra_email_emulator.dataset.send(from_mail="r@shop.example.com", to=["x.bounce@example.com"], subject="s")
    await asyncio.sleep(2.5)  # the emulator bounces it after about a second
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task

    # Today's synthetic traffic goes on meanwhile, so other new failures may come too.
    later = [row for event in fired[before:] for row in event["rows"]]
    ours = [row for row in later if row["message_id"] in sent.message_ids()]
    assert [row["status"] for row in ours] == ["BOUNCE"], "the new bounce fired once"
    earlier = {row["message_id"] for event in fired[:before] for row in event["rows"]}
    assert earlier.isdisjoint(sent.message_ids())
    assert len(later) == len({key(row) for row in later + [r for e in fired[:before] for r in e["rows"]]}) - sum(
        len(e["rows"]) for e in fired[:before]
    ), "nothing fired before fired again"


@pytest.mark.skipif(not AIRFLOW_3, reason="event-driven scheduling is Airflow 3's")
@pytest.mark.asyncio
@pytest.mark.kaleyra_email_emulator(start_date=TODAY - timedelta(days=3), days=4, rows_per_day=2_000)
async def test_what_a_triggerer_logs_of_an_event_is_its_count_not_its_rows(kaleyra_email_emulator):
    fired = []

    async def collect():
        async for event in KaleyraEmailNewLogRowsTrigger(poll_interval=60).run():
            fired.append(event)
            return

    await asyncio.wait_for(collect(), timeout=60)

    (event,) = fired
    assert event.payload["count"] == len(event.payload["rows"]) > 50
    # Airflow 3's triggerer logs "Trigger fired event" with result=event, rendered by structlog (its repr).
    structlog = pytest.importorskip("structlog")
    logged = structlog.processors.JSONRenderer()(None, None, {"event": "Trigger fired event", "result": event})
    assert len(logged) < 300
    assert f"{event.payload['count']} new log row(s)" in logged
    assert event.payload["rows"][0]["message_id"] not in logged


@pytest.mark.skipif(not AIRFLOW_3, reason="event-driven scheduling is Airflow 3's")
def test_it_serializes_to_what_rebuilds_it_and_refuses_bad_arguments():
    trigger = KaleyraEmailNewLogRowsTrigger(statuses=["bounce"], search="newsletter", poll_interval=30)
    classpath, kwargs = trigger.serialize()
    assert classpath == "airflow_provider_kaleyra_email.triggers.kaleyra_email.KaleyraEmailNewLogRowsTrigger"
    assert kwargs["statuses"] == ["BOUNCE"]
    assert kwargs["search"] == ["newsletter"]
    assert KaleyraEmailNewLogRowsTrigger(**kwargs).serialize() == (classpath, kwargs)
    with pytest.raises(ValueError, match="BOUNCED"):
        KaleyraEmailNewLogRowsTrigger(statuses=["BOUNCED"])
    with pytest.raises(ValueError, match="poll_interval"):
        KaleyraEmailNewLogRowsTrigger(poll_interval=0)


@pytest.mark.skipif(AIRFLOW_3, reason="on Airflow 3 the watcher exists")
def test_on_airflow_2_it_says_it_needs_airflow_3():
    from airflow.exceptions import AirflowOptionalProviderFeatureException

    with pytest.raises(AirflowOptionalProviderFeatureException, match="needs Airflow 3"):
        KaleyraEmailNewLogRowsTrigger()
    assert date  # the module imports on 2.11: only building the trigger is refused


try:
    from airflow.triggers.shared_stream import SharedStreamManager
except ImportError:  # before Airflow 3.3: every watcher polls on its own
    SharedStreamManager = None


@pytest.mark.skipif(SharedStreamManager is None, reason="shared streams came with Airflow 3.3")
@pytest.mark.asyncio
@pytest.mark.kaleyra_email_emulator(start_date=TODAY - timedelta(days=1), days=2, rows_per_day=300)
async def test_sibling_watchers_share_one_poll_through_airflows_shared_streams(kaleyra_email_emulator):
    siblings = [KaleyraEmailNewLogRowsTrigger(poll_interval=60, max_rows_per_event=size) for size in (10_000, 7)]
    other = KaleyraEmailNewLogRowsTrigger(poll_interval=60, statuses=["BOUNCE"])
    assert siblings[0].shared_stream_key() == siblings[1].shared_stream_key() != other.shared_stream_key()
    manager = SharedStreamManager()
    key_ = siblings[0].shared_stream_key()
    streams = [
        trigger.filter_shared_stream(manager.subscribe(trigger_id=n, trigger=trigger, key=key_))
        for n, trigger in enumerate(siblings)
    ]

    whole = await asyncio.wait_for(anext(streams[0]), timeout=30)
    first_chunk = await asyncio.wait_for(anext(streams[1]), timeout=30)

    assert whole.payload["count"] > 7, "the day has enough failures to split"
    assert first_chunk.payload["rows"] == whole.payload["rows"][:7]
    one_poll = len(kaleyra_email_emulator.requests)
    await asyncio.sleep(0.3)
    assert len(kaleyra_email_emulator.requests) == one_poll
    alone = await events_within(KaleyraEmailNewLogRowsTrigger(poll_interval=60), 1.0)
    assert len(kaleyra_email_emulator.requests) == 2 * one_poll, "one watcher alone makes as many requests as both"
    assert alone[0]["rows"] == whole.payload["rows"]
    for trigger_id in range(len(siblings)):  # the last to leave stops the shared poll
        await manager.unsubscribe(trigger_id, key_)


@pytest.mark.skipif(not AIRFLOW_3, reason="event-driven scheduling is Airflow 3's")
@pytest.mark.parametrize(
    ("statuses", "expected"),
    [(["bounce", "Blocked"], ["BLOCKED", "BOUNCE"]), ("DELIVERED", ["DELIVERED"]), (["OPEN", "open"], ["OPEN"])],
)
def test_any_documented_status_can_be_watched(statuses, expected):
    assert KaleyraEmailNewLogRowsTrigger(statuses=statuses).statuses == expected


@pytest.mark.skipif(not AIRFLOW_3, reason="event-driven scheduling is Airflow 3's")
@pytest.mark.parametrize(
    ("statuses", "match"), [(["BOUNCED"], "statuses holds 'BOUNCED'"), ([], r"statuses=\[\] is empty")]
)
def test_a_status_kaleyra_does_not_document_is_refused(statuses, match):
    with pytest.raises(ValueError, match=match):
        KaleyraEmailNewLogRowsTrigger(statuses=statuses)
