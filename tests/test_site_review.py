"""
Adversarial probes of shared rates against a real redis-server: many members whose
wants change while the division is reused (the cache that keeps a refresh cheap with
hundreds of members) must never be handed more than the site rate between them.
"""

from __future__ import annotations

import math

import pytest

redis = pytest.importorskip("redis")

from _redis_server import RedisServer, redis_server_fixture  # noqa: E402, F401
from throttlekit._site._core import _SharedRate  # noqa: E402
from throttlekit.redis import RedisSite  # noqa: E402

RATE = 1000.0
MEMBERS = 80  # above the 64 members up to which the division is computed on every call


@pytest.mark.parametrize("recompute", [True, False])
@pytest.mark.parametrize("before", [1.0, 5.0])
def test_a_want_that_grows_while_the_division_is_reused_never_over_grants(
    redis_server: RedisServer, before: float, recompute: bool
) -> None:
    """
    81 members each want ``before``; then, within the reuse window, 80 of them turn
    greedy and each is answered from the reused division. The shares must add up to at
    most the site rate. They used to get the reused water level each: an infinite one
    when the division was computed while every want fitted (``recompute``), else the
    level of a moment when one member was greedy (920 of 1000 each, 73,600 in all).
    """
    with RedisSite(redis_server.url, namespace="t", member="m0", refresh=60.0, lease=120.0) as site:
        site._heartbeat_thread = False
        limiter = site.rate_limiter("uplink", RATE)
        shared = site._rates["uplink"]
        assert isinstance(shared, _SharedRate)

        def report(member: str, want: str) -> float:
            args = (member, want, "120000", str(RATE), "units", "0", "60000", "")
            return float(site._scripts.call("share", shared.keys, args)[0])

        for i in range(MEMBERS):
            report(f"x{i}", str(before))
        if recompute:  # a division computed now, while every want fits
            args = ("m0", str(before), "120000", str(RATE), "units", "1", "60000", "")
            site._scripts.call("share", shared.keys, args)
        else:  # the division of a moment when m0 was greedy, reused
            report("m0", str(before))
        shares = [report(f"x{i}", "g") for i in range(MEMBERS)]
        assert all(math.isfinite(s) for s in shares)
        assert sum(shares) <= RATE * (1 + 1e-9)
        assert limiter.rate.per_second <= RATE


def test_a_server_error_in_one_object_does_not_degrade_the_others(
    redis_server: RedisServer,
) -> None:
    """
    One object's script fails on the server (here its key was overwritten with a value of
    another type): that object is told Redis is unavailable to it, and the heartbeat goes
    on for the others (the whole site used to be degraded, every share at its fallback).
    """
    with RedisSite(redis_server.url, namespace="t", member="m0") as site:
        site._heartbeat_thread = False
        site.rate_limiter("uplink", RATE, fallback="closed")
        nas = site.operation_limits("nas", total=1)
        client = redis_server.client()
        with nas.slot_nowait("backup"):
            client.delete(nas._keys[1])
            client.set(nas._keys[1], "not a hash")  # the entries hash of "nas"
            assert site.beat()
            stats = site.statistics()
            assert not stats.degraded
            assert [(r.name, r.degraded, r.share.per_second) for r in stats.rates] == [
                ("uplink", False, RATE)
            ]
