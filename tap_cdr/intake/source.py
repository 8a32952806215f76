"""How the tap reads the intake store: `IntakeSource`, a uuid source of cdr_by_uuid
(``intake_store``), read incrementally like those of `tap_cdr.worklist`.

The store of `tap-cdr-intake` is read by id from the position in state. Ids are taken
when a row is inserted but seen when it is committed, so with two receivers a smaller
id can appear after a larger one was read: the ids skipped over are kept as gaps and
asked for again until ``GAP_HORIZON`` after they were first seen, far longer than any
transaction, then forgotten (ids of rolled-back inserts). A call is read no sooner
than ``first_attempt_delay`` after it was received; the read stops at the first call
that is younger.

The stream imports this module only when ``intake_store`` is set: SQLAlchemy costs
the other runs about 0.15 s and 15 MB at start.
"""

from __future__ import annotations

import contextlib
from datetime import timedelta
from itertools import takewhile
from typing import TYPE_CHECKING, Any

from sqlalchemy.exc import SQLAlchemyError

from tap_cdr.intake.store import (
    Announcement,
    StoreError,
    announced_after,
    announced_among,
    count_after,
    problem_of,
    shown,
)
from tap_cdr.uuids import UuidListError, WorkItem, parse_item
from tap_cdr.windows import parse_instant
from tap_cdr.worklist import Chunk, WorkListError

if TYPE_CHECKING:
    from collections.abc import Iterator
    from datetime import datetime

    from sqlalchemy.engine import Connection, Engine

ROWS_PER_CHUNK = 1000
GAP_HORIZON = timedelta(minutes=10)
# Gaps beyond these are not kept (the oldest go first, with a warning): a bound on
# state that a store taking ids at any sane rate never reaches within the horizon.
MAX_GAPS = 10_000


class IntakeSource:
    """The intake store, read from the position saved in state (see the module doc):
    ``{"store_id", "last_id", "gaps": {id: first_seen}}``."""

    def __init__(
        self,
        engine: Engine,
        store_id: str,
        saved: Any,
        delay: timedelta,
        now: datetime,
    ) -> None:
        self.engine = engine
        self.store_id = store_id
        self.delay = delay
        self.now = now
        self.reread_reason: str | None = None
        self.waiting = 0  # calls received less than `delay` ago: read by a later run
        self.gaps_dropped = 0
        self.gap_horizon = GAP_HORIZON
        self.read = 0  # calls yielded
        self.last_id, self.gaps = self._resume(saved)
        # The position in state (None: none yet, or another store's): a run that reads
        # nothing new still saves a changed one.
        self.saved = self.position() if saved is not None and not self.reread_reason else None

    def _resume(self, saved: Any) -> tuple[int, dict[int, str]]:
        if saved is None:
            return 0, {}
        try:
            last_id = saved["last_id"]
            gaps = {
                int(gap): parse_instant(seen).isoformat() for gap, seen in saved["gaps"].items()
            }
            if not isinstance(last_id, int) or not isinstance(saved["store_id"], str):
                raise TypeError  # noqa: TRY301
        except (KeyError, TypeError, ValueError, AttributeError):
            raise WorkListError(
                f"cdr_by_uuid: the state's intake position is malformed: {saved!r}. Remove "
                "bookmarks.cdr_by_uuid.intake to read the intake store from its start."
            ) from None
        if saved["store_id"] != self.store_id:
            self.reread_reason = "it is not the store the position in state was read from"
            return 0, {}
        return last_id, gaps

    def chunks(self) -> Iterator[Chunk]:
        """The calls committed since the saved position, in id order by chunk: first
        the gaps that were committed since, then the new ids. Each chunk's position
        covers exactly the calls yielded so far (a kill loses none), and the store is
        read one chunk at a time, each in a short transaction of its own."""
        watched = sorted(self.gaps)
        for at in range(0, len(watched), ROWS_PER_CHUNK):
            with self._reading() as conn:
                calls = announced_among(conn, watched[at : at + ROWS_PER_CHUNK], self.delay)
            yield from self._chunk([call for call in calls if self._gap_found(call)])
            self._forget(watched[at : at + ROWS_PER_CHUNK])
        while True:
            with self._reading() as conn:
                calls = announced_after(conn, self.last_id, ROWS_PER_CHUNK, self.delay)
            ready = list(takewhile(lambda call: call.due, calls))
            for call in ready:
                for gap in range(self.last_id + 1, call.id):
                    self.gaps[gap] = self.now.isoformat()
                self.last_id = call.id
            yield from self._chunk(ready)
            if len(ready) < ROWS_PER_CHUNK:
                break
        with self._reading() as conn:
            self.waiting += count_after(conn, self.last_id)
        if self.position() != self.saved:
            yield Chunk([], self.position())  # gaps forgotten, or seen afresh

    @contextlib.contextmanager
    def _reading(self) -> Iterator[Connection]:
        """A connection for one read; `StoreError`, one line, if the store fails."""
        try:
            with self.engine.connect() as conn:
                yield conn
        except SQLAlchemyError as exc:
            url = self.engine.url.render_as_string(hide_password=False)
            raise StoreError(
                f"the intake store {shown(url)} cannot be read ({problem_of(exc, url)})"
            ) from None

    def _gap_found(self, call: Announcement) -> bool:
        if not call.due:
            # Committed but not due: kept as a gap, seen afresh, so that it is read
            # when due rather than forgotten.
            self.gaps[call.id] = self.now.isoformat()
            self.waiting += 1
            return False
        self.gaps.pop(call.id, None)
        return True

    def _forget(self, asked: list[int]) -> None:
        """Drop the gaps just asked for that were first seen before the horizon: no
        transaction lasts that long, so they are ids of rolled-back inserts. (Only once
        asked for: a tap that did not run for a while still reads a late commit.)"""
        horizon = (self.now - GAP_HORIZON).isoformat()
        for gap in asked:
            if gap in self.gaps and self.gaps[gap] <= horizon:
                del self.gaps[gap]

    def _chunk(self, calls: list[Announcement]) -> Iterator[Chunk]:
        if calls:
            self.read += len(calls)
            position = self.position()
            self.saved = position
            yield Chunk([_intake_item(call) for call in calls], position)

    def _cap(self) -> None:
        if len(self.gaps) > MAX_GAPS:
            drop = sorted(self.gaps)[: len(self.gaps) - MAX_GAPS]
            self.gaps_dropped += len(drop)
            for gap in drop:
                del self.gaps[gap]

    def position(self) -> dict[str, Any]:
        self._cap()
        return {
            "store_id": self.store_id,
            "last_id": self.last_id,
            "gaps": {str(gap): seen for gap, seen in sorted(self.gaps.items())},
        }


def _intake_item(call: Announcement) -> WorkItem:
    try:
        return parse_item(f"{call.month}/{call.uuid}", "intake")
    except UuidListError:
        # No month in the event (or an implausible one): the call started around its
        # receipt, so that month and its neighbours are tried.
        return WorkItem(call.uuid, call.received_at.year, call.received_at.month)
