"""
ItemBlockWorkerPool against what users write instead, in one run, in real time (asyncio).

1. Dispatch: 5,000 trivial single-item blocks on 16 workers, against a task per job under
   an anyio CapacityLimiter, aiometer (``pip install -e '.[bench]'``) and a task per job
   under an asyncio.Semaphore.
2. Errors: 100 jobs of which 3 fail; how many of the 3 each approach reports.
3. Velero-shaped scaling: 64 blocks of 20 ms items on 1, 2, 4, 8 and 16 workers.
4. Progress: what on_progress costs the dispatch (no callback, every second, on every
   change), and report_bytes() per item.
5. Live resize: 1 worker grown to 16 in the middle of a run of 20 ms blocks; how long
   until 16 blocks run at once.

Run: ``python benchmarks/bench_pool.py``.
"""

from __future__ import annotations

import asyncio
import platform
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio

from throttlekit import ItemBlock, ItemBlockWorkerPool

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup

JOBS = 5000
WORKERS = 16


async def trivial(item: int) -> None:
    await asyncio.sleep(0)


async def fail_some(item: int) -> None:
    await asyncio.sleep(0.001 * (item % 7))
    if item in (13, 57, 91):
        raise RuntimeError(f"job {item} failed")


# -- the approaches --------------------------------------------------------------------------


async def with_pool(job: Callable[[int], Awaitable[None]], n: int) -> int:
    async with ItemBlockWorkerPool(workers=WORKERS) as pool:
        result = await pool.run([ItemBlock([i]) for i in range(n)], job)
    return len(result.errors)


async def with_anyio(job: Callable[[int], Awaitable[None]], n: int) -> int:
    limiter = anyio.CapacityLimiter(WORKERS)

    async def one(i: int) -> None:
        async with limiter:
            await job(i)

    try:
        async with anyio.create_task_group() as tg:
            for i in range(n):
                tg.start_soon(one, i)
    except BaseExceptionGroup as group:
        return len(group.exceptions)
    return 0


async def with_aiometer(job: Callable[[int], Awaitable[None]], n: int) -> int:
    import aiometer

    try:
        await aiometer.run_on_each(job, range(n), max_at_once=WORKERS)
    except BaseExceptionGroup as group:
        return len(group.exceptions)
    except Exception:
        return 1
    return 0


async def with_semaphore(job: Callable[[int], Awaitable[None]], n: int) -> int:
    semaphore = asyncio.Semaphore(WORKERS)

    async def one(i: int) -> None:
        async with semaphore:
            await job(i)

    try:
        await asyncio.gather(*(one(i) for i in range(n)))
    except Exception:
        return 1  # gather raises the first error; the others are lost
    return 0


async def with_taskgroup(job: Callable[[int], Awaitable[None]], n: int) -> int:
    semaphore = asyncio.Semaphore(WORKERS)

    async def one(i: int) -> None:
        async with semaphore:
            await job(i)

    try:
        async with asyncio.TaskGroup() as tg:  # type: ignore[attr-defined]
            for i in range(n):
                tg.create_task(one(i))
    except BaseExceptionGroup as group:
        return len(group.exceptions)
    return 0


APPROACHES: dict[str, Callable[[Callable[[int], Awaitable[None]], int], Awaitable[int]]] = {
    "throttlekit pool": with_pool,
    "anyio TaskGroup + CapacityLimiter": with_anyio,
    "aiometer.run_on_each": with_aiometer,
    "asyncio.gather + Semaphore": with_semaphore,
}
if sys.version_info >= (3, 11):
    APPROACHES["asyncio.TaskGroup + Semaphore"] = with_taskgroup


def available() -> dict[str, Any]:
    out = dict(APPROACHES)
    try:
        import aiometer  # noqa: F401
    except ImportError:
        print("(aiometer is not installed: skipped; pip install -e '.[bench]')")
        del out["aiometer.run_on_each"]
    return out


async def scaling(workers: int) -> float:
    blocks = [ItemBlock([f"b{b}-i{i}" for i in range(3)]) for b in range(64)]

    async def item(name: str) -> None:
        await asyncio.sleep(0.02)

    t = time.perf_counter()
    async with ItemBlockWorkerPool(workers=workers) as pool:
        result = await pool.run(blocks, item)
    assert result.ok
    return time.perf_counter() - t


def main() -> None:
    print(f"Python {sys.version.split()[0]} on {platform.machine()}, asyncio, real time")
    approaches = available()

    print(f"\nDispatch: {JOBS:,} trivial jobs on {WORKERS} workers (best of 3)")
    rates = {}
    for name, approach in approaches.items():
        best = min(_timed(approach) for _ in range(3))
        rates[name] = JOBS / best
    base = rates["anyio TaskGroup + CapacityLimiter"]
    for name, rate in rates.items():
        print(f"  {name:36} {rate:>10,.0f} jobs/s  {rate / base:5.2f}x the anyio TaskGroup")

    print("\nErrors: 100 jobs, 3 of them fail (the pool collects all; target: 3 of 3)")
    for name, approach in approaches.items():
        reported = asyncio.run(approach(fail_some, 100))
        print(f"  {name:36} reports {reported} of 3")

    print("\nVelero-shaped scaling: 64 blocks of 3 x 20 ms items")
    one = asyncio.run(scaling(1))
    print(f"  {'workers':>7}  {'seconds':>7}  {'speedup':>7}  {'of ideal':>8}")
    for workers in (1, 2, 4, 8, 16):
        took = one if workers == 1 else asyncio.run(scaling(workers))
        speedup = one / took
        print(f"  {workers:>7}  {took:>7.3f}  {speedup:>7.2f}  {speedup / workers:>8.2f}")

    print(f"\nProgress: {JOBS:,} trivial jobs on {WORKERS} workers (best of 3)")
    base_rate = 0.0
    for mode in ("no on_progress", "every 1 s", "every change", "report_bytes"):
        rate = JOBS / min(asyncio.run(progress_cost(mode)) for _ in range(3))
        base_rate = base_rate or rate
        print(f"  {mode:36} {rate:>10,.0f} jobs/s  {rate / base_rate:5.2f}x no on_progress")

    print("\nLive resize: 1 -> 16 workers while 20 ms blocks run (best of 3)")
    took = min(asyncio.run(resize_latency()) for _ in range(3))
    print(f"  16 blocks running {took * 1e3:.2f} ms after pool.workers = 16")


async def progress_cost(mode: str) -> float:
    reports = 0

    def on_progress(progress: Any) -> None:
        nonlocal reports
        reports += 1

    async def job(item: int) -> None:
        await asyncio.sleep(0)
        if mode == "report_bytes":
            ItemBlockWorkerPool.report_bytes(1)

    kwargs: dict[str, Any] = {}
    if mode in ("every 1 s", "every change"):
        kwargs = {
            "on_progress": on_progress,
            "progress_interval": 0 if mode == "every change" else 1.0,
        }
    t = time.perf_counter()
    async with ItemBlockWorkerPool(workers=WORKERS) as pool:
        await pool.run([ItemBlock([i]) for i in range(JOBS)], job, **kwargs)
    return time.perf_counter() - t


async def resize_latency() -> float:
    running = 0
    reached = asyncio.Event()

    async def job(item: int) -> None:
        nonlocal running
        running += 1
        if running >= 16:
            reached.set()
        await asyncio.sleep(0.02)
        running -= 1

    async with ItemBlockWorkerPool(workers=1) as pool:
        task = asyncio.ensure_future(pool.run([ItemBlock([i]) for i in range(200)], job))
        await asyncio.sleep(0.05)
        t = time.perf_counter()
        pool.workers = 16
        await reached.wait()
        took = time.perf_counter() - t
        await task
    return took


def _timed(approach: Callable[[Callable[[int], Awaitable[None]], int], Awaitable[int]]) -> float:
    t = time.perf_counter()
    asyncio.run(approach(trivial, JOBS))  # type: ignore[arg-type]
    return time.perf_counter() - t


if __name__ == "__main__":
    main()
