"""
Helpers for testing code that uses throttlekit: deterministic, virtual time.

Anything that waits (a rate limiter, a policy watcher, a worker pool with timeouts) is
slow and flaky to test on the wall clock. These helpers run your async code on a clock
that jumps straight to the next timer whenever every task is waiting, so a test of "ten
minutes of polling" finishes in milliseconds and its timestamps are exact.

* On trio, use ``trio.testing.MockClock(autojump_threshold=0)``.
* On asyncio, use :class:`VirtualTimeEventLoop`, its twin.
* :func:`backend_options` gives both in the shape anyio's pytest plugin wants, and
  :func:`run` runs a coroutine function on either.
* :class:`ManualClock` is a clock you advance by hand, for thread-side code and the
  sans-I/O cores that take ``clock=``.

Threads do not hold virtual time back: code that runs in a worker thread sees virtual
time jump while it works. Give such code an injected clock instead.
"""

from __future__ import annotations

import asyncio
import math
import selectors
import threading
from collections.abc import Awaitable, Callable
from typing import Any, Literal, TypeVar

import anyio
from typing_extensions import TypeVarTuple, Unpack

__all__ = ["ManualClock", "VirtualTimeEventLoop", "backend_options", "run"]

T = TypeVar("T")
Ts = TypeVarTuple("Ts")
Backend = Literal["asyncio", "trio"]


class VirtualTimeEventLoop(asyncio.SelectorEventLoop):
    """
    An asyncio event loop whose clock jumps to the next timer when nothing is runnable.

    It is the asyncio twin of ``trio.testing.MockClock(autojump_threshold=0)``: ``sleep(60)``
    returns at once with ``loop.time()`` exactly 60 seconds later. Real I/O and
    ``call_soon_threadsafe`` still work: when no timer is pending at all, the loop waits
    for them for real.

    >>> import asyncio
    >>> async def main():
    ...     loop = asyncio.get_running_loop()
    ...     start = loop.time()
    ...     await asyncio.sleep(3600)
    ...     return loop.time() - start
    >>> asyncio.run(main(), loop_factory=VirtualTimeEventLoop)  # doctest: +SKIP
    3600.0

    (``loop_factory`` needs Python 3.12; on older versions use :func:`run`.)
    """

    def __init__(self) -> None:
        selector = selectors.DefaultSelector()
        super().__init__(selector)
        self._virtual_now = 0.0
        real_select = selector.select

        def select(timeout: float | None = None) -> list[Any]:
            ready: list[Any] = real_select(0)  # I/O and call_soon_threadsafe() still wake us
            if ready or timeout == 0:
                return ready
            if timeout is None:  # no timer at all: really wait for I/O
                waited: list[Any] = real_select(None)
                return waited
            self._virtual_now += timeout  # idle: jump straight to the next timer
            return []

        selector.select = select  # type: ignore[method-assign]

    def time(self) -> float:
        """The virtual time, starting at 0.0."""
        return self._virtual_now


def backend_options(backend: Backend) -> tuple[str, dict[str, Any]]:
    """
    ``(backend, options)`` for anyio with a fresh virtual clock, for the ``anyio_backend``
    fixture of anyio's pytest plugin::

        @pytest.fixture(params=["asyncio", "trio"])
        def anyio_backend(request):
            return throttlekit.testing.backend_options(request.param)

    Every test then runs twice, on asyncio and on trio, both on virtual time.
    """
    if backend == "trio":
        from trio.testing import MockClock

        return "trio", {"clock": MockClock(autojump_threshold=0)}
    if backend == "asyncio":
        return "asyncio", {"loop_factory": VirtualTimeEventLoop}
    raise ValueError(f"backend must be 'asyncio' or 'trio', got {backend!r}")


def run(
    func: Callable[[Unpack[Ts]], Awaitable[T]], *args: Unpack[Ts], backend: Backend = "asyncio"
) -> T:
    """Run ``func(*args)`` to completion on ``backend`` with a virtual clock."""
    name, options = backend_options(backend)
    return anyio.run(func, *args, backend=name, backend_options=options)


class ManualClock:
    """
    A monotonic clock that only moves when told to: ``clock()`` reads it, ``advance()``
    moves it. Thread-safe.

    >>> clock = ManualClock()
    >>> clock.advance(1.5)
    >>> clock()
    1.5
    """

    __slots__ = ("_lock", "_now")

    def __init__(self, start: float = 0.0) -> None:
        if not math.isfinite(start):
            raise ValueError(f"start must be a finite number, got {start!r}")
        self._now = float(start)
        self._lock = threading.Lock()

    def __call__(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        """Move the clock forward by ``seconds`` (which must be finite and >= 0)."""
        if not (math.isfinite(seconds) and seconds >= 0):
            raise ValueError(f"seconds must be a finite number >= 0, got {seconds!r}")
        with self._lock:
            self._now += seconds

    def __repr__(self) -> str:
        return f"ManualClock({self._now!r})"
