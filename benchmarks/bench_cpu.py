"""
CPU caps, measured in real time on this machine.

1. A CPU-bound loop calling a CpuGovernor at 30% and at 70%, from a thread and from an
   asyncio task: the measured average over 3 s (target: within 5 points).
2. A busy child process throttled to 30% by throttle_process, and by Debian's ``cpulimit``
   in the same run when it is installed: the measured average over 3 s (target: within 6
   points), read from the kernel's accounting.
3. The price of never leaving it stopped: throttle_process's watchdog process (started
   before the first stop, so that a SIGKILLed throttler still continues the target): the
   time to start one, and the CPU time and memory it uses while a throttle runs.

Run: ``python benchmarks/bench_cpu.py``.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from statistics import median

import anyio

from throttlekit import CpuGovernor, available_cpus, throttle_process
from throttlekit._throttle._cpu import _proc_cpu, _Target, _Watchdog

SECONDS = 3.0
BUSY = [sys.executable, "-c", "while True: pass"]


def burn(seconds: float) -> None:
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


def governed_thread(percent: float) -> float:
    result: list[float] = []

    def work() -> None:
        governor = CpuGovernor(percent, scope="thread")
        wall0, cpu0 = time.monotonic(), time.thread_time()
        while time.monotonic() - wall0 < SECONDS:
            burn(0.005)
            governor.checkpoint_blocking()
        result.append(100 * (time.thread_time() - cpu0) / (time.monotonic() - wall0))

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    return result[0]


async def governed_task(percent: float) -> float:
    governor = CpuGovernor(percent)
    wall0, cpu0 = time.monotonic(), time.process_time()
    while time.monotonic() - wall0 < SECONDS:
        burn(0.005)
        await governor.checkpoint()
    return 100 * (time.process_time() - cpu0) / (time.monotonic() - wall0)


def measure_child(pid: int, seconds: float) -> float:
    time.sleep(0.5)  # let the throttle settle
    c0, t0 = _proc_cpu(pid) or 0.0, time.monotonic()
    time.sleep(seconds)
    c1, t1 = _proc_cpu(pid) or 0.0, time.monotonic()
    return 100 * (c1 - c0) / (t1 - t0)


def watchdog_of(parent: int) -> int | None:
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                argv = (entry / "cmdline").read_bytes().split(b"\0")
            except (FileNotFoundError, ProcessLookupError):
                continue
            if ppid == parent and argv[1:4] == [b"-I", b"-S", b"-c"]:
                return int(entry.name)
    return None


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def throttled_child(percent: float) -> tuple[float, float, float]:
    """The child's measured average; the watchdog's CPU (ms) and memory (MiB)."""
    process = await anyio.open_process(BUSY)
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(throttle_process, process, percent)
            measured = await anyio.to_thread.run_sync(measure_child, process.pid, SECONDS)
            watchdog = watchdog_of(os.getpid())
            assert watchdog is not None
            cpu, rss = 1000 * (_proc_cpu(watchdog) or 0.0), rss_mib(watchdog)
            tg.cancel_scope.cancel()
        return measured, cpu, rss
    finally:
        process.kill()
        await process.wait()


def watchdog_start_ms(rounds: int = 20) -> tuple[float, float]:
    """Median time to start a watchdog (fork and exec), and until it is ready to act."""
    child = subprocess.Popen(BUSY)
    spawn, ready = [], []
    try:
        for _ in range(rounds):
            target = _Target(child.pid)
            watchdog = _Watchdog(target)
            t0 = time.perf_counter()
            watchdog.ensure([child.pid])
            spawn.append(time.perf_counter() - t0)
            pid = watchdog.pid
            assert pid is not None
            # Ready once it sleeps in select(): its wait channel says so.
            wchan, deadline = Path(f"/proc/{pid}/wchan"), t0 + 5
            while not any(w in wchan.read_text() for w in ("select", "poll")):
                if time.perf_counter() > deadline:
                    raise RuntimeError("the watchdog never reached select()")
                time.sleep(0.0005)
            ready.append(time.perf_counter() - t0)
            watchdog.close()
            target.close()
    finally:
        child.kill()
        child.wait()
    return 1000 * median(spawn), 1000 * median(ready)


def cpulimit_child(percent: float) -> float | None:
    cpulimit = shutil.which("cpulimit")
    if cpulimit is None:
        return None
    child = subprocess.Popen(BUSY)
    limiter = subprocess.Popen(
        [cpulimit, "-p", str(child.pid), "-l", str(int(percent))],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        return measure_child(child.pid, SECONDS)
    finally:
        limiter.kill()
        limiter.wait()
        child.kill()
        child.wait()


def main() -> None:
    print(
        f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs on the machine, "
        f"{available_cpus():g} available to this process"
    )
    print("\nCpuGovernor on a CPU-bound loop, 3 s (target: within 5 points)")
    for percent in (30, 70):
        thread = governed_thread(percent)
        task = asyncio.run(governed_task(percent))
        print(f"  target {percent}%: thread {thread:5.1f}%   asyncio task {task:5.1f}%")

    print("\nA busy child process held at 30%, 3 s (target: within 6 points)")
    ours, watchdog_cpu, watchdog_rss = asyncio.run(throttled_child(30))
    print(f"  throttle_process  {ours:5.1f}%")
    theirs = cpulimit_child(30)
    if theirs is None:
        print("  cpulimit          (not installed here: apt-get install cpulimit to compare)")
    else:
        print(f"  cpulimit          {theirs:5.1f}%")

    print("\nThe watchdog that continues the target if the throttler is SIGKILLed")
    spawn, ready = watchdog_start_ms()
    print(f"  start: {spawn:.1f} ms in the caller (fork and exec), ready to act {ready:.1f} ms")
    print(
        f"  while throttling for {SECONDS + 0.5:g} s: {watchdog_cpu:.0f} ms of CPU "
        f"(in {1000 // os.sysconf('SC_CLK_TCK')} ms clock ticks; it sleeps in select), "
        f"{watchdog_rss:.1f} MiB resident"
    )


if __name__ == "__main__":
    main()
