"""The shared REST base: timeouts, the retry policy, response validation, one request
per page, and error messages that say what was requested and never hold a secret.

Only this module and auth.py know HTTP details.
"""

from __future__ import annotations

import decimal
import logging
import random
import socket
import ssl
import sys
import threading
from functools import cached_property
from http import HTTPStatus
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import msgspec
import requests
from requests.adapters import HTTPAdapter
from singer_sdk.exceptions import FatalAPIError, RetriableAPIError
from singer_sdk.pagination import SinglePagePaginator
from singer_sdk.streams import RESTStream
from urllib3.exceptions import InvalidHeader
from urllib3.util import Retry

from tap_cdr import settings
from tap_cdr.auth import error_text
from tap_cdr.pager import Page
from tap_cdr.wording import counted

if TYPE_CHECKING:
    from collections.abc import Generator, Iterable

    from singer_sdk.helpers.types import Context

if sys.version_info >= (3, 12):
    from typing import override
else:
    from typing_extensions import override

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


def _prepared(request: Any) -> requests.PreparedRequest | None:
    return request if isinstance(request, requests.PreparedRequest) else None


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


def network_reason(exc: BaseException, timeout: float) -> str:
    """Why a request got no response, in words: the OS error under requests' and
    urllib3's wrappers (refused, unknown host, TLS), or the timeout."""
    if isinstance(exc, requests.exceptions.Timeout):
        return f"no response within {timeout:g} s (`request_timeout_seconds`)"
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo:
        current = todo.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, socket.gaierror):
            return "the host name does not resolve"
        if isinstance(current, ssl.SSLError):
            return f"TLS failed ({current.reason or current})"
        if isinstance(current, ConnectionRefusedError):
            return "connection refused: nothing listens at that address"
        if isinstance(current, OSError) and current.strerror:
            return current.strerror.lower()
        todo += [arg for arg in current.args if isinstance(arg, BaseException)]
        todo += [
            found
            for found in (current.__cause__, current.__context__, getattr(current, "reason", None))
            if isinstance(found, BaseException)
        ]
    return type(exc).__name__


_SDK_SYNC_FAILED = "An unhandled error occurred while syncing '%s'"


def _said_once(record: logging.LogRecord) -> bool:
    """Drop the lines that say again what the tap says once: backoff's own line for
    every retry and for the last failure (the SDK hands it the stream's logger;
    `backoff_handler` logs each retry), and the SDK's note that a stream failed (the
    run's error line names the stream and the cause)."""
    if record.funcName in ("_log_backoff", "_log_giveup"):
        return False
    return record.msg != _SDK_SYNC_FAILED


class OnePage(SinglePagePaginator):
    """One request is one page. An empty page ends it quietly, not with the SDK's
    "pagination stopped" line: the streams plan their pages and expect empty ones."""

    @override
    def continue_if_empty(self, response: requests.Response) -> bool:
        return True


class ServerWait(float):
    """A wait the server asked for (Retry-After): honoured as is, never jittered."""

    __slots__ = ()


_RETRY_AFTER = Retry()


def retry_after_seconds(response: requests.Response | None) -> float | None:
    """Retry-After as seconds, from either of its forms (delta-seconds or HTTP date)."""
    if response is None:
        return None
    value = response.headers.get("Retry-After", "").strip()
    if not value:
        return None
    try:
        return _RETRY_AFTER.parse_retry_after(value)
    except InvalidHeader:
        return None


class CdrApiStream(RESTStream[Any]):
    """Base for the CDR streams: one config section per API, shared HTTP policy.

    Every request is one page (`get_new_paginator` returns None): the streams plan
    their pages themselves (pager.py), so that pages can be fetched concurrently,
    and each goes through the SDK's `request_records` for auth, retries and metrics.
    """

    #: The config object that configures this stream (e.g. ``cdr_v3``).
    settings_key: str = ""
    #: The route (URL template) of a request whose context names no other.
    route: str = ""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._page_meta = threading.local()
        self.logger.addFilter(_said_once)

    @override
    @property
    def path(self) -> str:  # type: ignore[override] # the SDK's is a plain attribute
        """The route of the request this thread is making: the SDK builds the URL
        from it and tags the request's metrics with it."""
        return getattr(self._page_meta, "route", self.route)

    def route_for(self, context: Context | None) -> str:
        """The route a request with this context goes to."""
        del context
        return self.route

    @property
    def max_concurrency(self) -> int:
        """Requests in flight at once, for the size of the connection pool."""
        return 1

    @cached_property
    def http(self) -> settings.HttpSettings:
        return settings.http_settings(self.config)

    @override
    @property
    def timeout(self) -> int:
        # The SDK annotates int; requests takes any number of seconds.
        return self.http.timeout  # type: ignore[return-value]

    @override
    def get_new_paginator(self) -> OnePage:
        return OnePage()

    @override
    @cached_property
    def requests_session(self) -> requests.Session:
        # The SDK's session, shared by the fetching threads: its pool must hold a
        # connection per worker (requests keeps 10 by default).
        session = super().requests_session
        adapter = HTTPAdapter(pool_maxsize=max(10, self.max_concurrency))
        session.mount("https://", adapter)
        session.mount("http://", adapter)
        return session

    @override
    def build_prepared_request(self, *args: Any, **kwargs: Any) -> requests.PreparedRequest:
        # The SDK's version also authenticates here, outside its retries: a token fetch
        # that got no response would end the run at its first attempt. The SDK's request
        # path authenticates each attempt anyway, within the retries.
        request = requests.Request(*args, **kwargs)
        request.headers.setdefault("User-Agent", self.user_agent)
        return self.requests_session.prepare_request(request)

    def fetch_page(self, context: dict[str, Any]) -> Page:
        """One request through the SDK's request path (auth, retries, metrics).

        A request that still fails after the last retry ends the run with one line
        that says what was requested, why it failed and which setting to check."""
        meta = self._page_meta
        meta.route = self.route_for(context)
        try:
            rows = list(self.request_records(context))
        except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as exc:
            raise CdrApiError(self.unreachable_message(exc)) from None
        except RetriableAPIError as exc:
            raise CdrApiError(
                f"{exc}; still failing after {counted(self.http.max_tries, 'attempt')} "
                "(`max_request_tries`): the API is down or overloaded, run again later"
            ) from None
        return Page(rows, meta.total, meta.waited)

    def unreachable_message(self, exc: requests.exceptions.RequestException) -> str:
        return (
            f"{self.name}: {describe_request(_prepared(exc.request))} got no response after "
            f"{counted(self.http.max_tries, 'attempt')}: "
            f"{network_reason(exc, self.http.timeout)}. Check {self.where_base_url()} and "
            "that this machine can reach it"
        )

    def where_base_url(self) -> str:
        """The setting that sets the API's address, for error messages."""
        return f"`{self.settings_key}.base_url` ({self.url_base})"

    @override
    def parse_response(self, response: requests.Response) -> Iterable[dict[str, Any]]:
        rows, total = self.parse_page(response)
        self._page_meta.total = total
        self._page_meta.waited = response.elapsed.total_seconds()
        return rows

    def parse_page(self, response: requests.Response) -> tuple[list[dict[str, Any]], int | None]:
        """The rows of a validated response, and the total it reports (or None)."""
        raise NotImplementedError

    # -- retries: the SDK's backoff decorator, with our wait policy ------------------

    @override
    def backoff_max_tries(self) -> int:
        return self.http.max_tries

    @override
    def backoff_wait_generator(self) -> Generator[float, Any, None]:
        """Exponential waits (1, 2, 4 ... s), or the server's Retry-After when given;
        every wait capped by ``max_retry_wait_seconds``."""
        cap = self.http.max_retry_wait
        attempt = 0
        exception = yield 0.0  # primed by backoff
        while True:
            server_wait = retry_after_seconds(getattr(exception, "response", None))
            wait: float
            if getattr(exception, "retry_now", False):
                wait = ServerWait(0.0)
            elif server_wait is not None:
                wait = ServerWait(min(server_wait, cap))
            else:
                wait = min(cap, float(2**attempt))
            attempt += 1
            exception = yield wait

    @override
    def backoff_jitter(self, value: float) -> float:
        if isinstance(value, ServerWait):
            return float(value)
        # Full jitter spreads the retries of many taps hitting one API.
        return random.uniform(value / 2, value)  # noqa: S311 (jitter, not a secret)

    @override
    def backoff_handler(self, details: Any) -> None:
        """One line per retry. A token renewed after a 401 is routine: INFO."""
        exception = details.get("exception")
        renewing = getattr(exception, "retry_now", False)
        self.logger.log(
            logging.INFO if renewing else logging.WARNING,
            "%s: attempt %d failed (%s)%s; retrying in %.1f s",
            self.name,
            details.get("tries", 0),
            str(exception)
            if isinstance(exception, RetriableAPIError)
            else f"{type(exception).__name__}: {network_reason(exception, self.http.timeout)}",
            self.retry_note(details),
            details.get("wait") or 0.0,
        )

    def retry_note(self, details: Any) -> str:
        """What else a retry changes, said in its line."""
        del details
        return ""

    # -- responses -------------------------------------------------------------------

    @override
    def validate_response(self, response: requests.Response) -> None:
        if response.status_code == HTTPStatus.UNAUTHORIZED:
            self.handle_unauthorized(response)
        # 429 and 5xx are retried, any other 4xx is fatal (the SDK's rule).
        super().validate_response(response)
        try:
            body = json_body(response)
        except ValueError:
            raise RetriableAPIError(
                self.response_error_message(response, "the body is not valid JSON"),
                response,
            ) from None
        problem = self.body_problem(response, body)
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

    def body_problem(self, response: requests.Response, body: Any) -> str | None:
        """What is wrong with a decoded 200 body of this response, or None."""
        del response
        return self.envelope_problem(body)

    @staticmethod
    def envelope_problem(body: Any) -> str | None:
        """What is wrong with a decoded 200 body, or None if it is as documented."""
        del body
        return None

    @override
    def response_error_message(self, response: requests.Response, problem: str = "") -> str:
        reason = problem or error_text(response)
        return (
            f"{self.name}: {describe_request(response.request)} -> "
            f"{response.status_code} {response.reason}: {reason}"
        )
