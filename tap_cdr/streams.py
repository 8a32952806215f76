"""The CDR streams: requests, pagination, date windows, and state."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Iterator
from datetime import datetime, timedelta, timezone
from functools import cached_property
from http import HTTPStatus
from pathlib import Path
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from singer_sdk import SchemaDirectory, StreamSchema
from singer_sdk.authenticators import BasicAuthenticator
from singer_sdk.exceptions import RetriableAPIError
from singer_sdk.helpers.conform import TypeConformanceLevel
from singer_sdk.helpers.types import Context
from singer_sdk.singerlib import RecordMessage

from tap_cdr import settings
from tap_cdr.client import CdrApiError, CdrApiStream, V3TokenAuthenticator, json_body
from tap_cdr.normalize import V3Normalizer, VccNormalizer
from tap_cdr.pager import WindowPager, WindowRead
from tap_cdr.uuids import WorkItem, month_candidates, parse_item
from tap_cdr.windows import Window, parse_instant, split, sync_range


def _schema_dir() -> Path:
    # Installed wheels carry the schemas inside the package; a source checkout keeps
    # the single copy at the top of the repository.
    packaged = Path(__file__).with_name("schemas")
    return packaged if packaged.is_dir() else Path(__file__).parent.parent / "schemas"


SCHEMAS = SchemaDirectory(_schema_dir())
MIN_RETRY_PAUSE_SECONDS = 1.0
MAX_WINDOW_PASSES = 4
# A window holding more rows than this is divided before it is paged: the ids of a
# window are kept to deduplicate it, so memory stays bounded whatever the dataset.
MAX_WINDOW_ROWS = 50_000


class BookmarkedStream(CdrApiStream):
    """Streams whose records do not arrive in bookmark order commit state themselves.

    The SDK's per-record bookmarking assumes sorted records; here the bookmark moves
    only at safe points (a complete window, a processed uuid), chosen by the stream.
    These overrides, with `_generate_record_messages` below (for speed), are the only
    private SDK members tap-cdr touches, which is why singer-sdk is pinned to ~=0.54.0.
    """

    replication_key = "time_ended"
    is_sorted = False
    # Records are conformed to the schema by normalize.py; the SDK's recursive
    # conformance would redo that work per record.
    TYPE_CONFORMANCE_LEVEL = TypeConformanceLevel.NONE

    def _generate_record_messages(self, record: dict) -> Iterator[RecordMessage]:
        """The SDK's record path, minus the per-record walk over deselected
        properties when none is deselected (the common case)."""
        if not self._all_selected:
            yield from super()._generate_record_messages(record)
            return
        for stream_map in self.stream_maps:
            mapped = stream_map.transform(record)
            if mapped is not None:
                yield RecordMessage(
                    stream=stream_map.stream_alias,
                    record=mapped,
                    version=self._stream_version,
                    time_extracted=utc_now(),
                )

    def generate_child_contexts(self, record: dict, context: Context | None) -> Iterable:
        # No child streams: skip the SDK's per-record copy of the record for them.
        if not self.child_streams:
            return ()
        return super().generate_child_contexts(record, context)

    @cached_property
    def _all_selected(self) -> bool:
        return all(self.mask.values())

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

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._last_page = threading.local()
        self._pager: WindowPager | None = None

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
            timeout=self.http.timeout,
        )

    @cached_property
    def normalize(self) -> V3Normalizer:
        return V3Normalizer(self.v3.zone)

    # -- HTTP ----------------------------------------------------------------------

    def get_new_paginator(self) -> None:
        # Each request is one page: the WindowPager plans the offsets, so that pages
        # can be fetched concurrently.
        return None

    @cached_property
    def requests_session(self) -> requests.Session:
        # The SDK's session, shared by the fetching threads: its pool must hold a
        # connection per worker (requests keeps 10 by default).
        session = super().requests_session
        adapter = HTTPAdapter(pool_maxsize=max(10, self.v3.max_concurrency))
        session.mount("https://", adapter)
        session.mount("http://", adapter)
        return session

    def get_url_params(self, context: Context | None, next_page_token: Any) -> dict:
        # Both are always sent: without them the API returns no data at all.
        offset = (context or {}).get("offset", 0)
        params: dict[str, Any] = {"limit": self.v3.page_size, "offset": offset}
        params.update(self.v3.filters)
        if context:
            params["start_date_ended"] = context["start_date_ended"]
            params["end_date_ended"] = context["end_date_ended"]
        return params

    def validate_response(self, response: requests.Response) -> None:
        super().validate_response(response)
        self.authenticator.mark_proven()

    def handle_unauthorized(self, response: requests.Response) -> None:
        if self.authenticator.refresh_after_401(response.request):
            self.logger.warning("cdr_v3: 401 Unauthorized; fetching a new token and retrying")
            error = RetriableAPIError(self.response_error_message(response), response)
            error.retry_now = True  # a new token needs no wait
            raise error
        super().handle_unauthorized(response)

    @staticmethod
    def envelope_problem(body: Any) -> str | None:
        if not isinstance(body, dict):
            return f"expected a JSON object with `data` and `total`, got {type(body).__name__}"
        if not isinstance(body.get("data"), list):
            return "the envelope has no `data` list"
        total = body.get("total")
        if not isinstance(total, int) or isinstance(total, bool) or total < 0:
            return f"the envelope's `total` is not a count: {total!r}"
        return None

    def parse_response(self, response: requests.Response) -> Iterable[dict]:
        body = json_body(response)
        self._last_page.total = body["total"]
        self._last_page.waited = response.elapsed.total_seconds()
        return body["data"]

    def backoff_handler(self, details: Any) -> None:
        response = getattr(details.get("exception"), "response", None)
        pager = self._pager
        too_many = HTTPStatus.TOO_MANY_REQUESTS
        if response is not None and response.status_code == too_many and pager is not None:
            before, after = pager.lower()
            if after < before:
                self.logger.warning(
                    "cdr_v3: 429 Too Many Requests: lowering concurrency from %d to %d "
                    "for the rest of this window",
                    before,
                    after,
                )
        super().backoff_handler(details)

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
        self._pager = WindowPager(
            self.fetch_page,
            concurrency=self.v3.max_concurrency,
            max_rows=MAX_WINDOW_ROWS,
            on_divide=self._log_division,
            logger=self.logger,
        )
        try:
            for read in self._pager.reads(windows):
                started, records = time.monotonic(), 0
                for record in self.window_records(read):
                    records += 1
                    yield record
                self.commit_state(read.window.end.isoformat())
                elapsed = max(time.monotonic() - started, 1e-6)
                # One line per window: Meltano shows it; hidden at WARNING level.
                self.logger.info(
                    "cdr_v3: window %s complete: %d records in %.1f s (%.0f records/s); "
                    "%d requests and %d retries so far",
                    read.window.label(),
                    records,
                    elapsed,
                    records / elapsed,
                    self.progress.requests,
                    self.progress.retries,
                )
        finally:
            self._pager.close()

    def _log_division(self, window: Window, total: int, pieces: list[Window]) -> None:
        self.logger.info(
            "cdr_v3: window %s holds %d CDRs; reading it as %d windows",
            window.label(),
            total,
            len(pieces),
        )

    def window_records(self, read: WindowRead) -> Iterator[dict]:
        """Every record whose end time lies in the window, once, normalised.

        If ``total`` changes between the pages of a window, or a page comes back
        short before the end, rows moved under the offsets (offset drift) and some may
        have been skipped: the window is read again, sequentially, and the ids already
        emitted are not emitted twice.
        """
        window = read.window
        lo, hi = window.local_bounds(self.v3.zone)
        normalize = self.normalize
        seen: set[str] = set()
        for _ in range(MAX_WINDOW_PASSES):
            for page in self._pager.pages(read):
                for raw in page:
                    ended = raw.get("time_ended")
                    if ended and not lo <= ended < hi:
                        continue  # outside this window: it is read with its own window
                    cdr_id = raw.get("id")
                    if cdr_id in seen:
                        continue
                    if not cdr_id:
                        raise CdrApiError(
                            f"cdr_v3: a record in window {window.label()} has no id: {raw!r}"
                        )
                    seen.add(cdr_id)
                    yield normalize(raw)
            if not read.changed:
                return
            self.logger.warning(
                "cdr_v3: window %s changed while it was paged (total went %s); reading it again",
                window.label(),
                " -> ".join(str(t) for t in dict.fromkeys(read.totals)),
            )
            read = self._pager.reread(window)
        raise CdrApiError(
            f"cdr_v3: window {window.label()} kept changing over {MAX_WINDOW_PASSES} reads; "
            "rows may be missing. Lower window_hours or raise the settle delay (end_date)."
        )

    def fetch_page(self, window: Window, offset: int) -> tuple[list[dict], int, float]:
        """One page through the SDK's request path (auth, retries, metrics): its rows,
        the API's total, and the seconds spent waiting for the response."""
        lo, hi = window.query_bounds(self.v3.zone)
        context = {"start_date_ended": lo, "end_date_ended": hi, "offset": offset}
        records = list(self.request_records(context))
        return records, self._last_page.total, self._last_page.waited


class CdrByUuidStream(BookmarkedStream):
    """VCC Live ``GET /v2/cdr/{year}/{month}/{uuid}``: one CDR per announced call.

    A CDR can be registered minutes after the call ends, so a uuid that is not
    available yet goes to a pending queue in state and is retried, in this run and
    later ones, every ``retry_interval_minutes`` up to ``max_attempts``; then it is
    given up loudly. No announced uuid is ever dropped silently.
    """

    name = "cdr_by_uuid"
    path = "/v2/cdr/{year}/{month}/{uuid}"
    settings_key = "cdr_by_uuid"
    primary_keys = ("uuid",)
    schema = StreamSchema(SCHEMAS)

    @cached_property
    def vcc(self) -> settings.VccSettings:
        return settings.vcc_settings(self.config)

    @property
    def url_base(self) -> str:
        return self.vcc.base_url

    @cached_property
    def authenticator(self) -> BasicAuthenticator:
        return BasicAuthenticator(username=self.vcc.customer, password=self.vcc.api_token)

    @cached_property
    def normalize(self) -> VccNormalizer:
        return VccNormalizer()

    def get_new_paginator(self) -> None:
        return None

    # -- HTTP ----------------------------------------------------------------------

    def validate_response(self, response: requests.Response) -> None:
        if response.status_code == HTTPStatus.NOT_FOUND:
            return  # not registered yet (or not in this month): see parse_response
        if response.status_code in (HTTPStatus.UNAUTHORIZED, HTTPStatus.FORBIDDEN):
            raise CdrApiError(
                self.response_error_message(response)
                + ". Check cdr_by_uuid.customer and cdr_by_uuid.api_token, and that this "
                "machine's IP address is on the customer's API allow-list."
            )
        super().validate_response(response)

    @staticmethod
    def envelope_problem(body: Any) -> str | None:
        if not isinstance(body, dict) or not ("response" in body or "errors" in body):
            return "expected a JSON object with `response` and `errors`"
        if not isinstance(body.get("errors", []), (list, type(None))):
            return "the envelope's `errors` is not a list"
        if not isinstance(body.get("response"), (dict, list, type(None))):
            return "the envelope's `response` is not an object"
        return None

    def parse_response(self, response: requests.Response) -> Iterable[dict]:
        if response.status_code == HTTPStatus.NOT_FOUND:
            return []
        body = json_body(response)
        if body.get("errors"):
            self.logger.info("cdr_by_uuid: %s: %s", response.request.path_url, body["errors"])
            return []
        found = body.get("response")
        # The document calls the body a "CDR array" and shows an object: take both.
        if isinstance(found, list):
            return [item for item in found if isinstance(item, dict) and item]
        return [found] if found else []

    # -- the work list and the pending queue ---------------------------------------

    def get_records(self, context: Context | None) -> Iterator[dict]:
        queue = PendingQueue.from_state(
            self.stream_state.get("pending"), self.vcc.retry_interval, self.vcc.max_attempts
        )
        self._bookmark_value = self.stream_state.get("replication_key_value")
        fetched_this_run: set[str] = set()
        counts = {"fetched": 0, "given_up": 0}
        deadline = utc_now() + self.vcc.wait_for_pending
        work = queue.due(utc_now()) + [
            item for item in self.vcc.items if item.uuid not in queue.entries
        ]
        while True:
            for item in work:
                if item.uuid in fetched_this_run:
                    continue
                record = self.fetch(item)
                if record is not None:
                    fetched_this_run.add(item.uuid)
                    queue.entries.pop(item.uuid, None)
                    counts["fetched"] += 1
                    self._advance_bookmark(record.get("time_ended"))
                    yield record
                elif queue.failed_attempt(item, utc_now()):
                    counts["given_up"] += 1
                    self.logger.error(
                        "cdr_by_uuid: giving up on uuid %s after %d attempts: its CDR "
                        "never became available",
                        item.uuid,
                        self.vcc.max_attempts,
                    )
                self.commit_state(self._bookmark_value, pending=queue.to_state())
            if not queue.entries or utc_now() >= deadline:
                break
            wake = min(queue.next_due(), deadline)
            # Never spin: even with a zero retry interval, rounds are a second apart.
            time.sleep(max(MIN_RETRY_PAUSE_SECONDS, (wake - utc_now()).total_seconds()))
            work = queue.due(utc_now())
        self.commit_state(self._bookmark_value, pending=queue.to_state())
        summary = (
            f"cdr_by_uuid: fetched {counts['fetched']}, pending {len(queue.entries)}, "
            f"given up {counts['given_up']}"
        )
        self.logger.log(logging.WARNING if counts["given_up"] else logging.INFO, summary)

    def fetch(self, item: WorkItem) -> dict | None:
        """The CDR of one uuid, trying each candidate month; None if not available."""
        now = utc_now()
        for year, month in month_candidates(item, now.year, now.month):
            context = {"year": f"{year:04d}", "month": f"{month:02d}", "uuid": item.uuid}
            for raw in self.request_records(context):
                raw.setdefault("uuid", item.uuid)
                return self.normalize(raw)
        return None

    def _advance_bookmark(self, value: str | None) -> None:
        if value and (self._bookmark_value is None or value > self._bookmark_value):
            self._bookmark_value = value


class PendingQueue:
    """uuids announced but not available yet, as kept in state:
    ``{uuid: {"month", "first_seen", "last_attempt", "attempts"}}``."""

    def __init__(self, entries: dict, interval: timedelta, max_attempts: int) -> None:
        self.entries = entries
        self.interval = interval
        self.max_attempts = max_attempts

    @classmethod
    def from_state(cls, raw: Any, interval: timedelta, max_attempts: int) -> PendingQueue:
        if raw is None:
            return cls({}, interval, max_attempts)
        problem = "" if isinstance(raw, dict) else "it is not an object"
        for uuid, entry in raw.items() if not problem else ():
            try:
                parse_instant(entry["last_attempt"])
                parse_instant(entry["first_seen"])
                int(entry["attempts"])
                parse_item(f"{entry['month']}/{uuid}" if entry.get("month") else uuid, "")
            except (KeyError, TypeError, ValueError, AttributeError):
                problem = f"its entry for {uuid!r} is malformed: {entry!r}"
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

    def to_state(self) -> dict:
        return {uuid: dict(entry) for uuid, entry in self.entries.items()}


def utc_now() -> datetime:
    return datetime.now(timezone.utc)
