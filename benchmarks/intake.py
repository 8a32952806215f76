"""Webhooks per second and latency to a 200 of `tap-cdr-intake` on its SQLite store.

Starts the receiver as a process (a store in a temporary directory), then, for each
round: an open-loop run at ``--rate`` events per second (each event a new connection,
as a webhook sender makes them; latency measured from the send to the 200), and a
closed-loop run with ``--senders`` senders posting as fast as they get answers (the
sustained maximum). The sender is one asyncio loop with every request built before the
clock starts, so that it takes little of the CPU the receiver shares with it. Prints
medians over the rounds, and writes them into benchmarks/RESULTS.md (its intake
section, by cipher).

    python benchmarks/intake.py [--rounds 3] [--seconds 20] [--rate 500] [--cipher aes-256-ctr]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid as uuidlib
from datetime import datetime, timezone
from pathlib import Path

from bench import build
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

BIN = Path(sys.executable).with_name("tap-cdr-intake")
RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
SECRET = "bench-secret-key"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--rate", type=float, default=500)
    parser.add_argument("--senders", type=int, default=8)
    parser.add_argument("--cipher", choices=["aes-256-ctr"], default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        env = {**os.environ, "TAP_CDR_INTAKE_SECRET_KEY": SECRET}
        if args.cipher:
            env["TAP_CDR_INTAKE_CIPHER"] = args.cipher
        store = f"sqlite:///{tmp}/intake.db"
        log = Path(tmp, "intake.log").open("wb")  # noqa: SIM115 (closed after the process)
        receiver = subprocess.Popen(
            [str(BIN), "--store", store, "--port", str(port)], stdout=log, stderr=log, env=env
        )
        try:
            for _ in range(100):
                try:
                    asyncio.run(post_once(port, request_bytes(port, args.cipher)))
                    break
                except OSError:
                    time.sleep(0.1)
            open_results, closed_results = [], []
            for round_number in range(args.rounds):
                opened = asyncio.run(open_loop(port, args.rate, args.seconds, args.cipher))
                closed = asyncio.run(closed_loop(port, args.senders, args.seconds, args.cipher))
                open_results.append(opened)
                closed_results.append(closed)
                print(
                    f"round {round_number + 1}: offered {args.rate:.0f}/s -> "
                    f"{opened['rate']:.0f}/s, p50 {opened['p50_ms']:.1f} ms, "
                    f"p99 {opened['p99_ms']:.1f} ms, "
                    f"{opened['failures']:.0f} not 200; {args.senders} senders flat out: "
                    f"{closed:.0f}/s",
                    flush=True,
                )
        finally:
            receiver.send_signal(signal.SIGTERM)
            receiver.wait(timeout=60)
            log.close()
    row = (
        f"| {args.cipher or 'none'} | {args.rate:.0f} "
        f"| {statistics.median(r['rate'] for r in open_results):.0f} "
        f"| {statistics.median(r['p50_ms'] for r in open_results):.1f} "
        f"| {statistics.median(r['p99_ms'] for r in open_results):.1f} "
        f"| {sum(r['failures'] for r in open_results):.0f} "
        f"| {statistics.median(closed_results):.0f} "
        f"| {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {build()}, median of "
        f"{args.rounds} x {args.seconds:.0f} s |"
    )
    print(HEADER + "\n" + row)
    record(row, args.cipher or "none")


HEADER = (
    "| cipher | offered /s | sustained /s | p50 ms | p99 ms | not 200 | flat out /s | run |\n"
    "|---|---:|---:|---:|---:|---:|---:|---|"
)


def record(row: str, cipher: str) -> None:
    """Put the row into RESULTS.md's intake table, replacing the same cipher's."""
    begin, end = "<!-- intake:begin -->", "<!-- intake:end -->"
    text = RESULTS.read_text() if RESULTS.exists() else ""
    if begin not in text:
        text += f"\n## tap-cdr-intake (benchmarks/intake.py)\n\n{begin}\n{end}\n"
    head, _, rest = text.partition(begin)
    table, _, tail = rest.partition(end)
    rows = [line for line in table.splitlines() if line.startswith("| ") and "cipher" not in line]
    rows = [line for line in rows if not line.startswith(f"| {cipher} |")] + [row]
    block = f"\n{HEADER}\n" + "\n".join(sorted(rows)) + "\n"
    RESULTS.write_text(head + begin + block + end + tail)


if __name__ == "__main__":
    main()
