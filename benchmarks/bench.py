"""`make bench`: whole-process timings of tap-cdr against the bare reference loops.

Each scenario starts the sandbox, warms every contender up once, then runs them
alternately (A B C, A B C, ...) so that machine noise hits all of them alike. It
prints medians, min-max and the median of the pair-by-pair ratios, reads peak RSS of
each child from wait4(), and writes benchmarks/RESULTS.md.

    python benchmarks/bench.py [--pairs 5] [--only NAME] [--records N]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
ANCHOR = datetime(2024, 3, 10, 12, tzinfo=timezone.utc)
TOKEN = "sandbox-token"
VCC_TOKEN = "sandbox-vcc-token"
VCC_STEP = 30  # seconds between VCC calls: 2,880 a day
# RESULTS.md from this line on (the intake's figures, notes, history) is kept as it is.
KEPT = "<!-- kept: make bench rewrites only what is above this line -->"


@dataclass
class Contender:
    name: str
    argv: list[str]
    env: dict[str, str] | None = None
    # Outside the checkout: `python -m` puts the working directory first on sys.path,
    # ahead of PYTHONPATH, and from the checkout the baseline would import this build.
    cwd: Path | None = None
    seconds: list[float] = field(default_factory=list)
    rss_mb: list[float] = field(default_factory=list)

    def run(self) -> None:
        with tempfile.TemporaryFile() as log:
            started = time.perf_counter()
            env = {**os.environ, **self.env} if self.env else None
            proc = subprocess.Popen(
                self.argv, stdout=subprocess.DEVNULL, stderr=log, env=env, cwd=self.cwd
            )
            _, status, usage = os.wait4(proc.pid, 0)
            elapsed = time.perf_counter() - started
            proc.returncode = os.waitstatus_to_exitcode(status)
            if proc.returncode != 0:
                log.seek(0)
                raise SystemExit(f"{self.name} failed:\n{log.read().decode()[-2000:]}")
        self.seconds.append(elapsed)
        self.rss_mb.append(usage.ru_maxrss / 1024)


@dataclass
class Scenario:
    name: str
    records: int
    page_size: int
    latency_ms: float = 0.0
    contenders: list[str] = field(default_factory=lambda: ["tap-cdr", "json loop", "orjson loop"])
    concurrency: tuple[int, ...] = (4,)
    pairs: int | None = None  # None: the --pairs option
    # "v3": the cdr_v3 list; "sweep": the VCC CDR log; "lookups": VCC uuid lookups
    api: str = "v3"


def start_sandbox(scenario: Scenario) -> tuple[subprocess.Popen, str]:
    if scenario.api == "v3":
        data = ["--records", str(scenario.records)]
    else:
        data = ["--vcc-records", str(scenario.records), "--vcc-step-seconds", str(VCC_STEP)]
    timing = ["--anchor", ANCHOR.isoformat(), "--latency-ms", str(scenario.latency_ms)]
    proc = subprocess.Popen(
        [PYTHON, "-m", "tap_cdr.sandbox", "--port", "0", *data, *timing],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    url = proc.stdout.readline().strip()
    return proc, url


def tap_config(scenario: Scenario, url: str, concurrency: int, tmp: Path) -> Path:
    window = {
        "start_date": (ANCHOR - timedelta(days=400)).isoformat(),
        "end_date": (ANCHOR + timedelta(hours=1)).isoformat(),
    }
    vcc = {"customer": "sandbox", "api_token": VCC_TOKEN, "base_url": url}
    if scenario.api == "v3":
        config = {
            **window,
            "cdr_v3": {
                "base_url": url,
                "token": TOKEN,
                "page_size": scenario.page_size,
                "window_hours": 24 * 400,
                "max_concurrency": concurrency,
            },
        }
    elif scenario.api == "sweep":
        first = ANCHOR - timedelta(seconds=VCC_STEP * scenario.records)
        config = {
            "start_date": (first - timedelta(days=1)).isoformat(),
            "end_date": window["end_date"],
            "cdr_by_uuid": {**vcc, "page_size": scenario.page_size, "max_concurrency": concurrency},
        }
    else:
        items = tmp / "uuids.txt"
        if not items.exists():
            dataset = ["--vcc-records", str(scenario.records), "--vcc-step-seconds", str(VCC_STEP)]
            printed = subprocess.run(
                [
                    PYTHON,
                    "-m",
                    "tap_cdr.sandbox",
                    *dataset,
                    "--anchor",
                    ANCHOR.isoformat(),
                    "--print-vcc-uuids",
                    str(scenario.records),
                ],
                capture_output=True,
                text=True,
                check=True,
            )
            items.write_text(printed.stdout)
        config = {
            **window,
            "cdr_by_uuid": {
                **vcc,
                "list_cdrs": False,
                "uuids_file": str(items),
                "max_concurrency": concurrency,
            },
        }
    path = tmp / f"tap-{scenario.api}-{scenario.page_size}-{concurrency}.json"
    path.write_text(json.dumps(config))
    return path


def contenders_for(
    scenario: Scenario, url: str, tmp: Path, baseline: Path | None
) -> list[Contender]:
    result = []
    for name in scenario.contenders:
        if name.startswith("tap-cdr"):
            for concurrency in scenario.concurrency:
                label = name if len(scenario.concurrency) == 1 else f"{name} c={concurrency}"
                config = str(tap_config(scenario, url, concurrency, tmp))
                argv = [PYTHON, "-m", "tap_cdr.tap", "--config", config]
                if name == "tap-cdr baseline":
                    if baseline is None:
                        continue
                    label = label.replace("baseline", f"({build(baseline)})")
                    env = {"PYTHONPATH": str(baseline)}
                    imports_from(baseline, env, tmp)
                    result.append(Contender(label, argv, env, tmp))
                else:
                    result.append(Contender(label, argv, cwd=tmp))
        else:
            argv = [PYTHON, str(ROOT / "benchmarks" / "bare_loop.py"), url]
            if scenario.api == "sweep":
                first = ANCHOR - timedelta(seconds=VCC_STEP * scenario.records)
                argv += [VCC_TOKEN, str(scenario.page_size), "--vcc-days", first.date().isoformat()]
                argv += [(ANCHOR + timedelta(days=1)).date().isoformat()]
            else:
                argv += [TOKEN, str(scenario.page_size)]
            if name == "orjson loop":
                argv.append("--orjson")
            result.append(Contender(name, argv))
    return result


def imports_from(baseline: Path, env: dict[str, str], cwd: Path) -> None:
    """Stop unless a contender started so imports tap_cdr from the baseline's tree."""
    found = subprocess.run(
        [PYTHON, "-c", "import tap_cdr; print(tap_cdr.__file__)"],
        env={**os.environ, **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    if not Path(found).resolve().is_relative_to(baseline.resolve()):
        raise SystemExit(f"the baseline run would import {found}, not the build in {baseline}")


def run_scenario(scenario: Scenario, pairs: int, baseline: Path | None) -> list[Contender]:
    sandbox, url = start_sandbox(scenario)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            contenders = contenders_for(scenario, url, Path(tmp), baseline)
            for contender in contenders:  # warm-up, also fills the sandbox's cache
                contender.run()
                contender.seconds.clear()
                contender.rss_mb.clear()
            for _ in range(pairs):
                for contender in contenders:
                    contender.run()
    finally:
        sandbox.terminate()
        sandbox.wait()
    return contenders


def summarise(scenario: Scenario, contenders: list[Contender]) -> list[str]:
    base = contenders[0]
    lines = [
        f"### {scenario.name}",
        "",
        (
            f"{scenario.records:,} records, page size {scenario.page_size:,}, "
            f"latency {scenario.latency_ms:g} ms, {len(base.seconds)} rounds"
        ),
        "",
        f"| contender | median s | min-max s | peak RSS MB | median ratio {base.name} / this |",
        "|---|---:|---:|---:|---:|",
    ]
    for contender in contenders:
        ratios = [a / b for a, b in zip(base.seconds, contender.seconds, strict=True)]
        lines.append(
            f"| {contender.name} | {statistics.median(contender.seconds):.2f} | "
            f"{min(contender.seconds):.2f}-{max(contender.seconds):.2f} | "
            f"{max(contender.rss_mb):.0f} | {statistics.median(ratios):.2f} |"
        )
    lines.append("")
    return lines


BASE = "tap-cdr baseline"  # the build given by --baseline, run alongside
SCENARIOS = [
    Scenario(
        "200k records, page 1000, no latency",
        200_000,
        1000,
        contenders=["tap-cdr", BASE, "json loop", "orjson loop"],
    ),
    Scenario(
        "200k records, page 1000, no latency: sequential and default concurrency",
        200_000,
        1000,
        0.0,
        ["tap-cdr", "json loop"],
        (1, 4),
    ),
    Scenario(
        "200k records, page 100, no latency", 200_000, 100, 0.0, ["tap-cdr", BASE, "json loop"]
    ),
    Scenario(
        "200k records, page 100, 50 ms latency: concurrency",
        200_000,
        100,
        50.0,
        ["tap-cdr", BASE],
        (1, 8),
        pairs=3,
    ),
    Scenario(
        "200k records, page 1000, 50 ms latency: concurrency",
        200_000,
        1000,
        50.0,
        ["tap-cdr", BASE],
        (1, 8),
    ),
    Scenario(
        "2M records, page 1000, no latency: memory",
        2_000_000,
        1000,
        0.0,
        ["tap-cdr", BASE, "json loop"],
        pairs=3,
    ),
    Scenario(
        "VCC CDR log sweep, 100k calls, page 500, no latency",
        100_000,
        500,
        0.0,
        ["tap-cdr", "json loop", "orjson loop"],
        api="sweep",
    ),
    Scenario(
        "VCC lookups, 2,000 uuids, 50 ms latency: concurrency",
        2_000,
        1,
        50.0,
        ["tap-cdr"],
        (1, 8),
        pairs=3,
        api="lookups",
    ),
]


def build(where: Path = ROOT) -> str:
    """The commit measured, and whether the working tree differed from it."""
    try:
        commit = subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            cwd=where,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return f"git {commit}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--only", help="run the scenarios whose name contains this")
    parser.add_argument("--records", type=int, help="override every scenario's record count")
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "RESULTS.md"))
    parser.add_argument(
        "--baseline",
        type=Path,
        help="a checkout of an earlier build, run alongside on the same scenarios",
    )
    args = parser.parse_args()

    lines = [
        "# Benchmark results",
        "",
        "Written by `make bench` (benchmarks/bench.py) down to the marker below; the sections",
        "after it are kept by `make bench` (the intake's table is written by",
        "benchmarks/intake.py).",
        "",
        f"- date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC",
        f"- machine: {platform.machine()}, {os.cpu_count()} cores, {platform.platform()}",
        (
            f"- python {platform.python_version()}, singer-sdk {version('singer-sdk')}, "
            f"tap-cdr {version('tap-cdr')}"
        ),
        f"- build: {build()}",
        "- whole processes, stdout to /dev/null, the sandbox API on 127.0.0.1 on the same",
        "  cores; a warm-up, then alternating rounds (A B C, A B C, ...)",
        "- `tap-cdr` = default settings (`max_concurrency` 4); `c=N` sets `max_concurrency`",
        '- "median ratio": the median of the round-by-round ratios of the first',
        "  contender's time to this one's (above 1: this one is faster)",
        "",
    ]
    for scenario in SCENARIOS:
        if args.only and args.only not in scenario.name:
            continue
        if args.records:
            scenario.records = args.records
        print(f"running: {scenario.name}", file=sys.stderr, flush=True)
        contenders = run_scenario(scenario, scenario.pairs or args.pairs, args.baseline)
        block = summarise(scenario, contenders)
        print("\n".join(block), flush=True)
        lines += block
    output = Path(args.output)
    kept = output.read_text().partition(KEPT)[2] if output.exists() else ""
    output.write_text("\n".join(lines) + "\n" + (KEPT + kept if kept else ""))


if __name__ == "__main__":
    main()
