"""The uuid work list: parsing, errors that name the item, dedupe, month candidates."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tap_cdr.uuids import (
    UuidListError,
    WorkItem,
    month_candidates,
    parse_item,
    parse_lines,
    parse_setting,
)

U = "85955f2e-049f-4a41-9145-f513abf50c7b"


def test_bare_and_dated_items():
    assert parse_item(U, "x") == WorkItem(U)
    assert parse_item(f"2014/01/{U}", "x") == WorkItem(U, 2014, 1)
    assert parse_item(f" 2014/1/{U.upper()} ", "x") == WorkItem(U, 2014, 1)


@pytest.mark.parametrize(
    "bad", ["", "not-a-uuid", f"2014/13/{U}", f"14/01/{U}", f"{U}/2014/01", U[:-1]]
)
def test_malformed_items_name_where_they_are(bad):
    with pytest.raises(UuidListError, match=r"uuids\[2\]"):
        parse_item(bad, "uuids[2]")


def test_lines_skip_blanks_and_comments_and_name_the_bad_line():
    lines = ["# webhook export", "", f"{U}  # first call", f"2024/03/{U[:-1]}x"]
    with pytest.raises(UuidListError, match=r"calls\.txt line 4"):
        parse_lines(lines, "calls.txt")
    assert parse_lines(lines[:3], "calls.txt") == [WorkItem(U)]


def test_each_uuid_once_and_the_dated_form_wins():
    assert parse_setting([U, f"2024/03/{U}", U]) == [WorkItem(U, 2024, 3)]


def test_month_candidates():
    assert month_candidates(WorkItem(U), 2024, 1) == [(2024, 1), (2023, 12)]
    assert month_candidates(WorkItem(U, 2024, 12), 2030, 5) == [(2024, 12), (2024, 11), (2025, 1)]


@given(st.text(max_size=60))
def test_any_text_parses_or_raises_the_documented_error(text):
    try:
        item = parse_item(text, "uuids[0]")
    except UuidListError:
        return
    assert len(item.uuid) == 36
