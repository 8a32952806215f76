#!/usr/bin/env bash
# `make demo`: a real `meltano run tap-cdr target-duckdb dbt-duckdb:build` into
# output/demo.duckdb, in the Meltano environment `demo` (its own state, apart from a
# user's runs in `dev`), then the KPI table of the busiest day.
# Without TAP_CDR_CDR_V3_BASE_URL it runs against the bundled sandbox API, and checks
# that DuckDB holds exactly the calls the sandbox served for the sync window.
set -euo pipefail
cd "$(dirname "$0")/.."
MELTANO=.venv-meltano/bin/meltano
STATE_ID=demo:tap-cdr-to-target-duckdb
TARGET_PYTHON=.meltano/loaders/target-duckdb/venv/bin/python
mkdir -p output

if [ ! -x .meltano/loaders/target-duckdb/venv/bin/target-duckdb ] \
  || [ ! -x .meltano/extractors/tap-cdr/venv/bin/tap-cdr ] \
  || [ ! -x .meltano/transformers/dbt-duckdb/venv/bin/dbt ]; then
  { "$MELTANO" install extractor tap-cdr && "$MELTANO" install loader target-duckdb \
    && "$MELTANO" install transformer dbt-duckdb; } >output/meltano-install.log 2>&1 || {
    cat output/meltano-install.log
    exit 1
  }
fi

checks=()
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT
if [ -z "${TAP_CDR_CDR_V3_BASE_URL:-}" ]; then
  # VCC Live: 500 calls, 20 minutes apart. The sandbox posts their Call Disposition
  # webhooks (encrypted, some twice, none for every fifth call, as when a supervisor
  # sets the disposition) to tap-cdr-intake, which stores them; the tap looks up the
  # announced calls and sweeps the CDR log for every call of the window. On the first
  # run the three newest calls are not registered yet (their CDRs appear minutes after
  # the call): the second run finds them.
  vcc_data=(--vcc-records 500 --vcc-step-seconds 1200)
  intake_db=$PWD/output/demo-intake.db
  hold=()
  if [ ! -f output/demo.duckdb ]; then
    hold=(--vcc-late 3)
    echo "demo: first run: the sandbox holds back its 3 newest VCC calls, as right after a call"
    echo "      ends: those a webhook announced wait in the pending queue for the second run"
    rm -f output/demo-before.txt "$intake_db" "$intake_db"-*
    # A new demo database: forget the state of an earlier one.
    "$MELTANO" --environment=demo state clear --force "$STATE_ID" >/dev/null 2>&1 || true
  else
    "$TARGET_PYTHON" scripts/demo_summary.py output/demo.duckdb --save-uuids output/demo-before.txt
  fi
  secret=$(.venv/bin/python -c 'import secrets; print(secrets.token_hex(16))')
  export TAP_CDR_INTAKE_SECRET_KEY=$secret TAP_CDR_INTAKE_CIPHER=aes-256-ctr
  export TAP_CDR_SANDBOX_WEBHOOK_SECRET_KEY=$secret
  port=$(.venv/bin/python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  .venv/bin/tap-cdr-intake --store "sqlite:///$intake_db" --port "$port" >output/intake.log 2>&1 &
  pids+=($!)
  .venv/bin/python scripts/demo_wait.py ready "http://127.0.0.1:$port/healthz"
  .venv/bin/tap-cdr-sandbox --port 0 "${vcc_data[@]}" "${hold[@]}" \
    --vcc-webhook-url "http://127.0.0.1:$port/vcc/call-disposition" \
    --vcc-webhook-cipher aes-256-ctr --vcc-webhook-rate 250 \
    >output/sandbox.url 2>output/sandbox.log &
  pids+=($!)
  for _ in $(seq 50); do [ -s output/sandbox.url ] && break; sleep 0.1; done
  url=$(head -1 output/sandbox.url)
  echo "demo: the sandbox API at $url posts its webhooks to tap-cdr-intake on port $port"
  .venv/bin/python scripts/demo_wait.py webhooks "$url"
  export TAP_CDR_CDR_V3_BASE_URL=$url TAP_CDR_CDR_V3_TOKEN=sandbox-token
  export TAP_CDR_CDR_BY_UUID_BASE_URL=$url TAP_CDR_CDR_BY_UUID_CUSTOMER=sandbox
  export TAP_CDR_CDR_BY_UUID_API_TOKEN=sandbox-vcc-token
  export TAP_CDR_CDR_BY_UUID_RETRY_INTERVAL_MINUTES=0
  export TAP_CDR_CDR_BY_UUID_INTAKE_STORE=sqlite:///$intake_db
  export TAP_CDR_CDR_BY_UUID_FIRST_ATTEMPT_DELAY_MINUTES=0
  echo "demo: syncing from the sandbox API"
  # What the sandbox serves for the tap's default window (30 days up to now - 5 min).
  checks=(--expected "$(.venv/bin/python scripts/sandbox_window_count.py "$url")")
  checks+=(--sandbox "$url" --intake-store "$intake_db" --uuids-before output/demo-before.txt)
else
  echo "demo: syncing from $TAP_CDR_CDR_V3_BASE_URL"
fi

# The load, then the KPI models (transform/) on what it loaded.
if ! "$MELTANO" --environment=demo run tap-cdr target-duckdb dbt-duckdb:build \
  >output/demo-run.log 2>&1; then
  tail -40 output/demo-run.log
  exit 1
fi
# A normal run says nothing to worry about: a warning here is a defect of the tap.
if grep -E '\[(warning|error) *\] tap-cdr' output/demo-run.log; then
  echo "demo: the tap logged the warnings or errors above (output/demo-run.log)"
  exit 1
fi
# Each stream ends its run with "<stream>: emitted N records ...".
extracted=$(grep -o 'cdr_[a-z0-9_]*: emitted [0-9,]* record' output/demo-run.log \
  | grep -o '[0-9,]* record' | tr -d ', record' | awk '{s += $1} END {print s + 0}')

"$MELTANO" --environment=demo state get "$STATE_ID" >output/demo-state.json 2>/dev/null || true

"$TARGET_PYTHON" scripts/demo_summary.py output/demo.duckdb \
  --extracted "${extracted:-0}" --state output/demo-state.json "${checks[@]}"
grep -h -o 'cdr_by_uuid: the intake store announced [0-9,]* calls\?\|cdr_[a-z0-9_]*: emitted .*' \
  output/demo-run.log | sed 's/^/  this run: /' || true
grep -h -o 'Done\. PASS=.*' output/demo-run.log | sed 's/^/  this run: dbt-duckdb:build (models and their tests): /' || true
"$TARGET_PYTHON" scripts/demo_summary.py output/demo.duckdb --kpis
