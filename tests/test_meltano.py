"""Meltano conventions: nested settings through the environment, secrets masked."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MELTANO = ROOT / ".venv-meltano" / "bin" / "meltano"


def meltano(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """Meltano in this project; the JSON it prints is parsed by the caller."""
    if not MELTANO.exists():
        if os.environ.get("CI"):
            pytest.fail("Meltano is missing: make test installs it in .venv-meltano")
        pytest.skip("Meltano not installed (make test installs it)")
    proc = subprocess.run(
        [str(MELTANO), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc


def test_config_print_masks_secrets_and_nests_env_settings():
    env = {
        **os.environ,
        "TAP_CDR_CDR_V3_BASE_URL": "https://api.example.vn",
        "TAP_CDR_CDR_V3_TOKEN": "tok-do-not-print-9f3a",
        "TAP_CDR_CDR_BY_UUID_CUSTOMER": "acme",
        "TAP_CDR_CDR_BY_UUID_API_TOKEN": "vcc-do-not-print-77b1",
        # Seconds settings: Meltano 4 fails on a `decimal` setting set in the environment.
        "TAP_CDR_REQUEST_TIMEOUT_SECONDS": "30",
        "TAP_CDR_MAX_RETRY_WAIT_SECONDS": "10",
    }
    proc = meltano(env, "config", "print", "tap-cdr")
    config = json.loads(proc.stdout[proc.stdout.index("{") :])
    assert config["cdr_v3"]["base_url"] == "https://api.example.vn"
    assert config["cdr_by_uuid"]["customer"] == "acme"
    assert (config["request_timeout_seconds"], config["max_retry_wait_seconds"]) == (30, 10)
    assert "tok-do-not-print-9f3a" not in proc.stdout + proc.stderr
    assert "vcc-do-not-print-77b1" not in proc.stdout + proc.stderr
    assert config["cdr_v3"]["token"] == config["cdr_by_uuid"]["api_token"] == "*****"


def test_a_config_of_one_vendor_warns_about_nothing():
    """No `select` rule names a stream that a one-vendor config does not discover."""
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("TAP_CDR_")},
        "TAP_CDR_CDR_V3_BASE_URL": "https://api.example.vn",
        "TAP_CDR_CDR_V3_TOKEN": "tok-not-used",
    }
    proc = meltano(env, "invoke", "--dump=catalog", "tap-cdr")
    catalog = json.loads(proc.stdout[proc.stdout.index("{") :])
    (stream,) = catalog["streams"]
    assert stream["tap_stream_id"] == "cdr_v3"
    metadata = {tuple(m["breadcrumb"]): m["metadata"] for m in stream["metadata"]}
    assert metadata[()]["selected"] is True  # Meltano's default rule selects every stream
    assert "[warning" not in proc.stderr, proc.stderr
