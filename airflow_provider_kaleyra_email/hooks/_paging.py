"""
Bounded, concurrent listing of a paged endpoint; nothing here knows HTTP.

The rules, for a listing asked page by page with ``limit = page_size``:

- Page ``n + 1`` is asked for only after page ``n`` came back full with rows not seen before;
  with a ``total``, up to ``lookahead`` pages beyond that may be in flight, never past ``total``.
- A listing ends at the first page that is short, empty, or adds nothing new (a repeat, as an
  API that clamps ``page`` sends past the end). Requests are bounded by the pages that brought
  new rows, plus ``lookahead``, plus the repair of rows that slid while mail arrived.
- Rows are de-duplicated by key; a row without a key is never merged with another.
- At the end the rows listed lie between the smallest and the largest ``total`` given, and no
  page repeated an earlier one other than at the end; if not, ``KaleyraEmailAPIError`` says
  which page said what, or, when the caller allows a mismatch, a warning does.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import msgspec

from airflow_provider_kaleyra_email.exceptions import KaleyraEmailAPIError

if TYPE_CHECKING:
    from collections.abc import Callable, Generator, Hashable

R = TypeVar("R")

#: Keys remembered for de-duplication (about 4 MB): a row pushed on by new mail is near its first sighting.
DEDUP_WINDOW_ROWS = 20_000
#: Pages in a row that may bring nothing new while ``total`` says rows are sliding; the last ends it.
MAX_FRUITLESS_PAGES = 3
PROGRESS_SECONDS = 10.0

_encode = msgspec.json.Encoder().encode


class Log(Protocol):
    """The logging calls we make: ``logging.Logger`` and Airflow's structlog loggers have them."""

    def info(self, msg: str, /, *args: Any) -> Any: ...
    def warning(self, msg: str, /, *args: Any) -> Any: ...


class Cancelled(Exception):
    """The listing has ended (or failed elsewhere): this fetch is no longer wanted."""


def list_pages(
    fetch: Callable[[int, threading.Event], Page], listing: Listing, *, concurrency: int, worth: Callable[[], int]
) -> Pages:
    """Return the new rows of every page as ``listing`` allows, then of the rows that slid; ``cancel`` ends a fetch."""
    return Pages(_listed(fetch, listing, concurrency=concurrency, worth=worth), listing)


def _listed(
    fetch: Callable[[int, threading.Event], Page], listing: Listing, *, concurrency: int, worth: Callable[[], int]
) -> Iterator[list[Any]]:
    cancel = threading.Event()
    pages = fetch_in_order(
        lambda number: fetch(number, cancel),
        allowed=listing.allowed,
        concurrency=concurrency,
        cancel=cancel,
        worth=worth,
    )
    with closing(pages):
        for page in pages:
            fresh = listing.accept(page)
            if page.number == 1 and listing.total is not None:
                listing.log.info("%s: %s rows to list", listing.label, f"{listing.total:,}")
            if fresh:
                yield fresh
            if not listing.more:
                break
    yield from listing.repair(lambda number: fetch(number, threading.Event()))
    listing.finish()


class Pages(Iterator[list[Any]]):
    """
    The pages of one listing, each a list of new rows, fetched as they are iterated.

    ``listing`` is what the listing learned so far (``total`` after the first page; ``rows``,
    ``pages``, ``duplicates`` at the end). Closing it ends the listing and its requests.
    """

    def __init__(self, pages: Iterator[list[Any]], listing: Listing) -> None:
        self._pages = pages
        self.listing = listing

    def __next__(self) -> list[Any]:
        return next(self._pages)

    def close(self) -> None:
        if close := getattr(self._pages, "close", None):
            close()

    def map(self, function: Callable[[Any], Any]) -> Pages:
        """Return these pages with ``function`` applied to each row, closing as these do."""
        return Pages(_mapped(self, function), self.listing)

    def rows(self) -> Iterator[Any]:
        """Return the rows one by one; closing it closes the listing."""
        with closing(self):
            for page in self:
                yield from page


def _mapped(pages: Pages, function: Callable[[Any], Any]) -> Iterator[list[Any]]:
    with closing(pages):
        for page in pages:
            yield list(map(function, page))


def fetch_in_order(
    fetch: Callable[[int], R],
    *,
    allowed: Callable[[], int],
    concurrency: int,
    cancel: threading.Event,
    worth: Callable[[], int] = lambda: 2,
) -> Generator[R, None, None]:
    """
    Yield ``fetch(1)``, ``fetch(2)``, ... in order, ``concurrency`` at once, page ``n`` once ``allowed() >= n``.

    While one at a time is all that ``concurrency`` or ``worth()`` allows, a fetch runs in the
    caller's thread. The first failure anywhere sets ``cancel`` (retries elsewhere stop, nothing
    new is sent) and is raised at once; leaving early sets it too and waits for no thread, so a
    read stuck until its ``timeout`` cannot hold a task that Airflow is stopping.
    """
    failures: list[BaseException] = []

    def guarded(number: int) -> R:
        if cancel.is_set():
            raise Cancelled
        try:
            return fetch(number)
        except BaseException as exc:
            failures.append(exc)  # the first is the cause; a Cancelled only follows it
            cancel.set()
            raise

    pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="kaleyra-email-page")
    pending: deque[Future[R]] = deque()
    next_page = 1
    try:
        while True:
            if not pending and next_page <= allowed() and min(concurrency, worth()) <= 1:
                next_page += 1
                yield fetch(next_page - 1)
                continue
            while next_page <= allowed():
                pending.append(pool.submit(guarded, next_page))
                next_page += 1
            if not pending:
                return
            future = pending.popleft()
            future.exception()  # waits for it; a failure there or anywhere else is in ``failures``
            if failures:
                raise failures[0]
            yield future.result()
    finally:
        cancel.set()
        pool.shutdown(wait=False, cancel_futures=True)


@dataclass
class Page:
    """One answer of a paged endpoint: its rows, and ``total`` as a count or else as sent."""

    number: int
    rows: list[Any]
    total: int | None = None
    odd_total: str | None = None


@dataclass
class SeenKeys:
    """The row keys of the last pages (about ``capacity`` keys), to drop rows listed twice."""

    capacity: int = DEDUP_WINDOW_ROWS
    _pages: deque[list[Hashable]] = field(default_factory=deque)
    _size: int = 0
    _seen: set[Hashable] = field(default_factory=set)

    def new_only(self, rows: list[Any], keys: list[Any]) -> list[Any]:
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
    One listing, by the rules of this module: which page may be asked next, which rows are new, whether it added up.

    ``key_of`` gives each row of a page its identity, ``None`` for a row that lacks one. Afterwards
    ``rows``, ``pages``, ``duplicates`` and ``total`` (the first page's) say what the listing did.
    """

    label: str
    endpoint: str
    page_size: int
    key_of: Callable[[list[Any]], list[Any]]
    log: Log
    lookahead: int = 1
    allow_mismatch: bool = False
    rows: int = 0
    pages: int = 0
    duplicates: int = 0
    total: int | None = None
    seen: SeenKeys = field(default_factory=SeenKeys)
    coverage: SnapshotCoverage | None = None
    #: The last page accepted (in order), whether to go on after it, and if not, why.
    last_page: int = 0
    more: bool = True
    ended: str = ""
    #: Each ``total`` the API gave, with the first page that gave it; the same for the odd ones.
    said_totals: dict[int, int] = field(default_factory=dict)
    odd_totals: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    _fingerprints: dict[int, int] = field(default_factory=dict)
    _page_totals: dict[int, int] = field(default_factory=dict)
    _fruitless: int = 0
    _started: float = field(default_factory=time.monotonic)
    _reported: float = field(default_factory=time.monotonic)

    def allowed(self) -> int:
        """Return the highest page there is evidence (or, within ``lookahead``, a total) to ask for."""
        if not self.more:
            return self.last_page
        evidence = self.last_page + 1
        if self.total is None:
            return evidence
        planned = -(-max(self.said_totals) // self.page_size)  # whole numbers: no float to overflow
        return max(evidence, min(evidence + self.lookahead - 1, planned))

    def accept(self, page: Page) -> list[Any]:
        """Return the new rows of the next page in order; afterwards ``more`` says whether to go on."""
        self._note(page)
        verdict = self._judge(page)
        self._fruitless = 0 if verdict.fresh else self._fruitless + 1
        self.last_page, self.more = page.number, verdict.goes_on
        if not self.more:
            self.ended = verdict.why_ended()
            # A clamped page repeats the one before it; any other repeat contradicts the rest.
            repeat_of = verdict.repeat_of
            if repeat_of not in (page.number, page.number - 1) and not self._grew_since(page, repeat_of):
                self.problems.append(f"page {page.number} repeated page {repeat_of}")
        return verdict.fresh

    def _judge(self, page: Page) -> Verdict:
        """Return what ``page`` says by the rules of this module (its new rows are counted as listed)."""
        if len(page.rows) > self.page_size:
            self.problems.append(f"page {page.number} held {len(page.rows)} rows, more than limit={self.page_size}")
            raise self.error()
        keys, fingerprint = self._keys(page)
        repeat_of = self._fingerprints.setdefault(fingerprint, page.number) if page.rows else page.number
        fresh = self._fresh(page, keys if repeat_of == page.number else None)
        # Mail arriving between two fetches pushes rows down: a page holds only rows already seen when
        # ``total`` grew by a page or more meanwhile. That is sliding, not an end, for a few pages at most.
        slid = not fresh and self._grew_since(page, self.last_page) and self._fruitless + 1 < MAX_FRUITLESS_PAGES
        reached_total = bool(self.said_totals) and self.rows >= max(self.said_totals)
        return Verdict(
            number=page.number,
            rows=len(page.rows),
            limit=self.page_size,
            fresh=fresh,
            repeat_of=repeat_of,
            slid=slid,
            reached_total=reached_total,
        )

    def repair(self, fetch: Callable[[int], Page]) -> Iterator[list[Any]]:
        """Yield the rows that slid past pages already fetched while mail arrived, fetched again where they are now."""
        coverage = self.coverage
        if coverage is None or coverage.shift <= 0:
            return
        budget, fruitless = 2 * len(coverage.gaps()) + 10, 0
        while coverage.gaps() and budget > 0 and fruitless < MAX_FRUITLESS_PAGES:
            budget -= 1
            page = fetch(coverage.page_now_holding(coverage.gaps()[0][0]))
            if not page.rows:
                break
            self._note(page)
            fresh = self._fresh(page, self._keys(page)[0])
            fruitless = 0 if fresh else fruitless + 1  # rows keep sliding: one miss is no proof of an end
            if fresh:
                yield fresh
        if missing := coverage.missing():
            lost = f"{missing:,} rows of the {coverage.total:,} listed at the start"
            why = "statuses changing under a status search, or deletions"
            self.log.warning(
                "%s: %s moved out of reach while paging (%s); run again to pick them up.", self.label, lost, why
            )

    def finish(self) -> None:
        """Check that the answers added up: raise, or warn when a mismatch is allowed; log what the listing did."""
        if self.said_totals and not min(self.said_totals) <= self.rows <= max(self.said_totals):
            said = "; ".join(f"page {page} said total={total:,}" for total, page in list(self.said_totals.items())[:4])
            self.problems.append(f"{self.rows:,} rows were listed, but {said}")
        if self.problems and not self.allow_mismatch:
            raise self.error()
        if self.problems:
            self.log.warning("%s (allow_count_mismatch is set, so the task goes on).", self._describe())
        self.report()

    def error(self) -> KaleyraEmailAPIError:
        message = (
            f"{self._describe()}. If this listing can legitimately move while it is read (a status search "
            "over a live day), set allow_count_mismatch=True to log a warning instead."
        )
        return KaleyraEmailAPIError(endpoint=self.endpoint, status_code=HTTPStatus.OK, message=message)

    def report(self) -> None:
        """Log rows and pages so far (of the total, when there is one), rows per second and an ETA."""
        self._reported = time.monotonic()
        seconds = self._reported - self._started
        rate = self.rows / seconds if seconds > 0 else 0.0
        of_total = f"/{self.total:,}" if self.total is not None else ""
        left = (self.total or 0) - self.rows
        eta = f", ETA {left / rate:,.0f} s" if left > 0 and rate > 0 else ""
        done = f"{self.rows:,}{of_total} rows, {self.pages} pages, {seconds:.1f} s ({rate:,.0f} rows/s)"
        self.log.info("%s: %s, %d duplicates dropped%s", self.label, done, self.duplicates, eta)

    def _describe(self) -> str:
        done = f"{self.pages} page(s), {self.rows:,} rows, {self.duplicates:,} duplicates dropped"
        ended = f"; {self.ended}" if self.ended else ""
        odd = "".join(f"; page {page} said total={text!r}" for text, page in list(self.odd_totals.items())[:2])
        return f"{self.label}: the API's answers do not add up: {'; '.join(self.problems)} ({done}{ended}{odd})"

    def _note(self, page: Page) -> None:
        self.pages += 1
        if page.total is not None:
            self.said_totals.setdefault(page.total, page.number)
            self._page_totals[page.number] = page.total
            if page.number == 1 and self.total is None:
                self.total = page.total
                self.coverage = SnapshotCoverage(page.total, self.page_size)
        elif page.odd_total is not None:
            self.odd_totals.setdefault(page.odd_total, page.number)
        if self.coverage is not None:
            self.coverage.add(page.number, len(page.rows), page.total)
        if time.monotonic() - self._reported >= PROGRESS_SECONDS:
            self.report()

    def _grew_since(self, page: Page, earlier: int) -> bool:
        before = self._page_totals.get(earlier)
        return page.total is not None and before is not None and page.total - before >= len(page.rows) > 0

    def _keys(self, page: Page) -> tuple[list[bytes | None], int]:
        """Return each row's key as JSON (hashable, and no garbage to collect), and the page's fingerprint."""
        keys = self.key_of(page.rows)
        if None not in keys:
            as_json: list[bytes | None] = list(map(_encode, keys))
            return as_json, hash(tuple(as_json))
        return [None if key is None else _encode(key) for key in keys], hash(_encode(page.rows))  # by content

    def _fresh(self, page: Page, keys: list[Any] | None) -> list[Any]:
        """Return the rows of ``page`` not listed before (none for a repeated page, without ``keys``)."""
        fresh = [] if keys is None else self.seen.new_only(page.rows, keys)
        self.rows += len(fresh)
        self.duplicates += len(page.rows) - len(fresh)
        return fresh


@dataclass(frozen=True)
class Verdict:
    """What one page of a listing says: its new rows, whether it repeats another, whether the listing goes on."""

    number: int
    rows: int
    limit: int
    fresh: list[Any]
    #: The earlier page with the same rows, or this page's own number.
    repeat_of: int
    #: Only rows already seen, but ``total`` grew by a page since the last: rows slid down, go on.
    slid: bool
    reached_total: bool

    @property
    def goes_on(self) -> bool:
        return self.rows == self.limit and (bool(self.fresh) or self.slid) and not self.reached_total

    def why_ended(self) -> str:
        n = self.number
        if not self.rows:
            return f"page {n} was empty"
        if self.repeat_of != n:
            return f"page {n} repeated page {self.repeat_of}, so the listing ended there"
        if not self.fresh:
            return f"page {n} held only rows already listed"
        if self.rows == self.limit:
            return f"page {n} completed the total"
        return f"page {n} was the last ({self.rows} rows, limit {self.limit})"


@dataclass
class SnapshotCoverage:
    """
    Which positions of a listing, as it stood at the first page, some page has covered.

    A page answered when ``shift`` more rows exist (by its ``total``) starts ``shift`` positions earlier.
    """

    total: int
    page_size: int
    shift: int = 0
    _covered: list[tuple[int, int]] = field(default_factory=list)

    def add(self, page: int, rows: int, page_total: int | None) -> None:
        if page_total is not None:
            self.shift = page_total - self.total
        start = (page - 1) * self.page_size - self.shift
        end = min(self.total, start + rows)
        start = max(0, start)
        if start >= end:
            return
        if self._covered and self._covered[-1][0] <= start <= self._covered[-1][1]:  # the usual next page
            self._covered[-1] = (self._covered[-1][0], max(self._covered[-1][1], end))
        else:
            self._covered.append((start, end))

    def gaps(self) -> list[tuple[int, int]]:
        gaps, cursor = [], 0
        for start, end in sorted(self._covered):
            if start > cursor:
                gaps.append((cursor, start))
            cursor = max(cursor, end)
        return [*gaps, (cursor, self.total)] if cursor < self.total else gaps

    def missing(self) -> int:
        return sum(end - start for start, end in self.gaps())

    def page_now_holding(self, position: int) -> int:
        """Return the page that holds snapshot ``position`` now, judging by the latest ``total``."""
        return (position + max(0, self.shift)) // self.page_size + 1
