"""
The sans-I/O waiter line, driven exactly as RateLimiter drives it, with no event loop.

A simulator plays the limiter's part: each waiter sleeps until its ``wake_at`` (for ever
while it is ``inf``) unless the line names it among the waiters to wake; when it wakes
it tells the line (``woke``) and either returns (done) or sleeps again. Arrivals,
cancellations and rate changes happen at random moments. The properties:

* nobody sleeps through their grant: each waiter returns exactly when the naive model
  (burst-sized pieces queued one by one, from tests/test_bucket.py) hands it out, and a
  request of at most one burst wakes once;
* what is handed out never runs ahead of the rate (rate changes included);
* requests of at most one burst are granted in order of arrival;
* a waiter that gives up costs the others nothing beyond waiting for it until it left,
  and the totals count only what was granted;
* a snapshot tells the truth as of its moment, before anyone has woken, and changes
  nothing.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from test_bucket import arrivals_of, bursts, rates, reference, requests
from throttlekit import Rate, Schedule
from throttlekit._throttle._bucket import EPS
from throttlekit._throttle._line import Waiter, WaiterLine, take_along

# -- the simulator -------------------------------------------------------------------------


class Sim:
    """Plays RateLimiter's part around a line: sleeps, wake-ups, arrivals, cancellations."""

    def __init__(self, line: WaiterLine[Waiter], origin: float = 0.0) -> None:
        self.line = line
        self.now = origin
        # (when, order at one moment, arrival order, what, waiter index, value)
        self.heap: list[tuple[float, int, int, str, int, float]] = []
        self.seq = itertools.count()
        self.waiters: dict[int, Waiter] = {}
        self.sleeping: dict[int, float] = {}  # index -> when its sleep ends (inf: until woken)
        self.returned: dict[int, float] = {}  # index -> when acquire returned
        self.left: set[int] = set()
        self.wakes: dict[int, int] = {}
        self.steps = 0

    def at(self, when: float, what: str, i: int = -1, value: float = 0.0) -> None:
        order = ("wake", "leave", "rate", "arrive", "look").index(what)
        heapq.heappush(self.heap, (when, order, next(self.seq), what, i, value))

    def index(self, w: Waiter) -> int:
        return next(i for i, x in self.waiters.items() if x is w)

    def fire(self, fire: list[Waiter], skip: Waiter | None = None) -> None:
        for w in fire:
            i = self.index(w)
            if w is not skip and i in self.sleeping:
                self.sleeping[i] = self.now  # its signal fires: it wakes now
                self.at(self.now, "wake", i, self.now)

    def sleep(self, i: int) -> None:
        """The limiter's _next_sleep: return if done, else sleep until wake_at."""
        seconds = self.line.sleep_for(self.waiters[i], self.now)
        if seconds is None:
            self.returned[i] = self.now
            return
        until = self.now + max(seconds, 0.0)
        self.sleeping[i] = until
        if until < math.inf:
            self.at(until, "wake", i, until)

    def arrive(self, i: int, amount: float) -> None:
        w = self.waiters[i] = Waiter(amount, self.now)
        self.wakes[i] = 0
        self.fire(self.line.enter(w, self.now), skip=w)
        self.sleep(i)

    def wake(self, i: int) -> None:
        del self.sleeping[i]
        self.wakes[i] += 1
        w = self.waiters[i]
        self.fire(self.line.woke(w, self.now), skip=w)
        self.sleep(i)

    def cancel(self, i: int) -> None:
        if i not in self.sleeping:
            return  # not there yet, or returned already
        del self.sleeping[i]
        self.left.add(i)
        w = self.waiters[i]
        self.fire(self.line.leave(w, self.now), skip=w)

    def run(
        self,
        arrivals: list[tuple[float, float]],
        leaves: dict[int, float] | None = None,
        rate_changes: Sequence[tuple[float, float]] = (),
        looks: Sequence[float] = (),
        on_look: Callable[[Sim], None] | None = None,
    ) -> None:
        for i, (when, amount) in enumerate(arrivals):
            self.at(when, "arrive", i, amount)
        for i, when in (leaves or {}).items():
            if i < len(arrivals):
                self.at(max(when, arrivals[i][0]), "leave", i)
        for when, rate in rate_changes:
            self.at(when, "rate", value=rate)
        for when in looks:
            self.at(when, "look")
        while self.heap:
            self.steps += 1
            assert self.steps < 100_000, "the line keeps waking waiters without progress"
            when, _, _, what, i, value = heapq.heappop(self.heap)
            self.now = max(self.now, when)
            if what == "wake":
                if self.sleeping.get(i) == value:  # not a stale timer
                    self.wake(i)
            elif what == "arrive":
                self.arrive(i, value)
            elif what == "leave":
                self.cancel(i)
            elif what == "rate":
                rate = Rate(per_second=value, kind="units")
                self.fire(self.line.set_source(rate, self.now, None))
            else:
                assert on_look is not None
                on_look(self)
        assert not self.sleeping, "a waiter sleeps for ever with the rate > 0"


def make_line(
    rate: float, burst: float, *, full: bool = False, origin: float = 0.0
) -> WaiterLine[Waiter]:
    return WaiterLine(Rate(per_second=rate, kind="units"), burst, origin, full=full)


# -- nobody sleeps through their grant ------------------------------------------------------


# Where the clock starts: 0 as in virtual time, or a monotonic clock on a host that has
# been up for a year (3e7 s) or three (1e8 s), where one float ulp (4-15 ns) exceeds EPS.
ORIGINS = st.sampled_from([0.0, 0.0, 3e7, 1e8])


@settings(max_examples=300)
@given(
    rate=rates,
    burst=bursts,
    full=st.booleans(),
    requests=requests(max_turns=5),
    origin=ORIGINS,
)
def test_each_waiter_returns_when_the_naive_model_hands_it_out(
    rate: float, burst: float, full: bool, requests: list[tuple[float, float]], origin: float
) -> None:
    """
    Woken only when the line says so, every waiter returns exactly at the moment the
    naive model serves its last piece (no late wake-up, no lost one, whatever the
    clock's origin), and a request of at most one burst wakes once at most: its moment
    is known when it joins.
    """
    arrivals = arrivals_of(requests, burst)
    sim = Sim(make_line(rate, burst, full=full, origin=origin), origin)
    sim.run([(origin + at, amount) for at, amount in arrivals])
    naive = reference(rate, burst, arrivals, full=full)
    assert sim.returned.keys() == naive.keys()
    for i, when in naive.items():
        assert sim.returned[i] - origin == pytest.approx(when, rel=1e-6, abs=1e-6)
        if arrivals[i][1] <= burst and origin + when < 1e5:
            # (Beyond, float rounding of the clock can add a wake-up of one ulp.)
            assert sim.wakes[i] <= 1
    assert sim.line.granted == pytest.approx(sum(a for _, a in arrivals), rel=1e-12)


# -- the rate holds, in order --------------------------------------------------------------


@given(
    burst=bursts,
    full=st.booleans(),
    requests=requests(max_turns=4),
    changes=st.lists(
        st.tuples(st.floats(0, 30), st.sampled_from([0.0, 0.5, 3.0, 100.0, 1e4])), max_size=5
    ),
    leaves=st.dictionaries(st.integers(0, 24), st.floats(0, 40), max_size=6),
)
def test_grants_never_run_ahead_of_the_rate_and_small_ones_keep_their_order(
    burst: float,
    full: bool,
    requests: list[tuple[float, float]],
    changes: list[tuple[float, float]],
    leaves: dict[int, float],
) -> None:
    """
    With the rate changed live (paused included) and waiters giving up: by any moment,
    what was handed out is at most the integral of the rate (plus a burst if it started
    full); requests of at most one burst return in order of arrival.
    """
    changes = sorted(changes)
    arrivals = arrivals_of(requests, burst)
    sim = Sim(make_line(10.0, burst, full=full))
    # Resume at the end, so every waiter that stays is served.
    sim.run(arrivals, leaves, [*changes, (200.0, 10.0)])

    def earnable(t: float) -> float:
        total, rate, since = 0.0, 10.0, 0.0
        for when, new in [*changes, (200.0, 10.0)]:
            if when >= t:
                break
            total += rate * (when - since)
            rate, since = new, when
        return total + rate * (t - since)

    served = sorted((when, arrivals[i][1]) for i, when in sim.returned.items())
    total = 0.0
    for when, amount in served:
        total += amount
        slack = (burst if full else 0.0) + 1e-6 * total + 1e-6
        assert total <= earnable(when) + 1e4 * EPS + slack
    small = sorted(i for i in sim.returned if arrivals[i][1] <= burst)
    for a, b in itertools.pairwise(small):
        assert sim.returned[a] <= sim.returned[b] + 1e-9
    assert sim.returned.keys() | sim.left == set(range(len(arrivals)))
    assert sim.line.granted == pytest.approx(sum(arrivals[i][1] for i in sim.returned))


# -- giving up -----------------------------------------------------------------------------


@settings(max_examples=200)
@given(
    rate=rates,
    burst=bursts,
    requests=requests(max_turns=4),
    quitter=st.tuples(st.floats(0, 20), st.floats(0.01, 1), st.floats(0, 5)),
)
def test_a_waiter_that_gives_up_costs_the_others_no_more_than_its_wait(
    rate: float,
    burst: float,
    requests: list[tuple[float, float]],
    quitter: tuple[float, float, float],
) -> None:
    """
    A request of at most one burst that gives up before it is served gives back all it
    held: nobody is served sooner than if it had never asked (the rate holds), and
    nobody later than that or the moment it left, whichever comes last (those behind
    it waited for it until then, and are served at once from what it gave back).
    """
    arrivals = arrivals_of(requests, burst)
    without = Sim(make_line(rate, burst))
    without.run(arrivals)
    arrive, turns, patience = quitter
    index, leave = len(arrivals), arrive + patience
    with_quitter = Sim(make_line(rate, burst))
    with_quitter.run([*arrivals, (arrive, turns * burst)], {index: leave})
    if index in with_quitter.returned:
        event("served before it gave up")
        return  # nothing to compare
    event("gave up in line")
    assert with_quitter.left == {index}
    assert with_quitter.returned.keys() == without.returned.keys()
    for i, when in without.returned.items():
        tolerance = 1e-6 * max(1.0, when)
        assert when - tolerance <= with_quitter.returned[i] <= max(when, leave) + tolerance
    assert with_quitter.line.granted == pytest.approx(without.line.granted)


def test_a_large_waiter_that_gives_up_keeps_only_the_turns_it_was_served() -> None:
    """Cancelled after one of three turns: one burst stays spent, the rest comes back."""
    line = make_line(10, 10)
    big, small = Waiter(30, 0.0), Waiter(10, 0.0)
    line.enter(big, 0.0)
    line.enter(small, 0.0)
    assert line.leave(big, 1.5) == []  # one turn served, half of the next
    done = line.collect(1.5)
    assert done == [] and small.wake_at == pytest.approx(2.0)
    assert [w is small for w in line.collect(2.0)] == [True]
    assert line.granted == 10 and line.bucket.taken == 20


def test_a_granted_waiter_that_gives_up_returns_its_grant() -> None:
    """Done but cancelled before its caller could use it: the whole amount is credit again."""
    line = make_line(10, 10)
    w = Waiter(5, 0.0)
    line.enter(w, 0.0)
    line.leave(w, 0.7)  # done at 0.5, not yet looked at
    assert line.granted == 0
    snap = line.snapshot(0.7)
    assert (snap.waiting, snap.granted, snap.tokens) == (0, 0, pytest.approx(7.0))


# -- reading changes nothing ---------------------------------------------------------------


def fingerprint(line: WaiterLine[Waiter]) -> tuple[object, ...]:
    bucket = line.bucket
    return (
        line.rate,
        line.switch_at,
        line.granted,
        line.waited,
        bucket.taken,
        bucket.burst,
        bucket.rate,
        tuple((id(t), t.rest, t.done, t.wake_at) for t in bucket.tickets()),
        tuple(getattr(bucket, name) for name in ("_base", "_base_time", "_turns", "_small")),
        tuple(map(id, bucket._completed)),
    )


@settings(max_examples=150)
@given(
    rate=rates,
    burst=bursts,
    requests=requests(max_turns=4),
    looks=st.lists(st.floats(0, 60), min_size=1, max_size=8),
)
def test_a_snapshot_tells_the_truth_at_its_moment_and_changes_nothing(
    rate: float, burst: float, requests: list[tuple[float, float]], looks: list[float]
) -> None:
    """
    At any moment, before anyone has woken to see it, a snapshot counts as granted
    exactly the waiters whose moment has come, and as waiting the others; taking it
    twice gives the same answer, and the line is left exactly as it was.
    """
    arrivals = arrivals_of(requests, burst)
    final = Sim(make_line(rate, burst))
    final.run(arrivals)  # when each one returns
    seen: list[tuple[float, object]] = []

    def look(sim: Sim) -> None:
        before = fingerprint(sim.line)
        first, second = sim.line.snapshot(sim.now), sim.line.snapshot(sim.now)
        rate_now = sim.line.rate_at(sim.now)
        assert first == second and rate_now == sim.line.rate
        assert fingerprint(sim.line) == before
        seen.append((sim.now, first))

    Sim(make_line(rate, burst)).run(arrivals, looks=looks, on_look=look)
    for now, snap in seen:
        arrived = [i for i, (at, _) in enumerate(arrivals) if at <= now]
        # Skip moments within rounding of a grant: either answer is right there.
        if any(abs(final.returned[i] - now) < 1e-6 * max(1.0, now) for i in arrived):
            continue
        granted = [i for i in arrived if final.returned[i] <= now]
        assert snap.waiting == len(arrived) - len(granted)  # type: ignore[attr-defined]
        assert snap.granted == pytest.approx(sum(arrivals[i][1] for i in granted))  # type: ignore[attr-defined]


def test_reading_the_rate_past_a_boundary_applies_nothing() -> None:
    """rate_at and snapshot see a schedule's boundary; only sync applies it."""
    wall0 = datetime(2026, 11, 23, 11, 59, tzinfo=timezone.utc)
    schedule = Schedule.parse("12:00,100/s 12:01,10/s", tz="UTC")
    line: WaiterLine[Waiter] = WaiterLine(schedule, 10.0, 0.0, wall=wall0)
    assert line.rate == Rate.parse("10/s") and line.switch_at == pytest.approx(60.0)
    w = Waiter(10, 0.0)
    line.enter(w, 0.0)
    assert w.wake_at == pytest.approx(1.0)
    line.collect(1.0)
    w2 = Waiter(1000, 1.0)
    line.enter(w2, 1.0)
    before = fingerprint(line)
    for now in (59.0, 61.0, 119.0, 121.0):
        expected = schedule.rate_at(wall0 + timedelta(seconds=now))
        assert line.rate_at(now) == expected
        assert line.snapshot(now).rate == expected
        assert line.burst_at(now) == 10.0
    assert fingerprint(line) == before
    # 590 units at 10/s by 60 s, then 100/s: the other 410 by 64.1 s.
    snap = line.snapshot(64.2)
    assert (snap.waiting, snap.granted) == (0, 1010)
    line.sync(64.2)
    assert (line.rate, line.switch_at) == (Rate.parse("100/s"), pytest.approx(120.0))
    assert w2.done and line.granted == 1010


def test_take_along_takes_from_every_level_or_none() -> None:
    """A chain takes only if every level has the amount now and nobody waits anywhere."""
    child, parent = make_line(100, 10, full=True), make_line(1, 5, full=True)
    taken, fire = take_along([child, parent], 5, 0.0)
    assert taken and not fire
    taken, fire = take_along([child, parent], 1, 0.0)
    assert not taken and not fire  # the parent is empty
    assert (child.granted, parent.granted) == (5, 5)
    assert child.bucket.available(0.0) == 5  # nothing taken from the child either
    w = Waiter(1, 0.0)
    parent.enter(w, 0.0)
    taken, fire = take_along([child, parent], 0, 1.0)  # w is granted at 1.0 on the way
    assert taken and list(fire) == [w]
