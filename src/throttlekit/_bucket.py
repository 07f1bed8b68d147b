"""
The sans-I/O token bucket: rate maths as pure functions of ``now`` and amounts.

The async and blocking limiters only read clocks, sleep and wake; every decision is made
here, so it is tested exhaustively without an event loop.

The model, and why:

* **Credit is derived, not accumulated.** The credit earned by ``now`` is
  ``base + rate * (now - base_time)``, computed afresh each time; ``base`` only moves when
  the burst cap binds or the rate changes. Amounts taken are summed exactly (integers stay
  exact up to 2**53). So there is no float drift however long the bucket runs.
* **Credit is capped at the burst.** Before every take, credit beyond ``burst`` is
  dropped, so an idle period never banks more than one burst.
* **Debt for the head, a queue for the rest.** The waiter at the head of the line takes
  its amount at once, possibly into debt, and sleeps exactly for the deficit
  (:meth:`TokenBucket.reserve`). Later waiters queue behind it without reserving, so a
  cancelled head can give back exactly what it took (:meth:`TokenBucket.refund`), and a
  rate change re-times the head exactly (:meth:`TokenBucket.delay`). Amounts larger than
  the burst are served in burst-sized pieces (:func:`pieces`), so no single grant exceeds
  the burst.
"""

from __future__ import annotations

import math
from typing import final

from ._units import check_rate_number

__all__ = ["TokenBucket", "pieces"]


def _check_burst(burst: float) -> float:
    if isinstance(burst, bool) or not isinstance(burst, int | float):
        raise TypeError(f"burst must be a number of units, got {type(burst).__name__}")
    if math.isnan(burst) or burst <= 0:
        raise ValueError(f"burst must be a number > 0, got {burst!r}")
    return float(burst)


def pieces(amount: float, burst: float) -> list[float]:
    """Split ``amount`` into pieces of at most ``burst`` (the last one may be smaller)."""
    if amount <= burst:
        return [amount]
    whole, rest = divmod(amount, burst)
    out = [burst] * int(whole)
    if rest > 0:
        out.append(rest)
    return out


@final
class TokenBucket:
    """
    A token bucket's state and maths, with no clock of its own: every method takes ``now``.

    ``rate`` is units per second (``math.inf`` lets everything through, ``0`` pauses),
    ``burst`` the most credit it can hold (``math.inf`` only makes sense with an unlimited
    rate). It starts empty unless ``full=True``.
    Not thread-safe by itself: the limiters that use it hold a lock.
    """

    __slots__ = ("_base", "_base_time", "_burst", "_rate", "_taken")

    def __init__(self, rate: float, burst: float, now: float, *, full: bool = False) -> None:
        self._rate = check_rate_number(rate, "rate")
        self._burst = _check_burst(burst)
        self._taken = 0.0
        self._base = self._burst if full else 0.0
        self._base_time = now

    @property
    def rate(self) -> float:
        """Units per second."""
        return self._rate

    @property
    def burst(self) -> float:
        """The most credit the bucket can hold."""
        return self._burst

    @property
    def taken(self) -> float:
        """Total units taken so far, net of refunds."""
        return self._taken

    def _earned(self, now: float) -> float:
        cap = self._taken + self._burst
        if math.isinf(self._rate):
            return cap
        raw = self._base + self._rate * max(0.0, now - self._base_time)
        return min(raw, cap)

    def _settle(self, now: float) -> None:
        """Drop credit beyond the burst now, so a later take cannot reach banked idle time."""
        cap = self._taken + self._burst
        if self._earned(now) >= cap:  # always so at an unlimited rate
            self._base, self._base_time = cap, now

    def credit(self, now: float) -> float:
        """Units that could be taken at ``now`` without waiting (negative: a debt)."""
        return self._earned(now) - self._taken

    def delay(self, now: float, *, excluding: float = 0.0) -> float:
        """
        Seconds from ``now`` until the debt is paid (0 if none; ``inf`` while paused).

        ``excluding`` leaves out the last units taken: the limiters reserve for every
        queued waiter, and the head waits only for the debt up to and including its own.
        """
        deficit = self._taken - excluding - self._earned(now)
        if deficit <= 0:
            return 0.0
        if self._rate == 0:
            return math.inf
        return deficit / self._rate

    def try_take(self, amount: float, now: float) -> bool:
        """Take ``amount`` only if the credit covers it now; never goes into debt."""
        # The limiters' fast path: _earned() and _settle() inlined, computed once.
        taken = self._taken
        cap = taken + self._burst
        rate = self._rate
        if rate == math.inf:
            earned = cap
        else:
            earned = self._base + rate * (now - self._base_time if now > self._base_time else 0.0)
        if earned >= cap:
            earned = cap
            self._base, self._base_time = cap, now  # drop credit beyond the burst
        if earned - taken < amount:
            return False
        self._taken = taken + amount
        return True

    def reserve(self, amount: float, now: float) -> float:
        """Take ``amount`` now, into debt if need be; returns the seconds to wait."""
        self._settle(now)
        self._taken += amount
        return self.delay(now)

    def refund(self, amount: float, now: float) -> None:
        """Give back ``amount`` that was reserved but will not be used (a cancelled waiter)."""
        self._settle(now)
        self._taken -= amount

    def set_rate(self, rate: float, now: float) -> None:
        """Change the rate from ``now`` on; credit earned so far is kept."""
        rate = check_rate_number(rate, "rate")
        self._base, self._base_time = self._earned(now), now
        self._rate = rate

    def set_burst(self, burst: float, now: float) -> None:
        """Change the burst from ``now`` on; credit above a smaller burst is dropped."""
        burst = _check_burst(burst)
        # Freeze the credit earned so far; the cap in _earned() applies the new burst, and
        # every take settles before it, so nothing above the new burst can leak later.
        self._base, self._base_time = self._earned(now), now
        self._burst = burst
