"""The tap as a process, at its edges: what a failure says (one line, naming the setting),
what the exit code is (1 on failure, 130/143 when stopped by a signal, with a last STATE
that resumes correctly), typos caught before any request, and quiet logs."""

from __future__ import annotations

import gzip
import json
import os
import re
import signal
import socket
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

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


@pytest.mark.parametrize(
    ("stream", "credential"),
    [("cdr_v3", "token"), ("cdr_v3", "api_key"), ("cdr_by_uuid", "api_token")],
)
def test_an_unreachable_host_names_base_url_and_the_address_tried(tmp_path, stream, credential):
    """Also when the first request is the token's (api_key): it is retried like any."""
    port = closed_port()
    url = f"http://127.0.0.1:{port}"
    section = {"base_url": url, credential: "t"} if stream == "cdr_v3" else vcc_section(url)
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
    method = "POST" if credential == "api_key" else "GET"
    assert f"{stream}: {method} http://127.0.0.1:{port}/" in error
    assert "after 2 attempts" in error
    assert "connection refused" in error and f"`{stream}.base_url`" in error
    # One WARNING line per retry, and neither backoff's lines nor a traceback.
    (retry,) = lines_at(proc.stderr, "WARNING")
    assert "attempt 1 failed (ConnectionError: connection refused" in retry
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
        user_agent="my-pipeline/1.0",
        emit_activate_version_messages=False,
        flattening_enabled=False,
        flattening_max_depth=1,
        metrics_log_level="warning",
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


def test_a_sync_without_a_stream_says_so_once(tmp_path):
    proc = run_cli(tmp_path, {})
    assert proc.returncode == 1
    said = [line for line in proc.stderr.splitlines() if "no stream is configured" in line]
    assert len(said) == 1 and "| ERROR" in said[0]


def test_a_sandbox_on_a_taken_port_says_so_in_one_line(sandbox):
    server = sandbox(records=1)
    port = server.url.rsplit(":", 1)[1]
    proc = subprocess.run(
        [sys.executable, "-m", "tap_cdr.sandbox", "--port", port],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 1
    expected = (
        f"tap-cdr-sandbox: cannot listen on 127.0.0.1:{port} (Address already in use): another "
        "sandbox may run there; choose another --port, or --port 0 for a free one"
    )
    assert proc.stderr.strip().splitlines() == [expected]


# -- what a hostile reviewer tried ---------------------------------------------------


def test_a_stopped_batch_run_never_states_a_bookmark_past_its_batches(sandbox, tmp_path):
    """With BATCH messages, the records of a commit sit in a batch file until the batch
    is full: a STATE must not run ahead of the BATCH that holds them."""
    _server, config, key, truth = slow_v3(sandbox)
    config["batch_config"] = {
        "encoding": {"format": "jsonl", "compression": "gzip"},
        "storage": {"root": f"file://{tmp_path}/batches", "prefix": "b-"},
        "batch_size": 100,
    }
    proc = subprocess.Popen(tap_command(tmp_path, config), stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    lines: list[str] = []
    with proc.stdout:
        for line in proc.stdout:
            lines.append(line)
            batched_yet = any(seen.startswith('{"type":"BATCH"') for seen in lines)
            if batched_yet and line.startswith('{"type":"STATE"'):
                proc.send_signal(signal.SIGTERM)  # at the first STATE after a BATCH
                break
        lines += proc.stdout.readlines()
    assert proc.wait(timeout=60) == 143
    first = Report.read(lines)
    batched = [
        json.loads(line)[key]
        for message in first.messages
        if message["type"] == "BATCH"
        for uri in message["manifest"]
        for line in gzip.decompress(Path(uri.removeprefix("file://")).read_bytes()).splitlines()
    ]
    assert 0 < len(batched) < len(truth)
    del config["batch_config"]
    second = run_tap(config, state=first.final_state)
    assert sorted(set(batched) | set(second.ids_of(key))) == truth


def test_a_second_signal_does_not_break_the_stop(sandbox, tmp_path):
    server, config, _key, _truth = slow_v3(sandbox)
    server.config.faults.update({"latency_ms": 400})
    log = tmp_path / "stderr.log"
    with log.open("w") as stderr_file:
        proc = subprocess.Popen(
            tap_command(tmp_path, config), stdout=subprocess.PIPE, stderr=stderr_file, text=True
        )
    assert proc.stdout is not None
    with proc.stdout:
        lines = [proc.stdout.readline() for _ in range(3)]
        proc.send_signal(signal.SIGINT)
        proc.send_signal(signal.SIGTERM)
        lines += proc.stdout.readlines()
    assert proc.wait(timeout=60) == 130
    assert Report.read(lines).messages[-1]["type"] == "STATE"
    stderr = log.read_text()
    assert "Traceback" not in stderr and not lines_at(stderr, "ERROR")


def test_a_sigint_while_the_sdk_loads_is_an_exit_code_not_a_traceback(tmp_path):
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"cdr_v3": {"base_url": "http://127.0.0.1:1", "token": "t"}}))
    proc = subprocess.Popen(
        [sys.executable, "-c", "from tap_cdr.cli import main; main()", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode in (130, -signal.SIGINT)  # or before Python set its handler
    assert "Traceback" not in stderr


@pytest.mark.parametrize(
    ("option", "content", "said"),
    [
        ("--config", "{not json", "--config {path} is not valid JSON"),
        ("--config", None, "--config {path} cannot be read: No such file or directory"),
        ("--config", "[1, 2]", "--config {path}: expected a JSON object, found list"),
        ("--state", '{"bookmarks": []}', "--state {path}: `bookmarks` must map each stream"),
        ("--state", '{"bookmarks": {"cdr_v3": "x"}}', "--state {path}: `bookmarks` must map"),
        ("--catalog", '{"streams": "x"}', "--catalog {path}: expected a Singer catalog"),
    ],
)
def test_a_bad_input_file_is_one_line_naming_it(tmp_path, option, content, said):
    path = tmp_path / "input.json"
    if content is not None:
        path.write_text(content)
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"cdr_v3": {"base_url": "http://127.0.0.1:1", "token": "t"}}))
    args = ["--config", str(good)] if option != "--config" else []
    command = [sys.executable, "-m", "tap_cdr.tap", *args, option, str(path)]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 1
    (error,) = lines_at(proc.stderr, "ERROR")
    assert said.format(path=path) in error
    assert "Traceback" not in proc.stderr and "unexpected" not in error


@pytest.mark.parametrize(
    ("config", "said"),
    [
        ({"cdr_v3": None}, "`cdr_v3` must be an object of its settings, not NoneType"),
        ({"cdr_by_uuid": ["x"]}, "`cdr_by_uuid` must be an object of its settings, not list"),
        (
            {"cdr_v3": {"base_url": "http://[::1", "token": "t"}},
            "`cdr_v3.base_url` must be an http(s) URL",
        ),
        (
            {"cdr_v3": {"base_url": "http://127.0.0.1:99999", "token": "t"}},
            "`cdr_v3.base_url` must be an http(s) URL",
        ),
        (
            {"cdr_v3": {"base_url": "http://user:pa55word-9@127.0.0.1:1", "token": "t"}},
            "`cdr_v3.base_url` must not carry a user or password ('http://127.0.0.1:1')",
        ),
        (
            {"cdr_v3": {"base_url": "http://127.0.0.1:1", "token": "t", "window_hours": 1e11}},
            "`cdr_v3.window_hours`",
        ),
        (
            {"start_date": "0001-01-01T00:00:00Z", "cdr_v3": {"base_url": "http://127.0.0.1:1"}},
            "`start_date` (0001-01-01T00:00:00Z) is before 1990",
        ),
        (
            {"cdr_v3": {"base_url": "http://127.0.0.1:1", "token": 987654321}},
            "`cdr_v3.token`: (its value: not shown, a secret)",
        ),
    ],
)
def test_bad_values_are_config_errors_naming_the_setting_never_a_bug(tmp_path, config, said):
    proc = run_cli(tmp_path, config)
    assert proc.returncode == 1
    errors = lines_at(proc.stderr, "ERROR")
    assert any(said in line for line in errors), errors
    assert not any(s in proc.stderr for s in ("unexpected", "Traceback", "pa55word", "987654321"))


def test_an_error_body_that_echoes_a_secret_is_masked(tmp_path):
    """Text the tap does not write (an API's error body) never repeats a secret."""
    import http.server
    import threading

    key = "api-key-echoed-4b1c"

    class Echo(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            body = json.dumps({"error": f"unknown api_key {key}"}).encode()
            self.send_response(403)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):  # type: ignore[explicit-override]
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Echo)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}"
        proc = run_cli(tmp_path, {"cdr_v3": {"base_url": url, "api_key": key}})
    finally:
        server.shutdown()
        server.server_close()
    assert proc.returncode == 1
    (error,) = lines_at(proc.stderr, "ERROR")
    assert "unknown api_key ***" in error and "`cdr_v3.api_key`" in error
    assert key not in proc.stderr + proc.stdout


def test_a_closed_stdout_is_one_line(sandbox, tmp_path):
    server = sandbox(records=10)
    command = tap_command(tmp_path, v3_config(server))
    proc = subprocess.run(
        ["bash", "-c", 'exec "$@" >&-', "tap", *command],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 1
    (error,) = lines_at(proc.stderr, "ERROR")
    assert "standard output is closed" in error
    assert "Traceback" not in proc.stderr


def test_a_stopped_run_that_committed_nothing_ends_with_the_state_it_was_given():
    from tap_cdr.tap import TapCDR

    state = {"bookmarks": {"cdr_v3": {"replication_key_value": "2024-03-01T00:00:00+00:00"}}}
    tap = TapCDR(
        config={"cdr_v3": {"base_url": "http://127.0.0.1:1", "token": "t"}},
        state=state,
        parse_env_config=False,
    )
    assert json.loads(tap.message_writer.last_state) == {"type": "STATE", "value": state}


def test_a_signal_during_discovery_writes_no_state(monkeypatch):
    from tap_cdr import cli
    from tap_cdr.cli import Interrupted, StopOnSignal
    from tap_cdr.writer import BufferedMsgSpecWriter

    monkeypatch.setattr(cli, "_watchdog", lambda signum: None)  # it would end pytest
    stop = StopOnSignal(BufferedMsgSpecWriter(), syncing=False)
    with pytest.raises(Interrupted) as raised:
        stop.handle(signal.SIGTERM, None)
    assert raised.value.writer is None
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def test_every_byte_is_written_to_a_non_blocking_pipe_that_fills_up(monkeypatch):
    import fcntl
    import threading
    import time
    from types import SimpleNamespace

    from singer_sdk.singerlib import RecordMessage, StateMessage

    from tap_cdr.writer import BufferedMsgSpecWriter

    read_end, write_end = os.pipe()
    fcntl.fcntl(write_end, fcntl.F_SETFL, fcntl.fcntl(write_end, fcntl.F_GETFL) | os.O_NONBLOCK)
    received = bytearray()

    def slow_reader():
        with open(read_end, "rb", buffering=0) as pipe:  # noqa: PTH123
            while chunk := pipe.read(65536):
                received.extend(chunk)
                time.sleep(0.01)

    reader = threading.Thread(target=slow_reader)
    reader.start()
    with open(write_end, "wb", buffering=0) as raw:  # noqa: PTH123
        monkeypatch.setattr("sys.stdout", SimpleNamespace(buffer=raw, flush=lambda: None))
        writer = BufferedMsgSpecWriter()
        for n in range(3000):
            writer.write_message(RecordMessage(stream="s", record={"id": n, "pad": "x" * 500}))
        writer.write_message(StateMessage(value={"n": 3000}))
    reader.join(timeout=60)
    lines = received.decode().splitlines()
    assert len(lines) == 3001 and json.loads(lines[-1])["type"] == "STATE"
