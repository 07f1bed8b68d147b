"""
How a site's rate is divided among its live members: pure functions, no I/O, no clock.

The model is Doorman's (capacity leased to clients): each member says what it *wants*,
and the site rate is divided **max-min fairly**: a member that wants less than an equal
share gets what it wants, and what it leaves is split evenly among the others, again and
again, until either everybody is satisfied or the rate is used up. Whatever is left when
everybody is satisfied (the members want less than the site rate in total) is split
evenly on top, so the whole site rate is always handed out and a member whose demand
grows can use more at once, before the next refresh tells everybody.

The same division is computed server-side by the share script (:mod:`._scripts`), which
must agree with :func:`fair_level` exactly; a test runs both on the same inputs.

A share is ``min(want, level) + surplus``, so the pair ``(level, surplus)`` describes a
whole division: the script stores it and members read their own share from it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

__all__ = ["GREEDY", "estimate_want", "fair_level", "fair_shares"]

# What a member wants when it would take anything it is given (it has a backlog).
GREEDY = math.inf

# A member that used at least this fraction of its share was held back by it: it wants more.
SATURATED = 0.95
# Headroom over what a member used, when it was not held back.
HEADROOM = 1.1


def fair_level(capacity: float, wants: list[float]) -> tuple[float, float]:
    """
    The max-min fair division of ``capacity`` among members wanting ``wants``, as
    ``(level, surplus)``: each member's share is ``min(want, level) + surplus``.

    ``level`` is the water level (``math.inf`` when every want fits); ``surplus`` is the
    capacity left once every want is met, split evenly (zero unless every want fits).

    >>> fair_level(40.0, [4.0, math.inf, math.inf, math.inf])
    (12.0, 0.0)
    >>> fair_level(40.0, [1.0, 3.0])                  # both fit: 36 left, 18 each on top
    (inf, 18.0)
    >>> fair_level(10.0, [])
    (inf, 0.0)
    """
    n = len(wants)
    if n == 0:
        return math.inf, 0.0
    if math.isinf(capacity):
        return math.inf, math.inf
    left = capacity
    for i, want in enumerate(sorted(wants)):
        equal = left / (n - i)
        if want > equal:
            return equal, 0.0
        left -= want
    return math.inf, max(left, 0.0) / n


def fair_shares(capacity: float, wants: Mapping[str, float]) -> dict[str, float]:
    """
    Each member's max-min fair share of ``capacity``, given what each wants.

    The shares never add up to more than ``capacity`` (up to float rounding), a member
    wanting at most an equal share gets at least what it wants, and members wanting
    more than what is left get equal shares.

    >>> fair_shares(40.0, {"a": 4.0, "b": math.inf, "c": math.inf, "d": math.inf})
    {'a': 4.0, 'b': 12.0, 'c': 12.0, 'd': 12.0}
    >>> fair_shares(30.0, {"a": 5.0, "b": 10.0})      # 15 left over: 7.5 each on top
    {'a': 12.5, 'b': 17.5}
    """
    for member, want in wants.items():
        if math.isnan(want) or want < 0:
            raise ValueError(f"want of {member!r} must be >= 0, got {want!r}")
    if math.isnan(capacity) or capacity < 0:
        raise ValueError(f"capacity must be >= 0, got {capacity!r}")
    level, surplus = fair_level(capacity, list(wants.values()))
    return {member: min(want, level) + surplus for member, want in wants.items()}


def estimate_want(
    *, used: float, share: float, waiting: int, floor: float, first: bool = False
) -> float:
    """
    What a member wants next, from what its own limiter did over the last interval.

    ``used`` is what it granted per second, ``share`` its share over that time and
    ``waiting`` how many callers are in its line now. A member with callers waiting, or
    one that used (nearly) all of its share, was held back: it wants as much as it can
    get (:data:`GREEDY`). Otherwise it wants what it used with some headroom, and never
    less than ``floor`` (so an idle member that wakes up is not stuck at nothing). A
    member that has just joined (``first``) has no history: it is greedy until it has
    one, so it reaches its fair share at the first refresh.

    >>> estimate_want(used=4.0, share=12.0, waiting=0, floor=0.1)
    4.4
    >>> estimate_want(used=11.9, share=12.0, waiting=0, floor=0.1)
    inf
    >>> estimate_want(used=0.0, share=12.0, waiting=3, floor=0.1)
    inf
    """
    if first or waiting > 0:
        return GREEDY
    if math.isinf(share):
        # No limit: whatever it used, with headroom; nobody is held back.
        return max(used * HEADROOM, floor)
    if share > 0 and used >= share * SATURATED:
        return GREEDY
    if share == 0:
        return GREEDY if used > 0 else max(floor, 0.0)
    return max(used * HEADROOM, floor)
