"""The cdr_by_uuid work list: the pending queue kept in state, and the uuid sources."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tap_cdr.client import CdrApiError
from tap_cdr.uuids import WorkItem, parse_item
from tap_cdr.windows import parse_instant

if TYPE_CHECKING:
    from datetime import datetime, timedelta


class PendingQueue:
    """uuids announced but not available yet, as kept in state:
    ``{uuid: {"month", "first_seen", "last_attempt", "attempts"}}``."""

    def __init__(
        self, entries: dict[str, dict[str, Any]], interval: timedelta, max_attempts: int
    ) -> None:
        self.entries = entries
        self.interval = interval
        self.max_attempts = max_attempts

    @classmethod
    def from_state(cls, raw: Any, interval: timedelta, max_attempts: int) -> PendingQueue:
        if raw is None:
            return cls({}, interval, max_attempts)
        problem = "it is not an object" if not isinstance(raw, dict) else None
        for uuid, entry in raw.items() if problem is None else ():
            problem = _entry_problem(uuid, entry)
            if problem:
                break
        if problem:
            raise CdrApiError(
                f"cdr_by_uuid: the state's pending queue cannot be read: {problem}. Fix "
                "bookmarks.cdr_by_uuid.pending in the state (removing it forgets those uuids)."
            )
        return cls({k: dict(v) for k, v in raw.items()}, interval, max_attempts)

    def item(self, uuid: str) -> WorkItem:
        month = self.entries[uuid].get("month")
        return parse_item(f"{month}/{uuid}" if month else uuid, "state")

    def due(self, now: datetime) -> list[WorkItem]:
        ready = [
            uuid
            for uuid, entry in self.entries.items()
            if parse_instant(entry["last_attempt"]) + self.interval <= now
        ]
        ready.sort(key=lambda uuid: self.entries[uuid]["first_seen"])
        return [self.item(uuid) for uuid in ready]

    def next_due(self) -> datetime:
        return min(parse_instant(e["last_attempt"]) for e in self.entries.values()) + self.interval

    def failed_attempt(self, item: WorkItem, now: datetime) -> bool:
        """Count a miss; True when the uuid has used up its attempts and is dropped."""
        stamp = now.isoformat()
        entry = self.entries.setdefault(
            item.uuid, {"month": item.month_label, "first_seen": stamp, "attempts": 0}
        )
        entry["attempts"] = int(entry["attempts"]) + 1
        entry["last_attempt"] = stamp
        if entry["attempts"] >= self.max_attempts:
            del self.entries[item.uuid]
            return True
        return False

    def to_state(self) -> dict[str, dict[str, Any]]:
        return {uuid: dict(entry) for uuid, entry in self.entries.items()}


def _entry_problem(uuid: str, entry: Any) -> str | None:
    try:
        parse_instant(entry["last_attempt"])
        parse_instant(entry["first_seen"])
        int(entry["attempts"])
        parse_item(f"{entry['month']}/{uuid}" if entry.get("month") else uuid, "")
    except (KeyError, TypeError, ValueError, AttributeError):
        return f"its entry for {uuid!r} is malformed: {entry!r}"
    return None
