"""uuid sources read incrementally, and concurrent lookups: each run requests only the
uuids it has not seen before (counted at the sandbox), state stays small, nothing is
lost to a truncated, replaced or rotated file."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections import Counter
from datetime import timedelta

import pytest
from singer_sdk.exceptions import FatalAPIError

from tap_cdr.worklist import UuidFile, WorkListError
from tests.conftest import ANCHOR, lookups, run_tap, tap_command, vcc_config

U1 = "85955f2e-049f-4a41-9145-f513abf50c7b"
U2 = "bbf5825e-85de-4ec1-8625-e6eaf5c96b1e"
U3 = "0b6c2a1e-5f5d-4d8e-9a51-3c4a7e2b9f10"


# -- the file reader: pure, on a temporary directory ---------------------------------


def read(path, saved=None, lines_per_chunk=1000):
    source = UuidFile(path, saved, lines_per_chunk)
    chunks = list(source.chunks())
    items = [item.uuid for chunk in chunks for item in chunk.items]
    return items, (chunks[-1].position if chunks else saved), source


def test_appended_lines_are_read_from_the_saved_position(tmp_path):
    path = tmp_path / "calls.txt"
    path.write_text(f"# announced calls\n{U1}\n")
    items, position, _ = read(path)
    assert items == [U1]
    with path.open("a") as handle:
        handle.write(f"2024/03/{U2}\n")
    items, position2, source = read(path, position)
    assert items == [U2]
    assert position2["offset"] > position["offset"]
    assert source.reread_reason is None
    assert read(path, position2)[0] == []


def test_a_partial_last_line_waits_for_its_newline(tmp_path):
    path = tmp_path / "calls.txt"
    path.write_text(f"{U1}\n{U2[:10]}")  # a receiver is writing the second line
    items, position, _ = read(path)
    assert items == [U1]
    with path.open("a") as handle:
        handle.write(f"{U2[10:]}\n")
    assert read(path, position)[0] == [U2]


def test_a_truncated_or_replaced_file_is_read_again_from_the_start(tmp_path):
    path = tmp_path / "calls.txt"
    path.write_text(f"{U1}\n{U2}\n")
    _, position, _ = read(path)
    path.write_text(f"{U3}\n")  # truncated and rewritten: shorter than the position
    items, _, source = read(path, position)
    assert items == [U3]
    assert "truncated" in source.reread_reason
    path.write_text(f"{U3}\n{U1}\n{U2}\n")  # replaced: as long, other bytes
    items, _, source = read(path, position)
    assert items == [U3, U1, U2]
    assert "changed" in source.reread_reason


@pytest.mark.parametrize("mode", ["rename", "copytruncate"])
def test_a_rotated_file_loses_no_line(tmp_path, mode):
    path = tmp_path / "calls.txt"
    path.write_text(f"{U1}\n")
    _, position, _ = read(path)
    with path.open("a") as handle:
        handle.write(f"{U2}\n")  # appended after the tap's last read, before rotation
    rotated = tmp_path / "calls.txt.1"
    if mode == "rename":
        path.rename(rotated)
    else:
        rotated.write_bytes(path.read_bytes())
    path.write_text(f"{U3}\n")  # the new file
    items, position, _ = read(path, position)
    assert items == [U2, U3]
    assert read(path, position)[0] == []


def test_each_chunk_carries_the_position_after_it(tmp_path):
    path = tmp_path / "calls.txt"
    path.write_text("".join(f"{u}\n" for u in (U1, U2, U3)))
    source = UuidFile(path, None, lines_per_chunk=2)
    first, second = source.chunks()
    assert [i.uuid for i in first.items] == [U1, U2]
    assert read(path, first.position)[0] == [U3]
    assert read(path, second.position)[0] == []


def test_a_malformed_new_line_is_named_and_not_skipped(tmp_path):
    path = tmp_path / "calls.txt"
    path.write_text(f"{U1}\n")
    _, position, _ = read(path)
    with path.open("a") as handle:
        handle.write(f"{U2}\nnot-a-uuid\n")
    chunks = UuidFile(path, position, lines_per_chunk=1).chunks()
    assert [i.uuid for i in next(chunks).items] == [U2]  # the lines before it are done
    with pytest.raises(WorkListError, match=r"calls\.txt line 3"):
        next(chunks)


def test_a_malformed_position_in_state_is_a_clear_error(tmp_path):
    with pytest.raises(WorkListError, match="uuids_file position"):
        UuidFile(tmp_path / "calls.txt", {"offset": "ten"})


# -- through the tap, counted at the sandbox ----------------------------------------


def lookup_config(server, path, **section):
    return vcc_config(server, uuids_file=str(path), **section)


def dated(server, i):
    year, month = server.config.vcc.filed_under(i)
    return f"{year:04d}/{month:02d}/{server.config.vcc.uuids[i]}"


def test_run_2_requests_only_the_uuids_appended_since_run_1(vcc, tmp_path):
    server = vcc()
    path = tmp_path / "calls.txt"
    path.write_text("".join(f"{dated(server, i)}\n" for i in range(3, 13)))
    config = lookup_config(server, path)
    first = run_tap(config)
    assert len(first.records) == 10
    with path.open("a") as handle:
        handle.write("".join(f"{dated(server, i)}\n" for i in range(13, 18)))
    server.request_log.clear()
    second = run_tap(config, state=first.final_state)
    uuids = server.config.vcc.uuids
    assert sorted(second.ids_of("uuid")) == sorted(uuids[13:18])
    assert set(lookups(server)) == set(uuids[13:18])  # nothing of run 1 was requested again
    state = second.final_state["bookmarks"]["cdr_by_uuid"]
    assert state["uuids_file"]["offset"] == path.stat().st_size
    assert state["pending"] == {}
    server.request_log.clear()
    run_tap(config, state=second.final_state)
    assert lookups(server) == Counter()


def test_a_file_truncated_and_rewritten_between_runs_loses_no_uuid(vcc, tmp_path, caplog):
    server = vcc()
    path = tmp_path / "calls.txt"
    path.write_text("".join(f"{dated(server, i)}\n" for i in range(3, 13)))
    config = lookup_config(server, path)
    first = run_tap(config)
    path.write_text("".join(f"{dated(server, i)}\n" for i in range(20, 24)))  # rotated away
    with caplog.at_level(logging.WARNING):
        second = run_tap(config, state=first.final_state)
    assert sorted(second.ids_of("uuid")) == sorted(server.config.vcc.uuids[20:24])
    assert any("again from its start" in r.getMessage() for r in caplog.records)


def test_the_uuids_setting_is_not_requested_again_and_its_state_stays_bounded(vcc, tmp_path):
    server = vcc()
    path = tmp_path / "calls.txt"
    path.write_text("")
    items = [dated(server, i) for i in range(3, 8)]
    config = lookup_config(server, path, uuids=items)
    first = run_tap(config)
    assert len(first.records) == 5
    server.request_log.clear()
    config["cdr_by_uuid"]["uuids"] = [*items[2:], dated(server, 9)]  # two removed, one new
    second = run_tap(config, state=first.final_state)
    assert second.ids_of("uuid") == [server.config.vcc.uuids[9]]
    assert set(lookups(server)) == {server.config.vcc.uuids[9]}
    done = second.final_state["bookmarks"]["cdr_by_uuid"]["uuids_done"]
    assert sorted(done) == sorted(server.config.vcc.uuids[i] for i in (5, 6, 7, 9))


def test_a_uuid_the_sweep_emitted_needs_no_lookup(vcc, tmp_path):
    server = vcc()
    path = tmp_path / "calls.txt"
    path.write_text("".join(f"{dated(server, i)}\n" for i in (0, 5, 30)))  # 0 is outside
    config = lookup_config(server, path, list_cdrs=True)
    result = run_tap(config)
    uuids = server.config.vcc.uuids
    assert Counter(result.ids_of("uuid"))[uuids[5]] == 1
    assert set(lookups(server)) == {uuids[0]}  # only the call outside the sweep's range
    assert uuids[0] in result.ids_of("uuid")


@pytest.mark.parametrize("style", ["errors", "404"])
def test_concurrent_lookups_emit_every_uuid_once_with_exact_accounting(
    vcc, tmp_path, caplog, style
):
    server = vcc(records=200, vcc_pending_style=style)
    server.config.faults.update({"latency_ms": 15})
    uuids = server.config.vcc.uuids
    late = uuids[100:110]
    server.config.vcc_delay_seconds = dict.fromkeys(late, 3600.0)
    path = tmp_path / "calls.txt"
    missing = "00000000-0000-4000-8000-000000000000"
    lines = [dated(server, i) for i in range(3, 200)] + [missing, dated(server, 50)]  # a repeat
    path.write_text("\n".join(lines) + "\n")
    config = lookup_config(server, path, max_concurrency=8, max_attempts=2)
    with caplog.at_level(logging.INFO):
        result = run_tap(config)
    emitted = result.ids_of("uuid")
    assert Counter(emitted).most_common(1)[0][1] == 1
    assert sorted(emitted) == sorted(set(uuids[3:200]) - set(late))
    assert sorted(result.final_state["bookmarks"]["cdr_by_uuid"]["pending"]) == sorted(
        [*late, missing]
    )
    messages = [r.getMessage() for r in caplog.records]
    assert (
        "cdr_by_uuid: emitted 187 records (187 found of 198 uuids looked up); pending 11, "
        "given up 0" in messages
    )
    assert any("up to 8 requests in flight" in m for m in messages)
    assert lookups(server)[uuids[50]] == 1  # the repeated line: one lookup


def test_state_stays_small_after_100000_uuids_through_the_file(tmp_path):
    """Four runs, each sweeping a quarter of 100,000 calls while the file gets that
    quarter's uuids (as a webhook receiver would append them), plus 50 uuids that are
    never registered: state holds the 50 pending and the position, not 100,000."""
    dataset = [
        "--vcc-records",
        "100000",
        "--vcc-step-seconds",
        "30",
        "--anchor",
        ANCHOR.isoformat(),
    ]
    sandbox = subprocess.Popen(
        [sys.executable, "-m", "tap_cdr.sandbox", "--port", "0", *dataset],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert sandbox.stdout is not None
        url = sandbox.stdout.readline().strip()
        uuids = subprocess.run(
            [sys.executable, "-m", "tap_cdr.sandbox", *dataset, "--print-vcc-uuids", "100000"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        assert len(uuids) == 100_000
        path = tmp_path / "calls.txt"
        path.write_text("")
        first_start = ANCHOR - timedelta(seconds=30 * 100_000)
        quarter = 25_000
        state, sizes, emitted = None, [], 0
        for run in range(4):
            end = first_start + timedelta(seconds=30 * quarter * (run + 1))
            with path.open("a") as handle:
                handle.write("".join(f"{u}\n" for u in uuids[run * quarter : (run + 1) * quarter]))
                handle.write(
                    "".join(f"2024/01/{run:08d}-0000-4000-8000-{k:012d}\n" for k in range(13))
                )
            config = {
                "start_date": (first_start - timedelta(days=1)).isoformat(),
                "end_date": (end - timedelta(seconds=1)).isoformat(),
                "lookback_minutes": 0,
                "cdr_by_uuid": {
                    "customer": "sandbox",
                    "api_token": "sandbox-vcc-token",
                    "base_url": url,
                    "uuids_file": str(path),
                    "retry_interval_minutes": 0,
                    "max_call_hours": 1,
                },
            }
            state, records = run_cli(tmp_path, config, state)
            emitted += records
            sizes.append(len(json.dumps(state)))
        pending = state["bookmarks"]["cdr_by_uuid"]["pending"]
        assert len(pending) == 52  # the 13 per run never registered; the rest were found
        assert state["bookmarks"]["cdr_by_uuid"]["uuids_file"]["offset"] == path.stat().st_size
        assert emitted >= 99_900
        assert max(sizes) < 20_000, sizes  # bytes: the pending queue, not 100,000 uuids
    finally:
        sandbox.terminate()
        sandbox.wait()
        sandbox.stdout.close()


def run_cli(tmp_path, config, state):
    """Run the real tap; return its last STATE and how many RECORDs it wrote."""
    proc = subprocess.run(tap_command(tmp_path, config, state), capture_output=True, check=False)
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    last_state, records = None, 0
    for line in proc.stdout.splitlines():
        if line.startswith(b'{"type":"RECORD"'):
            records += 1
        elif line.startswith(b'{"type":"STATE"'):
            last_state = json.loads(line)["value"]
    return last_state, records


def test_a_malformed_line_stops_the_tap_naming_it(vcc, tmp_path):
    server = vcc()
    path = tmp_path / "calls.txt"
    path.write_text(f"{dated(server, 3)}\n2024/03/not-a-uuid\n")
    with pytest.raises(FatalAPIError, match=r"calls\.txt line 2"):
        run_tap(lookup_config(server, path))


def test_a_line_that_is_not_utf8_is_named(tmp_path):
    path = tmp_path / "calls.txt"
    path.write_bytes(f"{U1}\n".encode() + b"\xff\xfe-not-text\n")
    with pytest.raises(WorkListError, match=r"calls\.txt line 2 is not UTF-8"):
        read(path)
