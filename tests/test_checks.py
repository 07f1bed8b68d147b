"""Numbers too large for a float are a ValueError naming the argument, at every entry point."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from typing import Any

import anyio
import pytest

from throttlekit import CpuGovernor, ItemBlockWorkerPool, RateLimiter, throttle_process
from throttlekit._checks import check_number

HUGE = 10**400  # an int no float can hold


def test_check_number_converts_and_names_the_argument() -> None:
    """Ints and floats become floats; bools and strings are TypeErrors; HUGE a ValueError."""
    assert check_number(3, "n") == 3.0
    assert check_number(2.5, "n") == 2.5
    with pytest.raises(TypeError, match="n must be a number, got bool"):
        check_number(True, "n")
    with pytest.raises(TypeError, match="n must be seconds, got str"):
        check_number("1", "n", "seconds")
    with pytest.raises(ValueError, match="n is too large: 1329 bits"):
        check_number(HUGE, "n")


def set_burst() -> None:
    RateLimiter(1000).burst = HUGE


BLOCKING: list[tuple[str, Callable[[], Any]]] = [
    ("rate", lambda: RateLimiter(HUGE)),
    ("burst", lambda: RateLimiter(1000, burst=HUGE)),
    ("burst", set_burst),
    ("amount", lambda: RateLimiter(1000).acquire_blocking(HUGE)),
    ("percent", lambda: CpuGovernor(HUGE)),
    ("window", lambda: CpuGovernor(30, window=HUGE)),
    ("grace_period", lambda: ItemBlockWorkerPool(2, grace_period=HUGE)),
]


@pytest.mark.parametrize(("name", "call"), BLOCKING)
def test_a_huge_int_is_a_value_error_naming_the_argument(
    name: str, call: Callable[[], Any]
) -> None:
    """No entry point lets float()'s OverflowError through."""
    with pytest.raises(ValueError, match=f"{name} is too large"):
        call()


@pytest.mark.anyio
async def test_a_huge_int_is_a_value_error_in_async_entry_points() -> None:
    """acquire and throttle_process check before they wait or touch a process."""
    with anyio.fail_after(5), pytest.raises(ValueError, match="amount is too large"):
        await RateLimiter(1000).acquire(HUGE)
    child = subprocess.Popen(["sleep", "30"])  # a process of our own, never signalled
    try:
        with anyio.fail_after(5), pytest.raises(ValueError, match="percent is too large"):
            await throttle_process(child.pid, HUGE)
    finally:
        child.kill()
        child.wait()
