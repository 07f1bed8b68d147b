"""
Timetables of rates: full speed at night, a trickle during office hours.

The format is rclone's ``--bwlimit`` timetable, with explicit units (a bare ``512`` is
refused, since rclone reads it as KiB/s and other tools as bytes) and times as ``HH:MM``
or ``HH:MM:SS``::

    "Mon-08:00,512KiB/s 12:00,10MiB/s Fri-18:00:30,off"

Pure: the rate at a moment and the next change after it are functions of a ``datetime``;
a :class:`~throttlekit.RateLimiter` given a schedule asks for the next change and switches
exactly at it.
"""

from __future__ import annotations

import bisect
import re
from datetime import datetime, time, timedelta, timezone, tzinfo
from typing import Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from attrs import field, frozen

from .._errors import UnitError
from ._units import Rate

__all__ = ["Schedule"]

_DAYS: Final = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_DAY_NAMES: Final = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_ENTRY_RE: Final = re.compile(
    r"(?:(?P<day>[A-Za-z]{3})-)?(?P<hour>\d{1,2}):(?P<minute>\d{2})(?::(?P<second>\d{2}))?"
    r",(?P<rate>.+)"
)
_MICROSECOND: Final = timedelta(microseconds=1)
_FORM: Final = (
    "space-separated entries '[Day-]HH:MM[:SS],RATE' (Day is Mon..Sun; without a day the "
    "entry applies every day), for example 'Mon-08:00,512KiB/s 12:00,10MiB/s 18:00:30,off'"
)


def _second(point: tuple[int, Rate]) -> int:
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
    second: int  # seconds after midnight
    rate: Rate

    def __str__(self) -> str:
        day = "" if self.day is None else f"{_DAY_NAMES[self.day]}-"
        hours, rest = divmod(self.second, 3600)
        minutes, seconds = divmod(rest, 60)
        at = f"{hours:02d}:{minutes:02d}" + (f":{seconds:02d}" if seconds else "")
        return f"{day}{at},{self.rate}"


def _parse_entry(text: str, word: str) -> _Entry:
    m = _ENTRY_RE.fullmatch(word)
    if m is None:
        raise _schedule_error(text, f"entry {word!r} is not '[Day-]HH:MM[:SS],RATE'")
    day: int | None = None
    if m["day"] is not None:
        if m["day"].lower() not in _DAYS:
            raise _schedule_error(text, f"unknown day {m['day']!r} in {word!r}")
        day = _DAYS.index(m["day"].lower())
    hour, minute, second = int(m["hour"]), int(m["minute"]), int(m["second"] or 0)
    if hour > 23 or minute > 59 or second > 59:
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
    return _Entry(day=day, second=hour * 3600 + minute * 60 + second, rate=rate)


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

    Times are ``HH:MM`` or ``HH:MM:SS`` (a boundary on the second); ``str()`` shows the
    seconds only where they are not zero, and each rate in the units it was written in.
    An entry without a day applies every day; on a day with its own entry at the same
    time, the day's entry wins. Before the first entry of the week, the last one still
    applies (the timetable wraps around). A single entry, or a plain rate such as
    ``"10MiB/s"``, is a constant rate.

    Give a schedule to :class:`RateLimiter` as its rate; the limiter changes its rate at
    each boundary, re-timing waiters, rather than polling. ``tz`` is a :class:`tzinfo`, a
    zone name such as ``"Europe/Paris"``, or ``None`` for the machine's local time (with its
    daylight-saving changes). A schedule is a value: it holds no clock and no state.

    **Daylight saving.** A boundary takes effect at the first instant at which the zone's
    wall clock reads its time or later. So a boundary whose time does not exist that day
    (the spring gap: 02:30 in Paris on the last Sunday of March) takes effect when the
    clocks jump past it (at 03:00 CEST, the first instant after the gap); several
    boundaries in one gap take effect together, the last one's rate winning (and one at
    the time the clocks jump to, such as 03:00, beats them all). A boundary whose time
    occurs twice (the autumn fold) takes effect at its first occurrence only; while the
    clock repeats that hour, the rate in force stays what it was when the hour was first
    left. With these rules :meth:`next_change` is always later than the time asked, and
    :meth:`rate_at` is constant up to it and changes exactly at it, in any zone.

    >>> s = Schedule.parse("02:30,1MiB/s 05:00,off", tz="Europe/Paris")
    >>> s.next_change(datetime(2026, 3, 29, 0, 0, tzinfo=s.tz))   # 02:30 does not exist
    datetime.datetime(2026, 3, 29, 3, 0, tzinfo=zoneinfo.ZoneInfo(key='Europe/Paris'))

    Results are in the schedule's zone. Compare them with ``<``/``>``, or convert to UTC
    before ``==`` and arithmetic: Python adds a timedelta to a zoned datetime on the wall
    clock, and ``==`` across zones is always false for a time in the fold (PEP 495).
    """

    #: The timetable's entries as written: each a day (or every day), a time and a rate.
    entries: tuple[_Entry, ...] = field()
    #: The time zone the times are in (a :class:`tzinfo`); ``None`` for the machine's
    #: local time.
    tz: tzinfo | None = field(default=None, converter=_resolve_tz)
    # (second of the week, rate) sorted, one per boundary
    _points: tuple[tuple[int, Rate], ...] = field(init=False, repr=False, eq=False)
    _constant: bool = field(init=False, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        if not self.entries:
            raise ValueError("a schedule needs at least one entry")
        points: dict[int, Rate] = {}
        for entry in self.entries:  # every-day entries first, so a day's own entry wins
            if entry.day is None:
                for day in range(7):
                    points[day * 86400 + entry.second] = entry.rate
        for entry in self.entries:
            if entry.day is not None:
                points[entry.day * 86400 + entry.second] = entry.rate
        object.__setattr__(self, "_points", tuple(sorted(points.items())))
        object.__setattr__(self, "_constant", len(set(points.values())) == 1)

    @classmethod
    def parse(cls, text: str, *, tz: tzinfo | str | None = None) -> Schedule:
        """Parse ``"[Day-]HH:MM[:SS],RATE ..."`` (or a plain rate) into a schedule."""
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
            return cls(entries=(_Entry(day=None, second=0, rate=rate),), tz=tz)
        entries = tuple(_parse_entry(text, word) for word in words)
        seen: set[tuple[int | None, int]] = set()
        kinds = set()
        for entry in entries:
            if (entry.day, entry.second) in seen:
                raise _schedule_error(text, f"two entries for {str(entry).split(',')[0]}")
            seen.add((entry.day, entry.second))
            if not (entry.rate.is_unlimited or entry.rate.is_paused):
                kinds.add(entry.rate.kind)
        if len(kinds) > 1:
            raise _schedule_error(text, "it mixes data rates and unit rates")
        return cls(entries=entries, tz=tz)

    def __str__(self) -> str:
        return " ".join(str(e) for e in self.entries)

    def _instant_utc(self, when: datetime) -> datetime:
        if not isinstance(when, datetime):
            raise TypeError(f"when must be a datetime, got {type(when).__name__}")
        if when.tzinfo is None or when.utcoffset() is None:
            raise ValueError("when must be timezone-aware (naive datetimes are ambiguous)")
        try:
            instant = when.astimezone(timezone.utc)
            self._wall(instant)
        except OverflowError:
            raise ValueError(
                f"when: {when} has no wall time in the schedule's time zone within the "
                "years 1 to 9999"
            ) from None
        return instant

    def _wall(self, instant: datetime) -> datetime:
        """The (naive) wall-clock reading in the schedule's zone at ``instant``."""
        local = instant.astimezone(self.tz) if self.tz is not None else instant.astimezone()
        return local.replace(tzinfo=None, fold=0)

    def _candidate(self, wall: datetime, fold: int) -> datetime:
        """The instant PEP 495 gives for a wall time and fold (in a gap: a guess to refine)."""
        if self.tz is None:
            return wall.replace(fold=fold).astimezone(timezone.utc)  # local time, via mktime
        return wall.replace(tzinfo=self.tz, fold=fold).astimezone(timezone.utc)

    def _takes_effect(self, wall: datetime) -> datetime:
        """
        The first instant at which the wall clock reads ``wall`` or later.

        That is ``wall`` itself when it exists once; its first occurrence when the clocks
        go back and it occurs twice (the fold); and the instant the clocks jump forward
        past it when it does not exist (the gap).
        """
        first, second = self._candidate(wall, 0), self._candidate(wall, 1)
        lo, hi = min(first, second), max(first, second)
        if self._wall(lo) == wall:
            return lo  # exists: the earlier of its occurrences
        if self._wall(hi) == wall:
            return hi  # pragma: no cover - a tzinfo whose folds are the other way round
        # In a gap: the wall clock is before ``wall`` at ``lo`` and past it at ``hi``;
        # find the jump to the microsecond (about 32 steps for an hour).
        if not self._wall(lo) < wall <= self._wall(hi):
            return hi  # pragma: no cover - a tzinfo that does not follow PEP 495
        below, above = 0, (hi - lo) // _MICROSECOND
        while above - below > 1:
            middle = (below + above) // 2
            if self._wall(lo + middle * _MICROSECOND) >= wall:
                above = middle
            else:
                below = middle
        return lo + above * _MICROSECOND

    def _boundary(self, index: int, monday: datetime) -> tuple[datetime, Rate]:
        """Boundary ``index`` counted from the week starting at ``monday`` (wall time):
        the instant it takes effect and its rate. Raises OverflowError past year 9999."""
        weeks, i = divmod(index, len(self._points))
        second, rate = self._points[i]
        return self._takes_effect(monday + timedelta(weeks=weeks, seconds=second)), rate

    def _in_force(self, instant: datetime) -> tuple[int, datetime]:
        """The index of the boundary in force at ``instant``, and the Monday it counts from."""
        wall = self._wall(instant)
        monday = datetime.combine(wall.date() - timedelta(days=wall.weekday()), time())
        second = wall.weekday() * 86400 + wall.hour * 3600 + wall.minute * 60 + wall.second
        index = bisect.bisect_right(self._points, second, key=_second) - 1  # -1: last week's
        # After the clocks went back, the wall clock reads times it has read before: the
        # boundaries up to the latest reading have taken effect already (once, the first
        # time), so move past every boundary whose moment is not after ``instant``.
        while True:
            try:
                moment, _ = self._boundary(index + 1, monday)
            except OverflowError:
                break
            if moment > instant:
                break
            index += 1
        return index, monday

    def rate_at(self, when: datetime) -> Rate:
        """The rate in force at ``when`` (a timezone-aware datetime)."""
        index, _ = self._in_force(self._instant_utc(when))
        return self._points[index % len(self._points)][1]

    def next_change(self, when: datetime) -> datetime | None:
        """
        The first moment after ``when`` at which the rate changes, in the schedule's zone;
        ``None`` if the rate never changes.

        Always later than ``when``; :meth:`rate_at` gives the same rate from ``when`` up
        to (not including) this moment, and another rate at it. Boundaries whose moments
        coincide (several in one daylight-saving gap) count as one change, the last
        boundary's rate winning.
        """
        instant = self._instant_utc(when)
        if self._constant:
            return None
        index, monday = self._in_force(instant)
        current = self._points[index % len(self._points)][1]
        try:
            moment, rate = self._boundary(index + 1, monday)
            # Every real zone shows another rate within a week and a gap; the bound only
            # guards against a tzinfo that never lets two boundaries apart.
            for later in range(index + 2, index + 2 + 60 * len(self._points)):
                following, following_rate = self._boundary(later, monday)
                if following == moment:  # the same moment (a gap): the later boundary wins
                    rate = following_rate
                    continue
                if rate != current:
                    return (
                        moment.astimezone(self.tz) if self.tz is not None else moment.astimezone()
                    )
                moment, rate = following, following_rate
        except OverflowError:
            return None  # the next change would be after the year 9999
        return None  # pragma: no cover - see the bound above
