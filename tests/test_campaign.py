"""The campaign wait as tables: thresholds, counts, log rows, the cheaper poll, the send window. No I/O."""

from __future__ import annotations

import json
from datetime import date, datetime, timezone
from zoneinfo import ZoneInfo

import pytest

from airflow_provider_kaleyra_email.campaign import CampaignWait
from airflow_provider_kaleyra_email.delivery import DeliveryOutcome, DeliveryRule
from airflow_provider_kaleyra_email.exceptions import KaleyraEmailAPIError, KaleyraEmailRetriesExhaustedError
from tests.test_delivery import answer


def campaign(statuses: str, **fractions) -> CampaignWait:
    """A wait on one message per character of ``statuses``: d delivered, f failed, a accepted, ? not found yet."""
    names = {"d": "DELIVERED", "f": "BOUNCE", "a": "ACCEPTED"}
    wait = CampaignWait([f"m:{n}" for n in range(len(statuses))], DeliveryRule(), **fractions)
    for n, letter in enumerate(statuses):
        if letter != "?":
            wait.record_stats(f"m:{n}", answer((f"r{n}@example.com", names[letter], "550", "no such user")))
    return wait


@pytest.mark.parametrize(
    ("statuses", "fractions", "expected"),
    [
        ("dddd", {}, "success"),
        ("ddda", {}, "waiting"),
        ("ddd?", {}, "waiting"),  # a message not found yet is a recipient in flight
        ("dfaa", {}, "failure"),  # by default one failure fails the wait at once
        ("dfaa", {"max_failed_fraction": 0.25}, "waiting"),
        ("dddf", {"max_failed_fraction": 0.25}, "success"),  # min_delivered_fraction defaults to 0.75
        ("ffaa", {"max_failed_fraction": 0.25}, "failure"),
        ("ddaa", {"min_delivered_fraction": 0.5}, "success"),  # max_failed_fraction defaults to 0.5
        ("dfff", {"min_delivered_fraction": 0.5}, "failure"),  # 0.5 of 4 can no longer be delivered
        ("dfaa", {"min_delivered_fraction": 0.5}, "waiting"),
        ("ddfa", {"min_delivered_fraction": 0.5, "max_failed_fraction": 0.1}, "failure"),
        ("ddda", {"min_delivered_fraction": 0.75, "max_failed_fraction": 0.1}, "success"),
    ],
)
def test_a_campaign_is_judged_by_its_recipients_and_thresholds(statuses, fractions, expected):
    assert campaign(statuses, **fractions).outcome().status == expected


def test_a_campaign_counts_recipients_per_status_and_names_its_failures():
    wait = campaign("dfa?")
    outcome = wait.outcome()

    assert outcome.counts == {
        "messages": 4,
        "recipients": 4,
        "delivered": 1,
        "failed": 1,
        "in_flight": 2,
        "statuses": {"DELIVERED": 1, "BOUNCE": 1, "ACCEPTED": 1},
    }
    assert outcome.failures == (
        {"message_id": "m:1", "recipient": "r1@example.com", "status": "BOUNCE", "error_code": "550",
         "error_message": "no such user"},
    )  # fmt: skip
    assert list(wait.unresolved) == ["m:2", "m:3"], "only what is unresolved is polled again"
    assert DeliveryOutcome.from_event(json.loads(json.dumps(outcome.to_event()))) == outcome


def test_a_log_row_gives_its_status_to_every_address_of_its_batch():
    wait = CampaignWait(["m:1", "m:2"], DeliveryRule())
    wait.record_rows(
        [
            {"message_id": "m:1", "to_mail": "a@example.com,b@example.com", "status": "BOUNCE", "description": "gone"},
            {"message_id": "other:1", "to_mail": "c@example.com", "status": "BOUNCE"},  # not ours
        ]
    )

    counts = wait.outcome().counts
    assert (counts["recipients"], counts["failed"], counts["in_flight"]) == (3, 2, 1)
    assert [f["recipient"] for f in wait.failures()] == ["a@example.com", "b@example.com"]
    assert {f["error_message"] for f in wait.failures()} == {"gone"}


def test_the_cheaper_way_to_poll_is_a_request_per_message_only_while_they_are_no_more_than_a_listing():
    wait = campaign("?" * 250)
    assert wait.listing_pages == 3, "before a listing: what the messages alone fill, 100 rows a page"
    assert not wait.poll_by_stats()
    for n in range(247):
        wait.record_stats(f"m:{n}", answer((f"r{n}@example.com", "DELIVERED")))
    assert wait.poll_by_stats()
    wait.record_listing([[], []])
    assert not wait.poll_by_stats()


def test_a_refusal_ends_a_campaign_and_a_transient_failure_does_not():
    wait = campaign("a?")
    busy = KaleyraEmailRetriesExhaustedError(endpoint="GET /logs", status_code=503, error_code=None, message="busy")
    wait.record_listing_error(busy)
    assert wait.outcome().status == "waiting"
    unknown = KaleyraEmailAPIError(endpoint="GET /x", status_code=404, error_code=None, message="not found")
    wait.started_at -= 1e6  # long past not_found_grace
    wait.record_error("m:1", unknown)
    assert wait.outcome().status == "error"
    assert "check the id" in wait.outcome().message


def test_the_send_window_is_the_day_before_the_wait_began_to_today():
    tz = ZoneInfo("Asia/Kolkata")
    began = datetime(2026, 11, 26, 20, 0, tzinfo=timezone.utc).timestamp()  # 27 Nov, 01:30 in Kolkata

    first, last = CampaignWait(["m:1"], DeliveryRule(), started_at=began).send_window(tz)

    assert first == date(2026, 11, 26)
    assert last == max(first, datetime.now(tz).date())
