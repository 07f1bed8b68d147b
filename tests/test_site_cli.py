"""The site commands (site status, site set-rate) and pipe --site, against a real Redis."""

from __future__ import annotations

import argparse
import io
import json
import math

import pytest

redis = pytest.importorskip("redis")

from _redis_server import RedisServer, redis_server_fixture  # noqa: E402, F401
from throttlekit import Rate  # noqa: E402
from throttlekit._cli._site import (  # noqa: E402
    SiteCommandError,
    add_pipe_site_options,
    add_site_command,
    pipe_limiter,
)
from throttlekit.redis import RedisSite  # noqa: E402

MIB = 2**20


def run(*argv: str) -> str:
    parser = argparse.ArgumentParser(prog="throttlekit")
    add_site_command(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    out = io.StringIO()
    assert args.func(args, out) == 0
    return out.getvalue()


def members(server: RedisServer, n: int) -> list[RedisSite]:
    made = []
    for i in range(n):
        site = RedisSite(server.url, namespace="a", member=f"host{i}:1")
        site._heartbeat_thread = False
        site.start()
        made.append(site)
    return made


def test_status_table_and_json(redis_server: RedisServer) -> None:
    sites = members(redis_server, 2)
    try:
        for site in sites:
            site.rate_limiter("uplink", "40MiB/s")
        sites[0].request_limiter("ebs", "5/s", burst=5)
        table = run("site", "status", redis_server.url, "--namespace", "a")
        data = json.loads(run("site", "status", redis_server.url, "--namespace", "a", "--json"))
    finally:
        for site in sites:
            site.close()
    assert "site a: 2 live member(s)" in table
    assert "shared rate uplink: 40MiB/s for 2 member(s)" in table
    assert table.count("20MiB/s") == 2 and "greedy" in table
    assert "ebs" in table and "5/s" in table
    assert [m["member"] for m in data["members"]] == ["host0:1", "host1:1"]
    assert [m["share"] for m in data["rates"][0]["members"]] == [20 * MIB, 20 * MIB]
    assert data["rates"][0]["members"][0]["want"] == "inf"
    assert data["members"][0]["late"] is False


def test_set_rate_reaches_members(redis_server: RedisServer) -> None:
    (site,) = members(redis_server, 1)
    try:
        limiter = site.rate_limiter("uplink", "40MiB/s")
        out = run("site", "set-rate", redis_server.url, "uplink", "8MiB/s", "--namespace", "a")
        assert "uplink: site rate 8MiB/s" in out
        site.beat()
        assert limiter.rate.per_second == 8 * MIB
    finally:
        site.close()


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (("site", "set-rate", "{url}", "nothing", "1MiB/s", "--namespace", "a"), "no shared"),
        (("site", "set-rate", "{url}", "up", "fast"), "invalid rate"),
        (("site", "set-rate", "{url}", "up/x", "1MiB/s"), "NAME"),
        (("site", "status", "{url}", "--namespace", "a b"), "--namespace"),
        (("site", "status", "http://x/"), "not a Redis URL"),
        (("site", "status", "unix:///nonexistent/redis.sock"), "cannot reach Redis"),
    ],
)
def test_site_command_errors(redis_server: RedisServer, argv: tuple[str, ...], match: str) -> None:
    with pytest.raises(SiteCommandError, match=match):
        run(*(a.format(url=redis_server.url) for a in argv))


def pipe_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_pipe_site_options(parser)
    return parser.parse_args(argv)


def test_pipe_limiter_local_and_shared(redis_server: RedisServer) -> None:
    with pipe_limiter(pipe_args(), Rate.parse("1MiB/s"), None) as local:
        assert local.statistics().tokens > 0  # full from the start, like pv
    args = pipe_args("--site", redis_server.url, "--name", "up", "--namespace", "a")
    client = redis_server.client()
    with pipe_limiter(args, Rate.parse("10MiB/s"), None) as shared:
        assert shared.rate.per_second == 10 * MIB
        assert client.zcard("a:{a/rate/up}:alive") == 1
    assert client.zcard("a:{a/rate/up}:alive") == 0  # left the site at the end


@pytest.mark.parametrize(
    ("argv", "rate", "match"),
    [
        (("--site", "http://x/"), "1MiB/s", "--site"),
        (("--site", "{url}", "--name", "a b"), "1MiB/s", "--name"),
        (("--site", "unix:///nonexistent/r.sock"), "1MiB/s", "cannot reach"),
        (("--site", "{url}"), "08:00,1MiB/s 18:00,off", "timetable"),
    ],
)
def test_pipe_site_errors(
    redis_server: RedisServer, argv: tuple[str, ...], rate: str, match: str
) -> None:
    from throttlekit._throttle._ratelimit import _coerce_rate

    args = pipe_args(*(a.format(url=redis_server.url) for a in argv))
    with pytest.raises(SiteCommandError, match=match), pipe_limiter(args, _coerce_rate(rate), None):
        pass  # pragma: no cover


def test_infinite_values_are_json_safe() -> None:
    from throttlekit._cli._site import _jsonable

    assert _jsonable({"a": [math.inf, 1.0]}) == {"a": ["inf", 1.0]}
