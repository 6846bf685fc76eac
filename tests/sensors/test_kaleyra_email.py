"""
KaleyraEmailMessageDeliveredSensor against the emulator: real DAG runs in poke, reschedule and
deferrable mode (the trigger runs in-process, as ``dag.test()`` does), and direct calls for the
edges.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import json
import os
import time
import uuid
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import pytest
from airflow import __version__ as airflow_version
from airflow.providers.common.compat.sdk import (
    AirflowFailException,
    AirflowSensorTimeout,
    AirflowSkipException,
    TaskDeferred,
)

from airflow_provider_kaleyra_email.exceptions import KaleyraEmailWaitError
from airflow_provider_kaleyra_email.sensors.kaleyra_email import KaleyraEmailMessageDeliveredSensor
from airflow_provider_kaleyra_email.testing import DEFAULT_API_KEY, Faults, KaleyraEmailEmulator
from airflow_provider_kaleyra_email.triggers.kaleyra_email import KaleyraEmailMessageDeliveredTrigger
from tests.dag_files.wait_for_delivery import (
    DAGS,
    NOT_FOUND_GRACE,
    PATIENT,
    POKE_INTERVAL,
    SLOW_TO_SHOW,
    TIMEOUT,
    wait_with_retries,
)
from tests.dags import run_dag, xcom_value

MODES = list(DAGS)
AIRFLOW_2 = airflow_version.startswith("2.")
_dates = itertools.count()


def send(emulator: KaleyraEmailEmulator, *to: str) -> str:
    """One message accepted by the emulator, straight into its data set (no POST to count or fault)."""
    (message_id,) = emulator.dataset.send(from_mail="reports@shop.example.com", to=list(to), subject="s").message_ids()
    return message_id


def run_wait(mode: str, message_id: str, dag=None):
    """One DAG run of the sensor; a fresh logical date each time, so runs never collide."""
    logical_date = datetime(2026, 11, 2, tzinfo=timezone.utc) + timedelta(minutes=next(_dates))
    dag_run = run_dag(dag or DAGS[mode], logical_date, run_conf={"message_id": message_id})
    (ti,) = dag_run.get_task_instances()
    return dag_run, ti


def polls(emulator: KaleyraEmailEmulator, message_id: str):
    return emulator.requests_to(f"/stats/{message_id}")


@pytest.fixture(scope="module")
def warmed_up(airflow_db):
    """
    The first ``dag.test()`` in a process pays for Airflow's start-up (about 11 s on Airflow 3).
    Pay it here, so that in the tests the sensor's first poke comes right after the send.
    """
    with KaleyraEmailEmulator() as emulator:
        previous = os.environ.get("AIRFLOW_CONN_KALEYRA_EMAIL_DEFAULT")
        os.environ["AIRFLOW_CONN_KALEYRA_EMAIL_DEFAULT"] = emulator.connection_json()
        try:
            for mode in MODES:
                run_wait(mode, send(emulator, "x.fail@example.com"))
        finally:
            if previous is None:
                del os.environ["AIRFLOW_CONN_KALEYRA_EMAIL_DEFAULT"]
            else:
                os.environ["AIRFLOW_CONN_KALEYRA_EMAIL_DEFAULT"] = previous


# ------------------------------------------------------------------------------------------
# Real DAG runs, in every mode
# ------------------------------------------------------------------------------------------


@pytest.mark.usefixtures("warmed_up", "kaleyra_email_connection")
@pytest.mark.parametrize("mode", MODES)
class TestModes:
    def test_waits_through_not_visible_yet_and_returns_the_statuses(self, mode, kaleyra_email_emulator):
        # Invisible for 3 s (the DAG's not_found_grace is 10 s), so that the first poke lands
        # there even on a loaded machine.
        kaleyra_email_emulator.dataset.send_visibility_delay = 3.0
        message_id = send(kaleyra_email_emulator, "ops@example.com")

        dag_run, ti = run_wait(mode, message_id, dag=SLOW_TO_SHOW[mode])

        assert ti.state == "success"
        assert xcom_value(dag_run, "wait") in ({"ops@example.com": "DELIVERED"}, {"ops@example.com": "OPEN"})
        statuses = [p.status for p in polls(kaleyra_email_emulator, message_id)]
        assert statuses[0] == 404, "sent a moment ago: not visible yet, which is not an error"
        assert statuses[-1] == 200
        assert all(p.api_key_ok for p in polls(kaleyra_email_emulator, message_id))

    @pytest.mark.parametrize(
        ("address", "words"),
        [
            ("x.bounce@example.com", "x.bounce@example.com is BOUNCE (Kaleyra error 550: 550 5.1.1 The email account"),
            ("x.block@example.com", "x.block@example.com is BLOCKED (invalid sender domain)"),
        ],
    )
    def test_a_terminal_status_fails_at_once_with_kaleyras_error_text(
        self, mode, kaleyra_email_emulator, capfd, address, words
    ):
        message_id = send(kaleyra_email_emulator, address)

        dag_run, ti = run_wait(mode, message_id)

        assert ti.state == "failed"
        out, err = capfd.readouterr()
        assert words in out + err
        assert xcom_value(dag_run, "wait") is None
        # It stopped at the first answer that showed the failure: well before the timeout.
        span = polls(kaleyra_email_emulator, message_id)[-1].at - polls(kaleyra_email_emulator, message_id)[0].at
        assert span < TIMEOUT

    def test_a_streak_of_5xx_is_waited_through_within_the_timeout(self, mode, kaleyra_email_emulator):
        message_id = send(kaleyra_email_emulator, "ops@example.com")
        streak = 5  # no streak of failed polls ends a wait: timeout alone bounds it
        kaleyra_email_emulator.queue_faults(*["503"] * streak)

        dag_run, ti = run_wait(mode, message_id, dag=PATIENT[mode])

        assert ti.state == "success"
        assert xcom_value(dag_run, "wait") in ({"ops@example.com": "DELIVERED"}, {"ops@example.com": "OPEN"})
        statuses = [p.status for p in polls(kaleyra_email_emulator, message_id)]
        assert statuses[:streak] == [503] * streak
        assert statuses[-1] == 200

    def test_an_api_that_keeps_failing_is_waited_on_until_the_timeout(self, mode, kaleyra_email_emulator, capfd):
        message_id = send(kaleyra_email_emulator, "ops@example.com")
        kaleyra_email_emulator.set_faults(Faults(server_errors=1.0))

        _, ti = run_wait(mode, message_id)

        assert ti.state == "failed"
        seen = polls(kaleyra_email_emulator, message_id)
        assert {p.status for p in seen} <= {500, 503}
        assert len(seen) >= 4, "polled on through the failures (reschedules come about 1 s apart)"
        # Polled until the deadline (a last check there included), and not much longer.
        assert TIMEOUT * 0.9 <= seen[-1].at - seen[0].at < TIMEOUT + POKE_INTERVAL + 2
        out, err = capfd.readouterr()
        assert "timed out" in (out + err) or "within timeout=" in (out + err)

    def test_a_404_past_the_grace_is_an_error(self, mode, kaleyra_email_emulator, capfd):
        unknown = f"{uuid.uuid4()}:1"

        _, ti = run_wait(mode, unknown)

        assert ti.state == "failed"
        seen = polls(kaleyra_email_emulator, unknown)
        assert {p.status for p in seen} == {404}
        assert len(seen) >= 2
        assert seen[-1].at - seen[0].at >= NOT_FOUND_GRACE * 0.9
        out, err = capfd.readouterr()
        if mode == "reschedule" and AIRFLOW_2:
            # dag.test() on 2.11 leaves the task instance's start_date unset (a scheduler sets it), so
            # the wait's start is unknown: the documented fallback waits on the 404 until the timeout.
            assert "timed out" in out + err
            assert seen[-1].at - seen[0].at >= TIMEOUT * 0.9
        else:
            assert f"Kaleyra still does not know message {unknown}" in out + err

    def test_a_trickling_api_cannot_stretch_the_wait_past_its_bounds(
        self, mode, kaleyra_email_emulator, monkeypatch, capfd
    ):
        # Every answer trickles in a byte every 0.5 s; each poll gives up after the 1 s timeout.
        monkeypatch.setenv("AIRFLOW_CONN_KALEYRA_EMAIL_DEFAULT", kaleyra_email_emulator.connection_json(timeout=1))
        message_id = send(kaleyra_email_emulator, "x.slow@example.com")
        kaleyra_email_emulator.set_faults(Faults(trickle_seconds=0.5))
        kaleyra_email_emulator.queue_faults(*["trickle"] * 50)
        started = time.monotonic()

        _, ti = run_wait(mode, message_id)

        assert ti.state == "failed"
        out, err = capfd.readouterr()
        assert "timed out" in (out + err) or "within timeout=" in (out + err), "failed by its timeout"
        first = polls(kaleyra_email_emulator, message_id)[0].at
        # The wait ends within its timeout plus one poke interval and one request timeout (plus
        # 2 s for dag.test() to re-run a rescheduled task), where one trickled answer takes minutes.
        assert time.monotonic() - first < TIMEOUT + POKE_INTERVAL + 1 + 2
        assert time.monotonic() - started < 30

    def test_times_out_after_one_last_check(self, mode, kaleyra_email_emulator, capfd):
        message_id = send(kaleyra_email_emulator, "x.slow@example.com")  # delivered after 10 s

        _, ti = run_wait(mode, message_id)

        assert ti.state == "failed"
        seen = polls(kaleyra_email_emulator, message_id)
        # The last check comes at (or just after) the deadline, and Kaleyra answered it.
        assert seen[-1].at - seen[0].at >= TIMEOUT * 0.9
        assert seen[-1].status == 200
        out, err = capfd.readouterr()
        assert "timed out" in (out + err) or "within timeout=" in (out + err)

    def test_a_campaign_sent_30_days_ago_resolves_at_the_first_poll(self, mode, kaleyra_email_emulator):
        sent_at = datetime.now(timezone.utc) - timedelta(days=30)
        to = [f"reader{n}@example.com" for n in range(20)]
        ids = kaleyra_email_emulator.dataset.send(from_mail="a@shop.example.com", to=to, subject="s", sent_at=sent_at)

        dag_run, ti = run_wait(mode, ids.message_ids())

        assert ti.state == "success"
        result = xcom_value(dag_run, "wait")
        assert (result["messages"], result["delivered"], result["in_flight"], result["not_found"]) == (20, 20, 0, 0)
        looked_up = [r.path.rsplit("/", 1)[-1] for r in kaleyra_email_emulator.requests if "/stats/" in r.path]
        assert sorted(looked_up) == sorted(ids.message_ids()), "each looked up once: resolved at the first poll"
        assert len([r for r in kaleyra_email_emulator.requests_to("/logs") if r.query["page"] == ["1"]]) <= 1

    @pytest.mark.kaleyra_email_emulator(background_rows_per_day=300_000)
    def test_a_campaign_on_a_busy_account_costs_what_its_messages_need(self, mode, kaleyra_email_emulator):
        dataset = kaleyra_email_emulator.dataset
        dataset.send_time_scale, dataset.send_visibility_delay = 1_000, 0  # in flight for hours, known at once
        ids = dataset.send(from_mail="a@shop.example.com", to=[f"r{n}@example.com" for n in range(100)], subject="s")
        today = dataset.local_now().date()
        assert len(dataset.listing(today - timedelta(days=1), today)) > 300_000, "the send window's listing"

        _, ti = run_wait(mode, ids.message_ids())

        assert ti.state == "failed", "timed out: every message stays in flight"
        requests = list(kaleyra_email_emulator.requests)
        per_id = collections.Counter(r.path.rsplit("/", 1)[-1] for r in requests if "/stats/" in r.path)
        assert set(per_id) == set(ids.message_ids())
        (polls_made,) = set(per_id.values())  # every poll asks for each message once
        assert polls_made >= 2
        listings = [r.query["page"] for r in requests if r.path.endswith("/logs")]
        # Only first pages, one at most per poll (a wait that has not listed yet: the first poke's,
        # deferred the trigger's first poll's, and every rescheduled poke's, a new wait each time):
        # each poll costs at most 1 + 100 requests, not 4,700 pages.
        assert listings == [["1"]] * len(listings)
        assert 1 <= len(listings) <= {"poke": 1, "deferrable": 2}.get(mode, polls_made)


@pytest.mark.usefixtures("warmed_up", "kaleyra_email_connection")
def test_a_terminal_status_spends_no_retry(kaleyra_email_emulator):
    message_id = send(kaleyra_email_emulator, "x.bounce@example.com")

    _, ti = run_wait("deferrable", message_id, dag=wait_with_retries)

    assert ti.state == "failed"
    assert ti.try_number == 1
    assert ti.max_tries == 2


# ------------------------------------------------------------------------------------------
# Direct calls
# ------------------------------------------------------------------------------------------


def sensor(**kwargs) -> KaleyraEmailMessageDeliveredSensor:
    options = {"task_id": "wait", "message_id": "4d0cc5e0-8324-4042-b65e-20d03420bf0d:1", "poke_interval": 0.1}
    return KaleyraEmailMessageDeliveredSensor(**{**options, **kwargs})


class TestArguments:
    @pytest.mark.parametrize(
        ("kwargs", "match"),
        [
            ({"require": "every"}, r"require='every' is not one of \('all', 'any'\)"),
            ({"delivered_statuses": ["DELIVERED", "READ"]}, r"delivered_statuses holds 'READ'"),
            ({"failed_statuses": ["BOUNCE", "OPEN"]}, r"both hold \['OPEN'\]"),
            ({"delivered_statuses": []}, r"delivered_statuses=\[\] is empty"),
            ({"not_found_grace": 0}, r"not_found_grace=0"),
            ({"not_found_grace": timedelta(seconds=-5)}, r"not_found_grace=-5"),
            ({"poke_interval": 0}, r"poke_interval=0.0 must be positive"),
        ],
    )
    def test_bad_arguments_fail_at_parse_time(self, kwargs, match):
        with pytest.raises(ValueError, match=match):
            sensor(**kwargs)

    def test_the_arguments_stay_readable_as_attributes_normalised(self):
        made = sensor(require="any", delivered_statuses=[" open"], failed_statuses=("bounce",), not_found_grace=30)
        assert (made.require, made.delivered_statuses, made.failed_statuses) == ("any", ["OPEN"], ["BOUNCE"])
        assert made.not_found_grace == 30.0

    @pytest.mark.parametrize(
        ("kwargs", "match"),
        [
            ({"message_id": ""}, r"message_id='' is empty"),
            ({"message_id": "['abc:1', 'abc:2']"}, r"message_id=.*holds characters"),
            ({"message_id": "../stats"}, r"message_id='../stats'"),
            ({"message_id": None}, r"message_id=None \(NoneType\)"),
            ({"recipients": "ops at example.com"}, r"recipients\[0\]='ops at example.com'"),
            ({"recipients": []}, r"recipients=\[\] is not an address"),
        ],
    )
    @pytest.mark.parametrize("deferrable", [False, True])
    def test_bad_rendered_values_fail_before_any_request(
        self, kaleyra_email_connection, kaleyra_email_emulator, kwargs, match, deferrable
    ):
        with pytest.raises(ValueError, match=match):
            sensor(deferrable=deferrable, **kwargs).execute({})
        assert len(kaleyra_email_emulator.requests) == 0

    def test_what_is_templated(self):
        assert set(KaleyraEmailMessageDeliveredSensor.template_fields) == {
            "message_id",
            "recipients",
            "search",
            "output_path",
            "output_conn_id",
            "kaleyra_email_conn_id",
        }

    def test_deferrable_defaults_to_airflows_setting(self):
        assert sensor().deferrable is False


@pytest.mark.usefixtures("kaleyra_email_connection")
class TestPokeDirectly:
    def test_a_bounce_raises_airflow_fail_exception_naming_recipient_status_and_text(self, kaleyra_email_emulator):
        message_id = send(kaleyra_email_emulator, "x.bounce@example.com")

        with pytest.raises(AirflowFailException) as failure:
            sensor(message_id=message_id).execute({})

        assert str(failure.value) == (
            f"Message {message_id} will not reach all of its recipients: x.bounce@example.com is BOUNCE "
            "(Kaleyra error 550: 550 5.1.1 The email account that you tried to reach does not exist.)."
        )

    def test_soft_fail_turns_a_bounce_into_a_skip(self, kaleyra_email_emulator):
        message_id = send(kaleyra_email_emulator, "x.bounce@example.com")

        with pytest.raises(AirflowSkipException, match=r"x\.bounce@example\.com is BOUNCE"):
            sensor(message_id=message_id, soft_fail=True).execute({})

    def test_only_the_chosen_recipient_counts(self, kaleyra_email_emulator):
        (first, second) = kaleyra_email_emulator.dataset.send(
            from_mail="r@shop.example.com", to=["ops@example.com", "x.bounce@example.com"], subject="s"
        ).message_ids()

        assert sensor(message_id=first, recipients="OPS@example.com").execute({}) == {"ops@example.com": "DELIVERED"}
        with pytest.raises(KaleyraEmailWaitError, match=r"has no recipient ops@example\.com"):
            sensor(message_id=second, recipients=["ops@example.com"]).execute({})

    def test_waiting_for_an_open(self, kaleyra_email_emulator):
        message_id = send(kaleyra_email_emulator, "ops@example.com")  # opened about 4 s after the send

        result = sensor(message_id=message_id, delivered_statuses=["OPEN"], poke_interval=0.5).execute({})

        assert result == {"ops@example.com": "OPEN"}

    def test_a_wrong_key_is_an_error_at_once_without_the_key(self, kaleyra_email_emulator, monkeypatch):
        connection = kaleyra_email_emulator.connection()
        connection["password"] = "wrong-key-0123456789"
        monkeypatch.setenv("AIRFLOW_CONN_KALEYRA_EMAIL_DEFAULT", json.dumps(connection))

        with pytest.raises(KaleyraEmailWaitError, match="HTTP 401") as error:
            sensor(message_id=send(kaleyra_email_emulator, "ops@example.com")).execute({})

        assert "wrong-key-0123456789" not in str(error.value)
        assert len(kaleyra_email_emulator.requests) == 1


@pytest.mark.usefixtures("kaleyra_email_connection")
class TestWhenTheWaitBegan:
    """The 404 grace counts from the start of the wait, read only through public task instance attributes."""

    @pytest.mark.parametrize(
        ("task_instance", "began_seconds_ago", "ends"),
        [
            ("airflow_3", 2, False),
            ("airflow_3", 30, True),
            ("airflow_2", 2, False),
            ("airflow_2", 30, True),
            ("airflow_3_first_poke", None, False),
            ("unknown", None, False),
        ],
    )
    def test_in_reschedule_mode_it_is_the_first_poke_airflow_recorded(self, task_instance, began_seconds_ago, ends):
        began = None if began_seconds_ago is None else datetime.now(timezone.utc) - timedelta(seconds=began_seconds_ago)
        ti = {
            "airflow_3": SimpleNamespace(
                get_first_reschedule_date=lambda context: began, start_date=datetime.now(timezone.utc)
            ),
            "airflow_3_first_poke": SimpleNamespace(get_first_reschedule_date=lambda context: None, start_date=None),
            "airflow_2": SimpleNamespace(start_date=began),
            "unknown": SimpleNamespace(),
        }[task_instance]
        waiting = sensor(message_id=f"{uuid.uuid4()}:1", mode="reschedule", not_found_grace=10)

        if ends:
            with pytest.raises(KaleyraEmailWaitError, match=r"still does not know message .* 30 s into the wait"):
                waiting.poke({"ti": ti})
        else:
            assert waiting.poke({"ti": ti}).is_done is False

    def test_in_poke_mode_it_is_the_start_of_execute_whatever_the_task_instance_says(self, kaleyra_email_emulator):
        long_ago = SimpleNamespace(start_date=datetime(2020, 1, 1, tzinfo=timezone.utc))
        unknown = f"{uuid.uuid4()}:1"

        with pytest.raises(KaleyraEmailWaitError, match=r"still does not know message .* 1 s into the wait"):
            sensor(message_id=unknown, not_found_grace=1, poke_interval=0.3, timeout=10).execute({"ti": long_ago})

        assert len(polls(kaleyra_email_emulator, unknown)) >= 3


@pytest.mark.usefixtures("kaleyra_email_connection")
class TestDeferrableDirectly:
    def test_a_failed_first_poke_is_not_yet_and_defers_with_the_start_of_the_wait(self, kaleyra_email_emulator):
        message_id = send(kaleyra_email_emulator, "ops@example.com")
        kaleyra_email_emulator.queue_faults("503")
        before = time.time()

        with pytest.raises(TaskDeferred) as deferred:
            sensor(
                message_id=message_id, deferrable=True, timeout=30, not_found_grace=7, recipients="OPS@example.com"
            ).execute({})

        assert len(polls(kaleyra_email_emulator, message_id)) == 1
        trigger = deferred.value.trigger
        assert isinstance(trigger, KaleyraEmailMessageDeliveredTrigger)
        assert deferred.value.method_name == "execute_complete"
        classpath, kwargs = trigger.serialize()
        assert classpath == "airflow_provider_kaleyra_email.triggers.kaleyra_email.KaleyraEmailMessageDeliveredTrigger"
        assert set(kwargs) == {
            "message_id", "kaleyra_email_conn_id", "recipients", "require", "delivered_statuses", "failed_statuses",
            "not_found_grace", "poke_interval", "started_at", "end_time", "first_poll_at",
        }  # fmt: skip
        assert kwargs["message_id"] == message_id
        assert kwargs["recipients"] == ["OPS@example.com"]
        assert kwargs["not_found_grace"] == 7
        # The 404 grace and the timeout count from the sensor's first poke, not from the deferral.
        assert kwargs["end_time"] - kwargs["started_at"] == pytest.approx(30)
        assert before <= kwargs["started_at"] <= time.time()
        # Its own check just happened: the trigger's first poll is one poke interval later.
        assert kwargs["first_poll_at"] == pytest.approx(kwargs["started_at"] + 0.1, abs=0.5)
        assert DEFAULT_API_KEY not in json.dumps(kwargs)
        # Airflow's own deferral timeout only backs up the trigger's deadline.
        assert deferred.value.timeout >= timedelta(seconds=29)

        # The trigger takes it from there, and the event decides.
        event = asyncio.run(_first_event(trigger))
        assert event["status"] == "success"
        assert sensor(deferrable=True).execute_complete({}, event) == {"ops@example.com": "DELIVERED"}

    def test_a_first_check_that_decides_does_not_defer(self, kaleyra_email_emulator):
        message_id = send(kaleyra_email_emulator, "x.block@example.com")
        later = datetime.now(timezone.utc) + timedelta(seconds=1.1)
        kaleyra_email_emulator.dataset.clock = lambda: later  # blocked by then: no wall-clock wait

        with pytest.raises(AirflowFailException, match="BLOCKED"):
            sensor(message_id=message_id, deferrable=True).execute({})

    @pytest.mark.parametrize(
        ("status", "soft_fail", "raised"),
        [
            ("failure", False, AirflowFailException),
            ("failure", True, AirflowSkipException),
            ("timeout", False, AirflowSensorTimeout),
            ("timeout", True, AirflowSkipException),
            ("error", False, KaleyraEmailWaitError),
            ("waiting", False, KaleyraEmailWaitError),
        ],
    )
    def test_execute_complete_raises_what_the_event_means(self, status, soft_fail, raised):
        event = {"status": status, "message_id": "abc:1", "message": "what the trigger saw", "statuses": None}

        with pytest.raises(raised, match=r"what the trigger saw|no final status"):
            sensor(deferrable=True, soft_fail=soft_fail).execute_complete({}, event)

    def test_execute_complete_returns_the_statuses_of_a_success(self):
        event = {"status": "success", "message_id": "abc:1", "message": "ok", "statuses": {"a@example.com": "OPEN"}}

        assert sensor(deferrable=True).execute_complete({}, event) == {"a@example.com": "OPEN"}

    def test_a_deadline_passed_during_the_first_poke_ends_after_one_check_by_the_trigger(self, kaleyra_email_emulator):
        message_id = send(kaleyra_email_emulator, "ops@example.com")
        kaleyra_email_emulator.queue_faults("503", "503")

        with pytest.raises(TaskDeferred) as deferred:
            sensor(message_id=message_id, deferrable=True, timeout=0, poke_interval=60).execute({})
        event = asyncio.run(_first_event(deferred.value.trigger))

        assert event["status"] == "timeout"
        assert [p.status for p in polls(kaleyra_email_emulator, message_id)] == [503, 503]
        with pytest.raises(AirflowSensorTimeout, match="not delivered within timeout=0 s"):
            sensor(deferrable=True).execute_complete({}, event)


def test_the_key_stays_out_of_reprs_and_rendered_fields(kaleyra_email_connection, kaleyra_email_emulator):
    waiting = sensor(message_id=send(kaleyra_email_emulator, "ops@example.com"))
    waiting.execute({})
    assert DEFAULT_API_KEY not in repr(waiting)
    assert DEFAULT_API_KEY not in repr(waiting.hook)
    assert DEFAULT_API_KEY not in repr(waiting.hook.config)
    assert all(DEFAULT_API_KEY not in str(getattr(waiting, name)) for name in waiting.template_fields)


async def _first_event(trigger: KaleyraEmailMessageDeliveredTrigger) -> dict:
    async for event in trigger.run():
        return event.payload
    raise AssertionError("the trigger fired no event")
