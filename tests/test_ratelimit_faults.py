"""
Cancellation points and faults: acquire raises before charging when its caller is
cancelled, and whatever interrupts a waiter (where x what x backend) gives back what it
was not handed out, leaves nobody in line and propagates unchanged.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import anyio
import anyio.lowlevel
import pytest

import throttlekit._throttle._ratelimit as ratelimit_module
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
    original = ratelimit_module._ThreadSignal.wait
    fired = []

    def wait(self: Any, timeout: float) -> None:
        if fired:
            original(self, timeout)
            return
        fired.append(True)
        if where == "granted, before returning":
            clock.advance(1.0)  # its moment comes: granted, then interrupted
        raise fault()

    monkeypatch.setattr(ratelimit_module._ThreadSignal, "wait", wait)
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
