"""cdr_v3 end to end against the sandbox: records, pagination, windows, state, auth."""

from __future__ import annotations

import re
from collections import Counter
from datetime import datetime, timedelta, timezone

import pytest
from singer_sdk.exceptions import FatalAPIError

from tests.conftest import ANCHOR, expected_ids, run_tap, v3_config

START = datetime(2024, 3, 1, tzinfo=timezone.utc)
END = datetime(2024, 3, 10, 13, tzinfo=timezone.utc)


def test_full_sync_emits_every_call_exactly_once(sandbox):
    server = sandbox(records=200)
    result = run_tap(v3_config(server))
    assert Counter(result.ids) == Counter(expected_ids(server.config.v3, START, END))
    assert len(result.ids) == 200
    assert result.final_state["bookmarks"]["cdr_v3"] == {
        "replication_key": "time_ended",
        "replication_key_value": END.isoformat(),
    }


def test_records_are_normalised_to_utc_and_nulls(sandbox):
    server = sandbox(records=40)
    records = run_tap(v3_config(server)).records
    by_id = {r["id"]: r for r in records}
    data = server.config.v3
    raw = data.record(data.records - 1)  # the newest call ends at ANCHOR
    rec = by_id[raw["id"]]
    # Asia/Ho_Chi_Minh is UTC+7: the local 19:00 is 12:00 UTC.
    assert raw["time_ended"] == "2024-03-10 19:00:00"
    assert rec["time_ended"] == "2024-03-10T12:00:00+00:00"
    unanswered = [r for r in records if r["status"] != "answered"]
    assert unanswered and all(r["time_answered"] is None for r in unanswered)
    assert all(isinstance(r["duration"], int) for r in records)
    assert all(isinstance(r["additional"], dict) for r in records)
    assert all(isinstance(r["press_key"], dict) for r in records)


@pytest.mark.parametrize("records", [150, 151, 149])
def test_pagination_at_and_around_multiples_of_page_size(sandbox, records):
    # One window holds everything: 150 = 3 full pages of 50, then off by one each way.
    server = sandbox(records=records, step_seconds=60)
    config = v3_config(server, cdr_v3={"window_hours": 24 * 30})
    result = run_tap(config)
    assert sorted(result.ids) == sorted(expected_ids(server.config.v3, START, END))
    list_calls = [p for m, p in server.request_log if p.startswith("/v3/cdr")]
    assert len(list_calls) == -(-records // 50)
    assert all("limit=50" in p and "offset=" in p for p in list_calls)


def test_empty_window_still_advances_the_bookmark(sandbox):
    server = sandbox(records=10)
    config = v3_config(server, start_date="2024-02-01T00:00:00Z", end_date="2024-02-03T00:00:00Z")
    result = run_tap(config)
    assert result.records == []
    bookmark = result.final_state["bookmarks"]["cdr_v3"]["replication_key_value"]
    assert bookmark == "2024-02-03T00:00:00+00:00"


def test_window_boundaries_have_no_duplicate_and_no_gap(sandbox):
    # Calls every 15 minutes land exactly on every hourly window boundary.
    server = sandbox(records=200, step_seconds=900)
    result = run_tap(v3_config(server, cdr_v3={"window_hours": 1}))
    expected = expected_ids(server.config.v3, START, END)
    assert len(result.ids) == len(set(result.ids))
    assert sorted(result.ids) == sorted(expected)


def test_window_bounds_sent_cover_inclusive_and_exclusive_readings(sandbox):
    server = sandbox(records=20)
    config = v3_config(server, start_date="2024-03-10T00:00:00Z", end_date="2024-03-10T02:00:00Z")
    config["cdr_v3"]["window_hours"] = 1
    run_tap(config)
    queries = [p for _, p in server.request_log if p.startswith("/v3/cdr")]
    # 00:00 UTC is 07:00 in Ho Chi Minh City; start one second early, end on the bound.
    assert "start_date_ended=2024-03-10+06%3A59%3A59" in queries[0]
    assert "end_date_ended=2024-03-10+08%3A00%3A00" in queries[0]
    assert "start_date_ended=2024-03-10+07%3A59%3A59" in queries[1]


def test_server_capping_the_page_size_loses_nothing(sandbox):
    server = sandbox(records=120, max_limit=30)
    result = run_tap(v3_config(server, cdr_v3={"page_size": 100}))
    assert sorted(result.ids) == sorted(expected_ids(server.config.v3, START, END))


def test_state_after_each_window_and_resume_from_window_k(sandbox):
    server = sandbox(records=200, step_seconds=900)
    config = v3_config(server, cdr_v3={"window_hours": 6})
    full = run_tap(config)
    window_states = [s for s in full.states if "replication_key_value" in s["bookmarks"]["cdr_v3"]]
    assert len(window_states) >= 8
    # Simulate a kill after window k: the target stored that STATE and the records before it.
    k = 5
    kept_state = window_states[k]
    cut = datetime.fromisoformat(kept_state["bookmarks"]["cdr_v3"]["replication_key_value"])
    emitted_before = []
    for message in full.messages:
        if message["type"] == "STATE" and message["value"] == kept_state:
            break
        if message["type"] == "RECORD":
            emitted_before.append(message["record"]["id"])
    resumed = run_tap(config, state=kept_state)
    assert sorted(resumed.ids) == sorted(expected_ids(server.config.v3, cut, END))
    assert sorted(emitted_before + resumed.ids) == sorted(full.ids)


def test_second_run_rereads_only_the_lookback(sandbox):
    server = sandbox(records=200, step_seconds=900)
    config = v3_config(server, lookback_minutes=120)
    first = run_tap(config)
    second = run_tap(config, state=first.final_state)
    assert sorted(second.ids) == sorted(
        expected_ids(server.config.v3, END - timedelta(minutes=120), END)
    )
    # Calls every 15 minutes up to ANCHOR (one hour before END): 120 min back holds 5.
    assert len(second.ids) == 5


def test_explicit_start_date_bounds_the_lookback(sandbox):
    server = sandbox(records=200, step_seconds=900)
    state = {
        "bookmarks": {
            "cdr_v3": {
                "replication_key": "time_ended",
                "replication_key_value": "2024-03-10T11:00:00+00:00",
            }
        }
    }
    config = v3_config(server, lookback_minutes=600, start_date="2024-03-10T10:00:00Z")
    result = run_tap(config, state=state)
    assert sorted(result.ids) == sorted(
        expected_ids(server.config.v3, datetime(2024, 3, 10, 10, tzinfo=timezone.utc), END)
    )


def test_filters_are_passed_through(sandbox):
    server = sandbox(records=100)
    result = run_tap(v3_config(server, cdr_v3={"filters": {"direction": "inbound"}}))
    data = server.config.v3
    expected = [
        data.record(i)["id"] for i in range(100) if data.record(i)["direction"] == "inbound"
    ]
    assert expected and sorted(result.ids) == sorted(expected)
    assert all("direction=inbound" in p for _, p in server.request_log if p.startswith("/v3/cdr"))


def test_unknown_api_fields_are_kept(sandbox):
    server = sandbox(records=5, extra_fields={"queue_name": "sales", "hold_seconds": 3})
    records = run_tap(v3_config(server)).records
    assert records and all(r["queue_name"] == "sales" and r["hold_seconds"] == 3 for r in records)


def test_api_key_is_exchanged_for_a_token_and_refreshed_on_401(sandbox):
    # Each issued token works for 2 requests; a sync of 4 pages needs a refresh.
    server = sandbox(records=200, token_max_uses=2)
    config = v3_config(
        server, cdr_v3={"token": None, "api_key": server.config.api_key, "window_hours": 24 * 30}
    )
    del config["cdr_v3"]["token"]
    result = run_tap(config)
    assert len(result.ids) == 200
    token_posts = [p for m, p in server.request_log if m == "POST"]
    assert len(token_posts) >= 2


def test_wrong_token_fails_fast_with_a_clear_message(sandbox):
    server = sandbox(records=5)
    config = v3_config(server, cdr_v3={"token": "not-the-token"})
    with pytest.raises(FatalAPIError) as info:
        run_tap(config)
    message = str(info.value)
    assert "401" in message and "/v3/cdr" in message and "cdr_v3" in message
    assert "not-the-token" not in message
    assert len(server.request_log) == 1  # no retry storm


def test_wrong_api_key_fails_with_a_clear_message(sandbox):
    server = sandbox(records=5)
    config = v3_config(server)
    config["cdr_v3"] = {"base_url": server.url, "api_key": "wrong-key"}
    with pytest.raises(FatalAPIError) as info:
        run_tap(config)
    assert "api_key" in str(info.value) and "wrong-key" not in str(info.value)


def test_corrupt_bookmark_in_state_is_a_clear_error(sandbox):
    server = sandbox(records=5)
    state = {
        "bookmarks": {
            "cdr_v3": {"replication_key": "time_ended", "replication_key_value": "yesterday"}
        }
    }
    with pytest.raises(FatalAPIError, match="bookmark 'yesterday'"):
        run_tap(v3_config(server), state=state)


def test_anchor_is_fixed():
    assert ANCHOR.tzinfo is timezone.utc


def test_concurrent_fetching_emits_byte_identical_output(sandbox):
    server = sandbox(records=400, step_seconds=300)
    server.config.faults.update({"latency_ms": 10})  # latency: concurrency engages
    outputs = []
    for concurrency in (1, 8):
        config = v3_config(server, cdr_v3={"max_concurrency": concurrency, "page_size": 20})
        messages = run_tap(config).messages
        for message in messages:
            message.pop("time_extracted", None)  # timing fields
            message.get("value", {}).get("bookmarks", {}).get("cdr_v3", {}).pop(
                "replication_key_signpost", None
            )
        outputs.append(messages)
    assert outputs[0] == outputs[1]
    assert len([m for m in outputs[0] if m["type"] == "RECORD"]) == 400


def test_429_lowers_the_concurrency_for_the_window(sandbox, caplog):
    server = sandbox(records=400, step_seconds=60)
    server.config.faults.update(
        {"status_429": 2, "retry_after": 0.05, "start_after": 5, "latency_ms": 10}
    )
    config = v3_config(
        server, cdr_v3={"max_concurrency": 8, "page_size": 20, "window_hours": 24 * 30}
    )
    import logging

    with caplog.at_level(logging.WARNING):
        result = run_tap(config)
    assert sorted(result.ids) == sorted(expected_ids(server.config.v3, START, END))
    lowered = [r.getMessage() for r in caplog.records if "concurrency lowered" in r.getMessage()]
    # Said in the retry's own line: one line per retry.
    assert (
        lowered and "429" in lowered[0] and "from 8 to 4 for the rest of this window" in lowered[0]
    )
    assert all("attempt" in line for line in lowered)


def test_one_progress_line_per_window_and_quiet_at_warning(sandbox, caplog):
    import logging

    server = sandbox(records=200, step_seconds=900)
    config = v3_config(server, cdr_v3={"window_hours": 24})
    with caplog.at_level(logging.INFO):
        run_tap(config)
    lines = [r.getMessage() for r in caplog.records if "complete:" in r.getMessage()]
    assert len(lines) == 10  # 2024-03-01 .. 2024-03-10T13:00 in 24 h windows
    assert all(
        re.search(r"complete: \d+ records? from \d+ pages? in .* records/s", line) for line in lines
    )
    assert sum(int(line.split("complete: ")[1].split()[0]) for line in lines) == 200
    assert "cdr_v3: emitted 200 records from 10 windows" in caplog.messages
    assert "from 1 page in" in " ".join(lines)  # not "1 pages"
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        run_tap(config)
    assert not [r for r in caplog.records if "complete:" in r.getMessage()]


def test_a_crowded_window_is_divided_so_memory_stays_bounded(sandbox, monkeypatch, caplog):
    import logging

    from tap_cdr.streams import v3

    monkeypatch.setattr(v3, "MAX_WINDOW_ROWS", 60)
    server = sandbox(records=400, step_seconds=600)
    config = v3_config(server, cdr_v3={"window_hours": 24 * 30})
    with caplog.at_level(logging.INFO):
        result = run_tap(config)
    assert sorted(result.ids) == sorted(expected_ids(server.config.v3, START, END))
    assert any("reading it as" in r.getMessage() for r in caplog.records)
    bookmarks = [s["bookmarks"]["cdr_v3"]["replication_key_value"] for s in result.states]
    assert len(set(bookmarks)) > 5  # state after each piece, not once per month
    assert result.final_state["bookmarks"]["cdr_v3"]["replication_key_value"] == END.isoformat()
