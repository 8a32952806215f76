"""Window arithmetic: no gaps, no overlaps, lookback, and DST-safe local bounds."""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tap_cdr.windows import Window, split, sync_range

UTC = timezone.utc


def at(day: int, hour: int = 0) -> datetime:
    return datetime(2024, 3, day, hour, tzinfo=UTC)


@given(
    st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2030, 1, 1)),
    st.integers(min_value=0, max_value=24 * 400),
    st.integers(min_value=1, max_value=72),
)
def test_windows_tile_the_range_oldest_first(start, length_hours, hours):
    start = start.replace(tzinfo=UTC)
    end = start + timedelta(hours=length_hours, seconds=7)
    windows = split(start, end, hours)
    assert windows[0].start == start and windows[-1].end == end
    for before, after in itertools.pairwise(windows):
        assert before.end == after.start
    assert all(w.start < w.end <= w.start + timedelta(hours=hours) for w in windows)


def test_empty_range_has_no_windows():
    assert split(at(2), at(2), 24) == []
    assert split(at(3), at(2), 24) == []
    with pytest.raises(ValueError):
        split(at(1), at(2), 0)


def test_first_run_starts_at_start_date_or_default_history():
    common = {
        "end_date": at(10),
        "lookback": timedelta(hours=2),
        "default_history": timedelta(days=30),
    }
    assert sync_range(bookmark=None, start_date=at(1), **common) == (at(1), at(10))
    assert sync_range(bookmark=None, start_date=None, **common) == (
        at(10) - timedelta(days=30),
        at(10),
    )


def test_incremental_run_rereads_the_lookback_but_not_before_start_date():
    common = {
        "end_date": at(10),
        "lookback": timedelta(hours=2),
        "default_history": timedelta(days=30),
    }
    assert sync_range(bookmark=at(9, 12), start_date=None, **common)[0] == at(9, 10)
    assert sync_range(bookmark=at(9, 12), start_date=at(9, 11), **common)[0] == at(9, 11)
    # A bookmark older than the default history is honoured: no gap opens.
    old = datetime(2023, 1, 1, tzinfo=UTC)
    assert sync_range(bookmark=old, start_date=None, **common)[0] == old - timedelta(hours=2)


def test_local_bounds_in_the_api_zone():
    window = Window(at(1), at(2))
    assert window.local_bounds(ZoneInfo("Asia/Ho_Chi_Minh")) == (
        "2024-03-01 07:00:00",
        "2024-03-02 07:00:00",
    )
    assert window.query_bounds(ZoneInfo("Asia/Ho_Chi_Minh")) == (
        "2024-03-01 06:59:59",
        "2024-03-02 07:00:00",
    )


@pytest.mark.parametrize("hours", [1, 2, 24])
def test_every_local_time_of_a_dst_year_falls_in_exactly_one_window(hours):
    zone = ZoneInfo("America/New_York")
    start = datetime(2024, 3, 9, tzinfo=UTC)
    end = datetime(2024, 11, 5, tzinfo=UTC)
    bounds = [w.local_bounds(zone) for w in split(start, end, hours)]
    # Every second around both transitions, as the API would print it locally.
    probes = []
    for center in (datetime(2024, 3, 10, 7, tzinfo=UTC), datetime(2024, 11, 3, 6, tzinfo=UTC)):
        for minute in range(-150, 150, 7):
            moment = center + timedelta(minutes=minute, seconds=minute % 60)
            probes.append(moment.astimezone(zone).strftime("%Y-%m-%d %H:%M:%S"))
    for text in probes:
        hits = [b for b in bounds if b[0] <= text < b[1]]
        assert len(hits) == 1, (text, hits)


@given(st.integers(min_value=1, max_value=24 * 60), st.integers(min_value=1, max_value=500))
def test_divide_tiles_the_window_in_pieces_of_at_least_an_hour(hours, parts):
    window = Window(at(1), at(1) + timedelta(hours=hours, minutes=17))
    pieces = window.divide(parts)
    assert pieces[0].start == window.start and pieces[-1].end == window.end
    assert all(a.end == b.start for a, b in itertools.pairwise(pieces))
    assert all(p.end - p.start >= timedelta(hours=1) for p in pieces)
    assert len(pieces) <= parts


def test_a_window_shorter_than_two_hours_is_not_divided():
    assert Window(at(1), at(1, 1) + timedelta(minutes=59)).divide(8) == [
        Window(at(1), at(1, 1) + timedelta(minutes=59))
    ]
