#!/usr/bin/env bash
# `make demo`: a real `meltano run tap-cdr target-duckdb` into output/demo.duckdb.
# Without TAP_CDR_CDR_V3_BASE_URL it runs against the bundled sandbox API, and checks
# that DuckDB holds exactly the calls the sandbox served for the sync window.
set -euo pipefail
cd "$(dirname "$0")/.."
MELTANO=.venv-meltano/bin/meltano
TARGET_PYTHON=.meltano/loaders/target-duckdb/venv/bin/python
mkdir -p output

if [ ! -x .meltano/loaders/target-duckdb/venv/bin/target-duckdb ] \
  || [ ! -x .meltano/extractors/tap-cdr/venv/bin/tap-cdr ]; then
  { "$MELTANO" install extractor tap-cdr && "$MELTANO" install loader target-duckdb; } \
    >output/meltano-install.log 2>&1 || {
    cat output/meltano-install.log
    exit 1
  }
fi

checks=()
if [ -z "${TAP_CDR_CDR_V3_BASE_URL:-}" ]; then
  # VCC Live: 500 calls, 20 minutes apart. The sweep of the CDR log loads every call
  # of the window; a uuids file, appended to between runs as a webhook receiver
  # would, announces calls. On the first run the three newest calls and one
  # announced call are not registered yet (their CDRs appear minutes after the call).
  vcc_data=(--vcc-records 500 --vcc-step-seconds 1200)
  mapfile -t calls < <(.venv/bin/tap-cdr-sandbox "${vcc_data[@]}" --print-vcc-uuids 500)
  uuids_file=$PWD/output/demo-uuids.txt
  hold=()
  if [ ! -f output/demo.duckdb ]; then
    printf '%s\n' "# calls announced by the Call Disposition webhook" "${calls[@]:0:6}" >"$uuids_file"
    hold=(--vcc-late 3 --vcc-delay-seconds "${calls[5]##*/}=86400")
    echo "demo: first run: 4 calls are not registered yet (3 newest, and announced ${calls[5]##*/})"
    rm -f output/demo-before.txt
    # A new demo database: forget the state of an earlier one.
    "$MELTANO" state clear --force dev:tap-cdr-to-target-duckdb >/dev/null 2>&1 || true
  else
    printf '%s\n' "${calls[@]:497:3}" >>"$uuids_file"  # the receiver announced the late ones
    "$TARGET_PYTHON" scripts/demo_summary.py output/demo.duckdb --save-uuids output/demo-before.txt
  fi
  .venv/bin/tap-cdr-sandbox --port 0 "${vcc_data[@]}" "${hold[@]}" >output/sandbox.url 2>output/sandbox.log &
  sandbox_pid=$!
  trap 'kill $sandbox_pid 2>/dev/null || true' EXIT
  for _ in $(seq 50); do [ -s output/sandbox.url ] && break; sleep 0.1; done
  url=$(head -1 output/sandbox.url)
  export TAP_CDR_CDR_V3_BASE_URL=$url TAP_CDR_CDR_V3_TOKEN=sandbox-token
  export TAP_CDR_CDR_BY_UUID_BASE_URL=$url TAP_CDR_CDR_BY_UUID_CUSTOMER=sandbox
  export TAP_CDR_CDR_BY_UUID_API_TOKEN=sandbox-vcc-token
  export TAP_CDR_CDR_BY_UUID_RETRY_INTERVAL_MINUTES=0
  export TAP_CDR_CDR_BY_UUID_UUIDS_FILE=$uuids_file
  echo "demo: syncing from the sandbox API at $url"
  # What the sandbox serves for the tap's default window (30 days up to now - 5 min).
  checks=(--expected "$(.venv/bin/python scripts/sandbox_window_count.py "$url")")
  checks+=(--sandbox "$url" --uuids-file "$uuids_file" --uuids-before output/demo-before.txt)
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

"$TARGET_PYTHON" scripts/demo_summary.py output/demo.duckdb \
  --extracted "${extracted:-0}" --state output/demo-state.json "${checks[@]}"
grep -h -o 'cdr_by_uuid: the CDR log sweep emitted .*\|cdr_by_uuid: fetched [0-9]*, pending [0-9]*, given up [0-9]*' \
  output/demo-run.log | sed 's/^/  this run: /' || true
