"""
RateLimiter against the rate limiters users would pick instead, in one run, in real time.

Peers (``pip install -e '.[bench]'``): aiolimiter (leaky bucket), pyrate-limiter (sliding
window log, async API) and limits (moving window; it only answers "allowed or not", so a
waiter polls every 10 ms, as users do). Each is configured the way its documentation shows
for "R per second": a one-second window. Peers that are not installed are skipped.

Figures: uncontended overhead (in a plain ``asyncio.run`` task and in an ``anyio.run``
one); accuracy of 10 MiB/s in 64 KiB chunks (achieved rate and the worst 100 ms window
against its share); threads with asyncio tasks and with trio tasks on one limiter;
uncontended acquire_blocking in a plain thread and in anyio worker threads; CPU of
50 waiters against the floor of tasks that merely sleep; semantics probes (a large request
among small ones, a request larger than the burst, a storm of cancelled waiters, pacing
with a burst of one, a megabyte at 1 GB/s with a burst of one byte); large amounts in
throttlekit (one acquire, and a file writer); and a parent with two children. Run:
``python benchmarks/bench_ratelimit.py [--quick]``.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import math
import platform
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import anyio.to_thread

from throttlekit import RateLimiter, ThrottledWriter

Acquire = Callable[[int], Awaitable[Any]]
MiB = 2**20
CHUNK = 64 * 1024


# -- peers ---------------------------------------------------------------------------------


def make_throttlekit(rate: float, burst: float | None = None) -> Acquire:
    return RateLimiter(rate, burst=burst).acquire


def make_aiolimiter(rate: float, burst: float | None = None) -> Acquire:
    from aiolimiter import AsyncLimiter

    # AsyncLimiter(max_rate, time_period): capacity max_rate per period (default 1 s).
    limiter = AsyncLimiter(rate) if burst is None else AsyncLimiter(burst, burst / rate)
    return limiter.acquire


def make_pyrate(rate: float, burst: float | None = None) -> Acquire:
    from pyrate_limiter import Duration, InMemoryBucket, Limiter
    from pyrate_limiter import Rate as PyrateRate

    if burst is None:
        rates = [PyrateRate(int(rate), Duration.SECOND)]
    else:
        rates = [PyrateRate(int(burst), int(1000 * burst / rate))]
    limiter = Limiter(InMemoryBucket(rates))

    async def acquire(n: int) -> None:
        if not await limiter.try_acquire_async("k", weight=n):
            raise RuntimeError("pyrate-limiter refused the request")

    return acquire


def make_limits(rate: float, burst: float | None = None) -> Acquire:
    from limits import RateLimitItemPerSecond
    from limits.aio.storage import MemoryStorage
    from limits.aio.strategies import MovingWindowRateLimiter

    if burst is not None:
        raise NotImplementedError("limits has no sub-second windows")
    strategy = MovingWindowRateLimiter(MemoryStorage())
    item = RateLimitItemPerSecond(int(rate))

    async def acquire(n: int) -> None:
        while not await strategy.hit(item, "k", cost=n):
            await asyncio.sleep(0.01)

    return acquire


PEERS: dict[str, Callable[..., Acquire]] = {
    "throttlekit": make_throttlekit,
    "aiolimiter": make_aiolimiter,
    "pyrate-limiter": make_pyrate,
    "limits": make_limits,
}


def available() -> list[str]:
    names = []
    for name, module in [
        ("throttlekit", "throttlekit"),
        ("aiolimiter", "aiolimiter"),
        ("pyrate-limiter", "pyrate_limiter"),
        ("limits", "limits"),
    ]:
        try:
            __import__(module)
        except ImportError:
            print(f"({name} is not installed: skipped; pip install -e '.[bench]')")
            continue
        names.append(name)
    return names


# -- scenarios -----------------------------------------------------------------------------


async def overhead(make: Callable[..., Acquire], n: int) -> float:
    """Microseconds per uncontended acquire (the rate is far above what one task asks)."""
    acquire = make(1e12)
    await acquire(1)
    best = math.inf
    for _ in range(3):
        t = time.perf_counter()
        for _ in range(n):
            await acquire(1)
        best = min(best, (time.perf_counter() - t) / n * 1e6)
    return best


def overhead_anyio(make: Callable[..., Acquire], n: int) -> float:
    """:func:`overhead` in a task that anyio runs (it has anyio's cancel-scope state)."""
    return float(anyio.run(overhead, make, n, backend="asyncio"))


async def accuracy(make: Callable[..., Acquire], tasks: int, seconds: float, units: str) -> Any:
    """10 MiB/s in 64 KiB chunks: achieved rate / target, worst 100 ms window / its share."""
    rate = 10 * MiB
    if units == "chunks":  # peers that count items rather than bytes
        acquire, cost = make(rate / CHUNK), 1
    else:
        acquire, cost = make(rate), CHUNK
    stamps: list[float] = []
    start = time.perf_counter()
    stop = start + seconds

    async def pump() -> None:
        while True:
            await acquire(cost)
            now = time.perf_counter()
            if now > stop:
                return
            stamps.append(now)

    await asyncio.gather(*(pump() for _ in range(tasks)))
    achieved = len(stamps) * CHUNK / seconds / rate
    stamps.sort()
    worst, j = 0, 0
    for i, t in enumerate(stamps):  # most chunks in any 100 ms window
        while stamps[j] < t - 0.1:
            j += 1
        worst = max(worst, i - j + 1)
    return achieved, worst * CHUNK / (rate * 0.1)


def blocking_overhead(n: int) -> list[list[str]]:
    """
    Microseconds per uncontended acquire_blocking: in a plain thread, and in anyio worker
    threads, where each call also asks whether the task that started the thread was
    cancelled (what makes sync work cancellable).
    """

    def per_call(_: object = None) -> float:
        limiter = RateLimiter(1e12)
        best = math.inf
        for _ in range(3):
            t = time.perf_counter()
            for _ in range(n):
                limiter.acquire_blocking(1)
            best = min(best, (time.perf_counter() - t) / n * 1e6)
        return best

    async def in_worker() -> float:
        return await anyio.to_thread.run_sync(per_call)

    plain = per_call()
    rows = [["a plain thread", f"{plain:.2f} us", "1.00x"]]
    for backend in ("asyncio", "trio"):
        worker = anyio.run(in_worker, backend=backend)
        rows.append(
            [f"an anyio worker thread ({backend})", f"{worker:.2f} us", f"{worker / plain:.2f}x"]
        )
    return rows


def threads_and_tasks(seconds: float, backend: str = "asyncio") -> float:
    """
    3 threads and 3 tasks (on ``backend``) on one limiter at 2,000/s: granted / (rate x
    time). trio's clock has a random offset from the threads' monotonic clock; the limiter
    must keep one timeline anyway (it once granted everything waiting when the two met).
    """
    limiter = RateLimiter(2000, burst=20)
    counts = [0] * 6
    stop = time.monotonic() + seconds

    def thread(i: int) -> None:
        while time.monotonic() < stop:
            limiter.acquire_blocking(1)
            counts[i] += 1

    async def task(i: int) -> None:
        while time.monotonic() < stop:
            await limiter.acquire(1)
            counts[i] += 1

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            for i in range(3, 6):
                tg.start_soon(task, i)

    workers = [threading.Thread(target=thread, args=(i,)) for i in range(3)]
    start = time.monotonic()
    for w in workers:
        w.start()
    anyio.run(main, backend=backend)
    for w in workers:
        w.join()
    return sum(counts) / (2000 * (time.monotonic() - start))


async def cpu_of_waiters(make: Callable[..., Acquire] | None, seconds: float) -> float:
    """
    CPU microseconds per grant of 50 tasks waiting at 20 ops/s for ``seconds``.
    ``None``: the floor, tasks that merely sleep, waking as often as grants happen.
    """
    stop = time.monotonic() + seconds
    acquire = make(20) if make is not None else None
    ops = 0

    async def waiter(i: int) -> None:
        nonlocal ops
        if acquire is None:
            await asyncio.sleep(i / 20)  # spread out, like grants at 20/s
        while time.monotonic() < stop:
            if acquire is None:
                await asyncio.sleep(50 / 20)
            else:
                await acquire(1)
            ops += 1

    cpu = time.process_time()
    await asyncio.gather(*(waiter(i) for i in range(50)))
    return (time.process_time() - cpu) / max(ops, 1) * 1e6


async def big_among_small(make: Callable[..., Acquire], timeout: float) -> str:
    """Seconds until a 500-unit request is served among 20 tasks asking for 1 unit each."""
    acquire = make(500)
    done = asyncio.Event()

    async def small() -> None:
        while not done.is_set():
            await acquire(1)

    async def big() -> float:
        await asyncio.sleep(0.2)
        t = time.perf_counter()
        await acquire(500)
        return time.perf_counter() - t

    smalls = [asyncio.ensure_future(small()) for _ in range(20)]
    try:
        return f"{await asyncio.wait_for(big(), timeout):.2f} s"
    except TimeoutError:
        return f"starved > {timeout:g} s"
    except Exception as e:  # report what the peer does
        return f"error: {type(e).__name__}"
    finally:
        done.set()
        for s in smalls:
            s.cancel()
        await asyncio.gather(*smalls, return_exceptions=True)


async def larger_than_burst(make: Callable[..., Acquire], timeout: float) -> str:
    """A 50-unit request on a limiter of 10/s (peers: a one-second burst of 10): ~5 s."""
    acquire = make(10)
    t = time.perf_counter()
    try:
        await asyncio.wait_for(acquire(50), timeout)
    except TimeoutError:
        return f"hangs (> {timeout:g} s)"
    except Exception as e:  # report what the peer does
        return f"error: {type(e).__name__}"
    return f"served in {time.perf_counter() - t:.2f} s"


async def megabyte_tiny_burst(make: Callable[..., Acquire], timeout: float) -> str:
    """1 MB at 1 GB/s with a burst of one byte: about 1 ms, if an amount can exceed the burst."""
    t = time.perf_counter()
    try:
        acquire = make(1e9, 1)
        await asyncio.wait_for(acquire(1_000_000), timeout)
    except TimeoutError:
        return f"hangs (> {timeout:g} s)"
    except Exception as e:  # report what the peer does
        return f"error: {type(e).__name__}"
    return f"{(time.perf_counter() - t) * 1e3:.1f} ms"


def large_amounts(scale: float) -> list[tuple[str, float, float]]:
    """
    throttlekit alone, large amounts that once cost one piece per burst: (what, seconds
    taken, seconds a perfect limiter would take).
    """

    def timed(fn: Callable[[], object]) -> float:
        t = time.perf_counter()
        fn()
        return time.perf_counter() - t

    size = int(10_000_000 * scale)
    rows = [
        (
            f"acquire_blocking({size / 1e6:g} MB) at 1 GB/s, burst 1 B",
            timed(lambda: RateLimiter(1e9, burst=1).acquire_blocking(size)),
            size / 1e9,
        ),
        (
            f"await acquire({size / 1e6:g} MB) at 1 GB/s, burst 1 B",
            timed(lambda: asyncio.run(RateLimiter(1e9, burst=1).acquire(size))),
            size / 1e9,
        ),
    ]
    chunk = bytes(65536)
    count = int(100_000_000 * scale) // len(chunk)

    def write() -> None:
        sink = io.BytesIO()
        writer = ThrottledWriter(sink, RateLimiter("1GB/s", burst=1), close=False)  # type: ignore[arg-type]
        for _ in range(count):
            writer.write(chunk)
            sink.seek(0)

    rows.append(
        (
            f"ThrottledWriter, {count * len(chunk) / 1e6:.0f} MB in 64 KiB writes at 1 GB/s, "
            "burst 1 B",
            timed(write),
            count * len(chunk) / 1e9,
        )
    )
    return rows


async def cancel_storm(make: Callable[..., Acquire], seconds: float) -> float:
    """Throughput of 5 steady tasks at 200/s while 100 others keep timing out, vs the rate."""
    acquire = make(200, 10)
    stop = time.monotonic() + seconds
    served = 0

    async def steady() -> None:
        nonlocal served
        while time.monotonic() < stop:
            await acquire(1)
            served += 1

    async def impatient() -> None:
        while time.monotonic() < stop:
            try:
                await asyncio.wait_for(acquire(1), 0.02)
            except TimeoutError:
                pass
            else:
                # Whatever the impatient ones do get also counts as served capacity.
                nonlocal served
                served += 1

    start = time.perf_counter()
    await asyncio.gather(*(steady() for _ in range(5)), *(impatient() for _ in range(100)))
    return served / (200 * (time.perf_counter() - start))


async def pacing(make: Callable[..., Acquire], seconds: float) -> float:
    """One task at 50/s with a burst of one request: achieved / target."""
    acquire = make(50, 1)
    await acquire(1)
    n = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        await acquire(1)
        n += 1
    return n / (50 * (time.perf_counter() - start))


async def parent_and_children(seconds: float) -> float:
    """Parent 10 MiB/s, two busy 8 MiB/s children: total / parent rate."""
    parent = RateLimiter(10 * MiB)
    children = [RateLimiter(8 * MiB, parent=parent) for _ in range(2)]
    stop = time.monotonic() + seconds
    await asyncio.sleep(0)
    start_granted = parent.statistics().total_granted

    async def pump(child: RateLimiter) -> None:
        while time.monotonic() < stop:
            await child.acquire(CHUNK)

    t = time.perf_counter()
    await asyncio.gather(*(pump(c) for c in children))
    elapsed = time.perf_counter() - t
    return (parent.statistics().total_granted - start_granted) / (10 * MiB * elapsed)


# -- report --------------------------------------------------------------------------------


def table(title: str, rows: list[list[str]], header: list[str]) -> None:
    print(f"\n{title}")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for r in [header, *rows]:
        print("  " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))


def safely(coro_factory: Callable[[], Awaitable[Any]]) -> Any:
    try:
        return asyncio.run(coro_factory())  # type: ignore[arg-type]
    except NotImplementedError as e:
        return f"n/a ({e})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--quick", action="store_true", help="shorter runs (less precise)")
    args = parser.parse_args()
    scale = 0.5 if args.quick else 1.0
    print(f"Python {sys.version.split()[0]} on {platform.machine()}, asyncio, real time")
    peers = available()

    n = 20_000 if args.quick else 100_000
    plain = {name: asyncio.run(overhead(PEERS[name], n)) for name in peers}
    managed = {name: overhead_anyio(PEERS[name], n) for name in peers}
    rows = []
    for name in peers:
        row = [name]
        for figures in (plain, managed):
            base = figures.get("aiolimiter")
            row += [f"{figures[name]:.2f} us", f"{figures[name] / base:.2f}x" if base else "-"]
        rows.append(row)
    table(
        "Uncontended acquire (lower is better)",
        rows,
        ["limiter", "asyncio.run", "vs aiolimiter", "anyio.run", "vs aiolimiter"],
    )

    rows = []
    for tasks in (1, 50):
        for name in peers:
            units = "bytes" if name in ("throttlekit", "aiolimiter") else "chunks"
            got = safely(lambda n=name, t=tasks, u=units: accuracy(PEERS[n], t, 2 * scale, u))
            if isinstance(got, str):
                rows.append([f"{tasks}", name, got, ""])
                continue
            achieved, worst = got
            rows.append([f"{tasks}", name, f"{achieved:.3f}", f"{worst:.2f}x"])
    table(
        "10 MiB/s in 64 KiB chunks (target: rate within 3%, worst 100 ms window <= 1.5x)",
        rows,
        ["tasks", "limiter", "achieved / rate", "worst 100 ms / share"],
    )

    ratio = threads_and_tasks(2 * scale)
    print(f"\n3 threads + 3 asyncio tasks on one throttlekit limiter: {ratio:.3f} of the rate")
    ratio = threads_and_tasks(2 * scale, "trio")
    print(f"3 threads + 3 trio tasks on one throttlekit limiter: {ratio:.3f} of the rate")
    table(
        "Uncontended acquire_blocking (the cancellation check in worker threads)",
        blocking_overhead(n),
        ["called from", "per call", "vs a plain thread"],
    )

    floor = asyncio.run(cpu_of_waiters(None, 3 * scale))
    rows = []
    for name in peers:
        cpu = safely(lambda n=name: cpu_of_waiters(PEERS[n], 3 * scale))
        rows.append([name, f"{cpu:.0f} us", f"{cpu / floor:.1f}x"])
    table(
        f"50 tasks waiting at 20 ops/s: CPU per grant (floor, a task's sleep: {floor:.0f} us)",
        rows,
        ["limiter", "CPU per grant", "vs floor (target <= 5x)"],
    )

    rows = []
    for name in peers:
        big = safely(lambda n=name: big_among_small(PEERS[n], 5.0))
        over = safely(lambda n=name: larger_than_burst(PEERS[n], 8.0))
        storm = safely(lambda n=name: cancel_storm(PEERS[n], 2 * scale))
        pace = safely(lambda n=name: pacing(PEERS[n], 2 * scale))
        mega = safely(lambda n=name: megabyte_tiny_burst(PEERS[n], 8.0))
        rows.append(
            [
                name,
                big,
                over,
                storm if isinstance(storm, str) else f"{storm:.3f}",
                pace if isinstance(pace, str) else f"{pace:.3f}",
                mega,
            ]
        )
    table(
        "Semantics probes",
        rows,
        [
            "limiter",
            "500 among 1s (not starved)",
            "50 at 10/s (~5 s)",
            "cancel storm (>= 0.98)",
            "pacing, burst 1 (0.98-1.02)",
            "1 MB at 1 GB/s, burst 1 B (~1 ms)",
        ],
    )

    rows = [
        [what, f"{took:.3f} s", f"{took / ideal:.2f}x"]
        for what, took, ideal in large_amounts(scale)
    ]
    table("Large amounts, throttlekit", rows, ["what", "took", "vs a perfect limiter"])

    ratio = asyncio.run(parent_and_children(2 * scale))
    print(f"\nParent 10 MiB/s, two busy 8 MiB/s children: total {ratio:.3f} of the parent")


if __name__ == "__main__":
    main()
