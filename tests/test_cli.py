"""The tap as users run it: a process whose stdout is checked by singer-check-tap,
and a built wheel that carries its schemas."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def singer_check_tap() -> str:
    path = os.environ.get("SINGER_CHECK_TAP") or shutil.which("singer-check-tap")
    if path and Path(path).exists():
        return path
    if os.environ.get("CI"):
        pytest.fail("singer-check-tap is missing: `make test` installs it in .venv-tools")
    pytest.skip("singer-check-tap not installed (make test installs it)")


def test_tap_output_passes_singer_check_tap(sandbox, tmp_path):
    server = sandbox(records=120)
    config = tmp_path / "config.json"
    config.write_text(
        json.dumps(
            {
                "start_date": "2024-03-01T00:00:00Z",
                "end_date": "2024-03-11T00:00:00Z",
                "cdr_v3": {"base_url": server.url, "api_key": "sandbox-api-key"},
            }
        )
    )
    tap = subprocess.run(
        [sys.executable, "-m", "tap_cdr.tap", "--config", str(config)],
        capture_output=True,
        timeout=120,
        check=True,
    )
    checked = subprocess.run(
        [singer_check_tap()], input=tap.stdout, capture_output=True, timeout=120
    )
    report = checked.stdout.decode()
    assert checked.returncode == 0, report + checked.stderr.decode()
    assert "The output is valid" in report and "120 record messages" in report
    assert b"sandbox-api-key" not in tap.stdout + tap.stderr


def test_wheel_ships_the_schemas(tmp_path):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--quiet",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        timeout=300,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("tap_cdr-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "tap_cdr/schemas/cdr_v3.json" in names
    assert "tap_cdr/sandbox/server.py" in names


@pytest.mark.parametrize("script", ["readme_settings.py", "meltano_plugins.py"])
def test_generated_files_match_about(script):
    """README's settings table, plugin/*.yml and the tap's settings in meltano.yml are
    generated from `tap-cdr --about`: each script's --check fails when they are stale."""
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / script), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout


def test_sandbox_help_shows_defaults_and_its_banner_the_settings_for_both_vendors():
    sandbox = [sys.executable, "-m", "tap_cdr.sandbox"]
    help_text = subprocess.run(
        [*sandbox, "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env={**os.environ, "COLUMNS": "200"},
    ).stdout
    help_text = " ".join(help_text.split())  # argparse wraps lines
    for default in ("(default: 8765)", "(default: 500)", "(default: sandbox-vcc-token)"):
        assert default in help_text
    proc = subprocess.Popen(
        [*sandbox, "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None and proc.stderr is not None
        url = proc.stdout.readline().strip()
        banner = [proc.stderr.readline() for _ in range(5)]
    finally:
        proc.terminate()
        proc.communicate(timeout=30)
    assert url.startswith("http://127.0.0.1:")
    v3 = json.loads(banner[2].split('"cdr_v3": ', 1)[1])
    vcc = json.loads(banner[4].split('"cdr_by_uuid": ', 1)[1])
    assert v3 == {"base_url": url, "token": "sandbox-token"}
    assert vcc == {"customer": "sandbox", "api_token": "sandbox-vcc-token", "base_url": url}
    assert "500 CDRs" in banner[1] and "20 calls" in banner[3]
