"""
ItemBlockWorkerPool progress and callbacks, on virtual time, asyncio and trio: reports on
the interval while work is in flight, separate counts, an ETA, bytes the process reports,
one final report, async callbacks awaited, and callback errors that cannot be missed.
"""

from __future__ import annotations

import math
import sys
import warnings
from typing import Any

import anyio
import pytest

from throttlekit import (
    CallbackWarning,
    ItemBlock,
    ItemBlockWorkerPool,
    ItemError,
    RunProgress,
)

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup

pytestmark = pytest.mark.anyio


class Reports:
    """An on_progress that keeps (time since t0, report)."""

    def __init__(self) -> None:
        self.t0 = 0.0
        self.seen: list[tuple[float, RunProgress]] = []

    def __call__(self, progress: RunProgress) -> None:
        self.seen.append((round(anyio.current_time() - self.t0, 9), progress))

    @property
    def times(self) -> list[float]:
        return [t for t, _ in self.seen]


async def test_progress_comes_while_one_long_block_is_in_flight() -> None:
    """One block of 4.3 s, interval 0.5: a report every 0.5 s from 0.5 s, then the final."""
    reports = Reports()

    async def process(item: str) -> None:
        await anyio.sleep(4.3)

    async with ItemBlockWorkerPool(workers=1) as pool:
        reports.t0 = anyio.current_time()
        await pool.run([ItemBlock(["big"])], process, on_progress=reports, progress_interval=0.5)
    assert reports.times == [0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 4.3]
    assert [p.finished for _, p in reports.seen].count(True) == 1  # the final, once
    assert reports.seen[-1][1].finished
    assert [p.elapsed for _, p in reports.seen[:2]] == [0.5, 1.0]


async def test_the_final_report_is_sent_once_even_when_a_block_ends_on_a_tick() -> None:
    """The last block ends exactly when a report is due: one final report, no other."""
    reports = Reports()

    async def process(item: int) -> None:
        await anyio.sleep(1)

    async with ItemBlockWorkerPool(workers=1) as pool:
        reports.t0 = anyio.current_time()
        await pool.run([ItemBlock([i]) for i in range(3)], process, on_progress=reports)
    finals = [t for t, p in reports.seen if p.finished]
    assert finals == [3.0]
    assert reports.seen[-1][1].finished
    assert all(p.blocks_done < 3 for _, p in reports.seen[:-1])


async def test_counts_are_separate_and_the_eta_follows_the_block_items() -> None:
    """Block items and additional items are counted apart; the ETA from block items."""
    reports = Reports()

    async def process(item: str) -> list[str] | None:
        await anyio.sleep(1)
        return [f"{item}/snap-a", f"{item}/snap-b"] if item == "pvc" else None

    blocks = [ItemBlock(["pod"]), ItemBlock(["pvc"]), ItemBlock(["cm"]), ItemBlock(["svc"])]
    async with ItemBlockWorkerPool(workers=1) as pool:
        reports.t0 = anyio.current_time()
        await pool.run(
            blocks, process, on_progress=reports, progress_interval=1.25, additional_concurrency=2
        )
    # pod 0-1, pvc 1-2 then its two snapshots 2-3 (in parallel), cm 3-4, svc 4-5
    by_time = dict(reports.seen)
    assert list(by_time) == [1.25, 2.5, 3.75, 5.0]
    counts = [
        (p.block_items_done, p.additional_items_done, p.items_done, p.block_items_total)
        for p in by_time.values()
    ]
    assert counts == [(1, 0, 1, 4), (1, 0, 1, 4), (2, 2, 4, 4), (4, 2, 6, 4)]
    # handled: 1 of 4 at 1.25 s (3 more at that pace), still 1 at 2.5 s, 2 at 3.75 s
    assert [p.eta for p in by_time.values()] == [3.75, 7.5, 3.75, 0.0]
    assert by_time[5.0].finished


async def test_the_eta_is_unknown_until_an_item_is_handled() -> None:
    """No block item handled yet: eta is None, not a guess."""
    reports = Reports()

    async def process(item: str) -> None:
        await anyio.sleep(2)

    async with ItemBlockWorkerPool(workers=1) as pool:
        await pool.run([ItemBlock(["a", "b"])], process, on_progress=reports)
    assert reports.seen[0][1].eta is None  # at 1 s, "a" is still running
    assert reports.seen[-1][1].eta == 0.0


async def test_failed_and_duplicate_items_count_as_handled_for_the_eta() -> None:
    """An item that failed, or was done already in another block, is not work left."""
    reports = Reports()

    async def process(item: str) -> None:
        await anyio.sleep(1)
        if item == "bad":
            raise OSError("unreadable")

    blocks = [ItemBlock(["bad", "x"]), ItemBlock(["x", "y"])]
    async with ItemBlockWorkerPool(workers=1) as pool:
        reports.t0 = anyio.current_time()
        await pool.run(blocks, process, key=str, on_progress=reports, progress_interval=2.5)
    at_2_5 = reports.seen[0][1]  # bad (failed), x done; x of block 2 skipped at 2 s
    assert (at_2_5.block_items_done, at_2_5.errors, at_2_5.eta) == (1, 1, 2.5 * 1 / 3)


async def test_async_callbacks_are_awaited() -> None:
    """on_progress and on_error may be async, like process: they are awaited."""
    progress: list[RunProgress] = []
    errors: list[ItemError] = []

    async def on_progress(report: RunProgress) -> None:
        await anyio.sleep(0.1)
        progress.append(report)

    async def on_error(error: ItemError) -> None:
        await anyio.sleep(0.1)
        errors.append(error)

    async def process(item: str) -> None:
        await anyio.sleep(1)
        if item == "bad":
            raise ValueError(item)

    async with ItemBlockWorkerPool(workers=2) as pool:
        result = await pool.run(
            [ItemBlock(["bad"]), ItemBlock(["a", "b"])],
            process,
            on_progress=on_progress,
            on_error=on_error,
        )
    assert [e.item for e in errors] == ["bad"]
    assert errors[0] is result.errors[0]
    assert progress[-1].finished
    assert len(progress) >= 2


async def test_a_slow_on_progress_holds_up_no_worker() -> None:
    """Reports come from run()'s task: a slow async on_progress does not slow the blocks."""

    async def on_progress(report: RunProgress) -> None:
        await anyio.sleep(0 if report.finished else 10)

    async def process(item: int) -> None:
        await anyio.sleep(1)

    async with ItemBlockWorkerPool(workers=1) as pool:
        t0 = anyio.current_time()
        result = await pool.run(
            [ItemBlock([i]) for i in range(4)], process, on_progress=on_progress
        )
        assert result.duration == 4.0
        assert anyio.current_time() - t0 == 4.0


async def test_interval_zero_reports_every_change_and_inf_only_the_end() -> None:
    """progress_interval=0: a report after each change; math.inf: only the final report."""

    async def process(item: int) -> None:
        await anyio.sleep(1)

    for interval, expected in ((0, [1.0, 2.0, 3.0]), (math.inf, [3.0])):
        reports = Reports()
        async with ItemBlockWorkerPool(workers=1) as pool:
            reports.t0 = anyio.current_time()
            await pool.run(
                [ItemBlock([i]) for i in range(3)],
                process,
                on_progress=reports,
                progress_interval=interval,
            )
        assert sorted(set(reports.times)) == expected, interval
        assert [p.finished for _, p in reports.seen].count(True) == 1


@pytest.mark.parametrize("kind", ["async", "sync"])
async def test_bytes_reported_by_the_process_reach_the_progress(kind: str) -> None:
    """report_bytes() from process (async, or sync in a thread, or an additional item)."""
    reports = Reports()

    async def process_async(item: str) -> list[str] | None:
        await anyio.sleep(1)
        ItemBlockWorkerPool.report_bytes(1000)
        return ["extra"] if item == "a" else None

    def process_sync(item: str) -> list[str] | None:
        ItemBlockWorkerPool.report_bytes(1000)
        return ["extra"] if item == "a" else None

    process: Any = process_async if kind == "async" else process_sync
    async with ItemBlockWorkerPool(workers=1) as pool:
        await pool.run([ItemBlock(["a", "b"])], process, on_progress=reports)
    final = reports.seen[-1][1]
    assert final.bytes_done == 3000  # a, its additional item, b
    if kind == "async":
        assert final.bytes_per_second == 1000.0  # 3000 bytes in 3 s


async def test_no_bytes_reported_means_none() -> None:
    """A run whose process never reports bytes says None, not 0 B/s."""
    reports = Reports()
    async with ItemBlockWorkerPool(workers=1) as pool:
        await pool.run([ItemBlock(["a"])], lambda item: None, on_progress=reports)
    final = reports.seen[-1][1]
    assert (final.bytes_done, final.bytes_per_second) == (None, None)


async def test_report_bytes_outside_a_run_is_an_error() -> None:
    """report_bytes() needs a block run by a pool; its amount is checked."""
    with pytest.raises(RuntimeError, match="from process or a hook"):
        ItemBlockWorkerPool.report_bytes(10)
    with pytest.raises(ValueError, match="amount must be between 0 and 9223372036854775807"):
        ItemBlockWorkerPool.report_bytes(-1)
    with pytest.raises(TypeError, match="amount must be an int"):
        ItemBlockWorkerPool.report_bytes(1.5)  # type: ignore[arg-type]


@pytest.mark.parametrize("where", ["on_error", "on_progress", "on_progress_final"])
async def test_a_callback_warning_made_an_error_ends_the_pool(where: str) -> None:
    """
    With warnings turned into errors (-W error::throttlekit.CallbackWarning), a callback's
    Exception is raised as the CallbackWarning and ends the pool like a BaseException.
    """
    failure = ValueError("callback bug")

    def callback(arg: Any) -> None:
        finished = getattr(arg, "finished", False)
        if where == "on_error" or finished == (where == "on_progress_final"):
            raise failure

    async def process(item: str) -> None:
        await anyio.sleep(1.5)
        if item == "bad":
            raise OSError(item)

    caught: list[BaseException] = []
    with warnings.catch_warnings():
        warnings.simplefilter("error", CallbackWarning)
        try:
            with anyio.fail_after(100):
                async with ItemBlockWorkerPool(workers=1) as pool:
                    await pool.run(
                        [ItemBlock(["bad"]), ItemBlock(["ok"])],
                        process,
                        on_error=callback if where == "on_error" else None,
                        on_progress=callback if where != "on_error" else None,
                    )
        except BaseException as e:  # what escapes is the point
            caught.append(e)
    (error,) = caught
    leaves = error.exceptions if isinstance(error, BaseExceptionGroup) else (error,)
    assert [type(e) for e in leaves] == [CallbackWarning]
    assert leaves[0].__cause__ is failure


@pytest.mark.parametrize(
    ("value", "error", "fragment"),
    [
        (-1, ValueError, "progress_interval must be >= 0"),
        (math.nan, ValueError, "progress_interval"),
        ("1", TypeError, "progress_interval must be seconds"),
    ],
)
async def test_bad_progress_intervals(value: Any, error: type, fragment: str) -> None:
    """progress_interval: seconds >= 0, or math.inf (only the final report)."""
    async with ItemBlockWorkerPool(workers=1) as pool:
        with pytest.raises(error, match=fragment):
            await pool.run([ItemBlock(["a"])], print, progress_interval=value)
