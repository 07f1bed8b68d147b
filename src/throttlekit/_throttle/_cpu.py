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
import errno
import functools
import math
import os
import platform
import signal
import socket
import subprocess
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

from .._checks import (
    check_callable,
    check_int,
    check_number,
    check_optional_int,
    check_seconds,
)
from .._errors import ProcessControlError
from ._hostcancel import host_cancel_check, sleep_checking

__all__ = [
    "CGROUP_MIN_PERCENT",
    "CgroupPlace",
    "CpuCgroup",
    "CpuGovernor",
    "CpuGovernorStatistics",
    "PrioritySettings",
    "apply_priority_in_child",
    "available_cpus",
    "cgroup_place",
    "check_process_priority",
    "cpu_sleep",
    "load_libc",
    "lower_priority",
    "throttle_process",
]  # cpu_sleep is the sans-I/O maths, public here but not from throttlekit


def _check_percent(percent: object) -> float:
    value = check_number(percent, "percent")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(
            f"percent must be > 0 and finite (of one core; 250 is two and a half cores), "
            f"got {percent!r}"
        )
    return value


def _check_window(window: object, name: str = "window") -> float:
    return check_seconds(window, name, allow_zero=False)


def cpu_sleep(cpu: float, wall: float, percent: float) -> float:
    """
    Seconds to sleep so that ``cpu`` seconds used over ``wall`` seconds average at most
    ``percent`` of one core: ``cpu / (wall + sleep) <= percent / 100``.

    >>> cpu_sleep(cpu=0.5, wall=1.0, percent=25)   # 0.5 s of CPU needs 2 s of wall time
    1.0
    >>> cpu_sleep(cpu=0.1, wall=1.0, percent=25)   # already under: no sleep
    0.0
    """
    return _cpu_sleep(
        check_seconds(cpu, "cpu", timedelta_ok=False),
        check_seconds(wall, "wall", timedelta_ok=False),
        _check_percent(percent),
    )


def _cpu_sleep(cpu: float, wall: float, percent: float) -> float:
    """:func:`cpu_sleep` without the checks, for the governor's inner loop."""
    return max(0.0, cpu * 100.0 / percent - wall)


@frozen(kw_only=True)
class CpuGovernorStatistics:
    """A snapshot of a :class:`CpuGovernor`: its target and what it measured and did."""

    #: The target, in percent of one core.
    percent: float
    #: Seconds of history each checkpoint averages over.
    window: float
    #: How many checkpoints were made.
    checkpoints: int
    #: Seconds slept in checkpoints, in all.
    slept: float
    #: CPU time used since the governor's first checkpoint, in seconds.
    cpu_seconds: float
    #: Wall time since the governor's first checkpoint, in seconds.
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
            delay = _cpu_sleep(max(0.0, cpu - cpu0), max(0.0, wall - wall0), percent)
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

    >>> import zlib
    >>> governor = CpuGovernor(30)              # at most 30% of one core, on average
    >>> for chunk in [bytes(1 << 20)] * 4:
    ...     _ = zlib.compress(chunk)
    ...     governor.checkpoint_blocking()      # sleeps as needed
    >>> stats = governor.statistics()
    >>> stats.checkpoints, stats.slept > 0      # it slept to stay near 30%
    (4, True)

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
        if not isinstance(scope, str):
            raise TypeError(f"scope must be 'process' or 'thread', got {scope!r}")
        if scope not in ("process", "thread"):
            raise ValueError(f"scope must be 'process' or 'thread', got {scope!r}")
        check_callable(clock, "clock", optional=True)
        check_callable(cpu_clock, "cpu_clock", optional=True)
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
        """
        :meth:`checkpoint` for threads: block the calling thread as long as needed.

        In a worker thread of :func:`anyio.to_thread.run_sync` (asyncio or trio) it is a
        cancellation point too: once the task that started the thread is cancelled, the
        call raises that cancellation (before it sleeps, and while it sleeps, which it
        does in slices of at most 50 ms), so sync work that calls it stops at its next
        checkpoint instead of running to its end. In other threads it only sleeps.
        """
        check = host_cancel_check()
        if check is not None:
            check()  # raises at once if the host is already cancelled
        delay = self._advise()
        if delay > 0:
            sleep_checking(delay, check)

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


_MIN_DUTY: Final = 0.02  # the shortest run, as a share of the period, above 8% targets
_MIN_RUN: Final = 0.002  # seconds: the shortest run between a continue and a stop
_TICKS: Final = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_PID_MAX: Final = 2**31 - 1  # the largest value a C pid_t holds


def _check_process(process: object) -> int | None:
    """The pid to throttle; None when ``process`` is an object that says it has exited."""
    if isinstance(process, bool) or not isinstance(process, int):
        pid = getattr(process, "pid", None)
        if isinstance(pid, bool) or not isinstance(pid, int):
            raise TypeError(
                f"process must be a pid (int) or a process object with a pid, got {process!r}"
            )
        if getattr(process, "returncode", None) is not None:
            return None  # reaped: its pid may already belong to someone else
    else:
        pid = process
    if not 1 <= pid <= _PID_MAX:
        raise ValueError(
            f"process must be a pid from 1 to {_PID_MAX}, got {pid} (0 and negative "
            "numbers name process groups, which throttle_process does not take)"
        )
    if pid == os.getpid():
        raise ValueError(
            f"process must be another process, got this one ({pid}): a stopped process "
            "cannot continue itself; use CpuGovernor to pace your own code"
        )
    return pid


def _check_flag(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return value


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


def _has_proc() -> bool:
    return Path("/proc/self/stat").exists()


class _Target:
    """
    The process being throttled, signalled through a pidfd where the kernel has them, so
    that a signal can never reach another process that reused the pid after it exited.
    """

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.pidfd = -1
        with contextlib.suppress(AttributeError, OSError):  # pidfds: Linux 5.3
            self.pidfd = os.pidfd_open(pid)

    def signal(self, sig: int) -> None:
        """Send ``sig``; ProcessLookupError if it is gone (PermissionError if not ours)."""
        if self.pidfd >= 0:
            signal.pidfd_send_signal(self.pidfd, sig)
        else:
            os.kill(self.pid, sig)

    def close(self) -> None:
        if self.pidfd >= 0:
            os.close(self.pidfd)
            self.pidfd = -1


# The watchdog: a tiny separate process that continues the target if we die while it
# is stopped. It learns of our death when its end of a socket pair reads end-of-file,
# which the kernel makes happen however we die (SIGKILL included) and whichever thread
# throttles: the socket belongs to the process, not to a thread (a parent-death signal,
# PR_SET_PDEATHSIG, fires when the forking *thread* ends). It runs in its own session,
# so Ctrl-C and a kill of our process group do not reach it, and exits by itself when
# the target exits. Lines it reads: "+PID" / "-PID" add or remove a descendant to
# continue too (include_children).
_WATCHDOG_SCRIPT: Final = """\
import os, select, signal, sys
sock, pidfd, pid = (int(a) for a in sys.argv[1:4])
extra = set()
def leave(signum, frame):
    raise SystemExit(0)
for s in (signal.SIGHUP, signal.SIGINT, signal.SIGTERM):
    signal.signal(s, leave)
def alive():
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        pass
    return True
try:
    watched = [sock] + ([pidfd] if pidfd >= 0 else [])
    pending = b""
    while True:
        ready = select.select(watched, [], [], None if pidfd >= 0 else 1.0)[0]
        if (pidfd >= 0 and pidfd in ready) or (pidfd < 0 and not alive()):
            break
        if sock in ready:
            data = os.read(sock, 4096)
            if not data:
                break
            *lines, pending = (pending + data).split(b"\\n")
            for line in lines:
                if line[:1] == b"+":
                    extra.add(int(line[1:]))
                elif line[:1] == b"-":
                    extra.discard(int(line[1:]))
finally:
    try:
        if pidfd >= 0:
            signal.pidfd_send_signal(pidfd, signal.SIGCONT)
        else:
            os.kill(pid, signal.SIGCONT)
    except OSError:
        pass
    for p in extra:
        try:
            os.kill(p, signal.SIGCONT)
        except OSError:
            pass
"""


class _Watchdog:
    """Our end of the watchdog: start it, tell it about descendants, stop it."""

    def __init__(self, target: _Target) -> None:
        self._target = target
        self._told: set[int] = set()
        self._ours: socket.socket | None = None
        self._popen: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._popen.pid if self._popen is not None else None

    def ensure(self, pids: list[int]) -> None:
        """Make sure a live watchdog knows every pid in ``pids``, before they are stopped."""
        if self._popen is None or self._popen.poll() is not None:
            self._start()
        extra = set(pids) - {self._target.pid}
        lines = [f"+{p}\n" for p in extra - self._told]
        lines += [f"-{p}\n" for p in self._told - extra]
        if lines and not self._send("".join(lines).encode()):
            self._start()  # it died just now: a new one, told everything
            self._send("".join(f"+{p}\n" for p in extra).encode())
        self._told = extra

    def _start(self) -> None:
        self.close()
        ours, theirs = socket.socketpair()
        fds = [theirs.fileno()] + ([self._target.pidfd] if self._target.pidfd >= 0 else [])
        args = (theirs.fileno(), self._target.pidfd, self._target.pid)
        try:
            self._popen = subprocess.Popen(
                [sys.executable, "-I", "-S", "-c", _WATCHDOG_SCRIPT, *map(str, args)],
                pass_fds=fds,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        except (OSError, ValueError) as e:
            ours.close()
            raise ProcessControlError(
                getattr(e, "errno", None) or errno.ENOEXEC,
                f"cannot start the watchdog that continues process {self._target.pid} if "
                f"this process dies ({sys.executable or 'no sys.executable'}: {e}); "
                "the process was not stopped",
            ) from e
        finally:
            theirs.close()  # only the watchdog may hold it, or our death would go unseen
        ours.setblocking(False)
        self._ours = ours
        self._told = set()

    def _send(self, data: bytes) -> bool:
        assert self._ours is not None
        try:
            self._ours.send(data, socket.MSG_NOSIGNAL)
        except (BrokenPipeError, ConnectionResetError):
            return False
        except BlockingIOError:  # pragma: no cover - a watchdog that reads nothing
            return False
        return True

    def close(self) -> None:
        """Stop the watchdog (the target is already continued) and reap it."""
        if self._popen is not None:
            # Killed before our end closes, so it does not send a needless SIGCONT; a
            # SIGKILLed process is gone at once, so the wait does not block.
            self._popen.kill()
            self._popen.wait()
            self._popen = None
        if self._ours is not None:
            self._ours.close()
            self._ours = None


def _resume(target: _Target, pids: list[int]) -> None:
    """SIGCONT the target and ``pids``; nothing more can be done for one that is gone."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        target.signal(signal.SIGCONT)
    for pid in pids:
        if pid != target.pid:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGCONT)


def _suspend(target: _Target, pids: list[int]) -> None:
    """SIGSTOP ``pids``; a descendant that is gone or not ours is skipped."""
    for pid in pids:
        if pid == target.pid:
            try:
                target.signal(signal.SIGSTOP)
            except PermissionError as e:  # it exec'd a set-user-ID program, say
                raise ProcessControlError(
                    e.errno, f"cannot signal process {pid}: {e.strerror}"
                ) from e
            except ProcessLookupError:
                pass
        else:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGSTOP)


async def throttle_process(
    process: int | _HasPid,
    percent: float,
    *,
    include_children: bool = False,
    period: float | timedelta = 0.1,
) -> None:
    """
    Keep another process's average CPU at ``percent`` of one core by stopping and
    continuing it (SIGSTOP/SIGCONT), as ``cpulimit`` does; runs until it exits.

    >>> import sys, anyio
    >>> async def main():
    ...     busy = [sys.executable, "-c", "sum(range(10_000_000))"]   # e.g. gzip -9 big.tar
    ...     async with await anyio.open_process(busy) as process:
    ...         async with anyio.create_task_group() as tg:
    ...             tg.start_soon(throttle_process, process, 30)
    ...             return await process.wait()    # throttle_process returns when it exits
    >>> anyio.run(main)
    0

    Each ``period`` (seconds or a :class:`~datetime.timedelta`) the process runs for a
    share of the time and is stopped for the rest. The share adapts to what the kernel's
    accounting (``/proc``) says it really used, so a multi-threaded process converges on
    the target too. ``include_children`` also stops, continues and counts its
    descendants. ``process`` is a pid or anything with a ``pid`` (anyio, asyncio and
    :mod:`subprocess` processes; one whose ``returncode`` is set has exited, and the call
    returns at once).

    The process is left running, never stopped, on every way out: when it exits, when
    the caller is cancelled, on an error or an interrupt, and even when this process is
    killed outright (SIGKILL): before the first stop a small watchdog process is
    started (``python -I -S -c ...``, in its own session) that continues the target as
    soon as this process is gone, and that exits when the target exits or when this call
    returns. A process that cannot be signalled (another user's) or a watchdog that
    cannot start is a :class:`ProcessControlError`, raised before anything is stopped.
    Linux only (it reads ``/proc``).
    """
    pid = _check_process(process)
    fraction = _check_percent(percent) / 100.0
    period = _check_window(period, "period")
    children = _check_flag("include_children", include_children)
    if not _has_proc():
        raise ProcessControlError(errno.ENOSYS, "throttle_process needs Linux's /proc")
    if pid is None:
        return  # already exited: nothing to throttle
    target = _Target(pid)
    watchdog = _Watchdog(target)
    try:
        try:
            target.signal(0)
        except ProcessLookupError:
            return  # already gone: nothing to throttle
        except PermissionError as e:
            raise ProcessControlError(e.errno, f"cannot signal process {pid}: {e.strerror}") from e
        await _duty_cycle(target, watchdog, fraction, period, children)
    finally:
        watchdog.close()
        target.close()


async def _duty_cycle(
    target: _Target, watchdog: _Watchdog, fraction: float, period: float, children: bool
) -> None:
    pid = target.pid
    ours = os.getpid()

    def group() -> list[int]:
        if not children:
            return [pid]
        return [pid, *(p for p in _children(pid) if p not in (ours, watchdog.pid))]

    def used(pids: list[int]) -> float | None:
        main = _proc_cpu(pid)
        if main is None:
            return None
        return main + sum(_proc_cpu(child) or 0.0 for child in pids[1:])

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
                floor = min(_MIN_DUTY, fraction / 4)
                duty = min(1.0, max(floor, duty * (fraction / measured) ** 0.5))
            elif duty < 1.0:
                duty = min(1.0, duty * 1.5)
        # Below a couple of milliseconds a run is mostly signalling: under 2% of a period,
        # runs stay that long and the stops grow instead, so the average still holds.
        run_for = max(duty * period, _MIN_RUN) if duty < 1.0 else period
        await anyio.sleep(run_for)
        if duty >= 1.0:
            continue
        if children:
            pids = group()
        watchdog.ensure(pids)  # before the stop: if we die while it lasts, it continues
        try:  # continued on every way out, even if stopping failed half-way
            _suspend(target, pids)
            await anyio.sleep(run_for * (1.0 - duty) / duty)
        finally:
            _resume(target, pids)


# -- a cgroup with a CPU quota (the kernel's cap) -------------------------------------------

_CG_PREFIX: Final = "throttlekit-run-"
_CG_PERIOD: Final = 100_000  # microseconds: the kernel's default period
_CG_MAX_PERIOD: Final = 1_000_000
_CG_MIN_QUOTA: Final = 1_000
CGROUP_MIN_PERCENT: Final = 100.0 * _CG_MIN_QUOTA / _CG_MAX_PERIOD  # 0.1% of one core


@frozen(kw_only=True)
class CgroupPlace:
    """Where a cgroup with a CPU quota can be made: in ``parent``, for cgroup ``version``."""

    version: Literal[1, 2]
    parent: Path  # the directory the new cgroup is made in
    origin: Path  # this process's own cgroup: processes left at the end go back there


def _unescape_mount(text: str) -> str:
    """Mount points in mountinfo escape space, tab, newline and backslash as octal."""
    out, i = [], 0
    while i < len(text):
        if text[i] == "\\" and text[i + 1 : i + 4].isdigit():
            out.append(chr(int(text[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def _cgroup_mounts(mountinfo: str) -> tuple[tuple[str, str] | None, tuple[str, str] | None]:
    """(root, mount point) of the cgroup v2 mount and of the v1 mount holding ``cpu``."""
    v2 = v1 = None
    for line in mountinfo.splitlines():
        left, sep, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if not sep or len(fields) < 5 or len(tail) < 3:
            continue
        where = (_unescape_mount(fields[3]), _unescape_mount(fields[4]))
        if tail[0] == "cgroup2" and v2 is None:
            v2 = where
        elif tail[0] == "cgroup" and "cpu" in tail[2].split(",") and v1 is None:
            v1 = where
    return v2, v1


def _cgroup_dir(mount: tuple[str, str], path: str) -> Path | None:
    """The directory of cgroup ``path`` (from /proc/self/cgroup) under ``mount``."""
    root, point = mount
    root = root.rstrip("/")
    if path != root and not path.startswith(root + "/"):
        return None  # our cgroup is not visible through this mount
    return Path(point) / path[len(root) :].lstrip("/")


def _words(path: Path) -> list[str]:
    try:
        return path.read_text().split()
    except OSError:
        return []


def _find_cgroup_place(mountinfo: str, cgroup_text: str) -> CgroupPlace | str:
    """
    Where this process may make a cgroup with a CPU quota, or why it may not (a sentence).

    cgroup v2: a directory whose ``cgroup.subtree_control`` enables ``cpu`` for its
    children and that this process may write to: its own cgroup, or else the nearest
    parent (its own cgroup usually holds processes, and v2 enables controllers only where
    it holds none). No controller is enabled anywhere, so nothing changes for other
    cgroups. cgroup v1: its own cgroup in the hierarchy that has ``cpu``.
    """
    v2_mount, v1_mount = _cgroup_mounts(mountinfo)
    reasons = []
    for line in cgroup_text.splitlines():
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hierarchy == "0" and controllers == "" and v2_mount is not None:
            own = _cgroup_dir(v2_mount, path)
            if own is None:
                reasons.append("cgroup v2: this process's cgroup is not mounted here")
                continue
            top = Path(v2_mount[1])
            directory = own
            while True:
                if (
                    "cpu" in _words(directory / "cgroup.subtree_control")
                    and os.access(directory, os.W_OK)  # to make the cgroup
                    and os.access(directory / "cgroup.procs", os.W_OK)  # to move into it
                ):
                    return CgroupPlace(version=2, parent=directory, origin=own)
                if directory == top or top not in directory.parents:
                    break
                directory = directory.parent
            reasons.append(
                f"cgroup v2: the cpu controller is not enabled for the children of {own} "
                "or of a parent this process may write to (cgroup.subtree_control)"
            )
        elif "cpu" in controllers.split(",") and v1_mount is not None:
            own = _cgroup_dir(v1_mount, path)
            if own is None:
                reasons.append("cgroup v1: this process's cpu cgroup is not mounted here")
            elif not os.access(own, os.W_OK):
                reasons.append(f"cgroup v1: this process may not write to {own}")
            else:
                return CgroupPlace(version=1, parent=own, origin=own)
    if not reasons:
        reasons.append("no cgroup hierarchy with the cpu controller is mounted")
    return "; ".join(reasons)


def cgroup_place() -> CgroupPlace | str:
    """:func:`_find_cgroup_place` for this process (a reason when not Linux)."""
    try:
        mountinfo = Path("/proc/self/mountinfo").read_text()
        cgroup_text = Path("/proc/self/cgroup").read_text()
    except OSError:
        return "no /proc/self/mountinfo or /proc/self/cgroup (not Linux)"
    return _find_cgroup_place(mountinfo, cgroup_text)


def _cgroup_quota(percent: float) -> tuple[int, int]:
    """(quota, period) in microseconds for ``percent`` of one core; at least 0.1%."""
    if percent < CGROUP_MIN_PERCENT:
        raise ValueError(
            f"percent must be at least {CGROUP_MIN_PERCENT:g} for a cgroup quota, got {percent!r}"
        )
    period = _CG_PERIOD
    if percent * period / 100 < _CG_MIN_QUOTA:  # a longer period for a tiny share
        period = min(_CG_MAX_PERIOD, math.ceil(_CG_MIN_QUOTA * 100 / percent))
    return max(_CG_MIN_QUOTA, round(percent * period / 100)), period


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


class CpuCgroup:
    """
    A cgroup made for one command, with its CPU quota: the kernel holds every process in
    it (threads and children alike) to ``percent`` of one core, exactly, without ever
    stopping them.

    Made in :func:`cgroup_place`'s directory as ``throttlekit-run-PID-XXXXXX``. A process
    joins it with :meth:`join_in_child` between fork and exec (so its children are born
    inside); :meth:`close` moves any process still in it back to this process's own
    cgroup and removes it. Empty cgroups left by a throttlekit that was killed outright
    are removed when the next one is made.
    """

    def __init__(self, place: CgroupPlace, percent: float) -> None:
        self.place = place
        self.quota, self.period = _cgroup_quota(percent)
        _sweep_stale(place.parent)
        self.path = place.parent / f"{_CG_PREFIX}{os.getpid()}-{os.urandom(3).hex()}"
        self._procs = -1
        os.mkdir(self.path)
        try:
            if place.version == 2:
                (self.path / "cpu.max").write_text(f"{self.quota} {self.period}\n")
            else:
                (self.path / "cpu.cfs_period_us").write_text(f"{self.period}\n")
                (self.path / "cpu.cfs_quota_us").write_text(f"{self.quota}\n")
            self._procs = os.open(self.path / "cgroup.procs", os.O_WRONLY | os.O_CLOEXEC)
        except BaseException:
            self._remove()
            raise

    def describe(self) -> str:
        """The setting, as the kernel spells it, and where."""
        if self.place.version == 2:
            setting = f"cpu.max {self.quota} {self.period}"
        else:
            setting = f"cpu.cfs_quota_us {self.quota} / cpu.cfs_period_us {self.period}"
        return f"cgroup v{self.place.version} {setting} in {self.path}"

    def join_in_child(self) -> None:
        """Move the calling process in (for a forked child, before it execs)."""
        os.write(self._procs, b"0")

    def pids(self) -> list[int]:
        return [int(word) for word in _words(self.path / "cgroup.procs")]

    def close(self) -> list[int]:
        """
        Move every process still in the cgroup back to the origin and remove the cgroup;
        returns the pids that could not be moved (the cgroup then stays, with them in it).
        """
        if self._procs >= 0:
            os.close(self._procs)
            self._procs = -1
        stuck: list[int] = []
        origin = self.place.origin / "cgroup.procs"
        for _ in range(_CG_TRIES):
            stuck = []
            for pid in self.pids():
                try:
                    origin.write_text(f"{pid}\n")
                except ProcessLookupError:
                    pass
                except OSError:
                    stuck.append(pid)
            if stuck:
                break
            if self._remove():
                return []
            time.sleep(0.01)  # an exiting process is still counted for a moment
        return stuck or self.pids()

    def _remove(self) -> bool:
        try:
            os.rmdir(self.path)
        except FileNotFoundError:
            return True
        except OSError:
            return False
        return True


_CG_TRIES: Final = 100


def _sweep_stale(parent: Path) -> None:
    """Remove empty cgroups of ours whose throttlekit is gone (killed outright)."""
    try:
        entries = list(parent.glob(f"{_CG_PREFIX}*"))
    except OSError:
        return
    for entry in entries:
        pid = entry.name[len(_CG_PREFIX) :].partition("-")[0]
        if pid.isdigit() and not _pid_alive(int(pid)):
            with contextlib.suppress(OSError):  # not empty: its processes keep the cap
                os.rmdir(entry)


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
    them (to restore later) and what it could not set.
    """

    #: The nice value.
    nice: int
    #: The I/O scheduling class (``"none"``, ``"realtime"``, ``"best-effort"`` or
    #: ``"idle"``); ``None`` where I/O priority is not available.
    io_class: IoClass | None
    #: The I/O level, 0 (highest) to 7; ``None`` for a class that has none, or where I/O
    #: priority is not available.
    io_level: int | None
    #: What could not be read or set here, such as ``"io_priority"`` (not Linux, an
    #: unknown architecture): it never claims what it did not do.
    unsupported: tuple[str, ...] = ()


@functools.cache
def load_libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:  # pragma: no cover - no C library to load
        return None


def _ioprio(tid: int, value: int | None) -> int | None:
    """Read (value None) or set a thread's I/O priority; None when unsupported."""
    calls = _IOPRIO_SYSCALLS.get(platform.machine())
    libc = load_libc()
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
    changed, not only the caller; a thread that ends during the call is skipped (it is
    gone, not an error), and one that starts during it is changed too. Raising a
    priority again usually needs privileges (``PermissionError``). Where I/O priority is
    not available (not Linux, an unknown architecture), the nice value is still set and
    the result's ``unsupported`` says ``"io_priority"``: it never claims what it did not
    do. Settings are checked before anything changes: a wrong type is a
    :class:`TypeError`, a value out of range (or an ``io_level`` for the ``"idle"`` or
    ``"none"`` class, which have none) a :class:`ValueError`.
    """
    io_value = check_process_priority(nice, io_class, io_level)
    before = _current_priority()
    io = "io_priority" not in before.unsupported
    done: set[int] = set()
    # Threads come and go meanwhile: one that ended is simply skipped, and the listing is
    # repeated until it shows no thread left to change (one that started from a thread
    # not yet changed inherited the old values).
    for _ in range(_PASSES):
        todo = [tid for tid in _threads() if tid not in done]
        if not todo:
            break
        for tid in todo:
            _set_thread_priority(tid, nice, io_value if io else None)
            done.add(tid)
    return before


_PASSES: Final = 20
_VANISHED: Final = (errno.ESRCH, errno.ENOENT)


def _set_thread_priority(tid: int, nice: int, io_value: int | None) -> None:
    """Set one thread's nice and I/O priority; a thread that has ended is not an error."""
    try:
        os.setpriority(os.PRIO_PROCESS, tid, nice)
        if io_value is not None:
            _ioprio(tid, io_value)
    except OSError as e:
        if e.errno not in _VANISHED:
            raise


def check_process_priority(nice: object, io_class: object, io_level: object) -> int:
    """Validate the settings; returns the ioprio value to set."""
    nice = check_int(nice, "nice", minimum=-20, maximum=19)
    if not isinstance(io_class, str):
        raise TypeError(f"io_class must be a string, got {type(io_class).__name__}")
    if io_class not in _IO_CLASSES:
        raise ValueError(f"io_class must be one of {', '.join(_IO_CLASSES)}, got {io_class!r}")
    klass = _IO_CLASSES[io_class]
    if io_level is None:
        io_level = (nice + 20) // 5
    else:
        io_level = check_optional_int(io_level, "io_level")
        if klass not in (1, 2):
            raise ValueError(
                f"io_level applies to the realtime and best-effort classes only, not {io_class!r}"
            )
    io_level = check_int(io_level, "io_level", minimum=0, maximum=7)
    return (klass << 13) | (0 if klass in (0, 3) else io_level)


def apply_priority_in_child(nice: int, io_value: int) -> None:
    """For a freshly forked, single-threaded child (``preexec_fn``): set both, or fail."""
    os.setpriority(os.PRIO_PROCESS, 0, nice)
    try:
        _ioprio(0, io_value)
    except OSError as e:
        if e.errno == errno.EPERM:  # a class it may not take (realtime): refuse to start
            raise
        # no I/O priority on this kernel: nice alone still applies


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
