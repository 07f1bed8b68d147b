"""
RateLimiter: one token bucket shared by tasks (asyncio or trio) and threads.

All decisions are made by the sans-I/O :class:`~throttlekit._bucket.TokenBucket`; this
module reads clocks, sleeps, wakes and keeps the line of waiters.

How waiting works, and why:

* **Reserve on arrival, FIFO by construction.** A waiter that cannot pass at once reserves
  its amount in the bucket (into debt) and joins the line. Its deadline is when the bucket
  will have earned everything reserved up to and including it, so each waiter sleeps
  until its own moment: about one wake-up per grant, no polling, no thundering herd.
* **Only the head is timed exactly.** The head's deadline is recomputed whenever anything
  changes (a refund, a new rate, a schedule boundary); waiters behind it slept with the
  deadline they had when they arrived, which is exact unless something changed, and are
  re-timed when they reach the head. So a cancelled waiter costs no wake-ups of others.
* **Cancellation refunds.** A waiter that leaves the line (cancelled, or granted but
  cancelled before it could return) gives its amount back, and the head is re-timed so
  the capacity is not lost.
* **One lock per tree.** A limiter and all its descendants share one ``threading.Lock``,
  held only for the arithmetic, never across a wait; so tasks and threads share one budget
  and a chain of limiters is charged consistently.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import sys
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime, timedelta
from typing import Final, final

import anyio
import anyio.lowlevel
from attrs import frozen

from ._bucket import TokenBucket, pieces
from ._schedule import Schedule
from ._units import Rate, check_rate_number

__all__ = ["RateLimiter", "RateLimiterStatistics"]

# Deadlines closer than this (seconds) count as reached: float rounding must not cost an
# extra wake-up.
_EPS: Final = 1e-9
# A clock that jumps back by more than this is a different clock (another event loop, or
# threads next to trio's offset clock); time continues from where it was.
_JUMP: Final = 1.0
_DEFAULT_BURST: Final = timedelta(seconds=0.1)

# Clock sources, each with its own offset onto the limiter's timeline.
_CLOCK, _ASYNCIO, _TRIO, _OTHER_LOOP, _THREAD = range(5)

RateSpec = Rate | Schedule | str | float


def _wall_now() -> datetime:
    """The wall-clock time that schedules are read at (patched in tests)."""
    return datetime.now().astimezone()


def _coerce_rate(value: object) -> Rate | Schedule:
    if isinstance(value, Rate | Schedule):
        return value
    if isinstance(value, str):
        return Schedule.parse(value) if "," in value else Rate.parse(value)
    return Rate(per_second=check_rate_number(value, "rate"), kind="units")


def _coerce_burst(value: object) -> float | timedelta:
    if isinstance(value, timedelta):
        if value <= timedelta(0):
            raise ValueError(f"burst must be a positive duration, got {value!r}")
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(
            f"burst must be an amount (a number) or a duration (timedelta), got "
            f"{type(value).__name__}"
        )
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"burst must be a finite amount > 0, got {value!r}")
    return float(value)


def _check_amount(amount: object) -> float:
    if isinstance(amount, bool) or not isinstance(amount, int | float):
        raise TypeError(f"amount must be a number, got {type(amount).__name__}")
    if not (0 <= amount < math.inf):
        raise ValueError(f"amount must be a finite number >= 0, got {amount!r}")
    return amount


@frozen(kw_only=True)
class RateLimiterStatistics:
    """
    A snapshot of a :class:`RateLimiter`, from :meth:`RateLimiter.statistics`.

    ``tokens`` is the credit at the moment of the snapshot: negative while waiters are in
    line (what they reserved and have not yet earned). ``total_granted`` counts amounts
    granted (net of refunds) and ``total_waited`` the seconds waiters spent in line,
    summed over waiters.
    """

    rate: Rate
    burst: float
    tokens: float
    waiters: int
    total_granted: float
    total_waited: float


class _Tree:
    """What a limiter shares with its ancestors and descendants: one lock, one timeline."""

    __slots__ = ("clock", "last", "lock", "shift")

    def __init__(self, clock: Callable[[], float] | None) -> None:
        self.lock = threading.Lock()
        self.clock = clock
        self.shift = [0.0] * 5
        self.last = -math.inf

    def stamp(self, raw: float, source: int) -> float:
        """``raw`` from ``source`` on the shared timeline; call with the lock held."""
        now = raw + self.shift[source]
        if now >= self.last:
            self.last = now
        elif now < self.last - _JUMP:
            self.shift[source] += self.last - now
            now = self.last
        return now

    def read(self) -> tuple[float, int]:
        """The raw time and its source, from whatever context we are called in."""
        if self.clock is not None:
            return self.clock(), _CLOCK
        try:
            return asyncio.get_running_loop().time(), _ASYNCIO
        except RuntimeError:
            pass
        trio = sys.modules.get("trio")
        if trio is not None:
            try:
                return trio.current_time(), _TRIO
            except RuntimeError:
                pass
        return time.monotonic(), _THREAD


class _Waiter:
    """One caller in line at one limiter."""

    __slots__ = ("amount", "granted", "signal", "since", "wake_at")

    def __init__(self, amount: float, now: float, signal: _Signal) -> None:
        self.amount = amount
        self.since = now
        self.wake_at = math.inf
        self.granted = False
        self.signal = signal


class _Signal:
    """Wakes one sleeping waiter, from any thread. ``arm`` is called with the lock held."""

    __slots__ = ()

    def arm(self) -> None:
        raise NotImplementedError

    def fire(self) -> None:
        raise NotImplementedError


class _ThreadSignal(_Signal):
    __slots__ = ("event",)

    def __init__(self) -> None:
        self.event = threading.Event()

    def arm(self) -> None:
        self.event.clear()

    def wait(self, timeout: float) -> None:
        self.event.wait(None if math.isinf(timeout) else max(timeout, 0.0))

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


def _task_signal() -> _AsyncioSignal | _TrioSignal:
    try:
        return _AsyncioSignal(asyncio.get_running_loop())
    except RuntimeError:
        return _TrioSignal()


def _fire(waiters: Iterable[_Waiter], skip: _Waiter | None = None) -> None:
    for w in waiters:
        if w is not skip:
            w.signal.fire()


def _find_asyncio_checkpoint() -> Callable[[], Awaitable[None]]:
    """anyio's own checkpoint_if_cancelled, minus finding out which loop we run on."""
    get_backend = getattr(anyio.lowlevel, "get_async_backend", None)
    if get_backend is None:  # pragma: no cover - an anyio without it: the public way
        return anyio.lowlevel.checkpoint_if_cancelled
    checkpoint: Callable[[], Awaitable[None]] = get_backend("asyncio").checkpoint_if_cancelled
    return checkpoint


_asyncio_checkpoint: Callable[[], Awaitable[None]] | None = None


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

    **What it guarantees.** Over any interval, the amount granted is at most ``rate x
    interval + burst``, and with callers always waiting it is the rate exactly. Waiters are
    served first come, first served; a large request is never starved by a stream of small
    ones, and any amount works (more than the burst is served in burst-sized pieces, so no
    single burst exceeds it). Waiting is a sleep until the waiter's own moment: no polling.
    Cancelling a waiter (a timeout) gives back what it reserved, so others lose nothing.

    **Arguments.** ``rate``: a :class:`Rate`, rate text (``"80Mbit/s"``), a number of
    units per second, or a :class:`Schedule` (also as text: ``"08:00,1MiB/s 18:00,off"``).
    ``burst``: an amount, or a :class:`~datetime.timedelta` of the rate (default 0.1 s of
    the rate, at least 1, following rate changes); credit never exceeds it, so an idle
    period never lets more than one burst through. ``full=True`` starts with a full
    burst instead of empty. ``parent``: a limiter every acquire is also charged to, so a
    chain (stream < job < host < site) keeps each level under its own rate and the children
    together under the parent's. ``clock``: a function returning seconds, for threads in
    tests; by default the event loop's clock in tasks and :func:`time.monotonic` in threads.

    **Three ways in.** ``await acquire(n)`` in tasks, ``acquire_blocking(n)`` in threads,
    and ``acquire_nowait(n)``, which raises :class:`anyio.WouldBlock` instead of waiting.
    Change ``limiter.rate`` (or ``burst``) at any time: waiters are re-timed at once.

    It limits a rate, not concurrency: for "at most N at once" use
    :class:`OperationLimits` or :class:`anyio.CapacityLimiter`.
    """

    __slots__ = (
        "__weakref__",
        "_bucket",
        "_burst_spec",
        "_chain",
        "_granted",
        "_parent",
        "_queue",
        "_queued",
        "_rate",
        "_schedule",
        "_switch_at",
        "_tree",
        "_waited",
        "_wall_anchor",
    )

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
        self._burst_spec = _DEFAULT_BURST if burst is None else _coerce_burst(burst)
        if parent is not None and not isinstance(parent, RateLimiter):
            raise TypeError(f"parent must be a RateLimiter or None, got {type(parent).__name__}")
        if clock is not None and not callable(clock):
            raise TypeError(f"clock must be a function returning seconds, got {clock!r}")
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
        self._queue: deque[_Waiter] = deque()
        self._queued = 0.0
        self._granted = 0.0
        self._waited = 0.0
        self._schedule: Schedule | None = None
        self._switch_at = math.inf
        self._wall_anchor: tuple[datetime, float] | None = None
        with self._tree.lock:
            now = self._tree.stamp(*self._tree.read())
            current = self._adopt(spec, now)
            self._rate = current
            self._bucket = TokenBucket(
                current.per_second, self._effective_burst(current), now, full=full
            )

    # -- configuration -------------------------------------------------------------------

    def _effective_burst(self, rate: Rate) -> float:
        spec = self._burst_spec
        if isinstance(spec, float):
            return spec
        if rate.is_unlimited:
            return math.inf
        return max(rate.per_second * spec.total_seconds(), 1.0)

    def _adopt(self, spec: Rate | Schedule, now: float) -> Rate:
        """Take ``spec`` as the rate source from ``now``; returns the rate in force."""
        if isinstance(spec, Rate):
            self._schedule, self._switch_at, self._wall_anchor = None, math.inf, None
            return spec
        self._schedule = spec
        self._wall_anchor = (_wall_now(), now)
        return self._scheduled_rate(now)

    def _scheduled_rate(self, now: float) -> Rate:
        """The schedule's rate at ``now``, and when to look again."""
        assert self._schedule is not None
        assert self._wall_anchor is not None
        wall0, mono0 = self._wall_anchor
        wall = wall0 + timedelta(seconds=now - mono0)
        change = self._schedule.next_change(wall)
        self._switch_at = math.inf if change is None else now + (change - wall).total_seconds()
        return self._schedule.rate_at(wall)

    def _apply(self, rate: Rate, now: float) -> list[_Waiter]:
        """Switch to ``rate`` from ``now`` and re-time the line; call with the lock held."""
        self._rate = rate
        # Burst first: leaving an unlimited rate must cap the (infinite) credit at once.
        self._bucket.set_burst(self._effective_burst(rate), now)
        self._bucket.set_rate(rate.per_second, now)
        return self._poll(now)

    @property
    def rate(self) -> Rate:
        """
        The rate in force now. Set it to a :class:`Rate`, text, a number or a
        :class:`Schedule` to change it live; waiters are re-timed at once.
        """
        with self._tree.lock:
            now = self._tree.stamp(*self._tree.read())
            fire = self._poll(now)
            rate = self._rate
        _fire(fire)
        return rate

    @rate.setter
    def rate(self, value: RateSpec) -> None:
        spec = _coerce_rate(value)
        with self._tree.lock:
            now = self._tree.stamp(*self._tree.read())
            fire = self._apply(self._adopt(spec, now), now)
        _fire(fire)

    @property
    def schedule(self) -> Schedule | None:
        """The schedule the rate follows, or ``None`` for a fixed rate."""
        return self._schedule

    @property
    def burst(self) -> float:
        """The most that can pass at once. Set an amount or a duration to change it."""
        return self._bucket.burst

    @burst.setter
    def burst(self, value: float | timedelta) -> None:
        spec = _coerce_burst(value)
        with self._tree.lock:
            now = self._tree.stamp(*self._tree.read())
            self._burst_spec = spec
            fire = self._apply(self._rate, now)
        _fire(fire)

    @property
    def parent(self) -> RateLimiter | None:
        """The limiter every acquire is also charged to, if any."""
        return self._parent

    # -- the line --------------------------------------------------------------------------

    def _poll(self, now: float) -> list[_Waiter]:
        """
        Grant every waiter at the head whose moment has come and re-time the new head;
        returns the waiters to wake. Call with the lock held.
        """
        if now >= self._switch_at - _EPS:
            return self._apply(self._scheduled_rate(now), now)
        fire: list[_Waiter] = []
        queue = self._queue
        while queue:
            head = queue[0]
            rest = self._queued - head.amount if len(queue) > 1 else 0.0
            delay = self._bucket.delay(now, excluding=rest)
            if delay <= _EPS:
                queue.popleft()
                self._queued = rest
                head.granted = True
                self._granted += head.amount
                self._waited += now - head.since
                fire.append(head)
                continue
            wake_at = min(now + delay, self._switch_at)
            if wake_at < head.wake_at - _EPS:
                fire.append(head)  # it sleeps too long: wake it to sleep less
            head.wake_at = wake_at
            break
        return fire

    def _try_take(self, amount: float, now: float) -> bool:
        """Take ``amount`` along the whole chain if every level has it now; lock held."""
        chain = self._chain
        for level in chain:
            if level._switch_at <= now + _EPS:
                _fire(level._poll(now))  # a schedule boundary has passed
            if level._queue or level._bucket.credit(now) < amount:
                return False
        for level in chain:
            level._bucket.try_take(amount, now)
            level._granted += amount
        return True

    def _join(self, amount: float, now: float, signal: _Signal) -> _Waiter:
        """Reserve ``amount`` here and join the line (or pass at once); lock held."""
        w = _Waiter(amount, now, signal)
        if not self._queue and self._switch_at > now + _EPS and self._bucket.try_take(amount, now):
            w.granted = True
            self._granted += amount
            return w
        self._bucket.reserve(amount, now)
        self._queue.append(w)
        self._queued += amount
        w.wake_at = min(now + self._bucket.delay(now), self._switch_at)
        _fire(self._poll(now), skip=w)
        return w

    def _woken(self, w: _Waiter, now: float) -> list[_Waiter]:
        """After ``w`` woke up: grant what is due, and tell ``w`` how long to sleep on."""
        fire = self._poll(now)
        if not w.granted and w is not self._queue[0] and w.wake_at <= now + _EPS:
            w.wake_at = math.inf  # not the head yet: the head's grant will wake it
        return fire

    def _leave(self, w: _Waiter, now: float) -> list[_Waiter]:
        """``w`` gives up (cancelled): refund what it reserved or was granted; lock held."""
        if w.granted:
            self._granted -= w.amount
        else:
            self._queue.remove(w)
            self._queued = self._queued - w.amount if self._queue else 0.0
            self._waited += now - w.since
        self._bucket.refund(w.amount, now)
        return self._poll(now)

    def _refund_granted(self, amount: float) -> None:
        """Give back ``amount`` granted here but not used (a later level was cancelled)."""
        tree = self._tree
        with tree.lock:
            now = tree.stamp(*tree.read())
            self._granted -= amount
            self._bucket.refund(amount, now)
            fire = self._poll(now)
        _fire(fire)

    # -- async -----------------------------------------------------------------------------

    async def acquire(self, amount: float = 1) -> None:
        """
        Wait until ``amount`` may pass, and charge it (to every limiter in the chain).

        A cancellation point that does not yield to other tasks when it need not wait. If
        cancelled while waiting, what it was waiting for is given back (an amount served
        in several pieces keeps the pieces already granted: that time has passed).
        """
        if (amount.__class__ is not int and amount.__class__ is not float) or not (
            0 <= amount < math.inf
        ):
            amount = _check_amount(amount)
        # The fast path is inlined: this runs for every chunk of every stream.
        global _asyncio_checkpoint  # looked up once, on first use
        tree = self._tree
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            await anyio.lowlevel.checkpoint_if_cancelled()
            raw, source = tree.read()
        else:
            if _asyncio_checkpoint is None:
                _asyncio_checkpoint = _find_asyncio_checkpoint()
            await _asyncio_checkpoint()
            raw, source = (loop.time(), _ASYNCIO) if tree.clock is None else (tree.clock(), _CLOCK)
        lock = tree.lock
        lock.acquire()
        try:
            now = tree.stamp(raw, source)
            if self._parent is None:
                if not self._queue and now < self._switch_at and self._bucket.try_take(amount, now):
                    self._granted += amount
                    return
            elif amount <= self._bucket.burst and self._try_take(amount, now):
                return
        finally:
            lock.release()
        await self._acquire_slow(amount)

    async def _acquire_slow(self, amount: float) -> None:
        for piece in self._pieces(amount):
            await self._wait_here(piece)
            if self._parent is not None:
                try:
                    await self._parent._acquire_slow(piece)
                except BaseException:
                    self._refund_granted(piece)
                    raise

    def _pieces(self, amount: float) -> list[float]:
        return pieces(amount, self._bucket.burst)

    # The waiting loop, in steps shared by tasks and threads; only the sleep differs.

    def _enter(self, amount: float, signal: _Signal) -> _Waiter:
        tree = self._tree
        with tree.lock:
            return self._join(amount, tree.stamp(*tree.read()), signal)

    def _next_sleep(self, w: _Waiter, signal: _Signal) -> float | None:
        """How long ``w`` sleeps next, or None once it is granted."""
        tree = self._tree
        with tree.lock:
            if w.granted:
                return None
            signal.arm()
            return w.wake_at - tree.stamp(*tree.read())

    def _after_sleep(self, w: _Waiter) -> None:
        tree = self._tree
        with tree.lock:
            fire = self._woken(w, tree.stamp(*tree.read()))
        _fire(fire, skip=w)

    def _abandon(self, w: _Waiter) -> None:
        tree = self._tree
        with tree.lock:
            fire = self._leave(w, tree.stamp(*tree.read()))
        _fire(fire, skip=w)

    async def _wait_here(self, amount: float) -> None:
        signal = _task_signal()
        w = self._enter(amount, signal)
        try:
            while (timeout := self._next_sleep(w, signal)) is not None:
                await signal.wait(timeout)
                self._after_sleep(w)
        except BaseException:
            self._abandon(w)
            raise

    # -- threads and no waiting ---------------------------------------------------------

    def acquire_blocking(self, amount: float = 1) -> None:
        """
        :meth:`acquire` for threads: block the calling thread until ``amount`` may pass.

        Shares the budget and the line with tasks. Do not call it from an event loop's
        thread: it would block every task on that loop.
        """
        amount = _check_amount(amount)
        tree = self._tree
        with tree.lock:
            now = tree.stamp(*tree.read())
            if amount <= self._bucket.burst and self._try_take(amount, now):
                return
        self._acquire_slow_blocking(amount)

    def _acquire_slow_blocking(self, amount: float) -> None:
        for piece in self._pieces(amount):
            self._wait_here_blocking(piece)
            if self._parent is not None:
                try:
                    self._parent._acquire_slow_blocking(piece)
                except BaseException:
                    self._refund_granted(piece)
                    raise

    def _wait_here_blocking(self, amount: float) -> None:
        signal = _ThreadSignal()
        w = self._enter(amount, signal)
        try:
            while (timeout := self._next_sleep(w, signal)) is not None:
                signal.wait(timeout)
                self._after_sleep(w)
        except BaseException:  # KeyboardInterrupt in the waiting thread
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
        amount = _check_amount(amount)
        tree = self._tree
        with tree.lock:
            now = tree.stamp(*tree.read())
            smallest = min(level._bucket.burst for level in self._chain)
            if amount > smallest:
                raise ValueError(
                    f"amount {amount!r} is more than the burst {smallest!r}, so it can never "
                    "pass at once; use acquire() or acquire_blocking(), which split it"
                )
            if not self._try_take(amount, now):
                raise anyio.WouldBlock
        return

    def statistics(self) -> RateLimiterStatistics:
        """A snapshot: rate, burst, credit, waiters, totals granted and waited."""
        tree = self._tree
        with tree.lock:
            now = tree.stamp(*tree.read())
            fire = self._poll(now)
            stats = RateLimiterStatistics(
                rate=self._rate,
                burst=self._bucket.burst,
                tokens=self._bucket.credit(now),
                waiters=len(self._queue),
                total_granted=self._granted,
                total_waited=self._waited + sum(now - w.since for w in self._queue),
            )
        _fire(fire)
        return stats

    def __repr__(self) -> str:
        return f"<RateLimiter rate={self._rate} burst={self._bucket.burst:g}>"
