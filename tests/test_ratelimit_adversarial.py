"""
An integrator's adversarial pass over acquire_blocking(timeout=) and worker-thread
cancellation, and the waiter line behind the limiter: a host task cancelled while its
worker thread waits (with a timeout, in a chain, on a schedule, for a huge amount),
timeout=0, live rate changes to 0 and back with a cancelled head of line. After each,
the limiters must be intact: nobody in line, nothing granted that was not used, and
the whole burst can be taken at once once it has been earned again.
"""

from __future__ import annotations

import math
import threading
from datetime import datetime, timezone

import anyio
import anyio.to_thread
import pytest

import throttlekit._throttle._ratelimit as ratelimit_module
from _procs import WAIT, wait_until
from _threads import HostedThread
from throttlekit import CpuGovernor, RateLimiter, Schedule
from throttlekit.testing import ManualClock

BURST = 10.0


def waiting(*limiters: RateLimiter) -> int:
    return sum(lim.statistics().tasks_waiting for lim in limiters)


def assert_intact(clock: ManualClock, *limiters: RateLimiter, granted: float = 0.0) -> None:
    """Nobody waits, nothing more granted, and once a burst is earned it passes at once."""
    for lim in limiters:
        stats = lim.statistics()
        assert stats.tasks_waiting == 0
        assert stats.total_granted == granted
    clock.advance(1e9)  # long enough to earn a burst at any rate used here
    limiters[0].acquire_nowait(BURST)  # every level; WouldBlock if credit was lost or kept
    for lim in limiters:
        assert lim.statistics().total_granted == granted + BURST


def make(setup: str, clock: ManualClock, monkeypatch: pytest.MonkeyPatch) -> list[RateLimiter]:
    """Limiters with no credit left (each empty), so any request of 1 or more waits."""
    if setup == "schedule":
        monkeypatch.setattr(
            ratelimit_module, "_wall_now", lambda: datetime(2026, 11, 23, 12, tzinfo=timezone.utc)
        )
        schedule = Schedule.parse("08:00,0.001/s 18:00,0.002/s")
        return [RateLimiter(schedule, burst=BURST, clock=clock)]
    if setup.startswith("chain"):
        parent = RateLimiter(0.001, burst=BURST, clock=clock)
        # At the parent: the child is unlimited, so any amount passes it at once.
        rate = math.inf if setup == "chain, at parent" else 0.001
        child = RateLimiter(rate, burst=BURST, parent=parent)
        return [child, parent]
    return [RateLimiter(0.001, burst=BURST, clock=clock)]


SETUPS = ["single", "chain, at child", "chain, at parent", "schedule"]


@pytest.mark.anyio
@pytest.mark.parametrize("amount", [3.0, 25.0, 1e300], ids=["small", "many-bursts", "huge"])
@pytest.mark.parametrize("timeout", [None, 1e6], ids=["no-timeout", "timeout"])
@pytest.mark.parametrize("setup", SETUPS)
async def test_a_cancelled_host_stops_its_waiting_thread_and_leaves_all_intact(
    setup: str, timeout: float | None, amount: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    """
    The thread waits (at the child, at the parent of a chain, on a schedule; with a
    timeout that will not run out first); its host task's scope is cancelled: it raises
    the backend's cancellation, the scope catches it, and every level is as before.
    """
    clock = ManualClock()
    limiters = make(setup, clock, monkeypatch)
    thread = HostedThread(lambda: limiters[0].acquire_blocking(amount, timeout=timeout))
    scope, raised = thread.scope, thread.raised

    async with anyio.create_task_group() as tg:
        tg.start_soon(thread.host)
        await anyio.to_thread.run_sync(
            wait_until, lambda: waiting(*limiters) == 1, "the thread waits in line"
        )
        if setup == "chain, at parent":
            assert limiters[0].statistics().total_granted == amount  # passed the child
        scope.cancel()
        if not await anyio.to_thread.run_sync(thread.returned.wait, WAIT):
            for lim in limiters:
                lim.rate = math.inf
            pytest.fail("the worker thread did not notice that its task was cancelled")
    assert scope.cancelled_caught
    assert [type(e) for e in raised] == [anyio.get_cancelled_exc_class()]
    assert_intact(clock, *limiters)


@pytest.mark.anyio
@pytest.mark.parametrize("setup", SETUPS)
async def test_timeout_zero_in_a_cancelled_host_raises_the_cancellation_first(
    setup: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cancelled before it asks, with credit available: the cancellation, nothing charged."""
    clock = ManualClock()
    limiters = make(setup, clock, monkeypatch)
    clock.advance(1e9)  # every level is full now
    go, started = threading.Event(), threading.Event()

    def work() -> None:
        started.set()
        go.wait(WAIT)
        limiters[0].acquire_blocking(1, timeout=0)

    thread = HostedThread(work)
    scope, raised = thread.scope, thread.raised

    async with anyio.create_task_group() as tg:
        tg.start_soon(thread.host)
        await anyio.to_thread.run_sync(started.wait, WAIT)
        scope.cancel()
        go.set()
    assert scope.cancelled_caught
    assert [type(e) for e in raised] == [anyio.get_cancelled_exc_class()]
    for lim in limiters:
        assert lim.statistics().total_granted == 0
    limiters[0].acquire_nowait(BURST)  # every level still has its whole burst


@pytest.mark.parametrize("where", ["child", "parent"])
def test_timeout_zero_in_a_chain_refunds_the_levels_passed(where: str) -> None:
    """
    timeout=0 where one level of a chain has the amount and the other has not:
    TimeoutError, and the level that had it keeps it.
    """
    clock = ManualClock()
    parent = RateLimiter(0.001, burst=BURST, clock=clock, full=where == "child")
    child = RateLimiter(0.001, burst=BURST, parent=parent, full=where == "parent")
    with pytest.raises(TimeoutError):
        child.acquire_blocking(4, timeout=0)
    for lim in (child, parent):
        stats = lim.statistics()
        assert (stats.tasks_waiting, stats.total_granted) == (0, 0)
    full = parent if where == "child" else child
    assert full.statistics().tokens == BURST


# -- the line, through the limiter, on virtual time -------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("head", ["small", "huge"])
async def test_rate_to_zero_and_back_with_a_cancelled_head_of_line(head: str) -> None:
    """
    Waiters in line; the rate goes to 0; the head (small, or too large ever to be served)
    is cancelled; the rate comes back: the others are served in order at the new rate,
    as if the head had never asked, and the limiter ends intact.
    """
    limiter = RateLimiter(10, burst=BURST)
    head_amount = 5.0 if head == "small" else 1e300
    returned: dict[str, float] = {}
    head_scope = anyio.CancelScope()

    async def ask(name: str, amount: float, scope: anyio.CancelScope | None = None) -> None:
        with scope or anyio.CancelScope():
            await limiter.acquire(amount)
            returned[name] = anyio.current_time() - t0

    with anyio.fail_after(1000):
        t0 = anyio.current_time()
        async with anyio.create_task_group() as tg:
            tg.start_soon(ask, "head", head_amount, head_scope)
            await anyio.sleep(0.01)
            tg.start_soon(ask, "a", 5.0)
            await anyio.sleep(0.01)
            tg.start_soon(ask, "b", 5.0)
            await anyio.sleep(0.1)  # 1.2 units earned by 0.12 s, all served to the head
            limiter.rate = 0
            await anyio.sleep(100)
            assert returned == {}
            head_scope.cancel()
            await anyio.sleep(100)
            assert returned == {}  # paused: nothing moves, even with the head gone
            limiter.rate = 1  # back, slower
        # the head's turn in progress (1.2 units) goes to a, which earns 3.8 more; then b
    assert "head" not in returned
    assert returned["a"] == pytest.approx(200.12 + 3.8)
    assert returned["b"] == pytest.approx(200.12 + 8.8)
    stats = limiter.statistics()
    assert (stats.tasks_waiting, stats.total_granted) == (0, 10)
    await anyio.sleep(BURST)
    limiter.acquire_nowait(BURST)


@pytest.mark.anyio
async def test_a_thread_and_a_task_share_a_paused_line_and_a_cancelled_host() -> None:
    """
    A task waits at the head; a worker thread waits behind it; the rate is paused; the
    thread's host is cancelled, then the task is served once the rate comes back, as if
    the thread had never asked.
    """
    clock = ManualClock()
    limiter = RateLimiter(1, burst=BURST, clock=clock)
    scope = anyio.CancelScope()
    served: list[str] = []
    returned = threading.Event()

    def thread_work() -> None:
        try:
            limiter.acquire_blocking(3)
        finally:
            returned.set()

    async def thread_host() -> None:
        with scope:
            await anyio.to_thread.run_sync(thread_work)

    async def task() -> None:
        await limiter.acquire(4)
        served.append("task")

    async with anyio.create_task_group() as tg:
        tg.start_soon(task)
        await anyio.to_thread.run_sync(
            wait_until, lambda: waiting(limiter) == 1, "the task waits in line"
        )
        tg.start_soon(thread_host)
        await anyio.to_thread.run_sync(
            wait_until, lambda: waiting(limiter) == 2, "the thread waits behind it"
        )
        limiter.rate = 0
        scope.cancel()
        if not await anyio.to_thread.run_sync(returned.wait, WAIT):
            limiter.rate = math.inf
            pytest.fail("the worker thread did not notice that its task was cancelled")
        assert waiting(limiter) == 1
        limiter.rate = 1
        clock.advance(4)
        limiter.acquire_nowait(0)  # brings the line to now: the task is woken
    assert served == ["task"]
    assert limiter.statistics().total_granted == 4
    clock.advance(BURST)
    limiter.acquire_nowait(BURST)


# -- the CPU governor's checkpoint in a worker thread ------------------------------------


@pytest.mark.anyio
async def test_checkpoint_blocking_stops_when_its_host_is_cancelled() -> None:
    """
    A governor far over its target (its CPU clock says a whole core was used) makes the
    thread sleep for long; cancelling the host stops the sleep with the cancellation.
    """
    wall = ManualClock()
    cpu = [0.0]

    def cpu_clock() -> float:
        return cpu[0]

    governor = CpuGovernor(1, window=1000, clock=wall, cpu_clock=cpu_clock)
    sleeping = threading.Event()

    def work() -> None:
        governor.checkpoint_blocking()
        wall.advance(10)
        cpu[0] += 10  # ten seconds of CPU in ten of wall time: sleep about 990 s
        sleeping.set()
        governor.checkpoint_blocking()

    thread = HostedThread(work)
    raised = thread.raised

    async with anyio.create_task_group() as tg:
        tg.start_soon(thread.host)
        await anyio.to_thread.run_sync(sleeping.wait, WAIT)
        thread.scope.cancel()
        if not await anyio.to_thread.run_sync(thread.returned.wait, WAIT):  # pragma: no cover
            pytest.fail("checkpoint_blocking did not notice that its task was cancelled")
    assert [type(e) for e in raised] == [anyio.get_cancelled_exc_class()]
