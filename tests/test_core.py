"""The singer-sdk standard tap tests, run against the sandbox API.

rfc3339-validator is installed with the test extras, so the suite really checks the
`date-time` format of every timestamp.
"""

from __future__ import annotations

from singer_sdk.testing import get_tap_test_class

from tap_cdr.sandbox import SandboxConfig, V3Dataset, start
from tap_cdr.sandbox.data import VccDataset
from tap_cdr.tap import TapCDR
from tests.conftest import ANCHOR

SANDBOX = start(
    SandboxConfig(
        v3=V3Dataset(records=300, anchor=ANCHOR, step_seconds=600),
        vcc=VccDataset(records=12, anchor=ANCHOR),
    )
)
VCC = SANDBOX.config.vcc

CONFIG = {
    "start_date": "2024-03-01T00:00:00Z",
    "end_date": "2024-03-11T00:00:00Z",
    "cdr_v3": {"base_url": SANDBOX.url, "token": "sandbox-token", "page_size": 100},
    "cdr_by_uuid": {
        "customer": "sandbox",
        "api_token": "sandbox-vcc-token",
        "base_url": SANDBOX.url,
        "uuids": [
            f"{y:04d}/{m:02d}/{VCC.uuids[i]}" for i in range(12) for y, m in [VCC.filed_under(i)]
        ],
    },
}

TestTapCDR = get_tap_test_class(tap_class=TapCDR, config=CONFIG)
