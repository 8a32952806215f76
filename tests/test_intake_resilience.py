"""tap-cdr-intake against the faults an unattended receiver meets: its PostgreSQL
restarting or hanging, a disk filling, clients that send too much or too slowly, too
few file descriptors, a SIGTERM in a burst. PostgreSQL restarts and hangs happen to a
cluster of the test's own (never the shared one other tests use)."""

from __future__ import annotations

import collections
import contextlib
import itertools
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import IntegrityError

from tap_cdr.intake.store import store_url
from tests.intake_support import (
    SECRET_KEY,
    Receiver,
    event,
    execute,
    free_port,
    get,
    post,
    rows,
    uuid_n,
)
from tests.test_intake_unattended import metrics_of

if TYPE_CHECKING:
    from collections.abc import Iterator

PG_BIN = Path("/usr/lib/postgresql/15/bin")


@dataclass
class Cluster:
    """A PostgreSQL cluster in a temporary directory, on a free port of 127.0.0.1."""

    data: Path
    port: int
    user: str | None  # who runs the server (initdb refuses root)

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def ctl(self, *args: str) -> None:
        # -l: else the server inherits (and holds open) pg_ctl's output.
        log = ["-l", str(self.data.parent / "server.log")] if args[0] != "stop" else []
        command = [str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-w", "-t", "60", *args, *log]
        if self.user:
            command = ["runuser", "-u", self.user, "--", *command]
        subprocess.run(command, check=True, capture_output=True, timeout=120)

    def processes(self) -> list[int]:
        """The postmaster and its children (the backends)."""
        postmaster = int((self.data / "postmaster.pid").read_text().split()[0])
        children = Path(f"/proc/{postmaster}/task/{postmaster}/children").read_text().split()
        return [postmaster, *map(int, children)]


@pytest.fixture
def pg_cluster() -> Iterator[Cluster]:
    if not (PG_BIN / "initdb").exists() or not (PG_BIN / "pg_ctl").exists():
        pytest.skip(f"PostgreSQL server binaries not found in {PG_BIN}")
    user = "postgres" if os.geteuid() == 0 else None
    if user:
        try:
            owner = pwd.getpwnam(user)
        except KeyError:
            pytest.skip("running as root, and no postgres user to run initdb as")
        if not shutil.which("runuser"):
            pytest.skip("running as root, and no runuser to run initdb as postgres")
    base = Path(tempfile.mkdtemp(prefix="intake-pg-"))
    if user:
        os.chown(base, owner.pw_uid, owner.pw_gid)
    cluster = Cluster(base / "data", free_port(), user)
    initdb = [str(PG_BIN / "initdb"), "-D", str(cluster.data), "-U", "postgres",
              "--auth=trust", "--no-sync"]  # fmt: skip
    subprocess.run(
        ["runuser", "-u", user, "--", *initdb] if user else initdb,
        check=True,
        capture_output=True,
        timeout=120,
    )
    options = f"-p {cluster.port} -c listen_addresses=127.0.0.1 -k {base} -c fsync=off"
    cluster.ctl("start", "-o", options)
    try:
        yield cluster
    finally:
        for pid in cluster.processes():  # a test may have stopped them
            with contextlib.suppress(ProcessLookupError):  # or it ended since
                os.kill(pid, signal.SIGCONT)
        cluster.ctl("stop", "-m", "immediate")
        shutil.rmtree(base, ignore_errors=True)


def test_a_postgresql_restart_under_load_costs_only_the_posts_in_flight(tmp_path, pg_cluster):
    """pg_ctl restart while 4 clients post: once the server is back, every post is
    200 (only those in flight during the restart may be 503), and /healthz is 200 again
    within seconds."""
    intake = Receiver(pg_cluster.url, tmp_path / "intake.log").start()
    try:
        for n in range(20):
            assert post(intake.post_url(), event(uuid_n(n))) == 200
        answers: list[tuple[float, int | None]] = []
        stop = threading.Event()

        def feed(first: int) -> None:
            for n in itertools.count(first, 4):
                if stop.is_set():
                    return
                answers.append((time.monotonic(), post(intake.post_url(), event(uuid_n(n)))))

        with ThreadPoolExecutor(4) as pool:
            feeders = [pool.submit(feed, 100 + i) for i in range(4)]
            time.sleep(0.5)
            pg_cluster.ctl("restart", "-m", "fast")
            restarted = time.monotonic()
            time.sleep(2)
            stop.set()
            for feeder in feeders:
                feeder.result()
        late = [status for started, status in answers if started > restarted]
        assert len(late) > 20
        assert set(late) == {200}
        assert {status for _, status in answers} <= {200, 503}
        deadline = time.monotonic() + 5
        while get(intake.url + "/healthz")[0] != 200:
            assert time.monotonic() < deadline, "/healthz did not recover"
            time.sleep(0.1)
        # The first posts after a quiet restart too: the writer's connection is stale.
        pg_cluster.ctl("restart", "-m", "fast")
        assert post(intake.post_url(), event(uuid_n(10**6))) == 200
        pg_cluster.ctl("restart", "-m", "fast")
        assert get(intake.url + "/healthz")[0] == 200
    finally:
        intake.stop()
    acked = sum(status == 200 for _, status in answers)
    assert rows(pg_cluster.url, "select count(*) from announced_calls") == [(20 + acked + 1,)]
    assert "Traceback" not in intake.log.read_text()


@pytest.fixture
def tiny_disk() -> Iterator[Path]:
    """A filesystem of 1 MB (a tmpfs: mounting needs root)."""
    where = Path(tempfile.mkdtemp(prefix="intake-tiny-"))
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", str(where)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        where.rmdir()
        pytest.skip(f"cannot mount a tmpfs: {mounted.stderr.decode().strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=True)
        where.rmdir()


def test_healthz_says_503_when_the_disk_is_full(tmp_path, tiny_disk):
    """Events posted until the store's disk is full (the posts get 503): /healthz says
    503 too, not 200; once space is freed, both are 200 again."""
    store = f"sqlite:///{tiny_disk / 'intake.db'}"
    intake = Receiver(store, tmp_path / "intake.log").start()
    try:
        filler = tiny_disk / "filler"
        with filler.open("wb") as fill:  # most of the disk, so that few events fill it
            fill.write(b"\0" * 700_000)
        statuses = []
        for n in range(3000):
            statuses.append(post(intake.post_url(), event(uuid_n(n))))
            if statuses[-1] != 200:
                break
        assert statuses[-1] == 503
        assert len(statuses) > 1
        status, body = get(intake.url + "/healthz")
        assert status == 503, body
        assert "full" in body
        filler.unlink()
        assert get(intake.url + "/healthz")[0] == 200
        assert post(intake.post_url(), event(uuid_n(10**6))) == 200
    finally:
        intake.stop()


FAILING_BUILD = (
    "create unique index concurrently ix_announced_calls_received_at on announced_calls "
    "(received_at)"
)
BUILD_WAITING = (
    "select pid from pg_stat_activity where wait_event_type = 'Lock' and query ilike "
    "'%create index%' and datname = current_database()"
)


def test_an_index_missing_or_invalid_is_built_without_blocking_writes(tmp_path, pg_store):
    """A receiver starting on a store whose received_at index is missing, while another
    session holds a write transaction open (a long import), builds the index without
    blocking the other receiver's commits; an index left invalid by a failed build is
    built again."""
    schema = pg_store.rsplit("%3D", 1)[1]
    running = Receiver(pg_store, tmp_path / "running.log").start()
    starting = Receiver(pg_store, tmp_path / "starting.log")
    engine = create_engine(store_url(pg_store))
    try:
        for n in range(10):
            assert post(running.post_url(), event(uuid_n(n))) == 200
        execute(pg_store, f"DROP INDEX {schema}.ix_announced_calls_received_at")
        with engine.connect() as held, held.begin():
            held.execute(text("insert into announced_calls (uuid, received_at, deliveries) "
                              "values ('held', now(), 1)"))  # fmt: skip
            started = threading.Thread(target=starting.start)
            started.start()
            deadline = time.monotonic() + 30
            while not rows(pg_store, BUILD_WAITING) and time.monotonic() < deadline:
                time.sleep(0.1)  # the build is waiting for the open transaction
            assert rows(pg_store, BUILD_WAITING)
            assert post(running.post_url(), event(uuid_n(100))) == 200
        started.join(60)
        assert get(starting.url + "/healthz")[0] == 200
        starting.stop()
        # A failed concurrent build: a unique index on duplicate values.
        execute(pg_store, f"DROP INDEX {schema}.ix_announced_calls_received_at")
        execute(pg_store, "update announced_calls set received_at = '2024-01-01'")
        with engine.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT")
            with pytest.raises(IntegrityError):
                conn.execute(text(FAILING_BUILD))
        starting.start()
        starting.stop()
    finally:
        running.stop()
        if starting.process:
            starting.stop(signal.SIGKILL)
        engine.dispose()
    assert rows(pg_store, "select indisvalid, indisunique from pg_index where indexrelid = "
                "to_regclass('ix_announced_calls_received_at')") == [(True, False)]  # fmt: skip
    assert "the index ix_announced_calls_received_at was left invalid" in starting.log.read_text()


def test_a_postgres_url_works_and_names_the_receiver_to_the_server(tmp_path, pg_cluster):
    """libpq's `postgres://` scheme is accepted, and the receiver's sessions show as
    tap-cdr-intake in pg_stat_activity."""
    url = pg_cluster.url.replace("postgresql://", "postgres://", 1)
    intake = Receiver(url, tmp_path / "intake.log").start()
    try:
        assert post(intake.post_url(), event(uuid_n(1))) == 200
        names = rows(
            pg_cluster.url,
            "select distinct application_name from pg_stat_activity where pid <> "
            "pg_backend_pid() and backend_type = 'client backend'",
        )
        assert names == [("tap-cdr-intake",)]
    finally:
        intake.stop()


def test_a_new_sqlite_store_is_readable_by_its_owner_only(tmp_path):
    path = tmp_path / "intake.db"
    intake = Receiver(f"sqlite:///{path}", tmp_path / "intake.log").start()
    try:
        assert post(intake.post_url(), event(uuid_n(1))) == 200
        modes = {p.name: oct(p.stat().st_mode & 0o777) for p in tmp_path.glob("intake.db*")}
    finally:
        intake.stop()
    assert modes == {"intake.db": "0o600", "intake.db-wal": "0o600", "intake.db-shm": "0o600"}


def metric(intake: Receiver, sample: str) -> float:
    text = get(intake.url + "/metrics")[1]
    found = [line.split()[-1] for line in text.splitlines() if line.startswith(sample + " ")]
    return float(found[0]) if found else 0.0


def read_all(sock: socket.socket) -> bytes:
    """What the receiver sends until it closes (b"" if it reset the connection)."""
    answer = b""
    try:
        while chunk := sock.recv(65536):
            answer += chunk
    except ConnectionResetError:
        pass
    return answer


def test_headers_past_64_kb_get_431_and_the_connection_closed(tmp_path):
    intake = Receiver(f"sqlite:///{tmp_path / 'intake.db'}", tmp_path / "intake.log").start()
    try:
        with socket.create_connection(("127.0.0.1", intake.port), timeout=10) as sock:
            sock.sendall(b"POST /vcc/call-disposition HTTP/1.1\r\nHost: x\r\n")
            sent, answer = 0, b""
            with contextlib.suppress(OSError):  # the receiver closes while we send
                while sent < 8 << 20:  # 8 MB of headers, if nothing stops them
                    sock.sendall(f"X-Pad-{sent}: {'y' * 8000}\r\n".encode())
                    sent += 8000
            answer = read_all(sock)
        assert sent < 8 << 20, "the receiver took 8 MB of headers"
        assert answer == b"" or answer.startswith(b"HTTP/1.1 431"), answer[:100]
        assert post(intake.post_url(), event(uuid_n(1))) == 200
        assert metric(intake, 'tap_cdr_intake_rejected_total{reason="headers_too_large"}') == 1
    finally:
        intake.stop()
    assert "its request headers passed 65536 bytes" in intake.log.read_text()


SHORT_DEADLINES = """
import tap_cdr.intake.app as app
import tap_cdr.intake.server as server

app.BODY_SECONDS = 1.0
server.REQUEST_SECONDS = 3.0
"""


def dribble(port: int, head: bytes, seconds: float) -> tuple[bytes, float]:
    """Send ``head``, then a body a byte every 0.2 s for up to ``seconds``: what came
    back, and when the receiver closed the connection (inf: it never did)."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=0.2) as sock:
        sock.sendall(head)
        answer = b""
        while time.monotonic() - started < seconds:
            try:
                sock.sendall(b"x")
                chunk = sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return answer, time.monotonic() - started
            if not chunk:
                return answer, time.monotonic() - started
            answer += chunk
    return answer, float("inf")


def test_a_dribbled_body_cannot_keep_its_connection(tmp_path):
    """A body sent a byte at a time gets its 408 with `Connection: close` and the
    connection is closed, though the client sends on; so do a 401 and a 413 given before
    the body was read; a request past its total deadline (3 s here) is dropped."""
    intake = Receiver(
        f"sqlite:///{tmp_path / 'intake.db'}", tmp_path / "intake.log", hook=SHORT_DEADLINES
    ).start()
    try:
        head = (
            "POST /vcc/call-disposition?secret-key={} HTTP/1.1\r\nHost: x\r\n"
            "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n"
        )
        for key, length, status in (
            (intake.secret_key, 1000, b"408"),
            ("wrong", 1000, b"401"),
            (intake.secret_key, 10 << 20, b"413"),
        ):
            answer, closed = dribble(intake.port, head.format(key, length).encode(), 15)
            assert answer.startswith(b"HTTP/1.1 " + status), answer
            assert b"\r\nconnection: close\r\n" in answer.lower()
            assert closed < 5, f"{status!r}: the connection stayed open"
        assert post(intake.post_url(), event(uuid_n(1))) == 200
    finally:
        intake.stop()


def test_too_few_open_files_clamp_the_connections_with_one_warning(tmp_path):
    """Under `ulimit -n 256` (hard 256) --max-connections 1000 is clamped with one
    warning and the receiver serves; with a hard limit of 4096 the soft limit is raised
    to it instead, without a warning."""
    store = f"sqlite:///{tmp_path / 'intake.db'}"
    limit = "import resource\nresource.setrlimit(resource.RLIMIT_NOFILE, ({}, {}))\n"
    low = Receiver(store, tmp_path / "low.log", hook=limit.format(256, 256)).start()
    try:
        assert post(low.post_url(), event(uuid_n(1))) == 200
    finally:
        low.stop()
    warnings = [line for line in low.log.read_text().splitlines() if " WARNING " in line]
    assert len(warnings) == 1
    assert warnings[0].endswith(
        "--max-connections 1000 needs 1064 open files, and the limit is 256 (hard limit "
        "256): serving at most 192 connections; raise the limit (systemd LimitNOFILE=, "
        "ulimit -n)"
    )
    assert "at most 192 connections" in low.log.read_text()
    raised = Receiver(store, tmp_path / "raised.log", hook=limit.format(256, 4096)).start()
    try:
        assert post(raised.post_url(), event(uuid_n(2))) == 200
        assert metric(raised, "process_max_fds") == 4096
    finally:
        raised.stop()
    assert " WARNING " not in raised.log.read_text()


SQL_LOGGED = """
import logging
logging.getLogger("sqlalchemy.engine.Engine").setLevel(logging.INFO)
"""


def test_the_stop_line_counts_each_request_once_and_reads_no_rows(tmp_path):
    intake = Receiver(
        f"sqlite:///{tmp_path / 'intake.db'}", tmp_path / "intake.log", hook=SQL_LOGGED
    ).start()
    assert post(intake.post_url(), event(uuid_n(1))) == 200
    assert post(intake.post_url(), event(uuid_n(1))) == 200
    assert post(intake.post_url(), event(uuid_n(2))) == 200
    intake.stop()
    log = intake.log.read_text()
    assert (
        "tap-cdr-intake stopped: webhook requests answered 3, new calls stored 2, deliveries "
        "of calls already stored 1"
    ) in log
    assert "count(*)" not in log  # the store's rows are not counted at the stop


def test_a_hung_postgresql_gives_503s_in_bounded_time(tmp_path, pg_cluster):
    """The server stops answering (SIGSTOP: the connections stay up, nothing comes
    back): posts get 503 within the 10 s wait, /healthz 503 within its 2 s; once it
    answers again (SIGCONT), so does the receiver; and a stop while it hangs ends."""
    intake = Receiver(pg_cluster.url, tmp_path / "intake.log").start()
    try:
        assert post(intake.post_url(), event(uuid_n(1))) == 200
        for pid in pg_cluster.processes():
            os.kill(pid, signal.SIGSTOP)
        started = time.monotonic()
        # The client waits longer than the receiver's bounded wait, whose answer it is.
        assert post(intake.post_url(), event(uuid_n(2)), timeout=30) == 503
        assert time.monotonic() - started < 12
        started = time.monotonic()
        status, body = get(intake.url + "/healthz")
        assert (status, time.monotonic() - started < 4) == (503, True), body
        for pid in pg_cluster.processes():
            os.kill(pid, signal.SIGCONT)
        deadline = time.monotonic() + 20
        while get(intake.url + "/healthz")[0] != 200:
            assert time.monotonic() < deadline, "/healthz did not recover"
            time.sleep(0.2)
        assert post(intake.post_url(), event(uuid_n(3))) == 200

        # A stop while the store hangs, its writer stuck in a call, is bounded too
        # (systemd's TimeoutStopSec is 40 s).
        for pid in pg_cluster.processes():
            os.kill(pid, signal.SIGSTOP)
        assert post(intake.post_url(), event(uuid_n(4)), timeout=30) == 503
        started = time.monotonic()
        intake.stop()
        assert time.monotonic() - started < 30
        assert "the store did not answer" in intake.log.read_text()
    finally:
        intake.stop()


def send_raw(port: int, n: int) -> str:
    """One webhook on a connection of its own: its status, "refused" at connect, or
    "reset" (the connection closed before an answer)."""
    body = json.dumps(event(uuid_n(n))).encode()
    request = (
        f"POST /vcc/call-disposition?secret-key={SECRET_KEY} HTTP/1.1\r\nHost: x\r\n"
        f"Connection: close\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    try:
        sock = socket.create_connection(("127.0.0.1", port), timeout=60)
    except ConnectionRefusedError:
        return "refused"
    with sock:
        try:
            sock.sendall(request)
            answer = read_all(sock)
        except OSError:
            return "reset"
    return answer[9:12].decode() if answer.startswith(b"HTTP/1.1 ") else "reset"


def test_sigterm_in_a_burst_answers_every_request_it_took(tmp_path):
    """SIGTERM while 8 clients post 3,000 webhooks: each is answered with a status or
    refused at connect; none is reset, and every 200 is stored."""
    store = f"sqlite:///{tmp_path / 'intake.db'}"
    intake = Receiver(store, tmp_path / "intake.log").start()
    outcomes: list[tuple[int, str]] = []
    with ThreadPoolExecutor(8) as pool:
        results = pool.map(lambda n: (n, send_raw(intake.port, n)), range(3000))
        while len(rows(store, "select id from announced_calls limit 300")) < 300:
            time.sleep(0.05)
        assert intake.process is not None
        intake.process.send_signal(signal.SIGTERM)
        outcomes = list(results)
    assert intake.process.wait(60) == -signal.SIGTERM
    kinds = collections.Counter(outcome for _, outcome in outcomes)
    assert set(kinds) <= {"200", "503", "refused"}, kinds
    assert kinds["refused"] > 0, "the SIGTERM came after the burst"
    stored = {uuid for (uuid,) in rows(store, "select uuid from announced_calls")}
    assert {uuid_n(n) for n, outcome in outcomes if outcome == "200"} <= stored


def test_a_flood_of_idle_connections_is_capped_and_webhooks_go_on_after_it(tmp_path):
    """uvicorn bounds requests, not connections: the receiver closes, unread, those past
    --max-connections + 32, so a flood never takes it to its open-file limit."""
    intake = Receiver(
        f"sqlite:///{tmp_path / 'intake.db'}",
        tmp_path / "intake.log",
        extra_args=["--max-connections", "4"],
    ).start()
    flood = []
    try:
        flood.extend(
            socket.create_connection(("127.0.0.1", intake.port), timeout=5) for _ in range(80)
        )
        time.sleep(1)
        fds = len(list(Path(f"/proc/{intake.process.pid}/fd").iterdir()))
        assert fds < 4 + 32 + 64, fds
    finally:
        for sock in flood:
            sock.close()
    try:
        deadline = time.monotonic() + 10
        while post(intake.post_url(), event(uuid_n(1))) != 200:
            assert time.monotonic() < deadline, "no webhook stored after the flood"
            time.sleep(0.2)
        samples = metrics_of(intake)
        assert samples['tap_cdr_intake_rejected_total{"reason": "too_many_connections"}'] >= 80 - 36
    finally:
        intake.stop()
