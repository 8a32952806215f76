"""The sandbox reproduces the documented behaviour and quirks of the v3 API."""

from __future__ import annotations

import requests

from tests.conftest import ANCHOR


def get(server, token: str | None = "sandbox-token", **params):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return requests.get(f"{server.url}/v3/cdr", params=params, headers=headers, timeout=10)


def test_no_data_without_limit_and_offset(sandbox):
    server = sandbox(records=10)
    assert get(server).json()["data"] == []
    assert get(server, limit=5).json()["data"] == []
    assert len(get(server, limit=5, offset=0).json()["data"]) == 5


def test_echoed_offset_is_minus_one_and_newest_first(sandbox):
    server = sandbox(records=10)
    body = get(server, limit=3, offset=2).json()
    assert body["offset"] == -1 and body["limit"] == 3 and body["total"] == 10
    times = [r["time_ended"] for r in body["data"]]
    assert times == sorted(times, reverse=True)
    newest = get(server, limit=1, offset=0).json()["data"][0]["time_ended"]
    assert newest == "2024-03-10 19:00:00"  # ANCHOR in Ho Chi Minh City
    assert ANCHOR.hour == 12


def test_auth(sandbox):
    server = sandbox(records=3)
    assert get(server, token=None, limit=1, offset=0).status_code == 401
    assert get(server, token="wrong", limit=1, offset=0).status_code == 401
    bare = requests.get(
        f"{server.url}/v3/cdr",
        params={"limit": 1, "offset": 0},
        headers={"Authorization": "sandbox-token"},
        timeout=10,
    )
    assert bare.status_code == 200  # the vendor's prose shows a bare token
    issued = requests.post(
        f"{server.url}/v3/auth/token", json={"api_key": "sandbox-api-key"}, timeout=10
    ).json()
    assert issued["token_type"] == "Bearer"
    assert get(server, token=issued["token"], limit=1, offset=0).status_code == 200
    refused = requests.post(f"{server.url}/v3/auth/token", json={"api_key": "x"}, timeout=10)
    assert refused.status_code == 401


def test_end_time_filters_are_inclusive_and_other_filters_apply(sandbox):
    server = sandbox(records=100, step_seconds=900)
    body = get(
        server,
        limit=100,
        offset=0,
        start_date_ended="2024-03-10 18:00:00",
        end_date_ended="2024-03-10 19:00:00",
    ).json()
    assert [r["time_ended"][11:] for r in body["data"]] == [
        "19:00:00",
        "18:45:00",
        "18:30:00",
        "18:15:00",
        "18:00:00",
    ]
    inbound = get(server, limit=100, offset=0, direction="inbound").json()
    assert inbound["total"] == len(inbound["data"]) > 0
    assert {r["direction"] for r in inbound["data"]} == {"inbound"}
    status = get(server, limit=100, offset=0, status="ANSWERED").json()
    assert {r["status"] for r in status["data"]} == {"answered"}


def test_bad_date_is_a_400(sandbox):
    server = sandbox(records=3)
    response = get(server, limit=1, offset=0, start_date_ended="03/07/2023")
    assert response.status_code == 400 and "invalid date" in response.json()["message"]


def test_same_seed_same_data(sandbox):
    a = sandbox(records=20, seed=7)
    b = sandbox(records=20, seed=7)
    assert get(a, limit=20, offset=0).json() == get(b, limit=20, offset=0).json()


def test_data_has_the_documented_variety(sandbox):
    server = sandbox(records=300)
    data = get(server, limit=300, offset=0).json()["data"]
    assert {r["direction"] for r in data} == {"inbound", "outbound", "local"}
    assert len({r["status"] for r in data}) >= 3
    assert len({r["campaign_uuid"] for r in data if r["campaign_uuid"]}) == 3
    assert any(r["time_answered"] == "" for r in data)
    assert any("Đ" in r["additional"]["ten"] for r in data)
