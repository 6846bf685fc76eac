"""The real trigger against the emulator: each run fires exactly one plain-JSON event."""

from __future__ import annotations

import asyncio
import collections
import importlib
import itertools
import json
import threading
import time
import uuid
from datetime import date, datetime, timedelta, timezone

import pytest
import pytest_asyncio

from airflow_provider_kaleyra_email.hooks.kaleyra_email import KaleyraEmailAsyncHook
from airflow_provider_kaleyra_email.testing import DEFAULT_API_KEY, Faults
from airflow_provider_kaleyra_email.triggers import kaleyra_email as triggers
from airflow_provider_kaleyra_email.triggers.kaleyra_email import CLASSPATH, KaleyraEmailMessageDeliveredTrigger

POKE = 0.2


def send(emulator, *to: str) -> str:
    """A message accepted by the emulator (straight into its data set: no POST in the request log)."""
    (message_id,) = emulator.dataset.send(from_mail="reports@shop.example.com", to=list(to), subject="s").message_ids()
    return message_id


def trigger(message_id: str, **kwargs) -> KaleyraEmailMessageDeliveredTrigger:
    now = time.time()
    options = {"poke_interval": POKE, "started_at": now, "end_time": now + 10}
    return KaleyraEmailMessageDeliveredTrigger(message_id=message_id, **{**options, **kwargs})


async def events_of(t: KaleyraEmailMessageDeliveredTrigger) -> list[dict]:
    """Every event the trigger yields, read to the end of its generator."""
    return [event.payload async for event in t.run()]


def stats_requests(emulator, message_id: str):
    return emulator.requests_to(f"/stats/{message_id}")


pytestmark = pytest.mark.usefixtures("kaleyra_email_connection")


class Clock:
    """The time of the trigger and of the emulator's statuses: a sleep moves it on at once, a request takes none."""

    def __init__(self) -> None:
        self.now = time.time()
        self.polls: list[float] = []  # when each stats/<id> was asked

    def time(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += max(0.0, seconds)
        await real_sleep(0)


real_sleep = asyncio.sleep


@pytest.fixture
def clock(monkeypatch, kaleyra_email_emulator) -> Clock:
    """An injected clock: every test that uses it waits no wall-clock time, and its times are exact."""
    clock = Clock()
    monkeypatch.setattr(time, "time", clock.time)
    monkeypatch.setattr(triggers.asyncio, "sleep", clock.sleep)
    kaleyra_email_emulator.dataset.clock = lambda: datetime.fromtimestamp(clock.now, timezone.utc)
    original = KaleyraEmailAsyncHook.get_message_stats

    async def noted(self, message_id):
        clock.polls.append(clock.now)
        return await original(self, message_id)

    monkeypatch.setattr(KaleyraEmailAsyncHook, "get_message_stats", noted)
    return clock


@pytest_asyncio.fixture
async def warm(kaleyra_email_connection):
    """Airflow's connection machinery loaded, so that a test's first poll comes right after its send."""
    await KaleyraEmailAsyncHook(kaleyra_email_connection).get_config()


@pytest.mark.asyncio
@pytest.mark.usefixtures("warm")
async def test_fires_success_once_the_emulator_delivers(kaleyra_email_emulator):
    message_id = send(kaleyra_email_emulator, "ops@example.com")
    started = time.monotonic()

    events = await events_of(trigger(message_id))

    assert events == [
        {
            "status": "success",
            "message_id": message_id,
            "message": f"Message {message_id} reached all of its recipients: ops@example.com DELIVERED.",
            "statuses": {"ops@example.com": "DELIVERED"},
            "failures": [],
        }
    ]
    polls = stats_requests(kaleyra_email_emulator, message_id)
    # Not visible for 0.5 s (404), accepted, then delivered about 1 s after the send.
    assert polls[0].status == 404
    assert [p.status for p in polls][-1] == 200
    assert time.monotonic() - started >= 0.9
    # asyncio.sleep between polls, never a busy loop.
    gaps = [later.at - earlier.at for earlier, later in itertools.pairwise(polls)]
    # Poll starts are POKE apart; the first request also builds the shared client and connects, so
    # it reaches the server late and the first gap is shorter by that much. A loaded machine delays
    # one request's arrival and shortens the gap after it, so the gaps are POKE on average.
    assert sum(gaps[1:]) / len(gaps[1:]) >= POKE * 0.9
    assert all(p.api_key_ok for p in polls)


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("address", "status", "code", "text"),
    [
        (
            "x.bounce@example.com",
            "BOUNCE",
            "550",
            "550 5.1.1 The email account that you tried to reach does not exist.",
        ),
        ("x.block@example.com", "BLOCKED", "", "invalid sender domain"),
        ("x.suppress@example.com", "SUPPRESSED", "", "recipient is on the suppression list"),
    ],
)
async def test_fires_failure_with_the_recipient_and_kaleyras_error_text(
    kaleyra_email_emulator, address, status, code, text
):
    message_id = send(kaleyra_email_emulator, address)

    (event,) = await events_of(trigger(message_id))

    assert event["status"] == "failure"
    assert event["statuses"] == {address: status}
    assert event["failures"] == [{"recipient": address, "status": status, "error_code": code, "error_message": text}]
    assert address in event["message"]
    assert status in event["message"]
    assert text in event["message"]


@pytest.mark.asyncio
async def test_transient_trouble_is_waited_through(kaleyra_email_emulator):
    message_id = send(kaleyra_email_emulator, "ops@example.com")
    kaleyra_email_emulator.queue_faults("503", "429", "drop", "html")

    (event,) = await events_of(trigger(message_id))

    assert event["status"] == "success"
    statuses = [p.status for p in stats_requests(kaleyra_email_emulator, message_id)]
    assert statuses[:4] == [503, 429, 0, 200]


@pytest.mark.asyncio
async def test_an_api_that_keeps_failing_is_polled_calmly_until_the_deadline(kaleyra_email_emulator, clock):
    message_id = send(kaleyra_email_emulator, "ops@example.com")
    kaleyra_email_emulator.set_faults(Faults(server_errors=1.0))
    now = time.time()

    (event,) = await events_of(trigger(message_id, started_at=now, end_time=now + 1.5))

    assert event == {
        "status": "timeout",
        "message_id": message_id,
        "message": event["message"],
        "statuses": None,
        "failures": [],
    }
    assert event["message"].startswith(f"Message {message_id} was not delivered within timeout=1.5 s (the last check: ")
    assert "HTTP 50" in event["message"]
    assert {p.status for p in stats_requests(kaleyra_email_emulator, message_id)} <= {500, 503}
    # Failed polls, as many as the wait holds, one poke interval apart, the last at the deadline.
    assert [round(at - now, 3) for at in clock.polls] == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0, 1.2, 1.4, 1.5]


@pytest.mark.asyncio
async def test_has_not_fired_while_the_message_is_in_flight(kaleyra_email_emulator):
    message_id = send(kaleyra_email_emulator, "x.slow@example.com")  # delivered after 10 s
    now = time.time()

    task = asyncio.create_task(trigger(message_id, started_at=now, end_time=now + 60).run().__anext__())
    await asyncio.sleep(1.0)

    assert task.done() is False
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    seen = len(stats_requests(kaleyra_email_emulator, message_id))
    assert 3 <= seen <= 1.0 / POKE + 1
    await asyncio.sleep(2 * POKE)
    assert len(stats_requests(kaleyra_email_emulator, message_id)) == seen, "no poll after the cancel"


@pytest.mark.asyncio
async def test_a_404_is_not_visible_yet_for_the_grace_then_an_error(kaleyra_email_emulator, clock):
    unknown = f"{uuid.uuid4()}:1"
    started = time.time()

    (event,) = await events_of(trigger(unknown, not_found_grace=0.6))

    assert event["status"] == "error"
    assert f"Kaleyra still does not know message {unknown}" in event["message"]
    assert [round(at - started, 3) for at in clock.polls] == [0.0, 0.2, 0.4, 0.6], "the grace, then an error"
    assert {p.status for p in stats_requests(kaleyra_email_emulator, unknown)} == {404}


@pytest.mark.asyncio
async def test_times_out_after_a_last_check_at_the_deadline(kaleyra_email_emulator, clock):
    message_id = send(kaleyra_email_emulator, "x.slow@example.com")  # delivered after 10 s
    now = time.time()

    (event,) = await events_of(trigger(message_id, poke_interval=0.5, started_at=now, end_time=now + 1.1))

    assert event["status"] == "timeout"
    assert event["statuses"] == {"x.slow@example.com": "ACCEPTED"}
    assert "within timeout=1.1 s" in event["message"]
    # Polls at 0, 0.5, 1.0 and one more at the deadline (not one poke interval later, not skipped).
    assert [round(at - now, 3) for at in clock.polls] == [0.0, 0.5, 1.0, 1.1]
    assert stats_requests(kaleyra_email_emulator, message_id)[-1].status == 200


@pytest.mark.asyncio
async def test_the_first_poll_waits_for_first_poll_at(kaleyra_email_emulator, clock):
    """Handed over right after the sensor's own check, the trigger does not repeat it at once."""
    message_id = send(kaleyra_email_emulator, "x.bounce@example.com")
    started = time.time()

    (event,) = await events_of(trigger(message_id, first_poll_at=started + 1.2))

    assert event["status"] == "failure"
    assert [round(at - started, 3) for at in clock.polls] == [1.2]


@pytest.mark.asyncio
async def test_first_poll_at_after_the_deadline_still_checks_at_the_deadline(kaleyra_email_emulator, clock):
    message_id = send(kaleyra_email_emulator, "x.slow@example.com")
    now = time.time()

    (event,) = await events_of(trigger(message_id, started_at=now, end_time=now + 0.5, first_poll_at=now + 60))

    assert event["status"] == "timeout"
    assert [round(at - now, 3) for at in clock.polls] == [0.5]


@pytest.mark.asyncio
async def test_a_deadline_already_passed_still_checks_once(kaleyra_email_emulator, clock):
    message_id = send(kaleyra_email_emulator, "x.bounce@example.com")
    clock.now += 1.1  # bounced by now

    (event,) = await events_of(trigger(message_id, end_time=time.time() - 5))

    assert event["status"] == "failure"
    assert len(stats_requests(kaleyra_email_emulator, message_id)) == 1


def campaign(emulator, count: int, *, sent_at=None, scale: float = 0.01, **to_extra) -> list[str]:
    """One send to ``count`` readers (and ``to_extra``'s addresses), one message id each."""
    emulator.dataset.send_time_scale, emulator.dataset.send_visibility_delay = scale, 0
    to = [f"reader{n}@example.com" for n in range(count)] + list(to_extra.get("more", ()))
    return emulator.dataset.send(from_mail="a@shop.example.com", to=to, subject="s", sent_at=sent_at).message_ids()


@pytest.mark.asyncio
@pytest.mark.usefixtures("warm")
async def test_a_campaign_sent_30_days_ago_resolves_at_the_first_poll(kaleyra_email_emulator):
    ids = campaign(kaleyra_email_emulator, 50, sent_at=datetime.now(timezone.utc) - timedelta(days=30))

    (event,) = await events_of(trigger(ids, end_time=time.time() - 5))  # past the deadline: one poll

    assert event["status"] == "success"
    assert (event["counts"]["delivered"], event["counts"]["not_found"]) == (50, 0)
    looked_up = [r.path.rsplit("/", 1)[-1] for r in kaleyra_email_emulator.requests if "/stats/" in r.path]
    assert sorted(looked_up) == sorted(ids), "not in the send window's logs: each looked up by id"


@pytest.mark.asyncio
@pytest.mark.usefixtures("warm")
@pytest.mark.kaleyra_email_emulator(background_rows_per_day=300_000)
async def test_a_campaign_on_a_busy_account_costs_what_its_messages_need_per_poll(kaleyra_email_emulator):
    ids = campaign(kaleyra_email_emulator, 100, scale=1_000)  # in flight for hours
    now = time.time()

    # Two polls: one at once, one at the deadline.
    (event,) = await events_of(trigger(ids, poke_interval=60, started_at=now, end_time=now + 0.5))

    assert event["status"] == "timeout"
    assert event["counts"]["in_flight"] == 100
    requests = list(kaleyra_email_emulator.requests)
    listings = [r.query["page"] for r in requests if r.path.endswith("/logs")]
    assert listings == [["1"]], "the first poll read one page of a 300,000-row listing, then went by id"
    per_id = collections.Counter(r.path.rsplit("/", 1)[-1] for r in requests if "/stats/" in r.path)
    assert per_id == dict.fromkeys(ids, 2), "then each poll cost a request per message: 101, then 100"


@pytest.mark.asyncio
@pytest.mark.usefixtures("warm")
@pytest.mark.kaleyra_email_emulator(start_date=date(2026, 1, 1), days=1, rows_per_day=10)
async def test_failures_seen_in_the_logs_carry_kaleyras_error_once_the_wait_ends(kaleyra_email_emulator):
    ids = campaign(kaleyra_email_emulator, 147, more=["a.bounce@example.com", "b.bounce@example.com", "c.block@x.com"])

    (event,) = await events_of(trigger(ids, max_failed_fraction=0.1))

    assert event["status"] == "success"
    assert kaleyra_email_emulator.requests_to("/logs"), "150 messages: polled by listing"
    failures = {f["recipient"]: (f["error_code"], f["error_message"][:9]) for f in event["failures"]}
    assert failures == {
        "a.bounce@example.com": ("550", "550 5.1.1"),
        "b.bounce@example.com": ("550", "550 5.1.1"),
        "c.block@x.com": ("", "invalid s"),
    }


@pytest.mark.asyncio
async def test_a_wrong_key_is_an_error_event_without_the_key(kaleyra_email_emulator, monkeypatch):
    connection = kaleyra_email_emulator.connection()
    connection["password"] = "wrong-key-0123456789"
    monkeypatch.setenv("AIRFLOW_CONN_KALEYRA_EMAIL_DEFAULT", json.dumps(connection))
    message_id = send(kaleyra_email_emulator, "ops@example.com")

    (event,) = await events_of(trigger(message_id))

    assert event["status"] == "error"
    assert "HTTP 401" in event["message"]
    assert "Invalid API key or SID" in event["message"]
    assert "wrong-key-0123456789" not in json.dumps(event)
    assert len(stats_requests(kaleyra_email_emulator, message_id)) == 1


@pytest.mark.asyncio
async def test_a_redirect_is_not_followed(kaleyra_email_emulator):
    message_id = send(kaleyra_email_emulator, "ops@example.com")
    kaleyra_email_emulator.queue_faults("redirect")

    (event,) = await events_of(trigger(message_id))

    assert event["status"] == "error"
    assert "not followed" in event["message"]
    assert len(kaleyra_email_emulator.requests) == 1


@pytest.mark.asyncio
async def test_an_unexpected_failure_is_an_error_event_not_a_crash(kaleyra_email_emulator):
    (event,) = await events_of(trigger(f"{uuid.uuid4()}:1", kaleyra_email_conn_id="no_such_connection"))

    assert event["status"] == "error"
    assert "no_such_connection" in event["message"]
    assert len(kaleyra_email_emulator.requests) == 0


@pytest.mark.asyncio
async def test_the_connection_is_never_read_with_a_blocking_call_on_the_event_loop(kaleyra_email_emulator, monkeypatch):
    from airflow.providers.common.compat.sdk import BaseHook

    original = BaseHook.get_connection.__func__
    loop_thread = threading.get_ident()

    def guarded(cls, conn_id):
        assert threading.get_ident() != loop_thread, "sync get_connection on the event loop"
        return original(cls, conn_id)

    monkeypatch.setattr(BaseHook, "get_connection", classmethod(guarded))
    message_id = send(kaleyra_email_emulator, "x.bounce@example.com")

    (event,) = await events_of(trigger(message_id))

    assert event["status"] == "failure"


class TestSerialize:
    def test_round_trip_with_json_safe_kwargs_and_no_key(self, kaleyra_email_emulator):
        original = trigger(
            "4d0cc5e0-8324-4042-b65e-20d03420bf0d:1",
            recipients=["ops@example.com"],
            require="any",
            delivered_statuses=["OPEN"],
            failed_statuses=["BOUNCE", "BLOCKED"],
            not_found_grace=30,
            first_poll_at=time.time() + 5,
        )
        classpath, kwargs = original.serialize()

        assert classpath == CLASSPATH
        assert json.loads(json.dumps(kwargs)) == kwargs
        assert DEFAULT_API_KEY not in json.dumps(kwargs)
        assert kwargs["kaleyra_email_conn_id"] == "kaleyra_email_default"
        rebuilt = KaleyraEmailMessageDeliveredTrigger(**kwargs)
        assert rebuilt.serialize() == (classpath, kwargs)
        assert kwargs["recipients"] == ["ops@example.com"]
        assert kwargs["delivered_statuses"] == ["OPEN"]
        assert kwargs["failed_statuses"] == ["BLOCKED", "BOUNCE"]

    def test_the_classpath_names_the_trigger_after_the_sensor_and_imports(self):
        assert CLASSPATH == "airflow_provider_kaleyra_email.triggers.kaleyra_email.KaleyraEmailMessageDeliveredTrigger"
        module, _, name = CLASSPATH.rpartition(".")
        assert getattr(importlib.import_module(module), name) is KaleyraEmailMessageDeliveredTrigger

    def test_only_message_id_is_required(self):
        _, kwargs = KaleyraEmailMessageDeliveredTrigger(message_id="4d0cc5e0-8324-4042-b65e-20d03420bf0d:1").serialize()
        assert kwargs == {
            "message_id": "4d0cc5e0-8324-4042-b65e-20d03420bf0d:1", "kaleyra_email_conn_id": "kaleyra_email_default",
            "recipients": None, "require": "all", "delivered_statuses": ["DELIVERED", "OPEN"],
            "failed_statuses": ["BLOCKED", "BOUNCE", "FAILED", "SUPPRESSED"], "not_found_grace": 120.0,
            "poke_interval": 60.0, "started_at": None, "end_time": None, "first_poll_at": None,
        }  # fmt: skip

    @pytest.mark.parametrize(
        ("kwargs", "match"),
        [
            ({"message_id": "a/b"}, "message_id='a/b'"),
            ({"poke_interval": 0}, "poke_interval=0"),
            ({"not_found_grace": -1}, "not_found_grace=-1"),
            ({"require": "some"}, "require='some'"),
            ({"failed_statuses": ["OPEN"]}, r"both hold \['OPEN'\]"),
        ],
    )
    def test_bad_arguments_are_refused(self, kwargs, match):
        with pytest.raises(ValueError, match=match):
            KaleyraEmailMessageDeliveredTrigger(**{"message_id": "abc:1", **kwargs})


@pytest.mark.asyncio
async def test_a_trigger_stored_under_its_first_name_loads_by_that_classpath_and_works(kaleyra_email_emulator):
    """The triggerer rebuilds a stored trigger from its classpath and kwargs; the trigger's first name still imports."""
    message_id = send(kaleyra_email_emulator, "ops@example.com")
    now = time.time()
    stored = (
        "airflow_provider_kaleyra_email.triggers.kaleyra_email.KaleyraEmailMessageStatusTrigger",
        {
            "message_id": message_id,
            "kaleyra_email_conn_id": "kaleyra_email_default",
            "recipients": None,
            "require": "all",
            "delivered_statuses": ["DELIVERED", "OPEN"],
            "failed_statuses": ["BLOCKED", "BOUNCE", "FAILED", "SUPPRESSED"],
            "poke_interval": POKE,
            "started_at": now,
            "end_time": now + 10,
            "not_found_grace": 120.0,
            "first_poll_at": None,
        },
    )
    module, _, name = stored[0].rpartition(".")

    old = getattr(importlib.import_module(module), name)(**stored[1])
    (event,) = await events_of(old)

    assert isinstance(old, KaleyraEmailMessageDeliveredTrigger)
    assert event == {
        "status": "success",
        "message_id": message_id,
        "message": f"Message {message_id} reached all of its recipients: ops@example.com DELIVERED.",
        "statuses": {"ops@example.com": "DELIVERED"},
        "failures": [],
    }
    # Serialized again, it names the current classpath, with the same kwargs.
    assert old.serialize() == (CLASSPATH, stored[1])
