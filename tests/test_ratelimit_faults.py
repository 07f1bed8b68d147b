"""
Cancellation points and faults: acquire raises before charging when its caller is
cancelled, and whatever interrupts a waiter (where x what x backend) gives back what it
was not handed out, leaves nobody in line and propagates unchanged. The same holds for
acquire_blocking in a worker thread whose task is cancelled, and when its timeout runs
out.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import anyio
import anyio.lowlevel
import anyio.to_thread
import pytest

import throttlekit._throttle._ratelimit as ratelimit_module
from _procs import WAIT, wait_until
from _threads import HostedThread
from throttlekit import RateLimiter
from throttlekit.testing import ManualClock


class Custom(BaseException):
    """A BaseException of the user's own."""


# What interrupts the waiter: an exception to raise, or None for a real cancellation of
# the scope around the acquire (delivered at a checkpoint inside the limiter's sleep).
FAULTS: dict[str, Callable[[], BaseException] | None] = {
    "Exception": lambda: RuntimeError("boom"),
    "KeyboardInterrupt": KeyboardInterrupt,
    "SystemExit": lambda: SystemExit(3),
    "custom BaseException": Custom,
    "cancellation": None,
}
WHERE = ["in line", "granted, before returning", "at the parent"]


def patch_sleep(
    monkeypatch: pytest.MonkeyPatch,
    where: str,
    fault: Callable[[], BaseException] | None,
    scope: list[anyio.CancelScope],
) -> None:
    """Make the first sleep inside the limiter fail: before it, or after it was woken."""
    fired = []
    for cls in (ratelimit_module._AsyncioSignal, ratelimit_module._TrioSignal):
        original = cls.wait

        async def wait(self: Any, timeout: float, original: Any = original) -> None:
            if fired:
                return await original(self, timeout)  # type: ignore[no-any-return]
            fired.append(True)
            if where == "granted, before returning":
                await original(self, timeout)  # woken at its moment: granted
            if fault is None:
                scope[0].cancel()
                await anyio.lowlevel.checkpoint()
            raise fault()  # type: ignore[misc]

        monkeypatch.setattr(cls, "wait", wait)


@pytest.mark.anyio
@pytest.mark.parametrize("where", WHERE)
@pytest.mark.parametrize("what", list(FAULTS))
async def test_a_fault_while_waiting_gives_back_what_was_not_handed_out(
    monkeypatch: pytest.MonkeyPatch, where: str, what: str
) -> None:
    fault = FAULTS[what]
    parent = RateLimiter(10, burst=10)
    child = RateLimiter(100, burst=10, parent=parent, full=True)
    limiter = child if where == "at the parent" else parent
    scope: list[anyio.CancelScope] = []
    patch_sleep(monkeypatch, where, fault, scope)
    t0 = anyio.current_time()
    with anyio.CancelScope() as cs:
        scope.append(cs)
        if fault is None:
            await limiter.acquire(10)
        else:
            with pytest.raises(type(fault())):
                await limiter.acquire(10)
    assert cs.cancelled_caught == (fault is None)
    for level in (parent, child):
        stats = level.statistics()
        assert (stats.tasks_waiting, stats.total_granted) == (0, 0)
    if where == "at the parent":
        assert child.statistics().tokens == 10  # the child's grant came back
    # Nothing was lost: the parent serves 10 units by 1 s, as if nobody had asked.
    await parent.acquire(10)
    assert anyio.current_time() - t0 == pytest.approx(1.0)


@pytest.mark.parametrize("where", WHERE)
@pytest.mark.parametrize("what", [name for name, f in FAULTS.items() if f is not None])
def test_a_fault_in_a_blocking_waiter_gives_back_what_was_not_handed_out(
    monkeypatch: pytest.MonkeyPatch, where: str, what: str
) -> None:
    """The same for threads (KeyboardInterrupt is how a thread's wait is interrupted)."""
    fault = FAULTS[what]
    assert fault is not None
    clock = ManualClock()
    parent = RateLimiter(10, burst=10, clock=clock)
    child = RateLimiter(100, burst=10, parent=parent, full=True)
    limiter = child if where == "at the parent" else parent
    original = ratelimit_module.ThreadSignal.wait
    fired = []

    def wait(self: Any, timeout: float) -> None:
        if fired:
            original(self, timeout)
            return
        fired.append(True)
        if where == "granted, before returning":
            clock.advance(1.0)  # its moment comes: granted, then interrupted
        raise fault()

    monkeypatch.setattr(ratelimit_module.ThreadSignal, "wait", wait)
    with pytest.raises(type(fault())):
        limiter.acquire_blocking(10)
    for level in (parent, child):
        stats = level.statistics()
        assert (stats.tasks_waiting, stats.total_granted) == (0, 0)
    if where == "at the parent":
        assert child.statistics().tokens == 10
    clock.advance(1.0 if where != "granted, before returning" else 0.0)
    parent.acquire_nowait(10)


# -- the cancellation point --------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize(
    "how", ["the task's own scope", "move_on_after(0)", "an outer scope", "a chain"]
)
async def test_acquire_raises_before_charging_in_a_cancelled_scope(how: str) -> None:
    """With credit available, acquire still raises if a scope around it was cancelled."""
    limiter = RateLimiter(10, burst=10, full=True)
    target = RateLimiter(10, burst=10, parent=limiter, full=True) if how == "a chain" else limiter
    if how == "move_on_after(0)":
        with anyio.move_on_after(0) as scope:
            await target.acquire(3)
    elif how == "an outer scope":
        with anyio.CancelScope() as scope:
            scope.cancel()
            with anyio.CancelScope():
                await target.acquire(3)
    else:
        with anyio.CancelScope() as scope:
            scope.cancel()
            await target.acquire(3)
    assert scope.cancelled_caught
    assert target.statistics().total_granted == 0
    assert limiter.statistics().total_granted == 0


@pytest.mark.anyio
async def test_a_shielded_scope_is_not_cancelled() -> None:
    """Inside a shielded scope, an outer cancellation does not stop acquire."""
    limiter = RateLimiter(10, burst=10, full=True)
    with anyio.CancelScope() as outer:
        outer.cancel()
        with anyio.CancelScope(shield=True):
            await limiter.acquire(3)
        assert limiter.statistics().total_granted == 3
        await anyio.lowlevel.checkpoint()
    assert outer.cancelled_caught


@pytest.mark.parametrize("runner", ["asyncio.run", "anyio.run"])
def test_a_pending_task_cancel_stops_acquire(runner: str) -> None:
    """asyncio: a task that was cancel()led (not yet delivered) cannot acquire."""
    limiter = RateLimiter(10, burst=10, full=True)
    outcome: list[str] = []

    async def main() -> None:
        task = asyncio.current_task()
        assert task is not None
        task.cancel()
        try:
            await limiter.acquire(3)
        except asyncio.CancelledError:
            outcome.append("cancelled")
        else:
            outcome.append("granted")

    if runner == "asyncio.run":
        asyncio.run(main())
    else:
        anyio.run(main, backend="asyncio")
    assert outcome == ["cancelled"]
    assert limiter.statistics().total_granted == 0


def test_acquire_does_not_yield_for_plain_tasks_with_nothing_pending() -> None:
    """The cheap check does not make every acquire a yield on plain asyncio."""
    limiter = RateLimiter(1e9, burst=1e9, full=True)
    ran = []

    async def other() -> None:
        ran.append(1)

    async def main() -> None:
        asyncio.get_running_loop().create_task(other())
        for _ in range(10):
            await limiter.acquire(1)
        assert ran == []
        await asyncio.sleep(0)

    asyncio.run(main())
    assert ran == [1]


# -- worker threads of cancelled tasks, and timeouts ------------------------------------------


def stalled() -> tuple[RateLimiter, ManualClock]:
    """
    3 units of credit left, earning 1 unit in 1000 s of a clock that never moves unless
    told: a thread that needs 2 more sleeps for 2000 real seconds.
    """
    clock = ManualClock()
    limiter = RateLimiter(0.001, burst=10, clock=clock, full=True)
    limiter.acquire_nowait(7)
    return limiter, clock


def intact(limiter: RateLimiter, granted: float = 7, tokens: float = 3) -> None:
    stats = limiter.statistics()
    assert (stats.tasks_waiting, stats.total_granted, stats.tokens) == (0, granted, tokens)


@pytest.mark.anyio
@pytest.mark.parametrize("where", ["waiting in line", "before it asks"])
async def test_a_worker_thread_stops_when_its_task_is_cancelled(where: str) -> None:
    """
    A sync function in anyio.to_thread.run_sync, blocked in acquire_blocking on a clock
    that never moves (or about to ask while it could pass at once), raises the
    backend's cancellation when the scope around its task is cancelled: the scope
    catches it, the thread returns, and the limiter is as if it had never asked.
    """
    limiter, _ = stalled()
    go = threading.Event()

    def work() -> None:
        go.wait(WAIT)
        limiter.acquire_blocking(5 if where == "waiting in line" else 1)

    thread = HostedThread(work)
    scope, raised, returned = thread.scope, thread.raised, thread.returned

    async with anyio.create_task_group() as tg:
        tg.start_soon(thread.host)
        if where == "waiting in line":
            go.set()
            waiting = lambda: limiter.statistics().tasks_waiting == 1  # noqa: E731
            await anyio.to_thread.run_sync(wait_until, waiting, "the thread waits in line")
            scope.cancel()
        else:
            await anyio.to_thread.run_sync(time.sleep, 0.01)  # the thread has started
            scope.cancel()
            go.set()
        if not await anyio.to_thread.run_sync(returned.wait, WAIT):
            limiter.rate = math.inf  # wake it and let it go: fail rather than hang
            pytest.fail("the worker thread did not notice that its task was cancelled")
    assert scope.cancelled_caught
    assert [type(exc) for exc in raised] == [anyio.get_cancelled_exc_class()]
    intact(limiter)


@pytest.mark.anyio
async def test_a_worker_thread_of_a_live_task_is_not_disturbed() -> None:
    """Not cancelled, a worker thread waits its turn as any thread does."""
    limiter, clock = stalled()
    done = threading.Event()

    def work() -> None:
        limiter.acquire_blocking(5)
        done.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(anyio.to_thread.run_sync, work)
        waiting = lambda: limiter.statistics().tasks_waiting == 1  # noqa: E731
        await anyio.to_thread.run_sync(wait_until, waiting, "the thread waits in line")
        assert not done.is_set()
        clock.advance(2000)  # its moment has come
        limiter.acquire_nowait(0)  # a call that brings the line to now wakes it
        if not await anyio.to_thread.run_sync(done.wait, WAIT):
            limiter.rate = math.inf  # let it go: fail rather than hang
            pytest.fail("the worker thread was not granted")
    assert done.is_set()
    intact(limiter, granted=12, tokens=0)


def test_a_timeout_of_zero_takes_only_what_passes_at_once() -> None:
    """timeout=0: granted if it may pass now, else TimeoutError and nothing charged."""
    limiter, _ = stalled()
    limiter.acquire_blocking(1, timeout=0)
    with pytest.raises(TimeoutError, match="timed out"):
        limiter.acquire_blocking(5, timeout=0)
    intact(limiter, granted=8, tokens=2)


@pytest.mark.parametrize("chain", [False, True])
def test_a_timeout_gives_back_everything_and_nobody_behind_loses(chain: bool) -> None:
    """
    A thread whose timeout runs out while it waits raises TimeoutError and leaves the
    limiter as if it had never asked; in a chain, the grant of the levels it had
    passed is given back too. (Real time: a short timeout on the monotonic clock.)
    """
    parent = RateLimiter(1, burst=10, full=True)
    parent.acquire_nowait(7)
    child = RateLimiter(1000, burst=10, parent=parent, full=True) if chain else None
    with pytest.raises(TimeoutError):
        (child or parent).acquire_blocking(5, timeout=timedelta(milliseconds=20))
    stats = parent.statistics()
    assert (stats.tasks_waiting, stats.total_granted) == (0, 7)
    assert stats.tokens >= 3  # what it had left, plus what was earned meanwhile
    if child is not None:
        stats = child.statistics()
        assert (stats.tasks_waiting, stats.total_granted, stats.tokens) == (0, 0, 10)


@pytest.mark.parametrize(
    ("timeout", "error", "fragment"),
    [
        (-1, ValueError, "timeout must be >= 0 seconds"),
        (math.nan, ValueError, "timeout must be >= 0 seconds"),
        (True, TypeError, "timeout must be seconds or a timedelta, got bool"),
        ("1", TypeError, "timeout must be seconds or a timedelta, got str"),
        (10**400, ValueError, "timeout is too large"),
    ],
)
def test_bad_timeouts_are_refused(timeout: object, error: type, fragment: str) -> None:
    limiter, _ = stalled()
    with pytest.raises(error, match=fragment):
        limiter.acquire_blocking(1, timeout=timeout)  # type: ignore[arg-type]
    intact(limiter)


def test_an_infinite_timeout_waits_as_none_does() -> None:
    """timeout=math.inf waits until granted. (Real time: about 20 ms at 100/s.)"""
    limiter = RateLimiter(100, burst=10, full=True)
    limiter.acquire_nowait(7)
    limiter.acquire_blocking(5, timeout=math.inf)
    assert limiter.statistics().total_granted == 12
