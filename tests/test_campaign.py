"""The campaign wait as tables: thresholds, counts, log rows, the cheaper poll, lookups, the send window. No I/O."""

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
        ("ddd?", {}, "waiting"),  # a message not found yet is a recipient not delivered yet
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
        "in_flight": 1,
        "not_found": 1,
        "statuses": {"DELIVERED": 1, "BOUNCE": 1, "ACCEPTED": 1},
    }
    assert outcome.message.endswith(": 1 of 4 recipients delivered, 1 failed, 1 in flight, 1 message not found yet.")
    assert outcome.failures == (
        {"message_id": "m:1", "recipient": "r1@example.com", "status": "BOUNCE", "error_code": "550",
         "error_message": "no such user"},
    )  # fmt: skip
    assert list(wait.unresolved) == ["m:2", "m:3"], "only what is unresolved is polled again"
    assert DeliveryOutcome.from_event(json.loads(json.dumps(outcome.to_event()))) == outcome


def test_a_log_row_gives_its_status_to_every_address_of_its_batch():
    wait = CampaignWait(["m:1", "m:2"], DeliveryRule())
    noted = wait.record_rows(
        [
            {"message_id": "m:1", "to_mail": "a@example.com,b@example.com", "status": "BOUNCE", "description": "gone"},
            {"message_id": "other:1", "to_mail": "c@example.com", "status": "BOUNCE"},  # not ours
        ]
    )

    assert noted == {"m:1"}
    counts = wait.outcome().counts
    assert (counts["recipients"], counts["failed"], counts["in_flight"], counts["not_found"]) == (3, 2, 0, 1)
    assert [f["recipient"] for f in wait.failures()] == ["a@example.com", "b@example.com"]
    assert {f["error_message"] for f in wait.failures()} == {"gone"}


def test_the_cheaper_way_to_poll_is_a_request_per_message_only_while_they_are_no_more_than_a_listing():
    wait = campaign("?" * 250)
    assert not wait.poll_by_stats(), "before a listing told its size: one page"
    for n in range(249):
        wait.record_stats(f"m:{n}", answer((f"r{n}@example.com", "DELIVERED")))
    assert wait.poll_by_stats(), "one message: one request, no more than a page"


@pytest.mark.parametrize(
    ("unresolved", "total", "reads_on", "pages"),
    [
        (100, 300_000, False, 3_000),  # a busy account: 2,999 more pages against 100 requests by id
        (100, 10_100, True, 101),  # 100 more pages, 100 requests: the listing
        (100, 10_101, False, 102),
        (5_000, 5_000, True, 50),
        (5_000, None, False, 1),  # no total: the listing's size is unknown, so it is not read on
    ],
)
def test_a_listing_is_left_after_its_first_page_when_the_rest_costs_more_than_a_request_per_message(
    unresolved, total, reads_on, pages
):
    wait = campaign("?" * unresolved)

    assert wait.take_page([], total) is reads_on
    assert wait.listing_pages == pages
    assert wait.take_page([], total), "past page 1 a listing is read to its end"
    assert wait.poll_by_stats() is (unresolved <= pages)
    if not reads_on:
        assert wait.to_look_up() == wait.message_ids, "left: every unresolved message by id"


def test_what_a_whole_listing_did_not_show_is_looked_up_longest_ago_first_and_at_most_100_a_poll():
    wait = campaign("?" * 300)
    shown = [{"message_id": "m:0", "to_mail": "a@example.com", "status": "ACCEPTED"}]
    wait.record_answers(["m:1", "m:2"], [answer(("b@example.com", "ACCEPTED")), answer(("c@example.com", "ACCEPTED"))])

    wait.take_page(shown, 1)
    first = wait.to_look_up()

    # m:0 was shown in flight (the next listing reads it again); m:1 and m:2 were looked up already.
    assert first == [f"m:{n}" for n in range(3, 103)], "never looked up first, in the order given, 100"
    wait.record_answers(first, [answer((f"x{n}@example.com", "ACCEPTED")) for n in range(100)])
    assert wait.to_look_up() == [f"m:{n}" for n in range(103, 203)], "the next poll looks up the others"
    for n in range(103, 300):
        wait.record_stats(f"m:{n}", answer((f"y{n}@example.com", "ACCEPTED")))
    assert wait.to_look_up()[:2] == ["m:1", "m:2"], "then those looked up longest ago"


def test_failures_seen_only_in_the_logs_are_the_ones_to_look_up_for_kaleyras_error():
    wait = CampaignWait(["m:1", "m:2", "m:3"], DeliveryRule(), max_failed_fraction=0.9)
    rows = [
        {"message_id": "m:1", "to_mail": "a@example.com", "status": "BOUNCE", "description": "Message has not..."},
        {"message_id": "m:2", "to_mail": "b@example.com", "status": "DELIVERED", "description": "delivered"},
    ]
    wait.record_rows(rows)
    wait.record_stats("m:3", answer(("c@example.com", "BLOCKED", "", "invalid sender domain")))

    assert wait.undetailed(wait.outcome()) == ["m:1"]
    wait.record_answers(["m:1"], [answer(("a@example.com", "BOUNCE", "550", "550 5.1.1 no such user"))], detail=True)
    assert wait.undetailed(wait.outcome()) == []
    by_id = {f["message_id"]: (f["error_code"], f["error_message"]) for f in wait.failures()}
    assert by_id == {"m:1": ("550", "550 5.1.1 no such user"), "m:3": ("", "invalid sender domain")}


def test_a_failed_detail_lookup_keeps_the_logs_text_and_does_not_end_the_wait():
    wait = CampaignWait(["m:1"], DeliveryRule(), max_failed_fraction=0.5, started_at=0)  # long past the grace
    wait.record_rows([{"message_id": "m:1", "to_mail": "a@example.com", "status": "BOUNCE", "description": "gone"}])
    gone = KaleyraEmailAPIError(endpoint="GET /x", status_code=404, error_code=None, message="not found")

    wait.record_answers(["m:1"], [gone], detail=True)

    assert wait.outcome().status == "failure"
    assert [f["error_message"] for f in wait.failures()] == ["gone"]


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
