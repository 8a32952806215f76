"""Warehouse end to end: `meltano run tap-cdr target-postgres` (and target-duckdb)
against the sandbox, checked in SQL.

Locally these run when PostgreSQL is reachable and Meltano is installed (make test
installs it); CI always runs them: there, a skip is a failure.
"""

from __future__ import annotations

import gzip
import json
import operator
import os
import shutil
import subprocess
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

import pytest

from tap_cdr.sandbox import SandboxConfig, V3Dataset, start
from tests.conftest import ANCHOR, run_tap
from tests.warehouse_support import (
    RECORDS,
    ROOT,
    ensure_loader,
    meltano,
    run_pipeline,
    sandbox_env,
    unavailable,
)

__all__ = ["sandbox_env"]  # a fixture

PG_URL = os.environ.get("TAP_CDR_PG_URL", "postgresql://tapcdr:tapcdr@127.0.0.1:5432/tapcdr")


def psql(sql: str) -> list[list[str]]:
    proc = subprocess.run(
        ["psql", PG_URL, "-v", "ON_ERROR_STOP=1", "-At", "-F", "\t", "-c", sql],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PGTZ": "UTC"},
    )
    assert proc.returncode == 0, proc.stderr
    return [line.split("\t") for line in proc.stdout.splitlines() if line]


def utc_of(local: str) -> str:
    moment = datetime.strptime(local, "%Y-%m-%d %H:%M:%S").replace(
        tzinfo=ZoneInfo("Asia/Ho_Chi_Minh")
    )
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


@pytest.fixture(scope="module")
def postgres():
    if not shutil.which("psql"):
        unavailable("psql is not installed")
    probe = subprocess.run(["psql", PG_URL, "-c", "select 1"], capture_output=True, timeout=30)
    if probe.returncode != 0:
        unavailable("PostgreSQL is not reachable at " + PG_URL.split("@")[-1])
    return PG_URL


def test_meltano_into_postgres(postgres, sandbox_env):
    server, env = sandbox_env
    ensure_loader(env, "target-postgres")
    meltano(env, "state", "clear", "--force", "dev:tap-cdr-to-target-postgres")
    psql("drop schema if exists tap_cdr cascade")
    run_pipeline(env, "target-postgres")

    data = server.config.v3
    [[rows, ids]] = psql("select count(*), count(distinct id) from tap_cdr.cdr_v3")
    assert int(rows) == int(ids) == RECORDS
    types = dict(
        psql(
            "select column_name, data_type from information_schema.columns "
            "where table_schema = 'tap_cdr' and table_name = 'cdr_v3'"
        )
    )
    assert types["time_ended"].startswith("timestamp"), types["time_ended"]
    assert types["additional"] == "jsonb" and types["press_key"] == "jsonb"
    for i in (0, 137, RECORDS - 1):
        raw = data.record(i)
        [[ended, name]] = psql(
            "select to_char(time_ended, 'YYYY-MM-DD HH24:MI:SS'), "
            f"additional->>'ten' from tap_cdr.cdr_v3 where id = '{raw['id']}'"
        )
        assert ended == utc_of(raw["time_ended"])
        assert name == raw["additional"]["ten"]  # non-ASCII intact
    [[unanswered, with_answer]] = psql(
        "select count(*), count(time_answered) from tap_cdr.cdr_v3 where status <> 'answered'"
    )
    assert int(unanswered) > 0 and int(with_answer) == 0

    [[lookups, custom_type]] = psql(
        'select count(*), max(jsonb_typeof("recordCustomFieldData")) from tap_cdr.cdr_by_uuid'
    )
    assert int(lookups) == 8 and custom_type == "object"
    custom = {
        row[0]
        for row in psql("select \"recordCustomFieldData\"->>'egyedimezo' from tap_cdr.cdr_by_uuid")
    }
    assert custom <= {"egyedimező-érték", "árvíztűrő tükörfúrógép"} and custom

    checksum = "select count(*), md5(string_agg(t::text, '|' order by id)) from tap_cdr.cdr_v3 t"
    before = psql(checksum)
    run_pipeline(env, "target-postgres")  # from Meltano's stored state
    assert psql(checksum) == before


def test_meltano_into_duckdb(sandbox_env, tmp_path):
    server, env = sandbox_env
    ensure_loader(env, "target-duckdb")
    env = {**env, "TARGET_DUCKDB_FILEPATH": str(tmp_path / "e2e.duckdb")}
    meltano(env, "state", "clear", "--force", "dev:tap-cdr-to-target-duckdb")
    run_pipeline(env, "target-duckdb")
    python = ROOT / ".meltano" / "loaders" / "target-duckdb" / "venv" / "bin" / "python"
    data = server.config.v3
    probe_ids = [data.record(i)["id"] for i in (0, 137, RECORDS - 1)]
    script = f"""
import duckdb, json
db = duckdb.connect({str(tmp_path / "e2e.duckdb")!r}, read_only=True)
q = lambda sql: db.sql(sql).fetchall()
out = {{
  "rows": q("select count(*), count(distinct id) from tap_cdr.cdr_v3")[0],
  "types": dict(q("select column_name, data_type from information_schema.columns where table_name = 'cdr_v3'")),
  "probes": {{i: [str(v) for v in q(f"select time_ended, json_extract_string(additional, '$.ten') from tap_cdr.cdr_v3 where id = '{{i}}'")[0]] for i in {probe_ids!r}}},
  "unanswered": q("select count(*), count(time_answered) from tap_cdr.cdr_v3 where status <> 'answered'")[0],
  "lookups": q("select count(*) from tap_cdr.cdr_by_uuid")[0][0],
  "sum": q("select count(*), md5(string_agg(cast(t as varchar), '|' order by id)) from tap_cdr.cdr_v3 t")[0],
}}
print(json.dumps(out, default=str))
"""
    first = json.loads(
        subprocess.run(
            [str(python), "-c", script], capture_output=True, text=True, check=True
        ).stdout
    )
    assert first["rows"] == [RECORDS, RECORDS]
    assert first["types"]["time_ended"].startswith("TIMESTAMP")
    for i in (0, 137, RECORDS - 1):
        raw = data.record(i)
        ended, name = first["probes"][raw["id"]]
        assert ended[:19] == utc_of(raw["time_ended"])
        assert name == raw["additional"]["ten"]
    assert first["unanswered"][0] > 0 and first["unanswered"][1] == 0
    assert first["lookups"] == 8
    run_pipeline(env, "target-duckdb")
    second = json.loads(
        subprocess.run(
            [str(python), "-c", script], capture_output=True, text=True, check=True
        ).stdout
    )
    assert second["sum"] == first["sum"]


def test_batch_files_hold_exactly_the_record_output(tmp_path):
    server = start(SandboxConfig(v3=V3Dataset(records=RECORDS, anchor=ANCHOR, step_seconds=1200)))
    try:
        config = {
            "start_date": "2024-03-01T00:00:00Z",
            "end_date": "2024-03-11T00:00:00Z",
            "cdr_v3": {"base_url": server.url, "token": "sandbox-token"},
        }
        records = run_tap(config).records
        batch = run_tap(
            {
                **config,
                "batch_config": {
                    "encoding": {"format": "jsonl", "compression": "gzip"},
                    "storage": {"root": f"file://{tmp_path}", "prefix": "cdr-"},
                },
            }
        )
    finally:
        server.shutdown()
        server.server_close()
    manifests = [m for m in batch.messages if m["type"] == "BATCH"]
    assert manifests and batch.records == []
    from_files = []
    for message in manifests:
        for url in message["manifest"]:
            with gzip.open(url.removeprefix("file://"), "rt") as handle:
                from_files += [json.loads(line) for line in handle]
    key = operator.itemgetter("id")
    assert sorted(from_files, key=key) == sorted(json.loads(json.dumps(records)), key=key)


def test_target_postgres_loads_batch_files(postgres, sandbox_env, tmp_path):
    _server, env = sandbox_env
    ensure_loader(env, "target-postgres")
    env = {
        **env,
        "TAP_CDR_BATCH_CONFIG": json.dumps(
            {
                "encoding": {"format": "jsonl", "compression": "gzip"},
                "storage": {"root": f"file://{tmp_path}", "prefix": "cdr-"},
            }
        ),
        "TARGET_POSTGRES_DEFAULT_TARGET_SCHEMA": "tap_cdr_batch",
    }
    meltano(env, "state", "clear", "--force", "dev:tap-cdr-to-target-postgres:batch")
    psql("drop schema if exists tap_cdr_batch cascade")
    proc = meltano(env, "run", "--state-id-suffix", "batch", "tap-cdr", "target-postgres")
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert list(tmp_path.glob("cdr-*.json.gz")), "no BATCH files were written"
    [[rows, ids]] = psql("select count(*), count(distinct id) from tap_cdr_batch.cdr_v3")
    assert int(rows) == int(ids) == RECORDS
    [[same]] = psql(
        "select count(*) from tap_cdr_batch.cdr_v3 b join tap_cdr.cdr_v3 r using (id) "
        "where b.time_ended = r.time_ended and b.additional = r.additional"
    )
    assert int(same) == RECORDS
