"""The CDR streams: requests, pagination, date windows, and state."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import datetime, timezone
from functools import cached_property
from pathlib import Path
from typing import Any

import requests
from singer_sdk import SchemaDirectory, StreamSchema
from singer_sdk.exceptions import RetriableAPIError
from singer_sdk.helpers.types import Context
from singer_sdk.pagination import OffsetPaginator

from tap_cdr import settings
from tap_cdr.client import CdrApiError, CdrApiStream, V3TokenAuthenticator, json_body
from tap_cdr.normalize import V3Normalizer
from tap_cdr.windows import Window, parse_instant, split, sync_range


def _schema_dir() -> Path:
    # Installed wheels carry the schemas inside the package; a source checkout keeps
    # the single copy at the top of the repository.
    packaged = Path(__file__).with_name("schemas")
    return packaged if packaged.is_dir() else Path(__file__).parent.parent / "schemas"


SCHEMAS = SchemaDirectory(_schema_dir())


class V3Paginator(OffsetPaginator):
    """limit/offset paging that trusts ``total``, not the echoed ``offset``.

    The next offset advances by the rows actually received, so a server that caps
    ``limit`` below the page size asked for still yields every row.
    """

    def has_more(self, response: requests.Response) -> bool:
        body = json_body(response)
        received = len(body["data"])
        return received > 0 and self.current_value + received < body["total"]

    def get_next(self, response: requests.Response) -> int | None:
        return self.current_value + len(json_body(response)["data"])


class BookmarkedStream(CdrApiStream):
    """Streams whose records do not arrive in bookmark order commit state themselves.

    The SDK's per-record bookmarking assumes sorted records; here the bookmark moves
    only at safe points (a complete window, a processed uuid), chosen by the stream.
    These two overrides are the only private SDK members tap-cdr touches, which is
    why singer-sdk is pinned to ~=0.54.0.
    """

    replication_key = "time_ended"
    is_sorted = False

    def _increment_stream_state(
        self, latest_record: dict, *, context: Context | None = None
    ) -> None:
        """Bookmarks advance at commit points, never per record."""

    def commit_state(self, bookmark: str | None, **extra: Any) -> None:
        """Record the bookmark (and stream-specific keys), then emit STATE."""
        state = self.stream_state
        if bookmark is not None:
            state["replication_key"] = self.replication_key
            state["replication_key_value"] = bookmark
        state.update(extra)
        self.state_manager.is_flushed = False
        self._write_state_message()


class CdrV3Stream(BookmarkedStream):
    """TEL4VN v3 ``GET /v3/cdr``, read in windows of call end time, oldest first.

    Inside a window the API lists the newest call first, so the bookmark moves only
    when a window is complete: a STATE message after each window lets a killed
    backfill resume from the last complete one.
    """

    name = "cdr_v3"
    path = "/v3/cdr"
    settings_key = "cdr_v3"
    primary_keys = ("id",)
    schema = StreamSchema(SCHEMAS)

    @cached_property
    def v3(self) -> settings.V3Settings:
        return settings.v3_settings(self.config)

    @property
    def url_base(self) -> str:
        return self.v3.base_url

    @cached_property
    def authenticator(self) -> V3TokenAuthenticator:
        return V3TokenAuthenticator(
            base_url=self.v3.base_url,
            token=self.v3.token,
            api_key=self.v3.api_key,
            timeout=self.timeout,
        )

    @cached_property
    def normalize(self) -> V3Normalizer:
        return V3Normalizer(self.v3.zone)

    # -- HTTP ----------------------------------------------------------------------

    def get_new_paginator(self) -> V3Paginator:
        return V3Paginator(start_value=0, page_size=self.v3.page_size)

    def get_url_params(self, context: Context | None, next_page_token: int | None) -> dict:
        # Both are always sent: without them the API returns no data at all.
        params: dict[str, Any] = {
            "limit": self.v3.page_size,
            "offset": next_page_token or 0,
        }
        params.update(self.v3.filters)
        if context:
            params["start_date_ended"] = context["start_date_ended"]
            params["end_date_ended"] = context["end_date_ended"]
        return params

    def validate_response(self, response: requests.Response) -> None:
        super().validate_response(response)
        self.authenticator.mark_proven()

    def handle_unauthorized(self, response: requests.Response) -> None:
        if self.authenticator.refresh_after_401():
            self.logger.warning("cdr_v3: 401 Unauthorized; fetching a new token and retrying")
            raise RetriableAPIError(self.response_error_message(response), response)
        super().handle_unauthorized(response)

    def envelope_problem(self, body: Any) -> str | None:
        if not isinstance(body, dict):
            return f"expected a JSON object with `data` and `total`, got {type(body).__name__}"
        if not isinstance(body.get("data"), list):
            return "the envelope has no `data` list"
        total = body.get("total")
        if not isinstance(total, int) or isinstance(total, bool) or total < 0:
            return f"the envelope's `total` is not a count: {total!r}"
        return None

    def parse_response(self, response: requests.Response) -> Iterable[dict]:
        return json_body(response)["data"]

    # -- windows and state ---------------------------------------------------------

    def windows(self) -> list[Window]:
        sync = settings.sync_settings(self.config)
        now = datetime.now(timezone.utc).replace(microsecond=0)
        end = sync.end_date or now - settings.SETTLE_DELAY
        start, end = sync_range(
            bookmark=self._bookmark(),
            start_date=sync.start_date,
            end_date=end,
            lookback=sync.lookback,
            default_history=settings.DEFAULT_HISTORY,
        )
        return split(start, end, self.v3.window_hours)

    def _bookmark(self) -> datetime | None:
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

    def compare_start_date(self, value: str, start_date_value: str) -> str:
        # The SDK compares the bookmark with start_date before any record is read;
        # a corrupt bookmark must fail there with a message that says so.
        self._parse_bookmark(value)
        return super().compare_start_date(value, start_date_value)

    def get_records(self, context: Context | None) -> Iterator[dict]:
        windows = self.windows()
        if not windows:
            self.logger.info("cdr_v3: nothing to read: the bookmark is past end_date")
        for window in windows:
            yield from self.window_records(window)
            self.commit_state(window.end.isoformat())

    def window_records(self, window: Window) -> Iterator[dict]:
        """Every record whose end time lies in the window, once, normalised."""
        lo, hi = window.local_bounds(self.v3.zone)
        query_lo, query_hi = window.query_bounds(self.v3.zone)
        context = {"start_date_ended": query_lo, "end_date_ended": query_hi}
        seen: set[str] = set()
        for raw in self.request_records(context):
            ended = raw.get("time_ended")
            if ended and not lo <= ended < hi:
                continue  # outside this window: it is read with its own window
            cdr_id = raw.get("id")
            if not cdr_id:
                raise CdrApiError(f"cdr_v3: a record in window {window.label()} has no id: {raw!r}")
            if cdr_id in seen:
                continue
            seen.add(cdr_id)
            yield self.normalize(raw)
