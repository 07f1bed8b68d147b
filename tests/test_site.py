"""
RedisSite against a real redis-server: membership, leases, shares, request limiter,
bad input. Heartbeats are driven by hand (``beat()``) where the maths is checked, so the
figures are exact; the fault tests (test_site_faults.py) use the real heartbeat thread.
"""

from __future__ import annotations

import contextlib
import functools
import math
import threading
import time
from collections.abc import Iterator

import anyio
import pytest

redis = pytest.importorskip("redis")

from _procs import wait_until  # noqa: E402
from _redis_server import RedisServer, redis_server_fixture  # noqa: E402, F401
from _redis_server import sites as shared_sites  # noqa: E402
from throttlekit import Rate, RateLimiter, SiteUnavailable, UnitError  # noqa: E402
from throttlekit._site import _scripts  # noqa: E402
from throttlekit._site._core import _waiting, read_status, set_rate  # noqa: E402
from throttlekit._site._fair import fair_level, fair_shares  # noqa: E402
from throttlekit.redis import RedisSite  # noqa: E402

MIB = 2**20
SITE_RATE = Rate(per_second=40 * MIB)
# Members whose heartbeats the tests drive by hand (site.beat()).
sites = functools.partial(shared_sites, heartbeat=False)


@contextlib.contextmanager
def line(limiter: RateLimiter) -> Iterator[None]:
    """A caller waiting in ``limiter``'s line (so its member wants more) until the end."""
    started = threading.Event()

    def wait() -> None:
        started.set()
        limiter.acquire_blocking(1e15)

    thread = threading.Thread(target=wait, daemon=True)
    thread.start()
    started.wait(5)
    wait_until(lambda: _waiting(limiter) == 1, "the caller is in line")
    try:
        yield
    finally:
        limiter.rate = Rate.unlimited()  # grants it
        thread.join(5)
        assert not thread.is_alive()


def shares(limiters: list[RateLimiter]) -> list[float]:
    return [limiter.rate.per_second for limiter in limiters]


def test_members_join_and_leave(redis_server: RedisServer) -> None:
    client = redis_server.client()
    with sites(redis_server, 3) as (a, _b, c):
        assert a.statistics().members == 1 and c.statistics().members == 3
        members = client.zrange("t:{t/site}:members", 0, -1)
        assert sorted(members) == [b"m0", b"m1", b"m2"]
        c.close()
        assert a.beat()
        assert a.statistics().members == 2
    assert client.zcard("t:{t/site}:members") == 0


def test_equal_shares_then_redistributed_when_one_leaves(redis_server: RedisServer) -> None:
    with sites(redis_server, 4) as members:
        limiters = [site.rate_limiter("uplink", SITE_RATE) for site in members]
        for site in members:
            site.beat()
        # Everybody has just joined: all greedy, equal shares of the site rate.
        assert shares(limiters) == [pytest.approx(10 * MIB)] * 4
        members[3].close()
        # Idle members want little; when nobody wants more, the rest is split evenly
        # (steady once every member has seen the others' latest wants).
        for _ in range(3):
            for site in members[:3]:
                site.beat()
        assert shares(limiters[:3]) == [pytest.approx(40 * MIB / 3, rel=0.01)] * 3
        assert sum(shares(limiters[:3])) == pytest.approx(40 * MIB)


def test_idle_member_leaves_its_share_to_the_greedy(redis_server: RedisServer) -> None:
    with sites(redis_server, 3) as members:
        limiters = [site.rate_limiter("uplink", SITE_RATE) for site in members]
        for site in members:
            site.beat()
        with line(limiters[0]), line(limiters[1]):
            for _ in range(2):
                for site in members:
                    site.beat()
            stats = [site.statistics().rates[0] for site in members]
            wants = {s.name + str(i): s.want for i, s in enumerate(stats)}
            assert wants["uplink0"] == wants["uplink1"] == math.inf
            idle = wants["uplink2"]
            assert 0 < idle < 40 * MIB / 3  # the floor: a little, never nothing
            expected = fair_shares(40 * MIB, wants)
            assert shares(limiters) == [
                pytest.approx(expected["uplink0"]),
                pytest.approx(expected["uplink1"]),
                pytest.approx(idle),
            ]
            assert limiters[0].rate.per_second == pytest.approx((40 * MIB - idle) / 2)
            assert [s.degraded for s in stats] == [False] * 3


def test_silent_member_expires_after_its_lease(redis_server: RedisServer) -> None:
    with sites(redis_server, 2, refresh=0.05, lease=0.3) as (a, b):
        la, lb = a.rate_limiter("uplink", SITE_RATE), b.rate_limiter("uplink", SITE_RATE)
        a.beat()
        assert la.rate.per_second == pytest.approx(20 * MIB)
        # b stops beating (as if frozen); a keeps going and gets everything after the lease.
        # (b's site lease and its lease on the shared rate end at slightly different times)
        wait_until(
            lambda: a.beat() and a.statistics().members == a.statistics().rates[0].members == 1,
            "b expires",
        )
        assert la.rate.per_second == pytest.approx(40 * MIB)
        del lb


def test_site_rate_is_stored_and_changed_for_everyone(redis_server: RedisServer) -> None:
    with sites(redis_server, 2) as (a, b):
        la = a.rate_limiter("uplink", SITE_RATE)
        lb = b.rate_limiter("uplink", Rate(per_second=20 * MIB))  # the latest rate wins
        a.beat()
        b.beat()
        assert a.statistics().rates[0].site_rate.per_second == 20 * MIB
        assert la.rate.per_second == pytest.approx(10 * MIB)
        set_rate(redis_server.client(), "t", "uplink", Rate(per_second=60 * MIB))
        for _ in range(3):  # both idle: the whole new rate split evenly on top
            a.beat()
            b.beat()
        assert shares([la, lb]) == [pytest.approx(30 * MIB, rel=0.01)] * 2
        assert sum(shares([la, lb])) == pytest.approx(60 * MIB)
        assert b.rate_limiter("uplink", Rate(per_second=60 * MIB)) is lb
        with pytest.raises(LookupError, match="nope"):
            set_rate(redis_server.client(), "t", "nope", "1MiB/s")


def test_status_lists_members_wants_and_shares(redis_server: RedisServer) -> None:
    with sites(redis_server, 2) as (a, b):
        a.rate_limiter("uplink", SITE_RATE)
        b.rate_limiter("uplink", SITE_RATE)
        a.request_limiter("api", "5/s", burst=5)
        status = read_status(redis_server.client(), "t")
    assert [m["member"] for m in status["members"]] == ["m0", "m1"]
    assert all(0 < m["expires_in"] <= 10 for m in status["members"])
    (rate,) = status["rates"]
    assert rate["name"] == "uplink" and rate["rate"] == 40 * MIB
    assert [m["share"] for m in rate["members"]] == [20 * MIB, 20 * MIB]
    assert status["requests"] == [
        {"name": "api", "rate": 5.0, "burst": 5.0, "kind": "units", "family": None}
    ]


def test_the_share_script_divides_like_the_python_function(redis_server: RedisServer) -> None:
    """Lua and Python compute the same max-min division, to the last bit."""
    import random

    client = redis_server.client()
    rng = random.Random(7)
    sha = client.script_load(_scripts.SHARE)
    for case in range(40):
        n = rng.randint(1, 30)
        capacity = rng.choice([rng.uniform(0, 1e9), 0.0, 1e8])
        wants = [rng.choice([math.inf, rng.uniform(0, 2e8), 0.0]) for _ in range(n)]
        keys = (f"c{case}", f"a{case}", f"w{case}")
        for i, want in enumerate(wants):
            w = "g" if math.isinf(want) else repr(want)
            reply = client.evalsha(
                sha, 3, *keys, f"m{i}", w, "10000", repr(capacity), "bytes", "1", "0"
            )
        level, surplus = fair_level(capacity, wants)
        assert float(reply[4]) == level and float(reply[5]) == surplus
        assert float(reply[0]) == min(wants[-1], level) + surplus


def test_unreachable_at_start(tmp_path: pytest.TempPathFactory) -> None:
    site = RedisSite(f"unix://{tmp_path}/nothing.sock", refresh=0.1, lease=1.0)
    with pytest.raises(SiteUnavailable, match="cannot join") as info:
        site.start()
    assert isinstance(info.value.__cause__, redis.exceptions.ConnectionError)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"url": "redis://h", "namespace": "a b"}, ValueError, "namespace"),
        ({"url": "redis://h", "namespace": "x{y}"}, ValueError, "namespace"),
        ({"url": "redis://h", "namespace": 3}, TypeError, "namespace"),
        ({"url": "http://h/"}, ValueError, "url 'http://h/'"),
        ({"url": 7}, TypeError, "url"),
        ({}, ValueError, "url or client"),
        ({"url": "redis://h", "client": object()}, ValueError, "exactly one"),
        ({"url": "redis://h", "refresh": 0}, ValueError, "refresh"),
        ({"url": "redis://h", "refresh": 2.0, "lease": 1.0}, ValueError, "lease"),
        ({"url": "redis://h", "member": ""}, ValueError, "member"),
        ({"url": "redis://h", "member": 5}, TypeError, "member"),
    ],
)
def test_bad_arguments(kwargs: dict[str, object], error: type[Exception], match: str) -> None:
    url = kwargs.pop("url", None)
    with pytest.raises(error, match=match):
        RedisSite(url, **kwargs)  # type: ignore[arg-type]


def test_bad_limiter_arguments(redis_server: RedisServer) -> None:
    with sites(redis_server, 1) as (site,):
        with pytest.raises(ValueError, match="name"):
            site.rate_limiter("up:link", SITE_RATE)
        with pytest.raises(UnitError, match="10 parsecs"):
            site.rate_limiter("uplink", "10 parsecs")
        with pytest.raises(ValueError, match="fallback"):
            site.rate_limiter("uplink", SITE_RATE, fallback="sometimes")
        with pytest.raises(TypeError, match="fallback"):
            site.rate_limiter("uplink", SITE_RATE, fallback=3)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="burst"):
            site.request_limiter("api", "5/s", burst=0)
        limiter = site.request_limiter("api", "5/s", burst=2)
        with pytest.raises(ValueError, match="burst"):
            limiter.acquire_nowait(3)
        with pytest.raises(ValueError, match="amount"):
            limiter.acquire_nowait(-1)
    with pytest.raises(RuntimeError, match="enter the site"):
        site.rate_limiter("uplink", SITE_RATE)


def test_request_limiter_nowait_and_blocking(redis_server: RedisServer) -> None:
    with sites(redis_server, 2) as (a, b):
        la = a.request_limiter("api", "0.5/s", burst=3)
        lb = b.request_limiter("api", "0.5/s", burst=3)
        la.acquire_nowait()
        lb.acquire_nowait()
        la.acquire_nowait()
        with pytest.raises(anyio.WouldBlock):  # the burst is shared by every member
            lb.acquire_nowait()
        lb.acquire_blocking()  # waits its turn (up to 2 s)
        assert lb.statistics().granted == 2 and 0 < lb.statistics().total_waited <= 2.0


@pytest.mark.anyio
async def test_request_limiter_async_turns_in_order(redis_server: RedisServer) -> None:
    """Each caller is given the next turn, exactly 1/rate after the previous one."""
    client = redis_server.client()
    with sites(redis_server, 1) as (site,):
        limiter = site.request_limiter("api", "4/s", burst=2)
        await limiter.acquire()
        first = float(client.get("t:{t/request/api}:tat"))
        for _ in range(5):
            await limiter.acquire()  # the sleeps are virtual: the calls come at once
        last = float(client.get("t:{t/request/api}:tat"))
        assert last - first == 5 * 250_000  # microseconds, server time
        # Turns 3..6 waited 0.25, 0.5, 0.75 and 1 s, less the real time between calls.
        waited = limiter.statistics().total_waited
        assert 1.5 < waited <= 2.5


@pytest.mark.anyio
async def test_cancelled_waiter_gives_its_turn_back(redis_server: RedisServer) -> None:
    client = redis_server.client()
    key = "t:{t/request/api}:tat"
    with sites(redis_server, 1) as (site,):
        limiter = site.request_limiter("api", "1/s", burst=1)
        await limiter.acquire()
        before = client.get(key)
        with anyio.move_on_after(0.5) as scope:
            await limiter.acquire()  # told to wait about a second, cancelled meanwhile
        assert scope.cancelled_caught
        assert client.get(key) == before
        assert limiter.statistics().granted == 1


def test_request_limiter_raises_while_redis_is_down(redis_server: RedisServer) -> None:
    with sites(redis_server, 1, refresh=0.1, lease=1.0) as (site,):
        limiter = site.request_limiter("api", "100/s", burst=10)
        limiter.acquire_nowait()
        redis_server.kill()
        with pytest.raises(SiteUnavailable, match="api"):
            limiter.acquire_blocking()
        with pytest.raises(SiteUnavailable):
            limiter.acquire_nowait()
        assert limiter.statistics().unavailable == 2
        redis_server.start()  # empty: the scripts and the config are loaded again
        limiter.acquire_nowait()
        assert limiter.statistics().granted == 2


def test_clock_skew_changes_nothing(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A member whose wall clock is 5 s off: leases and turns use the server's clock."""
    real = time.time
    with sites(redis_server, 2, refresh=0.05, lease=0.5) as (a, b):
        monkeypatch.setattr(time, "time", lambda: real() + 5.0)
        la, lb = a.rate_limiter("uplink", SITE_RATE), b.rate_limiter("uplink", SITE_RATE)
        for site in (a, b):
            site.beat()
        assert shares([la, lb]) == [pytest.approx(20 * MIB)] * 2
        assert abs(a.statistics().server_time - real()) < 1.0  # type: ignore[operator]
        api = b.request_limiter("api", "1/s", burst=1)
        api.acquire_nowait()
        with pytest.raises(anyio.WouldBlock):
            api.acquire_nowait()


def test_import_error_names_the_extra(tmp_path: pytest.TempPathFactory) -> None:
    """Without redis-py, importing throttlekit.redis says which extra to install."""
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['redis'] = None\n"
        "try:\n    import throttlekit.redis\n"
        "except ImportError as e:\n    print(e)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert "pip install 'throttlekit[redis]'" in out.stdout


class Custom(BaseException):
    pass


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt, SystemExit, Custom])
def test_body_raising_leaves_the_site(redis_server: RedisServer, error: type) -> None:
    """Whatever the body raises propagates, after the heartbeat stopped and the member left."""
    client = redis_server.client()
    site = RedisSite(redis_server.url, namespace="t", member="a", refresh=0.05, lease=0.5)

    def body() -> None:
        with site:
            site.rate_limiter("uplink", SITE_RATE)
            raise error()

    with pytest.raises(error):
        body()
    assert site._thread is not None and not site._thread.is_alive()
    assert client.zcard("t:{t/site}:members") == 0
    assert client.hlen("t:{t/rate/uplink}:wants") == 0


@pytest.mark.anyio
@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt, Custom, "cancel"])
async def test_async_body_raising_leaves_the_site(
    redis_server: RedisServer, error: type[BaseException] | str
) -> None:
    client = redis_server.client()
    site = RedisSite(redis_server.url, namespace="t", member="a", refresh=0.05, lease=0.5)
    if isinstance(error, str):
        with anyio.CancelScope() as scope:
            async with site:
                site.rate_limiter("uplink", SITE_RATE)
                scope.cancel()
                await anyio.sleep(1)
        assert scope.cancelled_caught
    else:

        async def body() -> None:
            async with site:
                site.rate_limiter("uplink", SITE_RATE)
                raise error()  # type: ignore[operator]

        with pytest.raises(error):
            await body()
    assert site._thread is not None and not site._thread.is_alive()
    assert client.zcard("t:{t/site}:members") == 0
    assert client.hlen("t:{t/rate/uplink}:wants") == 0


def test_participants_fall_back_before_the_site_says_degraded(redis_server: RedisServer) -> None:
    """Whoever sees degraded=True also sees every shared object on its fallback."""
    from throttlekit._site._core import Participant

    seen: list[bool] = []

    class Probe(Participant):
        def commands(self, elapsed: float) -> list[tuple[str, tuple[str, ...], tuple[str, ...]]]:
            return []

        def apply(self, results: list[object]) -> None:
            pass

        def unavailable(self, error: BaseException) -> None:
            seen.append(site.statistics().degraded)

    with sites(redis_server, 1) as (site,):
        site.add(Probe())
        redis_server.kill()
        assert not site.beat()
    assert seen == [False]


@pytest.mark.parametrize(
    ("fallback", "expected"),
    [("share", "last"), ("even", 20 * MIB), ("closed", 0.0), ("3MiB/s", 3 * MIB)],
)
def test_fallback_while_redis_is_down(
    redis_server: RedisServer, fallback: str, expected: float | str
) -> None:
    """Each fallback, with two members and unequal shares when Redis goes away."""
    with sites(redis_server, 2) as (a, b):
        la = a.rate_limiter("uplink", SITE_RATE, fallback=fallback)
        lb = b.rate_limiter("uplink", SITE_RATE)
        with line(lb):
            for _ in range(2):
                a.beat()
                b.beat()
            last = la.rate.per_second
            assert last < 20 * MIB  # a is idle: it has little
            redis_server.kill()
            assert not a.beat()
            stats = a.statistics()
            assert stats.degraded and stats.rates[0].degraded
            assert stats.last_error is not None and "Error" in stats.last_error
            want = last if expected == "last" else expected
            assert la.rate.per_second == pytest.approx(want)
            redis_server.start()
            assert a.beat()
            assert not a.statistics().degraded
            assert la.rate.per_second > 0


def test_public_names_of_throttlekit_redis() -> None:
    """Every public name says where it is imported from, teaches, and is in the reference."""
    import re
    from pathlib import Path

    import throttlekit.redis as module

    api = (Path(__file__).parent.parent / "docs" / "api.rst").read_text()
    section = api[api.index(".. currentmodule:: throttlekit.redis") :]
    documented = set(re.findall(r"^\.\. autoclass:: (\w+)$", section, re.MULTILINE))
    assert documented == set(module.__all__)
    for name in module.__all__:
        obj = getattr(module, name)
        assert obj.__module__ == "throttlekit.redis", name
        assert obj.__doc__ and len(obj.__doc__.strip()) > 40, name


def test_shares_print_in_the_family_of_the_site_rate(redis_server: RedisServer) -> None:
    """A site rate written in Mbit/s gives every member a share that prints in Mbit/s (and
    statistics, site status, set-rate and a server restarted empty keep the family)."""
    client = redis_server.client()
    with sites(redis_server, 2) as (a, b):
        la = a.rate_limiter("uplink", "80Mbit/s")
        assert str(la.rate) == "80Mbit/s"  # alone so far: the whole rate
        lb = b.rate_limiter("uplink", "80Mbit/s")
        a.beat()
        assert (str(la.rate), str(lb.rate)) == ("40Mbit/s", "40Mbit/s")
        stats = a.statistics().rates[0]
        assert (str(stats.site_rate), str(stats.share)) == ("80Mbit/s", "40Mbit/s")
        # Another member (or set-rate) writes the site rate in another family: everybody
        # follows it at the next refresh, in the family it was written in.
        set_rate(client, "t", "uplink", "30MiB/s")
        a.beat()
        b.beat()
        assert str(a.statistics().rates[0].site_rate) == "30MiB/s"
        # (both idle now: unequal shares, whatever they are, in MiB/s and KiB/s)
        assert la.rate.family == lb.rate.family == "IEC"
        assert str(la.rate).endswith("iB/s") and str(lb.rate).endswith("iB/s")
        status = read_status(client, "t")
        assert status["rates"][0]["family"] == "IEC"
        set_rate(client, "t", "uplink", "100Mbit/s")
        assert b.beat()
        # A server restarted empty is repopulated with the family the members last saw.
        redis_server.restart_empty()
        assert b.beat()
        assert str(lb.rate) == "100Mbit/s"  # alone on the fresh server, greedy again
        assert read_status(redis_server.client(), "t")["rates"][0]["family"] == "SI bits"
        # A member asking for the same rate in another family rewrites how it is shown.
        b.rate_limiter("uplink", "12.5MB/s")
        b.beat()
        assert str(b.statistics().rates[0].site_rate) == "12.5MB/s"


def test_request_limiter_rate_keeps_its_family(redis_server: RedisServer) -> None:
    with sites(redis_server, 1) as (site,):
        limiter = site.request_limiter("ingest", "8Mbit/s", burst=1e6)
        limiter.acquire_nowait(1000)
        assert str(limiter.rate) == "8Mbit/s"
        assert str(limiter.statistics().rate) == "8Mbit/s"
        set_rate(redis_server.client(), "t", "ingest", "2MiB/s")
        limiter.acquire_nowait(1000)
        assert str(limiter.rate) == "2MiB/s"
        (request,) = read_status(redis_server.client(), "t")["requests"]
        assert request["family"] == "IEC"


@pytest.mark.parametrize(
    ("url", "match"),
    [
        ("redis://h/x", "database"),  # redis-py would silently use database 0
        ("redis://h/0/1", "database"),
        ("redis://h/-1", "database"),
        ("redis://h/0?db=x", "database"),
        ("unix://", "socket path"),
        ("unix:///tmp/r.sock?db=x", "database"),
        ("redis://h:port/0", "url 'redis://h:port/0'"),
        ("redis://h:99999", "url 'redis://h:99999'"),
        ("h:6379", "url 'h:6379'"),
        ("", "url ''"),
    ],
)
def test_a_url_that_does_not_parse_is_one_clear_error(url: str, match: str) -> None:
    """Refused when the site is made, naming the URL: never connected to the wrong place."""
    with pytest.raises(ValueError, match=match) as info:
        RedisSite(url)
    assert f"url {url!r}" in str(info.value)


def test_good_urls_are_taken() -> None:
    for url in ("redis://h", "redis://h/", "redis://h:6380/3", "rediss://u:p@h/0",
                "unix:///run/redis.sock", "unix:///run/redis.sock?db=2", "redis://"):  # fmt: skip
        RedisSite(url)


@pytest.mark.parametrize(
    ("rate", "match"),
    [(-5, "rate must be >= 0"), (math.nan, "rate must be >= 0"), ("-1MiB/s", "negative")],
)
def test_a_bad_rate_number_names_the_rate(
    redis_server: RedisServer, rate: object, match: str
) -> None:
    with sites(redis_server, 1) as (site,):
        with pytest.raises(ValueError, match=match):
            site.rate_limiter("uplink", rate)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match=match):
            site.request_limiter("api", rate)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("site_rate", "fallback"),
    [
        ("40MiB/s", "100/s"),
        ("40MiB/s", "1000"),
        ("40MiB/s", Rate(per_second=5, kind="units")),
        ("100/s", "1MiB/s"),
    ],
)
def test_a_fallback_of_the_other_kind_is_refused(
    redis_server: RedisServer, site_rate: str, fallback: object
) -> None:
    """A fallback counts what the site rate counts (bytes or units), or it is refused."""
    with sites(redis_server, 1) as (site,):
        with pytest.raises(ValueError, match="fallback"):
            site.rate_limiter("uplink", site_rate, fallback=fallback)  # type: ignore[arg-type]
        # off and 0 mean the same for both kinds
        site.rate_limiter("uplink", site_rate, fallback="0")
        site.rate_limiter("uplink", site_rate, fallback="off")


def test_set_rate_refuses_another_kind(redis_server: RedisServer) -> None:
    """A shared rate of data cannot become a count of units by a typo (a bare number)."""
    client = redis_server.client()
    with sites(redis_server, 1) as (site,):
        site.rate_limiter("uplink", "40MiB/s")
        site.request_limiter("api", "5/s")
        with pytest.raises(ValueError, match=r"rate of bytes.*1000B/s"):
            set_rate(client, "t", "uplink", "1000")
        with pytest.raises(ValueError, match="rate of units"):
            set_rate(client, "t", "api", "5MiB/s")
        assert read_status(client, "t")["rates"][0]["kind"] == "bytes"
        set_rate(client, "t", "uplink", "off")  # no limit and paused fit both kinds
        set_rate(client, "t", "api", "0")


def test_a_member_cannot_turn_a_data_rate_into_units(redis_server: RedisServer) -> None:
    """Asking for a shared rate (or request limiter) with a rate of the other kind than
    the one in Redis is refused: it would silently turn everybody's 40MiB/s into 0.025/s."""
    with sites(redis_server, 2) as (a, b):
        la = a.rate_limiter("uplink", "40MiB/s")
        a.request_limiter("api", "5/s")
        with pytest.raises(ValueError, match=r"rate of units, but the shared rate 'uplink'"):
            b.rate_limiter("uplink", "5/s")
        with pytest.raises(ValueError, match=r"rate of units, but the shared rate 'uplink'"):
            a.rate_limiter("uplink", 5)  # asking again, with a number
        with pytest.raises(ValueError, match=r"rate of bytes, but the request limiter 'api'"):
            b.request_limiter("api", "5MiB/s")
        with pytest.raises(ValueError, match=r"rate of bytes, but the request limiter 'api'"):
            a.request_limiter("api", "5MiB/s")
        lb = b.rate_limiter("uplink", "40MiB/s")
        a.beat()
        b.beat()
        assert la.rate.kind == lb.rate.kind == "bytes"
        assert la.rate.per_second == pytest.approx(20 * MIB)
        b.rate_limiter("uplink", "off")  # no limit fits both kinds
