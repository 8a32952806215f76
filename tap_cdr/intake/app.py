"""The HTTP side of `tap-cdr-intake`: VCC Live's Call Disposition webhook, stored.

- ``POST /vcc/call-disposition?secret-key=...``: 401 without the right key (compared in
  constant time, as sent or percent-decoded), 415 for a body type no webhook sends, 413
  past the body limit, 408 for a body that does not arrive within ``BODY_SECONDS``, 400
  for a body that cannot be decrypted, is not JSON or has no valid uuid (recorded, with
  the reason, size and top-level keys, never the values), 503 when the store cannot
  commit (VCC Live delivers it again), and 200 only once the call is committed. The same
  call delivered twice is stored once; its deliveries are counted.
- ``GET /healthz``: 200 only when the store takes a commit now (a probe through the
  writer, within ``PROBE_SECONDS``); else 503 with the reason.
- ``GET /metrics``: the Prometheus text format (`tap_cdr.intake.metrics`).

One log line per event (received, duplicate, rejected with its reason); no secret and no
personal data (numbers, names, client data) is logged or stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hmac
import logging
from typing import TYPE_CHECKING
from urllib.parse import unquote_to_bytes

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy.exc import SQLAlchemyError
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tap_cdr.intake.commits import WRITE_TIMEOUT_SECONDS, GroupCommitter, StoreUnavailable
from tap_cdr.intake.events import Event, Rejected, parse_event
from tap_cdr.intake.metrics import Metrics
from tap_cdr.intake.store import (
    open_store,
    problem_of,
    record_delivery,
    record_rejection,
    row_counts,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

DEFAULT_MAX_BODY_BYTES = 1 << 20
BODY_SECONDS = 10.0  # a body that takes longer to arrive gets 408
PROBE_SECONDS = 2.0
# What a webhook body may be sent as (JSON, or base64 text when encrypted).
ACCEPTED_TYPES = frozenset(
    {"", "application/json", "text/plain", "application/octet-stream",
     "application/x-www-form-urlencoded"}
)  # fmt: skip

log = logging.getLogger("tap_cdr.intake")


class _TooLargeError(Exception):
    pass


def create_app(
    store_url: str,
    secret_key: str,
    cipher: str | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
) -> Starlette:
    intake = Intake(store_url, secret_key, cipher, max_body_bytes)
    app = Starlette(
        routes=[
            Route("/vcc/call-disposition", intake.call_disposition, methods=["POST"]),
            Route("/healthz", intake.healthz, methods=["GET"]),
            Route("/metrics", intake.metrics_text, methods=["GET"]),
        ],
        lifespan=intake.lifespan,
    )
    app.state.metrics = intake.metrics  # for the server's own refusals (server.py)
    return app


class Intake:
    """The receiver: its store, its writer, its metrics, and the routes' handlers."""

    def __init__(
        self, store_url: str, secret_key: str, cipher: str | None, max_body_bytes: int
    ) -> None:
        self.store_url = store_url
        self.secret_key = secret_key
        self.cipher = cipher
        self.max_body_bytes = max_body_bytes
        self.engine = open_store(store_url)
        self.metrics = Metrics()
        self.committer = GroupCommitter(self.engine, self.metrics)
        self.store_answers = True  # as the last scrape's probe found it
        self.metrics.watch(self.committer.waiting.qsize, self.store_rows)

    def store_rows(self) -> dict[str, int]:
        if not self.store_answers:
            return {}  # a scrape must not wait on a store the probe found hung
        try:
            with self.engine.connect() as conn:
                return row_counts(conn)
        except SQLAlchemyError:
            return {}

    def answer(
        self, status: int, content: dict[str, object], *, close: bool = False
    ) -> JSONResponse:
        self.metrics.responses.labels(str(status)).inc()
        headers = {"Connection": "close"} if close else None
        return JSONResponse(content, status_code=status, headers=headers)

    def refuse(self, status: int, kind: str, reason: str) -> JSONResponse:
        """An answer given before the body was read: the connection is closed after it,
        so that the rest of the body cannot keep it (nor be read as a request)."""
        log.warning("rejected: %s", reason)
        self.metrics.rejected.labels(kind).inc()
        return self.answer(status, {"error": reason}, close=True)

    async def call_disposition(self, request: Request) -> Response:
        try:
            return await self.receive(request)
        except Exception as exc:  # never a 500 (VCC Live retries a 503), nor a traceback
            log.error("answered 503: %s while answering a webhook", type(exc).__name__)  # noqa: TRY400
            log.debug("the error", exc_info=True)
            self.metrics.unavailable.labels("error").inc()
            return self.answer(503, {"error": "unavailable"})

    async def receive(self, request: Request) -> Response:
        if not _key_matches(request.scope["query_string"], self.secret_key.encode()):
            return self.refuse(401, "unauthorized", "missing or wrong secret key")
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type not in ACCEPTED_TYPES and not content_type.endswith("+json"):
            return self.refuse(415, "content_type", "unsupported content type")
        body = await self.read_body(request)
        if isinstance(body, Response):
            return body
        try:
            event = parse_event(body, self.cipher, self.secret_key, request.query_params.get("iv"))
        except Rejected as rejected:
            return await self.reject(rejected, len(body))
        return await self.store(event)

    async def read_body(self, request: Request) -> bytes | Response:
        """The body, or the answer to a request whose body cannot be taken."""
        limit = self.max_body_bytes
        try:
            return await asyncio.wait_for(_read_body(request, limit), BODY_SECONDS)
        except _TooLargeError:
            return self.refuse(413, "too_large", f"body over {limit} bytes")
        except asyncio.TimeoutError:
            return self.refuse(408, "timeout", f"the body took more than {BODY_SECONDS:g} s")
        except ClientDisconnect:
            # Nobody is left to answer, and nothing was sent that could be recorded.
            log.warning("rejected: the client disconnected before the end of its body")
            self.metrics.rejected.labels("disconnected").inc()
            return Response(status_code=400)

    async def reject(self, rejected: Rejected, size: int) -> Response:
        log.warning("rejected: %s (%d bytes, keys %s)", rejected.reason, size, rejected.keys[:20])
        self.metrics.rejected.labels(rejected.kind).inc()
        try:
            await self.committer.write(
                lambda conn: record_rejection(conn, rejected.reason, size, rejected.keys)
            )
        except Exception as exc:  # noqa: BLE001 (the answer is the same: the body is bad)
            log.error("store unavailable: the rejection was not recorded (%s)", self.why(exc))  # noqa: TRY400
        return self.answer(400, {"error": rejected.reason})

    async def store(self, event: Event) -> Response:
        for field in event.nulled:
            log.warning("uuid %s: its %s is unusable and is stored as null", event.uuid, field)
            self.metrics.nulled.labels(field).inc()
        try:
            deliveries = await self.committer.write(
                lambda conn: record_delivery(conn, event.uuid, event.month, event.projectid)
            )
        except Exception as exc:  # noqa: BLE001 (whatever the store raised: VCC Live retries)
            reason = exc.reason if isinstance(exc, StoreUnavailable) else "store_error"
            log.error("store unavailable (%s): answered 503 for uuid %s", self.why(exc), event.uuid)  # noqa: TRY400
            self.metrics.unavailable.labels(reason).inc()
            return self.answer(503, {"error": "store unavailable"})
        if deliveries == 1:
            log.info(
                "received uuid %s (project %s, month %s)", event.uuid, event.projectid, event.month
            )
            self.metrics.stored.inc()
            return self.answer(200, {"status": "stored"})
        log.info("duplicate uuid %s (delivery %d)", event.uuid, deliveries)
        self.metrics.duplicates.inc()
        return self.answer(200, {"status": "duplicate", "deliveries": deliveries})

    def why(self, exc: BaseException) -> str:
        return str(exc) if isinstance(exc, StoreUnavailable) else problem_of(exc, self.store_url)

    async def problem(self) -> str | None:
        """Why the store cannot take a commit now; None when it can."""
        try:
            await self.committer.probe(PROBE_SECONDS)
        except Exception as exc:  # noqa: BLE001 (any failure of the probe is the answer)
            return self.why(exc)
        return None

    async def healthz(self, _request: Request) -> JSONResponse:
        problem = await self.problem()
        if problem is not None:
            return JSONResponse({"status": "unavailable", "reason": problem}, status_code=503)
        return JSONResponse({"status": "ok"})

    async def metrics_text(self, _request: Request) -> Response:
        self.store_answers = await self.problem() is None
        self.metrics.healthy.set(self.store_answers)
        # On the thread pool: the count of the store's rows must not block the event loop.
        text = await run_in_threadpool(generate_latest, self.metrics.registry)
        return Response(text, media_type=CONTENT_TYPE_LATEST)

    @contextlib.asynccontextmanager
    async def lifespan(self, _app: Starlette) -> AsyncIterator[None]:
        # Everything loaded so far lives as long as the process: left out of the
        # collector's full passes, which otherwise stop the process for tens of
        # milliseconds every few seconds under load (the p99 of the webhooks).
        gc.collect()
        gc.freeze()
        yield
        # After the server has answered the requests in flight (uvicorn's graceful stop).
        if self.committer.close():
            self.engine.dispose()
        else:
            # Closing a connection that is stuck in a call could hang the stop too.
            log.warning(
                "the store did not answer within %g s: stopping without waiting for it "
                "(the writes still waiting were answered 503, VCC Live delivers them again)",
                WRITE_TIMEOUT_SECONDS + 5,
            )
        log.info(
            "tap-cdr-intake stopped: webhook requests answered %d, new calls stored %d, "
            "deliveries of calls already stored %d",
            self.metrics.total(self.metrics.responses),
            self.metrics.total(self.metrics.stored),
            self.metrics.total(self.metrics.duplicates),
        )


def _key_matches(query_string: bytes, expected: bytes) -> bool:
    """Whether the first ``secret-key`` parameter is the key, in constant time. VCC
    Live's encoding of the key is not documented: a key of base64 (``+``, ``/``, ``=``)
    may come percent-encoded, or raw, where ``+`` would read as a space in a form.
    Every reading is compared, so each works."""
    for part in query_string.split(b"&"):
        name, _, value = part.partition(b"=")
        if unquote_to_bytes(name) == b"secret-key":
            readings = {value, unquote_to_bytes(value), unquote_to_bytes(value.replace(b"+", b" "))}
            return any([hmac.compare_digest(reading, expected) for reading in readings])  # noqa: C419 (compare all)
    return False


async def _read_body(request: Request, limit: int) -> bytes:
    """The body; `_TooLargeError` past ``limit`` bytes (read no further than that)."""
    declared = request.headers.get("content-length", "")
    if declared.isascii() and declared.isdigit() and (len(declared) > 18 or int(declared) > limit):
        raise _TooLargeError
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _TooLargeError
        chunks.append(chunk)
    return b"".join(chunks)
