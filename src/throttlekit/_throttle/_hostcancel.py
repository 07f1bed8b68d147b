"""
Cancellation points for sync code in anyio worker threads.

Python cannot stop a thread from outside. A sync function run by
:func:`anyio.to_thread.run_sync` (the pool's sync ``process``, say) stops early only if it
asks, at some call, whether the task waiting for it was cancelled. The throttle's blocking
calls (:meth:`~throttlekit.RateLimiter.acquire_blocking`, the file wrappers,
:meth:`~throttlekit.CpuGovernor.checkpoint_blocking`) are such calls: :func:`host_cancel_check`
tells them whether there is a host task to ask, and they wait in slices of
:data:`CANCEL_SLICE` seconds, asking after each.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, Final

import anyio

__all__ = ["CANCEL_SLICE", "host_cancel_check", "sleep_checking"]

#: Seconds a waiting worker thread goes without looking for a cancellation of its host.
CANCEL_SLICE: Final = 0.05


def host_cancel_check() -> Callable[[], None] | None:
    """
    :func:`anyio.from_thread.check_cancelled` if the calling thread is an anyio worker
    thread (so a task waits for it and may be cancelled), else ``None``. It does not
    check by itself: call what it returns.

    Asked once per blocking call, so it must be cheap in plain threads: anyio's
    thread-local marks its worker threads and is read directly when anyio's internals are
    as expected; otherwise the public function is asked, and a thread it refuses (a
    ``RuntimeError``: not an anyio worker thread) cannot be cancelled.
    """
    if _worker_marks is not None:
        if getattr(_worker_marks, "current_token", None) is None:
            return None
        return anyio.from_thread.check_cancelled
    try:  # pragma: no cover - another anyio
        anyio.from_thread.check_cancelled()
    except RuntimeError:  # pragma: no cover
        return None
    return anyio.from_thread.check_cancelled  # pragma: no cover


def sleep_checking(delay: float, check: Callable[[], None] | None) -> None:
    """``time.sleep(delay)``; with a ``check``, in slices, calling it after each one."""
    if check is None:
        time.sleep(delay)
        return
    remaining = delay
    while remaining > 0:
        piece = min(CANCEL_SLICE, remaining)
        time.sleep(piece)
        remaining -= piece
        check()


def _load_worker_marks() -> Any:
    try:
        from anyio._core._eventloop import threadlocals
    except ImportError:  # pragma: no cover - another anyio
        return None
    return threadlocals if isinstance(threadlocals, threading.local) else None


_worker_marks: Any = _load_worker_marks()
