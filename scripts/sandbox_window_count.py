"""How many calls the sandbox serves for the tap's default window (used by the demo)."""

from __future__ import annotations

import sys
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import requests

base_url = sys.argv[1]
zone = ZoneInfo("Asia/Ho_Chi_Minh")
end = datetime.now(timezone.utc) - timedelta(minutes=5)
start = end - timedelta(days=30)
params: dict[str, str | int] = {
    "limit": 1,
    "offset": 0,
    "start_date_ended": start.astimezone(zone).strftime("%Y-%m-%d %H:%M:%S"),
    "end_date_ended": end.astimezone(zone).strftime("%Y-%m-%d %H:%M:%S"),
}
response = requests.get(
    f"{base_url}/v3/cdr",
    params=params,
    headers={"Authorization": "Bearer sandbox-token"},
    timeout=30,
)
response.raise_for_status()
print(response.json()["total"])
