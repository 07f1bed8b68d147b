"""
Timetables of rates: full speed at night, a trickle during office hours.

The format is rclone's ``--bwlimit`` timetable, with explicit units (a bare ``512`` is
refused, since rclone reads it as KiB/s and other tools as bytes)::

    "Mon-08:00,512KiB/s 12:00,10MiB/s Fri-18:00,off"

Pure: the rate at a moment and the next change after it are functions of a ``datetime``;
a :class:`~throttlekit.RateLimiter` given a schedule asks for the next change and switches
exactly at it.
"""

from __future__ import annotations

import bisect
import re
from datetime import datetime, time, timedelta, tzinfo
from typing import Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from attrs import field, frozen

from ._units import Rate, UnitError

__all__ = ["Schedule"]

_DAYS: Final = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_DAY_NAMES: Final = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_ENTRY_RE: Final = re.compile(
    r"(?:(?P<day>[A-Za-z]{3})-)?(?P<hour>\d{1,2}):(?P<minute>\d{2}),(?P<rate>.+)"
)
_WEEK: Final = 7 * 24 * 60
_FORM: Final = (
    "space-separated entries '[Day-]HH:MM,RATE' (Day is Mon..Sun; without a day the entry "
    "applies every day), for example 'Mon-08:00,512KiB/s 12:00,10MiB/s 18:00,off'"
)


def _minute(point: tuple[int, Rate]) -> int:
    return point[0]


def _schedule_error(text: str, why: str) -> UnitError:
    return UnitError(f"invalid schedule {text!r}: {why}; expected {_FORM}")


def _resolve_tz(tz: tzinfo | str | None) -> tzinfo | None:
    if tz is None or isinstance(tz, tzinfo):
        return tz
    if isinstance(tz, str):
        try:
            return ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError) as e:
            raise ValueError(f"tz: unknown time zone {tz!r}") from e
    raise TypeError(f"tz must be a tzinfo, a zone name or None, got {type(tz).__name__}")


@frozen(kw_only=True)
class _Entry:
    day: int | None  # 0 = Monday; None = every day
    minute: int  # minutes after midnight
    rate: Rate

    def __str__(self) -> str:
        day = "" if self.day is None else f"{_DAY_NAMES[self.day]}-"
        return f"{day}{self.minute // 60:02d}:{self.minute % 60:02d},{self.rate}"


def _parse_entry(text: str, word: str) -> _Entry:
    m = _ENTRY_RE.fullmatch(word)
    if m is None:
        raise _schedule_error(text, f"entry {word!r} is not '[Day-]HH:MM,RATE'")
    day: int | None = None
    if m["day"] is not None:
        if m["day"].lower() not in _DAYS:
            raise _schedule_error(text, f"unknown day {m['day']!r} in {word!r}")
        day = _DAYS.index(m["day"].lower())
    hour, minute = int(m["hour"]), int(m["minute"])
    if hour > 23 or minute > 59:
        raise _schedule_error(text, f"no such time of day in {word!r}")
    rate_text = m["rate"]
    if ":" in rate_text:
        raise _schedule_error(text, f"separate upload:download rates are not supported ({word!r})")
    try:
        rate = Rate.parse(rate_text)
    except UnitError as e:
        raise _schedule_error(text, f"bad rate in {word!r} ({e})") from e
    bare = rate.kind == "units" and not rate_text.rstrip().endswith(("/s", "/min", "/h"))
    if bare and not (rate.is_paused or rate.is_unlimited):
        raise _schedule_error(
            text, f"{rate_text!r} has no unit: write '512KiB/s' for data or '512/s' for units"
        )
    return _Entry(day=day, minute=hour * 60 + minute, rate=rate)


@frozen(kw_only=True)
class Schedule:
    """
    A weekly timetable of rates, switching exactly at each boundary, in a time zone.

    Parse rclone's timetable syntax with explicit units::

        >>> from datetime import datetime
        >>> s = Schedule.parse("Mon-08:00,512KiB/s 12:00,10MiB/s 18:00,off", tz="UTC")
        >>> str(s.rate_at(datetime(2026, 11, 23, 9, 30, tzinfo=s.tz)))   # Monday 09:30
        '512KiB/s'
        >>> str(s.rate_at(datetime(2026, 11, 24, 7, 0, tzinfo=s.tz)))    # Tuesday 07:00
        'unlimited'
        >>> s.next_change(datetime(2026, 11, 23, 9, 30, tzinfo=s.tz))
        datetime.datetime(2026, 11, 23, 12, 0, tzinfo=zoneinfo.ZoneInfo(key='UTC'))

    An entry without a day applies every day; on a day with its own entry at the same
    time, the day's entry wins. Before the first entry of the week, the last one still
    applies (the timetable wraps around). A single entry, or a plain rate such as
    ``"10MiB/s"``, is a constant rate.

    Give a schedule to :class:`RateLimiter` as its rate; the limiter changes its rate at
    each boundary, re-timing waiters, rather than polling. ``tz`` is a :class:`tzinfo`, a
    zone name such as ``"Europe/Paris"``, or ``None`` for the machine's local time (with its
    daylight-saving changes). A schedule is a value: it holds no clock and no state.
    """

    entries: tuple[_Entry, ...] = field()
    tz: tzinfo | None = field(default=None, converter=_resolve_tz)
    # (minute of the week, rate) sorted, one per boundary
    _points: tuple[tuple[int, Rate], ...] = field(init=False, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        if not self.entries:
            raise ValueError("a schedule needs at least one entry")
        points: dict[int, Rate] = {}
        for entry in self.entries:  # every-day entries first, so a day's own entry wins
            if entry.day is None:
                for day in range(7):
                    points[day * 1440 + entry.minute] = entry.rate
        for entry in self.entries:
            if entry.day is not None:
                points[entry.day * 1440 + entry.minute] = entry.rate
        object.__setattr__(self, "_points", tuple(sorted(points.items())))

    @classmethod
    def parse(cls, text: str, *, tz: tzinfo | str | None = None) -> Schedule:
        """Parse ``"[Day-]HH:MM,RATE ..."`` (or a plain rate) into a schedule."""
        if not isinstance(text, str):
            raise TypeError(f"Schedule.parse() needs a str, got {type(text).__name__}")
        words = text.split()
        if not words:
            raise _schedule_error(text, "it is empty")
        if len(words) == 1 and "," not in words[0]:
            try:
                rate = Rate.parse(words[0])
            except UnitError as e:
                raise _schedule_error(text, str(e)) from e
            return cls(entries=(_Entry(day=None, minute=0, rate=rate),), tz=tz)
        entries = tuple(_parse_entry(text, word) for word in words)
        seen: set[tuple[int | None, int]] = set()
        kinds = set()
        for entry in entries:
            if (entry.day, entry.minute) in seen:
                raise _schedule_error(text, f"two entries for {str(entry).split(',')[0]}")
            seen.add((entry.day, entry.minute))
            if not (entry.rate.is_unlimited or entry.rate.is_paused):
                kinds.add(entry.rate.kind)
        if len(kinds) > 1:
            raise _schedule_error(text, "it mixes data rates and unit rates")
        return cls(entries=entries, tz=tz)

    def __str__(self) -> str:
        return " ".join(str(e) for e in self.entries)

    def _local(self, when: datetime) -> datetime:
        if not isinstance(when, datetime):
            raise TypeError(f"when must be a datetime, got {type(when).__name__}")
        if when.tzinfo is None:
            raise ValueError("when must be timezone-aware (naive datetimes are ambiguous)")
        return when.astimezone(self.tz) if self.tz is not None else when.astimezone()

    def _index(self, local: datetime) -> int:
        minute = local.weekday() * 1440 + local.hour * 60 + local.minute
        return bisect.bisect_right(self._points, minute, key=_minute) - 1  # -1: the last point

    def rate_at(self, when: datetime) -> Rate:
        """The rate in force at ``when`` (a timezone-aware datetime)."""
        return self._points[self._index(self._local(when))][1]

    def next_change(self, when: datetime) -> datetime | None:
        """The first boundary after ``when`` where the rate changes; ``None`` if constant."""
        local = self._local(when)
        if len({rate for _, rate in self._points}) == 1:
            return None
        here = self._index(local)
        current = self._points[here][1]
        week_start = datetime.combine(
            (local - timedelta(days=local.weekday())).date(), time(), tzinfo=local.tzinfo
        )
        n = len(self._points)
        for step in range(1, n + 1):
            i = here + step
            minute, rate = self._points[i % n]
            if rate == current:
                continue
            weeks = i // n  # here == -1: before the week's first point
            naive = week_start.replace(tzinfo=None) + timedelta(minutes=minute + weeks * _WEEK)
            if self.tz is None:
                return naive.astimezone()  # local wall time, with its own UTC offset
            return naive.replace(tzinfo=self.tz)
        return None  # pragma: no cover - the constant case returned above
