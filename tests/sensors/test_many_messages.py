"""One KaleyraEmailMessageDeliveredSensor over a list of message ids, against the emulator."""

from __future__ import annotations

import asyncio
import json
from datetime import date
from typing import TYPE_CHECKING

import pytest
from airflow.providers.common.compat.sdk import AirflowFailException, AirflowSensorTimeout, TaskDeferred

from airflow_provider_kaleyra_email.sensors.kaleyra_email import KaleyraEmailMessageDeliveredSensor

if TYPE_CHECKING:
    from airflow_provider_kaleyra_email.testing import KaleyraEmailEmulator

# Synthetic traffic only on a day long gone: the send window's listing holds the sends alone.
pytestmark = [
    pytest.mark.usefixtures("kaleyra_email_connection"),
    pytest.mark.kaleyra_email_emulator(start_date=date(2026, 1, 1), days=1, rows_per_day=10),
]


def send(emulator: KaleyraEmailEmulator, *to: str, scale: float = 0.01) -> list[str]:
    """One send to ``to``, one message id per recipient; delivered about ``20 * scale`` s later."""
    emulator.dataset.send_time_scale = scale
    message = emulator.dataset.send(from_mail="news@shop.example.com", to=list(to), subject="s", template_name="sale")
    return message.message_ids()


def sensor(**kwargs) -> KaleyraEmailMessageDeliveredSensor:
    return KaleyraEmailMessageDeliveredSensor(**{"task_id": "wait", "poke_interval": 0.2, "timeout": 60, **kwargs})


def stats_polled(emulator: KaleyraEmailEmulator) -> list[str]:
    return [r.path.rsplit("/", 1)[-1] for r in emulator.requests if "/stats/" in r.path]


def test_every_recipient_delivered_is_a_success_with_counts(kaleyra_email_emulator):
    ids = send(kaleyra_email_emulator, *(f"user{n}@example.com" for n in range(5)))

    result = sensor(message_id=ids).execute({})

    assert {k: result[k] for k in ("messages", "recipients", "delivered", "failed", "in_flight")} == {
        "messages": 5,
        "recipients": 5,
        "delivered": 5,
        "failed": 0,
        "in_flight": 0,
    }
    assert sum(result["statuses"].values()) == 5
    assert set(result["statuses"]) <= {"DELIVERED", "OPEN"}
    assert (result["failures"], result["failures_total"], result["output_path"]) == ([], 0, None)


def test_by_default_one_failed_recipient_fails_the_wait(kaleyra_email_emulator):
    ids = send(kaleyra_email_emulator, "ok@example.com", "x.bounce@example.com", "y@example.com")

    with pytest.raises(AirflowFailException) as failure:
        sensor(message_id=ids).execute({})

    assert "3 messages will not reach enough recipients" in str(failure.value)
    assert "1 failed" in str(failure.value)


def test_thresholds_let_a_few_failures_pass_and_every_failure_is_written(kaleyra_email_emulator, tmp_path):
    addresses = [f"user{n}@example.com" for n in range(18)] + ["x.bounce@example.com", "y.suppress@example.com"]
    ids = send(kaleyra_email_emulator, *addresses)
    target = tmp_path / "campaign" / "failures.jsonl"

    result = sensor(
        message_id=ids, max_failed_fraction=0.1, max_failures_in_xcom=1, output_path=f"file://{target}"
    ).execute({})

    assert (result["delivered"], result["failed"], result["failures_total"]) == (18, 2, 2)
    assert len(result["failures"]) == 1
    assert result["output_path"] == f"file://{target}"
    written = [json.loads(line) for line in target.read_text().splitlines()]
    by_address = {row["recipient"]: row for row in written}
    assert set(by_address) == {"x.bounce@example.com", "y.suppress@example.com"}
    assert by_address["x.bounce@example.com"]["status"] == "BOUNCE"
    assert by_address["x.bounce@example.com"]["message_id"] == ids[18]
    assert by_address["x.bounce@example.com"]["error_message"], "Kaleyra's text comes along"
    assert result["failures"][0] in written


def test_too_few_delivered_fails_once_the_fraction_is_out_of_reach(kaleyra_email_emulator):
    ids = send(kaleyra_email_emulator, "a@example.com", "x.bounce@example.com", "y.block@example.com", "b@example.com")

    with pytest.raises(AirflowFailException, match=r"min_delivered_fraction=0\.6"):
        sensor(message_id=ids, min_delivered_fraction=0.6).execute({})


def test_many_are_listed_from_the_logs_and_the_last_few_polled_one_by_one(kaleyra_email_emulator):
    slow = [f"{c}.slow@example.com" for c in "abc"]  # delivered ten times later than the rest
    ids = send(kaleyra_email_emulator, *(f"user{n}@example.com" for n in range(297)), *slow, scale=0.02)

    result = sensor(message_id=ids, search="sale", poke_interval=0.3).execute({})

    assert (result["recipients"], result["delivered"]) == (300, 300)
    listings = kaleyra_email_emulator.requests_to("/logs")
    assert listings, "300 unresolved messages cost fewer requests as a listing"
    assert {r.query["limit"][0] for r in listings} == {"100"}
    assert all(r.query["search"] == ["sale"] for r in listings)
    polled = stats_polled(kaleyra_email_emulator)
    assert polled, "the last few are polled by id"
    assert set(polled) <= set(ids[-10:]), "only what was still unresolved"


def test_failures_seen_in_the_logs_are_written_with_kaleyras_error(kaleyra_email_emulator, tmp_path):
    kaleyra_email_emulator.dataset.send_visibility_delay = 0  # stats/<id> knows at once what the logs show
    readers = [f"user{n}@example.com" for n in range(147)]
    ids = send(kaleyra_email_emulator, *readers, "a.bounce@example.com", "b.bounce@example.com", "c.block@example.com")
    target = tmp_path / "failures.jsonl"

    result = sensor(message_id=ids, max_failed_fraction=0.1, output_path=target.as_uri()).execute({})

    assert kaleyra_email_emulator.requests_to("/logs"), "150 messages: polled by listing"
    written = {row["recipient"]: row for row in map(json.loads, target.read_text().splitlines())}
    assert {address: (row["error_code"], row["error_message"][:9]) for address, row in written.items()} == {
        "a.bounce@example.com": ("550", "550 5.1.1"),
        "b.bounce@example.com": ("550", "550 5.1.1"),
        "c.block@example.com": ("", "invalid s"),
    }
    assert sorted(result["failures"], key=lambda f: f["recipient"]) == [written[a] for a in sorted(written)]


def test_one_poll_of_5000_messages_in_flight_takes_at_most_60_requests(kaleyra_email_emulator):
    ids = send(kaleyra_email_emulator, *(f"user{n}@example.com" for n in range(5_000)), scale=100)
    waiting = sensor(message_id=ids)

    assert not waiting.poke({})

    assert 50 <= len(kaleyra_email_emulator.requests) <= 60
    assert not stats_polled(kaleyra_email_emulator)


def test_deferred_the_trigger_waits_on_the_whole_list(kaleyra_email_emulator):
    ids = send(kaleyra_email_emulator, "ok@example.com", "x.bounce@example.com", scale=0.05)

    with pytest.raises(TaskDeferred) as deferred:
        sensor(message_id=ids, deferrable=True, max_failed_fraction=0.5).execute({})
    trigger = deferred.value.trigger
    _, kwargs = trigger.serialize()
    assert kwargs["message_id"] == ids
    assert (kwargs["min_delivered_fraction"], kwargs["max_failed_fraction"]) == (0.5, 0.5)

    event = asyncio.run(_first_event(trigger))

    assert event["status"] == "success"
    assert event["counts"]["delivered"] == 1
    result = sensor(message_id=ids, deferrable=True, max_failed_fraction=0.5).execute_complete({}, event)
    assert result["failures"][0]["recipient"] == "x.bounce@example.com"


def test_a_deferred_list_times_out_with_its_counts(kaleyra_email_emulator):
    ids = send(kaleyra_email_emulator, "a.slow@example.com", "b@example.com", scale=100)

    with pytest.raises(TaskDeferred) as deferred:
        sensor(message_id=ids, deferrable=True, timeout=1).execute({})
    event = asyncio.run(_first_event(deferred.value.trigger))

    assert event["status"] == "timeout"
    with pytest.raises(AirflowSensorTimeout, match="2 messages were not delivered within timeout=1 s"):
        sensor(message_id=ids, deferrable=True).execute_complete({}, event)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"message_id": []}, r"message_id=\[\] is empty"),
        ({"message_id": ["abc:1", "a b"]}, r"message_id\[1\]='a b'"),
        (
            {"message_id": ["abc:1"], "recipients": "a@example.com"},
            r"recipients='a@example.com' and require='all' .* every recipient counts: use min_delivered_fraction",
        ),
        ({"message_id": ["abc:1"], "require": "any"}, r"recipients=None and require='any' choose among one message"),
        (
            {"message_id": "abc:1", "max_failed_fraction": 0.1},
            r"are for a list of message ids; message_id='abc:1' is one \(use recipients= and require=",
        ),
        ({"message_id": ["abc:1"], "max_failed_fraction": 1}, r"max_failed_fraction=1 is not a fraction in \[0, 1\)"),
        ({"message_id": ["abc:1"], "min_delivered_fraction": 0}, r"min_delivered_fraction=0 is not a fraction"),
        ({"message_id": ["abc:1"], "min_delivered_fraction": "most"}, r"min_delivered_fraction='most'"),
        ({"message_id": ["abc:1"], "output_path": "/tmp/x.jsonl"}, r"output_path='/tmp/x.jsonl' is not a URL"),
    ],
)
def test_bad_arguments_are_refused_before_any_request(kaleyra_email_emulator, kwargs, match):
    with pytest.raises(ValueError, match=match):
        sensor(**kwargs).execute({})

    assert len(kaleyra_email_emulator.requests) == 0


async def _first_event(trigger):
    async for event in trigger.run():
        return event.payload
    raise AssertionError("the trigger fired nothing")


def test_failures_beyond_what_the_outcome_carries_are_counted_and_said(tmp_path, capfd, caplog):
    target = tmp_path / "failures.jsonl"
    failure = {
        "message_id": "m:1",
        "recipient": "a@example.com",
        "status": "BOUNCE",
        "error_code": "",
        "error_message": "",
    }
    counts = {"messages": 9, "recipients": 9, "delivered": 6, "failed": 3, "in_flight": 0, "statuses": {"BOUNCE": 3}}
    event = {"status": "success", "message_id": "9 messages", "message": "ok", "failures": [failure], "counts": counts}
    waiting = sensor(message_id=["m:1"], deferrable=True, max_failed_fraction=0.5, output_path=target.as_uri())

    result = waiting.execute_complete({}, event)

    assert (result["failures_total"], result["failures"]) == (3, [failure])
    assert [json.loads(line) for line in target.read_text().splitlines()] == [failure]
    said = "".join(capfd.readouterr()) + caplog.text  # Airflow 3 logs through structlog, 2.11 through logging
    assert "Only the first 1 of 3 failures were kept and written." in said


def test_a_timed_out_campaign_still_reports_and_writes_its_failures(kaleyra_email_emulator, tmp_path):
    ids = send(kaleyra_email_emulator, "a.slow@example.com", "x.bounce@example.com", scale=0.05)  # 10 s and 1 s
    target = tmp_path / "failures.jsonl"
    options = {"message_id": ids, "deferrable": True, "max_failed_fraction": 0.5, "output_path": target.as_uri()}

    with pytest.raises(TaskDeferred) as deferred:
        sensor(**options, timeout=2, poke_interval=0.5).execute({})
    event = asyncio.run(_first_event(deferred.value.trigger))

    assert event["status"] == "timeout"
    assert [failure["recipient"] for failure in event["failures"]] == ["x.bounce@example.com"]
    with pytest.raises(AirflowSensorTimeout):
        sensor(**options).execute_complete({}, event)
    assert [json.loads(line)["recipient"] for line in target.read_text().splitlines()] == ["x.bounce@example.com"]


def test_a_campaign_timing_out_on_a_worker_reports_and_writes_its_failures(kaleyra_email_emulator, tmp_path):
    ids = send(kaleyra_email_emulator, "a.slow@example.com", "x.bounce@example.com", scale=0.05)  # 10 s and 1 s
    target = tmp_path / "failures.jsonl"
    waiting = sensor(message_id=ids, max_failed_fraction=0.5, output_path=target.as_uri(), timeout=2, poke_interval=0.5)

    with pytest.raises(AirflowSensorTimeout, match="2 messages were not delivered within timeout=2 s"):
        waiting.execute({})

    assert [json.loads(line)["recipient"] for line in target.read_text().splitlines()] == ["x.bounce@example.com"]
