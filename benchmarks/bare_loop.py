"""The reference: a bare `requests` + `json.loads` pager that writes one Singer RECORD
line per record with `json.dumps` (or orjson with --orjson). No SDK, no normalisation.

    python benchmarks/bare_loop.py URL TOKEN PAGE_SIZE [--orjson] > /dev/null
    python benchmarks/bare_loop.py URL VCC_TOKEN NUM --vcc-days FIRST LAST [--orjson]

The second form pages the VCC CDR log of each date from FIRST to LAST (ISO dates)
with `num` and `start`, until a page shorter than `num`.
"""

from __future__ import annotations

import json
import sys
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any

import requests

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator


def v3_pages(session: requests.Session, url: str, page_size: int, loads: Callable) -> Iterator:
    offset = 0
    while True:
        response = session.get(f"{url}/v3/cdr", params={"limit": page_size, "offset": offset})
        response.raise_for_status()
        body = loads(response.content)
        yield body["data"]
        offset += len(body["data"])
        if not body["data"] or offset >= body["total"]:
            return


def vcc_pages(
    session: requests.Session, url: str, num: int, loads: Callable, days: tuple[date, date]
) -> Iterator:
    day, last = days
    while day <= last:
        start = 0
        while True:
            path = f"{url}/v2/cdrs/{day:%Y}/{day:%m}/{day:%d}"
            response = session.get(path, params={"num": num, "start": start})
            response.raise_for_status()
            rows = loads(response.content)["response"]["rows"]
            yield rows
            start += len(rows)
            if len(rows) < num:
                break
        day += timedelta(days=1)


def main() -> None:
    url, token, page_size = sys.argv[1], sys.argv[2], int(sys.argv[3])
    loads: Callable[[bytes], Any] = json.loads
    if "--orjson" in sys.argv:
        import orjson  # noqa: PLC0415 (optional, only for this contender)

        loads = orjson.loads

        def line(stream: str, record: dict) -> bytes:
            return orjson.dumps({"type": "RECORD", "stream": stream, "record": record}) + b"\n"
    else:

        def line(stream: str, record: dict) -> bytes:
            return (
                json.dumps({"type": "RECORD", "stream": stream, "record": record}) + "\n"
            ).encode()

    session = requests.Session()
    if "--vcc-days" in sys.argv:
        at = sys.argv.index("--vcc-days")
        first, last = date.fromisoformat(sys.argv[at + 1]), date.fromisoformat(sys.argv[at + 2])
        session.auth = ("sandbox", token)
        stream, pages = "cdr_by_uuid", vcc_pages(session, url, page_size, loads, (first, last))
    else:
        session.headers["Authorization"] = f"Bearer {token}"
        stream, pages = "cdr_v3", v3_pages(session, url, page_size, loads)
    out = sys.stdout.buffer
    for page in pages:
        for record in page:
            out.write(line(stream, record))
    out.flush()


if __name__ == "__main__":
    main()
