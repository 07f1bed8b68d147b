"""
ItemBlockWorkerPool: N persistent workers that process ItemBlocks for any number of runs.

Why persistent workers: a task per job costs a task spawn per job; a pool of workers
taking blocks from a queue costs a queue operation, and bounds concurrency by
construction. Why runs: a backup system runs several backups (and restores) at once on one
node; they share the node's workers fairly instead of the first taking them all.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import logging
import math
import sys
import threading
import warnings
from collections import deque
from collections.abc import (
    AsyncIterable,
    Callable,
    Coroutine,
    Hashable,
    Iterable,
    Mapping,
    Sequence,
)
from types import TracebackType
from typing import Any, Generic, Literal, Protocol, TypeVar, final

import anyio
from anyio.abc import TaskGroup, TaskStatus
from attrs import frozen

from .._checks import check_callable, check_int, check_priority, check_seconds
from .._errors import CallbackWarning
from .._tasks import OwnedTaskGroup
from ._blocks import (
    BlockResult,
    BlockStatus,
    ItemBlock,
    ItemError,
    Phase,
    RunProgress,
    RunResult,
    describe,
)

if sys.version_info < (3, 11):  # pragma: no cover - the backport on 3.10
    from exceptiongroup import BaseExceptionGroup

__all__ = ["ItemBlockWorkerPool", "ItemBlockWorkerPoolStatistics", "PoolStatistics"]

T = TypeVar("T")
V = TypeVar("V")
V_co = TypeVar("V_co", covariant=True)

logger = logging.getLogger("throttlekit.pool")

# The most report_bytes() takes at once: a 64-bit size, more than any transfer moves (an
# int beyond a float's range would break the bytes-per-second of every later report).
_MAX_REPORTED_BYTES = 2**63 - 1

# What anyio.from_thread.run_sync raises in a thread that is not an anyio worker thread
# (a RuntimeError; its own class from anyio 4.11 on).
_NO_EVENT_LOOP: type[Exception] = getattr(anyio, "NoEventLoopError", RuntimeError)

# The run whose block the current task (or worker thread) executes, for report_bytes().
_current_run: contextvars.ContextVar[_Run[Any]] = contextvars.ContextVar("throttlekit_run")


def _is_async(func: Callable[..., Any]) -> bool:
    while isinstance(func, functools.partial):
        func = func.func
    return inspect.iscoroutinefunction(func) or inspect.iscoroutinefunction(
        getattr(func, "__call__", None)  # noqa: B004 - an object with an async __call__
    )


def _name(func: object) -> str:
    """A callable's name for messages: its qualified name, else its repr."""
    name = getattr(func, "__qualname__", None)
    return name if isinstance(name, str) else describe(func)


def _warn_callback(what: str, error: Exception) -> None:
    """
    A user callback raised ``error`` and the work goes on: say so where it cannot be
    missed (a :class:`CallbackWarning`, printed on stderr by default) and in the log.
    """
    logger.error("%s raised %s: %s", what, type(error).__name__, error, exc_info=error)
    warning = CallbackWarning(f"{what} raised {type(error).__name__}: {error}; the run goes on")
    warning.__cause__ = error
    warnings.warn(warning, stacklevel=3)


async def _notify(callback: Callable[[Any], Any], is_async: bool, arg: Any, role: str) -> None:
    """
    Call a user's ``on_progress`` or ``on_error`` (awaited when async) with ``arg``; an
    ``Exception`` it raises is a :class:`CallbackWarning` and the run goes on, anything
    else propagates.
    """
    try:
        if is_async:
            await callback(arg)
        else:
            callback(arg)
    except Exception as e:
        _warn_callback(f"{role} {_name(callback)}", e)


class _Changing(Protocol[V_co]):
    """What :meth:`ItemBlockWorkerPool.follow` needs of a watcher (a PolicyWatcher)."""

    @property
    def policy(self) -> V_co: ...

    async def wait_for_change(self) -> V_co: ...


@frozen(kw_only=True)
class ItemBlockWorkerPoolStatistics:
    """
    A snapshot of an :class:`ItemBlockWorkerPool`, from its ``statistics()``: the
    workers, what they are doing, and what waits for them.

    The deprecated ``busy`` still reads ``in_use``, for one release; ``PoolStatistics``
    is the deprecated old name of this class.
    """

    #: How many blocks may run at once (the live setting).
    workers: int
    #: Workers running a block now: more than ``workers`` for a while after shrinking,
    #: until the retiring workers finish their block.
    in_use: int
    #: Blocks waiting for a worker, over all runs.
    queued_blocks: int
    #: Runs in progress.
    runs: int

    @property
    def busy(self) -> int:
        """Deprecated alias of :attr:`in_use`, kept for one release."""
        warnings.warn(
            "ItemBlockWorkerPoolStatistics.busy is deprecated; use in_use",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.in_use


#: Deprecated: the old name of :class:`ItemBlockWorkerPoolStatistics`, for one release.
PoolStatistics = ItemBlockWorkerPoolStatistics


class _Run(Generic[T]):
    """
    One ``run()``: its queue, its in-flight blocks, its results, and how a block of it
    is executed (:meth:`execute`, through a :class:`_BlockRun` per block).

    The pool only schedules: it picks the next block and gives it to a worker. It lends
    each run its thread limiter and its ``fail`` (a callable's BaseException ends the
    pool).
    """

    def __init__(
        self,
        blocks: Sequence[ItemBlock[T]],
        process: Callable[[T], Any],
        *,
        pre_hook: Callable[[ItemBlock[T]], Any] | None,
        post_hook: Callable[[ItemBlock[T]], Any] | None,
        key: Callable[[T], Hashable] | None,
        additional_concurrency: int,
        fail_fast: bool,
        on_error: Callable[[ItemError], Any] | None,
        on_progress: Callable[[RunProgress], Any] | None,
        progress_interval: float,
        priority: int,
        started: float,
        threads: anyio.CapacityLimiter,
        fail: Callable[[BaseException], None],
    ) -> None:
        self.blocks = blocks
        self.process = process
        self.process_is_async = _is_async(process)
        self.pre_hook, self.post_hook = pre_hook, post_hook
        self.key = key
        self.additional_concurrency = additional_concurrency
        self.fail_fast = fail_fast
        self.on_error, self.on_progress = on_error, on_progress
        self.on_error_is_async = on_error is not None and _is_async(on_error)
        self.on_progress_is_async = on_progress is not None and _is_async(on_progress)
        self.progress_interval = progress_interval
        self.priority = priority
        self.started = started
        self.threads = threads
        self.fail = fail
        self.pending: deque[int] = deque(range(len(blocks)))
        self.results: list[BlockResult | None] = [None] * len(blocks)
        self.in_flight: dict[int, anyio.CancelScope] = {}
        self.claimed: set[Hashable] = set()
        self.remaining = len(blocks)
        self.blocks_done = 0  # reported, whatever their status (a count: reports are O(1))
        self.done = anyio.Event()
        self.stopping = False  # fail-fast, a cancelled run, or the pool's shutdown
        self.block_items_total = sum(len(b) for b in blocks)
        self.block_items_done = 0  # processed successfully
        self.block_items_handled = 0  # processed, failed, or left out (duplicates, pre hook)
        self.additional_items_done = 0
        self.errors = 0
        self.bytes_done: int | None = None  # None until the process reports bytes
        self.bytes_lock = threading.Lock()  # report_bytes() may come from worker threads
        self.last_progress = started
        self.changed = anyio.Event()  # something happened since the last report
        self.report_on_change = on_progress is not None and progress_interval == 0
        if not blocks:
            self.done.set()

    def claim(self, item: T) -> bool:
        """
        Whether ``item`` is still to be processed in this run (atomic: no await).

        Raises what ``key`` raises, and a TypeError naming the item when its key is not
        hashable.
        """
        if self.key is None:
            return True
        k = self.key(item)
        try:
            seen = k in self.claimed
        except TypeError as e:
            raise TypeError(
                f"key({describe(item)}) returned an unhashable {type(k).__name__}; "
                "key must return something hashable (a name, a UID)"
            ) from e
        if seen:
            return False
        self.claimed.add(k)
        return True

    def finish(self, index: int, result: BlockResult) -> None:
        if self.results[index] is not None:  # pragma: no cover - a bug if ever reached
            raise AssertionError(f"block {index} reported twice")
        self.results[index] = result
        self.blocks_done += 1
        self.remaining -= 1
        self.touch()
        if self.remaining == 0:
            self.done.set()

    def touch(self) -> None:
        """Something changed: wake the reporter if it reports on every change."""
        if self.report_on_change:
            self.changed.set()

    def add_bytes(self, amount: int) -> None:
        with self.bytes_lock:
            self.bytes_done = (self.bytes_done or 0) + amount

    def progress(self, now: float, *, final: bool = False) -> RunProgress:
        """A progress report as of ``now``."""
        elapsed = now - self.started
        handled, total = self.block_items_handled, self.block_items_total
        eta: float | None = None
        if final:
            eta = 0.0
        elif handled == total:
            eta = 0.0  # only post hooks and additional items are left
        elif handled and elapsed > 0:  # with no time passed, the pace is unknown
            eta = elapsed * (total - handled) / handled
        bytes_done = self.bytes_done
        return RunProgress(
            blocks_done=self.blocks_done,
            blocks_total=len(self.blocks),
            items_done=self.block_items_done + self.additional_items_done,
            errors=self.errors,
            elapsed=elapsed,
            finished=final,
            block_items_done=self.block_items_done,
            block_items_total=total,
            additional_items_done=self.additional_items_done,
            eta=eta,
            bytes_done=bytes_done,
            bytes_per_second=(None if bytes_done is None or elapsed <= 0 else bytes_done / elapsed),
        )

    async def report(self, *, final: bool = False) -> None:
        """
        Give ``on_progress`` a report (awaited if async). An Exception it raises is a
        :class:`CallbackWarning`; a BaseException propagates to the caller.
        """
        assert self.on_progress is not None
        self.last_progress = now = anyio.current_time()
        self.changed = anyio.Event()
        report = self.progress(now, final=final)
        await _notify(self.on_progress, self.on_progress_is_async, report, "on_progress")

    async def report_while_running(self, scope: anyio.CancelScope) -> None:
        """
        Report every ``progress_interval`` seconds (with 0: whenever something changed)
        until the run is done, in ``run()``'s task, so a slow ``on_progress`` holds up no
        worker. A BaseException from ``on_progress`` ends the pool, as from any callable.
        """
        try:
            while True:
                if self.progress_interval > 0:
                    await anyio.sleep_until(self.last_progress + self.progress_interval)
                else:
                    await self.changed.wait()
                if self.done.is_set():
                    return
                await self.report()
        except BaseException as e:
            if isinstance(e, anyio.get_cancelled_exc_class()) and (
                scope.cancel_called or anyio.current_effective_deadline() == -math.inf
            ):
                raise  # this reporter is stopped (the run is done, or cancelled)
            self.fail(e)

    def cancel_queued(self) -> list[int]:
        dropped = list(self.pending)
        self.pending.clear()
        for index in dropped:
            self.finish(index, BlockResult(block=self.blocks[index], status=BlockStatus.CANCELLED))
        return dropped

    def stop(self) -> None:
        """Cancel the in-flight blocks and drop the queued ones."""
        self.stopping = True
        self.cancel_queued()
        for scope in self.in_flight.values():
            scope.cancel()

    async def call(self, func: Callable[[Any], Any], arg: Any) -> Any:
        """``func(arg)``: awaited if async, else in a worker thread (awaiting what it returns)."""
        is_async = self.process_is_async if func is self.process else _is_async(func)
        if is_async:
            return await func(arg)
        result = await anyio.to_thread.run_sync(func, arg, limiter=self.threads)
        if inspect.isawaitable(result):
            result = await result
        return result

    def execute(self, index: int) -> Coroutine[Any, Any, None]:
        """
        Run block ``index`` to its end and report it (exactly once), when awaited. A
        callable's BaseException propagates, after the block is reported. (It returns
        the block's coroutine rather than awaiting it: one frame less per block.)
        """
        return _BlockRun(self, index).execute()


class _BlockRun:
    """One block being executed: its errors, its count of items done, its cancel scope."""

    def __init__(self, run: _Run[Any], index: int) -> None:
        self.run = run
        self.index = index
        self.block = run.blocks[index]
        self.errors: list[ItemError] = []
        self.items_done = 0  # items (and additional items) of this block processed
        self.additional_items_done = 0  # of which additional items
        # Shielded: only the pool cancels a block (its run stopped, fail-fast, the end of
        # the grace period), so a cancelled scope around the pool gives it its grace period.
        self.scope = anyio.CancelScope(shield=True)

    async def record(
        self, error: Exception, *, item: Any = None, parent: Any = None, phase: Phase = "item"
    ) -> None:
        """
        Keep ``error`` as an :class:`ItemError` of this block; log it; tell ``on_error``
        (awaited if async; what it raises is a :class:`CallbackWarning`, the error is
        kept); then, with ``fail_fast``, stop the run.
        """
        run = self.run
        record = ItemError(item=item, error=error, block=self.block, parent=parent, phase=phase)
        self.errors.append(record)
        run.errors += 1
        run.touch()
        logger.warning("block %s: %s", self.block, record, exc_info=error)
        try:
            if run.on_error is not None:
                await _notify(run.on_error, run.on_error_is_async, record, "on_error")
        finally:
            if run.fail_fast and not run.stopping:
                run.stop()

    def done(self, *, additional: bool) -> None:
        run = self.run
        self.items_done += 1
        if additional:
            self.additional_items_done += 1
            run.additional_items_done += 1
        else:
            run.block_items_done += 1
        run.touch()

    async def additional(self, item: Any, parent: Any, returned: Any) -> list[Any] | None:
        """The additional items ``process(item)`` returned, still to do; None if unusable."""
        error: Exception
        if isinstance(returned, str | bytes | bytearray | memoryview | Mapping):
            part = "key" if isinstance(returned, Mapping) else "character"
            error = TypeError(
                f"process({describe(item)}) returned a {type(returned).__name__}, which "
                f"would make each {part} an additional item; return None or an iterable "
                "of additional items, such as a list"
            )
        else:
            try:
                iterator = iter(returned)
            except TypeError:
                error = TypeError(
                    f"process({describe(item)}) returned a {type(returned).__name__}; "
                    "return None or an iterable of additional items, such as a list"
                )
            else:
                try:
                    extras = list(iterator)
                except Exception as e:  # the iterable's own code (a generator) raised
                    error = e
                else:
                    todo = []
                    for extra in extras:
                        try:
                            if self.run.claim(extra):
                                todo.append(extra)
                        except Exception as e:  # key raised: that additional item fails
                            await self.record(e, item=extra, parent=item)
                    return todo
        await self.record(error, item=item, parent=parent)
        return None

    async def item(self, item: Any, parent: Any) -> bool:
        """Process one item and its additional items; whether all of them succeeded."""
        run = self.run
        try:
            returned = await run.call(run.process, item)
        except Exception as e:
            await self.record(e, item=item, parent=parent)
            return False
        if returned is None:
            self.done(additional=parent is not None)
            return True
        failures_before = len(self.errors)
        additional = await self.additional(item, parent, returned)
        if additional is None:
            return False
        ok = len(self.errors) == failures_before
        if not additional:
            self.done(additional=parent is not None)
            return ok
        limiter = anyio.Semaphore(run.additional_concurrency)
        cancelled = anyio.get_cancelled_exc_class()

        async def one(extra: Any) -> None:
            nonlocal ok
            try:
                async with limiter:
                    if not await self.item(extra, item):
                        ok = False
            except BaseException as e:
                if isinstance(e, cancelled) and self.scope.cancel_called:
                    raise  # the block is being cancelled
                # A callable's BaseException: it must not leave this task (on asyncio a
                # KeyboardInterrupt leaving a task stops the event loop). The pool re-raises
                # it; the block is cancelled.
                ok = False
                run.fail(e)
                self.scope.cancel()

        async with anyio.create_task_group() as tg:
            for extra in additional:
                tg.start_soon(one, extra)
        self.done(additional=parent is not None)  # once its additional items are through
        return ok

    async def hook(self, phase: Literal["pre_hook", "post_hook"]) -> bool:
        """Run the run's ``phase`` hook on the block, if any; False (recorded) if it failed."""
        hook = self.run.pre_hook if phase == "pre_hook" else self.run.post_hook
        if hook is None:
            return True
        try:
            await self.run.call(hook, self.block)
        except Exception as e:
            await self.record(e, phase=phase)
            return False
        return True

    async def execute(self) -> None:
        run, block, scope = self.run, self.block, self.scope
        start = anyio.current_time()
        completed = skipped = False
        run.in_flight[self.index] = scope
        token = _current_run.set(run)  # for report_bytes(), in this task and its threads
        try:
            with scope:
                todo = []
                for item in block.items:
                    try:
                        if run.claim(item):
                            todo.append(item)
                        else:
                            run.block_items_handled += 1  # done already, elsewhere in the run
                    except Exception as e:  # key raised: that item fails
                        run.block_items_handled += 1
                        await self.record(e, item=item)
                if not todo:
                    skipped = not self.errors
                else:
                    if await self.hook("pre_hook"):
                        for item in todo:
                            await self.item(item, None)
                            run.block_items_handled += 1
                            if scope.cancel_called:  # do not go on to the next item
                                await anyio.lowlevel.checkpoint()
                        await self.hook("post_hook")
                    else:
                        run.block_items_handled += len(todo)  # skipped: the pre hook failed
                completed = True
        finally:
            _current_run.reset(token)
            del run.in_flight[self.index]
            if self.errors:
                status = BlockStatus.FAILED  # even if cancelled afterwards: its errors say more
            elif not completed:  # cancelled, or interrupted by a BaseException
                status = BlockStatus.CANCELLED
            elif skipped:
                status = BlockStatus.SKIPPED
            else:
                status = BlockStatus.SUCCEEDED
            run.finish(
                self.index,
                BlockResult(
                    block=block,
                    status=status,
                    errors=tuple(self.errors),
                    duration=anyio.current_time() - start,
                    items_done=self.items_done,
                    block_items_done=self.items_done - self.additional_items_done,
                    additional_items_done=self.additional_items_done,
                ),
            )


@final
class ItemBlockWorkerPool:
    """
    N workers that process :class:`ItemBlock` s: blocks in parallel, the items of one
    block in order, every error kept.

    >>> import anyio
    >>> from throttlekit import ItemBlock
    >>> from throttlekit.testing import run
    >>> frozen = []
    >>> async def freeze(block):                        # a pre hook: fsfreeze, say
    ...     frozen.append(str(block))
    >>> async def back_up_item(item):
    ...     await anyio.sleep(1)                        # move the item's data
    >>> async def main():
    ...     blocks = [ItemBlock(["pod/web-0", "pvc/web-0"]), ItemBlock(["pod/db-0"])]
    ...     async with ItemBlockWorkerPool(workers=4) as pool:
    ...         return await pool.run(blocks, back_up_item, pre_hook=freeze)
    >>> result = run(main)                              # on virtual time
    >>> [str(b.status) for b in result.blocks], result.duration, frozen
    (['succeeded', 'succeeded'], 2.0, ['pod/web-0', 'pod/db-0'])
    >>> result.raise_for_errors()   # an ItemBlockError (an ExceptionGroup) if anything failed

    The pool is an async context manager that owns its workers in a task group; each
    :meth:`run` queues its blocks and returns a :class:`RunResult` when all are done.
    Several runs may share one pool: workers take blocks round-robin between runs, highest
    ``priority`` first. Cancelling the task awaiting a run cancels that run's blocks at
    once, and no one else's.

    The pool ends the same way whatever ends it: leaving its context, a cancelled scope
    around it, or a ``BaseException`` (``KeyboardInterrupt``, ``SystemExit``, ...) raised
    by one of your callables. No block starts any more and queued ones are reported
    cancelled; blocks in flight get ``grace_period`` seconds to finish, then are
    cancelled; every block of every run is reported exactly once. Then what ended it
    propagates, as from an anyio task group: a cancellation goes on to its scope, and
    BaseExceptions raised by callables leave the ``async with`` in a
    ``BaseExceptionGroup`` (``except* KeyboardInterrupt``), after the pool has cleaned up.
    An ``Exception`` raised by ``process`` or a hook is not fatal: it is recorded as that
    item's :class:`ItemError` and the run goes on. One raised by ``on_error`` or
    ``on_progress`` is not fatal either, and not hidden in a log: it is issued as a
    :class:`CallbackWarning`.

    ``workers`` can be changed while the pool runs (growing starts workers at once,
    shrinking never cancels a block), by hand or by :meth:`follow` from a live policy.

    It bounds how many blocks run at once (``workers``), not how fast they go: combine it
    with a :class:`RateLimiter` for bandwidth, and :class:`OperationLimits` for limits
    per kind of operation.

    Lifecycle: a primitive that owns tasks is entered once, as an anyio task group is.
    The pool owns its workers, so ``async with`` it once; entering it again (while it
    runs or after it was left) raises :class:`RuntimeError` naming the class. Create a
    new pool instead.
    """

    def __init__(self, workers: int, *, grace_period: float = 10.0) -> None:
        self._workers = check_int(workers, "workers", minimum=1)
        self._grace = check_seconds(grace_period, "grace_period", allow_inf=True)
        self._ready: dict[int, deque[_Run[Any]]] = {}
        self._runs: list[_Run[Any]] = []
        self._idle: deque[anyio.Event] = deque()
        self._busy = 0
        self._alive = 0  # worker tasks started and not yet ended (retiring ones included)
        self._followers: set[anyio.CancelScope] = set()  # follow() calls, ended on exit
        self._tasks = OwnedTaskGroup("ItemBlockWorkerPool")
        self._task_group: TaskGroup | None = None  # the open group of _tasks, once entered
        self._loop_thread: int | None = None  # the event loop's thread, once entered
        self._closing = False  # the context is being left: no new runs
        self._stopping = False  # no new blocks (closing, or a callable raised a BaseException)
        self._failures: list[BaseException] = []  # BaseExceptions raised by callables
        self._watching: anyio.CancelScope | None = None  # see _watch; made on entry
        self._threads = anyio.CapacityLimiter(workers)

    @property
    def workers(self) -> int:
        """
        How many blocks run at once, at most. Settable live (an int >= 1).

        Growing starts the new workers at once (they take queued blocks right away);
        workers are started as blocks need them, so a large count costs nothing until
        blocks fill it. Shrinking never cancels a block: idle workers retire at once and
        busy ones as they finish their current block, so for a while more blocks than
        ``workers`` may still be running (``statistics().in_use`` shows them). Threads
        for sync callables follow the same number. Setting it before the pool is entered
        sets how many blocks it runs at once from the start; after the pool has stopped,
        it changes nothing. To follow a policy that is reloaded live, see :meth:`follow`.
        Set it in the event loop's thread, or from a sync ``process`` (an anyio worker
        thread: the change is made in the loop's thread, and the call returns once it
        is); any other thread gets a :class:`RuntimeError`.
        """
        return self._workers

    @workers.setter
    def workers(self, value: int) -> None:
        count = check_int(value, "workers", minimum=1)
        if (
            self._task_group is not None
            and not self._stopping  # stopped: the setting changes nothing, from anywhere
            and threading.get_ident() != self._loop_thread
        ):
            # Another thread (a sync process in a worker thread): the pool's state lives
            # in its event loop's thread, so the change is made there.
            try:
                anyio.from_thread.run_sync(self._set_workers, count)
            except _NO_EVENT_LOOP:
                raise RuntimeError(
                    "workers can be set from the pool's event loop thread, or from a worker "
                    "thread of it (anyio.to_thread.run_sync, as the pool runs sync "
                    "process functions); this thread is neither"
                ) from None
            return
        self._set_workers(count)

    def _set_workers(self, count: int) -> None:
        self._workers = count
        self._threads.total_tokens = count
        if self._task_group is None or self._stopping:
            return
        self._grow(sum(len(run.pending) for run in self._runs))
        if self._alive > self._workers:
            for event in self._idle:  # idle workers retire now; busy ones after their block
                event.set()
            self._idle.clear()

    def _grow(self, blocks: int) -> None:
        """
        Start workers for ``blocks`` queued blocks that no idle worker was woken for, up
        to ``workers`` in all. Workers start as blocks need them, not all at entry: a
        count of 100,000,000 (a typo in a policy) costs no more than the blocks queued.
        Starting one too many is harmless (it finds nothing and waits, idle).
        """
        assert self._task_group is not None
        for _ in range(min(blocks, self._workers - self._alive)):
            self._task_group.start_soon(self._worker)
            self._alive += 1  # once started: a start that failed leaves no phantom worker

    async def __aenter__(self) -> ItemBlockWorkerPool:
        self._task_group = await self._tasks.open()  # RuntimeError if entered before
        self._loop_thread = threading.get_ident()
        # Made here, not in __init__: a pool may be created outside an event loop (at
        # import time, for a metrics registry) and entered later.
        self._watching = anyio.CancelScope()
        self._task_group.start_soon(self._watch)
        return self

    async def _watch(self) -> None:
        """
        Notice that the pool's scope is cancelled (a scope around it, or a failure): then
        no new block starts. Blocks run shielded, only the pool cancels them, so that
        blocks in flight get the grace period; workers do not notice it themselves.
        """
        try:
            assert self._watching is not None
            with self._watching:
                # An event nobody sets, not sleep_forever(): no timer, so a virtual clock
                # (throttlekit.testing) never sees an infinite deadline to jump towards.
                await anyio.Event().wait()
        finally:
            self._stopping = True

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        assert self._task_group is not None
        self._closing = self._stopping = True
        for follower in self._followers:
            follower.cancel()
        assert self._watching is not None
        self._watching.cancel()
        try:
            with anyio.CancelScope(shield=True):
                await self._shut_down()
        except BaseException as e:  # pragma: no cover - a bug in the pool itself
            self._fail(e)
        failures, self._failures = self._failures, []
        if not failures:
            return await self._tasks.close(exc_type, exc, tb)
        # A callable raised a BaseException in a worker. Raise it here, where a task group
        # would: the worker could not (on asyncio, a KeyboardInterrupt or SystemExit leaving
        # a task stops the event loop). Whatever else the task group raises joins it, but a
        # cancellation: as in anyio, the failures replace it.
        members: list[BaseException] = []
        try:
            await self._tasks.close(exc_type, exc, tb)
        except BaseExceptionGroup as group:
            members.extend(group.exceptions)
        except anyio.get_cancelled_exc_class():
            pass
        except BaseException as other:  # pragma: no cover - task groups raise groups
            members.append(other)
        members.extend(failures)
        raise BaseExceptionGroup("unhandled errors in an ItemBlockWorkerPool", members)

    async def _shut_down(self) -> None:
        """No new blocks; in-flight ones get the grace period, then are cancelled."""
        for run in self._runs:
            run.cancel_queued()
        while self._idle:
            self._idle.popleft().set()
        start = anyio.current_time()
        with anyio.move_on_after(self._grace):
            for run in list(self._runs):
                await run.done.wait()
        waited = anyio.current_time() - start
        leftover = [run for run in self._runs if not run.done.is_set()]
        if leftover:
            logger.warning(
                "pool stopping: cancelling %d unfinished blocks after waiting %.3g s",
                sum(len(r.in_flight) for r in leftover),
                waited,
            )
            for run in leftover:
                run.stop()
            for run in leftover:
                await run.done.wait()
        elif self._runs:
            logger.info("pool stopping: in-flight blocks finished in %.3g s", waited)

    def _fail(self, error: BaseException) -> None:
        """
        A callable raised a BaseException (not an Exception) in a worker: stop taking
        blocks and cancel the pool's scope, as a task group does when a child raises. The
        error is raised again when the pool's context is left.
        """
        if not any(error is f for f in self._failures):
            self._failures.append(error)
        logger.warning(
            "pool stopping: a callable raised %s; it propagates when the pool has ended",
            type(error).__name__,
        )
        self._stopping = True
        assert self._task_group is not None
        self._task_group.cancel_scope.cancel()

    def statistics(self) -> ItemBlockWorkerPoolStatistics:
        """
        A snapshot: the worker setting, workers running a block, queued blocks, runs in
        progress. It only reads.
        """
        return ItemBlockWorkerPoolStatistics(
            workers=self._workers,
            in_use=self._busy,
            queued_blocks=sum(len(r.pending) for r in self._runs),
            runs=len(self._runs),
        )

    async def follow(
        self,
        source: _Changing[V] | AsyncIterable[V],
        to_workers: Callable[[V], int] | None = None,
        *,
        task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """
        Keep :attr:`workers` in step with a live source until the pool's context is
        left, the source ends, or this task is cancelled.

        ``source`` is either a watcher (any object with a ``policy`` attribute and an
        async ``wait_for_change()`` returning the new policy, such as a
        :class:`PolicyWatcher`): its current policy is applied at once, then each new
        one; or an async iterable: each value it yields is applied. ``to_workers(value)``
        turns a value into a worker count (default: the value is the count). With a
        watcher it is typically ``lambda policy: policy.resolve(node_labels).value``
        (the recipe in the execution docs wires a :class:`PolicyWatcher` this way):

        >>> import anyio
        >>> from throttlekit.testing import run
        >>> async def counts():          # a live source: 2 workers, then 4 a second later
        ...     yield 2
        ...     await anyio.sleep(1)
        ...     yield 4
        >>> async def main():
        ...     async with ItemBlockWorkerPool(workers=1) as pool, anyio.create_task_group() as tg:
        ...         await tg.start(pool.follow, counts())
        ...         seen = [pool.workers]
        ...         await anyio.sleep(1.5)
        ...         return seen + [pool.workers]
        >>> run(main)
        [2, 4]

        With ``task_group.start(pool.follow, ...)``, the start completes once the first
        count is applied. A count that cannot be applied (``to_workers`` raises an
        :class:`Exception`, or returns something that is not an int >= 1) is reported as
        a :class:`CallbackWarning` and the pool keeps its current count; following goes
        on. What the source itself raises (a watcher that has stopped raises
        :class:`RuntimeError`) propagates. An async generator given as ``source`` is
        closed when following ends, however it ends. Following lets other tasks run
        between two values, even from a source that never waits. It lives in your task,
        not the pool's: the pool never imports the policy pillar, it only reads the
        protocol above.
        """
        if self._task_group is None and not self._closing:
            raise RuntimeError("the pool is not running: use 'async with ItemBlockWorkerPool(...)'")
        check_callable(to_workers, "to_workers", optional=True)
        watcher = callable(getattr(source, "wait_for_change", None))
        if not watcher and not isinstance(source, AsyncIterable):
            raise TypeError(
                "source must be a watcher (with policy and an async wait_for_change(), "
                "such as a PolicyWatcher) or an async iterable, got "
                f"{type(source).__name__}"
            )
        started = False

        def apply(value: V) -> None:
            nonlocal started
            try:
                count = value if to_workers is None else to_workers(value)
                self.workers = count  # type: ignore[assignment]
            except Exception as e:
                _warn_callback(f"follow: setting workers from {describe(value)}", e)
            if not started:
                started = True
                task_status.started()

        if not self._closing:
            # No task group of its own: what the source or to_workers raises leaves
            # follow() as it was raised. Leaving the pool cancels this scope.
            scope = anyio.CancelScope()
            self._followers.add(scope)
            try:
                with scope:
                    if watcher:
                        changing: _Changing[V] = source  # type: ignore[assignment]
                        apply(changing.policy)
                        while True:
                            apply(await changing.wait_for_change())
                            # A source that never waits must not hold the event loop.
                            await anyio.lowlevel.checkpoint()
                    else:
                        values: AsyncIterable[V] = source  # type: ignore[assignment]
                        await self._follow_values(values, apply)
            finally:
                self._followers.discard(scope)
        if not started:
            task_status.started()

    @staticmethod
    async def _follow_values(values: AsyncIterable[V], apply: Callable[[V], None]) -> None:
        """
        Apply each value of ``values``, letting other tasks run between values (a source
        that never waits must not hold the event loop). An async generator is closed
        when following ends, however it ends (``contextlib.aclosing``): a cancellation
        may come between two values, while it waits at a ``yield``, and an abandoned
        generator would only be finalized by the garbage collector (trio warns).
        """
        iterator = values.__aiter__()
        try:
            while True:
                try:
                    value = await iterator.__anext__()
                except StopAsyncIteration:
                    return
                apply(value)
                await anyio.lowlevel.checkpoint()
        finally:
            if inspect.isasyncgen(iterator):
                with anyio.CancelScope(shield=True):
                    await iterator.aclose()

    # -- scheduling ----------------------------------------------------------------------

    def _take(self) -> tuple[_Run[Any], int] | None:
        """The next block: highest priority first, round-robin between runs."""
        if self._stopping:
            return None
        for priority in sorted(self._ready, reverse=True):
            queue = self._ready[priority]
            while queue:
                run = queue.popleft()
                if not run.pending:
                    continue
                index = run.pending.popleft()
                if run.pending:
                    queue.append(run)
                return run, index
            del self._ready[priority]
        return None

    async def _worker(self) -> None:
        try:
            while self._alive <= self._workers:  # else: retire (the pool shrank)
                job = self._take()
                if job is None:
                    if self._stopping:
                        return
                    event = anyio.Event()
                    self._idle.append(event)
                    try:
                        await event.wait()
                    except BaseException:
                        if event in self._idle:
                            self._idle.remove(event)
                        raise
                    continue
                run, index = job
                self._busy += 1
                try:
                    await run.execute(index)
                except BaseException as e:  # a callable's BaseException; its block is reported
                    self._fail(e)
                    return
                finally:
                    self._busy -= 1
        finally:
            self._alive -= 1

    # -- running ---------------------------------------------------------------------------

    async def run(
        self,
        blocks: Iterable[ItemBlock[T]],
        process: Callable[[T], Any],
        *,
        pre_hook: Callable[[ItemBlock[T]], Any] | None = None,
        post_hook: Callable[[ItemBlock[T]], Any] | None = None,
        key: Callable[[T], Hashable] | None = None,
        additional_concurrency: int = 1,
        fail_fast: bool = False,
        on_error: Callable[[ItemError], Any] | None = None,
        on_progress: Callable[[RunProgress], Any] | None = None,
        progress_interval: float = 1.0,
        priority: int = 0,
    ) -> RunResult:
        """
        Process ``blocks`` on the pool's workers and return what became of each one.

        ``process(item)`` (async, or sync to run in a worker thread) handles one item and
        may return additional items (``None``, or an iterable such as a list; a ``str``
        or ``bytes`` is refused as that item's error), which are processed (at most
        ``additional_concurrency`` at once, recursively) before the item counts as done;
        their errors are kept under their parent. ``pre_hook(block)`` runs before a
        block's items and ``post_hook(block)`` after them when the pre hook succeeded,
        even if items failed; a failed pre hook fails the block and skips its items.
        ``key(item)`` is an item's identity: with it, an item is processed at most once
        per run, whichever block or parent it comes from (a ``key`` that raises fails
        that item). ``fail_fast=True`` cancels the rest of the run at the first error.
        ``priority``: higher runs are served first when several share the pool.

        ``on_error(item_error)`` is called as each error happens, in the task where it
        happened (the block waits for it). ``on_progress(progress)`` gets a
        :class:`RunProgress` every ``progress_interval`` seconds while the run goes, also
        while a long block is in flight (``0``: whenever something changed; ``math.inf``:
        never), and exactly once at the end with ``finished=True``; it is called from the
        task awaiting ``run``, so a slow one holds up no worker. Both may be async
        (awaited) or sync (called in the event loop: keep them quick). An Exception they
        raise does not stop the run: it is issued as a :class:`CallbackWarning` (shown on
        stderr by default; with the warning made an error, it ends the pool like a
        BaseException). ``process`` may count the bytes it moves with
        :meth:`report_bytes`.

        An Exception raised by ``process`` or a hook is recorded, never raised. A
        BaseException raised by any of these callables ends the pool (see the class);
        cancelling the task awaiting ``run`` cancels this run's blocks at once, and
        ``run`` returns only when each of them is reported.
        """
        if self._task_group is None or self._closing:
            raise RuntimeError("the pool is not running: use 'async with ItemBlockWorkerPool(...)'")
        if self._stopping:
            raise RuntimeError(
                "the pool is stopping: its scope was cancelled, or a callable raised a "
                "BaseException"
            )
        if isinstance(blocks, ItemBlock):
            raise TypeError("blocks must be an iterable of ItemBlocks, not one ItemBlock")
        block_list = list(blocks)
        for i, block in enumerate(block_list):
            if not isinstance(block, ItemBlock):
                raise TypeError(f"blocks[{i}] must be an ItemBlock, got {type(block).__name__}")
        check_callable(process, "process")
        for name, value in (
            ("pre_hook", pre_hook),
            ("post_hook", post_hook),
            ("key", key),
            ("on_error", on_error),
            ("on_progress", on_progress),
        ):
            check_callable(value, name, optional=True)
        run: _Run[T] = _Run(
            block_list,
            process,
            pre_hook=pre_hook,
            post_hook=post_hook,
            key=key,
            additional_concurrency=check_int(
                additional_concurrency, "additional_concurrency", minimum=1
            ),
            fail_fast=bool(fail_fast),
            on_error=on_error,
            on_progress=on_progress,
            progress_interval=check_seconds(progress_interval, "progress_interval", allow_inf=True),
            priority=check_priority(priority),
            started=anyio.current_time(),
            threads=self._threads,
            fail=self._fail,
        )
        self._runs.append(run)
        try:
            if run.pending:
                self._ready.setdefault(run.priority, deque()).append(run)
                woken = min(len(run.pending), len(self._idle))
                for _ in range(woken):
                    self._idle.popleft().set()
                self._grow(len(run.pending) - woken)
            if run.on_progress is not None and run.progress_interval < math.inf:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(run.report_while_running, tg.cancel_scope)
                    await run.done.wait()
                    tg.cancel_scope.cancel()
            else:
                await run.done.wait()
        except BaseException:
            with anyio.CancelScope(shield=True):
                run.stop()
                await run.done.wait()
            raise
        finally:
            self._runs.remove(run)
        now = anyio.current_time()
        if run.on_progress is not None:
            await run.report(final=True)
        results = tuple(r for r in run.results if r is not None)
        return RunResult(blocks=results, duration=now - run.started)

    @staticmethod
    def report_bytes(amount: int) -> None:
        """
        Count ``amount`` bytes moved towards the progress of the run being processed.

        Call it from ``process`` (or a hook), async or sync: it finds its run through the
        calling context, which the pool sets for each block and which anyio passes on to
        worker threads and to the tasks of additional items. Progress reports then carry
        ``bytes_done`` and ``bytes_per_second`` (``None`` in a run that never reports
        bytes). Outside a block run by a pool it raises :class:`RuntimeError`; an
        ``amount`` that is not an int from 0 to ``2**63 - 1`` is refused (TypeError,
        ValueError) and counts nothing.

        The pool cannot see bytes by itself: it runs your function, and only your
        function knows what it moved (a :class:`RateLimiter` or a throttled stream knows
        too; report from there what it granted).
        """
        amount = check_int(amount, "amount", minimum=0, maximum=_MAX_REPORTED_BYTES)
        run = _current_run.get(None)
        if run is None:
            raise RuntimeError(
                "report_bytes() is called from process or a hook while the pool runs a block"
            )
        run.add_bytes(amount)
