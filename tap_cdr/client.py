"""The shared REST base: authentication, timeouts, response validation, and error
messages that say what was requested and never contain a secret.

Only this module knows HTTP details.
"""

from __future__ import annotations

import decimal
import email.utils
import random
import threading
import time
from collections.abc import Generator
from functools import cached_property
from http import HTTPStatus
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import msgspec
import requests
from singer_sdk.authenticators import APIAuthenticatorBase
from singer_sdk.exceptions import FatalAPIError, RetriableAPIError
from singer_sdk.streams import RESTStream

from tap_cdr import settings

REQUEST_TIMEOUT_SECONDS = settings.DEFAULT_REQUEST_TIMEOUT_SECONDS
_BODY_ATTR = "_tap_cdr_body"


class CdrApiError(FatalAPIError):
    """A failure that retrying will not fix, with a message fit for a log line."""


def describe_request(request: requests.PreparedRequest | None) -> str:
    """``METHOD url`` with any userinfo removed (credentials travel in headers)."""
    if request is None:
        return "request"
    parts = urlsplit(request.url or "")
    netloc = parts.hostname or ""
    if parts.port:
        netloc += f":{parts.port}"
    return f"{request.method} {urlunsplit(parts._replace(netloc=netloc))}"


def error_text(response: requests.Response, limit: int = 300) -> str:
    """The error message in a response body, or the start of the body."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        for key in ("message", "error", "errors", "detail", "msg"):
            if body.get(key):
                return str(body[key])[:limit]
    text = response.text.strip().replace("\n", " ")
    return text[:limit] if text else "(empty body)"


# msgspec parses pages several times faster than json; Decimals keep non-integer
# numbers exact, as the SDK's own parser does.
_decoder = msgspec.json.Decoder(float_hook=decimal.Decimal)


def json_body(response: requests.Response) -> Any:
    """The decoded body, parsed once per response (validation and parsing share it).

    Raises ValueError when the body is not JSON.
    """
    cached = getattr(response, _BODY_ATTR, None)
    if cached is None:
        try:
            cached = _decoder.decode(response.content)
        except msgspec.DecodeError as exc:
            raise ValueError(str(exc)) from None
        setattr(response, _BODY_ATTR, cached)
    return cached


class V3TokenAuthenticator(APIAuthenticatorBase):
    """``Authorization: Bearer <token>``, from a configured token or from an api_key.

    With an api_key, the token is fetched from ``POST {base_url}/v3/auth/token`` on
    first use, and fetched again once when the API answers 401 (the token expired or
    was revoked). A second 401 in a row, with a token fetched just then, is fatal.
    """

    def __init__(
        self,
        *,
        base_url: str,
        token: str | None = None,
        api_key: str | None = None,
        timeout: float = REQUEST_TIMEOUT_SECONDS,
    ) -> None:
        super().__init__()
        self.base_url = base_url
        self._token = token
        self._api_key = api_key
        self._timeout = timeout
        self._refreshed = False
        self._retired: str | None = None
        # Pages are fetched from several threads: one of them fetches a token.
        self._lock = threading.Lock()

    def authenticate_request(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        with self._lock:
            if self._token is None:
                self._token = self._fetch_token()
            request.headers["Authorization"] = f"Bearer {self._token}"
        return request

    def mark_proven(self) -> None:
        """The current token worked: a later 401 may refresh it again."""
        self._refreshed = False

    def refresh_after_401(self, failed: requests.PreparedRequest | None) -> bool:
        """Drop the token so the next request fetches a new one; False if pointless.

        A 401 to a token that another thread has already replaced just retries.
        """
        with self._lock:
            if self._api_key is None:
                return False
            sent = failed.headers.get("Authorization") if failed is not None else None
            current = f"Bearer {self._token}" if self._token else None
            if sent != current and (current is not None or sent == self._retired):
                return True  # that token is already being replaced
            if self._refreshed:
                return False
            self._retired, self._token, self._refreshed = current, None, True
            return True

    def _fetch_token(self) -> str:
        url = f"{self.base_url}/v3/auth/token"
        try:
            response = requests.post(url, json={"api_key": self._api_key}, timeout=self._timeout)
        except requests.RequestException as exc:
            raise RetriableAPIError(f"POST {url}: {type(exc).__name__}") from None
        if response.status_code >= HTTPStatus.INTERNAL_SERVER_ERROR or response.status_code == 429:
            raise RetriableAPIError(
                f"POST {url} -> {response.status_code}: {error_text(response)}",
                response,
            )
        if response.status_code != HTTPStatus.OK:
            raise CdrApiError(
                f"POST {url} -> {response.status_code}: {error_text(response)}. "
                "The api_key (cdr_v3.api_key) was refused: check it with the operator."
            )
        try:
            token = response.json().get("token")
        except (ValueError, AttributeError):
            token = None
        if not token or not isinstance(token, str):
            raise CdrApiError(
                f"POST {url} -> 200 but the body has no `token`: {error_text(response)}"
            )
        return token


class ServerWait(float):
    """A wait the server asked for (Retry-After): honoured as is, never jittered."""


def retry_after_seconds(response: requests.Response | None) -> float | None:
    """Retry-After as seconds, from either of its forms (delta-seconds or HTTP date)."""
    if response is None:
        return None
    value = response.headers.get("Retry-After", "").strip()
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, moment.timestamp() - time.time())


class RequestCounts:
    """Requests and retries so far, for progress lines (pages arrive from threads)."""

    def __init__(self) -> None:
        self.requests = 0
        self.retries = 0
        self._lock = threading.Lock()

    def add(self, requests: int = 0, retries: int = 0) -> None:
        with self._lock:
            self.requests += requests
            self.retries += retries


class CdrApiStream(RESTStream):
    """Base for the CDR streams: one config section per API, shared HTTP policy."""

    #: The config object that configures this stream (e.g. ``cdr_v3``).
    settings_key: str = ""

    @cached_property
    def http(self) -> settings.HttpSettings:
        return settings.http_settings(self.config)

    @property
    def timeout(self) -> float:  # type: ignore[override]
        return self.http.timeout

    # -- retries: the SDK's backoff decorator, with our wait policy ------------------

    def backoff_max_tries(self) -> int:
        return self.http.max_tries

    def backoff_wait_generator(self) -> Generator[float, Any, None]:  # type: ignore[override]
        """Exponential waits (1, 2, 4 ... s), or the server's Retry-After when given;
        every wait capped by ``max_retry_wait_seconds``."""
        cap = self.http.max_retry_wait
        attempt = 0
        exception = yield 0.0  # primed by backoff
        while True:
            response = getattr(exception, "response", None)
            server_wait = retry_after_seconds(response)
            if getattr(exception, "retry_now", False):
                wait: float = ServerWait(0.0)
            elif server_wait is not None:
                wait = ServerWait(min(server_wait, cap))
            else:
                wait = min(cap, float(2**attempt))
            attempt += 1
            exception = yield wait

    def backoff_jitter(self, value: float) -> float:
        if isinstance(value, ServerWait):
            return float(value)
        # Full jitter spreads the retries of many taps hitting one API.
        return random.uniform(value / 2, value)

    @cached_property
    def progress(self) -> RequestCounts:
        return RequestCounts()

    def backoff_handler(self, details: Any) -> None:
        self.progress.add(retries=1)
        exception = details.get("exception")
        self.logger.warning(
            "%s: attempt %d failed (%s); retrying in %.1f s",
            self.name,
            details.get("tries", 0),
            str(exception)
            if isinstance(exception, RetriableAPIError)
            else type(exception).__name__,
            details.get("wait") or 0.0,
        )

    def validate_response(self, response: requests.Response) -> None:
        self.progress.add(requests=1)
        status = response.status_code
        if status == HTTPStatus.UNAUTHORIZED:
            self.handle_unauthorized(response)
        if status == HTTPStatus.TOO_MANY_REQUESTS or status >= HTTPStatus.INTERNAL_SERVER_ERROR:
            raise RetriableAPIError(self.response_error_message(response), response)
        if status >= HTTPStatus.BAD_REQUEST:
            raise CdrApiError(self.response_error_message(response))
        try:
            body = json_body(response)
        except ValueError:
            raise RetriableAPIError(
                self.response_error_message(response, "the body is not valid JSON"),
                response,
            ) from None
        problem = self.envelope_problem(body)
        if problem:
            # Never treat a malformed body as an empty page: that would end
            # pagination early and silently lose records.
            raise RetriableAPIError(self.response_error_message(response, problem), response)

    def handle_unauthorized(self, response: requests.Response) -> None:
        """Retry once with fresh credentials if the authenticator can get them."""
        raise CdrApiError(
            self.response_error_message(response)
            + f". The credentials in `{self.settings_key}` were refused."
        )

    @staticmethod
    def envelope_problem(body: Any) -> str | None:
        """What is wrong with a decoded 200 body, or None if it is as documented."""
        return None

    def response_error_message(self, response: requests.Response, problem: str = "") -> str:
        reason = problem or error_text(response)
        return (
            f"{self.name}: {describe_request(response.request)} -> "
            f"{response.status_code} {response.reason}: {reason}"
        )
