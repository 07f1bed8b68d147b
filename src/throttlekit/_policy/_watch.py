"""
Live reload of a policy file.

Velero's node agent reads its ConfigMap once at start; changing concurrency means a
restart. A :class:`PolicyWatcher` instead polls the file, swaps in a new policy when (and
only when) it loads, keeps the last good one otherwise, and tells subscribers, so limits
can be resized while work runs.
"""

from __future__ import annotations

import logging
import os
import stat
import warnings
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Generic, TypeVar, final, overload

import anyio
from anyio.abc import TaskStatus
from attrs import frozen

from .._checks import check_callable, check_seconds
from .._errors import CallbackWarning, ConfigError, PolicyRejectedWarning
from .._tasks import OwnedTaskGroup
from ._rules import ConcurrencyPolicy

__all__ = ["MAX_POLICY_FILE_SIZE", "PolicyWatcher", "PolicyWatcherStatistics"]

P = TypeVar("P")

logger: Final = logging.getLogger("throttlekit.watch")

#: A policy file larger than this is refused unread (a ConfigMap holds at most 1 MiB).
MAX_POLICY_FILE_SIZE: Final = 16 * 2**20

_KINDS: Final = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a named pipe"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


def _warn(warning: Warning, cause: Exception) -> None:
    """
    Issue ``warning`` with its cause attached, where it cannot be missed: Python prints it
    on stderr with no logging set up. A filter that turns it into an error makes it raise
    here, from :meth:`PolicyWatcher.check`, once the watcher's state is consistent.
    """
    warning.__cause__ = cause
    warnings.warn(warning, stacklevel=4)  # _warn, _reject or _swap, check, its caller


def _cannot_read(path: Path, why: str) -> ConfigError:
    return ConfigError(f"cannot read {path}: {why}")


def read_policy_file(path: Path) -> bytes:
    """
    The bytes of a policy file, or a :class:`ConfigError` saying why there are none.

    Only a regular file (links followed) of at most :data:`MAX_POLICY_FILE_SIZE` bytes is
    read. Opening does not block, so a named pipe without a writer, a device or a
    directory put where the file was is reported rather than read: the read happens in
    the watcher's task and must never stall the event loop or fill memory.
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise _cannot_read(path, exc.strerror or str(exc)) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            kind = next((name for test, name in _KINDS if test(info.st_mode)), "a special file")
            raise _cannot_read(path, f"it is {kind}, not a regular file")
        too_large = f"it is larger than {MAX_POLICY_FILE_SIZE} bytes"
        if info.st_size > MAX_POLICY_FILE_SIZE:
            raise _cannot_read(path, too_large)
        chunks: list[bytes] = []
        size = 0
        want = info.st_size + 1  # one read for a file that does not change meanwhile
        while chunk := os.read(fd, want):
            chunks.append(chunk)
            size += len(chunk)
            if size > MAX_POLICY_FILE_SIZE:
                raise _cannot_read(path, too_large)
            want = min(65536, MAX_POLICY_FILE_SIZE + 1 - size)
        return b"".join(chunks)
    except OSError as exc:
        raise _cannot_read(path, exc.strerror or str(exc)) from None
    finally:
        os.close(fd)


@frozen(kw_only=True)
class PolicyWatcherStatistics:
    """
    A snapshot of a :class:`PolicyWatcher`'s activity: how often it read the file, how
    many policies it swapped in and how many documents it rejected, and why the last one
    was.
    """

    #: The watched file.
    path: Path
    #: How many times the file was read.
    checks: int
    #: How many new policies were swapped in (the first load included).
    reloads: int
    #: How many changed documents were rejected (the last good policy was kept each time).
    rejections: int
    #: The most recent rejection, or ``None`` once a good document loads.
    last_error: ConfigError | None


@final
class PolicyWatcher(Generic[P]):
    """
    Keeps a policy in step with a file, without ever dropping to a bad one.

    A mounted Kubernetes ConfigMap is updated by an atomic symlink swap, so the file is
    simply re-read every ``interval`` seconds (following links) and compared with what
    was read last; this catches every kind of update, including ones that keep the
    modification time. The read is a small synchronous one in the watcher's task: policy
    files are a few kilobytes on a local or tmpfs mount, so it costs less than a trip to a
    worker thread and keeps tests on virtual time deterministic.

    * A changed document that loads replaces the policy atomically: readers of
      :attr:`policy` see either the old or the new one, never a mix, and every subscriber
      is called with the new policy.
    * A changed document that does not load (bad JSON, wrong types, a strict-mode
      problem, a missing file, a directory or a named pipe in its place, no permission,
      a file over :data:`MAX_POLICY_FILE_SIZE`, a ``load`` that raises) is reported
      once: kept in :attr:`last_error`, logged on ``throttlekit.watch``, and passed to
      ``on_error`` or, without one, issued as a :class:`PolicyRejectedWarning`, which
      Python prints on stderr with no logging set up. The last good policy stays in force.
    * User code that raises: an :class:`Exception` from ``on_error`` or a subscriber is
      logged, issued as a :class:`CallbackWarning` (once every subscriber has had the new
      policy), and the watcher goes on. A :class:`BaseException` (``KeyboardInterrupt``,
      ``SystemExit``, a cancellation...) is never swallowed: it ends the watcher's task,
      after waking everyone in :meth:`wait_for_change` (who then get a
      :class:`RuntimeError`), and leaves ``async with`` as the task group's exception.

    By default the file is read as a Velero node-agent configuration
    (:meth:`ConcurrencyPolicy.from_velero`, lenient unless ``strict=True``); pass
    ``load=`` to watch any other kind of policy, built from the file's bytes.

    Use it as an async context manager, which runs the polling task for you. Here a
    subscriber keeps an :class:`OperationLimits` in step with the node's number while an
    edit lands (on :mod:`throttlekit.testing`'s virtual clock, so the poll costs no real
    time):

    >>> import tempfile
    >>> from pathlib import Path
    >>> from throttlekit import OperationLimits
    >>> from throttlekit.testing import run
    >>> folder = tempfile.TemporaryDirectory()
    >>> path = Path(folder.name) / "node-agent-config.json"
    >>> _ = path.write_text('{"loadConcurrency": {"globalConfig": 2}}')
    >>> labels = {"kubernetes.io/hostname": "node1"}
    >>> async def node_agent():
    ...     async with PolicyWatcher(path, interval=5) as watcher:
    ...         limits = OperationLimits(total=watcher.policy.resolve(labels).value)
    ...         def resize(policy):
    ...             limits.total = policy.resolve(labels).value
    ...         watcher.subscribe(resize)
    ...         _ = path.write_text('{"loadConcurrency": {"globalConfig": 4}}')
    ...         await watcher.wait_for_change()  # watcher.policy is the latest good one
    ...         return limits.total
    >>> run(node_agent)
    4
    >>> folder.cleanup()

    Or start :meth:`run` in your own task group (``await tg.start(watcher.run)``).
    Entering loads the file once; if that first load fails, entering raises the
    :class:`ConfigError` unless a ``fallback`` policy was given.
    """

    __slots__ = (
        "_changed",
        "_checks",
        "_fallback",
        "_interval",
        "_last_data",
        "_last_error",
        "_load",
        "_on_error",
        "_path",
        "_policy",
        "_rejections",
        "_reloads",
        "_stopped",
        "_subscribers",
        "_tasks",
    )

    @overload
    def __init__(
        self: PolicyWatcher[ConcurrencyPolicy],
        path: str | os.PathLike[str],
        *,
        interval: float = ...,
        strict: bool = ...,
        fallback: ConcurrencyPolicy | None = ...,
        on_error: Callable[[ConfigError], object] | None = ...,
    ) -> None: ...

    @overload
    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        load: Callable[[bytes], P],
        interval: float = ...,
        fallback: P | None = ...,
        on_error: Callable[[ConfigError], object] | None = ...,
    ) -> None: ...

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        load: Callable[[bytes], Any] | None = None,
        interval: float = 2.0,
        strict: bool = False,
        fallback: Any = None,
        on_error: Callable[[ConfigError], object] | None = None,
    ) -> None:
        if not isinstance(path, str | os.PathLike):
            raise TypeError(f"path must be a str or path, got {type(path).__name__}")
        seconds = check_seconds(interval, "interval", allow_zero=False)
        check_callable(load, "load", optional=True)
        check_callable(on_error, "on_error", optional=True)
        if load is not None and strict:
            raise ValueError(
                "strict= applies to the default Velero loader; pass it to your load= instead"
            )
        if load is None:

            def load(data: bytes) -> ConcurrencyPolicy:
                return ConcurrencyPolicy.from_velero(data, strict=strict)

        self._path = Path(path)
        self._load: Callable[[bytes], Any] = load
        self._interval = seconds
        self._fallback = fallback
        self._on_error = on_error
        self._policy: Any = None
        self._last_data: bytes | None = None
        self._last_error: ConfigError | None = None
        self._subscribers: list[Callable[[Any], object]] = []
        self._checks = 0
        self._reloads = 0
        self._rejections = 0
        self._changed: anyio.Event | None = None  # created by the first waiter
        self._stopped = False  # run() has ended: no change can come any more
        self._tasks = OwnedTaskGroup("PolicyWatcher")  # entered once, as the pool

    # -- state ------------------------------------------------------------------------

    @property
    def path(self) -> Path:
        """The watched file."""
        return self._path

    @property
    def policy(self) -> P:
        """The policy in force: the last one that loaded (or the fallback)."""
        if self._policy is None:
            raise RuntimeError("no policy loaded yet: enter the watcher or call check() first")
        policy: P = self._policy
        return policy

    @property
    def last_error(self) -> ConfigError | None:
        """Why the latest changed document was rejected; ``None`` once a good one loads."""
        return self._last_error

    def statistics(self) -> PolicyWatcherStatistics:
        """A snapshot of what the watcher has done so far."""
        return PolicyWatcherStatistics(
            path=self._path,
            checks=self._checks,
            reloads=self._reloads,
            rejections=self._rejections,
            last_error=self._last_error,
        )

    def subscribe(self, callback: Callable[[P], object]) -> Callable[[], None]:
        """
        Call ``callback(new_policy)`` after every swap; returns a function that
        unsubscribes.

        Callbacks run in the watcher's task and should be quick (resize a limit, set a
        rate). An :class:`Exception` from a callback does not stop the watcher or the
        other callbacks: it is logged and issued as a :class:`CallbackWarning`. Anything
        else (``KeyboardInterrupt``, ``SystemExit``, a cancellation) is not swallowed: the
        new policy stays in force, waiters are woken, and it propagates out of
        :meth:`check` and the watcher's task.
        """
        check_callable(callback, "callback")
        self._subscribers.append(callback)

        def unsubscribe() -> None:
            if callback in self._subscribers:
                self._subscribers.remove(callback)

        return unsubscribe

    # -- the sans-loop step -------------------------------------------------------------

    def check(self) -> bool:
        """
        Read the file once and swap in a new policy if it changed and loads.

        Returns whether a new policy was swapped in. It never raises for a bad file once
        a policy is in force, whatever is wrong with it (unreadable, vanished, a
        directory, not UTF-8, nested too deep...); nor when ``load`` raises an
        :class:`Exception` of its own (it becomes the :class:`ConfigError`'s cause). The
        problem goes to :attr:`last_error`, the log and ``on_error`` (or a
        :class:`PolicyRejectedWarning`). This is the whole polling step, usable without an
        event loop. A warnings filter that turns throttlekit's warnings into errors
        (``-W error``, pytest's ``filterwarnings = error``) makes them raise from here,
        after the state is updated and every subscriber was called.
        """
        self._checks += 1
        try:
            data = read_policy_file(self._path)
        except ConfigError as unreadable:
            if self._last_data is None and str(unreadable) == str(self._last_error):
                return False  # the same read failure as on the last poll: reported already
            self._reject(None, unreadable)
            return False
        if data == self._last_data:
            return False  # unchanged: already in force, or already rejected
        try:
            policy = self._load(data)
        except ConfigError as exc:
            self._reject(data, exc)
            return False
        except Exception as exc:  # a loader's own failure: this file is not usable either
            failed = ConfigError(f"{self._path}: the loader failed: {type(exc).__name__}: {exc}")
            failed.__cause__ = exc
            self._reject(data, failed)
            return False
        self._last_data = data
        self._last_error = None
        self._swap(policy)
        return True

    def _reject(self, data: bytes | None, error: ConfigError) -> None:
        self._last_data = data
        self._last_error = error
        self._rejections += 1
        if self._policy is not None:
            kept = "keeping the last good policy"
        elif self._fallback is not None:
            kept = "using the fallback policy"
        else:
            kept = "no policy yet"
        logger.warning("%s rejected (%s): %s", self._path, kept, error)
        if self._on_error is None:
            # Without a policy or a fallback, entering raises this error: no warning too.
            if self._policy is not None or self._fallback is not None:
                rejected = PolicyRejectedWarning(f"{self._path} rejected ({kept}): {error}")
                _warn(rejected, error)
            return
        try:
            self._on_error(error)
        except Exception as exc:
            logger.exception("%s: the on_error callback %r failed", self._path, self._on_error)
            failed = CallbackWarning(
                f"{self._path}: the on_error callback {self._on_error!r} raised "
                f"{type(exc).__name__}: {exc}; the watcher goes on"
            )
            _warn(failed, exc)

    def _swap(self, policy: Any) -> None:
        self._policy = policy
        self._reloads += 1
        logger.info("%s: new policy in force", self._path)
        failures: list[tuple[Callable[[Any], object], Exception]] = []
        try:
            for callback in list(self._subscribers):
                try:
                    callback(policy)
                except Exception as exc:
                    logger.exception("policy subscriber %r failed", callback)
                    failures.append((callback, exc))
        finally:  # wake the waiters even when a callback raises a BaseException
            self._wake()
        for callback, error in failures:  # once every subscriber has had the new policy
            failed = CallbackWarning(
                f"{self._path}: the policy subscriber {callback!r} raised "
                f"{type(error).__name__}: {error}; the new policy is in force and the watcher "
                "goes on"
            )
            _warn(failed, error)

    def _wake(self) -> None:
        changed, self._changed = self._changed, None
        if changed is not None:
            changed.set()

    # -- async use ----------------------------------------------------------------------

    async def wait_for_change(self) -> P:
        """
        Wait until the next new policy is swapped in, and return it.

        Raises :class:`RuntimeError` if the watcher's task has ended (or ends while
        waiting), since no change can come any more: nothing waits forever on a watcher
        that stopped, whatever stopped it.
        """
        if self._stopped:
            raise RuntimeError(f"the PolicyWatcher for {self._path} has stopped")
        reloads = self._reloads
        if self._changed is None:
            self._changed = anyio.Event()
        await self._changed.wait()
        if self._reloads == reloads:
            raise RuntimeError(f"the PolicyWatcher for {self._path} stopped")
        return self.policy

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """
        Load the file, then poll it every ``interval`` seconds until cancelled.

        With ``task_group.start(watcher.run)``, the start completes once the first
        policy is in force (or raises its :class:`ConfigError` if there is no fallback).
        A bad file never ends it; a :class:`BaseException` from ``load``, ``on_error``
        or a subscriber does, propagating from here once waiters are woken.
        """
        self._stopped = False
        try:
            self._load_initial()
            task_status.started()
            while True:
                await anyio.sleep(self._interval)
                self.check()
        finally:
            self._stopped = True
            self._wake()

    def _load_initial(self) -> None:
        if self._policy is not None:
            return
        self.check()
        if self._policy is None:
            if self._fallback is None:
                assert self._last_error is not None
                raise self._last_error
            self._swap(self._fallback)

    async def __aenter__(self) -> PolicyWatcher[P]:
        if self._tasks.is_open:
            raise RuntimeError("this PolicyWatcher is already running")
        self._load_initial()  # before the task group, so a failure is a plain ConfigError
        await self._tasks.open(lambda task_group: task_group.start(self.run))
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        return await self._tasks.close(exc_type, exc, tb, cancel=True)
