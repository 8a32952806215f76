"""Singer output: the SDK's msgspec writer, without a flush per record.

The SDK's writers flush stdout after every message, one system call per record. Here
RECORD lines are buffered and every other message (SCHEMA, STATE, ...) flushes, so a
STATE never reaches the target before the records it covers, and a process killed
mid-window loses only records whose STATE was never sent either.
"""

from __future__ import annotations

import sys

import msgspec
from singer_sdk.contrib.msgspec import MsgSpecWriter, enc_hook
from singer_sdk.singerlib import RecordMessage
from singer_sdk.singerlib.encoding.simple import Message

_encoder = msgspec.json.Encoder(enc_hook=enc_hook, decimal_format="number")


class BufferedMsgSpecWriter(MsgSpecWriter):
    def __init__(self) -> None:
        super().__init__()
        self._line = bytearray(256)

    def write_message(self, message: Message) -> None:
        _encoder.encode_into(message.to_dict(), self._line)
        self._line.extend(b"\n")
        out = getattr(sys.stdout, "buffer", None)
        if out is None:  # a text stream without a buffer (tests capturing stdout)
            sys.stdout.write(self._line.decode())
        else:
            out.write(self._line)
        if not isinstance(message, RecordMessage):
            sys.stdout.flush()
