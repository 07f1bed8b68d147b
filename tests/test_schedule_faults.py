"""
Schedules across daylight-saving changes: the next change is always later, and the rate
changes exactly there, in every kind of zone.

The semantics under test (documented on :class:`Schedule`): a boundary takes effect at the
first instant at which the zone's wall clock reads its time or later. So a boundary in the
spring gap takes effect when the clocks jump past it, and one in the autumn fold takes
effect at its first occurrence only. The oracle below computes that directly, by walking
the wall clock minute by minute and keeping its highest reading, and the schedule must
agree with it at every minute of whole transition days, in both hemispheres, for
half-hour DST, for changes at midnight, and with no DST at all.
"""

from __future__ import annotations

import bisect
import contextlib
import os
import time
from collections.abc import Iterator
from datetime import date, datetime, timedelta, timezone, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from throttlekit import Rate, RateLimiter, Schedule
from throttlekit._throttle import _ratelimit as ratelimit_module

UTC = timezone.utc
MINUTE = timedelta(minutes=1)
MICRO = timedelta(microseconds=1)

ZONES = [
    "Europe/Paris",  # northern hemisphere, changes at 02:00/03:00
    "America/New_York",  # northern, behind UTC
    "Australia/Sydney",  # southern hemisphere
    "Pacific/Auckland",  # southern, far ahead of UTC (the local day starts the UTC day before)
    "Australia/Lord_Howe",  # half-hour DST
    "America/Santiago",  # southern, changes at midnight (the gap eats 00:00)
    "America/Havana",  # northern, changes at midnight
    "Asia/Kolkata",  # +05:30 and no DST: the control
]


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except ZoneInfoNotFoundError:
        pytest.skip(f"zoneinfo has no {name} here (no system tz database; pip install tzdata)")


def transitions(tz: tzinfo, year: int) -> list[datetime]:
    """The instants (UTC, to the minute) at which ``tz`` changes its offset in ``year``."""
    found: list[datetime] = []
    t = datetime(year, 1, 1, tzinfo=UTC)
    offset = t.astimezone(tz).utcoffset()
    while t.year == year:
        if (t + timedelta(hours=1)).astimezone(tz).utcoffset() != offset:
            while t.astimezone(tz).utcoffset() == offset:
                t += MINUTE
            found.append(t)
            offset = t.astimezone(tz).utcoffset()
        t += timedelta(hours=1)
    return found


def walls(tz: tzinfo, start: datetime, end: datetime) -> Iterator[tuple[datetime, datetime]]:
    """(instant, naive wall reading) every minute from start to end."""
    t = start
    while t <= end:
        yield t, t.astimezone(tz).replace(tzinfo=None)
        t += MINUTE


# A daily timetable dense around the night (where clocks change) and at midnight, with
# neighbours that sometimes share a rate (which must not count as a change).
NIGHT = [*list(range(0, 5 * 60, 10)), 23 * 60 + 30, 23 * 60 + 50, 12 * 60]
TIMETABLE = sorted((m, f"{(m * 7 // 10) % 4 + 1}/s") for m in NIGHT)
RATES = {rate: Rate.parse(rate) for _, rate in TIMETABLE}
TEXT = " ".join(f"{m // 60:02d}:{m % 60:02d},{rate}" for m, rate in TIMETABLE)


def oracle_rate(high_water: datetime) -> Rate:
    """The rate of the last daily boundary at or before the highest wall reading so far."""
    minute = high_water.hour * 60 + high_water.minute
    position = bisect.bisect_right(TIMETABLE, minute, key=lambda entry: entry[0]) - 1
    return RATES[TIMETABLE[position][1]]  # -1: yesterday's last boundary


def transition_cases() -> list[tuple[str, int]]:
    return [(name, i) for name in ZONES for i in range(2)]


def window(tz: ZoneInfo, i: int) -> tuple[datetime, datetime]:
    """Two days around the i-th change of 2026 (Kolkata: around Paris's, as a control)."""
    found = transitions(tz, 2026) or transitions(zone("Europe/Paris"), 2026)
    centre = found[i]
    return centre - timedelta(hours=26), centre + timedelta(hours=26)


@pytest.mark.parametrize(("name", "i"), transition_cases())
def test_whole_transition_days_agree_with_the_wall_clock_oracle(name: str, i: int) -> None:
    """rate_at and next_change agree with the oracle at every minute (and in between)."""
    tz = zone(name)
    schedule = Schedule.parse(TEXT, tz=tz)
    start, end = window(tz, i)
    samples: list[tuple[datetime, Rate]] = []
    high_water = datetime.min
    for instant, wall in walls(tz, start - timedelta(hours=3), end):
        high_water = max(high_water, wall)
        if instant >= start:
            samples.append((instant, oracle_rate(high_water)))
    changes = [t for (t, r), (_, before) in zip(samples[1:], samples, strict=False) if r != before]
    assert len(changes) > 40  # the timetable really switches a lot in the window
    upcoming = iter(changes)
    expected_next = next(upcoming)
    centre = start + (end - start) / 2
    for k, (instant, expected) in enumerate(samples):
        while expected_next is not None and expected_next <= instant:
            expected_next = next(upcoming, None)
        if abs(instant - centre) > timedelta(hours=5) and k % 7:
            continue  # every minute near the change, every 7 minutes further away
        for probe in (instant, instant + timedelta(seconds=17, microseconds=3)):
            assert schedule.rate_at(probe) == expected, (name, probe)
            change = schedule.next_change(probe)
            assert change is not None and change.astimezone(UTC) > probe
            if expected_next is not None:
                # In UTC: Python's == across zones is False for a wall time that occurs
                # twice (PEP 495), and some of these changes are in the fold.
                assert change.astimezone(UTC) == expected_next, (name, probe)
                assert change.tzinfo is tz


@pytest.mark.parametrize("name", ZONES)
@pytest.mark.parametrize("i", [0, 1])
def test_each_change_is_later_and_the_rate_holds_until_it(name: str, i: int) -> None:
    """next_change(t) > t; rate_at is rate_at(t) up to it and different at it."""
    tz = zone(name)
    schedule = Schedule.parse(TEXT, tz=tz)
    start, end = window(tz, i)
    t = start
    while t < end:
        local = schedule.next_change(t)
        assert local is not None
        # Arithmetic in UTC: on a ZoneInfo datetime, "- 1 µs" is wall-clock arithmetic.
        change = local.astimezone(UTC)
        assert change > t
        assert schedule.rate_at(change - MICRO) == schedule.rate_at(t)
        assert schedule.rate_at(change) != schedule.rate_at(t)
        assert schedule.next_change(change - MICRO) == local
        t = change  # walk change to change: every change of the two days


def test_the_issue_example_in_the_paris_fold() -> None:
    """The issue: 02:30 and 02:45 on the night Paris's clocks go back, asked at 02:20 CET."""
    tz = zone("Europe/Paris")
    s = Schedule.parse("Sun-02:30,1MiB/s Sun-02:45,off", tz="Europe/Paris")
    asked = datetime(2026, 10, 25, 1, 20, tzinfo=UTC)  # 02:20 CET, the second 02:20
    # Both boundaries took effect at their first occurrence (00:30 and 00:45 UTC, CEST).
    assert s.rate_at(datetime(2026, 10, 25, 0, 40, tzinfo=UTC)) == Rate.parse("1MiB/s")
    assert s.rate_at(asked).is_unlimited
    assert s.rate_at(datetime(2026, 10, 25, 1, 35, tzinfo=UTC)).is_unlimited  # 02:35 again
    change = s.next_change(asked)
    assert change == datetime(2026, 11, 1, 2, 30, tzinfo=tz)  # next Sunday, not the past
    assert change is not None and change > asked


def test_a_boundary_in_the_spring_gap_takes_effect_when_the_clocks_jump() -> None:
    """02:30 does not exist on 29 March 2026 in Paris: it takes effect at 03:00 CEST."""
    tz = zone("Europe/Paris")
    s = Schedule.parse("02:30,1MiB/s 05:00,off", tz="Europe/Paris")
    jump = datetime(2026, 3, 29, 1, 0, tzinfo=UTC)  # 02:00 CET -> 03:00 CEST
    assert s.next_change(jump - timedelta(hours=2)) == jump
    assert s.next_change(jump - MICRO) == datetime(2026, 3, 29, 3, 0, tzinfo=tz)
    assert s.rate_at(jump - MICRO).is_unlimited
    assert s.rate_at(jump) == Rate.parse("1MiB/s")
    assert s.rate_at(datetime(2026, 3, 29, 1, 10, tzinfo=UTC)) == Rate.parse("1MiB/s")


def test_boundaries_sharing_a_gap_are_one_change_the_last_wins() -> None:
    """02:10 and 02:40 both fall in the gap: one change, to 02:40's rate; 03:00 beats both."""
    s = Schedule.parse("02:10,1/s 02:40,2/s 04:00,3/s", tz="Europe/Paris")
    jump = datetime(2026, 3, 29, 1, 0, tzinfo=UTC)
    assert s.next_change(jump - timedelta(minutes=5)) == jump
    assert s.rate_at(jump) == Rate.parse("2/s")
    s = Schedule.parse("02:10,1/s 03:00,2/s 04:00,3/s", tz="Europe/Paris")
    assert s.rate_at(jump) == Rate.parse("2/s")
    # A gap whose last boundary restores the rate in force is no change at all.
    s = Schedule.parse("02:10,1/s 02:40,3/s 04:00,3/s", tz="Europe/Paris")
    assert s.next_change(jump - timedelta(minutes=5)) == datetime(
        2026, 3, 30, 2, 10, tzinfo=ZoneInfo("Europe/Paris")
    )


# -- the machine's local time (tz=None) ----------------------------------------------------


@pytest.fixture
def local_zone(request: pytest.FixtureRequest) -> Iterator[str]:
    """Make the process's local time zone ``request.param`` (TZ + tzset), then restore."""
    if not hasattr(time, "tzset"):
        pytest.skip("time.tzset() is Unix only")
    name: str = request.param
    zone(name)
    saved = os.environ.get("TZ")
    os.environ["TZ"] = name
    time.tzset()
    try:
        yield name
    finally:
        if saved is None:
            del os.environ["TZ"]
        else:
            os.environ["TZ"] = saved
        time.tzset()


@pytest.mark.parametrize("local_zone", ["Europe/Paris", "Australia/Lord_Howe"], indirect=True)
def test_local_time_follows_the_same_rules(local_zone: str) -> None:
    """tz=None (the machine's zone) gives the same moments as naming the zone."""
    named = Schedule.parse(TEXT, tz=local_zone)
    local = Schedule.parse(TEXT)
    for i in range(2):
        start, end = window(ZoneInfo(local_zone), i)
        for instant in (start + k * 7 * MINUTE for k in range(int((end - start) / MINUTE) // 7)):
            assert local.rate_at(instant) == named.rate_at(instant)
            mine, theirs = local.next_change(instant), named.next_change(instant)
            assert mine is not None and theirs is not None
            assert mine.astimezone(UTC) == theirs.astimezone(UTC)


# -- the rate limiter on such a schedule ------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("name", ["Europe/Paris", "Australia/Lord_Howe", "America/Havana"])
@pytest.mark.parametrize("i", [0, 1])
async def test_the_limiter_agrees_with_rate_at_across_the_change(
    monkeypatch: pytest.MonkeyPatch, name: str, i: int
) -> None:
    """Minute by minute across a change, limiter.rate is the schedule's rate_at."""
    tz = zone(name)
    schedule = Schedule.parse(TEXT, tz=tz)
    centre = transitions(tz, 2026)[i]
    wall0 = centre - timedelta(hours=3)
    # A fixed offset, as datetime.now().astimezone() gives: the limiter adds elapsed time
    # to it, which on a ZoneInfo datetime would be wall-clock arithmetic.
    monkeypatch.setattr(ratelimit_module, "_wall_now", lambda: wall0)
    with anyio.fail_after(7 * 3600):
        limiter = RateLimiter(schedule, burst=1000)
        t0 = anyio.current_time()
        for _ in range(6 * 60):
            elapsed = timedelta(seconds=anyio.current_time() - t0)
            assert limiter.rate == schedule.rate_at(wall0 + elapsed), wall0 + elapsed
            assert limiter.statistics().rate == limiter.rate
            with contextlib.suppress(anyio.WouldBlock):
                limiter.acquire_nowait(0.001)
            await anyio.sleep(60)


@pytest.mark.anyio
async def test_the_issue_limiter_does_not_recurse(monkeypatch: pytest.MonkeyPatch) -> None:
    """The issue's schedule at 02:20 CET: rate, acquire and statistics simply work."""
    asked = datetime(2026, 10, 25, 1, 20, tzinfo=UTC)
    monkeypatch.setattr(ratelimit_module, "_wall_now", lambda: asked)
    limiter = RateLimiter(Schedule.parse("Sun-02:30,1MiB/s Sun-02:45,off", tz="Europe/Paris"))
    assert limiter.rate.is_unlimited
    with anyio.fail_after(1):
        await limiter.acquire(10)
    limiter.acquire_nowait(10)
    assert limiter.statistics().total_granted == 20


@pytest.mark.anyio
async def test_a_waiter_switches_when_the_clocks_jump(monkeypatch: pytest.MonkeyPatch) -> None:
    """A waiter in line at 1/s gets 100/s at the jump (01:00 UTC), not an hour later."""
    zone("Europe/Paris")
    start = datetime(2026, 3, 29, 0, 59, 50, tzinfo=UTC)
    monkeypatch.setattr(ratelimit_module, "_wall_now", lambda: start)
    limiter = RateLimiter(Schedule.parse("02:30,100/s 05:00,1/s", tz="Europe/Paris"), burst=1000)
    assert limiter.rate == Rate.parse("1/s")
    t0 = anyio.current_time()
    with anyio.fail_after(3600):
        await limiter.acquire(110)  # 10 units by the jump, then 100 at 100/s
    assert anyio.current_time() - t0 == pytest.approx(11.0)
    assert limiter.rate == Rate.parse("100/s")


# -- Hypothesis: random timetables, zones and instants -------------------------------------

_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_NEAR: dict[str, list[datetime]] = {}


def _near_changes(name: str) -> list[datetime]:
    if name not in _NEAR:
        tz = ZoneInfo(name)
        _NEAR[name] = [t for year in (2025, 2026, 2027) for t in transitions(tz, year)] or [
            datetime(2026, 3, 29, 1, tzinfo=UTC)
        ]
    return _NEAR[name]


@st.composite
def timetables(draw: st.DrawFn) -> str:
    """1-8 entries, daily or on a day, many of them in the hours clocks change."""
    hours = st.one_of(st.integers(0, 4), st.sampled_from([23, 12]), st.integers(0, 23))
    count = draw(st.integers(1, 8))
    seen: set[tuple[int | None, int, int]] = set()
    words: list[str] = []
    for _ in range(count):
        day = draw(st.none() | st.integers(0, 6))
        hour, minute = draw(hours), draw(st.sampled_from([0, 1, 15, 29, 30, 31, 45, 59]))
        if (day, hour, minute) in seen:
            continue
        seen.add((day, hour, minute))
        rate = draw(st.sampled_from(["1/s", "2/s", "3/s", "off", "0"]))
        prefix = "" if day is None else f"{_DAYS[day]}-"
        words.append(f"{prefix}{hour:02d}:{minute:02d},{rate}")
    return " ".join(words)


@st.composite
def instants(draw: st.DrawFn, name: str) -> datetime:
    """Mostly within hours of a change of the zone; sometimes anywhere from 1970 to 2100."""
    if draw(st.booleans()):
        centre = draw(st.sampled_from(_near_changes(name)))
        return centre + timedelta(
            microseconds=draw(st.integers(-4 * 3600 * 10**6, 4 * 3600 * 10**6))
        )
    return draw(
        st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(2100, 1, 1))
    ).replace(tzinfo=UTC)


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow], max_examples=300)
@given(data=st.data(), name=st.sampled_from(ZONES), text=timetables())
def test_random_timetables_zones_and_instants(data: st.DataObject, name: str, text: str) -> None:
    """For any timetable, zone and instant: later, constant until, different at; and the
    rate is the one of the last boundary the wall clock has reached."""
    tz = zone(name)
    s = Schedule.parse(text, tz=tz)
    t = data.draw(instants(name))
    rate = s.rate_at(t)
    local = s.next_change(t)
    if local is None:
        assert len({s.rate_at(t + timedelta(days=d)) for d in range(8)}) == 1
        return
    change = local.astimezone(UTC)
    assert change > t
    for probe in (t, t + (change - t) / 2, change - MICRO):
        assert s.rate_at(probe) == rate
    assert s.rate_at(change) != rate
    again = s.next_change(change - MICRO)
    assert again is not None and again.astimezone(UTC) == change


@pytest.mark.parametrize(
    "when",
    [
        datetime(1, 1, 1, tzinfo=UTC),
        datetime(1, 1, 8, 12, tzinfo=UTC),
        datetime(9999, 12, 31, 23, 59, tzinfo=UTC),
        datetime(9999, 12, 25, tzinfo=UTC),
    ],
)
@pytest.mark.parametrize("tz", ["UTC", "Pacific/Auckland", "America/New_York"])
def test_the_ends_of_the_calendar(when: datetime, tz: str) -> None:
    """Near year 1 and year 9999: a rate, and a later change or None; or a ValueError
    when the instant has no wall time in the zone. Never an OverflowError."""
    zone(tz)
    s = Schedule.parse("Mon-08:00,1/s 18:00,2/s", tz=tz)
    wall_exists = True
    try:
        when.astimezone(ZoneInfo(tz))
    except OverflowError:
        wall_exists = False
    if not wall_exists:
        with pytest.raises(ValueError, match="has no wall time in the schedule's time zone"):
            s.rate_at(when)
        with pytest.raises(ValueError, match="has no wall time"):
            s.next_change(when)
        return
    s.rate_at(when)
    change = s.next_change(when)
    assert change is None or change > when


def test_a_naive_or_offsetless_datetime_is_refused() -> None:
    """A datetime without an offset is ambiguous: ValueError, as before."""

    class NoOffset(tzinfo):
        def utcoffset(self, dt: datetime | None) -> None:
            return None

    s = Schedule.parse("08:00,1/s 18:00,2/s", tz="UTC")
    for when in (datetime(2026, 1, 1), datetime(2026, 1, 1, tzinfo=NoOffset())):
        with pytest.raises(ValueError, match="timezone-aware"):
            s.next_change(when)
    with pytest.raises(TypeError, match="when must be a datetime"):
        s.rate_at(date(2026, 1, 1))  # type: ignore[arg-type]
