"""tap-cdr-intake, the Call Disposition webhook receiver, as a real process on real
stores: what it answers, what it stores, and that a 200 is never lost."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest

from tap_cdr.intake.events import Event, Rejected, parse_event
from tests.intake_support import (
    SECRET_KEY,
    Receiver,
    event,
    execute,
    get,
    kill,
    post,
    rows,
    status_of,
    uuid_n,
)

# Made with the openssl command line, independently of the code under test:
#   key=$(printf 'vcc-webhook-secret' | xxd -p); key=$(printf '%-64s' $key | tr ' ' 0)
#   printf '%s' "$BODY" | openssl enc -aes-256-ctr -K $key -iv $IV -base64 -A
# (the key zero-padded to 32 bytes, as PHP's openssl_decrypt does).
VECTOR_KEY = "vcc-webhook-secret"
VECTOR_IV = "0f1e2d3c4b5a69788796a5b4c3d2e1f0"
VECTOR_UUID = "85955f2e-049f-4a41-9145-f513abf50c7b"
VECTORS = {
    ("aes-256-ctr", VECTOR_IV): "by/XIx2Xvj8cydOlsFSkWc05A1YVCC3QFwYz7NLM1KWUx6M38Ob8l9ic8Utr9ql9f"
    "Ze+vx4WqbYdIRs2lrOyfi0TONUoAf3+sYNQMP+o8cBRnxdlRcJjW4AbqOzoMgZnj+FxEDAqEaqhn1PWEiIBv13NkTsH"
    "dnjreeeF",
    ("aes-256-ctr", None): "a+o5TCh8y78uNUd0B8HJywVqBL2Yk/gppb6A8nt++CN/yodoqv3WykDvcSUR7Kcph3+Z"
    "JtrVC4+tcOCVv+OzWRVWyqhiZAbyI2F1ybzxKJFaheeptmdJ0ATk31GpHUxiS6jcyowdeqN64Kl/b83fL+q07urt+O4N"
    "t+Fl",
    ("aes-256-cbc", VECTOR_IV): "dFb8P2hRSnr23GMkZaL8z/1XB5xt2qh5vXcCSKoXjjRgiY0GlgM805FmfD7PB4CM"
    "2mel1RV78bowLCEk/++RtJSNkFCu/ldycsTGgGOq/dOvkq3h7bDAoyBjA7MG3mVFY9YAPaRpE1yNJDvTPNi0O/Rhe30M"
    "q1w2ZxL7l9Qnw0o=",
    # aes-128: the key is cut to 16 bytes.
    ("aes-128-ctr", VECTOR_IV): "8QKCsmgAYJ0bwyOYTiiglS8M1BLEiGBvOegeKnHLoVVK5yzB85iroZqXuBIlHoyM"
    "6TJcafIr2wn66ZR4ZCGDT6T0Vg1Cq0SDctknmnl7r53YZZq5hyIHtJG0gjTWC19tw61NMbxqVcPdx0W2Db5oE+bQhn6C"
    "DGHA/EJn",
}


@pytest.mark.parametrize(("cipher", "iv"), list(VECTORS))
def test_decrypts_what_openssl_encrypted(cipher, iv):
    body = VECTORS[cipher, iv].encode()
    assert parse_event(body, cipher, VECTOR_KEY, iv) == Event(VECTOR_UUID, "2026/11", 3)
    # Wrapped in lines, or sent as a form field: the same event.
    wrapped = b"\n".join(body[i : i + 64] for i in range(0, len(body), 64))
    assert parse_event(wrapped, cipher, VECTOR_KEY, iv).uuid == VECTOR_UUID
    assert parse_event(b"data=" + body, cipher, VECTOR_KEY, iv).uuid == VECTOR_UUID


@pytest.mark.parametrize(
    ("cipher", "key", "iv", "reason"),
    [
        ("aes-256-ctr", "another-secret", VECTOR_IV, "not JSON once decrypted"),
        ("aes-256-ctr", VECTOR_KEY, "00" * 16, "not JSON once decrypted"),
        ("aes-256-cbc", VECTOR_KEY, VECTOR_IV, "cannot be decrypted: .* whole number of blocks"),
        ("aes-256-ctr", VECTOR_KEY, "zz", "not base64, or the iv not hex"),
    ],
)
def test_wrong_key_iv_or_cipher_is_rejected_with_the_reason(cipher, key, iv, reason):
    body = VECTORS["aes-256-ctr", VECTOR_IV].encode()
    with pytest.raises(Rejected, match=reason):
        parse_event(body, cipher, key, iv)


def test_cbc_with_the_wrong_key_is_bad_padding():
    body = VECTORS["aes-256-cbc", VECTOR_IV].encode()
    with pytest.raises(Rejected, match="bad padding"):
        parse_event(body, "aes-256-cbc", "another-secret", VECTOR_IV)


def test_event_fields_are_read_in_every_form():
    uuid = uuid_n(1)
    assert parse_event(json.dumps(event(uuid.upper())).encode(), None, "", None) == Event(
        uuid, "2024/03", 3
    )
    # A form post, and a projectid sent as a string; no call_start_time: no month.
    assert parse_event(f"uuid={uuid}&projectid=12".encode(), None, "", None) == Event(
        uuid, None, 12
    )
    assert parse_event(b"data=" + json.dumps(event(uuid)).encode(), None, "", None).uuid == uuid


def encrypted(body: dict, cipher: str = "aes-256-ctr") -> bytes:
    """A body encrypted with the openssl command line, as VCC Live would send it."""
    hex_key = SECRET_KEY.encode().hex().ljust(64, "0")[:64]
    return subprocess.run(
        ["openssl", "enc", f"-{cipher}", "-K", hex_key, "-iv", VECTOR_IV, "-base64", "-A"],
        input=json.dumps(body).encode(),
        capture_output=True,
        check=True,
    ).stdout


def test_bad_input_matrix(receiver, any_store):
    """Each bad request gets its status; only the good events are stored, and the
    rejected ones are recorded with their reason, size and keys, never their values."""
    intake = receiver(cipher="aes-256-ctr", max_body_bytes=4096)
    good = intake.post_url(iv=VECTOR_IV)
    cases = [
        ("no key", intake.post_url(key=None, iv=VECTOR_IV), encrypted(event(uuid_n(1))), 401),
        ("wrong key", intake.post_url(key="nope", iv=VECTOR_IV), encrypted(event(uuid_n(1))), 401),
        ("wrong iv", intake.post_url(iv="00" * 16), encrypted(event(uuid_n(1))), 400),
        ("wrong cipher", good, encrypted(event(uuid_n(1)), "aes-256-cbc"), 400),
        ("truncated base64", good, encrypted(event(uuid_n(1)))[:-3], 400),
        ("not JSON", good, encrypted({"x": 1})[:8] + b"!!", 400),
        ("no uuid", good, encrypted({"projectid": 1, "source": "3612345"}), 400),
        ("bad uuid", good, encrypted(event("not-a-uuid")), 400),
        ("oversized", good, b"A" * 5000, 413),
        ("the good one", good, encrypted(event(uuid_n(2))), 200),
    ]
    for name, url, body, expected in cases:
        assert post(url, body, "text/plain") == expected, name
    assert post(good, encrypted(event(uuid_n(3))), "image/png") == 415
    assert status_of(urllib.request.Request(good)) == 405
    assert rows(any_store, "select uuid, month, projectid, deliveries from announced_calls") == [
        (uuid_n(2), "2024/03", 3, 1)
    ]
    rejected = rows(any_store, "select reason, size, keys from rejected_events order by id")
    reasons = [reason for reason, _, _ in rejected]
    assert len(rejected) == 6
    assert reasons[:4] == [
        "not JSON once decrypted (wrong key, IV or cipher?)",  # wrong iv
        "not JSON once decrypted (wrong key, IV or cipher?)",  # wrong cipher
        "cannot be decrypted: the body is not base64, or the iv not hex",  # truncated
        "cannot be decrypted: the body is not base64, or the iv not hex",  # not JSON
    ]
    assert ("no uuid", json.dumps(["projectid", "source"])) in [(r, k) for r, _, k in rejected]
    assert all("3612345" not in keys and "not-a-uuid" not in keys for _, _, keys in rejected)
    log = intake.log.read_text()
    assert SECRET_KEY not in log
    assert "Kovács" not in log and "36201234567" not in log and "peter@" not in log
    assert "rejected: no uuid" in log and f"received uuid {uuid_n(2)}" in log


def test_same_event_twice_is_stored_once_with_its_deliveries(receiver, any_store):
    intake = receiver()
    for _ in range(3):
        assert post(intake.post_url(), event(uuid_n(7))) == 200
    assert post(intake.post_url(), event(uuid_n(8))) == 200
    assert rows(any_store, "select uuid, deliveries from announced_calls order by id") == [
        (uuid_n(7), 3),
        (uuid_n(8), 1),
    ]
    assert "duplicate uuid" in intake.log.read_text()


def poster(url: str, uuids: list[str], acked: list[str], stop: threading.Event) -> None:
    """Post each event until it gets a 200, as VCC Live retries: what got a 200 is
    recorded."""
    for uuid in uuids:
        while not stop.is_set():
            if post(url, event(uuid)) == 200:
                acked.append(uuid)
                break
            time.sleep(0.05)


def post_all_while(receiver: Receiver, count: int, disrupt) -> list[str]:
    """Post ``count`` events from 4 clients; ``disrupt(receiver)`` runs once a third
    are acknowledged. The uuids that got a 200."""
    uuids = [uuid_n(n) for n in range(count)]
    acked: list[str] = []
    stop = threading.Event()
    with ThreadPoolExecutor(4) as pool:
        futures = [
            pool.submit(poster, receiver.post_url(), uuids[i::4], acked, stop) for i in range(4)
        ]
        deadline = time.monotonic() + 300
        while len(acked) < count // 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        disrupt(receiver)
        try:
            for future in futures:
                future.result(timeout=max(1, deadline - time.monotonic()))
        finally:
            stop.set()
    return acked


def test_kill_9_loses_no_acknowledged_event(tmp_path, any_store):
    """kill -9 while 5,000 events are posted with retries: after a restart every event
    that got a 200 is in the store, once."""
    receiver = Receiver(any_store, tmp_path / "intake.log").start()

    def kill_and_restart(live: Receiver) -> None:
        kill(live)
        live.start()

    try:
        acked = post_all_while(receiver, 5000, kill_and_restart)
    finally:
        receiver.stop(signal.SIGKILL)
    assert len(acked) == 5000
    stored = rows(any_store, "select uuid from announced_calls")
    assert sorted(uuid for (uuid,) in stored) == sorted(acked)


def test_sigterm_finishes_the_requests_in_flight(tmp_path, any_store):
    """SIGTERM while events are posted: the receiver stops accepting, answers the
    requests it has, and exits 0; every 200 it gave is stored."""
    receiver = Receiver(any_store, tmp_path / "intake.log").start()
    codes: list[int] = []

    def stop_and_restart(live: Receiver) -> None:
        codes.append(live.stop(signal.SIGTERM))
        live.start()

    try:
        acked = post_all_while(receiver, 1000, stop_and_restart)
    finally:
        receiver.stop(signal.SIGKILL)
    # uvicorn exits by re-raising the signal once it has shut down cleanly.
    assert codes == [-signal.SIGTERM]
    assert len(acked) == 1000
    stored = rows(any_store, "select uuid from announced_calls")
    assert sorted(uuid for (uuid,) in stored) == sorted(acked)
    assert "Traceback" not in receiver.log.read_text()


def test_sigterm_answers_a_request_already_in_flight(tmp_path, any_store):
    """A request half sent when SIGTERM arrives still gets its 200, and is stored."""
    receiver = Receiver(any_store, tmp_path / "intake.log").start()
    body = json.dumps(event(uuid_n(42))).encode()
    head = (
        f"POST /vcc/call-disposition?secret-key={SECRET_KEY} HTTP/1.1\r\n"
        f"Host: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    try:
        with socket.create_connection(("127.0.0.1", receiver.port), timeout=30) as sock:
            sock.sendall(head + body[:10])
            time.sleep(0.5)
            assert receiver.process is not None
            receiver.process.send_signal(signal.SIGTERM)
            time.sleep(0.5)
            sock.sendall(body[10:])
            answer = sock.recv(4096)
        assert answer.startswith(b"HTTP/1.1 200"), answer
        assert receiver.process.wait(timeout=60) == -signal.SIGTERM
    finally:
        receiver.stop(signal.SIGKILL)
    assert rows(any_store, "select uuid from announced_calls") == [(uuid_n(42),)]


def test_store_down_answers_503_and_healthz_says_so(tmp_path, pg_store):
    receiver = Receiver(pg_store, tmp_path / "intake.log").start()
    try:
        schema = pg_store.rsplit("%3D", 1)[1]
        # The store goes away under the receiver: its table can no longer be written.
        execute(pg_store, f"ALTER TABLE {schema}.announced_calls RENAME TO gone")
        assert post(receiver.post_url(), event(uuid_n(1))) == 503
        status, body = get(receiver.url + "/healthz")
        assert status == 503
        assert 'relation \\"announced_calls\\" does not exist' in body
        execute(pg_store, f"ALTER TABLE {schema}.gone RENAME TO announced_calls")
        assert post(receiver.post_url(), event(uuid_n(1))) == 200
    finally:
        receiver.stop(signal.SIGKILL)
    assert "store unavailable" in receiver.log.read_text()
