"""
RedisSite when things break, with the real heartbeat thread, a real redis-server and
real member processes: Redis paused (SIGSTOP) and resumed, killed and restarted empty, a
member killed with SIGKILL. Every wait is bounded (wait_until: 10 s), and no test
asserts a duration.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import anyio
import pytest

redis = pytest.importorskip("redis")

from _procs import WAIT, wait_until  # noqa: E402
from _redis_server import RedisServer, redis_server_fixture  # noqa: E402, F401
from throttlekit import Rate, RateLimiter, SiteUnavailable  # noqa: E402
from throttlekit.redis import RedisSite  # noqa: E402

MIB = 2**20
SITE_RATE = Rate(per_second=40 * MIB)
FAST: dict[str, Any] = {"refresh": 0.05, "lease": 0.5}


class Mover:
    """A thread that acquires from a limiter in a loop, counting, recording any error."""

    def __init__(self, limiter: RateLimiter) -> None:
        self.limiter = limiter
        self.count = 0
        self.errors: list[BaseException] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                self.limiter.acquire_blocking(4096)
                self.count += 1
        except BaseException as error:  # recorded: the test fails on it
            self.errors.append(error)

    def moves(self) -> bool:
        """Whether it makes progress now (within the bounded wait)."""
        start = self.count
        wait_until(lambda: self.count > start + 2, "the mover makes progress")
        return True

    def close(self) -> None:
        self.stop.set()
        self.limiter.rate = Rate.unlimited()  # lets a paused one out
        self.thread.join(WAIT)
        assert not self.thread.is_alive()
        assert self.errors == []


@contextlib.contextmanager
def mover(limiter: RateLimiter) -> Iterator[Mover]:
    m = Mover(limiter)
    try:
        yield m
    finally:
        m.close()


def degraded(site: RedisSite) -> bool:
    return site.statistics().degraded


def test_redis_paused_for_3_seconds(redis_server: RedisServer) -> None:
    """Shares keep moving at their fallback, nothing reaches acquire, all recover."""
    with RedisSite(redis_server.url, namespace="t", member="a", **FAST) as site:
        uplink = site.rate_limiter("uplink", SITE_RATE)
        api = site.request_limiter("api", "1000/s", burst=100)
        thread = site._thread
        assert thread is not None
        with mover(uplink) as m:
            redis_server.pause()
            try:
                wait_until(lambda: degraded(site), "the outage is noticed")
                assert site.statistics().rates[0].degraded
                assert m.moves()  # "share": the last share, no waiting on Redis
                with pytest.raises(SiteUnavailable):
                    api.acquire_blocking()
                time.sleep(3.0)  # the outage lasts (not a measurement)
                assert thread.is_alive()
            finally:
                redis_server.resume()
            wait_until(lambda: not degraded(site), "the site recovers by itself")
            assert m.moves()
        api.acquire_blocking()
        stats = site.statistics()
        assert stats.failures >= 1 and stats.last_error is not None
        assert thread.is_alive()
    assert not thread.is_alive()  # leaving joins the heartbeat


@pytest.mark.parametrize(
    ("fallback", "expected"),
    [
        ("share", 40 * MIB),
        ("even", 40 * MIB),
        ("closed", 0.0),
        (Rate(per_second=MIB), MIB),
    ],
)
def test_redis_killed_and_restarted_empty(
    redis_server: RedisServer, fallback: Any, expected: float
) -> None:
    with RedisSite(redis_server.url, namespace="t", member="a", **FAST) as site:
        uplink = site.rate_limiter("uplink", SITE_RATE, fallback=fallback)
        api = site.request_limiter("api", "1000/s", burst=100)
        wait_until(lambda: site.statistics().refreshes >= 2, "a few heartbeats")
        with mover(uplink) as m:
            redis_server.kill()
            wait_until(lambda: degraded(site), "the outage is noticed")
            assert uplink.rate.per_second == pytest.approx(expected)
            if expected:
                assert m.moves()
            with pytest.raises(SiteUnavailable):
                api.acquire_nowait()
            redis_server.start()  # empty: no config, no scripts, no members
            wait_until(lambda: not degraded(site), "the site recovers by itself")
            wait_until(lambda: uplink.rate.per_second > 0, "a share again")
            assert m.moves()
        # The member wrote back the site rate it knew; the request limiter works again.
        client = redis_server.client()
        assert float(client.hget("t:{t/rate/uplink}:config", "rate")) == 40 * MIB
        api.acquire_nowait()


CHILD = """
import sys, time
from throttlekit import Rate
from throttlekit.redis import RedisSite
site = RedisSite(sys.argv[1], namespace="t", member="child", refresh=0.05, lease=0.5)
site.start()
site.rate_limiter("uplink", Rate(per_second=40 * 2**20))
print("ready", flush=True)
time.sleep(60)
"""


GREEDY_CHILD = """
import sys, threading
from throttlekit import Rate
from throttlekit.redis import RedisSite
site = RedisSite(sys.argv[1], namespace="t", member=sys.argv[2], refresh=0.05, lease=0.5)
site.start()
limiter = site.rate_limiter("uplink", Rate(per_second=40 * 2**20))
print("ready", flush=True)
while True:
    limiter.acquire_blocking(65536)
"""


def test_greedy_processes_converge_to_equal_shares(redis_server: RedisServer) -> None:
    """Three real processes, all greedy: each settles at a third, and the shares add up."""
    children = [
        subprocess.Popen(
            [sys.executable, "-c", GREEDY_CHILD, redis_server.url, f"child{i}"],
            stdout=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    try:
        for child in children:
            assert child.stdout is not None
            assert child.stdout.readline().strip() == "ready"
        site = RedisSite(redis_server.url, namespace="t", member="parent", **FAST)
        with site, mover(site.rate_limiter("uplink", SITE_RATE)) as m:
            client = redis_server.client()
            third = SITE_RATE.per_second / 3

            def settled() -> bool:
                from throttlekit._site._core import read_status

                (shared,) = read_status(client, "t")["rates"]
                shares = [member["share"] for member in shared["members"]]
                wants = [member["want"] for member in shared["members"]]
                return (
                    len(shares) == 3
                    and wants == [float("inf")] * 3
                    and all(abs(x / third - 1) < 0.01 for x in shares)
                    and abs(m.limiter.rate.per_second / third - 1) < 0.01
                )

            wait_until(settled, "three greedy members at a third each")
            assert m.moves()
    finally:
        for child in children:
            child.kill()
            child.wait(WAIT)
            if child.stdout is not None:
                child.stdout.close()


def test_member_killed_with_sigkill(redis_server: RedisServer) -> None:
    """Its share goes to the others once its lease has expired."""
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, redis_server.url], stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready"
        with RedisSite(redis_server.url, namespace="t", member="parent", **FAST) as site:
            uplink = site.rate_limiter("uplink", SITE_RATE)
            rates = lambda: site.statistics().rates[0]  # noqa: E731
            wait_until(lambda: rates().members == 2, "both members share the rate")
            assert uplink.rate.per_second < 40 * MIB
            child.kill()
            child.wait(WAIT)
            wait_until(lambda: rates().members == 1, "the dead member expires")
            wait_until(lambda: uplink.rate.per_second == 40 * MIB, "it gets everything")
    finally:
        child.kill()
        child.wait(WAIT)
        if child.stdout is not None:
            child.stdout.close()


@pytest.mark.anyio
async def test_async_with_joins_and_leaves(redis_server: RedisServer) -> None:
    client = redis_server.client()
    async with RedisSite(redis_server.url, namespace="t", member="a", **FAST) as site:
        assert client.zscore("t:{t/site}:members", "a") is not None
        limiter = site.rate_limiter("uplink", SITE_RATE)
        await limiter.acquire(1024)
        thread = site._thread
    assert thread is not None and not thread.is_alive()
    assert client.zscore("t:{t/site}:members", "a") is None
    assert client.hlen("t:{t/rate/uplink}:wants") == 0


@pytest.mark.anyio
async def test_async_with_cancelled_while_entering_leaves(redis_server: RedisServer) -> None:
    """A cancellation that arrives while joining does not leave a heartbeat behind."""
    client = redis_server.client()
    site = RedisSite(redis_server.url, namespace="t", member="a", **FAST)
    with anyio.CancelScope() as scope:
        scope.cancel()
        async with site:
            pytest.fail("the body must not run")  # pragma: no cover
    assert site._thread is None or not site._thread.is_alive()
    assert client.zscore("t:{t/site}:members", "a") is None
