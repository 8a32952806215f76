"""Reading a Call Disposition event: its uuid, and the two fields that help the tap.

Only the uuid decides whether an event is kept. ``call_start_time`` (the month the
lookup tries first) and ``projectid`` help, but an unusable value of either is stored
as null, with a warning naming the field (never the value): the call is still looked
up. Any body is read in bounded time within the body limit: huge numbers stay text,
nesting deeper than the JSON parser goes is refused, and nothing a body holds can
raise anything but `Rejected`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import date
from typing import Any
from urllib.parse import parse_qs

from tap_cdr.intake.crypto import DecryptError, decrypt

UUID = re.compile(r"^[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")
DAY = re.compile(r"^([0-9]{4})-([0-9]{2})-([0-9]{2})")
INTEGER = re.compile(r"^-?[0-9]{1,19}$")
BIGINT = range(-(2**63), 2**63)  # the store's BIGINT
# VCC Live's way of saying "no date"; not worth a warning.
NO_DATE = "0000-00-00"


class Rejected(Exception):  # noqa: N818 (an outcome, not an error of the receiver)
    """A body that is not a Call Disposition event we can use. ``kind`` is a metric
    label; ``reason`` says it in words (log, rejected row, answer)."""

    def __init__(self, kind: str, reason: str, keys: list[str] | None = None) -> None:
        super().__init__(reason)
        self.kind = kind
        self.reason = reason
        self.keys = keys or []


@dataclass(frozen=True)
class Event:
    uuid: str
    month: str | None  # YYYY/MM of call_start_time
    projectid: int | None
    nulled: tuple[str, ...] = ()  # fields present but unusable, stored as null


def parse_event(body: bytes, cipher: str | None, secret_key: str, iv: str | None) -> Event:
    """The event in a body; `Rejected` says why there is none."""
    try:
        return _parse(body, cipher, secret_key, iv)
    except Rejected:
        raise
    except Exception as exc:  # noqa: BLE001 (no body may fail the receiver: it is refused)
        raise Rejected("unreadable", f"the body could not be read ({type(exc).__name__})") from None


def _parse(body: bytes, cipher: str | None, secret_key: str, iv: str | None) -> Event:
    event = _decrypted_event(body, cipher, secret_key, iv) if cipher else _event(body)
    if not isinstance(event, dict):
        raise Rejected("not_object", f"not a JSON object but {type(event).__name__}")
    keys = sorted(str(key)[:40] for key in event)
    uuid = event.get("uuid")
    if not isinstance(uuid, str) or not UUID.match(uuid.strip()):
        if uuid is None:
            raise Rejected("no_uuid", "no uuid", keys)
        raise Rejected("bad_uuid", "no valid uuid", keys)
    start, project = event.get("call_start_time"), event.get("projectid")
    month, projectid = _month(start), _projectid(project)
    nulled = []
    if (
        month is None
        and start not in (None, "")
        and not (isinstance(start, str) and start.startswith(NO_DATE))
    ):
        nulled.append("call_start_time")
    if projectid is None and project not in (None, ""):
        nulled.append("projectid")
    return Event(uuid.strip().lower(), month, projectid, tuple(nulled))


def _month(value: Any) -> str | None:
    found = DAY.match(value.strip()) if isinstance(value, str) else None
    if found is None:
        return None
    try:  # a real date, in the calendar
        day = date(int(found[1]), int(found[2]), int(found[3]))
    except ValueError:
        return None
    return f"{day:%Y/%m}"


def _projectid(value: Any) -> int | None:
    """A plain ASCII integer within 64 bits, as a number or as text."""
    if isinstance(value, str) and INTEGER.match(value.strip()):
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool) and value in BIGINT:
        return value
    return None


def _decrypted_event(body: bytes, cipher: str, secret_key: str, iv: str | None) -> Any:
    """The event in an encrypted body: base64 as sent, possibly wrapped in lines, or
    the value of a form's only field (where ``+`` may have been decoded as a space)."""
    candidates = [b"".join(body.split())]
    try:
        fields = parse_qs(body.decode("ascii"), strict_parsing=True)
    except (UnicodeDecodeError, ValueError):
        fields = {}
    if len(fields) == 1 and len(values := next(iter(fields.values()))) == 1 and values[0]:
        candidates.append(values[0].replace(" ", "+").encode())
    problems = []
    for candidate in candidates:
        try:
            plaintext = decrypt(candidate, cipher, secret_key, iv)
        except DecryptError as exc:
            problems.append(Rejected("decrypt", f"cannot be decrypted: {exc}"))
            continue
        try:
            return _event(plaintext)
        except Rejected as rejected:
            if rejected.kind == "too_deep":
                raise
        problems.append(Rejected("decrypt", "not JSON once decrypted (wrong key, IV or cipher?)"))
    raise problems[0]  # what is wrong with the body as sent


def _event(body: bytes) -> Any:
    """The JSON of a body, or of a form."""
    try:
        return _json(body)
    except Rejected as rejected:
        if rejected.kind == "too_deep":
            raise
    event = _form_event(body)
    if event is None:
        raise Rejected("not_json", "not JSON")
    return event


def _json(text: bytes | str) -> Any:
    try:
        return json.loads(text, parse_int=_json_int)
    except RecursionError:
        raise Rejected("too_deep", "not JSON: nested too deep") from None
    except (ValueError, UnicodeDecodeError):
        raise Rejected("not_json", "not JSON") from None


def _json_int(digits: str) -> int | str:
    # Python refuses to convert more than 4,300 digits, and is slow long before: a
    # number that long is no id, so it stays text, which the field checks then refuse.
    return int(digits) if len(digits) <= 40 else digits


def _form_event(body: bytes) -> dict[str, Any] | None:
    """An event sent as a form: the JSON of its only field, or its fields themselves."""
    try:
        fields = parse_qs(body.decode("utf-8"), strict_parsing=True)
    except (UnicodeDecodeError, ValueError):
        return None
    if len(fields) == 1:
        (values,) = fields.values()
        try:
            event = _json(values[0])
        except Rejected:
            event = None
        if isinstance(event, dict):
            return event
    return {key: values[-1] for key, values in fields.items()} if "uuid" in fields else None
