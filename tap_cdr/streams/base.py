"""What both CDR streams share: their schemas, and state committed at safe points."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from singer_sdk import SchemaDirectory, Tap
from singer_sdk.helpers.conform import TypeConformanceLevel

from tap_cdr.client import CdrApiStream
from tap_cdr.sdk_private import CommitPointBookmarks

if TYPE_CHECKING:
    from collections.abc import Callable


def _schema_dir() -> Path:
    # Installed wheels carry the schemas inside the package; a source checkout keeps
    # the single copy at the top of the repository.
    package = Path(__file__).parent.parent
    packaged = package / "schemas"
    return packaged if packaged.is_dir() else package.parent / "schemas"


SCHEMAS = SchemaDirectory(_schema_dir())


class BookmarkedStream(CommitPointBookmarks, CdrApiStream):
    """A stream whose bookmark moves at commit points chosen by the stream: a
    complete window or day, a processed batch of uuids. A STATE message follows
    every commit, so a killed sync resumes from the last one."""

    replication_key = "time_ended"
    is_sorted = False
    # normalize.py conforms every record to the schema; the SDK's recursive
    # conformance would redo that work per record.
    TYPE_CONFORMANCE_LEVEL = TypeConformanceLevel.NONE

    def __init__(self, tap: Tap, *args: Any, **kwargs: Any) -> None:
        super().__init__(tap, *args, **kwargs)
        # The tap's writer buffers RECORD lines until the next message; the SDK
        # writes no STATE when the state did not change, so a commit flushes them.
        self._flush_records: Callable[[], None] = getattr(tap.message_writer, "flush", lambda: None)

    def commit_state(self, bookmark: str | None, **extra: Any) -> None:
        """Set the bookmark (and stream-specific keys), then emit STATE."""
        state = self.stream_state
        if bookmark is not None:
            state["replication_key"] = self.replication_key
            state["replication_key_value"] = bookmark
        state.update(extra)
        # Public SDK path: drops the run's starting marker and writes STATE if the
        # state changed since the last one.
        self.finalize_state_progress_markers(state)
        self._flush_records()
