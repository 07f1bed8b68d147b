"""throttle_process on real, short-lived child processes (real time, asyncio only)."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import anyio
import pytest

import throttlekit._cpu as cpu_module
from throttlekit import ThrottlekitError, throttle_process
from throttlekit._cpu import _proc_cpu

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs /proc"),
]


BUSY = [sys.executable, "-c", "while True: pass"]


def state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # real time and real processes: one backend is enough


async def test_throttled_child_is_never_left_stopped(monkeypatch: pytest.MonkeyPatch) -> None:
    """Cancelled at many moments, mid-run or mid-stop, the child is always left running."""
    sent: list[str] = []
    real = cpu_module._signal_all

    def record(pids: list[int], sig: signal.Signals) -> None:
        sent.append(sig.name)
        real(pids, sig)

    monkeypatch.setattr(cpu_module, "_signal_all", record)
    process = await anyio.open_process(BUSY)
    try:
        for k in range(12):
            with anyio.move_on_after(0.05 + 0.013 * k):
                await throttle_process(process, 20, period=0.02)
            assert state(process.pid) in ("R", "S")
            assert sent[-1] == "SIGCONT"
        assert sent.count("SIGSTOP") == sent.count("SIGCONT") > 0
        assert _proc_cpu(process.pid) is not None
    finally:
        process.kill()
        await process.wait()


async def test_throttle_returns_when_the_child_exits() -> None:
    """throttle_process ends by itself when the process exits (or is already gone)."""
    process = await anyio.open_process([sys.executable, "-c", "import time; time.sleep(0.3)"])
    with anyio.fail_after(10):
        await throttle_process(process, 50, period=0.05)
    await process.wait()
    await throttle_process(process.pid, 50)  # gone: returns at once


async def test_throttle_refuses_what_it_cannot_signal(monkeypatch: pytest.MonkeyPatch) -> None:
    """A process this user may not signal is a clear error, not a silent no-op."""

    def refuse(pid: int, sig: int) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(cpu_module.os, "kill", refuse)
    with pytest.raises(ThrottlekitError, match="cannot signal process 1: Operation not permitted"):
        await throttle_process(1, 50)


async def test_throttle_checks_its_arguments() -> None:
    """Bad processes and percents are refused by name."""
    with pytest.raises(TypeError, match="process must be a pid"):
        await throttle_process("gzip", 50)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="percent must be > 0"):
        await throttle_process(1, -5)
