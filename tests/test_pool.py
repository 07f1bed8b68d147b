"""ItemBlockWorkerPool on virtual time, asyncio and trio: concurrency, errors, hooks, runs."""

from __future__ import annotations

import logging
import sys
import threading
from typing import Any

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from throttlekit import (
    BlockStatus,
    ItemBlock,
    ItemBlockError,
    ItemBlockWorkerPool,
    ItemError,
    RunProgress,
)
from throttlekit.testing import run as run_virtual

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup

pytestmark = pytest.mark.anyio


def blocks_of(*groups: list[str]) -> list[ItemBlock[str]]:
    return [ItemBlock(g) for g in groups]


class Tracker:
    """Records concurrency and the order items were processed in."""

    def __init__(self, delay: float = 1.0) -> None:
        self.delay = delay
        self.active = 0
        self.peak = 0
        self.order: list[str] = []

    async def __call__(self, item: str) -> None:
        self.active += 1
        self.peak = max(self.peak, self.active)
        try:
            await anyio.sleep(self.delay)
            self.order.append(item)
        finally:
            self.active -= 1


async def test_peak_concurrency_equals_the_worker_count() -> None:
    """Ten one-second blocks on three workers: three at a time, done in four seconds."""
    tracker = Tracker()
    async with ItemBlockWorkerPool(workers=3) as pool:
        t0 = anyio.current_time()
        result = await pool.run(blocks_of(*[[f"i{k}"] for k in range(10)]), tracker)
        assert anyio.current_time() - t0 == 4.0
    assert tracker.peak == 3
    assert result.ok
    assert result.succeeded == 10
    assert [str(b.block) for b in result.blocks] == [f"i{k}" for k in range(10)]


async def test_items_of_a_block_run_in_order_on_one_worker() -> None:
    """A block's items run one after another, in order; blocks run side by side."""
    tracker = Tracker()
    async with ItemBlockWorkerPool(workers=2) as pool:
        result = await pool.run(blocks_of(["a1", "a2", "a3"], ["b1", "b2", "b3"]), tracker)
    assert [i for i in tracker.order if i[0] == "a"] == ["a1", "a2", "a3"]
    assert [i for i in tracker.order if i[0] == "b"] == ["b1", "b2", "b3"]
    assert tracker.peak == 2
    assert [b.duration for b in result.blocks] == [3.0, 3.0]
    assert [b.items_done for b in result.blocks] == [3, 3]


async def test_sync_process_runs_in_threads() -> None:
    """A sync process function runs in worker threads, not on the event loop."""
    loop_thread = threading.get_ident()
    threads: set[int] = set()

    def process(item: str) -> None:
        threads.add(threading.get_ident())

    async with ItemBlockWorkerPool(workers=2) as pool:
        result = await pool.run(blocks_of(["a", "b"], ["c"]), process)
    assert result.ok
    assert loop_thread not in threads


async def test_a_waiting_pool_sets_no_timer() -> None:
    """
    The pool waits on events, never on timers (an infinite one included): on a virtual
    clock, time stays put while the only thing in flight is a thread.
    """
    release = threading.Event()

    def process(item: str) -> None:
        assert release.wait(10)

    async with ItemBlockWorkerPool(workers=2) as pool:
        t0 = anyio.current_time()
        threading.Timer(0.05, release.set).start()  # 50 real milliseconds
        result = await pool.run(blocks_of(["a"]), process)
        assert anyio.current_time() == t0
    assert result.ok


async def test_additional_items_run_in_parallel_and_their_errors_stay_with_the_parent() -> None:
    """Additional items run at most N at once before the item is done; errors name the parent."""
    active = peak = 0
    seen: list[ItemError] = []

    async def process(item: str) -> list[str] | None:
        nonlocal active, peak
        if item == "pod/a":
            return ["snap/1", "snap/2", "snap/3", "snap/4"]
        active += 1
        peak = max(peak, active)
        await anyio.sleep(1)
        active -= 1
        if item in ("snap/2", "snap/4"):
            raise OSError(f"{item} timed out")
        return None

    async with ItemBlockWorkerPool(workers=1) as pool:
        t0 = anyio.current_time()
        result = await pool.run(
            blocks_of(["pod/a", "last"]),
            process,
            additional_concurrency=2,
            on_error=seen.append,
        )
        assert anyio.current_time() - t0 == 3.0  # 2 + 2 snaps in parallel, then "last"
    assert peak == 2
    (block,) = result.blocks
    assert block.status is BlockStatus.FAILED
    # trio starts tasks in any order: compare without order
    assert sorted((e.item, e.parent) for e in block.errors) == [
        ("snap/2", "pod/a"),
        ("snap/4", "pod/a"),
    ]
    assert sorted(e.item for e in seen) == ["snap/2", "snap/4"]
    with pytest.raises(ItemBlockError) as info:
        result.raise_for_errors()
    (group,) = info.value.exceptions
    assert isinstance(group, ItemBlockError)
    (nested,) = group.exceptions
    assert isinstance(nested, ItemBlockError)
    assert nested.message.startswith("One or more additional items for pod/a failed: snap/")
    assert len(nested.exceptions) == 2


async def test_no_error_is_dropped_and_each_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    """Three failing items among a hundred: all three are reported and logged."""

    async def process(item: str) -> None:
        await anyio.sleep(0.01)
        if item in ("i7", "i42", "i99"):
            raise RuntimeError(item)

    caplog.set_level(logging.WARNING, logger="throttlekit.pool")
    async with ItemBlockWorkerPool(workers=8) as pool:
        result = await pool.run(blocks_of(*[[f"i{k}"] for k in range(100)]), process)
    assert sorted(str(e.error) for e in result.errors) == ["i42", "i7", "i99"]
    assert result.failed == 3
    assert result.succeeded == 97
    assert len([r for r in caplog.records if r.name == "throttlekit.pool"]) == 3


async def test_hooks_wrap_the_items() -> None:
    """pre_hook runs before a block's items and post_hook after, even when items fail."""
    log: list[str] = []

    async def process(item: str) -> None:
        log.append(item)
        if item == "bad":
            raise ValueError("bad item")

    async def pre(block: ItemBlock[str]) -> None:
        log.append(f"pre {block}")

    def post(block: ItemBlock[str]) -> None:  # sync hooks work too
        log.append(f"post {block}")

    async with ItemBlockWorkerPool(workers=1) as pool:
        result = await pool.run(blocks_of(["bad", "x"]), process, pre_hook=pre, post_hook=post)
    assert log == ["pre bad", "bad", "x", "post bad"]
    assert result.blocks[0].status is BlockStatus.FAILED


async def test_failed_pre_hook_skips_items_and_post_hook() -> None:
    """A failing pre hook fails the block; its items and post hook do not run."""
    log: list[str] = []

    async def pre(block: ItemBlock[str]) -> None:
        raise RuntimeError("cannot quiesce")

    async def post(block: ItemBlock[str]) -> None:
        log.append("post")

    async with ItemBlockWorkerPool(workers=1) as pool:
        result = await pool.run(blocks_of(["a"]), log.append, pre_hook=pre, post_hook=post)
    assert log == []
    (error,) = result.errors
    assert (error.item, error.phase) == (None, "pre_hook")
    assert str(error) == "pre_hook of block a: RuntimeError: cannot quiesce"


async def test_key_processes_each_item_once_per_run() -> None:
    """With key=, an item in two blocks and returned as additional by two items runs once."""
    counts: dict[str, int] = {}

    async def process(item: str) -> list[str]:
        counts[item] = counts.get(item, 0) + 1
        await anyio.sleep(0.5)
        return ["shared-pv"] if item.startswith("pod") else []

    async with ItemBlockWorkerPool(workers=4) as pool:
        result = await pool.run(
            blocks_of(["pod/a", "pvc"], ["pod/b", "pvc"], ["pvc"]),
            process,
            key=lambda item: item,
        )
    assert counts == {"pod/a": 1, "pod/b": 1, "pvc": 1, "shared-pv": 1}
    assert result.skipped == 1  # the third block had nothing left to do
    assert result.ok


async def test_fail_fast_cancels_the_rest() -> None:
    """fail_fast=True: the first error cancels in-flight and queued blocks of the run."""

    async def process(item: str) -> None:
        await anyio.sleep(1 if item == "bad" else 5)
        if item == "bad":
            raise RuntimeError("first failure")

    async with ItemBlockWorkerPool(workers=2) as pool:
        t0 = anyio.current_time()
        result = await pool.run(blocks_of(["bad"], ["slow"], ["queued"]), process, fail_fast=True)
        assert anyio.current_time() - t0 == 1.0
    assert [b.status for b in result.blocks] == [
        BlockStatus.FAILED,
        BlockStatus.CANCELLED,
        BlockStatus.CANCELLED,
    ]


async def test_progress_is_throttled_and_final() -> None:
    """on_progress is called every progress_interval while work goes, and once at the end."""
    reports: list[tuple[float, RunProgress]] = []

    async def process(item: str) -> None:
        await anyio.sleep(0.3)

    async with ItemBlockWorkerPool(workers=1) as pool:
        t0 = anyio.current_time()
        await pool.run(
            blocks_of(*[[f"i{k}"] for k in range(12)]),
            process,
            on_progress=lambda p: reports.append((anyio.current_time() - t0, p)),
            progress_interval=1.0,
        )
    times = [round(t, 9) for t, _ in reports]
    assert times == [1.0, 2.0, 3.0, 3.6]
    assert [p.finished for _, p in reports] == [False, False, False, True]
    final = reports[-1][1]
    counts = (final.blocks_done, final.blocks_total, final.items_done, final.errors)
    assert counts == (12, 12, 12, 0)


async def test_two_runs_share_the_workers_fairly() -> None:
    """A run submitted second still gets every other worker slot, not the leftovers."""
    order: list[str] = []

    async def process(item: str) -> None:
        await anyio.sleep(1)
        order.append(item)

    async with ItemBlockWorkerPool(workers=1) as pool, anyio.create_task_group() as tg:
        tg.start_soon(pool.run, blocks_of(*[[f"a{k}"] for k in range(4)]), process)
        await anyio.sleep(0.5)
        tg.start_soon(pool.run, blocks_of(*[[f"b{k}"] for k in range(4)]), process)
    assert order == ["a0", "a1", "b0", "a2", "b1", "a3", "b2", "b3"]


async def test_higher_priority_run_goes_first() -> None:
    """A run with higher priority takes the workers before a lower one."""
    order: list[str] = []

    async def process(item: str) -> None:
        await anyio.sleep(1)
        order.append(item)

    async with ItemBlockWorkerPool(workers=1) as pool, anyio.create_task_group() as tg:
        tg.start_soon(pool.run, blocks_of(*[[f"low{k}"] for k in range(3)]), process)
        await anyio.sleep(0.5)
        tg.start_soon(lambda: pool.run(blocks_of(["urgent0"], ["urgent1"]), process, priority=10))
    assert order == ["low0", "urgent0", "urgent1", "low1", "low2"]


async def test_cancelling_a_run_leaves_other_runs_alone() -> None:
    """Cancelling one run's task cancels its blocks only; the pool stays usable."""
    done: list[str] = []

    async def process(item: str) -> None:
        await anyio.sleep(2)
        done.append(item)

    async with ItemBlockWorkerPool(workers=2) as pool:
        async with anyio.create_task_group() as tg:
            other = tg.start_soon
            results: dict[str, Any] = {}

            async def keep(name: str, blocks: list[ItemBlock[str]]) -> None:
                results[name] = await pool.run(blocks, process)

            other(keep, "kept", blocks_of(["k1"], ["k2"]))
            with anyio.move_on_after(1):
                await pool.run(blocks_of(["c1"], ["c2"], ["c3"]), process)
        assert sorted(done) == ["k1", "k2"]
        assert results["kept"].ok
        assert pool.statistics().runs == 0
        again = await pool.run(blocks_of(["later"]), process)
        assert again.ok


async def test_leaving_the_pool_cancels_after_the_grace_period(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """On exit, in-flight blocks get the grace period, then are cancelled and reported."""
    results: list[Any] = []

    async def process(item: str) -> None:
        await anyio.sleep(1 if item == "quick" else 100)

    caplog.set_level(logging.WARNING, logger="throttlekit.pool")
    t0 = anyio.current_time()
    async with (
        anyio.create_task_group() as tg,
        ItemBlockWorkerPool(workers=2, grace_period=5) as pool,
    ):

        async def go() -> None:
            results.append(await pool.run(blocks_of(["quick"], ["slow"], ["queued"]), process))

        tg.start_soon(go)
        await anyio.sleep(0.1)
    assert anyio.current_time() - t0 == pytest.approx(5.1)
    (result,) = results
    assert [b.status for b in result.blocks] == [
        BlockStatus.SUCCEEDED,
        BlockStatus.CANCELLED,
        BlockStatus.CANCELLED,
    ]
    assert any("after waiting 5 s" in r.getMessage() for r in caplog.records)


async def test_leaving_the_pool_starts_no_new_block() -> None:
    """On exit, queued blocks are reported cancelled at once; only in-flight ones finish."""
    started: list[str] = []
    results: list[Any] = []

    async def process(item: str) -> None:
        started.append(item)
        await anyio.sleep(2)

    t0 = anyio.current_time()
    with anyio.fail_after(100):
        async with (
            anyio.create_task_group() as tg,
            ItemBlockWorkerPool(workers=1, grace_period=10) as pool,
        ):

            async def go() -> None:
                results.append(await pool.run(blocks_of(["running"], ["queued"]), process))

            tg.start_soon(go)
            await anyio.sleep(0.5)
    assert anyio.current_time() - t0 == 2.0
    assert started == ["running"]
    (result,) = results
    assert [b.status for b in result.blocks] == [BlockStatus.SUCCEEDED, BlockStatus.CANCELLED]


async def test_a_cancelled_scope_around_the_pool_gives_the_grace_period() -> None:
    """
    A scope around the pool cancelled: a run awaited elsewhere gets every block back,
    in-flight ones after finishing or after the grace period, queued ones cancelled.
    """
    results: list[Any] = []

    async def process(item: str) -> None:
        await anyio.sleep(2 if item == "quick" else 100)

    t0 = anyio.current_time()
    with anyio.fail_after(100):
        async with anyio.create_task_group() as tg:
            pool = ItemBlockWorkerPool(workers=2, grace_period=5)
            finished = anyio.Event()

            async def host(*, task_status: anyio.abc.TaskStatus[None]) -> None:
                with anyio.move_on_after(1) as scope:
                    async with pool:
                        task_status.started()
                        await finished.wait()
                assert scope.cancelled_caught

            await tg.start(host)
            results.append(await pool.run(blocks_of(["quick"], ["slow"], ["queued"]), process))
            finished.set()
    assert anyio.current_time() - t0 == 6.0  # cancelled at 1, then 5 s of grace
    (result,) = results
    assert [b.status for b in result.blocks] == [
        BlockStatus.SUCCEEDED,
        BlockStatus.CANCELLED,
        BlockStatus.CANCELLED,
    ]
    assert [b.items_done for b in result.blocks] == [1, 0, 0]


class Abort(BaseException):
    """A BaseException of the user's own."""


async def test_a_base_exception_ends_the_pool_after_the_grace_period() -> None:
    """
    A callable's BaseException stops the pool: its block is interrupted, queued blocks are
    cancelled, a run awaited elsewhere keeps its in-flight blocks for the grace period;
    then the exception leaves the pool's async with in a BaseExceptionGroup.
    """
    results: list[Any] = []
    escaped: list[tuple[BaseException, float]] = []
    abort = Abort("stop")

    async def process(item: str) -> None:
        await anyio.sleep(1 if item == "boom" else 3)
        if item == "boom":
            raise abort

    t0 = anyio.current_time()
    with anyio.fail_after(100):
        async with anyio.create_task_group() as tg:
            pool = ItemBlockWorkerPool(workers=2, grace_period=5)
            finished = anyio.Event()

            async def host(*, task_status: anyio.abc.TaskStatus[None]) -> None:
                try:
                    async with pool:
                        task_status.started()
                        await finished.wait()
                except BaseExceptionGroup as group:
                    escaped.append((group, anyio.current_time() - t0))

            await tg.start(host)
            results.append(await pool.run(blocks_of(["boom"], ["slow"], ["queued"]), process))
            finished.set()
    ((group, when),) = escaped
    assert isinstance(group, BaseExceptionGroup)
    assert group.exceptions == (abort,)
    assert when == 3.0  # "slow" finished within the grace period
    (result,) = results
    assert [b.status for b in result.blocks] == [
        BlockStatus.CANCELLED,
        BlockStatus.SUCCEEDED,
        BlockStatus.CANCELLED,
    ]
    assert result.errors == ()


async def test_statistics_show_busy_workers_and_queue() -> None:
    """statistics() reports workers, busy workers, queued blocks and runs."""

    async def process(item: str) -> None:
        await anyio.sleep(1)

    async with ItemBlockWorkerPool(workers=2) as pool, anyio.create_task_group() as tg:
        tg.start_soon(pool.run, blocks_of(["a"], ["b"], ["c"], ["d"], ["e"]), process)
        await anyio.sleep(0.5)
        stats = pool.statistics()
        assert (stats.workers, stats.in_use, stats.queued_blocks, stats.runs) == (2, 2, 3, 1)


@pytest.mark.parametrize(
    ("kwargs", "error", "fragment"),
    [
        ({"workers": 0}, ValueError, "workers must be >= 1, got 0"),
        ({"workers": "4"}, TypeError, "workers must be an int"),
        ({"workers": 1, "grace_period": -1}, ValueError, "grace_period must be >= 0"),
    ],
)
async def test_bad_pool_arguments(kwargs: dict[str, Any], error: type, fragment: str) -> None:
    """The pool's arguments are validated with their names and values."""
    with pytest.raises(error, match=fragment):
        ItemBlockWorkerPool(**kwargs)


async def test_bad_run_arguments() -> None:
    """run() checks its arguments, and refuses to run outside the pool's context."""
    pool = ItemBlockWorkerPool(workers=1)
    with pytest.raises(RuntimeError, match="not running"):
        await pool.run(blocks_of(["a"]), print)
    async with pool:
        with pytest.raises(TypeError, match="blocks\\[1\\] must be an ItemBlock"):
            await pool.run([ItemBlock(["a"]), "b"], print)  # type: ignore[list-item]
        with pytest.raises(ValueError, match="additional_concurrency must be >= 1"):
            await pool.run(blocks_of(["a"]), print, additional_concurrency=0)
        with pytest.raises(TypeError, match="not one ItemBlock"):
            await pool.run(ItemBlock(["a"]), print)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="priority must be an int"):
            await pool.run(blocks_of(["a"]), print, priority="high")  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="on_error must be callable"):
            await pool.run(blocks_of(["a"]), print, on_error=5)  # type: ignore[arg-type]


@settings(max_examples=25, deadline=None)
@given(
    durations=st.lists(st.integers(1, 5), min_size=1, max_size=10),
    fail=st.sets(st.integers(0, 9)),
    workers=st.integers(1, 4),
    stop_at=st.integers(0, 12),
    backend=st.sampled_from(["asyncio", "trio"]),
)
def test_every_block_is_reported_exactly_once(
    durations: list[int], fail: set[int], workers: int, stop_at: int, backend: str
) -> None:
    """Whenever the pool is stopped, each block ends exactly once and no task is left."""

    async def process(item: int) -> None:
        await anyio.sleep(durations[item])
        if item in fail:
            raise RuntimeError(str(item))

    async def main() -> list[Any]:
        results: list[Any] = []
        async with (
            anyio.create_task_group() as tg,
            ItemBlockWorkerPool(workers=workers, grace_period=1) as pool,
        ):

            async def go() -> None:
                results.append(
                    await pool.run([ItemBlock([i]) for i in range(len(durations))], process)
                )

            tg.start_soon(go)
            await anyio.sleep(stop_at + 0.5)
        return results

    (result,) = run_virtual(main, backend=backend)  # type: ignore[arg-type]
    assert [b.block.items[0] for b in result.blocks] == list(range(len(durations)))
    for i, b in enumerate(result.blocks):
        if b.status is BlockStatus.FAILED:
            assert i in fail
        if b.status is BlockStatus.SUCCEEDED:
            assert i not in fail
    assert result.failed + result.succeeded + result.cancelled == len(durations)


async def test_the_pool_is_entered_once() -> None:
    """A primitive that owns tasks is entered once: again, even after leaving, is refused."""
    pool = ItemBlockWorkerPool(workers=1)
    async with pool:
        with pytest.raises(RuntimeError, match="this ItemBlockWorkerPool is already running"):
            await pool.__aenter__()
    with pytest.raises(RuntimeError, match="ItemBlockWorkerPool was entered already: it can be"):
        async with pool:
            pass


def test_old_statistics_names_still_read_with_a_warning() -> None:
    """PoolStatistics and .busy remain for one release: the same class, a warning on busy."""
    import throttlekit

    stats = ItemBlockWorkerPool(workers=3).statistics()
    assert isinstance(stats, throttlekit.ItemBlockWorkerPoolStatistics)
    assert throttlekit.PoolStatistics is throttlekit.ItemBlockWorkerPoolStatistics
    with pytest.warns(DeprecationWarning, match="use in_use"):
        assert stats.busy == stats.in_use == 0


def test_a_pool_can_be_made_outside_an_event_loop() -> None:
    """Created at import time (for a metrics registry, say), entered later in a loop."""
    pool = ItemBlockWorkerPool(workers=2)
    pool.workers = 3
    stats = pool.statistics()
    assert (stats.workers, stats.in_use, stats.queued_blocks, stats.runs) == (3, 0, 0, 0)

    async def main() -> Any:
        async with pool:
            return await pool.run(blocks_of(["a"], ["b"]), Tracker(delay=1))

    assert run_virtual(main).ok


@pytest.mark.anyio
async def test_block_results_count_block_items_and_additional_items_apart() -> None:
    """A block's result counts its own items and the additional items apart, and their sum."""

    async def process(item: str) -> list[str] | None:
        return ["snap/1", "snap/2"] if item == "pvc" else None

    async with ItemBlockWorkerPool(2) as pool:
        result = await pool.run([ItemBlock(["pod", "pvc"])], process)
    (block,) = result.blocks
    assert (block.block_items_done, block.additional_items_done, block.items_done) == (2, 2, 4)
