"""Group commit: the receiver's one writer to the store.

Each request hands its event to a writer thread and waits. The writer takes every
event waiting, commits them in one transaction (one sync to disk for all), then
answers each request with its own result. Under load the batches grow by themselves,
so the store's cost per event falls as the rate rises, while a lone event is committed
at once. A 200 is still only ever sent after that event's commit.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tap_cdr.intake.store import record_delivery

if TYPE_CHECKING:
    from datetime import datetime

    from sqlalchemy.engine import Engine

MAX_BATCH = 256
log = logging.getLogger("tap_cdr.intake")


@dataclass(frozen=True)
class Delivery:
    uuid: str
    month: str | None
    projectid: int | None
    received_at: datetime
    loop: asyncio.AbstractEventLoop
    answer: asyncio.Future[int]


class GroupCommitter:
    """The writer thread and its queue (see the module doc)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.waiting: queue.SimpleQueue[Delivery | None] = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._run, name="intake-writer", daemon=True)
        self.thread.start()

    async def record(
        self, uuid: str, month: str | None, projectid: int | None, received_at: datetime
    ) -> int:
        """Commit one delivery; how many times this call has been delivered (1: new).
        Raises what the commit raised."""
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[int] = loop.create_future()
        self.waiting.put(Delivery(uuid, month, projectid, received_at, loop, answer))
        return await answer

    def close(self) -> None:
        """Commit what is waiting, then stop the writer."""
        self.waiting.put(None)
        self.thread.join(timeout=60)

    def _run(self) -> None:
        while True:
            first = self.waiting.get()
            if first is None:
                return
            batch, stop = [first], False
            while len(batch) < MAX_BATCH:
                try:
                    item = self.waiting.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                batch.append(item)
            self._commit(batch)
            if stop:
                return

    def _commit(self, batch: list[Delivery]) -> None:
        try:
            with self.engine.begin() as conn:
                results = [
                    record_delivery(conn, d.uuid, d.month, d.projectid, d.received_at)
                    for d in batch
                ]
        except Exception as exc:  # noqa: BLE001 (every waiting request is answered with it)
            for delivery in batch:
                delivery.loop.call_soon_threadsafe(_fail, delivery.answer, exc)
            return
        for delivery, deliveries in zip(batch, results, strict=True):
            delivery.loop.call_soon_threadsafe(_succeed, delivery.answer, deliveries)


def _succeed(answer: asyncio.Future[int], deliveries: int) -> None:
    if not answer.done():
        answer.set_result(deliveries)


def _fail(answer: asyncio.Future[int], exc: BaseException) -> None:
    if not answer.done():
        answer.set_exception(exc)
