"""Print what the demo loaded into DuckDB, and check it against the sandbox."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import duckdb

parser = argparse.ArgumentParser()
parser.add_argument("path")
parser.add_argument("--extracted", default="?")
parser.add_argument("--expected", type=int)
parser.add_argument("--state")
args = parser.parse_args()

db = duckdb.connect(args.path, read_only=True)
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

tables = {name for (name,) in db.sql("select table_name from information_schema.tables").fetchall()}
if "cdr_by_uuid" in tables:
    (lookups,) = db.sql("select count(*) from tap_cdr.cdr_by_uuid").fetchone()
    print(f"  rows in tap_cdr.cdr_by_uuid : {lookups}")
if args.state:
    try:
        state = json.loads(Path(args.state).read_text())
        pending = state["singer_state"]["bookmarks"]["cdr_by_uuid"].get("pending", {})
        print(f"  cdr_by_uuid pending in state: {len(pending)} {sorted(pending)}")
    except (OSError, ValueError, KeyError):
        pass

if args.expected is not None:
    verdict = "OK" if rows == args.expected == distinct else "MISMATCH"
    print(f"  sandbox served {args.expected} calls in the window: {verdict}")
    if verdict != "OK":
        sys.exit(1)
