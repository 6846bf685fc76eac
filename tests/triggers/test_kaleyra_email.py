"""The real trigger against the emulator: each run fires exactly one plain-JSON event."""

from __future__ import annotations

import asyncio
import importlib
import itertools
import json
import threading
import time
import uuid

import pytest
import pytest_asyncio

from airflow_provider_kaleyra_email.hooks.kaleyra_email import KaleyraEmailAsyncHook
from airflow_provider_kaleyra_email.testing import DEFAULT_API_KEY, Faults
from airflow_provider_kaleyra_email.triggers.kaleyra_email import (
    CLASSPATH,
    KaleyraEmailMessageStatusTrigger,
)

POKE = 0.2


def send(emulator, *to: str) -> str:
    """A message accepted by the emulator (straight into its data set: no POST in the request log)."""
    (message_id,) = emulator.dataset.send(from_mail="reports@shop.example.com", to=list(to), subject="s").message_ids()
    return message_id


def trigger(message_id: str, **kwargs) -> KaleyraEmailMessageStatusTrigger:
    now = time.time()
    options = {"poke_interval": POKE, "started_at": now, "end_time": now + 10}
    return KaleyraEmailMessageStatusTrigger(message_id=message_id, **{**options, **kwargs})


async def events_of(t: KaleyraEmailMessageStatusTrigger) -> list[dict]:
    """Every event the trigger yields, read to the end of its generator."""
    return [event.payload async for event in t.run()]


def stats_requests(emulator, message_id: str):
    return emulator.requests_to(f"/stats/{message_id}")


pytestmark = pytest.mark.usefixtures("kaleyra_email_connection")


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
    assert min(gaps) >= POKE * 0.9
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

    (event,) = await events_of(trigger(message_id, max_consecutive_errors=5))

    assert event["status"] == "success"
    statuses = [p.status for p in stats_requests(kaleyra_email_emulator, message_id)]
    assert statuses[:4] == [503, 429, 0, 200]


@pytest.mark.asyncio
async def test_gives_up_after_the_configured_number_of_failed_polls_in_a_row(kaleyra_email_emulator):
    message_id = send(kaleyra_email_emulator, "ops@example.com")
    kaleyra_email_emulator.set_faults(Faults(server_errors=1.0))

    (event,) = await events_of(trigger(message_id, max_consecutive_errors=3))

    assert event["status"] == "error"
    assert "3 polls in a row failed (max_consecutive_errors=3)" in event["message"]
    assert len(stats_requests(kaleyra_email_emulator, message_id)) == 3


@pytest.mark.asyncio
async def test_a_streak_handed_over_by_the_sensor_counts(kaleyra_email_emulator):
    message_id = send(kaleyra_email_emulator, "ops@example.com")
    kaleyra_email_emulator.set_faults(Faults(server_errors=1.0))

    (event,) = await events_of(trigger(message_id, max_consecutive_errors=3, consecutive_errors=2))

    assert event["status"] == "error"
    assert len(stats_requests(kaleyra_email_emulator, message_id)) == 1


@pytest.mark.asyncio
async def test_a_404_is_not_visible_yet_for_the_grace_then_an_error(kaleyra_email_emulator):
    unknown = f"{uuid.uuid4()}:1"
    started = time.monotonic()

    (event,) = await events_of(trigger(unknown, not_found_grace=0.6))

    assert event["status"] == "error"
    assert f"Kaleyra still does not know message {unknown}" in event["message"]
    assert time.monotonic() - started >= 0.6
    polls = stats_requests(kaleyra_email_emulator, unknown)
    assert len(polls) >= 3
    assert {p.status for p in polls} == {404}


@pytest.mark.asyncio
async def test_times_out_after_a_last_check_at_the_deadline(kaleyra_email_emulator):
    message_id = send(kaleyra_email_emulator, "x.slow@example.com")  # delivered after 10 s
    now = time.time()
    deadline = now + 1.1
    monotonic_deadline = time.monotonic() + (deadline - time.time())

    (event,) = await events_of(trigger(message_id, poke_interval=0.5, started_at=now, end_time=deadline))

    assert event["status"] == "timeout"
    assert event["statuses"] == {"x.slow@example.com": "ACCEPTED"}
    assert "within timeout=1.1 s" in event["message"]
    polls = stats_requests(kaleyra_email_emulator, message_id)
    # Polls at 0, 0.5, 1.0 and one more at the deadline (not one poke interval later, not skipped).
    assert polls[-1].at >= monotonic_deadline
    assert polls[-1].at - polls[-2].at < 0.5
    assert polls[-1].status == 200


@pytest.mark.asyncio
async def test_the_first_poll_waits_for_first_poll_at(kaleyra_email_emulator):
    """Handed over right after the sensor's own check, the trigger does not repeat it at once."""
    message_id = send(kaleyra_email_emulator, "x.bounce@example.com")
    started = time.monotonic()

    (event,) = await events_of(trigger(message_id, first_poll_at=time.time() + 1.2))

    assert event["status"] == "failure"
    (only,) = stats_requests(kaleyra_email_emulator, message_id)
    assert only.at - started >= 1.1


@pytest.mark.asyncio
async def test_first_poll_at_after_the_deadline_still_checks_at_the_deadline(kaleyra_email_emulator):
    message_id = send(kaleyra_email_emulator, "x.slow@example.com")
    now = time.time()

    (event,) = await events_of(trigger(message_id, started_at=now, end_time=now + 0.5, first_poll_at=now + 60))

    assert event["status"] == "timeout"
    assert len(stats_requests(kaleyra_email_emulator, message_id)) == 1


@pytest.mark.asyncio
async def test_a_deadline_already_passed_still_checks_once(kaleyra_email_emulator):
    message_id = send(kaleyra_email_emulator, "x.bounce@example.com")
    await asyncio.sleep(1.1)  # bounced by now

    (event,) = await events_of(trigger(message_id, end_time=time.time() - 5))

    assert event["status"] == "failure"
    assert len(stats_requests(kaleyra_email_emulator, message_id)) == 1


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
            consecutive_errors=1,
            first_poll_at=time.time() + 5,
        )
        classpath, kwargs = original.serialize()

        assert classpath == CLASSPATH
        assert json.loads(json.dumps(kwargs)) == kwargs
        assert DEFAULT_API_KEY not in json.dumps(kwargs)
        assert kwargs["kaleyra_email_conn_id"] == "kaleyra_email_default"
        rebuilt = KaleyraEmailMessageStatusTrigger(**kwargs)
        assert rebuilt.serialize() == (classpath, kwargs)
        assert kwargs["recipients"] == ["ops@example.com"]
        assert kwargs["delivered_statuses"] == ["OPEN"]
        assert kwargs["failed_statuses"] == ["BLOCKED", "BOUNCE"]

    def test_the_classpath_imports(self):
        module, _, name = CLASSPATH.rpartition(".")
        assert getattr(importlib.import_module(module), name) is KaleyraEmailMessageStatusTrigger

    def test_kwargs_of_an_older_release_still_load(self):
        old = KaleyraEmailMessageStatusTrigger(
            message_id="4d0cc5e0-8324-4042-b65e-20d03420bf0d:1", kaleyra_email_conn_id="kaleyra_email_default"
        )
        _, kwargs = old.serialize()
        assert kwargs["require"] == "all"
        assert kwargs["end_time"] is None
        assert kwargs["consecutive_errors"] == 0
        assert kwargs["first_poll_at"] is None

    @pytest.mark.parametrize(
        ("kwargs", "match"),
        [
            ({"message_id": "a/b"}, "message_id='a/b'"),
            ({"poke_interval": 0}, "poke_interval=0"),
            ({"not_found_grace": -1}, "not_found_grace=-1"),
            ({"max_consecutive_errors": 0}, "max_consecutive_errors=0"),
            ({"require": "some"}, "require='some'"),
            ({"failed_statuses": ["OPEN"]}, r"both hold \['OPEN'\]"),
        ],
    )
    def test_bad_arguments_are_refused(self, kwargs, match):
        with pytest.raises(ValueError, match=match):
            KaleyraEmailMessageStatusTrigger(**{"message_id": "abc:1", **kwargs})
