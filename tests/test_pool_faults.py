"""
ItemBlockWorkerPool under fault injection: whatever a user's callable raises, wherever,
and whenever a scope around the pool is cancelled, the pool ends promptly, reports every
block exactly once, lets the right exception out (or records it) and leaves no task behind.

The matrix is: where the fault happens (process async, process sync in a thread, the pre
hook, the post hook (sync, in a thread), key, on_error (sync or async), on_progress while
the run goes (sync or async), on_progress at the end, an additional item's process) x
what it is (ValueError: recorded, or a CallbackWarning for on_error and on_progress,
KeyboardInterrupt, SystemExit, a BaseException of the user's own, or the callable
cancelling the scope around the pool) x where the run is awaited (inside the pool's
``async with``, or in a task outside it) x backend (asyncio and trio, virtual time).
"""

from __future__ import annotations

import contextlib
import faulthandler
import sys
from collections.abc import Callable, Iterator
from typing import Any

import anyio
import pytest
from anyio.abc import TaskStatus
from hypothesis import given, settings
from hypothesis import strategies as st

from throttlekit import (
    BlockResult,
    BlockStatus,
    CallbackWarning,
    ItemBlock,
    ItemBlockWorkerPool,
    ItemError,
    RunProgress,
    RunResult,
)
from throttlekit.testing import run as run_virtual

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup

pytestmark = pytest.mark.anyio


class Custom(BaseException):
    """A BaseException of the user's own, neither an Exception nor a cancellation."""


WHERE = [
    "process",
    "process_thread",
    "pre_hook",
    "post_hook",
    "key",
    "on_error",
    "on_error_async",
    "on_progress",
    "on_progress_async",
    "on_progress_final",
    "additional",
]
WHAT: list[Any] = [ValueError, KeyboardInterrupt, SystemExit, Custom, "cancel"]
RECORDED = {"process", "process_thread", "pre_hook", "post_hook", "key", "additional"}

GRACE = 3.0
TARGET = "b2/0"  # the item (of block b2) where faults happen
BASELINE = "b1/1"  # always fails with a RuntimeError, so that on_error is called


@pytest.fixture(autouse=True)
def watchdog() -> Iterator[None]:
    """
    A real-time backstop: fail_after cannot end a wait the pool shields, which is where
    an old pool hung. Rather than hang, dump every stack and exit after 60 real seconds.
    """
    faulthandler.dump_traceback_later(60, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


def task_ids() -> set[int]:
    return {t.id for t in anyio.get_running_tasks()}


class ThreadsHoldTime:
    """
    Virtual time stands still while a worker thread runs, so that timestamps stay exact:
    otherwise the virtual clock, finding every task waiting, would jump straight to the
    next deadline (the grace period, fail_after) while a thread works.
    ``anyio.to_thread.run_sync`` is wrapped to count the threads in flight, and
    :meth:`keep` (a task) keeps the event loop busy while there are any.
    """

    def __init__(self, original: Callable[..., Any]) -> None:
        self.original = original
        self.in_flight = 0
        self.wake = anyio.Event()

    async def run_sync(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        self.in_flight += 1
        self.wake.set()
        try:
            return await self.original(func, *args, **kwargs)
        finally:
            self.in_flight -= 1

    async def keep(self) -> None:
        while True:
            if self.in_flight:
                await anyio.sleep(0)
            else:
                self.wake = anyio.Event()
                await self.wake.wait()


@pytest.fixture
def threads_hold_time(monkeypatch: pytest.MonkeyPatch) -> ThreadsHoldTime:
    hold = ThreadsHoldTime(anyio.to_thread.run_sync)
    monkeypatch.setattr(anyio.to_thread, "run_sync", hold.run_sync)
    return hold


def leaves(error: BaseException) -> list[BaseException]:
    if isinstance(error, BaseExceptionGroup):
        return [leaf for e in error.exceptions for leaf in leaves(e)]
    return [error]


def expected_items(block: ItemBlock[str], where: str) -> int:
    return len(block) + (2 if where == "additional" and block.items[0] == TARGET else 0)


def check_result(result: RunResult, blocks: list[ItemBlock[str]], where: str) -> None:
    """Every block exactly once, in order, each with a status its record agrees with."""
    assert [b.block for b in result.blocks] == blocks
    for b in result.blocks:
        assert b.status in (BlockStatus.SUCCEEDED, BlockStatus.FAILED, BlockStatus.CANCELLED)
        assert (b.status is BlockStatus.FAILED) == bool(b.errors), b
        if b.status is BlockStatus.SUCCEEDED:
            assert b.items_done == expected_items(b.block, where), b
        else:
            assert b.items_done <= expected_items(b.block, where), b
        for e in b.errors:
            assert isinstance(e.error, Exception)
            assert e.block == b.block


class Scenario:
    """Six blocks of two one-second items on two workers, one fault injected once."""

    def __init__(self, where: str, what: Any) -> None:
        self.where, self.what = where, what
        self.blocks = [ItemBlock([f"b{i}/0", f"b{i}/1"], name=f"b{i}") for i in range(6)]
        self.injected: BaseException | None = None if what == "cancel" else what("injected")
        self.outer = anyio.CancelScope()  # the scope around the pool
        self.fired: list[float] = []

    def fire(self, *, in_thread: bool = False) -> None:
        if self.fired:
            return  # once
        self.fired.append(
            anyio.from_thread.run_sync(anyio.current_time) if in_thread else anyio.current_time()
        )
        if self.injected is not None:
            raise self.injected
        if in_thread:
            anyio.from_thread.run_sync(self.outer.cancel)
        else:
            self.outer.cancel()

    def work(self, item: str, *, in_thread: bool = False) -> list[str] | None:
        if item == BASELINE:
            raise RuntimeError("baseline failure")
        if self.where == "additional":
            if item == TARGET:
                return [f"{TARGET}+x", f"{TARGET}+y"]
            if item == f"{TARGET}+y":
                self.fire(in_thread=in_thread)
        elif item == TARGET and self.where in ("process", "process_thread"):
            self.fire(in_thread=in_thread)
        return None

    async def process(self, item: str) -> list[str] | None:
        await anyio.sleep(1)
        return self.work(item)

    def process_in_thread(self, item: str) -> list[str] | None:
        return self.work(item, in_thread=True)

    async def pre_hook(self, block: ItemBlock[str]) -> None:
        await anyio.sleep(0)
        if self.where == "pre_hook" and str(block) == "b2":
            self.fire()

    def post_hook(self, block: ItemBlock[str]) -> None:  # sync: runs in a worker thread
        if self.where == "post_hook" and str(block) == "b2":
            self.fire(in_thread=True)

    def key(self, item: str) -> str:
        if self.where == "key" and item == TARGET:
            self.fire()
        return item

    def on_error(self, error: ItemError) -> None:
        if self.where.removesuffix("_async") == "on_error":
            self.fire()

    def on_progress(self, progress: RunProgress) -> None:
        wanted = "on_progress_final" if progress.finished else "on_progress"
        if self.where.removesuffix("_async") == wanted:
            self.fire()

    async def on_error_async(self, error: ItemError) -> None:
        await anyio.sleep(0.25)  # awaited: the fault comes after a real wait
        self.on_error(error)

    async def on_progress_async(self, progress: RunProgress) -> None:
        await anyio.sleep(0.25)
        self.on_progress(progress)

    async def run(self, pool: ItemBlockWorkerPool) -> RunResult:
        return await pool.run(
            self.blocks,
            self.process_in_thread if self.where == "process_thread" else self.process,
            pre_hook=self.pre_hook,
            post_hook=self.post_hook,
            key=self.key,
            on_error=self.on_error_async if self.where == "on_error_async" else self.on_error,
            on_progress=(
                self.on_progress_async if self.where == "on_progress_async" else self.on_progress
            ),
        )


async def play(scenario: Scenario, layout: str, hold: ThreadsHoldTime) -> dict[str, Any]:
    """Run the scenario; what escaped the pool, what escaped run(), the result, when."""
    pool = ItemBlockWorkerPool(workers=2, grace_period=GRACE)
    out: dict[str, Any] = {"pool": None, "run": None, "result": None}
    before = task_ids()
    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            tg.start_soon(hold.keep)
            if layout == "inside":  # the run is awaited inside the pool's async with
                with scenario.outer:
                    try:
                        async with pool:
                            out["result"] = await scenario.run(pool)
                    except BaseExceptionGroup as group:
                        out["pool"] = group
            else:  # the run is awaited by a task outside the pool's scope
                finished = anyio.Event()

                async def host(*, task_status: TaskStatus[None]) -> None:
                    with scenario.outer:
                        try:
                            async with pool:
                                task_status.started()
                                await finished.wait()
                        except BaseExceptionGroup as group:
                            out["pool"] = group

                await tg.start(host)
                try:
                    out["result"] = await scenario.run(pool)
                except BaseException as e:
                    out["run"] = e
                finally:
                    finished.set()
            out["end"] = anyio.current_time()
            tg.cancel_scope.cancel()
    assert task_ids() == before  # the pool's workers (and everything else) are gone
    stats = pool.statistics()
    assert (stats.in_use, stats.queued_blocks, stats.runs) == (0, 0, 0)
    return out


@pytest.mark.parametrize("layout", ["inside", "outside"])
@pytest.mark.parametrize("what", WHAT, ids=lambda w: w if isinstance(w, str) else w.__name__)
@pytest.mark.parametrize("where", WHERE)
async def test_a_fault_anywhere_ends_the_pool_cleanly(
    where: str, what: Any, layout: str, threads_hold_time: ThreadsHoldTime
) -> None:
    """
    Whatever a callable raises, wherever: the pool returns or raises promptly, the fault
    is recorded, logged or propagated exactly once, and every block is reported.
    """
    scenario = Scenario(where, what)
    warned = what is ValueError and where not in RECORDED  # a callback's Exception
    with pytest.warns(CallbackWarning) if warned else contextlib.nullcontext() as caught:
        out = await play(scenario, layout, threads_hold_time)
    if caught is not None:  # said once, with the callback's exception as its cause
        (warning,) = [w.message for w in caught if isinstance(w.message, CallbackWarning)]
        assert warning.__cause__ is scenario.injected
        name = where.removesuffix("_final").removesuffix("_async")
        assert f"{name} Scenario.{name}" in str(warning)
    assert len(scenario.fired) == 1  # the fault really happened
    (fired_at,) = scenario.fired
    result: RunResult | None = out["result"]
    escaped = [leaf for key in ("pool", "run") if out[key] is not None for leaf in leaves(out[key])]

    if what is ValueError:
        assert escaped == []
        assert result is not None
        check_result(result, scenario.blocks, where)
        recorded = [e for e in result.errors if e.error is scenario.injected]
        b2: BlockResult = result.blocks[2]
        if where in RECORDED:
            (error,) = recorded
            assert b2.status is BlockStatus.FAILED
            assert error in b2.errors
            expected = {
                "pre_hook": (None, None, "pre_hook"),
                "post_hook": (None, None, "post_hook"),
                "additional": (f"{TARGET}+y", TARGET, "item"),
            }.get(where, (TARGET, None, "item"))
            assert (error.item, error.parent, error.phase) == expected
        else:  # on_error and on_progress: a CallbackWarning, and the run goes on
            assert recorded == []
            assert [str(e.item) for e in result.errors] == [BASELINE]
            assert result.failed == 1
            assert result.succeeded == 5
    elif what == "cancel":
        assert escaped == []
        assert scenario.outer.cancel_called
        if layout == "outside":  # the run is not cancelled: it gets the grace period
            assert result is not None
            assert fired_at <= out["end"] <= fired_at + GRACE
        else:  # the run's own task is cancelled: its blocks are cancelled at once
            assert out["end"] == fired_at
        if result is not None:
            check_result(result, scenario.blocks, where)
    else:  # a BaseException: it propagates exactly once, after the pool has ended
        assert [e for e in escaped if e is scenario.injected] == escaped
        assert len(escaped) == 1
        if layout == "inside" or where == "on_progress_final":
            assert out["end"] == fired_at  # at once: the run's task is cancelled (or done)
        if layout == "inside":
            assert isinstance(out["pool"], BaseExceptionGroup)  # as from a task group
        elif where == "on_progress_final":  # called in run()'s own task: raised there
            assert out["run"] is scenario.injected
            assert out["pool"] is None
        else:  # from a worker: out of the pool's async with; run() reports every block
            assert out["run"] is None
            assert isinstance(out["pool"], BaseExceptionGroup)
            assert fired_at <= out["end"] <= fired_at + GRACE  # the in-flight blocks' grace
        if layout == "outside":
            assert result is not None or where == "on_progress_final"
        if result is not None:
            check_result(result, scenario.blocks, where)
            assert scenario.injected is not None
            assert all(e.error is not scenario.injected for e in result.errors)
            statuses = {str(b.block): b.status for b in result.blocks}
            if where in RECORDED:  # the block where it was raised is interrupted
                assert statuses["b2"] is BlockStatus.CANCELLED
            if where == "on_error":  # the error it was given is kept
                assert statuses["b1"] is BlockStatus.FAILED


@settings(max_examples=60, deadline=None)
@given(
    durations=st.lists(st.integers(1, 5), min_size=1, max_size=8),
    fail=st.sets(st.integers(0, 7)),
    workers=st.integers(1, 4),
    cancel_at=st.integers(0, 60).map(lambda quarter: quarter / 4),
    layout=st.sampled_from(["inside", "outside"]),
    backend=st.sampled_from(["asyncio", "trio"]),
)
def test_cancelling_the_scope_around_the_pool_at_any_moment(
    durations: list[int],
    fail: set[int],
    workers: int,
    cancel_at: float,
    layout: str,
    backend: str,
) -> None:
    """
    A scope around the pool cancelled at any virtual moment: the pool ends at once when
    the run's task is cancelled with it, within the grace period when the run is awaited
    elsewhere; every block is reported exactly once; no task is left.
    """
    grace = 2.0

    async def process(item: int) -> None:
        await anyio.sleep(durations[item])
        if item in fail:
            raise RuntimeError(str(item))

    async def main() -> tuple[RunResult | None, float, bool]:
        before = task_ids()
        blocks = [ItemBlock([i]) for i in range(len(durations))]
        results: list[RunResult] = []
        with anyio.fail_after(1000):
            t0 = anyio.current_time()
            if layout == "inside":
                with anyio.move_on_after(cancel_at) as outer:
                    async with ItemBlockWorkerPool(workers=workers, grace_period=grace) as pool:
                        results.append(await pool.run(blocks, process))
            else:
                outer = anyio.CancelScope()
                async with anyio.create_task_group() as tg:
                    pool = ItemBlockWorkerPool(workers=workers, grace_period=grace)
                    finished = anyio.Event()

                    async def host(*, task_status: TaskStatus[None]) -> None:
                        with outer:
                            async with pool:
                                task_status.started()
                                await finished.wait()

                    async def cancel_later() -> None:
                        await anyio.sleep(cancel_at)
                        outer.cancel()

                    await tg.start(host)
                    tg.start_soon(cancel_later)  # starts once the run is queued
                    try:
                        results.append(await pool.run(blocks, process))
                    finally:
                        finished.set()
            elapsed = anyio.current_time() - t0
        assert task_ids() == before
        return (results[0] if results else None), elapsed, outer.cancelled_caught

    result, elapsed, cancelled = run_virtual(main, backend=backend)  # type: ignore[arg-type]
    if layout == "inside":
        assert elapsed <= cancel_at
        assert result is not None or cancelled
    else:
        assert result is not None
        assert elapsed <= cancel_at + grace
    if result is not None:
        assert [b.block.items[0] for b in result.blocks] == list(range(len(durations)))
        for i, b in enumerate(result.blocks):
            assert b.status is not BlockStatus.SKIPPED
            if b.status is BlockStatus.FAILED:
                assert i in fail
            if b.status is BlockStatus.SUCCEEDED:
                assert i not in fail
        if not cancelled:  # everything ran
            assert result.cancelled == 0


def raiser(error: BaseException) -> Callable[..., Any]:
    def raise_it(*args: Any) -> Any:
        raise error

    return raise_it


@pytest.mark.parametrize(
    ("returned", "fragment"),
    [
        ("pvc/data", "returned a str, which would make each character an additional item"),
        (b"pvc/data", "returned a bytes, which would make each character"),
        (bytearray(b"pvc"), "returned a bytearray, which would make each character"),
        (memoryview(b"pvc"), "returned a memoryview, which would make each character"),
        ({"pvc/data": 1}, "returned a dict, which would make each key an additional item"),
        (42, "returned a int; return None or an iterable of additional items"),
    ],
)
async def test_a_process_returning_text_is_refused(returned: Any, fragment: str) -> None:
    """A str (or bytes) is not a list of additional items: that item fails, clearly."""
    seen: list[str] = []

    async def process(item: str) -> Any:
        seen.append(item)
        return returned if item == "pod/a" else None

    with anyio.fail_after(10):
        async with ItemBlockWorkerPool(workers=1) as pool:
            result = await pool.run([ItemBlock(["pod/a", "pod/b"])], process)
    assert seen == ["pod/a", "pod/b"]  # no character became an item; the block went on
    (error,) = result.errors
    assert error.item == "pod/a"
    assert isinstance(error.error, TypeError)
    assert fragment in str(error.error)
    assert result.blocks[0].status is BlockStatus.FAILED
    assert result.blocks[0].items_done == 1


async def test_a_failing_generator_of_additional_items_fails_its_item() -> None:
    """Additional items are read when process returns; an error while reading is kept."""

    def extras() -> Iterator[str]:
        yield "snap/1"
        raise OSError("listing snapshots failed")

    async def process(item: str) -> Any:
        return extras() if item == "pvc" else None

    async with ItemBlockWorkerPool(workers=1) as pool:
        result = await pool.run([ItemBlock(["pvc"])], process)
    (error,) = result.errors
    assert (error.item, type(error.error), str(error.error)) == (
        "pvc",
        OSError,
        "listing snapshots failed",
    )


async def test_an_unhashable_key_fails_the_item_with_a_clear_error() -> None:
    """key= must return something hashable; one that does not fails that item only."""

    def key(item: str) -> Any:
        return [item] if item == "a" else item

    async with ItemBlockWorkerPool(workers=1) as pool:
        result = await pool.run([ItemBlock(["a", "b"])], lambda item: None, key=key)
    (error,) = result.errors
    assert error.item == "a"
    assert isinstance(error.error, TypeError)
    assert "key(a) returned an unhashable list" in str(error.error)
    assert result.blocks[0].items_done == 1


async def test_a_run_after_a_failure_is_refused() -> None:
    """Once a callable's BaseException stops the pool, no new run starts on it."""
    caught: list[BaseException] = []
    with anyio.fail_after(10):
        try:
            async with ItemBlockWorkerPool(workers=1) as pool:
                with pytest.raises(anyio.get_cancelled_exc_class()):  # "b" keeps it going
                    await pool.run([ItemBlock(["a"]), ItemBlock(["b"])], raiser(Custom("stop")))
                with pytest.raises(RuntimeError, match="the pool is stopping"):
                    await pool.run([ItemBlock(["c"])], print)
        except BaseExceptionGroup as group:
            caught.extend(leaves(group))
    assert [type(e) for e in caught] == [Custom]
