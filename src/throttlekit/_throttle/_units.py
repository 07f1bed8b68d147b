"""
Rates with explicit units: bits and bytes, SI and IEC, per second, minute or hour.

Backup tools spell bandwidth every way there is: Avamar's ``--throttle`` takes Mbit/s,
rclone, rsync, curl and pv take a bare ``10M`` or ``10m`` meaning MiB/s, CloudStack takes
MiB/s, network gear says Mbps. Mixing them up is a factor of 8 (bits vs bytes) or 4.9%
(MB vs MiB) wrong. This module parses them all into one value with no ambiguity left:
the case of a prefix letter never matters (no one means millibytes), the case of ``b``
does (``B`` is a byte, ``b`` a bit), and a spelling that tools read differently (``mb``:
rsync's megabyte, a network engineer's megabit) is refused with the spellings to use.

A rate remembers the family it was written in (bytes or bits, SI or IEC) and prints in
it, per second: ``100Mbps`` prints as ``100Mbit/s``, ``40MiB/s`` as ``40MiB/s``.

Pure: no clock, no I/O.
"""

from __future__ import annotations

import math
import re
from datetime import timedelta
from decimal import Decimal
from functools import total_ordering
from typing import Final, Literal

from attrs import field, frozen

from .._checks import check_number
from .._errors import UnitError

__all__ = [
    "Family",
    "Rate",
    "check_rate_number",
    "format_amount",
    "parse_burst",
    "parse_data_rate",
    "parse_size",
]

Kind = Literal["bytes", "units"]

Family = Literal["SI", "IEC", "SI bits", "IEC bits"]
"""How a data rate is displayed: powers of 1000 or 1024, of bytes or of bits."""

_FAMILIES: Final[tuple[Family, ...]] = ("SI", "IEC", "SI bits", "IEC bits")
_PREFIXES: Final = "kmgtp"  # kilo/kibi .. peta/pebi: a prefix's power is its index + 1

# The units each family is displayed in, base unit first, with bytes per unit.
_DISPLAY: Final[dict[Family, tuple[tuple[str, float], ...]]] = {
    "SI": tuple(
        (name, 1000.0**power) for power, name in enumerate(("B", "KB", "MB", "GB", "TB", "PB"))
    ),
    "IEC": tuple(
        (name, 1024.0**power) for power, name in enumerate(("B", "KiB", "MiB", "GiB", "TiB", "PiB"))
    ),
    "SI bits": tuple(
        (name, 1000.0**power / 8)
        for power, name in enumerate(("bit", "Kbit", "Mbit", "Gbit", "Tbit", "Pbit"))
    ),
    "IEC bits": tuple(
        (name, 1024.0**power / 8)
        for power, name in enumerate(("bit", "Kibit", "Mibit", "Gibit", "Tibit", "Pibit"))
    ),
}
_PER: Final[dict[str, float]] = {
    "s": 1, "sec": 1, "secs": 1, "second": 1, "seconds": 1,
    "min": 60, "mins": 60, "minute": 60, "minutes": 60,
    "h": 3600, "hr": 3600, "hrs": 3600, "hour": 3600, "hours": 3600,
}  # fmt: skip
_UNLIMITED: Final = frozenset({"off", "unlimited", "inf", "infinity", "none"})
_DURATION_RE: Final = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s)\s*")
_MAX_SECONDS: Final = timedelta.max.total_seconds()

_RATE_RE: Final = re.compile(
    r"""\s*
    (?P<number>(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?)
    \s*(?P<unit>[A-Za-z]+)?
    \s*(?:/\s*(?P<per>[A-Za-z]+))?
    \s*""",
    re.VERBOSE,
)

_ACCEPTED: Final = (
    "a number, an optional unit and an optional '/s', '/min' or '/h': bytes as B, "
    "KB/MB/GB/TB/PB (x1000), KiB/MiB/GiB/TiB/PiB (x1024) or a bare k/m/g/t/p (x1024, as "
    "rclone, rsync, curl and pv), or KBps/MBps/GBps; bits as b/bit, Kbit/Mbit/Gbit, "
    "Kb/Mb/Gb, Kibit/Mibit or kbps/Mbps/Gbps (x1000); the prefix letter in any case, but "
    "B for bytes and b for bits; no unit for units per second ('100/s'); 'off' or "
    "'unlimited' for no limit; '0' pauses"
)


class _Ambiguous(Exception):
    """A unit that tools read differently: ``expected`` names the spellings to use."""

    def __init__(self, expected: str, why: str) -> None:
        super().__init__(f"{expected}: {why}")
        self.expected = expected
        self.why = why


def _spellings(letter: str) -> str:
    """The unambiguous spellings for a prefix letter: ``'MB' (10^6 bytes), ...``."""
    p = letter.upper()
    power = _PREFIXES.index(letter) + 1
    return (
        f"'{p}B' (10^{3 * power} bytes), '{p}iB' or '{p}' (2^{10 * power} bytes), "
        f"or '{p}bit' (10^{3 * power} bits)"
    )


def _read_unit(unit: str) -> tuple[float, Family | None, bool]:
    """
    Bytes per unit, the family the unit belongs to (``None``: plain bytes, which say
    neither SI nor IEC) and whether it includes "per second" (``Mbps``).

    Raises :class:`_Ambiguous` for a spelling that tools read differently and
    :class:`KeyError` for one that is no unit at all.
    """
    per_second = False
    core = unit
    if len(unit) >= 3 and unit.lower().endswith("bps"):
        core, per_second = unit[:-2], True
    lower = core.lower()
    bits: bool | None
    lone_b = False  # the unit ends in a single b, whose case alone says bits
    for suffix, is_bits in (("bits", True), ("bit", True), ("bytes", False), ("byte", False)):
        if lower.endswith(suffix):
            prefix, bits = lower[: -len(suffix)], is_bits
            break
    else:
        if core.endswith("B"):
            prefix, bits = lower[:-1], False
        elif core.endswith("b"):
            prefix, bits, lone_b = lower[:-1], True, True
        else:
            prefix, bits = lower, None  # a bare prefix letter: binary bytes
    iec = len(prefix) == 2 and prefix.endswith("i")
    letter = prefix[:1] if iec else prefix
    if len(letter) > 1 or (letter and letter not in _PREFIXES) or (bits is None and not letter):
        raise KeyError(unit)
    if bits is None and iec:
        raise KeyError(unit)  # 'Ki' alone: not a unit here (write KiB)
    if per_second and not any(c.islower() for c in unit):
        # BPS, MBPS: in capitals, B no longer tells bytes from bits.
        p = letter.upper()
        raise _Ambiguous(
            f"'{p}bps' (bits per second) or '{p}Bps' / '{p}B/s' (bytes per second)",
            f"in capitals {unit!r} is ambiguous",
        )
    if lone_b and letter and not per_second and not any(c.isupper() for c in core):
        # kb, mb, mib: rsync and dd read these as bytes, network gear as bits.
        raise _Ambiguous(
            _spellings(letter),
            f"in lower case {unit!r} is ambiguous (rsync reads it as bytes, network gear as bits)",
        )
    power = _PREFIXES.index(letter) + 1 if letter else 0
    if bits is None:
        return 1024.0**power, "IEC", per_second
    scale = (1024.0 if iec else 1000.0) ** power / (8 if bits else 1)
    family: Family | None
    if bits:
        family = "IEC bits" if iec else "SI bits"
    else:
        family = ("IEC" if iec else "SI") if power else None
    return scale, family, per_second


def check_rate_number(value: object, name: str) -> float:
    """``value`` as a rate in units per second: a number >= 0, ``math.inf`` for unlimited."""
    number = check_number(value, name, "a number of units per second")
    if math.isnan(number) or number < 0:
        raise ValueError(f"{name} must be >= 0 (math.inf for unlimited), got {value!r}")
    return number


def parse_size(text: str) -> float:
    """
    An amount of data in bytes, with the same units as rates but no time: ``"64KiB"``,
    ``"1MB"``, ``"512kbit"``, ``"10M"`` or ``"10m"`` (binary, as in rclone). A bare number
    is bytes.
    """
    m = _RATE_RE.fullmatch(text)
    if m is None or m["per"] is not None:
        raise UnitError(
            f"invalid size {text!r}: expected a number and an optional unit such as 64KiB, "
            "1MB, 512kbit or 10M, with no '/s'"
        )
    scale = 1.0
    if m["unit"] is not None:
        try:
            scale, _, per_second = _read_unit(m["unit"])
        except _Ambiguous as e:
            raise UnitError(f"invalid size {text!r}: {e.why}; write {e.expected}") from None
        except KeyError:
            raise UnitError(f"invalid size {text!r}: unknown unit {m['unit']!r}") from None
        if per_second:
            raise UnitError(f"invalid size {text!r}: {m['unit']!r} is a rate, not a size")
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


def parse_data_rate(text: str) -> Rate:
    """
    A rate of data: :meth:`Rate.parse`, except that a number without a unit (``1e6``,
    ``1000/s``) is bytes per second rather than units, as for ``pv -L`` and ``curl
    --limit-rate``. For command-line options that can only mean data.
    """
    rate = Rate.parse(text)
    return rate if rate.kind == "bytes" else Rate(per_second=rate.per_second)


def _unit_error(text: object, why: str, expected: str = _ACCEPTED) -> UnitError:
    return UnitError(f"invalid rate {text!r}: {why}; expected {expected}")


@total_ordering
@frozen(kw_only=True, eq=True, order=False)
class Rate:
    """
    An amount per second, with an explicit kind: ``"bytes"`` for data or ``"units"`` for
    anything else (operations, requests, items).

    Build one from text with :meth:`parse`, which understands how every common tool spells
    bandwidth (``B`` is a byte, ``b`` a bit; a prefix letter in either case, as in ``10m``
    or ``80mbps``, except the spellings that tools read differently, such as lower-case
    ``mb``, which are refused with the ones to use)::

        >>> Rate.parse("80Mbit/s").per_second     # Avamar's --throttle=80
        10000000.0
        >>> Rate.parse("10MiB/s").per_second, Rate.parse("10MB/s").per_second
        (10485760.0, 10000000.0)
        >>> Rate.parse("512k").per_second         # rclone/rsync/curl/pv: binary bytes
        524288.0
        >>> Rate.parse("10m") == Rate.parse("10MiB/s")
        True
        >>> Rate.parse("0.772 Mbps").per_second   # half a T1
        96500.0
        >>> Rate.parse("100/s")                   # 100 units (operations) per second
        Rate.parse('100/s')
        >>> Rate.parse("off").is_unlimited, Rate.parse("0").is_paused
        (True, True)

    **Display.** A data rate prints per second in the family it was written in (its
    ``family``: ``"SI"`` bytes such as MB, ``"IEC"`` bytes such as MiB, ``"SI bits"``
    such as Mbit, ``"IEC bits"`` such as Mibit), in the largest unit that keeps the
    number at least 1 and exact, and ``Rate.parse(str(rate)) == rate`` always holds,
    exactly::

        >>> str(Rate.parse("100Mbps")), str(Rate.parse("40 MiB/s")), str(Rate.parse("1500MB"))
        ('100Mbit/s', '40MiB/s', '1.5GB/s')
        >>> str(Rate.parse("3.6GB/h"))
        '1MB/s'

    A rate built from a number (``Rate(per_second=...)``, a limiter given a number,
    arithmetic) or written in plain bytes (``"1000000B/s"``) has no family (``None``) and
    prints in bytes, SI or IEC, whichever spells it exactly in fewer characters (SI on a
    tie): ``10000000.0`` prints as ``10MB/s``, ``10485760.0`` as ``10MiB/s``. Give
    ``family=`` (or :func:`attrs.evolve` a parsed rate) to choose. The family only
    changes how a rate is shown: ``Rate.parse("80Mbit/s") == Rate.parse("10MB/s")``.

    Rates of one kind are ordered, so they work as :class:`RuledPolicy` values (the
    smallest matching rate wins); comparing a byte rate with a unit rate is a
    :class:`TypeError`, except that unlimited and paused rates compare with both kinds.

    A rate is a value, not a limiter: give it to a rate limiter to enforce it.
    """

    #: The amount per second: ``inf`` is unlimited, ``0`` paused.
    per_second: float = field()
    #: ``"bytes"`` for data or ``"units"`` for anything else (operations, requests,
    #: items).
    kind: Kind = field(default="bytes")
    #: How a data rate is shown: ``"SI"``, ``"IEC"``, ``"SI bits"`` or ``"IEC bits"``,
    #: the family it was written in; ``None`` for the shorter of SI and IEC bytes. It
    #: only changes how a rate is shown, not what it equals.
    family: Family | None = field(default=None, eq=False)

    @per_second.validator
    def _check_per_second(self, _: object, value: float) -> None:
        check_rate_number(value, "per_second")

    @kind.validator
    def _check_kind(self, _: object, value: str) -> None:
        if value not in ("bytes", "units"):
            raise ValueError(f"kind must be 'bytes' or 'units', got {value!r}")

    @family.validator
    def _check_family(self, _: object, value: str | None) -> None:
        if value is None:
            return
        if value not in _FAMILIES:
            raise ValueError(
                f"family must be one of {', '.join(map(repr, _FAMILIES))} or None, got {value!r}"
            )
        if self.kind != "bytes":
            raise ValueError(
                f"family is for rates of bytes; a rate of units has none, got {value!r}"
            )

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
        family: Family | None = None
        if unit is None:
            scale, kind = 1.0, "units"
        else:
            try:
                scale, family, includes_per = _read_unit(unit)
            except _Ambiguous as e:
                why = f"unknown unit {unit!r}"
                raise _unit_error(text, why, f"{e.expected}: {e.why}") from None
            except KeyError:
                raise _unit_error(text, f"unknown unit {unit!r}") from None
            if includes_per and per is not None:
                raise _unit_error(text, f"{unit!r} already means per second")
        seconds = 1.0
        if per is not None:
            seconds_per = _PER.get(per.lower())
            if seconds_per is None:
                raise _unit_error(text, f"unknown time unit {per!r} (use s, min or h)")
            seconds = seconds_per
        per_second = number * scale / seconds
        if not math.isfinite(per_second):
            raise _unit_error(text, "the number is too large")
        return cls(per_second=per_second, kind=kind, family=family)

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


# -- display -----------------------------------------------------------------------------


def _plain(value: float) -> str:
    """The shortest text that reads back as ``value``, without an exponent where sensible."""
    text = repr(value)
    if "e" in text and 1e-9 <= value < 1e21:
        text = format(Decimal(text), "f")
    return text[:-2] if text.endswith(".0") else text


def _in_family(per_second: float, family: Family) -> str | None:
    """
    ``per_second`` spelled exactly in ``family``: the largest unit whose number is at least
    1 and reads back exactly; failing that (a number no unit spells exactly but the base
    one, which always does), the shortest exact spelling. None if none is exact (a bit
    count too large for a float).
    """
    best: str | None = None
    for name, scale in reversed(_DISPLAY[family]):
        value = per_second / scale
        if not math.isfinite(value):
            continue
        number = _plain(value)
        if float(number) * scale != per_second:
            continue
        text = f"{number}{name}/s"
        if value >= 1:
            return text
        if best is None or len(text) < len(best):
            best = text
    return best


def _format(rate: Rate) -> str:
    """The text of ``rate`` that :meth:`Rate.parse` reads back as exactly this rate."""
    if rate.is_unlimited:
        return "unlimited"
    if rate.kind == "units":
        return f"{_plain(rate.per_second)}/s"
    if rate.family is not None:
        text = _in_family(rate.per_second, rate.family)
        if text is not None:
            return text
    texts = [_in_family(rate.per_second, family) for family in ("SI", "IEC")]
    return min((t for t in texts if t is not None), key=len)


def format_amount(amount: float, family: Family | None = None) -> str:
    """
    ``amount`` bytes to three significant digits, for people rather than parsers:
    ``'12.3MiB'``, ``'9.54Mbit'``, ``'64MiB'``. ``family`` as a :class:`Rate`'s; ``None`` is IEC, as
    ``pv`` shows. Add ``/s`` for a rate.

    >>> format_amount(12_345_678), format_amount(12_345_678, "SI"), format_amount(1e6, "SI bits")
    ('11.8MiB', '12.3MB', '8Mbit')
    """
    units = _DISPLAY[family or "IEC"]
    name, scale = next(((n, s) for n, s in reversed(units) if abs(amount) >= s), units[0])
    value = amount / scale
    if scale == units[0][1] or abs(value) >= 999.5:  # whole bytes or bits; 1000-1023KiB
        return f"{value:.0f}{name}"
    return f"{value:.3g}{name}"
