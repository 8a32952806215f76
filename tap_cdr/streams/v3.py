"""TEL4VN v3 ``GET /v3/cdr``: limit/offset pages, read in date windows of call end time."""

from __future__ import annotations

import sys
import time
from functools import cached_property
from typing import TYPE_CHECKING, Any

from singer_sdk import StreamSchema
from singer_sdk.exceptions import RetriableAPIError

from tap_cdr import settings
from tap_cdr.auth import V3TokenAuthenticator
from tap_cdr.client import CdrApiError, json_body
from tap_cdr.normalize import V3Normalizer
from tap_cdr.pager import Page, Pager, Plan, Read, plan_window
from tap_cdr.streams.base import SCHEMAS, BookmarkedStream
from tap_cdr.windows import Window, split
from tap_cdr.wording import counted

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    import requests
    from singer_sdk.helpers.types import Context

if sys.version_info >= (3, 12):
    from typing import override
else:
    from typing_extensions import override

MAX_WINDOW_PASSES = 4
# A window holding more rows than this is divided before it is paged: the ids of a
# window are kept to deduplicate it, so memory stays bounded whatever the dataset.
MAX_WINDOW_ROWS = 50_000


class CdrV3Stream(BookmarkedStream):
    """TEL4VN v3 ``GET /v3/cdr``, read in windows of call end time, oldest first.

    Inside a window the API lists the newest call first, so the bookmark moves only
    when a window is complete: a STATE message after each window lets a killed
    backfill resume from the last complete one.
    """

    name = "cdr_v3"
    route = "/v3/cdr"
    settings_key = "cdr_v3"
    paging_unit = "window"
    primary_keys = ("id",)
    schema = StreamSchema(SCHEMAS)

    @cached_property
    def pager(self) -> Pager[Window]:
        return Pager(self.fetch_window_page, self.plan, self.prefetch, self._log_division)

    @cached_property
    def v3(self) -> settings.V3Settings:
        return settings.v3_settings(self.config)

    @override
    @property
    def max_concurrency(self) -> int:
        return self.v3.max_concurrency

    @override
    @property
    def url_base(self) -> str:
        return self.v3.base_url

    @override
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

    @override
    def get_url_params(self, context: Context | None, next_page_token: Any) -> dict[str, Any]:
        # Both are always sent: without them the API returns no data at all.
        context = context or {}
        params: dict[str, Any] = {"limit": self.v3.page_size, "offset": context.get("offset", 0)}
        params.update(self.v3.filters)
        if "start_date_ended" in context:
            params["start_date_ended"] = context["start_date_ended"]
            params["end_date_ended"] = context["end_date_ended"]
        return params

    @override
    def validate_response(self, response: requests.Response) -> None:
        super().validate_response(response)
        self.authenticator.mark_proven()

    @override
    def handle_unauthorized(self, response: requests.Response) -> None:
        if self.authenticator.refresh_after_401(response.request):
            error = RetriableAPIError(
                self.response_error_message(response, "the token expired: fetching a new one"),
                response,
            )
            error.retry_now = True  # type: ignore[attr-defined] # a new token needs no wait
            raise error
        fix = (
            "a token fetched with `cdr_v3.api_key` was refused: check that the key may read CDRs"
            if self.v3.api_key
            else "`cdr_v3.token` was refused: set a valid Bearer token, or `cdr_v3.api_key` "
            "to have tokens fetched and renewed"
        )
        raise CdrApiError(f"{self.response_error_message(response)}. {fix}")

    @override
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

    @override
    def parse_page(self, response: requests.Response) -> tuple[list[dict[str, Any]], int | None]:
        body = json_body(response)
        return body["data"], body["total"]

    # -- windows and state ---------------------------------------------------------

    def windows(self) -> list[Window]:
        start, end = self.sync_range()
        return split(start, end, self.v3.window_hours)

    @override
    def get_records(self, context: Context | None) -> Iterator[dict[str, Any]]:
        windows = self.windows()
        if not windows:
            self.logger.info(
                "cdr_v3: nothing to read: the range starts after its end (%s, 5 minutes "
                "before the run, unless end_date is earlier)",
                self.sync_range()[1].isoformat(),
            )
        emitted = 0
        for read in self.pager.reads(windows):
            started, records = time.monotonic(), 0
            for record in self.window_records(read):
                records += 1
                yield record
            self.commit_state(read.unit.end.isoformat())
            emitted += records
            elapsed = max(time.monotonic() - started, 1e-6)
            # One line per window: Meltano shows it; hidden at WARNING level.
            self.logger.info(
                "cdr_v3: window %s complete: %s from %s in %.1f s (%.0f records/s)",
                read.unit.label(),
                counted(records, "record"),
                counted(len(read.totals), "page"),
                elapsed,
                records / elapsed,
            )
        summary = f"emitted {counted(emitted, 'record')} from {counted(len(windows), 'window')}"
        self.logger.info("cdr_v3: %s", summary)

    @staticmethod
    def plan(window: Window, first: Page) -> Plan[Window]:
        return plan_window(window, first, MAX_WINDOW_ROWS, Window.divide)

    def _log_division(self, window: Window, total: int, pieces: Sequence[Window]) -> None:
        self.logger.info(
            "cdr_v3: window %s holds %d CDRs; reading it as %d windows",
            window.label(),
            total,
            len(pieces),
        )

    def window_records(self, read: Read[Window]) -> Iterator[dict[str, Any]]:
        """Every record whose end time lies in the window, once, normalised.

        If ``total`` changes between the pages of a window, or a page comes back
        short before the end, rows moved under the offsets (offset drift) and some may
        have been skipped: the window is read again, sequentially, and the ids already
        emitted are not emitted twice.
        """
        window = read.unit
        lo, hi = window.local_bounds(self.v3.zone)
        normalize = self.normalize
        seen: set[str] = set()
        for _ in range(MAX_WINDOW_PASSES):
            for page in self.pager.pages(read):
                for raw in page:
                    ended = raw.get("time_ended")
                    if ended and not lo <= ended < hi:
                        continue  # outside this window: it is read with its own window
                    cdr_id = raw.get("id")
                    if cdr_id in seen:
                        continue
                    if not cdr_id:
                        # Its keys only: the values hold personal data and signed URLs.
                        raise CdrApiError(
                            f"cdr_v3: a record in window {window.label()} has no id (its "
                            f"keys: {', '.join(sorted(map(str, raw))[:40])})"
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
            read = self.pager.reread(window)
        raise CdrApiError(
            f"cdr_v3: window {window.label()} kept changing over {MAX_WINDOW_PASSES} reads; "
            "rows may be missing. Lower window_hours or raise the settle delay (end_date)."
        )

    def fetch_window_page(self, window: Window, offset: int) -> Page:
        lo, hi = window.query_bounds(self.v3.zone)
        return self.fetch_page({"start_date_ended": lo, "end_date_ended": hi, "offset": offset})
