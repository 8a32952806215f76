"""tap-cdr outside its repository, as a user installs it: the README's install and Meltano
commands run as written in a new folder, and a Meltano project of a user's own, made from
the built wheel and the plugin definition, loads exactly what the tap emits."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import run_tap

ROOT = Path(__file__).resolve().parent.parent
MELTANO_BIN = ROOT / ".venv-meltano" / "bin"
TOOLS_BIN = ROOT / ".venv-tools" / "bin"
TAGGED = re.compile(r"<!-- readme-test: ([a-z-]+) -->\n```sh\n(.*?)```", re.DOTALL)
MELTANO_RUN = re.compile(r"^meltano run ", re.MULTILINE)
SH_BLOCK = re.compile(r"```sh\n(.*?)```", re.DOTALL)
# The lines of a README shell block that install something or drive Meltano: each must
# be in a block that the test runs.
INSTALLING = re.compile(r"^(meltano |pipx |pip |python3 -m venv|make (-C \S+ )?dist)|/pip install")


def needs(path: Path, what: str) -> None:
    if not path.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{what} is missing: `make test` installs it")
        pytest.skip(f"{what} is not installed (`make test` installs it)")


def user_env(home: Path) -> dict[str, str]:
    """A new user's shell: their own HOME, with Meltano and pipx on PATH (and pipx's bin
    directory, as `pipx ensurepath` does), and the machine's pip cache."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TAP_CDR", "MELTANO"))}
    cache = os.environ.get("PIP_CACHE_DIR") or str(Path.home() / ".cache" / "pip")
    path = [str(home / ".local" / "bin"), str(MELTANO_BIN), str(TOOLS_BIN), env["PATH"]]
    env.update(
        HOME=str(home),
        PATH=os.pathsep.join(path),
        PIP_CACHE_DIR=cache,
        MELTANO_SEND_ANONYMOUS_USAGE_STATS="false",
    )
    env.pop("VIRTUAL_ENV", None)
    return env


def readme_blocks() -> list[tuple[str, str]]:
    return TAGGED.findall((ROOT / "README.md").read_text())


def test_every_install_and_meltano_command_of_the_readme_is_in_a_block_the_test_runs():
    readme = (ROOT / "README.md").read_text()
    tested = "\n".join(body for _, body in readme_blocks())
    for block in SH_BLOCK.findall(readme):
        for line in block.splitlines():
            if INSTALLING.search(line.strip()):
                assert line in tested.splitlines(), f"README command not run by a test: {line}"
    assert {kind for kind, _ in readme_blocks()} == {"install", "needs-account"}


def test_the_readme_commands_work_as_written_in_a_new_folder(tmp_path):
    """Each tagged block of the README, in order, in one shell, as a user pastes them:
    the first in the clone, the others from a new folder. `meltano run` to a warehouse
    that needs an account runs with --dry-run."""
    needs(MELTANO_BIN / "meltano", "Meltano")
    needs(TOOLS_BIN / "pipx", "pipx")
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    script = ["set -euo pipefail", "trap 'kill $(jobs -p) 2>/dev/null || true' EXIT"]
    for number, (kind, body) in enumerate(readme_blocks()):
        dry_run = kind == "needs-account"
        commands = MELTANO_RUN.sub("meltano run --dry-run ", body) if dry_run else body
        script += [f"echo '### README block {number} ({kind})'", commands]
        if number == 0:
            script.append(f"cd {work}")  # "the commands below run from any folder"
    proc = subprocess.run(
        ["bash", "-c", "\n".join(script)],
        cwd=ROOT,
        env=user_env(home),
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]
    project = home / "cdr-pipeline"
    assert (project / "output" / "cdr.duckdb").stat().st_size > 0
    # The KPI models, built by the user's dbt-duckdb on what target-duckdb loaded.
    loader_python = project / ".meltano" / "loaders" / "target-duckdb" / "venv" / "bin" / "python"
    script = (
        "import duckdb, sys; db = duckdb.connect(sys.argv[1], read_only=True); print(*db.sql("
        "'select (select count(*) from tap_cdr.cdr_v3) + (select count(*) from "
        "tap_cdr.cdr_by_uuid), (select count(*) from analytics.calls), "
        "(select sum(offered) from analytics.call_kpis_daily)').fetchone())"
    )
    counts = subprocess.run(
        [str(loader_python), "-c", script, str(project / "output" / "cdr.duckdb")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert counts[0] == counts[1] == counts[2] and int(counts[0]) > 0
    assert "Plugin configuration is valid" in proc.stdout + proc.stderr
    secrets = (project / ".env").read_text()
    assert (
        "sandbox-vcc-token" in secrets
        and "sandbox-vcc-token" not in (project / "meltano.yml").read_text()
    )
    definition = (ROOT / "dist" / "tap-cdr.yml").read_text()
    assert f"pip_url: git+file://{ROOT}" in definition


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> Path:
    """The wheel and dist/tap-cdr.yml, built as `make dist` builds them."""
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--outdir", str(out), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "meltano_plugins.py"), "--dist", str(out)],
        check=True,
        timeout=120,
    )
    return out


def meltano(project: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(MELTANO_BIN / "meltano"), *args],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )


def test_a_meltano_project_of_your_own_loads_what_the_tap_emits(dist, vcc, sandbox, tmp_path):
    needs(MELTANO_BIN / "meltano", "Meltano")
    v3_server, vcc_server = sandbox(records=300), vcc(records=60)
    config = {
        "start_date": "2024-03-05T00:00:00Z",
        "end_date": "2024-03-10T13:00:00Z",
        "cdr_v3": {"base_url": v3_server.url, "api_key": "sandbox-api-key"},
        "cdr_by_uuid": {
            "customer": "sandbox",
            "api_token": "sandbox-vcc-token",
            "base_url": vcc_server.url,
        },
    }
    expected = run_tap(config).records

    home, project = tmp_path / "home", tmp_path / "my-project"
    home.mkdir()
    env = user_env(home)
    steps = [
        ("init", str(project)),
        ("add", "--from-ref", str(dist / "tap-cdr.yml"), "tap-cdr"),
        ("add", "--from-ref", str(ROOT / "plugin" / "target-jsonl.yml"), "target-jsonl"),
        ("config", "set", "target-jsonl", "destination_path", "loaded"),
        *(
            ("config", "set", "tap-cdr", name, value)
            for name, value in [
                ("start_date", config["start_date"]),
                ("end_date", config["end_date"]),
                ("cdr_v3.base_url", v3_server.url),
                ("cdr_v3.api_key", "sandbox-api-key"),
                ("cdr_by_uuid.customer", "sandbox"),
                ("cdr_by_uuid.api_token", "sandbox-vcc-token"),
                ("cdr_by_uuid.base_url", vcc_server.url),
            ]
        ),
        ("config", "test", "tap-cdr"),
        ("run", "tap-cdr", "target-jsonl"),
    ]
    for step in steps:
        done = meltano(project if step[0] != "init" else tmp_path, env, *step)
        assert done.returncode == 0, f"meltano {' '.join(step)}:\n{done.stderr[-3000:]}"
    assert f"pip_url: {dist}/tap_cdr-" in (project / "meltano.yml").read_text()

    loaded = [
        json.loads(line)
        for path in sorted((project / "loaded").glob("*.jsonl"))
        for line in path.read_text().splitlines()
    ]
    by_key = lambda r: r.get("id") or r["uuid"]  # noqa: E731
    assert len(loaded) == len(expected) > 300
    assert sorted(loaded, key=by_key) == sorted(expected, key=by_key)

    # Meltano shows the tap's lines at their own level (structured logging).
    meltano(project, env, "config", "set", "tap-cdr", "cdr_v3.api_key", "not-the-key")
    failed = meltano(project, env, "run", "tap-cdr", "target-jsonl")
    assert failed.returncode != 0
    said = [x for x in failed.stderr.splitlines() if "`cdr_v3.api_key`) was refused" in x]
    assert said and all("[error" in x for x in said)
    assert "not-the-key" not in failed.stderr
