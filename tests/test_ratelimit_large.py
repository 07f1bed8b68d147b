"""
Amounts larger than the burst: one reservation served in turns, at the cost of a small
one (no pieces, a few wake-ups, constant memory); huge amounts wait and cancel cleanly.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import pytest

import throttlekit._throttle._ratelimit as ratelimit_module
from throttlekit import RateLimiter
from throttlekit.testing import ManualClock

pytestmark = pytest.mark.anyio


def now() -> float:
    return anyio.current_time()


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Every sleep a waiting task takes inside the limiter (its timeout)."""
    taken: list[float] = []
    for cls in (ratelimit_module._AsyncioSignal, ratelimit_module._TrioSignal):
        original: Callable[[Any, float], Awaitable[None]] = cls.wait

        async def wait(self: Any, timeout: float, original: Any = original) -> None:
            taken.append(timeout)
            await original(self, timeout)

        monkeypatch.setattr(cls, "wait", wait)
    return taken


async def test_a_large_amount_costs_a_few_sleeps_not_one_per_burst(sleeps: list[float]) -> None:
    """acquire(100,000) with a burst of one: done at exactly 1 s, after one sleep."""
    limiter = RateLimiter(100_000, burst=1)
    t0 = now()
    with anyio.fail_after(10):
        await limiter.acquire(100_000)
    assert now() - t0 == pytest.approx(1.0)
    assert len(sleeps) <= 2
    assert limiter.statistics().total_granted == 100_000


async def test_a_large_amount_among_small_ones_wakes_once_per_newcomer_at_most(
    sleeps: list[float],
) -> None:
    """Ten small requests arriving while a large one is served add a few sleeps each."""
    limiter = RateLimiter(1000, burst=10)
    done: dict[str, float] = {}
    t0 = now()

    async def big() -> None:
        await limiter.acquire(10_000)
        done["big"] = now() - t0

    async def small(i: int) -> None:
        await anyio.sleep(0.5 * i + 0.25)
        start = now()
        await limiter.acquire(10)
        done[f"s{i}"] = now() - start

    with anyio.fail_after(100):
        async with anyio.create_task_group() as tg:
            tg.start_soon(big)
            for i in range(10):
                tg.start_soon(small, i)
    assert done["big"] == pytest.approx(10.1)  # 10,100 units at 1,000/s
    assert all(done[f"s{i}"] <= 0.02 + 1e-9 for i in range(10))  # one turn of the big one
    assert len(sleeps) <= 2 + 3 * 10


@pytest.mark.parametrize("amount", [1e18, 1e300])
async def test_a_huge_amount_waits_and_cancels_cleanly(amount: float) -> None:
    """1e300 is not an error: it waits, cancellable, and the limiter is unharmed after."""
    limiter = RateLimiter(10, burst=5)
    t0 = now()
    with anyio.move_on_after(2):
        await limiter.acquire(amount)
    stats = limiter.statistics()
    assert (stats.tasks_waiting, stats.total_granted) == (0, 0)
    await limiter.acquire(5)  # 20 units earned by 2 s went to the huge one's turns
    assert now() - t0 == pytest.approx(2.5)


def test_a_huge_blocking_amount_waits_until_the_rate_allows() -> None:
    """acquire_blocking(1e300) blocks (no OverflowError); an unlimited rate lets it go."""
    clock = ManualClock()
    limiter = RateLimiter(10, clock=clock)
    thread = threading.Thread(target=limiter.acquire_blocking, args=(1e300,), daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while limiter.statistics().tasks_waiting == 0 and time.monotonic() < deadline:
        time.sleep(0.001)
    assert thread.is_alive()
    limiter.rate = "off"
    thread.join(30)
    assert not thread.is_alive()
    assert limiter.statistics().total_granted == 1e300
    limiter.rate = 10  # back to a rate: one burst of credit, and the rate from there
    limiter.acquire_nowait(1)
    with pytest.raises(anyio.WouldBlock):
        limiter.acquire_nowait(0.5)
    clock.advance(0.1)
    limiter.acquire_nowait(1)


async def test_large_requests_share_the_rate_turn_by_turn() -> None:
    """Two large requests at once alternate bursts; the smaller one finishes first."""
    limiter = RateLimiter(10, burst=1)
    done: dict[int, float] = {}
    t0 = now()

    async def ask(amount: int) -> None:
        await limiter.acquire(amount)
        done[amount] = now() - t0

    async with anyio.create_task_group() as tg:
        tg.start_soon(ask, 50)
        await anyio.sleep(0)
        tg.start_soon(ask, 100)
    assert done[50] == pytest.approx(9.9, abs=0.11)  # which one's turn is first may vary
    assert done[100] == pytest.approx(15.0)


async def test_cancelling_a_large_request_gives_back_what_it_was_not_served() -> None:
    """
    A large request cancelled at 3.5 s had three turns of 10 served (spent: that time has
    passed) and half of its fourth, which goes to the next in line.
    """
    limiter = RateLimiter(10, burst=10)
    t0 = now()
    done: dict[str, float] = {}

    async def big() -> None:
        with anyio.move_on_after(3.5):
            await limiter.acquire(100)
        done["big"] = now() - t0

    async def next_in_line() -> None:
        await anyio.sleep(3.25)
        await limiter.acquire(10)
        done["next"] = now() - t0

    async with anyio.create_task_group() as tg:
        tg.start_soon(big)
        tg.start_soon(next_in_line)
    assert done == pytest.approx({"big": 3.5, "next": 4.0})
    stats = limiter.statistics()
    assert (stats.total_granted, stats.tasks_waiting) == (10, 0)


async def test_in_a_chain_a_large_amount_is_served_level_by_level() -> None:
    """100 units through a 10/s child and a 100/s parent: 10 s at the child, then 0.9 s."""
    parent = RateLimiter(100, burst=10)
    child = RateLimiter(10, burst=10, parent=parent)
    t0 = now()
    await child.acquire(100)
    assert now() - t0 == pytest.approx(10.9)
    assert parent.statistics().total_granted == 100


async def test_a_large_amount_waits_behind_those_in_line_only_one_turn_each() -> None:
    """A large request arriving behind small ones takes its first turn after theirs."""
    limiter = RateLimiter(10, burst=2)
    done: dict[str, float] = {}
    t0 = now()

    async def ask(name: str, amount: float, delay: float) -> None:
        await anyio.sleep(delay)
        await limiter.acquire(amount)
        done[name] = now() - t0

    async with anyio.create_task_group() as tg:
        tg.start_soon(ask, "a", 2, 0)
        tg.start_soon(ask, "big", 20, 0.01)
        tg.start_soon(ask, "b", 2, 0.02)
    assert done == pytest.approx({"a": 0.2, "b": 0.6, "big": 2.4})
