"""tap-cdr-intake run unattended, as a real process on both stores: one bad event never
costs a good one, the health check tells the truth, every wait is bounded, the secret
key and the store's password survive every encoding, and what it did can be watched
(/metrics) and pruned."""

from __future__ import annotations

import json
import re
import socket
import sqlite3
import subprocess
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.intake_support import (
    PG_URL,
    RECEIVER,
    Receiver,
    event,
    execute,
    get,
    post,
    rows,
    uuid_n,
)

PERSONAL = ("36201234567", "36309876543", "Kovács", "Nagy Péter", "peter@example.hu")


def metrics_of(receiver: Receiver) -> dict[str, float]:
    """Every sample of /metrics, parsed by prometheus_client, by name and labels."""
    status, text = get(receiver.url + "/metrics")
    assert status == 200
    return {
        sample.name + json.dumps(sample.labels, sort_keys=True): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def raw_request(port: int, request: bytes) -> bytes:
    """Send bytes as they are; the answer (b"" if the connection was dropped)."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


HUGE = "5" * 5000
POISON = {
    # name: (body, status) - each with a valid uuid is stored, its unusable field null.
    "projectid 2**64": (json.dumps(event(uuid_n(9001), projectid=2**64)), 200),
    "projectid ²": (json.dumps(event(uuid_n(9002), projectid="²")), 200),
    "projectid of 5,000 digits": (f'{{"uuid": "{uuid_n(9003)}", "projectid": {HUGE}}}', 200),
    "projectid text of 5,000 digits": (json.dumps(event(uuid_n(9004), projectid=HUGE)), 200),
    "projectid a list": (json.dumps(event(uuid_n(9005), projectid=[1, 2])), 200),
    "call_start_time not a date": (
        json.dumps(event(uuid_n(9006), call_start_time="2024-02-30 10:00:00")),
        200,
    ),
    "a number of 200,000 digits elsewhere": (
        json.dumps(event(uuid_n(9007))).replace('"client_data"', f'"n": {"7" * 200_000}, "c"'),
        200,
    ),
    "a string of 900 kB": (json.dumps(event(uuid_n(9008), note="x" * 900_000)), 200),
    "nested 100,000 deep": ("[" * 100_000 + "]" * 100_000, 400),
    # Nesting deeper than the JSON parser goes: no uuid can be read.
    "client_data nested 100,000 deep": (
        f'{{"uuid": "{uuid_n(9009)}", "client_data": {"[" * 100_000 + "]" * 100_000}}}',
        400,
    ),
    "not UTF-8": (b'{"uuid": "\xff\xfe"}', 400),
    "a uuid of 5,000 digits": ('{"uuid": ' + HUGE + "}", 400),
    "NaN": ('{"uuid": NaN}', 400),
    "empty": (b"", 400),
    "a list": ("[1, 2]", 400),
}
STORED_POISON = sorted(uuid_n(n) for n in range(9001, 9009))


def test_poison_among_good_events_costs_no_good_event_its_delivery(receiver, any_store):
    """8 clients post 400 good events among the poison, concurrently: every good event
    gets its 200 at the first delivery; every poison post gets its 200 (stored, the
    unusable field null, a warning naming the field and never the value) or its 400
    (recorded); never a 500, a dropped connection or a traceback."""
    intake = receiver(max_body_bytes=1 << 20)
    url = intake.post_url()
    posts = [(f"good {n}", json.dumps(event(uuid_n(n))), 200) for n in range(400)]
    posts += [(name, body, status) for name, (body, status) in POISON.items()] * 2
    posts.sort(key=lambda item: hash(item[0]))  # the poison spread among the good

    def send(item: tuple[str, str | bytes, int]) -> tuple[str, int | None, int]:
        name, body, expected = item
        data = body.encode() if isinstance(body, str) else body
        return name, post(url, data), expected

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(send, posts))
    wrong = [(name, got, expected) for name, got, expected in answers if got != expected]
    assert wrong == []
    stored = rows(any_store, "select uuid, month, projectid from announced_calls order by uuid")
    assert [u for u, _, _ in stored] == sorted([uuid_n(n) for n in range(400)] + STORED_POISON)
    by_uuid = {uuid: (month, projectid) for uuid, month, projectid in stored}
    assert by_uuid[uuid_n(1)] == ("2024/03", 3)
    assert {by_uuid[uuid_n(n)][1] for n in range(9001, 9006)} == {None}
    assert by_uuid[uuid_n(9006)] == (None, 3)
    assert by_uuid[uuid_n(9007)] == ("2024/03", 3)
    rejected = rows(any_store, "select reason from rejected_events")
    assert len(rejected) == 2 * sum(status == 400 for _, status in POISON.values())
    assert ("not JSON: nested too deep",) in rejected
    log = intake.log.read_text()
    assert "Traceback" not in log
    assert f"uuid {uuid_n(9002)}: its projectid is unusable and is stored as null" in log
    assert f"uuid {uuid_n(9006)}: its call_start_time is unusable" in log
    for value in ("²", "5555555555", "2024-02-30", *PERSONAL):
        assert value not in log


def test_a_batch_whose_commit_fails_is_committed_again_event_by_event(receiver, any_store):
    """The store refuses one project's events (a constraint an operator added): those
    get 503, and the good events committed in the same batches still get their 200 at
    the first delivery."""
    intake = receiver()
    if any_store.startswith("sqlite"):
        execute(
            any_store,
            "create trigger no_13 before insert on announced_calls when new.projectid = 13 "
            "begin select raise(abort, 'project 13 refused'); end",
        )
    else:
        schema = any_store.rsplit("%3D", 1)[1]
        execute(any_store, f"alter table {schema}.announced_calls add check (projectid <> 13)")
    posts = [(n, 13 if n % 10 == 0 else 3) for n in range(300)]

    def send(item: tuple[int, int]) -> tuple[int, int | None]:
        n, project = item
        return project, post(intake.post_url(), event(uuid_n(n), projectid=project))

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(send, posts))
    assert {status for project, status in answers if project == 13} == {503}
    assert {status for project, status in answers if project == 3} == {200}
    assert rows(any_store, "select count(*) from announced_calls") == [(270,)]
    batches = metrics_of(intake)
    # The batches really held several events (else this test would prove nothing).
    assert (
        batches['tap_cdr_intake_batch_events_bucket{"le": "1.0"}']
        < batches["tap_cdr_intake_batch_events_count{}"]
    )
    assert "Traceback" not in intake.log.read_text()


def test_a_client_gone_mid_body_leaves_no_rejected_row(receiver, any_store):
    intake = receiver()
    body = json.dumps(event(uuid_n(1))).encode()
    head = (
        f"POST /vcc/call-disposition?secret-key={intake.secret_key} HTTP/1.1\r\n"
        f"Host: x\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", intake.port)) as sock:
        sock.sendall(head + body[:20])
    assert post(intake.post_url(), event(uuid_n(2))) == 200  # the receiver carries on
    assert rows(any_store, "select count(*) from rejected_events") == [(0,)]
    assert "disconnected before the end of its body" in intake.log.read_text()


def test_slow_clients_are_cut_off_and_connections_bounded(tmp_path):
    """Headers sent a byte at a time: the connection is closed (within 30 s); a body
    that never ends: 408; beyond --max-connections: 503."""
    intake = Receiver(
        f"sqlite:///{tmp_path / 'intake.db'}", tmp_path / "intake.log",
        extra_args=["--max-connections", "3"],
    ).start()  # fmt: skip
    try:
        head = f"POST /vcc/call-disposition?secret-key={intake.secret_key} HTTP/1.1\r\n"
        with socket.create_connection(("127.0.0.1", intake.port), timeout=5) as slow:
            deadline, cut = time.monotonic() + 30, False
            for byte in (head + "X-Padding: " + "y" * 100).encode():
                try:
                    slow.sendall(bytes([byte]))
                    slow.settimeout(0.5)
                    cut = slow.recv(1) == b""
                except TimeoutError:
                    pass
                except OSError:
                    cut = True
                if cut or time.monotonic() > deadline:
                    break
            assert cut, "the slow client was not cut off"
        with socket.create_connection(("127.0.0.1", intake.port), timeout=30) as sock:
            sock.sendall((head + "Content-Length: 100\r\n\r\n{").encode())
            assert sock.recv(4096).startswith(b"HTTP/1.1 408")
        idle = [socket.create_connection(("127.0.0.1", intake.port)) for _ in range(3)]
        try:
            for sock in idle:
                sock.sendall(b"POST / HTTP/1.1\r\n")
            time.sleep(0.2)
            assert post(intake.post_url(), event(uuid_n(1))) == 503
        finally:
            for sock in idle:
                sock.close()
    finally:
        intake.stop()
    assert "closed a connection: its request headers took over" in intake.log.read_text()


def lock_store(store: str, locked: threading.Event, release: threading.Event) -> None:
    """Hold the store's write lock (SQLite) or the calls' table (PostgreSQL)."""
    if store.startswith("sqlite"):
        connection = sqlite3.connect(store.removeprefix("sqlite:///"), isolation_level=None)
        connection.execute("begin immediate")
        locked.set()
        release.wait(60)
        connection.execute("rollback")
        connection.close()
        return
    from sqlalchemy import create_engine, text

    from tap_cdr.intake.store import store_url

    engine = create_engine(store_url(store))
    with engine.connect() as conn, conn.begin():
        conn.execute(text("lock table announced_calls in exclusive mode"))
        locked.set()
        release.wait(60)
    engine.dispose()


def test_healthz_says_503_while_the_store_is_locked(receiver, any_store):
    intake = receiver()
    assert get(intake.url + "/healthz")[0] == 200
    locked, release = threading.Event(), threading.Event()
    holder = threading.Thread(target=lock_store, args=(any_store, locked, release))
    holder.start()
    try:
        assert locked.wait(30)
        status, body = get(intake.url + "/healthz")
        assert status == 503
        assert "no commit within 2 s" in json.loads(body)["reason"]
        assert post(intake.post_url(), event(uuid_n(1))) == 503
    finally:
        release.set()
        holder.join()
    assert get(intake.url + "/healthz")[0] == 200
    assert post(intake.post_url(), event(uuid_n(2))) == 200


WRITER_DIES = """
import pathlib
import tap_cdr.intake.commits as commits

transaction = commits.GroupCommitter._transaction


def dying(self, batch):
    if pathlib.Path(__file__).with_name("die").exists():
        raise KeyboardInterrupt  # a BaseException: no batch handler catches it
    return transaction(self, batch)


commits.GroupCommitter._transaction = dying
"""


def test_healthz_says_503_once_the_writer_has_stopped(receiver, any_store):
    intake = receiver(hook=WRITER_DIES)
    assert post(intake.post_url(), event(uuid_n(1))) == 200
    (intake.log.parent / f"hook-{intake.port}" / "die").touch()
    assert post(intake.post_url(), event(uuid_n(2))) == 503
    status, body = get(intake.url + "/healthz")
    assert (status, json.loads(body)["reason"]) == (503, "the writer thread has stopped")
    assert post(intake.post_url(), event(uuid_n(3))) == 503
    log = intake.log.read_text()
    assert "the writer thread stopped (KeyboardInterrupt)" in log
    assert "Traceback" not in log


def openssl_key() -> str:
    """A key as `openssl rand -base64 32` makes them, with a `+` and a `/` in it."""
    while True:
        key = subprocess.run(
            ["openssl", "rand", "-base64", "32"], capture_output=True, text=True, check=True
        ).stdout.strip()
        if "+" in key and "/" in key:
            return key


def test_a_base64_key_works_raw_and_percent_encoded(tmp_path, any_store):
    """`+`, `/` and `=` in the key: sent percent-encoded or raw, the key matches, and
    encrypts the body; a wrong key still gets 401."""
    key = openssl_key()
    assert key.endswith("=")
    intake = Receiver(
        any_store, tmp_path / "intake.log", cipher="aes-256-ctr", secret_key=key
    ).start()
    hex_key = key.encode().hex().ljust(64, "0")[:64]
    iv = "0f1e2d3c4b5a69788796a5b4c3d2e1f0"
    try:
        forms = {
            "percent-encoded": urllib.parse.quote(key, safe=""),
            "raw": key,
            "slash kept": urllib.parse.quote(key, safe="/"),
        }
        for n, (form, sent) in enumerate(forms.items()):
            body = subprocess.run(
                ["openssl", "enc", "-aes-256-ctr", "-K", hex_key, "-iv", iv, "-base64", "-A"],
                input=json.dumps(event(uuid_n(n))).encode(),
                capture_output=True,
                check=True,
            ).stdout
            url = f"{intake.url}/vcc/call-disposition?secret-key={sent}&iv={iv}"
            assert post(url, body, "text/plain") == 200, form
        wrong = urllib.parse.quote(key.replace("+", "-"), safe="")
        assert post(f"{intake.url}/vcc/call-disposition?secret-key={wrong}", b"x") == 401
    finally:
        intake.stop()
    assert rows(any_store, "select count(*) from announced_calls") == [(3,)]
    assert key not in intake.log.read_text()


def test_metrics_count_what_was_posted(receiver, any_store):
    intake = receiver()
    for n in range(5):
        assert post(intake.post_url(), event(uuid_n(n))) == 200
    assert post(intake.post_url(), event(uuid_n(0))) == 200  # a redelivery
    assert post(intake.post_url(), event(uuid_n(5), projectid="²")) == 200
    assert post(intake.post_url(), {"projectid": 1, "source": PERSONAL[0]}) == 400
    assert post(intake.post_url(), b"[[[", "text/plain") == 400
    assert post(intake.post_url(key="wrong"), event(uuid_n(6))) == 401
    samples = metrics_of(intake)
    expected = {
        "tap_cdr_intake_events_stored_total{}": 6,
        "tap_cdr_intake_duplicates_total{}": 1,
        'tap_cdr_intake_rejected_total{"reason": "no_uuid"}': 1,
        'tap_cdr_intake_rejected_total{"reason": "not_json"}': 1,
        'tap_cdr_intake_rejected_total{"reason": "unauthorized"}': 1,
        'tap_cdr_intake_fields_nulled_total{"field": "projectid"}': 1,
        'tap_cdr_intake_responses_total{"status": "200"}': 7,
        'tap_cdr_intake_responses_total{"status": "400"}': 2,
        'tap_cdr_intake_responses_total{"status": "401"}': 1,
        'tap_cdr_intake_store_rows{"table": "announced_calls"}': 6,
        'tap_cdr_intake_store_rows{"table": "rejected_events"}': 2,
        "tap_cdr_intake_writer_queue{}": 0,
    }
    assert {name: samples.get(name) for name in expected} == expected
    # Every event and rejection was committed, in batches that the histograms count.
    assert samples["tap_cdr_intake_batch_events_sum{}"] == 9
    assert samples["tap_cdr_intake_commit_seconds_count{}"] >= 1
    assert 0 <= samples["tap_cdr_intake_last_commit_age_seconds{}"] < 600
    text = get(intake.url + "/metrics")[1]
    for secret in (intake.secret_key, *PERSONAL, "wrong"):
        assert secret not in text


def test_prune_under_load_loses_nothing_and_answers_no_503(tmp_path, any_store):
    """Old rows are deleted in short batches while 4 clients post: no 503, every event
    posted is stored, only the old rows are gone."""
    intake = Receiver(any_store, tmp_path / "intake.log").start()
    try:
        old = [f"00000000-0000-4000-9000-{n:012d}" for n in range(5000)]
        execute(
            any_store,
            "insert into announced_calls (uuid, received_at, deliveries) values "
            + ", ".join(f"('{uuid}', '2020-01-01 00:00:00', 1)" for uuid in old),
        )
        execute(
            any_store,
            "insert into rejected_events (received_at, reason, size, keys) values "
            "('2020-01-01 00:00:00', 'no uuid', 2, '[]')",
        )
        answers: list[int | None] = []

        def feed(part: range) -> None:
            answers.extend(post(intake.post_url(), event(uuid_n(n))) for n in part)

        with ThreadPoolExecutor(4) as pool:
            feeders = [pool.submit(feed, range(i, 800, 4)) for i in range(4)]
            pruned = subprocess.run(
                [str(RECEIVER), "prune", "--older-than", "90d"],
                env={"TAP_CDR_INTAKE_STORE": any_store, "PATH": "/usr/bin:/bin"},
                capture_output=True,
                text=True,
                check=True,
            )
            for feeder in feeders:
                feeder.result()
    finally:
        intake.stop()
    assert set(answers) == {200}
    assert "deleted 5000 announced calls and 1 rejected events" in pruned.stderr
    stored = rows(any_store, "select uuid from announced_calls order by uuid")
    assert [uuid for (uuid,) in stored] == sorted(uuid_n(n) for n in range(800))
    assert rows(any_store, "select count(*) from rejected_events") == [(0,)]


def test_prune_refuses_an_age_the_tap_may_not_have_read(tmp_path):
    refused = subprocess.run(
        [str(RECEIVER), "prune", "--older-than", "2h", "--store", f"sqlite:///{tmp_path}/x.db"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert refused.returncode == 1
    assert refused.stderr.strip().splitlines() == [
        (
            "tap-cdr-intake prune: --older-than '2h' must be an age of at least a day, in days or "
            "hours (90d, 36h): a younger row may not have been read by the tap yet"
        )
    ]


def test_a_store_of_an_earlier_version_gains_its_indexes_on_start(tmp_path):
    path = tmp_path / "intake.db"
    with sqlite3.connect(path) as old:  # the schema main had, without the indexes
        old.executescript(
            "create table announced_calls (id integer primary key autoincrement, uuid "
            "varchar(36) not null unique, month varchar(7), projectid bigint, received_at "
            "datetime not null, deliveries integer not null);"
            "create table rejected_events (id integer primary key autoincrement, received_at "
            "datetime not null, reason varchar(200) not null, size integer not null, keys "
            "text not null);"
            "create table intake_meta (key varchar(40) primary key, value varchar(200) not null);"
            "insert into intake_meta values ('store_id', 'old-store');"
        )
    intake = Receiver(f"sqlite:///{path}", tmp_path / "intake.log").start()
    intake.stop()
    with sqlite3.connect(path) as store:
        found = store.execute("select name from sqlite_master where type = 'index'")
        indexes = {name for (name,) in found}
    assert {"ix_announced_calls_received_at", "ix_rejected_events_received_at"} <= indexes


SECRET = "s3cr3t+P/w=d"  # a test value


@pytest.mark.parametrize(
    "url",
    [
        f"postgresql://intake:{urllib.parse.quote(SECRET, safe='')}@127.0.0.1:9/intake",
        f"postgresql://intake@127.0.0.1:9/intake?password={urllib.parse.quote(SECRET, safe='')}",
        f"host=127.0.0.1 port=9 user=intake password={SECRET} dbname=intake",
        f"postgresql://intake@127.0.0.1:9/intake?options=-c%20password%3D{SECRET}",
    ],
    ids=["userinfo", "query", "libpq keywords", "keyword in options"],
)
@pytest.mark.parametrize("command", [[], ["prune", "--older-than", "90d"]])
def test_a_store_that_cannot_be_opened_is_one_line_without_its_password(tmp_path, url, command):
    failed = subprocess.run(
        [str(RECEIVER), *command],
        env={"TAP_CDR_INTAKE_STORE": url, "TAP_CDR_INTAKE_SECRET_KEY": "k" * 20},
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert failed.returncode == 1
    last = failed.stderr.strip().splitlines()[-1]
    assert last.startswith("tap-cdr-intake: the store ")
    assert last.endswith("check --store or TAP_CDR_INTAKE_STORE")
    for form in (SECRET, urllib.parse.quote(SECRET, safe=""), "s3cr3t"):
        assert form not in failed.stderr
    assert "Traceback" not in failed.stderr


def test_start_and_stop_lines_help_and_a_short_key(tmp_path, pg_store):
    """The store from the environment (password hidden), one line at the start and one
    at the stop, --help names every variable and default, a short key is warned of."""
    intake = Receiver(
        pg_store, tmp_path / "intake.log", secret_key="short-key", store_in_environment=True
    ).start()
    assert post(intake.post_url(key="short-key"), event(uuid_n(1))) == 200
    intake.stop()
    log = intake.log.read_text()
    password = PG_URL.split("@")[0].rsplit(":", 1)[1]
    assert re.search(
        rf"listening on http://127.0.0.1:{intake.port}; store postgresql://\S+:\*\*\*@"
        r"127.0.0.1:5432/\S+; cipher off; body limit 1048576 bytes; at most 1000 connections",
        log,
    )
    assert f":{password}@" not in log
    assert "TAP_CDR_INTAKE_SECRET_KEY has 9 characters: use at least 16" in log
    assert (
        "tap-cdr-intake stopped: webhook requests answered 1, new calls stored 1, deliveries "
        "of calls already stored 0"
    ) in log
    helped = subprocess.run([str(RECEIVER), "--help"], capture_output=True, text=True, check=True)
    for name in (
        "TAP_CDR_INTAKE_SECRET_KEY", "TAP_CDR_INTAKE_CIPHER", "TAP_CDR_INTAKE_STORE",
        "sqlite:///tap-cdr-intake.db", "127.0.0.1", "8787", "1048576", "default 1000",
    ):  # fmt: skip
        assert name in " ".join(helped.stdout.split()), name


def test_the_readme_sample_posts_a_call(tmp_path):
    """The README's sample body and curl command, as written (the port aside), against a
    receiver whose key has the characters of `openssl rand -base64 32`."""
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    block = readme.split("<!-- curl-sample:begin -->")[1].split("<!-- curl-sample:end -->")[0]
    script = block.split("```sh\n", 1)[1].rsplit("```", 1)[0]
    key = openssl_key()
    store = f"sqlite:///{tmp_path / 'intake.db'}"
    intake = Receiver(store, tmp_path / "intake.log", secret_key=key).start()
    try:
        answers = [
            subprocess.run(
                ["bash", "-e", "-c", script.replace("127.0.0.1:8787", f"127.0.0.1:{intake.port}")],
                cwd=tmp_path,
                env={"PATH": "/usr/bin:/bin", "TAP_CDR_INTAKE_SECRET_KEY": key},
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            for _ in range(2)
        ]
    finally:
        intake.stop()
    assert answers == ['{"status":"stored"}', '{"status":"duplicate","deliveries":2}']
    assert rows(store, "select uuid, month, projectid from announced_calls") == [
        ("85955f2e-049f-4a41-9145-f513abf50c7b", "2024/03", 3)
    ]
