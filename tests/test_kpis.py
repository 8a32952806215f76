"""The KPI models (transform/) on DuckDB and PostgreSQL, as a user runs them:
`meltano run tap-cdr target-... dbt-...:build` against the sandbox, then every cell of
`calls`, `call_kpis_daily` and `agent_kpis_daily` compared with the same definitions
computed here in plain Python from the sandbox's datasets (the API records by index,
not the tap's output), for both vendors, two thresholds, two time zones and the three
ways of counting abandons in the service level. An incremental build after late calls
arrive rebuilds only their day.

CI always runs these: there, a skip is a failure.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from itertools import product
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from typing_extensions import override

from tap_cdr.sandbox import SandboxConfig, V3Dataset, start
from tap_cdr.sandbox.data import VccDataset
from tests.conftest import ANCHOR
from tests.warehouse_support import MELTANO, ROOT, meltano, unavailable

UTC = timezone.utc
START = datetime(2024, 3, 1, tzinfo=UTC)
END = ANCHOR + timedelta(hours=1)  # the tap's next run re-reads the lookback before it
LATE_V3, LATE_VCC = 5, 3  # the newest calls, registered only after the first run
PG_URL = os.environ.get("TAP_CDR_PG_URL", "postgresql://tapcdr:tapcdr@127.0.0.1:5432/tapcdr")
LOADED_SCHEMA, MODEL_SCHEMA = "kpi_tap_cdr", "kpi_analytics"  # PostgreSQL
VARIANTS = list(
    product(
        ("UTC", "America/New_York"),  # New York: DST starts on 2024-03-10
        ((20, 5), (30, 10)),  # service_level_seconds, short_abandon_seconds
        ("against", "for", "ignored"),
    )
)


# -- the definitions, in Python, from the API records -----------------------------------


@dataclass
class Call:
    vendor: str
    call_id: str
    direction: str
    started_at: datetime
    answered_at: datetime | None
    ended_at: datetime
    wait_seconds: int
    talk_seconds: int
    hold_seconds: int | None
    wrap_seconds: int | None
    outcome: str
    agent_id: str | None
    queue_id: str | None
    project_id: str | None
    campaign_id: str | None
    disconnect_cause: str | None
    from_number: str
    to_number: str

    @property
    def handle_seconds(self) -> int:
        return self.talk_seconds + (self.hold_seconds or 0) + (self.wrap_seconds or 0)


def loaded(data: V3Dataset | VccDataset, i: int, start: datetime | None, end: datetime) -> bool:
    """Whether the tap loads call ``i`` of a sync from ``start`` (None: lookups, of any
    date) to ``end``."""
    ended = data.ended_epoch(i)
    return i not in data.hidden and (start is None or start.timestamp() <= ended < end.timestamp())


def tel4vn_calls(
    data: V3Dataset, start: datetime | None = START, end: datetime = END
) -> list[Call]:
    zone = ZoneInfo(data.zone)

    def utc(local: str) -> datetime | None:
        if not local:
            return None
        return datetime.strptime(local, "%Y-%m-%d %H:%M:%S").replace(tzinfo=zone).astimezone(UTC)

    calls = []
    for i in range(data.records):
        if not loaded(data, i, start, end):
            continue
        raw = data.record(i)
        started, answered, ended = (
            utc(raw[f]) for f in ("time_started", "time_answered", "time_ended")
        )
        assert started and ended
        direction = "internal" if raw["direction"] == "local" else raw["direction"]
        if answered:
            outcome = "answered"
        elif direction == "inbound":
            outcome = "abandoned"
        else:
            outcome = {"busy": "busy", "no-answer": "no_answer"}.get(raw["status"], "failed")
        calls.append(
            Call(
                vendor="tel4vn",
                call_id=raw["id"],
                direction=direction,
                started_at=started,
                answered_at=answered,
                ended_at=ended,
                wait_seconds=int(((answered or ended) - started).total_seconds()),
                talk_seconds=raw["billsec"],
                hold_seconds=None,
                wrap_seconds=None,
                outcome=outcome,
                agent_id=raw["extension"] or None,
                queue_id=(raw["receive_dest"] or None) if direction == "inbound" else None,
                project_id=None,
                campaign_id=raw["campaign_uuid"] or None,
                disconnect_cause=raw["cause"],
                from_number=raw["from_number"],
                to_number=raw["to_number"],
            )
        )
    return calls


def vcc_calls(data: VccDataset, start: datetime | None = START, end: datetime = END) -> list[Call]:
    def utc(text: str) -> datetime:
        return datetime.strptime(text, "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)

    calls = []
    for i in range(data.records):
        if not loaded(data, i, start, end):
            continue
        raw = data.record(i)
        answered = raw["talktime"] > 0
        if answered:
            outcome = "answered"
        elif raw["direction"] == "inbound":
            outcome = "abandoned"
        else:
            outcome = {17: "busy", 16: "no_answer", 18: "no_answer", 19: "no_answer"}.get(
                raw["dc"], "failed"
            )
        calls.append(
            Call(
                vendor="vcc",
                call_id=raw["uuid"],
                direction=raw["direction"],
                started_at=utc(raw["start_ts_utc"]),
                answered_at=utc(raw["billing_ts_utc"]) if answered else None,
                ended_at=datetime.fromtimestamp(data.ended_epoch(i), UTC),
                wait_seconds=raw["queuetime"] + raw["ringtime"],
                talk_seconds=raw["talktime"],
                hold_seconds=raw["holdtime"],
                wrap_seconds=raw["afterwork"],
                outcome=outcome,
                agent_id=str(raw["userid"]) if raw["userid"] != -1 else None,
                queue_id=str(raw["queueid"]),
                project_id=str(raw["projectid"]),
                campaign_id=None,
                disconnect_cause=str(raw["dc"]),
                from_number=raw["source"],
                to_number=raw["destination"],
            )
        )
    return calls


def stamp(moment: datetime | None) -> str | None:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") if moment else None


def ratio(numerator: float, denominator: float) -> float | None:
    return numerator / denominator if denominator else None


def mean(values: list[int]) -> float | None:
    return sum(values) / len(values) if values else None


def expected_calls(calls: list[Call]) -> dict[tuple, dict[str, Any]]:
    return {
        (c.vendor, c.call_id): {
            "direction": c.direction,
            "started_at": stamp(c.started_at),
            "answered_at": stamp(c.answered_at),
            "ended_at": stamp(c.ended_at),
            "wait_seconds": c.wait_seconds,
            "talk_seconds": c.talk_seconds,
            "hold_seconds": c.hold_seconds,
            "wrap_seconds": c.wrap_seconds,
            "handle_seconds": c.handle_seconds,
            "outcome": c.outcome,
            "agent_id": c.agent_id,
            "queue_id": c.queue_id,
            "project_id": c.project_id,
            "campaign_id": c.campaign_id,
            "disconnect_cause": c.disconnect_cause,
            "from_number": c.from_number,
            "to_number": c.to_number,
        }
        for c in calls
    }


def expected_call_kpis(
    calls: list[Call], zone: str, sl: int, short: int, abandons: str
) -> dict[tuple, dict[str, Any]]:
    groups: dict[tuple, list[Call]] = defaultdict(list)
    for c in calls:
        day = c.started_at.astimezone(ZoneInfo(zone)).date().isoformat()
        groups[day, c.vendor, c.direction, c.queue_id].append(c)
    rows = {}
    for key, group in groups.items():
        inbound = key[2] == "inbound"
        answered = [c for c in group if c.outcome == "answered"]
        abandoned = [c for c in group if c.outcome == "abandoned"]
        short_abandoned = [c for c in abandoned if c.wait_seconds < short]
        within = [c for c in answered if c.wait_seconds <= sl] if inbound else []
        long_within = [c for c in abandoned if short <= c.wait_seconds <= sl]
        eligible = len(group) - len(short_abandoned)
        service_level = {
            "against": ratio(len(within), eligible),
            "for": ratio(len(within) + len(long_within), eligible),
            "ignored": ratio(len(within), len(answered)),
        }[abandons]
        rows[key] = {
            "offered": len(group),
            "answered": len(answered),
            "abandoned": len(abandoned),
            "short_abandoned": len(short_abandoned),
            "answered_within_sl": len(within),
            "service_level": service_level if inbound else None,
            "answer_rate": ratio(len(answered), len(group)),
            "abandon_rate": ratio(len(abandoned), len(group)),
            "asa_seconds": mean([c.wait_seconds for c in answered]) if inbound else None,
            "aht_seconds": mean([c.handle_seconds for c in answered]),
            "avg_talk_seconds": mean([c.talk_seconds for c in answered]),
            "last_ended_at": stamp(max(c.ended_at for c in group)),
            "kpi_timezone": zone,
            "service_level_seconds": sl,
            "short_abandon_seconds": short,
            "service_level_abandons": abandons,
        }
    return rows


def expected_agent_kpis(calls: list[Call], zone: str) -> dict[tuple, dict[str, Any]]:
    groups: dict[tuple, list[Call]] = defaultdict(list)
    for c in calls:
        if c.outcome == "answered" and c.agent_id is not None:
            day = c.started_at.astimezone(ZoneInfo(zone)).date().isoformat()
            groups[day, c.vendor, c.agent_id].append(c)

    def total(values: list[int | None]) -> int | None:
        present = [v for v in values if v is not None]
        return sum(present) if present else None

    return {
        key: {
            "answered": len(group),
            "talk_seconds": total([c.talk_seconds for c in group]),
            "hold_seconds": total([c.hold_seconds for c in group]),
            "wrap_seconds": total([c.wrap_seconds for c in group]),
            "aht_seconds": mean([c.handle_seconds for c in group]),
            "last_ended_at": stamp(max(c.ended_at for c in group)),
        }
        for key, group in groups.items()
    }


# -- the warehouses ----------------------------------------------------------------------

DUCKDB_QUERY = """
import duckdb, json, sys
db = duckdb.connect(sys.argv[1], read_only=True)
result = db.execute(sys.argv[2])
names = [d[0] for d in result.description]
print(json.dumps([dict(zip(names, row)) for row in result.fetchall()], default=str))
"""


class Warehouse:
    """A loader, its dbt transformer, and a way to query what they built."""

    name: str
    loader: str
    transformer: str
    env: dict[str, str]

    def rows(self, table: str) -> list[dict[str, Any]]:
        raise NotImplementedError

    def execute(self, sql: str) -> None:
        raise NotImplementedError


class DuckDB(Warehouse):
    name, loader, transformer = "duckdb", "target-duckdb", "dbt-duckdb"
    python = ROOT / ".meltano" / "loaders" / "target-duckdb" / "venv" / "bin" / "python"

    def __init__(self, path: str) -> None:
        self.path = path
        self.env = {"TARGET_DUCKDB_FILEPATH": path, "DBT_DUCKDB_PATH": path}

    def run_python(self, script: str, *args: str) -> str:
        proc = subprocess.run(
            [str(self.python), "-c", script, self.path, *args],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        return proc.stdout

    @override
    def rows(self, table: str) -> list[dict[str, Any]]:
        return json.loads(self.run_python(DUCKDB_QUERY, f"select * from analytics.{table}"))

    @override
    def execute(self, sql: str) -> None:
        self.run_python("import duckdb, sys; duckdb.connect(sys.argv[1]).execute(sys.argv[2])", sql)


class Postgres(Warehouse):
    name, loader, transformer = "postgres", "target-postgres", "dbt-postgres"
    env = {
        "TARGET_POSTGRES_PASSWORD": "tapcdr",
        "TARGET_POSTGRES_DEFAULT_TARGET_SCHEMA": LOADED_SCHEMA,
        "DBT_POSTGRES_PASSWORD": "tapcdr",
        "DBT_POSTGRES_SOURCE_SCHEMA": LOADED_SCHEMA,
        "DBT_POSTGRES_SCHEMA": MODEL_SCHEMA,
    }

    def connect(self) -> Any:
        import psycopg

        return psycopg.connect(PG_URL, autocommit=True)

    @override
    def rows(self, table: str) -> list[dict[str, Any]]:
        with self.connect() as conn, conn.cursor() as cursor:
            cursor.execute(f"select * from {MODEL_SCHEMA}.{table}")
            names = [d.name for d in cursor.description or []]
            return [
                {
                    n: (str(v) if isinstance(v, datetime) else v)
                    for n, v in zip(names, row, strict=True)
                }
                for row in cursor.fetchall()
            ]

    @override
    def execute(self, sql: str) -> None:
        with self.connect() as conn:
            conn.execute(sql.replace("analytics.", f"{MODEL_SCHEMA}."))


def cell(value: Any) -> Any:
    if isinstance(value, Decimal):
        return float(value)
    if hasattr(value, "isoformat") and not isinstance(value, str):
        return value.isoformat()
    return value


def same(actual: Any, wanted: Any) -> bool:
    if isinstance(wanted, float) and isinstance(actual, (int, float)):
        return math.isclose(actual, wanted, rel_tol=1e-9)
    return actual == wanted


def compare(
    rows: list[dict[str, Any]], key: tuple[str, ...], wanted: dict[tuple, dict[str, Any]]
) -> int:
    """Every cell of `rows` equals `wanted`, and no row is missing or extra; returns the
    number of cells compared."""
    found = {tuple(cell(r[k]) for k in key): r for r in rows}
    assert len(found) == len(rows), f"{len(rows) - len(found)} rows share a key {key}"
    assert sorted(found, key=str) == sorted(wanted, key=str)
    compared = 0
    for k, values in wanted.items():
        for column, value in values.items():
            actual = cell(found[k][column])
            assert same(actual, value), f"{k} {column}: {actual!r}, expected {value!r}"
            compared += 1
    return compared


# -- the tests ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def datasets():
    v3 = V3Dataset(records=2000, anchor=ANCHOR, step_seconds=300)
    vcc = VccDataset(records=1000, anchor=ANCHOR, step_seconds=600)
    server = start(SandboxConfig(v3=v3, vcc=vcc))
    yield server
    server.shutdown()
    server.server_close()


def pipeline_env(server, tmp_path_factory) -> dict[str, str]:
    return {
        **os.environ,
        "MELTANO_DATABASE_URI": f"sqlite:///{tmp_path_factory.mktemp('meltano')}/meltano.db",
        "TAP_CDR_START_DATE": START.isoformat(),
        "TAP_CDR_END_DATE": END.isoformat(),
        "TAP_CDR_CDR_V3_BASE_URL": server.url,
        "TAP_CDR_CDR_V3_TOKEN": "sandbox-token",
        "TAP_CDR_CDR_BY_UUID_BASE_URL": server.url,
        "TAP_CDR_CDR_BY_UUID_CUSTOMER": "sandbox",
        "TAP_CDR_CDR_BY_UUID_API_TOKEN": "sandbox-vcc-token",
    }


def succeed(env: dict[str, str], *args: str) -> None:
    proc = meltano(env, *args)
    assert proc.returncode == 0, f"meltano {' '.join(args)}:\n{proc.stderr[-5000:]}"


def install(env: dict[str, str], warehouse: Warehouse) -> None:
    for kind, name in (
        ("extractor", "tap-cdr"),
        ("loader", warehouse.loader),
        ("transformer", warehouse.transformer),
    ):
        if not (ROOT / ".meltano" / f"{kind}s" / name / "venv").exists():
            succeed(env, "install", kind, name)


@pytest.fixture(scope="module", params=["duckdb", "postgres"])
def warehouse(request, tmp_path_factory) -> Warehouse:
    if not MELTANO.exists():
        unavailable("Meltano is not installed (make test installs it in .venv-meltano)")
    if request.param == "duckdb":
        return DuckDB(str(tmp_path_factory.mktemp("kpi") / "cdr.duckdb"))
    probe = subprocess.run(["psql", PG_URL, "-c", "select 1"], capture_output=True, timeout=30)
    if probe.returncode != 0:
        unavailable("PostgreSQL is not reachable at " + PG_URL.split("@")[-1])
    postgres = Postgres()
    for schema in (LOADED_SCHEMA, MODEL_SCHEMA):
        postgres.execute(f"drop schema if exists {schema} cascade")
    return postgres


def test_kpis_equal_the_definitions_computed_from_the_sandbox(
    warehouse, datasets, tmp_path_factory
):
    server = datasets
    v3, vcc = server.config.v3, server.config.vcc
    env = {**pipeline_env(server, tmp_path_factory), **warehouse.env}
    install(env, warehouse)

    # First run: the newest calls are not registered yet.
    v3.hidden.update(range(v3.records - LATE_V3, v3.records))
    vcc.hidden.update(range(vcc.records - LATE_VCC, vcc.records))
    early = tel4vn_calls(v3) + vcc_calls(vcc)
    succeed(env, "run", "tap-cdr", warehouse.loader, f"{warehouse.transformer}:build")
    compared = compare(warehouse.rows("calls"), ("vendor", "call_id"), expected_calls(early))
    default = ("UTC", 20, 5, "against")
    key = ("call_date", "vendor", "direction", "queue_id")
    compared += compare(warehouse.rows("call_kpis_daily"), key, expected_call_kpis(early, *default))

    # The late calls arrive; the second run rebuilds their day only: a row of an
    # older day, altered here, stays as it is.
    v3.hidden.clear()
    vcc.hidden.clear()
    calls = tel4vn_calls(v3) + vcc_calls(vcc)
    assert len(calls) == len(early) + LATE_V3 + LATE_VCC
    late_days = {c.started_at.date().isoformat() for c in calls[len(early) :]}
    assert late_days == {ANCHOR.date().isoformat()}
    older_day = (ANCHOR - timedelta(days=2)).date().isoformat()
    warehouse.execute(
        "update analytics.call_kpis_daily set avg_talk_seconds = -1 "
        f"where call_date = '{older_day}'"
    )
    succeed(env, "run", "tap-cdr", warehouse.loader, f"{warehouse.transformer}:build")
    compared += compare(warehouse.rows("calls"), ("vendor", "call_id"), expected_calls(calls))
    wanted = expected_call_kpis(calls, *default)
    rows = warehouse.rows("call_kpis_daily")
    assert {r["avg_talk_seconds"] for r in rows if cell(r["call_date"]) == older_day} == {-1}
    for k, values in wanted.items():
        if k[0] == older_day:
            values["avg_talk_seconds"] = -1.0
    compared += compare(rows, key, wanted)

    # Every variant of the KPI vars, on the same calls: the marts rebuilt with them.
    for zone, (sl, short), abandons in VARIANTS:
        variables = {
            "kpi_timezone": zone,
            "service_level_seconds": sl,
            "short_abandon_seconds": short,
            "service_level_abandons": abandons,
        }
        succeed(
            env,
            "invoke",
            warehouse.transformer,
            "build",
            "--full-refresh",
            "--select",
            "call_kpis_daily agent_kpis_daily",
            "--vars",
            json.dumps(variables),
        )
        compared += compare(
            warehouse.rows("call_kpis_daily"),
            key,
            expected_call_kpis(calls, zone, sl, short, abandons),
        )
        compared += compare(
            warehouse.rows("agent_kpis_daily"),
            ("call_date", "vendor", "agent_id"),
            expected_agent_kpis(calls, zone),
        )
    print(f"{warehouse.name}: {compared:,} cells equal the definitions")

    # Without the phone numbers: an incremental build drops the columns, keeps the rows.
    succeed(
        env,
        "invoke",
        warehouse.transformer,
        "build",
        "--select",
        "calls",
        "--vars",
        json.dumps({"include_phone_numbers": False}),
    )
    rows = warehouse.rows("calls")
    assert len(rows) == len(calls)
    assert not {"from_number", "to_number"} & set(rows[0])


def test_a_vendor_added_to_the_pipeline_later_is_modelled_whole(datasets, tmp_path_factory):
    """TEL4VN loaded for a while, then VCC configured: its calls all end before the
    newest TEL4VN call less the lookback, and every one of them is modelled, and the
    marts rebuild their days."""
    if not MELTANO.exists():
        unavailable("Meltano is not installed (make test installs it in .venv-meltano)")
    server = datasets
    v3, vcc = server.config.v3, server.config.vcc
    v3.hidden.clear()
    vcc.hidden.clear()
    duckdb = DuckDB(str(tmp_path_factory.mktemp("kpi-later") / "cdr.duckdb"))
    env = {**pipeline_env(server, tmp_path_factory), **duckdb.env}
    install(env, duckdb)
    tel4vn_only = {k: v for k, v in env.items() if not k.startswith("TAP_CDR_CDR_BY_UUID_")}

    succeed(tel4vn_only, "run", "tap-cdr", duckdb.loader, f"{duckdb.transformer}:build")
    compare(duckdb.rows("calls"), ("vendor", "call_id"), expected_calls(tel4vn_calls(v3)))

    succeed(env, "run", "tap-cdr", duckdb.loader, f"{duckdb.transformer}:build")
    calls = tel4vn_calls(v3) + vcc_calls(vcc)
    newest_tel4vn = max(c.ended_at for c in calls if c.vendor == "tel4vn")
    assert min(c.ended_at for c in calls if c.vendor == "vcc") < newest_tel4vn - timedelta(days=1)
    compare(duckdb.rows("calls"), ("vendor", "call_id"), expected_calls(calls))
    compare(
        duckdb.rows("call_kpis_daily"),
        ("call_date", "vendor", "direction", "queue_id"),
        expected_call_kpis(calls, "UTC", 20, 5, "against"),
    )
    compare(
        duckdb.rows("agent_kpis_daily"),
        ("call_date", "vendor", "agent_id"),
        expected_agent_kpis(calls, "UTC"),
    )
