"""Shared fixtures: a sandbox API on 127.0.0.1 and a way to run the tap against it."""

from __future__ import annotations

import contextlib
import io
import json
import sys
import time
from collections import Counter
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import settings

from tap_cdr.sandbox import SandboxConfig, SandboxServer, V3Dataset, start
from tap_cdr.sandbox.data import VccDataset
from tap_cdr.tap import TapCDR
from tests.intake_support import any_store, pg_store, receiver  # noqa: F401 (fixtures)
from tests.reliability.checker import Report

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

# Shared CI machines are noisy: a slow example is not a failure.
settings.register_profile("tap-cdr", deadline=None)
settings.load_profile("tap-cdr")

# A fixed anchor makes every test's dataset the same whatever the day.
ANCHOR = datetime(2024, 3, 10, 12, 0, 0, tzinfo=timezone.utc)


class SyncResult(Report):
    """The messages of an in-process sync; states and final_state come from Report."""

    @property
    def records(self) -> list[dict]:
        return [m["record"] for m in self.messages if m["type"] == "RECORD"]

    @property
    def ids(self) -> list[str]:
        return [r["id"] for r in self.records]

    def ids_of(self, key: str) -> list[str]:
        return [r[key] for r in self.records]


def run_tap(config: dict, state: dict | None = None) -> SyncResult:
    """Run a full sync in-process and collect the Singer messages it writes."""
    out = io.StringIO()
    tap = TapCDR(config=config, state=state, parse_env_config=False)
    with contextlib.redirect_stdout(out):
        tap.sync_all()
    return SyncResult([json.loads(line) for line in out.getvalue().splitlines() if line])


def v3_config(server: SandboxServer, **overrides: Any) -> dict:
    section = {"base_url": server.url, "token": server.config.token, "page_size": 50}
    section.update(overrides.pop("cdr_v3", {}))
    config = {
        "start_date": "2024-03-01T00:00:00Z",
        "end_date": "2024-03-10T13:00:00Z",
        "lookback_minutes": 0,
        "cdr_v3": section,
    }
    config.update(overrides)
    return config


def expected_ids(data: V3Dataset, start: datetime, end: datetime) -> list[str]:
    """Ground truth from the sandbox: ids of calls ending in [start, end)."""
    lo, hi = int(start.timestamp()), int(end.timestamp())
    return [
        data.record(i)["id"]
        for i in range(data.records)
        if lo <= data.ended_epoch(i) < hi and i not in data.hidden
    ]


@pytest.fixture
def start_sandbox() -> Iterator[Callable[..., SandboxServer]]:
    """Start sandboxes from a SandboxConfig on free ports; all stop after the test."""
    servers: list[SandboxServer] = []

    def make(config: SandboxConfig) -> SandboxServer:
        server = start(config)
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.shutdown()
        server.server_close()


def tap_command(tmp_path: Path, config: dict[str, Any], state: dict | None = None) -> list[str]:
    """The command line of the real tap, with config (and state) written to files."""
    stamp = time.monotonic_ns()
    config_path = tmp_path / f"config-{stamp}.json"
    config_path.write_text(json.dumps(config))
    command = [sys.executable, "-m", "tap_cdr.tap", "--config", str(config_path)]
    if state is not None:
        state_path = tmp_path / f"state-{stamp}.json"
        state_path.write_text(json.dumps(state))
        command += ["--state", str(state_path)]
    return command


def vcc_config(server: SandboxServer, **section: Any) -> dict[str, Any]:
    """cdr_by_uuid on a VCC sandbox, lookups only (the sweep would find every call)."""
    return {
        "start_date": "2024-03-08T00:00:00Z",
        "end_date": "2024-03-10T13:00:00Z",
        "cdr_by_uuid": {
            "customer": "sandbox",
            "api_token": "sandbox-vcc-token",
            "base_url": server.url,
            "list_cdrs": False,
            "retry_interval_minutes": 0,
            **section,
        },
    }


def lookups(server: SandboxServer) -> Counter[str]:
    """How often the sandbox was asked for each uuid."""
    return Counter(p.rsplit("/", 1)[-1] for _, p in server.request_log if p.startswith("/v2/cdr/"))


@pytest.fixture
def vcc(start_sandbox) -> Callable[..., SandboxServer]:
    """A VCC Live sandbox of ``records`` calls ending up to ANCHOR."""

    def make(
        records: int = 40, anchor: datetime = ANCHOR, month_basis: str = "local", **kw: Any
    ) -> SandboxServer:
        dataset = VccDataset(records=records, anchor=anchor, month_basis=month_basis)
        return start_sandbox(SandboxConfig(vcc=dataset, **kw))

    return make


@pytest.fixture
def sandbox(start_sandbox) -> Callable[..., SandboxServer]:
    """A v3 sandbox of ``records`` calls, ``step_seconds`` apart, ending at ANCHOR."""

    def make(records: int = 200, step_seconds: int = 900, **kwargs: Any) -> SandboxServer:
        dataset_args = {k: kwargs.pop(k) for k in ("seed", "zone", "extra_fields") if k in kwargs}
        dataset = V3Dataset(
            records=records, anchor=ANCHOR, step_seconds=step_seconds, **dataset_args
        )
        return start_sandbox(SandboxConfig(v3=dataset, **kwargs))

    return make
