"""
The machinery behind the hook's pagination: ordered concurrent page fetches, an adaptive
concurrency limit, de-duplication with bounded memory, and progress logging.

Nothing here knows about HTTP or Kaleyra; the hook passes in what to fetch.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

if TYPE_CHECKING:
    from collections.abc import Callable, Hashable, Iterable, Iterator

T = TypeVar("T")
R = TypeVar("R")


class Log(Protocol):
    """The logging calls we make: satisfied by ``logging.Logger`` and Airflow's structlog loggers."""

    def info(self, msg: str, /, *args: Any) -> Any: ...

    def warning(self, msg: str, /, *args: Any) -> Any: ...


def ordered_concurrent_map(
    fetch: Callable[[T], R], items: Iterable[T], *, concurrency: int, lookahead: int
) -> Iterator[R]:
    """
    ``map(fetch, items)`` with up to ``concurrency`` calls at once, yielding results in order.

    At most ``lookahead`` results are in flight or waiting to be consumed, so memory does not
    grow with the number of items. An exception from ``fetch`` is raised at its place in the
    order; leaving the loop early cancels what has not started.
    """
    if concurrency <= 1:
        for item in items:
            yield fetch(item)
        return
    source = iter(items)
    pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="kaleyra-email-page")
    pending: deque[Future[R]] = deque()
    try:
        for item in source:
            pending.append(pool.submit(fetch, item))
            if len(pending) >= max(lookahead, concurrency):
                break
        while pending:
            result = pending.popleft().result()
            next_item = next(source, _END)
            if next_item is not _END:
                pending.append(pool.submit(fetch, next_item))  # type: ignore[arg-type]
            yield result
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


_END = object()


class AdaptiveConcurrency:
    """
    A concurrency limit that halves when the API says 429 and creeps back up after successes
    (additive increase, multiplicative decrease), shared by every request of one hook.
    """

    #: Successes at the current limit before it is raised by one.
    SUCCESSES_PER_STEP = 20
    #: Several requests in flight see the same 429 burst; count it once per this many seconds.
    COOLDOWN_SECONDS = 1.0

    def __init__(self, maximum: int, *, log: Log | None = None):
        self.maximum = maximum
        self.limit = maximum
        self.lowest = maximum
        self._active = 0
        self._successes = 0
        self._last_decrease = float("-inf")
        self._cond = threading.Condition()
        self._log: Log = log or logging.getLogger(__name__)

    @contextmanager
    def slot(self) -> Iterator[None]:
        with self._cond:
            while self._active >= self.limit:
                self._cond.wait()
            self._active += 1
        try:
            yield
        finally:
            with self._cond:
                self._active -= 1
                self._cond.notify()

    def throttled(self) -> None:
        with self._cond:
            now = time.monotonic()
            if now - self._last_decrease < self.COOLDOWN_SECONDS or self.limit == 1:
                return
            self._last_decrease = now
            self._successes = 0
            self.limit = max(1, self.limit // 2)
            self.lowest = min(self.lowest, self.limit)
            self._log.warning("Rate limited by Kaleyra (HTTP 429): concurrency lowered to %d.", self.limit)

    def succeeded(self) -> None:
        with self._cond:
            if self.limit >= self.maximum:
                return
            self._successes += 1
            if self._successes >= self.SUCCESSES_PER_STEP * self.limit:
                self._successes = 0
                self.limit += 1
                self._cond.notify()


class RecentKeys:
    """
    Remembers the last ``capacity`` keys, to drop rows seen twice.

    Logs are listed newest first, so mail that arrives during a listing pushes rows down into
    the next page, where we see them again: a duplicate is always near its first sighting.
    A window of recent keys catches that with memory that does not grow with the result.
    """

    def __init__(self, capacity: int):
        self.capacity = capacity
        self._order: deque[Hashable] = deque()
        self._seen: set[Hashable] = set()

    def new_only(self, items: list[T], keys: Iterable[Hashable]) -> tuple[list[T], int]:
        """The items of one page whose key is not among the recent ones, and how many were dropped."""
        seen, order = self._seen, self._order
        fresh = []
        for item, key in zip(items, keys, strict=True):
            if key not in seen:
                seen.add(key)
                order.append(key)
                fresh.append(item)
        while len(order) > self.capacity:
            seen.discard(order.popleft())
        return fresh, len(items) - len(fresh)


@dataclass
class FetchStats:
    """What one listing did: rows handed out, pages fetched, duplicates dropped, the API's total."""

    endpoint: str
    rows: int = 0
    pages: int = 0
    pages_expected: int | None = None
    duplicates: int = 0
    total: int | None = None
    seconds: float = 0.0

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0


class Progress:
    """Logs pages and rows done, rows per second and an ETA, at most every ``interval`` seconds."""

    def __init__(self, stats: FetchStats, log: Log, *, interval: float = 10.0):
        self.stats = stats
        self.log = log
        self.interval = interval
        self._started = time.monotonic()
        self._last_report = self._started

    def page_done(self) -> None:
        self.stats.pages += 1
        now = time.monotonic()
        self.stats.seconds = now - self._started
        if now - self._last_report >= self.interval:
            self._last_report = now
            self.log.info("%s", self.describe())

    def describe(self) -> str:
        stats = self.stats
        rate = stats.rows_per_second
        pages = f"{stats.pages}/{stats.pages_expected}" if stats.pages_expected else f"{stats.pages}"
        rows = f"{stats.rows:,}/{stats.total:,}" if stats.total is not None else f"{stats.rows:,}"
        text = f"{stats.endpoint}: page {pages}, rows {rows}, {rate:,.0f} rows/s"
        if stats.total and rate > 0 and stats.rows < stats.total:
            text += f", ETA {(stats.total - stats.rows) / rate:,.0f} s"
        return text

    def finish(self) -> FetchStats:
        self.stats.seconds = time.monotonic() - self._started
        return self.stats


class SnapshotCoverage:
    """
    Which positions of a listing, as it stood at the first page, some page has covered.

    Positions are counted in that first snapshot. A page answered when ``k`` more rows exist
    than then (its ``total`` minus the first one) starts ``k`` positions earlier in snapshot
    terms, because new mail is listed first and pushes the rest down.
    """

    def __init__(self, total: int, page_size: int):
        self.total = total
        self.page_size = page_size
        self.latest_total = total
        self._covered: list[tuple[int, int]] = []

    def add(self, page: int, rows: int, page_total: int | None) -> None:
        if page_total is not None:
            self.latest_total = page_total
        shift = (self.latest_total if page_total is None else page_total) - self.total
        start = (page - 1) * self.page_size - shift
        end = min(self.total, start + rows)
        start = max(0, start)
        if start < end:
            self._covered = _merge([*self._covered, (start, end)])

    def gaps(self) -> list[tuple[int, int]]:
        gaps, cursor = [], 0
        for start, end in self._covered:
            if start > cursor:
                gaps.append((cursor, start))
            cursor = max(cursor, end)
        if cursor < self.total:
            gaps.append((cursor, self.total))
        return gaps

    def missing(self) -> int:
        return sum(end - start for start, end in self.gaps())

    def page_now_holding(self, position: int) -> int:
        """The page that holds snapshot ``position`` now, judging by the latest ``total``."""
        return (position + max(0, self.latest_total - self.total)) // self.page_size + 1


def _merge(intervals: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for start, end in sorted(intervals):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged
