#!/usr/bin/env bash
# `make demo`: a real `meltano run tap-cdr target-duckdb` into output/demo.duckdb.
# Without TAP_CDR_CDR_V3_BASE_URL it runs against the bundled sandbox API, and checks
# that DuckDB holds exactly the calls the sandbox served for the sync window.
set -euo pipefail
cd "$(dirname "$0")/.."
MELTANO=.venv-meltano/bin/meltano
mkdir -p output

if [ ! -x .meltano/loaders/target-duckdb/venv/bin/target-duckdb ] \
  || [ ! -x .meltano/extractors/tap-cdr/venv/bin/tap-cdr ]; then
  "$MELTANO" install >output/meltano-install.log 2>&1 || {
    cat output/meltano-install.log
    exit 1
  }
fi

expected=""
if [ -z "${TAP_CDR_CDR_V3_BASE_URL:-}" ]; then
  .venv/bin/tap-cdr-sandbox --port 0 >output/sandbox.url 2>output/sandbox.log &
  sandbox_pid=$!
  trap 'kill $sandbox_pid 2>/dev/null || true' EXIT
  for _ in $(seq 50); do [ -s output/sandbox.url ] && break; sleep 0.1; done
  export TAP_CDR_CDR_V3_BASE_URL
  TAP_CDR_CDR_V3_BASE_URL=$(head -1 output/sandbox.url)
  export TAP_CDR_CDR_V3_TOKEN=sandbox-token
  echo "demo: syncing from the sandbox API at $TAP_CDR_CDR_V3_BASE_URL"
  # What the sandbox serves for the tap's default window (30 days up to now - 5 min).
  expected=$(.venv/bin/python scripts/sandbox_window_count.py "$TAP_CDR_CDR_V3_BASE_URL")
else
  echo "demo: syncing from $TAP_CDR_CDR_V3_BASE_URL"
fi

if ! "$MELTANO" run tap-cdr target-duckdb >output/demo-run.log 2>&1; then
  tail -40 output/demo-run.log
  exit 1
fi
extracted=$(grep -o '"metric":"record_count","value":[0-9]*' output/demo-run.log \
  | grep -o '[0-9]*$' | awk '{s += $1} END {print s + 0}')

.meltano/loaders/target-duckdb/venv/bin/python scripts/demo_summary.py output/demo.duckdb \
  --extracted "${extracted:-0}" ${expected:+--expected "$expected"}
