"""
Rates with explicit units: bits and bytes, SI and IEC, per second, minute or hour.

Backup tools spell bandwidth every way there is: Avamar's ``--throttle`` takes Mbit/s,
rclone and rsync take a bare ``10M`` meaning MiB/s, CloudStack takes MiB/s, network gear
says Mbps. Mixing them up is a factor of 8 (bits vs bytes) or 4.9% (MB vs MiB) wrong. This
module parses them all, case-sensitively, into one value with no ambiguity left.

Pure: no clock, no I/O.
"""

from __future__ import annotations

import math
import re
from datetime import timedelta
from functools import total_ordering
from typing import Final, Literal

from attrs import field, frozen

from .._checks import check_number
from .._errors import UnitError

__all__ = ["Rate", "parse_burst", "parse_size"]

Kind = Literal["bytes", "units"]


# Bytes per unit. Case matters: B is a byte, b is a bit.
_BYTE_UNITS: Final[dict[str, float]] = {
    "B": 1,
    "KB": 1e3, "kB": 1e3, "MB": 1e6, "GB": 1e9, "TB": 1e12, "PB": 1e15,
    "KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "TiB": 2**40, "PiB": 2**50,
    # A bare letter is binary bytes, as in rclone, curl, pv and rsync.
    "k": 2**10, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40, "P": 2**50,
}  # fmt: skip
_BIT_UNITS: Final[dict[str, float]] = {
    "b": 1 / 8, "bit": 1 / 8,
    "Kbit": 1e3 / 8, "kbit": 1e3 / 8, "Mbit": 1e6 / 8, "Gbit": 1e9 / 8, "Tbit": 1e12 / 8,
    "Kb": 1e3 / 8, "kb": 1e3 / 8, "Mb": 1e6 / 8, "Gb": 1e9 / 8, "Tb": 1e12 / 8,
    "Kibit": 2**10 / 8, "Mibit": 2**20 / 8, "Gibit": 2**30 / 8, "Tibit": 2**40 / 8,
}  # fmt: skip
# "bps" units carry their own "per second".
_BPS_UNITS: Final[dict[str, float]] = {
    "bps": 1 / 8, "kbps": 1e3 / 8, "Kbps": 1e3 / 8, "Mbps": 1e6 / 8, "Gbps": 1e9 / 8,
    "Tbps": 1e12 / 8,
}  # fmt: skip
_PER: Final[dict[str, float]] = {
    "s": 1, "sec": 1, "second": 1,
    "min": 60, "minute": 60,
    "h": 3600, "hr": 3600, "hour": 3600,
}  # fmt: skip
_DURATION_RE: Final = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s)\s*")
_MAX_SECONDS: Final = timedelta.max.total_seconds()
_UNLIMITED: Final = frozenset({"off", "unlimited", "inf", "infinity", "none"})

_RATE_RE: Final = re.compile(
    r"""\s*
    (?P<number>(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?)
    \s*(?P<unit>[A-Za-z]+)?
    \s*(?:/\s*(?P<per>[A-Za-z]+))?
    \s*""",
    re.VERBOSE,
)

_ACCEPTED: Final = (
    "a number, an optional unit and an optional '/s', '/min' or '/h': bytes as B, KB/MB/GB/TB "
    "(x1000), KiB/MiB/GiB/TiB (x1024) or a bare k/M/G/T (x1024, as rclone and rsync); bits "
    "as b/bit, Kbit/Mbit/Gbit, Kb/Mb/Gb or kbps/Mbps/Gbps (x1000); no unit for units per "
    "second ('100/s'); 'off' or 'unlimited' for no limit; '0' pauses"
)


def check_rate_number(value: object, name: str) -> float:
    """``value`` as a rate in units per second: a number >= 0, ``math.inf`` for unlimited."""
    number = check_number(value, name, "a number of units per second")
    if math.isnan(number) or number < 0:
        raise ValueError(f"{name} must be >= 0 (math.inf for unlimited), got {value!r}")
    return number


def parse_size(text: str) -> float:
    """
    An amount of data in bytes, with the same units as rates but no time: ``"64KiB"``,
    ``"1MB"``, ``"512kbit"``, ``"10M"`` (binary, as in rclone). A bare number is bytes.
    """
    m = _RATE_RE.fullmatch(text)
    if m is None or m["per"] is not None or (m["unit"] or "B") in _BPS_UNITS:
        raise UnitError(
            f"invalid size {text!r}: expected a number and an optional unit such as 64KiB, "
            "1MB, 512kbit or 10M, with no '/s'"
        )
    unit = m["unit"] or "B"
    scale = _BYTE_UNITS.get(unit, _BIT_UNITS.get(unit))
    if scale is None:
        raise UnitError(f"invalid size {text!r}: unknown unit {unit!r}")
    size = float(m["number"]) * scale
    if not math.isfinite(size):
        raise UnitError(f"invalid size {text!r}: the number is too large")
    return size


def parse_burst(text: str) -> float | timedelta:
    """
    A burst: a size (``64KiB``, ``1MB``, in bytes) or a duration of the rate (``0.5s``,
    ``250ms``), as :class:`~throttlekit.RateLimiter` takes it and ``throttlekit pipe
    --burst`` spells it.

    A size is at least one byte; a duration at least a microsecond (the resolution of
    :class:`~datetime.timedelta`) and at most what one can hold (2.7 million years).
    Anything else is a :class:`~throttlekit.UnitError` naming the argument.
    """
    m = _DURATION_RE.fullmatch(text)
    if m is not None:
        seconds = float(m[1]) / (1000 if m[2] == "ms" else 1)
        if seconds <= 0:
            raise UnitError(f"invalid burst {text!r}: a duration must be more than zero")
        if seconds < 1e-6:
            raise UnitError(f"invalid burst {text!r}: the shortest duration is 1 microsecond")
        if seconds > _MAX_SECONDS:
            raise UnitError(f"invalid burst {text!r}: the duration is too long")
        return timedelta(seconds=seconds)
    try:
        size = parse_size(text)
    except UnitError as e:
        raise UnitError(
            f"invalid burst {text!r}: expected a size such as '64KiB' or '1MB', or a "
            f"duration such as '0.5s' or '250ms'"
        ) from e
    if size < 1:
        raise UnitError(f"invalid burst {text!r}: it must be at least one byte")
    return size


def _unit_error(text: object, why: str) -> UnitError:
    return UnitError(f"invalid rate {text!r}: {why}; expected {_ACCEPTED}")


@total_ordering
@frozen(kw_only=True, eq=True, order=False)
class Rate:
    """
    An amount per second, with an explicit kind: ``"bytes"`` for data or ``"units"`` for
    anything else (operations, requests, items).

    Build one from text with :meth:`parse`, which understands how every common tool spells
    bandwidth (case matters: ``B`` is a byte, ``b`` a bit)::

        >>> Rate.parse("80Mbit/s").per_second     # Avamar's --throttle=80
        10000000.0
        >>> Rate.parse("10MiB/s").per_second, Rate.parse("10MB/s").per_second
        (10485760.0, 10000000.0)
        >>> Rate.parse("512k").per_second         # rclone/rsync: a bare letter is binary bytes
        524288.0
        >>> Rate.parse("0.772 Mbps").per_second   # half a T1
        96500.0
        >>> Rate.parse("100/s")                   # 100 units (operations) per second
        Rate.parse('100/s')
        >>> Rate.parse("off").is_unlimited, Rate.parse("0").is_paused
        (True, True)

    ``str(rate)`` gives a short text that parses back to the same rate. Rates of one kind
    are ordered, so they work as :class:`RuledPolicy` values (the smallest matching rate
    wins); comparing a byte rate with a unit rate is a :class:`TypeError`, except that
    unlimited and paused rates compare with both kinds.

    A rate is a value, not a limiter: give it to a rate limiter to enforce it.
    """

    per_second: float = field()
    kind: Kind = field(default="bytes")

    @per_second.validator
    def _check_per_second(self, _: object, value: float) -> None:
        check_rate_number(value, "per_second")

    @kind.validator
    def _check_kind(self, _: object, value: str) -> None:
        if value not in ("bytes", "units"):
            raise ValueError(f"kind must be 'bytes' or 'units', got {value!r}")

    @classmethod
    def parse(cls, text: str | Rate) -> Rate:
        """Parse a rate such as ``"10MiB/s"``, ``"80Mbit"``, ``"100/s"`` or ``"off"``."""
        if isinstance(text, Rate):
            return text
        if not isinstance(text, str):
            raise TypeError(f"Rate.parse() needs a str, got {type(text).__name__}")
        stripped = text.strip()
        if stripped.lower() in _UNLIMITED:
            return cls(per_second=math.inf)
        if stripped.startswith("-"):
            raise _unit_error(text, "a rate cannot be negative")
        m = _RATE_RE.fullmatch(text)
        if m is None:
            raise _unit_error(text, "not a number followed by a unit")
        number = float(m["number"])
        unit, per = m["unit"], m["per"]
        kind: Kind = "bytes"
        if unit is None:
            scale, kind = 1.0, "units"
        elif unit in _BPS_UNITS:
            if per is not None:
                raise _unit_error(text, f"{unit!r} already means per second")
            scale = _BPS_UNITS[unit]
        elif unit in _BYTE_UNITS:
            scale = _BYTE_UNITS[unit]
        elif unit in _BIT_UNITS:
            scale = _BIT_UNITS[unit]
        else:
            raise _unit_error(text, f"unknown unit {unit!r}")
        seconds = 1.0
        if per is not None:
            if per not in _PER:
                raise _unit_error(text, f"unknown time unit {per!r} (use s, min or h)")
            seconds = _PER[per]
        per_second = number * scale / seconds
        if not math.isfinite(per_second):
            raise _unit_error(text, "the number is too large")
        return cls(per_second=per_second, kind=kind)

    @classmethod
    def unlimited(cls) -> Rate:
        """No limit at all."""
        return cls(per_second=math.inf)

    @property
    def is_unlimited(self) -> bool:
        """Whether this rate lets everything through at once."""
        return math.isinf(self.per_second)

    @property
    def is_paused(self) -> bool:
        """Whether this rate lets nothing through (until it changes)."""
        return self.per_second == 0

    @property
    def _is_extreme(self) -> bool:
        # Unlimited and paused mean the same for data and units, so they compare with both.
        return self.per_second == 0 or math.isinf(self.per_second)

    def __str__(self) -> str:
        return _format(self)

    def __repr__(self) -> str:
        return f"Rate.parse({_format(self)!r})"

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Rate):
            return NotImplemented
        if other.kind != self.kind and not (self._is_extreme or other._is_extreme):
            raise TypeError(f"cannot compare a rate of {self.kind} with a rate of {other.kind}")
        return self.per_second < other.per_second


# Units tried when formatting, largest first within each family.
_FORMAT_UNITS: Final[tuple[tuple[str, float], ...]] = (
    ("PiB", 2**50), ("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10),
    ("PB", 1e15), ("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("KB", 1e3),
    ("Gbit", 1e9 / 8), ("Mbit", 1e6 / 8), ("Kbit", 1e3 / 8),
    ("B", 1),
)  # fmt: skip


def _number(value: float) -> str:
    text = repr(value)
    return text[:-2] if text.endswith(".0") else text


def _format(rate: Rate) -> str:
    """The shortest text that parses back to exactly this rate."""
    if rate.is_unlimited:
        return "unlimited"
    if rate.kind == "units":
        return f"{_number(rate.per_second)}/s"
    best: str | None = None
    for per, seconds in (("s", 1), ("min", 60), ("h", 3600)):
        for unit, scale in _FORMAT_UNITS:
            value = rate.per_second * seconds / scale
            if value < 1 and unit != "B":
                continue
            text = f"{_number(value)}{unit}/{per}"
            if "e" in text or Rate.parse(text).per_second != rate.per_second:
                continue
            if best is None or len(text) < len(best):
                best = text
    return best if best is not None else f"{_number(rate.per_second)}B/s"
