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
  # Six calls for cdr_by_uuid. On the first run the sixth call's CDR is not
  # registered yet: it waits in the pending queue and arrives on the second run.
  mapfile -t items < <(.venv/bin/tap-cdr-sandbox --print-vcc-uuids 6)
  hold=()
  if [ ! -f output/demo.duckdb ]; then
    hold=(--vcc-delay-seconds "${items[5]##*/}=86400")
    echo "demo: first run: the CDR of call ${items[5]##*/} is not registered yet"
  fi
  .venv/bin/tap-cdr-sandbox --port 0 "${hold[@]}" >output/sandbox.url 2>output/sandbox.log &
  sandbox_pid=$!
  trap 'kill $sandbox_pid 2>/dev/null || true' EXIT
  for _ in $(seq 50); do [ -s output/sandbox.url ] && break; sleep 0.1; done
  url=$(head -1 output/sandbox.url)
  export TAP_CDR_CDR_V3_BASE_URL=$url TAP_CDR_CDR_V3_TOKEN=sandbox-token
  export TAP_CDR_CDR_BY_UUID_BASE_URL=$url TAP_CDR_CDR_BY_UUID_CUSTOMER=sandbox
  export TAP_CDR_CDR_BY_UUID_API_TOKEN=sandbox-vcc-token
  export TAP_CDR_CDR_BY_UUID_RETRY_INTERVAL_MINUTES=0
  TAP_CDR_CDR_BY_UUID_UUIDS=$(printf '"%s",' "${items[@]}")
  export TAP_CDR_CDR_BY_UUID_UUIDS="[${TAP_CDR_CDR_BY_UUID_UUIDS%,}]"
  echo "demo: syncing from the sandbox API at $url"
  # What the sandbox serves for the tap's default window (30 days up to now - 5 min).
  expected=$(.venv/bin/python scripts/sandbox_window_count.py "$url")
else
  echo "demo: syncing from $TAP_CDR_CDR_V3_BASE_URL"
fi

if ! "$MELTANO" run tap-cdr target-duckdb >output/demo-run.log 2>&1; then
  tail -40 output/demo-run.log
  exit 1
fi
extracted=$(grep -o '"metric":"record_count","value":[0-9]*' output/demo-run.log \
  | grep -o '[0-9]*$' | awk '{s += $1} END {print s + 0}')

"$MELTANO" state get dev:tap-cdr-to-target-duckdb >output/demo-state.json 2>/dev/null || true

.meltano/loaders/target-duckdb/venv/bin/python scripts/demo_summary.py output/demo.duckdb \
  --extracted "${extracted:-0}" --state output/demo-state.json ${expected:+--expected "$expected"}
grep -h -o 'cdr_by_uuid: fetched [0-9]*, pending [0-9]*, given up [0-9]*' output/demo-run.log \
  | sed 's/^/  this run: /' || true
