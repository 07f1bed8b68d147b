"""
``throttlekit site status`` / ``throttlekit site set-rate`` and the ``--site`` options of
``throttlekit pipe``: budgets shared across machines through Redis (needs the ``redis``
extra; everything is imported when a command runs, so the rest of the CLI never needs it).

The main parser wires them in: :func:`add_site_command` adds ``site`` with its two
subcommands, :func:`add_pipe_site_options` adds ``--site``/``--name``/``--namespace`` to
``pipe``, and :func:`pipe_limiter` gives the pipe its limiter: a local one, or this
member's share of the site rate while the pipe runs.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
from collections.abc import Iterator
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TextIO

from .._errors import SiteUnavailable, ThrottlekitError
from . import print_table

# Imported when a command runs: building the parser must stay cheap for every command.
if TYPE_CHECKING:
    from .._throttle._ratelimit import RateLimiter
    from .._throttle._schedule import Schedule
    from .._throttle._units import Rate

__all__ = [
    "SiteCommandError",
    "add_pipe_site_options",
    "add_site_command",
    "cmd_site",
    "pipe_limiter",
    "render_status",
]

_INSTALL = "the Redis site needs redis-py: pip install 'throttlekit[redis]'"


class SiteCommandError(ThrottlekitError):
    """Bad input to a site command, or a site that cannot be used: one line, exit 2."""


def _redis() -> Any:
    try:
        import throttlekit.redis  # noqa: F401

        from .._site import _core
    except ImportError:
        raise SiteCommandError(_INSTALL) from None
    return _core


def _client(url: str) -> Any:
    import redis

    from .._site._core import url_problem

    try:
        problem = url_problem(url)
        if problem is not None:
            raise ValueError(problem)
        return redis.Redis.from_url(url, socket_timeout=5.0, socket_connect_timeout=5.0)
    except ValueError as error:
        raise SiteCommandError(f"URL {url!r} is not a Redis URL: {error}") from None


def _unreachable(url: str, error: BaseException) -> SiteCommandError:
    return SiteCommandError(f"cannot reach Redis at {url}: {error}")


# -- the parsers ----------------------------------------------------------------------------


def add_site_command(commands: Any) -> None:
    """Add ``site status`` and ``site set-rate`` to the main parser's subcommands."""
    p = commands.add_parser(
        "site",
        help="budgets shared across machines (Redis): status, set-rate",
        description="Look at and change the budgets that members share through Redis "
        "(throttlekit.redis). Needs the redis extra: pip install 'throttlekit[redis]'.",
    )
    site = p.add_subparsers(dest="site_command", required=True, metavar="SUBCOMMAND")
    s = site.add_parser(
        "status",
        help="members, wants, shares and ages",
        description="Members of the site (age of their last heartbeat, late ones), every "
        "shared rate with each member's want and share, and every request limiter.",
    )
    s.add_argument("url", metavar="URL", help="redis://host:6379/0, rediss://, unix://path")
    s.add_argument("--namespace", default="throttlekit", help="the site's namespace")
    s.add_argument("--json", action="store_true", help="print JSON instead of tables")
    s.set_defaults(func=cmd_site)
    r = site.add_parser(
        "set-rate",
        help="change a site rate for every member",
        description="Change the site-wide rate of a shared rate or request limiter; every "
        "member follows at its next refresh.",
    )
    r.add_argument("url", metavar="URL")
    r.add_argument("name", metavar="NAME", help="the shared rate or request limiter")
    r.add_argument("rate", metavar="RATE", help="e.g. 40MiB/s, 5/s, off")
    r.add_argument("--namespace", default="throttlekit", help="the site's namespace")
    r.set_defaults(func=cmd_site)


def add_pipe_site_options(parser: argparse.ArgumentParser) -> None:
    """``--site URL``, ``--name NAME`` and ``--namespace N`` for ``throttlekit pipe``."""
    parser.add_argument(
        "--site",
        metavar="URL",
        help="share --rate with every pipe of the same --name on this Redis (redis://...)",
    )
    parser.add_argument("--name", help="the shared rate's name (with --site; default pipe)")
    parser.add_argument(
        "--namespace", help="the site's namespace (with --site; default throttlekit)"
    )


# -- running them -------------------------------------------------------------------------


def cmd_site(args: argparse.Namespace, out: TextIO) -> int:
    """Run ``site status`` or ``site set-rate``; exit status 0, or raises (one line, 2)."""
    from .._throttle._units import Rate

    core = _redis()
    try:
        core.check_name(args.namespace, "--namespace")
        if args.site_command == "set-rate":
            core.check_name(args.name, "NAME")
    except ValueError as error:
        raise SiteCommandError(str(error)) from None
    if args.site_command == "set-rate":
        try:
            rate = Rate.parse(args.rate)
        except ValueError as error:
            raise SiteCommandError(f"RATE: {error}") from None
    client = _client(args.url)
    try:
        if args.site_command == "set-rate":
            try:
                changed = core.set_rate(client, args.namespace, args.name, rate)
            except LookupError as error:
                raise SiteCommandError(str(error).strip("'\"")) from None
            except ValueError as error:  # a rate of units for a shared rate of data
                raise SiteCommandError(f"RATE: {error}") from None
            out.write(f"{args.name}: site rate {rate} ({', '.join(changed)})\n")
            return 0
        status = core.read_status(client, args.namespace)
        from .._site._slots import read_all_slots

        status["slots"] = read_all_slots(client, args.namespace)
    except core.REDIS_ERRORS as error:
        raise _unreachable(args.url, error) from None
    finally:
        client.close()
    if args.json:
        out.write(json.dumps(_jsonable(status), indent=2) + "\n")
    else:
        render_status(status, out)
    return 0


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value


def _rate(per_second: float, kind: str, family: Any = None) -> str:
    """A rate in the family the site rate was written in (``read_status`` checked it)."""
    from .._throttle._units import Rate

    if math.isinf(per_second):
        return "greedy"
    if kind == "units":
        return str(Rate(per_second=per_second, kind="units"))
    return str(Rate(per_second=per_second, family=family))


def render_status(status: dict[str, Any], out: TextIO) -> None:
    """
    ``site status`` as tables on ``out``: members, each shared rate, request limiters,
    and each cluster-wide operation limits object with its holders and waiters.
    """
    members = status["members"]
    out.write(f"site {status['namespace']}: {len(members)} live member(s)\n")
    if members:
        rows = [["MEMBER", "HOST", "PID", "AGE", "EXPIRES IN", "STATE"]]
        for m in members:
            state = "late (degraded or dying)" if m["late"] else "ok"
            rows.append(
                [
                    m["member"],
                    str(m["host"] or "-"),
                    str(m["pid"] or "-"),
                    f"{m['age']:.1f}s",
                    f"{m['expires_in']:.1f}s",
                    state,
                ]
            )
        print_table(rows, out)
    for shared in status["rates"]:
        kind, family = shared["kind"], shared["family"]
        rate = "unlimited" if math.isinf(shared["rate"]) else _rate(shared["rate"], kind, family)
        out.write(
            f"\nshared rate {shared['name']}: {rate} for {len(shared['members'])} member(s)\n"
        )
        if shared["members"]:
            rows = [["MEMBER", "WANTS", "SHARE", "EXPIRES IN"]]
            for m in shared["members"]:
                share = "unlimited" if math.isinf(m["share"]) else _rate(m["share"], kind, family)
                want = _rate(m["want"], kind, family)
                rows.append([m["member"], want, share, f"{m['expires_in']:.1f}s"])
            print_table(rows, out)
    if status["requests"]:
        out.write("\n")
        rows = [["REQUEST LIMITER", "RATE", "BURST"]]
        for r in status["requests"]:
            rate = (
                "unlimited" if math.isinf(r["rate"]) else _rate(r["rate"], r["kind"], r["family"])
            )
            rows.append([r["name"], rate, f"{r['burst']:g}"])
        print_table(rows, out)
    for limits in status.get("slots", []):
        render_slots(limits, out)


def _limit(value: int | None) -> str:
    return "no limit" if value is None else str(value)


def render_slots(limits: dict[str, Any], out: TextIO) -> None:
    """One cluster-wide operation limits object: its limits, holders and waiters in line."""
    kinds = ", ".join(f"{k} {n}" for k, n in sorted(limits["per_kind"].items())) or "none"
    holders, waiters = limits["holders"], limits["waiters"]
    out.write(
        f"\noperation limits {limits['name']}: total {_limit(limits['total'])}, per kind: "
        f"{kinds}, per key {_limit(limits['per_key'])}; {len(holders)} held, "
        f"{len(waiters)} waiting\n"
    )
    if holders:
        rows = [["HOLDER", "KIND", "KEY", "PRIORITY", "TOKEN", "AGE"]]
        for h in holders:
            rows.append(
                [
                    h["member"],
                    h["kind"],
                    h["key"] or "-",
                    str(h["priority"]),
                    str(h["token"]),
                    f"{h['age']:.1f}s",
                ]
            )
        print_table(rows, out)
    if waiters:
        rows = [["#", "WAITER", "KIND", "KEY", "PRIORITY", "AGE"]]
        for i, w in enumerate(waiters, 1):
            rows.append(
                [
                    str(i),
                    w["member"],
                    w["kind"],
                    w["key"] or "-",
                    str(w["priority"]),
                    f"{w['age']:.1f}s",
                ]
            )
        print_table(rows, out)


@contextlib.contextmanager
def pipe_limiter(
    args: argparse.Namespace, rate: Rate | Schedule, burst: float | timedelta | None
) -> Iterator[RateLimiter]:
    """
    The pipe's limiter: local (full from the start, as pv is) without ``--site``; with
    it, this member's share of the site rate ``rate`` named ``--name``, for as long as
    the ``with`` lasts (the member leaves the site at the end, so the others take over
    its share). A Redis that cannot be reached at start is an error; later outages
    keep the pipe at its last share.
    """
    from .._throttle._ratelimit import RateLimiter
    from .._throttle._schedule import Schedule

    url, name, namespace = (getattr(args, a, None) for a in ("site", "name", "namespace"))
    if url is None:
        if name is not None or namespace is not None:
            given = "--name" if name is not None else "--namespace"
            raise SiteCommandError(f"{given} names a shared rate: it needs --site URL")
        yield RateLimiter(rate, burst=burst, full=True)
        return
    if isinstance(rate, Schedule):
        raise SiteCommandError("--site: a timetable cannot be shared; give one rate")
    core = _redis()
    name = "pipe" if name is None else name
    namespace = "throttlekit" if namespace is None else namespace
    try:
        core.check_name(name, "--name")
        core.check_name(namespace, "--namespace")
    except ValueError as error:
        raise SiteCommandError(str(error)) from None
    try:
        site = core.RedisSite(url, namespace=namespace)
    except (ValueError, TypeError) as error:
        raise SiteCommandError(f"--site: {error}") from None
    try:
        site.start()
    except SiteUnavailable as error:
        raise _unreachable(args.site, error.__cause__ or error) from None
    try:
        yield site.rate_limiter(name, rate, burst=burst)
    finally:
        site.close()
