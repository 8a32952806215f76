"""cdr_by_uuid reads the intake store: every announced call looked up once, no row
skipped when receivers commit out of order, the first-attempt delay kept, state small;
and the whole loop, sandbox webhooks to receiver to tap."""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING

import pytest
from singer_sdk.exceptions import ConfigValidationError, FatalAPIError
from sqlalchemy import insert

from tap_cdr.intake.source import GAP_HORIZON, IntakeSource
from tap_cdr.intake.store import announced_calls, open_store, record_delivery
from tap_cdr.sandbox import SandboxConfig
from tap_cdr.sandbox.data import VccDataset
from tap_cdr.sandbox.webhooks import WebhookConfig
from tests.conftest import ANCHOR, lookups, run_tap, tap_command, vcc_config
from tests.intake_support import SECRET_KEY, Receiver, event, execute, post, rows

if TYPE_CHECKING:
    from pathlib import Path

NOW = datetime.now(timezone.utc)


def intake_config(server, store: str, **section):
    return vcc_config(
        server, **{"intake_store": store, "first_attempt_delay_minutes": 0, **section}
    )


def intake_state(result) -> dict:
    return result.final_state["bookmarks"]["cdr_by_uuid"]["intake"]


def test_out_of_order_commits_from_two_receivers_skip_no_uuid(vcc, tmp_path, pg_store):
    """Two receivers on one PostgreSQL store. A row whose id was taken first is
    committed after the tap has read a larger id: the next run still looks it up."""
    server = vcc(records=400)
    uuids = server.config.vcc.uuids
    first = Receiver(pg_store, tmp_path / "first.log").start()
    second = Receiver(pg_store, tmp_path / "second.log").start()
    held_engine = open_store(pg_store)
    try:
        with held_engine.connect() as held:  # closed (rolled back) if an assert fails
            transaction = held.begin()
            # A receiver in the middle of its insert: its id is taken, its row not
            # committed.
            record_delivery(held, uuids[5], "2024/03", 1)
            assert post(first.post_url(), event(uuids[6])) == 200
            assert post(second.post_url(), event(uuids[7])) == 200
            config = intake_config(server, pg_store)
            run_1 = run_tap(config)
            assert sorted(run_1.ids_of("uuid")) == sorted([uuids[6], uuids[7]])
            held_id = rows(pg_store, "select min(id) from announced_calls")[0][0] - 1
            assert list(intake_state(run_1)["gaps"]) == [str(held_id)]
            transaction.commit()
        assert post(second.post_url(), event(uuids[8])) == 200
        run_2 = run_tap(config, state=run_1.final_state)
        assert sorted(run_2.ids_of("uuid")) == sorted([uuids[5], uuids[8]])
        assert intake_state(run_2)["gaps"] == {}
        # While both receivers take events from four clients, the tap runs again and
        # again; in the end every call posted was emitted, and once.
        emitted = Counter(run_1.ids_of("uuid") + run_2.ids_of("uuid"))
        state = run_2.final_state
        to_post = uuids[9:]

        def feed(receiver: Receiver, part: list[str]) -> None:
            for uuid in part:
                assert post(receiver.post_url(), event(uuid)) == 200

        with ThreadPoolExecutor(4) as pool:
            feeders = [
                pool.submit(feed, receiver, to_post[i::4])
                for i, receiver in enumerate([first, second, first, second])
            ]
            runs = 0
            while True:
                finished = all(feeder.done() for feeder in feeders)
                result = run_tap(config, state=state)
                emitted.update(result.ids_of("uuid"))
                state, runs = result.final_state, runs + 1
                if finished:
                    break
            for feeder in feeders:
                feeder.result()
        assert runs >= 2
        assert emitted == Counter(uuids[5:])
    finally:
        held_engine.dispose()
        first.stop(signal.SIGKILL)
        second.stop(signal.SIGKILL)


def add(engine, uuid: str, received_at: datetime, row_id: int | None = None) -> None:
    """A call as a receiver stores it; the sandbox's calls started in March 2024."""
    values = {"uuid": uuid, "month": "2024/03", "received_at": received_at, "deliveries": 1}
    with engine.begin() as conn:
        conn.execute(insert(announced_calls).values(**values, **({"id": row_id} if row_id else {})))


def test_a_gap_is_asked_for_until_the_horizon_then_forgotten(tmp_path):
    """Ids skipped over are kept in the position and asked for again; once older than
    the horizon (any transaction has ended by then) they are dropped, so state stays
    small."""
    url = f"sqlite:///{tmp_path / 'intake.db'}"
    engine = open_store(url)
    old = NOW - timedelta(hours=1)
    add(engine, "00000000-0000-4000-8000-000000000001", old, 1)
    add(engine, "00000000-0000-4000-8000-000000000004", old, 4)

    def read(saved, now):
        source = IntakeSource(engine, "store", saved, timedelta(0), now)
        uuids = [item.uuid[-1] for chunk in source.chunks() for item in chunk.items]
        return uuids, source.position()

    found, position = read(None, NOW)
    assert found == ["1", "4"]
    assert position["last_id"] == 4
    assert sorted(position["gaps"]) == ["2", "3"]
    add(engine, "00000000-0000-4000-8000-000000000003", old, 3)  # committed late
    found, position = read({**position, "store_id": "store"}, NOW + GAP_HORIZON / 2)
    assert found == ["3"]
    assert list(position["gaps"]) == ["2"]
    found, position = read(position, NOW + GAP_HORIZON * 2)
    assert found == []
    assert position["gaps"] == {}
    # Another store (a new file): the position is not applied to it.
    source = IntakeSource(engine, "another-store", position, timedelta(0), NOW)
    assert source.reread_reason
    assert source.last_id == 0


def test_the_first_attempt_waits_the_delay(vcc, tmp_path, caplog):
    server = vcc()
    uuids = server.config.vcc.uuids
    url = f"sqlite:///{tmp_path / 'intake.db'}"
    engine = open_store(url)
    add(engine, uuids[3], datetime.now(timezone.utc) - timedelta(minutes=6))
    add(engine, uuids[4], datetime.now(timezone.utc) - timedelta(minutes=1))
    config = intake_config(server, url, first_attempt_delay_minutes=5)
    with caplog.at_level(logging.INFO):
        run_1 = run_tap(config)
    assert run_1.ids_of("uuid") == [uuids[3]]
    assert uuids[4] not in lookups(server)
    assert intake_state(run_1)["last_id"] == 1
    assert any(
        "1 announced call received in the last 5 minutes waits for the next run" in r.getMessage()
        for r in caplog.records
    )
    execute(url, "update announced_calls set received_at = '2020-01-01 00:00:00' where id = 2")
    run_2 = run_tap(config, state=run_1.final_state)
    assert run_2.ids_of("uuid") == [uuids[4]]
    assert lookups(server) == Counter({uuids[3]: 1, uuids[4]: 1})


def test_an_announced_call_not_registered_yet_waits_in_the_pending_queue(vcc, tmp_path, caplog):
    server = vcc()
    uuids = server.config.vcc.uuids
    server.config.vcc.hidden.add(10)
    url = f"sqlite:///{tmp_path / 'intake.db'}"
    engine = open_store(url)
    for i in (9, 10, 11):
        add(engine, uuids[i], datetime.now(timezone.utc) - timedelta(minutes=10))
    config = intake_config(server, url)
    with caplog.at_level(logging.INFO):
        run_1 = run_tap(config)
    assert sorted(run_1.ids_of("uuid")) == sorted([uuids[9], uuids[11]])
    assert list(run_1.final_state["bookmarks"]["cdr_by_uuid"]["pending"]) == [uuids[10]]
    assert any(r.getMessage().endswith("; pending 1, given up 0") for r in caplog.records)
    server.config.vcc.hidden.clear()
    run_2 = run_tap(config, state=run_1.final_state)
    assert run_2.ids_of("uuid") == [uuids[10]]


def test_a_missing_store_is_a_clear_error(vcc, tmp_path):
    server = vcc()
    config = intake_config(server, f"sqlite:///{tmp_path / 'nowhere.db'}")
    with pytest.raises(FatalAPIError, match="does not exist: start tap-cdr-intake"):
        run_tap(config)
    assert not (tmp_path / "nowhere.db").exists()


def test_a_store_url_that_is_not_a_database_is_a_config_error_without_the_secret(vcc):
    server = vcc()
    config = intake_config(server, "mysql://user:hunter2@db/x")
    with pytest.raises(ConfigValidationError) as raised:
        run_tap(config)
    message = " ".join(raised.value.errors)
    assert "`cdr_by_uuid.intake_store` must be the --store URL" in message
    assert "hunter2" not in message


@pytest.mark.parametrize("list_cdrs", [True, False])
def test_webhooks_from_the_sandbox_through_the_receiver_load_each_call_once(
    start_sandbox, tmp_path: Path, list_cdrs: bool, caplog
):
    """The sandbox posts encrypted Call Disposition webhooks (some twice, some calls
    none, retrying until the receiver answers) to a receiver that starts late; the
    tap loads each call once: with the sweep, every call of the range; without it,
    exactly the announced ones."""
    store = f"sqlite:///{tmp_path / 'intake.db'}"
    receiver = Receiver(store, tmp_path / "intake.log", cipher="aes-256-ctr")
    webhooks = WebhookConfig(
        url=receiver.post_url(key=None).rstrip("?"),
        secret_key=SECRET_KEY,
        cipher="aes-256-ctr",
        rate=500,
    )
    dataset = VccDataset(records=60, anchor=ANCHOR, step_seconds=1800)
    server = start_sandbox(SandboxConfig(vcc=dataset, webhooks=webhooks))
    time.sleep(0.5)  # the first deliveries fail: the receiver is not up yet
    receiver.start()
    try:
        poster = server.webhooks
        assert poster is not None
        poster.join(timeout=120)
        stats = poster.stats
        assert stats.done and not stats.failed
        assert stats.retries > 0 and stats.duplicates > 0 and stats.skipped
    finally:
        receiver.stop()
    announced = rows(store, "select uuid from announced_calls")
    assert sorted(u for (u,) in announced) == sorted(stats.sent)
    config = intake_config(server, store, list_cdrs=list_cdrs)
    config["start_date"] = "2024-02-28T00:00:00Z"  # calls 0 and 1 start on Feb 29 (UTC)
    with caplog.at_level(logging.INFO):
        result = run_tap(config)
    emitted = Counter(result.ids_of("uuid"))
    assert set(emitted.values()) == {1}
    if list_cdrs:
        assert sorted(emitted) == sorted(dataset.uuids)
        assert lookups(server) == Counter()  # the sweep found every announced call
        assert any(
            f"{len(stats.sent)} of the {len(stats.sent)} announced calls among them"
            in r.getMessage()
            for r in caplog.records
        )
    else:
        assert sorted(emitted) == sorted(stats.sent)
        assert not set(emitted) & set(stats.skipped)
    assert intake_state(result)["last_id"] == len(stats.sent)


def test_without_an_intake_store_the_tap_does_not_load_sqlalchemy():
    """SQLAlchemy costs a run 0.15 s and 15 MB at start: only a run that reads an
    intake store pays for it."""
    code = "import sys, tap_cdr.tap; print('sqlalchemy' in sys.modules)"
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert loaded == "False"


def tap_until(command: list[str], boundary: int, position: dict) -> tuple[list[str], dict | None]:
    """Run the real tap, and kill -9 it once the STATE of its ``boundary``-th chunk of
    the intake store is out (the intake ``position`` has moved that many times). The
    uuids it emitted before, and the last STATE it wrote."""
    emitted: list[str] = []
    state, moves = None, 0
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL) as process:
        assert process.stdout is not None
        for line in process.stdout:
            message = json.loads(line)
            if message["type"] == "RECORD":
                emitted.append(message["record"]["uuid"])
            elif message["type"] == "STATE":
                state = message["value"]
                intake = state["bookmarks"]["cdr_by_uuid"].get("intake")
                moves += intake != position
                position = intake
                if moves == boundary:
                    process.kill()
                    break
    return emitted, state


@pytest.mark.parametrize("boundary", [1, 2, 3])
def test_kill_9_at_a_chunk_boundary_with_late_gaps_then_resume(
    start_sandbox, tmp_path, any_store, boundary
):
    """1,500 ids are gaps when a run reads the store; they are committed late, with
    1,000 new calls. The next run (chunks: gaps 1-1,000, gaps 1,001-1,500, the new
    calls) is killed at a chunk boundary, then resumed: every call is emitted at least
    once, and none is requested more than twice."""
    dataset = VccDataset(records=4000, anchor=ANCHOR, step_seconds=60)
    server = start_sandbox(SandboxConfig(vcc=dataset))
    uuids = dataset.uuids
    engine = open_store(any_store)
    old = datetime.now(timezone.utc) - timedelta(hours=1)

    def add_rows(ids: range) -> None:
        with engine.begin() as conn:
            conn.execute(
                insert(announced_calls),
                [
                    {"id": i, "uuid": uuids[i - 1], "month": "2024/03", "received_at": old,
                     "deliveries": 1}
                    for i in ids
                ],
            )  # fmt: skip

    add_rows(range(1501, 3001))
    config = intake_config(server, any_store)
    first = run_tap(config)
    assert len(first.ids_of("uuid")) == 1500
    assert len(intake_state(first)["gaps"]) == 1500
    add_rows(range(1, 1501))  # committed late
    add_rows(range(3001, 4001))
    engine.dispose()
    before = lookups(server)
    command = tap_command(tmp_path, config, first.final_state)
    emitted, state = tap_until(command, boundary, intake_state(first))
    assert state is not None
    resumed = run_tap(config, state=state)
    wanted = {uuids[i - 1] for i in [*range(1, 1501), *range(3001, 4001)]}
    assert wanted <= set(emitted) | set(resumed.ids_of("uuid"))
    requested = lookups(server) - before
    assert set(requested) == wanted
    assert max(requested.values()) <= 2
    # The kill really cut the run short (except after its last chunk).
    assert (len(set(emitted)) < len(wanted)) == (boundary < 3)
    assert intake_state(resumed)["gaps"] == {}


SKEWED_CLOCK = """
import datetime
import time

real_datetime, real_time = datetime.datetime, time.time


class Ahead(real_datetime):
    @classmethod
    def now(cls, tz=None):
        return real_datetime.now(tz) + datetime.timedelta(hours=1)


datetime.datetime = Ahead
time.time = lambda: real_time() + 3600
"""


def test_a_receiver_whose_clock_is_an_hour_ahead_stalls_nothing(vcc, tmp_path, pg_store):
    """received_at is the database's time, and the tap compares it with the database's
    time: a receiver an hour fast neither delays its calls nor those after it."""
    server = vcc()
    uuids = server.config.vcc.uuids
    fast = Receiver(pg_store, tmp_path / "fast.log", hook=SKEWED_CLOCK).start()
    normal = Receiver(pg_store, tmp_path / "normal.log").start()
    try:
        assert post(fast.post_url(), event(uuids[1])) == 200
        assert post(normal.post_url(), event(uuids[2])) == 200
    finally:
        fast.stop()
        normal.stop()
    # The hook did make that receiver's clock an hour fast (its log's time stamps).
    (started,) = [line for line in fast.log.read_text().splitlines() if "listening on" in line]
    stamp = started.split(" INFO ", 1)[0]
    logged = datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").astimezone()
    assert timedelta(minutes=50) < logged - datetime.now(timezone.utc) < timedelta(minutes=70)
    skew = "select max(abs(extract(epoch from now() - received_at))) from announced_calls"
    assert rows(pg_store, skew)[0][0] < 600
    result = run_tap(intake_config(server, pg_store))
    assert sorted(result.ids_of("uuid")) == sorted([uuids[1], uuids[2]])


def test_a_store_that_fails_while_it_is_read_is_one_line_without_its_password(vcc, pg_store):
    server = vcc()
    open_store(pg_store).dispose()
    schema = pg_store.rsplit("%3D", 1)[1]
    execute(pg_store, f"ALTER TABLE {schema}.announced_calls RENAME TO gone")
    with pytest.raises(FatalAPIError) as raised:
        run_tap(intake_config(server, pg_store))
    message = str(raised.value)
    assert message.startswith("cdr_by_uuid.intake_store: the intake store postgresql+psycopg://")
    assert 'relation "announced_calls" does not exist' in message
    assert ":tapcdr@" not in message
    assert "\n" not in message
