"""Injected failures and latency for the sandbox's data routes.

Faults are counters ("the next N requests") or rates, set on the command line
(``--fault NAME=VALUE``), or at run time with ``POST /_sandbox/faults`` and a JSON object
of the same names. ``POST /_sandbox/release`` makes late-registered CDRs visible.
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass, field, fields

# One-shot faults, each answering the next N data requests.
COUNTED = (
    "status_500",
    "status_502",
    "status_503",
    "status_429",
    "reset",  # connection closed halfway through the body
    "truncate",  # Content-Length promised, half the body sent
    "malformed",  # 200 with a body that is not JSON
    "no_data",  # 200 with an envelope that has no `data` list
    "data_not_list",  # 200 with `data` an object
    "hang",  # no answer at all (the client's timeout must fire)
    "expire_tokens",  # invalidate every issued token once (v3: 401 then refresh)
)


@dataclass
class Faults:
    latency_ms: float = 0.0
    retry_after: float = 1.0  # seconds, sent with every 429
    rate_429: float = 0.0  # probability of a 429 on any data request
    hang_seconds: float = 600.0
    # Rows hidden now (late registration) become visible after this many list
    # requests: -1 never (until /_sandbox/release).
    release_after: int = -1
    # Counted faults wait until this many data requests have been served.
    start_after: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    seed: int = 7

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._rng = random.Random(self.seed)
        self.fired: dict[str, int] = {}
        self.served = 0

    def update(self, values: dict) -> None:
        names = {f.name for f in fields(self)} - {"counts", "seed"}
        with self._lock:
            for key, value in values.items():
                if key in COUNTED:
                    self.counts[key] = int(value)
                elif key in names:
                    setattr(self, key, type(getattr(self, key))(value))
                else:
                    raise ValueError(
                        f"unknown fault {key!r}; known: {sorted(names | set(COUNTED))}"
                    )

    def take(self) -> str | None:
        """The fault to apply to this data request, if any (consumes one count)."""
        with self._lock:
            self.served += 1
            if self.served <= self.start_after:
                return None
            for name in COUNTED:
                if self.counts.get(name, 0) > 0:
                    self.counts[name] -= 1
                    self.fired[name] = self.fired.get(name, 0) + 1
                    return name
            if self.rate_429 and self._rng.random() < self.rate_429:
                self.fired["rate_429"] = self.fired.get("rate_429", 0) + 1
                return "status_429"
        return None


def parse_cli(values: list[str]) -> dict:
    parsed = {}
    for value in values:
        key, sep, number = value.partition("=")
        if not sep:
            raise ValueError(f"--fault expects NAME=VALUE, got {value!r}")
        parsed[key.strip()] = float(number) if "." in number else int(number)
    return parsed
