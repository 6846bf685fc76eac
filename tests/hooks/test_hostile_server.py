"""
The hook against a server that lies: repeated and clamped pages, a lying or missing ``total``,
empty or oversized pages, rows without keys, bodies that trickle, are too large or will not
decompress, fatal answers among pages in flight, and echoes of the API key.

Every listing must end after a bounded number of requests, never succeed while losing rows in
silence, and fail with a message that says which page said what.
"""

from __future__ import annotations

import base64
import logging
import time
from datetime import date
from urllib.parse import quote

import pytest

from airflow_provider_kaleyra_email.exceptions import (
    KaleyraEmailAPIError,
    KaleyraEmailRetriesExhaustedError,
)
from airflow_provider_kaleyra_email.hooks.kaleyra_email import KaleyraEmailAsyncHook, KaleyraEmailHook
from airflow_provider_kaleyra_email.testing import OMIT, Faults, KaleyraEmailEmulator, Quirks

DAY = date(2026, 11, 2)
ROWS = 250
PAGE = 100
CONCURRENCY = 4
#: Requests a listing may spend beyond the pages that brought rows: the pages in flight.
LOOKAHEAD = 2 * CONCURRENCY
SECRET = "sk-live-42c0ffee-9e1d-4b7a-HOSTILE"


def key_forms(key: str) -> list[str]:
    return [key, quote(key, safe=""), base64.b64encode(f"user:{key}".encode()).decode()]


@pytest.fixture
def emulator(monkeypatch):
    with KaleyraEmailEmulator(api_key=SECRET, start_date=DAY, days=3, rows_per_day=ROWS) as running:
        monkeypatch.setenv("AIRFLOW_CONN_KALEYRA_EMAIL_DEFAULT", running.connection_json())
        yield running


@pytest.fixture
def hook(emulator):
    return KaleyraEmailHook(
        max_concurrency=CONCURRENCY, page_size=PAGE, max_retries=1, retry_wait_initial=0.01, retry_wait_max=0.02
    )


def log_requests(emulator):
    return len(emulator.requests_to("/logs"))


def expected(emulator):
    return list(emulator.dataset.expected_logs(DAY, DAY))


# ------------------------------------------------------------------------------------------
# 1. Every listing ends after a bounded number of requests
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("quirks", "message"),
    [
        pytest.param(
            Quirks(clamp_pages=True, total=lambda t, p: 10**9), "page 1 said total=1,000,000,000", id="clamped-1e9"
        ),
        pytest.param(Quirks(total=lambda t, p: 10**9), "page 1 said total=1,000,000,000", id="empty-past-end-1e9"),
        pytest.param(Quirks(empty_from_page=2), "page 2 was empty", id="empty-while-total-says-more"),
        pytest.param(Quirks(total=lambda t, p: t - 10 * p), "250 rows were listed", id="shrinking-total"),
        pytest.param(Quirks(total=lambda t, p: t + 10 * p), "250 rows were listed", id="growing-total"),
        pytest.param(
            Quirks(page_rows_from=lambda p: 2 if p == 3 else p), "page 3 repeated page 2", id="page-3-is-page-2"
        ),
    ],
)
def test_a_lying_server_ends_the_listing_with_an_error_that_says_which_page_said_what(hook, emulator, quirks, message):
    emulator.set_quirks(quirks)
    started = time.monotonic()

    with pytest.raises(KaleyraEmailAPIError, match="do not add up") as raised:
        list(hook.iter_logs(DAY, DAY))

    assert message in str(raised.value)
    assert "allow_count_mismatch" in str(raised.value), "the message says how to accept a moving listing"
    # 3 pages hold the day; beyond them only the pages already in flight, and a few repair fetches.
    assert log_requests(emulator) <= 3 + LOOKAHEAD + 4
    assert time.monotonic() - started < 5


def test_allow_count_mismatch_keeps_every_row_and_logs_the_counts_as_a_warning(hook, emulator, caplog, capfd):
    emulator.set_quirks(Quirks(total=lambda t, p: 10**9))

    with caplog.at_level(logging.WARNING):
        rows = list(hook.iter_logs(DAY, DAY, allow_count_mismatch=True))

    assert rows == expected(emulator)
    # Airflow 3 logs through structlog to the console, Airflow 2 through logging.
    said = [*caplog.text.splitlines(), *capfd.readouterr().out.splitlines()]
    warning = [line for line in said if "allow_count_mismatch is set" in line]
    assert warning, said
    assert "250 rows were listed" in warning[0]
    assert "1,000,000,000" in warning[0]
    assert "warning" in warning[0].lower()


@pytest.mark.parametrize(
    "quirks",
    [
        pytest.param(Quirks(total=lambda t, p: OMIT), id="no-total"),
        pytest.param(Quirks(total=lambda t, p: "many"), id="total-not-a-number"),
        pytest.param(Quirks(total=lambda t, p: OMIT, clamp_pages=True), id="no-total-clamped"),
    ],
)
def test_without_a_usable_total_pages_are_read_one_by_one_until_a_short_or_repeated_page(hook, emulator, quirks):
    emulator.set_quirks(quirks)

    assert list(hook.iter_logs(DAY, DAY)) == expected(emulator)
    assert log_requests(emulator) == 3


def test_a_clamping_server_with_an_exact_number_of_pages_and_no_total_ends_on_the_repeat(monkeypatch):
    with KaleyraEmailEmulator(start_date=DAY, days=1, rows_per_day=200) as emulator:
        monkeypatch.setenv("AIRFLOW_CONN_KALEYRA_EMAIL_DEFAULT", emulator.connection_json())
        emulator.set_quirks(Quirks(clamp_pages=True, total=lambda t, p: OMIT))

        rows = list(KaleyraEmailHook(page_size=PAGE).iter_logs(DAY, DAY))

        assert rows == list(emulator.dataset.expected_logs(DAY, DAY))
        assert [r.query["page"] for r in emulator.requests_to("/logs")] == [["1"], ["2"], ["3"]]


def test_a_page_repeating_an_earlier_one_is_an_error_even_without_a_total(hook, emulator):
    # (A repeat of the page just before is what a clamping server sends past the end.)
    emulator.set_quirks(Quirks(total=lambda t, p: OMIT, page_rows_from=lambda p: 1 if p == 3 else p))

    with pytest.raises(KaleyraEmailAPIError, match="page 3 repeated page 1"):
        list(KaleyraEmailHook(page_size=50).iter_logs(DAY, DAY))


def test_a_page_holding_more_rows_than_limit_is_an_error_at_once(hook, emulator):
    emulator.set_quirks(Quirks(rows_per_page=150))

    with pytest.raises(KaleyraEmailAPIError, match="page 1 held 150 rows, more than limit=100"):
        list(hook.iter_logs(DAY, DAY))
    assert log_requests(emulator) <= 1 + LOOKAHEAD


def test_summary_stats_end_on_a_clamped_page_and_list_each_day_once(hook, emulator):
    emulator.set_quirks(Quirks(clamp_pages=True))

    days = list(hook.iter_summary_stats(DAY, date(2026, 11, 4), page_size=1))

    assert [day["date"] for day in days] == ["2026-11-02", "2026-11-03", "2026-11-04"]
    assert len(emulator.requests_to("/stats")) == 4, "three days, then one repeat"


def test_summary_stats_refuse_a_page_that_repeats_an_earlier_one(hook, emulator):
    emulator.set_quirks(Quirks(page_rows_from=lambda p: 1 if p == 3 else p))

    with pytest.raises(KaleyraEmailAPIError, match="page 3 repeated page 1"):
        list(hook.iter_summary_stats(DAY, date(2026, 11, 4), page_size=1))


# ------------------------------------------------------------------------------------------
# 2. No silent loss or duplication
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fields", [("to_mail",), ("message_id",), ("message_id", "to_mail")])
def test_rows_without_their_key_fields_are_never_merged(hook, emulator, fields):
    emulator.set_quirks(Quirks(drop_row_fields=fields))

    rows = list(hook.iter_logs(DAY, DAY))

    assert len(rows) == ROWS
    assert rows == [{k: v for k, v in row.items() if k not in fields} for row in expected(emulator)]


@pytest.mark.parametrize("endpoint", ["logs", "stats"])
def test_entries_of_data_that_are_not_objects_are_an_error_not_dropped(hook, emulator, endpoint):
    emulator.queue_faults("non_object_rows")
    listing = hook.iter_logs(DAY, DAY) if endpoint == "logs" else hook.iter_summary_stats(DAY, DAY)

    with pytest.raises(KaleyraEmailAPIError, match=r"page 1: data\[0\] is 1 \(int\), not a JSON object"):
        list(listing)


# ------------------------------------------------------------------------------------------
# 3. timeout bounds a whole response; a response is capped in size
# ------------------------------------------------------------------------------------------


# The sync hook bounds the body by the deadline (checked between reads) and each read of the status
# line and headers by the timeout (requests' read timeout): headers that pause longer than it fail;
# headers trickling faster are bounded only by Airflow's execution_timeout (docs/reliability.md).
TRICKLES = [("trickle", 0.5), ("trickle_headers", 1.5)]


@pytest.mark.parametrize(("kind", "pause"), TRICKLES)
def test_a_trickling_answer_fails_within_the_timeout_and_is_retried_like_one(emulator, kind, pause):
    emulator.set_faults(Faults(trickle_seconds=pause))
    emulator.queue_faults(kind)
    hook = KaleyraEmailHook(timeout=1, max_retries=1, retry_wait_initial=0.01, retry_wait_max=0.02)
    started = time.monotonic()

    rows = list(hook.iter_summary_stats(DAY, DAY))

    assert [row["date"] for row in rows] == ["2026-11-02"], "the retry got the answer"
    assert time.monotonic() - started < 1 + 1 + 0.5
    assert [r.fault for r in emulator.requests_to("/stats")] == [kind, None]


@pytest.mark.parametrize(("kind", "pause"), TRICKLES)
def test_a_trickling_answer_that_never_ends_exhausts_the_retries_with_a_timeout(emulator, kind, pause):
    emulator.set_faults(Faults(trickle_seconds=pause))
    emulator.queue_faults(kind, kind)
    hook = KaleyraEmailHook(timeout=1, max_retries=1, retry_wait_initial=0.01, retry_wait_max=0.02)
    started = time.monotonic()

    with pytest.raises(KaleyraEmailRetriesExhaustedError, match=r"no complete answer within 1 s \(timeout\) \(x2\)"):
        list(hook.iter_summary_stats(DAY, DAY))
    assert time.monotonic() - started < 2 * (1 + 1)


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", ["trickle", "trickle_headers"])
async def test_the_async_hook_bounds_a_trickling_answer_by_its_timeout(emulator, kind):
    emulator.set_faults(Faults(trickle_seconds=0.5))
    emulator.queue_faults(kind)
    message_id = emulator.dataset.message_id(DAY, 0)
    hook = KaleyraEmailAsyncHook(timeout=1, max_retries=0)
    started = time.monotonic()
    try:
        with pytest.raises(KaleyraEmailRetriesExhaustedError, match="no complete answer within 1 s"):
            await hook.get_message_stats(message_id)
        assert time.monotonic() - started < 2
        assert (await hook.get_message_stats(message_id))["recipients"], "the next poll is answered"
    finally:
        await hook.aclose()


def test_an_answer_framed_by_closing_the_connection_is_read_whole(emulator):
    # Legal HTTP (no Content-Length, the end of the body is the end of the connection): the
    # deadline reader must keep the socket open after http.client lets go of the connection.
    emulator.queue_faults("close_delimited", "close_delimited")
    hook = KaleyraEmailHook(max_retries=0)
    message_id = emulator.dataset.message_id(DAY, 0)

    assert hook.get_message_stats(message_id)["recipients"]
    assert [row["date"] for row in hook.iter_summary_stats(DAY, DAY)] == ["2026-11-02"]
    assert [r.fault for r in emulator.requests] == ["close_delimited", "close_delimited"]


@pytest.mark.asyncio
async def test_the_async_hook_reads_an_answer_framed_by_closing_the_connection(emulator):
    emulator.queue_faults("close_delimited")
    hook = KaleyraEmailAsyncHook(max_retries=0)
    try:
        assert (await hook.get_message_stats(emulator.dataset.message_id(DAY, 0)))["recipients"]
    finally:
        await hook.aclose()


@pytest.mark.parametrize("kind", ["oversized", "oversized_chunked"])
def test_a_response_over_the_size_cap_is_a_clear_error_and_not_retried(emulator, kind):
    emulator.set_faults(Faults(oversized_bytes=3 * 1024 * 1024))
    emulator.queue_faults(kind)
    hook = KaleyraEmailHook(max_response_bytes=1024 * 1024, max_retries=3)

    with pytest.raises(KaleyraEmailAPIError, match=r"over the limit of 1,048,576 \(max_response_bytes\)"):
        list(hook.iter_summary_stats(DAY, DAY))
    assert len(emulator.requests_to("/stats")) == 1


def test_the_default_size_cap_refuses_an_80_mb_body_by_its_declared_length(emulator):
    emulator.queue_faults("oversized")
    started = time.monotonic()

    with pytest.raises(KaleyraEmailAPIError, match="83,886,080 bytes, over the limit of 67,108,864"):
        list(KaleyraEmailHook().iter_summary_stats(DAY, DAY))
    assert time.monotonic() - started < 1, "refused on its Content-Length, not read"


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", ["oversized", "oversized_chunked"])
async def test_the_async_hook_caps_the_size_too(emulator, kind):
    emulator.set_faults(Faults(oversized_bytes=3 * 1024 * 1024))
    emulator.queue_faults(kind)
    hook = KaleyraEmailAsyncHook(max_response_bytes=1024 * 1024)
    try:
        with pytest.raises(KaleyraEmailAPIError, match="max_response_bytes"):
            await hook.get_message_stats(emulator.dataset.message_id(DAY, 0))
    finally:
        await hook.aclose()


def test_a_body_that_will_not_decompress_is_an_unreadable_body_and_retried(emulator):
    emulator.queue_faults("bad_gzip")
    hook = KaleyraEmailHook(max_retries=1, retry_wait_initial=0.01, retry_wait_max=0.02)

    assert [row["date"] for row in hook.iter_summary_stats(DAY, DAY)] == ["2026-11-02"]

    emulator.queue_faults("bad_gzip", "bad_gzip")
    with pytest.raises(KaleyraEmailRetriesExhaustedError, match="could not be decompressed"):
        list(hook.iter_summary_stats(DAY, DAY))


@pytest.mark.asyncio
async def test_the_async_hook_retries_nothing_but_names_an_undecodable_body(emulator):
    emulator.queue_faults("bad_gzip")
    hook = KaleyraEmailAsyncHook(max_retries=0)
    try:
        with pytest.raises(KaleyraEmailRetriesExhaustedError, match="could not be decompressed"):
            await hook.get_message_stats(emulator.dataset.message_id(DAY, 0))
    finally:
        await hook.aclose()


# ------------------------------------------------------------------------------------------
# 4. A fatal answer, or an early stop, ends the listing at once
# ------------------------------------------------------------------------------------------


def test_a_fatal_answer_on_one_page_ends_the_listing_while_others_wait_out_a_429(monkeypatch):
    # A round trip as against Kaleyra (20 ms), so pages are in flight together (on a bare loopback one at a time pays).
    faults = Faults(retry_after=30, latency=0.02)
    with KaleyraEmailEmulator(start_date=DAY, days=1, rows_per_day=2_000, faults=faults) as emulator:
        monkeypatch.setenv("AIRFLOW_CONN_KALEYRA_EMAIL_DEFAULT", emulator.connection_json())
        # Page 1 answers; of the pages then in flight, one waits 30 s on a 429, one gets a 400.
        emulator.queue_faults("ok", "429", "echo_error")
        hook = KaleyraEmailHook(max_concurrency=CONCURRENCY, page_size=PAGE, max_retries=3)
        started = time.monotonic()

        with pytest.raises(KaleyraEmailAPIError) as raised:
            list(hook.iter_logs(DAY, DAY))

        elapsed = time.monotonic() - started
        assert raised.value.status_code == 400
        assert elapsed < 3, f"the 429's 30 s Retry-After was not cancelled ({elapsed:.1f} s)"
        failed_at = next(r.at for r in emulator.requests if r.status == 400)
        assert len([r for r in emulator.requests if r.at > failed_at]) <= CONCURRENCY, "nothing new was sent"


def test_leaving_a_listing_early_sends_nothing_more_and_returns_at_once(monkeypatch):
    # A round trip as against Kaleyra (20 ms), so pages are in flight together (on a bare loopback one at a time pays).
    faults = Faults(retry_after=30, latency=0.02)
    with KaleyraEmailEmulator(start_date=DAY, days=1, rows_per_day=2_000, faults=faults) as emulator:
        monkeypatch.setenv("AIRFLOW_CONN_KALEYRA_EMAIL_DEFAULT", emulator.connection_json())
        rows = KaleyraEmailHook(max_concurrency=CONCURRENCY, page_size=PAGE).iter_logs(DAY, DAY)
        assert next(rows)["message_id"]
        started = time.monotonic()

        rows.close()

        assert time.monotonic() - started < 1.5
        time.sleep(0.2)
        # Pages are asked for as the rows are read: leaving on page 1 asked for page 1 only.
        assert len(emulator.requests_to("/logs")) == 1


# ------------------------------------------------------------------------------------------
# 5. The key never shows, even when the server echoes it
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "error"), [("echo_error", KaleyraEmailAPIError), ("echo_redirect", KaleyraEmailAPIError)]
)
def test_an_echoed_key_is_scrubbed_from_errors_in_every_form(emulator, kind, error):
    emulator.queue_faults(kind)

    with pytest.raises(error) as raised:
        list(KaleyraEmailHook(max_retries=0).iter_summary_stats(DAY, DAY))

    text = f"{raised.value} {raised.value!r} {raised.value.message}"
    assert "***" in text, "the echo was there to scrub"
    for form in key_forms(SECRET):
        assert form not in text


@pytest.mark.asyncio
async def test_the_async_hook_scrubs_an_echoed_key_too(emulator):
    emulator.queue_faults("echo_error")
    hook = KaleyraEmailAsyncHook()
    try:
        with pytest.raises(KaleyraEmailAPIError) as raised:
            await hook.get_message_stats(emulator.dataset.message_id(DAY, 0))
    finally:
        await hook.aclose()
    for form in key_forms(SECRET):
        assert form not in str(raised.value)


def test_an_html_page_echoing_the_key_leaves_no_trace_when_retries_run_out(emulator):
    emulator.queue_faults("echo_html", "echo_html")

    with pytest.raises(KaleyraEmailRetriesExhaustedError) as raised:
        list(KaleyraEmailHook(max_retries=1, retry_wait_initial=0.01).iter_summary_stats(DAY, DAY))

    for form in key_forms(SECRET):
        assert form not in str(raised.value)


def test_reading_the_connection_registers_the_key_with_airflows_masker(emulator):
    try:
        from airflow.providers.common.compat.sdk import redact
    except ImportError:  # Airflow 2.11's common-compat
        from airflow.utils.log.secrets_masker import redact

    assert KaleyraEmailHook().config.sid
    assert redact(f"the key is {SECRET}") == "the key is ***"
