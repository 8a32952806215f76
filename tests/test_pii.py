"""The README's PII recipe: SDK stream maps hash phone numbers and drop recordings."""

from __future__ import annotations

import json
import re
from pathlib import Path

from tap_cdr.sandbox import SandboxConfig, V3Dataset, start
from tap_cdr.sandbox.data import VccDataset
from tests.conftest import ANCHOR, run_tap

README = Path(__file__).resolve().parent.parent / "README.md"


def readme_recipe() -> dict:
    """The stream_maps JSON block under the README's PII heading, as users copy it."""
    text = README.read_text()
    section = text[text.index("## PII") :]
    block = re.search(r"```json\n(.*?)```", section, re.DOTALL)
    assert block, "the README's PII section has no json block"
    return json.loads(block.group(1))


def test_stream_maps_recipe_leaves_no_raw_number():
    server = start(
        SandboxConfig(
            v3=V3Dataset(records=80, anchor=ANCHOR, step_seconds=900),
            vcc=VccDataset(records=6, anchor=ANCHOR),
        )
    )
    try:
        vcc = server.config.vcc
        config = {
            "start_date": "2024-03-01T00:00:00Z",
            "end_date": "2024-03-11T00:00:00Z",
            "cdr_v3": {"base_url": server.url, "token": "sandbox-token"},
            "cdr_by_uuid": {
                "customer": "sandbox",
                "api_token": "sandbox-vcc-token",
                "base_url": server.url,
                "uuids": [
                    "{:04d}/{:02d}/{}".format(*vcc.filed_under(i), vcc.uuids[i]) for i in range(6)
                ],
            },
            **readme_recipe(),
        }
        result = run_tap(config)
    finally:
        server.shutdown()
        server.server_close()

    records = result.records
    assert len(records) == 86
    output = json.dumps(result.messages, ensure_ascii=False)
    raw_numbers = set()
    for i in range(80):
        raw = server.config.v3.record(i)
        raw_numbers |= {
            raw["from_number"],
            raw["to_number"],
            raw["additional"]["phone_number"],
            raw["additional"]["sdt"],
        }
    for i in range(6):
        raw = vcc.record(i)
        raw_numbers |= {raw["source"], raw["destination"]}
    leaked = sorted(n for n in raw_numbers if len(n) >= 6 and n in output)
    assert not leaked, leaked[:5]
    assert all(len(r["from_number"]) == 64 for r in records if r.get("from_number"))
    assert not any("recording_url" in r or "callfilename" in r for r in records)
    # The rest of a record is untouched.
    assert all(r.get("time_ended") for r in records)
