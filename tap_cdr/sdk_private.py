"""The one place where tap-cdr touches singer-sdk members that are not public API.

Everything else goes through public hooks. What is here has no public equivalent,
and tests/test_sdk_private.py fails loudly when the installed SDK lacks one of these
members or changed its signature (a renamed member would otherwise fail silently:
the override would just stop running).

- `Stream._increment_stream_state`, called by the SDK for every record, moves the
  bookmark to that record's replication key. tap-cdr's records do not arrive in
  bookmark order (an API lists the newest call first; a CDR log day has no order),
  and the bookmark must move only at a safe point: after a complete window or day,
  or with the pending queue. The streams commit state there themselves, through the
  public `finalize_state_progress_markers`. The SDK's unsorted mode would instead
  keep "progress markers" that are not resumable and warn on every window.
- `Stream._generate_record_messages` builds a record's RECORD messages. The SDK's
  version walks every property of every record against the selection mask; when
  nothing is deselected that walk does nothing, and it costs a measurable share of
  a no-latency sync (benchmarks/RESULTS.md, "record path"). The SDK's path is used
  whenever something is deselected.
"""

from __future__ import annotations

import sys
from datetime import datetime, timezone
from functools import cached_property
from typing import TYPE_CHECKING, Any

from singer_sdk import Stream
from singer_sdk.singerlib import RecordMessage

if TYPE_CHECKING:
    from collections.abc import Generator, Mapping

if sys.version_info >= (3, 12):
    from typing import override
else:
    from typing_extensions import override

# name -> the parameters the SDK's member has (pinned by the test).
PINNED_MEMBERS = {
    "_increment_stream_state": ("self", "latest_record", "context"),
    "_generate_record_messages": ("self", "record"),
    "_stream_version": None,  # an attribute set in Stream.__init__
}


class CommitPointBookmarks(Stream):
    """A stream whose bookmark moves only when the stream commits state."""

    @override
    def _increment_stream_state(
        self,
        latest_record: dict[str, Any],
        *,
        context: Mapping[str, Any] | None = None,
    ) -> None:
        del latest_record, context

    @override
    def _generate_record_messages(
        self, record: dict[str, Any]
    ) -> Generator[RecordMessage, None, None]:
        if not self._all_selected:
            yield from super()._generate_record_messages(record)
            return
        # The SDK's path minus the selection walk; conformance is off for these
        # streams (TYPE_CONFORMANCE_LEVEL NONE: normalize.py conforms every record).
        for stream_map in self.stream_maps:
            mapped = stream_map.transform(record)
            if mapped is not None:
                yield RecordMessage(
                    stream=stream_map.stream_alias,
                    record=mapped,
                    version=self._stream_version,
                    time_extracted=datetime.now(timezone.utc),
                )

    @cached_property
    def _all_selected(self) -> bool:
        return all(self.mask.values())
