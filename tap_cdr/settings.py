"""Typed, validated views of the tap's config.

The SDK checks the config against the JSON schema in ``tap.py``; the rules that a
JSON schema cannot say clearly (exactly one credential, a real URL, a known time
zone) are checked here, and every error names the setting and what is wrong.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from tap_cdr import uuids
from tap_cdr.windows import parse_instant

DEFAULT_LOOKBACK_MINUTES = 120
DEFAULT_HISTORY = timedelta(days=30)
# CDRs are registered a little after the call ends; the open head of the data stays
# out of the window until it has settled.
SETTLE_DELAY = timedelta(minutes=5)
DEFAULT_TIMEZONE = "Asia/Ho_Chi_Minh"
DEFAULT_PAGE_SIZE = 500
DEFAULT_WINDOW_HOURS = 24
DEFAULT_MAX_CONCURRENCY = 4
V3_FILTERS = ("extension", "status", "hotline", "phone", "direction", "campaign_uuid")


VCC_DEFAULT_BASE_URL = "https://{customer}.asp.virtual-call-center.eu"
DEFAULT_RETRY_INTERVAL_MINUTES = 5
DEFAULT_MAX_ATTEMPTS = 20


@dataclass(frozen=True)
class VccSettings:
    customer: str
    api_token: str
    base_url: str
    items: list[uuids.WorkItem]
    retry_interval: timedelta
    max_attempts: int
    wait_for_pending: timedelta


DEFAULT_REQUEST_TIMEOUT_SECONDS = 60
DEFAULT_MAX_REQUEST_TRIES = 6
DEFAULT_MAX_RETRY_WAIT_SECONDS = 300


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
    max_concurrency: int = 4
    filters: dict[str, str] = field(default_factory=dict)


def validate(config: Mapping[str, Any]) -> list[str]:
    """Every problem with ``config``, as messages naming the setting."""
    errors: list[str] = []
    _sync(config, errors)
    _http(config, errors)
    if "cdr_v3" not in config and "cdr_by_uuid" not in config:
        errors.append(
            "no stream is configured: add a `cdr_v3` and/or a `cdr_by_uuid` object to the config"
        )
    if "cdr_v3" in config:
        _v3(config, errors)
    if "cdr_by_uuid" in config:
        _vcc(config, errors)
    return errors


def sync_settings(config: Mapping[str, Any]) -> SyncSettings:
    return _checked(_sync, config)


def v3_settings(config: Mapping[str, Any]) -> V3Settings:
    return _checked(_v3, config)


def http_settings(config: Mapping[str, Any]) -> HttpSettings:
    return _checked(_http, config)


def vcc_settings(config: Mapping[str, Any]) -> VccSettings:
    return _checked(_vcc, config)


def _checked(parse: Any, config: Mapping[str, Any]) -> Any:
    errors: list[str] = []
    result = parse(config, errors)
    if errors:
        raise ValueError("; ".join(errors))
    return result


def _sync(config: Mapping[str, Any], errors: list[str]) -> SyncSettings:
    start = _instant(config, "start_date", errors)
    end = _instant(config, "end_date", errors)
    if start and end and start >= end:
        errors.append(f"`end_date` ({end.isoformat()}) must be after `start_date`")
    lookback = config.get("lookback_minutes", DEFAULT_LOOKBACK_MINUTES)
    if not _is_int(lookback) or lookback < 0:
        errors.append(f"`lookback_minutes` must be a whole number >= 0, got {lookback!r}")
        lookback = DEFAULT_LOOKBACK_MINUTES
    return SyncSettings(start, end, timedelta(minutes=lookback))


def _http(config: Mapping[str, Any], errors: list[str]) -> HttpSettings:
    timeout = config.get("request_timeout_seconds", DEFAULT_REQUEST_TIMEOUT_SECONDS)
    if not _is_number(timeout) or timeout <= 0:
        errors.append(f"`request_timeout_seconds` must be a number > 0, got {timeout!r}")
        timeout = DEFAULT_REQUEST_TIMEOUT_SECONDS
    tries = _positive(config, "max_request_tries", DEFAULT_MAX_REQUEST_TRIES, "", errors)
    wait = config.get("max_retry_wait_seconds", DEFAULT_MAX_RETRY_WAIT_SECONDS)
    if not _is_number(wait) or wait < 0:
        errors.append(f"`max_retry_wait_seconds` must be a number >= 0, got {wait!r}")
        wait = DEFAULT_MAX_RETRY_WAIT_SECONDS
    return HttpSettings(timeout=float(timeout), max_tries=tries, max_retry_wait=float(wait))


def _v3(config: Mapping[str, Any], errors: list[str]) -> V3Settings | None:
    section = config.get("cdr_v3")
    if not isinstance(section, Mapping):
        errors.append("`cdr_v3` must be an object with at least `base_url` and a credential")
        return None
    base_url = base_url_error = None
    raw_url = section.get("base_url")
    if not raw_url:
        errors.append("`cdr_v3.base_url` is required, e.g. https://api.example.vn")
    else:
        base_url, base_url_error = _base_url(
            raw_url, "cdr_v3.base_url", bool(config.get("allow_insecure_http"))
        )
        if base_url_error:
            errors.append(base_url_error)
    token, api_key = section.get("token"), section.get("api_key")
    if bool(token) == bool(api_key):
        errors.append(
            "`cdr_v3` needs exactly one credential: `token` (a Bearer token) or "
            "`api_key` (exchanged for a token at POST {base_url}/v3/auth/token)"
            + ("; both are set" if token else "; neither is set")
        )
    zone_name = section.get("timezone", DEFAULT_TIMEZONE)
    try:
        zone = ZoneInfo(zone_name)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        errors.append(
            f"`cdr_v3.timezone` {zone_name!r} is not an IANA time zone name "
            "(e.g. Asia/Ho_Chi_Minh, Europe/Budapest, UTC)"
        )
        zone = ZoneInfo("UTC")
    page_size = _positive(section, "page_size", DEFAULT_PAGE_SIZE, "cdr_v3.", errors)
    window_hours = _positive(section, "window_hours", DEFAULT_WINDOW_HOURS, "cdr_v3.", errors)
    concurrency = _positive(section, "max_concurrency", DEFAULT_MAX_CONCURRENCY, "cdr_v3.", errors)
    filters = section.get("filters") or {}
    if not isinstance(filters, Mapping):
        errors.append("`cdr_v3.filters` must be an object")
        filters = {}
    unknown = sorted(set(filters) - set(V3_FILTERS))
    if unknown:
        errors.append(
            f"`cdr_v3.filters` has unknown keys {unknown}; allowed: {', '.join(V3_FILTERS)}"
        )
    return V3Settings(
        base_url=base_url or "",
        token=token or None,
        api_key=api_key or None,
        zone=zone,
        page_size=page_size,
        window_hours=window_hours,
        max_concurrency=concurrency,
        filters={k: str(v) for k, v in filters.items() if k in V3_FILTERS and v not in (None, "")},
    )


def _vcc(config: Mapping[str, Any], errors: list[str]) -> VccSettings | None:
    section = config.get("cdr_by_uuid")
    if not isinstance(section, Mapping):
        errors.append("`cdr_by_uuid` must be an object with `customer` and `api_token`")
        return None
    customer = str(section.get("customer") or "").strip()
    if not customer:
        errors.append("`cdr_by_uuid.customer` is required: your call centre's id (subdomain)")
    elif not customer.replace("-", "").replace("_", "").isalnum():
        errors.append(f"`cdr_by_uuid.customer` must be a subdomain-like id, got {customer!r}")
    token = section.get("api_token")
    if not token:
        errors.append("`cdr_by_uuid.api_token` is required: the API token generated in VCC Live")
    raw_url = section.get("base_url") or VCC_DEFAULT_BASE_URL.format(customer=customer or "x")
    base_url, url_error = _base_url(
        raw_url, "cdr_by_uuid.base_url", bool(config.get("allow_insecure_http"))
    )
    if url_error:
        errors.append(url_error)
    items: list[uuids.WorkItem] = []
    raw_items = section.get("uuids") or []
    if not isinstance(raw_items, list):
        errors.append("`cdr_by_uuid.uuids` must be an array of uuid or YYYY/MM/uuid strings")
        raw_items = []
    try:
        items = uuids.load(raw_items, section.get("uuids_file"))
    except uuids.UuidListError as exc:
        errors.append(f"`cdr_by_uuid`: {exc}")
    interval = section.get("retry_interval_minutes", DEFAULT_RETRY_INTERVAL_MINUTES)
    if not _is_int(interval) or interval < 0:
        errors.append(
            f"`cdr_by_uuid.retry_interval_minutes` must be a whole number >= 0, got {interval!r}"
        )
        interval = DEFAULT_RETRY_INTERVAL_MINUTES
    attempts = _positive(section, "max_attempts", DEFAULT_MAX_ATTEMPTS, "cdr_by_uuid.", errors)
    wait = section.get("wait_for_pending_minutes", 0)
    if not _is_int(wait) or wait < 0:
        errors.append(
            f"`cdr_by_uuid.wait_for_pending_minutes` must be a whole number >= 0, got {wait!r}"
        )
        wait = 0
    return VccSettings(
        customer=customer,
        api_token=token or "",
        base_url=base_url or "",
        items=items,
        retry_interval=timedelta(minutes=interval),
        max_attempts=attempts,
        wait_for_pending=timedelta(minutes=wait),
    )


def _base_url(raw: Any, name: str, allow_insecure: bool) -> tuple[str | None, str | None]:
    text = str(raw).strip()
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return (
            None,
            f"`{name}` must be an http(s) URL such as https://api.example.vn, got {text!r}",
        )
    if parts.query or parts.fragment:
        return None, f"`{name}` must not carry a query string or fragment, got {text!r}"
    if parts.scheme == "http" and not allow_insecure and not _is_loopback(parts.hostname):
        return None, (
            f"`{name}` uses plain http to a non-local host ({parts.hostname}): credentials "
            "would cross the network unencrypted. Use https, or set "
            "`allow_insecure_http: true` if you really mean it"
        )
    return text.rstrip("/"), None


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _instant(config: Mapping[str, Any], name: str, errors: list[str]) -> datetime | None:
    value = config.get(name)
    if value in (None, ""):
        return None
    try:
        return parse_instant(value)
    except (ValueError, TypeError, AttributeError):
        errors.append(
            f"`{name}` must be an RFC 3339 date-time such as 2024-01-31T00:00:00Z, got {value!r}"
        )
        return None


def _positive(
    section: Mapping[str, Any], name: str, default: int, prefix: str, errors: list[str]
) -> int:
    value = section.get(name, default)
    if not _is_int(value) or value < 1:
        errors.append(f"`{prefix}{name}` must be a whole number >= 1, got {value!r}")
        return default
    return value


def _is_number(value: Any) -> bool:
    # The SDK reads JSON config numbers as Decimal.
    return isinstance(value, (int, float, Decimal)) and not isinstance(value, bool)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
