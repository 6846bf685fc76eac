"""The delivery rule as tables: what a status, an answer and a failed poll mean, and the event. No I/O."""

from __future__ import annotations

import json
import logging
import time
import uuid
from datetime import timedelta

import pytest

from airflow_provider_kaleyra_email.delivery import DeliveryOutcome, DeliveryRule, MessageStatus, MessageWait
from airflow_provider_kaleyra_email.exceptions import (
    KaleyraEmailAPIError,
    KaleyraEmailRetriesExhaustedError,
    KaleyraEmailTransientError,
)

MID = "4d0cc5e0-8324-4042-b65e-20d03420bf0d:1"
A, B, C = "a@example.com", "b@example.com", "c@example.com"


def answer(*recipients: tuple[str, ...]) -> dict:
    """A ``stats/<message id>`` answer: (to, status[, error_code, error_message]) per recipient."""
    rows = []
    for entry in recipients:
        to, status, code, text = (*entry, "", "")[:4]
        rows.append({"delivery_datetime": "", "to": to, "status": status, "error_code": code, "error_message": text})
    return {"message_id": MID, "from_mail": "r@shop.example.com", "recipients": rows}


def wait(recipients=None, **rule) -> MessageWait:
    """A wait on MID by a rule of ``rule``'s arguments, for ``recipients``."""
    return MessageWait(MID, DeliveryRule(**rule), recipients=recipients)


def api_error(status: int | None, text: str = "Message not found", cls=KaleyraEmailAPIError) -> KaleyraEmailAPIError:
    return cls(endpoint=f"GET /v1/SID/email/stats/{MID}", status_code=status, error_code=None, message=text)


class TestMessageStatus:
    @pytest.mark.parametrize(
        ("text", "status", "delivered", "failed", "terminal"),
        [
            ("ACCEPTED", MessageStatus.ACCEPTED, False, False, False),
            ("DEFERRED", MessageStatus.DEFERRED, False, False, False),
            ("DELIVERED", MessageStatus.DELIVERED, True, False, True),
            ("OPEN", MessageStatus.OPEN, True, False, True),
            ("BOUNCE", MessageStatus.BOUNCE, False, True, True),
            ("BLOCKED", MessageStatus.BLOCKED, False, True, True),
            ("FAILED", MessageStatus.FAILED, False, True, True),
            ("SUPPRESSED", MessageStatus.SUPPRESSED, False, True, True),
            (" bounce ", MessageStatus.BOUNCE, False, True, True),
            ("Open", MessageStatus.OPEN, True, False, True),
        ],
    )
    def test_each_status_knows_what_it_means(self, text, status, delivered, failed, terminal):
        parsed = MessageStatus.parse(text)
        assert parsed is status
        assert (parsed.is_delivered, parsed.is_failed, parsed.is_terminal) == (delivered, failed, terminal)

    def test_the_enum_is_the_design_table(self):
        assert sorted(MessageStatus.__members__) == [
            "ACCEPTED", "BLOCKED", "BOUNCE", "DEFERRED", "DELIVERED", "FAILED", "OPEN", "SUPPRESSED",
        ]  # fmt: skip

    @pytest.mark.parametrize("text", [None, "", "   "])
    def test_no_status_yet_is_in_flight_and_not_a_warning(self, text, caplog):
        with caplog.at_level(logging.WARNING, logger="airflow_provider_kaleyra_email.delivery"):
            assert MessageStatus.parse(text) is None
        assert caplog.records == []

    def test_an_unknown_status_is_in_flight_and_logged_once(self, caplog):
        name = f"TELEPORTED_{uuid.uuid4().hex[:8]}".upper()  # the log-once memory lasts the whole process
        with caplog.at_level(logging.WARNING, logger="airflow_provider_kaleyra_email.delivery"):
            outcomes = [wait().judge(answer((A, name.lower()))).status for _ in range(3)]
        assert outcomes == ["waiting"] * 3
        assert [r.getMessage() for r in caplog.records if name in r.getMessage()] == [
            f"Kaleyra status '{name}' is not one it documents; treating it as still in flight."
        ]


#: (the wait's arguments, the answer's recipients, the outcome): the rule of delivery.py's docstring.
RULE_TABLE = [
    ({}, [(A, "DELIVERED")], "success"),
    ({}, [(A, "OPEN")], "success"),
    ({}, [(A, "delivered")], "success"),
    ({}, [(A, "ACCEPTED")], "waiting"),
    ({}, [(A, "DEFERRED")], "waiting"),
    ({}, [(A, "QUEUED_FOR_MARS")], "waiting"),
    ({}, [(A, "")], "waiting"),
    ({}, [(A, "BOUNCE")], "failure"),
    ({}, [(A, "BLOCKED")], "failure"),
    ({}, [(A, "FAILED")], "failure"),
    ({}, [(A, "SUPPRESSED")], "failure"),
    ({}, [], "waiting"),
    ({}, [(A, "DELIVERED"), (B, "ACCEPTED")], "waiting"),
    ({}, [(A, "OPEN"), (B, "DELIVERED")], "success"),
    ({}, [(A, "ACCEPTED"), (B, "BOUNCE")], "failure"),
    ({"recipients": "A@Example.com"}, [(A, "DELIVERED"), (B, "BOUNCE")], "success"),
    ({"recipients": [B]}, [(A, "DELIVERED"), (B, "DEFERRED")], "waiting"),
    ({"recipients": [C]}, [(A, "DELIVERED")], "error"),
    ({"recipients": [C]}, [], "waiting"),
    ({"require": "any"}, [(A, "BOUNCE"), (B, "DELIVERED")], "success"),
    ({"require": "any"}, [(A, "BOUNCE"), (B, "ACCEPTED")], "waiting"),
    ({"require": "any"}, [(A, "BOUNCE"), (B, "BLOCKED")], "failure"),
    ({"require": "any", "recipients": [A, C]}, [(A, "BOUNCE"), (B, "DELIVERED")], "error"),
    ({"delivered_statuses": ["open"]}, [(A, "DELIVERED")], "waiting"),
    ({"delivered_statuses": "OPEN"}, [(A, "OPEN")], "success"),
    ({"failed_statuses": []}, [(A, "BOUNCE")], "waiting"),
    ({"failed_statuses": ["BOUNCE"]}, [(A, "BLOCKED")], "waiting"),
]


class TestOneAnswer:
    @pytest.mark.parametrize(("rule", "recipients", "expected"), RULE_TABLE)
    def test_the_rule(self, rule, recipients, expected):
        assert wait(**rule).judge(answer(*recipients)).status == expected

    def test_every_recipient_and_its_status_is_reported_not_only_the_chosen_ones(self):
        outcome = wait(recipients=[A]).judge(answer((A, "DELIVERED"), (B, "BOUNCE")))
        assert outcome == DeliveryOutcome(
            "success", MID, f"Message {MID} reached all of a@example.com: {A} DELIVERED, {B} BOUNCE.", {A: "DELIVERED", B: "BOUNCE"}
        )  # fmt: skip

    def test_a_failure_names_recipient_status_and_kaleyras_words(self):
        outcome = wait().judge(answer((A, "ACCEPTED"), (B, "BOUNCE", "550", "550 5.1.1 No such user")))
        assert outcome.status == "failure"
        assert outcome.failures == (
            {"recipient": B, "status": "BOUNCE", "error_code": "550", "error_message": "550 5.1.1 No such user"},
        )
        assert outcome.message == (
            f"Message {MID} will not reach all of its recipients: {B} is BOUNCE (Kaleyra error 550: 550 5.1.1 No such user)."
        )

    @pytest.mark.parametrize(
        ("code", "text", "said"),
        [("", "invalid sender domain", "(invalid sender domain)"), ("550", "", "(Kaleyra error 550)"), ("", "", "(Kaleyra gave no error text)")],
    )  # fmt: skip
    def test_whatever_kaleyra_said_is_quoted(self, code, text, said):
        outcome = wait().judge(answer((A, "BLOCKED", code, text)))
        assert outcome.message.endswith(f"{A} is BLOCKED {said}.")

    def test_a_missing_recipient_is_an_error_that_lists_the_real_ones(self):
        outcome = wait(recipients=[C]).judge(answer((A, "DELIVERED")))
        assert outcome.status == "error"
        assert f"has no recipient {C}; it has {A} DELIVERED" in outcome.message

    def test_waiting_says_for_whom(self):
        outcome = wait().judge(answer((A, "DELIVERED"), (B, "DEFERRED"), (C, "")))
        assert outcome.message == f"waiting for {B} (DEFERRED), {C} (no status)"

    def test_rows_without_an_address_are_ignored(self):
        message = {
            "recipients": [{"to": " ", "status": "BOUNCE"}, "junk", {"status": "BOUNCE"}, {"to": A, "status": "OPEN"}]
        }
        assert wait().judge(message).statuses == {A: "OPEN"}


#: (the poll's error, seconds into the wait, the outcome), with not_found_grace=10.
ERROR_TABLE = [
    (api_error(503, "Service unavailable", KaleyraEmailTransientError), 0.0, "waiting"),
    (api_error(429, "Too many requests", KaleyraEmailTransientError), 5000.0, "waiting"),
    (api_error(None, "timed out", KaleyraEmailRetriesExhaustedError), 5000.0, "waiting"),
    (api_error(404), 0.0, "waiting"),
    (api_error(404), 9.9, "waiting"),
    (api_error(404), 10.0, "error"),
    (api_error(400, "Bad request"), 0.0, "error"),
    (api_error(401, "Invalid API key or SID"), 0.0, "error"),
    (api_error(403, "Forbidden"), 0.0, "error"),
    (api_error(200, "Internal error while reading logs"), 0.0, "error"),
    (api_error(302, "redirect not followed"), 0.0, "error"),
]


class TestOneFailedPoll:
    @pytest.mark.parametrize(("error", "waited", "expected"), ERROR_TABLE)
    def test_the_rule(self, error, waited, expected):
        assert DeliveryRule(not_found_grace=10).judge_error(MID, error, waited=waited).status == expected

    def test_no_streak_of_transient_failures_ends_the_wait_by_itself(self, caplog):
        rule, error = DeliveryRule(), api_error(500, "boom", KaleyraEmailTransientError)
        with caplog.at_level(logging.WARNING, logger="airflow_provider_kaleyra_email.delivery"):
            outcomes = {rule.judge_error(MID, error, waited=float(n)).status for n in range(1_000)}
        assert outcomes == {"waiting"}
        assert len(caplog.records) == 1_000
        assert "still waiting" in caplog.records[0].getMessage()
        assert "HTTP 500" in caplog.records[0].getMessage()

    def test_a_404_past_the_grace_says_so_and_what_kaleyra_said(self):
        outcome = DeliveryRule(not_found_grace=timedelta(seconds=10)).judge_error(MID, api_error(404), waited=12.4)
        assert outcome.message.startswith(
            f"Kaleyra still does not know message {MID} 12 s into the wait (not_found_grace=10 s); check the id."
        )
        assert "HTTP 404" in outcome.message
        assert "Message not found" in outcome.message

    @pytest.mark.parametrize("status", [400, 401, 403])
    def test_a_refusal_names_its_status_and_text(self, status):
        outcome = DeliveryRule().judge_error(MID, api_error(status, "Invalid API key or SID"), waited=0)
        assert f"HTTP {status}" in outcome.message
        assert "Invalid API key or SID" in outcome.message


class TestArguments:
    @pytest.mark.parametrize(
        ("kwargs", "match"),
        [
            ({"require": "most"}, r"require='most' is not one of \('all', 'any'\)"),
            ({"require": "ALL"}, r"require='ALL'"),
            ({"delivered_statuses": ["DELIVERED", "BOUNCED"]}, r"delivered_statuses holds 'BOUNCED'.*BOUNCE"),
            ({"failed_statuses": [None]}, r"failed_statuses holds None"),
            ({"delivered_statuses": []}, r"delivered_statuses=\[\] is empty"),
            ({"delivered_statuses": 5}, r"delivered_statuses holds 5"),
            ({"delivered_statuses": {"OPEN": 1}}, r"delivered_statuses holds \{'OPEN': 1\}"),
            ({"delivered_statuses": ["DELIVERED", "BOUNCE"]}, r"both hold \['BOUNCE'\]"),
            ({"recipients": []}, r"recipients=\[\] is not an address .*pass None for all"),
            ({"recipients": "not an address"}, r"recipients\[0\]='not an address'"),
            ({"recipients": [A, 7]}, r"recipients\[1\]=7"),
            ({"recipients": "['a@example.com']"}, r"render_template_as_native_obj"),
            ({"recipients": {A: 1}}, r"recipients\[0\]=\{'a@example.com': 1\} is not an email address"),
            ({"not_found_grace": 0}, r"not_found_grace=0"),
            ({"not_found_grace": timedelta(seconds=-5)}, r"not_found_grace=-5"),
            ({"not_found_grace": "soon"}, r"not_found_grace='soon'"),
        ],
    )
    def test_each_bad_argument_is_named(self, kwargs, match):
        with pytest.raises(ValueError, match=match):
            wait(**kwargs)

    def test_statuses_are_names_in_any_case_or_members(self):
        rule = DeliveryRule(delivered_statuses=[" open", MessageStatus.DELIVERED], failed_statuses=("bounce",))
        assert rule.delivered == {MessageStatus.OPEN, MessageStatus.DELIVERED}
        assert rule.failed == {MessageStatus.BOUNCE}

    def test_recipients_are_deduplicated_without_regard_to_case(self):
        assert wait(recipients=[A, "A@EXAMPLE.COM", B]).recipients == (A, B)

    def test_serialize_is_plain_json_that_rebuilds_the_wait(self):
        kwargs = wait(
            recipients=[A], require="any", delivered_statuses=[MessageStatus.OPEN], failed_statuses="BOUNCE",
            not_found_grace=timedelta(minutes=1),
        ).serialize()  # fmt: skip
        assert json.loads(json.dumps(kwargs)) == kwargs == {
            "message_id": MID, "recipients": [A], "require": "any", "delivered_statuses": ["OPEN"],
            "failed_statuses": ["BOUNCE"], "not_found_grace": 60.0,
        }  # fmt: skip
        assert wait(**{k: v for k, v in kwargs.items() if k != "message_id"}).serialize() == kwargs


class TestOutcome:
    def test_a_failure_round_trips_through_a_plain_json_event(self):
        outcome = wait().judge(answer((B, "BOUNCE", "550", "No such user")))
        event = json.loads(json.dumps(outcome.to_event()))
        assert event == {
            "status": "failure",
            "message_id": MID,
            "message": f"Message {MID} will not reach all of its recipients: {B} is BOUNCE (Kaleyra error 550: No such user).",
            "statuses": {B: "BOUNCE"},
            "failures": [{"recipient": B, "status": "BOUNCE", "error_code": "550", "error_message": "No such user"}],
        }
        assert DeliveryOutcome.from_event(event) == outcome

    def test_an_event_of_the_earlier_release_still_reads(self):
        event = {"status": "success", "message_id": MID, "message": "reached", "statuses": {A: "OPEN"}, "failures": []}
        assert DeliveryOutcome.from_event(event) == DeliveryOutcome("success", MID, "reached", {A: "OPEN"})

    def test_parts_of_an_event_that_are_not_objects_are_dropped_not_raised(self):
        event = {"status": "failure", "message_id": MID, "message": "bounced", "statuses": ["a"], "counts": 3}
        outcome = DeliveryOutcome.from_event({**event, "failures": ["junk", {"recipient": B}]})
        assert (outcome.status, outcome.statuses, outcome.counts) == ("failure", None, None)
        assert outcome.failures == ({"recipient": B},)

    @pytest.mark.parametrize(
        "event",
        [None, "success", {}, {"status": "waiting", "message_id": MID}, {"status": "delivered?"}, {"status": None}],
    )
    def test_anything_but_a_final_outcome_is_an_error_never_a_success(self, event):
        outcome = DeliveryOutcome.from_event(event)
        assert outcome.status == "error"
        assert "no final status" in outcome.message

    def test_a_timeout_keeps_what_the_last_check_at_the_deadline_saw(self):
        last = wait().judge(answer((A, "DEFERRED")))
        assert last.timed_out(None, 0.0) is last.timed_out(time.time() + 60, 0.0) is last, "no deadline, or not yet"
        timed_out = last.timed_out(100.0, 70.0)
        assert timed_out == DeliveryOutcome(
            "timeout", MID, f"Message {MID} was not delivered within timeout=30 s (the last check: {A} DEFERRED).", {A: "DEFERRED"}
        )  # fmt: skip
        assert timed_out.done
        assert not last.done

    def test_a_timeout_after_failed_polls_says_what_failed(self):
        last = wait().judge(api_error(503, "Service unavailable", KaleyraEmailTransientError))
        assert "(the last check: the poll failed: GET /v1/SID/email/stats/" in last.timed_out(3.0, 0.0).message
