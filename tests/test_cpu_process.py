"""
throttle_process on real, short-lived child processes (real time, asyncio only).

Every wait is bounded (``anyio.fail_after`` or a deadline loop), so a regression fails
instead of hanging; nothing asserts a duration, only states: stopped or not, exit codes,
stops and continues paired, helper processes gone.
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import anyio
import pytest

import throttlekit._throttle._cpu as cpu_module
from _procs import WAIT, state, wait_until
from throttlekit import ProcessControlError, ThrottlekitError, throttle_process
from throttlekit._throttle._cpu import _proc_cpu

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs /proc"),
]


BUSY = [sys.executable, "-c", "while True: pass"]


def watchdogs(parent: int) -> list[int]:
    """Live watchdog processes started by ``parent``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except (FileNotFoundError, ProcessLookupError):
            continue
        if int(fields[1]) == parent and fields[0] != "Z" and argv[1:4] == [b"-I", b"-S", b"-c"]:
            found.append(int(entry.name))
    return found


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # real time and real processes: one backend is enough


@pytest.fixture
def signals(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every stop and continue throttle_process sends, in order."""
    sent: list[str] = []
    suspend, resume = cpu_module._suspend, cpu_module._resume

    def record_suspend(target: cpu_module._Target, pids: list[int]) -> None:
        sent.append("STOP")
        suspend(target, pids)

    def record_resume(target: cpu_module._Target, pids: list[int]) -> None:
        sent.append("CONT")
        resume(target, pids)

    monkeypatch.setattr(cpu_module, "_suspend", record_suspend)
    monkeypatch.setattr(cpu_module, "_resume", record_resume)
    return sent


@pytest.fixture
def busy() -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen(BUSY)
    yield process
    process.kill()
    process.wait(WAIT)


async def test_throttled_child_is_never_left_stopped(
    signals: list[str], busy: subprocess.Popen[bytes]
) -> None:
    """Cancelled at many moments, mid-run or mid-stop, the child is always left running."""
    for k in range(12):
        with anyio.fail_after(WAIT), anyio.move_on_after(0.05 + 0.013 * k):
            await throttle_process(busy, 20, period=0.02)
        assert state(busy.pid) in ("R", "S")
        assert signals[-1] == "CONT"
        assert watchdogs(os.getpid()) == []  # its watchdog went with it
    assert signals.count("STOP") == signals.count("CONT") > 0
    assert _proc_cpu(busy.pid) is not None


async def test_throttle_returns_when_the_child_exits(signals: list[str]) -> None:
    """throttle_process ends by itself when the process exits, its watchdog too."""
    work = "import time\nend = time.process_time() + 0.2\nwhile time.process_time() < end: pass"
    process = await anyio.open_process([sys.executable, "-c", work])
    with anyio.fail_after(WAIT):
        await throttle_process(process, 50, period=0.02)
        assert await process.wait() == 0  # it ran to its end: stopped, never killed
    assert signals.count("STOP") == signals.count("CONT") > 0
    assert watchdogs(os.getpid()) == []


async def test_a_process_already_gone_returns_at_once(signals: list[str]) -> None:
    """An exited process (a reaped object, or a pid no one has) is not touched."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait(WAIT)
    with anyio.fail_after(WAIT):
        await throttle_process(process, 50)  # returncode set: its pid may be reused
        await throttle_process(process.pid, 50)  # no such process: nothing to do
    assert signals == []
    assert watchdogs(os.getpid()) == []


async def test_throttle_refuses_what_it_cannot_signal(
    monkeypatch: pytest.MonkeyPatch, busy: subprocess.Popen[bytes], signals: list[str]
) -> None:
    """A process this user may not signal is a clear error, not a silent no-op."""

    def refuse(self: cpu_module._Target, sig: int) -> None:
        raise PermissionError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(cpu_module._Target, "signal", refuse)
    with anyio.fail_after(WAIT), pytest.raises(ProcessControlError) as caught:
        await throttle_process(busy, 50)
    assert str(caught.value) == f"cannot signal process {busy.pid}: Operation not permitted"
    assert caught.value.errno == errno.EPERM
    assert isinstance(caught.value, ThrottlekitError)
    assert signals == []


async def test_a_target_that_becomes_unsignallable_is_left_running(
    monkeypatch: pytest.MonkeyPatch, busy: subprocess.Popen[bytes]
) -> None:
    """Losing the right to signal mid-run (a set-user-ID exec) is an error, not a stop."""
    real = cpu_module._Target.signal
    stops = 0

    def refuse_the_third_stop(self: cpu_module._Target, sig: int) -> None:
        nonlocal stops
        if sig == signal.SIGSTOP:
            stops += 1
            if stops == 3:
                raise PermissionError(errno.EPERM, "Operation not permitted")
        real(self, sig)

    monkeypatch.setattr(cpu_module._Target, "signal", refuse_the_third_stop)
    with anyio.fail_after(WAIT), pytest.raises(ProcessControlError, match="cannot signal"):
        await throttle_process(busy, 20, period=0.02)
    assert state(busy.pid) in ("R", "S")
    assert watchdogs(os.getpid()) == []


async def test_no_stop_without_a_watchdog(
    monkeypatch: pytest.MonkeyPatch, busy: subprocess.Popen[bytes], signals: list[str]
) -> None:
    """If the watchdog cannot start, the process is never stopped and the error says why."""
    monkeypatch.setattr(cpu_module.sys, "executable", "/nonexistent/python")
    with anyio.fail_after(WAIT), pytest.raises(ProcessControlError, match="cannot start the"):
        await throttle_process(busy, 20, period=0.02)
    assert signals == []
    assert state(busy.pid) in ("R", "S")


async def test_a_killed_watchdog_is_replaced(busy: subprocess.Popen[bytes]) -> None:
    """The watchdog is checked before every stop: one that died is started again."""
    with anyio.fail_after(WAIT):
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: throttle_process(busy, 20, period=0.02))
            while not (first := watchdogs(os.getpid())):
                await anyio.sleep(0.005)
            os.kill(first[0], signal.SIGKILL)
            while (now := watchdogs(os.getpid())) in ([], first):
                await anyio.sleep(0.005)
            tg.cancel_scope.cancel()
    assert len(now) == 1
    assert state(busy.pid) in ("R", "S")
    assert watchdogs(os.getpid()) == []


async def test_not_linux_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, busy: subprocess.Popen[bytes], signals: list[str]
) -> None:
    """Without /proc there is nothing to measure: an error, not a silent no-op."""
    monkeypatch.setattr(cpu_module, "_has_proc", lambda: False)
    with anyio.fail_after(WAIT), pytest.raises(ProcessControlError, match="needs Linux") as caught:
        await throttle_process(busy, 50)
    assert caught.value.errno == errno.ENOSYS
    assert signals == []


class _NoPid:
    pid = None


class _BoolPid:
    pid = True


@pytest.fixture
def no_signals(monkeypatch: pytest.MonkeyPatch) -> None:
    """
    Make any signal fail the test instead of being sent: should a check regress, a pid
    of 0, -1 or this process must not reach kill() (0 stops our own process group, -1
    every process this user may signal, and stopping ourselves hangs the run).
    """

    def refuse(*args: object) -> None:
        raise AssertionError(f"a signal was sent: {args}")

    monkeypatch.setattr(cpu_module.os, "kill", refuse)
    monkeypatch.setattr(cpu_module.signal, "pidfd_send_signal", refuse)


BUSY_PID = -999  # stands for the busy child's pid in the table below


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "fragment"),
    [
        (("gzip", 50), {}, TypeError, "process must be a pid"),
        ((True, 50), {}, TypeError, "process must be a pid"),
        ((12.0, 50), {}, TypeError, "process must be a pid"),
        ((_NoPid(), 50), {}, TypeError, "process must be a pid"),
        ((_BoolPid(), 50), {}, TypeError, "process must be a pid"),
        ((0, 50), {}, ValueError, "process must be a pid from 1 to 2147483647, got 0"),
        ((-1, 50), {}, ValueError, "process must be a pid from 1 to 2147483647, got -1"),
        ((2**40, 30), {}, ValueError, "process must be a pid from 1 to"),
        (("self", 50), {}, ValueError, "process must be another process"),
        ((BUSY_PID, -5), {}, ValueError, "percent must be > 0"),
        ((BUSY_PID, 0), {}, ValueError, "percent must be > 0"),
        ((BUSY_PID, float("inf")), {}, ValueError, "percent must be > 0 and finite"),
        ((BUSY_PID, float("nan")), {}, ValueError, "percent must be > 0 and finite"),
        ((BUSY_PID, "30"), {}, TypeError, "percent must be a number"),
        ((BUSY_PID, None), {}, TypeError, "percent must be a number"),
        ((BUSY_PID, 30), {"period": 0}, ValueError, "period must be > 0"),
        ((BUSY_PID, 30), {"period": -1.0}, ValueError, "period must be > 0"),
        ((BUSY_PID, 30), {"period": float("inf")}, ValueError, "period must be > 0 seconds and"),
        ((BUSY_PID, 30), {"period": timedelta(0)}, ValueError, "period must be > 0"),
        ((BUSY_PID, 30), {"period": "0.1"}, TypeError, "period must be seconds or a timedelta"),
        ((BUSY_PID, 30), {"include_children": "yes"}, TypeError, "include_children must be"),
    ],
)
async def test_throttle_checks_its_arguments(
    args: tuple[object, ...],
    kwargs: dict[str, object],
    error: type,
    fragment: str,
    busy: subprocess.Popen[bytes],
    no_signals: None,
) -> None:
    """Bad processes, percents and periods are refused by name, before anything happens."""
    pid = {"self": os.getpid(), BUSY_PID: busy.pid}.get(args[0], args[0])  # type: ignore[call-overload]
    with anyio.fail_after(WAIT), pytest.raises(error, match=fragment):
        await throttle_process(pid, *args[1:], **kwargs)


async def test_period_takes_a_timedelta(signals: list[str], busy: subprocess.Popen[bytes]) -> None:
    """Durations are seconds or timedeltas, as everywhere in throttlekit."""
    with anyio.fail_after(WAIT), anyio.move_on_after(0.1):
        await throttle_process(busy, 20, period=timedelta(milliseconds=10))
    assert signals.count("STOP") == signals.count("CONT") > 1


# -- SIGKILL of the throttling process at the worst moment --------------------------------

THROTTLER = """
import sys, threading, anyio, throttlekit
pid, where, children = int(sys.argv[1]), sys.argv[2], sys.argv[3] == "children"
def throttle():
    anyio.run(lambda: throttlekit.throttle_process(
        pid, 5, period=2.0, include_children=children))
if where == "thread":  # throttled from a worker thread, which started the watchdog
    worker = threading.Thread(target=throttle)
    worker.start()
    worker.join()
else:
    throttle()
"""

TREE = """
import subprocess, sys
child = subprocess.Popen([sys.executable, "-c", "while True: pass"])
print(child.pid, flush=True)
child.wait()
"""


def kill_while_stopped(throttler: subprocess.Popen[bytes], stopped: list[int]) -> list[int]:
    """
    SIGKILL ``throttler`` at a moment when every pid in ``stopped`` is stopped: it is
    frozen first, and killed only once that is seen. Returns its watchdogs.
    """
    deadline = time.monotonic() + WAIT
    while True:
        assert throttler.poll() is None, "the throttler ended by itself"
        os.kill(throttler.pid, signal.SIGSTOP)
        wait_until(lambda: state(throttler.pid) == "T", "the throttler frozen")
        if all(state(pid) == "T" for pid in stopped):
            break
        os.kill(throttler.pid, signal.SIGCONT)
        if time.monotonic() > deadline:
            pytest.fail("the target was never seen stopped")
        time.sleep(0.01)
    found = watchdogs(throttler.pid)
    os.kill(throttler.pid, signal.SIGKILL)
    throttler.wait(WAIT)
    return found


@pytest.mark.parametrize(
    ("where", "children"),
    [("main", False), ("thread", True)],
)
def test_sigkill_of_the_throttler_never_leaves_the_target_stopped(
    where: str, children: bool
) -> None:
    """
    A Python process throttling a busy target at 5% (stopped 95% of each 2 s period) is
    SIGKILLed while the target is stopped: its watchdog continues the target (and, with
    include_children, its descendants) and exits. A 2 s period means nothing else would
    continue it in time: without the watchdog it stays stopped.
    """
    if children:
        target = subprocess.Popen([sys.executable, "-c", TREE], stdout=subprocess.PIPE)
        assert target.stdout is not None
        pids = [target.pid, int(target.stdout.readline())]
    else:
        target = subprocess.Popen(BUSY)
        pids = [target.pid]
    throttler = subprocess.Popen(
        [sys.executable, "-c", THROTTLER, str(target.pid), where, str(children and "children")]
    )
    try:
        found = kill_while_stopped(throttler, pids)
        assert len(found) == 1  # a watchdog was there, from whichever thread started it
        wait_until(lambda: all(state(pid) not in ("T", "gone") for pid in pids), "continued")
        wait_until(lambda: state(found[0]) in ("Z", "gone"), "the watchdog gone")
    finally:
        for pid in reversed(pids):
            os.kill(pid, signal.SIGKILL)
        if throttler.poll() is None:
            throttler.kill()
        throttler.wait(WAIT)
        target.wait(WAIT)
        if target.stdout is not None:
            target.stdout.close()


def test_the_watchdog_exits_when_the_target_exits() -> None:
    """With the throttler frozen (so it cannot stop it), the target's exit ends the watchdog."""
    target = subprocess.Popen(BUSY)
    throttler = subprocess.Popen([sys.executable, "-c", THROTTLER, str(target.pid), "main", ""])
    try:
        wait_until(lambda: state(target.pid) == "T", "the target stopped once")
        os.kill(throttler.pid, signal.SIGSTOP)
        wait_until(lambda: len(watchdogs(throttler.pid)) == 1, "a watchdog")
        watchdog = watchdogs(throttler.pid)[0]
        target.kill()
        target.wait(WAIT)
        wait_until(lambda: state(watchdog) in ("Z", "gone"), "the watchdog gone")
    finally:
        throttler.kill()
        throttler.wait(WAIT)
        target.kill()
        target.wait(WAIT)
