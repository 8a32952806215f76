"""Secrets out of every log line.

The tap builds its messages without secrets, but some text comes from elsewhere: an
API's error body that echoes the credential it refused, a database driver's message,
a stream map's exception. The values of the secret settings, the passwords inside the
intake store's URL and the tokens fetched during the run are replaced with ``***`` in
every line, whoever logs it.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import parse_qsl, urlsplit

if sys.version_info >= (3, 12):
    from typing import override
else:
    from typing_extensions import override

# Shorter values are not secrets anyone would use, and replacing them would garble
# ordinary words of the messages.
MIN_SECRET_LENGTH = 6
MASK = "***"


class Redactor(logging.Filter):
    """A logging filter that masks the secrets it was told about."""

    def __init__(self) -> None:
        super().__init__()
        self.secrets: set[str] = set()

    def add(self, value: Any) -> None:
        if isinstance(value, str) and len(value) >= MIN_SECRET_LENGTH:
            self.secrets.add(value)

    def add_url(self, url: Any) -> None:
        """A database URL's password, in its userinfo or its query (`password=`)."""
        if not isinstance(url, str):
            return
        self.add(url)
        try:
            parts = urlsplit(url)
            self.add(parts.password)
            for key, value in parse_qsl(parts.query):
                if "password" in key.lower() or "secret" in key.lower():
                    self.add(value)
        except ValueError:
            pass

    def scrub(self, text: str) -> str:
        for secret in sorted(self.secrets, key=len, reverse=True):
            text = text.replace(secret, MASK)
        return text

    @override
    def filter(self, record: logging.LogRecord) -> bool:
        if self.secrets:
            message = record.getMessage()
            scrubbed = self.scrub(message)
            if scrubbed != message:
                record.msg, record.args = scrubbed, ()
        return True

    def install(self) -> None:
        """Filter every line the root logger's handlers write (the SDK's console
        handler, or the one Meltano's logging config sets up)."""
        for handler in logging.getLogger().handlers:
            if self not in handler.filters:
                handler.addFilter(self)


REDACTOR = Redactor()


def secret_paths(schema: Mapping[str, Any], prefix: str = "") -> Iterable[str]:
    """The dotted names of the settings that the schema marks secret."""
    for name, prop in schema.get("properties", {}).items():
        if prop.get("secret"):
            yield prefix + name
        yield from secret_paths(prop, f"{prefix}{name}.")


def value_at(config: Mapping[str, Any], path: str) -> Any:
    value: Any = config
    for part in path.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    return value
