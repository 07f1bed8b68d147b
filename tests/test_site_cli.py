"""The site commands (site status, site set-rate) and pipe --site, against a real Redis."""

from __future__ import annotations

import argparse
import io
import json
import math
import pathlib
import random
import signal
import subprocess
import sys

import pytest

redis = pytest.importorskip("redis")

from _procs import wait_until  # noqa: E402
from _redis_server import RedisServer, redis_server_fixture  # noqa: E402, F401
from throttlekit import Rate  # noqa: E402
from throttlekit._cli import _pipe  # noqa: E402
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


# -- through the command line (main), as users run it ----------------------------------------


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """``main(argv)`` in this process: status, stdout, stderr."""
    from throttlekit._cli._main import main

    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def test_main_site_status_table_and_json(
    redis_server: RedisServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """`throttlekit site status URL` prints the tables, and `--json` the same as data."""
    sites = members(redis_server, 2)
    try:
        for site in sites:
            site.rate_limiter("uplink", "40MiB/s")
        status, table, err = cli(capsys, "site", "status", redis_server.url, "--namespace", "a")
        assert (status, err) == (0, "")
        status, text, err = cli(
            capsys, "site", "status", redis_server.url, "--namespace", "a", "--json"
        )
        assert (status, err) == (0, "")
    finally:
        for site in sites:
            site.close()
    assert "site a: 2 live member(s)" in table
    assert "host0:1" in table and "host1:1" in table
    assert "shared rate uplink: 40MiB/s for 2 member(s)" in table
    data = json.loads(text)
    assert data["namespace"] == "a"
    assert [r["name"] for r in data["rates"]] == ["uplink"]
    assert [m["share"] for m in data["rates"][0]["members"]] == [20 * MIB, 20 * MIB]


def test_main_site_set_rate_reaches_a_running_member(
    redis_server: RedisServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """`throttlekit site set-rate` changes the share a member's limiter runs at."""
    site = RedisSite(redis_server.url, namespace="a", member="m", refresh=0.05, lease=1.0)
    with site:  # the real heartbeat thread
        limiter = site.rate_limiter("uplink", "40MiB/s")
        assert limiter.rate.per_second == 40 * MIB
        status, out, err = cli(
            capsys, "site", "set-rate", redis_server.url, "uplink", "8MiB/s", "--namespace", "a"
        )
        assert (status, err) == (0, "")
        assert out == "uplink: site rate 8MiB/s (rate)\n"
        wait_until(lambda: limiter.rate.per_second == 8 * MIB, "the member follows")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("site", "status", "http://x/"), "URL 'http://x/' is not a Redis URL"),
        (("site", "status", "{url}", "--namespace", "a b"), "--namespace must be"),
        (("site", "set-rate", "{url}", "up/x", "1MiB/s"), "NAME must be"),
        (("site", "set-rate", "{url}", "up", "fast"), "RATE: invalid rate 'fast'"),
        (("site", "set-rate", "{url}", "nothing", "1MiB/s"), "has no shared rate"),
        (("site", "status", "unix:///nonexistent/r.sock"), "cannot reach Redis"),
        (("pipe", "--rate", "1MiB/s", "--site", "http://x/"), "--site: url 'http://x/'"),
        (("pipe", "--rate", "1MiB/s", "--site", "{url}", "--name", "a b"), "--name must be"),
        (("pipe", "--rate", "fast", "--site", "{url}"), "--rate: invalid rate 'fast'"),
        (("pipe", "--rate", "1MiB/s", "--site", "unix:///nonexistent/r.sock"), "cannot reach"),
        # found in the adversarial pass (each of these failed before its fix)
        (("site", "status", "redis://h/x"), "database must be a number"),
        (("site", "status", "unix://"), "needs a socket path"),
        (("pipe", "--rate", "1MiB/s", "--site", "redis://h/x"), "database must be a number"),
        (("site", "set-rate", "{url}", "up", "1000", "--namespace", "a"), "RATE: rate '1000/s'"),
        (("pipe", "--rate", "1MiB/s", "--name", "up"), "--name names a shared rate"),
        (("pipe", "--rate", "1MiB/s", "--namespace", "a"), "it needs --site URL"),
        (("pipe", "--rate", "1MiB/s", "--site", "{url}", "--namespace", "a:b"), "--namespace"),
    ],
)
def test_main_bad_input_is_one_error_line_and_status_2(
    redis_server: RedisServer,
    capsys: pytest.CaptureFixture[str],
    argv: tuple[str, ...],
    message: str,
) -> None:
    setup = RedisSite(redis_server.url, namespace="a", member="m")
    setup._heartbeat_thread = False
    with setup:  # a shared rate of data named up, for set-rate
        setup.rate_limiter("up", "1MiB/s")
        status, out, err = cli(capsys, *(a.format(url=redis_server.url) for a in argv))
    assert status == 2
    assert out == ""
    assert err.startswith("throttlekit: error: ") and err.count("\n") == 1, err
    assert message in err


def test_main_pipe_with_site_copies_byte_exact(
    redis_server: RedisServer,
    tmp_path: pathlib.Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`throttlekit pipe --site URL --name N` copies every byte, as a member of the site."""
    from throttlekit._cli._main import main

    data = random.Random(5).randbytes(300_000)
    (tmp_path / "in").write_bytes(data)
    client = redis_server.client()
    seen: list[tuple[int, object]] = []
    real_copy = _pipe.copy

    def copy(*args: object, **kwargs: object) -> int:
        # a member while it copies, and its share may change: paid for even if unlimited
        seen.append((client.zcard("a:{a/rate/up}:alive"), kwargs.get("live")))
        return real_copy(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(_pipe, "copy", copy)
    with open(tmp_path / "in", "rb") as src, open(tmp_path / "out", "wb") as dst:
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(src))
        monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(dst))
        argv = ["pipe", "--rate", "1GiB/s", "--site", redis_server.url, "--name", "up"]
        assert main([*argv, "--namespace", "a", "-q"]) == 0
    assert (tmp_path / "out").read_bytes() == data
    assert seen == [(1, True)]
    assert client.zcard("a:{a/rate/up}:alive") == 0  # left the site at the end
    assert client.zcard("a:{a/site}:members") == 0


def test_pipe_processes_share_one_budget_and_leave(redis_server: RedisServer) -> None:
    """Two `throttlekit pipe --site` processes are two members of one shared rate while
    they copy (site status shows them) and none once they are done."""
    command = [sys.executable, "-m", "throttlekit", "pipe", "--rate", "100KB/s", "-q"]
    command += ["--site", redis_server.url, "--name", "up", "--namespace", "a"]
    pipes = [
        subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE) for _ in range(2)
    ]
    try:
        for process in pipes:
            assert process.stdin is not None and process.stdout is not None
            process.stdin.write(b"x" * 1000)
            process.stdin.flush()
            assert process.stdout.read(1000) == b"x" * 1000  # copying, as a member
        data = json.loads(run("site", "status", redis_server.url, "--namespace", "a", "--json"))
        (shared,) = data["rates"]
        assert len(shared["members"]) == 2
        assert sum(m["share"] for m in shared["members"]) == pytest.approx(100_000)
        for process in pipes:
            out, _ = process.communicate(b"y" * 500, timeout=30)
            assert (process.returncode, out) == (0, b"y" * 500)
    finally:
        for process in pipes:
            process.kill()
            process.wait()
    data = json.loads(run("site", "status", redis_server.url, "--namespace", "a", "--json"))
    assert data["members"] == [] and data["rates"][0]["members"] == []


def test_the_command_line_starts_without_redis() -> None:
    """Building the parser and running a command without --site never imports redis-py."""
    code = (
        "import sys; from throttlekit._cli._main import _parser, main; _parser(); "
        "main(['pipe', '--rate', 'off', '-q']); "
        "print(sorted(m for m in sys.modules if m == 'redis' or m.startswith('throttlekit._site')"
        " or m == 'throttlekit.redis'))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], input=b"", capture_output=True, timeout=60, check=True
    )
    assert result.stdout == b"[]\n"


def test_set_rate_in_mbit_shows_in_mbit_everywhere(
    redis_server: RedisServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """`site set-rate URL uplink 80Mbit/s`: every member's share and `site status` print in
    Mbit/s, not in the bytes a number would print as."""
    sites = members(redis_server, 2)
    try:
        limiters = [site.rate_limiter("uplink", "40MiB/s") for site in sites]
        status, out, _ = cli(
            capsys, "site", "set-rate", redis_server.url, "uplink", "80Mbit/s", "--namespace", "a"
        )
        assert (status, out) == (0, "uplink: site rate 80Mbit/s (rate)\n")
        for site in sites:
            site.beat()
        assert [str(limiter.rate) for limiter in limiters] == ["40Mbit/s", "40Mbit/s"]
        assert str(sites[0].statistics().rates[0].site_rate) == "80Mbit/s"
        _, table, _ = cli(capsys, "site", "status", redis_server.url, "--namespace", "a")
        data = json.loads(run("site", "status", redis_server.url, "--namespace", "a", "--json"))
    finally:
        for site in sites:
            site.close()
    assert "shared rate uplink: 80Mbit/s for 2 member(s)" in table
    assert table.count("40Mbit/s") == 2
    assert data["rates"][0]["family"] == "SI bits"


def test_pipe_interrupted_leaves_the_site_at_once(redis_server: RedisServer) -> None:
    """Ctrl-C on `pipe --site`: status 130, no traceback, and the member is gone at once
    (not after its lease), so the others take its share at their next refresh."""
    command = [sys.executable, "-m", "throttlekit", "pipe", "--rate", "100KB/s", "-q"]
    command += ["--site", redis_server.url, "--name", "up", "--namespace", "a"]
    process = subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        assert process.stdin is not None and process.stdout is not None
        process.stdin.write(b"z" * 30_000)
        process.stdin.flush()
        assert process.stdout.read(1000) == b"z" * 1000  # a member, copying
        client = redis_server.client()
        assert client.zcard("a:{a/site}:members") == 1
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=30)
    finally:
        process.kill()
        process.wait()
    assert process.returncode == 130
    assert b"Traceback" not in err
    assert client.zcard("a:{a/site}:members") == 0
    assert client.zcard("a:{a/rate/up}:alive") == 0
