"""
The sans-I/O token bucket and its line: bounded bursts, exact long-run rate, exact
refunds, no drift, and large amounts served in turns at no per-burst cost.

The line is checked against a reference model that serves requests the naive way, one
burst-sized piece at a time (each piece queued at the tail when the previous one was
served), which is what the bucket computes lazily.
"""

from __future__ import annotations

import math
from collections import deque
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from throttlekit._throttle._bucket import EPS, Ticket, TokenBucket

# -- drivers -----------------------------------------------------------------------------


class Run:
    """Drives a bucket like a limiter would: polls at arrivals and at each next due."""

    def __init__(self, bucket: TokenBucket[Ticket]) -> None:
        self.bucket = bucket
        self.done: dict[int, float] = {}  # request index -> time it was done
        self.served: list[tuple[float, float]] = []  # (time, bucket.taken) at every look
        self.polls = 0

    def look(self, now: float, tickets: dict[int, Ticket]) -> None:
        self.polls += 1
        for t in self.bucket.poll(now):
            index = next(i for i, x in tickets.items() if x is t)
            self.done[index] = now
        self.served.append((now, self.bucket.taken))

    def serve(
        self, arrivals: list[tuple[float, float]], leaves: dict[int, float] | None = None
    ) -> dict[int, float]:
        """Each request enters at its arrival time; ``leaves``: index -> time it gives up."""
        leaves = leaves or {}
        tickets: dict[int, Ticket] = {}
        events = sorted(
            [(at, 1, i) for i, (at, _) in enumerate(arrivals)]
            + [(at, 0, i) for i, at in leaves.items()]
        )
        now = 0.0
        pending = deque(events)
        while True:
            due = self.bucket.next_due(now)
            due_at = now + due[1] if due is not None else math.inf
            next_event = pending[0][0] if pending else math.inf
            if due_at == math.inf and next_event == math.inf:
                break
            if due_at < next_event:
                now = due_at
                self.look(now, tickets)
                continue
            now, kind, i = pending.popleft()
            self.look(now, tickets)
            if kind == 1:
                tickets[i] = Ticket(arrivals[i][1])
                self.bucket.enter(tickets[i], now)
            elif i in tickets and not tickets[i].done:
                self.bucket.leave(tickets[i], now)
            self.look(now, tickets)
        return self.done


def reference(
    rate: float, burst: float, arrivals: list[tuple[float, float]], *, full: bool = False
) -> dict[int, float]:
    """The naive model: pieces of at most one burst, each queued when the last was served."""
    earned, taken, t = (burst if full else 0.0), 0.0, 0.0
    queue: deque[tuple[int, float]] = deque()
    rest = [amount for _, amount in arrivals]
    done: dict[int, float] = {}
    order = sorted(range(len(arrivals)), key=lambda i: arrivals[i][0])

    def run_until(limit: float) -> None:
        nonlocal earned, taken, t
        while queue:
            i, piece = queue[0]
            need = taken + piece
            at = t if earned >= need else t + (need - earned) / rate
            if at > limit + EPS:  # as the bucket: earned up to EPS seconds early counts
                break
            earned, t = max(earned, need), at
            taken = need
            queue.popleft()
            rest[i] -= piece
            if rest[i] > 1e-9 * burst:
                queue.append((i, min(rest[i], burst)))
            else:
                done[i] = at
        if not queue and t < limit < math.inf:
            earned = min(earned + rate * (limit - t), taken + burst)
            t = limit

    for i in order:
        arrival, amount = arrivals[i]
        run_until(arrival)
        if t < arrival:
            if not queue:
                earned = min(earned + rate * (arrival - t), taken + burst)
            else:
                earned += rate * (arrival - t)
            t = arrival
        queue.append((i, min(amount, burst)))
    run_until(math.inf)
    return done


rates = st.floats(min_value=0.5, max_value=1e7)
bursts = st.floats(min_value=1, max_value=1e6)


def requests(max_turns: int) -> st.SearchStrategy[list[tuple[float, float]]]:
    """(gap since the previous arrival, amount in bursts) pairs."""
    return st.lists(
        st.tuples(
            st.floats(min_value=0, max_value=5),
            st.floats(min_value=0.01, max_value=max_turns),
        ),
        min_size=1,
        max_size=25,
    )


def arrivals_of(requests: list[tuple[float, float]], burst: float) -> list[tuple[float, float]]:
    out, t = [], 0.0
    for gap, turns in requests:
        t += gap
        out.append((t, turns * burst))
    return out


# -- the bucket bound --------------------------------------------------------------------


@given(
    rate=rates,
    burst=bursts,
    full=st.booleans(),
    requests=requests(max_turns=6),
    leaves=st.dictionaries(st.integers(0, 24), st.floats(0, 60), max_size=8),
)
def test_any_interval_serves_at_most_rate_times_interval_plus_burst(
    rate: float,
    burst: float,
    full: bool,
    requests: list[tuple[float, float]],
    leaves: dict[int, float],
) -> None:
    """
    Between any two looks, the bucket serves at most rate * interval + burst, however
    large the requests and whoever gives up in the meantime.
    """
    run = Run(TokenBucket(rate, burst, 0.0, full=full))
    run.serve(arrivals_of(requests, burst), leaves)
    served = run.served
    for i in range(len(served)):
        for j in range(i, len(served)):
            window = served[j][0] - served[i][0]
            amount = served[j][1] - served[i][1]
            # (a turn counts as earned up to EPS seconds early: float rounding)
            assert amount <= rate * (window + EPS) + burst * (1 + 1e-9) + 1e-6


@given(rate=rates, burst=bursts, full=st.booleans(), requests=requests(max_turns=6))
def test_what_is_handed_out_never_runs_ahead_of_the_rate(
    rate: float, burst: float, full: bool, requests: list[tuple[float, float]]
) -> None:
    """By any moment, the total handed out is at most rate * time (+ a burst if full)."""
    arrivals = arrivals_of(requests, burst)
    done = Run(TokenBucket(rate, burst, 0.0, full=full)).serve(arrivals)
    assert sorted(done) == list(range(len(arrivals)))
    total = 0.0
    for i in sorted(done, key=done.__getitem__):
        total += arrivals[i][1]
        assert total <= rate * (done[i] + EPS) + (burst if full else 0.0) + 1e-6 * total + 1e-6


@settings(max_examples=200)
@given(rate=rates, burst=bursts, full=st.booleans(), requests=requests(max_turns=5))
def test_the_line_serves_like_burst_sized_pieces_queued_one_by_one(
    rate: float, burst: float, full: bool, requests: list[tuple[float, float]]
) -> None:
    """
    The lazy line hands each request out exactly when the naive model would: a request
    is served in turns of at most one burst, going back in line after each.
    """
    arrivals = arrivals_of(requests, burst)
    lazy = Run(TokenBucket(rate, burst, 0.0, full=full)).serve(arrivals)
    naive = reference(rate, burst, arrivals, full=full)
    assert lazy.keys() == naive.keys()
    for i in naive:
        assert lazy[i] == pytest.approx(naive[i], rel=1e-6, abs=1e-6)


@given(rate=rates, amounts=st.lists(st.integers(1, 10_000), min_size=1, max_size=200))
def test_long_run_average_equals_the_rate(rate: float, amounts: list[int]) -> None:
    """Back-to-back demand from an empty bucket is served exactly at the rate."""
    done = Run(TokenBucket(rate, 100, 0.0)).serve([(0.0, a) for a in amounts])
    assert max(done.values()) == pytest.approx(sum(amounts) / rate, rel=1e-9)


def test_no_float_drift_over_a_long_run() -> None:
    """200,000 one-unit grants at 3/s end exactly where exact arithmetic says."""
    bucket: TokenBucket[Ticket] = TokenBucket(3, 1, 0.0)
    now = 0.0
    for _ in range(200_000):
        ticket = Ticket(1)
        now += bucket.enter(ticket, now)
        assert bucket.poll(now) == [ticket]
    assert Fraction(now) == pytest.approx(Fraction(200_000, 3), rel=1e-12)


# -- turns -------------------------------------------------------------------------------


def test_requests_up_to_a_burst_are_first_come_first_served() -> None:
    """Small requests are served in order of arrival, each at its own moment."""
    done = Run(TokenBucket(10, 5, 0.0)).serve([(0.0, 5), (0.0, 1), (0.1, 5), (0.2, 0)])
    assert done == pytest.approx({0: 0.5, 1: 0.6, 2: 1.1, 3: 1.1})


def test_a_large_request_lets_later_small_ones_through_between_its_turns() -> None:
    """A small request behind a large one waits for one turn of it, not for all of it."""
    done = Run(TokenBucket(10, 5, 0.0)).serve([(0.0, 100), (0.1, 1)])
    assert done[1] == pytest.approx(0.6)  # after the large one's first turn (5 units)
    assert done[0] == pytest.approx(10.1)  # all 101 units at 10/s


def test_large_requests_share_the_rate_turn_by_turn() -> None:
    """Two large requests alternate bursts: neither waits for the other to finish."""
    done = Run(TokenBucket(10, 1, 0.0)).serve([(0.0, 50), (0.0, 100)])
    assert done[0] == pytest.approx(9.9)  # 50 turns each, the first one's last at 99
    assert done[1] == pytest.approx(15.0)


def test_a_large_request_shares_with_callers_that_never_stop() -> None:
    """
    Two callers asking for one unit again as soon as they get it, and a large request:
    each round serves the large one a burst and each caller its unit, so none starves.
    (First come, first served would make the callers wait 4 s for all 40 units; small
    requests first would starve the large one for as long as the callers go on.)
    """
    bucket: TokenBucket[Ticket] = TokenBucket(10, 2, 0.0)
    big = Ticket(40)
    bucket.enter(big, 0.0)
    for _ in range(2):
        bucket.enter(Ticket(1), 0.0)
    now, longest, since = 0.0, 0.0, {}
    while not big.done:
        due = bucket.next_due(now)
        assert due is not None
        now += due[1]
        for t in bucket.poll(now):
            if t is not big:
                longest = max(longest, now - since.get(id(t), 0.0))
                again = Ticket(1)
                since[id(again)] = now
                bucket.enter(again, now)
    assert now == pytest.approx(7.8)  # 19 rounds of 2 + 1 + 1 units, then its last turn
    assert longest == pytest.approx(0.4)  # a caller waits one round at most


def test_huge_and_many_turn_requests_cost_no_work_per_turn() -> None:
    """Requests of a million bursts take a few looks and a few updates each, not millions."""
    writes = 0

    class Counting(Ticket):
        __slots__ = ()

        @property  # type: ignore[override]
        def rest(self) -> float:
            return Ticket.rest.__get__(self)  # type: ignore[attr-defined,no-any-return]

        @rest.setter
        def rest(self, value: float) -> None:
            nonlocal writes
            writes += 1
            Ticket.rest.__set__(self, value)  # type: ignore[attr-defined]

    bucket: TokenBucket[Ticket] = TokenBucket(1e6, 1, 0.0)
    tickets = [Counting(1e6), Counting(2e6), Counting(3e6)]
    now = 0.0
    for t in tickets:
        bucket.enter(t, now)
    done: list[Ticket] = []
    looks = 0
    while len(done) < 3:
        due = bucket.next_due(now)
        assert due is not None
        now += due[1]
        done += bucket.poll(now)
        looks += 1
    assert done == tickets
    assert now == pytest.approx(6.0)
    assert looks <= 6
    assert writes <= 30


def test_a_huge_amount_waits_and_leaves_without_harm() -> None:
    """1e300 simply waits; leaving gives everything back and the bucket is unharmed."""
    bucket: TokenBucket[Ticket] = TokenBucket(10, 5, 0.0)
    huge = Ticket(1e300)
    assert bucket.enter(huge, 0.0) == pytest.approx(1e299)
    small = Ticket(3)
    assert bucket.enter(small, 0.0) == pytest.approx(0.8)  # one turn of the huge one
    assert bucket.poll(0.8) == [small]
    assert bucket.leave(huge, 1.0)
    assert bucket.waiting == 0
    assert bucket.credit(1.0) == pytest.approx(2.0)  # its current turn's progress stays
    assert bucket.taken == 8  # its first turn (5) stays spent, like the small request's 3
    assert bucket.try_take(2, 1.0)


def test_unlimited_rate_serves_huge_amounts_without_counting_them() -> None:
    """At an unlimited rate anything passes; going back to a rate leaves one burst of credit."""
    bucket: TokenBucket[Ticket] = TokenBucket(math.inf, 10, 0.0)
    huge = Ticket(1e300)
    assert bucket.enter(huge, 0.0) == 0.0
    assert huge.done and bucket.poll(0.0) == [huge]
    bucket.set_rate(5, 1.0)
    assert bucket.credit(1.0) == 10
    assert bucket.try_take(10, 1.0)
    assert bucket.credit(2.0) == 5


# -- leaving, refunds and changes --------------------------------------------------------


def test_leaving_gives_back_what_was_not_handed_out() -> None:
    """A cancelled head's unserved amount is given back; the next waiter moves up."""
    bucket: TokenBucket[Ticket] = TokenBucket(10, 10, 0.0)
    head, second = Ticket(10), Ticket(5)
    bucket.enter(head, 0.0)
    bucket.enter(second, 0.1)
    assert bucket.leave(head, 0.5)
    assert bucket.poll(0.5) == [second]  # 5 units earned by 0.5: all of them its


def test_leaving_a_large_request_mid_turn() -> None:
    """Whole turns already served stay spent; the current turn's progress carries over."""
    bucket: TokenBucket[Ticket] = TokenBucket(10, 10, 0.0)
    big = Ticket(100)
    bucket.enter(big, 0.0)
    assert bucket.leave(big, 3.5)
    assert bucket.taken == 30
    assert bucket.credit(3.5) == pytest.approx(5)
    assert bucket.enter(Ticket(10), 3.5) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="not in this bucket's line"):
        bucket.leave(Ticket(1), 3.5)  # never entered: a caller's bug, not ignored


@given(
    rate=rates,
    burst=bursts,
    before=st.floats(min_value=0, max_value=10),
    fraction=st.floats(min_value=0, max_value=1),
)
def test_refund_restores_exactly_what_was_not_used(
    rate: float, burst: float, before: float, fraction: float
) -> None:
    """Asking for up to a burst and giving up at once leaves the credit unchanged."""
    bucket: TokenBucket[Ticket] = TokenBucket(rate, burst, 0.0)
    credit = bucket.credit(before)
    amount = fraction * burst
    ticket = Ticket(amount)
    bucket.enter(ticket, before)
    if not ticket.done:
        assert bucket.leave(ticket, before)
    else:
        bucket.refund(amount, before)
    assert bucket.credit(before) == pytest.approx(credit, abs=1e-9 * burst)


def test_a_refund_never_makes_more_than_one_burst_of_credit() -> None:
    """Giving back a large grant is capped at one burst, as if it had been earned idle."""
    bucket: TokenBucket[Ticket] = TokenBucket(10, 5, 0.0, full=True)
    assert bucket.try_take(5, 0.0)
    bucket.refund(1000, 0.0)
    assert bucket.credit(0.0) == 5


def test_starts_empty_unless_full() -> None:
    """A new bucket has no credit; full=True starts with one burst."""
    assert TokenBucket(10, 5, 0.0).credit(0.0) == 0
    assert TokenBucket(10, 5, 0.0, full=True).credit(0.0) == 5
    assert TokenBucket(10, 5, 0.0).enter(Ticket(5), 0.0) == 0.5


def test_idle_time_never_banks_more_than_one_burst() -> None:
    """After a long idle period the credit is the burst, not the idle time's worth."""
    bucket: TokenBucket[Ticket] = TokenBucket(100, 10, 0.0)
    assert bucket.credit(1000.0) == 10
    assert bucket.try_take(10, 1000.0)
    assert bucket.enter(Ticket(10), 1000.0) == pytest.approx(0.1)


def test_rate_change_re_times_the_line() -> None:
    """Changing the rate mid-wait re-times the remaining deficit at the new rate."""
    bucket: TokenBucket[Ticket] = TokenBucket(10, 100, 0.0)
    ticket = Ticket(100)
    assert bucket.enter(ticket, 0.0) == 10  # 100 units at 10/s
    bucket.set_rate(100, 5.0)  # half served; 50 units left at 100/s
    assert bucket.next_due(5.0) == (ticket, pytest.approx(0.5))


def test_paused_and_unlimited() -> None:
    """Rate 0 waits forever until changed; an infinite rate never waits."""
    paused: TokenBucket[Ticket] = TokenBucket(0, 10, 0.0)
    ticket = Ticket(1)
    assert paused.enter(ticket, 0.0) == math.inf
    paused.set_rate(2, 3.0)
    assert paused.next_due(3.0) == (ticket, 0.5)
    free: TokenBucket[Ticket] = TokenBucket(math.inf, 10, 0.0)
    assert free.enter(Ticket(1e12), 0.0) == 0
    assert free.credit(0.0) == 10


def test_try_take_never_goes_into_debt_nor_jumps_the_line() -> None:
    """try_take takes only what the credit covers, and nothing while others wait."""
    bucket: TokenBucket[Ticket] = TokenBucket(10, 10, 0.0, full=True)
    assert bucket.try_take(10, 0.0)
    assert not bucket.try_take(1, 0.0)
    assert bucket.credit(0.0) == 0
    bucket.enter(Ticket(10), 0.0)
    assert not bucket.try_take(0, 0.5)
    assert bucket.available(0.5) == -math.inf


def test_smaller_burst_drops_extra_credit() -> None:
    """Shrinking the burst caps the credit at the new burst."""
    bucket: TokenBucket[Ticket] = TokenBucket(10, 100, 0.0, full=True)
    bucket.set_burst(10, 0.0)
    assert bucket.credit(0.0) == 10
    bucket.set_burst(50, 0.0)
    assert bucket.credit(0.0) == 10  # growing the burst adds no credit by itself


def test_shrunk_burst_cannot_leak_old_credit_through_later_takes() -> None:
    """After shrinking the burst, takes get at most the new burst before waiting."""
    bucket: TokenBucket[Ticket] = TokenBucket(10, 100, 0.0, full=True)
    bucket.set_burst(10, 0.0)
    assert bucket.try_take(10, 0.0)
    assert bucket.enter(Ticket(10), 0.0) == pytest.approx(1.0)


def test_smaller_burst_makes_shorter_turns() -> None:
    """A burst changed while waiters are in line changes their turns from then on."""
    bucket: TokenBucket[Ticket] = TokenBucket(10, 100, 0.0)
    big, small = Ticket(100), Ticket(1)
    bucket.enter(big, 0.0)
    bucket.enter(small, 0.0)
    bucket.set_burst(10, 0.0)
    assert bucket.next_due(0.0) == (small, pytest.approx(1.1))


def test_unlimited_burst_with_unlimited_rate() -> None:
    """An unlimited rate with an unlimited burst passes any amount at once."""
    bucket: TokenBucket[Ticket] = TokenBucket(math.inf, math.inf, 0.0)
    assert bucket.try_take(1e18, 0.0)
    assert bucket.next_due(0.0) is None
