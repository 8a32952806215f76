"""Date-window arithmetic for incremental syncs. Pure functions, no I/O.

A sync reads the half-open range [start, end) of call end times, in UTC, cut into
windows of ``window_hours``, oldest first. The API filters on naive local times, so
each window is also expressed in the API's zone.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone, tzinfo

API_FORMAT = "%Y-%m-%d %H:%M:%S"
ONE_SECOND = timedelta(seconds=1)


@dataclass(frozen=True)
class Window:
    """Calls that ended in [start, end), both UTC-aware."""

    start: datetime
    end: datetime

    def local_bounds(self, zone: tzinfo) -> tuple[str, str]:
        """The window as naive local strings: a record belongs to it when
        ``lo <= time_ended < hi``, compared as strings.

        Comparing the API's own local strings (rather than converted instants) puts
        every record in exactly one window even across a DST fall-back, where one
        local hour happens twice: consecutive windows share a bound, and the bounds
        never decrease for windows of an hour or more.
        """
        return to_local(self.start, zone), to_local(self.end, zone)

    def query_bounds(self, zone: tzinfo) -> tuple[str, str]:
        """``start_date_ended`` and ``end_date_ended`` to request for this window.

        The document does not say whether the bounds are inclusive. Asking for
        [start - 1 s, end] covers every reading (inclusive or exclusive at either
        end); records outside ``local_bounds`` are then left to their own window.
        """
        return to_local(self.start - ONE_SECOND, zone), to_local(self.end, zone)

    def label(self) -> str:
        return f"[{self.start.isoformat()}, {self.end.isoformat()})"

    def divide(self, parts: int) -> list[Window]:
        """Up to ``parts`` consecutive windows of whole hours covering this one.

        Never shorter than an hour, so that local bounds stay monotonic across DST.
        """
        hours = int((self.end - self.start) // timedelta(hours=1))
        parts = max(1, min(parts, hours))
        step = timedelta(hours=-(-hours // parts))
        pieces, lo = [], self.start
        while lo < self.end:
            hi = min(lo + step, self.end)
            if self.end - hi < timedelta(hours=1):
                hi = self.end
            pieces.append(Window(lo, hi))
            lo = hi
        return pieces


def to_local(instant: datetime, zone: tzinfo) -> str:
    return instant.astimezone(zone).strftime(API_FORMAT)


def sync_range(
    *,
    bookmark: datetime | None,
    start_date: datetime | None,
    end_date: datetime,
    lookback: timedelta,
    default_history: timedelta,
) -> tuple[datetime, datetime]:
    """The range of end times one run reads.

    - With a bookmark, re-read ``lookback`` before it (late-registered CDRs), but
      never before an explicit ``start_date``.
    - Without one, start at ``start_date``, or ``default_history`` before the end.

    The default history applies only to a first run: a bookmark older than it (a tap
    that has not run for months) is still honoured, so no gap opens.
    """
    if bookmark is not None:
        start = bookmark - lookback
        if start_date is not None:
            start = max(start, start_date)
    elif start_date is not None:
        start = start_date
    else:
        start = end_date - default_history
    return start, end_date


def split(start: datetime, end: datetime, hours: int) -> list[Window]:
    """Cut [start, end) into windows of ``hours``, oldest first; the last may be short."""
    if hours <= 0:
        raise ValueError("window size must be a positive number of hours")
    step = timedelta(hours=hours)
    windows = []
    lo = start
    while lo < end:
        hi = min(lo + step, end)
        windows.append(Window(lo, hi))
        lo = hi
    return windows


def parse_instant(value: str | datetime) -> datetime:
    """Parse an RFC 3339 / ISO 8601 instant; a naive value is taken as UTC."""
    parsed = (
        value
        if isinstance(value, datetime)
        else datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    )
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.astimezone(timezone.utc)


def listing_days(start: datetime, end: datetime, zone: tzinfo, max_call: timedelta) -> list[date]:
    """The CDR log dates that can list a call which ended in [start, end).

    A call is listed under the date of its start, in the call centre's zone or in
    UTC (the API does not say which: both are covered), and it started at most
    ``max_call`` before it ended.
    """
    if end <= start:
        return []
    earliest, latest = start - max_call, end - ONE_SECOND
    first = min(earliest.astimezone(zone).date(), earliest.astimezone(timezone.utc).date())
    last = max(latest.astimezone(zone).date(), latest.astimezone(timezone.utc).date())
    return [first + timedelta(days=k) for k in range((last - first).days + 1)]


def listed_through(day: date, zone: tzinfo) -> datetime:
    """Once every date up to ``day`` is listed, each call that ended before this
    instant has been seen: it started before it ended, and is listed under its
    start's date in the local zone or in UTC, whichever the API uses."""
    after = day + timedelta(days=1)
    local = datetime(after.year, after.month, after.day, tzinfo=zone)
    utc = datetime(after.year, after.month, after.day, tzinfo=timezone.utc)
    return min(local.astimezone(timezone.utc), utc)
