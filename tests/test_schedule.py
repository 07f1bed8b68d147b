"""Schedule: rclone-style timetables, pure functions of a datetime."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from throttlekit import Rate, Schedule, UnitError

UTC = timezone.utc
# 2026-11-23 is a Monday.
MON = datetime(2026, 11, 23, tzinfo=UTC)


def at(days: int, hour: int, minute: int = 0) -> datetime:
    return MON + timedelta(days=days, hours=hour, minutes=minute)


def test_daily_entries_apply_every_day() -> None:
    """Entries without a day switch at the same time every day."""
    s = Schedule.parse("08:00,512KiB/s 18:00,off", tz="UTC")
    for day in range(7):
        assert s.rate_at(at(day, 9)) == Rate.parse("512KiB/s")
        assert s.rate_at(at(day, 19)).is_unlimited
        assert s.rate_at(at(day, 7)).is_unlimited  # before 08:00: yesterday's last entry


def test_weekday_entries_wrap_around_the_week() -> None:
    """Weekly entries apply from their moment until the next one, wrapping after Sunday."""
    s = Schedule.parse("Mon-08:00,1MiB/s Fri-18:00,10MiB/s", tz="UTC")
    assert s.rate_at(at(0, 7)) == Rate.parse("10MiB/s")  # Monday before 08:00
    assert s.rate_at(at(0, 8)) == Rate.parse("1MiB/s")
    assert s.rate_at(at(3, 12)) == Rate.parse("1MiB/s")  # Thursday
    assert s.rate_at(at(5, 12)) == Rate.parse("10MiB/s")  # Saturday


def test_a_days_own_entry_beats_an_every_day_entry() -> None:
    """At the same time, 'Sat-08:00' overrides '08:00' on Saturdays only."""
    s = Schedule.parse("08:00,1MiB/s Sat-08:00,off 20:00,5MiB/s", tz="UTC")
    assert s.rate_at(at(5, 9)).is_unlimited
    assert s.rate_at(at(4, 9)) == Rate.parse("1MiB/s")


def test_next_change_is_the_next_boundary_with_a_different_rate() -> None:
    """next_change skips boundaries that keep the same rate and wraps across weeks."""
    s = Schedule.parse("Mon-08:00,1MiB/s 12:00,1MiB/s Sun-20:00,off", tz="UTC")
    assert s.next_change(at(0, 9)) == at(6, 20)
    assert s.next_change(at(6, 21)) == at(7, 8)  # next Monday
    assert s.next_change(at(0, 7, 59)) == at(0, 8)


def test_plain_rate_is_constant() -> None:
    """A plain rate, or one entry, never changes."""
    assert Schedule.parse("10MiB/s").next_change(MON) is None
    assert Schedule.parse("10MiB/s").rate_at(MON) == Rate.parse("10MiB/s")
    assert Schedule.parse("08:00,1/s").next_change(MON) is None


def test_time_zones_move_the_boundaries() -> None:
    """The same timetable switches at local time in its zone, daylight saving included."""
    s = Schedule.parse("08:00,1MiB/s 18:00,off", tz="Europe/Paris")
    paris = ZoneInfo("Europe/Paris")
    # 08:00 in Paris is 07:00 UTC in November (CET, +01:00).
    assert s.rate_at(datetime(2026, 11, 23, 7, 30, tzinfo=UTC)) == Rate.parse("1MiB/s")
    assert s.rate_at(datetime(2026, 11, 23, 6, 30, tzinfo=UTC)).is_unlimited
    # In July (CEST, +02:00) it is 06:00 UTC.
    assert s.rate_at(datetime(2026, 7, 6, 6, 30, tzinfo=UTC)) == Rate.parse("1MiB/s")
    change = s.next_change(datetime(2026, 3, 28, 19, tzinfo=paris))  # the night clocks change
    assert change == datetime(2026, 3, 29, 8, tzinfo=paris)
    assert change.utcoffset() == timedelta(hours=2)


def test_str_round_trips() -> None:
    """str() gives the timetable back in a form that parses to the same schedule."""
    s = Schedule.parse("Mon-08:00,512KiB/s 12:00,10MiB/s 18:00,off", tz="UTC")
    assert str(s) == "Mon-08:00,512KiB/s 12:00,10MiB/s 18:00,unlimited"
    assert Schedule.parse(str(s), tz="UTC") == s


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "it is empty"),
        ("08:00,512", "has no unit"),
        ("25:00,1MiB/s", "no such time of day"),
        ("Mon-08:00,1MiB/s Mon-08:00,2MiB/s", "two entries for Mon-08:00"),
        ("Mox-08:00,1MiB/s", "unknown day 'Mox'"),
        ("08:00,10fast", "bad rate"),
        ("08:00,1MiB/s 09:00,5/s", "mixes data rates and unit rates"),
        ("08:00,512k:1M", "upload:download"),
        ("8am,1MiB/s", "is not '[Day-]HH:MM[:SS],RATE'"),
        ("08:00:60,1MiB/s", "no such time of day"),
        ("08:00:5,1MiB/s", "is not '[Day-]HH:MM[:SS],RATE'"),
        ("08:00:00,1MiB/s 08:00,2MiB/s", "two entries for 08:00"),
    ],
)
def test_bad_timetables_say_what_is_wrong(text: str, fragment: str) -> None:
    """Each mistake is a UnitError that quotes the timetable and the accepted form."""
    with pytest.raises(UnitError, match="invalid schedule") as info:
        Schedule.parse(text)
    assert fragment in str(info.value)
    assert "[Day-]HH:MM[:SS],RATE" in str(info.value)


def test_bad_arguments() -> None:
    """Zones, datetimes and text are checked."""
    with pytest.raises(ValueError, match="unknown time zone 'Mars/Olympus'"):
        Schedule.parse("08:00,1MiB/s", tz="Mars/Olympus")
    with pytest.raises(ValueError, match="timezone-aware"):
        Schedule.parse("08:00,1MiB/s").rate_at(datetime(2026, 1, 1))
    with pytest.raises(TypeError, match="needs a str"):
        Schedule.parse(5)  # type: ignore[arg-type]


@given(
    minutes=st.lists(st.integers(0, 7 * 1440 - 1), min_size=2, max_size=6, unique=True),
    probe=st.integers(0, 3 * 7 * 1440),
)
def test_the_rate_holds_until_next_change(minutes: list[int], probe: int) -> None:
    """Between a moment and its next change the rate is constant, and at the change it differs."""
    days = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
    words = [
        f"{days[m // 1440]}-{m % 1440 // 60:02d}:{m % 60:02d},{i + 1}MiB/s"
        for i, m in enumerate(minutes)
    ]
    s = Schedule.parse(" ".join(words), tz="UTC")
    when = MON + timedelta(minutes=probe, seconds=30)
    change = s.next_change(when)
    assert change is not None and change > when
    assert s.rate_at(change - timedelta(seconds=1)) == s.rate_at(when)
    assert s.rate_at(change) != s.rate_at(when)


def test_boundaries_may_have_seconds() -> None:
    """HH:MM:SS switches on the second; str() shows the seconds only where there are some."""
    s = Schedule.parse("Mon-08:00:30,1MiB/s 12:00:00,10MiB/s 18:00,off", tz="UTC")
    assert str(s) == "Mon-08:00:30,1MiB/s 12:00,10MiB/s 18:00,unlimited"
    assert Schedule.parse(str(s), tz="UTC") == s
    assert s.rate_at(MON.replace(hour=8, second=29)).is_unlimited
    assert s.rate_at(MON.replace(hour=8, second=30)) == Rate.parse("1MiB/s")
    assert s.next_change(MON.replace(hour=8)) == MON.replace(hour=8, second=30)
    assert s.next_change(MON.replace(hour=8, second=30)) == MON.replace(hour=12)


def test_timetables_print_rates_in_the_units_written() -> None:
    """Each entry keeps the family of its rate: bits stay bits, MB stays MB."""
    s = Schedule.parse("08:00,80Mbps 12:00,1.5GB/s 18:00,10m", tz="UTC")
    assert str(s) == "08:00,80Mbit/s 12:00,1.5GB/s 18:00,10MiB/s"


@given(
    seconds=st.lists(st.integers(0, 7 * 86400 - 1), min_size=2, max_size=6, unique=True),
    probe=st.integers(0, 3 * 7 * 86400),
)
def test_the_rate_holds_until_next_change_to_the_second(seconds: list[int], probe: int) -> None:
    """With boundaries on any second of the week, the rate is constant up to next_change and
    differs at it."""
    days = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
    words = [
        f"{days[t // 86400]}-{t % 86400 // 3600:02d}:{t % 3600 // 60:02d}:{t % 60:02d},{i + 1}MiB/s"
        for i, t in enumerate(seconds)
    ]
    s = Schedule.parse(" ".join(words), tz="UTC")
    when = MON + timedelta(seconds=probe, microseconds=500_000)
    change = s.next_change(when)
    assert change is not None and change > when
    assert (change - MON).total_seconds() % 1 == 0
    assert s.rate_at(change - timedelta(microseconds=1)) == s.rate_at(when)
    assert s.rate_at(change) != s.rate_at(when)
