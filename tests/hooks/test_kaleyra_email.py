"""KaleyraEmailHook against the emulator, over a real socket."""

from __future__ import annotations

import json
import re
import time
from datetime import date, datetime, timedelta, timezone
from urllib.parse import unquote

import pytest

from airflow_provider_kaleyra_email import api_facts
from airflow_provider_kaleyra_email.hooks import _api as api
from airflow_provider_kaleyra_email.hooks.kaleyra_email import (
    KaleyraEmailAPIError,
    KaleyraEmailHook,
    KaleyraEmailRetriesExhaustedError,
)
from airflow_provider_kaleyra_email.testing import Faults, KaleyraEmailEmulator
from tests.hooks.conftest import DAY

pytestmark = pytest.mark.kaleyra_email_emulator(start_date=date(2026, 11, 1), days=5, rows_per_day=2_000)


def keys(rows):
    return [api.log_row_key(row) for row in rows]


# ------------------------------------------------------------------------------------------
# Logs
# ------------------------------------------------------------------------------------------


class TestIterLogs:
    def test_a_2000_row_day_comes_back_complete_in_order_and_once(self, hook, kaleyra_email_emulator):
        pages = hook.iter_log_pages(DAY, DAY)
        first = next(pages)
        assert pages.listing.total == 2_000, "known from the first page"
        rows = first + [row for page in pages for row in page]

        expected = list(kaleyra_email_emulator.dataset.expected_logs(DAY, DAY))
        assert len(expected) == 2_000
        assert rows == expected
        assert len(set(keys(rows))) == 2_000
        requests = kaleyra_email_emulator.requests_to("/logs")
        assert sorted(int(r.query["page"][0]) for r in requests) == list(range(1, 21))
        assert {r.query["limit"][0] for r in requests} == {"100"}
        assert (pages.listing.rows, pages.listing.pages, pages.listing.duplicates) == (2_000, 20, 0)

    def test_rows_come_as_the_pages_do(self, hook):
        assert list(hook.iter_logs(DAY, DAY)) == [row for page in hook.iter_log_pages(DAY, DAY) for row in page]

    @pytest.mark.parametrize(("page_size", "max_concurrency"), [(7, 1), (7, 4), (100, 8), (1, 3)])
    def test_every_row_once_whatever_the_page_size_and_concurrency(
        self, kaleyra_email_connection, kaleyra_email_emulator, page_size, max_concurrency
    ):
        day = date(2026, 11, 3)
        hook = KaleyraEmailHook(max_concurrency=max_concurrency)
        rows = list(hook.iter_logs(day, day, page_size=page_size, search="user0"))

        expected = list(kaleyra_email_emulator.dataset.expected_logs(day, day, search=["user0"]))
        assert 0 < len(expected) < 2_000
        assert rows == expected
        assert len(kaleyra_email_emulator.requests_to("/logs")) == -(-len(expected) // page_size)

    def test_a_multi_day_range_is_newest_first_and_covers_every_day(self, hook, kaleyra_email_emulator):
        rows = list(hook.iter_logs("2026-11-01", "2026-11-03"))

        assert len(rows) == 6_000
        days = [row["submitted_at"][:10] for row in rows]
        assert days == sorted(days, reverse=True)
        assert set(days) == {"2026-11-01", "2026-11-02", "2026-11-03"}

    def test_multi_term_search_sends_repeated_parameters_and_all_terms_must_match(self, hook, kaleyra_email_emulator):
        rows = list(hook.iter_logs(DAY, DAY, search=["BOUNCE", "example.net"]))

        assert rows, "the data set has bounces to example.net on this day"
        assert all(row["status"] == "BOUNCE" and "example.net" in row["to_mail"] for row in rows)
        expected = kaleyra_email_emulator.dataset.expected_logs(DAY, DAY, search=["BOUNCE", "example.net"])
        assert rows == list(expected)
        request = kaleyra_email_emulator.requests_to("/logs")[0]
        assert request.query["search"] == ["BOUNCE", "example.net"]

    def test_search_is_case_insensitive(self, hook):
        upper = list(hook.iter_logs(DAY, DAY, search="BLOCKED"))
        lower = list(hook.iter_logs(DAY, DAY, search="blocked"))
        assert upper
        assert upper == lower

    def test_to_mail_and_message_id_filters(self, hook, kaleyra_email_emulator):
        sample = next(iter(kaleyra_email_emulator.dataset.expected_logs(DAY, DAY)))
        recipient = sample["to_mail"].split(",")[0]

        by_recipient = list(hook.iter_logs(DAY, DAY, to_mail=recipient))
        by_id = list(hook.iter_logs(None, DAY, message_id=sample["message_id"]))

        assert sample in by_recipient
        assert all(recipient in row["to_mail"].split(",") for row in by_recipient)
        assert by_id == [sample]
        query = kaleyra_email_emulator.requests_to("/logs")[-1].query
        assert query["messageId"] == [sample["message_id"]]
        assert "start_date" not in query

    def test_an_aware_datetime_is_read_in_the_account_time_zone(self, kaleyra_email_emulator, monkeypatch):
        connection = kaleyra_email_emulator.connection_json(timezone="Asia/Kolkata")
        monkeypatch.setenv("AIRFLOW_CONN_KALEYRA_EMAIL_DEFAULT", connection)
        evening_utc = datetime(2026, 11, 1, 20, 0, tzinfo=timezone.utc)  # 01:30 on Nov 2 in Kolkata

        list(KaleyraEmailHook().iter_logs(evening_utc, evening_utc + timedelta(hours=1)))

        query = kaleyra_email_emulator.requests_to("/logs")[0].query
        assert query["start_date"] == ["2026-11-02"]
        assert query["end_date"] == ["2026-11-02"]

    def test_an_empty_day_gives_no_rows_after_one_request(self, hook, kaleyra_email_emulator):
        assert list(hook.iter_logs("2026-10-01", "2026-10-01")) == []
        assert len(kaleyra_email_emulator.requests_to("/logs")) == 1


@pytest.mark.kaleyra_email_emulator(days=1, rows_per_day=28_800)
def test_mail_arriving_during_the_listing_is_neither_lost_nor_duplicated(kaleyra_email_emulator, monkeypatch):
    """
    Today's rows arrive while we page (newest first), pushing rows into pages already fetched.
    The clock jumps 30 s per request, about 10 new rows per page.
    """
    dataset = kaleyra_email_emulator.dataset
    today = dataset.end_date
    midnight = datetime.combine(today, datetime.min.time(), tzinfo=timezone.utc)
    ticks = iter(range(10_000))
    dataset.clock = lambda: midnight + timedelta(minutes=30, seconds=30 * next(ticks))
    snapshot_at = midnight.replace(tzinfo=None) + timedelta(minutes=30)
    snapshot = set(keys(dataset.expected_logs(today, today, now=snapshot_at)))
    monkeypatch.setenv("AIRFLOW_CONN_KALEYRA_EMAIL_DEFAULT", kaleyra_email_emulator.connection_json())
    hook = KaleyraEmailHook(max_concurrency=4)

    pages = hook.iter_log_pages(today, today, page_size=50)
    rows = [row for page in pages for row in page]

    got = keys(rows)
    assert len(got) == len(set(got)), "no row twice"
    assert snapshot <= set(got), f"{len(snapshot - set(got))} rows of the first snapshot were lost"
    assert pages.listing.duplicates > 0, "the test must actually shift pages"


# ------------------------------------------------------------------------------------------
# Summary stats and message stats
# ------------------------------------------------------------------------------------------


class TestSummaryStats:
    def test_one_flat_row_per_day_with_every_metric(self, hook, kaleyra_email_emulator):
        rows = list(hook.iter_summary_stats("2026-10-30", "2026-11-10"))

        assert [row["date"] for row in rows] == [f"2026-11-0{n}" for n in range(1, 6)]
        for row in rows:
            expected = kaleyra_email_emulator.dataset.day_metrics(date.fromisoformat(row["date"]))
            assert row == {"date": row["date"], **expected}
        assert {"bounces", "failed", "suppressed"} <= set(rows[0]), "metrics the page does not list are kept"

    @pytest.mark.parametrize(("page_size", "pages"), [(2, 3), (5, 2), (1, 6), (100, 1)])
    def test_the_listing_ends_on_a_short_page(self, hook, kaleyra_email_emulator, page_size, pages):
        rows = list(hook.iter_summary_stats("2026-11-01", "2026-11-05", page_size=page_size))

        assert len(rows) == 5
        requested = [int(r.query["page"][0]) for r in kaleyra_email_emulator.requests_to("/stats")]
        assert requested == list(range(1, pages + 1))


class TestMessageStats:
    def test_returns_the_message_with_its_recipients(self, hook, kaleyra_email_emulator):
        row = next(iter(kaleyra_email_emulator.dataset.expected_logs(DAY, DAY)))

        message = hook.get_message_stats(row["message_id"])

        assert message["message_id"] == row["message_id"]
        assert [r["to"] for r in message["recipients"]] == row["to_mail"].split(",")
        assert message["recipients"][0]["status"] == row["status"]

    def test_an_unknown_id_is_a_404(self, hook):
        with pytest.raises(KaleyraEmailAPIError) as error:
            hook.get_message_stats("00000000-0000-0000-0000-000000000000:1")
        assert error.value.status_code == 404
        assert "not found" in error.value.message

    @pytest.mark.parametrize("message_id", ["abc:1+x=y@z", "a.b:2", "~tilde:1", "MiXeD-Case_id:9"])
    def test_an_odd_id_stays_one_path_segment(self, hook, kaleyra_email_emulator, message_id):
        with pytest.raises(KaleyraEmailAPIError):
            hook.get_message_stats(message_id)

        path = kaleyra_email_emulator.requests_to("")[-1].path
        prefix = f"/v1/{kaleyra_email_emulator.sid}/email/stats/"
        assert path.startswith(prefix)
        assert "/" not in path[len(prefix) :]
        assert unquote(path[len(prefix) :]) == message_id


# ------------------------------------------------------------------------------------------
# Errors and retries
# ------------------------------------------------------------------------------------------


class TestErrors:
    def test_a_wrong_key_is_a_401_that_names_the_endpoint_but_not_the_key(self, kaleyra_email_emulator, monkeypatch):
        wrong = kaleyra_email_emulator.connection()
        wrong["password"] = "not-the-right-key-123"
        monkeypatch.setenv("AIRFLOW_CONN_KALEYRA_EMAIL_DEFAULT", json.dumps(wrong))

        with pytest.raises(KaleyraEmailAPIError) as error:
            list(KaleyraEmailHook().iter_logs(DAY, DAY))

        assert error.value.status_code == 401
        assert f"GET /v1/{kaleyra_email_emulator.sid}/email/logs" in str(error.value)
        assert "Invalid API key or SID" in str(error.value)
        assert "not-the-right-key-123" not in str(error.value)
        assert len(kaleyra_email_emulator.requests) == 1, "a 401 is not retried"

    def test_a_400_is_raised_with_kaleyras_message(self, hook, kaleyra_email_emulator):
        path = api_facts.logs_path(kaleyra_email_emulator.sid)
        with pytest.raises(KaleyraEmailAPIError) as error:
            hook._call("GET", f"{path}?page=0&limit=50")  # page 0: only reachable past the hook's own checks
        assert error.value.status_code == 400
        assert "zero or a negative value" in error.value.message
        assert len(kaleyra_email_emulator.requests) == 1

    def test_an_error_object_on_http_200_is_an_error(self, hook, kaleyra_email_emulator):
        kaleyra_email_emulator.queue_faults("error200")

        with pytest.raises(KaleyraEmailAPIError) as error:
            list(hook.iter_logs(DAY, DAY))

        assert error.value.status_code == 200
        assert error.value.error_code == "E500"
        assert "Internal error while reading logs" in str(error.value)
        assert len(kaleyra_email_emulator.requests) == 1

    @pytest.mark.parametrize("fault", ["500", "503", "drop", "drop_mid_body", "truncated", "html"])
    def test_transient_failures_are_retried(self, hook, kaleyra_email_emulator, fault):
        kaleyra_email_emulator.queue_faults(fault, fault)

        rows = list(hook.iter_logs(DAY, DAY))

        assert len(rows) == 2_000
        faults = [r.fault for r in kaleyra_email_emulator.requests if r.fault]
        assert faults == [fault, fault]

    def test_a_429_waits_for_retry_after(self, kaleyra_email_connection, kaleyra_email_emulator):
        kaleyra_email_emulator.set_faults(Faults(retry_after=0.4))
        kaleyra_email_emulator.queue_faults("429", "429")
        hook = KaleyraEmailHook(retry_wait_max=1)

        started = time.monotonic()
        message = hook.get_message_stats(
            next(iter(kaleyra_email_emulator.dataset.expected_logs(DAY, DAY)))["message_id"]
        )
        waited = time.monotonic() - started

        assert message["recipients"]
        assert waited >= 0.8, "two Retry-After: 0.4 waits"
        assert [r.status for r in kaleyra_email_emulator.requests] == [429, 429, 200]

    def test_a_retry_after_longer_than_retry_wait_max_waits_retry_wait_max(
        self, kaleyra_email_connection, kaleyra_email_emulator
    ):
        kaleyra_email_emulator.set_faults(Faults(retry_after=10**12))  # a server's odd header
        kaleyra_email_emulator.queue_faults("429", "429")
        hook = KaleyraEmailHook(retry_wait_max=0.3)

        started = time.monotonic()
        message = hook.get_message_stats(
            next(iter(kaleyra_email_emulator.dataset.expected_logs(DAY, DAY)))["message_id"]
        )

        assert message["recipients"]
        assert 0.6 <= time.monotonic() - started < 3, "two waits of retry_wait_max, plus a little jitter"

    def test_a_slow_answer_times_out_and_is_retried(self, kaleyra_email_connection, kaleyra_email_emulator):
        kaleyra_email_emulator.set_faults(Faults(slow_seconds=1.5))
        kaleyra_email_emulator.queue_faults("slow")
        hook = KaleyraEmailHook(timeout=0.3, retry_wait_initial=0.01)

        rows = list(hook.iter_summary_stats(DAY, DAY))

        assert [row["date"] for row in rows] == [DAY.isoformat()]
        # The slow answer is recorded when it finally goes out, after the client gave up on it.
        deadline = time.monotonic() + 5
        while len(kaleyra_email_emulator.requests) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sorted(r.fault or "" for r in kaleyra_email_emulator.requests) == ["", "slow"]

    def test_when_retries_run_out_the_error_says_what_was_tried(self, kaleyra_email_connection, kaleyra_email_emulator):
        kaleyra_email_emulator.queue_faults("500", "503", "500")
        hook = KaleyraEmailHook(max_retries=2, retry_wait_initial=0.01)

        with pytest.raises(KaleyraEmailRetriesExhaustedError) as error:
            list(hook.iter_logs(DAY, DAY))

        text = str(error.value)
        assert "gave up after 3 attempt(s)" in text
        assert "max_retries=2" in text
        assert "HTTP 500 (Service temporarily unavailable) (x2)" in text
        assert "HTTP 503" in text
        assert error.value.status_code == 500
        assert len(kaleyra_email_emulator.requests) == 3

    def test_a_redirect_is_not_followed_so_the_key_goes_nowhere_else(self, hook, kaleyra_email_emulator):
        with KaleyraEmailEmulator() as elsewhere:
            kaleyra_email_emulator.redirect_location = f"{elsewhere.base_url}/v1/{elsewhere.sid}/email/logs"
            kaleyra_email_emulator.queue_faults("redirect")

            with pytest.raises(KaleyraEmailAPIError) as error:
                list(hook.iter_logs(DAY, DAY))

            assert error.value.status_code == 302
            assert "not followed" in str(error.value)
            assert list(elsewhere.requests) == []


class TestBadArgumentsSendNothing:
    @pytest.mark.parametrize(
        ("call", "named"),
        [
            (lambda h: h.iter_logs("2026-13-01"), "from_date='2026-13-01'"),
            (lambda h: h.iter_logs("2026-02-30"), "from_date='2026-02-30'"),
            (lambda h: h.iter_logs("yesterday"), "from_date='yesterday'"),
            (lambda h: h.iter_logs(None, "2026/11/02"), "to_date='2026/11/02'"),
            (lambda h: h.iter_logs("2026-11-03", "2026-11-02"), "from_date='2026-11-03' is after to_date"),
            (lambda h: h.iter_logs(datetime(2026, 11, 2)), "naive datetime"),
            (lambda h: h.iter_logs(DAY, DAY, page_size=0), "page_size=0"),
            (lambda h: h.iter_logs(DAY, DAY, page_size=101), "page_size=101"),
            (lambda h: h.iter_logs(DAY, DAY, page_size="abc"), "page_size='abc'"),
            (lambda h: h.iter_logs(DAY, DAY, search=["ok", 3]), "search[1]=3"),
            (lambda h: h.iter_summary_stats("2026-11-03", "2026-11-01"), "from_date='2026-11-03'"),
            (lambda h: h.get_message_stats(""), "message_id=''"),
            (lambda h: h.get_message_stats("   "), "message_id='   '"),
            (lambda h: h.get_message_stats("a/b:1"), "message_id='a/b:1'"),
        ],
    )
    def test_value_error_names_the_argument(self, hook, kaleyra_email_emulator, call, named):
        with pytest.raises(ValueError, match=re.escape(named)):
            call(hook)
        assert list(kaleyra_email_emulator.requests) == []


# ------------------------------------------------------------------------------------------
# test_connection
# ------------------------------------------------------------------------------------------


def test_a_netrc_entry_for_the_api_host_adds_no_credentials(
    kaleyra_email_connection, kaleyra_email_emulator, monkeypatch, tmp_path
):
    # requests would send this as an Authorization header if the hook let it read ~/.netrc.
    netrc = tmp_path / ".netrc"
    netrc.write_text("machine 127.0.0.1 login someone password netrc-secret\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    monkeypatch.setenv("HOME", str(tmp_path))

    list(KaleyraEmailHook(kaleyra_email_connection).iter_logs(DAY, DAY, page_size=100, search="user0"))

    seen = kaleyra_email_emulator.requests
    assert len(seen) > 1, "the first page and the concurrent ones"
    assert all(r.api_key_ok and "api-key" in r.header_names for r in seen)
    assert [r.header_names & {"authorization", "proxy-authorization"} for r in seen] == [set()] * len(seen)


class TestTestConnection:
    def test_ok(self, hook, kaleyra_email_emulator):
        ok, message = hook.test_connection()
        assert ok, message
        assert kaleyra_email_emulator.sid in message
        assert len(kaleyra_email_emulator.requests) == 1

    def test_a_bad_key(self, kaleyra_email_emulator, monkeypatch):
        connection = kaleyra_email_emulator.connection()
        connection["password"] = "wrong-key-abcdef"
        monkeypatch.setenv("AIRFLOW_CONN_KALEYRA_EMAIL_DEFAULT", json.dumps(connection))

        ok, message = KaleyraEmailHook().test_connection()

        assert not ok
        assert "rejected the credentials (HTTP 401)" in message
        assert "wrong-key-abcdef" not in message

    def test_an_unreachable_host(self, kaleyra_email_emulator, monkeypatch):
        kaleyra_email_emulator.stop()
        monkeypatch.setenv("AIRFLOW_CONN_KALEYRA_EMAIL_DEFAULT", kaleyra_email_emulator.connection_json())

        ok, message = KaleyraEmailHook().test_connection()

        assert not ok
        assert message.startswith(f"Cannot reach {kaleyra_email_emulator.base_url}")

    def test_a_timeout(self, kaleyra_email_emulator, monkeypatch):
        kaleyra_email_emulator.set_faults(Faults(slow_seconds=1.0))
        kaleyra_email_emulator.queue_faults("slow")
        monkeypatch.setenv("AIRFLOW_CONN_KALEYRA_EMAIL_DEFAULT", kaleyra_email_emulator.connection_json(timeout=0.2))

        ok, message = KaleyraEmailHook().test_connection()

        assert not ok
        assert message.startswith("Timed out")
        assert "0.2 s" in message

    def test_a_broken_connection_is_reported_not_raised(self, monkeypatch):
        monkeypatch.setenv(
            "AIRFLOW_CONN_KALEYRA_EMAIL_DEFAULT",
            json.dumps(
                {
                    "conn_type": "kaleyra_email",
                    "login": "S",
                    "password": "key-12345",
                    "extra": {"region": "mars"},
                }
            ),
        )
        ok, message = KaleyraEmailHook().test_connection()
        assert not ok
        assert "region='mars'" in message
