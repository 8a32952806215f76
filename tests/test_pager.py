"""WindowPager: pages in order across windows, bounded in flight and in memory.

These drive the pager with an in-process fake API (rows counted per window), so that
completion order, latency and failures can be controlled exactly; the sandbox-level
tests (test_streams.py, the fault matrix) cover it through the real tap.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from datetime import datetime, timedelta, timezone
from itertools import pairwise

import pytest

from tap_cdr.pager import WindowPager
from tap_cdr.windows import Window, split

T0 = datetime(2024, 3, 1, tzinfo=timezone.utc)
STEP = 10


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

    def count(self, window: Window) -> int:
        first = int((window.start - T0) / timedelta(hours=1))
        last = int((window.end - T0) / timedelta(hours=1))
        return sum(self.rows[max(first, 0) : max(last, 0)])

    def ids(self, window: Window) -> list[str]:
        out = []
        for hour in range(int((window.end - window.start) / timedelta(hours=1))):
            start = window.start + timedelta(hours=hour)
            index = int((start - T0) / timedelta(hours=1))
            if 0 <= index < len(self.rows):
                out += [f"{index}-{i}" for i in range(self.rows[index])]
        return out

    def __call__(self, window: Window, offset: int) -> tuple[list[dict], int, float]:
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
            return [{"id": i} for i in ids[offset : offset + STEP]], len(ids), waited
        finally:
            with self.lock:
                self.running -= 1


def read_all(
    pager: WindowPager,
    windows: list[Window],
    held: list[int] | None = None,
    commit_seconds: float = 0.0,
):
    """(window, ids) per read, as a consumer that uses every page would see them;
    ``commit_seconds`` stands for the consumer's work after each window (its STATE)."""
    out = []
    for read in pager.reads(windows):
        ids = []
        for page in pager.pages(read):
            if held is not None:
                held.append(pager._held)
            ids += [row["id"] for row in page]
        out.append((read.window, ids))
        time.sleep(commit_seconds)
    assert (pager._held, pager._firsts) == (0, 0)  # every page requested was handed out
    return out


def hours(n: int) -> list[Window]:
    return split(T0, T0 + timedelta(hours=n), 1)


def pager_for(api: FakeApi, concurrency: int, max_rows: int = 10_000, divided=None):
    divisions = divided if divided is not None else []
    return WindowPager(
        api,
        concurrency=concurrency,
        max_rows=max_rows,
        on_divide=lambda window, total, pieces: divisions.append((window, total, pieces)),
        logger=logging.getLogger("test_pager"),
    )


def test_pages_arrive_in_window_and_offset_order_whatever_the_concurrency():
    random.seed(7)
    rows = [random.choice([0, 0, 3, 10, 25, 47]) for _ in range(30)]
    results = {}
    for concurrency in (1, 8):
        api = FakeApi(rows, latency=0.01, jitter=0.01)  # completions out of order
        pager = pager_for(api, concurrency)
        results[concurrency] = read_all(pager, hours(30))
        assert pager.latency_bound is (concurrency > 1)
    assert results[1] == results[8]
    assert [ids for _, ids in results[1]] == [FakeApi(rows).ids(w) for w in hours(30)]


def test_in_flight_requests_and_held_pages_stay_within_the_limit():
    api = FakeApi([95] * 12, latency=0.01, jitter=0.01)
    pager = pager_for(api, 8)
    held: list[int] = []
    read_all(pager, hours(12), held)
    assert api.peak_running == 8  # the limit is used ...
    assert max(held) <= 8 + 4  # ... and pages waiting for the consumer are bounded


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
    assert pager.latency_bound
    # Once concurrent, up to half the limit (4) of first pages are held, the current
    # window's included: 40 empty windows overlap instead of waiting for each other.
    assert max(ahead) == 3
    assert sum(1 for n in ahead if n >= 2) >= 30
    assert api.peak_running > 1


def test_a_fast_api_is_read_inline_on_the_consumers_thread():
    api = FakeApi([35] * 10)
    pager = pager_for(api, 8)
    read_all(pager, hours(10))
    assert not pager.latency_bound
    assert api.threads == {threading.current_thread().name}


def test_a_crowded_window_is_divided_before_any_of_its_rows_is_used():
    rows = [0] * 20 + [30] * 4  # a 24-hour window holding 120 rows, all at the end
    api = FakeApi(rows, latency=0.005)
    divided: list = []
    pager = pager_for(api, 4, max_rows=50, divided=divided)
    day = [Window(T0, T0 + timedelta(hours=24))]
    result = read_all(pager, day)
    assert divided and divided[0][1] == 120
    assert all(len(ids) <= 50 for _, ids in result)
    assert [i for _, ids in result for i in ids] == api.ids(day[0])
    assert Window(T0, T0 + timedelta(hours=24)) not in [w for w, _ in result]


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
                assert pager.lower() == (8, 4)
            limits.append((number, pager.limit))
    assert {limit for number, limit in limits if number == 0} >= {4}
    assert {limit for number, limit in limits if number > 0} == {8}


def test_a_short_page_marks_the_read_as_changed():
    api = FakeApi([35], latency=0.0)
    real = api.__call__

    def short_second_page(window: Window, offset: int):
        page, total, waited = real(window, offset)
        return (page[:5] if offset == STEP else page), total, waited

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

    def answered_at_once(window: Window, offset: int):
        page, total, _ = api(window, offset)
        time.sleep(0.02)  # the body's transfer and parsing
        return page, total, 0.0005

    pager = pager_for(answered_at_once, 8)
    read_all(pager, hours(10))
    assert not pager.latency_bound
    assert api.peak_running == 1


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
    result = read_all(pager, windows, commit_seconds=0.03)
    assert pager.latency_bound
    assert [total for _, total, _ in divided] == [720]
    assert [i for _, ids in result for i in ids] == api.ids(Window(T0, day.end))
    assert day not in [w for w, _ in result]
    assert pager._held == 0 and pager._firsts == 0


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
    result = read_all(pager, windows, commit_seconds=rng.choice([0.0, 0.004]))
    assert [i for _, ids in result for i in ids] == api.ids(Window(T0, T0 + timedelta(hours=48)))
    assert all(a.end == b.start for (a, _), (b, _) in pairwise(result))
