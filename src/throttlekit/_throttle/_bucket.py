"""
The token maths of the rate limiter: credit earned and spent, and how it is served to the
requests in line, as pure functions of ``now`` and amounts.

The rate limiter has three layers, split by the question each answers:

* **The bucket** (here): *how much*. Credit earned at the rate, capped at the burst, taken
  and given back, and served to the tickets in line (:class:`Ticket`) in turns of at
  most one burst: which ticket has been served how much by ``now``, which completes next
  and when. It knows no waker, no schedule, no chain of limiters and no statistics.
* **The waiter line** (:mod:`._line`): *who is woken, and when*. The rate in force (a
  schedule's boundaries applied each at its moment), the one timer for the waiter due
  next, re-timed whenever the line changes, what a waiter that leaves gives back, and
  snapshots that change nothing.
* **The limiter** (:mod:`._ratelimit`): the lock, the clocks, sleeping and waking, and
  the argument checks at its entry points.

Nothing here re-checks its arguments: the limiter's entry points and :class:`Rate` did
(a rate >= 0, a burst > 0, an amount finite and >= 0). Everything here is exercised
exhaustively with Hypothesis, without an event loop.

The model, and why:

* **Credit is derived, not accumulated.** What the bucket has earned by ``now`` is
  ``base + rate * (now - base_time)``, computed afresh each time; ``base`` only moves when
  the burst cap binds, the rate changes or credit is given back. Amounts served are summed
  exactly (integers stay exact up to 2**53), so there is no float drift however long the
  bucket runs. A huge amount never enters these sums whole (see below), so it cannot
  swallow them.
* **Credit is capped at the burst while nobody waits.** An idle period never banks more
  than one burst.
* **Waiters are served in turns of at most one burst, round robin.** A waiter joins the
  tail of the line. The head is served a turn of ``min(rest, burst)``; when the bucket
  has earned it, a waiter with nothing left is done, and one with more to go moves to the
  tail. So requests up to the burst are served first come, first served, each in one
  turn, and a larger request takes its place in line once per burst: it is never starved
  by a stream of small ones, nor can it starve them, and while several wait it gets one
  burst per round, like everyone else.
* **Turns are bookkeeping, not wake-ups.** Nothing happens at the end of a turn that is
  not someone's last, so turns are processed lazily, when someone looks (:meth:`poll`),
  and whole rounds at once when every waiter has more than a burst to go. The work per
  look is bounded by the number of waiters, never by ``amount / burst``, and memory is
  one :class:`Ticket` per waiter. :meth:`next_due` says who completes next and when, so
  a limiter needs one timer, for that waiter only.
* **A large request is released whole, once its last turn is earned.** Over any window
  the bucket serves at most ``rate x window + burst``; a request larger than the burst
  is handed out when all of it has been served, so its release counts against the time
  it was served over.
* **Leaving gives back what was not served.** A waiter that leaves the line takes the
  rest it had not been served with it, so those behind it lose nothing, and the progress
  of its current turn goes to the next in line. Whole turns a large request was already
  served stay spent: that time has passed, others were served in between, and handing it
  out again would let the next ones through faster than the rate.
* **A refund is credit, capped at one burst.** An amount handed out but not used (a
  chain of limiters where a later level was cancelled) comes back as credit, never more
  than the burst, as if it had been earned while idle.
"""

from __future__ import annotations

import copy
import math
from collections import deque
from typing import Generic, TypeVar, final

__all__ = ["EPS", "Ticket", "TokenBucket"]

# Seconds of earning within which a turn counts as earned: float rounding must not cost
# an extra wake-up.
EPS = 1e-9
# A rest within this fraction above the burst is served in one (last) turn: rounding must
# not leave a crumb that waits a whole round.
_SLACK = 1e-9


def _whole(x: float) -> float:
    """``floor(x)`` as a float, for any x >= 0 (huge and infinite ones included)."""
    return float(math.floor(x)) if x < 2.0**52 else x


def _turns_before_last(rest: float, burst: float, limit: float) -> float:
    """
    How many whole turns of ``burst`` come before the last turn of ``rest``: the least
    ``n`` with ``rest - n * burst <= limit`` (the most a last turn can be), as computed in
    floats, so that serving ``n`` turns at once leaves what serving them one by one would.
    """
    q = rest / burst
    if q >= 2.0**52:
        return q  # never reached: only a bound matters
    n = max(math.ceil(q) - 1, 0)
    for _ in range(4):  # rounding moves it by one at most
        if n > 0 and rest - (n - 1) * burst <= limit:
            n -= 1
        elif rest - n * burst > limit:
            n += 1
        else:
            break
    return float(n)


class Ticket:
    """
    One request's place in a :class:`TokenBucket`'s line: ``amount`` asked for, ``rest``
    not yet served, ``done`` once it has all been served.
    """

    __slots__ = ("amount", "done", "rest")

    def __init__(self, amount: float) -> None:
        self.amount = amount
        self.rest = self.amount
        self.done = False


T = TypeVar("T", bound=Ticket)


@final
class TokenBucket(Generic[T]):
    """
    A token bucket and the order it serves its tickets in, with no clock of its own: every
    method takes ``now``, which must never go back. What it is not: a waiter line (it
    wakes nobody and keeps no timer; see :mod:`._line`), nor a validator (its arguments
    were checked at the limiter's boundary).

    ``rate`` is units per second (``math.inf`` lets everything through, ``0`` pauses),
    ``burst`` the most credit it can hold and the largest turn a waiter is served at once
    (``math.inf`` only makes sense with an unlimited rate). It starts empty unless
    ``full=True``. Not thread-safe by itself: the limiters that use it hold a lock.

    >>> bucket = TokenBucket(10, 5, now=0.0)
    >>> bucket.try_take(1, now=0.0)          # starts empty: nothing to take yet
    False
    >>> big, small = Ticket(20), Ticket(1)
    >>> bucket.enter(big, now=0.0)            # seconds until done, if nobody else comes
    2.0
    >>> bucket.enter(small, now=0.1)          # waits for the big one's current turn only
    0.5
    >>> [t is small for t in bucket.poll(now=0.6)], bucket.next_due(now=0.6)[0] is big
    ([True], True)
    """

    __slots__ = (
        "_base",
        "_base_time",
        "_burst",
        "_completed",
        "_limit",
        "_line",
        "_rate",
        "_small",
        "_taken",
        "_turns",
    )

    def __init__(self, rate: float, burst: float, now: float, *, full: bool = False) -> None:
        self._rate = rate
        self._burst = burst
        self._limit = self._burst * (1 + _SLACK)  # the most a last turn can be
        self._taken = 0.0
        self._base = self._burst if full else 0.0
        self._base_time = now
        self._line: deque[T] = deque()
        self._turns = 0.0  # sum of min(rest, burst) over the line: one round
        self._small = 0  # waiters in line with at most one burst to go
        self._completed: list[T] = []

    def copy(self) -> TokenBucket[T]:
        """
        An independent copy, with copies of the tickets in line: to compute what the
        bucket would say at a later ``now`` without changing it.
        """
        twin: TokenBucket[T] = TokenBucket.__new__(TokenBucket)
        for name in self.__slots__:
            setattr(twin, name, getattr(self, name))
        twin._line = deque(copy.copy(t) for t in self._line)
        twin._completed = [copy.copy(t) for t in self._completed]
        return twin

    # -- reading -----------------------------------------------------------------------

    @property
    def rate(self) -> float:
        """Units per second."""
        return self._rate

    @property
    def burst(self) -> float:
        """The most credit the bucket can hold, and the largest turn in line."""
        return self._burst

    @property
    def taken(self) -> float:
        """Total units served so far, waiters' turns included (refunds become credit)."""
        return self._taken

    @property
    def waiting(self) -> int:
        """How many waiters are in line (after the last :meth:`poll`)."""
        return len(self._line)

    def _earned(self, now: float) -> float:
        """The earning level at ``now``: capped at one burst of credit while idle."""
        if self._rate == math.inf:
            return math.inf if self._line else self._taken + self._burst
        dt = now - self._base_time
        raw = self._base + self._rate * dt if dt > 0 else self._base
        if not self._line:
            cap = self._taken + self._burst
            if raw > cap:
                return cap
        return raw

    def tickets(self) -> tuple[T, ...]:
        """The waiters in line, in the order of their next turns (after the last poll)."""
        return tuple(self._line)

    def available(self, now: float) -> float:
        """
        What could be taken at ``now`` without waiting: the credit, or ``-inf`` while any
        wait (then nothing may pass, not even 0: they came first).
        """
        self._advance(now)
        if self._line:
            return -math.inf
        return self._earned(now) - self._taken

    def _settle(self, now: float) -> None:
        """While idle, drop credit beyond the burst now, before the line or a take uses it."""
        if self._rate == math.inf:
            return
        cap = self._taken + self._burst
        dt = now - self._base_time
        if (self._base + self._rate * dt if dt > 0 else self._base) >= cap:
            self._base, self._base_time = cap, now

    def credit(self, now: float) -> float:
        """
        Units that could be taken at ``now`` without waiting; negative while waiters are
        in line (what they asked for and have not been served yet).
        """
        self._advance(now)
        return self._earned(now) - self._taken - math.fsum(t.rest for t in self._line)

    # -- taking --------------------------------------------------------------------------

    def try_take(self, amount: float, now: float) -> bool:
        """Take ``amount`` only if nobody waits and the credit covers it now."""
        # The limiters' fast path: _earned() inlined.
        if self._line:
            return False
        taken = self._taken
        rate = self._rate
        if rate == math.inf:
            return amount <= self._burst  # nothing to count at an unlimited rate
        cap = taken + self._burst
        dt = now - self._base_time
        earned = self._base + rate * dt if dt > 0 else self._base
        if earned >= cap:
            earned = cap
            self._base, self._base_time = cap, now  # drop credit beyond the burst
        if earned - taken < amount:
            return False
        self._taken = taken + amount
        return True

    def enter(self, ticket: T, now: float) -> float:
        """
        Put ``ticket`` at the tail of the line; returns the seconds until it would be done
        if nobody else came (exact for a request of at most one burst; a lower bound for
        a larger one, whose later turns wait for those who come after it). ``0.0`` if it
        is done at once; ``inf`` while paused.
        """
        if ticket.done:
            raise ValueError("ticket is done already")
        self._advance(now)
        if not self._line:
            self._settle(now)
        rest = ticket.rest
        self._line.append(ticket)
        if rest <= self._limit:
            self._turns += rest
            self._small += 1
            level = self._taken + self._turns
        else:
            self._turns += self._burst
            level = self._taken + self._turns - self._burst + rest
        self._advance(now)
        return 0.0 if ticket.done else self._seconds_until(level, now)

    def poll(self, now: float) -> list[T]:
        """The tickets done by ``now`` (in the order they were done) since the last poll."""
        self._advance(now)
        done, self._completed = self._completed, []
        return done

    def next_due(self, now: float) -> tuple[T, float] | None:
        """
        The waiter that will be done next, and in how many seconds (``inf`` while paused),
        if nothing changes; ``None`` when nobody waits. Tickets done by ``now`` are left
        for :meth:`poll`.
        """
        self._advance(now)
        line = self._line
        if not line:
            return None
        burst, limit = self._burst, self._limit
        level = self._taken
        offset = 0.0
        best = None
        if not self._small:
            # Everyone has more than a burst to go: skip whole rounds, in which each is
            # served one burst, until the one with least to go has one turn left.
            best = min(line, key=lambda t: t.rest)
            offset = _turns_before_last(best.rest, burst, limit) * burst
            level += offset * len(line)
        for t in line:
            rest = t.rest - offset
            if rest <= limit or t is best:
                return t, self._seconds_until(level + rest, now)
            level += burst
        raise AssertionError("unreachable")  # pragma: no cover

    def _seconds_until(self, level: float, now: float) -> float:
        deficit = level - self._earned(now)
        if deficit <= 0:
            return 0.0
        if self._rate == 0:
            return math.inf
        return deficit / self._rate

    def _advance(self, now: float) -> None:
        """Serve every turn earned by ``now``; finished tickets go to ``_completed``."""
        line = self._line
        if not line:
            return
        if self._rate == math.inf:
            for t in line:
                t.rest, t.done = 0.0, True
            self._completed.extend(line)
            line.clear()
            self._turns, self._small = 0.0, 0
            return
        earned = self._earned(now) + self._rate * EPS
        burst, limit = self._burst, self._limit
        taken = self._taken
        while line:
            head = line[0]
            rest = head.rest
            turn = rest if rest <= limit else burst
            if taken + turn > earned:
                break
            size = len(line)
            if rest > limit and not self._small and earned - taken >= 2 * size * burst:
                # Whole rounds at once, stopping before anyone's last turn.
                least = min(t.rest for t in line)
                rounds = min(
                    _turns_before_last(least, burst, limit),
                    _whole((earned - taken) / (size * burst)),
                )
                if 1 <= rounds < math.inf:
                    step = rounds * burst
                    taken += step * size
                    for t in line:
                        t.rest -= step
                    self._recount()
                    continue
            line.popleft()
            taken += turn
            self._turns -= turn
            if rest <= limit:
                head.rest, head.done = 0.0, True
                self._small -= 1
                self._completed.append(head)
            else:
                rest -= turn
                head.rest = rest
                line.append(head)
                if rest <= limit:
                    self._small += 1
                    self._turns += rest
                else:
                    self._turns += burst
        self._taken = taken
        if not line:
            self._turns = 0.0  # no drift carried over

    def _recount(self) -> None:
        burst, limit = self._burst, self._limit
        self._turns = math.fsum(t.rest if t.rest <= limit else burst for t in self._line)
        self._small = sum(1 for t in self._line if t.rest <= limit)

    # -- leaving and giving back ---------------------------------------------------------

    def leave(self, ticket: T, now: float) -> bool:
        """
        Take ``ticket`` out of line (its waiter gave up): the rest it was not served is
        given back, and the progress of its current turn goes to the next in line. Turns
        it was already served stay spent. ``False`` if it was done by ``now`` (then its
        waiter was handed it: use :meth:`refund` if that is not used either).
        """
        self._advance(now)
        if ticket.done:
            return False
        try:
            self._line.remove(ticket)
        except ValueError:
            raise ValueError("ticket is not in this bucket's line") from None
        if ticket.rest <= self._limit:
            self._turns -= ticket.rest
            self._small -= 1
        else:
            self._turns -= self._burst
        if not self._line:
            self._turns = 0.0
        return True

    def refund(self, amount: float, now: float) -> None:
        """
        Give back ``amount`` that was taken or served but will not be used. The credit
        it makes never exceeds one burst, as if it had been earned while idle.
        """
        self._advance(now)
        if self._rate == math.inf:
            return  # nothing was counted
        earned = self._earned(now)
        cap = self._taken + self._burst
        if earned < cap:
            self._base, self._base_time = min(earned + amount, cap), now
        self._advance(now)

    # -- changing ------------------------------------------------------------------------

    def set_rate(self, rate: float, now: float) -> None:
        """Change the rate from ``now`` on; credit earned so far is kept."""
        self._advance(now)
        if self._rate != math.inf:
            self._base, self._base_time = self._earned(now), now
        else:  # leaving (or staying) unlimited: one burst of credit, no more
            self._base, self._base_time = self._taken + self._burst, now
        self._rate = rate
        self._advance(now)

    def set_burst(self, burst: float, now: float) -> None:
        """Change the burst from ``now`` on; credit above a smaller burst is dropped."""
        self._advance(now)
        if self._rate != math.inf:
            # Freeze the credit earned so far; the cap in _earned() applies the new
            # burst, and every take settles before it, so nothing above it leaks later.
            self._base, self._base_time = self._earned(now), now
        self._burst = burst
        self._limit = burst * (1 + _SLACK)
        self._recount()
        self._advance(now)
