"""uuid work items: parse the `uuids` setting and the lines of a uuids file, and
the months to try for an item. Pure functions, no I/O.

An item is a bare uuid, or ``YYYY/MM/uuid`` mirroring the API's resource path.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable

_UUID = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
_LIKE_AN_ITEM = re.compile(r"^[0-9A-Za-z/-]{1,60}$")
_ITEM = re.compile(rf"^(?:(?P<year>\d{{4}})/(?P<month>\d{{1,2}})/)?(?P<uuid>{_UUID})$")


class UuidListError(ValueError):
    """A malformed item, with where it came from."""


@dataclass(frozen=True)
class WorkItem:
    uuid: str
    year: int | None = None
    month: int | None = None

    @property
    def month_label(self) -> str | None:
        return f"{self.year:04d}/{self.month:02d}" if self.year else None


def parse_item(text: str, where: str) -> WorkItem:
    """Parse one item; ``where`` names it in the error (``uuids[3]``, ``file:7``)."""
    if not isinstance(text, str):
        raise UuidListError(f"{where}: expected a string, got {text!r}")
    match = _ITEM.match(text.strip())
    if not match:
        # A mistyped uuid is shown; a line that is nothing like one (the wrong file:
        # a password file, an .env) is not repeated.
        shown = repr(text) if _LIKE_AN_ITEM.match(text.strip()) else "the text there"
        raise UuidListError(
            f"{where}: {shown} is not a uuid or YYYY/MM/uuid "
            "(e.g. 85955f2e-049f-4a41-9145-f513abf50c7b or 2024/03/85955f2e-...)"
        )
    uuid = match["uuid"].lower()
    if match["year"] is None:
        return WorkItem(uuid)
    year, month = int(match["year"]), int(match["month"])
    if not 1 <= month <= 12 or year < 2000:
        raise UuidListError(f"{where}: {text!r} has no valid year/month (month 01-12)")
    return WorkItem(uuid, year, month)


def parse_lines(lines: Iterable[str], source: str, first_line: int = 1) -> list[WorkItem]:
    """Items of a file: one per line; blank lines and ``#`` comments are skipped."""
    items = []
    for number, line in enumerate(lines, start=first_line):
        text = line.split("#", 1)[0].strip()
        if text:
            items.append(parse_item(text, f"{source} line {number}"))
    return items


def parse_setting(items: Iterable[str]) -> list[WorkItem]:
    """The `uuids` setting's items in order, each uuid once (a dated form wins)."""
    return dedupe(parse_item(text, f"uuids[{i}]") for i, text in enumerate(items))


def dedupe(items: Iterable[WorkItem]) -> list[WorkItem]:
    chosen: dict[str, WorkItem] = {}
    for item in items:
        known = chosen.get(item.uuid)
        if known is None or (known.year is None and item.year is not None):
            chosen[item.uuid] = item
    return list(chosen.values())


def month_candidates(item: WorkItem, now_year: int, now_month: int) -> list[tuple[int, int]]:
    """The ``{year}/{month}`` paths to try, in order.

    Whether the API files a call under its local or its UTC month is undocumented, and
    the two differ near a month boundary. Without a month: this month, then the last.
    With one: that month, then the month before and the month after it.
    """
    if item.year is None:
        return [(now_year, now_month), _shift(now_year, now_month, -1)]
    year, month = item.year, item.month or 1
    return [(year, month), _shift(year, month, -1), _shift(year, month, +1)]


def _shift(year: int, month: int, delta: int) -> tuple[int, int]:
    index = year * 12 + (month - 1) + delta
    return index // 12, index % 12 + 1
