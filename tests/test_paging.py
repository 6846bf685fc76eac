"""The paging machinery on its own."""

from __future__ import annotations

import threading
import time

import pytest

from airflow_provider_kaleyra_email._paging import (
    AdaptiveConcurrency,
    RecentKeys,
    SnapshotCoverage,
    ordered_concurrent_map,
)


class TestOrderedConcurrentMap:
    def test_results_come_in_order_although_they_finish_out_of_order(self):
        def slow_for_low(n):
            time.sleep(0.02 * (5 - n % 5))
            return n

        assert list(ordered_concurrent_map(slow_for_low, range(20), concurrency=4, lookahead=8)) == list(range(20))

    def test_at_most_lookahead_items_are_in_flight_or_waiting(self):
        started = []
        lock = threading.Lock()

        def fetch(n):
            with lock:
                started.append(n)
            return n

        results = ordered_concurrent_map(fetch, range(100), concurrency=3, lookahead=6)
        assert next(results) == 0
        time.sleep(0.1)
        assert len(started) <= 7
        assert list(results) == list(range(1, 100))

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

        list(ordered_concurrent_map(fetch, range(12), concurrency=4, lookahead=8))
        assert peak == 4

    def test_an_error_surfaces_at_its_place(self):
        def fetch(n):
            if n == 3:
                raise RuntimeError("page 3")
            return n

        results = ordered_concurrent_map(fetch, range(10), concurrency=3, lookahead=6)
        assert [next(results) for _ in range(3)] == [0, 1, 2]
        with pytest.raises(RuntimeError, match="page 3"):
            next(results)

    def test_sequential_when_concurrency_is_one(self):
        threads = set()
        list(ordered_concurrent_map(lambda n: threads.add(threading.get_ident()), range(5), concurrency=1, lookahead=1))
        assert threads == {threading.get_ident()}


def test_recent_keys_forget_the_oldest():
    keys = RecentKeys(capacity=3)
    assert keys.new_only(list("abca"), "abca") == (["a", "b", "c"], 1)
    keys.new_only(["d", "e"], "de")
    assert keys.new_only(["a"], "a") == (["a"], 0), "'a' fell out of the window"


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


class TestAdaptiveConcurrency:
    def test_halves_on_429_once_per_burst_and_recovers(self):
        limit = AdaptiveConcurrency(8)
        limit.throttled()
        limit.throttled()
        assert limit.limit == 4
        limit._last_decrease -= AdaptiveConcurrency.COOLDOWN_SECONDS
        limit.throttled()
        assert limit.limit == 2
        assert limit.lowest == 2
        for _ in range(AdaptiveConcurrency.SUCCESSES_PER_STEP * 2):
            limit.succeeded()
        assert limit.limit == 3

    def test_slots_block_at_the_limit(self):
        limit = AdaptiveConcurrency(2)
        active, peak = 0, 0
        lock = threading.Lock()

        def work():
            nonlocal active, peak
            with limit.slot():
                with lock:
                    active += 1
                    peak = max(peak, active)
                time.sleep(0.02)
                with lock:
                    active -= 1

        threads = [threading.Thread(target=work) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert peak == 2
