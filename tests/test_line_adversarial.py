"""
The waiter line pushed where integrators push it: amounts too large ever to be served
sharing the line with small ones, rate changes to 0 and back, and heads of line that
give up, driven by the simulator of tests/test_line.py (it plays the limiter's part).
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from test_line import Sim, make_line

HUGE = 1e300


@settings(max_examples=60, deadline=None)
@given(
    burst=st.sampled_from([1.0, 10.0, 1e6]),
    smalls=st.lists(st.tuples(st.floats(0, 5), st.floats(0.01, 1.0)), min_size=1, max_size=8),
    huge_at=st.lists(st.floats(0, 5), min_size=1, max_size=3),
    huge_leave=st.floats(0.001, 50),
    changes=st.lists(
        st.tuples(st.floats(0, 30), st.sampled_from([0.0, 0.001, 10.0, 1e9])), max_size=4
    ),
)
def test_huge_requests_never_starve_small_ones_and_leave_nothing_behind(
    burst: float,
    smalls: list[tuple[float, float]],
    huge_at: list[float],
    huge_leave: float,
    changes: list[tuple[float, float]],
) -> None:
    """
    Requests of 1e300 (never served) arrive among small ones; the rate is paused and
    resumed (to a trickle or a flood); the huge ones give up at some moment. Every small
    one is served (they get their turns while the huge ones wait), nobody sleeps for
    ever, and only what was served counts as granted.
    """
    arrivals = [(t, HUGE) for t in huge_at] + [(t, share * burst) for t, share in smalls]
    leaves = {i: huge_leave + t for i, t in enumerate(huge_at)}
    sim = Sim(make_line(10.0, burst))
    sim.run(arrivals, leaves, sorted([*changes, (60.0, 10.0)]))
    small = set(range(len(huge_at), len(arrivals)))
    assert small <= sim.returned.keys()
    assert not (set(range(len(huge_at))) & sim.returned.keys())
    assert sim.line.granted == pytest.approx(sum(arrivals[i][1] for i in small))
    assert sim.line.bucket.waiting == 0


def test_a_huge_head_that_leaves_hands_its_turn_to_the_next() -> None:
    """A 1e300 head served half a turn, then gone: the next one is served from there."""
    sim = Sim(make_line(10.0, 10.0))
    sim.run([(0.0, HUGE), (0.0, 10.0)], {0: 0.5})
    assert sim.returned[1] == pytest.approx(1.0)  # 5 served to the head, then 5 more
    assert sim.line.granted == 10.0
