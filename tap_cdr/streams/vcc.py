"""VCC Live: every call of the CDR log, and the CDRs of announced uuids.

Two sources feed the one ``cdr_by_uuid`` stream (key ``uuid``):

- The sweep (``list_cdrs``, on by default): ``GET /v2/cdrs/{year}/{month}/{day}`` for
  each date that can list a call which ended in the sync range, paged with ``num``
  and ``start``. Every call of the range is emitted once, and the bookmark moves
  after each complete date.
- Lookups: ``GET /v2/cdr/{year}/{month}/{uuid}`` for the uuids announced in the
  ``uuids`` setting, the ``uuids_file``, the ``intake_store`` (of the webhook receiver)
  and the pending queue, minus those the sweep emitted in this run. A CDR that is not
  registered yet waits in the pending queue.
"""

from __future__ import annotations

import itertools
import logging
import sqlite3
import sys
import time
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from functools import cached_property
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

from singer_sdk import StreamSchema

from tap_cdr import settings
from tap_cdr.auth import HTTPBasicAuth
from tap_cdr.client import CdrApiError, json_body
from tap_cdr.normalize import VccNormalizer
from tap_cdr.pager import Page, Pager, Read, ordered, plan_listing
from tap_cdr.streams.base import SCHEMAS, BookmarkedStream
from tap_cdr.uuids import WorkItem, month_candidates
from tap_cdr.windows import listed_through, listing_days
from tap_cdr.wording import counted
from tap_cdr.worklist import Chunk, PendingQueue, SettingItems, UuidFile, WorkListError

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

    import requests
    from singer_sdk.helpers.types import Context

    from tap_cdr.intake.source import IntakeSource

if sys.version_info >= (3, 12):
    from typing import override
else:
    from typing_extensions import override

MIN_RETRY_PAUSE_SECONDS = 1.0
MAX_DAY_PASSES = 4
# Lookups between two STATE messages: a kill re-requests at most these of the pending
# queue and the uuids setting, whose state changes with every lookup. A chunk of the
# uuids file or the intake store commits at its end (its position moves per chunk).
LOOKUPS_PER_COMMIT = 100
LISTING_PATH = "/v2/cdrs/{year}/{month}/{day}"
LOOKUP_PATH = "/v2/cdr/{year}/{month}/{uuid}"
# A lookup that only carries a file position (its line was a comment, or skipped).
NOTHING = WorkItem("")


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


class SweptUuids:
    """The uuids the sweep emitted in this run, in a temporary SQLite file (deleted when
    closed): with an intake store read after the sweep, every one must be remembered,
    and a million in a set cost the process 78 MB more (as 128-bit ints; text, more)."""

    def __init__(self) -> None:
        self.db = sqlite3.connect("")  # "": a private temporary file
        self.db.execute("create table swept (uuid text primary key) without rowid")

    def add(self, uuid: str) -> None:
        self.db.execute("insert or ignore into swept values (?)", (uuid,))

    def __contains__(self, uuid: str) -> bool:
        found = self.db.execute("select 1 from swept where uuid = ?", (uuid,))
        return found.fetchone() is not None

    def close(self) -> None:
        self.db.close()


@dataclass(frozen=True)
class ListingDay:
    """One CDR log request series: a date, for one project or for all."""

    date: date
    project: int | None = None

    def label(self) -> str:
        return f"{self.date}" + (f" (project {self.project})" if self.project is not None else "")


@dataclass(frozen=True)
class Lookup:
    """A uuid to look up, where it was announced ("pending", "setting", "uuids_file"
    or "intake"), and the source's position to save once it is done (on the last
    lookup of a chunk)."""

    item: WorkItem
    source: str = "pending"
    position: dict[str, Any] | None = None


class CdrByUuidStream(BookmarkedStream):
    """VCC Live CDRs: the CDR log of the sync range, and announced uuids (module doc)."""

    name = "cdr_by_uuid"
    route = LOOKUP_PATH
    settings_key = "cdr_by_uuid"
    paging_unit = "date, or batch of lookups"
    primary_keys = ("uuid",)
    schema = StreamSchema(SCHEMAS)

    # What a run tracks, committed with the bookmark (set by get_records).
    queue: PendingQueue
    setting: SettingItems
    positions: dict[str, Any]  # where the uuids file and the intake store were read to
    bookmark_value: str | None
    counts: dict[str, int]
    swept: SweptUuids  # the uuids the sweep emitted in this run that a lookup could want

    @cached_property
    def vcc(self) -> settings.VccSettings:
        return settings.vcc_settings(self.config)

    @override
    @property
    def max_concurrency(self) -> int:
        return self.vcc.max_concurrency

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
    def route_for(self, context: Context | None) -> str:
        return LISTING_PATH if context and "day" in context else LOOKUP_PATH

    @override
    def get_url(self, context: Context | None) -> str:
        if context and "day" in context:
            day = context["day"]
            path = LISTING_PATH.format(year=f"{day:%Y}", month=f"{day:%m}", day=f"{day:%d}")
            return self.url_base + path
        return super().get_url(context)

    @override
    def get_url_params(self, context: Context | None, next_page_token: Any) -> dict[str, Any]:
        if not context or "day" not in context:
            return {}
        # `num` is always sent: without it the API returns at most 10 rows.
        params: dict[str, Any] = {"num": self.vcc.page_size, "start": context["offset"]}
        if context.get("projectid") is not None:
            params["projectid"] = context["projectid"]
        return params

    @override
    def validate_response(self, response: requests.Response) -> None:
        listing = _is_listing(response)
        status = response.status_code
        if status == HTTPStatus.NOT_FOUND and not listing:
            return  # not registered yet (or not in this month): see parse_page
        if status == HTTPStatus.FORBIDDEN and listing:
            raise CdrApiError(
                self.response_error_message(response)
                + ". This token may not list the CDR log: grant it that right in VCC Live, "
                "or set cdr_by_uuid.list_cdrs to false and feed uuids (uuids, uuids_file)."
            )
        if status in (HTTPStatus.UNAUTHORIZED, HTTPStatus.FORBIDDEN):
            raise CdrApiError(
                self.response_error_message(response)
                + ". Check cdr_by_uuid.customer and cdr_by_uuid.api_token, and that this "
                "machine's IP address is on the customer's API allow-list."
            )
        super().validate_response(response)

    @override
    def body_problem(self, response: requests.Response, body: Any) -> str | None:
        if _is_listing(response):
            return self.listing_problem(body)
        return self.envelope_problem(body)

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

    @staticmethod
    def listing_problem(body: Any) -> str | None:
        """A CDR log page must hold `rows` (or be the array of rows); never read
        anything else as an empty day."""
        if not isinstance(body, dict) or "response" not in body:
            return "expected a JSON object with `response` and `errors`"
        errors = body.get("errors")
        if errors:
            return f"the API reported errors: {str(errors)[:300]}"
        rows = _listing_rows(body["response"])
        if rows is None:
            return 'the listing\'s `response` is neither {"rows": [...]} nor an array of rows'
        if not all(isinstance(row, dict) for row in rows):
            return "the listing's rows are not all objects"
        return None

    @override
    def parse_page(self, response: requests.Response) -> tuple[list[dict[str, Any]], int | None]:
        if _is_listing(response):
            found = json_body(response)["response"]
            return _listing_rows(found) or [], _listing_total(found)
        if response.status_code == HTTPStatus.NOT_FOUND:
            return [], None
        body = json_body(response)
        if body.get("errors"):
            # Expected while a CDR is not registered yet: the run's summary counts them.
            self.logger.debug("cdr_by_uuid: %s: %s", response.request.path_url, body["errors"])
            return [], None
        found = body.get("response")
        # The document calls the body a "CDR array" and shows an object: take both.
        if isinstance(found, list):
            return [item for item in found if isinstance(item, dict) and item], None
        return ([found] if found else []), None

    # -- the run -------------------------------------------------------------------

    @override
    def get_records(self, context: Context | None) -> Iterator[dict[str, Any]]:
        state = self.stream_state
        vcc = self.vcc
        try:
            self.queue = PendingQueue.from_state(
                state.get("pending"), vcc.retry_interval, vcc.max_attempts
            )
            self.setting = SettingItems(vcc.items, state.get("uuids_done"))
            file = UuidFile(vcc.uuids_file, state.get("uuids_file")) if vcc.uuids_file else None
            chunks: list[tuple[str, Chunk]] = [
                ("uuids_file", chunk) for chunk in (file.chunks() if file else ())
            ]
            intake = self.intake_source(state.get("intake"))
        except WorkListError as exc:
            raise CdrApiError(str(exc)) from None
        if file is not None and file.reread_reason:
            self.logger.warning(
                "cdr_by_uuid: reading %s again from its start: %s", file.path, file.reread_reason
            )
        self.positions = {
            source: state[source] for source in ("uuids_file", "intake") if source in state
        }
        self.bookmark_value = state.get("replication_key_value")
        self.counts = {
            "swept": 0,
            "looked_up": 0,
            "fetched": 0,
            "given_up": 0,
            "announced_in_log": 0,
            "announced": len(self.queue.entries),
        }
        # The uuids the sweep emits that a lookup would ask for again: those announced so
        # far, or with an intake store every one (it is read after the sweep, a chunk at a
        # time, so that its backlog is never all in memory).
        announced = None
        if intake is None:
            announced = {
                *self.queue.entries,
                *(item.uuid for item in self.setting.new()),
                *(item.uuid for _, chunk in chunks for item in chunk.items),
            }
        self.swept = SweptUuids()
        emitted: set[str] = set()  # uuids fetched in this run: no second lookup
        try:
            for record in self.sweep() if vcc.list_cdrs else ():
                uuid = record["uuid"]
                if announced is None or uuid in announced:
                    self.swept.add(uuid)
                if self.queue.entries.pop(uuid, None) is not None:
                    self.counts["announced_in_log"] += 1
                yield record
            yield from self.look_up_sources(chunks, intake, emitted)
            deadline = utc_now() + vcc.wait_for_pending
            while self.queue.entries and utc_now() < deadline:
                wake = min(self.queue.next_due(), deadline)
                # Never spin: even with a zero retry interval, rounds are a second apart.
                time.sleep(max(MIN_RETRY_PAUSE_SECONDS, (wake - utc_now()).total_seconds()))
                yield from self.look_up((Lookup(i) for i in self.queue.due(utc_now())), emitted)
        finally:
            self.swept.close()
        self.commit()
        self.log_summary(self.counts["announced"], intake.waiting if intake else None)

    def look_up_sources(
        self, chunks: list[tuple[str, Chunk]], intake: IntakeSource | None, emitted: set[str]
    ) -> Iterator[dict[str, Any]]:
        """Look up the new uuids of the sources: pending, setting, file, then the intake
        store, which is read a chunk at a time as the lookups go."""
        if intake is None:
            yield from self.look_up(self._lookups(chunks), emitted)
            return
        from tap_cdr.intake.store import StoreError  # noqa: PLC0415 (SQLAlchemy, at need)

        read = itertools.chain(chunks, (("intake", chunk) for chunk in intake.chunks()))
        try:
            yield from self.look_up(self._lookups(read), emitted)
        except StoreError as exc:
            raise CdrApiError(f"cdr_by_uuid.intake_store: {exc}") from None
        finally:
            intake.engine.dispose()  # read once per run: no connection kept
        self.log_intake(intake, intake.read)

    @override
    def where_base_url(self) -> str:
        if self.config["cdr_by_uuid"].get("base_url"):
            return super().where_base_url()
        return (
            f"`cdr_by_uuid.customer` (the API's address is {self.url_base}, unless "
            "`cdr_by_uuid.base_url` is set)"
        )

    def intake_source(self, saved: Any) -> IntakeSource | None:
        """The intake store, when ``intake_store`` is set."""
        url = self.vcc.intake_store
        if not url:
            return None
        # Only now: SQLAlchemy costs every other run about 0.15 s and 15 MB at start.
        from tap_cdr.intake.source import IntakeSource  # noqa: PLC0415
        from tap_cdr.intake.store import StoreError, open_reader  # noqa: PLC0415

        try:
            engine, store_id = open_reader(url)
        except StoreError as exc:
            raise CdrApiError(f"cdr_by_uuid.intake_store: {exc}") from None
        source = IntakeSource(engine, store_id, saved, self.vcc.first_attempt_delay, utc_now())
        if source.reread_reason:
            self.logger.warning(
                "cdr_by_uuid: reading the intake store from its start: %s", source.reread_reason
            )
        return source

    def log_intake(self, intake: IntakeSource, read: int) -> None:
        waiting = (
            f"; {counted(intake.waiting, 'call')} received in the last "
            f"{counted(self.delay_minutes, 'minute')} "
            f"{'waits' if intake.waiting == 1 else 'wait'} for the next run"
            if intake.waiting
            else ""
        )
        self.logger.info(
            "cdr_by_uuid: the intake store announced %s since the last run (up to id %d%s)",
            counted(read, "call"),
            intake.last_id,
            waiting,
        )
        if intake.gaps_dropped:
            self.logger.warning(
                "cdr_by_uuid: the intake store skipped over more than %d ids within %s; "
                "the %d oldest are no longer watched for a late commit",
                len(intake.gaps),
                intake.gap_horizon,
                intake.gaps_dropped,
            )

    def commit(self, **changes: Any) -> None:
        """Emit STATE: the bookmark, the pending queue, and where the sources stand."""
        extra: dict[str, Any] = {"pending": self.queue.to_state()}
        if self.setting.items or "uuids_done" in self.stream_state:
            extra["uuids_done"] = self.setting.to_state()
        extra.update(self.positions)
        extra.update(changes)
        self.commit_state(self.bookmark_value, **extra)

    @property
    def delay_minutes(self) -> int:
        return self.vcc.first_attempt_delay // timedelta(minutes=1)

    def log_summary(self, announced: int, waiting: int | None) -> None:
        """The run in one line: what was emitted, from where, and what is still to come."""
        counts = self.counts
        pending = len(self.queue.entries)
        parts = []
        if self.vcc.list_cdrs:
            among = (
                f", {counts['announced_in_log']:,} of the {counted(announced, 'announced call')}"
                " among them"
                if announced
                else ""
            )
            parts.append(f"{counts['swept']:,} from the CDR log sweep{among}")
        if counts["looked_up"] or not self.vcc.list_cdrs:
            parts.append(
                f"{counts['fetched']:,} found of {counted(counts['looked_up'], 'uuid')} looked up"
            )
        emitted = counts["swept"] + counts["fetched"]
        summary = f"cdr_by_uuid: emitted {counted(emitted, 'record')} ({'; '.join(parts)})"
        if pending or counts["given_up"]:
            summary += f"; pending {pending:,}, given up {counts['given_up']:,}"
        if waiting:
            summary += (
                f"; {counted(waiting, 'announced call')} received in the last "
                f"{counted(self.delay_minutes, 'minute')} "
                f"{'waits' if waiting == 1 else 'wait'} for the next run"
            )
        self.logger.log(logging.WARNING if counts["given_up"] else logging.INFO, summary)

    # -- the sweep of the CDR log ----------------------------------------------------

    def sweep(self) -> Iterator[dict[str, Any]]:
        """Every call that ended in the sync range, once, in the order of the dates
        that list it; STATE after each complete date."""
        start, end = self.sync_range()
        vcc = self.vcc
        dates = listing_days(start, end, vcc.zone, vcc.max_call)
        units = [ListingDay(d, p) for d in dates for p in (vcc.project_ids or (None,))]
        lo, hi = start.isoformat(), end.isoformat()
        pager: Pager[ListingDay] = Pager(
            self.fetch_listing_page, lambda _day, first: plan_listing(first), self.prefetch
        )
        seen: dict[date, set[str]] = {}
        previous = self.bookmark()
        for number, read in enumerate(pager.reads(units)):
            day = read.unit
            # A call is listed under one date; keep the day before's uuids too, in
            # case an API lists a call that spans midnight under both dates.
            seen = {d: ids for d, ids in seen.items() if d >= day.date - timedelta(days=1)}
            emitted = seen.setdefault(day.date, set())
            started, before = time.monotonic(), len(emitted)
            for record in self.listing_records(pager, read, lo, hi, seen):
                self.counts["swept"] += 1
                yield record
            last_of_date = number + 1 == len(units) or units[number + 1].date != day.date
            if last_of_date:
                through = min(listed_through(day.date, vcc.zone), end)
                if previous is None or through > previous:
                    previous = through
                    self.bookmark_value = through.isoformat()
                self.commit()
            self.logger.info(
                "cdr_by_uuid: CDR log %s complete: %s of the range in %.1f s",
                day.label(),
                counted(len(emitted) - before, "call"),
                time.monotonic() - started,
            )

    def listing_records(
        self,
        pager: Pager[ListingDay],
        read: Read[ListingDay],
        lo: str,
        hi: str,
        seen: dict[date, set[str]],
    ) -> Iterator[dict[str, Any]]:
        """The calls of one listing that ended in [lo, hi), normalised, each once.

        If the listing changed while it was paged (its total changed, or the rows read
        differ from the total it reported), rows may have moved under the offsets: it
        is read again, sequentially, and the uuids already emitted are skipped.
        """
        normalize = self.normalize
        emitted = seen[read.unit.date]
        day_before = seen.get(read.unit.date - timedelta(days=1), set())
        previous: tuple[Any, ...] | None = None
        for _ in range(MAX_DAY_PASSES):
            for page in pager.pages(read):
                for raw in page:
                    uuid = raw.get("uuid")
                    if not uuid or not isinstance(uuid, str):
                        raise CdrApiError(
                            f"cdr_by_uuid: a CDR log row of {read.unit.label()} has no uuid: "
                            f"{str(raw)[:300]}"
                        )
                    if uuid in emitted or uuid in day_before:
                        continue
                    record = normalize(raw)
                    ended = record["time_ended"]
                    if ended is not None and not lo <= ended < hi:
                        continue  # outside the sync range
                    emitted.add(uuid)
                    yield record
            if not read.changed:
                return
            outcome = (tuple(read.totals), read.rows)
            total = read.totals[0]
            if outcome == previous and isinstance(total, int) and read.rows > total:
                # Read twice alike, with more rows than counted: nothing is missing.
                self.logger.warning(
                    "cdr_by_uuid: CDR log %s lists %d rows but reports totalCount %d",
                    read.unit.label(),
                    read.rows,
                    total,
                )
                return
            previous = outcome
            self.logger.warning(
                "cdr_by_uuid: CDR log %s changed while it was paged (%d rows, totalCount %s); "
                "reading it again",
                read.unit.label(),
                read.rows,
                " -> ".join(str(t) for t in dict.fromkeys(read.totals)),
            )
            read = pager.reread(read.unit)
        raise CdrApiError(
            f"cdr_by_uuid: CDR log {read.unit.label()} listed {read.rows} rows but reports "
            f"totalCount {' -> '.join(str(t) for t in dict.fromkeys(read.totals))}, over "
            f"{MAX_DAY_PASSES} reads: calls may be missing. Run again later (the day may "
            "still be filling), or report it to VCC Live if it persists."
        )

    def fetch_listing_page(self, day: ListingDay, offset: int) -> Page:
        return self.fetch_page({"day": day.date, "offset": offset, "projectid": day.project})

    # -- lookups by uuid --------------------------------------------------------------

    def _lookups(self, chunks: Iterable[tuple[str, Chunk]]) -> Iterator[Lookup]:
        """Due pending uuids (oldest first), then new items of the setting, then the
        new lines of the file and the new calls of the intake store; each chunk's last
        lookup carries the position to save after it."""
        yield from (Lookup(item) for item in self.queue.due(utc_now()))
        yield from (Lookup(item, "setting") for item in self.setting.new())
        for source, chunk in chunks:
            last = len(chunk.items) - 1
            for index, item in enumerate(chunk.items):
                yield Lookup(item, source, chunk.position if index == last else None)
            if not chunk.items:  # comments and blank lines only
                yield Lookup(NOTHING, source, chunk.position)

    def look_up(self, lookups: Iterable[Lookup], emitted: set[str]) -> Iterator[dict[str, Any]]:
        """Look each uuid up once, with up to ``max_concurrency`` in flight. Results
        are used in order, so the pending queue, the sources' positions and the counts
        are exact. STATE every LOOKUPS_PER_COMMIT lookups and after each file chunk."""
        since_commit = 0
        self.prefetch.reset()
        try:
            wanted = self._wanted(lookups, emitted)
            for lookup, page in ordered(self.prefetch, self.fetch_lookup, wanted):
                if lookup.item is not NOTHING:
                    since_commit += 1
                    self.counts["looked_up"] += 1
                    record = self._use_result(lookup, page, emitted)
                    if record is not None:
                        yield record
                if lookup.position is not None:
                    self.positions[lookup.source] = lookup.position
                if lookup.position is not None or since_commit >= LOOKUPS_PER_COMMIT:
                    self.commit()
                    since_commit = 0
        finally:
            self.prefetch.close()
        if since_commit:
            self.commit()

    def _wanted(self, lookups: Iterable[Lookup], emitted: set[str]) -> Iterator[Lookup]:
        """The lookups to make: each uuid once, none the sweep emitted, and no new
        announcement of a uuid already pending (it is retried when due). A skipped
        lookup still carries its chunk's position. Counts the announced uuids, and
        those the sweep found."""
        requested: set[str] = set()
        for lookup in lookups:
            uuid = lookup.item.uuid
            swept = uuid in self.swept
            if lookup.item is not NOTHING and lookup.source != "pending":
                self.counts["announced"] += 1
                self.counts["announced_in_log"] += swept
            skip = swept or uuid in emitted or uuid in requested
            if lookup.source != "pending" and uuid in self.queue.entries:
                skip = True
            if not skip:
                requested.add(uuid)
                yield lookup
                continue
            if lookup.source == "setting":
                self.setting.done.add(uuid)
            if lookup.position is not None:
                yield Lookup(NOTHING, lookup.source, lookup.position)

    def _use_result(self, lookup: Lookup, page: Page, emitted: set[str]) -> dict[str, Any] | None:
        """The record a lookup found, or None: then the uuid stays pending, or is given
        up once out of attempts."""
        uuid = lookup.item.uuid
        if lookup.source == "setting":
            self.setting.done.add(uuid)
        if page.rows:
            record = self.normalize(page.rows[0])
            emitted.add(uuid)
            self.queue.entries.pop(uuid, None)
            self.counts["fetched"] += 1
            if not self.vcc.list_cdrs:
                self._advance_bookmark(record.get("time_ended"))
            return record
        if self.queue.failed_attempt(lookup.item, utc_now()):
            self.counts["given_up"] += 1
            self.logger.error(
                "cdr_by_uuid: giving up on uuid %s after %s: its CDR never became "
                "available (`cdr_by_uuid.max_attempts`)",
                uuid,
                counted(self.vcc.max_attempts, "attempt"),
            )
        return None

    def fetch_lookup(self, lookup: Lookup) -> Page:
        """The CDR of one uuid (runs on a worker): each candidate month in turn."""
        item = lookup.item
        if item is NOTHING:
            return Page([])
        now = utc_now()
        waited = 0.0
        for year, month in month_candidates(item, now.year, now.month):
            context = {"year": f"{year:04d}", "month": f"{month:02d}", "uuid": item.uuid}
            page = self.fetch_page(context)
            waited += page.waited
            if page.rows:
                raw = page.rows[0]
                raw.setdefault("uuid", item.uuid)
                return Page([raw], None, waited)
        return Page([], None, waited)

    def _advance_bookmark(self, value: str | None) -> None:
        if value and (self.bookmark_value is None or value > self.bookmark_value):
            self.bookmark_value = value


def _is_listing(response: requests.Response) -> bool:
    return "/v2/cdrs/" in (response.request.path_url or "")


def _listing_rows(found: Any) -> list[Any] | None:
    if isinstance(found, list):
        return found
    if isinstance(found, dict) and isinstance(found.get("rows"), list):
        return found["rows"]
    return None


def _listing_total(found: Any) -> int | None:
    """totalCount when reported as a count (a number, or digits), else None."""
    total = found.get("totalCount") if isinstance(found, dict) else None
    if isinstance(total, str) and total.strip().isdigit():
        return int(total)
    if isinstance(total, int) and not isinstance(total, bool) and total >= 0:
        return total
    return None
