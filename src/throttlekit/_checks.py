"""
Argument checks shared by the pillars, with one wording.

A wrong type is a :class:`TypeError` and a bad value a :class:`ValueError`, each naming
the argument::

    {name} must be {what}, got {type name}        (TypeError)
    {name} must be {condition}, got {value!r}      (ValueError)

Used at the public boundary only: the sans-I/O cores trust what these checks let
through (the token bucket does not re-check what :class:`~throttlekit.Rate` checked).
They are not a validation framework: each check answers one question about one
argument and returns the value in the form the caller stores (a float for seconds).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any

__all__ = [
    "check_callable",
    "check_int",
    "check_kind",
    "check_limits_per_kind",
    "check_number",
    "check_optional_int",
    "check_priority",
    "check_seconds",
]


def _type_error(name: str, what: str, value: object) -> TypeError:
    return TypeError(f"{name} must be {what}, got {type(value).__name__}")


def check_number(value: object, name: str, what: str = "a number") -> float:
    """
    ``value`` as a float: an int or a float, never a bool (``True`` is not a rate).

    An int too large for a float (``10**400``) is a :class:`ValueError` that says so,
    never the :class:`OverflowError` that ``float()`` raises. Range checks are the
    caller's: they differ (a rate may be infinite, a duration may not).

    >>> check_number(3, "rate")
    3.0
    >>> check_number(True, "rate")
    Traceback (most recent call last):
    TypeError: rate must be a number, got bool
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _type_error(name, what, value)
    try:
        return float(value)
    except OverflowError:
        raise ValueError(
            f"{name} is too large: {value.bit_length()} bits, more than a float holds "  # type: ignore[union-attr]
            "(about 1.8e308)"
        ) from None


def check_int(
    value: object,
    name: str,
    *,
    minimum: int | None = None,
    maximum: int | None = None,
) -> int:
    """
    ``value`` as an int within ``[minimum, maximum]`` (either bound may be left open).

    A bool is refused (``True`` workers is a mistake, not one worker), and so is a float
    even when it is whole (``2.0``): counts are ints.

    >>> check_int(4, "workers", minimum=1)
    4
    >>> check_int(0, "workers", minimum=1)
    Traceback (most recent call last):
    ValueError: workers must be >= 1, got 0
    >>> check_int(8, "io_level", minimum=0, maximum=7)
    Traceback (most recent call last):
    ValueError: io_level must be between 0 and 7, got 8
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise _type_error(name, "an int", value)
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        if minimum is not None and maximum is not None:
            condition = f"between {minimum} and {maximum}"
        elif minimum is not None:
            condition = f">= {minimum}"
        else:
            condition = f"<= {maximum}"
        raise ValueError(f"{name} must be {condition}, got {value!r}")
    return value


def check_optional_int(value: object, name: str, *, minimum: int | None = None) -> int | None:
    """:func:`check_int`, or ``None`` (meaning "no limit") passed through."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise _type_error(name, "an int or None", value)
    return check_int(value, name, minimum=minimum)


def check_priority(value: object, name: str = "priority") -> int:
    """
    A priority: any int, higher runs first. Not a float (priorities are ranks).

    >>> check_priority(-3)
    -3
    >>> check_priority(1.5)
    Traceback (most recent call last):
    TypeError: priority must be an int (higher runs first), got float
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise _type_error(name, "an int (higher runs first)", value)
    return value


def check_kind(value: object, name: str = "kind", *, shared: bool = False) -> str:
    """
    A kind of operation (``"backup"``, ``"restore"``): a non-empty str. ``shared=True``
    (kinds and keys that travel to a server shared by many machines) also asks for at most
    200 printable characters, since a lone surrogate or a control character would break
    what every machine reads there.

    >>> check_kind("restore")
    'restore'
    >>> check_kind("", "per_kind key")
    Traceback (most recent call last):
    ValueError: per_kind key must be a non-empty str, got ''
    """
    if not isinstance(value, str):
        raise _type_error(name, "a non-empty str", value)
    if not value:
        raise ValueError(f"{name} must be a non-empty str, got ''")
    if shared and (len(value) > 200 or not value.isprintable()):
        raise ValueError(f"{name} must be 1 to 200 printable characters, got {value!r}")
    return value


def check_limits_per_kind(value: object, *, shared: bool = False) -> dict[str, int]:
    """
    Limits per kind of operation: a mapping of kind (see :func:`check_kind`) to an int
    >= 1 or ``None`` (no limit of its own, left out of the result); ``None`` is no mapping.

    >>> check_limits_per_kind({"restore": 1, "backup": None})
    {'restore': 1}
    """
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise TypeError(f"per_kind must be a mapping of kind to limit, got {value!r}")
    out: dict[str, int] = {}
    for kind, limit in value.items():
        checked = check_optional_int(limit, f"per_kind[{kind!r}]", minimum=1)
        if checked is not None:
            out[check_kind(kind, "a per_kind key", shared=shared)] = checked
    return out


def check_seconds(
    value: object,
    name: str,
    *,
    allow_inf: bool = False,
    allow_zero: bool = True,
    timedelta_ok: bool = True,
) -> float:
    """
    A duration as float seconds: an int, a float or (unless ``timedelta_ok`` is false) a
    :class:`~datetime.timedelta`.

    One rule for every public duration: never negative, never NaN, finite unless the
    parameter documents infinity (``allow_inf``, e.g. a grace period of ``math.inf``
    that means "wait forever"), and zero only where zero means something
    (``allow_zero``).

    >>> from datetime import timedelta
    >>> check_seconds(timedelta(milliseconds=250), "window")
    0.25
    >>> check_seconds(0, "interval", allow_zero=False)
    Traceback (most recent call last):
    ValueError: interval must be > 0 seconds and finite, got 0
    >>> check_seconds("1", "interval")
    Traceback (most recent call last):
    TypeError: interval must be seconds or a timedelta, got str
    """
    what = "seconds or a timedelta" if timedelta_ok else "a number of seconds"
    original = value
    if timedelta_ok and isinstance(value, timedelta):
        value = value.total_seconds()
    seconds = check_number(value, name, what)
    low_ok = seconds > 0 or (allow_zero and seconds == 0)
    high_ok = seconds < math.inf or (allow_inf and seconds == math.inf)
    if not (low_ok and high_ok):  # NaN fails both comparisons
        bound = ">= 0" if allow_zero else "> 0"
        finite = " (math.inf: no limit)" if allow_inf else " and finite"
        raise ValueError(f"{name} must be {bound} seconds{finite}, got {original!r}")
    return seconds


def check_callable(
    value: object, name: str, *, optional: bool = False
) -> Callable[..., Any] | None:
    """
    ``value`` if it is callable (or ``None`` when ``optional``); a :class:`TypeError`
    naming the argument otherwise.

    >>> check_callable(3, "on_error", optional=True)
    Traceback (most recent call last):
    TypeError: on_error must be callable or None, got int
    """
    if value is None and optional:
        return None
    if not callable(value):
        raise _type_error(name, "callable or None" if optional else "callable", value)
    return value
