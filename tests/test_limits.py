"""OperationLimits: per kind, per key and in total, with priority, live changes, no leaks."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from throttlekit import OperationLimits

pytestmark = pytest.mark.anyio


class Recorder:
    def __init__(self, limits: OperationLimits) -> None:
        self.limits = limits
        self.active: dict[str, int] = {}
        self.peak: dict[str, int] = {}
        self.order: list[str] = []

    async def op(self, kind: str, name: str, *, key: Any = None, priority: int = 0) -> None:
        async with self.limits.slot(kind, key=key, priority=priority):
            self.order.append(name)
            self.active[kind] = self.active.get(kind, 0) + 1
            self.peak[kind] = max(self.peak.get(kind, 0), self.active[kind])
            await anyio.sleep(1)
            self.active[kind] -= 1


async def test_restores_sequential_backups_parallel() -> None:
    """Restores (limit 1) run one at a time while backups share the total."""
    limits = OperationLimits(total=4, per_kind={"restore": 1})
    rec = Recorder(limits)
    t0 = anyio.current_time()
    async with anyio.create_task_group() as tg:
        for i in range(3):
            tg.start_soon(rec.op, "restore", f"r{i}")
        for i in range(3):
            tg.start_soon(rec.op, "backup", f"b{i}")
    assert rec.peak == {"restore": 1, "backup": 3}
    assert anyio.current_time() - t0 == 3.0
    assert limits.statistics().in_use == 0


async def test_per_key_limits_operations_on_one_vm() -> None:
    """Two operations on one VM never overlap; other VMs are not held up."""
    limits = OperationLimits(per_key=1)
    rec = Recorder(limits)
    t0 = anyio.current_time()
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: rec.op("backup", "vm1-a", key="vm1"))
        tg.start_soon(lambda: rec.op("delete", "vm1-b", key="vm1"))
        tg.start_soon(lambda: rec.op("backup", "vm2", key="vm2"))
    assert anyio.current_time() - t0 == 2.0  # the two vm1 operations one after the other
    assert rec.order[-1] in ("vm1-a", "vm1-b")  # trio starts tasks in any order


async def test_priority_then_first_come_first_served() -> None:
    """Higher priority waiters go first; equal priorities in arrival order."""
    limits = OperationLimits(total=1)
    rec = Recorder(limits)
    async with anyio.create_task_group() as tg:
        tg.start_soon(rec.op, "backup", "running")
        await anyio.sleep(0.1)
        for name, priority in [("low1", 0), ("high1", 5), ("low2", 0), ("high2", 5)]:
            tg.start_soon(lambda n=name, p=priority: rec.op("backup", n, priority=p))
            await anyio.sleep(0.01)
    assert rec.order == ["running", "high1", "high2", "low1", "low2"]


async def test_a_blocked_kind_does_not_hold_up_others() -> None:
    """A waiting restore (its kind full) does not block a backup that fits."""
    limits = OperationLimits(total=3, per_kind={"restore": 1})
    rec = Recorder(limits)
    t0 = anyio.current_time()
    async with anyio.create_task_group() as tg:
        tg.start_soon(rec.op, "restore", "r0")
        await anyio.sleep(0.1)
        tg.start_soon(rec.op, "restore", "r1")
        await anyio.sleep(0.1)
        tg.start_soon(rec.op, "backup", "b0")
        await anyio.sleep(0.1)
        assert rec.order == ["r0", "b0"]
    assert anyio.current_time() - t0 == 2.0


async def test_growing_wakes_exactly_those_that_fit_and_shrinking_cancels_no_one() -> None:
    """Raising total from 1 to 3 starts two waiters; lowering it keeps holders running."""
    limits = OperationLimits(total=1)
    rec = Recorder(limits)
    async with anyio.create_task_group() as tg:
        for i in range(5):
            tg.start_soon(rec.op, "backup", f"b{i}")
        await anyio.sleep(0.5)
        assert limits.statistics().in_use == 1
        limits.total = 3
        await anyio.sleep(0)
        assert limits.statistics().in_use == 3
        assert limits.statistics().tasks_waiting == 2
        limits.total = 1  # holders keep their slots
        assert limits.statistics().in_use == 3
    assert rec.peak["backup"] == 3


async def test_kind_limits_change_live() -> None:
    """set_kind_limit raises or removes one kind's limit while others wait."""
    limits = OperationLimits(per_kind={"restore": 1})
    rec = Recorder(limits)
    async with anyio.create_task_group() as tg:
        for i in range(3):
            tg.start_soon(rec.op, "restore", f"r{i}")
        await anyio.sleep(0.5)
        limits.set_kind_limit("restore", None)
        await anyio.sleep(0)
        assert limits.statistics().in_use == 3
    assert limits.per_kind == {}


async def test_cancelled_waiters_and_holders_leak_nothing() -> None:
    """A waiter cancelled in line, or a holder cancelled inside, gives its slot back."""
    limits = OperationLimits(total=1, per_key=1)
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: Recorder(limits).op("backup", "holder", key="vm"))
        await anyio.sleep(0.1)
        with anyio.move_on_after(0.2):
            async with limits.slot("backup", key="vm"):
                pytest.fail("should not get a slot")
        assert limits.statistics().tasks_waiting == 0
    with anyio.move_on_after(0.5):
        async with limits.slot("backup", key="vm"):
            await anyio.sleep(10)
    stats = limits.statistics()
    assert (stats.in_use, stats.tasks_waiting, dict(stats.in_use_per_kind)) == (0, 0, {})


class Custom(BaseException):
    """A BaseException of the user's own."""


@pytest.mark.parametrize(
    ("where", "what"),
    [
        *[("holding", what) for what in (ValueError, KeyboardInterrupt, SystemExit, Custom)],
        ("holding", "cancel"),
        ("waiting", "cancel"),  # only a cancellation reaches a task waiting in line
        ("granted", "cancel"),  # cancelled in the very step its slot is granted
    ],
    ids=str,
)
async def test_a_fault_anywhere_leaks_no_slot(where: str, what: Any) -> None:
    """
    Whatever ends an operation (an exception in its body, or a cancellation while it
    holds its slot, waits in line, or is being granted), its slot goes to the next in line
    at that moment and the exception propagates unchanged.
    """
    limits = OperationLimits(total=1, per_kind={"restore": 1}, per_key=1)
    faulty_scope = anyio.CancelScope()
    caught: list[BaseException] = []
    follower_got_it: list[float] = []

    async def holder() -> None:
        async with limits.slot("restore", key="vm1"):
            await anyio.sleep(2)
            if where == "granted":  # cancelled, then granted its slot, in one step
                faulty_scope.cancel()

    async def faulty() -> None:
        with faulty_scope:
            try:
                async with limits.slot("restore", key="vm1"):
                    await anyio.sleep(1)
                    if what == "cancel":
                        faulty_scope.cancel()
                        await anyio.sleep(10)
                    raise what("in the body")
                pytest.fail("the body always ends in an exception")
            except BaseException as e:
                caught.append(e)
                if isinstance(e, anyio.get_cancelled_exc_class()):
                    raise  # for faulty_scope to catch

    async def follower() -> None:
        async with limits.slot("restore", key="vm1"):
            follower_got_it.append(anyio.current_time() - t0)

    t0 = anyio.current_time()
    with anyio.fail_after(100):
        async with anyio.create_task_group() as tg:
            if where != "holding":  # holds the slot from 0 to 2
                tg.start_soon(holder)
                await anyio.sleep(0.1)
            tg.start_soon(faulty)
            await anyio.sleep(0.1)
            tg.start_soon(follower)
            if where == "waiting":
                await anyio.sleep(0.8)
                faulty_scope.cancel()
    (error,) = caught
    if what == "cancel":
        assert isinstance(error, anyio.get_cancelled_exc_class())
        assert faulty_scope.cancelled_caught
    else:
        assert type(error) is what
    assert follower_got_it == [1.0 if where == "holding" else 2.0]
    stats = limits.statistics()
    assert (stats.in_use, stats.tasks_waiting, dict(stats.in_use_per_kind)) == (0, 0, {})


async def test_nowait_takes_a_free_slot_or_raises() -> None:
    """slot_nowait takes a slot at once or raises WouldBlock."""
    limits = OperationLimits(total=2, per_kind={"restore": 1})
    with limits.slot_nowait("restore"):
        with pytest.raises(anyio.WouldBlock), limits.slot_nowait("restore"):
            pass
        with limits.slot_nowait("backup"):
            assert limits.statistics().in_use == 2
    assert limits.statistics().in_use == 0


@pytest.mark.parametrize(
    ("held", "nowait"),
    [
        # The waiting restore of vm1 waits for vm1 (held by a backup). A restore of vm2
        # would fit now, but would take the one restore slot the waiter is queued for.
        (("backup", "vm1"), ("restore", "vm2")),
        # The waiting restore of vm1 waits for the restore slot (held for vm2). A backup
        # of vm1 would fit now, but would take vm1 from under the waiter.
        (("restore", "vm2"), ("backup", "vm1")),
    ],
    ids=["same-kind", "same-key"],
)
async def test_nowait_never_jumps_the_line(held: tuple[str, str], nowait: tuple[str, str]) -> None:
    """slot_nowait refuses a free slot that a queued waiter needs; the waiter gets it."""
    limits = OperationLimits(total=3, per_kind={"restore": 1}, per_key=1)
    order: list[str] = []

    async def restore_vm1() -> None:
        async with limits.slot("restore", key="vm1"):
            order.append("waiter")

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg, limits.slot(held[0], key=held[1]):
            tg.start_soon(restore_vm1)
            await anyio.sleep(1)
            assert limits.statistics().tasks_waiting == 1
            with pytest.raises(anyio.WouldBlock), limits.slot_nowait(*nowait):
                order.append("jumped the line")
            with limits.slot_nowait("delete", key="vm3"):  # what nobody waits for
                assert limits.statistics().in_use == 2
            order.append("released")
    assert order == ["released", "waiter"]
    assert limits.statistics().in_use == 0


@pytest.mark.parametrize(
    ("kwargs", "error", "fragment"),
    [
        ({"total": 0}, ValueError, "total must be >= 1"),
        ({"per_kind": {"restore": 0}}, ValueError, r"per_kind\['restore'\] must be >= 1"),
        ({"per_kind": [("restore", 1)]}, TypeError, "per_kind must be a mapping"),
        ({"per_key": "1"}, TypeError, "per_key must be an int"),
    ],
)
def test_bad_limits_are_named(kwargs: dict[str, Any], error: type, fragment: str) -> None:
    """Every bad limit says which one and why."""
    with pytest.raises(error, match=fragment):
        OperationLimits(**kwargs)


async def test_bad_slot_arguments() -> None:
    """Kinds must be non-empty strings and keys hashable."""
    limits = OperationLimits()
    with pytest.raises(ValueError, match="kind must be a non-empty str"):
        async with limits.slot(""):
            pass
    with pytest.raises(TypeError, match="kind must be a non-empty str, got int"):
        async with limits.slot(3):  # type: ignore[arg-type]
            pass
    with pytest.raises(TypeError, match="key must be hashable"):
        async with limits.slot("backup", key=["vm"]):
            pass


# One rule for slot() and slot_nowait(): granted when it fits and no request ahead of it
# in line shares a limited kind or key with it. Each case: what is held, who waits (kind, key,
# priority), the request, and whether it is granted at once.
RULE_CASES = [
    # A restore of vm1 waits for vm1 (held by a backup): a restore of vm2 fits, but
    # would overtake it on the restore kind.
    (("backup", "vm1"), ("restore", "vm1", 0), ("restore", "vm2", 0), False),
    # A restore of vm1 waits for the restore kind (held for vm2): a backup of vm1 fits,
    # but would overtake it on vm1.
    (("restore", "vm2"), ("restore", "vm1", 0), ("backup", "vm1", 0), False),
    # Sharing neither kind nor key: it goes past the waiter.
    (("backup", "vm1"), ("restore", "vm1", 0), ("delete", "vm3", 0), True),
    # A higher priority is ahead of the waiter in line: it is not overtaking anyone.
    (("backup", "vm1"), ("restore", "vm1", 0), ("restore", "vm2", 5), True),
    # The same priority arrives later: behind the waiter.
    (("backup", "vm1"), ("restore", "vm1", 5), ("restore", "vm2", 5), False),
    # Nobody waits, but it does not fit (the restore kind is full).
    (("restore", "vm2"), None, ("restore", "vm3", 0), False),
    # The same kind, but backups have no limit of their own: nothing to overtake on.
    (("backup", "vm1"), ("backup", "vm1", 0), ("backup", "vm2", 0), True),
]


@pytest.mark.parametrize("api", ["slot", "slot_nowait"])
@pytest.mark.parametrize(("held", "waiter", "asked", "granted"), RULE_CASES)
async def test_slot_and_slot_nowait_follow_one_rule(
    held: tuple[str, str],
    waiter: tuple[str, str, int] | None,
    asked: tuple[str, str, int],
    granted: bool,
    api: str,
) -> None:
    """slot() is granted at once exactly where slot_nowait() does not raise WouldBlock."""
    limits = OperationLimits(total=4, per_kind={"restore": 1}, per_key=1)
    got: list[str] = []

    async def wait_in_line() -> None:
        assert waiter is not None
        async with limits.slot(waiter[0], key=waiter[1], priority=waiter[2]):
            got.append("waiter")

    async def request_slot() -> None:
        kind, key, priority = asked
        async with limits.slot(kind, key=key, priority=priority):
            got.append("request")
            await anyio.sleep(10)

    with anyio.fail_after(100):
        async with anyio.create_task_group() as tg, limits.slot(held[0], key=held[1]):
            if waiter is not None:
                tg.start_soon(wait_in_line)
                await anyio.sleep(1)
                assert limits.statistics().tasks_waiting == 1
            if api == "slot_nowait":
                kind, key, priority = asked
                try:
                    with limits.slot_nowait(kind, key=key, priority=priority):
                        got.append("request")
                except anyio.WouldBlock:
                    pass
            else:
                tg.start_soon(request_slot)
                await anyio.sleep(1)
            assert ("request" in got) is granted
            tg.cancel_scope.cancel()
    stats = limits.statistics()
    assert (stats.in_use, stats.tasks_waiting) == (0, 0)


def test_the_old_statistics_name_still_reads_with_a_warning() -> None:
    """OperationLimitsStatistics.waiting reads tasks_waiting for one release, with a warning."""
    stats = OperationLimits(total=1).statistics()
    with pytest.warns(DeprecationWarning, match="use tasks_waiting"):
        assert stats.waiting == stats.tasks_waiting == 0
