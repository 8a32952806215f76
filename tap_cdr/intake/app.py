"""The HTTP side of `tap-cdr-intake`: VCC Live's Call Disposition webhook, stored.

- ``POST /vcc/call-disposition?secret-key=...``: 401 without the right key (compared in
  constant time), 415 for a body type no webhook sends, 413 past the body limit, 400 for
  a body that cannot be decrypted, is not JSON or has no valid uuid (recorded, with the
  reason, size and top-level keys, never the values), 503 when the store cannot commit
  (VCC Live delivers it again), and 200 only once the call is committed. The same call
  delivered twice is stored once; its deliveries are counted.
- ``GET /healthz``: 200 when the store answers.

One log line per event (received, duplicate, rejected with its reason); no secret and no
personal data (numbers, names, client data) is logged or stored.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
import re
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tap_cdr.intake.commits import GroupCommitter
from tap_cdr.intake.crypto import DecryptError, decrypt
from tap_cdr.intake.store import open_store, record_rejection

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from sqlalchemy.engine import Engine

DEFAULT_MAX_BODY_BYTES = 1 << 20
UUID = re.compile(r"^[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")
MONTH = re.compile(r"^(\d{4})-(\d{2})-\d{2}")
# What a webhook body may be sent as (JSON, or base64 text when encrypted).
ACCEPTED_TYPES = frozenset(
    {"", "application/json", "text/plain", "application/octet-stream",
     "application/x-www-form-urlencoded"}
)  # fmt: skip

log = logging.getLogger("tap_cdr.intake")


class Rejected(Exception):  # noqa: N818 (an outcome, not an error of the receiver)
    """A body that is not a Call Disposition event we can use."""

    def __init__(self, reason: str, keys: list[str] | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.keys = keys or []


def create_app(
    store_url: str,
    secret_key: str,
    cipher: str | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
) -> Starlette:
    engine = open_store(store_url)
    committer = GroupCommitter(engine)
    expected_key = secret_key.encode()

    async def call_disposition(request: Request) -> JSONResponse:
        given = request.query_params.get("secret-key", "").encode()
        if not hmac.compare_digest(given, expected_key):
            log.warning("rejected: missing or wrong secret key")
            return JSONResponse({"error": "unauthorized"}, status_code=401)
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type not in ACCEPTED_TYPES and not content_type.endswith("+json"):
            log.warning("rejected: content type %r", content_type[:80])
            return JSONResponse({"error": "unsupported content type"}, status_code=415)
        body = await _read_body(request, max_body_bytes)
        if body is None:
            log.warning("rejected: body over %d bytes", max_body_bytes)
            return JSONResponse({"error": "body too large"}, status_code=413)
        iv = request.query_params.get("iv")
        return await _store(engine, committer, body, (cipher, secret_key, iv))

    def healthz(_request: Request) -> JSONResponse:
        # A plain function: Starlette runs it on its thread pool, so a store that is
        # slow to answer never blocks the event loop (and the webhooks behind it).
        try:
            with engine.connect() as conn:
                conn.execute(text("select 1"))
        except SQLAlchemyError:
            return JSONResponse({"status": "store unavailable"}, status_code=503)
        return JSONResponse({"status": "ok"})

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        yield
        # After the server has answered the requests in flight (uvicorn's graceful stop).
        committer.close()
        engine.dispose()

    app = Starlette(
        routes=[
            Route("/vcc/call-disposition", call_disposition, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
        ],
        lifespan=lifespan,
    )
    app.state.engine = engine
    return app


async def _read_body(request: Request, limit: int) -> bytes | None:
    """The body, or None past ``limit`` bytes (read no further than that)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return None
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                return None
            chunks.append(chunk)
    except ClientDisconnect:
        return b""
    return b"".join(chunks)


async def _store(
    engine: Engine,
    committer: GroupCommitter,
    body: bytes,
    decryption: tuple[str | None, str, str | None],
) -> JSONResponse:
    now = datetime.now(timezone.utc)
    try:
        uuid, month, projectid = parse_event(body, *decryption)
    except Rejected as rejected:
        log.warning(
            "rejected: %s (%d bytes, keys %s)", rejected.reason, len(body), rejected.keys[:20]
        )
        try:
            await run_in_threadpool(_reject, engine, rejected, len(body), now)
        except SQLAlchemyError:
            log.exception("store unavailable: the rejection was not recorded")
        return JSONResponse({"error": rejected.reason}, status_code=400)
    try:
        deliveries = await committer.record(uuid, month, projectid, now)
    except SQLAlchemyError as exc:
        log.error("store unavailable (%s): answered 503 for uuid %s", type(exc).__name__, uuid)  # noqa: TRY400 (one line; the cause is the class)
        return JSONResponse({"error": "store unavailable"}, status_code=503)
    if deliveries == 1:
        log.info("received uuid %s (project %s, month %s)", uuid, projectid, month)
        return JSONResponse({"status": "stored"})
    log.info("duplicate uuid %s (delivery %d)", uuid, deliveries)
    return JSONResponse({"status": "duplicate", "deliveries": deliveries})


def _reject(engine: Engine, rejected: Rejected, size: int, now: datetime) -> None:
    with engine.begin() as conn:
        record_rejection(conn, rejected.reason, size, rejected.keys, now)


def parse_event(
    body: bytes, cipher: str | None, secret_key: str, iv: str | None
) -> tuple[str, str | None, int | None]:
    """The uuid, month (``YYYY/MM`` of ``call_start_time``) and projectid of an event."""
    event = _decrypted_event(body, cipher, secret_key, iv) if cipher else _event(body)
    if event is None:
        raise Rejected("not JSON")
    if not isinstance(event, dict):
        raise Rejected(f"not a JSON object but {type(event).__name__}")
    keys = sorted(str(key)[:40] for key in event)
    uuid = event.get("uuid")
    if not isinstance(uuid, str) or not UUID.match(uuid.strip()):
        raise Rejected("no valid uuid" if uuid is not None else "no uuid", keys)
    start = event.get("call_start_time")
    found = MONTH.match(start.strip()) if isinstance(start, str) else None
    month = f"{found[1]}/{found[2]}" if found and 1 <= int(found[2]) <= 12 else None
    project = event.get("projectid")
    projectid = int(project) if isinstance(project, (int, str)) and str(project).isdigit() else None
    return uuid.strip().lower(), month, projectid


def _decrypted_event(body: bytes, cipher: str, secret_key: str, iv: str | None) -> Any:
    """The event in an encrypted body: base64 as sent, possibly wrapped in lines, or
    the value of a form's only field (where ``+`` may have been decoded as a space)."""
    candidates = [b"".join(body.split())]
    try:
        fields = parse_qs(body.decode("ascii"), strict_parsing=True)
    except (UnicodeDecodeError, ValueError):
        fields = {}
    if len(fields) == 1 and len(values := next(iter(fields.values()))) == 1 and values[0]:
        candidates.append(values[0].replace(" ", "+").encode())
    problems = []
    for candidate in candidates:
        try:
            event = _event(decrypt(candidate, cipher, secret_key, iv))
        except DecryptError as exc:
            problems.append(f"cannot be decrypted: {exc}")
            continue
        if event is not None:
            return event
        problems.append("not JSON once decrypted (wrong key, IV or cipher?)")
    raise Rejected(problems[0])  # what is wrong with the body as sent


def _event(body: bytes) -> Any:
    """The JSON of a body, or of a form; None when neither."""
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return _form_event(body)


def _form_event(body: bytes) -> dict[str, Any] | None:
    """An event sent as a form: the JSON of its only field, or its fields themselves."""
    try:
        fields = parse_qs(body.decode("utf-8"), strict_parsing=True)
    except (UnicodeDecodeError, ValueError):
        return None
    if len(fields) == 1:
        (values,) = fields.values()
        try:
            event = json.loads(values[0])
        except ValueError:
            event = None
        if isinstance(event, dict):
            return event
    return {key: values[-1] for key, values in fields.items()} if "uuid" in fields else None
