"""
One timeline per limiter, whatever mix of runtimes and threads uses it.

The real-time tests count grants against ``rate x elapsed + burst``, measured from
before the limiter was made: a bound that a correct limiter meets however loaded the
machine is (a slow machine only grants less), and that a limiter joining clocks wrongly
breaks at once (it used to grant everyone waiting when trio's offset clock met
``time.monotonic``).
"""

from __future__ import annotations

import asyncio
import itertools
import sys
import threading
import time
import types

import anyio
import pytest
from hypothesis import given
from hypothesis import strategies as st

from throttlekit import RateLimiter
from throttlekit._throttle._ratelimit import Timeline
from throttlekit.testing import run

# -- the sans-I/O joining ----------------------------------------------------------------

clocks = st.lists(
    st.tuples(
        st.floats(min_value=-1e6, max_value=1e6),  # origin
        st.sampled_from([0.0, 0.5, 1.0, 1.0, 1.0, 1000.0]),  # speed: 1 is real time
    ),
    min_size=1,
    max_size=4,
)
steps = st.lists(
    st.tuples(st.integers(0, 3), st.floats(min_value=0, max_value=10)), min_size=1, max_size=60
)


def replay(
    sources: list[tuple[float, float]], steps: list[tuple[int, float]]
) -> list[tuple[int, float, float]]:
    """(source, true time, time on the line) of each reading, following as a limiter does."""
    line = Timeline()
    true = 0.0
    followed: int | None = None
    out = []
    for index, dt in steps:
        true += dt
        i = index % len(sources)
        origin, speed = sources[i]
        raw = origin + speed * true
        if i != followed:
            line.follow(raw)
            followed = i
        out.append((i, true, line.at(raw)))
    return out


@given(sources=clocks, steps=steps)
def test_the_line_never_goes_back_and_follows_one_clock_exactly(
    sources: list[tuple[float, float]], steps: list[tuple[int, float]]
) -> None:
    """Monotone; and between switches it advances exactly as the clock it follows."""
    readings = replay(sources, steps)
    for (i, true_a, a), (j, true_b, b) in itertools.pairwise(readings):
        assert b >= a
        if i == j:
            assert b - a == pytest.approx(sources[i][1] * (true_b - true_a), abs=1e-6)


@given(
    origins=st.lists(st.floats(min_value=-1e6, max_value=1e6), min_size=1, max_size=4),
    steps=steps,
)
def test_real_clocks_with_any_origins_never_make_time_that_did_not_pass(
    origins: list[float], steps: list[tuple[int, float]]
) -> None:
    """Real clocks with arbitrary offsets, read in any order: the line never runs ahead."""
    readings = replay([(origin, 1.0) for origin in origins], steps)
    for _, true_a, a in readings:
        for _, true_b, b in readings:
            if true_b >= true_a:
                assert b - a <= true_b - true_a + 1e-6


# -- real runtimes and threads -----------------------------------------------------------


def count_grants(runtimes: list[str], *, threads: int = 10, window: float = 0.3) -> None:
    """
    ``threads`` threads wait in ``acquire_blocking(1)`` at 10/s with a burst of one, then
    a task on each runtime (in threads of their own but the first) asks too, for
    ``window`` seconds of real time: everything granted by then is within the bound.
    """
    start = time.monotonic()
    limiter = RateLimiter(10, burst=1)
    stamps: list[float] = []
    lock = threading.Lock()

    def granted() -> None:
        with lock:
            stamps.append(time.monotonic())

    def blocking() -> None:
        limiter.acquire_blocking(1)
        granted()

    async def task() -> None:
        with anyio.move_on_after(window):
            await limiter.acquire(1)
            granted()
        await anyio.sleep(window)  # stay until the window is over either way

    waiting = [threading.Thread(target=blocking, daemon=True) for _ in range(threads)]
    for t in waiting:
        t.start()
    deadline = time.monotonic() + 30
    while limiter.statistics().tasks_waiting < threads and time.monotonic() < deadline:
        time.sleep(0.001)
    helpers = [
        threading.Thread(target=anyio.run, args=(task,), kwargs={"backend": name}, daemon=True)
        for name in runtimes[1:]
    ]
    for h in helpers:
        h.start()
    anyio.run(task, backend=runtimes[0])
    for h in helpers:
        h.join(30)
    end = time.monotonic()
    with lock:
        count = sum(1 for s in stamps if s <= end)
    limiter.rate = "off"  # let the rest go
    for t in waiting:
        t.join(30)
    assert not any(t.is_alive() for t in waiting)
    assert count <= 10 * (end - start) + 1, f"{count} granted in {end - start:.2f} s at 10/s"


@pytest.mark.parametrize("runtimes", [["trio"], ["asyncio"], ["asyncio", "trio", "trio"]])
def test_threads_and_real_runtimes_share_one_budget(runtimes: list[str]) -> None:
    """Threads plus tasks on trio and asyncio (real clocks) never get more than the rate."""
    count_grants(runtimes)


def test_a_trio_task_joining_waiting_threads_does_not_release_them_all() -> None:
    """The report: 30 threads waiting at 10/s, burst 1, then a trio task asks too."""
    count_grants(["trio"], threads=30, window=0.35)


# -- virtual time ------------------------------------------------------------------------


def test_a_limiter_made_outside_virtual_runs_is_exact_in_each() -> None:
    """Made in real time, then used in a virtual asyncio run and a virtual trio run."""
    limiter = RateLimiter(10, burst=1)

    async def five() -> float:
        t0 = anyio.current_time()
        for _ in range(5):
            await limiter.acquire(1)
        return anyio.current_time() - t0

    assert run(five, backend="asyncio") == pytest.approx(0.5)
    assert run(five, backend="trio") == pytest.approx(0.5)
    assert limiter.statistics().total_granted == 10


@pytest.mark.anyio
async def test_a_thread_reads_the_virtual_clock_while_the_run_goes_on() -> None:
    """In a virtual-time test, a thread sees the virtual second that passed: a full burst."""
    limiter = RateLimiter(10, burst=10, full=True)
    await limiter.acquire(10)
    await anyio.sleep(1)  # virtual: no real time passes
    await anyio.to_thread.run_sync(limiter.acquire_nowait, 10)
    assert limiter.statistics().total_granted == 20


def test_after_a_virtual_run_threads_go_back_to_real_time() -> None:
    """A limiter made in a virtual run, used by a thread after it: real time again."""

    async def make() -> RateLimiter:
        limiter = RateLimiter(1000, burst=1)
        await limiter.acquire(1)
        return limiter

    for backend in ("asyncio", "trio"):
        limiter = run(make, backend=backend)  # type: ignore[arg-type]
        thread = threading.Thread(target=limiter.acquire_blocking, args=(5,), daemon=True)
        thread.start()
        thread.join(30)  # about 5 ms on the real clock; forever on a frozen virtual one
        assert not thread.is_alive()


def test_a_real_loop_after_a_virtual_one_follows_real_time() -> None:
    """A task on a real loop switches the limiter back from a virtual clock."""

    async def make() -> RateLimiter:
        return RateLimiter(1000, burst=1)

    limiter = run(make)

    async def acquire_some() -> None:
        with anyio.fail_after(30):
            await limiter.acquire(5)

    asyncio.run(acquire_some())  # forever if it kept reading the finished virtual loop


def test_an_injected_clock_is_followed_by_everyone() -> None:
    """With clock=, tasks and threads read that clock, on any runtime."""
    readings: list[float] = []
    value = 100.0

    def clock() -> float:
        readings.append(value)
        return value

    limiter = RateLimiter(10, burst=1, clock=clock, full=True)

    async def once() -> None:
        await limiter.acquire(1)

    anyio.run(once, backend="trio")
    with pytest.raises(anyio.WouldBlock):
        limiter.acquire_nowait(1)
    value = 100.25
    limiter.acquire_nowait(1)
    assert readings and set(readings) == {100.0, 100.25}


def test_a_thread_is_not_confused_by_trio_being_imported_meanwhile(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """While another thread imports trio, a thread sees a half-made module: not a task."""
    monkeypatch.setitem(sys.modules, "trio", types.ModuleType("trio"))  # no .lowlevel yet
    limiter = RateLimiter(10, burst=10, full=True)
    limiter.acquire_blocking(5)
    limiter.acquire_nowait(5)
    assert limiter.statistics().total_granted == 10


@pytest.mark.anyio
@pytest.mark.parametrize("origin", [0.0, 3e7, 1e8])
async def test_no_waiter_sleeps_for_ever_on_a_clock_far_from_zero(origin: float) -> None:
    """
    A monotonic clock on a host up for a year (3e7 s) or three (1e8 s) has a float
    resolution coarser than the line's EPS: a waiter woken at its moment but short by
    less than one ulp used to sleep until woken by nobody. Every one is served, at the
    rate, wherever the clock starts.
    """
    limiter = RateLimiter(7, burst=5, clock=lambda: anyio.current_time() + origin)
    amounts = [7, 1, 3, 1, 5, 5, 5, 12]
    gaps = [0.38, 0.21, 0.488, 0.893, 0.39, 0.607, 0.767, 0.696]
    t0 = anyio.current_time()

    async def one(delay: float, amount: int) -> None:
        await anyio.sleep(delay)
        await limiter.acquire(amount)

    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            for delay, amount in zip(itertools.accumulate(gaps), amounts, strict=True):
                tg.start_soon(one, delay, amount)
    assert limiter.statistics().total_granted == sum(amounts)
    assert anyio.current_time() - t0 == pytest.approx(sum(amounts) / 7, abs=1e-6)
