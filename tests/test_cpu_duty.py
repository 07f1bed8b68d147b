"""throttle_process's duty cycle on virtual time: a fake process that burns CPU when running."""

from __future__ import annotations

import subprocess
import types
from collections.abc import Iterator

import anyio
import pytest

import throttlekit._throttle._cpu as cpu_module
from throttlekit import throttle_process

pytestmark = pytest.mark.anyio


@pytest.fixture
def busy() -> Iterator[subprocess.Popen[bytes]]:
    """A real process for the pid (it is never signalled: stops are faked)."""
    process = subprocess.Popen(["sleep", "60"])
    yield process
    process.kill()
    process.wait(10)


class FakeCpu:
    """A process that burns CPU whenever it is not stopped, on the test's virtual clock."""

    def __init__(self) -> None:
        self.used, self.since, self.running = 0.0, anyio.current_time(), True

    def read(self, pid: int) -> float:
        now = anyio.current_time()
        if self.running:
            self.used, self.since = self.used + now - self.since, now
        return self.used

    def stop(self, target: object, pids: list[int]) -> None:
        self.read(0)
        self.running = False

    def go(self, target: object, pids: list[int]) -> None:
        self.read(0)
        self.running, self.since = True, anyio.current_time()


@pytest.mark.parametrize("percent", [0.5, 1, 5, 30])
async def test_small_percents_are_honoured(
    monkeypatch: pytest.MonkeyPatch, busy: subprocess.Popen[bytes], percent: float
) -> None:
    """Under 2% of a period a run stays 2 ms and the stops grow, so even 0.5% holds."""
    fake = FakeCpu()
    monkeypatch.setattr(cpu_module, "_proc_cpu", fake.read)
    monkeypatch.setattr(cpu_module, "_suspend", fake.stop)
    monkeypatch.setattr(cpu_module, "_resume", fake.go)
    monkeypatch.setattr(cpu_module, "time", types.SimpleNamespace(monotonic=anyio.current_time))
    start = anyio.current_time()
    with anyio.move_on_after(600):
        await throttle_process(busy, percent, period=0.1)
    average = 100 * fake.read(0) / (anyio.current_time() - start)
    assert average == pytest.approx(percent, rel=0.1)
    assert fake.running  # left running
