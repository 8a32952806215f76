"""uvicorn, as `tap-cdr-intake` runs it: every wait bounded.

uvicorn bounds connections (``limit_concurrency``: beyond it, 503) and idle kept-alive
connections (``timeout_keep_alive``), but has no deadline on a request's headers: a
client sending them a byte at a time would hold its connection for ever. `HeaderDeadline`
adds one to uvicorn's own HTTP protocol.
"""

from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

if sys.version_info >= (3, 12):
    from typing import override
else:
    from typing_extensions import override

if TYPE_CHECKING:
    import asyncio

    from starlette.applications import Starlette

HEADER_SECONDS = 10.0
KEEP_ALIVE_SECONDS = 5
GRACEFUL_STOP_SECONDS = 30
log = logging.getLogger("tap_cdr.intake")


class HeaderDeadline(HttpToolsProtocol):
    """A request's headers must arrive within ``HEADER_SECONDS`` of the connection, or
    of the request's first byte on a kept-alive connection; else the connection is
    closed."""

    deadline: asyncio.TimerHandle | None = None

    @override
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    @override
    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self.deadline is None:
            self._arm()

    @override
    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    @override
    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self.deadline = self.loop.call_later(HEADER_SECONDS, self._too_slow)

    def _disarm(self) -> None:
        if self.deadline is not None:
            self.deadline.cancel()
            self.deadline = None

    def _too_slow(self) -> None:
        self.deadline = None
        log.warning("closed a connection: its request headers took over %g s", HEADER_SECONDS)
        self.transport.close()


def serve(app: Starlette, host: str, port: int, max_connections: int) -> None:
    # SIGTERM: uvicorn stops accepting, lets the requests in flight finish (each commits
    # before it answers), then exits.
    uvicorn.run(
        app,
        host=host,
        port=port,
        http=HeaderDeadline,
        limit_concurrency=max_connections,
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
        timeout_graceful_shutdown=GRACEFUL_STOP_SECONDS,
        access_log=False,
        log_level="warning",
    )
