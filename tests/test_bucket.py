"""The sans-I/O token bucket: bounded bursts, exact long-run rate, exact refunds, no drift."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from throttlekit._bucket import TokenBucket, pieces


def serve(bucket: TokenBucket, arrivals: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """FIFO service: each request starts when it arrives and its predecessor was granted."""
    grants: list[tuple[float, float]] = []
    previous = 0.0
    for arrival, amount in arrivals:
        now = max(arrival, previous)
        granted = now + bucket.reserve(amount, now)
        grants.append((granted, amount))
        previous = granted
    return grants


rates = st.floats(min_value=0.5, max_value=1e7)
bursts = st.floats(min_value=1, max_value=1e6)


@given(
    rate=rates,
    burst=bursts,
    full=st.booleans(),
    requests=st.lists(
        st.tuples(st.floats(min_value=0, max_value=5), st.floats(min_value=0.01, max_value=1)),
        min_size=1,
        max_size=40,
    ),
)
def test_any_interval_grants_at_most_rate_times_interval_plus_burst(
    rate: float, burst: float, full: bool, requests: list[tuple[float, float]]
) -> None:
    """Over every window between two grants, granted <= rate * window + burst."""
    bucket = TokenBucket(rate, burst, 0.0, full=full)
    t = 0.0
    arrivals = []
    for gap, fraction in requests:
        t += gap
        arrivals.append((t, fraction * burst))  # pieces never exceed the burst
    grants = serve(bucket, arrivals)
    for i in range(len(grants)):
        total = 0.0
        for j in range(i, len(grants)):
            total += grants[j][1]
            window = grants[j][0] - grants[i][0]
            assert total <= rate * window + burst * (1 + 1e-9) + 1e-6


@given(rate=rates, amounts=st.lists(st.integers(1, 10_000), min_size=1, max_size=200))
def test_long_run_average_equals_the_rate(rate: float, amounts: list[int]) -> None:
    """Back-to-back demand from an empty bucket is granted exactly at the rate."""
    bucket = TokenBucket(rate, max(amounts), 0.0)
    grants = serve(bucket, [(0.0, a) for a in amounts])
    assert grants[-1][0] == pytest.approx(sum(amounts) / rate, rel=1e-9)


@given(
    rate=rates,
    burst=bursts,
    before=st.floats(min_value=0, max_value=10),
    amount=st.integers(1, 1_000_000),
)
def test_refund_restores_exactly_what_was_not_used(
    rate: float, burst: float, before: float, amount: int
) -> None:
    """Reserving then refunding at the same moment leaves the credit unchanged."""
    bucket = TokenBucket(rate, burst, 0.0)
    credit = bucket.credit(before)
    bucket.reserve(amount, before)
    bucket.refund(amount, before)
    assert bucket.credit(before) == credit
    assert bucket.taken == 0


def test_no_float_drift_over_a_long_run() -> None:
    """A million 1-unit grants at 3/s end exactly where exact arithmetic says."""
    bucket = TokenBucket(3, 1, 0.0)
    now = 0.0
    for _ in range(1_000_000):
        now += bucket.reserve(1, now)
    assert Fraction(now) == pytest.approx(Fraction(1_000_000, 3), rel=1e-12)


def test_starts_empty_unless_full() -> None:
    """A new bucket has no credit; full=True starts with one burst."""
    assert TokenBucket(10, 5, 0.0).credit(0.0) == 0
    assert TokenBucket(10, 5, 0.0, full=True).credit(0.0) == 5
    assert TokenBucket(10, 5, 0.0).reserve(5, 0.0) == 0.5


def test_idle_time_never_banks_more_than_one_burst() -> None:
    """After a long idle period the credit is the burst, not the idle time's worth."""
    bucket = TokenBucket(100, 10, 0.0)
    assert bucket.credit(1000.0) == 10
    assert bucket.reserve(10, 1000.0) == 0
    assert bucket.reserve(10, 1000.0) == pytest.approx(0.1)


def test_rate_change_re_times_the_debt() -> None:
    """Changing the rate mid-wait re-times the remaining deficit at the new rate."""
    bucket = TokenBucket(10, 100, 0.0)
    assert bucket.reserve(100, 0.0) == 10  # 100 units at 10/s
    bucket.set_rate(100, 5.0)  # half paid; 50 units left at 100/s
    assert bucket.delay(5.0) == pytest.approx(0.5)


def test_paused_and_unlimited() -> None:
    """Rate 0 waits forever until changed; an infinite rate never waits."""
    paused = TokenBucket(0, 10, 0.0)
    assert paused.reserve(1, 0.0) == math.inf
    paused.set_rate(2, 3.0)
    assert paused.delay(3.0) == 0.5
    free = TokenBucket(math.inf, 10, 0.0)
    assert free.reserve(1e12, 0.0) == 0
    assert free.credit(0.0) == 10


def test_try_take_never_goes_into_debt() -> None:
    """try_take takes only what the credit covers."""
    bucket = TokenBucket(10, 10, 0.0, full=True)
    assert bucket.try_take(10, 0.0)
    assert not bucket.try_take(1, 0.0)
    assert bucket.credit(0.0) == 0


def test_smaller_burst_drops_extra_credit() -> None:
    """Shrinking the burst caps the credit at the new burst."""
    bucket = TokenBucket(10, 100, 0.0, full=True)
    bucket.set_burst(10, 0.0)
    assert bucket.credit(0.0) == 10
    bucket.set_burst(50, 0.0)
    assert bucket.credit(0.0) == 10  # growing the burst adds no credit by itself


def test_shrunk_burst_cannot_leak_old_credit_through_later_takes() -> None:
    """After shrinking the burst, takes get at most the new burst before waiting."""
    bucket = TokenBucket(10, 100, 0.0, full=True)
    bucket.set_burst(10, 0.0)
    assert bucket.reserve(10, 0.0) == 0
    assert bucket.reserve(10, 0.0) == pytest.approx(1.0)


def test_unlimited_burst_with_unlimited_rate() -> None:
    """An unlimited rate with an unlimited burst passes any amount at once."""
    bucket = TokenBucket(math.inf, math.inf, 0.0)
    assert bucket.try_take(1e18, 0.0)
    assert bucket.delay(0.0) == 0.0


def test_delay_excluding_queued() -> None:
    """The head of a queue waits only for the debt up to its own reservation."""
    bucket = TokenBucket(10, 10, 0.0)
    bucket.reserve(10, 0.0)  # the head
    bucket.reserve(20, 0.0)  # queued behind it
    assert bucket.delay(0.0) == 3.0
    assert bucket.delay(0.0, excluding=20) == 1.0


@pytest.mark.parametrize(
    ("amount", "burst", "expected"), [(5, 10, [5]), (25, 10, [10, 10, 5]), (20, 10, [10, 10])]
)
def test_pieces(amount: float, burst: float, expected: list[float]) -> None:
    """Large amounts split into burst-sized pieces."""
    assert pieces(amount, burst) == expected


@pytest.mark.parametrize(
    ("args", "error", "fragment"),
    [
        ((-1, 1), ValueError, "rate must be >= 0"),
        ((math.nan, 1), ValueError, "rate must be >= 0"),
        (("1", 1), TypeError, "rate must be a number"),
        ((1, 0), ValueError, "burst must be a number > 0"),
        ((1, math.nan), ValueError, "burst must be a number > 0"),
        ((1, True), TypeError, "burst must be a number"),
    ],
)
def test_validation(args: tuple[object, object], error: type[Exception], fragment: str) -> None:
    """Bad rates and bursts are refused with their names."""
    with pytest.raises(error, match=fragment):
        TokenBucket(*args, 0.0)  # type: ignore[arg-type]
