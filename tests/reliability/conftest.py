"""Collects one row per fault scenario and prints the matrix after the run."""

from __future__ import annotations

import pytest

ROWS: list[tuple[str, int, int, int, str]] = []


@pytest.fixture
def matrix_row(request):
    """Call with (expected, received, duplicates, outcome) to add the test's row."""

    def add(expected: int, received: int, duplicates: int, outcome: str = "ok") -> None:
        name = request.node.callspec.id if hasattr(request.node, "callspec") else request.node.name
        ROWS.append((name.removeprefix("test_"), expected, received, duplicates, outcome))

    return add


def pytest_terminal_summary(terminalreporter) -> None:
    if not ROWS:
        return
    write = terminalreporter.write_line
    write("")
    write("fault matrix: scenario | records expected | received | duplicates | outcome")
    for name, expected, received, duplicates, outcome in ROWS:
        write(f"  {name:<58} | {expected:>5} | {received:>5} | {duplicates:>3} | {outcome}")
