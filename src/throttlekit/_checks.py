"""
Argument checks shared by the pillars, with one wording.

A wrong type is a :class:`TypeError` and a bad value a :class:`ValueError`, each naming
the argument. Used at the public boundary only: the sans-I/O cores trust what these
checks let through.
"""

from __future__ import annotations

__all__ = ["check_number"]


def check_number(value: object, name: str, what: str = "a number") -> float:
    """
    ``value`` as a float: an int or a float, never a bool (``True`` is not a rate).

    An int too large for a float (``10**400``) is a :class:`ValueError` that says so,
    never the :class:`OverflowError` that ``float()`` raises. Range checks are the
    caller's: they differ (a rate may be infinite, a duration may not).
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be {what}, got {type(value).__name__}")
    try:
        return float(value)
    except OverflowError:
        raise ValueError(
            f"{name} is too large: {value.bit_length()} bits, more than a float holds "  # type: ignore[union-attr]
            "(about 1.8e308)"
        ) from None
