"""The KPI models' incremental build on a warehouse of 1,000,000 calls (DuckDB).

Run with the Python of Meltano's dbt-duckdb (it has dbt and target-duckdb's duckdb):

    .meltano/transformers/dbt-duckdb/venv/bin/python benchmarks/kpis.py [--rounds 3]

It writes tap_cdr.cdr_v3 (700,000 calls) and tap_cdr.cdr_by_uuid (300,000), shaped as
target-duckdb loads them, over 97 days; then, each round, on a copy: `dbt build` (the
first, full build), then what the tap's next run brings (400 new calls and 50 calls of
its lookback updated), then `dbt build` again. Before the second build every row of
the models is marked, so that the rows it rewrote can be counted afterwards. Prints
the figures, and puts them into benchmarks/RESULTS.md between its own markers.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import duckdb
from bench import build

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "RESULTS.md"
BEGIN, END = "<!-- kpis:begin -->", "<!-- kpis:end -->"
DBT = Path(sys.executable).parent / "dbt"
V3_CALLS, VCC_CALLS = 700_000, 300_000
V3_STEP, VCC_STEP = 12, 28  # seconds between calls' ends: both span 97 days

# Rows shaped as target-duckdb loads the streams (the columns the models read).
SOURCES = f"""
create schema tap_cdr;
create table tap_cdr.cdr_v3 as
with drawn as (
    select
        i,
        timestamp '2024-01-01' + to_seconds(i * {V3_STEP}) as ended,
        hash(i) % 100 as kind,
        hash(i, 1) % 100 < 75 as answered,
        1 + hash(i, 2) % 90 as wait,
        20 + hash(i, 3) % 600 as talk,
        hash(i, 4) % 12 as agent,
        hash(i, 5) % 3 as queue
    from range({V3_CALLS}) as t(i)
)
select
    'v3-' || i as id,
    case when kind < 50 then 'inbound' when kind < 90 then 'outbound' else 'local' end
        as direction,
    case
        when answered then 'answered'
        when queue = 0 then 'no-answer'
        when queue = 1 then 'busy'
        else 'failed'
    end as status,
    case when answered then 'NORMAL_CLEARING' else 'NO_ANSWER' end as cause,
    ended - to_seconds(wait + case when answered then talk else 0 end) as time_started,
    case when answered then ended - to_seconds(talk) end as time_answered,
    ended as time_ended,
    cast(case when answered then talk else 0 end as hugeint) as billsec,
    case when answered then cast(101 + agent as varchar) else '' end as extension,
    case when kind < 50 then cast(8001 + queue as varchar) else '' end as receive_dest,
    case when kind between 50 and 89 then 'campaign-' || queue end as campaign_uuid,
    '09' || lpad(cast(hash(i, 6) % 100000000 as varchar), 8, '0') as from_number,
    '02873003586' as to_number
from drawn;
create table tap_cdr.cdr_by_uuid as
with drawn as (
    select
        i,
        timestamp '2024-01-01' + to_seconds(i * {VCC_STEP}) as started,
        hash(i, 7) % 100 < 60 as inbound,
        hash(i, 8) % 100 < 75 as answered,
        hash(i, 9) % 120 as queue_time,
        2 + hash(i, 10) % 20 as ring,
        30 + hash(i, 11) % 600 as talk,
        hash(i, 12) % 60 as hold,
        5 + hash(i, 13) % 60 as wrap
    from range({VCC_CALLS}) as t(i)
)
select
    'vcc-' || i as uuid,
    case when inbound then 'inbound' else 'outbound' end as direction,
    started as start_ts_utc,
    case when answered then started + to_seconds(queue_time + ring) end as billing_ts_utc,
    started + to_seconds(ring + queue_time + case when answered then talk + hold else 0 end)
        as time_ended,
    cast(queue_time as hugeint) as queuetime,
    cast(ring as hugeint) as ringtime,
    cast(case when answered then talk else 0 end as hugeint) as talktime,
    cast(case when answered then hold else 0 end as hugeint) as holdtime,
    cast(case when answered then wrap else 0 end as hugeint) as afterwork,
    cast(case when answered then 1 + hash(i, 14) % 12 else -1 end as hugeint) as userid,
    cast(1 + hash(i, 15) % 6 as hugeint) as queueid,
    cast(1 + hash(i, 16) % 5 as hugeint) as projectid,
    case when answered then '16' else '19' end as dc,
    '36' || lpad(cast(hash(i, 17) % 1000000000 as varchar), 9, '0') as source,
    '3610000' as destination
from drawn;
"""

# What the tap's next run brings: new calls that ended in the hour after the newest
# (upserted on the key), and updates to calls of its lookback (late CDR changes).
NEXT_RUN = """
insert into tap_cdr.cdr_v3
select
    'v3-new-' || i, direction, status, cause,
    time_started + interval 30 minute, time_answered + interval 30 minute,
    time_ended + interval 30 minute, billsec, extension, receive_dest, campaign_uuid,
    from_number, to_number
from (select *, row_number() over () as i from tap_cdr.cdr_v3
      order by time_ended desc limit 300);
insert into tap_cdr.cdr_by_uuid
select
    'vcc-new-' || i, direction, start_ts_utc + interval 30 minute,
    billing_ts_utc + interval 30 minute, time_ended + interval 30 minute, queuetime,
    ringtime, talktime, holdtime, afterwork, userid, queueid, projectid, dc, source,
    destination
from (select *, row_number() over () as i from tap_cdr.cdr_by_uuid
      order by time_ended desc limit 100);
update tap_cdr.cdr_v3 set billsec = billsec + 1
where id in (select id from tap_cdr.cdr_v3 where billsec > 0
             order by time_ended desc limit 50 offset 200);
"""


def dbt_build(path: Path, work: Path) -> tuple[float, float, float]:
    """`dbt build`: its wall time, and the time dbt spent in the models and the tests."""
    env = {
        **os.environ,
        "DBT_PROFILES_DIR": str(ROOT / "transform" / "profiles" / "duckdb"),
        "DBT_DUCKDB_PATH": str(path),
        "DBT_TARGET_PATH": str(work / "target"),
        "DBT_LOG_PATH": str(work / "logs"),
    }
    started = time.perf_counter()
    proc = subprocess.run(
        [str(DBT), "build"],
        cwd=ROOT / "transform",
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        sys.exit(proc.stdout[-3000:])
    results = json.loads((work / "target" / "run_results.json").read_text())["results"]
    models = sum(r["execution_time"] for r in results if r["unique_id"].startswith("model."))
    tests = sum(r["execution_time"] for r in results if r["unique_id"].startswith("test."))
    return elapsed, models, tests


def one_round(base: Path, work: Path) -> dict[str, float]:
    path = work / "round.duckdb"
    shutil.copy(base, path)
    first, first_models, first_tests = dbt_build(path, work)
    with duckdb.connect(str(path)) as db:
        db.execute(NEXT_RUN)
        # Mark every row of the models: the second build's rewrites lose the mark.
        db.execute("update analytics.calls set disconnect_cause = '~'")
        db.execute("update analytics.call_kpis_daily set avg_talk_seconds = -1")
        db.execute("update analytics.agent_kpis_daily set aht_seconds = -1")
    second, second_models, second_tests = dbt_build(path, work)
    with duckdb.connect(str(path), read_only=True) as db:
        [(calls, rewritten)] = db.sql(
            "select count(*), count(*) filter (where disconnect_cause is distinct from '~') "
            "from analytics.calls"
        ).fetchall()
        [(days, rebuilt)] = db.sql(
            "select count(distinct call_date), "
            "count(distinct call_date) filter (where avg_talk_seconds <> -1) "
            "from analytics.call_kpis_daily"
        ).fetchall()
        [(agent_days, agent_rebuilt)] = db.sql(
            "select count(distinct call_date), "
            "count(distinct call_date) filter (where aht_seconds <> -1) "
            "from analytics.agent_kpis_daily"
        ).fetchall()
    return {
        "first": first,
        "first_models": first_models,
        "first_tests": first_tests,
        "second": second,
        "second_models": second_models,
        "second_tests": second_tests,
        "calls": calls,
        "rewritten": rewritten,
        "days": days,
        "rebuilt": rebuilt,
        "agent_days": agent_days,
        "agent_rebuilt": agent_rebuilt,
    }


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.1f} s ({min(values):.1f}-{max(values):.1f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        base = work / "base.duckdb"
        with duckdb.connect(str(base)) as db:
            db.execute(SOURCES)
            [(loaded,)] = db.sql(
                "select (select count(*) from tap_cdr.cdr_v3) + "
                "(select count(*) from tap_cdr.cdr_by_uuid)"
            ).fetchall()
        rounds = []
        for number in range(1, args.rounds + 1):
            result = one_round(base, work)
            print(f"round {number}: {json.dumps(result)}", flush=True)
            rounds.append(result)
    last = rounds[-1]
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")

    def timing(name: str) -> str:
        return (
            f"{spread([r[name] for r in rounds])}: models "
            f"{statistics.median([r[name + '_models'] for r in rounds]):.1f} s, tests "
            f"{statistics.median([r[name + '_tests'] for r in rounds]):.1f} s"
        )

    header = (
        "| loaded calls | first build | second build | calls rewritten "
        "| days rebuilt (call_kpis_daily) | days rebuilt (agent_kpis_daily) | run |"
    )
    row = (
        f"| {loaded:,} | {timing('first')} | {timing('second')} "
        f"| {last['rewritten']:,} of {last['calls']:,} | {last['rebuilt']} of {last['days']} "
        f"| {last['agent_rebuilt']} of {last['agent_days']} "
        f"| {when}, {build()}, median (min-max) of {len(rounds)} rounds |"
    )
    block = f"{header}\n|---:|---:|---:|---:|---:|---:|---|\n{row}"
    print(block)
    text = RESULTS.read_text()
    head, _, rest = text.partition(BEGIN)
    _, _, tail = rest.partition(END)
    RESULTS.write_text(f"{head}{BEGIN}\n{block}\n{END}{tail}")


if __name__ == "__main__":
    main()
