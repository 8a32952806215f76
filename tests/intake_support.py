"""The webhook receiver as a real process, and its stores (SQLite, PostgreSQL), for the
intake tests."""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from sqlalchemy import create_engine, text

from tap_cdr.intake.store import store_url

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

PG_URL = os.environ.get("TAP_CDR_PG_URL", "postgresql://tapcdr:tapcdr@127.0.0.1:5432/tapcdr")
SECRET_KEY = "intake-test-secret-1f9e"  # a test value
RECEIVER = Path(sys.executable).with_name("tap-cdr-intake")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Receiver:
    """`tap-cdr-intake` in a process of its own, on 127.0.0.1."""

    store: str
    log: Path
    cipher: str | None = None
    secret_key: str = SECRET_KEY
    max_body_bytes: int | None = None
    # Python run at the receiver's start (a sitecustomize): a faked clock, a fault.
    hook: str | None = None
    extra_args: list[str] = field(default_factory=list)
    store_in_environment: bool = False
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def post_url(self, key: str | None = SECRET_KEY, iv: str | None = None) -> str:
        query = "&".join(
            part
            for part in (f"secret-key={key}" if key is not None else "", f"iv={iv}" if iv else "")
            if part
        )
        return f"{self.url}/vcc/call-disposition" + (f"?{query}" if query else "")

    def start(self) -> Receiver:
        env = {**os.environ, "TAP_CDR_INTAKE_SECRET_KEY": self.secret_key}
        for name in ("TAP_CDR_INTAKE_CIPHER", "TAP_CDR_INTAKE_STORE"):
            env.pop(name, None)
        if self.cipher:
            env["TAP_CDR_INTAKE_CIPHER"] = self.cipher
        if self.hook is not None:
            hooks = self.log.parent / f"hook-{self.port}"
            hooks.mkdir(exist_ok=True)
            (hooks / "sitecustomize.py").write_text(self.hook)
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(hooks), env.get("PYTHONPATH")]))
        args = [str(RECEIVER), "--port", str(self.port), *self.extra_args]
        if self.store_in_environment:
            env["TAP_CDR_INTAKE_STORE"] = self.store
        else:
            args += ["--store", self.store]
        if self.max_body_bytes is not None:
            args += ["--max-body-bytes", str(self.max_body_bytes)]
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(args, stdout=log, stderr=log, env=env)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"tap-cdr-intake exited: {self.log.read_text()[-2000:]}")
            if status_of(urllib.request.Request(self.url + "/healthz")) == 200:
                return self
            time.sleep(0.1)
        pytest.fail(f"tap-cdr-intake never answered /healthz: {self.log.read_text()[-2000:]}")

    def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(sig)
        return self.process.wait(timeout=60)


def get(url: str) -> tuple[int | None, str]:
    """The status and body of a GET (None: the receiver cannot be reached)."""
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read().decode()
    except (urllib.error.URLError, OSError):
        return None, ""


def status_of(request: urllib.request.Request) -> int | None:
    """The status of a request, or None when the receiver cannot be reached."""
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (urllib.error.URLError, OSError):
        return None


def post(
    url: str, body: bytes | dict[str, Any], content_type: str = "application/json"
) -> int | None:
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    request = urllib.request.Request(
        url, data=data, headers={"Content-Type": content_type}, method="POST"
    )
    return status_of(request)


def event(uuid: str, **fields: Any) -> dict[str, Any]:
    """A Call Disposition event, with the personal data a real one carries."""
    return {
        "uuid": uuid,
        "projectid": 3,
        "call_start_time": "2024-03-10 11:58:00",
        "source": "36201234567",
        "destination": "36309876543",
        "agentName": "Kovács Éva",
        "client_data": {"name": "Nagy Péter", "email": "peter@example.hu"},
        **fields,
    }


def uuid_n(n: int) -> str:
    return f"00000000-0000-4000-8000-{n:012d}"


@pytest.fixture
def pg_store() -> Iterator[str]:
    """A store URL in a schema of its own in the PostgreSQL that CI starts."""
    schema = f"intake_{secrets.token_hex(4)}"
    admin = create_engine(store_url(PG_URL))
    with admin.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    yield f"{PG_URL}?options=-csearch_path%3D{schema}"
    with admin.begin() as conn:
        conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
    admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'intake.db'}"
    return str(request.getfixturevalue("pg_store"))


@pytest.fixture
def receiver(tmp_path: Path, any_store: str) -> Iterator[Callable[..., Receiver]]:
    """Start receivers on the test's store (both kinds); all are killed after it."""
    started: list[Receiver] = []

    def make(**kwargs: Any) -> Receiver:
        made = Receiver(any_store, tmp_path / "intake.log", **kwargs).start()
        started.append(made)
        return made

    yield make
    for made in started:
        made.stop(signal.SIGKILL)


def rows(store: str, sql: str) -> list[tuple[Any, ...]]:
    engine = create_engine(store_url(store))
    try:
        with engine.connect() as conn:
            return [tuple(row) for row in conn.execute(text(sql))]
    finally:
        engine.dispose()


def execute(store: str, sql: str) -> None:
    engine = create_engine(store_url(store))
    try:
        with engine.begin() as conn:
            conn.execute(text(sql))
    finally:
        engine.dispose()


def kill(receiver: Receiver) -> None:
    receiver.stop(signal.SIGKILL)
