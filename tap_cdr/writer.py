"""Singer output: the SDK's msgspec writer, writing stdout in large chunks.

The SDK's writers flush stdout after every message, one system call per record, and
even without the flushes a file object writes every 8 KB. Each write releases the GIL,
and while pages are fetched concurrently the main thread then waits for the fetching
threads to hand it back (up to the 5 ms switch interval), which made writing the
slowest part of a concurrent run. Here RECORD lines collect in a buffer that is written
at 1 MB, and every other message (SCHEMA, STATE, ...) writes and flushes it, so a
STATE never reaches the target before the records it covers, and a process killed
mid-window loses only records whose STATE was never sent either.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import msgspec
from singer_sdk.contrib.msgspec import MsgSpecWriter, enc_hook
from singer_sdk.singerlib import RecordMessage

if TYPE_CHECKING:
    from singer_sdk.singerlib.encoding.simple import Message

if sys.version_info >= (3, 12):
    from typing import override
else:
    from typing_extensions import override

_encoder = msgspec.json.Encoder(enc_hook=enc_hook, decimal_format="number")
CHUNK_BYTES = 1 << 20


class BufferedMsgSpecWriter(MsgSpecWriter):
    @override
    def __init__(self) -> None:
        super().__init__()
        self._pending = bytearray()

    @override
    def write_message(self, message: Message) -> None:
        _encoder.encode_into(message.to_dict(), self._pending, -1)  # -1: append
        self._pending.extend(b"\n")
        is_record = isinstance(message, RecordMessage)
        if not is_record or len(self._pending) >= CHUNK_BYTES:
            self._write_pending(flush=not is_record)

    def flush(self) -> None:
        """Write what is buffered (the streams call it at each commit point)."""
        if self._pending:
            self._write_pending(flush=True)

    def _write_pending(self, *, flush: bool) -> None:
        out = getattr(sys.stdout, "buffer", None)
        if out is None:  # a text stream without a buffer (tests capturing stdout)
            sys.stdout.write(self._pending.decode())
        else:
            out.write(self._pending)
        self._pending.clear()
        if flush:
            sys.stdout.flush()
