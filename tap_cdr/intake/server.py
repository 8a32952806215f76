"""uvicorn, as `tap-cdr-intake` runs it: every wait bounded.

uvicorn bounds connections (``limit_concurrency``: beyond it, 503) and idle kept-alive
connections (``timeout_keep_alive``), but not a request's headers (their time, their
size) nor its whole time: a client sending headers a byte at a time, megabytes of them,
or never reading its answer would hold its connection (and memory) for ever.
`HeaderDeadline` adds those bounds to uvicorn's own HTTP protocol.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import resource
import sys
from typing import TYPE_CHECKING

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

if sys.version_info >= (3, 12):
    from typing import override
else:
    from typing_extensions import override

if TYPE_CHECKING:
    import socket
    from collections.abc import Callable

    from prometheus_client import Counter
    from starlette.applications import Starlette

HEADER_SECONDS = 10.0
MAX_HEADER_BYTES = 64 * 1024
# A request's whole life: its headers (10 s), its body (the app's 408 at 10 s), its
# commit (503 at 10 s) and its answer written. Past it the connection is dropped: a
# client that stops reading its answer would otherwise hold it for ever.
REQUEST_SECONDS = 40.0
KEEP_ALIVE_SECONDS = 5
GRACEFUL_STOP_SECONDS = 30
# Files the process holds besides its connections: the store's, the log, the listening
# socket, Python's own.
OTHER_FILES = 64
log = logging.getLogger("tap_cdr.intake")
TOO_LARGE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: text/plain\r\n"
    b"content-length: 30\r\nconnection: close\r\n\r\nrequest header fields too large"
)


class HeaderDeadline(HttpToolsProtocol):
    """uvicorn's HTTP protocol with bounds it lacks: a request's headers must arrive
    within ``HEADER_SECONDS`` (of the connection, or of the request's first byte on a
    kept-alive connection) and ``MAX_HEADER_BYTES``, and a whole request within
    ``REQUEST_SECONDS``; else the connection is closed (431 for headers too large).
    At a graceful stop, a connection whose request is on its way is answered (and then
    closed) rather than closed under it."""

    deadline: asyncio.TimerHandle | None = None
    request_deadline: asyncio.TimerHandle | None = None
    header_bytes = 0
    stopping = False
    counted = False
    rejected: Counter | None = None  # the receiver's count of refused requests, by reason
    # Open connections, of all the protocol's instances: uvicorn bounds the requests at
    # once, not the connections (idle ones, or ones still sending headers), and past the
    # open-file limit the event loop resets every new connection, webhooks too.
    open_connections = 0
    max_open = 1 << 30

    @override
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        if HeaderDeadline.open_connections >= self.max_open:
            transport.abort()  # before a byte is read: the client may try again
            if self.rejected is not None:
                self.rejected.labels("too_many_connections").inc()
            return
        HeaderDeadline.open_connections += 1
        self.counted = True
        super().connection_made(transport)
        self.deadline = self.loop.call_later(HEADER_SECONDS, self._too_slow)

    @override
    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.deadline is not None and not self.transport.is_closing():
            # Still in the headers: httptools keeps them all in memory until their end.
            self.header_bytes += len(data)
            if self.header_bytes > MAX_HEADER_BYTES:
                self._refuse(
                    "headers_too_large", f"its request headers passed {MAX_HEADER_BYTES} bytes"
                )
                self.transport.write(TOO_LARGE)
                self.transport.close()

    @override
    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self.deadline is None:
            self.deadline = self.loop.call_later(HEADER_SECONDS, self._too_slow)
        if self.request_deadline is None:
            self.request_deadline = self.loop.call_later(REQUEST_SECONDS, self._too_long)

    @override
    def on_headers_complete(self) -> None:
        self._cancel("deadline")
        self.header_bytes = 0
        super().on_headers_complete()
        if self.stopping:
            self.cycle.keep_alive = False

    @override
    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._cancel("request_deadline")
            if self.pipeline:  # the next request is already under way
                self.request_deadline = self.loop.call_later(REQUEST_SECONDS, self._too_long)

    @override
    def shutdown(self) -> None:
        if self.deadline is not None:
            # A request's headers are (or a new connection's first request may be) on
            # their way: uvicorn would close the connection under them. Answered
            # instead, then closed; the header deadline bounds the wait.
            self.stopping = True
            return
        super().shutdown()

    @override
    def connection_lost(self, exc: Exception | None) -> None:
        if not self.counted:
            return  # refused in connection_made: uvicorn never knew it
        HeaderDeadline.open_connections -= 1
        self.counted = False
        self._cancel("deadline")
        self._cancel("request_deadline")
        super().connection_lost(exc)

    def _cancel(self, name: str) -> None:
        timer = getattr(self, name)
        if timer is not None:
            timer.cancel()
            setattr(self, name, None)

    def _refuse(self, reason: str, why: str) -> None:
        log.warning("closed a connection: %s", why)
        if self.rejected is not None:
            self.rejected.labels(reason).inc()

    def _too_slow(self) -> None:
        self.deadline = None
        self._refuse("headers_timeout", f"its request headers took over {HEADER_SECONDS:g} s")
        self.transport.close()

    def _too_long(self) -> None:
        self.request_deadline = None
        self._refuse("request_timeout", f"its request took over {REQUEST_SECONDS:g} s")
        # abort: close() would wait for a client that no longer reads to take the answer.
        self.transport.abort()


def connection_limit(wanted: int) -> int:
    """How many connections the open-file limit allows, up to ``wanted``: the soft
    limit is raised to the hard one first (a connection beyond the limit fails accept()
    with EMFILE, which uvicorn logs and never answers)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = wanted + OTHER_FILES
    if soft != resource.RLIM_INFINITY and soft < needed:
        raised = needed if hard == resource.RLIM_INFINITY else hard
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
            soft = raised
        except (ValueError, OSError):
            pass
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return wanted
    allowed = max(1, soft - OTHER_FILES)
    log.warning(
        "--max-connections %d needs %d open files, and the limit is %d (hard limit %s): "
        "serving at most %d connections; raise the limit (systemd LimitNOFILE=, ulimit -n)",
        wanted,
        needed,
        soft,
        "unlimited" if hard == resource.RLIM_INFINITY else hard,
        allowed,
    )
    return allowed


class GracefulServer(uvicorn.Server):
    """uvicorn's server, which at a graceful stop also answers the connections the
    kernel had already accepted for it: closing the listening socket resets every
    connection still in its queue, requests sent and all."""

    def __init__(self, config: uvicorn.Config, listening: Callable[[], None]) -> None:
        super().__init__(config)
        self.listening = listening

    @override
    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            self.listening()

    @override
    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        # A duplicate keeps each listening socket open while uvicorn stops serving it.
        held = [sock.dup() for server in self.servers for sock in server.sockets]
        for server in self.servers:
            server.close()
        loop = asyncio.get_running_loop()
        protocol = functools.partial(  # as uvicorn's startup makes it
            self.config.http_protocol_class,  # type: ignore[call-arg]
            config=self.config,
            server_state=self.server_state,
            app_state=self.lifespan.state,
        )
        for listening in held:
            listening.settimeout(0)  # non-blocking
            while True:
                try:
                    accepted, _ = listening.accept()
                except (BlockingIOError, InterruptedError):
                    break
                await loop.connect_accepted_socket(protocol, accepted)
            # No await since the last accept: only a connection the kernel completes
            # in these microseconds is reset.
            listening.close()
        await super().shutdown(sockets)


def serve(
    app: Starlette, host: str, port: int, max_connections: int, listening: Callable[[], None]
) -> None:
    """Serve ``app``; ``listening`` is called once the port is bound (not before: a port
    in use must not be logged as listened on)."""

    class Protocol(HeaderDeadline):
        rejected = app.state.metrics.rejected
        # Beyond uvicorn's limit, whose 503 some still get, within the open files.
        max_open = max_connections + OTHER_FILES // 2

    # SIGTERM: the server stops accepting, answers the requests in flight (each commits
    # before it answers) and those already queued, then exits.
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        http=Protocol,
        limit_concurrency=max_connections,
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
        timeout_graceful_shutdown=GRACEFUL_STOP_SECONDS,
        access_log=False,
        log_level="warning",
    )
    GracefulServer(config, listening).run()
