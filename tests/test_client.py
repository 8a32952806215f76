"""The retry policy: Retry-After in both forms, capped, never jittered; expo otherwise."""

from __future__ import annotations

import email.utils
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests
from singer_sdk.exceptions import FatalAPIError, RetriableAPIError
from typing_extensions import override

from tap_cdr.auth import V3TokenAuthenticator
from tap_cdr.client import ServerWait, describe_request, retry_after_seconds
from tap_cdr.tap import TapCDR


def response_with(headers: dict, status: int = 429) -> requests.Response:
    response = requests.Response()
    response.status_code = status
    response.headers.update(headers)
    return response


def stream(**config):
    tap = TapCDR(
        config={"cdr_v3": {"base_url": "https://api.example.vn", "token": "t"}, **config},
        parse_env_config=False,
    )
    return tap.streams["cdr_v3"]


def test_retry_after_seconds_and_http_date():
    assert retry_after_seconds(response_with({"Retry-After": "7"})) == 7.0
    later = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 25 <= retry_after_seconds(response_with({"Retry-After": later})) <= 31
    assert retry_after_seconds(response_with({})) is None
    assert retry_after_seconds(response_with({"Retry-After": "soon"})) is None


def test_waits_follow_retry_after_capped_and_unjittered():
    cdr = stream(max_retry_wait_seconds=10)
    waits = cdr.backoff_wait_generator()
    next(waits)
    slow = RetriableAPIError("429", response_with({"Retry-After": "3"}))
    huge = RetriableAPIError("429", response_with({"Retry-After": "3600"}))
    assert waits.send(slow) == 3.0 and isinstance(waits.send(slow), ServerWait)
    assert waits.send(huge) == 10.0
    assert cdr.backoff_jitter(ServerWait(3.0)) == 3.0


def test_waits_without_retry_after_grow_and_are_capped():
    cdr = stream(max_retry_wait_seconds=5)
    waits = cdr.backoff_wait_generator()
    next(waits)
    error = RetriableAPIError("503", response_with({}, 503))
    assert [waits.send(error) for _ in range(5)] == [1.0, 2.0, 4.0, 5.0, 5.0]
    assert 2.0 <= cdr.backoff_jitter(4.0) <= 4.0


def test_settings_reach_the_stream():
    cdr = stream(request_timeout_seconds=7, max_request_tries=9)
    assert cdr.timeout == 7.0 and cdr.backoff_max_tries() == 9


def test_describe_request_drops_userinfo():
    request = requests.Request("GET", "https://user:pw@api.example.vn/v3/cdr?limit=1").prepare()
    assert describe_request(request) == "GET https://api.example.vn/v3/cdr?limit=1"


class TokenUnderAnotherName(BaseHTTPRequestHandler):
    """A token endpoint that answers 200 with the token under a key we do not read."""

    def do_POST(self) -> None:
        body = json.dumps({"access_token": "s3cret-token-9", "token_type": "Bearer"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    @override
    def log_message(self, format: str, *args: object) -> None:
        pass


def test_a_token_body_without_token_is_fatal_and_names_only_its_keys():
    server = ThreadingHTTPServer(("127.0.0.1", 0), TokenUnderAnotherName)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        auth = V3TokenAuthenticator(
            base_url=f"http://127.0.0.1:{server.server_port}",
            token=None,
            api_key="k",
            timeout=5,
        )
        request = requests.Request("GET", "http://127.0.0.1/v3/cdr").prepare()
        with pytest.raises(FatalAPIError) as info:
            auth.authenticate_request(request)
    finally:
        server.shutdown()
        server.server_close()
    assert "no `token`" in str(info.value) and "access_token" in str(info.value)
    assert "s3cret-token-9" not in str(info.value)
