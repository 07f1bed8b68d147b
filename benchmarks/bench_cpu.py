"""
CPU caps, measured in real time on this machine.

1. A CPU-bound loop calling a CpuGovernor at 30% and at 70%, from a thread and from an
   asyncio task: the measured average over 3 s (target: within 5 points).
2. A busy child process throttled to 30% by throttle_process, and by Debian's ``cpulimit``
   in the same run when it is installed: the measured average over 3 s (target: within 6
   points), read from the kernel's accounting.

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

import anyio

from throttlekit import CpuGovernor, available_cpus, throttle_process
from throttlekit._cpu import _proc_cpu

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


async def throttled_child(percent: float) -> float:
    process = await anyio.open_process(BUSY)
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(throttle_process, process, percent)
            measured = await anyio.to_thread.run_sync(measure_child, process.pid, SECONDS)
            tg.cancel_scope.cancel()
        return measured
    finally:
        process.kill()
        await process.wait()


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
    ours = asyncio.run(throttled_child(30))
    print(f"  throttle_process  {ours:5.1f}%")
    theirs = cpulimit_child(30)
    if theirs is None:
        print("  cpulimit          (not installed here: apt-get install cpulimit to compare)")
    else:
        print(f"  cpulimit          {theirs:5.1f}%")


if __name__ == "__main__":
    main()
