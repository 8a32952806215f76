"""Reads a tap's Singer output and checks the delivery guarantees.

Used by the fault matrix on the stdout of the real tap process:
every expected key arrived, no key twice (unless a scenario allows a documented
re-read), the final STATE is valid, and secrets appear nowhere.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable


@dataclass
class Report:
    messages: list[dict] = field(default_factory=list)
    stream: str = "cdr_v3"
    key: str = "id"

    @classmethod
    def read(cls, lines: Iterable[str | bytes], stream: str = "cdr_v3", key: str = "id") -> Report:
        messages = []
        for line in lines:
            text = line.decode() if isinstance(line, bytes) else line
            if text.strip():
                messages.append(json.loads(text))
        return cls(messages, stream, key)

    @property
    def keys(self) -> list[str]:
        return [
            m["record"][self.key]
            for m in self.messages
            if m["type"] == "RECORD" and m["stream"] == self.stream
        ]

    @property
    def duplicates(self) -> int:
        return sum(n - 1 for n in Counter(self.keys).values())

    @property
    def states(self) -> list[dict]:
        return [m["value"] for m in self.messages if m["type"] == "STATE"]

    @property
    def final_state(self) -> dict:
        return self.states[-1]

    def bookmark(self) -> datetime:
        value = self.final_state["bookmarks"][self.stream]["replication_key_value"]
        return datetime.fromisoformat(value)

    def assert_complete(self, expected: Iterable[str], *, allow_duplicates: bool = False) -> None:
        expected = set(expected)
        received = set(self.keys)
        missing = expected - received
        assert not missing, (
            f"{len(missing)} expected keys never arrived, e.g. {sorted(missing)[:3]}"
        )
        unexpected = received - expected
        assert not unexpected, f"unexpected keys: {sorted(unexpected)[:3]}"
        if not allow_duplicates:
            assert self.duplicates == 0, f"{self.duplicates} keys arrived twice"

    def assert_valid_final_state(self, end: datetime) -> None:
        bookmarks = self.final_state["bookmarks"][self.stream]
        assert bookmarks["replication_key"] == "time_ended"
        assert self.bookmark() == end
        assert "progress_markers" not in bookmarks


def assert_no_secret(secret: str, *texts: str | bytes) -> None:
    for text in texts:
        data = text.encode() if isinstance(text, str) else text
        assert secret.encode() not in data, "a secret leaked into the output"
