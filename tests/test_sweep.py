"""The CDR log sweep: a config with just a customer, a token and a date range loads every
call of the range from the sandbox, exactly once, on both day bases and through the
listing's quirks."""

from __future__ import annotations

import json
import logging
import signal
import subprocess
from collections import Counter
from datetime import datetime, timedelta, timezone

import pytest
from singer_sdk.exceptions import FatalAPIError

from tap_cdr.sandbox import SandboxConfig
from tap_cdr.sandbox.data import VccDataset
from tests.conftest import ANCHOR, run_tap, tap_command
from tests.reliability.checker import Report

START = datetime(2024, 3, 5, tzinfo=timezone.utc)
END = datetime(2024, 3, 10, 13, tzinfo=timezone.utc)
DAY_STEP = 1800  # a call every 30 minutes: 48 a day


@pytest.fixture
def vcc_log(start_sandbox):
    def make(records: int = 300, basis: str = "local", step: int = DAY_STEP, **kw):
        dataset = VccDataset(
            records=records, anchor=ANCHOR, step_seconds=step, day_basis=basis, month_basis=basis
        )
        return start_sandbox(SandboxConfig(vcc=dataset, **kw))

    return make


def sweep_config(server, start=START, end=END, **section):
    return {
        "start_date": start.isoformat(),
        "end_date": end.isoformat(),
        "cdr_by_uuid": {
            "customer": "sandbox",
            "api_token": "sandbox-vcc-token",
            "base_url": server.url,
            **section,
        },
    }


def expected(server, start=START, end=END, project_ids=None) -> list[str]:
    """Ground truth from the sandbox: the registered calls that ended in [start, end)."""
    data = server.config.vcc
    return sorted(
        data.uuids[i]
        for i in range(data.records)
        if start.timestamp() <= data.ended_epoch(i) < end.timestamp()
        and i not in data.hidden
        and (project_ids is None or data.project_of(i) in project_ids)
    )


def listing_requests(server) -> list[str]:
    return [path for _, path in server.request_log if path.startswith("/v2/cdrs/")]


@pytest.mark.parametrize("basis", ["local", "utc"])
def test_every_call_of_the_range_once_on_either_day_basis(vcc_log, basis):
    server = vcc_log(basis=basis)
    result = run_tap(sweep_config(server))
    uuids = result.ids_of("uuid")
    assert Counter(uuids).most_common(1)[0][1] == 1
    assert sorted(uuids) == expected(server)
    assert len(uuids) > 200
    assert all(START.isoformat() <= r["time_ended"] < END.isoformat() for r in result.records)
    # No lookup was needed: the calls came from the log.
    assert not [p for _, p in server.request_log if p.startswith("/v2/cdr/")]
    # num and start on every request; the dates before the range are listed too.
    assert all("num=500" in p and "start=" in p for p in listing_requests(server))
    assert any("/v2/cdrs/2024/03/04" in p for p in listing_requests(server))


def test_state_after_each_complete_date_moves_the_bookmark_forward(vcc_log):
    server = vcc_log()
    result = run_tap(sweep_config(server))
    bookmarks = [s["bookmarks"]["cdr_by_uuid"].get("replication_key_value") for s in result.states]
    bookmarks = [b for b in bookmarks if b]
    assert len(set(bookmarks)) >= 6  # one per date, not one per run
    assert bookmarks == sorted(bookmarks)
    # Budapest is UTC+1 in March: 2024-03-05 is complete at 23:00 UTC.
    assert "2024-03-05T23:00:00+00:00" in bookmarks
    assert bookmarks[-1] == END.isoformat()


def test_a_call_that_started_the_day_before_the_range_and_ended_inside_it(vcc_log):
    server = vcc_log(basis="local")
    data = server.config.vcc
    # Call 2 starts at 23:45 local on 9 March and lasts 30 minutes.
    midnight = datetime(2024, 3, 9, 23, tzinfo=timezone.utc)  # 10 March, 00:00 local
    assert data.start_epoch(2) < midnight.timestamp() <= data.ended_epoch(2)
    result = run_tap(sweep_config(server, start=midnight))
    assert data.uuids[2] in result.ids_of("uuid")
    assert sorted(result.ids_of("uuid")) == expected(server, start=midnight)


@pytest.mark.parametrize(
    "quirk",
    [
        {"vcc_list_max_num": 7},  # the server caps num below what was asked
        {"vcc_list_ignore_num": True},  # ... or ignores it: 10 rows a page
        {"vcc_list_shape": "rows-no-total"},  # no totalCount
        {"vcc_list_shape": "array"},  # `response` is the array of rows itself
    ],
    ids=["num capped", "num ignored", "no totalCount", "response is the array"],
)
def test_listing_quirks_lose_nothing(vcc_log, quirk):
    server = vcc_log(**quirk)
    result = run_tap(sweep_config(server, page_size=20))
    assert sorted(result.ids_of("uuid")) == expected(server)
    assert Counter(result.ids_of("uuid")).most_common(1)[0][1] == 1


def test_late_cdrs_are_found_by_the_next_runs_lookback(vcc_log):
    server = vcc_log()
    # The 3 newest calls (started 11:00 to 12:00 UTC) are not registered yet.
    server.config.vcc.hidden.update(range(297, 300))
    config = sweep_config(server)
    first = run_tap(config)
    assert sorted(first.ids_of("uuid")) == expected(server)
    server.config.vcc.hidden.clear()
    second = run_tap(config, state=first.final_state)
    late = {server.config.vcc.uuids[i] for i in range(297, 300)}
    assert late <= set(second.ids_of("uuid"))
    assert set(first.ids_of("uuid")) | set(second.ids_of("uuid")) == set(expected(server))
    # Only the lookback is read again, not the whole range.
    assert len(second.records) < 20


def test_a_403_on_the_listing_names_the_setting(vcc_log):
    server = vcc_log(vcc_list_forbidden=True)
    with pytest.raises(FatalAPIError) as info:
        run_tap(sweep_config(server))
    message = str(info.value)
    assert "403" in message and "cdr_by_uuid.list_cdrs" in message
    assert "sandbox-vcc-token" not in message
    assert len(listing_requests(server)) == 1  # not retried


def test_project_ids_make_one_listing_per_project(vcc_log):
    server = vcc_log(vcc_token_projects=(1, 3))
    with pytest.raises(FatalAPIError, match="403"):
        run_tap(sweep_config(server))  # this token may not list all projects
    server.request_log.clear()
    result = run_tap(sweep_config(server, project_ids=[1, 3]))
    assert sorted(result.ids_of("uuid")) == expected(server, project_ids={1, 3})
    assert {r["projectid"] for r in result.records} == {1, 3}
    paths = listing_requests(server)
    assert paths
    assert all("projectid=1" in p or "projectid=3" in p for p in paths)


def test_a_persistently_bad_listing_fails_and_is_never_an_empty_day(vcc_log):
    server = vcc_log(records=100)
    server.config.faults.update({"no_data": 1000})
    config = sweep_config(server, start=END - timedelta(days=1))
    config.update(max_request_tries=3, max_retry_wait_seconds=0)
    with pytest.raises(
        FatalAPIError, match=r"expected a JSON object with `response`.*after 3 attempts"
    ):
        run_tap(config)  # retried, then the sync fails: nothing is taken for an empty day


def test_a_listing_that_lists_fewer_rows_than_it_counts_fails_loudly(vcc_log, monkeypatch, caplog):
    from tap_cdr.streams import vcc

    server = vcc_log(records=100)
    real = vcc._listing_total
    monkeypatch.setattr(vcc, "_listing_total", lambda found: (real(found) or 0) + 1)
    with caplog.at_level(logging.WARNING), pytest.raises(FatalAPIError, match="totalCount"):
        run_tap(sweep_config(server, start=END - timedelta(days=1)))
    assert any("reading it again" in r.getMessage() for r in caplog.records)


def test_kill_9_mid_sweep_resumes_at_the_last_complete_date(vcc_log, tmp_path):
    server = vcc_log(records=600, step=900)  # 96 calls a day over six days
    server.config.faults.update({"latency_ms": 20})
    config = sweep_config(server, page_size=10)
    proc = subprocess.Popen(
        tap_command(tmp_path, config), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    delivered, dates_done = [], 0
    assert proc.stdout is not None
    for line in proc.stdout:
        message = json.loads(line)
        delivered.append(message)
        if message["type"] == "STATE" and message["value"]["bookmarks"].get("cdr_by_uuid"):
            dates_done += 1
            if dates_done == 3:
                proc.send_signal(signal.SIGKILL)
                break
    proc.wait(timeout=30)
    proc.stdout.close()
    killed = Report(delivered, stream="cdr_by_uuid", key="uuid")
    assert killed.final_state["bookmarks"]["cdr_by_uuid"]["replication_key_value"] < END.isoformat()
    resumed = run_tap(config, state=killed.final_state)
    assert set(killed.keys) | set(resumed.ids_of("uuid")) == set(expected(server))
    assert Counter(resumed.ids_of("uuid")).most_common(1)[0][1] == 1
    # The resume starts at the last complete date (less the lookback), not at the start.
    assert len(resumed.records) < len(expected(server))


@pytest.mark.parametrize(
    "faults",
    [
        {"status_503": 3},
        {"status_429": 2, "retry_after": 1},
        {"reset": 2},
        {"truncate": 2},
        {"malformed": 2},
        {"latency_ms": 15, "rate_429": 0.1, "retry_after": 0},
    ],
    ids=["503 burst", "429 + Retry-After", "reset", "truncated", "malformed", "latency + 429s"],
)
def test_faults_on_the_listing_are_retried_and_lose_nothing(vcc_log, faults, caplog):
    server = vcc_log()
    server.config.faults.update(faults)
    config = sweep_config(server, page_size=20, max_concurrency=8)
    config.update(max_retry_wait_seconds=1)
    with caplog.at_level(logging.WARNING):
        result = run_tap(config)
    assert sorted(result.ids_of("uuid")) == expected(server)
    assert Counter(result.ids_of("uuid")).most_common(1)[0][1] == 1
    assert server.config.faults.fired
    assert any("retrying" in r.getMessage() for r in caplog.records)
