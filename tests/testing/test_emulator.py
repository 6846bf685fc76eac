"""The emulator speaks the API as the page shows it, checked with a plain HTTP client."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import date, datetime, timedelta, timezone

import pytest
import requests

from airflow_provider_kaleyra_email.testing import Faults, KaleyraEmailEmulator, SyntheticDataset

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

    def test_settled_rows_are_cached_encoded_within_the_budget_and_a_new_plan_empties_the_cache(self):
        later = datetime(2026, 11, 10, tzinfo=timezone.utc)  # a week after DAY: its statuses are settled
        dataset = SyntheticDataset(start_date=DAY, days=1, rows_per_day=400, row_cache_mb=0.1, clock=lambda: later)
        now = dataset.local_now()

        def served():
            return [json.loads(dataset.encoded_log_row(DAY, row, now)) for row in range(400)]

        generated = [dataset.log_row(DAY, row, now) for row in range(400)]
        assert served() == generated
        assert served() == generated, "the second pass, partly from the cache"
        assert 0 < dataset._encoded_bytes <= 100_000, "400 rows of about 420 bytes do not all fit in 0.1 MB"

        dataset.rows_per_day = 200  # the same rows now fall at other times of the day
        assert served()[:200] == [dataset.log_row(DAY, row, now) for row in range(200)]

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
