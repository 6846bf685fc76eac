"""The emulator speaks the API as the page shows it, checked with a plain HTTP client."""

from __future__ import annotations

import base64
import gzip
import http.client
import itertools
import json
import os
import socket
import subprocess
import sys
import threading
import time
import zlib
from datetime import date, datetime, timedelta, timezone
from urllib.parse import parse_qs, quote, urlencode, urlsplit

import pytest
import requests

from airflow_provider_kaleyra_email.testing import (
    FAULT_KINDS,
    OMIT,
    Faults,
    KaleyraEmailEmulator,
    Quirks,
    SyntheticDataset,
)

DAY = date(2026, 11, 2)
pytestmark = pytest.mark.kaleyra_email_emulator(start_date=date(2026, 11, 1), days=3, rows_per_day=300)


def get(emulator: KaleyraEmailEmulator, endpoint: str, key: str | None = None, sid: str | None = None, **params):
    url = f"{emulator.base_url}/v1/{sid or emulator.sid}/email/{endpoint}"
    return requests.get(url, params=params, headers={"api-key": key or emulator.api_key}, timeout=10)


class TestLogs:
    def test_the_envelope_matches_the_page(self, kaleyra_email_emulator):
        body = get(kaleyra_email_emulator, "logs", start_date="2026-11-02", end_date="2026-11-02", limit=4).json()

        assert set(body) == {"data", "error", "total", "limit", "offset"}
        assert body["error"] == {}
        assert body["total"] == 300
        assert body["limit"] == "4", "the API sends limit as a string"
        assert body["offset"] == ""
        assert len(body["data"]) == 4
        documented = {
            "message_id", "company_id", "status", "description", "from_mail", "to_mail", "template_name",
            "submitted_at", "delivered_at", "sale_price", "source", "source_type", "user_details",
            "email_body", "service_id", "route",
        }  # fmt: skip
        assert all(documented <= set(row) for row in body["data"])

    def test_the_default_limit_is_50_and_search_answers_with_page_zero(self, kaleyra_email_emulator):
        body = get(
            kaleyra_email_emulator, "logs", start_date="2026-11-02", end_date="2026-11-02", search="example"
        ).json()
        assert body["limit"] == "50"
        assert len(body["data"]) == 50
        assert body["page"] == "0"
        assert "offset" not in body

    def test_some_rows_carry_keys_the_page_does_not_document(self, kaleyra_email_emulator):
        body = get(kaleyra_email_emulator, "logs", start_date="2026-11-02", end_date="2026-11-02", limit=100).json()
        assert any(row.get("type") == "MKT" for row in body["data"])

    def test_message_ids_look_like_uuid_and_batch(self, kaleyra_email_emulator):
        rows = get(kaleyra_email_emulator, "logs", start_date="2026-11-02", end_date="2026-11-02", limit=10).json()[
            "data"
        ]
        ids = [row["message_id"] for row in rows]
        assert all(len(i.split(":")[0]) == 36 and i.split(":")[1] in {"1", "2"} for i in ids)
        # Batches of one request are listed together, :2 before :1, with one submission time.
        assert ids[0].split(":")[0] == ids[1].split(":")[0]
        assert rows[0]["submitted_at"] == rows[1]["submitted_at"]

    def test_repeated_search_terms_must_all_match(self, kaleyra_email_emulator):
        url = f"{kaleyra_email_emulator.base_url}/v1/{kaleyra_email_emulator.sid}/email/logs"
        headers = {"api-key": kaleyra_email_emulator.api_key}
        one = requests.get(url, params=[("search", "DELIVERED"), ("limit", "100")], headers=headers, timeout=10).json()
        two = requests.get(
            url,
            params=[("search", "delivered"), ("search", "example.net"), ("limit", "100")],
            headers=headers,
            timeout=10,
        ).json()
        assert 0 < two["total"] < one["total"]
        assert all(r["status"] == "DELIVERED" and "example.net" in r["to_mail"] for r in two["data"])

    @pytest.mark.parametrize(
        ("params", "message"),
        [
            ({"page": "0"}, "zero or a negative value"),
            ({"page": "-1"}, "zero or a negative value"),
            ({"page": "x"}, "zero or a negative value"),
            ({"limit": "101"}, "between 1 and 100"),
            ({"limit": "0"}, "between 1 and 100"),
            ({"start_date": "2026/11/02"}, "YYYY-MM-DD"),
            ({"end_date": "2026-02-30"}, "not a valid date"),
        ],
    )
    def test_bad_parameters_are_a_400(self, kaleyra_email_emulator, params, message):
        response = get(kaleyra_email_emulator, "logs", **params)
        assert response.status_code == 400
        assert message in response.json()["error"]["message"]

    @pytest.mark.parametrize("override", [{"key": "wrong"}, {"sid": "HXOTHER"}])
    def test_a_wrong_key_or_sid_is_a_401(self, kaleyra_email_emulator, override):
        response = get(kaleyra_email_emulator, "logs", **override)
        assert response.status_code == 401
        assert response.json()["error"]["message"] == "Invalid API key or SID"

    def test_an_unknown_route_is_a_404(self, kaleyra_email_emulator):
        assert get(kaleyra_email_emulator, "nothing/here").status_code == 404


class TestStats:
    def test_summary_has_no_total_and_lists_days_oldest_first(self, kaleyra_email_emulator):
        body = get(kaleyra_email_emulator, "stats", start_date="2026-10-01", end_date="2026-12-01").json()
        assert set(body) == {"data", "error"}
        assert [day["date"] for day in body["data"]] == ["2026-11-01", "2026-11-02", "2026-11-03"]
        metrics = body["data"][0]["stats"][0]["metrics"]
        assert {"accepted", "delivered", "opens", "deferred", "blocks"} <= set(metrics)
        assert metrics["accepted"] == 300

    def test_days_without_mail_are_left_out(self):
        quiet = {date(2026, 11, 1): 10, date(2026, 11, 2): 0, date(2026, 11, 3): 5}
        with KaleyraEmailEmulator(start_date=date(2026, 11, 1), days=3, rows_per_day=quiet) as emulator:
            body = get(emulator, "stats", start_date="2026-11-01", end_date="2026-11-03").json()
        assert [day["date"] for day in body["data"]] == ["2026-11-01", "2026-11-03"]

    def test_pages_of_days(self, kaleyra_email_emulator):
        body = get(kaleyra_email_emulator, "stats", start_date="2026-11-01", page=2, limit=2).json()
        assert [day["date"] for day in body["data"]] == ["2026-11-03"]

    def test_message_stats_by_id(self, kaleyra_email_emulator):
        row = get(kaleyra_email_emulator, "logs", start_date="2026-11-02", end_date="2026-11-02", limit=1).json()[
            "data"
        ][0]
        body = get(kaleyra_email_emulator, f"stats/{row['message_id']}").json()
        (message,) = body["data"]
        assert message["message_id"] == row["message_id"]
        assert {"delivery_datetime", "to", "status", "error_code", "error_message"} == set(message["recipients"][0])

    def test_a_forged_id_is_a_404(self, kaleyra_email_emulator):
        row = get(kaleyra_email_emulator, "logs", start_date="2026-11-02", end_date="2026-11-02", limit=1).json()[
            "data"
        ][0]
        forged = row["message_id"][:-6] + "ffffff"
        assert get(kaleyra_email_emulator, f"stats/{forged}:1").status_code == 404


class TestData:
    def test_the_same_seed_gives_the_same_rows_and_another_seed_does_not(self):
        def rows(seed):
            return list(SyntheticDataset(seed=seed, start_date=DAY, days=1, rows_per_day=50).expected_logs(DAY, DAY))

        assert rows(7) == rows(7)
        assert rows(7) != rows(8)

    def test_a_million_row_day_is_served_without_building_it(self):
        dataset = SyntheticDataset(start_date=DAY, days=1, rows_per_day=1_000_000)
        with KaleyraEmailEmulator(dataset=dataset) as emulator:
            started = time.monotonic()
            body = get(
                emulator, "logs", start_date=DAY.isoformat(), end_date=DAY.isoformat(), page=10_000, limit=100
            ).json()
            elapsed = time.monotonic() - started
        assert body["total"] == 1_000_000
        assert len(body["data"]) == 100
        assert body["data"][-1]["submitted_at"].startswith("2026-11-02 00:0")
        assert dataset.locate(body["data"][-1]["message_id"]) == (DAY, 0)
        assert elapsed < 10, "the last page of a 10^6-row day must not need the whole day"

    def test_every_message_id_decodes_back_to_its_row(self):
        dataset = SyntheticDataset(start_date=DAY, days=1, rows_per_day=1_000)
        assert all(dataset.locate(dataset.message_id(DAY, row)) == (DAY, row) for row in range(0, 1_000, 7))

    def test_a_plan_changed_after_rows_were_served_is_seen_at_once(self):
        dataset = SyntheticDataset(start_date=DAY, days=1, rows_per_day=400)
        before = list(dataset.expected_logs(DAY, DAY))
        dataset.rows_per_day = {DAY: 200}  # the same rows now fall at other times of the day
        after = list(dataset.expected_logs(DAY, DAY))
        assert len(after) == 200
        assert after[-1]["message_id"] == before[-1]["message_id"]
        assert after[0]["submitted_at"] != before[200]["submitted_at"]

    def test_statuses_move_over_time(self):
        start = datetime(2026, 11, 2, tzinfo=timezone.utc)
        clock = {"now": start}
        dataset = SyntheticDataset(start_date=DAY, days=1, rows_per_day=2_000, clock=lambda: clock["now"])
        submitted = {row: dataset.submitted_at(DAY, row) for row in range(2_000)}

        def statuses(seconds_after):
            return [dataset.status(DAY, row, submitted[row] + timedelta(seconds=seconds_after)) for row in range(2_000)]

        assert set(statuses(1)) == {"ACCEPTED"}
        settled = statuses(2 * 86_400)
        assert {"DELIVERED", "OPEN", "BOUNCE", "BLOCKED", "FAILED", "SUPPRESSED", "DEFERRED"} <= set(settled)
        assert settled.count("DELIVERED") + settled.count("OPEN") > 1_200

    def test_today_fills_up_as_the_clock_runs(self):
        today = date(2026, 11, 2)
        clock = {"now": datetime(2026, 11, 2, 6, 0, tzinfo=timezone.utc)}
        dataset = SyntheticDataset(start_date=today, days=1, rows_per_day=2_400, clock=lambda: clock["now"])
        morning = dataset.visible_rows(today)
        clock["now"] = datetime(2026, 11, 2, 18, 0, tzinfo=timezone.utc)
        evening = dataset.visible_rows(today)
        assert 500 < morning < 700
        assert 1_700 < evening < 1_900
        assert all(row["submitted_at"] <= "2026-11-02 18:00:00" for row in dataset.expected_logs(today, today))

    def test_dates_follow_the_account_time_zone(self):
        clock = datetime(2026, 11, 2, 20, 0, tzinfo=timezone.utc)  # already Nov 3 in Kolkata
        dataset = SyntheticDataset(days=2, rows_per_day=10, timezone="Asia/Kolkata", clock=lambda: clock)
        assert dataset.end_date == date(2026, 11, 3)


class TestBusyAccountAndOldSends:
    NOON = datetime(2026, 11, 2, 12, 0, tzinfo=timezone.utc)

    def busy(self, rows: int, **options) -> SyntheticDataset:
        options = {"start_date": date(2026, 10, 1), "days": 1, "rows_per_day": 0, **options}
        return SyntheticDataset(background_rows_per_day=rows, clock=lambda: self.NOON, **options)

    def test_background_traffic_fills_every_day_to_now_and_is_served_without_building_it(self):
        with KaleyraEmailEmulator(dataset=self.busy(300_000)) as emulator:
            first = get(emulator, "logs", start_date="2026-11-01", end_date="2026-11-02", limit=100).json()
            last = get(emulator, "logs", start_date="2026-11-01", end_date="2026-11-02", page=4_500, limit=100).json()
            unknown = get(emulator, f"stats/{first['data'][0]['message_id']}")

        assert first["total"] == 300_000 + 150_000, "all of yesterday, half of today at noon"
        assert "2026-11-02 11:59" <= first["data"][0]["submitted_at"] <= "2026-11-02 12:00:00", "none after now"
        assert last["data"][-1]["submitted_at"] == "2026-11-01 00:00:00", "newest first: the oldest row is last"
        ids = [row["message_id"] for row in first["data"] + last["data"]]
        assert len(set(ids)) == 200
        assert unknown.status_code == 404, "other senders' mail is listed, never looked up"

    @pytest.mark.parametrize(("search", "to_mail"), [(["bounce"], None), (["digest", "OPEN"], None), ([], "x")])
    def test_a_search_over_background_rows_finds_what_a_scan_of_them_finds(self, search, to_mail):
        dataset = self.busy(2_500)  # two and a half times the repeating pattern
        day = date(2026, 11, 1)
        every = list(dataset.listing(day, day))
        if to_mail == "x":
            to_mail = every[1234]["to_mail"]

        def wanted(row):
            fields = [row[name].lower() for name in ("status", "from_mail", "to_mail", "template_name")]
            found = all(any(term.lower() in field for field in fields) for term in search)
            return found and (to_mail is None or row["to_mail"] == to_mail)

        served = list(dataset.listing(day, day, search=search, to_mail=to_mail))
        assert served == [row for row in every if wanted(row)]
        assert served

    def test_the_summary_stats_count_the_background_rows(self):
        yesterday = date(2026, 11, 1)
        (day,) = self.busy(2_500).summary_days(yesterday, yesterday)
        metrics = day["stats"][0]["metrics"]
        assert metrics["accepted"] == 2_500
        assert metrics["delivered"] + metrics["bounces"] + metrics["blocks"] + metrics["failed"] > 2_000

    def test_a_message_sent_30_days_ago_is_known_by_id_and_listed_on_its_day(self):
        dataset = SyntheticDataset(start_date=DAY, days=1, rows_per_day=10, clock=lambda: self.NOON)
        sent_at = self.NOON - timedelta(days=30)
        message = dataset.send(
            from_mail="a@shop.example.com", to=["x.bounce@example.com"], subject="s", sent_at=sent_at
        )
        (message_id,) = message.message_ids()
        with KaleyraEmailEmulator(dataset=dataset) as emulator:
            stats = get(emulator, f"stats/{message_id}").json()["data"][0]
            that_day = get(emulator, "logs", start_date="2026-10-03", end_date="2026-10-03").json()
            today = get(emulator, "logs", start_date="2026-11-02", end_date="2026-11-02", limit=100).json()

        assert stats["request_datetime"] == "2026-10-03 12:00:00"
        assert [(r["status"], r["error_code"]) for r in stats["recipients"]] == [("BOUNCE", "550")]
        assert [(row["message_id"], row["status"]) for row in that_day["data"]] == [(message_id, "BOUNCE")]
        assert message_id not in {row["message_id"] for row in today["data"]}


class TestAccountRateLimit:
    def test_the_limit_is_counted_across_connections_and_answered_429_with_retry_after(self, kaleyra_email_emulator):
        kaleyra_email_emulator.set_faults(Faults(requests_per_second=2, burst=2))
        statuses: list[requests.Response] = []

        def client():
            with requests.Session() as session:  # its own connection
                url = f"{kaleyra_email_emulator.base_url}/v1/{kaleyra_email_emulator.sid}/email/stats"
                for _ in range(10):
                    statuses.append(session.get(url, headers={"api-key": kaleyra_email_emulator.api_key}, timeout=10))

        started = time.monotonic()
        threads = [threading.Thread(target=client) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.monotonic() - started

        answered = [response.status_code for response in statuses]
        assert 2 <= answered.count(200) <= 2 + 2 * elapsed, "the burst, then 2 a second for both connections"
        refused = [response for response in statuses if response.status_code == 429]
        assert len(refused) == 20 - answered.count(200)
        assert {response.headers["Retry-After"] for response in refused} == {"1"}, "whole seconds, rounded up"
        recorded = [r.fault for r in kaleyra_email_emulator.requests]
        assert recorded.count("rate_limit") == len(refused)
        time.sleep(1)
        assert get(kaleyra_email_emulator, "stats").status_code == 200, "after Retry-After, a request passes"

    def test_a_bad_limit_is_refused(self):
        with pytest.raises(ValueError, match="requests_per_second=-1"):
            Faults(requests_per_second=-1)
        with pytest.raises(ValueError, match=r"burst=0\.5"):
            Faults(requests_per_second=1, burst=0.5)


class TestFaults:
    def test_rates_are_seeded_shares(self, kaleyra_email_emulator):
        kaleyra_email_emulator.set_faults(Faults(rate_limit=0.3, server_errors=0.2, seed=3))
        statuses = [get(kaleyra_email_emulator, "stats").status_code for _ in range(200)]
        assert 40 <= statuses.count(429) <= 80
        assert 20 <= statuses.count(500) + statuses.count(503) <= 60
        assert statuses.count(200) + statuses.count(429) + statuses.count(500) + statuses.count(503) == 200

    def test_429_carries_retry_after(self, kaleyra_email_emulator):
        kaleyra_email_emulator.set_faults(Faults(retry_after=7))
        kaleyra_email_emulator.queue_faults("429")
        response = get(kaleyra_email_emulator, "stats")
        assert response.status_code == 429
        assert response.headers["Retry-After"] == "7"

    @pytest.mark.parametrize("fault", ["drop", "drop_mid_body"])
    def test_dropped_connections(self, kaleyra_email_emulator, fault):
        kaleyra_email_emulator.queue_faults(fault)
        broken = (requests.exceptions.ConnectionError, requests.exceptions.ChunkedEncodingError)
        with pytest.raises(broken):
            get(kaleyra_email_emulator, "stats")
        assert get(kaleyra_email_emulator, "stats").status_code == 200, "the next request is served"

    @pytest.mark.parametrize("fault", ["truncated", "html"])
    def test_malformed_bodies(self, kaleyra_email_emulator, fault):
        kaleyra_email_emulator.queue_faults(fault)
        response = get(kaleyra_email_emulator, "stats")
        assert response.status_code == 200
        with pytest.raises(ValueError, match=r"Expecting|Unterminated|Extra data|Invalid"):
            response.json()

    def test_latency(self, kaleyra_email_emulator):
        kaleyra_email_emulator.set_faults(Faults(latency=0.2))
        started = time.monotonic()
        get(kaleyra_email_emulator, "stats")
        assert time.monotonic() - started >= 0.2

    def test_unknown_fault_kinds_are_refused(self, kaleyra_email_emulator):
        with pytest.raises(ValueError, match="unknown fault kinds"):
            kaleyra_email_emulator.queue_faults("teapot")


#: A key the client sends that is not the emulator's own, with characters that URL-encoding changes.
SENT_KEY = "client/s3cret+key=&?x"


def connect(emulator: KaleyraEmailEmulator, endpoint: str, key: str | None = None, **params):
    """An ``http.client`` request to the emulator: the connection and its response, body not read."""
    connection = http.client.HTTPConnection(emulator.host, emulator.port, timeout=10)
    target = f"/v1/{emulator.sid}/email/{endpoint}" + (f"?{urlencode(params)}" if params else "")
    connection.request("GET", target, headers={"api-key": key or emulator.api_key})
    return connection, connection.getresponse()


def handler_threads_of(request_sender):
    """Run ``request_sender`` and return the threads it made the server start."""
    before = set(threading.enumerate())
    result = request_sender()
    deadline = time.monotonic() + 2
    started: set[threading.Thread] = set()
    while not started and time.monotonic() < deadline:
        started = {t for t in threading.enumerate() if t not in before and "process_request" in t.name}
        time.sleep(0.005)
    return result, started


class TestHostileFaults:
    def test_the_new_kinds_can_be_queued(self, kaleyra_email_emulator):
        for kind in ("trickle", "oversized", "oversized_chunked", "bad_gzip", "echo_error", "echo_html",
                     "echo_redirect", "non_object_rows"):  # fmt: skip
            assert kind in FAULT_KINDS
        kaleyra_email_emulator.queue_faults("echo_error", "bad_gzip")

    def test_trickle_sends_headers_at_once_and_the_body_a_byte_at_a_time(self, kaleyra_email_emulator):
        pause = 0.02
        params = {"start_date": "2020-01-01", "end_date": "2020-01-02"}  # no mail: a short body
        expected = get(kaleyra_email_emulator, "stats", **params).content
        kaleyra_email_emulator.set_faults(Faults(trickle_seconds=pause))
        kaleyra_email_emulator.queue_faults("trickle")

        started = time.monotonic()
        connection, response = connect(kaleyra_email_emulator, "stats", **params)
        headers_after = time.monotonic() - started
        arrivals, body = [], b""
        while len(body) < len(expected):
            body += response.read(1)
            arrivals.append(time.monotonic())
        connection.close()

        assert response.status == 200
        assert int(response.headers["Content-Length"]) == len(expected)
        assert body == expected, "the real answer, only slower"
        gaps = sorted(later - earlier for earlier, later in itertools.pairwise(arrivals))
        assert gaps[len(gaps) // 2] >= 0.8 * pause, "the median gap between bytes is the pause"
        assert arrivals[-1] - arrivals[0] >= 0.8 * pause * (len(expected) - 1)
        assert headers_after < 0.5 * (arrivals[-1] - started), "headers do not wait for the body"
        assert kaleyra_email_emulator.requests[-1].fault == "trickle"
        assert kaleyra_email_emulator.requests[-1].status == 200

    @pytest.mark.parametrize("chunked", [False, True], ids=["content_length", "chunked"])
    def test_oversized_is_a_valid_json_body_of_the_size_asked(self, kaleyra_email_emulator, chunked):
        kind = "oversized_chunked" if chunked else "oversized"
        kaleyra_email_emulator.set_faults(Faults(oversized_bytes=300_000))
        kaleyra_email_emulator.queue_faults(kind)

        connection, response = connect(kaleyra_email_emulator, "logs")
        body = response.read()
        assert response.status == 200
        assert response.headers["Content-Type"] == "application/json"
        if chunked:
            assert response.headers["Content-Length"] is None
            assert response.headers["Transfer-Encoding"] == "chunked"
        else:
            assert int(response.headers["Content-Length"]) == 300_000
        assert len(body) == 300_000
        parsed = json.loads(body)
        assert parsed["data"] == []
        assert parsed["error"] == {}
        # The framing was right: the same connection serves the next request.
        connection.request("GET", f"/v1/{kaleyra_email_emulator.sid}/email/stats",
                           headers={"api-key": kaleyra_email_emulator.api_key})  # fmt: skip
        assert connection.getresponse().status == 200
        connection.close()
        assert [r.fault for r in kaleyra_email_emulator.requests] == [kind, None]

    @pytest.mark.parametrize("kind", ["trickle", "oversized", "oversized_chunked"])
    def test_a_client_that_goes_away_ends_the_answer_quietly(self, kaleyra_email_emulator, kind, capsys):
        kaleyra_email_emulator.set_faults(Faults(trickle_seconds=0.01))  # 80 MB oversized, the default
        kaleyra_email_emulator.queue_faults(kind)

        before = set(threading.enumerate())
        connection, response = connect(kaleyra_email_emulator, "logs", limit=100)
        first = response.read(5)
        # Looked for while the answer is still going out (it is far from done), so it cannot be missed.
        threads = {t for t in threading.enumerate() if t not in before and "process_request" in t.name}
        connection.sock.close()
        connection.close()
        status = response.status

        assert (status, len(first)) == (200, 5)
        assert threads, "the server answered in a thread of its own"
        for thread in threads:
            thread.join(timeout=5)
            assert not thread.is_alive(), "the answer stopped when the client left"
        assert get(kaleyra_email_emulator, "stats").status_code == 200, "the next request is served"
        assert "Traceback" not in capsys.readouterr().err

    def test_bad_gzip_claims_gzip_and_is_not(self, kaleyra_email_emulator):
        kaleyra_email_emulator.queue_faults("bad_gzip")
        connection, response = connect(kaleyra_email_emulator, "logs")
        body = response.read()
        connection.close()
        assert response.status == 200
        assert response.headers["Content-Encoding"] == "gzip"
        assert response.headers["Content-Type"] == "application/json"
        assert body, "a body, just not gzip"
        with pytest.raises((OSError, EOFError, zlib.error)):
            gzip.decompress(body)
        kaleyra_email_emulator.queue_faults("bad_gzip")
        with pytest.raises(requests.exceptions.ContentDecodingError):
            get(kaleyra_email_emulator, "logs")

    @staticmethod
    def key_forms(key):
        return key, quote(key, safe=""), base64.b64encode(f"user:{key}".encode()).decode()

    def test_echo_error_is_a_400_that_repeats_the_key_the_client_sent(self, kaleyra_email_emulator):
        kaleyra_email_emulator.queue_faults("echo_error")
        response = get(kaleyra_email_emulator, "logs", key=SENT_KEY)
        assert response.status_code == 400
        body = response.json()
        assert body["data"] == []
        assert body["error"]["code"] == "E400"
        for form in self.key_forms(SENT_KEY):
            assert form in body["error"]["message"]
        assert kaleyra_email_emulator.api_key not in response.text, "the key sent, not the emulator's"
        assert response.headers["X-Echo-Api-Key"] == SENT_KEY

    def test_echo_html_is_a_502_page_that_repeats_the_key(self, kaleyra_email_emulator):
        kaleyra_email_emulator.queue_faults("echo_html")
        response = get(kaleyra_email_emulator, "logs", key=SENT_KEY)
        assert response.status_code == 502
        assert response.headers["Content-Type"].startswith("text/html")
        assert "<html" in response.text
        for form in self.key_forms(SENT_KEY):
            assert form in response.text

    def test_echo_redirect_puts_the_key_in_the_location(self, kaleyra_email_emulator):
        kaleyra_email_emulator.queue_faults("echo_redirect")
        url = f"{kaleyra_email_emulator.base_url}/v1/{kaleyra_email_emulator.sid}/email/logs"
        response = requests.get(url, headers={"api-key": SENT_KEY}, allow_redirects=False, timeout=10)
        assert response.status_code == 302
        assert response.content == b""
        location = urlsplit(response.headers["Location"])
        assert (location.hostname, location.port, location.path) == ("127.0.0.1", 9, "/login")
        assert f"api-key={quote(SENT_KEY, safe='')}" in location.query
        assert parse_qs(location.query)["api-key"] == [SENT_KEY]
        auth = location.query.split("auth=", 1)[1]
        assert base64.b64decode(auth).decode() == f"user:{SENT_KEY}"

    @pytest.mark.parametrize("kind", ["echo_error", "echo_html", "echo_redirect"])
    def test_echoed_keys_are_never_recorded(self, kaleyra_email_emulator, kind):
        kaleyra_email_emulator.queue_faults(kind)
        requests.get(f"{kaleyra_email_emulator.base_url}/v1/{kaleyra_email_emulator.sid}/email/logs",
                     headers={"api-key": SENT_KEY}, allow_redirects=False, timeout=10)  # fmt: skip
        (recorded,) = kaleyra_email_emulator.requests
        assert recorded.fault == kind
        assert "api-key" in recorded.header_names
        assert not any(form in repr(recorded) for form in self.key_forms(SENT_KEY))

    @pytest.mark.parametrize(
        ("endpoint", "params"),
        [("logs", {"start_date": "2026-11-02", "end_date": "2026-11-02", "limit": 5}), ("stats", {})],
    )
    def test_non_object_rows_come_ahead_of_the_real_rows(self, kaleyra_email_emulator, endpoint, params):
        real = get(kaleyra_email_emulator, endpoint, **params).json()
        kaleyra_email_emulator.queue_faults("non_object_rows")
        response = get(kaleyra_email_emulator, endpoint, **params)
        body = response.json()
        assert response.status_code == 200
        assert set(body) == set(real), "the envelope is kept"
        assert real["data"]
        assert all(isinstance(row, dict) for row in real["data"])
        non_objects = [row for row in body["data"] if not isinstance(row, dict)]
        assert {type(row) for row in non_objects} >= {int, str, type(None), list}
        assert [row for row in body["data"] if isinstance(row, dict)] == real["data"]
        assert kaleyra_email_emulator.requests[-1].fault == "non_object_rows"


class TestTeardown:
    def test_stop_is_fast(self):
        emulator = KaleyraEmailEmulator(rows_per_day=10).start()
        assert get(emulator, "stats").status_code == 200
        started = time.monotonic()
        emulator.stop()
        assert time.monotonic() - started < 2, "stop() waited for something (a handler, a 5 s trickle)"
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((emulator.host, emulator.port), timeout=1).close()

    def test_stop_does_not_wait_for_a_trickle_and_ends_it(self):
        emulator = KaleyraEmailEmulator(rows_per_day=10, faults=Faults(trickle_seconds=5)).start()
        emulator.queue_faults("trickle")
        (connection, response), threads = handler_threads_of(lambda: connect(emulator, "stats"))
        assert response.status == 200
        started = time.monotonic()
        emulator.stop()
        assert time.monotonic() - started < 2, "stop() waited for the 5 s trickle"
        for thread in threads:
            thread.join(timeout=2)
            assert not thread.is_alive(), "the trickle gave up when the emulator stopped"
        connection.close()


LOGS_DAY = {"start_date": "2026-11-02", "end_date": "2026-11-02"}


def logs_page(emulator, page, limit=100, **params):
    return get(emulator, "logs", page=page, limit=limit, **LOGS_DAY, **params).json()


def ids(body):
    return [row["message_id"] for row in body["data"]]


def stats_dates(emulator, page, limit):
    body = get(emulator, "stats", start_date="2026-11-01", end_date="2026-11-03", page=page, limit=limit).json()
    return [day["date"] for day in body["data"]]


class TestQuirks:
    def test_clamp_pages_repeats_the_last_page(self, kaleyra_email_emulator):
        last = logs_page(kaleyra_email_emulator, 3)  # 300 rows: page 3 of 100 is the last
        assert len(last["data"]) == 100
        assert logs_page(kaleyra_email_emulator, 4)["data"] == [], "honest without the quirk"
        assert stats_dates(kaleyra_email_emulator, 5, 2) == []

        kaleyra_email_emulator.set_quirks(Quirks(clamp_pages=True))
        assert ids(logs_page(kaleyra_email_emulator, 4)) == ids(last)
        assert ids(logs_page(kaleyra_email_emulator, 40)) == ids(last)
        assert stats_dates(kaleyra_email_emulator, 5, 2) == stats_dates(kaleyra_email_emulator, 2, 2)
        assert len(stats_dates(kaleyra_email_emulator, 5, 2)) == 1
        no_mail = get(kaleyra_email_emulator, "logs", start_date="2020-01-01", end_date="2020-01-01", page=3).json()
        assert no_mail["data"] == []
        assert no_mail["total"] == 0

    def test_page_rows_from_serves_another_pages_rows(self, kaleyra_email_emulator):
        honest = [ids(logs_page(kaleyra_email_emulator, page, limit=50)) for page in (1, 2, 3)]
        assert len(set(map(tuple, honest))) == 3
        kaleyra_email_emulator.set_quirks(Quirks(page_rows_from=lambda p: 2 if p == 3 else p))
        assert [ids(logs_page(kaleyra_email_emulator, page, limit=50)) for page in (1, 2, 3)] == [
            honest[0], honest[1], honest[1]
        ]  # fmt: skip
        assert stats_dates(kaleyra_email_emulator, 3, 1) == stats_dates(kaleyra_email_emulator, 2, 1)

    def test_page_rows_from_is_applied_before_clamping(self, kaleyra_email_emulator):
        last = ids(logs_page(kaleyra_email_emulator, 3))
        kaleyra_email_emulator.set_quirks(Quirks(page_rows_from=lambda p: p + 10, clamp_pages=True))
        assert ids(logs_page(kaleyra_email_emulator, 1)) == last

    @pytest.mark.parametrize(
        ("lie", "page", "expected"),
        [
            (lambda t, p: 10**9, 1, 10**9),
            (lambda t, p: "many", 2, "many"),
            (lambda t, p: t - 10 * p, 2, 280),
            (lambda t, p: t + 10 * p, 3, 330),
        ],
        ids=["huge", "string", "shrinking", "growing"],
    )
    def test_total_lies(self, kaleyra_email_emulator, lie, page, expected):
        honest = logs_page(kaleyra_email_emulator, page, limit=50)
        assert honest["total"] == 300
        kaleyra_email_emulator.set_quirks(Quirks(total=lie))
        body = logs_page(kaleyra_email_emulator, page, limit=50)
        assert body["total"] == expected
        assert ids(body) == ids(honest), "only the total lies"
        assert set(get(kaleyra_email_emulator, "stats").json()) == {"data", "error"}, "summary stats: no total"

    def test_total_can_be_left_out(self, kaleyra_email_emulator):
        honest = logs_page(kaleyra_email_emulator, 1, limit=10)
        kaleyra_email_emulator.set_quirks(Quirks(total=lambda t, p: OMIT))
        body = logs_page(kaleyra_email_emulator, 1, limit=10)
        assert "total" not in body
        assert set(body) == set(honest) - {"total"}
        assert ids(body) == ids(honest)

    def test_empty_from_page(self, kaleyra_email_emulator):
        kaleyra_email_emulator.set_quirks(Quirks(empty_from_page=3))
        assert len(logs_page(kaleyra_email_emulator, 2, limit=50)["data"]) == 50
        for page in (3, 4):
            body = logs_page(kaleyra_email_emulator, page, limit=50)
            assert body["data"] == []
            assert body["total"] == 300, "total unchanged"
        assert len(stats_dates(kaleyra_email_emulator, 2, 1)) == 1
        assert stats_dates(kaleyra_email_emulator, 3, 1) == []

    def test_rows_per_page_ignores_limit(self, kaleyra_email_emulator):
        every = ids(logs_page(kaleyra_email_emulator, 1, limit=100))
        kaleyra_email_emulator.set_quirks(Quirks(rows_per_page=7))
        body = logs_page(kaleyra_email_emulator, 2, limit=5)
        assert ids(body) == every[7:14]
        assert body["limit"] == "5", "limit still echoes what was asked"
        assert len(stats_dates(kaleyra_email_emulator, 1, 1)) == 3, "stats: 7 days a page, 3 exist"

    def test_drop_row_fields(self, kaleyra_email_emulator):
        honest = logs_page(kaleyra_email_emulator, 1, limit=20)
        kaleyra_email_emulator.set_quirks(Quirks(drop_row_fields=("message_id", "to_mail")))
        body = logs_page(kaleyra_email_emulator, 1, limit=20)
        assert len(body["data"]) == 20
        assert all("message_id" not in row and "to_mail" not in row for row in body["data"])
        expected = [{k: v for k, v in row.items() if k not in {"message_id", "to_mail"}} for row in honest["data"]]
        assert body["data"] == expected
        assert body["total"] == honest["total"]
        assert "metrics" in get(kaleyra_email_emulator, "stats").json()["data"][0]["stats"][0], "logs only"

    def test_quirks_do_not_change_the_expected_rows(self, kaleyra_email_emulator):
        day = date(2026, 11, 2)
        expected = list(kaleyra_email_emulator.dataset.expected_logs(day, day))
        kaleyra_email_emulator.set_quirks(Quirks(clamp_pages=True, drop_row_fields=("message_id",), rows_per_page=3))
        logs_page(kaleyra_email_emulator, 1)
        assert list(kaleyra_email_emulator.dataset.expected_logs(day, day)) == expected
        assert len(expected) == 300
        assert all("message_id" in row for row in expected)

    @pytest.mark.kaleyra_email_emulator(quirks=Quirks(empty_from_page=1))
    def test_quirks_from_the_constructor_and_clear_resets_them(self, kaleyra_email_emulator):
        assert logs_page(kaleyra_email_emulator, 1)["data"] == []
        kaleyra_email_emulator.clear()
        assert kaleyra_email_emulator.quirks == Quirks()
        assert len(logs_page(kaleyra_email_emulator, 1)["data"]) == 100

    def test_set_quirks_back_to_none(self, kaleyra_email_emulator):
        kaleyra_email_emulator.set_quirks(Quirks(empty_from_page=1))
        assert logs_page(kaleyra_email_emulator, 1)["data"] == []
        kaleyra_email_emulator.set_quirks(Quirks())
        assert len(logs_page(kaleyra_email_emulator, 1)["data"]) == 100

    @pytest.mark.parametrize("field", ["rows_per_page", "empty_from_page"])
    def test_page_numbers_below_one_are_refused(self, field):
        with pytest.raises(ValueError, match=field):
            Quirks(**{field: 0})


class TestSend:
    def send(self, emulator, body):
        url = f"{emulator.base_url}/v1/{emulator.sid}/email"
        return requests.post(url, json=body, headers={"api-key": emulator.api_key}, timeout=10)

    def test_a_sent_message_becomes_visible_then_moves(self, kaleyra_email_emulator):
        response = self.send(
            kaleyra_email_emulator,
            {
                "from": "a@shop.example.com",
                "to": ["b@example.com", "bounce@example.com"],
                "subject": "s",
                "text_body": "t",
            },
        )
        assert response.status_code == 202
        ids = [entry["message_id"] for entry in response.json()["data"]]
        assert [i.split(":")[1] for i in ids] == ["1", "2"]
        assert get(kaleyra_email_emulator, f"stats/{ids[0]}").status_code == 404, "not visible at once"

        deadline = time.monotonic() + 10
        final = {}
        while time.monotonic() < deadline and set(final.values()) != {"OPEN", "BOUNCE"}:
            for message_id in ids:
                response = get(kaleyra_email_emulator, f"stats/{message_id}")
                if response.status_code == 200:
                    final[message_id] = response.json()["data"][0]["recipients"][0]["status"]
            time.sleep(0.1)
        assert final == {ids[0]: "OPEN", ids[1]: "BOUNCE"}
        logs = get(kaleyra_email_emulator, "logs", search="bounce@example.com").json()["data"]
        assert [row["message_id"] for row in logs] == [ids[1]]

    @pytest.mark.parametrize(
        "body",
        [
            {"to": ["b@example.com"], "subject": "s", "text_body": "t"},
            {"from": "a@x.com", "to": [], "subject": "s", "text_body": "t"},
            {"from": "a@x.com", "to": ["b@example.com"], "text_body": "t"},
            {"from": "a@x.com", "to": ["b@example.com"], "subject": "s"},
        ],
    )
    def test_an_incomplete_send_is_a_400(self, kaleyra_email_emulator, body):
        assert self.send(kaleyra_email_emulator, body).status_code == 400


def test_the_command_line_serves_until_stopped():
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "airflow_provider_kaleyra_email.testing",
            "--port",
            "0",
            "--rows-per-day",
            "20",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        info = json.loads(process.stdout.readline())
        export = process.stdout.readline()
        connection = json.loads(export.split("=", 1)[1].strip().strip("'"))
        response = requests.get(
            f"{info['base_url']}/v1/{info['sid']}/email/logs",
            params={"start_date": info["last_day"], "end_date": info["last_day"]},
            headers={"api-key": connection["password"]},
            timeout=10,
        )
        assert response.status_code == 200
        assert connection["host"] == info["base_url"]
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.mark.kaleyra_email_emulator(rows_per_day=123, timezone="Europe/Berlin")
def test_the_marker_configures_the_fixture(kaleyra_email_connection, kaleyra_email_emulator, monkeypatch):
    assert kaleyra_email_emulator.dataset.rows_per_day == 123
    connection = json.loads(os.environ["AIRFLOW_CONN_KALEYRA_EMAIL_DEFAULT"])
    assert connection["extra"]["timezone"] == "Europe/Berlin"
    assert connection["host"] == kaleyra_email_emulator.base_url
