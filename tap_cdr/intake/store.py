"""The intake store: calls announced by VCC Live's Call Disposition webhook, written by
`tap-cdr-intake` and read by the tap (``cdr_by_uuid.intake_store``).

SQLAlchemy Core, so that one URL picks the database: a SQLite file for one receiver,
PostgreSQL for several behind a load balancer. Only what the tap needs is kept: the
uuid, the month of the call's start, the project, when it was received and how many
times it was delivered. Nothing else of an event (numbers, names, client data).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, quote_plus, unquote, unquote_plus
from uuid import uuid4

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    bindparam,
    create_engine,
    delete,
    event,
    func,
    inspect,
    make_url,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import ArgumentError, IntegrityError, ProgrammingError, SQLAlchemyError
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement

if TYPE_CHECKING:
    from collections.abc import Sequence

    from sqlalchemy.engine import URL, Connection, Engine
    from sqlalchemy.sql.compiler import SQLCompiler

DEFAULT_STORE = "sqlite:///tap-cdr-intake.db"
log = logging.getLogger("tap_cdr.intake")
# Bounded waits, so that a hung store gives 503s rather than hung requests.
CONNECT_TIMEOUT_SECONDS = 5
# Sent data unacknowledged this long fails the connection (libpq's tcp_user_timeout).
TCP_USER_TIMEOUT_MS = 10_000
STATEMENT_TIMEOUT_SECONDS = 5  # PostgreSQL's statement_timeout, SQLite's busy timeout
IDLE_IN_TRANSACTION_SECONDS = 60  # far below the tap's GAP_HORIZON
PRUNE_BATCH = 1000
# The health probe's row: more pages than a commit of a few events writes (SQLite: 11
# WAL frames, an event 4), so that a disk too full for events fails the probe first.
# Random hex, which PostgreSQL cannot compress away.
_PROBE_PAYLOAD = os.urandom(16384).hex()
# SQLite needs INTEGER (not BIGINT) for an autoincrementing rowid.
_ID = BigInteger().with_variant(Integer(), "sqlite")

metadata = MetaData()
announced_calls = Table(
    "announced_calls",
    metadata,
    Column("id", _ID, primary_key=True, autoincrement=True),
    Column("uuid", String(36), nullable=False, unique=True),
    Column("month", String(7)),  # YYYY/MM of the call's start, when the event says
    Column("projectid", BigInteger),
    Column("received_at", DateTime(timezone=True), nullable=False),
    Column("deliveries", Integer, nullable=False),
    # For prune: old rows are found by received_at.
    Index("ix_announced_calls_received_at", "received_at"),
    # AUTOINCREMENT: SQLite never reuses an id, so the tap's position stays exact.
    sqlite_autoincrement=True,
)
rejected_events = Table(
    "rejected_events",
    metadata,
    Column("id", _ID, primary_key=True, autoincrement=True),
    Column("received_at", DateTime(timezone=True), nullable=False),
    Column("reason", String(200), nullable=False),
    Column("size", Integer, nullable=False),
    Column("keys", Text, nullable=False),  # the body's top-level keys (JSON), never values
    Index("ix_rejected_events_received_at", "received_at"),
    sqlite_autoincrement=True,
)
# The store's identity: the tap keeps it with its position, so that a position read
# from one store is never applied to another (a new file, another database).
store_meta = Table(
    "intake_meta",
    metadata,
    Column("key", String(40), primary_key=True),
    Column("value", String(200), nullable=False),
)
# The health probe writes a row here, and deletes it in the same transaction.
probes = Table(
    "intake_probe",
    metadata,
    Column("key", String(60), primary_key=True),
    Column("payload", Text, nullable=False),
)


class utc_now(FunctionElement[datetime]):  # noqa: N801 (an SQL function)
    """The database's clock, in UTC: the one clock of the store. Receivers write it as
    ``received_at`` and the tap reads it with the rows, so that no machine's clock
    (a receiver's, the tap's) decides when a call is due."""

    type = DateTime(timezone=True)
    inherit_cache = True


@compiles(utc_now, "postgresql")
def _utc_now_postgresql(_element: utc_now, _compiler: SQLCompiler, **_kw: Any) -> str:
    return "now()"


@compiles(utc_now, "sqlite")
def _utc_now_sqlite(_element: utc_now, _compiler: SQLCompiler, **_kw: Any) -> str:
    # SQLAlchemy's own text form of a datetime (microseconds), so that rows written
    # before compare with these as text.
    return "strftime('%Y-%m-%d %H:%M:%f000', 'now')"


def store_url(url: str) -> URL:
    """The URL with its driver: ``postgresql://`` (or libpq's ``postgres://``) means
    psycopg (3), the driver the intake extra installs, where SQLAlchemy would look for
    psycopg2."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        return parsed.set(drivername="postgresql+psycopg")
    if parsed.drivername not in ("sqlite", "sqlite+pysqlite", "postgresql+psycopg"):
        # A ValueError: one line naming the setting (not "install the intake extra").
        raise ValueError(
            f"{parsed.drivername}:// is not a store: use sqlite:///... or postgresql://..."
        )
    return parsed


def has_store(url: str) -> bool:
    """Whether the database at ``url`` holds the store's tables (it is not created)."""
    engine = _engine(url, "tap-cdr-intake")
    try:
        return inspect(engine).has_table("announced_calls")
    finally:
        engine.dispose()


_PASSWORD_KEYWORD = re.compile(r"(password\s*=\s*)('[^']*'|[^\s&'\"]+)", re.IGNORECASE)
# Up to the last `@`: a password may hold an unencoded `@`, `/` or `:`.
_USERINFO = re.compile(r"(?<=://)\S*@")


def shown(url: str) -> str:
    """The store URL as it may be shown: its password hidden in every form it can take
    (``user:password@``, ``?password=``, a libpq ``password=`` keyword)."""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        return _hidden(url)
    if "@" in (parsed.host or ""):
        # An unencoded `@` in the password: SQLAlchemy took the rest of it for the host.
        return _hidden(url)
    hidden = {
        key: "***" if "password" in f"{key} {values}".lower() else values
        for key, values in parsed.query.items()
    }
    parsed = parsed.set(query=hidden)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        # Where the file really is, whatever the working directory of the service.
        parsed = parsed.set(database=str(Path(str(parsed.database)).resolve()))
    return parsed.render_as_string(hide_password=True)


def redact(message: str, url: str) -> str:
    """``message`` (an error from the driver, a URL) without the passwords in ``url``,
    however they were encoded."""
    forms = {
        form
        for secret in _passwords(url) - {""}
        for form in (secret, quote(secret, safe=""), quote(secret), quote_plus(secret))
    }
    for form in sorted(forms, key=len, reverse=True):
        # A whole word only: a short password must not take the letters of other words.
        head = r"(?<!\w)" if re.match(r"\w", form) else ""
        tail = r"(?!\w)" if re.match(r"\w", form[-1]) else ""
        message = re.sub(head + re.escape(form) + tail, "***", message)
    return _hidden(message)


def _hidden(text: str) -> str:
    return _PASSWORD_KEYWORD.sub(r"\1***", _USERINFO.sub("***@", text))


def _passwords(url: str) -> set[str]:
    found = set()
    for reading in (url, unquote(url), unquote_plus(url)):
        found |= {match[0][:-1].partition(":")[2] for match in _USERINFO.finditer(reading)}
        found |= {match[2].strip("'") for match in _PASSWORD_KEYWORD.finditer(reading)}
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        parsed = None
    if parsed is not None:
        found.add(parsed.password or "")
        host = parsed.host or ""
        found.add(host.rpartition("@")[0])  # what followed an unencoded `@` in the password
        found |= {
            str(value)
            for key, values in parsed.query.items()
            if "password" in key.lower()
            for value in (values if isinstance(values, tuple) else (values,))
        }
    # A password with an unencoded `@` or `:` splits where SQLAlchemy does not expect:
    # a driver may quote any piece of it (as the port, as the host).
    return found | {piece for secret in found for piece in re.split(r"[@:/]", secret)}


def problem_of(exc: BaseException, url: str) -> str:
    """One line saying what went wrong with the store, without a password."""
    cause = getattr(exc, "orig", None) or exc
    first = (str(cause).strip().splitlines() or [""])[0][:300]
    return redact(f"{type(cause).__name__}: {first}" if first else type(cause).__name__, url)


def _engine(url: str, application_name: str, **kwargs: Any) -> Engine:
    parsed = store_url(url)
    if parsed.get_backend_name() == "postgresql":
        # libpq's own bounds, so that a server gone silent (a network cut, a host down)
        # fails the connection in seconds instead of a wait for ever; the URL may set
        # each otherwise.
        bounds = {
            "application_name": application_name,
            "connect_timeout": CONNECT_TIMEOUT_SECONDS,
            "keepalives": 1,
            "keepalives_idle": 10,
            "keepalives_interval": 5,
            "keepalives_count": 3,
            "tcp_user_timeout": TCP_USER_TIMEOUT_MS,
        }
        kwargs["connect_args"] = {k: v for k, v in bounds.items() if k not in parsed.query}
    elif parsed.get_backend_name() == "sqlite":
        _create_private(parsed.database)
    return create_engine(parsed, pool_pre_ping=True, **kwargs)


def _create_private(database: str | None) -> None:
    """A new SQLite store's file, created readable by its owner only (SQLite gives its
    -wal and -shm files the same mode): it holds the calls announced."""
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    with contextlib.suppress(OSError):  # exists, or cannot be: SQLite says which
        os.close(os.open(database, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))


def open_store(url: str) -> Engine:
    """An engine for the store at ``url``, for the receiver: its tables and indexes
    created if missing, every wait bounded (connect, statements, locks), and at most
    two connections (the writer's, and one for /metrics)."""
    engine = _engine(
        url,
        "tap-cdr-intake",
        pool_size=2,
        max_overflow=0,
        pool_timeout=STATEMENT_TIMEOUT_SECONDS,
    )
    if engine.dialect.name == "sqlite":

        @event.listens_for(engine, "connect")
        def _durable(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            # WAL lets the tap read while a receiver writes; FULL syncs each commit,
            # so a 200 is never answered for an event a crash could lose.
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=FULL")
            cursor.execute(f"PRAGMA busy_timeout={STATEMENT_TIMEOUT_SECONDS * 1000}")
            cursor.close()

    else:

        @event.listens_for(engine, "connect")
        def _bounded(dbapi_connection: Any, _record: Any) -> None:
            autocommit = dbapi_connection.autocommit
            dbapi_connection.autocommit = True
            with dbapi_connection.cursor() as cursor:
                cursor.execute(f"SET statement_timeout = '{STATEMENT_TIMEOUT_SECONDS}s'")
                # A receiver frozen between its insert and its commit (a VM paused, a
                # SIGSTOP) must not commit after the tap stopped watching the id
                # (source.GAP_HORIZON, 10 min): the server rolls it back, and VCC Live
                # delivers the call again, under a new id.
                cursor.execute(
                    f"SET idle_in_transaction_session_timeout = '{IDLE_IN_TRANSACTION_SECONDS}s'"
                )
            dbapi_connection.autocommit = autocommit

    _create_schema(engine)
    return engine


def _create_schema(engine: Engine) -> None:
    try:
        _create(engine)
    except (ProgrammingError, IntegrityError):
        # Another receiver created them at the same moment: they exist now.
        _create(engine)


def _create(engine: Engine) -> None:
    # New tables get their indexes here, built on no rows.
    metadata.create_all(engine)
    # Stores made by an earlier version gain the indexes here.
    if engine.dialect.name == "postgresql":
        _create_indexes_concurrently(engine)
    else:
        with engine.begin() as conn:
            for index in _INDEXES:
                index.create(conn, checkfirst=True)
    dialect = postgresql if engine.dialect.name == "postgresql" else sqlite
    with engine.begin() as conn:
        conn.execute(
            dialect.insert(store_meta)
            .values(key="store_id", value=str(uuid4()))
            .on_conflict_do_nothing(index_elements=["key"])
        )


_INDEXES = [index for table in (announced_calls, rejected_events) for index in table.indexes]
_INDEX_BUILDS_LOCK = 0x7461_7063_6472  # an advisory lock: one receiver builds at a time


def _create_indexes_concurrently(engine: Engine) -> None:
    """The missing indexes, built without blocking writes (a plain CREATE INDEX on a
    large table would hold the receivers' commits for as long as it takes). A build
    that failed (a restart, a timeout) leaves an invalid index, which PostgreSQL
    maintains but never uses: it is dropped and built again."""
    with engine.connect() as conn:
        # CONCURRENTLY cannot run in a transaction; a build takes longer than a
        # statement may.
        conn.execution_options(isolation_level="AUTOCOMMIT")
        conn.execute(text("SET statement_timeout = 0"))
        conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": _INDEX_BUILDS_LOCK})
        try:
            for index in _INDEXES:
                valid = conn.execute(
                    text("SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass(:name)"),
                    {"name": index.name},
                ).scalar_one_or_none()
                if valid is False:
                    log.warning(
                        "the index %s was left invalid by a build that failed: building it again",
                        index.name,
                    )
                    conn.execute(text(f"DROP INDEX CONCURRENTLY IF EXISTS {index.name}"))
                columns = ", ".join(column.name for column in index.columns)
                conn.execute(
                    text(
                        f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {index.name} "
                        f"ON {index.table.name} ({columns})"  # type: ignore[union-attr]
                    )
                )
        finally:
            conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": _INDEX_BUILDS_LOCK})
            conn.execute(text(f"SET statement_timeout = '{STATEMENT_TIMEOUT_SECONDS}s'"))


class StoreError(Exception):
    """The intake store cannot be read (missing, not an intake store, unreachable)."""


def open_reader(url: str) -> tuple[Engine, str]:
    """An engine on an existing store, for the tap, and the store's id."""
    where = shown(url)
    try:
        parsed = store_url(url)
    except (SQLAlchemyError, ValueError) as exc:
        raise StoreError(
            f"the intake store {where} is not a store URL ({problem_of(exc, url)})"
        ) from None
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if not database or database == ":memory:" or not Path(database).is_file():
            raise StoreError(
                f"the intake store {where} does not exist: start tap-cdr-intake with "
                "--store set to the same URL first"
            )
    try:
        engine = _engine(url, "tap-cdr")
        with engine.connect() as conn:
            store_id = conn.execute(
                select(store_meta.c.value).where(store_meta.c.key == "store_id")
            ).scalar_one_or_none()
    except ImportError as exc:
        raise StoreError(
            f"the intake store {where} needs a database driver: install tap-cdr with its "
            f"`intake` extra, as 'tap_cdr-....whl[intake]' (README: Install) ({exc})"
        ) from None
    except (SQLAlchemyError, ValueError) as exc:  # ValueError: a port that is not one
        raise StoreError(
            f"the intake store {where} cannot be read ({problem_of(exc, url)}). "
            "Is it the store tap-cdr-intake writes to?"
        ) from None
    if store_id is None:
        raise StoreError(f"the intake store {where} has no store id: is it an intake store?")
    return engine, store_id


# Built once: under load the writer runs these hundreds of times a second, and building
# a statement costs more of the CPU than SQLite takes to run it.
_REDELIVERY = (
    update(announced_calls)
    .where(announced_calls.c.uuid == bindparam("call"))
    .values(deliveries=announced_calls.c.deliveries + 1)
    .returning(announced_calls.c.deliveries)
)
_NEW_CALL = {
    # uuid, month and projectid are the execute's parameters.
    name: dialect.insert(announced_calls)
    .values(received_at=utc_now(), deliveries=1)
    .on_conflict_do_update(
        index_elements=["uuid"], set_={"deliveries": announced_calls.c.deliveries + 1}
    )
    .returning(announced_calls.c.deliveries)
    for name, dialect in (("postgresql", postgresql), ("sqlite", sqlite))
}


def record_delivery(conn: Connection, uuid: str, month: str | None, projectid: int | None) -> int:
    """Store an announced call; the number of times it has been delivered (1: new)."""
    # A redelivery only updates: an INSERT that conflicts would still take an id
    # from PostgreSQL's sequence, and each id skipped is a gap the tap must track.
    again = conn.execute(_REDELIVERY, {"call": uuid}).scalar_one_or_none()
    if again is not None:
        return int(again)
    values = {"uuid": uuid, "month": month, "projectid": projectid}
    return int(conn.execute(_NEW_CALL[conn.dialect.name], values).scalar_one())


def record_rejection(conn: Connection, reason: str, size: int, keys: Sequence[str]) -> None:
    conn.execute(
        rejected_events.insert().values(
            received_at=utc_now(), reason=reason[:200], size=size, keys=json.dumps(list(keys))
        )
    )


def probe(conn: Connection) -> None:
    """A write that commits, as an event's would: the lock on the calls' table (held by
    whoever locks the store) and a new row inserted, then deleted, so that a store that
    cannot take a commit now (locked, read-only, its disk full) fails it. (An UPDATE
    of an existing row needs no new space: SQLite does it in place on a full disk.)"""
    conn.execute(
        update(announced_calls)
        .where(announced_calls.c.id == 0)  # no such row: ids start at 1
        .values(deliveries=announced_calls.c.deliveries)
    )
    key = str(uuid4())  # each receiver its own row
    conn.execute(probes.insert().values(key=key, payload=_PROBE_PAYLOAD))
    conn.execute(delete(probes).where(probes.c.key == key))


def row_counts(conn: Connection) -> dict[str, int]:
    return {
        table.name: int(conn.execute(select(func.count()).select_from(table)).scalar_one())
        for table in (announced_calls, rejected_events)
    }


def prune(
    engine: Engine, older_than: timedelta, batch: int = PRUNE_BATCH
) -> tuple[dict[str, int], datetime]:
    """Delete the rows received more than ``older_than`` ago (by the database's clock),
    ``batch`` rows per transaction, pausing between them as long as each took, so that
    no write lock is held for long and receivers' commits go in between. The rows
    deleted per table, and the cutoff."""
    with engine.connect() as conn:
        cutoff = _aware(conn.execute(select(utc_now())).scalar_one()) - older_than
    deleted = {}
    for table in (announced_calls, rejected_events):
        deleted[table.name] = 0
        oldest = (
            select(table.c.id)
            .where(table.c.received_at < cutoff)
            .order_by(table.c.received_at)
            .limit(batch)
        )
        while True:
            started = time.monotonic()
            with engine.begin() as conn:
                count = conn.execute(delete(table).where(table.c.id.in_(oldest))).rowcount
            deleted[table.name] += count
            if count < batch:
                break
            time.sleep(time.monotonic() - started)
    return deleted, cutoff


@dataclass(frozen=True)
class Announcement:
    id: int
    uuid: str
    month: str | None
    received_at: datetime
    due: bool  # received at least the tap's delay ago, by the database's clock
    age: timedelta  # since it was received, by the database's clock


def announced_after(
    conn: Connection, after: int, limit: int, delay: timedelta
) -> list[Announcement]:
    """Up to ``limit`` calls with an id above ``after``, in id order."""
    return _announcements(conn, announced_calls.c.id > after, limit, delay)


def count_after(conn: Connection, after: int) -> int:
    """How many calls have an id above ``after``."""
    query = select(func.count()).select_from(announced_calls).where(announced_calls.c.id > after)
    return int(conn.execute(query).scalar_one())


def highest_id(conn: Connection) -> int | None:
    """The largest id of the calls (None: the store holds none)."""
    found = conn.execute(select(func.max(announced_calls.c.id))).scalar_one()
    return None if found is None else int(found)


def announced_among(conn: Connection, ids: Sequence[int], delay: timedelta) -> list[Announcement]:
    """The calls with these ids that are committed now, in id order."""
    found: list[Announcement] = []
    for at in range(0, len(ids), 500):  # SQLite before 3.32 takes 999 parameters at most
        part = list(ids[at : at + 500])
        found += _announcements(conn, announced_calls.c.id.in_(part), len(part), delay)
    return sorted(found, key=lambda announcement: announcement.id)


def _announcements(
    conn: Connection, where: Any, limit: int, delay: timedelta
) -> list[Announcement]:
    table = announced_calls
    query = (
        select(table.c.id, table.c.uuid, table.c.month, table.c.received_at, utc_now())
        .where(where)
        .order_by(table.c.id)
        .limit(limit)
    )
    found = []
    for row_id, uuid, month, received_at, now in conn.execute(query):
        received = _aware(received_at)
        age = _aware(now) - received
        found.append(Announcement(row_id, uuid, month, received, age >= delay, age))
    return found


def _aware(moment: datetime) -> datetime:
    # SQLite returns naive datetimes; the store writes UTC.
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
