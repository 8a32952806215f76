"""The tap as a process, at its edges: what a failure says (one line, naming the setting),
what the exit code is (1 on failure, 130/143 when stopped by a signal, with a last STATE
that resumes correctly), typos caught before any request, and quiet logs."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
from datetime import datetime, timedelta, timezone

import pytest

from tap_cdr.sandbox import SandboxConfig
from tap_cdr.sandbox.data import VccDataset
from tests.conftest import ANCHOR, expected_ids, run_tap, tap_command, v3_config
from tests.reliability.checker import Report

V3_START = datetime(2024, 3, 1, tzinfo=timezone.utc)
V3_END = datetime(2024, 3, 10, 13, tzinfo=timezone.utc)


def run_cli(tmp_path, config, state=None, **popen) -> subprocess.CompletedProcess[str]:
    popen.setdefault("stdout", subprocess.PIPE)
    return subprocess.run(
        tap_command(tmp_path, config, state),
        stderr=subprocess.PIPE,
        text=True,
        timeout=120,
        check=False,
        **popen,
    )


def lines_at(stderr: str, level: str) -> list[str]:
    return [line for line in stderr.splitlines() if f"| {level} " in line]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def vcc_section(url: str, **extra) -> dict:
    return {"customer": "sandbox", "api_token": "sandbox-vcc-token", "base_url": url, **extra}


# -- one line per failure ------------------------------------------------------------


def test_a_refused_token_is_one_error_line_naming_the_setting(sandbox, tmp_path):
    server = sandbox(records=20)
    config = v3_config(server, cdr_v3={"token": "not-the-token-7f3e"})
    proc = run_cli(tmp_path, config)
    assert proc.returncode == 1
    (error,) = lines_at(proc.stderr, "ERROR")
    assert "401" in error and "`cdr_v3.token` was refused" in error
    assert "Traceback" not in proc.stderr and "not-the-token-7f3e" not in proc.stderr


@pytest.mark.parametrize("stream", ["cdr_v3", "cdr_by_uuid"])
def test_an_unreachable_host_names_base_url_and_the_address_tried(tmp_path, stream):
    port = closed_port()
    url = f"http://127.0.0.1:{port}"
    section = {"base_url": url, "token": "t"} if stream == "cdr_v3" else vcc_section(url)
    config = {
        "start_date": "2024-03-01T00:00:00Z",
        "end_date": "2024-03-02T00:00:00Z",
        "max_request_tries": 2,
        "max_retry_wait_seconds": 0,
        stream: section,
    }
    proc = run_cli(tmp_path, config)
    assert proc.returncode == 1
    (error,) = lines_at(proc.stderr, "ERROR")
    assert f"{stream}: GET http://127.0.0.1:{port}/" in error
    assert "connection refused" in error and f"`{stream}.base_url`" in error
    # One WARNING line per retry, and neither backoff's lines nor a traceback.
    (retry,) = lines_at(proc.stderr, "WARNING")
    assert "attempt 1 failed" in retry
    assert not re.search(r"Backing off|Giving up|Traceback|HTTPConnectionPool", proc.stderr)


def test_each_retry_is_one_warning_line(sandbox, tmp_path):
    server = sandbox(records=40)
    server.config.faults.update({"status_503": 2})
    config = v3_config(server, max_retry_wait_seconds=0)
    proc = run_cli(tmp_path, config)
    assert proc.returncode == 0, proc.stderr
    warnings = lines_at(proc.stderr, "WARNING")
    assert [re.search(r"attempt (\d) failed", w)[1] for w in warnings] == ["1", "2"]
    assert "Backing off" not in proc.stderr


def test_an_output_that_cannot_be_written_is_one_line_and_a_failure(sandbox, tmp_path):
    server = sandbox(records=40)
    with open("/dev/full", "wb") as full:  # noqa: PTH123
        proc = run_cli(tmp_path, v3_config(server), stdout=full)
    assert proc.returncode == 1
    (error,) = lines_at(proc.stderr, "ERROR")
    assert "cannot write its output" in error and "full" in error
    assert "Traceback" not in proc.stderr and "Exception ignored" not in proc.stderr


def test_a_loader_that_goes_away_is_one_line_and_a_failure(sandbox, tmp_path):
    server = sandbox(records=2000, step_seconds=300)
    command = tap_command(tmp_path, v3_config(server, cdr_v3={"page_size": 20}))
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    proc.stdout.readline()
    proc.stdout.close()  # the loader exits
    assert proc.stderr is not None
    with proc.stderr:
        stderr = proc.stderr.read()
    proc.wait(timeout=120)
    assert proc.returncode == 1
    (error,) = lines_at(stderr, "ERROR")
    assert "loader it is piped to has exited" in error
    assert "Traceback" not in stderr and "Exception ignored" not in stderr


# -- typos and dates -----------------------------------------------------------------


def test_unknown_keys_stop_the_run_before_any_request_naming_the_closest_setting(sandbox, tmp_path):
    server = sandbox(records=20)
    config = {
        "start_dat": "2024-03-01T00:00:00Z",
        "cdr_v3": {"base_url": server.url, "token": "sandbox-token", "page_sise": 10},
        "cdr_by_uuid": {
            "customr": "sandbox",
            "customer": "sandbox",
            "api_token": "sandbox-vcc-token",
            "base_url": server.url,
            "intake_stor": "sqlite:///intake.db",
        },
    }
    proc = run_cli(tmp_path, config)
    assert proc.returncode == 1
    errors = lines_at(proc.stderr, "ERROR")
    for wrong, owner, right in [
        ("start_dat", "tap-cdr", "start_date"),
        ("page_sise", "cdr_v3", "page_size"),
        ("customr", "cdr_by_uuid", "customer"),
        ("intake_stor", "cdr_by_uuid", "intake_store"),
    ]:
        wanted = f"'{wrong}' is not a setting of {owner}; did you mean '{right}'?"
        assert any(wanted in line for line in errors), wanted
    assert errors[-1].endswith("tap-cdr: 4 problems in the config (above); nothing was requested")
    assert server.request_log == []


def test_the_sdk_settings_and_those_meltano_passes_are_known(sandbox, tmp_path):
    server = sandbox(records=20)
    config = v3_config(
        server,
        stream_maps={"cdr_v3": {"recording_url": "__NULL__"}},
        stream_map_config={},
        flattening_enabled=False,
        flattening_max_depth=1,
        metrics_log_level="WARNING",
        batch_config=None,
    )
    proc = run_cli(tmp_path, config)
    assert proc.returncode == 0, proc.stderr


def test_start_after_end_is_an_error_naming_both(sandbox, tmp_path):
    server = sandbox(records=20)
    config = v3_config(server, start_date="2024-03-05T00:00:00Z", end_date="2024-03-01T00:00:00Z")
    proc = run_cli(tmp_path, config)
    assert proc.returncode == 1
    (error,) = lines_at(proc.stderr, "ERROR")
    assert "`start_date` (2024-03-05T00:00:00+00:00) must be before `end_date`" in error
    assert server.request_log == []


def test_dates_in_the_future_are_a_warning_naming_both_and_read_only_what_has_ended(
    sandbox, tmp_path
):
    server = sandbox(records=20)
    future = datetime.now(timezone.utc) + timedelta(days=30)
    config = v3_config(server, start_date="2024-03-10T00:00:00Z", end_date=future.isoformat())
    proc = run_cli(tmp_path, config)
    assert proc.returncode == 0, proc.stderr
    (warning,) = lines_at(proc.stderr, "WARNING")
    assert "`start_date` (2024-03-10T00:00:00+00:00) and `end_date`" in warning
    assert "end_date lies in the future" in warning
    # The bookmark stops at what has settled, not at end_date: later runs read on.
    bookmark = Report.read(proc.stdout.splitlines()).final_state["bookmarks"]["cdr_v3"]
    assert bookmark["replication_key_value"] < datetime.now(timezone.utc).isoformat()

    config["start_date"] = (future - timedelta(days=1)).isoformat()
    proc = run_cli(tmp_path, config)
    (warning,) = lines_at(proc.stderr, "WARNING")
    assert "start_date and end_date lie in the future" in warning
    assert "this run loads nothing" in warning


def test_discover_without_a_stream_says_which_settings_enable_which(tmp_path):
    command = [*tap_command(tmp_path, {}), "--discover"]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0
    assert json.loads(proc.stdout) == {"streams": []}
    (warning,) = lines_at(proc.stderr, "WARNING")
    assert "a `cdr_v3` object (base_url, and token or api_key) enables cdr_v3" in warning
    assert "a `cdr_by_uuid` object (customer and api_token) enables cdr_by_uuid" in warning


# -- logs ----------------------------------------------------------------------------


def test_metrics_are_off_at_info_and_tagged_with_the_route_each_request_used(
    start_sandbox, tmp_path
):
    dataset = VccDataset(records=60, anchor=ANCHOR, step_seconds=3600)
    server = start_sandbox(SandboxConfig(vcc=dataset))
    config = {
        "start_date": "2024-03-09T00:00:00Z",
        "end_date": "2024-03-10T13:00:00Z",
        "cdr_by_uuid": vcc_section(server.url, uuids=["00000000-0000-4000-8000-000000000001"]),
    }
    quiet = run_cli(tmp_path, config)
    assert quiet.returncode == 0, quiet.stderr
    assert "METRIC" not in quiet.stderr
    assert "Pagination stopped" not in quiet.stderr

    config["metrics_log_level"] = "INFO"
    loud = run_cli(tmp_path, config)
    points = [
        json.loads(line.split("METRIC: ", 1)[1])
        for line in loud.stderr.splitlines()
        if "METRIC: " in line
    ]
    routes = {
        p["tags"]["endpoint"]: p["tags"].get("context", {})
        for p in points
        if p["metric"] == "http_request_duration"
    }
    assert set(routes) == {"/v2/cdrs/{year}/{month}/{day}", "/v2/cdr/{year}/{month}/{uuid}"}
    assert "day" in routes["/v2/cdrs/{year}/{month}/{day}"]
    assert "uuid" in routes["/v2/cdr/{year}/{month}/{uuid}"]


def test_a_normal_run_of_both_vendors_logs_no_warning_and_no_error(start_sandbox, tmp_path):
    """The golden log: what the demo does (both vendors, the sweep, announced calls of
    which some are late, then a second run), at INFO, says nothing alarming."""
    from tap_cdr.sandbox import V3Dataset

    dataset = VccDataset(records=200, anchor=ANCHOR, step_seconds=1200)
    server = start_sandbox(
        SandboxConfig(v3=V3Dataset(records=200, anchor=ANCHOR, step_seconds=900), vcc=dataset)
    )
    dataset.hidden.update({198, 199})  # registered late
    announced = tmp_path / "uuids.txt"
    announced.write_text("".join(f"{dataset.uuids[i]}\n" for i in range(150, 200)))
    config = v3_config(server)
    config["start_date"] = "2024-03-07T00:00:00Z"
    config["cdr_by_uuid"] = vcc_section(
        server.url, uuids_file=str(announced), retry_interval_minutes=0
    )
    first = run_cli(tmp_path, config)
    assert first.returncode == 0
    dataset.hidden.clear()
    state = Report.read(first.stdout.splitlines()).final_state
    second = run_cli(tmp_path, config, state)
    assert second.returncode == 0
    for run in (first, second):
        alarming = lines_at(run.stderr, "WARNING") + lines_at(run.stderr, "ERROR")
        assert alarming == [], alarming
    assert "pending 2" in first.stderr  # the late calls: said at INFO, in the summary


# -- signals -------------------------------------------------------------------------


def slow_v3(sandbox):
    server = sandbox(records=600, step_seconds=1200)
    server.config.faults.update({"latency_ms": 15})
    config = v3_config(server, cdr_v3={"page_size": 10, "window_hours": 6, "max_concurrency": 1})
    return server, config, "id", sorted(expected_ids(server.config.v3, V3_START, V3_END))


def slow_vcc(start_sandbox):
    dataset = VccDataset(records=600, anchor=ANCHOR, step_seconds=1200)
    server = start_sandbox(SandboxConfig(vcc=dataset))
    server.config.faults.update({"latency_ms": 15})
    start, end = datetime(2024, 3, 3, tzinfo=timezone.utc), V3_END
    config = {
        "start_date": start.isoformat(),
        "end_date": end.isoformat(),
        "cdr_by_uuid": vcc_section(server.url, page_size=10, max_concurrency=1),
    }
    truth = sorted(
        dataset.uuids[i]
        for i in range(dataset.records)
        if start.timestamp() <= dataset.ended_epoch(i) < end.timestamp()
    )
    return server, config, "uuid", truth


@pytest.mark.parametrize("stream", ["cdr_v3", "cdr_by_uuid"])
@pytest.mark.parametrize(
    ("signum", "after_lines"),
    [(signal.SIGTERM, 1), (signal.SIGINT, 60), (signal.SIGTERM, 250), (signal.SIGINT, 450)],
)
def test_a_signal_ends_the_run_with_128_plus_it_and_a_state_that_resumes(
    request, tmp_path, stream, signum, after_lines
):
    _server, config, key, truth = (
        slow_v3(request.getfixturevalue("sandbox"))
        if stream == "cdr_v3"
        else slow_vcc(request.getfixturevalue("start_sandbox"))
    )
    log = tmp_path / "stderr.log"
    with log.open("w") as stderr_file:
        proc = subprocess.Popen(
            tap_command(tmp_path, config), stdout=subprocess.PIPE, stderr=stderr_file, text=True
        )
    assert proc.stdout is not None
    lines = [proc.stdout.readline() for _ in range(after_lines)]
    proc.send_signal(signum)
    with proc.stdout:
        lines += proc.stdout.readlines()
    proc.wait(timeout=60)
    stderr = log.read_text()
    assert proc.returncode == 128 + signum, stderr
    assert all(line.endswith("\n") for line in lines)  # no message cut in two
    first = Report.read(lines)  # every line is a whole JSON message
    assert first.messages[-1]["type"] == "STATE"
    assert f"stopped by {signal.Signals(signum).name}" in stderr
    assert "Traceback" not in stderr
    emitted = [m["record"][key] for m in first.messages if m["type"] == "RECORD"]
    assert len(emitted) < len(truth)  # it was stopped mid-sync

    second = run_tap(config, state=first.final_state)
    assert sorted(set(emitted) | set(second.ids_of(key))) == truth
    assert set(second.ids_of(key)) <= set(truth)


def test_every_byte_is_written_when_stdout_is_raw_and_writes_short(monkeypatch):
    """With PYTHONUNBUFFERED stdout is a raw file: a write interrupted by a signal, or
    to a pipe that is nearly full, stops short, and the rest must still be written."""
    from types import SimpleNamespace

    from singer_sdk.singerlib import RecordMessage, StateMessage

    from tap_cdr.writer import BufferedMsgSpecWriter

    class ShortWrites:
        def __init__(self) -> None:
            self.data = bytearray()

        def write(self, chunk) -> int:
            taken = bytes(chunk[:7])
            self.data += taken
            return len(taken)

    raw = ShortWrites()
    monkeypatch.setattr("sys.stdout", SimpleNamespace(buffer=raw, flush=lambda: None))
    writer = BufferedMsgSpecWriter()
    for n in range(3):
        writer.write_message(RecordMessage(stream="s", record={"id": n, "x": "é" * n}))
    writer.write_message(StateMessage(value={"bookmarks": {"s": {"n": 2}}}))
    lines = raw.data.decode().splitlines()
    assert [json.loads(line)["type"] for line in lines] == ["RECORD"] * 3 + ["STATE"]
    assert [json.loads(line)["record"]["x"] for line in lines[:3]] == ["", "é", "éé"]
