"""
ItemBlockWorkerPool.workers is live, and follow() keeps it in step with a live source: on
virtual time, asyncio and trio. Growing starts workers at once; shrinking retires workers
as they finish their block, never cancelling one.
"""

from __future__ import annotations

import json
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from throttlekit import (
    BlockStatus,
    CallbackWarning,
    ConcurrencyPolicy,
    ItemBlock,
    ItemBlockWorkerPool,
    PolicyWatcher,
)

pytestmark = pytest.mark.anyio


class Starts:
    """A process that records when each item starts and how many run at once."""

    def __init__(self, duration: float = 1.0) -> None:
        self.duration = duration
        self.t0 = 0.0
        self.starts: list[float] = []
        self.active = 0
        self.peak_after: dict[float, int] = {}

    async def __call__(self, item: int) -> None:
        now = anyio.current_time() - self.t0
        self.starts.append(now)
        self.active += 1
        for since in self.peak_after:
            if now >= since:
                self.peak_after[since] = max(self.peak_after[since], self.active)
        try:
            await anyio.sleep(self.duration)
        finally:
            self.active -= 1


def blocks(n: int) -> list[ItemBlock[int]]:
    return [ItemBlock([i]) for i in range(n)]


async def test_growing_starts_workers_at_once() -> None:
    """One worker, grown to three at 0.5 s: two blocks start at 0.5 s, not at 1 s."""
    work = Starts()
    with anyio.fail_after(100):
        async with ItemBlockWorkerPool(workers=1) as pool, anyio.create_task_group() as tg:
            work.t0 = anyio.current_time()
            tg.start_soon(pool.run, blocks(6), work)
            await anyio.sleep(0.5)
            pool.workers = 3
            await anyio.sleep(0.1)
            stats = pool.statistics()
            assert (stats.workers, stats.in_use, stats.queued_blocks) == (3, 3, 3)
    assert sorted(work.starts) == [0.0, 0.5, 0.5, 1.0, 1.5, 1.5]


async def test_shrinking_lets_busy_workers_finish_and_never_cancels_a_block() -> None:
    """Three busy workers shrunk to one: all three blocks finish, then one at a time."""
    work = Starts(duration=2.0)
    work.peak_after[2.0] = 0
    with anyio.fail_after(100):
        async with ItemBlockWorkerPool(workers=3) as pool:
            work.t0 = anyio.current_time()
            async with anyio.create_task_group() as tg:

                async def shrink() -> None:
                    await anyio.sleep(1)
                    pool.workers = 1
                    stats = pool.statistics()
                    assert (stats.workers, stats.in_use) == (1, 3)  # retiring, not cancelled

                tg.start_soon(shrink)
                result = await pool.run(blocks(6), work)
            assert anyio.current_time() - work.t0 == 8.0
            assert pool.statistics().in_use == 0
    assert result.ok
    assert [b.status for b in result.blocks] == [BlockStatus.SUCCEEDED] * 6
    assert sorted(work.starts) == [0.0, 0.0, 0.0, 2.0, 4.0, 6.0]
    assert work.peak_after[2.0] == 1


async def test_shrinking_then_growing_before_the_busy_ones_retire() -> None:
    """4 -> 2 -> 3 while four blocks run: three workers go on afterwards, not two or five."""
    work = Starts(duration=2.0)
    work.peak_after[2.0] = 0
    with anyio.fail_after(100):
        async with ItemBlockWorkerPool(workers=4) as pool, anyio.create_task_group() as tg:
            work.t0 = anyio.current_time()
            tg.start_soon(pool.run, blocks(8), work)
            await anyio.sleep(1)
            pool.workers = 2
            await anyio.sleep(0.5)
            pool.workers = 3
            assert pool.statistics().in_use == 4
    assert sorted(work.starts) == [0.0, 0.0, 0.0, 0.0, 2.0, 2.0, 2.0, 4.0]
    assert work.peak_after[2.0] == 3


async def test_idle_workers_retire_at_once() -> None:
    """Shrinking an idle pool: the next run gets the new number of workers."""
    work = Starts()
    work.peak_after[0.0] = 0
    with anyio.fail_after(100):
        async with ItemBlockWorkerPool(workers=4) as pool:
            await anyio.sleep(1)
            pool.workers = 2
            work.t0 = anyio.current_time()
            await pool.run(blocks(4), work)
            assert anyio.current_time() - work.t0 == 2.0
    assert work.peak_after[0.0] == 2


async def test_workers_set_before_entering_is_what_starts() -> None:
    """The setting before `async with` is the number of workers the pool starts with."""
    pool = ItemBlockWorkerPool(workers=1)
    pool.workers = 2
    with anyio.fail_after(100):
        async with pool:
            t0 = anyio.current_time()
            await pool.run(blocks(2), Starts())
            assert anyio.current_time() - t0 == 1.0


async def test_threads_follow_the_worker_count() -> None:
    """Grown to three, three sync blocks run in three threads at once (a barrier of 3)."""
    barrier = threading.Barrier(3, timeout=5)  # real seconds: a regression fails, not hangs

    def process(item: int) -> None:
        barrier.wait()

    async with ItemBlockWorkerPool(workers=1) as pool:
        pool.workers = 3
        result = await pool.run(blocks(3), process)
    assert result.ok, result.errors


@pytest.mark.parametrize(
    ("value", "error", "fragment"),
    [
        (0, ValueError, "workers must be >= 1, got 0"),
        (-2, ValueError, "workers must be >= 1, got -2"),
        ("4", TypeError, "workers must be an int, got str"),
        (True, TypeError, "workers must be an int, got bool"),
        (2.0, TypeError, "workers must be an int, got float"),
    ],
)
async def test_a_bad_worker_count_is_refused_and_changes_nothing(
    value: Any, error: type, fragment: str
) -> None:
    """The setter validates like the constructor; a refused value leaves the count."""
    async with ItemBlockWorkerPool(workers=2) as pool:
        with pytest.raises(error, match=fragment):
            pool.workers = value
        assert pool.workers == 2
        assert pool.statistics().workers == 2


# -- follow ------------------------------------------------------------------------------


async def test_follow_applies_each_value_of_an_async_iterable() -> None:
    """Each count an async iterable yields is applied as it comes; then follow returns."""
    seen: list[tuple[float, int]] = []

    async def counts() -> AsyncIterator[int]:
        for n in (2, 5, 3):
            yield n
            await anyio.sleep(1)

    with anyio.fail_after(100):
        async with ItemBlockWorkerPool(workers=1) as pool, anyio.create_task_group() as tg:
            t0 = anyio.current_time()
            await tg.start(pool.follow, counts())
            assert pool.workers == 2  # the start completes once the first count is applied
            await anyio.sleep(0.5)  # between the changes: trio wakes same-time tasks in any order
            for _ in range(3):
                seen.append((anyio.current_time() - t0, pool.workers))
                await anyio.sleep(1)
    assert seen == [(0.5, 2), (1.5, 5), (2.5, 3)]


async def test_follow_warns_about_a_count_it_cannot_apply_and_goes_on() -> None:
    """to_workers raising, or a count under 1: a CallbackWarning, the count kept, follow on."""

    async def values() -> AsyncIterator[str]:
        for v in ("3", "0", "boom", "4"):
            yield v

    def to_workers(value: str) -> int:
        if value == "boom":
            raise KeyError(value)
        return int(value)

    with anyio.fail_after(100):
        async with ItemBlockWorkerPool(workers=1) as pool:
            with pytest.warns(CallbackWarning) as caught:
                await pool.follow(values(), to_workers)
            assert pool.workers == 4
    messages = [str(w.message) for w in caught]
    assert len(messages) == 2
    assert "workers must be >= 1, got 0" in messages[0]
    assert "KeyError" in messages[1]
    assert isinstance(caught[1].message.__cause__, KeyError)


async def test_follow_ends_when_the_pool_is_left() -> None:
    """A follow started outside the pool's scope returns when the pool's context is left."""

    async def forever() -> AsyncIterator[int]:
        yield 2
        await anyio.Event().wait()
        yield 3  # pragma: no cover - never reached

    with anyio.fail_after(100):
        async with anyio.create_task_group() as tg, ItemBlockWorkerPool(workers=1) as pool:
            await tg.start(pool.follow, forever())
            assert pool.workers == 2
    # the task group ended: follow returned by itself


async def test_follow_refuses_what_it_cannot_follow() -> None:
    """A source that is neither a watcher nor an async iterable, or a pool not entered."""
    pool = ItemBlockWorkerPool(workers=1)
    with pytest.raises(RuntimeError, match="not running"):
        await pool.follow(_one(2))
    async with pool:
        with pytest.raises(TypeError, match=r"source must be a watcher .* or an async iterable"):
            await pool.follow([1, 2])  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="to_workers must be callable"):
            await pool.follow(_one(2), 3)  # type: ignore[arg-type]


async def _one(n: int) -> AsyncIterator[int]:
    yield n


async def test_a_policy_watcher_resizes_a_running_pool(tmp_path: Path) -> None:
    """
    The mission's story end to end: a Velero ConfigMap edited while a backup runs. The
    watcher polls every second; the node's rule goes from 1 to 4 at 2.5 s; from the poll
    at 3 s the pool runs four blocks at once.
    """
    path = tmp_path / "node-agent-config.json"

    def publish(number: int) -> None:
        rules = [{"nodeSelector": {"matchLabels": {"pool": "backup"}}, "number": number}]
        doc = {"loadConcurrency": {"globalConfig": 8, "perNodeConfig": rules}}
        path.write_text(json.dumps(doc))

    node_labels = {"pool": "backup", "kubernetes.io/hostname": "node-1"}
    publish(1)
    work = Starts()

    def workers_for(policy: ConcurrencyPolicy) -> int:
        return policy.resolve(node_labels).value

    with anyio.fail_after(100):
        async with (
            PolicyWatcher(path, interval=1) as watcher,
            ItemBlockWorkerPool(workers=1) as pool,
            anyio.create_task_group() as tg,
        ):
            work.t0 = anyio.current_time()
            await tg.start(pool.follow, watcher, workers_for)

            async def edit() -> None:
                await anyio.sleep(2.5)
                publish(4)

            tg.start_soon(edit)
            result = await pool.run(blocks(8), work)
            assert pool.workers == 4
            tg.cancel_scope.cancel()
    assert result.ok
    assert sorted(work.starts) == [0.0, 1.0, 2.0, 3.0, 3.0, 3.0, 3.0, 4.0]


class Custom(BaseException):
    """A BaseException of the user's own."""


@pytest.mark.parametrize("what", [ValueError, KeyboardInterrupt, SystemExit, Custom])
async def test_what_to_workers_raises(what: type[BaseException]) -> None:
    """
    An Exception from to_workers is a CallbackWarning and following goes on; a
    BaseException leaves follow() (it runs in your task), and the pool is untouched.
    """
    error = what("to_workers failed")

    async def values() -> AsyncIterator[int]:
        for v in (2, 3, 4):
            yield v

    def to_workers(value: int) -> int:
        if value == 3:
            raise error
        return value

    with anyio.fail_after(100):
        async with ItemBlockWorkerPool(workers=1) as pool:
            if issubclass(what, Exception):
                with pytest.warns(CallbackWarning, match="to_workers failed") as caught:
                    await pool.follow(values(), to_workers)
                assert caught[0].message.__cause__ is error
                assert pool.workers == 4
            else:
                with pytest.raises(what) as info:
                    await pool.follow(values(), to_workers)
                assert info.value is error
                assert pool.workers == 2
            assert (await pool.run(blocks(2), Starts())).ok
