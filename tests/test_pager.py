"""The pager: pages in order across units, bounded in flight and in memory; the pure
planners; ordered lookups.

These drive the pager with an in-process fake API, so that completion order, latency
and failures can be controlled exactly; the sandbox-level tests (test_streams.py,
test_sweep.py, the fault matrix) cover it through the real tap. Every assertion is
about what a consumer or the API sees: rows, their order, requests made and when.
"""

from __future__ import annotations

import itertools
import logging
import random
import threading
import time
from datetime import datetime, timedelta, timezone
from itertools import pairwise

import pytest

from tap_cdr.pager import Page, Pager, Prefetch, ordered, plan_listing, plan_window
from tap_cdr.windows import Window, split

T0 = datetime(2024, 3, 1, tzinfo=timezone.utc)
STEP = 10
LOG = logging.getLogger("test_pager")


class FakeApi:
    """``rows[i]`` rows in the i-th hour after T0; pages of STEP rows."""

    def __init__(self, rows: list[int], latency: float = 0.0, jitter: float = 0.0) -> None:
        self.rows = rows
        self.latency = latency
        self.jitter = jitter
        self.lock = threading.Lock()
        self.running = 0
        self.peak_running = 0
        self.threads: set[str] = set()
        self.calls: list[tuple[Window, int]] = []
        self.fail_at: tuple[int, int] | None = None  # (hour, offset)
        self.report_total = True

    def ids(self, window: Window) -> list[str]:
        out = []
        for hour in range(int((window.end - window.start) / timedelta(hours=1))):
            start = window.start + timedelta(hours=hour)
            index = int((start - T0) / timedelta(hours=1))
            if 0 <= index < len(self.rows):
                out += [f"{index}-{i}" for i in range(self.rows[index])]
        return out

    def __call__(self, window: Window, offset: int) -> Page:
        with self.lock:
            self.running += 1
            self.peak_running = max(self.peak_running, self.running)
            self.threads.add(threading.current_thread().name)
            self.calls.append((window, offset))
        try:
            waited = self.latency + random.uniform(0, self.jitter)
            time.sleep(waited)
            hour = int((window.start - T0) / timedelta(hours=1))
            if self.fail_at == (hour, offset):
                raise RuntimeError(f"the API failed at hour {hour}")
            ids = self.ids(window)
            rows = [{"id": i} for i in ids[offset : offset + STEP]]
            return Page(rows, len(ids) if self.report_total else None, waited)
        finally:
            with self.lock:
                self.running -= 1


def read_all(pager: Pager, windows: list[Window], api=None, outstanding=None, commit=0.0):
    """(window, ids) per read, as a consumer that uses every page would see them;
    ``commit`` stands for the consumer's work after each window (its STATE).
    ``outstanding`` collects, at each page, the pages requested and not yet used."""
    out, used = [], 0
    for read in pager.reads(windows):
        ids = []
        for page in pager.pages(read):
            used += 1
            if outstanding is not None:
                with api.lock:
                    outstanding.append(len(api.calls) - used)
            ids += [row["id"] for row in page]
        out.append((read.unit, ids))
        time.sleep(commit)
    if api is not None:
        assert len(api.calls) == used  # every page requested was used: none wasted
    return out


def hours(n: int) -> list[Window]:
    return split(T0, T0 + timedelta(hours=n), 1)


def pager_for(fetch, concurrency: int, max_rows: int = 10_000, divided=None) -> Pager:
    divisions = divided if divided is not None else []
    return Pager(
        fetch,
        lambda window, first: plan_window(window, first, max_rows, Window.divide),
        Prefetch(concurrency, LOG, "test"),
        lambda window, total, pieces: divisions.append((window, total, pieces)),
    )


# -- the planners: pure -------------------------------------------------------------


def test_a_window_is_planned_from_its_first_page_at_the_servers_page_size():
    first = Page([{}] * 7, total=30)  # the server caps the page size at 7
    plan = plan_window(hours(1)[0], first, 1000, Window.divide)
    offsets = list(itertools.takewhile(plan.expects, itertools.count(plan.step, plan.step)))
    assert offsets == [7, 14, 21, 28]
    assert not plan.pieces


def test_a_crowded_window_is_planned_as_pieces():
    day = Window(T0, T0 + timedelta(hours=24))
    plan = plan_window(day, Page([{}] * 10, total=250), 100, Window.divide)
    assert len(plan.pieces) == 3
    assert plan.pieces[0].start == T0
    assert plan.pieces[-1].end == day.end
    one_hour = plan_window(hours(1)[0], Page([{}] * 10, total=250), 100, Window.divide)
    assert not one_hour.pieces  # an hour is never divided further


@pytest.mark.parametrize(
    ("first_rows", "total", "expected"),
    [
        (500, None, "every offset"),  # no total: page until an empty or short page
        (10, None, "every offset"),  # `num` ignored: pages of 10
        (500, 1000, [500, 1000]),  # a total: also ask at the total, which must be empty
        (37, 37, [37]),  # 37 < 500 asked, but a server may cap `num` at 37
        (7, None, "every offset"),  # or even at 7
        (0, None, []),  # an empty first page ends the day
        (0, 0, []),
    ],
)
def test_a_listing_is_paged_until_an_empty_or_short_page(first_rows, total, expected):
    plan = plan_listing(Page([{}] * first_rows, total=total))
    assert plan.endless
    offsets = list(
        itertools.islice(
            itertools.takewhile(plan.expects, itertools.count(plan.step, plan.step or 1)), 50
        )
    )
    if expected == "every offset":
        assert offsets == [first_rows * k for k in range(1, 51)]
    else:
        assert offsets == expected


# -- the pager over windows ---------------------------------------------------------


def test_pages_arrive_in_window_and_offset_order_whatever_the_concurrency():
    random.seed(7)
    rows = [random.choice([0, 0, 3, 10, 25, 47]) for _ in range(30)]
    results = {}
    for concurrency in (1, 8):
        api = FakeApi(rows, latency=0.01, jitter=0.01)  # completions out of order
        pager = pager_for(api, concurrency)
        results[concurrency] = read_all(pager, hours(30), api)
        assert (api.peak_running > 1) is (concurrency > 1)
    assert results[1] == results[8]
    assert [ids for _, ids in results[1]] == [FakeApi(rows).ids(w) for w in hours(30)]


def test_in_flight_requests_and_pages_waiting_stay_within_the_limit():
    api = FakeApi([95] * 12, latency=0.01, jitter=0.01)
    pager = pager_for(api, 8)
    outstanding: list[int] = []
    read_all(pager, hours(12), api, outstanding)
    assert api.peak_running == 8  # the limit is used ...
    assert max(outstanding) <= 8 + 4  # ... and pages waiting for the consumer are bounded


def test_next_windows_first_pages_are_requested_before_the_current_one_is_used_up():
    api = FakeApi([0] * 40, latency=0.02)
    pager = pager_for(api, 8)
    windows = hours(40)
    ahead = []  # for each window: how many later windows were requested when it arrived
    for number, read in enumerate(pager.reads(windows)):
        for _ in pager.pages(read):
            time.sleep(0.03)  # the consumer's work: requests made meanwhile have started
            with api.lock:
                requested = {windows.index(window) for window, _ in api.calls}
            ahead.append(len([n for n in requested if n > number]))
    # Once concurrent, up to half the limit (4) of first pages are held, the current
    # window's included: 40 empty windows overlap instead of waiting for each other.
    assert max(ahead) == 3
    assert sum(1 for n in ahead if n >= 2) >= 30
    assert api.peak_running > 1


def test_a_fast_api_is_read_inline_on_the_consumers_thread():
    api = FakeApi([35] * 10)
    pager = pager_for(api, 8)
    read_all(pager, hours(10), api)
    assert api.threads == {threading.current_thread().name}


def test_a_crowded_window_is_divided_before_any_of_its_rows_is_used():
    rows = [0] * 20 + [30] * 4  # a 24-hour window holding 120 rows, all at the end
    api = FakeApi(rows, latency=0.005)
    divided: list = []
    pager = pager_for(api, 4, max_rows=50, divided=divided)
    day = [Window(T0, T0 + timedelta(hours=24))]
    result = read_all(pager, day)
    assert divided
    assert divided[0][1] == 120
    assert all(len(ids) <= 50 for _, ids in result)
    assert [i for _, ids in result for i in ids] == api.ids(day[0])
    assert day[0] not in [w for w, _ in result]


def test_a_failure_in_a_window_read_ahead_is_raised_after_the_earlier_windows():
    api = FakeApi([25] * 10, latency=0.01)
    api.fail_at = (6, 0)  # the first page of the 7th window
    pager = pager_for(api, 8)
    completed = []

    def read_all_windows():
        for read in pager.reads(hours(10)):
            completed.append([row["id"] for page in pager.pages(read) for row in page])  # noqa: PERF401

    with pytest.raises(RuntimeError, match="hour 6"):
        read_all_windows()
    assert completed == [api.ids(w) for w in hours(6)]


def test_a_lowered_limit_lasts_for_the_rest_of_the_window():
    api = FakeApi([55] * 3, latency=0.01)
    pager = pager_for(api, 8)
    limits = []
    for number, read in enumerate(pager.reads(hours(3))):
        for index, _ in enumerate(pager.pages(read)):
            if number == 0 and index == 1:
                assert pager.prefetch.lower() == (8, 4)
            limits.append((number, pager.prefetch.limit))
    assert {limit for number, limit in limits if number == 0} >= {4}
    assert {limit for number, limit in limits if number > 0} == {8}


def test_a_short_page_marks_the_read_as_changed():
    api = FakeApi([35], latency=0.0)

    def short_second_page(window: Window, offset: int) -> Page:
        page = api(window, offset)
        return Page(page.rows[:5], page.total) if offset == STEP else page

    pager = pager_for(short_second_page, 1)
    reads = []
    for read in pager.reads(hours(1)):
        list(pager.pages(read))
        reads.append(read)
    assert reads[0].changed


def test_only_waiting_for_the_server_counts_as_latency():
    """A page that takes long to transfer and parse, but was answered at once, is work
    threads would compete for, not latency: the pager stays inline."""
    api = FakeApi([0, 0] + [40] * 8)

    def answered_at_once(window: Window, offset: int) -> Page:
        page = api(window, offset)
        time.sleep(0.02)  # the body's transfer and parsing
        return Page(page.rows, page.total, 0.0005)

    pager = pager_for(answered_at_once, 8)
    read_all(pager, hours(10))
    assert api.peak_running == 1
    assert api.threads == {threading.current_thread().name}


def test_a_crowded_window_read_ahead_is_divided_while_earlier_windows_are_read():
    """Once concurrent, a crowded window's first page arrives while the consumer is
    still on earlier windows; it is divided there, and read as its pieces."""
    rows = [0] * 6 + [30] * 24  # six empty hours, then a day of 720 rows
    api = FakeApi(rows, latency=0.02)
    divided: list = []
    pager = pager_for(api, 8, max_rows=100, divided=divided)
    day = Window(T0 + timedelta(hours=6), T0 + timedelta(hours=30))
    windows = [*hours(6), day, Window(day.end, day.end + timedelta(hours=1))]
    # While the consumer commits window 5, the day's first page (requested ahead)
    # arrives: the pager meets it first when it moves on to the day.
    result = read_all(pager, windows, commit=0.03)
    assert api.peak_running > 1
    assert [total for _, total, _ in divided] == [720]
    assert [i for _, ids in result for i in ids] == api.ids(Window(T0, day.end))
    assert day not in [w for w, _ in result]


@pytest.mark.parametrize("seed", range(12))
def test_any_mix_of_windows_latency_and_division_reads_every_row_once_in_order(seed):
    rng = random.Random(seed)
    rows = [rng.choice([0, 0, 0, 1, 9, 10, 11, 40, 120]) for _ in range(48)]
    api = FakeApi(rows, latency=rng.choice([0.0, 0.002, 0.008]), jitter=0.006)
    cuts = sorted(rng.sample(range(1, 48), rng.randint(3, 12)))
    bounds = [0, *cuts, 48]
    windows = [
        Window(T0 + timedelta(hours=a), T0 + timedelta(hours=b)) for a, b in pairwise(bounds)
    ]
    pager = pager_for(api, rng.choice([1, 2, 3, 8]), max_rows=rng.choice([60, 150, 10_000]))
    result = read_all(pager, windows, commit=rng.choice([0.0, 0.004]))
    assert [i for _, ids in result for i in ids] == api.ids(Window(T0, T0 + timedelta(hours=48)))
    assert all(a.end == b.start for (a, _), (b, _) in pairwise(result))


# -- listings: no division, paged until an empty or short page -----------------------


def listing_pager(api: FakeApi, concurrency: int) -> Pager:
    plan = lambda _unit, first: plan_listing(first)  # noqa: E731
    return Pager(api, plan, Prefetch(concurrency, LOG, "t"))


@pytest.mark.parametrize("report_total", [True, False])
@pytest.mark.parametrize("concurrency", [1, 8])
def test_a_listing_reads_every_row_with_or_without_a_total(report_total, concurrency):
    rows = [0, 10, 25, 30, 7, 0, 41]
    api = FakeApi(rows, latency=0.008)
    api.report_total = report_total
    pager = listing_pager(api, concurrency)
    result = [
        (r.unit, [x["id"] for p in pager.pages(r) for x in p], r) for r in pager.reads(hours(7))
    ]
    assert [ids for _, ids, _ in result] == [api.ids(w) for w in hours(7)]
    assert not any(read.changed for _, _, read in result)
    # The end is confirmed by an empty or short page: a day of 7, 10 or 30 rows
    # costs one request more than its pages.
    asked = {w: sum(1 for c, _ in api.calls if c == w) for w in hours(7)}
    for window, count in zip(hours(7), rows, strict=True):
        needed = count // STEP + 1 if count >= STEP else min(count, 1) + 1
        assert asked[window] >= needed
        if concurrency == 1 or report_total:
            assert asked[window] == needed


def test_a_listing_whose_rows_differ_from_its_total_is_changed():
    api = FakeApi([25])

    def one_row_vanished(window: Window, offset: int) -> Page:
        page = api(window, offset)
        return Page(page.rows, 26)

    pager = Pager(one_row_vanished, lambda _u, first: plan_listing(first), Prefetch(1, LOG, "t"))
    reads = []
    for read in pager.reads(hours(1)):
        list(pager.pages(read))
        reads.append(read)
    assert reads[0].changed


# -- ordered calls (uuid lookups) -----------------------------------------------------


def test_ordered_calls_come_back_in_order_and_overlap_once_latency_bound():
    lock = threading.Lock()
    running = [0, 0]  # now, peak

    def lookup(n: int) -> Page:
        with lock:
            running[0] += 1
            running[1] = max(running)
        time.sleep(random.uniform(0.005, 0.02))  # completions out of order
        with lock:
            running[0] -= 1
        return Page([{"n": n}], None, 0.02)

    prefetch = Prefetch(8, LOG, "lookups")
    result = [page.rows[0]["n"] for _, page in ordered(prefetch, lookup, range(80))]
    prefetch.close()
    assert result == list(range(80))
    assert running[1] == 8


def test_ordered_calls_stay_inline_when_the_api_is_fast():
    threads = set()

    def lookup(n: int) -> Page:
        threads.add(threading.current_thread().name)
        return Page([{"n": n}], None, 0.0001)

    prefetch = Prefetch(8, LOG, "lookups")
    assert [p.rows[0]["n"] for _, p in ordered(prefetch, lookup, range(50))] == list(range(50))
    assert threads == {threading.current_thread().name}
