"""Singer output: the SDK's msgspec writer, writing stdout in large chunks.

The SDK's writers flush stdout after every message, one system call per record, and
even without the flushes a file object writes every 8 KB. Each write releases the GIL,
and while pages are fetched concurrently the main thread then waits for the fetching
threads to hand it back (up to the 5 ms switch interval), which made writing the
slowest part of a concurrent run. Here RECORD lines collect in a buffer that is written
at 1 MB, and every other message (SCHEMA, STATE, ...) writes and flushes it, so a
STATE never reaches the target before the records it covers, and a process killed
mid-window loses only records whose STATE was never sent either.

A message is never cut in two: a SIGINT or SIGTERM that arrives while one is being
written takes effect once it is written (`tap_cdr.cli`).
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import sys
from typing import TYPE_CHECKING, Any

import msgspec
from singer_sdk.contrib.msgspec import MsgSpecWriter, enc_hook
from singer_sdk.singerlib import RecordMessage, StateMessage

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from typing import BinaryIO

    from singer_sdk.singerlib.encoding.simple import Message

if sys.version_info >= (3, 12):
    from typing import override
else:
    from typing_extensions import override

_encoder = msgspec.json.Encoder(enc_hook=enc_hook, decimal_format="number")
CHUNK_BYTES = 1 << 20


class OutputError(Exception):
    """Standard output cannot be written (a full disk, a loader that went away)."""


class BufferedMsgSpecWriter(MsgSpecWriter):
    @override
    def __init__(self) -> None:
        super().__init__()
        self._pending = bytearray()
        #: The last STATE line written: what a run stopped by a signal ends with.
        self.last_state: bytes | None = None
        #: Set while a message is being written; a signal handler that finds it set
        #: leaves `after_write` to be called once the write is complete.
        self.writing = False
        self.after_write: Callable[[], None] | None = None

    @override
    def write_message(self, message: Message) -> None:
        with self._whole():
            start = len(self._pending)
            _encoder.encode_into(message.to_dict(), self._pending, -1)  # -1: append
            self._pending.extend(b"\n")
            if isinstance(message, StateMessage):
                self.last_state = bytes(self._pending[start:])
            is_record = isinstance(message, RecordMessage)
            if not is_record or len(self._pending) >= CHUNK_BYTES:
                self._write_pending(flush=not is_record)

    def flush(self) -> None:
        """Write what is buffered (the streams call it at each commit point)."""
        with self._whole():
            if self._pending:
                self._write_pending(flush=True)

    def starting_state(self, state: dict[str, Any]) -> None:
        """The state the run started from: what a run stopped before its first STATE
        ends with (an empty one would lose the bookmarks)."""
        if state:
            line = bytearray()
            _encoder.encode_into(StateMessage(value=state).to_dict(), line)
            self.last_state = bytes(line) + b"\n"

    def end_interrupted(self) -> None:
        """Write the records buffered, then the last STATE again, so that the output
        ends with the state a resumed run starts from (an empty one if the run had
        neither a state to start from nor a commit yet)."""
        self._pending.extend(self.last_state or b'{"type":"STATE","value":{}}\n')
        self._write_pending(flush=True)

    @contextlib.contextmanager
    def _whole(self) -> Iterator[None]:
        self.writing = True
        try:
            yield
        finally:
            self.writing = False
        if self.after_write is not None:
            after, self.after_write = self.after_write, None
            after()

    def _write_pending(self, *, flush: bool) -> None:
        try:
            out = getattr(sys.stdout, "buffer", None)
            if out is None:  # a text stream without a buffer (tests capturing stdout)
                sys.stdout.write(self._pending.decode())
            else:
                _write_all(out, self._pending)
            self._pending.clear()
            if flush:
                sys.stdout.flush()
        except OSError as exc:
            raise output_error(exc) from None


def output_error(exc: OSError) -> OutputError:
    """Standard output failed: say why in words, and silence it for good."""
    _discard_stdout()
    if exc.errno == errno.EPIPE:
        cause = "the loader it is piped to has exited: see the loader's log"
    elif exc.errno == errno.ENOSPC:
        cause = "the disk it is written to is full"
    else:
        cause = exc.strerror or type(exc).__name__
    return OutputError(f"tap-cdr: cannot write its output to standard output: {cause}")


def _write_all(out: BinaryIO, data: bytearray) -> None:
    """Write every byte. With PYTHONUNBUFFERED (common in containers) stdout is a raw
    file, whose write may stop short: at a signal, a pipe that was full writes only
    what fitted before it. A stdout left non-blocking writes nothing while the pipe is
    full: wait until it can take more rather than spin."""
    with memoryview(data) as view:
        done = 0
        while done < len(view):
            written = out.write(view[done:])
            if not written:
                select.select([], [out], [])
            done += written or 0


def _discard_stdout() -> None:
    """Point fd 1 at /dev/null: Python flushes stdout again at exit, and would print
    a second error about the same broken output."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
