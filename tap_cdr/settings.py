"""Typed views of the tap's config, and the rules that span fields or need I/O.

Each setting's type, default and range are declared once, in the JSON schema in
``tap.py``; the SDK validates the config against it and fills in the defaults. This
module adds only what a schema cannot say: exactly one credential, start before end,
https unless loopback, a real time zone, parseable uuid items, a readable uuids file.
Every error names the setting and says what is wrong.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from tap_cdr import uuids
from tap_cdr.windows import parse_instant

# A first run without start_date reads this far back.
DEFAULT_HISTORY = timedelta(days=30)
# CDRs are registered a little after the call ends; the open head of the data stays
# out of the range until it has settled.
SETTLE_DELAY = timedelta(minutes=5)
V3_FILTERS = ("extension", "status", "hotline", "phone", "direction", "campaign_uuid")
VCC_DEFAULT_BASE_URL = "https://{customer}.asp.virtual-call-center.eu"
STORE_URL = re.compile(r"^(?:sqlite|postgresql)(?:\+\w+)?://", re.IGNORECASE)
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
# The config sections checked for unknown keys, besides the top level: each has a
# fixed set of settings (the SDK's objects, such as stream_maps, hold names of the
# user's choosing).
CHECKED_SECTIONS = ("cdr_v3", "cdr_by_uuid", "cdr_v3.filters")
NO_STREAM = (
    "no stream is configured: a `cdr_v3` object (base_url, and token or api_key) enables "
    "cdr_v3, the TEL4VN v3 API; a `cdr_by_uuid` object (customer and api_token) enables "
    "cdr_by_uuid, VCC Live. With Meltano: meltano config set tap-cdr cdr_v3.base_url ..."
)


@dataclass(frozen=True)
class HttpSettings:
    timeout: float
    max_tries: int
    max_retry_wait: float


@dataclass(frozen=True)
class SyncSettings:
    start_date: datetime | None
    end_date: datetime | None
    lookback: timedelta


@dataclass(frozen=True)
class V3Settings:
    base_url: str
    token: str | None
    api_key: str | None
    zone: ZoneInfo
    page_size: int
    window_hours: int
    max_concurrency: int
    filters: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class VccSettings:
    customer: str
    api_token: str
    base_url: str
    zone: ZoneInfo
    list_cdrs: bool
    page_size: int
    project_ids: tuple[int, ...]
    max_call: timedelta
    max_concurrency: int
    items: tuple[uuids.WorkItem, ...]
    uuids_file: Path | None
    intake_store: str | None
    first_attempt_delay: timedelta
    retry_interval: timedelta
    max_attempts: int
    wait_for_pending: timedelta


def validate(config: Mapping[str, Any], schema: Mapping[str, Any]) -> list[str]:
    """Every problem with ``config`` that its JSON ``schema`` does not report (keys it
    does not know, cross-field rules), as messages naming the setting.

    Runs after the SDK's schema validation, also when that found errors, so that
    one run of the tap reports every problem: each check tolerates wrong types, and
    leaves a value of the wrong type to the schema's message.
    """
    errors = unknown_keys(config, schema)
    start = _instant(config, "start_date", errors)
    end = _instant(config, "end_date", errors)
    if start and end and start >= end:
        errors.append(
            f"`start_date` ({start.isoformat()}) must be before `end_date` "
            f"({end.isoformat()}): the range of call end times to load is empty"
        )
    if config.get("cdr_v3") is None and config.get("cdr_by_uuid") is None:
        errors.append(NO_STREAM)
    for section, rules in (("cdr_v3", _v3_rules), ("cdr_by_uuid", _vcc_rules)):
        value = config.get(section)
        if isinstance(value, Mapping):
            rules(config, value, errors)
        elif section in config:
            errors.append(
                f"`{section}` must be an object of its settings, not "
                f"{type(value).__name__}: remove it to leave the stream off"
            )
    return errors


def _v3_rules(config: Mapping[str, Any], v3: Mapping[str, Any], errors: list[str]) -> None:
    if isinstance(v3.get("base_url"), str):
        _base_url(config, "cdr_v3.base_url", v3["base_url"], errors)
    token, api_key = v3.get("token"), v3.get("api_key")
    if bool(token) == bool(api_key):
        errors.append(
            "`cdr_v3` needs exactly one credential: `token` (a Bearer token) or "
            "`api_key` (exchanged for a token at POST {base_url}/v3/auth/token)"
            + ("; both are set" if token else "; neither is set")
        )
    _zone("cdr_v3.timezone", v3.get("timezone"), errors)


def _vcc_rules(config: Mapping[str, Any], vcc: Mapping[str, Any], errors: list[str]) -> None:
    _base_url(config, "cdr_by_uuid.base_url", _vcc_url(vcc), errors)
    _zone("cdr_by_uuid.timezone", vcc.get("timezone"), errors)
    items = vcc.get("uuids") or []
    try:
        if isinstance(items, list):
            uuids.parse_setting(items)
    except uuids.UuidListError as exc:
        errors.append(f"`cdr_by_uuid.uuids`: {exc}")
    if vcc.get("uuids_file"):
        path = Path(str(vcc["uuids_file"])).expanduser()
        try:
            with path.open("rb"):
                pass
        except OSError as exc:
            errors.append(f"`cdr_by_uuid.uuids_file` {str(path)!r} cannot be read: {exc.strerror}")
    _intake_store(vcc.get("intake_store"), errors)


def unknown_keys(config: Mapping[str, Any], schema: Mapping[str, Any]) -> list[str]:
    """A key no setting knows is a typo until proven otherwise: silently ignored, it
    would leave a setting at its default (an intake store never read, a start date
    never applied). Each is named with the closest known setting."""
    errors = []
    known = schema.get("properties", {})
    places = [("tap-cdr", config, known)]
    for section in CHECKED_SECTIONS:
        value: Any = config
        inner: Any = {"properties": known}
        for part in section.split("."):
            value = value.get(part) if isinstance(value, Mapping) else None
            inner = inner.get("properties", {}).get(part, {})
        if isinstance(value, Mapping):
            places.append((section, value, inner.get("properties", {})))
    for owner, values, settings in places:
        for key in values:
            if key in settings:
                continue
            guess = difflib.get_close_matches(str(key), list(settings), n=1, cutoff=0.6)
            hint = (
                f"; did you mean {guess[0]!r}?"
                if guess
                else f" (its settings: {', '.join(sorted(settings))})"
            )
            errors.append(f"{str(key)[:80]!r} is not a setting of {owner}{hint}")
    return errors


def warnings(config: Mapping[str, Any], now: datetime | None = None) -> list[str]:
    """What is valid but probably not meant: a date range that lies in the future."""
    now = now or datetime.now(timezone.utc)
    try:
        start, end = (
            parse_instant(config[name]) if config.get(name) else None
            for name in ("start_date", "end_date")
        )
    except (ValueError, TypeError, AttributeError):
        return []  # reported as errors
    dated = (("start_date", start), ("end_date", end))
    future = [name for name, value in dated if value and value > now]
    if not future:
        return []
    dates = (
        f"`start_date` ({start.isoformat() if start else 'not set'}) and `end_date` "
        f"({end.isoformat() if end else 'not set: 5 minutes before the run'})"
    )
    if start and start > now:
        effect = "no call has ended after start_date yet, so this run loads nothing"
    else:
        effect = (
            "this run reads up to 5 minutes before now, and later runs read on to end_date "
            "as calls end"
        )
    verb = "lies" if len(future) == 1 else "lie"
    return [f"{dates}: {' and '.join(future)} {verb} in the future; {effect}"]


def sync_settings(config: Mapping[str, Any]) -> SyncSettings:
    return SyncSettings(
        start_date=parse_instant(config["start_date"]) if config.get("start_date") else None,
        end_date=parse_instant(config["end_date"]) if config.get("end_date") else None,
        lookback=timedelta(minutes=config["lookback_minutes"]),
    )


def http_settings(config: Mapping[str, Any]) -> HttpSettings:
    return HttpSettings(
        timeout=float(config["request_timeout_seconds"]),
        max_tries=config["max_request_tries"],
        max_retry_wait=float(config["max_retry_wait_seconds"]),
    )


def v3_settings(config: Mapping[str, Any]) -> V3Settings:
    section = config["cdr_v3"]
    return V3Settings(
        base_url=section["base_url"].strip().rstrip("/"),
        token=section.get("token") or None,
        api_key=section.get("api_key") or None,
        zone=ZoneInfo(section["timezone"]),
        page_size=section["page_size"],
        window_hours=section["window_hours"],
        max_concurrency=section["max_concurrency"],
        filters={k: str(v) for k, v in (section.get("filters") or {}).items() if v},
    )


def vcc_settings(config: Mapping[str, Any]) -> VccSettings:
    section = config["cdr_by_uuid"]
    uuids_file = section.get("uuids_file")
    return VccSettings(
        customer=section["customer"].strip(),
        api_token=section["api_token"],
        base_url=_vcc_url(section).strip().rstrip("/"),
        zone=ZoneInfo(section["timezone"]),
        list_cdrs=section["list_cdrs"],
        page_size=section["page_size"],
        project_ids=tuple(section.get("project_ids") or ()),
        max_call=timedelta(hours=section["max_call_hours"]),
        max_concurrency=section["max_concurrency"],
        items=tuple(uuids.parse_setting(section.get("uuids") or [])),
        uuids_file=Path(uuids_file).expanduser() if uuids_file else None,
        intake_store=section.get("intake_store") or None,
        first_attempt_delay=timedelta(minutes=section["first_attempt_delay_minutes"]),
        retry_interval=timedelta(minutes=section["retry_interval_minutes"]),
        max_attempts=section["max_attempts"],
        wait_for_pending=timedelta(minutes=section["wait_for_pending_minutes"]),
    )


def _vcc_url(section: Mapping[str, Any]) -> str:
    customer = str(section.get("customer") or "x").strip()
    return str(section.get("base_url") or VCC_DEFAULT_BASE_URL.format(customer=customer))


def _intake_store(value: Any, errors: list[str]) -> None:
    # The scheme only: the store itself is checked when it is opened.
    if value and not STORE_URL.match(str(value)):
        # The value may hold a password: never repeat it.
        errors.append(
            "`cdr_by_uuid.intake_store` must be the --store URL of tap-cdr-intake, "
            "sqlite:///path.db or postgresql://user:password@host/database"
        )


def _zone(name: str, value: Any, errors: list[str]) -> None:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        errors.append(
            f"`{name}` {value!r} is not an IANA time zone name "
            "(e.g. Asia/Ho_Chi_Minh, Europe/Budapest, UTC)"
        )


def _base_url(config: Mapping[str, Any], name: str, raw: Any, errors: list[str]) -> None:
    text = str(raw or "").strip()
    try:
        parts = urlsplit(text)
        port_ok = parts.port is None or parts.port > 0
    except ValueError:
        parts, port_ok = urlsplit(""), False
    if parts.scheme not in ("http", "https") or not parts.hostname or not port_ok:
        errors.append(
            f"`{name}` must be an http(s) URL such as https://api.example.vn, got {_shown(text)!r}"
        )
    elif parts.username is not None or parts.password is not None:
        errors.append(
            f"`{name}` must not carry a user or password ({_shown(text)!r}): the credentials "
            "go in their own settings"
        )
    elif parts.query or parts.fragment:
        errors.append(f"`{name}` must not carry a query string or fragment, got {_shown(text)!r}")
    elif (
        parts.scheme == "http"
        and not config.get("allow_insecure_http")
        and not _is_loopback(parts.hostname)
    ):
        errors.append(
            f"`{name}` uses plain http to a non-local host ({parts.hostname}): credentials "
            "would cross the network unencrypted. Use https, or set "
            "`allow_insecure_http: true` if you really mean it"
        )


def _shown(url: str) -> str:
    """The URL without what may be a secret: userinfo, query string and fragment."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "(not a URL)"
    netloc = parts.netloc.rpartition("@")[2]
    hidden = "?..." if parts.query or parts.fragment else ""
    return urlunsplit(parts._replace(netloc=netloc, query="", fragment="")) + hidden


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# No call detail record is older: an earlier date is a typo (and would overflow the
# date arithmetic of the lookback and the CDR log sweep).
EARLIEST = datetime(1990, 1, 1, tzinfo=timezone.utc)


def _instant(config: Mapping[str, Any], name: str, errors: list[str]) -> datetime | None:
    value = config.get(name)
    if not isinstance(value, str) or not value:  # a wrong type: the schema says so
        return None
    try:
        instant = parse_instant(value)
    except (ValueError, TypeError, AttributeError):
        errors.append(
            f"`{name}` must be an RFC 3339 date-time such as 2024-01-31T00:00:00Z, got {value!r}"
        )
        return None
    if instant < EARLIEST:
        errors.append(f"`{name}` ({value}) is before 1990: no call detail record is that old")
        return None
    return instant
