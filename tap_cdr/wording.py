"""Counts in log lines and messages, worded as a person would write them."""

from __future__ import annotations


def counted(number: int, noun: str, plural: str | None = None) -> str:
    """``1 call``, ``2 calls``, ``0 calls`` (``plural`` for the irregular ones)."""
    return f"{number:,} {noun if number == 1 else plural or noun + 's'}"
