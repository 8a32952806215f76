"""The intake store: calls announced by VCC Live's Call Disposition webhook, written by
`tap-cdr-intake` and read by the tap (``cdr_by_uuid.intake_store``).

SQLAlchemy Core, so that one URL picks the database: a SQLite file for one receiver,
PostgreSQL for several behind a load balancer. Only what the tap needs is kept: the
uuid, the month of the call's start, the project, when it was received and how many
times it was delivered. Nothing else of an event (numbers, names, client data).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any
from uuid import uuid4

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    event,
    func,
    make_url,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError, ProgrammingError, SQLAlchemyError

if TYPE_CHECKING:
    from collections.abc import Sequence

    from sqlalchemy.engine import URL, Connection, Engine

DEFAULT_STORE = "sqlite:///tap-cdr-intake.db"
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


def store_url(url: str) -> URL:
    """The URL with its driver: ``postgresql://`` means psycopg (3), the driver the
    intake extra installs, where SQLAlchemy would look for psycopg2."""
    parsed = make_url(url)
    return (
        parsed.set(drivername="postgresql+psycopg") if parsed.drivername == "postgresql" else parsed
    )


def open_store(url: str) -> Engine:
    """An engine for the store at ``url``, its tables created if missing."""
    engine = create_engine(store_url(url), pool_pre_ping=True)
    if engine.dialect.name == "sqlite":

        @event.listens_for(engine, "connect")
        def _durable(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            # WAL lets the tap read while a receiver writes; FULL syncs each commit,
            # so a 200 is never answered for an event a crash could lose.
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=FULL")
            cursor.execute("PRAGMA busy_timeout=10000")
            cursor.close()

    try:
        metadata.create_all(engine)
    except (ProgrammingError, IntegrityError):
        # Another receiver created the tables at the same moment: they exist now.
        metadata.create_all(engine)
    with engine.begin() as conn:
        dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
        conn.execute(
            dialect.insert(store_meta)
            .values(key="store_id", value=str(uuid4()))
            .on_conflict_do_nothing(index_elements=["key"])
        )
    return engine


class StoreError(Exception):
    """The intake store cannot be read (missing, not an intake store, unreachable)."""


def open_reader(url: str) -> tuple[Engine, str]:
    """An engine on an existing store, for the tap, and the store's id."""
    parsed = store_url(url)
    shown = parsed.render_as_string(hide_password=True)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if not database or database == ":memory:" or not Path(database).is_file():
            raise StoreError(
                f"the intake store {shown} does not exist: start tap-cdr-intake with "
                "--store set to the same URL first"
            )
    try:
        engine = create_engine(parsed, pool_pre_ping=True)
        with engine.connect() as conn:
            store_id = conn.execute(
                select(store_meta.c.value).where(store_meta.c.key == "store_id")
            ).scalar_one_or_none()
    except ImportError as exc:
        raise StoreError(
            f"the intake store {shown} needs a database driver: pip install "
            f"'tap-cdr[intake]' ({exc})"
        ) from None
    except SQLAlchemyError as exc:
        problem = str(getattr(exc, "orig", None) or exc).splitlines()[0][:300]
        raise StoreError(
            f"the intake store {shown} cannot be read ({type(exc).__name__}: {problem}). "
            "Is it the store tap-cdr-intake writes to?"
        ) from None
    if store_id is None:
        raise StoreError(f"the intake store {shown} has no store id: is it an intake store?")
    return engine, store_id


def record_delivery(
    conn: Connection, uuid: str, month: str | None, projectid: int | None, now: datetime
) -> int:
    """Store an announced call; the number of times it has been delivered (1: new)."""
    # A redelivery only updates: an INSERT that conflicts would still take an id
    # from PostgreSQL's sequence, and each id skipped is a gap the tap must track.
    again = conn.execute(
        update(announced_calls)
        .where(announced_calls.c.uuid == uuid)
        .values(deliveries=announced_calls.c.deliveries + 1)
        .returning(announced_calls.c.deliveries)
    ).scalar_one_or_none()
    if again is not None:
        return int(again)
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    statement = (
        dialect.insert(announced_calls)
        .values(uuid=uuid, month=month, projectid=projectid, received_at=now, deliveries=1)
        .on_conflict_do_update(
            index_elements=["uuid"],
            set_={"deliveries": announced_calls.c.deliveries + 1},
        )
        .returning(announced_calls.c.deliveries)
    )
    return int(conn.execute(statement).scalar_one())


def record_rejection(
    conn: Connection, reason: str, size: int, keys: Sequence[str], now: datetime
) -> None:
    conn.execute(
        rejected_events.insert().values(
            received_at=now, reason=reason[:200], size=size, keys=json.dumps(list(keys))
        )
    )


@dataclass(frozen=True)
class Announcement:
    id: int
    uuid: str
    month: str | None
    received_at: datetime


def announced_after(conn: Connection, after: int, limit: int) -> list[Announcement]:
    """Up to ``limit`` calls with an id above ``after``, in id order."""
    table = announced_calls
    return _announcements(conn, table.c.id > after, limit)


def count_after(conn: Connection, after: int) -> int:
    """How many calls have an id above ``after``."""
    query = select(func.count()).select_from(announced_calls).where(announced_calls.c.id > after)
    return int(conn.execute(query).scalar_one())


def announced_among(conn: Connection, ids: Sequence[int]) -> list[Announcement]:
    """The calls with these ids that are committed now, in id order."""
    found: list[Announcement] = []
    for at in range(0, len(ids), 500):
        part = list(ids[at : at + 500])
        found += _announcements(conn, announced_calls.c.id.in_(part), len(part))
    return sorted(found, key=lambda announcement: announcement.id)


def _announcements(conn: Connection, where: Any, limit: int) -> list[Announcement]:
    table = announced_calls
    query = (
        select(table.c.id, table.c.uuid, table.c.month, table.c.received_at)
        .where(where)
        .order_by(table.c.id)
        .limit(limit)
    )
    return [
        Announcement(row.id, row.uuid, row.month, _aware(row.received_at))
        for row in conn.execute(query)
    ]


def _aware(moment: datetime) -> datetime:
    # SQLite returns naive datetimes; the store writes UTC.
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
