"""docs/scaling.md's runnable example: K=3 date partitions as concurrent `meltano run`s,
whose union is the whole dataset with no duplicate and no gap."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import pytest

from tap_cdr.sandbox import SandboxConfig, V3Dataset, start
from tests.conftest import ANCHOR, expected_ids

ROOT = Path(__file__).resolve().parent.parent
MELTANO = ROOT / ".venv-meltano" / "bin" / "meltano"
START = datetime(2024, 3, 6, tzinfo=timezone.utc)
END = datetime(2024, 3, 10, 13, tzinfo=timezone.utc)


def test_three_parallel_partitions_cover_the_range_exactly_once():
    if not MELTANO.exists():
        if os.environ.get("CI"):
            pytest.fail("Meltano is missing: make test installs it in .venv-meltano")
        pytest.skip("Meltano not installed (make test installs it)")
    server = start(SandboxConfig(v3=V3Dataset(records=300, anchor=ANCHOR, step_seconds=1200)))
    out = ROOT / "output" / "backfill"
    shutil.rmtree(out, ignore_errors=True)
    env = {
        **os.environ,
        "TAP_CDR_CDR_V3_BASE_URL": server.url,
        "TAP_CDR_CDR_V3_TOKEN": "sandbox-token",
        "TAP_CDR_CDR_V3_WINDOW_HOURS": "6",
    }
    env.pop("TAP_CDR_CDR_BY_UUID_UUIDS", None)
    try:
        proc = subprocess.run(
            ["bash", "scripts/backfill-parallel.sh", START.isoformat(), END.isoformat(), "3"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
        )
    finally:
        server.shutdown()
        server.server_close()
    logs = "".join(p.read_text() for p in out.glob("part-*.log"))
    assert proc.returncode == 0, proc.stdout + proc.stderr + logs[-3000:]
    per_partition = []
    for i in range(3):
        ids = []
        for path in sorted((out / f"part-{i}").glob("cdr_v3*.jsonl")):
            ids += [json.loads(line)["id"] for line in path.read_text().splitlines() if line]
        assert ids, f"partition {i} wrote nothing"
        per_partition.append(ids)
    union = [i for ids in per_partition for i in ids]
    assert len(union) == len(set(union)), "a call landed in two partitions"
    assert sorted(union) == sorted(expected_ids(server.config.v3, START, END))
