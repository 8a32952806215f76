"""What both CDR streams share: their schemas, and state committed at safe points."""

from __future__ import annotations

import sys
from datetime import datetime, timezone
from functools import cached_property
from http import HTTPStatus
from pathlib import Path
from typing import TYPE_CHECKING, Any

from singer_sdk import SchemaDirectory, Tap
from singer_sdk.helpers.conform import TypeConformanceLevel

from tap_cdr import settings
from tap_cdr.client import CdrApiError, CdrApiStream
from tap_cdr.pager import Prefetch
from tap_cdr.sdk_private import CommitPointBookmarks
from tap_cdr.windows import parse_instant, sync_range

if sys.version_info >= (3, 12):
    from typing import override
else:
    from typing_extensions import override

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from singer_sdk.helpers.types import Context


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
    #: What a 429 lowers the concurrency for (the pager resets it at the next one).
    paging_unit = "unit"
    is_sorted = False
    # normalize.py conforms every record to the schema; the SDK's recursive
    # conformance would redo that work per record.
    TYPE_CONFORMANCE_LEVEL = TypeConformanceLevel.NONE

    def __init__(self, tap: Tap, *args: Any, **kwargs: Any) -> None:
        super().__init__(tap, *args, **kwargs)
        # The tap's writer buffers RECORD lines until the next message; the SDK
        # writes no STATE when the state did not change, so a commit flushes them.
        self._flush_records: Callable[[], None] = getattr(tap.message_writer, "flush", lambda: None)

    @override
    def generate_child_contexts(
        self, record: dict[str, Any], context: Context | None
    ) -> Iterable[Context | None]:
        # No child streams: skip the SDK's per-record copy of the context for them.
        if not self.child_streams:
            return ()
        return super().generate_child_contexts(record, context)

    @cached_property
    def prefetch(self) -> Prefetch:
        return Prefetch(self.max_concurrency, self.logger, self.name)

    @override
    def retry_note(self, details: Any) -> str:
        response = getattr(details.get("exception"), "response", None)
        if response is not None and response.status_code == HTTPStatus.TOO_MANY_REQUESTS:
            before, after = self.prefetch.lower()
            if after < before:
                return (
                    f"; concurrency lowered from {before} to {after} for the rest of this "
                    f"{self.paging_unit}"
                )
        return ""

    def sync_range(self) -> tuple[datetime, datetime]:
        """The call end times this run reads: [bookmark - lookback, end_date)."""
        sync = settings.sync_settings(self.config)
        now = datetime.now(timezone.utc).replace(microsecond=0)
        settled = now - settings.SETTLE_DELAY
        # An end_date in the future is read up to what has settled: a bookmark past
        # the calls that exist would make later runs skip the calls still to come.
        return sync_range(
            bookmark=self.bookmark(),
            start_date=sync.start_date,
            end_date=min(sync.end_date or settled, settled),
            lookback=sync.lookback,
            default_history=settings.DEFAULT_HISTORY,
        )

    def bookmark(self) -> datetime | None:
        state = self.stream_state
        value = state.get("replication_key_value")
        if value is None or state.get("replication_key") not in (None, self.replication_key):
            return None
        return self._parse_bookmark(value)

    def _parse_bookmark(self, value: Any) -> datetime:
        try:
            return parse_instant(value)
        except (TypeError, ValueError, AttributeError):
            raise CdrApiError(
                f"{self.name}: the state's bookmark {value!r} is not an RFC 3339 timestamp. "
                f"Fix or remove bookmarks.{self.name} in the state to continue."
            ) from None

    @override
    def compare_start_date(self, value: str, start_date_value: str) -> str:
        # The SDK compares the bookmark with start_date before any record is read;
        # a corrupt bookmark must fail there with a message that says so.
        self._parse_bookmark(value)
        return super().compare_start_date(value, start_date_value)

    def commit_state(self, bookmark: str | None, **extra: Any) -> None:
        """Set the bookmark (and stream-specific keys), then emit STATE."""
        state = self.stream_state
        if bookmark is not None:
            state["replication_key"] = self.replication_key
            state["replication_key_value"] = bookmark
        state.update(extra)
        if self.get_batch_config(self.config):
            # BATCH messages: the records of this commit are in a batch file that is not
            # written yet. The SDK writes STATE after each BATCH message, from this state.
            return
        # Public SDK path: drops the run's starting marker and writes STATE if the
        # state changed since the last one.
        self.finalize_state_progress_markers(state)
        self._flush_records()
