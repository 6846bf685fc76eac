"""
The machinery behind the hook's listings.

The rules that make a paged listing end, ordered concurrent page fetches that stop at once
when the listing does, an adaptive concurrency limit, and progress logging.

Nothing here knows about HTTP; the hook passes in how to fetch a page and what a row's key is.

The rules, for a listing asked page by page with ``limit = page_size``:

- A page is only asked for on evidence: page ``n + 1`` after page ``n`` came back full and
  brought rows not seen before. With a ``total`` to plan with, up to ``lookahead`` pages beyond
  that evidence may be in flight, never more than ``total`` implies; without one, one at a time.
- A listing ends at the first page that is short, empty, or adds nothing new (a repeat, as an
  API that clamps ``page`` sends past the end). Requests are bounded by the pages that brought
  new rows, plus ``lookahead``, plus the repair of rows that slid while mail arrived.
- Rows are de-duplicated by key; a row without a key is never merged with another.
- At the end the answers must add up: the rows listed lie between the smallest and the largest
  ``total`` the API gave, and no page repeated an earlier one other than at the end. If they do
  not, :class:`~airflow_provider_kaleyra_email.exceptions.KaleyraEmailAPIError` says which page
  said what, unless the caller allowed a mismatch, which is then a warning.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import msgspec

from airflow_provider_kaleyra_email.exceptions import KaleyraEmailAPIError

if TYPE_CHECKING:
    from collections.abc import Callable, Generator, Hashable, Iterator

R = TypeVar("R")

#: Keys remembered for de-duplication: about 4 MB whatever the day's size. Logs are listed
#: newest first, so mail that arrives during a listing pushes rows into the next page: a
#: duplicate is always near its first sighting.
DEDUP_WINDOW_ROWS = 20_000

#: Pages in a row that may bring nothing new while ``total`` says rows are sliding; the last ends it.
MAX_FRUITLESS_PAGES = 3

_encode = msgspec.json.Encoder().encode


class Log(Protocol):
    """The logging calls we make: satisfied by ``logging.Logger`` and Airflow's structlog loggers."""

    def info(self, msg: str, /, *args: Any) -> Any: ...

    def warning(self, msg: str, /, *args: Any) -> Any: ...


class Cancelled(Exception):
    """The listing has ended (or failed elsewhere): this fetch is no longer wanted."""


def cancellable_sleep(cancel: threading.Event) -> Callable[[float], None]:
    """Return a ``sleep`` for tenacity that wakes up, and gives up, as soon as ``cancel`` is set."""

    def sleep(seconds: float) -> None:
        if cancel.wait(seconds):
            raise Cancelled

    return sleep


def fetch_in_order(
    fetch: Callable[[int], R],
    *,
    allowed: Callable[[], int],
    concurrency: int,
    lookahead: int,
    cancel: threading.Event,
) -> Generator[R, None, None]:
    """
    Yield ``fetch(1)``, ``fetch(2)``, ... in order, up to ``concurrency`` calls at once.

    Page ``n`` is only asked for once ``allowed() >= n``, read again after every page the caller
    consumes, so the caller's evidence steers how far ahead we go; at most ``lookahead`` pages
    are in flight or waiting. The first failure anywhere sets ``cancel`` (so retries elsewhere
    stop sleeping and nothing new is sent) and is raised at once; leaving the loop early does
    the same, and waits only for requests already on the wire.
    """
    failures: list[BaseException] = []
    lock = threading.Lock()

    def guarded(page: int) -> R:
        if cancel.is_set():
            raise Cancelled
        try:
            return fetch(page)
        except Cancelled:
            raise
        except BaseException as exc:
            with lock:
                failures.append(exc)
            cancel.set()
            raise

    if concurrency <= 1:
        page = 1
        while page <= allowed():
            yield fetch(page)
            page += 1
        return
    pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="kaleyra-email-page")
    pending: deque[Future[R]] = deque()
    next_page = 1
    try:
        while True:
            while next_page <= allowed() and len(pending) < max(lookahead, 1):
                pending.append(pool.submit(guarded, next_page))
                next_page += 1
            if not pending:
                return
            try:
                result = pending.popleft().result()
            except Cancelled:
                if failures:
                    raise failures[0] from None
                return
            if failures:
                raise failures[0]
            yield result
    finally:
        cancel.set()
        pool.shutdown(wait=True, cancel_futures=True)


def list_pages(
    fetch: Callable[[int, threading.Event], Page], listing: Listing, *, concurrency: int
) -> Iterator[list[dict[str, Any]]]:
    """
    Yield the new rows of every page of a listing, as :class:`Listing`'s rules allow; check its counts.

    Pages are fetched ``concurrency`` at a time and handed over in order. When ``total`` grew
    while we listed (mail arriving, newest first), the rows that slid past a page already
    fetched are fetched again where they are now (see :class:`SnapshotCoverage`).

    :param fetch: ``fetch(page, cancel)`` returns one page; ``cancel`` cuts its retries short.
    :param listing: the rules and the record of this listing.
    :param concurrency: pages fetched at once.
    """
    cancel = threading.Event()
    coverage: SnapshotCoverage | None = None
    pages = fetch_in_order(
        lambda number: fetch(number, cancel),
        allowed=listing.allowed,
        concurrency=concurrency,
        lookahead=listing.lookahead,
        cancel=cancel,
    )
    try:
        for page in pages:
            fresh = listing.accept(page)
            if page.number == 1 and listing.first_total is not None:
                coverage = SnapshotCoverage(listing.first_total, listing.page_size)
                listing.log.info(
                    "%s: %s rows in %s pages", listing.label, f"{page.total:,}", listing.stats.pages_expected
                )
            if coverage is not None:
                coverage.add(page.number, len(page.rows), page.total)
            if fresh:
                yield fresh
            if not listing.more:
                break
    finally:
        pages.close()
    if coverage is not None and coverage.latest_total > coverage.total:
        yield from _fill_gaps(coverage, listing, lambda number: fetch(number, threading.Event()))
    listing.finish()
    listing.log_finished()


def _fill_gaps(
    coverage: SnapshotCoverage, listing: Listing, fetch: Callable[[int], Page]
) -> Iterator[list[dict[str, Any]]]:
    """
    Fetch again the rows that moved between pages while we listed them.

    Mail that arrives during a listing pushes every row down; a page fetched after the push
    misses rows that slid into a page fetched before it. Each response's ``total`` says how
    far rows have moved, so we know which positions of the first page's listing no page
    covered, and fetch them where they are now (a bounded number of times).
    """
    budget, fruitless = 2 * len(coverage.gaps()) + 10, 0
    while coverage.gaps() and budget > 0 and fruitless < MAX_FRUITLESS_PAGES:
        budget -= 1
        page = fetch(coverage.page_now_holding(coverage.gaps()[0][0]))
        if not page.rows:
            break
        fresh = listing.fresh_only(page)
        # Rows keep sliding while we repair, so one page that missed is not proof of an end.
        fruitless = 0 if fresh else fruitless + 1
        coverage.add(page.number, len(page.rows), page.total)
        if fresh:
            yield fresh
    if coverage.missing():
        listing.log.warning(
            "%s: %d rows of the %s listed at the start moved out of reach while paging "
            "(statuses changing under a status search, or deletions); run again to pick them up.",
            listing.label,
            coverage.missing(),
            f"{coverage.total:,}",
        )


@dataclass
class Page:
    """One answer of a paged endpoint: its rows (JSON objects) and what it said of ``total``."""

    number: int
    rows: list[dict[str, Any]]
    #: ``total`` as a count; ``None`` when absent or unreadable.
    total: int | None = None
    #: ``total`` as sent, when it was present but not a count (for messages).
    odd_total: str | None = None


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


class SeenKeys:
    """The row keys of the last pages (about ``capacity`` keys), to drop rows listed twice."""

    def __init__(self, capacity: int = DEDUP_WINDOW_ROWS):
        self.capacity = capacity
        self._pages: deque[list[Hashable]] = deque()
        self._size = 0
        self._seen: set[Hashable] = set()

    def new_only(self, rows: list[dict[str, Any]], keys: list[Any]) -> list[dict[str, Any]]:
        """Return the rows whose key was not seen yet; a row whose key is ``None`` always is new."""
        seen = self._seen
        if None not in keys and seen.isdisjoint(keys) and len(set(keys)) == len(keys):
            fresh, new_keys = rows, keys  # the usual page: all new, checked in C
        else:
            fresh, new_keys = [], []
            for row, key in zip(rows, keys, strict=True):
                if key is None:
                    fresh.append(row)
                elif key not in seen:
                    seen.add(key)
                    new_keys.append(key)
                    fresh.append(row)
        seen.update(new_keys)
        self._pages.append(new_keys)
        self._size += len(new_keys)
        while self._size - len(self._pages[0]) >= self.capacity:
            oldest = self._pages.popleft()
            seen.difference_update(oldest)
            self._size -= len(oldest)
        return fresh


@dataclass
class Listing:
    """
    The bounded-listing rules of this module, for one listing.

    Which page may be asked next, which rows of a page are new, and whether the answers added up.

    :param label: what is listed, for messages (``logs 2026-11-02..2026-11-02``).
    :param endpoint: method and path, for errors.
    :param page_size: the ``limit`` asked for.
    :param key_of: the identity of each row of a page; ``None`` for a row that lacks it, which is
        then never merged with another.
    :param lookahead: pages that may be in flight beyond the evidence, when a total allows.
    :param allow_mismatch: log a warning instead of failing when the answers do not add up.
    """

    label: str
    endpoint: str
    page_size: int
    key_of: Callable[[list[Any]], list[Any]]
    log: Log
    lookahead: int = 1
    allow_mismatch: bool = False
    stats: FetchStats = field(init=False)
    seen: SeenKeys = field(default_factory=SeenKeys)
    #: The last page accepted (in order), and whether it is evidence of another.
    last_page: int = 0
    more: bool = True
    ended: str = ""
    first_total: int | None = None
    totals: dict[int, int] = field(default_factory=dict)
    odd_totals: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    _fingerprints: dict[int, int] = field(default_factory=dict)
    _page_totals: dict[int, int] = field(default_factory=dict)
    _fruitless: int = 0

    def __post_init__(self) -> None:
        self.stats = FetchStats(endpoint=self.label)
        self.progress = Progress(self.stats, self.log)

    # ----------------------------------------------------------------------------------------

    def allowed(self) -> int:
        """Return the highest page there is evidence (or, within ``lookahead``, a total) to ask for."""
        if not self.more:
            return self.last_page
        evidence = self.last_page + 1
        if self.first_total is None:
            return evidence
        planned = math.ceil(max(self.totals) / self.page_size)
        return max(evidence, min(evidence + self.lookahead - 1, planned))

    def accept(self, page: Page) -> list[dict[str, Any]]:
        """Return the new rows of the next page in order; afterwards ``more`` says whether to go on."""
        self._note_total(page)
        if len(page.rows) > self.page_size:
            self.problems.append(f"page {page.number} held {len(page.rows)} rows, more than limit={self.page_size}")
            raise self.error()
        keys, fingerprint = self._keys(page.rows)
        repeat_of = self._fingerprints.setdefault(fingerprint, page.number) if page.rows else page.number
        fresh = [] if repeat_of != page.number else self._fresh(page, keys)
        self.stats.duplicates += len(page.rows) - len(fresh)
        reached_total = bool(self.totals) and self.stats.rows >= max(self.totals)
        # Mail arriving between two fetches pushes rows down: a page can hold only rows already
        # seen when ``total`` grew by a page or more meanwhile. That is sliding, not an end, but
        # only for a few pages in a row, so a server that lies this way still ends.
        slid = not fresh and self._grew_since(page, self.last_page) and self._fruitless + 1 < MAX_FRUITLESS_PAGES
        self._fruitless = 0 if fresh else self._fruitless + 1
        self.last_page = page.number
        self.more = len(page.rows) == self.page_size and (bool(fresh) or slid) and not reached_total
        if not self.more:
            self.ended = self._why_ended(page, fresh, repeat_of)
            if repeat_of not in (page.number, page.number - 1) and not self._grew_since(page, repeat_of):
                # A clamped page repeats the one before it; any other repeat contradicts the rest.
                self.problems.append(f"page {page.number} repeated page {repeat_of}")
        return fresh

    def _grew_since(self, page: Page, earlier: int) -> bool:
        before = self._page_totals.get(earlier)
        return page.total is not None and before is not None and page.total - before >= len(page.rows) > 0

    def fresh_only(self, page: Page) -> list[dict[str, Any]]:
        """Return the new rows of a page asked for again (to repair rows that slid), out of order."""
        self._note_total(page)
        fresh = self._fresh(page, self._keys(page.rows)[0])
        self.stats.duplicates += len(page.rows) - len(fresh)
        return fresh

    def finish(self) -> None:
        """Check that the answers added up: raise, or warn when a mismatch is allowed."""
        rows = self.stats.rows
        if self.totals and not min(self.totals) <= rows <= max(self.totals):
            said = "; ".join(f"page {page} said total={total:,}" for total, page in list(self.totals.items())[:4])
            self.problems.append(f"{rows:,} rows were listed, but {said}")
        if not self.problems:
            return
        if self.allow_mismatch:
            self.log.warning("%s (allow_count_mismatch is set, so the task goes on).", self._describe())
            return
        raise self.error()

    def log_finished(self) -> None:
        stats = self.progress.finish()
        total = ""
        if stats.total is not None:
            verdict = "matches" if stats.total == stats.rows else "differs from"
            total = f"; {stats.rows:,} {verdict} the API's total of {stats.total:,}"
        self.log.info(
            "%s: %s rows in %s pages, %.1f s (%s rows/s), %s duplicates dropped%s",
            stats.endpoint,
            f"{stats.rows:,}",
            stats.pages,
            stats.seconds,
            f"{stats.rows_per_second:,.0f}",
            stats.duplicates,
            total,
        )

    def error(self) -> KaleyraEmailAPIError:
        return KaleyraEmailAPIError(
            endpoint=self.endpoint,
            status_code=HTTPStatus.OK,
            error_code=None,
            message=self._describe()
            + ". If this listing can legitimately move while it is read (a status search over a live day), "
            "set allow_count_mismatch=True to log a warning instead.",
        )

    # ----------------------------------------------------------------------------------------

    def _describe(self) -> str:
        pages = f"{self.stats.pages} page(s), {self.stats.rows:,} rows, {self.stats.duplicates:,} duplicates dropped"
        ended = f"; {self.ended}" if self.ended else ""
        odd = "".join(f"; page {page} said total={text!r}" for text, page in list(self.odd_totals.items())[:2])
        return f"{self.label}: the API's answers do not add up: {'; '.join(self.problems)} ({pages}{ended}{odd})"

    def _note_total(self, page: Page) -> None:
        self.progress.page_done()
        if page.total is not None:
            self.totals.setdefault(page.total, page.number)
            self._page_totals[page.number] = page.total
            if self.first_total is None and page.number == 1:
                self.first_total = self.stats.total = page.total
                self.stats.pages_expected = max(1, math.ceil(page.total / self.page_size))
        elif page.odd_total is not None:
            self.odd_totals.setdefault(page.odd_total, page.number)

    def _keys(self, rows: list[dict[str, Any]]) -> tuple[list[Any], int]:
        """Return each row's key, and the page's fingerprint: equal for two pages with the same rows."""
        keys = self.key_of(rows)
        try:
            fingerprint = hash(tuple(keys))
        except TypeError:  # an id that is a list or an object: compare it by its JSON
            keys = [_hashable(key) for key in keys]
            fingerprint = hash(tuple(keys))
        if None in keys:  # rows without a key count by their content
            fingerprint = hash(_encode(rows))
        return keys, fingerprint

    def _fresh(self, page: Page, keys: list[Any]) -> list[dict[str, Any]]:
        fresh = self.seen.new_only(page.rows, keys)
        self.stats.rows += len(fresh)
        return fresh

    def _why_ended(self, page: Page, fresh: list[dict[str, Any]], repeat_of: int) -> str:
        n = page.number
        if not page.rows:
            return f"page {n} was empty"
        if repeat_of != n:
            return f"page {n} repeated page {repeat_of}, so the listing ended there"
        if not fresh:
            return f"page {n} held only rows already listed"
        if len(page.rows) == self.page_size:
            return f"page {n} completed the total"
        return f"page {n} was the last ({len(page.rows)} rows, limit {self.page_size})"


def _hashable(key: Any) -> Any:
    try:
        hash(key)
    except TypeError:
        return _encode(key)
    return key


class AdaptiveConcurrency:
    """
    Pages in flight: as many as hide the round trip, no more; halved when the API says 429.

    By Little's law the requests worth having in flight are the round trip divided by the time the
    caller takes per page: with 20 ms to the API that is many, on loopback one or two (more
    threads would only fight over the GIL). So the limit follows ``ceil(rtt / gap) + 1``, where
    ``rtt`` is the shortest recent request and ``gap`` the time between completions, within a
    ceiling: ``maximum``, halved on HTTP 429 and raised by one per window of successes after it
    (additive increase, multiplicative decrease). Shared by every request of one hook.
    """

    #: Several requests in flight see the same 429 burst; count it once per this many seconds.
    COOLDOWN_SECONDS = 1.0
    #: Weight of the newest gap between completions in their moving average.
    SMOOTHING = 0.2

    def __init__(self, maximum: int, *, log: Log | None = None):
        self.maximum = maximum
        self.ceiling = maximum
        self.limit = maximum  # until the first answers say how many are worth it
        self.lowest = self.limit
        self._active = 0
        self._successes = 0
        self._last_decrease = float("-inf")
        self._rtt = float("inf")
        self._gap: float | None = None
        self._last_done: float | None = None
        self._cond = threading.Condition()
        self._log: Log = log or logging.getLogger(__name__)

    @contextmanager
    def slot(self) -> Iterator[None]:
        with self._cond:
            while self._active >= self.limit:
                self._cond.wait()
            self._active += 1
        started = time.monotonic()
        try:
            yield
        finally:
            done = time.monotonic()
            with self._cond:
                self._active -= 1
                self._observe(done - started, done)
                self._cond.notify(max(1, self.limit - self._active))  # wake only those who may go

    def throttled(self) -> None:
        with self._cond:
            now = time.monotonic()
            if now - self._last_decrease < self.COOLDOWN_SECONDS or self.ceiling == 1:
                return
            self._last_decrease = now
            self._successes = 0
            self.ceiling = max(1, min(self.ceiling, self.limit) // 2)
            self.limit = min(self.limit, self.ceiling)
            self.lowest = min(self.lowest, self.limit)
            self._log.warning("Rate limited by Kaleyra (HTTP 429): concurrency lowered to %d.", self.limit)

    def succeeded(self) -> None:
        with self._cond:
            if self.ceiling >= self.maximum:
                return
            self._successes += 1
            if self._successes >= self.ceiling:
                self._successes = 0
                self.ceiling += 1

    def _observe(self, duration: float, done: float) -> None:
        self._rtt = min(self._rtt * 1.01, duration)  # the shortest recent request, drifting up slowly
        if self._last_done is not None:
            gap = done - self._last_done
            self._gap = gap if self._gap is None else (1 - self.SMOOTHING) * self._gap + self.SMOOTHING * gap
        self._last_done = done
        if self._gap:
            wanted = math.ceil(self._rtt / self._gap) + 1
            self.limit = max(1, min(self.ceiling, wanted))


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
        """Return the page that holds snapshot ``position`` now, judging by the latest ``total``."""
        return (position + max(0, self.latest_total - self.total)) // self.page_size + 1


def _merge(intervals: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for start, end in sorted(intervals):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged
