"""Wait, for the demo: `demo_wait.py ready URL` until URL answers 200, and
`demo_wait.py webhooks SANDBOX_URL` until the sandbox has posted all its webhooks."""

from __future__ import annotations

import json
import sys
import time
import urllib.error
import urllib.request


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, b""
    except (urllib.error.URLError, OSError):
        return 0, b""


def main() -> int:
    what, url = sys.argv[1], sys.argv[2]
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        status, body = get(url if what == "ready" else f"{url}/_sandbox/stats")
        if what == "ready" and status == 200:
            return 0
        if what == "webhooks" and status == 200:
            stats = json.loads(body)
            if stats.get("webhooks_done"):
                print(
                    f"demo: webhooks delivered {stats['webhooks_delivered']} "
                    f"(+{stats['webhooks_duplicated']} sent twice, {stats['webhooks_retried']} "
                    f"retried), none for {len(stats['webhooks_skipped'])} calls; a call the "
                    "store already holds counts as delivered again, not as a new call"
                )
                return 0
        time.sleep(0.2)
    print(f"demo: gave up waiting for {what} at {url}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
