"""
RateLimiter: one token bucket shared by tasks (asyncio or trio) and threads.

All decisions are made by the sans-I/O core: :class:`~._bucket.TokenBucket` (the token
maths: credit, and turns of at most one burst) and :class:`~._line.WaiterLine` (who is
woken and when, the rate in force, schedule boundaries, refunds, snapshots). This module
holds the lock, reads the clocks, sleeps and wakes, and checks arguments at the entry
points.

How waiting works, and why:

* **One timer, for the next waiter due.** The bucket knows who will be done next and
  when; only that waiter sleeps until an exact moment. A request of at most one burst
  learns its moment when it joins the line (later arrivals cannot delay it) and sleeps
  until then; a larger request, whose later turns wait for those who come after it,
  sleeps until it is the next due. So a grant costs about one wake-up, whatever its size,
  with no polling and no thundering herd.
* **Anything that changes the line re-times the next due.** A refund, a new rate or
  burst, or a schedule boundary recomputes it and wakes it if it sleeps too long; a waiter
  that wakes early (its moment moved later) goes back to sleep until it is due.
* **Cancellation refunds.** A waiter that leaves the line (cancelled, timed out, or
  granted but cancelled before it could return) gives back what it was not yet served.
* **Threads of cancelled tasks stop.** A thread that an anyio task started
  (:func:`anyio.to_thread.run_sync`) cannot be interrupted, so while it waits it looks
  every ``CANCEL_SLICE`` seconds whether that task was cancelled, and raises the
  task's cancellation if so: sync work stops at its next throttle call.
* **One lock and one timeline per tree.** A limiter and all its descendants share one
  ``threading.Lock``, held only for the arithmetic, never across a wait, and one
  :class:`Timeline`: so tasks and threads share one budget, and a chain of limiters is
  charged consistently.

The clocks rule (which clock a limiter follows):

* ``clock=`` given: that clock, for every task and thread, always.
* Otherwise :func:`time.monotonic`, for threads and for tasks on runtimes whose clock is
  real time: asyncio's own event loops (and uvloop), and trio's default clock (which is
  real time plus a random offset: reading the monotonic clock instead makes the offset
  irrelevant). Every runtime then shares one timeline, whatever the mix.
* A task on a runtime with a clock of its own (a virtual clock in tests: trio's
  ``MockClock``, :class:`~throttlekit.testing.VirtualTimeEventLoop`, or any other loop or
  trio clock) makes the whole tree follow that clock from then on, so virtual time is
  exact; threads then read it too, as long as that runtime runs. A task on a real-time
  runtime, or a thread once the virtual run has ended, switches the tree back to the
  monotonic clock. Each switch continues the timeline from its last reading, so time
  never jumps; sharing one limiter between a virtual-time runtime and real-time code at
  the same moment is not meaningful (it follows whichever used it last).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import math
import sys
import threading
import time
import warnings
import weakref
from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime, timedelta
from typing import Any, Final, final

import anyio
import anyio.lowlevel
from attrs import frozen

from .._checks import check_callable, check_number, check_seconds
from ._hostcancel import CANCEL_SLICE, host_cancel_check
from ._line import Waiter, WaiterLine, take_along
from ._schedule import Schedule
from ._units import Rate, check_rate_number

__all__ = ["RateLimiter", "RateLimiterStatistics", "ThreadSignal", "Timeline", "task_signal"]

_DEFAULT_BURST: Final = timedelta(seconds=0.1)
_MAX_FLOAT: Final = sys.float_info.max
# The longest single sleep: a waiter whose moment is further away (a huge amount) looks
# again then. Threads could not sleep longer (threading.TIMEOUT_MAX) anyway.
_MAX_SLEEP: Final = 86400.0
# How often a thread waiting on behalf of an anyio task (a worker thread) looks whether
# that task was cancelled, in real seconds: the bound on how late it notices.

RateSpec = Rate | Schedule | str | float

_get_running_loop = asyncio._get_running_loop
_current_task = asyncio.current_task
_BASE_LOOP_TIME: Final = asyncio.BaseEventLoop.time
_REAL_LOOP_MODULES: Final = frozenset({"uvloop", "winloop"})


def _wall_now() -> datetime:
    """The wall-clock time that schedules are read at (patched in tests)."""
    return datetime.now().astimezone()


def _coerce_rate(value: object) -> Rate | Schedule:
    if isinstance(value, Rate | Schedule):
        return value
    if isinstance(value, str):
        return Schedule.parse(value) if "," in value else Rate.parse(value)
    return Rate(per_second=check_rate_number(value, "rate"), kind="units")


def check_amount(amount: object) -> float:
    """An amount to take: a finite number >= 0 (every entry point checks it)."""
    value = check_number(amount, "amount")
    if not (0 <= value < math.inf):
        raise ValueError(f"amount must be a finite number >= 0, got {amount!r}")
    return value


def _coerce_burst(value: object) -> float | timedelta:
    if isinstance(value, timedelta):
        if value <= timedelta(0):
            raise ValueError(f"burst must be a positive duration, got {value!r}")
        return value
    number = check_number(value, "burst", "an amount (a number) or a duration (timedelta)")
    if not (math.isfinite(number) and number > 0):
        raise ValueError(f"burst must be a finite amount > 0, got {value!r}")
    return number


@frozen(kw_only=True)
class RateLimiterStatistics:
    """
    A snapshot of a :class:`RateLimiter`, from :meth:`RateLimiter.statistics`: its
    settings, its credit, who waits, and what it granted.

    Taking it changes nothing: a waiter whose moment has come shows as granted here
    even before it has woken up.
    """

    #: The rate in force.
    rate: Rate
    #: The burst: the most credit the limiter holds.
    burst: float
    #: The credit at the moment of the snapshot: negative while waiters are in line
    #: (what they asked for and have not been served yet).
    tokens: float
    #: The tasks and threads in line (anyio's name, used by every throttlekit
    #: primitive).
    tasks_waiting: int
    #: Amounts granted, net of refunds.
    total_granted: float
    #: Seconds waiters spent in line, summed over waiters.
    total_waited: float

    @property
    def waiters(self) -> int:
        """Deprecated (kept for one release): the old name of :attr:`tasks_waiting`."""
        warnings.warn(
            "RateLimiterStatistics.waiters is deprecated; use tasks_waiting (the name "
            "every throttlekit primitive and anyio use)",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.tasks_waiting


# -- time ------------------------------------------------------------------------------------


@final
class Timeline:
    """
    One limiter tree's time, read from whichever clock it follows at the moment: the
    sans-I/O part of the clocks rule (see the module docstring).

    :meth:`at` turns a reading of the clock followed into time on the line, which never
    goes back. :meth:`follow` switches to another clock, continuing from the last time
    on the line: so the line advances exactly as the clock it follows, and never jumps.
    Clocks with different origins (trio's offset clock and the monotonic clock, or two
    virtual clocks) can neither grant idle time that never passed nor take time back; the
    time between the old clock's last reading and the switch is not counted, which can
    only make the limiter slower, never faster, and keeps virtual time exact when a
    limiter made outside a test's virtual run is used inside it.

    >>> line = Timeline()
    >>> line.at(100.0), line.at(101.5)        # the first clock: its own origin
    (100.0, 101.5)
    >>> line.follow(7.0)                      # another clock, which reads 7.0 now
    101.5
    >>> line.at(8.0)                          # one second later on the new clock
    102.5
    >>> line.at(7.5)                          # a clock never takes the line back
    102.5
    """

    __slots__ = ("last", "offset")

    def __init__(self) -> None:
        self.offset = 0.0
        self.last = -math.inf

    def at(self, raw: float) -> float:
        """``raw``, read from the clock followed, as time on the line (never going back)."""
        now = raw + self.offset
        if now > self.last:
            self.last = now
            return now
        return self.last

    def follow(self, raw: float) -> float:
        """Follow a clock that reads ``raw`` now, from the last time on the line on."""
        if self.last == -math.inf:
            self.offset, self.last = 0.0, raw  # nothing read yet: its own origin
        else:
            self.offset = self.last - raw
        return self.last


def _loop_is_real(loop: asyncio.AbstractEventLoop) -> bool:
    """Whether an asyncio loop's clock is the monotonic clock (asyncio's own, uvloop)."""
    cls = type(loop)
    return (
        getattr(cls, "time", None) is _BASE_LOOP_TIME
        or cls.__module__.partition(".")[0] in _REAL_LOOP_MODULES
    )


def _trio_clock_is_real(clock: object) -> bool:
    """Whether a trio run's clock is trio's default one (real time plus an offset)."""
    cls = type(clock)
    return cls.__name__ == "SystemClock" and cls.__module__.startswith("trio.")


def _trio_run_alive() -> Callable[[], bool]:
    """A test of whether the current trio run is still going, usable from any thread."""
    import trio

    coro = trio.lowlevel.current_root_task().coro  # type: ignore[union-attr]
    ref = weakref.ref(coro)

    def alive() -> bool:
        c = ref()
        return c is not None and inspect.getcoroutinestate(c) != inspect.CORO_CLOSED

    return alive


class _Tree:
    """What a limiter shares with its ancestors and descendants: one lock, one timeline."""

    __slots__ = ("alive", "clock", "lock", "loop", "owner", "read", "timeline", "trio_clock")

    def __init__(self, clock: Callable[[], float] | None) -> None:
        self.lock = threading.Lock()
        self.clock = clock
        self.timeline = Timeline()
        # The clock followed: clock= if given, else monotonic or a runtime's own clock.
        self.read: Callable[[], float] = time.monotonic if clock is None else clock
        self.owner: object = None  # the loop or trio clock whose clock is followed
        self.alive: Callable[[], bool] | None = None  # whether ``owner`` still runs
        self.loop: object = None  # the asyncio loop last seen, known to agree with read
        self.trio_clock: object = None  # likewise for trio

    def now(self) -> float:
        """The time on the line, for the calling task or thread; call with the lock held."""
        if self.clock is None:
            loop = _get_running_loop()
            if loop is not None:
                if loop is not self.loop:
                    self.enter_loop(loop)
            else:
                # trio only if it is imported (fully: another thread may be importing it)
                lowlevel = getattr(sys.modules.get("trio"), "lowlevel", None)
                clock = None
                if lowlevel is not None:
                    with contextlib.suppress(RuntimeError):
                        clock = lowlevel.current_clock()
                if clock is not None:
                    if clock is not self.trio_clock:
                        self.enter_trio(clock)
                elif self.alive is not None and not self.alive():
                    self.follow(None, time.monotonic, None)  # the virtual run has ended
        return self.timeline.at(self.read())

    def enter_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        """A task on ``loop`` reads the time: follow its clock if it has its own."""
        if _loop_is_real(loop):
            if self.owner is not None:
                self.follow(None, time.monotonic, None)
        elif self.owner is not loop:
            self.follow(loop, loop.time, loop.is_running)
        self.loop = loop

    def enter_trio(self, clock: Any) -> None:
        """A trio task reads the time: follow the run's clock if it is not real time."""
        if _trio_clock_is_real(clock):
            if self.owner is not None:
                self.follow(None, time.monotonic, None)
        elif self.owner is not clock:
            self.follow(clock, clock.current_time, _trio_run_alive())
        self.trio_clock = clock

    def follow(
        self, owner: object, read: Callable[[], float], alive: Callable[[], bool] | None
    ) -> None:
        self.timeline.follow(read())
        self.read, self.owner, self.alive = read, owner, alive
        self.loop = self.trio_clock = None


# -- waking ------------------------------------------------------------------------------


class _Waiter(Waiter):
    """One caller in line at one limiter, with the signal that wakes it."""

    __slots__ = ("signal",)

    def __init__(self, amount: float, now: float, signal: _Signal) -> None:
        super().__init__(amount, now)
        self.signal = signal


def _sleep_for(seconds: float) -> float:
    """A sleep that every runtime accepts: huge finite waits are taken a day at a time."""
    if seconds > _MAX_SLEEP and seconds != math.inf:
        return _MAX_SLEEP
    return max(seconds, 0.0)


class _Signal:
    """Wakes one sleeping waiter, from any thread. ``arm`` is called with the lock held."""

    __slots__ = ()

    def arm(self) -> None:
        raise NotImplementedError

    def fire(self) -> None:
        raise NotImplementedError


class ThreadSignal(_Signal):
    __slots__ = ("event",)

    def __init__(self) -> None:
        self.event = threading.Event()

    def arm(self) -> None:
        self.event.clear()

    def wait(self, timeout: float) -> None:
        self.event.wait(None if math.isinf(timeout) else timeout)

    def fire(self) -> None:
        self.event.set()


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class _AsyncioSignal(_Signal):
    """
    A bare future and a loop timer: far cheaper than a cancel scope's deadline, which on
    asyncio wakes the task by cancelling it.
    """

    __slots__ = ("_loop", "_thread", "future")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._thread = threading.get_ident()
        self.future: asyncio.Future[None] = loop.create_future()

    def arm(self) -> None:
        if self.future.done():
            self.future = self._loop.create_future()

    async def wait(self, timeout: float) -> None:
        future = self.future
        if future.done():
            return
        timer = None if math.isinf(timeout) else self._loop.call_later(timeout, _resolve, future)
        try:
            await future
        finally:
            if timer is not None:
                timer.cancel()

    def _set(self) -> None:
        _resolve(self.future)

    def fire(self) -> None:
        if threading.get_ident() == self._thread:
            _resolve(self.future)
            return
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
            self._loop.call_soon_threadsafe(self._set)


class _TrioSignal(_Signal):
    """An event and a cancel-scope deadline, which trio makes cheap."""

    __slots__ = ("_call_soon", "_thread", "event")

    def __init__(self) -> None:
        import trio  # only ever needed when running on trio

        self.event = anyio.Event()
        self._thread = threading.get_ident()
        self._call_soon = trio.lowlevel.current_trio_token().run_sync_soon

    def arm(self) -> None:
        if self.event.is_set():
            self.event = anyio.Event()

    async def wait(self, timeout: float) -> None:
        with anyio.move_on_after(timeout):
            await self.event.wait()

    def _set(self) -> None:
        self.event.set()

    def fire(self) -> None:
        if threading.get_ident() == self._thread:
            self.event.set()
            return
        with contextlib.suppress(RuntimeError):  # a closed run: nobody waits any more
            self._call_soon(self._set)


def task_signal() -> _AsyncioSignal | _TrioSignal:
    loop = _get_running_loop()
    return _TrioSignal() if loop is None else _AsyncioSignal(loop)


def _fire(waiters: Iterable[_Waiter], skip: _Waiter | None = None) -> None:
    for w in waiters:
        if w is not skip:
            w.signal.fire()


# -- cancellation points -----------------------------------------------------------------


class _AnyioScopes:
    """
    A cheap answer to "could an anyio cancel scope cancel the current asyncio task?".

    anyio's own ``checkpoint_if_cancelled`` answers it by looking the task up in a weak
    dictionary, which raises and catches KeyError for every task anyio does not manage (a
    plain ``asyncio.run``), and costs more than a whole uncontended acquire. Here the same
    walk up the task's scopes is done inline, and anyio's checkpoint is awaited only when
    a scope is cancelled, so anyio still delivers the cancellation its way. If anyio's
    internals ever differ from what is checked here, every acquire simply takes anyio's
    public checkpoint.
    """

    __slots__ = ("checkpoint", "data", "exact", "key")

    def __init__(self) -> None:
        self.checkpoint: Callable[[], Awaitable[None]] = anyio.lowlevel.checkpoint_if_cancelled
        # anyio's per-task states; while it is empty, no task has an anyio scope. If
        # anyio's internals are not what this expects, it stays non-empty and inexact:
        # every acquire then asks anyio.
        self.data: dict[Any, Any] = {None: None}
        self.exact = False
        # A weak reference to the last task looked up, kept to look it up again: it
        # caches the task's hash, so the next lookup makes no new reference.
        self.key: weakref.ref[asyncio.Task[Any]] | None = None
        try:
            from anyio._backends import _asyncio as backend

            self.checkpoint = backend.AsyncIOBackend.checkpoint_if_cancelled
            data = getattr(backend._task_states, "data", None)
            scope = backend.CancelScope()
            names = ("_cancel_called", "_shield", "_parent_scope")
            if isinstance(data, dict) and all(hasattr(scope, name) for name in names):
                self.data, self.exact = data, True
        except (ImportError, AttributeError):  # pragma: no cover - another anyio
            pass

    def cancelled(self, task: asyncio.Task[Any]) -> bool:
        """Whether a scope around ``task`` has been cancelled (not shielded from it)."""
        if not self.exact:
            return True  # cannot tell: let anyio check
        data = self.data
        if not data:
            return False  # anyio manages no task at all
        key = self.key
        if key is None or key() is not task:
            key = self.key = weakref.ref(task)
        state = data.get(key)
        if state is None:
            return False
        scope = state.cancel_scope
        while scope is not None:
            if scope._cancel_called:
                return True
            if scope._shield:
                return False
            scope = scope._parent_scope
        return False


_scopes: _AnyioScopes | None = None


def _load_scopes() -> _AnyioScopes:
    global _scopes
    _scopes = _AnyioScopes()
    return _scopes


async def _asyncio_cancel_point(task: asyncio.Task[Any]) -> None:
    """Raise the cancellation pending for ``task``: a ``task.cancel()`` or an anyio scope."""
    if getattr(task, "_must_cancel", False):
        await asyncio.sleep(0)  # delivers the pending task.cancel()
    await (_scopes or _load_scopes()).checkpoint()


async def _other_cancel_point() -> None:
    trio = sys.modules.get("trio")
    if trio is not None:
        await trio.lowlevel.checkpoint_if_cancelled()
    else:  # pragma: no cover - anyio runs on asyncio and trio only
        await anyio.lowlevel.checkpoint_if_cancelled()


# -- the limiter -------------------------------------------------------------------------


@final
class RateLimiter:
    """
    A token-bucket rate limit that tasks (asyncio or trio) and threads share: at most
    ``rate`` per second on average, and never more than ``burst`` at once.

    >>> import anyio
    >>> limiter = RateLimiter("10MiB/s")              # burst: 0.1 s of rate, starts empty
    >>> async def send(chunk: bytes) -> None:
    ...     await limiter.acquire(len(chunk))          # waits its turn, then charges
    ...     ...                                        # send the chunk
    >>> anyio.run(send, b"x" * 65536)
    >>> limiter.statistics().total_granted
    65536.0

    **What it guarantees.** Over any interval, the limiter serves at most ``rate x
    interval + burst``, and with callers always waiting it is the rate exactly. Waiters
    are served in turns of at most one burst, in order of arrival: requests up to the
    burst are first come, first served; a larger one is served one burst per turn and
    goes back in line, so it neither starves nor is starved by small ones, and while
    several wait each request gets one turn per round (a share per request, not per
    caller). A request is handed out whole once all of it has been served, so what it
    releases counts against the time it was served over: ``acquire`` of more than the
    burst returns no sooner than ``(amount - burst) / rate`` seconds after it asked. Any
    finite amount works, at the cost of a small one: no pieces, no per-burst wake-ups,
    constant memory; an amount too large ever to be served (``1e300``) simply waits,
    cancellable. Waiting is a sleep until the waiter's own moment: no polling. Cancelling
    a waiter (a timeout) gives back what it had not been served, so others lose nothing.

    Give ``rate`` as a :class:`Rate`, rate text (``"80Mbit/s"``), a number of units per
    second, or a :class:`Schedule` (also as text: ``"08:00,1MiB/s 18:00,off"``).
    ``burst`` is an amount, or a :class:`~datetime.timedelta` of the rate (default 0.1 s
    of the rate, at least 1, following rate changes); credit never exceeds it, so an idle
    period never lets more than one burst through. ``full=True`` starts with a full
    burst instead of empty. ``parent`` is a limiter every acquire is also charged to, so a
    chain (stream < job < host < site) keeps each level under its own rate and the children
    together under the parent's; an acquire is served level by level (here, then by the
    parent), so pieces of about a burst cross a chain at its slowest rate, while one
    amount of many bursts waits its time at each level in turn. ``clock`` is a function
    returning seconds, for threads in tests; by default :func:`time.monotonic`, or the
    event loop's clock when it keeps virtual time (the clocks rule: see this module's
    docstring and "Threads and tasks together" in the throttle docs).

    **Three ways in.** ``await acquire(n)`` in tasks, ``acquire_blocking(n, timeout=None)``
    in threads (in an anyio worker thread it is also a cancellation point of the task
    that started the thread), and ``acquire_nowait(n)``, which raises
    :class:`anyio.WouldBlock` instead of waiting. Change ``limiter.rate`` (or ``burst``)
    at any time: waiters are re-timed at once. Reading them, or :meth:`statistics`, only
    reads.

    It limits a rate, not concurrency: for "at most N at once" use
    :class:`OperationLimits` or :class:`anyio.CapacityLimiter`.
    """

    __slots__ = ("__weakref__", "_chain", "_line", "_lines", "_parent", "_tree")

    def __init__(
        self,
        rate: RateSpec,
        *,
        burst: float | timedelta | None = None,
        parent: RateLimiter | None = None,
        clock: Callable[[], float] | None = None,
        full: bool = False,
    ) -> None:
        spec = _coerce_rate(rate)
        burst_spec = _DEFAULT_BURST if burst is None else _coerce_burst(burst)
        if parent is not None and not isinstance(parent, RateLimiter):
            raise TypeError(f"parent must be a RateLimiter or None, got {type(parent).__name__}")
        check_callable(clock, "clock", optional=True)
        self._tree: _Tree
        if parent is not None:
            if clock is not None and clock is not parent._tree.clock:
                raise ValueError(
                    "clock: a child limiter must use its parent's clock; leave clock= out "
                    "and it will"
                )
            self._tree = parent._tree
        else:
            self._tree = _Tree(clock)
        self._parent = parent
        self._chain: tuple[RateLimiter, ...] = (self, *(parent._chain if parent else ()))
        wall = _wall_now() if isinstance(spec, Schedule) else None
        with self._tree.lock:
            self._line: WaiterLine[_Waiter] = WaiterLine(
                spec, burst_spec, self._tree.now(), wall=wall, full=full
            )
        self._lines = tuple(level._line for level in self._chain)

    # -- configuration -------------------------------------------------------------------

    @property
    def rate(self) -> Rate:
        """
        The rate in force now. Set it to a :class:`Rate`, text, a number or a
        :class:`Schedule` to change it live; waiters are re-timed at once.

        Reading it only reads: a schedule boundary that has passed shows here at once,
        and is applied to the line (waking whoever it concerns) by the next acquire or
        wake-up.
        """
        tree = self._tree
        with tree.lock:
            return self._line.rate_at(tree.now())

    @rate.setter
    def rate(self, value: RateSpec) -> None:
        spec = _coerce_rate(value)
        wall = _wall_now() if isinstance(spec, Schedule) else None
        tree = self._tree
        with tree.lock:
            fire = self._line.set_source(spec, tree.now(), wall)
        _fire(fire)

    @property
    def schedule(self) -> Schedule | None:
        """The schedule the rate follows, or ``None`` for a fixed rate."""
        return self._line.schedule

    @property
    def burst(self) -> float:
        """
        The most that can pass at once, now (a duration burst follows the rate). Set an
        amount or a duration to change it; waiters are re-timed at once.
        """
        tree = self._tree
        with tree.lock:
            return self._line.burst_at(tree.now())

    @burst.setter
    def burst(self, value: float | timedelta) -> None:
        spec = _coerce_burst(value)
        tree = self._tree
        with tree.lock:
            fire = self._line.set_burst(spec, tree.now())
        _fire(fire)

    @property
    def parent(self) -> RateLimiter | None:
        """The limiter every acquire is also charged to, if any."""
        return self._parent

    # -- the line: the waiting loop, in steps shared by tasks and threads ----------------

    def _refund_granted(self, amount: float) -> None:
        """Give back ``amount`` granted here but not used (a later level gave up)."""
        tree = self._tree
        with tree.lock:
            fire = self._line.refund(amount, tree.now())
        _fire(fire)

    def _enter(self, amount: float, signal: _Signal) -> _Waiter:
        tree = self._tree
        with tree.lock:
            now = tree.now()
            w = _Waiter(amount, now, signal)
            fire = self._line.enter(w, now)
        _fire(fire, skip=w)
        return w

    def _next_sleep(self, w: _Waiter, signal: _Signal, deadline: float = math.inf) -> float | None:
        """
        How long ``w`` sleeps next, or None once it is granted; :class:`TimeoutError`
        once ``deadline`` (on the timeline) has come and it is not.
        """
        tree = self._tree
        with tree.lock:
            if w.done:
                return None
            now = tree.now()
            seconds = self._line.sleep_for(w, now)
            assert seconds is not None
            if deadline != math.inf:
                if now >= deadline:
                    raise TimeoutError(
                        f"acquire_blocking({w.amount:g}) timed out; what it was not served "
                        "was given back"
                    )
                seconds = min(seconds, deadline - now)
            signal.arm()
            return _sleep_for(seconds)

    def _after_sleep(self, w: _Waiter) -> None:
        tree = self._tree
        with tree.lock:
            fire = self._line.woke(w, tree.now())
        _fire(fire, skip=w)

    def _abandon(self, w: _Waiter) -> None:
        """``w`` gives up (cancelled): give back what it was not served, or its grant."""
        tree = self._tree
        with tree.lock:
            fire = self._line.leave(w, tree.now())
        _fire(fire, skip=w)

    # -- async -----------------------------------------------------------------------------

    async def acquire(self, amount: float = 1) -> None:
        """
        Wait until ``amount`` may pass, and charge it (to every limiter in the chain).

        A cancellation point (an anyio cancel scope that is cancelled, or a pending
        ``task.cancel()``, raises before anything is charged) that does not yield to
        other tasks when it need not wait. If cancelled while waiting, what it had not
        been served is given back. For a deadline, wrap it in :func:`anyio.fail_after`
        or :func:`anyio.move_on_after`.
        """
        cls = amount.__class__
        if not ((cls is int or cls is float) and 0 <= amount <= _MAX_FLOAT):
            amount = check_amount(amount)  # NaN, inf, ints too large for a float, others
        # The fast path is inlined: this runs for every chunk of every stream.
        tree = self._tree
        loop = _get_running_loop()
        if loop is not None:
            task = _current_task(loop)
            scopes = _scopes or _load_scopes()
            if task is not None and (
                getattr(task, "_must_cancel", False) or (scopes.data and scopes.cancelled(task))
            ):
                await _asyncio_cancel_point(task)
            lock = tree.lock
            lock.acquire()
            try:
                if loop is not tree.loop and tree.clock is None:
                    tree.enter_loop(loop)
                timeline = tree.timeline
                now = tree.read() + timeline.offset
                if now > timeline.last:
                    timeline.last = now
                else:
                    now = timeline.last
                if self._parent is None:
                    line = self._line
                    if now < line.switch_at and line.bucket.try_take(amount, now):
                        line.granted += amount
                        return
                else:
                    taken, fire = take_along(self._lines, amount, now)
                    _fire(fire)  # only schedules wake-ups: safe under the lock
                    if taken:
                        return
            finally:
                lock.release()
        else:
            await _other_cancel_point()
            with tree.lock:
                taken, fire = take_along(self._lines, amount, tree.now())
            _fire(fire)
            if taken:
                return
        await self._acquire_slow(amount)

    async def _acquire_slow(self, amount: float) -> None:
        await self._wait_here(amount)
        if self._parent is not None:
            try:
                await self._parent._acquire_slow(amount)
            except BaseException:
                self._refund_granted(amount)
                raise

    async def _wait_here(self, amount: float) -> None:
        signal = task_signal()
        w = self._enter(amount, signal)
        try:
            while (timeout := self._next_sleep(w, signal)) is not None:
                await signal.wait(timeout)
                self._after_sleep(w)
        except BaseException:
            self._abandon(w)
            raise

    # -- threads and no waiting ---------------------------------------------------------

    def acquire_blocking(
        self, amount: float = 1, *, timeout: float | timedelta | None = None
    ) -> None:
        """
        :meth:`acquire` for threads: block the calling thread until ``amount`` may pass,
        and charge it. Shares the budget and the line with tasks.

        ``timeout``: the most seconds (or a :class:`~datetime.timedelta`) to wait, on
        the limiter's clock; ``None`` (the default) or ``math.inf`` waits as long as it
        takes. When it runs out, :class:`TimeoutError` is raised and what the request
        was not served is given back, as for a cancelled :meth:`acquire`: nobody behind
        it loses anything. ``timeout=0`` takes ``amount`` only if it may pass at once.

        **In a worker thread of an anyio task** (:func:`anyio.to_thread.run_sync`, which
        is how :class:`ItemBlockWorkerPool` runs sync functions), it is a cancellation
        point for that task: if the task's cancel scope is cancelled, it raises before
        charging anything, and a wait in line notices within about 50 ms, gives back
        what it was not served and raises. What it raises is the cancellation exception
        of the task's backend (:class:`asyncio.CancelledError` or ``trio.Cancelled``,
        as :func:`anyio.from_thread.check_cancelled` raises it), so that it unwinds the
        sync function and is caught by the scope that was cancelled, exactly like a
        cancellation in the task itself: let it propagate (clean up in ``finally``),
        never swallow it. In any other thread it cannot be cancelled: use ``timeout``.

        Not for an event loop's thread: it would block every task on that loop.
        """
        amount = check_amount(amount)
        limit = math.inf if timeout is None else check_seconds(timeout, "timeout", allow_inf=True)
        cancelled = host_cancel_check()
        if cancelled is not None:
            cancelled()  # a cancellation point: raise before anything is charged
        tree = self._tree
        with tree.lock:
            now = tree.now()
            line = self._line
            if self._parent is None and now < line.switch_at and line.bucket.try_take(amount, now):
                line.granted += amount
                return
            taken, fire = take_along(self._lines, amount, now)
        _fire(fire)
        if taken:
            return
        self._acquire_slow_blocking(amount, now + limit, cancelled)

    def _acquire_slow_blocking(
        self, amount: float, deadline: float, cancelled: Callable[[], None] | None
    ) -> None:
        self._wait_here_blocking(amount, deadline, cancelled)
        if self._parent is not None:
            try:
                self._parent._acquire_slow_blocking(amount, deadline, cancelled)
            except BaseException:
                self._refund_granted(amount)
                raise

    def _wait_here_blocking(
        self, amount: float, deadline: float, cancelled: Callable[[], None] | None
    ) -> None:
        signal = ThreadSignal()
        w = self._enter(amount, signal)
        try:
            while (timeout := self._next_sleep(w, signal, deadline)) is not None:
                if cancelled is None:
                    signal.wait(timeout)
                    self._after_sleep(w)
                else:  # look at the host task now and then
                    signal.wait(min(timeout, CANCEL_SLICE))
                    self._after_sleep(w)
                    if not w.done:
                        cancelled()
        except BaseException:  # a timeout, a cancelled host task, KeyboardInterrupt
            self._abandon(w)
            raise

    def acquire_nowait(self, amount: float = 1) -> None:
        """
        Charge ``amount`` if it may pass now, without waiting; otherwise raise
        :class:`anyio.WouldBlock` and charge nothing.

        Fails while others wait in line (they came first). An amount larger than the
        burst can never pass at once, so it is a :class:`ValueError`, not a silent
        ``WouldBlock`` forever.
        """
        amount = check_amount(amount)
        tree = self._tree
        with tree.lock:
            now = tree.now()
            smallest = min(line.burst_at(now) for line in self._lines)
            if amount > smallest:
                raise ValueError(
                    f"amount {amount!r} is more than the burst {smallest!r}, so it can never "
                    "pass at once; use acquire() or acquire_blocking(), which wait for it"
                )
            taken, fire = take_along(self._lines, amount, now)
        _fire(fire)
        if not taken:
            raise anyio.WouldBlock

    def statistics(self) -> RateLimiterStatistics:
        """
        A snapshot: rate, burst, credit, tasks waiting, totals granted and waited.

        It only reads, as every property does: it wakes nobody and applies nothing (a
        waiter whose moment has come counts as granted here, and is woken by its own
        timer), so calling it in a loop cannot change what the limiter does.
        """
        tree = self._tree
        with tree.lock:
            snap = self._line.snapshot(tree.now())
        return RateLimiterStatistics(
            rate=snap.rate,
            burst=snap.burst,
            tokens=snap.tokens,
            tasks_waiting=snap.waiting,
            total_granted=snap.granted,
            total_waited=snap.waited,
        )

    def __repr__(self) -> str:
        line = self._line
        return f"<RateLimiter rate={line.rate} burst={line.bucket.burst:g}>"
