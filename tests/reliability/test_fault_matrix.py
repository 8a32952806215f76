"""The fault matrix: each scenario syncs a known sandbox dataset through the real tap
process, pipes its stdout into the checker, and asserts zero records lost.

Every scenario also runs the tap at DEBUG and greps stdout, stderr and the final
state for the credential.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone

import pytest

from tap_cdr.sandbox import SandboxConfig, V3Dataset, start
from tap_cdr.sandbox.faults import Faults
from tests.conftest import ANCHOR, expected_ids, tap_command
from tests.reliability.checker import Report, assert_no_secret

START = datetime(2024, 3, 6, tzinfo=timezone.utc)
END = datetime(2024, 3, 10, 13, tzinfo=timezone.utc)
LOOKBACK = timedelta(minutes=120)
RECORDS = 300
STEP = 1200  # a call every 20 minutes: 300 calls over 100 hours


@pytest.fixture
def world(tmp_path):
    """A sandbox with a per-test secret, and a runner for the real tap process."""
    servers = []

    class World:
        secret = f"tok-{secrets.token_hex(12)}"
        api_key = f"key-{secrets.token_hex(12)}"

        def sandbox(self, **faults):
            late = faults.pop("late", 0)
            config = SandboxConfig(
                v3=V3Dataset(records=RECORDS, anchor=ANCHOR, step_seconds=STEP),
                token=self.secret,
                api_key=self.api_key,
                faults=Faults(),
            )
            config.faults.update(faults)
            config.v3.hidden.update(range(RECORDS - late, RECORDS))
            self.server = start(config)
            servers.append(self.server)
            return self.server

        def config(self, **overrides):
            section = {"base_url": self.server.url, "token": self.secret, "page_size": 25}
            section.update(overrides.pop("cdr_v3", {}))
            config = {
                "start_date": START.isoformat(),
                "end_date": END.isoformat(),
                "lookback_minutes": int(LOOKBACK.total_seconds() // 60),
                "max_retry_wait_seconds": 0.2,
                "request_timeout_seconds": 5,
                "cdr_v3": section,
            }
            config.update(overrides)
            return config

        def expected(self, start=START):
            return expected_ids(self.server.config.v3, start, END)

        def popen(self, config, state=None):
            args = tap_command(tmp_path, config, state)
            env = {**os.environ, "TAP_CDR_LOGLEVEL": "DEBUG"}
            return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)

        def run(self, config, state=None, *, expect_ok=True):
            proc = self.popen(config, state)
            out, err = proc.communicate(timeout=300)
            report = Report.read(out.splitlines())
            for secret in (self.secret, self.api_key):
                assert_no_secret(secret, out, err, json.dumps(report.states))
            if expect_ok:
                assert proc.returncode == 0, err.decode()[-3000:]
            report.returncode, report.stderr = proc.returncode, err.decode()
            return report

        def second_run_rereads_only_lookback(self, first: Report, config):
            second = self.run(config, state=first.final_state)
            second.assert_complete(self.expected(END - LOOKBACK))
            second.assert_valid_final_state(END)

    yield World()
    for server in servers:
        server.shutdown()
        server.server_close()


SCENARIOS = {
    "latency": {"latency_ms": 15},
    "429 with Retry-After": {"status_429": 3, "retry_after": 0.3},
    "429 at a rate": {"rate_429": 0.15, "retry_after": 0.05},
    "500 burst": {"status_500": 3},
    "502 burst": {"status_502": 3},
    "503 burst": {"status_503": 3},
    "connection reset mid-body": {"reset": 2},
    "truncated body": {"truncate": 2},
    "malformed JSON": {"malformed": 2},
    "envelope without data": {"no_data": 2},
    "data not a list": {"data_not_list": 2},
}


@pytest.mark.parametrize("faults", SCENARIOS.values(), ids=SCENARIOS.keys())
def test_recoverable_fault_loses_nothing(world, faults, matrix_row):
    server = world.sandbox(**faults)
    config = world.config()
    first = world.run(config)
    first.assert_complete(world.expected())
    matrix_row(len(world.expected()), len(set(first.keys)), first.duplicates, "recovered")
    first.assert_valid_final_state(END)
    fired = dict(server.config.faults.fired)
    assert fired, "the fault never fired: the scenario tested nothing"
    world.second_run_rereads_only_lookback(first, config)


def test_retry_after_is_honoured_without_jitter(world, matrix_row):
    # Retry-After is whole seconds (RFC 9110); the first exponential wait would be
    # 1 s jittered down, so "2.0 s" can only be the server's value, unjittered.
    server = world.sandbox(status_429=2, retry_after=2)
    started = time.monotonic()
    report = world.run(world.config(max_retry_wait_seconds=5))
    report.assert_complete(world.expected())
    matrix_row(len(world.expected()), len(set(report.keys)), report.duplicates, "waited 2 x 2 s")
    assert time.monotonic() - started >= 4
    assert server.config.faults.fired["status_429"] == 2
    assert report.stderr.count("retrying in 2.0 s") == 2


def test_request_that_never_answers_times_out_and_is_retried(world, matrix_row):
    server = world.sandbox(hang=1, hang_seconds=30)
    started = time.monotonic()
    report = world.run(world.config(request_timeout_seconds=1))
    report.assert_complete(world.expected())
    matrix_row(
        len(world.expected()), len(set(report.keys)), report.duplicates, "timed out, retried"
    )
    assert server.config.faults.fired["hang"] == 1
    assert time.monotonic() - started < 25


def test_401_once_refreshes_the_token(world, matrix_row):
    server = world.sandbox(expire_tokens=1)
    config = world.config(cdr_v3={"token": None, "api_key": world.api_key})
    del config["cdr_v3"]["token"]
    report = world.run(config)
    report.assert_complete(world.expected())
    matrix_row(len(world.expected()), len(set(report.keys)), report.duplicates, "token refreshed")
    assert len([1 for method, path in server.request_log if path == "/v3/auth/token"]) == 2


def test_persistent_server_errors_fail_loudly_after_the_retries(world, matrix_row):
    world.sandbox(status_503=50)
    report = world.run(world.config(max_request_tries=3), expect_ok=False)
    assert report.returncode != 0
    assert "503" in report.stderr and "/v3/cdr" in report.stderr
    matrix_row(
        len(world.expected()),
        len(set(report.keys)),
        report.duplicates,
        "failed loudly, no bookmark",
    )
    # Nothing after the failure claims progress past the data actually delivered.
    assert not any(
        "replication_key_value" in s["bookmarks"].get("cdr_v3", {}) for s in report.states
    )


def test_persistent_malformed_body_is_an_error_not_an_empty_page(world, matrix_row):
    world.sandbox(no_data=50)
    report = world.run(world.config(max_request_tries=3), expect_ok=False)
    assert report.returncode != 0 and "no `data` list" in report.stderr
    assert report.keys == []
    matrix_row(len(world.expected()), 0, 0, "failed loudly, not an empty page")


def test_offset_drift_is_detected_and_the_window_reread(world, matrix_row):
    # Five calls at the head of the window appear after the first page was served.
    world.sandbox(late=5, release_after=1)
    config = world.config(cdr_v3={"window_hours": 24 * 10})
    report = world.run(config)
    report.assert_complete(world.expected())
    assert "changed while it was paged" in report.stderr
    matrix_row(len(world.expected()), len(set(report.keys)), report.duplicates, "window re-read")


def test_late_registered_cdrs_arrive_with_the_next_runs_lookback(world, matrix_row):
    server = world.sandbox(late=4)
    config = world.config()
    first = world.run(config)
    hidden = {server.config.v3.record(i)["id"] for i in server.config.v3.hidden}
    first.assert_complete(set(world.expected()))  # the late ones are not visible yet
    server.config.v3.hidden.clear()
    second = world.run(config, state=first.final_state)
    assert hidden <= set(second.keys)
    union = set(first.keys) | set(second.keys)
    assert union == set(world.expected())
    matrix_row(
        len(world.expected()),
        len(union),
        first.duplicates + second.duplicates,
        f"{len(hidden)} late CDRs in run 2's lookback",
    )


def test_kill_9_mid_backfill_then_resume_from_the_last_state(world, matrix_row):
    world.sandbox(latency_ms=25)
    config = world.config(cdr_v3={"window_hours": 6})
    proc = world.popen(config)
    delivered: list[dict] = []
    window_states = 0
    for line in proc.stdout:
        message = json.loads(line)
        delivered.append(message)
        if message["type"] == "STATE" and "replication_key_value" in message["value"][
            "bookmarks"
        ].get("cdr_v3", {}):
            window_states += 1
            if window_states == 5:
                proc.send_signal(signal.SIGKILL)
                break
    proc.wait(timeout=30)
    proc.stdout.close()
    proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    killed = Report(delivered)
    # The target stored the records and the last STATE it saw.
    resumed = world.run(config, state=killed.final_state)
    assert set(killed.keys) | set(resumed.keys) == set(world.expected())
    resumed.assert_valid_final_state(END)
    assert resumed.duplicates == 0
    matrix_row(
        len(world.expected()),
        len(set(killed.keys) | set(resumed.keys)),
        resumed.duplicates,
        f"killed after {len(set(killed.keys))}, resumed",
    )


def test_vcc_secret_never_leaks_and_faults_are_retried(tmp_path, matrix_row):
    from tap_cdr.sandbox.data import VccDataset

    token = f"vcc-{secrets.token_hex(12)}"
    server = start(
        SandboxConfig(
            vcc=VccDataset(records=8, anchor=ANCHOR),
            vcc_token=token,
            faults=Faults(counts={"status_503": 2, "reset": 1}),
        )
    )
    data = server.config.vcc
    items = ["{:04d}/{:02d}/{}".format(*data.filed_under(i), data.uuids[i]) for i in range(8)]
    config = {
        "max_retry_wait_seconds": 0.2,
        "cdr_by_uuid": {
            "customer": "sandbox",
            "api_token": token,
            "base_url": server.url,
            "uuids": items,
        },
    }
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    proc = subprocess.run(
        [sys.executable, "-m", "tap_cdr.tap", "--config", str(path)],
        capture_output=True,
        timeout=120,
        env={**os.environ, "TAP_CDR_LOGLEVEL": "DEBUG"},
    )
    server.shutdown()
    server.server_close()
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    report = Report.read(proc.stdout.splitlines(), stream="cdr_by_uuid", key="uuid")
    report.assert_complete(data.uuids)
    assert_no_secret(token, proc.stdout, proc.stderr)
    matrix_row(8, len(set(report.keys)), report.duplicates, "cdr_by_uuid: 503 x2 + reset")
