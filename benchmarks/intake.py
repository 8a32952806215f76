"""`tap-cdr-intake` on its SQLite store: webhooks per second and latency to a 200; and
the tap reading a backlog of announced calls from the store.

Receiver (the default): starts the receiver as a process (a store in a temporary
directory), and with ``--baseline PATH`` (a checkout of an earlier build, run with this
venv) a second one of that build; then, for each round and each receiver in turn (the
order alternating): an open-loop run at ``--rate`` events per second (each event a new
connection, as a webhook sender makes them; latency measured from the send to the 200),
and a closed-loop run with ``--senders`` senders posting as fast as they get answers
(the sustained maximum). The sender is one asyncio loop with every request built before
the clock starts, so that it takes little of the CPU the receiver shares with it.
Prints each round, then the medians and the spread, and writes them into
benchmarks/RESULTS.md (its intake section), with the machine's load.

Backlog (``--backlog N``): a store holding N announced calls that the tap has not read,
the sandbox serving the same N calls in its CDR log; after a warm-up, times runs of the
tap from an empty state (the sweep finds every call; the store is read after it) and
reads their peak RSS, alternating with ``--baseline`` if given.

    python benchmarks/intake.py [--rounds 5] [--seconds 10] [--rate 500] [--baseline PATH]
    python benchmarks/intake.py --backlog 1000000 [--rounds 1] [--baseline PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import tempfile
import time
import uuid as uuidlib
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

from bench import ANCHOR, PYTHON, build
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
SECRET = "bench-secret-key-0123456789"
VCC_STEP = 30  # seconds between the sandbox's calls, as in bench.py's sweep


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def load() -> str:
    """The machine's load averages (1, 5, 15 min), as uptime prints them."""
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def busy_seconds(pid: int | None = None) -> float:
    """CPU seconds used so far: by the whole machine (all cores), or by one process."""
    ticks = os.sysconf("SC_CLK_TCK")
    if pid is None:
        with Path("/proc/stat").open() as stat:
            user, nice, system, _idle, _iowait, irq, softirq, steal = map(
                int, stat.readline().split()[1:9]
            )
        return (user + nice + system + irq + softirq + steal) / ticks
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / ticks


def body_for(cipher: str | None) -> tuple[bytes, str]:
    """A Call Disposition event (about 700 bytes, as VCC Live's carry) and its query."""
    event = {
        "uuid": str(uuidlib.uuid4()),
        "projectid": 3,
        "projectName": "Outbound sales",
        "userid": 17,
        "username": "agent17",
        "agentName": "Kovács Éva",
        "teamids": [1, 2],
        "source": "36201234567",
        "destination": "36309876543",
        "direction": "out",
        "create_time": "2024-03-10 12:01:05",
        "timestamp": "2024-03-10T12:01:05+01:00",
        "call_start_time": "2024-03-10 11:58:00",
        "disposition": {"id": 4, "name": "Sikeres"},
        "client_data": {"name": "Nagy Péter", "email": "peter@example.hu", "note": "x" * 200},
    }
    data = json.dumps(event, ensure_ascii=False).encode()
    query = f"secret-key={SECRET}"
    if cipher:
        iv = os.urandom(16)
        key = SECRET.encode().ljust(32, b"\0")[:32]
        encryptor = Cipher(algorithms.AES(key), modes.CTR(iv)).encryptor()
        data = base64.b64encode(encryptor.update(data) + encryptor.finalize())
        query += f"&iv={iv.hex()}"
    return data, query


def request_bytes(port: int, cipher: str | None) -> bytes:
    data, query = body_for(cipher)
    head = (
        f"POST /vcc/call-disposition?{query} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode() + data


async def post_once(port: int, request: bytes) -> tuple[int, float]:
    """One event on a new connection, as a webhook sender makes it: the status, and the
    seconds from connecting to the answer."""
    started = time.perf_counter()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        status_line = await reader.readline()
        took = time.perf_counter() - started
        await reader.read()  # the rest, until the server closes
    finally:
        writer.close()
    return int(status_line.split()[1]), took


async def open_loop(port: int, rate: float, seconds: float, cipher: str | None) -> dict[str, float]:
    """Events sent at ``rate`` per second, each at its slot whatever the others do."""
    total = int(rate * seconds)
    requests = [request_bytes(port, cipher) for _ in range(total)]  # built before the clock
    loop = asyncio.get_running_loop()
    start = loop.time() + 0.2

    async def at_slot(n: int) -> tuple[int, float]:
        await asyncio.sleep(max(0.0, start + n / rate - loop.time()))
        return await post_once(port, requests[n])

    began = time.perf_counter()
    results = await asyncio.gather(*(at_slot(n) for n in range(total)))
    elapsed = time.perf_counter() - began - 0.2
    latencies = sorted(took for _, took in results)
    return {
        "rate": total / elapsed,
        "p50_ms": latencies[len(latencies) // 2] * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99)] * 1000,
        "failures": sum(status != 200 for status, _ in results),
    }


async def closed_loop(port: int, senders: int, seconds: float, cipher: str | None) -> float:
    """Events per second that ``senders`` senders get answered, each as fast as it can."""
    requests = [request_bytes(port, cipher) for _ in range(int(seconds * 3000))]
    stop = time.perf_counter() + seconds
    done = 0

    async def sender(index: int) -> None:
        nonlocal done
        for n in range(index, len(requests), senders):
            if time.perf_counter() >= stop:
                return
            status, _ = await post_once(port, requests[n])
            done += status == 200

    started = time.perf_counter()
    await asyncio.gather(*(sender(i) for i in range(senders)))
    return done / (time.perf_counter() - started)


@dataclass
class Receiver:
    """A receiver of one build, with its own store, and what its rounds measured."""

    label: str
    checkout: Path | None  # None: this build
    tmp: Path
    cipher: str | None
    port: int = field(default_factory=free_port)
    opened: list[dict[str, float]] = field(default_factory=list)
    closed: list[float] = field(default_factory=list)
    reruns: int = 0  # rounds measured again, other work having disturbed them
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {**os.environ, "TAP_CDR_INTAKE_SECRET_KEY": SECRET}
        if self.cipher:
            env["TAP_CDR_INTAKE_CIPHER"] = self.cipher
        if self.checkout is not None:
            env["PYTHONPATH"] = str(self.checkout)
        store = f"sqlite:///{self.tmp}/{self.port}.db"
        code = "from tap_cdr.intake import main; main()"
        log = Path(self.tmp, f"{self.port}.log").open("wb")  # noqa: SIM115 (the process's)
        self.process = subprocess.Popen(
            [PYTHON, "-c", code, "--store", store, "--port", str(self.port)],
            stdout=log,
            stderr=log,
            env=env,
            cwd=self.tmp,  # not a checkout: -c puts the working directory first on sys.path
        )
        for _ in range(100):
            if self.answers():
                return
            time.sleep(0.1)
        raise SystemExit(f"{self.label} did not start: {Path(log.name).read_text()[-2000:]}")

    def answers(self) -> bool:
        try:
            asyncio.run(post_once(self.port, request_bytes(self.port, self.cipher)))
        except OSError:
            return False
        return True

    def round(self, args: argparse.Namespace) -> None:
        """One round; again (up to 3 times, after a pause) while other work took more
        than ``--disturbed`` of a core during its open-loop run."""
        for attempt in range(4):
            assert self.process is not None
            ours = busy_seconds(self.process.pid) + sum(os.times()[:2])
            machine, started = busy_seconds(), time.monotonic()
            opened = asyncio.run(open_loop(self.port, args.rate, args.seconds, args.cipher))
            ours = busy_seconds(self.process.pid) + sum(os.times()[:2]) - ours
            others = (busy_seconds() - machine - ours) / (time.monotonic() - started)
            closed = asyncio.run(closed_loop(self.port, args.senders, args.seconds, args.cipher))
            print(
                f"{self.label} round {len(self.closed) + 1}: offered {args.rate:.0f}/s -> "
                f"{opened['rate']:.0f}/s, p50 {opened['p50_ms']:.1f} ms, "
                f"p99 {opened['p99_ms']:.1f} ms, {opened['failures']:.0f} not 200; "
                f"{args.senders} senders flat out: {closed:.0f}/s; other work used "
                f"{others:.2f} cores (load {load()})",
                flush=True,
            )
            if others <= args.disturbed or attempt == 3:
                break
            self.reruns += 1
            time.sleep(20)
        self.opened.append({**opened, "others": others})
        self.closed.append(closed)

    def stop(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=60)

    def row(self, args: argparse.Namespace, when: str) -> str:
        def spread(values: list[float], digits: int) -> str:
            return (
                f"{statistics.median(values):.{digits}f} "
                f"({min(values):.{digits}f}-{max(values):.{digits}f})"
            )

        p99s = [r["p99_ms"] for r in self.opened]
        others = ", ".join(f"{r['others']:.2f}" for r in self.opened)
        return (
            f"| {self.label} | {args.cipher or 'none'} | {args.rate:.0f} "
            f"| {statistics.median(r['rate'] for r in self.opened):.0f} "
            f"| {spread([r['p50_ms'] for r in self.opened], 1)} | {spread(p99s, 1)} "
            f"| {', '.join(f'{p:.0f}' for p in p99s)} "
            f"| {others} ({self.reruns} re-run) "
            f"| {sum(r['failures'] for r in self.opened):.0f} "
            f"| {spread(self.closed, 0)} | {when} |"
        )


def receivers(args: argparse.Namespace) -> None:
    when = f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, load {load()}"
    with tempfile.TemporaryDirectory() as tmp:
        contenders = [Receiver(build(), None, Path(tmp), args.cipher)]
        if args.baseline:
            contenders.append(Receiver(build(args.baseline), args.baseline, Path(tmp), args.cipher))
        try:
            for contender in contenders:
                check_build(contender.checkout, contender.tmp)
                contender.start()
            for number in range(args.rounds):
                # A B, B A, ...: neither build always runs on the warmer machine.
                for contender in contenders[:: 1 if number % 2 == 0 else -1]:
                    contender.round(args)
        finally:
            for contender in contenders:
                contender.stop()
    when += f" to {load()}; {args.rounds} x {args.seconds:.0f} s"
    rows = [contender.row(args, when) for contender in contenders]
    print(RECEIVER_HEADER + "\n" + "\n".join(rows))
    record("intake", RECEIVER_HEADER, rows)


RECEIVER_HEADER = (
    "| build | cipher | offered /s | sustained /s | p50 ms, median (min-max) "
    "| p99 ms, median (min-max) | p99 ms of each round "
    "| cores other work used in each round | not 200 "
    "| flat out /s, median (min-max) | run (load: 1, 5, 15 min averages) |\n"
    "|---|---|---:|---:|---:|---:|---|---|---:|---:|---|"
)


def check_build(checkout: Path | None, where: Path) -> None:
    """Refuse to measure a build other than the one named: a baseline's PYTHONPATH comes
    after the working directory on sys.path."""
    env = {**os.environ, **({"PYTHONPATH": str(checkout)} if checkout else {})}
    found = subprocess.run(
        [PYTHON, "-c", "import tap_cdr; print(tap_cdr.__file__)"],
        env=env, cwd=where, capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    expected = (checkout or Path(__file__).resolve().parent.parent).resolve()
    if not Path(found).resolve().is_relative_to(expected):
        raise SystemExit(f"the build measured would be {found}, not one of {expected}")


def make_backlog(store: str, calls: int) -> None:
    """A store holding the sandbox's ``calls`` calls, announced an hour ago, unread."""
    from sqlalchemy import insert  # noqa: PLC0415 (the intake extra)

    from tap_cdr.intake.store import announced_calls, open_store  # noqa: PLC0415
    from tap_cdr.sandbox.data import VccDataset  # noqa: PLC0415

    uuids = VccDataset(records=calls, anchor=ANCHOR, step_seconds=VCC_STEP).uuids
    received = datetime.now(timezone.utc) - timedelta(hours=1)
    engine = open_store(store)
    with engine.begin() as conn:
        for at in range(0, calls, 50_000):
            conn.execute(
                insert(announced_calls),
                [
                    {"uuid": uuid, "received_at": received, "deliveries": 1}
                    for uuid in uuids[at : at + 50_000]
                ],
            )
    engine.dispose()


def backlog(args: argparse.Namespace) -> None:
    calls = args.backlog
    when = f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, load {load()}"
    with tempfile.TemporaryDirectory() as tmp:
        store = f"sqlite:///{tmp}/intake.db"
        started = time.perf_counter()
        # In a process of its own: the peak RSS that wait4 reports for a child counts the
        # memory of the parent it was forked from, and the million uuids would be there.
        code = f"from intake import make_backlog; make_backlog({store!r}, {calls})"
        subprocess.run([PYTHON, "-c", code], cwd=Path(__file__).parent, check=True)
        print(f"store of {calls:,} calls made in {time.perf_counter() - started:.0f} s")
        sandbox = subprocess.Popen(
            [PYTHON, "-m", "tap_cdr.sandbox", "--port", "0", "--vcc-records", str(calls),
             "--vcc-step-seconds", str(VCC_STEP), "--anchor", ANCHOR.isoformat()],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        assert sandbox.stdout is not None
        url = sandbox.stdout.readline().strip()
        first = ANCHOR - timedelta(seconds=VCC_STEP * calls)
        config = Path(tmp, "config.json")
        config.write_text(
            json.dumps(
                {
                    "start_date": (first - timedelta(days=1)).isoformat(),
                    "end_date": (ANCHOR + timedelta(hours=1)).isoformat(),
                    "cdr_by_uuid": {
                        "customer": "sandbox",
                        "api_token": "sandbox-vcc-token",
                        "base_url": url,
                        "intake_store": store,
                        "first_attempt_delay_minutes": 0,
                    },
                }
            )
        )
        contenders = [(build(), None)] + (
            [(build(args.baseline), args.baseline)] * bool(args.baseline)
        )
        runs: dict[str, list[tuple[float, float]]] = {label: [] for label, _ in contenders}
        for _, checkout in contenders:
            check_build(checkout, Path(tmp))
        try:
            run_tap(config, None, Path(tmp))  # a warm-up: fills the sandbox's cache
            for number in range(args.rounds):
                for label, checkout in contenders[:: 1 if number % 2 == 0 else -1]:
                    seconds, rss, said = run_tap(config, checkout, Path(tmp))
                    runs[label].append((seconds, rss))
                    print(f"{label}: {seconds:.1f} s, peak RSS {rss:.0f} MB; {said} "
                          f"(load {load()})", flush=True)  # fmt: skip
        finally:
            sandbox.terminate()
            sandbox.wait()
    when += f" to {load()}"
    rows = [
        f"| {label} | {calls:,} | {statistics.median(s for s, _ in runs[label]):.1f} "
        f"({min(s for s, _ in runs[label]):.1f}-{max(s for s, _ in runs[label]):.1f}) "
        f"| {max(r for _, r in runs[label]):.0f} | {when}; {len(runs[label])} run(s) |"
        for label, _ in contenders
    ]
    print(BACKLOG_HEADER + "\n" + "\n".join(rows))
    record("backlog", BACKLOG_HEADER, rows)


BACKLOG_HEADER = (
    "| build | announced calls waiting | seconds, median (min-max) | peak RSS MB "
    "| run (load: 1, 5, 15 min averages) |\n|---|---:|---:|---:|---|"
)


def run_tap(config: Path, checkout: Path | None, tmp: Path) -> tuple[float, float, str]:
    """One run of the tap from an empty state: seconds, peak RSS in MB, and its intake
    and summary lines."""
    env = {**os.environ, **({"PYTHONPATH": str(checkout)} if checkout else {})}
    log = tmp / "tap.log"
    with log.open("wb") as errors:
        started = time.perf_counter()
        process = subprocess.Popen(
            [PYTHON, "-m", "tap_cdr.tap", "--config", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=errors,
            env=env,
            cwd=tmp,  # not a checkout: -m puts the working directory first on sys.path
        )
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"the tap failed:\n{log.read_text()[-3000:]}")
    said = re.findall(
        r"cdr_by_uuid: (the intake store announced \d+ calls|fetched .*)", log.read_text()
    )
    return seconds, usage.ru_maxrss / 1024, "; ".join(said)


def record(table: str, header: str, rows: list[str]) -> None:
    """Put the rows into RESULTS.md's table (``intake`` or ``backlog``), replacing those
    of the same build and cipher or size."""
    begin, end = f"<!-- {table}:begin -->", f"<!-- {table}:end -->"
    text = RESULTS.read_text() if RESULTS.exists() else ""
    if begin not in text:
        text += f"\n{begin}\n{end}\n"
    head, _, rest = text.partition(begin)
    old, _, tail = rest.partition(end)

    def key(row: str) -> list[str]:
        return row.split("|")[1:3]

    replaced = {tuple(key(row)) for row in rows}
    columns = header.splitlines()[0].count("|")
    kept = [
        line
        for line in old.splitlines()
        if line.startswith("| ")
        and line.count("|") == columns  # not a row of an older layout
        and not line.startswith("| build")
        and tuple(key(line)) not in replaced
    ]
    RESULTS.write_text(head + begin + f"\n{header}\n" + "\n".join(kept + rows) + "\n" + end + tail)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--rate", type=float, default=500)
    parser.add_argument("--senders", type=int, default=8)
    parser.add_argument("--cipher", choices=["aes-256-ctr"], default=None)
    parser.add_argument(
        "--baseline", type=Path, help="a checkout of an earlier build, measured alongside"
    )
    parser.add_argument(
        "--disturbed",
        type=float,
        default=0.25,
        help="measure a round again when other work took more than this many cores",
    )
    parser.add_argument("--backlog", type=int, help="time the tap on a backlog of this many")
    args = parser.parse_args()
    if args.backlog:
        backlog(args)
    else:
        receivers(args)


if __name__ == "__main__":
    main()
