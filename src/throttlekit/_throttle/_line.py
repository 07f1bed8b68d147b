"""
The waiter line of a rate limiter: who is woken, when, and at what rate, as pure
functions of ``now``.

The split, and why:

* :class:`~._bucket.TokenBucket` answers *how much*: the credit, and how it is served to
  the tickets in line (turns of at most one burst, round robin, processed lazily). It
  says which ticket completes next and when, but wakes nobody.
* :class:`WaiterLine` (here) answers *who is woken, and when*, for one limiter: the rate
  in force (a fixed :class:`~throttlekit.Rate`, or a :class:`~throttlekit.Schedule`
  whose boundaries it applies each at its own moment), the one timer (only the waiter
  due next sleeps until an exact moment; it is re-timed whenever the line changes:
  an arrival, a refund, a new rate or burst, a boundary), which waiters to wake after
  each change, what a waiter that gives up returns, the totals granted and waited, and
  snapshots that change nothing. :func:`take_along` takes an amount from a chain of
  lines (a limiter and its parents) only if every one has it now.
* :class:`~throttlekit.RateLimiter` keeps what is not pure: the lock, the clocks (its
  timeline), the sleeps and wake-ups, and the argument checks at its entry points.

Every method takes ``now``, time on the limiter's timeline (which never goes back), and,
where the wall clock matters (adopting a schedule), ``wall``: the wall-clock time at
``now``. A method that changes the line returns the waiters to wake; waking them is the
caller's job, and waking one that need not wake is harmless (it looks, and sleeps again).
The reads (:meth:`WaiterLine.rate_at`, :meth:`WaiterLine.burst_at`,
:meth:`WaiterLine.snapshot`) say what is true at ``now`` without changing anything: the
change itself (a boundary applied, a waiter granted) happens on the next call that
changes the line, and comes out the same.

What it is not: thread-safe (the limiter holds one lock per tree around every call),
nor a clock (it never reads one), nor a sleeper (a :class:`Waiter` is a ticket with two
timestamps; the limiter subclasses it with its wake-up signal).

>>> from throttlekit import Rate
>>> line = WaiterLine(Rate.parse("10/s"), 10.0, now=0.0)
>>> big, small = Waiter(25, now=0.0), Waiter(5, now=0.0)
>>> line.enter(big, now=0.0), line.enter(small, now=0.0)   # nobody to wake
([], [])
>>> small.wake_at          # at most one burst: its exact moment is known on arrival
1.5
>>> [w is small for w in line.collect(now=1.5)], big.wake_at   # granted; the next re-timed
([True], 3.0)
>>> line.snapshot(now=5.0).waiting, len(line.bucket.tickets())  # a read changes nothing
(0, 1)
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta
from typing import Final, Generic, NamedTuple, TypeVar, final

from ._bucket import EPS, Ticket, TokenBucket
from ._schedule import Schedule
from ._units import Rate

__all__ = ["LineSnapshot", "Waiter", "WaiterLine", "take_along"]

# A schedule whose next change is not later than now (a bug in it) is asked again this
# many seconds later, rather than being applied over and over.
_RECHECK: Final = 1.0
# Schedule boundaries applied one by one at most; more (a long suspension) catch up at once.
_MAX_SWITCHES: Final = 64


class Waiter(Ticket):
    """
    One caller in a :class:`WaiterLine`: a ticket, the time it joined (``since``) and the
    moment it should next wake (``wake_at``: ``inf`` while someone else is due first, so
    it sleeps until whoever makes it due wakes it).
    """

    __slots__ = ("since", "wake_at")

    def __init__(self, amount: float, now: float) -> None:
        super().__init__(amount)
        self.since = now
        self.wake_at = math.inf


W = TypeVar("W", bound=Waiter)


class LineSnapshot(NamedTuple):
    """What a :class:`WaiterLine` says at one moment (see :meth:`WaiterLine.snapshot`)."""

    rate: Rate
    burst: float
    tokens: float
    waiting: int
    granted: float
    waited: float


@final
class WaiterLine(Generic[W]):
    """
    One limiter's line of waiters over a :class:`~._bucket.TokenBucket`, and the rate
    source it follows.

    ``source`` is a :class:`Rate` or a :class:`Schedule` (then ``wall``, the wall-clock
    time at ``now``, anchors it: later wall times are ``wall + (now' - now)``); ``burst``
    an amount, or a :class:`~datetime.timedelta` of the rate (at least 1, infinite at an
    unlimited rate), which follows rate changes. It starts empty unless ``full``.

    The attributes ``bucket``, ``rate`` (the rate in force at the last change),
    ``switch_at`` (when the next schedule boundary is due), ``granted`` and ``waited``
    (totals) are read by the limiter's fast path; only this class changes them, except
    that a direct grant on the fast path adds to ``granted``.
    """

    __slots__ = (
        "_anchor",
        "_burst_spec",
        "bucket",
        "granted",
        "rate",
        "schedule",
        "switch_at",
        "waited",
    )

    def __init__(
        self,
        source: Rate | Schedule,
        burst: float | timedelta,
        now: float,
        *,
        wall: datetime | None = None,
        full: bool = False,
    ) -> None:
        self.schedule: Schedule | None = None
        self.switch_at = math.inf
        self._anchor: tuple[datetime, float] | None = None
        self._burst_spec = burst
        self.granted = 0.0
        self.waited = 0.0
        self.rate = self._adopt(source, now, wall)
        self.bucket: TokenBucket[W] = TokenBucket(
            self.rate.per_second, self._burst_of(self.rate), now, full=full
        )

    # -- the rate source -----------------------------------------------------------------

    def _burst_of(self, rate: Rate) -> float:
        spec = self._burst_spec
        if not isinstance(spec, timedelta):
            return spec
        if rate.is_unlimited:
            return math.inf
        return max(rate.per_second * spec.total_seconds(), 1.0)

    def _adopt(self, source: Rate | Schedule, now: float, wall: datetime | None) -> Rate:
        """Take ``source`` as the rate source from ``now``; returns the rate in force."""
        if isinstance(source, Rate):
            self.schedule, self.switch_at, self._anchor = None, math.inf, None
            return source
        if wall is None:
            raise ValueError("wall: a schedule needs the wall-clock time at now")
        self.schedule, self._anchor = source, (wall, now)
        rate, self.switch_at = self._scheduled(now)
        return rate

    def _scheduled(self, now: float) -> tuple[Rate, float]:
        """The schedule's rate at ``now``, and when to look again (always later than now)."""
        schedule, anchor = self.schedule, self._anchor
        assert schedule is not None
        assert anchor is not None
        wall0, time0 = anchor
        wall = wall0 + timedelta(seconds=now - time0)
        change = schedule.next_change(wall)
        if change is None:
            switch_at = math.inf
        else:
            ahead = (change - wall).total_seconds()
            # A schedule must answer with a later moment; if it does not, ask it again
            # a little later instead of switching over and over at the same instant.
            switch_at = now + (ahead if ahead > EPS else _RECHECK)
        return schedule.rate_at(wall), switch_at

    def _switches(self, now: float) -> Iterator[tuple[float, Rate, float]]:
        """
        The schedule boundaries passed by ``now``, in order, as (moment, rate from then,
        next boundary); changes nothing. Each is applied at its own moment, so credit
        earned before a boundary is earned at the old rate; after ``_MAX_SWITCHES`` (a
        long suspension) the rest catch up at ``now`` at once.
        """
        switch_at = self.switch_at
        for _ in range(_MAX_SWITCHES):
            if switch_at > now + EPS:
                return
            at = min(switch_at, now)
            rate, switch_at = self._scheduled(at)
            yield at, rate, switch_at
        rate, switch_at = self._scheduled(now)
        yield now, rate, switch_at

    def _set_rate(self, rate: Rate, now: float) -> None:
        self.rate = rate
        # Burst first: leaving an unlimited rate must cap the (infinite) credit at once.
        self.bucket.set_burst(self._burst_of(rate), now)
        self.bucket.set_rate(rate.per_second, now)

    # -- reading (no change) -------------------------------------------------------------

    def rate_at(self, now: float) -> Rate:
        """The rate in force at ``now``, boundaries passed since the last change included."""
        rate = self.rate
        if now >= self.switch_at - EPS:
            for _, rate, _ in self._switches(now):  # noqa: B007 - the last one counts
                pass
        return rate

    def burst_at(self, now: float) -> float:
        """The burst in force at ``now`` (a duration burst follows the rate)."""
        return self._burst_of(self.rate_at(now))

    def snapshot(self, now: float) -> LineSnapshot:
        """
        What the line says at ``now``, computed on a copy: nothing is applied, nobody is
        granted or woken. The next call that changes the line makes the same changes,
        so it agrees with what a change at ``now`` would report.
        """
        twin: WaiterLine[W] = WaiterLine.__new__(WaiterLine)
        for name in self.__slots__:
            setattr(twin, name, getattr(self, name))
        twin.bucket = self.bucket.copy()
        twin.sync(now)
        bucket = twin.bucket
        waiting = bucket.tickets()
        return LineSnapshot(
            rate=twin.rate,
            burst=bucket.burst,
            tokens=bucket.credit(now),
            waiting=len(waiting),
            granted=twin.granted,
            waited=twin.waited + sum(now - w.since for w in waiting),
        )

    def sleep_for(self, waiter: W, now: float) -> float | None:
        """How long ``waiter`` should sleep from ``now``, or ``None`` once it is done."""
        if waiter.done:
            return None
        return waiter.wake_at - now

    # -- changing (each returns the waiters to wake) -------------------------------------

    def sync(self, now: float) -> list[W]:
        """Bring the line to ``now``: boundaries passed, grants due, the next due re-timed."""
        if now >= self.switch_at - EPS:
            for at, rate, switch_at in self._switches(now):
                self.switch_at = switch_at
                self._set_rate(rate, at)
        return self.collect(now)

    def collect(self, now: float) -> list[W]:
        """
        The waiters granted since the last look (counted in the totals), and the next due
        waiter if it must wake sooner than it sleeps (its ``wake_at`` re-timed).
        """
        bucket = self.bucket
        fire = bucket.poll(now)
        for w in fire:
            self.granted += w.amount
            self.waited += now - w.since
        due = bucket.next_due(now)
        if due is not None:
            w, seconds = due
            wake_at = now + seconds
            if wake_at > self.switch_at:
                wake_at = self.switch_at
            if wake_at < w.wake_at - EPS:
                fire.append(w)  # it sleeps too long: wake it to sleep less
            w.wake_at = wake_at
        return fire

    def set_source(self, source: Rate | Schedule, now: float, wall: datetime | None) -> list[W]:
        """Follow ``source`` (a rate or a schedule) from ``now`` on; waiters re-timed."""
        fire = self.sync(now)
        self._set_rate(self._adopt(source, now, wall), now)
        fire += self.collect(now)
        return fire

    def set_burst(self, burst: float | timedelta, now: float) -> list[W]:
        """Use ``burst`` (an amount or a duration of the rate) from ``now`` on."""
        fire = self.sync(now)
        self._burst_spec = burst
        self._set_rate(self.rate, now)
        fire += self.collect(now)
        return fire

    def enter(self, waiter: W, now: float) -> list[W]:
        """
        Put ``waiter`` at the tail of the line, with the moment it should wake. The list
        returned may hold ``waiter`` itself (done at once); its caller is awake already.
        """
        fire = self.sync(now)
        seconds = self.bucket.enter(waiter, now)
        waiter.wake_at = min(now + seconds, self.switch_at)
        fire += self.collect(now)
        return fire

    def woke(self, waiter: W, now: float) -> list[W]:
        """
        ``waiter`` woke up at ``now``: bring the line to ``now``; if it is still not done
        at the moment it was due, someone else is due first, and it sleeps until woken.
        """
        fire = self.sync(now)
        if not waiter.done and waiter.wake_at <= now + EPS:
            due = self.bucket.next_due(now)
            if due is not None and due[0] is waiter:
                # It is the next due after all, by less than the clock's float resolution
                # (one ulp of a clock reading 1e8 is 15 ns, more than EPS): look again
                # the smallest step later, rather than sleep until woken by nobody.
                waiter.wake_at = max(now + due[1], math.nextafter(now, math.inf))
            else:
                waiter.wake_at = math.inf
        return fire

    def leave(self, waiter: W, now: float) -> list[W]:
        """
        ``waiter`` gives up (cancelled, timed out): it returns what it was not served, or
        its whole grant if it was done but its caller will not use it.
        """
        fire = self.sync(now)
        if waiter.done:
            self.granted -= waiter.amount
            self.bucket.refund(waiter.amount, now)
        else:
            self.bucket.leave(waiter, now)
            self.waited += now - waiter.since
        fire += self.collect(now)
        return fire

    def refund(self, amount: float, now: float) -> list[W]:
        """Give back ``amount`` granted here but not used (a later level gave up)."""
        fire = self.sync(now)
        self.granted -= amount
        self.bucket.refund(amount, now)
        fire += self.collect(now)
        return fire


def take_along(
    lines: Sequence[WaiterLine[W]], amount: float, now: float
) -> tuple[bool, Sequence[W]]:
    """
    Take ``amount`` from every line of a chain (a limiter and its ancestors) if each has
    it at ``now`` and nobody waits in any of them; otherwise take nothing. Also returns
    the waiters to wake (bringing a line with waiters or a boundary due to ``now`` may
    grant some).
    """
    fire: Sequence[W] = ()
    for line in lines:
        if now >= line.switch_at - EPS or line.bucket.waiting:
            fire = [*fire, *line.sync(now)]
        if line.bucket.available(now) < amount:
            return False, fire
    for line in lines:
        line.bucket.try_take(amount, now)
        line.granted += amount
    return True, fire
