"""Pins the private singer-sdk members that tap_cdr/sdk_private.py relies on.

A renamed or re-signed member would otherwise fail silently (an override that no
longer overrides anything just stops running), so these fail loudly on an SDK
upgrade. A source scan keeps every other module on public SDK paths.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest
from singer_sdk import Stream, Tap
from singer_sdk.streams import RESTStream

from tap_cdr import sdk_private
from tap_cdr.tap import TapCDR

PACKAGE = Path(sdk_private.__file__).parent


@pytest.mark.parametrize(
    ("name", "parameters"),
    [(n, p) for n, p in sdk_private.PINNED_MEMBERS.items() if p is not None],
)
def test_the_sdk_still_has_the_private_methods_with_their_signatures(name, parameters):
    member = getattr(Stream, name, None)
    assert callable(member), f"singer_sdk.Stream.{name} is gone: update tap_cdr/sdk_private.py"
    assert tuple(inspect.signature(member).parameters) == parameters


def test_the_sdk_still_sets_the_stream_version_attribute():
    tap = TapCDR(
        config={"cdr_v3": {"base_url": "https://api.example.vn", "token": "t"}},
        parse_env_config=False,
    )
    assert hasattr(tap.streams["cdr_v3"], "_stream_version")


def test_the_sdk_still_calls_the_per_record_bookmark_hook():
    # The no-op override only matters if the SDK's record loop calls it.
    source = inspect.getsource(Stream._sync_records)
    assert "self._increment_stream_state(" in source
    source = inspect.getsource(Stream._write_record_message)
    assert "self._generate_record_messages(" in source


def test_the_fast_record_path_gives_the_sdks_messages():
    tap = TapCDR(
        config={"cdr_v3": {"base_url": "https://api.example.vn", "token": "t"}},
        parse_env_config=False,
    )
    stream = tap.streams["cdr_v3"]
    record = {"id": "a", "time_ended": "2024-03-10T12:00:00+00:00", "additional": {"k": 1}}
    ours = next(iter(stream._generate_record_messages(dict(record))))
    sdks = next(iter(Stream._generate_record_messages(stream, dict(record))))
    assert (ours.stream, ours.record, ours.version) == (sdks.stream, sdks.record, sdks.version)


class BareStream(RESTStream):
    name = "bare"
    url_base = "https://api.example.vn"
    path = "/x"
    schema = {"properties": {"id": {"type": "string"}}}


def test_no_other_module_touches_a_private_sdk_member():
    tap = TapCDR(
        config={"cdr_v3": {"base_url": "https://api.example.vn", "token": "t"}},
        parse_env_config=False,
    )
    # The SDK's classes, and instances whose attributes only the SDK sets.
    sdk_objects = [*inspect.getmro(RESTStream), *inspect.getmro(Tap), BareStream(tap), tap]
    private = {
        name
        for obj in sdk_objects
        for name in vars(obj)
        if name.startswith("_") and not name.startswith("__")
    }
    assert {"_tap", "_write_state_message", "_stream_version"} <= private
    pattern = re.compile(r"\.(" + "|".join(sorted(map(re.escape, private))) + r")\b")
    offenders = [
        f"{path.relative_to(PACKAGE.parent)}: {match.group(1)}"
        for path in PACKAGE.rglob("*.py")
        if path.name != "sdk_private.py" and "sandbox" not in path.parts
        for match in pattern.finditer(path.read_text())
    ]
    assert offenders == []
