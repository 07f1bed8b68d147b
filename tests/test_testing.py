"""throttlekit.testing: virtual time for users' tests."""

from __future__ import annotations

import threading

import anyio
import pytest

from throttlekit.testing import ManualClock, VirtualTimeEventLoop, backend_options, run


async def _sleep_an_hour() -> float:
    start = anyio.current_time()
    await anyio.sleep(3600)
    return anyio.current_time() - start


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_run_uses_virtual_time(backend: str) -> None:
    """An hour of sleep passes exactly, at once, on both backends."""
    assert run(_sleep_an_hour, backend=backend) == 3600  # type: ignore[arg-type]


def test_virtual_loop_still_handles_threads() -> None:
    """Work from a real thread still wakes the virtual loop (no timers pending)."""

    async def main() -> int:
        return await anyio.to_thread.run_sync(lambda: 41 + 1)

    assert run(main) == 42


def test_backend_options_shape() -> None:
    """backend_options gives anyio's (name, options) with a fresh clock each time."""
    name, options = backend_options("asyncio")
    assert (name, options) == ("asyncio", {"loop_factory": VirtualTimeEventLoop})
    trio_a, trio_b = backend_options("trio")[1]["clock"], backend_options("trio")[1]["clock"]
    assert trio_a is not trio_b
    with pytest.raises(ValueError, match="backend must be"):
        backend_options("curio")  # type: ignore[arg-type]


def test_manual_clock() -> None:
    """A ManualClock moves only when advanced, and refuses to go back."""
    clock = ManualClock(5)
    assert clock() == 5
    threads = [threading.Thread(target=clock.advance, args=(0.5,)) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert clock() == 10
    with pytest.raises(ValueError, match="finite number >= 0"):
        clock.advance(-1)
    assert repr(clock) == "ManualClock(10.0)"
