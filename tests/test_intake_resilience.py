"""tap-cdr-intake against the faults an unattended receiver meets: its PostgreSQL
restarting or hanging, a disk filling, clients that send too much or too slowly, too
few file descriptors, a SIGTERM in a burst. PostgreSQL restarts and hangs happen to a
cluster of the test's own (never the shared one other tests use)."""

from __future__ import annotations

import itertools
import os
import pwd
import shutil
import signal
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
    Receiver,
    event,
    execute,
    free_port,
    get,
    post,
    rows,
    uuid_n,
)

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
