"""The KPI models on records a loader can land but the sandbox never sends: a day that
daylight saving makes 25 hours long, an agent's only call moved to no agent, a call
that claims to end in 2099, a wait below zero, an odd direction, and vars that are not
what they should be. Each builds with the transformer's own dbt on a DuckDB file made
here, and every incremental result is compared with a full build of the same rows.
"""

from __future__ import annotations

import json
import os
import subprocess
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

import pytest

from tests.warehouse_support import MELTANO, ROOT, meltano, unavailable

if TYPE_CHECKING:
    from pathlib import Path

DBT_VENV = ROOT / ".meltano" / "transformers" / "dbt-duckdb" / "venv"

# The loaded tables, as target-duckdb makes them (the columns the models read).
COLUMNS = {
    "cdr_v3": {
        "id": "varchar",
        "direction": "varchar",
        "status": "varchar",
        "cause": "varchar",
        "time_started": "timestamp",
        "time_answered": "timestamp",
        "time_ended": "timestamp",
        "billsec": "bigint",
        "extension": "varchar",
        "receive_dest": "varchar",
        "campaign_uuid": "varchar",
        "from_number": "varchar",
        "to_number": "varchar",
    },
    "cdr_by_uuid": {
        "uuid": "varchar",
        "direction": "varchar",
        "start_ts_utc": "timestamp",
        "billing_ts_utc": "timestamp",
        "time_ended": "timestamp",
        "queuetime": "bigint",
        "ringtime": "bigint",
        "talktime": "bigint",
        "holdtime": "bigint",
        "afterwork": "bigint",
        "userid": "bigint",
        "queueid": "bigint",
        "projectid": "bigint",
        "dc": "varchar",
        "source": "varchar",
        "destination": "varchar",
    },
}
KEYS = {"cdr_v3": "id", "cdr_by_uuid": "uuid"}
MODELS = {
    "calls": "vendor, call_id",
    "call_kpis_daily": "call_date, vendor, direction, queue_id",
    "agent_kpis_daily": "call_date, vendor, agent_id",
}

# Runs in the transformer's Python, which has duckdb: upserts rows, or queries.
DUCKDB_SCRIPT = """
import duckdb, json, sys
path, request = sys.argv[1], json.loads(sys.argv[2])
db = duckdb.connect(path)
if request["do"] == "load":
    db.execute("create schema if not exists tap_cdr")
    table, columns, key = request["table"], request["columns"], request["key"]
    db.execute(f"create table if not exists tap_cdr.{table} ("
               + ", ".join(f"{n} {t}" for n, t in columns.items()) + ")")
    for row in request["rows"]:
        db.execute(f"delete from tap_cdr.{table} where {key} = ?", [row[key]])
        names = list(row)
        db.execute(f"insert into tap_cdr.{table} ({', '.join(names)}) values "
                   f"({', '.join('?' for _ in names)})", [row[n] for n in names])
else:
    result = db.execute(request["sql"])
    names = [d[0] for d in result.description]
    print(json.dumps([dict(zip(names, r)) for r in result.fetchall()], default=str))
"""


class Warehouse:
    """A DuckDB file with the loaded tables, and the transformer's dbt on it."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _duckdb(self, request: dict[str, Any]) -> str:
        proc = subprocess.run(
            [
                str(DBT_VENV / "bin" / "python"),
                "-c",
                DUCKDB_SCRIPT,
                str(self.path),
                json.dumps(request),
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        return proc.stdout

    def load(self, table: str, *rows: dict[str, Any]) -> None:
        self._duckdb(
            {
                "do": "load",
                "table": table,
                "columns": COLUMNS[table],
                "key": KEYS[table],
                "rows": list(rows),
            }
        )

    def rows(self, sql: str) -> list[dict[str, Any]]:
        return json.loads(self._duckdb({"do": "query", "sql": sql}))

    def dbt(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {
            **os.environ,
            "DBT_DUCKDB_PATH": str(self.path),
            "DBT_SOURCE_SCHEMA": "tap_cdr",
            "DBT_PROFILES_DIR": str(ROOT / "transform" / "profiles" / "duckdb"),
            "DBT_TARGET_PATH": f"{self.path}.target",
            "DBT_LOG_PATH": f"{self.path}.logs",
        }
        return subprocess.run(
            [str(DBT_VENV / "bin" / "dbt"), *args, "--project-dir", str(ROOT / "transform")],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )

    def build(self, *args: str) -> str:
        proc = self.dbt("build", *args)
        assert proc.returncode == 0, proc.stdout[-5000:]
        return proc.stdout

    def models(self) -> dict[str, list[dict[str, Any]]]:
        """Every model's rows, without the columns that say when they were built."""
        return {
            model: self.rows(
                f"select * exclude (modelled_at) from analytics.{model} order by {order}"
                if model == "calls"
                else f"select * exclude (built_at) from analytics.{model} order by {order}"
            )
            for model, order in MODELS.items()
        }

    def equals_a_full_build(self, tmp_path: Path, *args: str) -> dict[str, list[dict]]:
        """The models as built incrementally, asserted equal to a full build of the same
        loaded rows."""
        full = Warehouse(tmp_path / "full.duckdb")
        full.path.write_bytes(self.path.read_bytes())
        full.build("--full-refresh", *args)
        models = self.models()
        assert models == full.models()
        return models


@pytest.fixture(scope="module")
def transformer(tmp_path_factory) -> None:
    if not (DBT_VENV / "bin" / "dbt").exists():
        if not MELTANO.exists():
            unavailable("Meltano is not installed (make test installs it in .venv-meltano)")
        env = {
            **os.environ,
            "MELTANO_DATABASE_URI": f"sqlite:///{tmp_path_factory.mktemp('m')}/meltano.db",
        }
        proc = meltano(env, "install", "transformer", "dbt-duckdb")
        assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.fixture
def warehouse(transformer, tmp_path) -> Warehouse:
    return Warehouse(tmp_path / "cdr.duckdb")


def tel4vn(call_id: str, started: str, answered: str | None, ended: str, **kw: Any) -> dict:
    return {
        "id": call_id,
        "direction": "inbound",
        "status": "answered" if answered else "no-answer",
        "cause": "NORMAL_CLEARING",
        "time_started": started,
        "time_answered": answered,
        "time_ended": ended,
        "billsec": 100,
        "extension": "101",
        "receive_dest": "8001",
        **kw,
    }


def vcc(uuid: str, started: str, ended: str, talk: int, **kw: Any) -> dict:
    return {
        "uuid": uuid,
        "direction": "inbound",
        "start_ts_utc": started,
        "billing_ts_utc": started,
        "time_ended": ended,
        "queuetime": 10,
        "ringtime": 5,
        "talktime": talk,
        "holdtime": 0,
        "afterwork": 0,
        "userid": 7,
        "queueid": 1,
        "projectid": 1,
        "dc": "16",
        **kw,
    }


def day(models: dict, model: str, date: str) -> list[dict]:
    return [r for r in models[model] if r["call_date"] == date]


def test_a_day_that_daylight_saving_makes_25_hours_long_keeps_its_first_hour(warehouse, tmp_path):
    new_york = json.dumps({"kpi_timezone": "America/New_York"})
    # 2024-11-03 in New York runs from 04:00 UTC to 05:00 UTC the next day.
    warehouse.load(
        "cdr_v3", tel4vn("a", "2024-11-03 04:10", "2024-11-03 04:10:10", "2024-11-03 04:15")
    )
    warehouse.load(
        "cdr_v3", tel4vn("b", "2024-11-04 04:30", "2024-11-04 04:30:10", "2024-11-04 04:35")
    )
    warehouse.build("--vars", new_york)
    # A call late on that day: the day is rebuilt, and must keep call a.
    warehouse.load(
        "cdr_v3", tel4vn("c", "2024-11-04 04:50", "2024-11-04 04:50:10", "2024-11-04 04:55")
    )
    warehouse.build("--vars", new_york)

    models = warehouse.equals_a_full_build(tmp_path, "--vars", new_york)
    [row] = day(models, "call_kpis_daily", "2024-11-03")
    assert (row["offered"], row["answered"]) == (3, 3)


def test_a_day_rebuilt_into_no_rows_loses_its_old_ones(warehouse, tmp_path):
    warehouse.load(
        "cdr_v3", tel4vn("a", "2024-01-12 10:00", "2024-01-12 10:00:10", "2024-01-12 10:05")
    )
    warehouse.build()
    assert [r["agent_id"] for r in warehouse.models()["agent_kpis_daily"]] == ["101"]
    # The call was not the agent's after all.
    warehouse.load(
        "cdr_v3",
        tel4vn("a", "2024-01-12 10:00", "2024-01-12 10:00:10", "2024-01-12 10:05", extension=""),
    )
    warehouse.build()

    models = warehouse.equals_a_full_build(tmp_path)
    assert models["agent_kpis_daily"] == []
    assert [r["agent_id"] for r in models["calls"]] == [None]


def test_a_call_that_claims_to_end_in_2099_does_not_stop_its_vendor(warehouse, tmp_path):
    # Calls of today: the window is the newest end, capped at the build's start.
    hour = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0, tzinfo=None)

    def at(minutes: int) -> str:
        return (hour - timedelta(minutes=minutes)).isoformat(sep=" ")

    warehouse.load("cdr_by_uuid", vcc("v1", at(60), at(55), 290))
    warehouse.load("cdr_by_uuid", vcc("v2", at(50), "2099-01-01 00:00", 290))
    warehouse.build()
    warehouse.load("cdr_by_uuid", vcc("v3", at(40), at(35), 200))
    warehouse.build()

    models = warehouse.equals_a_full_build(tmp_path)
    assert [r["call_id"] for r in models["calls"]] == ["v1", "v2", "v3"]
    assert sum(r["offered"] for r in models["call_kpis_daily"]) == 3


def test_impossible_waits_are_unknown_and_odd_directions_read_or_warned(warehouse, tmp_path):
    warehouse.load(
        "cdr_v3",
        # Answered an hour before it started.
        tel4vn("early", "2024-01-12 10:00", "2024-01-12 09:00", "2024-01-12 10:05"),
        # Ended before it started, unanswered.
        tel4vn("ended", "2024-01-12 11:00", None, "2024-01-12 10:00"),
        tel4vn(
            "upper",
            "2024-01-12 12:00",
            "2024-01-12 12:00:08",
            "2024-01-12 12:05",
            direction="INBOUND",
        ),
        tel4vn(
            "nodir", "2024-01-12 13:00", "2024-01-12 13:00:08", "2024-01-12 13:05", direction=None
        ),
        tel4vn(
            "notalk", "2024-01-12 14:00", "2024-01-12 14:00:08", "2024-01-12 14:05", billsec=None
        ),
    )
    warehouse.load(
        "cdr_by_uuid",
        vcc("negative", "2024-01-12 10:00", "2024-01-12 10:05", 0, queuetime=-100),
        vcc(
            "unreported", "2024-01-12 11:00", "2024-01-12 11:05", 100, queuetime=None, ringtime=None
        ),
    )
    out = warehouse.build()
    # One odd record is reported, and holds back no KPI.
    assert "WARN" in out

    models = warehouse.equals_a_full_build(tmp_path)
    calls = {r["call_id"]: r for r in models["calls"]}
    for call_id in ("early", "ended", "negative", "unreported"):
        assert calls[call_id]["wait_seconds"] is None, call_id
    assert calls["upper"]["direction"] == "inbound"
    assert calls["notalk"]["handle_seconds"] is None
    [tel4vn_inbound] = [
        r
        for r in day(models, "call_kpis_daily", "2024-01-12")
        if (r["vendor"], r["direction"]) == ("tel4vn", "inbound")
    ]
    # early, ended (an abandon, not short: its wait is unknown), upper, notalk.
    assert (tel4vn_inbound["offered"], tel4vn_inbound["short_abandoned"]) == (4, 0)
    assert tel4vn_inbound["answered_within_sl"] == 2  # upper and notalk, waits of 8 s
    assert tel4vn_inbound["asa_seconds"] == 8.0
    assert tel4vn_inbound["aht_seconds"] == tel4vn_inbound["avg_talk_seconds"] == 100.0


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        (
            {"service_level_seconds": "abc"},
            "var service_level_seconds is 'abc': give a whole number",
        ),
        ({"short_abandon_seconds": -5}, "var short_abandon_seconds is '-5': give a whole number"),
        ({"lookback_minutes": "2h"}, "var lookback_minutes is '2h': give a whole number"),
        (
            {"kpi_timezone": "UTC'; drop table analytics.calls; --"},
            "var kpi_timezone is 'UTC'; drop table analytics.calls; --': give an IANA time zone",
        ),
        ({"service_level_abandons": "Against"}, "var service_level_abandons is 'Against'"),
    ],
)
def test_a_var_that_is_not_what_it_should_be_stops_the_build_naming_it(
    warehouse, variables, message
):
    warehouse.load(
        "cdr_v3", tel4vn("a", "2024-01-12 10:00", "2024-01-12 10:00:10", "2024-01-12 10:05")
    )
    warehouse.build()  # so that the incremental path, which reads lookback_minutes, runs
    proc = warehouse.dbt("build", "--vars", json.dumps(variables))
    assert proc.returncode != 0
    assert message in proc.stdout


def test_a_changed_var_rebuilds_every_day_of_the_marts(warehouse, tmp_path):
    """A build with other vars, then the scheduled builds with the project's: no day is
    left with the other values beside days of the project's."""
    for i, started in enumerate(("2024-01-11 23:30", "2024-01-12 10:00", "2024-01-13 10:00")):
        warehouse.load("cdr_v3", tel4vn(f"c{i}", started, None, started[:11] + "23:59"))
    budapest = json.dumps({"kpi_timezone": "Europe/Budapest", "service_level_seconds": 30})
    warehouse.build("--full-refresh", "--vars", budapest)
    warehouse.load("cdr_v3", tel4vn("c9", "2024-01-13 23:00", None, "2024-01-13 23:05"))
    out = warehouse.build()

    assert "built with other values of kpi_timezone" in out
    models = warehouse.equals_a_full_build(tmp_path)
    assert {(r["kpi_timezone"], r["service_level_seconds"]) for r in models["call_kpis_daily"]} == {
        ("UTC", 20)
    }
    # In UTC, c0 is a call of the 11th (in Budapest, of the 12th).
    assert [(r["call_date"], r["offered"]) for r in models["call_kpis_daily"]] == [
        ("2024-01-11", 1),
        ("2024-01-12", 1),
        ("2024-01-13", 2),
    ]
