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
