"""Group commit: the receiver's one writer to the store.

Each request hands its write (an event, a rejection, a health probe) to a writer
thread and waits, at most ``WRITE_TIMEOUT_SECONDS``. The writer takes every write
waiting, commits them in one transaction (one sync to disk for all), then answers each
request with its own result. Under load the batches grow by themselves, so the store's
cost per event falls as the rate rises, while a lone event is committed at once. A 200
is still only ever sent after that event's commit.

A batch whose commit fails is committed again one write at a time, so that only the
write that cannot be stored fails: one bad event never costs another its delivery.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from tap_cdr.intake.store import probe

if TYPE_CHECKING:
    from collections.abc import Callable

    from sqlalchemy.engine import Connection, Engine

    from tap_cdr.intake.metrics import Metrics

MAX_BATCH = 256
WRITE_TIMEOUT_SECONDS = 10.0
log = logging.getLogger("tap_cdr.intake")
T = TypeVar("T")


class StoreUnavailable(Exception):  # noqa: N818 (an outcome: the answer is 503)
    """A write that was not committed. ``reason`` is a metric label."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


@dataclass(frozen=True)
class Write(Generic[T]):
    apply: Callable[[Connection], T]
    counted: bool  # an event or a rejection (not a probe): in the batch size and age
    loop: asyncio.AbstractEventLoop
    answer: asyncio.Future[T]


class GroupCommitter:
    """The writer thread and its queue (see the module doc)."""

    def __init__(self, engine: Engine, metrics: Metrics) -> None:
        self.engine = engine
        self.metrics = metrics
        self.waiting: queue.SimpleQueue[Write[Any] | None] = queue.SimpleQueue()
        self.probing: asyncio.Future[None] | None = None
        self.batch: list[Write[Any]] = []  # the writes being committed
        # The writer's own connection, kept: a checkout from the pool per batch would
        # cost a ping and a rollback each time.
        self.connection: Connection | None = None
        self.thread = threading.Thread(target=self._run, name="intake-writer", daemon=True)
        self.thread.start()

    async def write(
        self, apply: Callable[[Connection], T], timeout: float = WRITE_TIMEOUT_SECONDS
    ) -> T:
        """Commit one write; its result. Raises what the commit raised, or
        `StoreUnavailable` when the writer has stopped or took longer than ``timeout``."""
        return await self._wait(self._submit(apply, counted=True), timeout)

    async def probe(self, timeout: float) -> None:
        """A write that commits (`store.probe`), shared by the callers that ask while one
        is under way, so that a locked store never piles probes up."""
        if self.probing is None or self.probing.done():
            self.probing = self._submit(probe, counted=False)
        await self._wait(self.probing, timeout)

    def _submit(self, apply: Callable[[Connection], T], *, counted: bool) -> asyncio.Future[T]:
        if not self.thread.is_alive():
            raise StoreUnavailable("writer_stopped", "the writer thread has stopped")
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[T] = loop.create_future()
        # Retrieved here, so that the failure of a write whose caller gave up (timeout)
        # is not logged by asyncio as an exception never retrieved.
        answer.add_done_callback(_retrieve)
        self.waiting.put(Write(apply, counted, loop, answer))
        return answer

    @staticmethod
    async def _wait(answer: asyncio.Future[T], timeout: float) -> T:
        try:
            # shield: a caller that gives up leaves the write to the writer.
            return await asyncio.wait_for(asyncio.shield(answer), timeout)
        except asyncio.TimeoutError:
            raise StoreUnavailable("timeout", f"no commit within {timeout:g} s") from None

    def close(self) -> None:
        """Commit what is waiting, then stop the writer."""
        self.waiting.put(None)
        self.thread.join(timeout=60)
        if self.connection is not None:
            self.connection.close()

    def _run(self) -> None:
        try:
            while self._commit_next():
                pass
        except BaseException as exc:  # noqa: BLE001 (the thread ends here: said once, without a traceback)
            log.error(  # noqa: TRY400
                "the writer thread stopped (%s): every write is answered 503 until a restart",
                type(exc).__name__,
            )
            stopped = StoreUnavailable("writer_stopped", "the writer thread has stopped")
            while True:
                for write in self.batch:
                    write.loop.call_soon_threadsafe(_fail, write.answer, stopped)
                try:
                    waiting = self.waiting.get_nowait()
                except queue.Empty:
                    return
                self.batch = [waiting] if waiting is not None else []

    def _commit_next(self) -> bool:
        """Commit the writes waiting; False once asked to stop."""
        first = self.waiting.get()
        if first is None:
            return False
        self.batch = batch = [first]
        going_on = True
        while len(batch) < MAX_BATCH:
            try:
                item = self.waiting.get_nowait()
            except queue.Empty:
                break
            if item is None:
                going_on = False
                break
            batch.append(item)
        try:
            results = self._transaction(batch)
        except Exception as exc:  # noqa: BLE001 (each waiting request is answered with it)
            if len(batch) == 1:
                first.loop.call_soon_threadsafe(_fail, first.answer, exc)
                return going_on
            for write in batch:
                self._commit_alone(write)
            return going_on
        for write, result in zip(batch, results, strict=True):
            write.loop.call_soon_threadsafe(_succeed, write.answer, result)
        return going_on

    def _commit_alone(self, write: Write[Any]) -> None:
        try:
            (result,) = self._transaction([write])
        except Exception as exc:  # noqa: BLE001 (the request is answered with it)
            write.loop.call_soon_threadsafe(_fail, write.answer, exc)
        else:
            write.loop.call_soon_threadsafe(_succeed, write.answer, result)

    def _transaction(self, batch: list[Write[Any]]) -> list[Any]:
        if self.connection is None or self.connection.invalidated:
            # None yet, or lost (the server restarted): a new one.
            if self.connection is not None:
                self.connection.close()
            self.connection = self.engine.connect()
        started = time.perf_counter()
        conn = self.connection
        with conn.begin():
            results = [write.apply(conn) for write in batch]
        counted = sum(write.counted for write in batch)
        if counted:
            self.metrics.commit_seconds.observe(time.perf_counter() - started)
            self.metrics.batch_events.observe(counted)
            self.metrics.last_commit = time.monotonic()
        return results


def _retrieve(answer: asyncio.Future[Any]) -> None:
    if not answer.cancelled():
        answer.exception()


def _succeed(answer: asyncio.Future[Any], result: Any) -> None:
    if not answer.done():
        answer.set_result(result)


def _fail(answer: asyncio.Future[Any], exc: BaseException) -> None:
    if not answer.done():
        answer.set_exception(exc)
