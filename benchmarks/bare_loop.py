"""The reference: a bare `requests` + `json.loads` pager that writes one Singer RECORD
line per record with `json.dumps` (or orjson with --orjson). No SDK, no normalisation.

    python benchmarks/bare_loop.py URL TOKEN PAGE_SIZE [--orjson] > /dev/null
"""

from __future__ import annotations

import json
import sys

import requests


def main() -> None:
    url, token, page_size = sys.argv[1], sys.argv[2], int(sys.argv[3])
    use_orjson = "--orjson" in sys.argv
    if use_orjson:
        import orjson  # noqa: PLC0415 (optional, only for this contender)

        loads = orjson.loads

        def line(record: dict) -> bytes:
            return orjson.dumps({"type": "RECORD", "stream": "cdr_v3", "record": record}) + b"\n"
    else:
        loads = json.loads

        def line(record: dict) -> bytes:
            return (
                json.dumps({"type": "RECORD", "stream": "cdr_v3", "record": record}) + "\n"
            ).encode()

    out = sys.stdout.buffer
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {token}"
    offset = 0
    while True:
        response = session.get(f"{url}/v3/cdr", params={"limit": page_size, "offset": offset})
        response.raise_for_status()
        body = loads(response.content)
        data = body["data"]
        for record in data:
            out.write(line(record))
        offset += len(data)
        if not data or offset >= body["total"]:
            break
    out.flush()


if __name__ == "__main__":
    main()
