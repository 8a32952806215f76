"""The sandbox's Call Disposition webhooks: VCC Live pushing its calls to a receiver.

Like VCC Live, the poster sends each call's event once the call is dispositioned,
retries a delivery that gets no 2xx (with a growing pause, up to ``max_tries``),
sends some events twice, and sends none for some calls (a disposition set by a
supervisor fires no webhook: only the sweep finds those). The body is the event's
JSON, or, with a cipher, base64 of its ciphertext with a random IV in the ``iv``
parameter, as PHP's ``openssl_encrypt`` makes it (written apart from the intake's
decryption, so that each checks the other).
"""

from __future__ import annotations

import base64
import json
import os
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode, urlsplit
from zoneinfo import ZoneInfo

if TYPE_CHECKING:
    from tap_cdr.sandbox.data import VccDataset

if sys.version_info >= (3, 12):
    from typing import override
else:
    from typing_extensions import override

SECRET_KEY_ENV = "TAP_CDR_SANDBOX_WEBHOOK_SECRET_KEY"
KEY_BYTES = {"aes-128": 16, "aes-192": 24, "aes-256": 32}


@dataclass
class WebhookConfig:
    url: str
    secret_key: str
    cipher: str | None = None
    rate: float = 50.0  # events per second
    skip_every: int = 5  # every Nth call gets no webhook (0: none skipped)
    duplicate_every: int = 4  # every Nth event is delivered twice (0: none)
    max_tries: int = 10
    first_pause: float = 0.2  # seconds before the first retry, doubled up to 10 s


@dataclass
class WebhookStats:
    sent: list[str] = field(default_factory=list)  # uuids delivered (2xx), in order
    skipped: list[str] = field(default_factory=list)  # uuids that get no webhook
    duplicates: int = 0
    retries: int = 0
    failed: list[str] = field(default_factory=list)  # out of tries
    done: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "webhooks_delivered": len(self.sent),
            "webhooks_duplicated": self.duplicates,
            "webhooks_retried": self.retries,
            "webhooks_failed": self.failed,
            "webhooks_skipped": self.skipped,
            "webhooks_done": self.done,
        }


def webhook_config(
    url: str | None,
    cipher: str | None,
    rate: float,
    skip_every: int,
    duplicate_every: int,
) -> WebhookConfig | None:
    """The poster's settings from the command line and the environment."""
    if not url:
        return None
    key = os.environ.get(SECRET_KEY_ENV, "")
    if not key:
        raise SystemExit(f"tap-cdr-sandbox: --vcc-webhook-url needs {SECRET_KEY_ENV} set")
    if urlsplit(url).scheme not in ("http", "https"):
        raise SystemExit(f"tap-cdr-sandbox: --vcc-webhook-url {url!r} is not an http(s) URL")
    if cipher and cipher.rpartition("-")[0] not in KEY_BYTES:
        raise SystemExit(f"tap-cdr-sandbox: --vcc-webhook-cipher {cipher!r} is not aes-*-ctr/cbc")
    return WebhookConfig(url, key, cipher, rate, skip_every, duplicate_every)


def event_of(data: VccDataset, i: int) -> dict[str, Any]:
    """The Call Disposition event of call ``i``: the fields VCC Live documents,
    personal data included (numbers, names, client data)."""
    record = data.record(i)
    zone = ZoneInfo(data.zone)
    dispositioned = datetime.fromtimestamp(data.ended_epoch(i) + 20, zone)
    return {
        "uuid": record["uuid"],
        "numberid": record["numberid"],
        "projectid": record["projectid"],
        "projectName": f"Project {record['projectid']}",
        "userid": record["userid"],
        "username": f"agent{record['userid']}",
        "agentName": "Kovács Éva",
        "teamids": [1, 2],
        "source": record["source"],
        "destination": record["destination"],
        "direction": "out" if record["direction"] == "outbound" else "in",
        "create_time": dispositioned.strftime("%Y-%m-%d %H:%M:%S"),
        "timestamp": dispositioned.isoformat(),
        "call_start_time": record["start_ts"],
        "first_outbound_call_attempt": record["start_ts"],
        "sum_attempted_calls": 1,
        "next_calldate": None,
        "closed": 1,
        "disposition": {"id": record["dispositionid"], "name": "Sikeres"},
        "client_data": {"name": "Nagy Péter", "email": "peter@example.hu", "phone": "36301234567"},
        "agent_description": "visszahívást kért",
    }


def encrypt(plaintext: bytes, cipher: str, secret_key: str) -> tuple[bytes, str]:
    """``openssl_encrypt($plaintext, $cipher, $secretKey, 0, $iv)`` with a random IV:
    the base64 body and the IV in hex."""
    from cryptography.hazmat.primitives import padding  # noqa: PLC0415 (intake extra)
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes  # noqa: PLC0415

    aes, _, mode = cipher.lower().rpartition("-")
    size = KEY_BYTES[aes]
    key = secret_key.encode()[:size] + b"\0" * max(0, size - len(secret_key.encode()))
    iv = os.urandom(16)
    if mode == "cbc":
        padder = padding.PKCS7(128).padder()
        plaintext = padder.update(plaintext) + padder.finalize()
        encryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    else:
        encryptor = Cipher(algorithms.AES(key), modes.CTR(iv)).encryptor()
    ciphertext = encryptor.update(plaintext) + encryptor.finalize()
    return base64.b64encode(ciphertext), iv.hex()


class WebhookPoster(threading.Thread):
    """Posts the events of the dataset's calls, oldest first, at ``rate`` per second."""

    def __init__(self, data: VccDataset, config: WebhookConfig) -> None:
        super().__init__(daemon=True, name="sandbox-webhooks")
        self.data = data
        self.config = config
        self.stats = WebhookStats()
        self.stopping = threading.Event()

    def plan(self) -> list[tuple[int, int]]:
        """(call, deliveries) in the order posted; skipped calls are left out."""
        config, planned = self.config, []
        for i in sorted(range(self.data.records), key=self.data.ended_epoch):
            if config.skip_every and i % config.skip_every == config.skip_every - 1:
                self.stats.skipped.append(self.data.uuids[i])
                continue
            twice = config.duplicate_every and i % config.duplicate_every == 0
            planned.append((i, 2 if twice else 1))
        return planned

    @override
    def run(self) -> None:
        pause = 1.0 / self.config.rate if self.config.rate > 0 else 0.0
        next_at = time.monotonic()
        for i, deliveries in self.plan():
            delivered = False
            for delivery in range(deliveries):
                if self.stopping.is_set():
                    return
                next_at += pause
                delivered = self.deliver(event_of(self.data, i)) or delivered
                self.stats.duplicates += delivery
                time.sleep(max(0.0, next_at - time.monotonic()))
            if delivered:
                self.stats.sent.append(self.data.uuids[i])
        self.stats.done = True

    def deliver(self, event: dict[str, Any]) -> bool:
        """One delivery, retried until a 2xx or out of tries."""
        config = self.config
        body = json.dumps(event, ensure_ascii=False).encode()
        params = {"secret-key": config.secret_key}
        content_type = "application/json"
        if config.cipher:
            body, params["iv"] = encrypt(body, config.cipher, config.secret_key)
            content_type = "text/plain"
        separator = "&" if urlsplit(config.url).query else "?"
        request = urllib.request.Request(  # noqa: S310 (the URL is checked: http or https)
            config.url + separator + urlencode(params),
            data=body,
            headers={"Content-Type": content_type},
            method="POST",
        )
        wait = config.first_pause
        for attempt in range(config.max_tries):
            if attempt:
                self.stats.retries += 1
                if self.stopping.wait(wait):
                    return False
                wait = min(wait * 2, 10.0)
            try:
                with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
                    if 200 <= response.status < 300:
                        return True
            except (urllib.error.URLError, OSError):
                continue  # HTTPError (non-2xx), refused, reset or timed out: again
        self.stats.failed.append(str(event["uuid"]))
        return False
