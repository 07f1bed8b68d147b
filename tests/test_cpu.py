"""CPU: the governor on virtual clocks, duty-cycling real children, priorities, CPU counts."""

from __future__ import annotations

import errno
import functools
import json
import math
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

import anyio
import pytest
from hypothesis import given
from hypothesis import strategies as st

import throttlekit._throttle._cpu as cpu_module
from _procs import WAIT
from throttlekit import (
    CpuGovernor,
    available_cpus,
    lower_priority,
)
from throttlekit._throttle._cpu import _available_cpus, cpu_sleep
from throttlekit.testing import ManualClock

pytestmark = pytest.mark.anyio

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs /proc")


@given(
    cpu=st.floats(0, 100, allow_subnormal=False),  # no CPU time is 5e-324 s
    wall=st.floats(0, 100, allow_subnormal=False),
    percent=st.floats(1, 800),
)
def test_cpu_sleep_brings_the_average_to_the_target(
    cpu: float, wall: float, percent: float
) -> None:
    """After the advised sleep the average is at most the target, and exactly it if it slept."""
    sleep = cpu_sleep(cpu, wall, percent)
    assert sleep >= 0
    if wall + sleep > 0:
        average = 100 * cpu / (wall + sleep)
        assert average <= percent * (1 + 1e-9) + 1e-9
        if sleep > 0:
            assert average == pytest.approx(percent)


async def test_async_governor_holds_the_average_on_virtual_time() -> None:
    """A loop that is all CPU, checkpointing after each 10 ms slice, averages 30%."""
    used = ManualClock()
    governor = CpuGovernor(30, clock=anyio.current_time, cpu_clock=used)
    t0 = anyio.current_time()
    while anyio.current_time() - t0 < 20:
        used.advance(0.01)  # 10 ms of work...
        await anyio.sleep(0.01)  # ...which also takes 10 ms of wall time
        await governor.checkpoint()
    stats = governor.statistics()
    assert stats.average_percent == pytest.approx(30, abs=0.2)
    assert stats.slept > 0
    assert stats.checkpoints > 100


async def test_governor_does_not_slow_a_loop_already_under_the_target() -> None:
    """Work at 10% of one core with a 50% target never sleeps."""
    used = ManualClock()
    governor = CpuGovernor(50, clock=anyio.current_time, cpu_clock=used)
    for _ in range(100):
        used.advance(0.01)
        await anyio.sleep(0.1)
        await governor.checkpoint()
    assert governor.statistics().slept == 0


def test_blocking_governor_sleeps_the_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    """checkpoint_blocking sleeps (here on a manual clock) just enough for the target."""
    wall, used = ManualClock(), ManualClock()
    monkeypatch.setattr(cpu_module.time, "sleep", wall.advance)
    governor = CpuGovernor(25, window=2.0, clock=wall, cpu_clock=used)
    governor.checkpoint_blocking()
    for _ in range(200):
        used.advance(0.01)
        wall.advance(0.01)
        governor.checkpoint_blocking()
    assert governor.statistics().average_percent == pytest.approx(25, abs=0.3)


def test_thread_scope_keeps_one_history_per_thread() -> None:
    """With scope='thread', each thread is measured against its own readings."""
    governor = CpuGovernor(50, scope="thread", clock=ManualClock(), cpu_clock=ManualClock())
    governor.checkpoint_blocking()
    thread = __import__("threading").Thread(target=governor.checkpoint_blocking)
    thread.start()
    thread.join()
    assert len(governor._histories) == 2


# -- checkpoint_blocking in an anyio worker thread: the host's cancel reaches it ------------

ASKED = 20.0  # real seconds the checkpoint is asked to sleep: the guard if it misses a cancel


@pytest.mark.parametrize("when", ["before the call", "while it sleeps", "shielded"])
async def test_checkpoint_blocking_raises_when_the_host_task_is_cancelled(when: str) -> None:
    """
    Sync work in ``anyio.to_thread.run_sync`` stops at its next ``checkpoint_blocking``
    once the task that started it is cancelled: at the call, or during the sleep (real
    time: without the check the thread would sleep ASKED seconds and finish). Inside a
    shielded scope the cancel does not reach it and it sleeps its time.
    """
    used = ManualClock()
    governor = CpuGovernor(50, cpu_clock=used)  # the real wall clock: it really sleeps
    ready, cancelled = threading.Event(), threading.Event()
    reached: list[str] = []

    def work() -> None:
        governor.checkpoint_blocking()  # the first reading
        if when == "before the call":
            ready.set()
            assert cancelled.wait(WAIT)
        else:  # 50% of ASKED (or 0.1 s when shielded) of CPU at once: a sleep is due
            used.advance(0.1 if when == "shielded" else ASKED / 2)
        governor.checkpoint_blocking()
        reached.append("after the checkpoint")

    def sleeping() -> bool:
        return ready.wait(WAIT) if when == "before the call" else _wait_until_slept(governor)

    outer = anyio.CancelScope()

    async def host() -> None:
        with outer, anyio.CancelScope(shield=when == "shielded"):
            await anyio.to_thread.run_sync(work)

    async with anyio.create_task_group() as tg:
        tg.start_soon(host)
        assert await anyio.to_thread.run_sync(sleeping)
        outer.cancel()
        cancelled.set()
    if when == "shielded":
        assert reached == ["after the checkpoint"]
    else:
        assert reached == []
        assert outer.cancelled_caught


def _wait_until_slept(governor: CpuGovernor) -> bool:
    deadline = time.monotonic() + WAIT
    while governor.statistics().slept == 0:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.001)
    return True


def test_checkpoint_blocking_outside_a_worker_thread_just_sleeps(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """In a plain thread there is no host to ask: one sleep, the advised one."""
    wall, used = ManualClock(), ManualClock()
    naps: list[float] = []

    def nap(seconds: float) -> None:
        naps.append(seconds)
        wall.advance(seconds)

    monkeypatch.setattr(cpu_module.time, "sleep", nap)
    governor = CpuGovernor(50, clock=wall, cpu_clock=used)
    governor.checkpoint_blocking()
    used.advance(0.12)
    governor.checkpoint_blocking()  # 0.12 s of CPU at 50%: 0.24 s of wall time, 0.24 to sleep
    assert naps == [pytest.approx(0.24)]


@pytest.mark.parametrize(
    ("kwargs", "error", "fragment"),
    [
        ({"percent": 0}, ValueError, "percent must be > 0"),
        ({"percent": -1}, ValueError, "percent must be > 0"),
        ({"percent": math.inf}, ValueError, "percent must be > 0 and finite"),
        ({"percent": math.nan}, ValueError, "percent must be > 0 and finite"),
        ({"percent": "30"}, TypeError, "percent must be a number"),
        ({"percent": True}, TypeError, "percent must be a number"),
        ({"percent": 30, "window": 0}, ValueError, "window must be > 0"),
        ({"percent": 30, "window": math.inf}, ValueError, "window must be > 0 seconds and finite"),
        ({"percent": 30, "window": timedelta(seconds=-1)}, ValueError, "window must be > 0"),
        ({"percent": 30, "window": "1s"}, TypeError, "window must be seconds or a timedelta"),
        ({"percent": 30, "scope": "core"}, ValueError, "scope must be"),
        ({"percent": 30, "scope": 1}, TypeError, "scope must be"),
        ({"percent": 30, "clock": 1}, TypeError, "clock must be callable or None, got int"),
        (
            {"percent": 30, "cpu_clock": "now"},
            TypeError,
            "cpu_clock must be callable or None, got str",
        ),
    ],
)
def test_bad_governor_arguments(kwargs: dict[str, object], error: type, fragment: str) -> None:
    """Bad arguments name themselves."""
    with pytest.raises(error, match=fragment):
        CpuGovernor(**kwargs)  # type: ignore[arg-type]


def test_governor_window_takes_a_timedelta_and_percent_is_checked_live() -> None:
    """Durations are seconds or timedeltas; a new percent is checked like the first."""
    governor = CpuGovernor(30, window=timedelta(milliseconds=500))
    assert governor.statistics().window == 0.5
    with pytest.raises(ValueError, match="percent must be > 0 and finite"):
        governor.percent = math.inf
    governor.percent = 45
    assert governor.percent == 45


@pytest.mark.parametrize(
    ("args", "error", "fragment"),
    [
        ((1.0, 1.0, 0), ValueError, "percent must be > 0"),
        ((1.0, 1.0, math.nan), ValueError, "percent must be > 0 and finite"),
        ((1.0, 1.0, "25"), TypeError, "percent must be a number"),
        ((-1.0, 1.0, 25), ValueError, "cpu must be >= 0"),
        ((math.inf, 1.0, 25), ValueError, "cpu must be >= 0 seconds and finite"),
        ((1.0, math.nan, 25), ValueError, "wall must be >= 0 seconds and finite"),
        ((1.0, "1", 25), TypeError, "wall must be a number"),
    ],
)
def test_cpu_sleep_checks_its_inputs(args: tuple[object, ...], error: type, fragment: str) -> None:
    """The pure maths refuses what it cannot compute (percent 0 was a ZeroDivisionError)."""
    with pytest.raises(error, match=fragment):
        cpu_sleep(*args)  # type: ignore[arg-type]


# -- priorities, in a subprocess so the test runner keeps its own -------------------------

PRIORITY_SCRIPT = """
import json, os, threading, time
import throttlekit
ready = threading.Event()
def idle():
    ready.set(); time.sleep(5)
t = threading.Thread(target=idle, daemon=True); t.start(); ready.wait()
before = throttlekit.lower_priority(**json.loads(os.environ["ARGS"]))
nices = {}
for tid in os.listdir("/proc/self/task"):
    fields = open(f"/proc/self/task/{tid}/stat").read().rsplit(")", 1)[1].split()
    nices[tid] = int(fields[16])
print(json.dumps({"before": [before.nice, before.io_class, before.io_level,
                             list(before.unsupported)],
                  "nices": sorted(set(nices.values())), "threads": len(nices),
                  "after": [throttlekit._throttle._cpu._current_priority().io_class,
                            throttlekit._throttle._cpu._current_priority().io_level]}))
"""


@functools.cache
def default_priority() -> dict[str, object]:
    """lower_priority() with its defaults, run once for the tests that look at it."""
    return run_priority()


def run_priority(**kwargs: object) -> dict[str, object]:
    env = {**__import__("os").environ, "ARGS": json.dumps(kwargs)}
    out = subprocess.run(
        [sys.executable, "-c", PRIORITY_SCRIPT], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)  # type: ignore[no-any-return]


IO_PRIORITY = cpu_module._current_priority().unsupported == ()
needs_io_priority = pytest.mark.skipif(
    not IO_PRIORITY, reason="no I/O priority here (not Linux, or an unknown architecture)"
)


@linux_only
def test_lower_priority_sets_every_thread_and_reports_before() -> None:
    """nice 10 (Avamar's default) applies to every thread; what was there is returned."""
    result = default_priority()
    assert result["threads"] == 2
    assert result["nices"] == [10]
    assert result["before"][0] == 0  # type: ignore[index]


@linux_only
@needs_io_priority
def test_lower_priority_sets_best_effort_io_from_nice() -> None:
    """Best-effort I/O at level (nice + 20) // 5: 6 for nice 10, as the kernel derives it."""
    result = default_priority()
    assert result["before"][3] == []  # type: ignore[index]
    assert result["after"] == ["best-effort", 6]


@linux_only
@needs_io_priority
def test_lower_priority_idle_io_class() -> None:
    """io_class='idle' has no level."""
    result = run_priority(nice=15, io_class="idle")
    assert result["nices"] == [15]
    assert result["after"] == ["idle", None]


@pytest.mark.parametrize(
    ("kwargs", "error", "fragment"),
    [
        ({"nice": 40}, ValueError, "nice must be between -20 and 19"),
        ({"nice": -21}, ValueError, "nice must be between -20 and 19"),
        ({"nice": 10.0}, TypeError, "nice must be an int"),
        ({"nice": True}, TypeError, "nice must be an int"),
        ({"io_class": "fast"}, ValueError, "io_class must be one of"),
        ({"io_class": 2}, TypeError, "io_class must be a string"),
        ({"io_level": 9}, ValueError, "io_level must be between 0 and 7, got 9"),
        ({"io_level": -1}, ValueError, "io_level must be between 0 and 7, got -1"),
        ({"io_level": "4"}, TypeError, "io_level must be an int or None"),
        ({"io_class": "idle", "io_level": 3}, ValueError, "io_level applies to the realtime"),
    ],
)
def test_lower_priority_checks_arguments(
    kwargs: dict[str, object], error: type, fragment: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bad settings are refused by name before anything changes."""
    changed: list[object] = []
    monkeypatch.setattr(cpu_module.os, "setpriority", lambda *args: changed.append(args))
    with pytest.raises(error, match=fragment):
        lower_priority(**kwargs)  # type: ignore[arg-type]
    assert changed == []


def test_a_thread_that_ends_during_lower_priority_is_skipped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """
    A thread listed in /proc/self/task that is gone by the time it is changed (ESRCH from
    setpriority or ioprio_set) is not an error; the others are still changed, and a
    thread that appears meanwhile is picked up by the next listing.
    """
    listings = iter([[100, 101, 102], [100, 101, 102, 103], [100, 102, 103]])
    monkeypatch.setattr(cpu_module, "_threads", lambda: next(listings))
    niced: list[int] = []
    io: list[int] = []

    def setpriority(which: int, tid: int, value: int) -> None:
        if tid == 101:
            raise ProcessLookupError(errno.ESRCH, "No such process")
        niced.append(tid)

    def ioprio(tid: int, value: int | None) -> int:
        if tid == 102:
            raise OSError(errno.ESRCH, "No such process")
        io.append(tid)
        return 0

    monkeypatch.setattr(cpu_module.os, "setpriority", setpriority)
    monkeypatch.setattr(cpu_module, "_ioprio", ioprio)
    monkeypatch.setattr(
        cpu_module,
        "_current_priority",
        lambda: cpu_module.PrioritySettings(nice=0, io_class="none", io_level=None),
    )
    lower_priority()
    assert niced == [100, 102, 103]
    assert io == [100, 103]


def test_other_errors_of_lower_priority_are_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only a vanished thread is forgiven: a refusal (EPERM, EACCES) is still an error."""
    monkeypatch.setattr(cpu_module, "_threads", lambda: [100])

    def refuse(which: int, tid: int, value: int) -> None:
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(cpu_module.os, "setpriority", refuse)
    with pytest.raises(PermissionError):
        lower_priority(nice=-5)


CHURN_SCRIPT = """
import os, threading, throttlekit
stop = threading.Event()
def churn():
    while not stop.is_set():
        t = threading.Thread(target=lambda: None)
        t.start()
        t.join()
churners = [threading.Thread(target=churn) for _ in range(2)]
for t in churners:
    t.start()
errors = 0
for _ in range(400):
    try:
        throttlekit.lower_priority(nice=10)
    except OSError as e:
        errors += 1
stop.set()
for t in churners:
    t.join()
print(errors)
"""


@linux_only
def test_lower_priority_with_threads_starting_and_ending() -> None:
    """With threads churning all the while, 400 calls in a row never raise."""
    out = subprocess.run(
        [sys.executable, "-c", CHURN_SCRIPT], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "0"


# -- available CPUs ---------------------------------------------------------------------------


def test_cgroup_v2_quota_caps_the_affinity(tmp_path: Path) -> None:
    """cpu.max '150000 100000' is 1.5 CPUs; the smallest quota up the tree wins."""
    leaf = tmp_path / "kubepods" / "pod1"
    leaf.mkdir(parents=True)
    (tmp_path / "kubepods" / "cpu.max").write_text("400000 100000\n")
    (leaf / "cpu.max").write_text("150000 100000\n")
    assert _available_cpus(8, "0::/kubepods/pod1\n", tmp_path) == 1.5
    (leaf / "cpu.max").write_text("max 100000\n")
    assert _available_cpus(8, "0::/kubepods/pod1\n", tmp_path) == 4.0
    assert _available_cpus(2, "0::/kubepods/pod1\n", tmp_path) == 2.0


def test_cgroup_v1_quota(tmp_path: Path) -> None:
    """v1 cfs_quota_us / cfs_period_us, and -1 meaning no quota."""
    d = tmp_path / "cpu,cpuacct" / "docker" / "abc"
    d.mkdir(parents=True)
    (d / "cpu.cfs_quota_us").write_text("50000\n")
    (d / "cpu.cfs_period_us").write_text("100000\n")
    text = "4:cpu,cpuacct:/docker/abc\n3:memory:/docker/abc\n"
    assert _available_cpus(4, text, tmp_path) == 0.5
    (d / "cpu.cfs_quota_us").write_text("-1\n")
    assert _available_cpus(4, text, tmp_path) == 4.0


def test_available_cpus_on_this_machine() -> None:
    """A positive number no larger than the affinity mask."""
    cpus = available_cpus()
    assert 0 < cpus <= len(__import__("os").sched_getaffinity(0))
