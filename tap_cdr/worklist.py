"""The cdr_by_uuid work list: the pending queue, and the uuid sources read incrementally.

State stays small: it holds the pending queue, the read position of the uuids file
(with a fingerprint of what was read), and which items of the ``uuids`` setting were
looked up; never the uuids ever fetched. The intake store's reader is
`tap_cdr.intake.source`.

- `PendingQueue`: uuids announced but not available yet, retried every
  ``retry_interval`` up to ``max_attempts``.
- `SettingItems`: the ``uuids`` setting; an item looked up in an earlier run is not
  requested again.
- `UuidFile`: the uuids file, meant to be appended to between runs (by a webhook
  receiver). Each run reads the lines added since the position in state. The
  position carries the SHA-256 of the bytes before it: a file that was truncated,
  rotated or replaced no longer matches, and is read again from the start. The lines
  appended to it after the last read are looked for in a rotated sibling
  (``calls.txt.1``, ``calls.txt-20240310``: same name prefix, same first bytes), so
  no uuid is lost to logrotate, in rename or in copytruncate mode.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tap_cdr.uuids import UuidListError, WorkItem, parse_item, parse_lines
from tap_cdr.windows import parse_instant

if TYPE_CHECKING:
    from datetime import datetime, timedelta
    from pathlib import Path

LINES_PER_CHUNK = 1000
_READ_BYTES = 1 << 20


class WorkListError(ValueError):
    """The work list in state, or a new line of the uuids file, cannot be read."""


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
            raise WorkListError(
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


class SettingItems:
    """The ``uuids`` setting: the items not looked up in an earlier run.

    State keeps the uuids of the setting that were looked up (fetched, pending or
    given up), so it grows at most with the setting; an item removed from the
    setting is forgotten.
    """

    def __init__(self, items: Iterable[WorkItem], done: Any) -> None:
        self.items = list(items)
        if done is not None and (
            not isinstance(done, list) or not all(isinstance(u, str) for u in done)
        ):
            raise WorkListError(
                f"cdr_by_uuid: the state's uuids_done is not a list of uuids: {done!r}. "
                "Fix or remove bookmarks.cdr_by_uuid.uuids_done (removing it looks the "
                "`uuids` setting up again)."
            )
        configured = {item.uuid for item in self.items}
        self.done = {uuid for uuid in done or () if uuid in configured}

    def new(self) -> list[WorkItem]:
        return [item for item in self.items if item.uuid not in self.done]

    def to_state(self) -> list[str]:
        return sorted(self.done)


@dataclass
class Chunk:
    """New uuids of a source (lines of the uuids file, calls of the intake store), and
    the source's position to save once they are processed."""

    items: list[WorkItem]
    position: dict[str, Any]


@dataclass
class UuidFile:
    """The uuids file, read from the position saved in state (see the module doc)."""

    path: Path
    saved: Any = None  # the position from state, as found there
    lines_per_chunk: int = LINES_PER_CHUNK
    reread_reason: str | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        saved = self.saved
        if saved is not None and not (
            isinstance(saved, Mapping)
            and isinstance(saved.get("offset"), int)
            and isinstance(saved.get("sha256"), str)
        ):
            raise WorkListError(
                f"cdr_by_uuid: the state's uuids_file position is malformed: {saved!r}. "
                "Remove bookmarks.cdr_by_uuid.uuids_file to read the file from the start."
            )

    def chunks(self) -> Iterator[Chunk]:
        """The lines added since the saved position, in chunks of complete lines."""
        prefix = self._resume()
        if prefix is None:
            # The file no longer holds what was read: first the lines appended to it
            # before it was rotated, then the new file from its start.
            yield from self._rotated_remainder()
            prefix = _Prefix(hashlib.sha256(), 0, 0)
        yield from self._read_from(self.path, prefix, position_of=self.path)

    def _resume(self) -> _Prefix | None:
        saved = self.saved
        if saved is None or saved.get("path") != str(self.path):
            return _Prefix(hashlib.sha256(), 0, 0)
        offset = saved["offset"]
        prefix = _Prefix.of(self.path, offset)
        if prefix.length < offset:
            self.reread_reason = f"it is shorter than the {offset} bytes read before (truncated)"
            return None
        if prefix.hasher.hexdigest() != saved["sha256"]:
            self.reread_reason = "its first bytes changed (replaced or rotated)"
            return None
        return prefix

    def _rotated_remainder(self) -> Iterator[Chunk]:
        saved = self.saved
        assert saved is not None
        name = self.path.name
        for sibling in sorted(self.path.parent.iterdir()):
            if not sibling.name.startswith(name) or sibling.name == name or not sibling.is_file():
                continue
            prefix = _Prefix.of(sibling, saved["offset"])
            if prefix.length == saved["offset"] and prefix.hasher.hexdigest() == saved["sha256"]:
                # Its position is that of the new file's start: once these lines are
                # processed, the new file is read from its first byte.
                yield from self._read_from(sibling, prefix, position_of=None)
                return

    def _read_from(self, path: Path, prefix: _Prefix, position_of: Path | None) -> Iterator[Chunk]:
        hasher, offset, line_number = prefix.hasher, prefix.length, prefix.lines + 1
        with path.open("rb") as handle:
            handle.seek(offset)
            pending = b""
            for block in _blocks(handle, None):
                data = pending + block
                cut = data.rfind(b"\n") + 1  # only complete lines: a partial one is read next run
                pending = data[cut:]
                lines = data[:cut].split(b"\n")[:-1]
                for at in range(0, len(lines), self.lines_per_chunk):
                    part = lines[at : at + self.lines_per_chunk]
                    text = b"\n".join(part)
                    hasher.update(text + b"\n")
                    offset += len(text) + 1
                    items = self._parse(text, path, line_number)
                    line_number += len(part)
                    yield Chunk(items, self._position(position_of, offset, hasher))

    def _parse(self, data: bytes, path: Path, first_line: int) -> list[WorkItem]:
        source = f"uuids_file {path.name}"
        try:
            return parse_lines(data.decode("utf-8").split("\n"), source, first_line)
        except UnicodeDecodeError as exc:
            number = first_line + data.count(b"\n", 0, exc.start)
            problem = f"{source} line {number} is not UTF-8 text"
        except UuidListError as exc:
            problem = str(exc)
        raise WorkListError(
            f"cdr_by_uuid: {problem}. Fix the line: the tap reads on from it "
            "(the lines before it are done)."
        )

    @staticmethod
    def _position(path: Path | None, offset: int, hasher: Any) -> dict[str, Any]:
        if path is None:  # a rotated file: the next position is the new file's start
            return {"path": None, "offset": 0, "sha256": hashlib.sha256().hexdigest()}
        return {"path": str(path), "offset": offset, "sha256": hasher.hexdigest()}


@dataclass
class _Prefix:
    """The first bytes of a file: their SHA-256 (to go on with), length and lines."""

    hasher: Any
    length: int
    lines: int

    @classmethod
    def of(cls, path: Path, length: int) -> _Prefix:
        """The file's first ``length`` bytes (fewer if it is shorter)."""
        prefix = cls(hashlib.sha256(), 0, 0)
        with path.open("rb") as handle:
            for block in _blocks(handle, length):
                prefix.hasher.update(block)
                prefix.length += len(block)
                prefix.lines += block.count(b"\n")
        return prefix


def _blocks(handle: Any, limit: int | None) -> Iterator[bytes]:
    left = limit
    while left is None or left > 0:
        block = handle.read(_READ_BYTES if left is None else min(_READ_BYTES, left))
        if not block:
            return
        if left is not None:
            left -= len(block)
        yield block
