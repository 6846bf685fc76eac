"""The delivery rule and the watch: what one answer, and a run of polls, mean. No I/O."""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest

from airflow_provider_kaleyra_email.api import MessageStatus
from airflow_provider_kaleyra_email.delivery import (
    DEFAULT_DELIVERED_STATUSES,
    DEFAULT_FAILED_STATUSES,
    Check,
    CheckKind,
    DeliveryRule,
    DeliveryWatch,
    RecipientFailure,
    Verdict,
    WatchState,
    seconds,
)
from airflow_provider_kaleyra_email.exceptions import KaleyraEmailAPIError, KaleyraEmailRetriesExhaustedError

MID = "4d0cc5e0-8324-4042-b65e-20d03420bf0d:1"


def message(*recipients: tuple[str, str] | tuple[str, str, str, str]) -> dict:
    rows = []
    for entry in recipients:
        to, status, code, text = (*entry, "", "")[:4]
        rows.append({"delivery_datetime": "", "to": to, "status": status, "error_code": code, "error_message": text})
    return {"message_id": MID, "from_mail": "a@shop.example.com", "recipients": rows}


def transient(text: str = "HTTP 503 (Service temporarily unavailable)") -> KaleyraEmailRetriesExhaustedError:
    return KaleyraEmailRetriesExhaustedError(
        endpoint=f"GET /v1/SID/email/stats/{MID}", status_code=503, error_code="E503", message=text
    )


def api_error(status: int, text: str = "Message not found") -> KaleyraEmailAPIError:
    return KaleyraEmailAPIError(
        endpoint=f"GET /v1/SID/email/stats/{MID}", status_code=status, error_code=None, message=text
    )


class TestDefaults:
    def test_the_default_classes_are_the_design_table(self):
        assert set(DEFAULT_DELIVERED_STATUSES) == {MessageStatus.DELIVERED, MessageStatus.OPEN}
        assert set(DEFAULT_FAILED_STATUSES) == {
            MessageStatus.BOUNCE,
            MessageStatus.BLOCKED,
            MessageStatus.FAILED,
            MessageStatus.SUPPRESSED,
        }

    @pytest.mark.parametrize(
        ("status", "verdict"),
        [
            ("DELIVERED", Verdict.DELIVERED),
            ("OPEN", Verdict.DELIVERED),
            ("ACCEPTED", Verdict.WAITING),
            ("DEFERRED", Verdict.WAITING),
            ("BOUNCE", Verdict.FAILED),
            ("BLOCKED", Verdict.FAILED),
            ("FAILED", Verdict.FAILED),
            ("SUPPRESSED", Verdict.FAILED),
            ("QUEUED_FOR_MARS", Verdict.WAITING),
            ("", Verdict.WAITING),
            ("delivered", Verdict.DELIVERED),
        ],
    )
    def test_one_recipient(self, status, verdict):
        assert DeliveryRule().evaluate(message(("a@example.com", status))).verdict is verdict


class TestAll:
    def test_delivered_only_when_every_recipient_is(self):
        rule = DeliveryRule.build()
        waiting = rule.evaluate(message(("a@example.com", "DELIVERED"), ("b@example.com", "ACCEPTED")))
        assert waiting.verdict is Verdict.WAITING
        assert waiting.pending == ("b@example.com (ACCEPTED)",)
        done = rule.evaluate(message(("a@example.com", "OPEN"), ("b@example.com", "DELIVERED")))
        assert done.verdict is Verdict.DELIVERED
        assert done.statuses == {"a@example.com": "OPEN", "b@example.com": "DELIVERED"}

    def test_one_failure_fails_at_once_with_kaleyras_words(self):
        evaluation = DeliveryRule.build().evaluate(
            message(("a@example.com", "ACCEPTED"), ("b@example.com", "BOUNCE", "550", "550 5.1.1 No such user"))
        )
        assert evaluation.verdict is Verdict.FAILED
        (failure,) = evaluation.failures
        assert failure == RecipientFailure("b@example.com", "BOUNCE", "550", "550 5.1.1 No such user")
        assert failure.describe() == "b@example.com is BOUNCE (Kaleyra error 550: 550 5.1.1 No such user)"

    def test_only_the_chosen_recipients_count(self):
        rule = DeliveryRule.build(recipients=["A@Example.com"])
        evaluation = rule.evaluate(message(("a@example.com", "DELIVERED"), ("b@example.com", "BOUNCE")))
        assert evaluation.verdict is Verdict.DELIVERED
        assert evaluation.statuses == {"a@example.com": "DELIVERED", "b@example.com": "BOUNCE"}

    def test_no_recipients_listed_yet_is_waiting(self):
        assert DeliveryRule().evaluate({"message_id": MID, "recipients": []}).verdict is Verdict.WAITING
        assert DeliveryRule().evaluate({"message_id": MID}).verdict is Verdict.WAITING

    def test_a_chosen_recipient_the_message_does_not_have_is_reported(self):
        evaluation = DeliveryRule.build(recipients="c@example.com").evaluate(message(("a@example.com", "DELIVERED")))
        assert evaluation.missing == ("c@example.com",)
        assert evaluation.verdict is Verdict.WAITING


class TestAny:
    def test_one_delivery_is_enough_even_beside_a_bounce(self):
        rule = DeliveryRule.build(require="any")
        evaluation = rule.evaluate(message(("a@example.com", "BOUNCE"), ("b@example.com", "DELIVERED")))
        assert evaluation.verdict is Verdict.DELIVERED

    def test_fails_only_when_every_chosen_recipient_failed(self):
        rule = DeliveryRule.build(require="any")
        assert rule.evaluate(message(("a@example.com", "BOUNCE"), ("b@example.com", "ACCEPTED"))).verdict is (
            Verdict.WAITING
        )
        failed = rule.evaluate(message(("a@example.com", "BOUNCE"), ("b@example.com", "BLOCKED", "", "invalid")))
        assert failed.verdict is Verdict.FAILED
        assert [f.status for f in failed.failures] == ["BOUNCE", "BLOCKED"]


class TestCustomStatuses:
    def test_waiting_for_an_open(self):
        rule = DeliveryRule.build(delivered_statuses=["open"])
        assert rule.evaluate(message(("a@example.com", "DELIVERED"))).verdict is Verdict.WAITING
        assert rule.evaluate(message(("a@example.com", "OPEN"))).verdict is Verdict.DELIVERED

    def test_no_failed_statuses_waits_through_a_bounce(self):
        rule = DeliveryRule.build(failed_statuses=[])
        assert rule.evaluate(message(("a@example.com", "BOUNCE"))).verdict is Verdict.WAITING

    def test_serialize_round_trips(self):
        rule = DeliveryRule.build(
            recipients=["a@example.com"],
            require="any",
            delivered_statuses=[MessageStatus.OPEN],
            failed_statuses="BOUNCE",
        )
        assert rule.serialize() == {
            "recipients": ["a@example.com"],
            "require": "any",
            "delivered_statuses": ["OPEN"],
            "failed_statuses": ["BOUNCE"],
        }
        assert DeliveryRule.build(**rule.serialize()) == rule


class TestBadArguments:
    @pytest.mark.parametrize(
        ("kwargs", "match"),
        [
            ({"require": "most"}, r"require='most' is not one of \('all', 'any'\)"),
            ({"require": "ALL"}, r"require='ALL'"),
            ({"delivered_statuses": ["DELIVERED", "BOUNCED"]}, r"delivered_statuses holds 'BOUNCED'.*BOUNCE"),
            ({"failed_statuses": [None]}, r"failed_statuses holds None"),
            ({"delivered_statuses": []}, r"delivered_statuses=\[\] is empty"),
            ({"delivered_statuses": 5}, r"delivered_statuses=5 must be a list"),
            ({"delivered_statuses": ["DELIVERED", "BOUNCE"]}, r"both hold \['BOUNCE'\]"),
            ({"recipients": []}, r"recipients=\[\] is empty; pass None"),
            ({"recipients": "not an address"}, r"recipients\[0\]='not an address'"),
            ({"recipients": ["a@example.com", 7]}, r"recipients\[1\]=7"),
            ({"recipients": "['a@example.com']"}, r"render_template_as_native_obj"),
            ({"recipients": {"a@example.com": 1}}, r"recipients=.*\(dict\) must be an email address or a list"),
        ],
    )
    def test_each_bad_argument_is_named(self, kwargs, match):
        with pytest.raises(ValueError, match=match):
            DeliveryRule.build(**kwargs)

    @pytest.mark.parametrize("value", [0, -1, float("nan"), "soon", timedelta(0)])
    def test_durations_must_be_positive(self, value):
        with pytest.raises(ValueError, match="not_found_grace="):
            seconds(value, parameter="not_found_grace")

    def test_a_timedelta_is_seconds(self):
        assert seconds(timedelta(minutes=2), parameter="x") == 120.0

    def test_recipients_are_deduplicated_without_regard_to_case(self):
        assert DeliveryRule.build(recipients=["a@example.com", "A@EXAMPLE.COM", "b@example.com"]).recipients == (
            "a@example.com",
            "b@example.com",
        )


def watch(**kwargs) -> DeliveryWatch:
    options = {"message_id": MID, "rule": DeliveryRule(), "started_at": 1000.0, "not_found_grace": 10.0}
    return DeliveryWatch(**{**options, **kwargs})


class TestWatch:
    def test_transient_errors_are_counted_and_an_answer_ends_the_streak(self):
        w = watch(max_consecutive_errors=3)
        assert w.observe_error(transient(), now=1001).kind is CheckKind.WAITING
        assert w.observe_error(transient(), now=1002).kind is CheckKind.WAITING
        assert w.state.consecutive_errors == 2
        assert w.observe_message(message(("a@example.com", "ACCEPTED"))).kind is CheckKind.WAITING
        assert w.state == WatchState()
        assert w.observe_error(transient(), now=1003).kind is CheckKind.WAITING
        assert w.observe_error(transient(), now=1004).kind is CheckKind.WAITING
        gave_up = w.observe_error(transient("HTTP 500 (boom)"), now=1005)
        assert gave_up.kind is CheckKind.ERROR
        assert "3 polls in a row failed (max_consecutive_errors=3)" in gave_up.message
        assert "HTTP 500 (boom)" in gave_up.message
        assert w.polls == 6

    def test_a_streak_handed_over_counts(self):
        w = watch(max_consecutive_errors=2, state=WatchState(consecutive_errors=1))
        assert w.observe_error(transient(), now=1001).kind is CheckKind.ERROR

    def test_a_404_is_not_visible_yet_within_the_grace_then_an_error(self):
        w = watch(not_found_grace=10.0)
        assert w.observe_error(api_error(404), now=1009.9).kind is CheckKind.WAITING
        error = w.observe_error(api_error(404), now=1010.0)
        assert error.kind is CheckKind.ERROR
        assert "still does not know message" in error.message
        assert "not_found_grace=10 s" in error.message

    def test_a_404_ends_an_error_streak(self):
        w = watch(max_consecutive_errors=2)
        w.observe_error(transient(), now=1001)
        w.observe_error(api_error(404), now=1002)
        assert w.observe_error(transient(), now=1003).kind is CheckKind.WAITING

    @pytest.mark.parametrize("status", [400, 401, 403])
    def test_other_api_errors_end_the_wait_at_once(self, status):
        check = watch().observe_error(api_error(status, "Invalid API key or SID"), now=1001)
        assert check.kind is CheckKind.ERROR
        assert f"HTTP {status}" in check.message
        assert "Invalid API key or SID" in check.message

    def test_an_error_inside_an_http_200_ends_the_wait(self):
        check = watch().observe_error(api_error(200, "Internal error while reading logs"), now=1001)
        assert check.kind is CheckKind.ERROR

    def test_failure_names_recipient_status_and_error_text(self):
        check = watch().observe_message(message(("x@example.com", "BLOCKED", "", "invalid sender domain")))
        assert check.kind is CheckKind.FAILURE
        assert check.message == (
            f"Message {MID} will not reach all of its recipients: x@example.com is BLOCKED (invalid sender domain)."
        )

    def test_a_missing_recipient_is_an_error_that_lists_the_real_ones(self):
        check = watch(rule=DeliveryRule.build(recipients=["c@example.com"])).observe_message(
            message(("a@example.com", "DELIVERED"))
        )
        assert check.kind is CheckKind.ERROR
        assert "has no recipient c@example.com; its recipients are a@example.com" in check.message

    def test_an_unknown_status_is_logged_once(self, caplog):
        w = watch(logger=logging.getLogger("test.watch"))
        with caplog.at_level(logging.INFO, logger="test.watch"):
            for _ in range(3):
                assert w.observe_message(message(("a@example.com", "TELEPORTED"))).kind is CheckKind.WAITING
        unknown = [r for r in caplog.records if "not one Kaleyra documents" in r.getMessage()]
        assert len(unknown) == 1
        assert "'TELEPORTED'" in unknown[0].getMessage()

    def test_timed_out_keeps_the_last_statuses(self):
        w = watch()
        last = w.observe_message(message(("a@example.com", "DEFERRED")))
        check = w.timed_out(last, timeout=30)
        assert check.kind is CheckKind.TIMEOUT
        assert check.statuses == {"a@example.com": "DEFERRED"}
        assert "within timeout=30 s" in check.message
        assert "a@example.com DEFERRED" in check.message


class TestEvents:
    def test_a_check_round_trips_through_a_plain_json_event(self):
        import json

        check = watch().observe_message(message(("b@example.com", "BOUNCE", "550", "No such user")))
        event = json.loads(json.dumps(check.to_event()))
        assert event["status"] == "failure"
        assert event["failures"] == [
            {"recipient": "b@example.com", "status": "BOUNCE", "error_code": "550", "error_message": "No such user"}
        ]
        assert Check.from_event(event) == check

    @pytest.mark.parametrize(
        "event",
        [None, "success", {"status": "waiting", "message_id": MID}, {"status": "delivered?"}, {}],
    )
    def test_anything_else_is_an_error_never_a_success(self, event):
        assert Check.from_event(event).kind is CheckKind.ERROR
