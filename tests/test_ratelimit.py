"""RateLimiter: exact virtual timestamps on asyncio and trio, plus threads on a manual clock."""

from __future__ import annotations

import math
import threading
import time
from datetime import datetime, timedelta, timezone

import anyio
import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import throttlekit._throttle._ratelimit as ratelimit_module
from throttlekit import Rate, RateLimiter, RateLimiterStatistics, Schedule, UnitError
from throttlekit.testing import ManualClock, run

pytestmark = pytest.mark.anyio


def now() -> float:
    return anyio.current_time()


async def test_starts_empty_and_waits_for_the_rate() -> None:
    """A new limiter has no credit: the first burst arrives after burst / rate seconds."""
    limiter = RateLimiter(10, burst=5)
    t0 = now()
    await limiter.acquire(5)
    assert now() - t0 == pytest.approx(0.5)


async def test_full_start_passes_one_burst_at_once() -> None:
    """full=True starts with a full burst, and no more."""
    limiter = RateLimiter(10, burst=5, full=True)
    t0 = now()
    await limiter.acquire(5)
    assert now() == t0
    await limiter.acquire(1)
    assert now() - t0 == pytest.approx(0.1)


async def test_idle_time_never_banks_more_than_one_burst() -> None:
    """After a long idle period, one burst passes at once and then the rate applies."""
    limiter = RateLimiter(10, burst=5)
    await anyio.sleep(100)
    t0 = now()
    await limiter.acquire(5)
    assert now() == t0
    await limiter.acquire(5)
    assert now() - t0 == pytest.approx(0.5)


async def test_default_burst_is_a_tenth_of_a_second_of_rate() -> None:
    """Without burst=, the burst is 0.1 s of the rate (at least 1) and follows rate changes."""
    limiter = RateLimiter("10MiB/s")
    assert limiter.burst == pytest.approx(0.1 * 10 * 2**20)
    limiter.rate = "20MiB/s"
    assert limiter.burst == pytest.approx(0.1 * 20 * 2**20)
    assert RateLimiter(2).burst == 1.0
    assert RateLimiter(100, burst=timedelta(seconds=0.5)).burst == 50.0


async def test_uncontended_acquire_does_not_yield() -> None:
    """With credit available, acquire() returns without letting other tasks run."""
    limiter = RateLimiter(1000, burst=1000, full=True)
    ran = []

    async def other() -> None:
        ran.append(1)

    async with anyio.create_task_group() as tg:
        tg.start_soon(other)
        for _ in range(10):
            await limiter.acquire()
        assert ran == []


async def test_acquire_is_a_cancellation_point() -> None:
    """A cancelled scope stops acquire() before it charges anything, even with credit."""
    limiter = RateLimiter(10, burst=10, full=True)
    with anyio.CancelScope() as scope:
        scope.cancel()
        await limiter.acquire(3)
    assert scope.cancelled_caught
    assert limiter.statistics().total_granted == 0


async def test_waiters_are_served_first_come_first_served() -> None:
    """A large request among a stream of small ones is served in its turn, not starved."""
    limiter = RateLimiter(100, burst=100)
    order: list[str] = []

    async def small(i: int) -> None:
        await anyio.sleep(i * 0.01)
        await limiter.acquire(1)
        order.append(f"s{i}")

    async def big() -> None:
        await anyio.sleep(0.005)
        await limiter.acquire(100)
        order.append("big")

    async with anyio.create_task_group() as tg:
        tg.start_soon(big)
        for i in range(5):
            tg.start_soon(small, i)
    assert order == ["s0", "big", "s1", "s2", "s3", "s4"]


async def test_each_waiter_wakes_at_its_own_moment() -> None:
    """Ten waiters of 1 unit at 10/s finish at exactly 0.1 s apart, with no polling."""
    limiter = RateLimiter(10, burst=1)
    t0 = now()
    stamps: list[float] = []

    async def one() -> None:
        await limiter.acquire()
        stamps.append(round(now() - t0, 9))

    async with anyio.create_task_group() as tg:
        for _ in range(10):
            tg.start_soon(one)
    assert sorted(stamps) == [round(0.1 * i, 9) for i in range(1, 11)]


async def test_amounts_above_the_burst_are_served_in_turns() -> None:
    """acquire(1000) with a burst of 10 is served at the rate, in turns of one burst."""
    limiter = RateLimiter(100, burst=10)
    t0 = now()
    done: dict[str, float] = {}

    async def big() -> None:
        await limiter.acquire(1000)
        done["big"] = now() - t0

    async def small() -> None:
        await anyio.sleep(0.05)
        await limiter.acquire(1)
        done["small"] = now() - t0

    async with anyio.create_task_group() as tg:
        tg.start_soon(big)
        tg.start_soon(small)
    # The small request slips in between two turns instead of waiting 10 s.
    assert done["small"] < 1
    assert done["big"] == pytest.approx(10.01)


async def test_cancelled_waiter_in_line_gives_back_its_reservation() -> None:
    """A waiter that times out refunds its amount: those behind it lose no time."""
    limiter = RateLimiter(10, burst=10)
    t0 = now()
    done: dict[str, float] = {}

    async def a() -> None:
        await limiter.acquire(10)
        done["a"] = now() - t0

    async def b() -> None:
        await anyio.sleep(0.1)
        with anyio.move_on_after(0.4):
            await limiter.acquire(10)
        done["b"] = now() - t0

    async def c() -> None:
        await anyio.sleep(0.2)
        await limiter.acquire(10)
        done["c"] = now() - t0

    async with anyio.create_task_group() as tg:
        tg.start_soon(a)
        tg.start_soon(b)
        tg.start_soon(c)
    assert done["a"] == pytest.approx(1.0)
    assert done["b"] == pytest.approx(0.5)
    assert done["c"] == pytest.approx(2.0)  # not 3.0: b's 10 units were given back
    assert limiter.statistics().total_granted == 20


async def test_cancelled_head_gives_back_and_the_next_moves_up() -> None:
    """When the head of the line is cancelled, the next waiter is re-timed at once."""
    limiter = RateLimiter(10, burst=10)
    t0 = now()
    done: dict[str, float] = {}

    async def head() -> None:
        with anyio.move_on_after(0.5):
            await limiter.acquire(10)

    async def second() -> None:
        await anyio.sleep(0.1)
        await limiter.acquire(5)
        done["second"] = now() - t0

    async with anyio.create_task_group() as tg:
        tg.start_soon(head)
        tg.start_soon(second)
    assert done["second"] == pytest.approx(0.5)  # 5 units earned by 0.5 s


async def test_changing_the_rate_re_times_waiters() -> None:
    """A waiter at 1/s is re-timed when the rate rises to 100/s, and finishes at once."""
    limiter = RateLimiter(1, burst=100)
    t0 = now()
    async with anyio.create_task_group() as tg:
        tg.start_soon(limiter.acquire, 100)
        await anyio.sleep(10)  # 10 units earned, 90 to go
        limiter.rate = 100
    assert now() - t0 == pytest.approx(10.9)
    assert limiter.rate == Rate.parse("100/s")


async def test_paused_rate_holds_everything_until_changed() -> None:
    """A rate of 0 lets nothing pass, without waking, until the rate changes."""
    limiter = RateLimiter("0", burst=10)
    t0 = now()
    async with anyio.create_task_group() as tg:
        tg.start_soon(limiter.acquire, 5)
        await anyio.sleep(3600)
        assert limiter.statistics().tasks_waiting == 1
        limiter.rate = 10
    assert now() - t0 == pytest.approx(3600.5)


async def test_unlimited_rate_passes_any_amount_at_once() -> None:
    """'off' passes everything at once, however large."""
    limiter = RateLimiter("off")
    t0 = now()
    await limiter.acquire(10**15)
    limiter.acquire_nowait(10**15)
    assert now() == t0
    assert limiter.burst == math.inf


async def test_leaving_unlimited_caps_credit_at_the_burst() -> None:
    """Going from unlimited to a finite rate leaves at most one burst of credit."""
    limiter = RateLimiter("off", burst=10)
    limiter.rate = 10
    limiter.acquire_nowait(10)
    with pytest.raises(anyio.WouldBlock):
        limiter.acquire_nowait(1)


async def test_nowait_takes_only_available_credit() -> None:
    """acquire_nowait charges when credit covers it, and raises WouldBlock otherwise."""
    limiter = RateLimiter(10, burst=10)
    with pytest.raises(anyio.WouldBlock):
        limiter.acquire_nowait(1)
    await anyio.sleep(0.5)
    limiter.acquire_nowait(5)
    with pytest.raises(anyio.WouldBlock):
        limiter.acquire_nowait(0.5)
    with pytest.raises(ValueError, match="more than the burst"):
        limiter.acquire_nowait(11)


async def test_nowait_does_not_jump_the_line() -> None:
    """While someone waits, acquire_nowait fails even if the credit would cover it."""
    limiter = RateLimiter(10, burst=10)
    async with anyio.create_task_group() as tg:
        tg.start_soon(limiter.acquire, 10)
        await anyio.sleep(0.5)  # 5 units earned, the waiter needs 10
        with pytest.raises(anyio.WouldBlock):
            limiter.acquire_nowait(1)


async def test_children_together_stay_under_the_parent() -> None:
    """Two busy 8/s children under a 10/s parent get 10/s in total, each at most 8/s."""
    site = RateLimiter(10, burst=1)
    children = [RateLimiter(8, burst=1, parent=site) for _ in range(2)]
    counts = [0, 0]

    async def pump(i: int) -> None:
        while True:
            await children[i].acquire(1)
            counts[i] += 1

    async with anyio.create_task_group() as tg:
        for i in range(2):
            tg.start_soon(pump, i)
        await anyio.sleep(100)
        tg.cancel_scope.cancel()
    assert sum(counts) == pytest.approx(1000, abs=2)
    assert all(c <= 800 + 2 for c in counts)
    assert site.statistics().total_granted == sum(counts)


async def test_a_child_is_held_to_its_own_rate() -> None:
    """A child slower than its parent limits on its own."""
    parent = RateLimiter(100, burst=1)
    child = RateLimiter(10, burst=1, parent=parent)
    t0 = now()
    for _ in range(10):
        await child.acquire()
    assert now() - t0 == pytest.approx(1.0)


async def test_cancelled_at_the_parent_refunds_the_child() -> None:
    """A waiter cancelled while waiting at the parent gives back what the child granted."""
    parent = RateLimiter(0.1, burst=10)
    child = RateLimiter(1, burst=10, parent=parent, full=True)
    with anyio.move_on_after(1):
        await child.acquire(10)  # granted by the child at once, then waits at the parent
    stats = child.statistics()
    assert stats.total_granted == 0
    assert stats.tokens == 10  # not 1: the 10 units came back


async def test_schedule_switches_at_the_boundary(monkeypatch: pytest.MonkeyPatch) -> None:
    """A scheduled rate changes exactly at the boundary, re-timing the waiter in line."""
    monkeypatch.setattr(
        ratelimit_module,
        "_wall_now",
        lambda: datetime(2026, 11, 23, 7, 59, 50, tzinfo=timezone.utc),  # a Monday
    )
    schedule = Schedule.parse("08:00,100/s 18:00,1/s", tz="UTC")
    limiter = RateLimiter(schedule, burst=1000)
    assert limiter.rate == Rate.parse("1/s")
    assert limiter.schedule is schedule
    t0 = now()
    await limiter.acquire(110)  # 10 units by 08:00, then 100 more at 100/s
    assert now() - t0 == pytest.approx(11.0)
    assert limiter.rate == Rate.parse("100/s")


async def test_a_schedule_that_does_not_move_on_is_asked_again_later(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """
    A schedule whose next change is not later than now (a bug, such as a daylight-saving
    slip) neither makes the limiter recurse nor spin: the rate in force is applied, and
    the schedule is asked again a second later.
    """
    monkeypatch.setattr(
        ratelimit_module, "_wall_now", lambda: datetime(2026, 11, 23, 12, tzinfo=timezone.utc)
    )
    asked: list[datetime] = []

    def stuck(self: Schedule, when: datetime) -> datetime:
        asked.append(when)
        return when - timedelta(hours=1)

    monkeypatch.setattr(Schedule, "next_change", stuck)
    limiter = RateLimiter(Schedule.parse("08:00,10/s 18:00,1/s", tz="UTC"), burst=10)
    t0 = now()
    with anyio.fail_after(100):
        await limiter.acquire(25)
    assert now() - t0 == pytest.approx(2.5)  # 10/s in force all along
    assert limiter.rate == Rate.parse("10/s")
    assert 2 <= len(asked) <= 5  # at the start and about once a second


async def test_schedule_text_is_accepted_as_the_rate(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rate text with a comma is a timetable."""
    monkeypatch.setattr(
        ratelimit_module, "_wall_now", lambda: datetime(2026, 11, 23, 12, tzinfo=timezone.utc)
    )
    limiter = RateLimiter("08:00,1MiB/s 18:00,off")
    assert limiter.schedule is not None


async def test_statistics_report_the_line() -> None:
    """statistics() gives rate, burst, credit (negative while waiters are in line) and totals."""
    limiter = RateLimiter(10, burst=10)
    async with anyio.create_task_group() as tg:
        tg.start_soon(limiter.acquire, 10)
        await anyio.sleep(0.25)
        stats = limiter.statistics()
        assert stats.tasks_waiting == 1
        assert stats.tokens == pytest.approx(-7.5)
        assert stats.total_waited == pytest.approx(0.25)
    stats = limiter.statistics()
    assert (stats.rate, stats.burst, stats.tasks_waiting) == (Rate.parse("10/s"), 10.0, 0)
    assert stats.total_granted == 10
    assert stats.total_waited == pytest.approx(1.0)


def test_statistics_call_waiting_tasks_tasks_waiting_and_keep_the_old_name_a_while() -> None:
    """tasks_waiting is the field (anyio's name); waiters still reads, with a warning."""
    stats = RateLimiter(10).statistics()
    assert "tasks_waiting" in attrs.fields_dict(RateLimiterStatistics)
    assert "waiters" not in attrs.fields_dict(RateLimiterStatistics)
    with pytest.warns(DeprecationWarning, match="use tasks_waiting"):
        assert stats.waiters == stats.tasks_waiting == 0


def test_statistics_and_getters_only_read(monkeypatch: pytest.MonkeyPatch) -> None:
    """
    With a waiter whose moment has come but who has not woken yet, statistics() says
    it is granted, twice the same, and neither it nor the rate, burst and repr getters
    wake anyone or apply anything; the next call that changes the line does.
    """
    fired: list[object] = []
    original = ratelimit_module.ThreadSignal.fire

    def fire(self: ratelimit_module.ThreadSignal) -> None:
        fired.append(self)
        original(self)

    monkeypatch.setattr(ratelimit_module.ThreadSignal, "fire", fire)
    clock = ManualClock()
    limiter = RateLimiter(0.001, burst=10, clock=clock)  # 5 units: 5000 s of sleep
    thread = threading.Thread(target=limiter.acquire_blocking, args=(5,), daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while limiter.statistics().tasks_waiting == 0 and time.monotonic() < deadline:
        time.sleep(0.001)
    clock.advance(5000)
    first, second = limiter.statistics(), limiter.statistics()
    assert first == second
    assert (first.tasks_waiting, first.total_granted, first.tokens) == (0, 5, 0)
    assert first.total_waited == pytest.approx(5000)
    assert (limiter.rate, limiter.burst) == (Rate.parse("0.001/s"), 10)
    assert "burst=10" in repr(limiter)
    assert fired == []  # nobody was woken
    assert thread.is_alive()
    limiter.acquire_nowait(0)  # changes the line: brings it to now, waking the thread
    thread.join(30)
    assert not thread.is_alive()
    assert len(fired) == 1
    assert limiter.statistics() == first


def test_threads_share_the_budget_on_a_manual_clock() -> None:
    """A blocking waiter is granted when the (manual) clock has earned its amount."""
    clock = ManualClock()
    limiter = RateLimiter(100, burst=5, clock=clock, full=True)
    limiter.acquire_blocking(5)
    done = threading.Event()

    def waiter() -> None:
        limiter.acquire_blocking(3)
        done.set()

    thread = threading.Thread(target=waiter)
    thread.start()
    while limiter.statistics().tasks_waiting == 0:
        time.sleep(0.001)
    assert not done.is_set()
    clock.advance(0.03)
    assert done.wait(10)
    thread.join()
    assert limiter.statistics().total_granted == 8


def test_many_threads_never_exceed_the_budget() -> None:
    """Threads hammering one limiter on a manual clock get exactly what was earned."""
    clock = ManualClock()
    limiter = RateLimiter(1000, burst=10, clock=clock)
    granted = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(20):
            limiter.acquire_blocking(1)
            with lock:
                granted.append(clock())

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        clock.advance(0.001)
        time.sleep(0.0005)
    for t in threads:
        t.join()
    assert len(granted) == 80
    # By each grant's time t, at most 1000 * t units can have been earned (starts empty).
    for i, stamp in enumerate(sorted(granted), start=1):
        assert i <= 1000 * stamp + 1e-6


async def test_tasks_and_threads_share_one_line() -> None:
    """A thread and a task on one limiter are charged to one budget."""
    limiter = RateLimiter(1e9, burst=1e6, full=True)
    await anyio.to_thread.run_sync(limiter.acquire_blocking, 4e5)
    await limiter.acquire(4e5)
    with pytest.raises(anyio.WouldBlock):
        limiter.acquire_nowait(5e5)
    assert limiter.statistics().total_granted == 8e5


@pytest.mark.parametrize(
    ("kwargs", "error", "fragment"),
    [
        ({"rate": "fast"}, UnitError, "invalid rate 'fast'"),
        ({"rate": -1}, ValueError, "rate must be >= 0"),
        ({"rate": True}, TypeError, "rate must be a number"),
        ({"rate": math.nan}, ValueError, "rate must be >= 0"),
        ({"rate": 1, "burst": 0}, ValueError, "burst must be a finite amount > 0"),
        ({"rate": 1, "burst": math.nan}, ValueError, "burst must be a finite amount > 0"),
        ({"rate": 1, "burst": True}, TypeError, "burst must be an amount"),
        ({"rate": 1, "burst": "1MiB"}, TypeError, "burst must be an amount"),
        ({"rate": 1, "burst": timedelta(0)}, ValueError, "burst must be a positive duration"),
        ({"rate": 1, "parent": "site"}, TypeError, "parent must be a RateLimiter"),
        ({"rate": 1, "clock": 5}, TypeError, "clock must be callable or None, got int"),
    ],
)
def test_bad_arguments_are_named(kwargs: dict[str, object], error: type, fragment: str) -> None:
    """Every bad argument is refused with its name and value."""
    with pytest.raises(error, match=fragment):
        RateLimiter(**kwargs)  # type: ignore[arg-type]


def test_a_child_must_share_its_parents_clock() -> None:
    """A child with a different clock than its parent would split the timeline."""
    parent = RateLimiter(1, clock=ManualClock())
    with pytest.raises(ValueError, match="parent's clock"):
        RateLimiter(1, parent=parent, clock=ManualClock())


@pytest.mark.parametrize("amount", [-1, math.nan, math.inf, True, "5"])
def test_bad_amounts_are_refused(amount: object) -> None:
    """Negative, NaN, infinite and non-numeric amounts are errors, in every entry point."""
    limiter = RateLimiter(10, full=True)
    with pytest.raises((ValueError, TypeError), match="amount must be"):
        limiter.acquire_nowait(amount)  # type: ignore[arg-type]
    with pytest.raises((ValueError, TypeError), match="amount must be"):
        limiter.acquire_blocking(amount)  # type: ignore[arg-type]
    with pytest.raises((ValueError, TypeError), match="amount must be"):
        run(limiter.acquire, amount)  # type: ignore[arg-type]


@settings(max_examples=30, deadline=None)
@given(
    rate=st.sampled_from([1.0, 7.0, 100.0, 1234.5]),
    burst=st.sampled_from([1.0, 5.0, 50.0]),
    amounts=st.lists(st.integers(1, 120), min_size=1, max_size=12),
    starts=st.lists(st.floats(0, 3), min_size=12, max_size=12),
)
def test_granted_never_exceeds_rate_times_window_plus_burst(
    rate: float, burst: float, amounts: list[int], starts: list[float]
) -> None:
    """Over every window between two grants, at most rate x window + burst is granted."""
    limiter = RateLimiter(rate, burst=burst)
    grants: list[tuple[float, float]] = []

    async def one(amount: int, start: float) -> None:
        await anyio.sleep(start)
        before = limiter.statistics().total_granted
        await limiter.acquire(amount)
        grants.append((anyio.current_time(), amount))
        assert limiter.statistics().total_granted >= before + amount - 1e-6

    async def main() -> float:
        t0 = anyio.current_time()
        async with anyio.create_task_group() as tg:
            for amount, start in zip(amounts, starts, strict=False):
                tg.start_soon(one, amount, start)
        return t0

    t0 = run(main)
    assert sum(a for _, a in grants) == sum(amounts)
    grants.sort()
    # Starting empty, the total granted by time t is at most rate * (t - t0) (plus one
    # burst: a turn counts as earned a nanosecond early).
    total = 0.0
    for stamp, amount in grants:
        total += amount
        assert total <= rate * (stamp - t0) + burst + 1e-6


async def test_zero_amount_passes_but_keeps_its_place_in_line() -> None:
    """acquire(0) charges nothing; while others wait, it waits its turn behind them."""
    limiter = RateLimiter(10, burst=10)
    t0 = now()
    await limiter.acquire(0)
    assert now() == t0
    async with anyio.create_task_group() as tg:
        tg.start_soon(limiter.acquire, 10)
        await anyio.sleep(0.1)
        await limiter.acquire(0)
        assert now() - t0 == pytest.approx(1.0)
    assert limiter.statistics().total_granted == 10
