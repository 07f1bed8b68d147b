"""
The task group of a primitive that owns tasks (shared core).

A primitive such as the worker pool or the policy watcher is an async context manager
that runs tasks of its own: it opens an anyio task group in ``__aenter__`` and closes it
in ``__aexit__``, so the group is driven by hand instead of by ``async with``.
:class:`OwnedTaskGroup` is that hand-driving, written once: enter the group, start the
first tasks inside it (closing it again if starting fails), refuse a second entry, and
leave it with the exception the owner's ``async with`` body raised.

It adds no behaviour to anyio's task group: what the group raises (a
``BaseExceptionGroup`` when tasks failed, a cancellation) propagates unchanged, and a
cancellation of the scope around the owner reaches the tasks as it would through
``async with anyio.create_task_group()``. It is not a place to park tasks outside
structured concurrency: the group lives exactly from :meth:`~OwnedTaskGroup.open` to
:meth:`~OwnedTaskGroup.close`, inside the owner's ``async with``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import final

import anyio
from anyio.abc import TaskGroup

__all__ = ["OwnedTaskGroup"]


@final
class OwnedTaskGroup:
    """
    The task group an async context manager opens on entry and closes on exit.

    ``owner`` is the owning class's name, for messages. The lifecycle rule is that a
    primitive that owns tasks (the pool, the watcher) is entered once, as an anyio task
    group is: entering it again, while it runs or after it was left, raises
    :class:`RuntimeError` naming the class. To start over, make a new one.

    An owner opens it in ``__aenter__`` and closes it in ``__aexit__``; here a ticker
    (on :mod:`throttlekit.testing`'s virtual clock) that may be entered once:

    >>> import anyio
    >>> from throttlekit.testing import run
    >>> class Ticker:
    ...     def __init__(self):
    ...         self.ticks = 0
    ...         self._tasks = OwnedTaskGroup("Ticker")
    ...     async def _tick(self, *, task_status=anyio.TASK_STATUS_IGNORED):
    ...         task_status.started()
    ...         while True:
    ...             self.ticks += 1
    ...             await anyio.sleep(1)
    ...     async def __aenter__(self):
    ...         await self._tasks.open(lambda task_group: task_group.start(self._tick))
    ...         return self
    ...     async def __aexit__(self, *exc_info):
    ...         return await self._tasks.close(*exc_info, cancel=True)
    >>> async def main():
    ...     ticker = Ticker()
    ...     async with ticker:
    ...         await anyio.sleep(2.5)
    ...     try:
    ...         async with ticker:
    ...             pass
    ...     except RuntimeError as exc:
    ...         return ticker.ticks, str(exc)
    >>> run(main)
    (3, 'this Ticker was entered already: it can be entered only once')
    """

    __slots__ = ("_entered", "_owner", "_task_group")

    def __init__(self, owner: str) -> None:
        self._owner = owner
        self._entered = False
        self._task_group: TaskGroup | None = None

    @property
    def is_open(self) -> bool:
        """Whether the group is open: between a successful :meth:`open` and :meth:`close`."""
        return self._task_group is not None

    @property
    def task_group(self) -> TaskGroup:
        """The open task group, to start tasks in or cancel; :class:`RuntimeError` if closed."""
        if self._task_group is None:
            raise RuntimeError(f"this {self._owner} is not running")
        return self._task_group

    async def open(
        self, start: Callable[[TaskGroup], Awaitable[object]] | None = None
    ) -> TaskGroup:
        """
        Enter a new task group and await ``start(task_group)`` inside it.

        If ``start`` raises (anything, a cancellation included), the group is left with
        that exception, so every task it started is cancelled and waited for, and what
        the group raises propagates: the owner's ``__aenter__`` fails with nothing left
        running. Raises :class:`RuntimeError` naming the owner if the group is open, or
        was opened before.
        """
        if self._task_group is not None:
            raise RuntimeError(f"this {self._owner} is already running")
        if self._entered:
            raise RuntimeError(
                f"this {self._owner} was entered already: it can be entered only once"
            )
        self._entered = True
        task_group = anyio.create_task_group()
        await task_group.__aenter__()
        try:
            if start is not None:
                await start(task_group)
        except BaseException as exc:
            await task_group.__aexit__(type(exc), exc, exc.__traceback__)
            raise
        self._task_group = task_group
        return task_group

    async def close(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
        *,
        cancel: bool = False,
    ) -> bool | None:
        """
        Leave the task group with the owner's ``__aexit__`` arguments, after cancelling its
        tasks if ``cancel`` (otherwise this waits for them, as ``async with`` does).

        Returns what the task group's ``__aexit__`` returns, so the owner can return it;
        raises what it raises. The group counts as closed from the start of the call, so
        a failing exit never leaves it half open. :class:`RuntimeError` if it is not open.
        """
        task_group, self._task_group = self._task_group, None
        if task_group is None:
            raise RuntimeError(f"this {self._owner} is not running")
        if cancel:
            task_group.cancel_scope.cancel()
        return await task_group.__aexit__(exc_type, exc, tb)
