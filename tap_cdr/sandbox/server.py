"""HTTP routes of the sandbox API, on the standard library's threading HTTP server.

Routes (TEL4VN v3):
- ``POST /v3/auth/token`` with ``{"api_key": ...}`` issues a Bearer token.
- ``GET /v3/cdr`` lists CDRs newest first, with the documented filters and quirks:
  no data unless both ``limit`` and ``offset`` are sent, and the echoed offset is -1.

Routes (VCC Live, HTTP Basic):
- ``GET /v2/cdrs/{year}/{month}[/{day}]`` lists a day's (or month's) CDRs with ``num``
  (10 without it, capped), ``start`` and ``projectid``, in no particular order.
- ``GET /v2/cdr/{year}/{month}/{uuid}`` looks one CDR up.

Control routes (no auth; the sandbox binds 127.0.0.1 only):
- ``POST /_sandbox/faults``, ``POST /_sandbox/release`` (late-registered calls appear).
- ``POST /_sandbox/truth`` with ``{"ended_from", "ended_to", "uuids"}``: the ground truth
  for checks: the registered VCC calls that ended in the range, and which of the
  given uuids are registered; ``GET /_sandbox/stats``: requests served, per route.
"""

from __future__ import annotations

import base64
import itertools
import json
import secrets
import socket
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlsplit

from tap_cdr.sandbox.data import V3Dataset, VccDataset
from tap_cdr.sandbox.faults import Faults
from tap_cdr.sandbox.webhooks import WebhookConfig, WebhookPoster

if TYPE_CHECKING:
    from collections.abc import Sequence

if sys.version_info >= (3, 12):
    from typing import override
else:
    from typing_extensions import override

V3_EQUALITY_FILTERS = ("extension", "direction", "campaign_uuid")


@dataclass
class SandboxConfig:
    """What the sandbox serves and which credentials it accepts."""

    v3: V3Dataset = field(default_factory=V3Dataset)
    token: str = "sandbox-token"
    api_key: str = "sandbox-api-key"
    # An issued token stops working after this many requests (0: never), so that
    # clients' refresh-on-401 can be exercised.
    token_max_uses: int = 0
    # The API's maximum page size is undocumented; 0 serves any `limit` in full.
    max_limit: int = 0
    vcc: VccDataset = field(default_factory=VccDataset)
    vcc_customer: str = "sandbox"
    vcc_token: str = "sandbox-vcc-token"
    # Registration delay: a uuid answers "not available" for its first K requests,
    # or for its first T seconds after the sandbox starts.
    vcc_delay_requests: dict[str, int] = field(default_factory=dict)
    vcc_delay_seconds: dict[str, float] = field(default_factory=dict)
    # How "not available" is said (undocumented): "errors", "404" or "empty".
    vcc_pending_style: str = "errors"
    # The CDR log listing: the most rows a page holds whatever `num` asks (10 when
    # `num` is missing), the envelope's shape ("rows": {"rows", "totalCount"};
    # "rows-no-total"; "array": the rows themselves), a token that may not list
    # (403), and a token limited to some projects (403 without a `projectid` of them).
    vcc_list_max_num: int = 500
    vcc_list_ignore_num: bool = False  # serve 10 rows per page whatever `num` says
    vcc_list_shape: str = "rows"
    vcc_list_forbidden: bool = False
    vcc_token_projects: tuple[int, ...] = ()
    faults: Faults = field(default_factory=Faults)
    # Call Disposition webhooks posted to a receiver (None: none).
    webhooks: WebhookConfig | None = None


class SandboxServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, port: int, config: SandboxConfig) -> None:
        super().__init__(("127.0.0.1", port), SandboxHandler)
        self.config = config
        self.lock = threading.Lock()
        self.issued: dict[str, int] = {}  # token -> requests left (-1: unlimited)
        self.request_log: list[tuple[str, str]] = []
        self._counter = itertools.count(1)
        self.started = time.monotonic()
        self.vcc_requests: dict[str, int] = {}
        self.list_requests = 0
        self.webhooks: WebhookPoster | None = None

    def start_webhooks(self) -> None:
        """Start posting the VCC calls' webhooks, when configured."""
        if self.config.webhooks and self.webhooks is None:
            self.webhooks = WebhookPoster(self.config.vcc, self.config.webhooks)
            self.webhooks.start()

    def stop_webhooks(self) -> None:
        if self.webhooks is not None:
            self.webhooks.stopping.set()
            self.webhooks.join(timeout=15)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def issue_token(self) -> str:
        token = f"tok-{next(self._counter)}-{secrets.token_hex(8)}"
        with self.lock:
            self.issued[token] = self.config.token_max_uses or -1
        return token

    def expire_tokens(self) -> None:
        with self.lock:
            self.issued = dict.fromkeys(self.issued, 0)

    def accept_token(self, token: str) -> bool:
        if token == self.config.token:
            return True
        with self.lock:
            left = self.issued.get(token)
            if left is None or left == 0:
                return False
            if left > 0:
                self.issued[token] = left - 1
            return True


class SandboxHandler(BaseHTTPRequestHandler):
    server: SandboxServer
    protocol_version = "HTTP/1.1"

    @override
    def setup(self) -> None:
        super().setup()
        # Headers and body go out in two writes; without NODELAY, Nagle's algorithm
        # and delayed ACKs add ~40 ms to every keep-alive request.
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    @override
    def log_message(self, format: str, *args: object) -> None:
        """Quiet by default; the request log keeps what tests need."""

    # -- plumbing ----------------------------------------------------------------

    def send_json(self, status: int, body: object | bytes) -> None:
        payload = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def error(self, status: int, message: str) -> None:
        self.send_json(status, {"code": status, "message": message})

    def read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def route(self, method: str) -> None:
        parts = urlsplit(self.path)
        with self.server.lock:
            self.server.request_log.append((method, self.path))
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        path = parts.path.rstrip("/")
        if method == "POST" and path == "/v3/auth/token":
            return self.v3_token()
        if method == "POST" and path == "/_sandbox/faults":
            return self.control_faults()
        if method == "POST" and path == "/_sandbox/truth":
            return self.vcc_truth()
        if method == "GET" and path == "/_sandbox/stats":
            return self.stats()
        if method == "POST" and path == "/_sandbox/release":
            self.server.config.v3.hidden.clear()
            self.server.config.vcc.hidden.clear()
            return self.send_json(200, {"released": True})
        if method == "GET" and (path == "/v3/cdr" or path.startswith(("/v2/cdr/", "/v2/cdrs/"))):
            if self.inject_fault():
                return None
            if path == "/v3/cdr":
                return self.v3_list(query)
            if path.startswith("/v2/cdrs/"):
                return self.vcc_list(path.split("/")[3:], query)
            return self.vcc_lookup(path.split("/")[3:])
        return self.error(404, f"no route for {method} {parts.path}")

    def do_GET(self) -> None:
        self.route("GET")

    def do_POST(self) -> None:
        self.route("POST")

    # -- faults ------------------------------------------------------------------

    def control_faults(self) -> None:
        try:
            values = json.loads(self.read_body() or b"{}")
            self.server.config.faults.update(values)
        except (ValueError, TypeError) as exc:
            return self.error(400, str(exc))
        faults = self.server.config.faults
        return self.send_json(200, {"counts": faults.counts, "fired": faults.fired})

    def inject_fault(self) -> bool:
        """Apply the next injected fault; True when it has answered the request."""
        faults = self.server.config.faults
        if faults.latency_ms:
            faults.fired["latency"] = faults.fired.get("latency", 0) + 1
            time.sleep(faults.latency_ms / 1000)
        fault = faults.take()
        if fault is None:
            return False
        if fault.startswith("status_"):
            status = int(fault[7:])
            self.send_response(status)
            if status == 429:
                self.send_header("Retry-After", f"{faults.retry_after:g}")
            payload = json.dumps({"code": status, "message": "injected fault"}).encode()
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
            return True
        if fault == "expire_tokens":
            self.server.expire_tokens()
            return False
        if fault == "hang":
            time.sleep(faults.hang_seconds)
            self.close_connection = True
            return True
        if fault == "malformed":
            self.send_json(200, b'{"data": [{"id": "x", ')
            return True
        if fault == "no_data":
            self.send_json(200, {"message": "ok", "total": 3})
            return True
        if fault == "data_not_list":
            self.send_json(200, {"data": {"id": "x"}, "limit": 1, "offset": -1, "total": 1})
            return True
        # reset / truncate: promise a full body, send half, then drop the connection.
        body = b'{"data": [' + b'{"id": "partial"},' * 50 + b'{}], "total": 51}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[: len(body) // 2])
        self.wfile.flush()
        if fault == "reset":
            self.request.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
            )
        self.close_connection = True
        return True

    # -- TEL4VN v3 ---------------------------------------------------------------

    def v3_token(self) -> None:
        try:
            body = json.loads(self.read_body() or b"{}")
        except ValueError:
            return self.error(400, "body must be JSON")
        if not isinstance(body, dict) or body.get("api_key") != self.server.config.api_key:
            return self.error(401, "invalid api_key")
        self.send_json(
            200,
            {
                "token": self.server.issue_token(),
                "token_type": "Bearer",
                "expired_in": 13647710,
                "refresh_token": "",
            },
        )

    def v3_authorized(self) -> bool:
        header = self.headers.get("Authorization", "")
        # The vendor's prose shows a bare token, its curl examples "Bearer <token>".
        token = header[7:] if header[:7].lower() == "bearer " else header
        return bool(token) and self.server.accept_token(token.strip())

    def v3_list(self, query: dict[str, str]) -> None:
        if not self.v3_authorized():
            return self.error(401, "Unauthorized")
        data = self.server.config.v3
        faults = self.server.config.faults
        with self.server.lock:
            self.server.list_requests += 1
            if faults.release_after >= 0 and self.server.list_requests > faults.release_after:
                data.hidden.clear()
        if "limit" not in query or "offset" not in query:
            # Documented quirk: without both, limit and offset default to -1 and no
            # CDRs come back.
            return self.send_json(200, {"data": [], "limit": -1, "offset": -1, "total": 0})
        try:
            limit = int(query["limit"])
            offset = int(query["offset"])
            ended_from = _epoch(data, query.get("start_date_ended"))
            ended_to = _epoch(data, query.get("end_date_ended"))
            started_from = _epoch(data, query.get("start_date"))
            started_to = _epoch(data, query.get("end_date"))
        except ValueError as exc:
            return self.error(400, str(exc))
        if limit < 0 or offset < 0:
            return self.send_json(200, {"data": [], "limit": limit, "offset": -1, "total": 0})
        if self.server.config.max_limit:
            limit = min(limit, self.server.config.max_limit)

        candidates = data.index_range(ended_from, ended_to)
        filters = {
            k: query[k]
            for k in (*V3_EQUALITY_FILTERS, "status", "hotline", "phone")
            if query.get(k)
        }
        matched: Sequence[int]
        if filters or started_from is not None or started_to is not None or data.hidden:
            matched = [
                i
                for i in candidates
                if i not in data.hidden
                and _matches(data.record(i), filters, data, started_from, started_to)
            ]
        else:
            matched = candidates
        total = len(matched)
        # Newest first, as in the document's sample.
        page = [matched[total - 1 - k] for k in range(offset, min(offset + limit, total))]
        body = b'{"data":[' + b",".join(data.record_bytes(i) for i in page)
        body += b'],"limit":%d,"offset":-1,"total":%d}' % (limit, total)
        self.send_json(200, body)

    # -- VCC Live v2 ---------------------------------------------------------------

    def vcc_authorized(self) -> bool:
        header = self.headers.get("Authorization", "")
        if not header.lower().startswith("basic "):
            return False
        try:
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        except ValueError:
            return False
        config = self.server.config
        return user == config.vcc_customer and password == config.vcc_token

    def vcc_lookup(self, parts: list[str]) -> None:
        if not self.vcc_authorized():
            return self.send_json(401, {"response": None, "errors": ["Unauthorized"]})
        if len(parts) != 3 or not parts[0].isdigit() or not parts[1].isdigit():
            return self.send_json(
                400, {"response": None, "errors": ["expected /v2/cdr/YYYY/MM/uuid"]}
            )
        year, month, uuid = int(parts[0]), int(parts[1]), parts[2]
        config = self.server.config
        with self.server.lock:
            seen = self.server.vcc_requests.get(uuid, 0)
            self.server.vcc_requests[uuid] = seen + 1
        index = config.vcc.find(uuid)
        if index is None:
            return self.vcc_not_available()
        registered = seen >= config.vcc_delay_requests.get(uuid, 0) and self.vcc_registered(index)
        if not registered or config.vcc.filed_under(index) != (year, month):
            return self.vcc_not_available()
        body = b'{"response":' + config.vcc.record_bytes(index) + b',"errors":[]}'
        self.send_json(200, body)

    def vcc_registered(self, index: int) -> bool:
        """Late registration: hidden, or within its delay after the sandbox started."""
        config = self.server.config
        delay = config.vcc_delay_seconds.get(config.vcc.uuids[index], 0)
        return index not in config.vcc.hidden and time.monotonic() - self.server.started >= delay

    def vcc_list(self, parts: list[str], query: dict[str, str]) -> None:
        """``GET /v2/cdrs/{year}/{month}[/{day}]`` with ``num``, ``start``, ``projectid``."""
        if not self.vcc_authorized():
            return self.send_json(401, {"response": None, "errors": ["Unauthorized"]})
        config = self.server.config
        indices = None
        try:
            year, month, *day = (int(part) for part in parts)
            num = 10 if config.vcc_list_ignore_num else int(query.get("num", 10))
            num = min(num, config.vcc_list_max_num)
            start = int(query.get("start", 0))
            project = int(query["projectid"]) if query.get("projectid") else None
            if len(day) <= 1 and num >= 0 and start >= 0:
                indices = config.vcc.listing(year, month, day[0] if day else None)
        except ValueError:  # not numbers, or not a date
            pass
        if indices is None:
            errors = ["expected /v2/cdrs/YYYY/MM[/DD] and whole numbers for num and start"]
            return self.send_json(400, {"response": None, "errors": errors})
        forbidden = config.vcc_list_forbidden or (
            config.vcc_token_projects and project not in config.vcc_token_projects
        )
        if forbidden:
            return self.send_json(403, {"response": None, "errors": ["Permission denied"]})
        data = config.vcc
        rows = [
            i
            for i in indices
            if self.vcc_registered(i) and (project is None or data.project_of(i) == project)
        ]
        page = b",".join(data.record_bytes(i) for i in rows[start : start + num])
        if config.vcc_list_shape == "array":
            response = b"[" + page + b"]"
        elif config.vcc_list_shape == "rows-no-total":
            response = b'{"rows":[' + page + b"]}"
        else:
            response = b'{"rows":[' + page + b'],"totalCount":%d}' % len(rows)
        self.send_json(200, b'{"response":' + response + b',"errors":[]}')

    def vcc_truth(self) -> None:
        try:
            query = json.loads(self.read_body() or b"{}")
            lo = datetime.fromisoformat(query["ended_from"]).timestamp()
            hi = datetime.fromisoformat(query["ended_to"]).timestamp()
        except (ValueError, KeyError, TypeError) as exc:
            return self.error(400, f"expected ended_from and ended_to: {exc}")
        data = self.server.config.vcc
        registered = [i for i in range(data.records) if self.vcc_registered(i)]
        in_range = [data.uuids[i] for i in registered if lo <= data.ended_epoch(i) < hi]
        known = {data.uuids[i] for i in registered}
        asked = [u for u in query.get("uuids", []) if u in known]
        return self.send_json(200, {"ended_in_range": in_range, "registered": asked})

    def stats(self) -> None:
        with self.server.lock:
            log = list(self.server.request_log)
        lookups = [p.split("?")[0].rsplit("/", 1)[-1] for _, p in log if p.startswith("/v2/cdr/")]
        counts = {
            "v3_list_requests": sum(1 for _, p in log if p.startswith("/v3/cdr")),
            "vcc_list_requests": sum(1 for _, p in log if p.startswith("/v2/cdrs/")),
            "vcc_lookups": dict(Counter(lookups)),
        }
        if self.server.webhooks is not None:
            counts.update(self.server.webhooks.stats.to_dict())
        return self.send_json(200, counts)

    def vcc_not_available(self) -> None:
        style = self.server.config.vcc_pending_style
        if style == "404":
            return self.send_json(404, {"response": None, "errors": ["CDR not found"]})
        if style == "empty":
            return self.send_json(200, {"response": {}, "errors": []})
        return self.send_json(200, {"response": None, "errors": ["No CDR found for this uuid"]})


def _epoch(data: V3Dataset, value: str | None) -> int | None:
    if not value:
        return None
    try:
        return data.epoch_of_local(value)
    except ValueError:
        raise ValueError(
            f"invalid date '{value}': expected YYYY-MM-DD or YYYY-MM-DD HH:MM:SS"
        ) from None


def _matches(
    rec: dict,
    filters: dict[str, str],
    data: V3Dataset,
    started_from: int | None,
    started_to: int | None,
) -> bool:
    for key in V3_EQUALITY_FILTERS:
        if key in filters and rec[key] != filters[key]:
            return False
    if "status" in filters and rec["status"].lower() != filters["status"].lower():
        return False
    if "hotline" in filters and filters["hotline"] not in (
        rec["from_number"],
        rec["to_number"],
    ):
        return False
    if "phone" in filters and filters["phone"] not in (
        rec["from_number"],
        rec["to_number"],
    ):
        return False
    if started_from is not None or started_to is not None:
        started = data.epoch_of_local(rec["time_started"])
        if started_from is not None and started < started_from:
            return False
        if started_to is not None and started > started_to:
            return False
    return True


def start(config: SandboxConfig | None = None, port: int = 0) -> SandboxServer:
    """Start a sandbox on 127.0.0.1 in a background thread (for tests and demos)."""
    server = SandboxServer(port, config or SandboxConfig())
    threading.Thread(target=server.serve_forever, daemon=True).start()
    server.start_webhooks()
    return server
