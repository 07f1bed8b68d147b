"""Helpers for tests that watch real processes: their kernel state, and bounded waits."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

WAIT = 10.0  # the most any single wait may take, in real seconds


def state(pid: int) -> str:
    """The kernel's one-letter state ('T' stopped, 'Z' zombie, 'gone' when reaped)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return "gone"


def wait_until(condition: Callable[[], bool], what: str) -> None:
    """Poll ``condition`` until it holds; fail the test (never hang) after WAIT seconds."""
    deadline = time.monotonic() + WAIT
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {WAIT} s: {what}")
        time.sleep(0.005)
