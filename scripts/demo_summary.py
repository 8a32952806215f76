"""Print what the demo loaded into DuckDB, and check it against the sandbox."""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path

import duckdb

parser = argparse.ArgumentParser()
parser.add_argument("path")
parser.add_argument("--extracted", default="?")
parser.add_argument("--expected", type=int, help="cdr_v3 calls the sandbox serves")
parser.add_argument("--state")
parser.add_argument("--sandbox", help="the sandbox URL, for the VCC ground truth")
parser.add_argument("--intake-store", help="the demo's intake store (SQLite file)")
parser.add_argument("--uuids-before", help="cdr_by_uuid uuids loaded before this run")
parser.add_argument("--save-uuids", help="write the cdr_by_uuid uuids loaded so far, and exit")
parser.add_argument("--kpis", action="store_true", help="print the KPI table of the busiest day")
args = parser.parse_args()


def sandbox(path: str, body: dict | None = None) -> dict:
    """A control route of the sandbox (loopback only; this venv has no requests)."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"{args.sandbox}{path}", data=data)
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def counted(number: int, noun: str) -> str:
    return f"{number:,} {noun if number == 1 else noun + 's'}"


def service_level_words(seconds: int, short: int, abandons: str) -> str:
    eligible = f"(offered - abandons under {short} s)"
    return {
        "against": f"answered within {seconds} s / {eligible}",
        "for": f"(answered within {seconds} s + abandons of {short}-{seconds} s) / {eligible}",
        "ignored": f"answered within {seconds} s / answered",
    }[abandons]


KPI_COLUMNS = (
    # heading, width, left-aligned
    ("vendor", 7, True),
    ("direction", 9, True),
    ("queue", 5, True),
    ("offered", 7, False),
    ("answered", 8, False),
    ("abandoned", 9, False),
    ("short", 5, False),
    ("within SL", 9, False),
    ("SL", 5, False),
    ("ASA", 5, False),
    ("AHT", 5, False),
)


def kpi_line(cells: list[str]) -> str:
    return "  " + " ".join(
        f"{cell:<{width}}" if left else f"{cell:>{width}}"
        for cell, (_, width, left) in zip(cells, KPI_COLUMNS, strict=True)
    )


def kpi_table(db: duckdb.DuckDBPyConnection) -> None:
    """The KPI mart's rows of the busiest day, as dbt built them (transform/)."""
    if ("call_kpis_daily",) not in db.sql(
        "select table_name from information_schema.tables where table_schema = 'analytics'"
    ).fetchall():
        print("  no KPI table: dbt-duckdb:build did not run")
        return
    day, zone, seconds, short, abandons = db.sql(
        "select call_date, kpi_timezone, service_level_seconds, short_abandon_seconds, "
        "service_level_abandons from analytics.call_kpis_daily group by all "
        # The busiest day, not the newest: run just after midnight, the newest holds a call.
        "order by sum(offered) desc, call_date desc limit 1"
    ).fetchone()
    rows = db.execute(
        "select vendor, direction, coalesce(queue_id, '-'), offered, answered, abandoned, "
        "short_abandoned, answered_within_sl, service_level, asa_seconds, aht_seconds "
        "from analytics.call_kpis_daily where call_date = ? order by vendor, direction, queue_id",
        [day],
    ).fetchall()
    print()
    print(f"KPIs of {day} ({zone}), the busiest day: analytics.call_kpis_daily, built by dbt,")
    print("  per vendor, direction and queue; service level (SL) =")
    print(f"  {service_level_words(seconds, short, abandons)}; ASA (mean wait) and AHT")
    print("  (mean talk + hold + wrap) of the answered calls, in seconds")
    print(kpi_line([heading for heading, _, _ in KPI_COLUMNS]))
    for vendor, direction, queue, *counts, level, asa, aht in rows:
        cells = [vendor, direction, queue, *(f"{n:,}" for n in counts)]
        cells.append(f"{level:.0%}" if level is not None else "-")
        cells += [f"{v:.0f}" if v is not None else "-" for v in (asa, aht)]
        print(kpi_line(cells))


db = duckdb.connect(args.path, read_only=True)
tables = {name for (name,) in db.sql("select table_name from information_schema.tables").fetchall()}
loaded = (
    [u for (u,) in db.sql("select uuid from tap_cdr.cdr_by_uuid").fetchall()]
    if "cdr_by_uuid" in tables
    else []
)
if args.save_uuids:
    Path(args.save_uuids).write_text("".join(f"{u}\n" for u in loaded))
    sys.exit(0)
if args.kpis:
    kpi_table(db)
    sys.exit(0)

table = "tap_cdr.cdr_v3"
rows, distinct, first, last = db.sql(
    f"select count(*), count(distinct id), min(time_ended), max(time_ended) from {table}"
).fetchone()

print()
print("tap-cdr demo: DuckDB summary")
print(f"  records extracted this run : {args.extracted}")
print(f"  rows in {table}        : {rows} ({distinct} distinct ids)")
print(f"  first time_ended (UTC)     : {first}")
print(f"  last time_ended (UTC)      : {last}")
for column in ("status", "direction"):
    print(f"  calls by {column}:")
    for value, count in db.sql(
        f"select {column}, count(*) from {table} group by 1 order by 2 desc"
    ).fetchall():
        print(f"    {value or '(blank)':<12} {count}")

failed = False
if args.expected is not None:
    verdict = "OK" if rows == args.expected == distinct else "MISMATCH"
    print(f"  sandbox served {args.expected} calls in the window: {verdict}")
    failed |= verdict != "OK"

if loaded:
    print(f"  rows in tap_cdr.cdr_by_uuid : {len(loaded)} ({len(set(loaded))} distinct uuids)")
if args.state:
    try:
        state = json.loads(Path(args.state).read_text())["singer_state"]["bookmarks"]
        pending = state["cdr_by_uuid"].get("pending", {})
        print(f"  cdr_by_uuid pending in state: {len(pending)} {sorted(pending)}")
    except (OSError, ValueError, KeyError):
        pass
if args.sandbox:
    with sqlite3.connect(f"file:{args.intake_store}?mode=ro", uri=True) as store:
        announced = [u for (u,) in store.execute("select uuid from announced_calls")]
    end = datetime.now(timezone.utc) - timedelta(minutes=5)
    query = {
        "ended_from": (end - timedelta(days=30)).isoformat(),
        "ended_to": end.isoformat(),
        "uuids": announced,
    }
    truth = sandbox("/_sandbox/truth", query)
    expected = set(truth["ended_in_range"]) | set(truth["registered"])
    only_by_sweep = set(truth["ended_in_range"]) - set(announced)
    verdict = "OK" if sorted(loaded) == sorted(expected) else "MISMATCH"
    waiting = set(announced) - expected
    print(
        f"  VCC calls registered so far (in the window, or announced): {len(expected)}, each "
        f"loaded once ({len(set(announced) & expected)} announced by a webhook, "
        f"{len(only_by_sweep)} found only by the CDR log sweep): {verdict}"
    )
    if waiting:
        print(f"  announced by a webhook, not registered yet (pending): {len(waiting)}")
    failed |= verdict != "OK"
    stats = sandbox("/_sandbox/stats")
    before = set()
    if args.uuids_before and Path(args.uuids_before).exists():
        before = set(Path(args.uuids_before).read_text().split())
    looked_up = set(stats["vcc_lookups"])
    again = looked_up & before
    print(
        f"  this run: {counted(stats['vcc_list_requests'], 'CDR log request')}, lookups of "
        f"{counted(len(looked_up), 'uuid')} (found or not), of which already loaded before "
        f"this run: {len(again)}"
    )
    failed |= bool(again)


if failed:
    sys.exit(1)
