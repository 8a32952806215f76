"""The streams, one module per API."""

from tap_cdr.streams.v3 import CdrV3Stream
from tap_cdr.streams.vcc import CdrByUuidStream

__all__ = ["CdrByUuidStream", "CdrV3Stream"]
