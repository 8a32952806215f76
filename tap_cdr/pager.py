"""Pages and lookups in order, with requests kept in flight ahead. Knows no HTTP: it is
given a ``fetch`` that returns a `Page`.

- `plan_window` and `plan_listing` are pure planners: from a unit's first page (a
  date window of cdr_v3, a day of the VCC CDR log), the pages still to read, or the
  smaller units to read instead.
- `Prefetch` runs fetches inline, on the consumer's thread, until the API proves to
  be the slow part; then on up to ``limit`` worker threads. A 429 halves the limit.
- `Pager` hands a consumer each unit's pages in unit and offset order, while the next
  pages, across unit bounds, are requested ahead.
- `ordered` does the same for a plain sequence of calls (uuid lookups).

The output is therefore the same whatever the concurrency. Scheduling happens on the
consumer's thread only; the workers only fetch. What is outstanding (requested and
not yet used) is read off the plan, never counted separately.
"""

from __future__ import annotations

import itertools
import time
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from tap_cdr.wording import counted

if TYPE_CHECKING:
    import logging
    from collections.abc import Callable, Iterable, Iterator, Sequence

U = TypeVar("U")  # a unit of paging: a date window, a listing day
T = TypeVar("T")  # an item of a plain sequence of calls

# Below this much waiting per page there is nothing worth overlapping: threads would
# only compete with the records for the CPU.
MIN_WAIT_SECONDS = 0.005


@dataclass(frozen=True)
class Page:
    """One response's rows, the total the API reported (None: it reports none), and
    the seconds spent waiting for the response's headers: the server's time and the
    network's, not the body's transfer and parsing."""

    rows: list[dict[str, Any]]
    total: int | None = None
    waited: float = 0.0


@dataclass(frozen=True)
class Plan(Generic[U]):
    """What to read of a unit after its first page."""

    pieces: Sequence[U] = ()  # read these smaller units instead
    step: int = 0  # rows per page as the server serves them (0: nothing more to read)
    total: int | None = None  # rows the first page reported (None: not reported)
    # Page on until an empty page, or one shorter than `step` (a listing whose total
    # is only a cross-check); otherwise the pages end at `total`.
    endless: bool = False

    def expects(self, offset: int) -> bool:
        """Whether the page at ``offset`` is worth requesting ahead of use."""
        if not self.step:
            return False
        if self.total is None:
            return self.endless
        # A listing also asks for the page at the total: it must come back empty
        # (or short), which confirms the end.
        return offset <= self.total if self.endless else offset < self.total


def plan_window(
    unit: U, first: Page, max_rows: int, divide: Callable[[U, int], list[U]]
) -> Plan[U]:
    """A cdr_v3 window: its total is the row count; one too crowded is divided."""
    total = first.total or 0
    if total > max_rows:
        pieces = divide(unit, -(-total // max_rows))
        if len(pieces) > 1:
            return Plan(pieces=pieces, total=total)
    return Plan(step=len(first.rows), total=total)


def plan_listing(first: Page) -> Plan[Any]:
    """A CDR log day: page until an empty page, or one shorter than the first; a total
    is only a cross-check. A server may cap the page size below the one asked, or
    ignore it, so a short first page is not the end: one more request confirms it."""
    return Plan(step=len(first.rows), total=first.total, endless=True)


class Handle:
    """A fetch wanted later: started on a worker, or run inline when taken."""

    __slots__ = ("args", "fn", "future")

    def __init__(self, fn: Callable[..., Page], args: tuple[Any, ...]) -> None:
        self.fn = fn
        self.args = args
        self.future: Future[Page] | None = None

    def done(self) -> bool:
        return self.future is not None and self.future.done()

    def failed(self) -> bool:
        return self.done() and self.future is not None and self.future.exception() is not None


class Prefetch:
    """Where fetches run: inline until the API proves the slow part, then concurrently.

    A fetch is slow when waiting for the server took longer than using its rows will
    (at the use time per row measured on the last page used), and longer than
    MIN_WAIT_SECONDS. An empty page takes no time to use, so runs of empty windows
    count; a full page is not judged before one has been used. Two slow fetches in a
    row switch the rest of the run to up to ``limit`` requests in flight.
    """

    def __init__(self, concurrency: int, logger: logging.Logger, name: str) -> None:
        self.concurrency = concurrency
        self.limit = concurrency
        self.logger = logger
        self.name = name
        self.pool: ThreadPoolExecutor | None = None
        self._running: set[Future[Page]] = set()
        self._slow_in_a_row = 0
        self._handed: tuple[float, int] | None = None  # when the last page was used, rows
        self._use_per_row: float | None = None

    @property
    def concurrent(self) -> bool:
        return self.pool is not None

    @property
    def lookahead(self) -> int:
        """Results that may wait for the consumer beyond the in-flight limit."""
        return max(1, self.limit // 2)

    def in_flight(self) -> int:
        self._running = {future for future in self._running if not future.done()}
        return len(self._running)

    def submit(self, fn: Callable[..., Page], *args: Any) -> Handle:
        handle = Handle(fn, args)
        if self.pool is not None:
            handle.future = self.pool.submit(fn, *args)
            self._running.add(handle.future)
        return handle

    def take(self, handle: Handle, refill: Callable[[], None] | None = None) -> Page:
        """The handle's page: fetched here if it was not started, else awaited while
        ``refill`` tops up the requests in flight as others complete."""
        if handle.future is None:
            page = self._fetch_here(handle)
        else:
            while not handle.future.done():
                wait(self._running, return_when=FIRST_COMPLETED)
                self.in_flight()
                if refill is not None:
                    refill()
            page = handle.future.result()
        self._handed = (time.monotonic(), len(page.rows))
        return page

    def lower(self) -> tuple[int, int]:
        """Halve the requests in flight (a 429); `reset` restores the limit."""
        before = self.limit
        self.limit = max(1, before // 2)
        return before, self.limit

    def reset(self) -> None:
        self.limit = self.concurrency

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.pool = None
        self._running.clear()

    def _fetch_here(self, handle: Handle) -> Page:
        started = time.monotonic()
        if self._handed is not None:
            handed_at, rows = self._handed
            self._handed = None
            if rows:
                self._use_per_row = (started - handed_at) / rows
        page = handle.fn(*handle.args)
        if self.pool is None and self.concurrency > 1:
            if page.rows and self._use_per_row is None:
                slow = False
            else:
                use = len(page.rows) * (self._use_per_row or 0.0)
                slow = page.waited > max(MIN_WAIT_SECONDS, use)
            self._slow_in_a_row = self._slow_in_a_row + 1 if slow else 0
            if self._slow_in_a_row >= 2:
                self.pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix=self.name)
                self.logger.info(
                    "%s: the API is the slow part (%.0f ms waiting for a response of %s): "
                    "up to %d requests in flight from here",
                    self.name,
                    page.waited * 1000,
                    counted(len(page.rows), "row"),
                    self.concurrency,
                )
        return page


@dataclass(eq=False)
class Read(Generic[U]):
    """One read of one unit: its plan, its requested pages, what its pages said."""

    unit: U
    first: Handle | None = None  # the first page, while requested
    first_page: Page | None = None  # the first page, once planned and until used
    plan: Plan[U] | None = None
    next_offset: int = 0  # the next page to request
    requested: deque[tuple[int, Handle]] = field(default_factory=deque)
    totals: list[int | None] = field(default_factory=list)
    rows: int = 0
    short_page: bool = False

    @property
    def changed(self) -> bool:
        """Rows moved while the unit was paged, so some may have been skipped: its total
        changed, a page came back short before the end, or (a listing) the rows read
        differ from the total it reported."""
        if len(set(self.totals)) > 1 or self.short_page:
            return True
        total = self.totals[0] if self.totals else None
        return self.plan is not None and self.plan.endless and total not in (None, self.rows)

    def note(self, offset: int, page: Page) -> bool:
        """Record a page; True when the unit ends with it."""
        plan = self.plan
        assert plan is not None
        self.totals.append(page.total)
        self.rows += len(page.rows)
        if plan.endless:
            return not plan.step or len(page.rows) < plan.step
        total = page.total or 0
        if len(page.rows) < min(plan.step, total - offset):
            self.short_page = True
        return not page.rows and offset > 0

    def holds(self) -> int:
        """Results requested for this read and not used yet."""
        return (self.first is not None) + (self.first_page is not None) + len(self.requested)


class Pager(Generic[U]):
    """Units' pages in order, with the next pages requested ahead; see the module doc."""

    def __init__(
        self,
        fetch: Callable[[U, int], Page],
        plan: Callable[[U, Page], Plan[U]],
        prefetch: Prefetch,
        on_divide: Callable[[U, int, Sequence[U]], None] | None = None,
    ) -> None:
        self.fetch = fetch
        self.plan = plan
        self.prefetch = prefetch
        self.on_divide = on_divide
        self._reads: deque[Read[U]] = deque()

    def reads(self, units: Iterable[U]) -> Iterator[Read[U]]:
        """One read per unit, in order. A unit the planner divides (before any of its
        rows is used) is read as its pieces. Take each read's pages with `pages`
        before asking for the next read."""
        self._reads = deque(Read(unit) for unit in units)
        try:
            while self._reads:
                read = self._reads[0]
                if read.plan is None:
                    if read.first is None:
                        read.first = self.prefetch.submit(self.fetch, read.unit, 0)
                    self._top_up()
                    page = self.prefetch.take(read.first, self._top_up)
                    read.first = None
                    self._apply_plan(0, read, page)
                    continue  # the head is planned now, or replaced by its pieces
                self.prefetch.reset()  # a 429 lowers the limit for one unit only
                yield read
                self._reads.popleft()
        finally:
            self.close()

    def reread(self, unit: U) -> Read[U]:
        """A sequential read of one unit, for when its rows moved while it was paged."""
        read = Read(unit)
        page = self.prefetch.take(self.prefetch.submit(self.fetch, unit, 0), self._top_up)
        read.plan = self.plan(unit, page)
        if read.plan.pieces:  # never divided on a re-read: read it whole
            read.plan = Plan(step=len(page.rows), total=read.plan.total)
        read.first_page, read.next_offset = page, read.plan.step
        return read

    def pages(self, read: Read[U]) -> Iterator[list[dict[str, Any]]]:
        """The read's pages in offset order, until its plan says it has ended."""
        assert read.plan is not None
        assert read.first_page is not None
        page, read.first_page = read.first_page, None
        offset = 0
        try:
            while True:
                ended = read.note(offset, page)
                yield page.rows
                if ended:
                    return
                self._top_up()
                if read.requested:
                    offset, handle = read.requested.popleft()
                elif read.plan.expects(read.next_offset) or (read.plan.endless and read.plan.step):
                    offset = read.next_offset
                    read.next_offset += read.plan.step
                    handle = self.prefetch.submit(self.fetch, read.unit, offset)
                else:
                    return
                page = self.prefetch.take(handle, self._top_up)
        finally:
            self._drop(read)

    def close(self) -> None:
        for read in self._reads:
            self._drop(read)
        self._reads.clear()
        self.prefetch.close()

    def _apply_plan(self, at: int, read: Read[U], page: Page) -> bool:
        """Plan the read at index ``at`` from its first page; True if it was divided."""
        plan = self.plan(read.unit, page)
        if plan.pieces:
            if self.on_divide is not None:
                self.on_divide(read.unit, plan.total or 0, plan.pieces)
            del self._reads[at]
            for piece in reversed(plan.pieces):
                self._reads.insert(at, Read(piece))
            return True
        read.plan, read.first_page, read.next_offset = plan, page, plan.step
        return False

    def _top_up(self) -> None:
        """Request what the reads need next, in order, while there is room: the
        current read's pages, then the next reads' first pages (up to the lookahead),
        and their pages once those are planned."""
        prefetch = self.prefetch
        if not prefetch.concurrent:
            return
        touched = list(itertools.takewhile(lambda r: r.plan or r.first, self._reads))
        held = sum(read.holds() for read in touched)
        room = min(
            prefetch.limit - prefetch.in_flight(), prefetch.limit + prefetch.lookahead - held
        )
        firsts = sum(1 for read in touched if read.plan is None or read.first_page is not None)
        firsts_only = False  # an earlier read is not planned yet: only its successors' firsts
        at = 0
        while at < len(self._reads) and room > 0:
            read = self._reads[at]
            if read.plan is None:
                if read.first is None:
                    if firsts >= prefetch.lookahead:
                        return
                    read.first = prefetch.submit(self.fetch, read.unit, 0)
                    room, firsts = room - 1, firsts + 1
                if not self._plan_ahead(at, read):
                    firsts_only, at = True, at + 1
                    continue
                if read.plan is None:  # divided: look at its first piece next
                    firsts -= 1
                    continue
            if not firsts_only:
                room = self._request_pages(read, room)
                if read.plan.expects(read.next_offset):
                    return  # this read still needs pages: they come first
            at += 1

    def _plan_ahead(self, at: int, read: Read[U]) -> bool:
        """Plan a read ahead of use if its first page is in; False if it cannot be yet.
        The head is planned by `reads` itself; a failed first page is raised when the
        consumer gets there, after the earlier reads are complete."""
        handle = read.first
        if at == 0 or handle is None or not handle.done() or handle.failed():
            return False
        assert handle.future is not None
        read.first = None
        self._apply_plan(at, read, handle.future.result())
        return True

    def _request_pages(self, read: Read[U], room: int) -> int:
        plan = read.plan
        assert plan is not None
        while room > 0 and plan.expects(read.next_offset):
            handle = self.prefetch.submit(self.fetch, read.unit, read.next_offset)
            read.requested.append((read.next_offset, handle))
            read.next_offset += plan.step
            room -= 1
        return room

    @staticmethod
    def _drop(read: Read[U]) -> None:
        """Forget what was requested for a read that will not be used."""
        for _, handle in read.requested:
            if handle.future is not None:
                handle.future.cancel()
        read.requested.clear()
        if read.first is not None and read.first.future is not None:
            read.first.future.cancel()
        read.first = read.first_page = None


def ordered(
    prefetch: Prefetch, fetch: Callable[[T], Page], items: Iterable[T]
) -> Iterator[tuple[T, Page]]:
    """``(item, fetch(item))`` for each item in order, with calls in flight ahead once
    the prefetch is concurrent."""
    queue: deque[tuple[T, Handle]] = deque()
    pending = iter(items)

    def refill() -> None:
        if not prefetch.concurrent:
            return
        room = min(
            prefetch.limit - prefetch.in_flight(),
            prefetch.limit + prefetch.lookahead - len(queue),
        )
        for item in itertools.islice(pending, max(room, 0)):
            queue.append((item, prefetch.submit(fetch, item)))

    try:
        while True:
            refill()
            if not queue:
                item = next(pending, _END)
                if item is _END:
                    return
                queue.append((item, prefetch.submit(fetch, item)))
            item, handle = queue.popleft()
            yield item, prefetch.take(handle, refill)
    finally:
        for _, handle in queue:
            if handle.future is not None:
                handle.future.cancel()


_END: Any = object()
