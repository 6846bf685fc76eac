"""The paging machinery on its own: the listing rules as a table, and ordered concurrent fetches."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from airflow_provider_kaleyra_email.exceptions import KaleyraEmailAPIError
from airflow_provider_kaleyra_email.hooks import _api as api
from airflow_provider_kaleyra_email.hooks._paging import (
    Listing,
    Page,
    SeenKeys,
    SnapshotCoverage,
    fetch_in_order,
)

SIZE = 3


def rows(*ids):
    return [{"message_id": str(i), "to_mail": f"{i}@example.com"} for i in ids]


def listing(allow_mismatch=False):
    return Listing(
        label="logs",
        endpoint="GET /logs",
        page_size=SIZE,
        key_of=api.log_row_keys,
        log=logging.getLogger("test.listing"),
        lookahead=4,
        allow_mismatch=allow_mismatch,
    )


def run(answers):
    """Feed pages in order while the listing asks for more; return (rows, pages asked, listing)."""
    state = listing()
    got, asked = [], 0
    while state.more and asked < len(answers):
        page_rows, total = answers[asked]
        asked += 1
        got += state.accept(Page(asked, page_rows, total))
    state.finish()
    return [row.get("message_id") for row in got], asked, state


# Each case: the answers to pages 1, 2, ... as (rows, total); how many pages are read; the rows.
ENDS = {
    "stops on a short page": ([(rows(1, 2, 3), 5), (rows(4, 5), 5), (rows(9), 5)], 2, list("12345")),
    "stops when the total is reached": ([(rows(1, 2, 3), 6), (rows(4, 5, 6), 6), (rows(9), 6)], 2, list("123456")),
    "stops on a clamped repeat, no total": (
        [(rows(1, 2, 3), None), (rows(4, 5, 6), None), (rows(4, 5, 6), None)],
        3,
        list("123456"),
    ),
    "stops on an empty page, no total": ([(rows(1, 2, 3), None), ([], None), (rows(7), None)], 2, list("123")),
    "drops duplicates within the listing": ([(rows(1, 2, 3), 5), (rows(3, 4, 5), 5)], 2, list("12345")),
}


@pytest.mark.parametrize(("answers", "asked", "ids"), ENDS.values(), ids=ENDS.keys())
def test_a_listing_ends_where_the_answers_say(answers, asked, ids):
    got, pages, _ = run(answers)
    assert (pages, got) == (asked, ids)


# Each case: the answers, and what the error must say.
CONTRADICTIONS = {
    "total far too large": (
        [(rows(1, 2, 3), 10**9), (rows(4), 10**9)],
        "4 rows were listed, but page 1 said total=1,000,000,000",
    ),
    "empty page while total says more": ([(rows(1, 2, 3), 9), ([], 9)], "page 2 was empty"),
    "a page repeats an earlier, not the last, page": (
        [(rows(1, 2, 3), None), (rows(4, 5, 6), None), (rows(1, 2, 3), None)],
        "page 3 repeated page 1",
    ),
    "more rows than limit": ([(rows(1, 2, 3, 4), 4)], "page 1 held 4 rows, more than limit=3"),
}


@pytest.mark.parametrize(("answers", "message"), CONTRADICTIONS.values(), ids=CONTRADICTIONS.keys())
def test_answers_that_contradict_each_other_end_in_an_error_naming_the_page(answers, message):
    with pytest.raises(KaleyraEmailAPIError, match="do not add up") as raised:
        run(answers)
    assert message in str(raised.value)


def test_rows_without_a_key_are_never_merged_but_a_repeated_page_of_them_ends_the_listing():
    keyless = [{"status": "BOUNCE"}, {"status": "BOUNCE"}, {"status": "OPEN"}]
    got, pages, state = run([(keyless, None), (keyless, None), ([{"status": "x"}], None)])
    assert (len(got), pages) == (3, 2)
    assert state.duplicates == 3


def test_ids_that_are_lists_or_objects_are_compared_by_their_json():
    odd = [{"message_id": ["a"], "to_mail": {"x": 1}}, {"message_id": ["b"], "to_mail": {"x": 1}}]
    state = listing()
    assert state.accept(Page(1, [*odd, odd[0]], None)) == odd


def test_a_page_of_seen_rows_goes_on_while_total_grew_by_a_page_but_not_for_ever():
    state = listing(allow_mismatch=True)
    state.accept(Page(1, rows(1, 2, 3), 3))
    for number in range(2, 10):
        state.accept(Page(number, rows(1, 2, 3), 3 + 3 * number))  # rows sliding by a page each time
        if not state.more:
            break
    assert number == 4, "three fruitless pages in a row, then the listing ends"


def test_pages_are_asked_on_evidence_within_the_lookahead_and_the_total():
    state = listing()
    assert state.allowed() == 1
    state.accept(Page(1, rows(1, 2, 3), 10**9))
    assert state.allowed() == 5, "evidence for page 2, and 3 more in flight"
    state.accept(Page(2, rows(4, 5, 6), 7))
    assert state.allowed() == 6, "never beyond the largest total, never below the evidence"
    state.accept(Page(3, rows(7), 7))
    assert state.allowed() == 3, "a short page ends it"


def test_seen_keys_forget_the_oldest_pages_and_never_merge_a_row_without_a_key():
    keys = SeenKeys(capacity=2)
    assert keys.new_only(list("abca"), ["a", "b", None, "a"]) == ["a", "b", "c"]
    assert keys.new_only(["d", "e"], ["d", "e"]) == ["d", "e"]
    keys.new_only(["f"], ["f"])  # the last 2 keys are kept, in whole pages: "a" and "b" go
    assert keys.new_only(["a", "d"], ["a", "d"]) == ["a"], "'a' fell out of the window, 'd' did not"


class TestFetchInOrder:
    def test_results_come_in_order_although_they_finish_out_of_order(self):
        def slow_for_low(n):
            time.sleep(0.02 * (5 - n % 5))
            return n

        pages = fetch_in_order(slow_for_low, allowed=lambda: 20, concurrency=4, cancel=threading.Event())
        assert list(pages) == list(range(1, 21))

    def test_pages_are_only_asked_for_as_allowed_grows(self):
        asked: list[int] = []
        limit = [2]
        pages = fetch_in_order(
            lambda n: asked.append(n) or n,
            allowed=lambda: limit[0],
            concurrency=3,
            cancel=threading.Event(),
        )
        assert next(pages) == 1
        time.sleep(0.05)
        assert sorted(asked) == [1, 2]
        limit[0] = 4
        assert list(pages) == [2, 3, 4]

    def test_calls_really_overlap(self):
        active, peak = 0, 0
        lock = threading.Lock()

        def fetch(n):
            nonlocal active, peak
            with lock:
                active += 1
                peak = max(peak, active)
            time.sleep(0.03)
            with lock:
                active -= 1
            return n

        list(fetch_in_order(fetch, allowed=lambda: 12, concurrency=4, cancel=threading.Event()))
        assert peak == 4

    def test_a_failure_anywhere_is_raised_at_once_and_cancels_the_rest(self):
        cancel = threading.Event()

        def fetch(n):
            if n == 3:
                raise RuntimeError("page 3")
            if n == 1:
                cancel.wait(10)  # a page stuck in a back-off sleep until cancelled
            return n

        started = time.monotonic()
        with pytest.raises(RuntimeError, match="page 3"):
            list(fetch_in_order(fetch, allowed=lambda: 10, concurrency=3, cancel=cancel))
        assert time.monotonic() - started < 2
        assert cancel.is_set()

    def test_sequential_when_concurrency_is_one(self):
        threads = set()
        pages = fetch_in_order(
            lambda n: threads.add(threading.get_ident()),
            allowed=lambda: 5,
            concurrency=1,
            cancel=threading.Event(),
        )
        list(pages)
        assert threads == {threading.get_ident()}

    def test_while_one_is_worth_it_the_callers_thread_fetches_and_more_go_to_the_pool(self):
        worth = [1]
        in_caller: list[bool] = []

        def fetch(n):
            in_caller.append(threading.get_ident() == caller)
            if n == 3:
                worth[0] = 4  # answers began to take longer than our CPU needs for them
            return n

        caller = threading.get_ident()
        pages = fetch_in_order(
            fetch, allowed=lambda: 8, concurrency=4, cancel=threading.Event(), worth=lambda: worth[0]
        )
        assert list(pages) == list(range(1, 9))
        assert in_caller[:3] == [True, True, True]
        assert not any(in_caller[3:]), "once more are worth it, the pool fetches"

    def test_more_than_one_at_a_time_run_in_the_pool(self):
        threads = set()
        caller = threading.get_ident()
        pages = fetch_in_order(
            lambda n: threads.add(threading.get_ident()) or n,
            allowed=lambda: 8,
            concurrency=4,
            cancel=threading.Event(),
        )
        assert list(pages) == list(range(1, 9))
        assert caller not in threads


class TestSnapshotCoverage:
    def test_a_stable_listing_has_no_gaps(self):
        coverage = SnapshotCoverage(total=250, page_size=100)
        for page, rows in ((1, 100), (2, 100), (3, 50)):
            coverage.add(page, rows, 250)
        assert coverage.gaps() == []

    def test_rows_pushed_into_a_page_already_fetched_leave_a_gap(self):
        coverage = SnapshotCoverage(total=300, page_size=100)
        coverage.add(1, 100, 300)
        coverage.add(3, 100, 300)  # fetched before the push: snapshot 200..299
        coverage.add(2, 100, 310)  # after 10 new rows: snapshot 90..189
        assert coverage.gaps() == [(190, 200)]
        assert coverage.missing() == 10
        assert coverage.page_now_holding(190) == 3
        coverage.add(3, 100, 310)
        assert coverage.gaps() == []
