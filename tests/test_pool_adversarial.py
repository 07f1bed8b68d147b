"""
An integrator's adversarial pass over the live worker count, follow() and progress, on
virtual time, asyncio and trio: resizes at random moments (never more blocks started
than ``workers``, no block cancelled, every block reported once, no hang, no worker lost
or leaked), sources that raise, end, yield bad values or change faster than blocks end,
and progress reports checked against the RunResult.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import sys
import threading
import warnings
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from throttlekit import (
    BlockStatus,
    CallbackWarning,
    ItemBlock,
    ItemBlockWorkerPool,
    RunProgress,
)

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup

pytestmark = pytest.mark.anyio

WAIT_REAL = 10.0  # real seconds: a regression fails, not hangs

FEW = settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


class Watch:
    """A process that checks, at each block start, that at most `workers` blocks run."""

    def __init__(self, pool: ItemBlockWorkerPool, durations: list[float]) -> None:
        self.pool = pool
        self.durations = durations
        self.active = 0
        self.peak = 0
        self.starts: dict[int, int] = {}
        self.violations: list[tuple[float, int, int]] = []

    async def __call__(self, item: int) -> None:
        self.starts[item] = self.starts.get(item, 0) + 1
        self.active += 1
        self.peak = max(self.peak, self.active)
        if self.active > self.pool.workers:
            self.violations.append((anyio.current_time(), self.active, self.pool.workers))
        try:
            await anyio.sleep(self.durations[item % len(self.durations)])
        finally:
            self.active -= 1


async def peak_of_a_full_run(pool: ItemBlockWorkerPool, n: int) -> int:
    """Run 3n one-second blocks: how many ran at once (the live worker count, exactly)."""
    watch = Watch(pool, [1.0])
    result = await pool.run([ItemBlock([i]) for i in range(3 * n)], watch)
    assert result.ok
    assert not watch.violations
    return watch.peak


resizes = st.lists(
    st.tuples(st.sampled_from([0.0, 0.25, 0.5, 1.0, 1.5]), st.integers(1, 6)),
    min_size=1,
    max_size=8,
)


@FEW
@given(
    start=st.integers(1, 5),
    changes=resizes,
    durations=st.lists(st.sampled_from([0.0, 0.5, 1.0, 2.0]), min_size=1, max_size=5),
    n=st.integers(0, 12),
    runs=st.integers(1, 3),
)
async def test_resizing_at_random_moments_keeps_every_promise(
    start: int, changes: list[tuple[float, int]], durations: list[float], n: int, runs: int
) -> None:
    """
    Resizes (several at one moment included) while several runs share the pool: at each
    block start at most ``workers`` blocks run, every block succeeds and is reported
    once, nothing hangs, and afterwards exactly ``workers`` run at once (no worker was
    lost or leaked).
    """
    with anyio.fail_after(1000):
        async with ItemBlockWorkerPool(workers=start) as pool:
            watch = Watch(pool, durations)
            results: list[Any] = []

            async def one_run(r: int) -> None:
                blocks = [ItemBlock([r * 100 + i]) for i in range(n)]
                results.append((blocks, await pool.run(blocks, watch, priority=r % 2)))

            async with anyio.create_task_group() as tg:
                for r in range(runs):
                    tg.start_soon(one_run, r)
                for delay, count in changes:
                    await anyio.sleep(delay)
                    pool.workers = count
            assert pool.statistics().in_use == 0
            assert pool.statistics().queued_blocks == 0
            final = changes[-1][1]
            assert await peak_of_a_full_run(pool, final) == final
    assert not watch.violations
    assert sorted(watch.starts.values()) == [1] * (n * runs)
    for blocks, result in results:
        assert [b.block for b in result.blocks] == blocks
        assert [b.status for b in result.blocks] == [BlockStatus.SUCCEEDED] * n


async def test_flapping_faster_than_blocks_end_never_overshoots() -> None:
    """1 -> 6 -> 1 -> 6 ... with no time passing, while blocks run: peak follows the setting."""
    with anyio.fail_after(100):
        async with ItemBlockWorkerPool(workers=1) as pool:
            watch = Watch(pool, [1.0])

            async def flap() -> None:
                for i in range(50):
                    pool.workers = 6 if i % 2 == 0 else 1
                    await anyio.lowlevel.checkpoint()
                pool.workers = 2

            async with anyio.create_task_group() as tg:
                tg.start_soon(flap)
                result = await pool.run([ItemBlock([i]) for i in range(10)], watch)
            assert result.ok
            assert await peak_of_a_full_run(pool, 2) == 2
    assert not watch.violations


async def test_a_shrink_leaves_no_queued_block_without_a_worker() -> None:
    """
    An idle worker woken for a new block, then a shrink before it runs: the block is
    still run (by the worker that stays), not left waiting for ever.
    """
    with anyio.fail_after(100):
        async with ItemBlockWorkerPool(workers=3) as pool:
            await anyio.sleep(1)  # all three idle
            watch = Watch(pool, [1.0])
            async with anyio.create_task_group() as tg:
                tg.start_soon(pool.run, [ItemBlock([0])], watch)
                await anyio.lowlevel.checkpoint()
                pool.workers = 1
            assert watch.starts == {0: 1}
            assert await peak_of_a_full_run(pool, 1) == 1


async def test_setting_workers_after_the_pool_has_ended_starts_nothing() -> None:
    """After the pool was left: the setting is recorded, no worker starts, run refuses."""
    pool = ItemBlockWorkerPool(workers=2)
    async with pool:
        pass
    pool.workers = 5
    assert pool.statistics().in_use == 0
    assert pool._alive == 0  # no task started outside the pool's task group
    with pytest.raises(RuntimeError, match="not running"):
        await pool.run([ItemBlock([1])], Watch(pool, [1.0]))


async def test_resizing_during_the_grace_period_starts_no_block() -> None:
    """The pool is being left (blocks in their grace period): growing starts nothing."""
    with anyio.fail_after(100):
        async with anyio.create_task_group() as tg:
            pool = ItemBlockWorkerPool(workers=1, grace_period=5)
            watch = Watch(pool, [2.0])
            results: list[Any] = []

            async def runner() -> None:
                results.append(await pool.run([ItemBlock([i]) for i in range(4)], watch))

            async with pool:
                tg.start_soon(runner)
                await anyio.sleep(0.5)

                async def grow_later() -> None:
                    await anyio.sleep(0.5)  # the pool is being left by now
                    pool.workers = 4

                tg.start_soon(grow_later)
            # left: the block in flight finished in its grace period, the rest cancelled
    assert watch.starts == {0: 1}
    (result,) = results
    assert [b.status for b in result.blocks] == [BlockStatus.SUCCEEDED] + [
        BlockStatus.CANCELLED
    ] * 3


# -- follow ----------------------------------------------------------------------------


class Custom(BaseException):
    """A BaseException of the user's own."""


FAULTS: dict[str, type[BaseException] | None] = {
    "Exception": ValueError,
    "KeyboardInterrupt": KeyboardInterrupt,
    "SystemExit": SystemExit,
    "custom BaseException": Custom,
}


async def test_a_source_that_raises_before_the_first_value_fails_the_start() -> None:
    async def source() -> AsyncIterator[int]:
        raise LookupError("no value")
        yield 1  # pragma: no cover

    with anyio.fail_after(100):
        async with ItemBlockWorkerPool(workers=2) as pool:
            with pytest.raises(BaseExceptionGroup) as info:
                async with anyio.create_task_group() as tg:
                    await tg.start(pool.follow, source())
            assert info.group_contains(LookupError, match="no value")
            assert pool.workers == 2


@pytest.mark.parametrize("first", [True, False], ids=["before-first-value", "after"])
@pytest.mark.parametrize("what", list(FAULTS))
async def test_a_source_that_raises(what: str, first: bool) -> None:
    """
    What the source raises leaves follow() unchanged, in the caller's task (a
    KeyboardInterrupt leaving a task would stop an asyncio loop: that is the caller's
    to handle, as for any task); the pool keeps its count and still runs.
    """
    error = FAULTS[what]("source broke")  # type: ignore[misc]

    async def source() -> AsyncIterator[int]:
        if not first:
            yield 3
            await anyio.sleep(1)
        raise error

    with anyio.fail_after(100):
        async with ItemBlockWorkerPool(workers=2) as pool:
            with pytest.raises(type(error)) as info:
                await pool.follow(source())
            assert info.value is error
            assert pool.workers == (2 if first else 3)
            assert await peak_of_a_full_run(pool, pool.workers) == pool.workers


async def test_a_watcher_whose_policy_raises() -> None:
    """A watcher whose current policy cannot be read: follow raises it before starting."""

    class Broken:
        @property
        def policy(self) -> int:
            raise LookupError("no policy yet")

        async def wait_for_change(self) -> int:  # pragma: no cover - never reached
            await anyio.sleep(1)
            return 3

    with anyio.fail_after(100):
        async with ItemBlockWorkerPool(workers=2) as pool:
            with pytest.raises(LookupError, match="no policy yet"):
                await pool.follow(Broken())
            assert pool.workers == 2


async def test_a_source_that_ends_at_once_still_completes_the_start() -> None:
    async def empty() -> AsyncIterator[int]:
        return
        yield  # pragma: no cover

    with anyio.fail_after(100):
        async with ItemBlockWorkerPool(workers=2) as pool, anyio.create_task_group() as tg:
            await tg.start(pool.follow, empty())
            assert pool.workers == 2


BAD = [True, 2.0, "3", None, 0, -1, math.inf, object()]


async def test_bad_values_are_warned_about_one_each_and_the_count_kept() -> None:
    """Every bad value is one CallbackWarning; good values between them still apply."""

    async def source() -> AsyncIterator[Any]:
        for bad in BAD:
            yield bad
            yield 3
        yield 1000  # a valid, if large, count: applied, and shrinking back works

    with anyio.fail_after(100):
        async with ItemBlockWorkerPool(workers=1) as pool:
            with pytest.warns(CallbackWarning) as caught:
                await pool.follow(source())
            assert len(caught) == len(BAD)
            assert pool.workers == 1000
            pool.workers = 2
            assert await peak_of_a_full_run(pool, 2) == 2


async def test_follow_called_after_the_pool_ended_applies_nothing() -> None:
    """The pool was left: follow returns at once and does not touch the count."""

    async def source() -> AsyncIterator[int]:  # pragma: no cover - never iterated
        yield 5

    pool = ItemBlockWorkerPool(workers=2)
    async with pool:
        pass
    with anyio.fail_after(100):
        await pool.follow(source())
    assert pool.workers == 2


async def test_many_followers_and_a_cancelled_one() -> None:
    """Two followers race; cancelling one leaves the other following; leaving ends both."""

    async def counts(values: list[int], gap: float) -> AsyncIterator[int]:
        for v in values:
            yield v
            await anyio.sleep(gap)
        await anyio.Event().wait()

    with anyio.fail_after(100):
        pool = ItemBlockWorkerPool(workers=1)
        async with anyio.create_task_group() as outer, pool:
            scope = anyio.CancelScope()

            async def first() -> None:
                with scope:
                    await pool.follow(counts([2, 3, 4], 1.0))

            outer.start_soon(first)
            await outer.start(pool.follow, counts([5, 6], 1.5))
            await anyio.sleep(0.25)
            scope.cancel()
            await anyio.sleep(2)
            assert pool.workers == 6
            assert len(pool._followers) == 1
        assert not pool._followers


# -- progress --------------------------------------------------------------------------


def check_reports(reports: list[RunProgress], result: Any, n_blocks: int) -> None:
    """One final report, last; counts monotonic; the final one agrees with the result."""
    assert [r.finished for r in reports].count(True) == 1
    assert reports[-1].finished
    fields = (
        "blocks_done",
        "items_done",
        "errors",
        "elapsed",
        "block_items_done",
        "additional_items_done",
    )
    for before, after in itertools.pairwise(reports):
        for name in fields:
            assert getattr(before, name) <= getattr(after, name), name
    for r in reports:
        assert r.blocks_total == n_blocks
        assert r.items_done == r.block_items_done + r.additional_items_done
        assert r.block_items_done <= r.block_items_total
        assert r.eta is None or (r.eta >= 0 and math.isfinite(r.eta))
        if r.bytes_done is None:
            assert r.bytes_per_second is None
    last = reports[-1]
    assert last.eta == 0.0
    assert last.blocks_done == len(result.blocks) == n_blocks
    assert last.items_done == sum(b.items_done for b in result.blocks)
    assert last.block_items_done == sum(b.block_items_done for b in result.blocks)
    assert last.additional_items_done == sum(b.additional_items_done for b in result.blocks)
    assert last.errors == len(result.errors)
    assert last.elapsed == pytest.approx(result.duration)


@FEW
@given(
    items=st.lists(st.lists(st.integers(0, 9), min_size=1, max_size=4), max_size=6),
    interval=st.sampled_from([0.0, 0.3, 1.0, math.inf]),
    workers=st.integers(1, 3),
    resize=st.integers(1, 4),
    async_callback=st.booleans(),
    with_bytes=st.booleans(),
    fail_fast=st.booleans(),
)
async def test_progress_is_consistent_whatever_the_run(
    items: list[list[int]],
    interval: float,
    workers: int,
    resize: int,
    async_callback: bool,
    with_bytes: bool,
    fail_fast: bool,
) -> None:
    """
    Items that fail (multiples of 3), return additional items (7), repeat (key), take
    0-2 s; the pool resized midway: the reports obey check_reports.
    """
    reports: list[RunProgress] = []

    def keep(p: RunProgress) -> None:
        reports.append(p)

    async def keep_async(p: RunProgress) -> None:
        await anyio.sleep(0.1)
        reports.append(p)

    async def process(item: int) -> list[int] | None:
        await anyio.sleep(item % 3)
        if with_bytes:
            ItemBlockWorkerPool.report_bytes(item * 10)
        if item % 3 == 0 and item:
            raise ValueError(item)
        if item == 7:
            return [100 + item, 200 + item]
        return None

    blocks = [ItemBlock(b) for b in items]
    with anyio.fail_after(1000):
        async with ItemBlockWorkerPool(workers=workers) as pool, anyio.create_task_group() as tg:

            async def resize_later() -> None:
                await anyio.sleep(1.5)
                pool.workers = resize

            tg.start_soon(resize_later)
            result = await pool.run(
                blocks,
                process,
                key=lambda item: item,
                on_progress=keep_async if async_callback else keep,
                progress_interval=interval,
                fail_fast=fail_fast,
            )
    check_reports(reports, result, len(blocks))


async def test_final_report_once_when_the_grace_period_runs_out() -> None:
    """The pool is left with blocks in flight: one final report, consistent, cancelled ones."""
    reports: list[RunProgress] = []
    results: list[Any] = []

    async def process(item: int) -> None:
        await anyio.sleep(10)

    with anyio.fail_after(100):
        pool = ItemBlockWorkerPool(workers=2, grace_period=1)
        async with anyio.create_task_group() as tg, pool:

            async def runner() -> None:
                results.append(
                    await pool.run(
                        [ItemBlock([i]) for i in range(5)],
                        process,
                        on_progress=reports.append,
                        progress_interval=0.4,
                    )
                )

            tg.start_soon(runner)
            await anyio.sleep(1)
    (result,) = results
    check_reports(reports, result, 5)
    assert result.cancelled == 5


# -- report_bytes ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("amount", "error", "fragment"),
    [
        (-1, ValueError, "amount must be between 0 and"),
        (1.5, TypeError, "amount must be an int"),
        (True, TypeError, "amount must be an int"),
        ("3", TypeError, "amount must be an int"),
        (None, TypeError, "amount must be an int"),
    ],
)
async def test_report_bytes_refuses_bad_amounts_and_counts_nothing(
    amount: Any, error: type, fragment: str
) -> None:
    """A bad amount is that item's error (named), and adds nothing to the bytes."""
    reports: list[RunProgress] = []

    async def process(item: int) -> None:
        ItemBlockWorkerPool.report_bytes(5)
        ItemBlockWorkerPool.report_bytes(amount)

    async with ItemBlockWorkerPool(workers=1) as pool:
        result = await pool.run([ItemBlock([1])], process, on_progress=reports.append)
    (item_error,) = result.errors
    assert isinstance(item_error.error, error)
    assert fragment in str(item_error.error)
    assert reports[-1].bytes_done == 5


async def test_report_bytes_from_threads_of_every_kind() -> None:
    """
    A sync process (a worker thread: counted), its hooks, and a plain thread it starts
    itself (no run in its context: RuntimeError, which the process can see).
    """
    reports: list[RunProgress] = []
    plain: list[BaseException] = []

    def process(item: int) -> None:
        ItemBlockWorkerPool.report_bytes(100)

        def elsewhere() -> None:
            try:
                ItemBlockWorkerPool.report_bytes(1)
            except BaseException as e:
                plain.append(e)

        t = threading.Thread(target=elsewhere)
        t.start()
        t.join()

    def hook(block: ItemBlock[int]) -> None:
        ItemBlockWorkerPool.report_bytes(1000)

    async with ItemBlockWorkerPool(workers=2) as pool:
        result = await pool.run(
            [ItemBlock([1, 2]), ItemBlock([3])],
            process,
            pre_hook=hook,
            on_progress=reports.append,
            progress_interval=math.inf,
        )
    assert result.ok
    assert reports[-1].bytes_done == 300 + 2000
    assert [type(e) for e in plain] == [RuntimeError] * 3


async def test_report_bytes_outside_is_refused_in_a_thread_and_after_the_run() -> None:
    async with ItemBlockWorkerPool(workers=1) as pool:
        await pool.run([ItemBlock([1])], lambda item: None)
        with pytest.raises(RuntimeError, match="report_bytes"):
            await anyio.to_thread.run_sync(ItemBlockWorkerPool.report_bytes, 1)
        with pytest.raises(RuntimeError, match="report_bytes"):
            ItemBlockWorkerPool.report_bytes(1)


async def test_a_warning_filter_error_in_follow_propagates() -> None:
    """CallbackWarning made an error: a bad count then leaves follow() as that error."""

    async def source() -> AsyncIterator[int]:
        yield 0

    async with ItemBlockWorkerPool(workers=2) as pool:
        with warnings.catch_warnings():
            warnings.simplefilter("error", CallbackWarning)
            with pytest.raises(CallbackWarning, match="workers must be >= 1"):
                await pool.follow(source())
        assert pool.workers == 2


# -- found by this pass (each failed before its fix) -------------------------------------


@pytest.mark.parametrize("kind", ["iterable", "watcher"])
async def test_a_source_that_never_waits_does_not_starve_the_loop(kind: str) -> None:
    """
    A source that hands out values without ever awaiting (a watcher whose
    wait_for_change() returns at once): follow() is still a cancellation point and lets
    other tasks run between values, instead of holding the event loop until it ends.
    """
    consumed = 0
    total = 10_000

    async def eager() -> AsyncIterator[int]:
        nonlocal consumed
        for i in range(total):
            consumed += 1
            yield 1 + i % 3
        await anyio.Event().wait()

    class EagerWatcher:
        policy = 1

        async def wait_for_change(self) -> int:
            nonlocal consumed
            consumed += 1
            if consumed >= total:
                await anyio.Event().wait()
            return 1 + consumed % 3

    generator = eager()
    source: Any = generator if kind == "iterable" else EagerWatcher()
    with anyio.fail_after(100):
        async with (
            contextlib.aclosing(generator),
            ItemBlockWorkerPool(workers=1) as pool,
            anyio.create_task_group() as tg,
        ):
            tg.start_soon(pool.follow, source)
            await anyio.sleep(0)
            await anyio.sleep(0)
            seen = consumed
            tg.cancel_scope.cancel()
    assert 0 < seen < 100


async def test_report_bytes_refuses_an_amount_no_transfer_can_have() -> None:
    """
    10**400 bytes: refused as that item's error (ValueError naming amount), rather than
    accepted and then breaking the progress report (an OverflowError that ended the pool).
    """
    reports: list[RunProgress] = []

    async def process(item: int) -> None:
        ItemBlockWorkerPool.report_bytes(7)
        ItemBlockWorkerPool.report_bytes(10**400)

    with anyio.fail_after(100):
        async with ItemBlockWorkerPool(workers=1) as pool:
            result = await pool.run(
                [ItemBlock([1])], process, on_progress=reports.append, progress_interval=0
            )
    (item_error,) = result.errors
    assert isinstance(item_error.error, ValueError)
    assert "amount must be between 0 and" in str(item_error.error)
    assert reports[-1].bytes_done == 7


async def test_report_bytes_takes_the_largest_64_bit_count() -> None:
    """The largest amount allowed: 2**63 - 1, a 64-bit size, more than any transfer."""
    reports: list[RunProgress] = []

    async def process(item: int) -> None:
        ItemBlockWorkerPool.report_bytes(2**63 - 1)
        await anyio.sleep(1)

    async with ItemBlockWorkerPool(workers=1) as pool:
        result = await pool.run([ItemBlock([1])], process, on_progress=reports.append)
    assert result.ok
    assert reports[-1].bytes_done == 2**63 - 1
    assert reports[-1].bytes_per_second == pytest.approx(float(2**63 - 1))


@pytest.mark.parametrize("how", ["constructor", "setter", "follow"])
async def test_a_huge_worker_count_starts_only_the_workers_blocks_need(how: str) -> None:
    """
    workers=10_000 (a policy typo can say 100_000_000): the pool starts workers as
    blocks need them, up to that count, rather than 10_000 tasks at once (with 10**8,
    the setter ran for minutes and the process ran out of memory).
    """
    huge = 10_000

    async def one(n: int) -> AsyncIterator[int]:
        yield n

    with anyio.fail_after(100):
        pool = ItemBlockWorkerPool(workers=huge if how == "constructor" else 1)
        async with pool:
            if how == "setter":
                pool.workers = huge
            elif how == "follow":
                await pool.follow(one(huge))
            assert len(anyio.get_running_tasks()) < 20
            watch = Watch(pool, [1.0])
            seen: list[int] = []

            async def look() -> None:
                await anyio.sleep(0.5)
                seen.append(len(anyio.get_running_tasks()))

            async with anyio.create_task_group() as tg:
                tg.start_soon(look)
                result = await pool.run([ItemBlock([i]) for i in range(30)], watch)
            assert result.ok
            assert watch.peak == 30  # all at once: the count is honoured
            assert seen[0] < 30 + 20
            pool.workers = 2
            assert await peak_of_a_full_run(pool, 2) == 2


async def test_follow_closes_an_async_generator_it_stops_following() -> None:
    """
    Cancelled between two values (at the point where it lets other tasks run), follow
    closes the generator it iterates (its finally runs at once) rather than leaving it
    suspended at a yield for the garbage collector.
    """
    closed: list[float] = []

    async def eager() -> AsyncIterator[int]:
        try:
            while True:
                yield 2
        finally:
            closed.append(anyio.current_time())

    with anyio.fail_after(100):
        async with ItemBlockWorkerPool(workers=1) as pool, anyio.create_task_group() as tg:
            tg.start_soon(pool.follow, eager())
            await anyio.sleep(0)
            tg.cancel_scope.cancel()
        assert len(closed) == 1


async def test_workers_set_from_a_sync_process_in_a_worker_thread() -> None:
    """
    A sync process (a worker thread) grows the pool: the change is made in the event
    loop's thread, so it takes effect like any other. Before, the setter started tasks
    from the thread: they never ran, the pool counted them as alive, and after a later
    shrink no worker was left for queued blocks (a hang).
    """
    barrier = threading.Barrier(3, timeout=WAIT_REAL)  # three blocks at once, really

    def process(item: int) -> None:
        if item == 0:
            pool.workers = 3
        else:
            barrier.wait()

    # No fail_after: on virtual time it would fire while the loop waits for threads.
    async with ItemBlockWorkerPool(workers=1) as pool:
        result = await pool.run([ItemBlock([i]) for i in range(4)], process)
        assert result.ok, result.errors
        assert pool.workers == 3
        pool.workers = 1
        assert await peak_of_a_full_run(pool, 1) == 1


async def test_workers_set_from_a_foreign_thread_is_refused_and_changes_nothing() -> None:
    """A plain thread (not an anyio worker thread) cannot reach the loop: RuntimeError."""
    errors: list[BaseException] = []
    async with ItemBlockWorkerPool(workers=2) as pool:

        def elsewhere() -> None:
            try:
                pool.workers = 5
            except BaseException as e:
                errors.append(e)

        thread = threading.Thread(target=elsewhere)
        thread.start()
        thread.join(WAIT_REAL)  # the refusal needs nothing from the loop
        assert pool.workers == 2
        assert await peak_of_a_full_run(pool, 2) == 2
    (error,) = errors
    assert isinstance(error, RuntimeError)
    assert "workers can be set from the pool's event loop thread" in str(error)


@pytest.mark.parametrize("how", ["pool scope cancelled", "run's task cancelled"])
async def test_sync_work_in_a_throttle_stops_after_the_grace_period(how: str) -> None:
    """
    The issue's story: sync process functions blocked in acquire_blocking (a limiter
    that never grants) while the pool is cancelled with a grace period, or while the task
    awaiting the run is cancelled: the worker threads stop at their throttle call, every
    block is reported cancelled once, and the pool exits. (A watchdog grants everything
    after WAIT_REAL real seconds, so a regression fails instead of hanging.)
    """
    from throttlekit import RateLimiter
    from throttlekit.testing import ManualClock

    limiter = RateLimiter(0.001, burst=1, clock=ManualClock())
    raised: list[BaseException] = []

    def process(item: int) -> None:
        try:
            for _ in range(100):
                limiter.acquire_blocking(1)
        except BaseException as e:
            raised.append(e)
            raise

    watchdog = threading.Timer(WAIT_REAL, lambda: setattr(limiter, "rate", math.inf))
    watchdog.start()
    results: list[Any] = []
    try:
        # No fail_after: virtual time would jump to it while the loop waits for threads.
        with anyio.move_on_after(1) as outer:
            async with ItemBlockWorkerPool(workers=2, grace_period=0.5) as pool:
                if how == "pool scope cancelled":
                    results.append(await pool.run([ItemBlock([i]) for i in range(4)], process))
                else:
                    with anyio.move_on_after(1):
                        results.append(await pool.run([ItemBlock([i]) for i in range(4)], process))
                    outer.cancel()
    finally:
        watchdog.cancel()
    assert not results or [b.status for b in results[0].blocks] == [BlockStatus.CANCELLED] * 4
    assert [type(e) for e in raised] == [anyio.get_cancelled_exc_class()] * 2
    assert limiter.statistics().tasks_waiting == 0


async def test_the_eta_is_unknown_while_no_time_has_passed() -> None:
    """
    Items done in no time, one left that takes long: at that moment the pace is
    unknown, so the ETA is None, not 0.0 (which would say the run is about to end).
    """
    reports: list[RunProgress] = []

    async def process(item: str) -> None:
        if item == "slow":
            await anyio.sleep(10)

    async with ItemBlockWorkerPool(workers=1) as pool:
        await pool.run(
            [ItemBlock(["quick"]), ItemBlock(["slow"])],
            process,
            on_progress=reports.append,
            progress_interval=0,
        )
    early = [r for r in reports if r.elapsed == 0 and not r.finished]
    assert early and all(r.eta is None for r in early)
    assert [r.eta for r in reports if r.elapsed > 0] == [0.0]  # the final one


async def test_a_report_costs_the_same_however_many_blocks_are_done(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """
    progress_interval=0 with many blocks: each report counts the blocks done without
    walking the run's results (which made a run of n blocks cost n**2: 20,000 one-item
    blocks took 2.4 s instead of 0.3 s). Counted here by walks over the results list.
    """
    import throttlekit._execution._pool as pool_module

    walks = [0]

    class Results(list):  # type: ignore[type-arg]
        def __iter__(self) -> Any:
            walks[0] += 1
            return super().__iter__()

    original = pool_module._Run.__init__

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        self.results = Results(self.results)

    monkeypatch.setattr(pool_module._Run, "__init__", init)
    n = 200

    async def process(item: int) -> None:
        await anyio.sleep(item % 3)

    reports: list[RunProgress] = []
    async with ItemBlockWorkerPool(workers=4) as pool:
        result = await pool.run(
            [ItemBlock([i]) for i in range(n)],
            process,
            on_progress=reports.append,
            progress_interval=0,
        )
    assert len(result.blocks) == n
    assert len(reports) > n // 10  # many reports were made
    assert walks[0] <= 2  # the RunResult is built once; reports walk nothing


def test_workers_set_from_any_thread_after_the_pool_has_ended() -> None:
    """After the pool was left, the setting is recorded from any thread and starts nothing."""
    pool = ItemBlockWorkerPool(workers=2)

    async def main() -> None:
        async with pool:
            pass

    anyio.run(main)
    errors: list[BaseException] = []

    def elsewhere() -> None:
        try:
            pool.workers = 3
        except BaseException as e:  # pragma: no cover - a regression
            errors.append(e)

    thread = threading.Thread(target=elsewhere)
    thread.start()
    thread.join(WAIT_REAL)
    assert not errors
    assert pool.workers == 3
    assert pool.statistics().in_use == 0
