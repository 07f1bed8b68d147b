"""
CPU limits: a cooperative governor, duty-cycling another process, priorities, CPU counts.

Three ways to keep a backup from eating a machine's CPU, from gentlest to strongest:

* :class:`CpuGovernor`: your own work loop calls ``checkpoint()`` and sleeps just enough
  that its average CPU stays under a percentage (Avamar's ``--cpu-throttle``). Exact and
  free, but only for code you control.
* :func:`throttle_process`: another process is stopped and continued (SIGSTOP/SIGCONT)
  so its average stays under the percentage, as ``cpulimit`` does. Works on any program;
  coarse (it pauses the whole process, I/O included).
* The kernel: a cgroup's ``cpu.max`` enforces a quota exactly, when you may write it.
  :func:`available_cpus` reads such quotas, so code sizes its pools to what it can use.

:func:`lower_priority` is the complement: not a cap, a place in the queue (nice and I/O
priority), so the machine's real work goes first.

The duty-cycle maths is pure (:func:`cpu_sleep`); the rest reads clocks and /proc.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import math
import os
import platform
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Final, Literal, Protocol, final

import anyio
from attrs import frozen

from ._errors import ThrottlekitError

__all__ = [
    "CpuGovernor",
    "CpuGovernorStatistics",
    "PrioritySettings",
    "available_cpus",
    "cpu_sleep",
    "lower_priority",
    "throttle_process",
]  # cpu_sleep is the sans-I/O maths, public here but not from throttlekit


def _check_percent(percent: object) -> float:
    if isinstance(percent, bool) or not isinstance(percent, int | float):
        raise TypeError(f"percent must be a number, got {type(percent).__name__}")
    if not (math.isfinite(percent) and percent > 0):
        raise ValueError(
            f"percent must be > 0 (of one core; 250 is two and a half cores), got {percent!r}"
        )
    return float(percent)


def _check_window(window: object) -> float:
    if isinstance(window, timedelta):
        window = window.total_seconds()
    if isinstance(window, bool) or not isinstance(window, int | float):
        raise TypeError(f"window must be seconds or a timedelta, got {type(window).__name__}")
    if not (math.isfinite(window) and window > 0):
        raise ValueError(f"window must be > 0 seconds, got {window!r}")
    return float(window)


def cpu_sleep(cpu: float, wall: float, percent: float) -> float:
    """
    Seconds to sleep so that ``cpu`` seconds used over ``wall`` seconds average at most
    ``percent`` of one core: ``cpu / (wall + sleep) <= percent / 100``.

    >>> cpu_sleep(cpu=0.5, wall=1.0, percent=25)   # 0.5 s of CPU needs 2 s of wall time
    1.0
    >>> cpu_sleep(cpu=0.1, wall=1.0, percent=25)   # already under: no sleep
    0.0
    """
    if cpu < 0 or wall < 0:
        raise ValueError(f"cpu and wall must be >= 0, got cpu={cpu!r}, wall={wall!r}")
    return max(0.0, cpu * 100.0 / percent - wall)


@frozen(kw_only=True)
class CpuGovernorStatistics:
    """A snapshot of a :class:`CpuGovernor`: its target and what it measured and did."""

    percent: float
    window: float
    checkpoints: int
    slept: float
    cpu_seconds: float
    wall_seconds: float

    @property
    def average_percent(self) -> float:
        """CPU time / wall time since the governor's first checkpoint, in percent."""
        return 100.0 * self.cpu_seconds / self.wall_seconds if self.wall_seconds > 0 else 0.0


class _History:
    """(wall, cpu) readings over the last window, for one thread or the process."""

    __slots__ = ("readings",)

    def __init__(self) -> None:
        self.readings: deque[tuple[float, float]] = deque()

    def advise(self, wall: float, cpu: float, window: float, percent: float) -> float:
        readings = self.readings
        delay = 0.0
        if readings:
            while len(readings) > 1 and wall - readings[1][0] >= window:
                readings.popleft()  # keep one reading at or before the window's start
            wall0, cpu0 = readings[0]
            delay = cpu_sleep(max(0.0, cpu - cpu0), max(0.0, wall - wall0), percent)
        # Stamped at the end of the sleep it asks for: a window then always starts after a
        # sleep, so it counts as many sleeps as pieces of work (no sleep is lost when the
        # window moves on).
        readings.append((wall + delay, cpu))
        return delay


@final
class CpuGovernor:
    """
    Keep a work loop's average CPU at or under ``percent`` of one core, by sleeping.

    Call :meth:`checkpoint` (async) or :meth:`checkpoint_blocking` (threads) often, between
    pieces of work (a compressed block, a hashed chunk). Each call compares the CPU time
    used with the wall time that passed over the last ``window`` seconds and sleeps just
    long enough to bring the average down to the target (Avamar's ``--cpu-throttle``):

    .. code-block:: python

        governor = CpuGovernor(30)              # at most 30% of one core, on average
        for chunk in chunks:
            compress(chunk)
            governor.checkpoint_blocking()

    ``percent`` is of one core: 250 allows two and a half. ``scope="process"`` (the
    default) measures the whole process (:func:`time.process_time`), so one governor may be
    shared by several threads and tasks; ``scope="thread"`` measures the calling thread
    (:func:`time.thread_time`), each thread against its own history. ``clock`` and
    ``cpu_clock`` replace the wall and CPU clocks, for tests.

    It is cooperative: code that does not call it is not limited. To cap a program you do
    not control, use :func:`throttle_process`; for an exact kernel-enforced cap, a cgroup.
    """

    def __init__(
        self,
        percent: float,
        *,
        window: float | timedelta = 1.0,
        scope: Literal["process", "thread"] = "process",
        clock: Callable[[], float] | None = None,
        cpu_clock: Callable[[], float] | None = None,
    ) -> None:
        self._percent = _check_percent(percent)
        self._window = _check_window(window)
        if scope not in ("process", "thread"):
            raise ValueError(f"scope must be 'process' or 'thread', got {scope!r}")
        for name, fn in (("clock", clock), ("cpu_clock", cpu_clock)):
            if fn is not None and not callable(fn):
                raise TypeError(f"{name} must be a function returning seconds, got {fn!r}")
        self._scope = scope
        self._clock = clock if clock is not None else time.monotonic
        default_cpu = time.process_time if scope == "process" else time.thread_time
        self._cpu_clock = cpu_clock if cpu_clock is not None else default_cpu
        self._lock = threading.Lock()
        self._histories: dict[int, _History] = {}
        self._first: tuple[float, float] | None = None
        self._last: tuple[float, float] = (0.0, 0.0)
        self._checkpoints = 0
        self._slept = 0.0

    @property
    def percent(self) -> float:
        """The target, in percent of one core. Settable live."""
        return self._percent

    @percent.setter
    def percent(self, value: float) -> None:
        self._percent = _check_percent(value)

    def _advise(self) -> float:
        wall, cpu = self._clock(), self._cpu_clock()
        key = threading.get_ident() if self._scope == "thread" else 0
        with self._lock:
            history = self._histories.get(key)
            if history is None:
                history = self._histories[key] = _History()
            if self._first is None:
                self._first = (wall, cpu)
            self._last = (wall, cpu)
            self._checkpoints += 1
            delay = history.advise(wall, cpu, self._window, self._percent)
            self._slept += delay
        return delay

    async def checkpoint(self) -> None:
        """Sleep as long as needed to keep the average at the target (a cancellation point)."""
        delay = self._advise()
        if delay > 0:
            await anyio.sleep(delay)
        else:
            await anyio.lowlevel.checkpoint_if_cancelled()

    def checkpoint_blocking(self) -> None:
        """:meth:`checkpoint` for threads: block the calling thread as long as needed."""
        delay = self._advise()
        if delay > 0:
            time.sleep(delay)

    def statistics(self) -> CpuGovernorStatistics:
        """A snapshot: target, window, checkpoints, time slept, CPU and wall time seen."""
        with self._lock:
            first = self._first if self._first is not None else self._last
            return CpuGovernorStatistics(
                percent=self._percent,
                window=self._window,
                checkpoints=self._checkpoints,
                slept=self._slept,
                cpu_seconds=self._last[1] - first[1],
                wall_seconds=self._last[0] - first[0],
            )


# -- other processes ---------------------------------------------------------------------


class _HasPid(Protocol):
    @property
    def pid(self) -> int: ...


_TICKS: Final = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _proc_cpu(pid: int) -> float | None:
    """CPU seconds used by ``pid`` (user + system), or None if it is gone or a zombie."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None
    if fields[0] in ("Z", "X"):
        return None
    return (int(fields[11]) + int(fields[12])) / _TICKS


def _children(pid: int) -> list[int]:
    """Every descendant of ``pid`` (scanning /proc)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError, IndexError, PermissionError):
            continue
        parents.setdefault(int(fields[1]), []).append(int(entry.name))
    out: list[int] = []
    todo = [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _signal_all(pids: list[int], sig: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


async def throttle_process(
    process: int | _HasPid,
    percent: float,
    *,
    include_children: bool = False,
    period: float = 0.1,
) -> None:
    """
    Keep another process's average CPU at ``percent`` of one core by stopping and
    continuing it (SIGSTOP/SIGCONT), as ``cpulimit`` does; runs until it exits.

    .. code-block:: python

        process = await anyio.open_process(["gzip", "-9", "big.tar"])
        async with anyio.create_task_group() as tg:
            tg.start_soon(throttle_process, process, 30)
            await process.wait()
            tg.cancel_scope.cancel()

    Each ``period`` the process runs for a share of the time and is stopped for the rest.
    The share adapts to what the kernel's accounting (``/proc``) says it really used, so
    a multi-threaded process converges on the target too. ``include_children`` also
    stops, continues and counts its descendants. ``process`` is a pid or anything with a
    ``pid`` (anyio, asyncio and :mod:`subprocess` processes).

    On every way out (the process exits, the caller is cancelled, an error, an
    interrupt) the process is left running, never stopped. A process that cannot be
    signalled (another user's) is a :class:`ThrottlekitError` saying so. Linux only
    (it reads ``/proc``).
    """
    pid = process if isinstance(process, int) and not isinstance(process, bool) else None
    if pid is None:
        pid = getattr(process, "pid", None)
        if not isinstance(pid, int):
            raise TypeError(f"process must be a pid or have a pid, got {process!r}")
    fraction = _check_percent(percent) / 100.0
    period = _check_window(period)
    if not Path("/proc/self/stat").exists():
        raise ThrottlekitError("throttle_process needs Linux's /proc")
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return  # already gone: nothing to throttle
    except PermissionError as e:
        raise ThrottlekitError(f"cannot signal process {pid}: {e.strerror}") from e

    def group() -> list[int]:
        return [pid, *_children(pid)] if include_children else [pid]

    def used(pids: list[int]) -> float | None:
        total = 0.0
        main = _proc_cpu(pid)
        if main is None:
            return None
        total += main
        for child in pids[1:]:
            total += _proc_cpu(child) or 0.0
        return total

    duty = min(1.0, fraction)
    pids = group()
    history: deque[tuple[float, float]] = deque()
    while True:
        cpu = used(pids)
        if cpu is None:
            return
        now = time.monotonic()
        history.append((now, cpu))
        while len(history) > 2 and now - history[1][0] >= 1.0:
            history.popleft()
        t0, c0 = history[0]
        if now - t0 >= 3 * period:  # adapt: run longer if under the target, shorter if over
            measured = (cpu - c0) / (now - t0)
            if measured > 0:
                duty = min(1.0, max(0.02, duty * (fraction / measured) ** 0.5))
            elif duty < 1.0:
                duty = min(1.0, duty * 1.5)
        run_for = duty * period
        await anyio.sleep(run_for)
        if duty >= 1.0:
            continue
        if include_children:
            pids = group()
        try:  # continued on every way out, even if stopping failed half-way
            _signal_all(pids, signal.SIGSTOP)
            await anyio.sleep(period - run_for)
        finally:
            _signal_all(pids, signal.SIGCONT)


# -- priorities -----------------------------------------------------------------------------

IoClass = Literal["none", "realtime", "best-effort", "idle"]
_IO_CLASSES: Final[dict[str, int]] = {"none": 0, "realtime": 1, "best-effort": 2, "idle": 3}
_IO_NAMES: Final = {v: k for k, v in _IO_CLASSES.items()}
# (ioprio_set, ioprio_get) by machine
_IOPRIO_SYSCALLS: Final[dict[str, tuple[int, int]]] = {
    "x86_64": (251, 252),
    "aarch64": (30, 31),
    "arm64": (30, 31),
    "riscv64": (30, 31),
    "i386": (289, 290),
    "i686": (289, 290),
    "armv7l": (314, 315),
    "armv6l": (314, 315),
}
_IOPRIO_WHO_PROCESS: Final = 1


@frozen(kw_only=True)
class PrioritySettings:
    """
    A process's CPU and I/O priority: what :func:`lower_priority` found before changing
    them (to restore later) and what it could not set (``unsupported``).
    """

    nice: int
    io_class: IoClass | None
    io_level: int | None
    unsupported: tuple[str, ...] = ()


@functools.cache
def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:  # pragma: no cover - no C library to load
        return None


def _ioprio(tid: int, value: int | None) -> int | None:
    """Read (value None) or set a thread's I/O priority; None when unsupported."""
    calls = _IOPRIO_SYSCALLS.get(platform.machine())
    libc = _libc()
    if calls is None or libc is None:
        return None
    if value is None:
        result = libc.syscall(calls[1], _IOPRIO_WHO_PROCESS, tid)
    else:
        result = libc.syscall(calls[0], _IOPRIO_WHO_PROCESS, tid, value)
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return int(result)


def _threads() -> list[int]:
    try:
        return [int(t) for t in os.listdir("/proc/self/task")]
    except FileNotFoundError:  # pragma: no cover - not Linux
        return [os.getpid()]


def lower_priority(
    nice: int = 10, io_class: IoClass | str = "best-effort", io_level: int | None = None
) -> PrioritySettings:
    """
    Lower this process's CPU priority (``nice``) and I/O priority, for every thread, and
    return the settings it had before.

    The defaults are Avamar's: nice 10, best-effort I/O at level ``(nice + 20) // 5`` (what
    the kernel derives from the nice value anyway; 6 for nice 10). ``io_class`` is
    ``"best-effort"``, ``"idle"`` (only when the disk is otherwise idle), ``"realtime"``
    (needs privileges) or ``"none"`` (follow nice); ``io_level`` is 0 (highest) to 7.

    Linux applies nice and I/O priority per thread, so each of the process's threads is
    changed, not only the caller. Raising a priority again usually needs privileges
    (``PermissionError``). Where I/O priority is not available (not Linux, an unknown
    architecture), the nice value is still set and the result's ``unsupported`` says
    ``"io_priority"``: it never claims what it did not do.
    """
    io_value = _check_priority(nice, io_class, io_level)
    before = _current_priority()
    tids = _threads()
    for tid in tids:
        os.setpriority(os.PRIO_PROCESS, tid, nice)
    if "io_priority" not in before.unsupported:
        for tid in tids:
            _ioprio(tid, io_value)
    return before


def _check_priority(nice: object, io_class: object, io_level: object) -> int:
    """Validate the settings; returns the ioprio value to set."""
    if isinstance(nice, bool) or not isinstance(nice, int):
        raise TypeError(f"nice must be an int, got {type(nice).__name__}")
    if not -20 <= nice <= 19:
        raise ValueError(f"nice must be between -20 and 19, got {nice}")
    if not isinstance(io_class, str) or io_class not in _IO_CLASSES:
        raise ValueError(f"io_class must be one of {', '.join(_IO_CLASSES)}, got {io_class!r}")
    if io_level is None:
        io_level = (nice + 20) // 5
    if isinstance(io_level, bool) or not isinstance(io_level, int) or not 0 <= io_level <= 7:
        raise ValueError(f"io_level must be an int from 0 to 7, got {io_level!r}")
    klass = _IO_CLASSES[io_class]
    return (klass << 13) | (0 if klass in (0, 3) else io_level)


def _apply_priority_in_child(nice: int, io_value: int) -> None:
    """For a freshly forked, single-threaded child (``preexec_fn``): set both, or fail."""
    os.setpriority(os.PRIO_PROCESS, 0, nice)
    with contextlib.suppress(OSError):  # no ioprio here: nice alone still applies
        _ioprio(0, io_value)


def _current_priority() -> PrioritySettings:
    nice = os.getpriority(os.PRIO_PROCESS, 0)
    try:
        value = _ioprio(threading.get_native_id(), None)
    except OSError:
        value = None
    if value is None:
        return PrioritySettings(
            nice=nice, io_class=None, io_level=None, unsupported=("io_priority",)
        )
    klass = value >> 13
    return PrioritySettings(
        nice=nice,
        io_class=_IO_NAMES.get(klass, "none"),  # type: ignore[arg-type]
        io_level=(value & 0x1FFF) if klass in (1, 2) else None,
    )


# -- how many CPUs ----------------------------------------------------------------------------


def _quota_v2(root: Path, path: str) -> float | None:
    best: float | None = None
    current = (root / path.lstrip("/")).resolve()
    root = root.resolve()
    while True:
        try:
            quota, period = (current / "cpu.max").read_text().split()[:2]
        except (FileNotFoundError, ValueError, PermissionError):
            pass
        else:
            if quota != "max":
                limit = int(quota) / int(period)
                best = limit if best is None else min(best, limit)
        if current == root or root not in current.parents:
            return best
        current = current.parent


def _quota_v1(root: Path, path: str) -> float | None:
    for name in ("cpu,cpuacct", "cpu"):
        base = root / name / path.lstrip("/")
        for directory in (base, root / name):
            try:
                quota = int((directory / "cpu.cfs_quota_us").read_text())
                period = int((directory / "cpu.cfs_period_us").read_text())
            except (FileNotFoundError, ValueError, PermissionError):
                continue
            if quota > 0 and period > 0:
                return quota / period
            return None
    return None


def _available_cpus(affinity: int, cgroup_text: str, root: Path) -> float:
    limits: list[float] = [float(affinity)]
    for line in cgroup_text.splitlines():
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hierarchy == "0" and controllers == "":
            quota = _quota_v2(root, path)
        elif "cpu" in controllers.split(","):
            quota = _quota_v1(root, path)
        else:
            continue
        if quota is not None:
            limits.append(quota)
    return min(limits)


def available_cpus() -> float:
    """
    How many CPUs this process can really use: the CPUs it may run on (scheduler
    affinity), capped by a cgroup CPU quota (v2 ``cpu.max``, v1 ``cfs_quota_us``) when one
    applies, as in a container with ``--cpus=1.5``. A float, since quotas are.

    Size worker pools with it rather than :func:`os.cpu_count`, which counts the machine's
    CPUs, not the container's.
    """
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        affinity = os.cpu_count() or 1
    try:
        cgroup_text = Path("/proc/self/cgroup").read_text()
    except FileNotFoundError:  # pragma: no cover - not Linux
        return float(affinity)
    return _available_cpus(affinity, cgroup_text, Path("/sys/fs/cgroup"))
