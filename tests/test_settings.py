"""Config validation: every error names the setting and says what is wrong."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from singer_sdk.exceptions import ConfigValidationError

from tap_cdr.tap import TapCDR

GOOD = {"cdr_v3": {"base_url": "https://api.example.vn", "token": "s3cret-token"}}


def errors_for(config: dict) -> list[str]:
    with pytest.raises(ConfigValidationError) as info:
        TapCDR(config=config, parse_env_config=False)
    return info.value.errors


def test_a_good_config_is_accepted():
    tap = TapCDR(config=GOOD, parse_env_config=False)
    assert [s.name for s in tap.streams.values()] == ["cdr_v3"]


def test_neither_credential():
    (error,) = errors_for({"cdr_v3": {"base_url": "https://api.example.vn"}})
    assert "exactly one credential" in error and "neither" in error


def test_both_credentials():
    config = {"cdr_v3": {"base_url": "https://a.vn", "token": "t1", "api_key": "k1"}}
    (error,) = errors_for(config)
    assert "both are set" in error and "t1" not in error and "k1" not in error


@pytest.mark.parametrize("url", ["api.example.vn", "ftp://api.example.vn", "https://", "not a url"])
def test_base_url_must_be_a_url(url):
    (error,) = errors_for({"cdr_v3": {"base_url": url, "token": "t"}})
    assert "cdr_v3.base_url" in error and "http(s) URL" in error


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://api.example.vn/?token=s3cret-1", "https://api.example.vn/?..."),
        ("https://api.example.vn/#s3cret-1", "https://api.example.vn/?..."),
        ("ftp://user:s3cret-1@api.example.vn/x", "ftp://api.example.vn/x"),
    ],
)
def test_a_bad_base_url_is_named_without_what_may_be_a_secret(url, shown):
    (error,) = errors_for({"cdr_v3": {"base_url": url, "token": "t"}})
    assert "cdr_v3.base_url" in error and shown in error and "s3cret" not in error


def test_plain_http_is_refused_unless_loopback_or_allowed():
    (error,) = errors_for({"cdr_v3": {"base_url": "http://api.example.vn", "token": "t"}})
    assert "allow_insecure_http" in error
    TapCDR(
        config={"cdr_v3": {"base_url": "http://127.0.0.1:1", "token": "t"}}, parse_env_config=False
    )
    TapCDR(
        config={"allow_insecure_http": True, "cdr_v3": {"base_url": "http://a.vn", "token": "t"}},
        parse_env_config=False,
    )


def test_unknown_timezone():
    config = {"cdr_v3": {**GOOD["cdr_v3"], "timezone": "Asia/Saigon City"}}
    (error,) = errors_for(config)
    assert "cdr_v3.timezone" in error and "Asia/Saigon City" in error


def test_bad_numbers_and_dates():
    config = {
        "start_date": "last tuesday",
        "lookback_minutes": -5,
        "cdr_v3": {**GOOD["cdr_v3"], "page_size": 0, "window_hours": 0},
    }
    errors = " | ".join(errors_for(config))
    for name in ("start_date", "lookback_minutes", "cdr_v3.page_size", "cdr_v3.window_hours"):
        assert name in errors


def test_no_stream_configured():
    (error,) = errors_for({})
    assert "cdr_v3" in error


def test_cli_prints_the_errors_and_exits_1(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"cdr_v3": {"base_url": "nope", "api_key": "k-SECRET-1"}}))
    proc = subprocess.run(
        [sys.executable, "-m", "tap_cdr.tap", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    assert "cdr_v3.base_url" in proc.stderr
    assert "k-SECRET-1" not in proc.stderr + proc.stdout


VCC = {"customer": "mycentre", "api_token": "s3cret-vcc"}


def test_missing_uuids_file_is_a_clear_error(tmp_path):
    config = {"cdr_by_uuid": {**VCC, "uuids_file": str(tmp_path / "nope.txt")}}
    (error,) = errors_for(config)
    assert "cdr_by_uuid.uuids_file" in error and "cannot be read" in error


def test_schema_errors_name_the_setting_and_come_with_the_cross_field_ones():
    config = {
        "end_date": "2024-01-01T00:00:00Z",
        "start_date": "2024-02-01T00:00:00Z",
        "cdr_by_uuid": {**VCC, "customer": "my centre", "max_attempts": 0, "page_size": "x"},
    }
    errors = errors_for(config)
    joined = " | ".join(errors)
    for name in ("`cdr_by_uuid.customer`", "`cdr_by_uuid.max_attempts`", "`cdr_by_uuid.page_size`"):
        assert name in joined
    assert any(
        "`start_date` (2024-02-01T00:00:00+00:00) must be before `end_date`" in e for e in errors
    )
    assert "s3cret-vcc" not in joined


def test_defaults_are_declared_once_in_the_schema_and_applied():
    tap = TapCDR(config={"cdr_by_uuid": dict(VCC)}, parse_env_config=False)
    section = tap.config["cdr_by_uuid"]
    assert section["page_size"] == 500 and section["list_cdrs"] is True
    assert section["timezone"] == "Europe/Budapest" and section["max_concurrency"] == 4
    assert tap.config["lookback_minutes"] == 120


def test_the_sdk_still_words_schema_errors_as_this_tap_rewrites_them():
    # tap.setting_error relies on the SDK's "<message> in config['a']['b']" form.
    from tap_cdr.tap import setting_error

    with pytest.raises(ConfigValidationError) as info:
        TapCDR(config={"cdr_v3": {**GOOD["cdr_v3"], "page_size": 0}}, parse_env_config=False)
    assert info.value.errors == ["`cdr_v3.page_size`: 0 is less than the minimum of 1"]
    assert setting_error("no path here") == "no path here"
