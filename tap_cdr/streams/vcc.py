"""VCC Live: ``GET /v2/cdr/{year}/{month}/{uuid}``, one CDR per announced call."""

from __future__ import annotations

import logging
import sys
import time
from datetime import datetime, timezone
from functools import cached_property
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

from singer_sdk import StreamSchema

from tap_cdr import settings
from tap_cdr.auth import HTTPBasicAuth
from tap_cdr.client import CdrApiError, json_body
from tap_cdr.normalize import VccNormalizer
from tap_cdr.streams.base import SCHEMAS, BookmarkedStream
from tap_cdr.uuids import WorkItem, dedupe, month_candidates, parse_lines
from tap_cdr.worklist import PendingQueue

if TYPE_CHECKING:
    from collections.abc import Iterator

    import requests
    from singer_sdk.helpers.types import Context

if sys.version_info >= (3, 12):
    from typing import override
else:
    from typing_extensions import override

MIN_RETRY_PAUSE_SECONDS = 1.0


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


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

    @override
    @property
    def url_base(self) -> str:
        return self.vcc.base_url

    @override
    @cached_property
    def authenticator(self) -> HTTPBasicAuth:
        return HTTPBasicAuth(self.vcc.customer, self.vcc.api_token)

    @cached_property
    def normalize(self) -> VccNormalizer:
        return VccNormalizer()

    # -- HTTP ----------------------------------------------------------------------

    @override
    def validate_response(self, response: requests.Response) -> None:
        if response.status_code == HTTPStatus.NOT_FOUND:
            return  # not registered yet (or not in this month): see parse_page
        if response.status_code in (HTTPStatus.UNAUTHORIZED, HTTPStatus.FORBIDDEN):
            raise CdrApiError(
                self.response_error_message(response)
                + ". Check cdr_by_uuid.customer and cdr_by_uuid.api_token, and that this "
                "machine's IP address is on the customer's API allow-list."
            )
        super().validate_response(response)

    @override
    @staticmethod
    def envelope_problem(body: Any) -> str | None:
        if not isinstance(body, dict) or not ("response" in body or "errors" in body):
            return "expected a JSON object with `response` and `errors`"
        if not isinstance(body.get("errors", []), (list, type(None))):
            return "the envelope's `errors` is not a list"
        if not isinstance(body.get("response"), (dict, list, type(None))):
            return "the envelope's `response` is not an object"
        return None

    @override
    def parse_page(self, response: requests.Response) -> tuple[list[dict[str, Any]], int | None]:
        if response.status_code == HTTPStatus.NOT_FOUND:
            return [], None
        body = json_body(response)
        if body.get("errors"):
            self.logger.info("cdr_by_uuid: %s: %s", response.request.path_url, body["errors"])
            return [], None
        found = body.get("response")
        # The document calls the body a "CDR array" and shows an object: take both.
        if isinstance(found, list):
            return [item for item in found if isinstance(item, dict) and item], None
        return ([found] if found else []), None

    # -- the work list and the pending queue ---------------------------------------

    def configured_items(self) -> list[WorkItem]:
        items = list(self.vcc.items)
        if self.vcc.uuids_file:
            text = self.vcc.uuids_file.read_text(encoding="utf-8")
            items += parse_lines(text.splitlines(), f"uuids_file {self.vcc.uuids_file.name}")
        return dedupe(items)

    @override
    def get_records(self, context: Context | None) -> Iterator[dict[str, Any]]:
        queue = PendingQueue.from_state(
            self.stream_state.get("pending"), self.vcc.retry_interval, self.vcc.max_attempts
        )
        self._bookmark_value = self.stream_state.get("replication_key_value")
        fetched_this_run: set[str] = set()
        counts = {"fetched": 0, "given_up": 0}
        deadline = utc_now() + self.vcc.wait_for_pending
        work = queue.due(utc_now()) + [
            item for item in self.configured_items() if item.uuid not in queue.entries
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

    def fetch(self, item: WorkItem) -> dict[str, Any] | None:
        """The CDR of one uuid, trying each candidate month; None if not available."""
        now = utc_now()
        for year, month in month_candidates(item, now.year, now.month):
            context = {"year": f"{year:04d}", "month": f"{month:02d}", "uuid": item.uuid}
            for raw in self.fetch_page(context).rows:
                raw.setdefault("uuid", item.uuid)
                return self.normalize(raw)
        return None

    def _advance_bookmark(self, value: str | None) -> None:
        if value and (self._bookmark_value is None or value > self._bookmark_value):
            self._bookmark_value = value
