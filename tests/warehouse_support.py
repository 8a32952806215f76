"""What the warehouse tests share: a sandbox serving both APIs, and Meltano runs of
the project's meltano.yml with a system database of the test's own."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tap_cdr.sandbox import SandboxConfig, V3Dataset, start
from tap_cdr.sandbox.data import VccDataset
from tests.conftest import ANCHOR

ROOT = Path(__file__).resolve().parent.parent
MELTANO = ROOT / ".venv-meltano" / "bin" / "meltano"
RECORDS = 300
VCC_RECORDS = 8


def unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{reason}: CI must run the warehouse tests")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def sandbox_env(tmp_path_factory):
    server = start(
        SandboxConfig(
            v3=V3Dataset(records=RECORDS, anchor=ANCHOR, step_seconds=1200),
            vcc=VccDataset(records=VCC_RECORDS, anchor=ANCHOR),
        )
    )
    vcc = server.config.vcc
    env = {
        **os.environ,
        # A system database of the test's own: its state never reaches the demo's.
        "MELTANO_DATABASE_URI": f"sqlite:///{tmp_path_factory.mktemp('meltano')}/meltano.db",
        "TAP_CDR_START_DATE": "2024-03-01T00:00:00Z",
        "TAP_CDR_END_DATE": "2024-03-11T00:00:00Z",
        "TAP_CDR_CDR_V3_BASE_URL": server.url,
        "TAP_CDR_CDR_V3_TOKEN": "sandbox-token",
        "TAP_CDR_CDR_BY_UUID_BASE_URL": server.url,
        "TAP_CDR_CDR_BY_UUID_CUSTOMER": "sandbox",
        "TAP_CDR_CDR_BY_UUID_API_TOKEN": "sandbox-vcc-token",
        "TAP_CDR_CDR_BY_UUID_UUIDS": json.dumps(
            [
                "{:04d}/{:02d}/{}".format(*vcc.filed_under(i), vcc.uuids[i])
                for i in range(VCC_RECORDS)
            ]
        ),
        "TARGET_POSTGRES_PASSWORD": "tapcdr",
    }
    yield server, env
    server.shutdown()
    server.server_close()


def meltano(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(MELTANO), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900
    )


def ensure_loader(env: dict, loader: str) -> None:
    """Install tap-cdr and the loader, as `meltano install` would, if not yet there."""
    if not MELTANO.exists():
        unavailable("Meltano is not installed (make test installs it in .venv-meltano)")
    for kind, name in (("extractor", "tap-cdr"), ("loader", loader)):
        if not (ROOT / ".meltano" / f"{kind}s" / name / "venv").exists():
            proc = meltano(env, "install", kind, name)
            assert proc.returncode == 0, proc.stderr[-3000:]


def ensure_transformer(env: dict, transformer: str) -> None:
    """Install a dbt transformer of meltano.yml, if not yet there."""
    if not (ROOT / ".meltano" / "transformers" / transformer / "venv").exists():
        proc = meltano(env, "install", "transformer", transformer)
        assert proc.returncode == 0, proc.stderr[-3000:]


def run_pipeline(env: dict, loader: str, *more: str) -> None:
    proc = meltano(env, "run", "tap-cdr", loader, *more)
    if proc.returncode != 0:
        # The plugins' own lines say why; Meltano's traceback after them does not.
        names = (loader, *(step.split(":")[0] for step in more))
        lines = [line for line in proc.stderr.splitlines() if any(f" {n} " in line for n in names)]
        pytest.fail("\n".join(lines[-60:]) or proc.stderr[-4000:])
