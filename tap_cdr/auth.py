"""Authentication for the two APIs.

TEL4VN v3 takes ``Authorization: Bearer <token>``, where the token is configured or
exchanged for an api_key; VCC Live takes HTTP Basic on every request (requests'
``HTTPBasicAuth``, as the SDK's template recommends).
"""

from __future__ import annotations

import sys
import threading
from http import HTTPStatus

import requests
from requests.auth import HTTPBasicAuth
from singer_sdk.authenticators import APIAuthenticatorBase
from singer_sdk.exceptions import FatalAPIError, RetriableAPIError

from tap_cdr.redact import REDACTOR

if sys.version_info >= (3, 12):
    from typing import override
else:
    from typing_extensions import override

__all__ = ["HTTPBasicAuth", "V3TokenAuthenticator"]


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
        token: str | None,
        api_key: str | None,
        timeout: float,
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

    @override
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
        # A connection error or timeout propagates as it is: the SDK retries it, and
        # the stream names the base_url once it gives up. The api_key is in the body,
        # which requests' exceptions never show.
        response = requests.post(url, json={"api_key": self._api_key}, timeout=self._timeout)
        status = response.status_code
        if status >= HTTPStatus.INTERNAL_SERVER_ERROR or status == HTTPStatus.TOO_MANY_REQUESTS:
            raise RetriableAPIError(
                f"cdr_v3: POST {url} -> {status}: {error_text(response)}", response
            )
        if status != HTTPStatus.OK:
            raise FatalAPIError(
                f"cdr_v3: POST {url} -> {status}: {error_text(response)}. The api_key "
                "(`cdr_v3.api_key`) was refused: check it with the API's operator"
            )
        try:
            body = response.json()
        except ValueError:
            body = None
        token = body.get("token") if isinstance(body, dict) else None
        if not token or not isinstance(token, str):
            # Name the keys only: the values may be a token under another name.
            found = f"keys {sorted(body)[:20]}" if isinstance(body, dict) else "not a JSON object"
            raise FatalAPIError(
                f"cdr_v3: POST {url} -> 200 but the body has no `token` ({found}): is "
                "`cdr_v3.base_url` the TEL4VN v3 API?"
            )
        REDACTOR.add(token)  # an API's error body may echo it
        return token
