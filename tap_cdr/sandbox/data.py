"""Deterministic synthetic datasets for the sandbox API.

Record ``i`` is a pure function of ``(seed, i)``, so a dataset of millions of CDRs
costs no memory until its records are served, and every run of the sandbox with the
same arguments serves the same bytes. Records are ordered by end time (index 0 is the
oldest), which lets the server answer a time-range filter with two bisections.

This module deliberately shares no code with ``tap_cdr``: the sandbox is an
independent reading of the API documents, so it cannot share the tap's mistakes.
"""

from __future__ import annotations

import bisect
import json
import random
import uuid
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import NamedTuple
from zoneinfo import ZoneInfo

FMT = "%Y-%m-%d %H:%M:%S"

# Values seen in, or shaped like, the sample of the v3 document.
HOTLINES = ("02873003586", "02873003587", "02473001234")
CAMPAIGNS = (
    "fdccdbf2-bc4b-4a0f-a7ea-cb0239daaa7d",
    "0b6c2a1e-5f5d-4d8e-9a51-3c4a7e2b9f10",
    "7e1d9c44-2b8a-4f3e-8d6b-1a2c3d4e5f60",
)
OUTCOMES = (
    # status, cause, sip_hangup_disposition, answered
    ("answered", "NORMAL_CLEARING", "send_bye", True),
    ("answered", "NORMAL_CLEARING", "recv_bye", True),
    ("busy", "USER_BUSY", "recv_refuse", False),
    ("no-answer", "NO_ANSWER", "send_cancel", False),
    ("failed", "CALL_REJECTED", "recv_refuse", False),
)
# How an inbound caller who gave up is recorded: mostly a cancel while queued.
ABANDONS = (
    ("no-answer", "ORIGINATOR_CANCEL", "recv_cancel"),
    ("no-answer", "ORIGINATOR_CANCEL", "recv_cancel"),
    ("no-answer", "ORIGINATOR_CANCEL", "recv_cancel"),
    ("busy", "USER_BUSY", "recv_refuse"),
    ("failed", "CALL_REJECTED", "recv_refuse"),
)
# The call centre: inbound calls to a hotline land in a queue (`receive_dest`) and are
# answered by an agent's extension; outbound calls are autocall campaigns or an agent's
# manual calls; local calls go from one extension to another.
V3_QUEUES = ("8001", "8002", "8003")
V3_AGENTS = tuple(str(extension) for extension in range(101, 113))
NAMES = (
    "Đỗ Thị Ngà",
    "Nguyễn Văn An",
    "Trần Thị Bích",
    "Lê Hoàng Long",
    "Phạm Minh Châu",
)
OFFERS = ("Giảm 50% gốc", "Miễn lãi 3 tháng", "Ưu đãi đặc biệt", "")


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def default_anchor() -> datetime:
    """The newest call ends an hour before the start of the current hour.

    That keeps the whole dataset behind any settle delay, and makes the data the same
    for every sandbox started within the same hour (so a demo can run twice).
    """
    now = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0)
    return now - timedelta(hours=1)


@dataclass
class V3Dataset:
    """The TEL4VN v3 CDR list: ``records`` calls ending ``step`` seconds apart.

    The newest call ends at ``anchor``; times are rendered as naive local times in
    ``zone``, as the real API does.
    """

    records: int = 500
    seed: int = 1
    anchor: datetime = field(default_factory=default_anchor)
    step_seconds: int = 0
    zone: str = "Asia/Ho_Chi_Minh"
    # Fields added to every record, to stand for API fields the tap does not know yet.
    extra_fields: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.anchor.tzinfo is None:
            self.anchor = self.anchor.replace(tzinfo=timezone.utc)
        if self.step_seconds <= 0:
            # Spread the calls over a week by default.
            self.step_seconds = max(1, 7 * 86400 // max(self.records, 1))
        self._anchor_epoch = int(self.anchor.timestamp())
        self._tz = ZoneInfo(self.zone)
        self._cache: dict[int, bytes] = {}
        # Late-registered calls are hidden until released (see faults).
        self.hidden: set[int] = set()

    def ended_epoch(self, i: int) -> int:
        return self._anchor_epoch - (self.records - 1 - i) * self.step_seconds

    def local(self, epoch: int) -> str:
        return datetime.fromtimestamp(epoch, self._tz).strftime(FMT)

    def epoch_of_local(self, text: str) -> int:
        """Parse a filter value (``YYYY-MM-DD`` or ``YYYY-MM-DD HH:MM:SS``) as local."""
        text = text.strip()
        fmt = FMT if len(text) > 10 else "%Y-%m-%d"
        return int(datetime.strptime(text, fmt).replace(tzinfo=self._tz).timestamp())

    def index_range(self, start_epoch: int | None, end_epoch: int | None) -> range:
        """Indices whose end time lies in [start, end], both inclusive (SQL BETWEEN)."""
        lo = 0
        hi = self.records
        if start_epoch is not None:
            lo = bisect.bisect_left(range(self.records), start_epoch, key=self.ended_epoch)
        if end_epoch is not None:
            hi = bisect.bisect_right(range(self.records), end_epoch, key=self.ended_epoch)
        return range(lo, max(lo, hi))

    def record(self, i: int) -> dict:
        rng = random.Random(self.seed * 1_000_003 + i)
        ended = self.ended_epoch(i)
        direction = rng.choices(("inbound", "outbound", "local"), weights=(5, 4, 1))[0]
        app = "autocall" if direction == "outbound" and rng.random() < 0.7 else "call"
        hotline = rng.choice(HOTLINES)
        customer = "09" + "".join(rng.choice("0123456789") for _ in range(8))
        receive_dest = ""
        if direction == "inbound":
            # Queued, then answered by an agent or abandoned: waits of a few seconds
            # to minutes, so that thresholds of 5 and 20 seconds both divide them.
            answered = rng.random() < 0.78
            if answered:
                status, cause, disposition, _ = rng.choice(OUTCOMES[:2])
                wait = min(300, 1 + int(rng.expovariate(1 / 15)))
            else:
                status, cause, disposition = rng.choice(ABANDONS)
                wait = min(300, 1 + int(rng.expovariate(1 / 25)))
            talk = rng.randint(20, 900) if answered else 0
            extension = rng.choice(V3_AGENTS) if answered else ""
            receive_dest = rng.choice(V3_QUEUES)
            from_number, to_number = customer, hotline
        else:
            status, cause, disposition, answered = rng.choice(OUTCOMES)
            wait = rng.randint(2, 25)  # ringing
            talk = rng.randint(5, 900) if answered else 0
            extension = "" if app == "autocall" else rng.choice(V3_AGENTS)
            from_number, to_number = hotline, customer
            if direction == "local":
                callee = rng.choice(V3_AGENTS)
                from_number, to_number, receive_dest = extension, callee, callee
        duration = wait + talk
        started = ended - duration
        call_id = _uuid(rng)
        name = rng.choice(NAMES)
        presskey = rng.random() < 0.2
        return {
            "id": call_id,
            "parent_id": call_id,
            "sip_call_id": _uuid(rng),
            "cause": cause,
            "duration": duration,
            "direction": direction,
            "recording_url": (f"https://recording.example.vn/{call_id}.mp3" if answered else ""),
            "extension": extension,
            "from_number": from_number,
            "to_number": to_number,
            "receive_dest": receive_dest,
            "time_started": self.local(started),
            "time_answered": self.local(started + wait) if answered else "",
            "time_ended": self.local(ended),
            "time_ringging": self.local(started),
            "status": status,
            "billsec": talk,
            "app": app,
            "press_key": json.dumps({"1": self.local(started + wait + 3)}) if presskey else "{}",
            "fullname": "",
            "email": "",
            "username": f"agent{extension}" if extension else "",
            "sip_hangup_disposition": disposition,
            "campaign_uuid": rng.choice(CAMPAIGNS) if app == "autocall" else "",
            "lead_uuid": _uuid(rng) if app == "autocall" else "",
            "rate": "",
            "digits": "1" if presskey else "",
            "note": "",
            "customer_fullname": name if rng.random() < 0.5 else "",
            "customer_email": "",
            "demand_customer": "",
            "interest_segment": "",
            "additional": {
                "data1": rng.randint(0, 3),
                "miengiam": rng.choice(OFFERS),
                "phone_number": customer,
                "sdt": "09" + "".join(rng.choice("0123456789") for _ in range(8)),
                "ten": name,
            },
            "autocall_presskey_epoch": str(started + wait + 3) if presskey else "",
            "time_presskey": self.local(started + wait + 3) if presskey else "",
            "presskey_delay": 3 if presskey else 0,
            "autocall_recording_url": "",
            **self.extra_fields,
        }

    def record_bytes(self, i: int) -> bytes:
        cached = self._cache.get(i)
        if cached is None:
            cached = json.dumps(self.record(i), ensure_ascii=False).encode()
            if len(self._cache) < 3_000_000:
                self._cache[i] = cached
        return cached


class VccCall(NamedTuple):
    """A VCC Live call's durations, in seconds. ``billing`` is the whole call after
    the ringing (the IVR, the queue and the conversation), as VCC Live documents
    ``billingtime``."""

    inbound: bool
    answered: bool
    ivr: int
    queue: int
    ring: int
    talk: int
    hold: int
    wrap: int

    @property
    def billing(self) -> int:
        return self.ivr + self.queue + self.talk + self.hold


@dataclass
class VccDataset:
    """VCC Live CDRs, looked up by uuid or listed by day, ``step_seconds`` apart.

    The newest call starts at ``anchor``. Three calls are placed on purpose: calls 0
    and 1 start just after local midnight on the 1st of the anchor's month, so that
    their local (Europe/Budapest) and UTC month and day differ; call 2 starts at
    23:45 local the day before the anchor's local day and lasts 30 minutes, so that
    it ends on the next day. The others start ``step_seconds`` apart, in index order.
    A call is filed under the date (or month) its start has in the local zone or in
    UTC, as ``day_basis`` (``month_basis``) says.
    """

    records: int = 20
    seed: int = 1
    anchor: datetime = field(default_factory=default_anchor)
    step_seconds: int = 3600
    zone: str = "Europe/Budapest"
    month_basis: str = "local"  # or "utc": which month a lookup finds a call under
    day_basis: str = "local"  # or "utc": which day the CDR log lists a call under

    SPECIAL = 3  # calls placed on purpose, see the docstring

    def __post_init__(self) -> None:
        if self.anchor.tzinfo is None:
            self.anchor = self.anchor.replace(tzinfo=timezone.utc)
        self._tz = ZoneInfo(self.zone)
        self.uuids = [_uuid(random.Random(f"vcc-{self.seed}-{i}")) for i in range(self.records)]
        self._index = {u: i for i, u in enumerate(self.uuids)}
        self._cache: dict[int, bytes] = {}
        # Late-registered calls are hidden from the listing and the lookup until
        # released (POST /_sandbox/release).
        self.hidden: set[int] = set()

    def start_epoch(self, i: int) -> int:
        local_anchor = self.anchor.astimezone(self._tz)
        if i < 2:
            # Local 00:30 and 00:10 on the 1st of the anchor's month.
            first = local_anchor.replace(day=1, hour=0, minute=30 - 20 * i, second=0, microsecond=0)
            return int(first.timestamp())
        if i == 2:
            day_before = (local_anchor - timedelta(days=1)).date()
            late_evening = datetime(
                day_before.year, day_before.month, day_before.day, 23, 45, tzinfo=self._tz
            )
            return int(late_evening.timestamp())
        return int(self.anchor.timestamp()) - (self.records - 1 - i) * self.step_seconds

    def _timing(self, i: int) -> tuple[random.Random, int, VccCall]:
        """The record's generator, start, and call (the first draws of the generator,
        so that the end time costs no record)."""
        rng = random.Random(f"vcc-record-{self.seed}-{i}")
        inbound = rng.random() < 0.6
        answered = rng.random() < (0.8 if inbound else 0.5)
        if inbound:
            # IVR, then the queue, then the agent's phone rings: a caller gives up in
            # the queue or while it rings, after a few seconds or minutes.
            ivr = rng.randint(0, 20)
            queue = min(600, int(rng.expovariate(1 / 20)))
            ring = rng.randint(2, 12) if answered or rng.random() < 0.3 else 0
        else:
            ivr, queue, ring = 0, 0, rng.randint(3, 30)
        talk = rng.randint(30, 900) if answered else 0
        hold = rng.choice((0, 0, rng.randint(5, 120))) if answered else 0
        wrap = rng.randint(5, 90) if answered else 0
        if i == 2:  # an inbound call of 30 minutes, across midnight
            inbound, answered, ivr, queue, ring, hold, wrap = True, True, 5, 10, 5, 0, 20
            talk = 30 * 60 - ivr - queue - ring
        call = VccCall(inbound, answered, ivr, queue, ring, talk, hold, wrap)
        return rng, self.start_epoch(i), call

    def ended_epoch(self, i: int) -> int:
        _, start, call = self._timing(i)
        return start + call.ring + call.billing

    def project_of(self, i: int) -> int:
        return self._timing(i)[0].randint(1, 5)  # the record's next draw: its projectid

    def filed_under(self, i: int) -> tuple[int, int]:
        zone = self._tz if self.month_basis == "local" else timezone.utc
        moment = datetime.fromtimestamp(self.start_epoch(i), zone)
        return moment.year, moment.month

    def listed_on(self, i: int) -> date:
        zone = self._tz if self.day_basis == "local" else timezone.utc
        return datetime.fromtimestamp(self.start_epoch(i), zone).date()

    def listing(self, year: int, month: int, day: int | None) -> list[int]:
        """The calls the CDR log lists for a day (or a month), in no particular order:
        here, by uuid."""
        zone = self._tz if self.day_basis == "local" else timezone.utc
        first = date(year, month, day or 1)
        last = first + timedelta(days=1) if day else (first + timedelta(days=32)).replace(day=1)
        lo = int(datetime(first.year, first.month, first.day, tzinfo=zone).timestamp())
        hi = int(datetime(last.year, last.month, last.day, tzinfo=zone).timestamp())
        regular = range(self.SPECIAL, self.records)
        a = bisect.bisect_left(regular, lo, key=self.start_epoch)
        b = bisect.bisect_left(regular, hi, key=self.start_epoch)
        found = [
            *regular[a:b],
            *(i for i in range(min(self.SPECIAL, self.records)) if lo <= self.start_epoch(i) < hi),
        ]
        return sorted(found, key=self.uuids.__getitem__)

    def find(self, uuid: str) -> int | None:
        return self._index.get(uuid)

    def record_bytes(self, i: int) -> bytes:
        cached = self._cache.get(i)
        if cached is None:
            cached = json.dumps(self.record(i), ensure_ascii=False).encode()
            if len(self._cache) < 1_000_000:
                self._cache[i] = cached
        return cached

    def record(self, i: int) -> dict:
        rng, start, call = self._timing(i)
        projectid = rng.randint(1, 5)  # the next draw, as project_of() knows
        local = datetime.fromtimestamp(start, self._tz)
        utc = datetime.fromtimestamp(start, timezone.utc)
        # The conversation begins when the agent picks up, after the IVR, the queue
        # and the ringing.
        conversation = start + call.ivr + call.queue + call.ring
        billing_local = datetime.fromtimestamp(conversation, self._tz)
        billing_utc = datetime.fromtimestamp(conversation, timezone.utc)
        uuid = self.uuids[i]
        custom_key = "recordCustomFieldData" if i % 2 == 0 else "recordCustomFielData"
        answered, billing = call.answered, call.billing
        work = call.ring + billing + call.wrap
        if answered:
            dc = 16  # Q.850 normal clearing
        elif call.inbound:
            dc = 16  # the caller hung up
        else:
            dc = rng.choice((19, 19, 17, 16, 21))  # no answer, busy, cleared, rejected
        return {
            "projectid": projectid,
            "ringtime": call.ring,
            "special": False,
            "dispositionreach": 2 if answered else 1,
            "direction": "inbound" if call.inbound else "outbound",
            "prework": 0,
            "uuid": uuid,
            "shortid": f"{i:04X}T{rng.randint(0, 999):03d}E",
            "beforequeuetime": call.ivr,
            "userid": rng.randint(1, 12) if answered else -1,
            "dispositionstatus": rng.randint(1, 9),
            "callfilename": uuid,
            "destination": "36" + "".join(rng.choice("0123456789") for _ in range(8)),
            "start_ts": local.strftime(FMT),
            "start_ts_utc": utc.strftime(FMT),
            "afterwork": call.wrap,
            "source": "36" + "".join(rng.choice("0123456789") for _ in range(9)),
            "queuetime": call.queue,
            "numberid": i + 1,
            "billingtime": billing,
            "dispositionid": rng.randint(1, 4),
            "billing_ts": billing_local.strftime(FMT) if answered else "0000-00-00 00:00:00",
            "billing_ts_utc": billing_utc.strftime(FMT) if answered else "0000-00-00 00:00:00",
            "holdtime": call.hold,
            "talktime": call.talk,
            # Queues 1-4 take inbound calls, 5-6 are the outbound campaigns'.
            "queueid": rng.randint(1, 4) if call.inbound else rng.randint(5, 6),
            "next_contact": "0000-00-00 00:00:00",
            "next_contact_utc": "0000-00-00 00:00:00",
            "sum_work": f"{work // 3600:02d}:{work // 60 % 60:02d}:{work % 60:02d}",
            "call_quantity": f"{rng.random():.6f}",
            "call_rate": None,
            "currency": rng.choice((None, "HUF", "EUR")),
            "hangup_disposition": rng.choice(("customer", "agent")),
            "dc": dc,
            "dialermode": rng.randint(1, 3),
            "vcc_score": None,
            "pricetag": "hu-out-mobile",
            "disposition_comment": rng.choice((None, "", "Visszahívást kért — ügyfél elégedett")),
            "total_fee": None,
            custom_key: {"egyedimezo": rng.choice(("egyedimező-érték", "árvíztűrő tükörfúrógép"))},
            "statusArchived": "no",
            "lastArchivedTime": "0000-00-00 00:00:00",
            "lastArchivedTime_utc": "0000-00-00 00:00:00",
            "trashUserId": None,
            "deletedUserId": None,
        }
