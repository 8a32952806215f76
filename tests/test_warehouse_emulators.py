"""The README's Snowflake and BigQuery recipes, proven against local emulators:
`meltano run tap-cdr target-...` loads both streams from the sandbox with the
recipe's settings (meltano.yml), exactly once, with the documented column types;
`meltano run tap-cdr target-... dbt-...:build` builds the KPI models (transform/)
on what it loaded, each cell equal to the definitions computed from the sandbox.

Each emulator runs in its own virtualenv (`make test` builds .venv-fakesnow and
.venv-bqemulator); the loaders are the ones Meltano installs from meltano.yml, run
by tests/warehouses/launchers, which adapts only what the emulators cannot take
(the README says what). CI always runs these: there, a skip is a failure.
"""

from __future__ import annotations

import json
import socket
import subprocess
import threading
import time
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

import pytest
import requests
from typing_extensions import override

from tests.test_kpis import compare, expected_call_kpis, expected_calls, tel4vn_calls, vcc_calls
from tests.warehouse_support import (
    RECORDS,
    ROOT,
    VCC_RECORDS,
    ensure_loader,
    ensure_transformer,
    meltano,
    run_pipeline,
    sandbox_env,
    unavailable,
)

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ["sandbox_env"]  # a fixture

FAKESNOW = ROOT / ".venv-fakesnow" / "bin"
BQEMULATOR = ROOT / ".venv-bqemulator" / "bin"
PROBES = (0, 137, RECORDS - 1)
# Two days of lookback: the second run re-reads many calls of both streams.
LOOKBACK = {"TAP_CDR_LOOKBACK_MINUTES": str(2 * 24 * 60)}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for(url: str, proc: subprocess.Popen, log: Path) -> None:
    for _ in range(300):
        if proc.poll() is not None:
            pytest.fail(f"{log.stem} exited: {log.read_text()[-3000:]}")
        try:
            requests.get(url, timeout=1)
        except requests.ConnectionError:
            time.sleep(0.1)
        else:
            return
    pytest.fail(f"{log.stem} did not start: {log.read_text()[-3000:]}")


def utc(local: str) -> str:
    moment = datetime.strptime(local, "%Y-%m-%d %H:%M:%S").replace(
        tzinfo=ZoneInfo("Asia/Ho_Chi_Minh")
    )
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


# -- Snowflake on fakesnow -------------------------------------------------------------

SNOWFLAKE_QUERY = """
import json, sys
from urllib.parse import urlsplit
import snowflake.connector
server = urlsplit(sys.argv[1])
conn = snowflake.connector.connect(
    host=server.hostname, port=server.port, protocol=server.scheme,
    account="tapcdr", user="tapcdr", password="emulator", database="TAPCDR",
)
rows = [conn.cursor().execute(query).fetchall() for query in json.loads(sys.argv[2])]
print(json.dumps(rows, default=str))
"""


@pytest.fixture(scope="module")
def fakesnow(tmp_path_factory):
    if not (FAKESNOW / "fakesnow").exists():
        unavailable("fakesnow is not installed (make test installs it in .venv-fakesnow)")
    port, data = free_port(), tmp_path_factory.mktemp("fakesnow")
    log = data / "fakesnow.log"
    with log.open("w") as output:
        proc = subprocess.Popen(
            [str(FAKESNOW / "fakesnow"), "-s", "-p", str(port), "-d", str(data)],
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    wait_for(url, proc, log)
    yield url
    proc.terminate()
    proc.wait(timeout=30)


def snowflake(url: str, *queries: str) -> list:
    proc = subprocess.run(
        [str(FAKESNOW / "python"), "-c", SNOWFLAKE_QUERY, url, json.dumps(queries)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


def snowflake_env(fakesnow: str, env: dict[str, str]) -> dict[str, str]:
    """The recipe's loader on fakesnow, into a database and schema that exist."""
    snowflake(
        fakesnow,
        "create database if not exists TAPCDR",
        "create schema if not exists TAPCDR.TAP_CDR",
    )
    return {
        **env,
        **LOOKBACK,
        "FAKESNOW_URL": fakesnow,
        "TARGET_SNOWFLAKE_ACCOUNT": "tapcdr",
        "TARGET_SNOWFLAKE_USER": "tapcdr",
        "TARGET_SNOWFLAKE_PASSWORD": "emulator",
        "TARGET_SNOWFLAKE_DATABASE": "TAPCDR",
    }


def test_snowflake_recipe_loads_each_call_once_with_the_documented_types(fakesnow, sandbox_env):
    server, env = sandbox_env
    loader = "target-snowflake-on-fakesnow"
    ensure_loader(env, loader)
    env = snowflake_env(fakesnow, env)
    meltano(env, "state", "clear", "--force", f"dev:tap-cdr-to-{loader}")
    run_pipeline(env, loader)

    data = server.config.v3
    ids = ", ".join(f"'{data.record(i)['id']}'" for i in PROBES)
    counts, types, probes, calls = snowflake(
        fakesnow,
        "select (select count(*) from tap_cdr.cdr_v3), (select count(distinct id) from "
        "tap_cdr.cdr_v3), (select count(*) from tap_cdr.cdr_by_uuid)",
        "select table_name, column_name, data_type from information_schema.columns "
        "where table_schema = 'TAP_CDR' and table_name in ('CDR_V3', 'CDR_BY_UUID')",
        "select id, to_varchar(convert_timezone('UTC', time_ended), 'YYYY-MM-DD HH24:MI:SS'), "
        f"additional:ten::varchar, press_key from tap_cdr.cdr_v3 where id in ({ids})",
        'select uuid, "recordCustomFieldData":egyedimezo::varchar, projectid '
        "from tap_cdr.cdr_by_uuid",
    )
    assert counts == [[RECORDS, RECORDS, VCC_RECORDS]]
    column = {(t.lower(), c.lower()): kind for t, c, kind in types}
    for name in ("time_ended", "time_started", "time_answered"):
        assert column["cdr_v3", name] == "TIMESTAMP_TZ"
    for name in ("additional", "press_key"):
        assert column["cdr_v3", name] == "VARIANT"
    assert column["cdr_v3", "duration"] == "NUMBER"
    assert column["cdr_by_uuid", "time_ended"] == "TIMESTAMP_TZ"
    assert column["cdr_by_uuid", "recordcustomfielddata"] == "VARIANT"
    assert column["cdr_by_uuid", "projectid"] == "NUMBER"
    by_id = {row[0]: row[1:] for row in probes}
    for i in PROBES:
        raw = data.record(i)
        ended, name, _press_key = by_id[raw["id"]]
        assert ended == utc(raw["time_ended"])  # the UTC instant
        assert name == raw["additional"]["ten"]  # objects queryable, non-ASCII intact
    assert {value for _, value, _ in calls} <= {"egyedimező-érték", "árvíztűrő tükörfúrógép"}
    assert all(isinstance(project, int) for _, _, project in calls)

    # A second run re-reads the lookback: the MERGE updates those rows, adds none.
    run_pipeline(env, loader)
    [again] = snowflake(
        fakesnow,
        "select (select count(*) from tap_cdr.cdr_v3), (select count(distinct id) from "
        "tap_cdr.cdr_v3), (select count(*) from tap_cdr.cdr_by_uuid)",
    )
    assert again == [[RECORDS, RECORDS, VCC_RECORDS]]


# -- BigQuery on bqemulator ------------------------------------------------------------


class MetadataStub(BaseHTTPRequestHandler):
    """GCE's metadata server, as far as google-auth asks it: an access token for the
    loader's client library, which then talks to the emulator (no real account)."""

    def do_GET(self) -> None:
        kind, path = "application/json", self.path.split("?")[0]
        if path.endswith("/token"):
            body = json.dumps({"access_token": "emulator", "expires_in": 3600}).encode()
        elif path.endswith("/project-id"):
            body, kind = b"tapcdr", "text/plain"
        else:
            body = json.dumps({"email": "emulator@tapcdr", "scopes": []}).encode()
        self.send_response(200)
        self.send_header("Metadata-Flavor", "Google")
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    @override
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def bqemulator(tmp_path_factory):
    if not (BQEMULATOR / "bqemulator").exists():
        unavailable("bqemulator is not installed (make test installs it in .venv-bqemulator)")
    rest, grpc = free_port(), free_port()
    options = ["--rest-port", str(rest), "--grpc-port", str(grpc), "--project", "tapcdr"]
    options += ["--ephemeral", "--log-level", "warning"]
    work = tmp_path_factory.mktemp("bqemulator")
    log = work / "bqemulator.log"
    with log.open("w") as output:
        proc = subprocess.Popen(
            [str(BQEMULATOR / "bqemulator"), "start", *options],
            stdout=output,
            stderr=subprocess.STDOUT,
            cwd=work,
        )
    url = f"http://127.0.0.1:{rest}"
    wait_for(f"{url}/bigquery/v2/projects/tapcdr/datasets", proc, log)
    metadata = ThreadingHTTPServer(("127.0.0.1", 0), MetadataStub)
    threading.Thread(target=metadata.serve_forever, daemon=True).start()
    yield url, f"127.0.0.1:{metadata.server_address[1]}"
    metadata.shutdown()
    metadata.server_close()
    proc.terminate()
    proc.wait(timeout=30)


def bigquery(url: str, sql: str) -> list[list]:
    response = requests.post(
        f"{url}/bigquery/v2/projects/tapcdr/queries",
        json={"query": sql, "useLegacySql": False},
        timeout=120,
    )
    assert response.status_code == 200, response.text[:2000]
    return [[cell["v"] for cell in row["f"]] for row in response.json().get("rows", [])]


def bigquery_types(url: str, table: str) -> dict[str, str]:
    response = requests.get(
        f"{url}/bigquery/v2/projects/tapcdr/datasets/tap_cdr/tables/{table}", timeout=60
    )
    assert response.status_code == 200, response.text[:2000]
    return {f["name"]: f["type"].upper() for f in response.json()["schema"]["fields"]}


DEDUP_VIEW = """
create or replace view tap_cdr.{table}_latest as
select * except (row_num) from (
  select *, row_number() over (
    partition by {key} order by _sdc_batched_at desc, _sdc_sequence desc) as row_num
  from tap_cdr.{table}
) where row_num = 1
"""


def bigquery_env(bqemulator: tuple[str, str], env: dict[str, str]) -> dict[str, str]:
    url, metadata = bqemulator
    return {
        **env,
        **LOOKBACK,
        "BIGQUERY_EMULATOR_HOST": url,
        "GCE_METADATA_HOST": metadata,
        "GCE_METADATA_IP": metadata,
        "TARGET_BIGQUERY_PROJECT": "tapcdr",
        # bqemulator cannot run the loader's MERGE (it rejects the qualified column
        # names of its UPDATE SET), so the emulator proves append mode and the
        # README's deduplicating view; the recipe's upsert needs a real account.
        "TARGET_BIGQUERY_UPSERT": "false",
    }


def test_bigquery_recipe_loads_each_call_once_with_the_documented_types(bqemulator, sandbox_env):
    server, env = sandbox_env
    url, _ = bqemulator
    loader = "target-bigquery-on-bqemulator"
    ensure_loader(env, loader)
    env = bigquery_env(bqemulator, env)
    meltano(env, "state", "clear", "--force", f"dev:tap-cdr-to-{loader}")
    run_pipeline(env, loader)

    data = server.config.v3
    for table, key in (("cdr_v3", "id"), ("cdr_by_uuid", "uuid")):
        bigquery(url, DEDUP_VIEW.format(table=table, key=key))
    counts = "select (select count(*) from tap_cdr.{0}), (select count(*) from tap_cdr.{0}_latest)"
    assert bigquery(url, counts.format("cdr_v3")) == [[str(RECORDS), str(RECORDS)]]
    assert bigquery(url, counts.format("cdr_by_uuid")) == [[str(VCC_RECORDS)] * 2]

    v3, vcc = bigquery_types(url, "cdr_v3"), bigquery_types(url, "cdr_by_uuid")
    for name in ("time_ended", "time_started", "time_answered"):
        assert v3[name] == "TIMESTAMP"
    assert v3["additional"] == v3["press_key"] == "JSON"
    assert v3["duration"] == "INTEGER"
    assert vcc["time_ended"] == "TIMESTAMP"
    assert vcc["recordCustomFieldData"] == "JSON"
    assert vcc["projectid"] == "INTEGER"

    ids = ", ".join(f"'{data.record(i)['id']}'" for i in PROBES)
    probes = bigquery(
        url,
        "select id, format_timestamp('%Y-%m-%d %H:%M:%S', time_ended, 'UTC'), "
        f"json_value(additional, '$.ten') from tap_cdr.cdr_v3 where id in ({ids})",
    )
    by_id = {row[0]: row[1:] for row in probes}
    for i in PROBES:
        raw = data.record(i)
        assert by_id[raw["id"]] == [utc(raw["time_ended"]), raw["additional"]["ten"]]
    custom = bigquery(
        url, "select json_value(recordCustomFieldData, '$.egyedimezo') from tap_cdr.cdr_by_uuid"
    )
    assert {value for (value,) in custom} <= {"egyedimező-érték", "árvíztűrő tükörfúrógép"}

    # A second run re-reads the lookback: appended again, counted once by the view.
    run_pipeline(env, loader)
    [[rows, latest]] = bigquery(url, counts.format("cdr_v3"))
    assert int(rows) > RECORDS  # the lookback's re-reads were appended ...
    assert int(latest) == RECORDS  # ... and the view counts each call once
    [[rows, latest]] = bigquery(url, counts.format("cdr_by_uuid"))
    assert int(rows) > VCC_RECORDS
    assert int(latest) == VCC_RECORDS


# -- the KPI models (transform/) on both emulators ---------------------------------------

KPI_KEY = ("call_date", "vendor", "direction", "queue_id")


def kpi_truth(server) -> tuple[dict, dict]:
    """calls and call_kpis_daily (default vars) as the definitions give them, for the
    calls the sandbox_env pipeline loads: every v3 call of its range, every VCC call."""
    calls = tel4vn_calls(server.config.v3, None) + vcc_calls(server.config.vcc, None)
    assert len(calls) == RECORDS + VCC_RECORDS
    return expected_calls(calls), expected_call_kpis(calls, "UTC", 20, 5, "against")


def dbt_on_emulator(
    env: dict[str, str], loader: str, transformer: str, tmp_path: Path, output: dict[str, object]
) -> dict[str, str]:
    """The loader and the dbt transformer installed, and dbt pointed at the emulator by a
    profiles.yml of the test's own (the shipped ones are for real accounts): the
    transformer's `profiles_dir` setting, for the environment."""
    ensure_loader(env, loader)
    ensure_transformer(env, transformer)
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    profile = {"tap_cdr": {"target": "emulator", "outputs": {"emulator": output}}}
    (profiles / "profiles.yml").write_text(json.dumps(profile))  # JSON is YAML
    return {f"{transformer.upper().replace('-', '_')}_PROFILES_DIR": str(profiles)}


def text_select(table: str, columns: list[str], stamp: str, day: str) -> str:
    """A select of `columns` of a model, its timestamps and dates as text (`stamp` and
    `day`: the warehouse's formatting of `{}`), as the other warehouses give them."""
    timestamps = ("started_at", "answered_at", "ended_at", "last_ended_at")
    parts = [
        stamp.format(c) if c in timestamps else day.format(c) if c == "call_date" else c
        for c in columns
    ]
    return f"select {', '.join(parts)} from analytics.{table}"


def typed(rows: list[list], columns: list[str], wanted: dict) -> list[dict]:
    """Rows as dicts; numbers given as text (BigQuery's REST API) read as numbers."""
    numeric = {c for row in wanted.values() for c, v in row.items() if isinstance(v, (int, float))}
    return [
        {
            c: (float(v) if c in numeric and isinstance(v, str) else v)
            for c, v in zip(columns, row, strict=True)
        }
        for row in rows
    ]


def check_models(query, stamp: str, day: str, server) -> None:
    """calls and call_kpis_daily, every cell, against the definitions."""
    calls, kpis = kpi_truth(server)
    call_columns = ["vendor", "call_id", *next(iter(calls.values()))]
    kpi_columns = [*KPI_KEY, *next(iter(kpis.values()))]
    call_rows = query(text_select("calls", call_columns, stamp, day))
    kpi_rows = query(text_select("call_kpis_daily", kpi_columns, stamp, day))
    compare(typed(call_rows, call_columns, calls), ("vendor", "call_id"), calls)
    compare(typed(kpi_rows, kpi_columns, kpis), KPI_KEY, kpis)


def test_kpi_models_compile_and_build_on_fakesnow(fakesnow, sandbox_env, tmp_path):
    server, env = sandbox_env
    loader, transformer = "target-snowflake-on-fakesnow", "dbt-snowflake"
    dbt_env = dbt_on_emulator(
        env,
        loader,
        transformer,
        tmp_path,
        {
            "type": "snowflake",
            "account": "tapcdr",
            "user": "tapcdr",
            "password": "emulator",
            "database": "TAPCDR",
            "schema": "analytics",
            "host": "127.0.0.1",
            "port": int(fakesnow.rsplit(":", 1)[1]),
            "protocol": "http",
            "threads": 1,
        },
    )
    env = {**snowflake_env(fakesnow, env), **dbt_env}
    snowflake(fakesnow, "drop schema if exists TAPCDR.ANALYTICS cascade")
    # The load, then the models' first (full) build and their tests. An incremental
    # build needs a real account: fakesnow cannot create its temporary tables.
    run_pipeline(env, loader, f"{transformer}:build")
    compiled = meltano(env, "invoke", transformer, "compile")  # reads the loaded columns
    assert compiled.returncode == 0, compiled.stdout[-3000:] + compiled.stderr[-3000:]
    check_models(
        lambda sql: snowflake(fakesnow, sql)[0],
        "to_varchar({0}, 'YYYY-MM-DD HH24:MI:SS') as {0}",
        "to_varchar({0}, 'YYYY-MM-DD') as {0}",
        server,
    )


def test_kpi_models_compile_and_build_on_bqemulator(bqemulator, sandbox_env, tmp_path):
    server, env = sandbox_env
    url, _ = bqemulator
    loader, transformer = "target-bigquery-on-bqemulator", "dbt-bigquery"
    dbt_env = dbt_on_emulator(
        env,
        loader,
        transformer,
        tmp_path,
        {
            "type": "bigquery",
            "method": "oauth",
            "project": "tapcdr",
            "dataset": "analytics",
            "location": "US",
            "api_endpoint": url,
            "threads": 1,
        },
    )
    env = {**bigquery_env(bqemulator, env), **dbt_env}
    # Appended, not merged (see above): the staging models keep each call's newest load.
    run_pipeline(env, loader)
    run_pipeline(env, loader, f"{transformer}:build")
    [[rows]] = bigquery(url, "select count(*) from tap_cdr.cdr_v3")
    assert int(rows) > RECORDS  # the lookback's re-reads, appended
    # A second build: calls merges the calls of its window. (bqemulator cannot parse the
    # marts' insert_overwrite script: their incremental build needs a real account.)
    again = meltano(env, "invoke", transformer, "build", "--select", "calls")
    assert again.returncode == 0, again.stdout[-3000:]
    assert "1 incremental model" in again.stdout
    compiled = meltano(env, "invoke", transformer, "compile")  # reads the loaded columns
    assert compiled.returncode == 0, compiled.stdout[-3000:] + compiled.stderr[-3000:]
    check_models(
        lambda sql: bigquery(url, sql),
        "format_timestamp('%Y-%m-%d %H:%M:%S', {0}) as {0}",
        "cast({0} as string) as {0}",
        server,
    )
