"""cdr_by_uuid against the sandbox: fetch, pending queue across runs, give-up, months."""

from __future__ import annotations

import logging
import time
from datetime import datetime, timezone

import pytest
from singer_sdk.exceptions import FatalAPIError

from tests.conftest import run_tap


def config_for(server, items, **overrides):
    section = {
        "customer": "sandbox",
        "api_token": "sandbox-vcc-token",
        "base_url": server.url,
        "uuids": items,
        "retry_interval_minutes": 0,
        # These tests are about lookups: the sweep (test_sweep.py) would find the calls.
        "list_cdrs": False,
    }
    section.update(overrides)
    return {"cdr_by_uuid": section}


def dated(server, i):
    year, month = server.config.vcc.filed_under(i)
    return f"{year:04d}/{month:02d}/{server.config.vcc.uuids[i]}"


def pending_of(result):
    return result.final_state["bookmarks"]["cdr_by_uuid"].get("pending", {})


def test_available_at_once_with_derived_time_ended(vcc):
    server = vcc(records=6)
    result = run_tap(config_for(server, [dated(server, i) for i in range(2, 6)]))
    assert sorted(result.ids_of("uuid")) == sorted(server.config.vcc.uuids[2:6])
    for record in result.records:
        raw = server.config.vcc.record(server.config.vcc.find(record["uuid"]))
        start_utc = datetime.fromisoformat(raw["start_ts_utc"]).replace(tzinfo=timezone.utc)
        ended = datetime.fromisoformat(record["time_ended"])
        assert (ended - start_utc).total_seconds() == raw["ringtime"] + raw["billingtime"]
        assert record["start_ts"] == raw["start_ts"]  # local kept as sent
        assert record["next_contact"] is None and record["next_contact_utc"] is None
        assert "recordCustomFielData" not in record
        assert isinstance(record["recordCustomFieldData"], dict)
    # VCC Live: answered when there was talk time (an abandoned call has billing time
    # too: its IVR and queue).
    answered = [r for r in result.records if r["talktime"]]
    unanswered = [r for r in result.records if not r["talktime"]]
    assert answered and unanswered
    assert all(r["billing_ts_utc"] is None for r in unanswered)
    assert all(r["billing_ts_utc"] is not None for r in answered)
    assert pending_of(result) == {}


def test_both_spellings_of_custom_fields_are_emitted_as_one(vcc):
    server = vcc(records=6)
    result = run_tap(config_for(server, [dated(server, 2), dated(server, 3)]))
    values = {r["recordCustomFieldData"]["egyedimezo"] for r in result.records}
    assert len(result.records) == 2 and values <= {"egyedimező-érték", "árvíztűrő tükörfúrógép"}


def test_uuid_available_on_attempt_three(vcc):
    server = vcc(records=6)
    uuid = server.config.vcc.uuids[4]
    # Each attempt tries three months for a dated item: 6 misses are two attempts.
    server.config.vcc_delay_requests = {uuid: 6}
    config = config_for(server, [dated(server, 4)])
    first = run_tap(config)
    assert first.records == [] and pending_of(first)[uuid]["attempts"] == 1
    second = run_tap(config, state=first.final_state)
    assert second.records == [] and pending_of(second)[uuid]["attempts"] == 2
    third = run_tap(config, state=second.final_state)
    assert third.ids_of("uuid") == [uuid] and pending_of(third) == {}


@pytest.mark.parametrize("style", ["errors", "404", "empty"])
def test_never_available_is_given_up_with_an_error_and_summary(vcc, caplog, style):
    server = vcc(records=6, vcc_pending_style=style)
    missing = "00000000-0000-4000-8000-000000000000"
    config = config_for(server, [dated(server, 2), missing], max_attempts=3)
    state = None
    with caplog.at_level(logging.INFO):
        for _ in range(3):
            result = run_tap(config, state=state)
            state = result.final_state
    assert pending_of(result) == {}
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any(missing in m and "giving up" in m for m in errors)
    summaries = [r.getMessage() for r in caplog.records if "emitted" in r.getMessage()]
    # The found uuid is fetched once, in the first run; later runs retry only the
    # missing one, until its attempts are used up.
    assert summaries == [
        "cdr_by_uuid: emitted 1 record (1 found of 2 uuids looked up); pending 1, given up 0",
        "cdr_by_uuid: emitted 0 records (0 found of 1 uuid looked up); pending 1, given up 0",
        "cdr_by_uuid: emitted 0 records (0 found of 1 uuid looked up); pending 0, given up 1",
    ]


def test_pending_queue_survives_a_kill_between_runs(vcc):
    server = vcc(records=6)
    uuid = server.config.vcc.uuids[3]
    server.config.vcc_delay_requests = {uuid: 3}
    config = config_for(server, [dated(server, 2), dated(server, 3)])
    first = run_tap(config)
    # The target kept the last STATE; the next process starts from it alone.
    assert list(pending_of(first)) == [uuid]
    second = run_tap(
        {**config, "cdr_by_uuid": {**config["cdr_by_uuid"], "uuids": []}}, state=first.final_state
    )
    assert second.ids_of("uuid") == [uuid]
    assert pending_of(second) == {}


def test_retry_interval_is_respected(vcc):
    server = vcc(records=6)
    uuid = server.config.vcc.uuids[3]
    server.config.vcc_delay_requests = {uuid: 3}
    config = config_for(server, [dated(server, 3)], retry_interval_minutes=5)
    first = run_tap(config)
    requests_before = server.vcc_requests[uuid]
    second = run_tap(config, state=first.final_state)
    assert second.records == [] and server.vcc_requests[uuid] == requests_before
    assert pending_of(second)[uuid]["attempts"] == 1


@pytest.mark.parametrize("basis", ["local", "utc"])
def test_month_boundary_fallback(vcc, basis):
    server = vcc(records=6, month_basis=basis)
    data = server.config.vcc
    # Call 0 starts 00:30 local on March 1st, i.e. February 29th in UTC.
    items = [f"2024/03/{data.uuids[0]}", f"2024/02/{data.uuids[1]}"]
    result = run_tap(config_for(server, items))
    assert sorted(result.ids_of("uuid")) == sorted(data.uuids[:2])


def test_no_month_tries_this_month_then_the_last(vcc):
    now = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0)
    server = vcc(records=6, anchor=now)
    data = server.config.vcc
    result = run_tap(config_for(server, data.uuids[2:]))
    assert sorted(result.ids_of("uuid")) == sorted(data.uuids[2:])


def test_same_uuid_twice_is_fetched_once_per_run(vcc):
    server = vcc(records=6)
    item = dated(server, 2)
    result = run_tap(config_for(server, [item, item, item.split("/")[-1]]))
    assert len(result.records) == 1


def test_wait_for_pending_retries_in_process(vcc):
    server = vcc(records=6)
    uuid = server.config.vcc.uuids[3]
    server.config.vcc_delay_seconds = {uuid: 1.5}
    config = config_for(server, [dated(server, 3)], wait_for_pending_minutes=1)
    config["cdr_by_uuid"]["retry_interval_minutes"] = 0
    result = run_tap(config)
    assert result.ids_of("uuid") == [uuid]


def test_401_is_fatal_and_clear_without_retry_storm(vcc):
    server = vcc(records=6)
    config = config_for(server, [dated(server, 2)], api_token="wrong-secret-token")
    with pytest.raises(FatalAPIError) as info:
        run_tap(config)
    message = str(info.value)
    assert "401" in message and "allow-list" in message and "wrong-secret-token" not in message
    assert len(server.request_log) == 1


def test_malformed_uuids_item_is_a_config_error(vcc):
    from singer_sdk.exceptions import ConfigValidationError

    server = vcc(records=6)
    with pytest.raises(ConfigValidationError) as info:
        run_tap(config_for(server, [dated(server, 2), "2024/03/not-a-uuid"]))
    assert any("uuids[1]" in e and "not-a-uuid" in e for e in info.value.errors)


def test_twenty_uuids_five_delayed_past_the_first_run(vcc):
    server = vcc(records=20)
    data = server.config.vcc
    delayed = data.uuids[15:]
    server.config.vcc_delay_seconds = dict.fromkeys(delayed, 2.0)
    config = config_for(server, [dated(server, i) for i in range(20)])
    first = run_tap(config)
    assert sorted(first.ids_of("uuid")) == sorted(data.uuids[:15])
    assert sorted(pending_of(first)) == sorted(delayed)
    assert all(entry["attempts"] == 1 for entry in pending_of(first).values())
    time.sleep(2.1)
    second = run_tap(config, state=first.final_state)
    # Only the pending uuids are requested again: the others were fetched in run 1.
    assert second.ids_of("uuid") == delayed
    assert pending_of(second) == {}
    assert sum(server.vcc_requests[u] for u in data.uuids[:15]) == 15
