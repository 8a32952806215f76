"""Per-record normalisation: the only place that knows the APIs' value formats.

The APIs send naive local timestamps, ``""`` for "no value", numbers that are
sometimes strings, and JSON encoded inside strings. Records leave this module with
RFC 3339 UTC timestamps, nulls, integers and objects, matching ``schemas/``.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone, tzinfo
from decimal import Decimal
from typing import Any

UTC = timezone.utc
_ABSENT = object()
ZERO_DATES = frozenset({"0000-00-00 00:00:00", "0000-00-00"})

V3_TIME_FIELDS = (
    "time_started",
    "time_answered",
    "time_ended",
    "time_ringging",
    "time_presskey",
)
V3_INTEGER_FIELDS = ("duration", "billsec", "presskey_delay")
V3_NUMBER_FIELDS = ("autocall_presskey_epoch",)
V3_BLANK_IS_NULL_FIELDS = (
    "parent_id",
    "sip_call_id",
    "campaign_uuid",
    "lead_uuid",
    "rate",
)


# json.loads with options builds a decoder per call; one shared decoder is the same
# parse without that cost (JSON-in-string fields are per record).
_decode_json = json.JSONDecoder(parse_float=Decimal).decode


class NormalizationError(ValueError):
    """A value that cannot be represented as its schema type."""


def to_utc(value: Any, zone: tzinfo, field: str = "timestamp") -> str | None:
    """A naive local ``YYYY-MM-DD HH:MM:SS`` (or any ISO 8601 form) as RFC 3339 UTC.

    Blank and zero dates become None. A value carrying its own offset is converted
    from that offset; a naive one is read in ``zone``. In a DST fall-back hour the
    first of the two readings is taken (there is no way to tell them apart).
    """
    if value is None:
        return None
    if not isinstance(value, str):
        raise NormalizationError(f"{field}: expected a timestamp string, got {value!r}")
    text = value.strip()
    if not text or text in ZERO_DATES:
        return None
    try:
        if len(text) == 19 and text[10] == " ":
            # The API's own format: slicing is several times faster than parsing.
            parsed = datetime(  # noqa: DTZ001 (naive on purpose: the zone comes next)
                int(text[0:4]),
                int(text[5:7]),
                int(text[8:10]),
                int(text[11:13]),
                int(text[14:16]),
                int(text[17:19]),
            )
        else:
            parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise NormalizationError(
            f"{field}: {value!r} is not a timestamp (expected YYYY-MM-DD HH:MM:SS)"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=zone)
    return parsed.astimezone(UTC).isoformat()


def _parse_number(value: Any) -> int | Decimal | None:
    """A JSON number or numeric text as an int or an exact Decimal; blank as None.

    Raises ValueError (or ArithmeticError) for anything else.
    """
    if value is None or value.__class__ is int:
        return value
    if isinstance(value, bool):
        raise ValueError(value)  # noqa: TRY004 (callers catch ValueError)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        try:
            return int(text)
        except ValueError:
            value = Decimal(text)
    elif isinstance(value, float):
        value = Decimal(repr(value))
    if isinstance(value, Decimal) and value.is_finite():
        return value
    raise ValueError(value)


def to_int(value: Any, field: str = "integer") -> int | None:
    try:
        number = _parse_number(value)
    except (ValueError, ArithmeticError):
        number = Decimal("NaN")
    if number is None or isinstance(number, int):
        return number
    if number.is_finite() and number == number.to_integral_value():
        return int(number)
    raise NormalizationError(f"{field}: {value!r} is not an integer")


def to_number(value: Any, field: str = "number") -> int | Decimal | None:
    try:
        return _parse_number(value)
    except (ValueError, ArithmeticError):
        raise NormalizationError(f"{field}: {value!r} is not a number") from None


def blank_to_null(value: Any) -> Any:
    return None if value == "" else value


def to_object(value: Any, field: str = "object") -> dict | None:
    """An object, or a JSON object encoded in a string (``press_key`` is sent so).

    A string that is not a JSON object is kept, wrapped as ``{"raw": value}``,
    rather than dropped or failing the sync.
    """
    if value is None or isinstance(value, dict):
        return value
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        try:
            decoded = _decode_json(text)
        except ValueError:
            decoded = None
        if isinstance(decoded, dict):
            return decoded
        return {"raw": value}
    if isinstance(value, list) and not value:
        # PHP back ends encode an empty map as [].
        return {}
    raise NormalizationError(f"{field}: {value!r} is not an object")


class UtcConverter:
    """`to_utc` for a stream of timestamps in one zone, converted once per minute.

    UTC offsets are whole minutes, so a naive "YYYY-MM-DD HH:MM:SS" converts by
    converting its minute once and keeping its seconds: calls that end in the same
    minute share one zoneinfo conversion (and one validation of the date).
    """

    CACHE_LIMIT = 20_000

    def __init__(self, zone: tzinfo) -> None:
        self.zone = zone
        self._minutes: dict[str, str] = {}

    def __call__(self, value: Any, field: str) -> str | None:
        if not value:
            if value == "" or value is None:
                return None
        elif value.__class__ is str and len(value) == 19 and value[10] == " " and value[16] == ":":
            if value in ZERO_DATES:
                return None
            seconds = value[17:]
            if seconds.isascii() and seconds.isdigit() and seconds < "60":
                minute = value[:16]
                prefix = self._minutes.get(minute)
                if prefix is None:
                    converted = to_utc(minute + ":00", self.zone, field)
                    if converted is not None:
                        prefix = converted[:16]
                        if len(self._minutes) >= self.CACHE_LIMIT:
                            self._minutes.clear()
                        self._minutes[minute] = prefix
                if prefix is not None:
                    return f"{prefix}:{seconds}+00:00"
        return to_utc(value, self.zone, field)


class V3Normalizer:
    """Normalise TEL4VN v3 CDRs read in the API's time zone."""

    def __init__(self, zone: tzinfo) -> None:
        self.zone = zone
        self.utc = UtcConverter(zone)

    def __call__(self, raw: dict[str, Any]) -> dict[str, Any]:
        record = dict(raw)
        try:
            self._apply(record)
        except NormalizationError as exc:
            raise NormalizationError(f"cdr_v3 record id={raw.get('id')!r}: {exc}") from None
        return record

    def _apply(self, record: dict[str, Any]) -> None:  # noqa: C901 (one branch per field kind)
        utc = self.utc
        for name in V3_TIME_FIELDS:
            if name in record:
                record[name] = utc(record[name], name)
        for name in V3_INTEGER_FIELDS:
            value = record.get(name)
            if value.__class__ is not int and name in record:
                record[name] = to_int(value, name)
        for name in V3_NUMBER_FIELDS:
            if name in record:
                record[name] = to_number(record[name], name)
        for name in V3_BLANK_IS_NULL_FIELDS:
            if record.get(name) == "":
                record[name] = None
        additional = record.get("additional")
        if additional.__class__ is not dict and "additional" in record:
            record["additional"] = to_object(additional, "additional")
        press_key = record.get("press_key")
        if press_key == "{}":
            record["press_key"] = {}
        elif "press_key" in record:
            record["press_key"] = to_object(press_key, "press_key")


VCC_UTC_FIELDS = ("start_ts_utc", "billing_ts_utc", "next_contact_utc", "lastArchivedTime_utc")
VCC_LOCAL_TIME_FIELDS = ("start_ts", "billing_ts", "next_contact", "lastArchivedTime")
VCC_INTEGER_FIELDS = (
    "afterwork",
    "beforequeuetime",
    "billingtime",
    "deletedUserId",
    "dialermode",
    "dispositionid",
    "dispositionreach",
    "dispositionstatus",
    "holdtime",
    "numberid",
    "prework",
    "projectid",
    "queueid",
    "queuetime",
    "ringtime",
    "talktime",
    "trashUserId",
    "userid",
)
# Documented as strings; the sample sends `dc` as a number. Emitted as text.
VCC_TEXT_FIELDS = (
    "call_quantity",
    "call_rate",
    "currency",
    "dc",
    "destination",
    "direction",
    "disposition_comment",
    "hangup_disposition",
    "pricetag",
    "source",
    "statusArchived",
    "sum_work",
    "total_fee",
    "vcc_score",
    "shortid",
    "callfilename",
)
CUSTOM_FIELDS = "recordCustomFieldData"
CUSTOM_FIELDS_MISSPELLED = "recordCustomFielData"


def to_text(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False, default=str)
    return value if isinstance(value, str) else str(value)


def to_bool(value: Any, field: str = "boolean") -> bool | None:
    if value is None or value == "" or isinstance(value, bool):
        return None if value == "" else value
    if value in (0, 1, "0", "1"):
        return bool(int(value))
    if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no"):
        return value.lower() in ("true", "yes")
    raise NormalizationError(f"{field}: {value!r} is not a boolean")


def derive_time_ended(
    start_utc: str | None, ringtime: int | None, billingtime: int | None
) -> str | None:
    """The API sends no end time: ``start_ts_utc + ringtime + billingtime`` seconds."""
    if start_utc is None:
        return None
    ended = datetime.fromisoformat(start_utc) + timedelta(
        seconds=(ringtime or 0) + (billingtime or 0)
    )
    return ended.isoformat()


class EndTimes:
    """`derive_time_ended` on this module's own RFC 3339 UTC starts, with the minute
    arithmetic cached: a sweep's calls start and end in few distinct minutes."""

    CACHE_LIMIT = 20_000

    def __init__(self) -> None:
        self._epochs: dict[str, int] = {}  # "YYYY-MM-DDTHH:MM" -> epoch seconds
        self._minutes: dict[int, str] = {}  # epoch minute -> "YYYY-MM-DDTHH:MM"

    def __call__(self, start_utc: Any, ringtime: Any, billingtime: Any) -> str | None:
        seconds = (ringtime or 0) + (billingtime or 0)
        if (
            start_utc.__class__ is not str
            or len(start_utc) != 25
            or start_utc[19:] != "+00:00"
            or seconds.__class__ is not int
        ):
            return derive_time_ended(start_utc, ringtime, billingtime)
        epoch = self._epochs.get(start_utc[:16])
        if epoch is None:
            epoch = int(datetime.fromisoformat(start_utc[:16] + ":00+00:00").timestamp())
            _remember(self._epochs, start_utc[:16], epoch, self.CACHE_LIMIT)
        minute, second = divmod(epoch + int(start_utc[17:19]) + seconds, 60)
        prefix = self._minutes.get(minute)
        if prefix is None:
            prefix = datetime.fromtimestamp(minute * 60, UTC).isoformat()[:16]
            _remember(self._minutes, minute, prefix, self.CACHE_LIMIT)
        return f"{prefix}:{second:02d}+00:00"


def _remember(cache: dict[Any, Any], key: Any, value: Any, limit: int) -> None:
    if len(cache) >= limit:
        cache.clear()
    cache[key] = value


class VccNormalizer:
    """Normalise VCC Live CDRs: `*_utc` to RFC 3339, locals kept, blanks to null."""

    def __init__(self) -> None:
        self.utc = UtcConverter(UTC)
        self.time_ended = EndTimes()

    def __call__(self, raw: dict[str, Any]) -> dict[str, Any]:
        record = dict(raw)
        try:
            self._apply(record)
        except NormalizationError as exc:
            raise NormalizationError(
                f"cdr_by_uuid record uuid={raw.get('uuid')!r}: {exc}"
            ) from None
        return record

    def _apply(self, record: dict[str, Any]) -> None:  # noqa: C901 (one branch per field kind)
        # Per record and per field: values already of their type are left alone.
        utc, get = self.utc, record.get
        for name in VCC_UTC_FIELDS:
            value = get(name, _ABSENT)
            if value is not _ABSENT:
                record[name] = utc(value, name)
        for name in VCC_LOCAL_TIME_FIELDS:
            value = get(name)
            if value == "" or value in ZERO_DATES:
                record[name] = None
        for name in VCC_INTEGER_FIELDS:
            value = get(name, _ABSENT)
            if value.__class__ is not int and value is not _ABSENT:
                record[name] = to_int(value, name)
        for name in VCC_TEXT_FIELDS:
            value = get(name)
            if value is not None and (value.__class__ is not str or not value):
                record[name] = to_text(value)
        if "special" in record:
            record["special"] = to_bool(record["special"], "special")
        misspelled = record.pop(CUSTOM_FIELDS_MISSPELLED, None)
        correct = record.get(CUSTOM_FIELDS)
        if misspelled is not None or correct is not None:
            merged = {**(to_object(misspelled, CUSTOM_FIELDS) or {})}
            merged.update(to_object(correct, CUSTOM_FIELDS) or {})
            record[CUSTOM_FIELDS] = merged
        record["time_ended"] = self.time_ended(
            record.get("start_ts_utc"), record.get("ringtime"), record.get("billingtime")
        )
