"""Sync work in an anyio worker thread, started by a task whose scope a test cancels."""

from __future__ import annotations

import threading
from collections.abc import Callable

import anyio


class HostedThread:
    """
    ``work`` run by :func:`anyio.to_thread.run_sync` in :meth:`host`, a task whose
    ``scope`` the test cancels. ``raised`` keeps what ``work`` raised (it propagates too),
    and ``returned`` is set however ``work`` ends.
    """

    def __init__(self, work: Callable[[], object]) -> None:
        self.scope = anyio.CancelScope()
        self.raised: list[BaseException] = []
        self.returned = threading.Event()
        self._work = work

    def _run(self) -> None:
        try:
            self._work()
        except BaseException as exc:
            self.raised.append(exc)
            raise
        finally:
            self.returned.set()

    async def host(self) -> None:
        with self.scope:
            await anyio.to_thread.run_sync(self._run)
