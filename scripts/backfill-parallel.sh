#!/usr/bin/env bash
# Backfill [START, END) as K date partitions, run as K concurrent `meltano run`s.
# Each partition has its own start_date/end_date and its own state ID, so partitions
# never share a bookmark, and each can be re-run or resumed on its own.
#
#   scripts/backfill-parallel.sh 2024-01-01T00:00:00Z 2024-07-01T00:00:00Z 3 [LOADER]
#
# The default loader is target-jsonl, one output folder per partition
# (output/backfill/part-N). With a warehouse loader, every partition writes the same
# tables; the primary key (id) keeps the union exactly once.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$1 end=$2 k=$3 loader=${4:-target-jsonl}
MELTANO=${MELTANO:-.venv-meltano/bin/meltano}
out=output/backfill
mkdir -p "$out"

mapfile -t partitions < <(.venv/bin/python - "$start" "$end" "$k" <<'PY'
import sys
from datetime import datetime
start, end, k = (datetime.fromisoformat(a.replace("Z", "+00:00")) for a in sys.argv[1:3]), None, int(sys.argv[3])
lo, hi = start
step = (hi - lo) / k
bounds = [lo + step * i for i in range(k)] + [hi]
for a, b in zip(bounds, bounds[1:]):
    print(a.isoformat(), b.isoformat())
PY
)

# Meltano keeps per-plugin run files (catalog, config) in .meltano/run, which
# concurrent runs of one plugin would overwrite. Each partition gets its own system
# directory, sharing the installed plugins.
[ -d .meltano/extractors/tap-cdr ] || "$MELTANO" install extractor tap-cdr >"$out/install.log" 2>&1
[ -d ".meltano/loaders/$loader" ] || "$MELTANO" install loader "$loader" >>"$out/install.log" 2>&1

pids=()
for i in "${!partitions[@]}"; do
  read -r part_start part_end <<<"${partitions[$i]}"
  sys_dir=$PWD/$out/part-$i/.meltano
  mkdir -p "$sys_dir"
  ln -sfn "$PWD/.meltano/extractors" "$sys_dir/extractors"
  ln -sfn "$PWD/.meltano/loaders" "$sys_dir/loaders"
  echo "partition $i: [$part_start, $part_end)"
  MELTANO_SYS_DIR_ROOT=$sys_dir \
    TAP_CDR_START_DATE=$part_start TAP_CDR_END_DATE=$part_end \
    TARGET_JSONL_DESTINATION_PATH=$PWD/$out/part-$i \
    "$MELTANO" run --state-id-suffix "backfill-part-$i" tap-cdr "$loader" \
    >"$out/part-$i.log" 2>&1 &
  pids+=($!)
done

failed=0
for i in "${!pids[@]}"; do
  if ! wait "${pids[$i]}"; then
    echo "partition $i failed; see $out/part-$i.log" >&2
    failed=1
  fi
done
exit $failed
