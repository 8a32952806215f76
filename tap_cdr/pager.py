"""The pages of a run's windows, in order, with requests kept in flight across windows.

`WindowPager.reads(windows)` yields one `WindowRead` per window, oldest first, and
`WindowPager.pages(read)` its pages in offset order, so the output is the same
whatever the concurrency. A window's first page gives its ``total`` and the rows per
page; the other offsets are planned from it.

While the API answers faster than the records are used, pages are fetched inline,
one at a time: threads would only compete with the records for the CPU. Once two
fetches in a row were the slower part (API latency; see `_fetch_here`), up to
``concurrency`` requests are kept in flight for the rest of the run, and not only
inside a window: when every page of the current window has been requested, the first
pages of the next windows are requested too (up to half the limit), so the pipeline
does not empty at window bounds, and empty windows or the pieces of a divided window
cost no waiting of their own.

Scheduling happens on the consumer's thread only; the worker threads only fetch.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import TYPE_CHECKING

from tap_cdr.windows import Window

if TYPE_CHECKING:
    import logging

Page = list[dict]
# fetch(window, offset) -> (rows, the total the API reported, seconds spent waiting for
# the response's headers: the server's time and the network's, not the body's parsing)
Fetch = Callable[[Window, int], tuple[Page, int, float]]
# Below this much waiting per page there is nothing worth overlapping: threads would
# only compete with the records for the CPU.
MIN_WAIT_SECONDS = 0.005
# on_divide(window, total, pieces): the window was too large and is read as pieces
OnDivide = Callable[[Window, int, list[Window]], None]


class WindowRead:
    """One read of one window: where its pages are, and what they said of the total."""

    def __init__(self, window: Window, *, reread: bool = False) -> None:
        self.window = window
        self.reread = reread  # read again, sequentially and whole, after rows moved
        self.totals: list[int] = []
        self.short_page = False
        self.first: Future | None = None  # the first page, while requested
        self.first_page: Page | None = None  # the first page, once received
        self.offsets: deque[int] | None = None  # not yet requested; None until planned
        self.requested: deque[tuple[int, Future]] = deque()
        self.step = 0

    @property
    def changed(self) -> bool:
        """Rows moved while the window was paged (its total changed, or a page came
        back short before the end): some may have been skipped."""
        return len(set(self.totals)) > 1 or self.short_page

    def note(self, page: Page, offset: int, total: int) -> None:
        self.totals.append(total)
        if len(page) < min(self.step, total - offset):
            self.short_page = True


class WindowPager:
    """Reads windows' pages in order; see the module docstring."""

    def __init__(
        self,
        fetch: Fetch,
        *,
        concurrency: int,
        max_rows: int,
        on_divide: OnDivide,
        logger: logging.Logger,
    ) -> None:
        self.fetch = fetch
        self.logger = logger
        self.concurrency = concurrency
        self.limit = concurrency  # requests in flight; a 429 lowers it (see lower())
        self.max_rows = max_rows
        self.on_divide = on_divide
        self.latency_bound = False
        self._slow_in_a_row = 0
        self._handed: tuple[float, int] | None = None  # when the last page was used, rows
        self._use_per_row: float | None = None  # seconds the consumer takes per row
        self._pool: ThreadPoolExecutor | None = None
        self._plan: deque[WindowRead] = deque()
        self._running: set[Future] = set()
        self._held = 0  # pages requested and not yet handed to the consumer
        self._firsts = 0  # of which first pages

    # -- the consumer's side -----------------------------------------------------

    def reads(self, windows: Iterable[Window]) -> Iterator[WindowRead]:
        """One read per window, oldest first. A window holding more than ``max_rows``
        rows is divided (before any of its rows is used) and its pieces read instead.
        The caller takes each read's pages with `pages` before asking for the next."""
        self._plan = deque(WindowRead(window) for window in windows)
        try:
            while self._plan:
                read = self._plan[0]
                if read.offsets is None:
                    # Not planned yet. _refill (here, or while waiting below) may plan
                    # it, or divide it into pieces: look at the head again after.
                    self._refill()
                    if self._plan[0] is read and read.offsets is None:
                        if read.first is None:
                            self._hold_first(read, *self._fetch_here(read.window, 0))
                        else:
                            self._await(read.first)
                            if read.first is not None:  # failed, or not taken by _refill
                                page, total, _ = read.first.result()  # raises if it failed
                                read.first = None
                                self._plan_read(read, page, total)
                    continue
                self.limit = self.concurrency  # a 429 lowers it for one window only
                yield read
                self._plan.popleft()
        finally:
            self.close()

    def reread(self, window: Window) -> WindowRead:
        """A sequential read of one window, for when its rows moved while it was paged."""
        read = WindowRead(window, reread=True)
        self._hold_first(read, *self._fetch_here(window, 0))
        return read

    def pages(self, read: WindowRead) -> Iterator[Page]:
        """The read's pages in offset order; an empty page ends the window early."""
        page, read.first_page = read.first_page, None
        assert page is not None
        self._held -= 1
        self._firsts -= 1
        offset = 0
        while True:
            self._handed = (time.monotonic(), len(page))
            yield page
            if not page and offset:
                self._drop(read)
                return
            self._refill()
            taken = self._next_page(read)
            if taken is None:
                return
            offset, page, total = taken
            read.note(page, offset, total)

    def lower(self) -> tuple[int, int]:
        """Halve the requests in flight for the rest of the current window (a 429).
        Returns the limit before and after."""
        before = self.limit
        self.limit = max(1, before // 2)
        return before, self.limit

    def close(self) -> None:
        for read in self._plan:
            self._drop(read)
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    # -- planning ----------------------------------------------------------------

    def _plan_read(self, read: WindowRead, page: Page, total: int) -> bool:
        """Plan a read from its first page; True if the window was divided instead."""
        if not read.reread and total > self.max_rows and len(read.window.divide(2)) > 1:
            pieces = read.window.divide(-(-total // self.max_rows))
            self.on_divide(read.window, total, pieces)
            self._held -= 1
            self._firsts -= 1
            at = self._plan.index(read)
            del self._plan[at]
            for piece in reversed(pieces):
                self._plan.insert(at, WindowRead(piece))
            return True
        read.first_page = page
        read.totals.append(total)
        read.step = len(page)  # rows per page as served (the server may cap limit)
        read.offsets = deque(range(read.step, total, read.step) if read.step else ())
        return False

    def _next_page(self, read: WindowRead) -> tuple[int, Page, int] | None:
        while not read.requested and read.offsets and self._pool and not read.reread:
            if self._running:
                self._wait_any()
                self._refill()
            else:
                break  # nothing can free a slot: fetch it here
        if read.requested:
            offset, future = read.requested.popleft()
            page, total, _ = self._result(future)
            self._held -= 1
            return offset, page, total
        if not read.offsets:
            return None
        offset = read.offsets.popleft()
        return (offset, *self._fetch_here(read.window, offset))

    def _refill(self) -> None:  # noqa: C901 (replaced in the pager rework)
        """Request what the plan needs next, in plan order, while there is room."""
        if self._pool is None:
            return
        self._running = {future for future in self._running if not future.done()}
        firsts_only = False  # an earlier window is not planned yet: only prefetch firsts
        at = 0
        while at < len(self._plan):
            read = self._plan[at]
            if read.offsets is None:
                if read.first is None:
                    if not self._room() or self._firsts >= self._lookahead:
                        return
                    read.first = self._submit(read.window, 0)
                    self._firsts += 1
                if not read.first.done() or read.first.exception() is not None:
                    # Not known yet, or failed: a failure is raised when the consumer
                    # reaches this window, after the earlier ones are complete.
                    firsts_only = True
                    at += 1
                    continue
                page, total, _ = read.first.result()
                read.first = None
                if self._plan_read(read, page, total):
                    continue  # divided: look at the first piece next
            if not firsts_only:
                while read.offsets and self._room():
                    offset = read.offsets.popleft()
                    read.requested.append((offset, self._submit(read.window, offset)))
                if read.offsets:
                    return
            at += 1

    @property
    def _lookahead(self) -> int:
        """First pages that may be held ahead of use (and the slack for held pages)."""
        return max(1, self.limit // 2)

    def _room(self) -> bool:
        return len(self._running) < self.limit and self._held < self.limit + self._lookahead

    def _submit(self, window: Window, offset: int) -> Future:
        assert self._pool is not None
        future = self._pool.submit(self.fetch, window, offset)
        self._running.add(future)
        self._held += 1
        return future

    def _fetch_here(self, window: Window, offset: int) -> tuple[Page, int]:
        """Fetch on the consumer's thread, and watch whether the API is the slow part.

        A fetch is slow when waiting for the server took longer than using its rows
        will (at the use time per row measured on the last page the consumer used), and
        longer than MIN_WAIT_SECONDS. An empty page takes no time to use, so runs of
        empty windows count; a full page is not judged before one has been used. Two
        slow fetches in a row switch the rest of the run to concurrent fetching.
        """
        started = time.monotonic()
        if self._handed is not None:
            handed_at, rows = self._handed
            self._handed = None
            if rows:
                self._use_per_row = (started - handed_at) / rows
        page, total, waited = self.fetch(window, offset)
        if self._pool is None and self.concurrency > 1:
            if page and self._use_per_row is None:
                slow = False
            else:
                slow = waited > max(MIN_WAIT_SECONDS, len(page) * (self._use_per_row or 0.0))
            self._slow_in_a_row = self._slow_in_a_row + 1 if slow else 0
            if self._slow_in_a_row >= 2:
                self.latency_bound = True
                self._pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="cdr_v3")
                self.logger.info(
                    "cdr_v3: the API is the slow part (%.0f ms waiting for a page of %d "
                    "rows): fetching up to %d pages at a time from here",
                    waited * 1000,
                    len(page),
                    self.concurrency,
                )
        return page, total

    def _hold_first(self, read: WindowRead, page: Page, total: int) -> None:
        """Plan a read from a first page fetched here rather than by a worker."""
        self._held += 1
        self._firsts += 1
        self._plan_read(read, page, total)

    def _wait_any(self) -> None:
        done, _ = wait(self._running, return_when=FIRST_COMPLETED)
        self._running -= done

    def _await(self, future: Future) -> None:
        while not future.done():
            self._wait_any()
            self._refill()

    def _result(self, future: Future) -> tuple[Page, int, float]:
        self._await(future)
        self._running.discard(future)
        return future.result()

    def _drop(self, read: WindowRead) -> None:
        """Forget what was requested for a read that will not be used."""
        for _, future in read.requested:
            future.cancel()
            self._held -= 1
        read.requested.clear()
        if read.first is not None:
            read.first.cancel()
            self._held -= 1
            self._firsts -= 1
            read.first = None
        if read.first_page is not None:
            read.first_page = None
            self._held -= 1
            self._firsts -= 1
        read.offsets = deque()
