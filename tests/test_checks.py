"""
The shared argument checks (_checks) and the public entry points that use them: a wrong
type is a TypeError and a bad value a ValueError, each naming the argument.
"""

from __future__ import annotations

import math
import subprocess
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import anyio
import pytest

from throttlekit import (
    CpuGovernor,
    ItemBlock,
    ItemBlockWorkerPool,
    OperationLimits,
    PolicyWatcher,
    RateLimiter,
    lower_priority,
    throttle_process,
)
from throttlekit._checks import (
    check_callable,
    check_int,
    check_number,
    check_optional_int,
    check_priority,
    check_seconds,
)
from throttlekit._cli._run import check_run_options
from throttlekit._throttle._cpu import cpu_sleep

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


def test_check_int_bounds_and_wording() -> None:
    """Ints only (no bool, no whole float); each bound named in the message."""
    assert check_int(5, "n") == 5
    assert check_int(1, "n", minimum=1) == 1
    assert check_int(7, "n", minimum=0, maximum=7) == 7
    for bad in (True, 2.0, "2", None):
        with pytest.raises(TypeError, match=f"n must be an int, got {type(bad).__name__}"):
            check_int(bad, "n")
    with pytest.raises(ValueError, match="n must be >= 1, got 0"):
        check_int(0, "n", minimum=1)
    with pytest.raises(ValueError, match="n must be <= 3, got 4"):
        check_int(4, "n", maximum=3)
    with pytest.raises(ValueError, match="n must be between 0 and 7, got -1"):
        check_int(-1, "n", minimum=0, maximum=7)


def test_check_optional_int_passes_none() -> None:
    """None means "no limit" and passes; anything else is check_int'ed."""
    assert check_optional_int(None, "total", minimum=1) is None
    assert check_optional_int(3, "total", minimum=1) == 3
    with pytest.raises(TypeError, match="total must be an int or None, got float"):
        check_optional_int(1.5, "total")
    with pytest.raises(ValueError, match="total must be >= 1, got 0"):
        check_optional_int(0, "total", minimum=1)


def test_check_priority() -> None:
    """Any int is a priority, negative included; floats and bools are not."""
    assert check_priority(-5) == -5
    assert check_priority(10**400) == 10**400  # a rank, never turned into a float
    for bad in (True, 1.5, "high"):
        with pytest.raises(TypeError, match="priority must be an int \\(higher runs first\\)"):
            check_priority(bad)


def test_check_seconds_one_rule() -> None:
    """Numbers and timedeltas; never negative or NaN; inf and zero only when allowed."""
    assert check_seconds(2, "t") == 2.0
    assert check_seconds(timedelta(milliseconds=1500), "t") == 1.5
    assert check_seconds(0, "t") == 0.0
    assert check_seconds(math.inf, "t", allow_inf=True) == math.inf
    for bad in (-0.1, math.nan, math.inf, timedelta(seconds=-1)):
        with pytest.raises(ValueError, match="t must be >= 0 seconds and finite, got"):
            check_seconds(bad, "t")
    with pytest.raises(ValueError, match="t must be > 0 seconds and finite, got 0"):
        check_seconds(0, "t", allow_zero=False)
    with pytest.raises(ValueError, match=r"t must be >= 0 seconds \(math.inf: no limit\)"):
        check_seconds(math.nan, "t", allow_inf=True)
    with pytest.raises(ValueError, match="t is too large"):
        check_seconds(HUGE, "t", allow_inf=True)
    with pytest.raises(TypeError, match="t must be seconds or a timedelta, got bool"):
        check_seconds(True, "t")
    with pytest.raises(TypeError, match="t must be a number of seconds, got timedelta"):
        check_seconds(timedelta(seconds=1), "t", timedelta_ok=False)


def test_check_callable_one_wording() -> None:
    """Callables pass (returned as is); None only when optional."""
    assert check_callable(print, "f") is print
    assert check_callable(None, "f", optional=True) is None
    with pytest.raises(TypeError, match=r"^f must be callable, got NoneType$"):
        check_callable(None, "f")
    with pytest.raises(TypeError, match=r"^on_error must be callable or None, got int$"):
        check_callable(3, "on_error", optional=True)


# Each numeric parameter of a public entry point, with the bad values it must refuse.
# "int" parameters refuse floats (NaN, inf) as a wrong type; "number" ones as a bad value.
# Values a parameter documents as meaningful are listed in its "accepts": a rate may be
# text ("1") or math.inf (unlimited), a grace period math.inf (wait forever), a count
# any int however large.
BAD_VALUES: dict[str, object] = {
    "bool": True,
    "str": "1",
    "nan": math.nan,
    "inf": math.inf,
    "negative": -1,
    "huge": HUGE,
}
ENTRY_POINTS: list[tuple[str, str, Callable[[Any], Any], frozenset[str]]] = [
    ("rate", "number", lambda v: RateLimiter(v), frozenset({"str", "inf"})),
    ("burst", "number", lambda v: RateLimiter(1000, burst=v), frozenset()),
    ("amount", "number", lambda v: RateLimiter(1000).acquire_blocking(v), frozenset()),
    ("percent", "number", lambda v: CpuGovernor(v), frozenset()),
    ("window", "number", lambda v: CpuGovernor(30, window=v), frozenset()),
    ("cpu", "number", lambda v: cpu_sleep(v, 1.0, 50), frozenset()),
    ("wall", "number", lambda v: cpu_sleep(0.1, v, 50), frozenset()),
    ("workers", "int", lambda v: ItemBlockWorkerPool(v), frozenset({"huge"})),
    (
        "grace_period",
        "number",
        lambda v: ItemBlockWorkerPool(2, grace_period=v),
        frozenset({"inf"}),
    ),
    ("total", "int", lambda v: OperationLimits(total=v), frozenset({"huge"})),
    ("per_key", "int", lambda v: OperationLimits(per_key=v), frozenset({"huge"})),
    ("io_level", "int", lambda v: lower_priority(io_level=v), frozenset()),
    ("interval", "number", lambda v: PolicyWatcher("/nonexistent", interval=v), frozenset()),
]


def expected_error(kind: str, bad: str) -> type[Exception]:
    if bad in ("bool", "str") or (kind == "int" and bad in ("nan", "inf")):
        return TypeError
    return ValueError


@pytest.mark.parametrize(
    ("name", "kind", "call", "bad"),
    [
        pytest.param(name, kind, call, bad, id=f"{name}-{bad}")
        for name, kind, call, accepts in ENTRY_POINTS
        for bad in BAD_VALUES
        if bad not in accepts
    ],
)
def test_entry_points_refuse_bad_numbers_naming_the_argument(
    name: str, kind: str, call: Callable[[Any], Any], bad: str
) -> None:
    """Every numeric parameter: TypeError for a wrong type, ValueError for a bad value."""
    with pytest.raises(expected_error(kind, bad), match=f"^{name} "):
        call(BAD_VALUES[bad])


@pytest.mark.anyio
@pytest.mark.parametrize("bad", sorted(BAD_VALUES))
async def test_async_entry_points_refuse_bad_numbers(bad: str) -> None:
    """pool.run's and slot's numeric arguments, checked before anything runs or waits."""
    value = BAD_VALUES[bad]
    block = [ItemBlock(["a"])]
    with anyio.fail_after(5):
        async with ItemBlockWorkerPool(1) as pool:
            if bad not in ("negative", "huge"):  # any int is a priority
                with pytest.raises(TypeError, match=r"^priority must be an int"):
                    await pool.run(block, print, priority=value)  # type: ignore[arg-type]
            if bad != "huge":  # a count: any int >= 1
                with pytest.raises(expected_error("int", bad), match=r"^additional_concurrency "):
                    await pool.run(block, print, additional_concurrency=value)  # type: ignore[arg-type]
            if bad != "inf":  # inf: only the final progress report
                with pytest.raises(expected_error("number", bad), match=r"^progress_interval "):
                    await pool.run(block, print, progress_interval=value)  # type: ignore[arg-type]
        if bad not in ("negative", "huge"):
            with pytest.raises(TypeError, match=r"^priority must be an int"):
                async with OperationLimits().slot("backup", priority=value):  # type: ignore[arg-type]
                    pass


def test_run_options_refuse_a_huge_cpu_naming_it() -> None:
    """The run command's cpu goes through the shared number check (was OverflowError)."""
    with pytest.raises(ValueError, match=r"^cpu is too large"):
        check_run_options(["true"], cpu=HUGE)
    with pytest.raises(TypeError, match=r"^cpu must be a number or None, got bool$"):
        check_run_options(["true"], cpu=True)
    with pytest.raises(TypeError, match=r"^nice must be an int or None, got float$"):
        check_run_options(["true"], nice=1.0)  # type: ignore[arg-type]
