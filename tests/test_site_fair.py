"""Max-min fair shares and demand estimation: pure functions, no Redis needed."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from throttlekit._site._fair import GREEDY, estimate_want, fair_level, fair_shares

wants_st = st.dictionaries(
    st.text("abcdefgh", min_size=1, max_size=3),
    st.one_of(st.floats(0, 1e9, allow_nan=False), st.just(math.inf)),
    max_size=12,
)
capacity_st = st.floats(0, 1e10, allow_nan=False)


def progressive_filling(capacity: float, wants: dict[str, float]) -> dict[str, float]:
    """The textbook algorithm, written differently: satisfy the smallest, repeat."""
    shares = dict.fromkeys(wants, 0.0)
    open_ = set(wants)
    left = capacity
    while open_ and left > 0:
        equal = left / len(open_)
        fits = {m for m in open_ if wants[m] - shares[m] <= equal}
        if not fits:
            for m in open_:
                shares[m] += equal
            return shares
        for m in fits:
            left -= wants[m] - shares[m]
            shares[m] = wants[m]
        open_ -= fits
    if wants and left > 0:  # everybody satisfied: the rest evenly on top
        for m in shares:
            shares[m] += left / len(wants)
    return shares


@given(capacity_st, wants_st)
def test_shares_match_progressive_filling(capacity: float, wants: dict[str, float]) -> None:
    ours = fair_shares(capacity, wants)
    reference = progressive_filling(capacity, wants)
    assert ours.keys() == reference.keys()
    for m in ours:
        assert ours[m] == pytest.approx(reference[m], rel=1e-9, abs=1e-6)


@given(capacity_st, wants_st)
def test_shares_are_max_min_fair(capacity: float, wants: dict[str, float]) -> None:
    shares = fair_shares(capacity, wants)
    if not wants:
        assert shares == {}
        return
    total = sum(shares.values())
    # Never more than the capacity, and all of it is handed out.
    assert total == pytest.approx(capacity, rel=1e-9, abs=1e-6)
    equal = capacity / len(wants)
    for m, want in wants.items():
        # Everyone gets at least the smaller of what it wants and an equal share.
        assert shares[m] >= min(want, equal) * (1 - 1e-9) - 1e-9
    unsatisfied = [shares[m] for m in wants if shares[m] < wants[m] * (1 - 1e-9)]
    if unsatisfied:
        # Those held back get the same, and nobody gets more than them unless it wants it.
        top = max(unsatisfied)
        assert min(unsatisfied) == pytest.approx(top, rel=1e-9)
        for m in wants:
            assert shares[m] <= max(top, wants[m]) * (1 + 1e-9) + 1e-9


@given(capacity_st, st.lists(st.floats(0, 1e9, allow_nan=False), max_size=10))
def test_level_does_not_depend_on_order(capacity: float, wants: list[float]) -> None:
    assert fair_level(capacity, wants) == fair_level(capacity, list(reversed(wants)))


def test_the_issue_example() -> None:
    """One member held at 4 MiB/s, three greedy: (40 - 4) / 3 each."""
    mib = 2**20
    shares = fair_shares(40 * mib, {"a": 4 * mib, "b": GREEDY, "c": GREEDY, "d": GREEDY})
    assert shares == {"a": 4 * mib, "b": 12 * mib, "c": 12 * mib, "d": 12 * mib}


def test_unlimited_and_paused_capacity() -> None:
    assert fair_shares(math.inf, {"a": 1.0, "b": GREEDY}) == {"a": math.inf, "b": math.inf}
    assert fair_shares(0.0, {"a": 1.0, "b": GREEDY}) == {"a": 0.0, "b": 0.0}


@pytest.mark.parametrize(
    ("capacity", "wants", "match"),
    [(-1.0, {"a": 1.0}, "capacity"), (math.nan, {}, "capacity"), (1.0, {"a": -2.0}, "'a'")],
)
def test_bad_input_names_it(capacity: float, wants: dict[str, float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        fair_shares(capacity, wants)


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"used": 4.0, "share": 12.0, "waiting": 0, "floor": 0.1}, 4.4),  # headroom
        ({"used": 11.5, "share": 12.0, "waiting": 0, "floor": 0.1}, GREEDY),  # held back
        ({"used": 1.0, "share": 12.0, "waiting": 2, "floor": 0.1}, GREEDY),  # a line
        ({"used": 0.0, "share": 12.0, "waiting": 0, "floor": 0.1}, 0.1),  # idle: floor
        ({"used": 0.0, "share": 12.0, "waiting": 0, "floor": 0.1, "first": True}, GREEDY),
        ({"used": 5.0, "share": 0.0, "waiting": 0, "floor": 0.1}, GREEDY),  # paused, used
        ({"used": 0.0, "share": 0.0, "waiting": 0, "floor": 0.1}, 0.1),
        ({"used": 3.0, "share": math.inf, "waiting": 0, "floor": 0.0}, 3.3),
    ],
)
def test_estimate_want(kwargs: dict[str, float], expected: float) -> None:
    assert estimate_want(**kwargs) == pytest.approx(expected)  # type: ignore[arg-type]
