"""
The Redis site: one connection, one membership and one heartbeat per process, and the
shared limits that ride on them (see :mod:`throttlekit.redis` for the user's view).

How it is built, and why:

* **One heartbeat thread per site.** Every ``refresh`` seconds it sends one pipeline:
  the site lease, then one script per shared object (a :class:`Participant`). So the
  commands a member sends per interval are ``1 + objects``, whatever the number of
  acquires. A thread, not a task, because the site serves asyncio tasks, trio tasks and
  threads at once, and must keep going while none of them runs.
* **Participants.** A shared object adds its commands to the heartbeat's pipeline
  (:meth:`Participant.commands`), reads its results (:meth:`Participant.apply`), learns
  of an outage (:meth:`Participant.unavailable`) and leaves (:meth:`Participant.leave`).
  Shared rates are the first kind; shared operation slots reuse the same heartbeat.
* **Server time.** Scripts read ``TIME`` on the server; members never compare their own
  clocks with anyone's. Local clocks only measure durations (how long to sleep).
* **Outages.** Any Redis error (refused, timed out, loading, a stopped server) makes the
  site *degraded*: shares fall back, the heartbeat retries with backoff (doubling from
  ``refresh`` up to a quarter of ``lease``), the outage is logged once and its end once.
  No exception ever leaves the heartbeat thread; a bug in a participant is logged and the
  others go on.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import re
import socket
import threading
import time
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Final, Literal, get_args
from urllib.parse import parse_qs, urlsplit

import anyio
import anyio.lowlevel
import anyio.to_thread
import redis
import redis.backoff
import redis.exceptions
import redis.retry
from attrs import frozen

from .._checks import check_number, check_seconds
from .._errors import SiteUnavailable
from .._throttle._ratelimit import RateLimiter
from .._throttle._units import Family, Rate, check_rate_number
from . import _scripts
from ._fair import estimate_want, fair_shares

if TYPE_CHECKING:
    from ._slots import SiteOperationLimits

__all__ = [
    "REDIS_ERRORS",
    "Command",
    "Participant",
    "RedisSite",
    "RequestLimiter",
    "RequestLimiterStatistics",
    "SharedRateStatistics",
    "SiteStatistics",
    "as_text",
    "check_name",
    "read_status",
    "site_unavailable",
    "url_problem",
]

logger: Final = logging.getLogger("throttlekit.redis")

_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")
_NAME_RULE: Final = (
    "1 to 100 characters: letters, digits, '_', '.' and '-', starting with a letter or digit"
)
# A division of a shared rate may be reused this fraction of refresh (many members only).
_CACHE_FRACTION: Final = 0.5
# An idle member still wants this fraction of an equal share, so waking up is quick.
_FLOOR_FRACTION: Final = 0.01

Fallback = Literal["share", "even", "closed"]
Command = tuple[str, Sequence[str], Sequence[str]]  # script name, keys, args


def _kind(text: str) -> Literal["bytes", "units"]:
    return "units" if text == "units" else "bytes"


def _rate_of(per_second: float, kind: str, family: str = "") -> Rate:
    """A rate from what Redis holds: a family (how it prints) for data only, if known."""
    k = _kind(kind)
    known: Family | None = None
    for name in get_args(Family):
        if k == "bytes" and family == name:
            known = name
    return Rate(per_second=per_second, kind=k, family=known)


def as_text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _num(text: str) -> float:
    return math.inf if text in ("inf", "g") else float(text)


def _fmt(value: float) -> str:
    return "inf" if math.isinf(value) else repr(float(value))


def check_name(value: object, name: str) -> str:
    """A namespace or object name: safe in a key, and readable in ``site status``."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, got {type(value).__name__}")
    if not _NAME.fullmatch(value):
        raise ValueError(f"{name} must be {_NAME_RULE}, got {value!r}")
    return value


def _check_rate(value: object, name: str = "rate") -> Rate:
    if isinstance(value, Rate):
        return value
    if isinstance(value, str):
        return Rate.parse(value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return Rate(per_second=check_rate_number(value, name), kind="units")
    raise TypeError(f"{name} must be a Rate, rate text or a number, got {type(value).__name__}")


def _same_kind(rate: Rate, other: Rate) -> bool:
    """Whether ``rate`` may stand for ``other``: the same kind, or no limit, or paused."""
    extreme = [r.is_unlimited or r.is_paused for r in (rate, other)]
    return rate.kind == other.kind or any(extreme)


def _other_kind(what: str, rate: Rate, target: str, kind: str) -> ValueError:
    """``rate`` given where a rate of ``kind`` is needed: the spellings to use instead."""
    if kind == "bytes":
        n = str(rate)[: -len("/s")]
        instead = f"'{n}B/s', '{n}MB/s' or '{n}Mbit/s'"
    else:
        instead = "a number per second, such as '5/s'"
    return ValueError(
        f"{what} {str(rate)!r} is a rate of {rate.kind}, but {target} is a rate of {kind}: "
        f"give {instead}"
    )


_DB: Final = re.compile(r"[0-9]+")


def url_problem(url: str) -> str | None:
    """
    What is wrong with a Redis URL that redis-py would take and misread, or None:
    a database that is not a number (``redis://host/x`` would silently be database 0),
    a ``unix://`` URL without a socket path. The rest (scheme, port) redis-py checks.
    """
    try:
        parts = urlsplit(url)
        query = parse_qs(parts.query)
    except ValueError as error:
        return str(error)
    if parts.scheme.lower() == "unix":
        if not parts.path:
            return "unix:// needs a socket path, such as unix:///run/redis/redis.sock"
    elif parts.scheme.lower() in ("redis", "rediss"):
        db = parts.path[1:] if parts.path.startswith("/") else parts.path
        if db and not _DB.fullmatch(db):
            return f"the database must be a number (redis://host:6379/0), got {db!r}"
    for db in query.get("db", []):
        if not _DB.fullmatch(db):
            return f"the database must be a number (?db=0), got {db!r}"
    return None


def _check_amount(value: object) -> float:
    amount = check_number(value, "amount")
    if not (math.isfinite(amount) and amount > 0):
        raise ValueError(f"amount must be a finite number > 0, got {value!r}")
    return amount


def site_unavailable(error: BaseException, what: str) -> SiteUnavailable:
    exc = SiteUnavailable(f"Redis is unreachable ({what}): {type(error).__name__}: {error}")
    exc.__cause__ = error
    return exc


REDIS_ERRORS: Final = (redis.exceptions.RedisError, OSError)


class _ScriptRunner:
    """Runs the site's scripts by digest, loading them again after a server restart."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.sources = dict(_scripts.SCRIPTS)
        self.sha = {name: _scripts.sha1(source) for name, source in self.sources.items()}

    def register(self, name: str, source: str) -> None:
        """Make another script callable by name (for shared objects built on the site)."""
        self.sources[name] = source
        self.sha[name] = _scripts.sha1(source)

    def load(self, names: set[str]) -> None:
        for name in names:
            self.client.script_load(self.sources[name])

    def call(self, name: str, keys: Sequence[str], args: Sequence[str]) -> Any:
        for attempt in (0, 1):
            try:
                return self.client.evalsha(self.sha[name], len(keys), *keys, *args)
            except redis.exceptions.NoScriptError:
                if attempt:
                    raise
                self.load({name})
        raise AssertionError("unreachable")  # pragma: no cover

    def pipeline(self, commands: Sequence[Command], *, each: bool = False) -> list[Any]:
        """
        Every command in one round trip; raises the first error, or with ``each`` leaves
        a command's error in its place (a connection error still raises).
        """
        for attempt in (0, 1):
            pipe = self.client.pipeline(transaction=False)
            for name, keys, args in commands:
                pipe.evalsha(self.sha[name], len(keys), *keys, *args)
            results: list[Any] = pipe.execute(raise_on_error=False)
            missing = {
                commands[i][0]
                for i, r in enumerate(results)
                if isinstance(r, redis.exceptions.NoScriptError)
            }
            if missing and not attempt:
                self.load(missing)
                continue
            for r in results:
                if isinstance(r, Exception) and not each:
                    raise r
            return results
        raise AssertionError("unreachable")  # pragma: no cover


class Participant:
    """
    A shared object that rides on the site's heartbeat (the extension point).

    Each refresh the heartbeat asks every participant for its commands, sends them all
    in one pipeline, and hands each participant its results; when Redis cannot be
    reached, it tells each participant instead. Methods run in the heartbeat thread
    (and ``leave`` in the thread that leaves the site); they must not block.
    """

    def commands(self, elapsed: float) -> list[Command]:
        """The scripts to run this refresh; ``elapsed``: seconds since the last one."""
        raise NotImplementedError

    def apply(self, results: list[Any]) -> None:
        """The results of :meth:`commands`, in order."""
        raise NotImplementedError

    def unavailable(self, error: BaseException) -> None:
        """Redis could not be reached this refresh."""

    def leave(self) -> list[Command]:
        """The scripts that remove this member from the object (on leaving the site)."""
        return []


# -- statistics ------------------------------------------------------------------------------


@frozen(kw_only=True)
class SharedRateStatistics:
    """
    One shared rate as this member sees it, from :meth:`RedisSite.statistics`: the site
    rate, this member's share of it and what it asked for, and whether the share is a
    fallback.
    """

    #: The shared rate's name, as given to :meth:`RedisSite.rate_limiter`.
    name: str
    #: The rate of the whole site (from Redis).
    site_rate: Rate
    #: This member's part of it: the rate its local limiter runs at now.
    share: Rate
    #: What this member reported it wants (``math.inf``: as much as it can get).
    want: float
    #: The live members sharing it at the last refresh.
    members: int
    #: Whether the share is a fallback because Redis could not be reached.
    degraded: bool
    #: What the share becomes while Redis is unreachable: ``"share"``, ``"even"``,
    #: ``"closed"`` or a rate, as text.
    fallback: str


@frozen(kw_only=True)
class RequestLimiterStatistics:
    """
    A :class:`RequestLimiter` as this member sees it: the site-wide settings, what this
    member was granted and waited, and how many of its acquires failed.
    """

    #: The limiter's name, as given to :meth:`RedisSite.request_limiter`.
    name: str
    #: The site-wide rate (from Redis at the last acquire).
    rate: Rate
    #: The site-wide burst (from Redis at the last acquire).
    burst: float
    #: What this member was granted.
    granted: float
    #: Seconds this member's callers spent waiting their turn.
    total_waited: float
    #: How many acquires failed with :class:`~throttlekit.SiteUnavailable`.
    unavailable: int


@frozen(kw_only=True)
class SiteStatistics:
    """
    A snapshot of a :class:`RedisSite` from this member's side: the site's membership
    and health at the last refresh, the heartbeats, and one record per shared rate and
    per request limiter.
    """

    #: The prefix of every key of the site.
    namespace: str
    #: This member's name.
    member: str
    #: The number of live members of the site at the last refresh.
    members: int
    #: Whether the last refresh failed (shares are then fallbacks).
    degraded: bool
    #: The last Redis error seen (kept after recovery, for diagnosis).
    last_error: str | None
    #: Heartbeats that reached Redis.
    refreshes: int
    #: Heartbeats that failed.
    failures: int
    #: The server's clock at the last refresh (seconds since the epoch).
    server_time: float | None
    #: One record per shared rate.
    rates: tuple[SharedRateStatistics, ...]
    #: One record per request limiter.
    requests: tuple[RequestLimiterStatistics, ...]


# -- shared rates ----------------------------------------------------------------------------


def _waiting(limiter: RateLimiter) -> int:
    """How many callers wait in ``limiter``'s line (``tasks_waiting``, or the older name)."""
    stats = limiter.statistics()
    # Read the current field when there is one: the older name may be a deprecated alias.
    field = "tasks_waiting" if hasattr(type(stats), "tasks_waiting") else "waiters"
    return int(getattr(stats, field))


class _SharedRate(Participant):
    """A site rate divided among members; this member's share drives a local limiter."""

    def __init__(
        self,
        site: RedisSite,
        name: str,
        rate: Rate,
        limiter: RateLimiter,
        fallback: Fallback | Rate,
    ) -> None:
        self.site = site
        self.name = name
        tag = f"{site.namespace}:{{{site.namespace}/rate/{name}}}"
        self.keys = (f"{tag}:config", f"{tag}:alive", f"{tag}:wants")
        self.site_rate = rate
        self.write = True  # the next report sets the site rate
        self.limiter = limiter
        self.fallback = fallback
        self.share = limiter.rate.per_second
        self.want = math.inf
        self.members = max(site._members, 1)
        self.degraded = False
        self.first = True
        self.granted = limiter.statistics().total_granted
        self.lock = threading.Lock()

    def _report(self, elapsed: float) -> tuple[str, str]:
        stats = self.limiter.statistics()
        used = max(stats.total_granted - self.granted, 0.0) / elapsed if elapsed > 0 else 0.0
        self.granted = stats.total_granted
        equal = self.site_rate.per_second / max(self.members, 1)
        floor = equal * _FLOOR_FRACTION if math.isfinite(equal) else 0.0
        self.want = estimate_want(
            used=used,
            share=self.share,
            waiting=_waiting(self.limiter),
            floor=floor,
            first=self.first or self.degraded,
        )
        return ("g" if math.isinf(self.want) else _fmt(self.want)), _fmt(self.site_rate.per_second)

    def commands(self, elapsed: float) -> list[Command]:
        with self.lock:
            want, rate = self._report(elapsed)
            write = "1" if self.write else "0"
        site = self.site
        cache = str(int(site.refresh * 1000 * _CACHE_FRACTION))
        args = (site.member, want, str(int(site.lease * 1000)), rate, self.site_rate.kind)
        return [("share", self.keys, (*args, write, cache, self.site_rate.family or ""))]

    def apply(self, results: list[Any]) -> None:
        share_s, rate_s, kind, members = (as_text(r) for r in results[0][:4])
        family = as_text(results[0][7]) if len(results[0]) > 7 else ""
        with self.lock:
            self.write = False
            self.first = False
            self.site_rate = _rate_of(_num(rate_s), kind, family)
            self.members = int(members)
            self.degraded = False
            self._set_share(_num(share_s))

    def _share_rate(self, share: float) -> Rate:
        # Shown in the site rate's family: a share of 80Mbit/s prints in Mbit/s too.
        return Rate(per_second=share, kind=self.site_rate.kind, family=self.site_rate.family)

    def _set_share(self, share: float) -> None:
        old = self.share
        self.share = share
        if (
            share != old
            and not (math.isfinite(share) and math.isfinite(old) and abs(share - old) <= 1e-9 * old)
        ) or self.limiter.rate.family != self.site_rate.family:
            self.limiter.rate = self._share_rate(share)

    def unavailable(self, error: BaseException) -> None:
        with self.lock:
            self.degraded = True
            fallback = self.fallback
            if isinstance(fallback, Rate):
                share = fallback.per_second
            elif fallback == "even":
                share = self.site_rate.per_second / max(self.members, 1)
            elif fallback == "closed":
                share = 0.0
            else:
                share = self.share
            self._set_share(share)

    def leave(self) -> list[Command]:
        return [("leave_share", self.keys, (self.site.member,))]

    def statistics(self) -> SharedRateStatistics:
        with self.lock:
            return SharedRateStatistics(
                name=self.name,
                site_rate=self.site_rate,
                share=self._share_rate(self.share),
                want=self.want,
                members=self.members,
                degraded=self.degraded,
                fallback=str(self.fallback),
            )


# -- request limiter -------------------------------------------------------------------------


class RequestLimiter:
    """
    A rate that is exact across machines: one atomic server-side script per acquire.

    Made by :meth:`RedisSite.request_limiter`. Each acquire reserves the next turn with
    GCRA (the generic cell rate algorithm) on the server: the server says how long the
    caller must wait for its turn and records the reservation, so callers on every
    machine are served in order of arrival at Redis, without polling, and over any
    window no more than ``rate x window + burst`` pass. Use it for low rates where every
    request counts (a cloud API's quota); for bandwidth use
    :meth:`RedisSite.rate_limiter`, which costs no round trip per chunk.

    While Redis is unreachable every acquire raises :class:`~throttlekit.SiteUnavailable`:
    it never grants blindly. A caller cancelled while waiting for its turn gives the turn
    back when nobody reserved after it (otherwise the turn is lost, which can only make
    the site slower, never faster).
    """

    def __init__(self, site: RedisSite, name: str, rate: Rate, burst: float) -> None:
        self._site = site
        self.name = name
        tag = f"{site.namespace}:{{{site.namespace}/request/{name}}}"
        self._keys = (f"{tag}:config", f"{tag}:tat")
        self._rate = rate
        self._burst = burst
        self._write = True
        self._lock = threading.Lock()
        self._granted = 0.0
        self._waited = 0.0
        self._failures = 0

    @property
    def rate(self) -> Rate:
        """The site-wide rate, as last seen from Redis."""
        return self._rate

    @property
    def burst(self) -> float:
        """How many may pass at once after an idle period, site-wide."""
        return self._burst

    def _reserve(self, amount: float, nowait: bool) -> tuple[str, float, str, str]:
        """One round trip: (status, wait in seconds, reservation tat, increment)."""
        with self._lock:
            write = "1" if self._write else "0"
        args = (
            _fmt(amount),
            "1" if nowait else "0",
            _fmt(self._rate.per_second),
            _fmt(self._burst),
            self._rate.kind,
            write,
            self._rate.family or "",
        )
        try:
            result = self._site._scripts.call("gcra", self._keys, args)
        except REDIS_ERRORS as error:
            with self._lock:
                self._failures += 1
            raise site_unavailable(error, f"request limiter {self.name!r}") from error
        status, wait, tat, incr, rate, burst, kind, family = (as_text(r) for r in result)
        with self._lock:
            self._write = False
            self._rate = _rate_of(_num(rate), kind, family)
            self._burst = _num(burst)
        return status, float(wait) / 1e6, tat, incr

    def _refund(self, tat: str, incr: str) -> None:
        if incr in ("0", ""):
            return
        try:
            self._site._scripts.call("gcra_refund", self._keys[1:], (tat, incr))
        except REDIS_ERRORS as error:  # the turn stays taken: slower, never faster
            logger.debug("request limiter %r: refund failed: %s", self.name, error)

    def _granted_now(self, amount: float, waited: float) -> None:
        with self._lock:
            self._granted += amount
            self._waited += waited

    def _check(self, amount: object) -> float:
        value = _check_amount(amount)
        if value > self._burst:
            raise ValueError(
                f"amount {amount!r} is more than the burst {self._burst!r}: a request "
                "limiter's turn is at most one burst"
            )
        return value

    async def acquire(self, amount: float = 1) -> None:
        """
        Wait for this caller's turn (site-wide), then return: a cancellation point.

        Raises :class:`~throttlekit.SiteUnavailable` when Redis cannot be reached.
        Cancelled while waiting, it gives its turn back if it can.
        """
        value = self._check(amount)
        await anyio.lowlevel.checkpoint_if_cancelled()
        while True:
            # Not abandoned on cancellation: a reservation made must be known to be undone.
            status, wait, tat, incr = await anyio.to_thread.run_sync(self._reserve, value, False)
            if status != "paused":
                break
            await anyio.sleep(self._site.refresh)  # a paused rate: look again later
        try:
            if wait > 0:
                await anyio.sleep(wait)
            else:
                await anyio.lowlevel.checkpoint()
        except BaseException:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(self._refund, tat, incr)
            raise
        self._granted_now(value, wait)

    def acquire_blocking(self, amount: float = 1) -> None:
        """:meth:`acquire` for threads: block the calling thread until its turn."""
        value = self._check(amount)
        while True:
            status, wait, tat, incr = self._reserve(value, False)
            if status != "paused":
                break
            time.sleep(self._site.refresh)
        try:
            if wait > 0:
                time.sleep(wait)
        except BaseException:  # KeyboardInterrupt while waiting
            self._refund(tat, incr)
            raise
        self._granted_now(value, wait)

    def acquire_nowait(self, amount: float = 1) -> None:
        """
        Take a turn if one is free now, else raise :class:`anyio.WouldBlock` (taking
        nothing). One round trip; :class:`~throttlekit.SiteUnavailable` if Redis is down.
        """
        value = self._check(amount)
        status, _, _, _ = self._reserve(value, True)
        if status != "ok":
            raise anyio.WouldBlock
        self._granted_now(value, 0.0)

    def statistics(self) -> RequestLimiterStatistics:
        """What this member saw: rate, burst, granted, time waited, failures."""
        with self._lock:
            return RequestLimiterStatistics(
                name=self.name,
                rate=self._rate,
                burst=self._burst,
                granted=self._granted,
                total_waited=self._waited,
                unavailable=self._failures,
            )

    def __repr__(self) -> str:
        return f"<RequestLimiter {self.name!r} rate={self._rate} burst={self._burst:g}>"


# -- the site --------------------------------------------------------------------------------


class RedisSite:
    """
    Budgets shared by every process and machine that uses the same Redis (or Valkey)
    and namespace: one connection, one membership and one heartbeat thread per site.

    >>> from throttlekit.redis import RedisSite
    >>> site = RedisSite("redis://backup-redis:6379/0", namespace="site-a", refresh=1.0)
    >>> site.namespace, site.refresh, site.lease
    ('site-a', 1.0, 10.0)

    (Making one connects to nothing; entering it does.) Use it as a context manager,
    ``with site:`` or ``async with site:``: entering registers this member (an
    unreachable server is a :class:`~throttlekit.SiteUnavailable` then) and starts the
    heartbeat thread; leaving stops and joins the thread and deregisters the member, so
    the others take over its shares at their next refresh.

    Give either ``url``, a redis-py URL (``redis://``, ``rediss://``, ``unix://``), or
    ``client=``, a ``redis.Redis`` you made (Sentinel, TLS, your own timeouts), not both.
    Every key starts with ``namespace`` (letters, digits, ``_.-``), so several sites can
    share one Redis. ``member`` is this member's name (default ``hostname:pid``; give
    distinct names to several sites in one process). ``refresh`` is the seconds between
    heartbeats; shares follow demand within a few of them. ``lease`` is the seconds after
    which a silent member is dropped (it died, or lost Redis) and its share goes to the
    others; longer than ``refresh``.

    **Server time.** Leases and the request limiter's timetable use the server's clock
    only, so members with wrong clocks change nothing.

    A site is not a limiter itself: ask it for :meth:`rate_limiter` (bandwidth, no round
    trip per acquire) or :meth:`request_limiter` (exact, one round trip per acquire).
    """

    # Tests drive the heartbeat by hand (beat()) with this set to False.
    _heartbeat_thread = True

    def __init__(
        self,
        url: str | None = None,
        *,
        client: Any = None,
        namespace: str = "throttlekit",
        member: str | None = None,
        refresh: float = 1.0,
        lease: float = 10.0,
    ) -> None:
        self.namespace = check_name(namespace, "namespace")
        if member is None:
            member = f"{socket.gethostname()}:{os.getpid()}"
        if not isinstance(member, str):
            raise TypeError(f"member must be a str or None, got {type(member).__name__}")
        if not member or len(member) > 200 or not member.isprintable():
            raise ValueError(f"member must be 1 to 200 printable characters, got {member!r}")
        self.member = member
        self.refresh = check_seconds(refresh, "refresh", allow_zero=False)
        self.lease = check_seconds(lease, "lease", allow_zero=False)
        if self.lease <= self.refresh:
            raise ValueError(
                f"lease must be longer than refresh ({self.refresh!r} s), got {lease!r}: a "
                "member would drop out between two heartbeats"
            )
        if (url is None) == (client is None):
            raise ValueError("give a Redis url or client=, exactly one of the two")
        self._owns_client = client is None
        if client is None:
            if not isinstance(url, str):
                raise TypeError(f"url must be a str, got {type(url).__name__}")
            timeout = max(0.25, min(self.lease / 2, 5.0))
            try:
                problem = url_problem(url)
                if problem is not None:
                    raise ValueError(problem)
                client = redis.Redis.from_url(
                    url,
                    socket_timeout=timeout,
                    socket_connect_timeout=timeout,
                    retry=redis.retry.Retry(redis.backoff.NoBackoff(), 0),
                )
            except ValueError as error:
                raise ValueError(f"url {url!r} is not a Redis URL: {error}") from None
        self.client = client
        self._scripts = _ScriptRunner(client)
        tag = f"{self.namespace}:{{{self.namespace}/site}}"
        self._site_keys = (f"{tag}:members", f"{tag}:info")
        self._info = json.dumps(
            {
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "refresh": self.refresh,
                "lease": self.lease,
            }
        )
        self._lock = threading.Lock()
        self._create_lock = threading.Lock()
        self._participants: list[Participant] = []
        self._failing: set[int] = set()  # participants whose last script failed on the server
        self._rates: dict[str, _SharedRate] = {}
        self._requests: dict[str, RequestLimiter] = {}
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._started = False
        self._closed = False
        self._members = 1
        self._degraded = False
        self._last_error: str | None = None
        self._refreshes = 0
        self._failures = 0
        self._server_time: float | None = None
        self._last_beat = time.monotonic()

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        """Register this member and start the heartbeat (what ``with`` does)."""
        if self._closed:
            raise RuntimeError("this RedisSite was closed; make a new one")
        if self._started:
            raise RuntimeError("this RedisSite is already started")
        try:
            result = self._scripts.call("site", self._site_keys, self._site_args(leaving=False))
        except REDIS_ERRORS as error:
            raise site_unavailable(error, "cannot join the site") from error
        self._site_result(result)
        self._started = True
        self._last_beat = time.monotonic()
        if self._heartbeat_thread:
            self._thread = threading.Thread(
                target=self._run, name=f"throttlekit-site-{self.namespace}", daemon=True
            )
            self._thread.start()

    def close(self) -> None:
        """Stop and join the heartbeat, then deregister (what leaving ``with`` does)."""
        with self._lock:
            if not self._started or self._closed:
                self._closed = True
                return
            self._closed = True
        self._stop.set()
        self._wake.set()
        thread = self._thread
        if thread is not None:
            thread.join()
        commands: list[Command] = [
            ("site", self._site_keys, self._site_args(leaving=True)),
        ]
        with self._lock:
            participants = list(self._participants)
        for participant in participants:
            commands.extend(participant.leave())
        try:
            self._scripts.pipeline(commands)
        except REDIS_ERRORS as error:  # its leases expire on their own
            logger.warning(
                "site %r: could not deregister member %r (its lease will expire): %s",
                self.namespace,
                self.member,
                error,
            )
        if self._owns_client:
            self.client.close()

    def __enter__(self) -> RedisSite:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    async def __aenter__(self) -> RedisSite:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(self.start)
        try:
            await anyio.lowlevel.checkpoint_if_cancelled()
        except BaseException:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(self.close)
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(self.close)

    def _require_started(self) -> None:
        if not self._started or self._closed:
            raise RuntimeError("enter the site first (with site: / async with site:)")

    # -- the heartbeat -------------------------------------------------------------------

    def _site_args(self, *, leaving: bool) -> tuple[str, ...]:
        return (self.member, str(int(self.lease * 1000)), self._info, "1" if leaving else "0")

    def _site_result(self, result: Any) -> None:
        now_ms, members = result
        self._server_time = int(as_text(now_ms)) / 1000
        self._members = int(members)

    def _run(self) -> None:
        delay = self.refresh
        failures = 0
        while not self._stop.is_set():
            self._wake.wait(delay * random.uniform(0.9, 1.1) if failures else delay)
            self._wake.clear()
            if self._stop.is_set():
                return
            if self.beat():
                failures, delay = 0, self.refresh
            else:
                failures += 1
                delay = min(self.refresh * 2**failures, max(self.refresh, self.lease / 4))

    def beat(self) -> bool:
        """One heartbeat: renew leases and refresh every participant. True if it worked."""
        now = time.monotonic()
        elapsed, self._last_beat = now - self._last_beat, now
        with self._lock:
            participants = list(self._participants)
        commands: list[Command] = [("site", self._site_keys, self._site_args(leaving=False))]
        spans: list[tuple[Participant, int, int]] = []
        for participant in participants:
            try:
                mine = participant.commands(elapsed)
            except Exception:
                logger.exception("site %r: a participant failed", self.namespace)
                continue
            spans.append((participant, len(commands), len(commands) + len(mine)))
            commands.extend(mine)
        try:
            results = self._scripts.pipeline(commands, each=True)
            if isinstance(results[0], Exception):  # the site's own script: an outage
                raise results[0]
        except Exception as error:
            self._outage(error, participants)
            return False
        self._site_result(results[0])
        for participant, start, end in spans:
            # A script that fails on the server for one object (its keys overwritten
            # with another type, say) is that object's outage, not the site's.
            failed = next((r for r in results[start:end] if isinstance(r, Exception)), None)
            try:
                if failed is None:
                    participant.apply(results[start:end])
                    self._failing.discard(id(participant))
                    continue
                if id(participant) not in self._failing:
                    self._failing.add(id(participant))
                    logger.error(
                        "site %r: a shared object's script failed on the server (it runs "
                        "as if Redis were unreachable until it works again): %s",
                        self.namespace,
                        failed,
                    )
                participant.unavailable(failed)
            except Exception:
                logger.exception("site %r: a participant failed", self.namespace)
        with self._lock:
            self._refreshes += 1
            was_degraded, self._degraded = self._degraded, False
        if was_degraded:
            logger.warning("site %r: Redis is reachable again", self.namespace)
        return True

    def _outage(self, error: Exception, participants: list[Participant]) -> None:
        # The participants fall back first: once the site says "degraded", they are.
        for participant in participants:
            try:
                participant.unavailable(error)
            except Exception:
                logger.exception("site %r: a participant failed", self.namespace)
        with self._lock:
            self._failures += 1
            self._last_error = f"{type(error).__name__}: {error}"
            was_degraded, self._degraded = self._degraded, True
        if not was_degraded:
            logger.warning(
                "site %r: Redis is unreachable, using fallbacks until it is back: %s",
                self.namespace,
                self._last_error,
            )

    def add(self, participant: Participant) -> None:
        """Let ``participant`` ride on the heartbeat from the next refresh on."""
        with self._lock:
            self._participants.append(participant)

    # -- shared objects ------------------------------------------------------------------

    def rate_limiter(
        self,
        name: str,
        rate: Rate | str | float,
        *,
        burst: float | timedelta | None = None,
        fallback: Fallback | Rate | str = "share",
    ) -> RateLimiter:
        """
        A local :class:`~throttlekit.RateLimiter` whose rate is this member's max-min fair
        share of the site rate ``rate``, set live by the heartbeat.

        Acquires never touch Redis: each refresh the member reports what it wants (more,
        when callers wait or it used its whole share; otherwise what it used, with
        headroom) and receives its share. ``rate`` is stored in Redis for everybody:
        asking again with another rate changes it for every member at their next refresh.
        ``burst``: the local limiter's burst (default 0.1 s of the share). ``fallback``:
        what the share becomes while Redis is unreachable: ``"share"`` (keep the last
        one), ``"even"`` (site rate / members last seen), ``"closed"`` (pause), or a
        rate. Asking twice for one name returns the same limiter. Its ``rate`` belongs to
        the heartbeat (set the site rate here or with ``throttlekit site set-rate``);
        limit this member further with a child: ``RateLimiter(..., parent=limiter)``.
        """
        self._require_started()
        check_name(name, "name")
        site_rate = _check_rate(rate)
        fb = _check_fallback(fallback)
        if isinstance(fb, Rate) and not _same_kind(fb, site_rate):
            raise _other_kind("fallback", fb, f"the site rate {str(site_rate)!r}", site_rate.kind)
        with self._create_lock:  # one limiter per name, even when asked from two threads
            return self._rate_limiter(name, site_rate, burst, fb)

    def _rate_limiter(
        self,
        name: str,
        site_rate: Rate,
        burst: float | timedelta | None,
        fb: Fallback | Rate,
    ) -> RateLimiter:
        with self._lock:
            existing = self._rates.get(name)
        if existing is not None:
            with existing.lock:
                if not _same_kind(site_rate, existing.site_rate):
                    target = f"the shared rate {name!r}"
                    raise _other_kind("rate", site_rate, target, existing.site_rate.kind)
                if (site_rate, site_rate.family) != (existing.site_rate, existing.site_rate.family):
                    existing.site_rate, existing.write = site_rate, True
                existing.fallback = fb
            self._wake.set()
            return existing.limiter
        self._check_stored_kind("rate", name, site_rate)
        start = site_rate.per_second / max(self._members, 1)
        limiter = RateLimiter(
            Rate(per_second=start, kind=site_rate.kind, family=site_rate.family), burst=burst
        )
        shared = _SharedRate(self, name, site_rate, limiter, fb)
        # One report now, so the limiter starts at its share rather than a guess.
        try:
            shared.apply([self._scripts.call(*shared.commands(self.refresh)[0])])
            shared.first = True  # no history yet: it reports "greedy" once more
        except REDIS_ERRORS as error:
            shared.unavailable(error)
        with self._lock:
            self._rates[name] = shared
            self._participants.append(shared)
        return limiter

    def _check_stored_kind(self, kind: str, name: str, rate: Rate) -> None:
        """
        Refuse ``rate`` for the object ``name`` when the site rate in Redis counts the
        other kind (bytes against units): writing it would silently turn every member's
        40MiB/s into 40/s. Not known while Redis is unreachable: then the rate is taken.
        """
        key = f"{self.namespace}:{{{self.namespace}/{kind}/{name}}}:config"
        try:
            stored_rate, stored_kind = self.client.hmget(key, "rate", "kind")
        except REDIS_ERRORS:
            return
        if stored_rate is None:
            return
        stored = _rate_of(_num(as_text(stored_rate)), as_text(stored_kind or "bytes"))
        if not _same_kind(rate, stored):
            what = "shared rate" if kind == "rate" else "request limiter"
            raise _other_kind("rate", rate, f"the {what} {name!r}", stored.kind)

    def request_limiter(
        self, name: str, rate: Rate | str | float, *, burst: float = 1
    ) -> RequestLimiter:
        """
        A :class:`RequestLimiter`: exact across machines, one atomic round trip per
        acquire (for cloud API quotas and other low rates). ``rate`` and ``burst`` are
        stored in Redis for every member; asking twice for one name returns the same one.
        """
        self._require_started()
        check_name(name, "name")
        site_rate = _check_rate(rate)
        value = check_number(burst, "burst")
        if not (math.isfinite(value) and value >= 1):
            raise ValueError(f"burst must be a finite number >= 1, got {burst!r}")
        with self._lock:
            limiter = self._requests.get(name)
        if limiter is None:
            self._check_stored_kind("request", name, site_rate)
        elif not _same_kind(site_rate, limiter._rate):
            target = f"the request limiter {name!r}"
            raise _other_kind("rate", site_rate, target, limiter._rate.kind)
        with self._lock:
            limiter = self._requests.get(name)
            if limiter is None:
                limiter = self._requests[name] = RequestLimiter(self, name, site_rate, value)
            elif (site_rate, site_rate.family, value) != (
                limiter._rate,
                limiter._rate.family,
                limiter._burst,
            ):
                limiter._rate, limiter._burst, limiter._write = site_rate, value, True
        # Published now (for site status and set-rate); if Redis is down, at the first acquire.
        config = {
            "rate": _fmt(site_rate.per_second),
            "burst": _fmt(value),
            "kind": site_rate.kind,
            "family": site_rate.family or "",
        }
        try:
            self.client.hset(limiter._keys[0], mapping=config)
            limiter._write = False
        except REDIS_ERRORS as error:
            logger.debug("request limiter %r: not published yet: %s", name, error)
        return limiter

    def operation_limits(
        self,
        name: str,
        *,
        total: int | None,
        per_kind: Mapping[str, int] | None = None,
        per_key: int | None = None,
    ) -> SiteOperationLimits:
        """
        A :class:`SiteOperationLimits`: the surface of the local
        :class:`~throttlekit.OperationLimits` across every machine of the site, with
        leases renewed by this site's heartbeat, fencing tokens and grants published
        to the waiters. ``total``, ``per_kind`` and ``per_key`` are stored in Redis for
        every member: asking again (here or elsewhere) with other limits changes them
        for everybody; asking twice for one name returns the same object.
        """
        from ._slots import operation_limits

        return operation_limits(self, name, total=total, per_kind=per_kind, per_key=per_key)

    def statistics(self) -> SiteStatistics:
        """Members, degraded, the last error, and every shared limiter's rate and share."""
        with self._lock:
            rates = list(self._rates.values())
            requests = list(self._requests.values())
            return SiteStatistics(
                namespace=self.namespace,
                member=self.member,
                members=self._members,
                degraded=self._degraded,
                last_error=self._last_error,
                refreshes=self._refreshes,
                failures=self._failures,
                server_time=self._server_time,
                rates=tuple(r.statistics() for r in rates),
                requests=tuple(r.statistics() for r in requests),
            )

    def __repr__(self) -> str:
        state = "open" if self._started and not self._closed else "closed"
        return f"<RedisSite {self.namespace!r} member={self.member!r} {state}>"


def _check_fallback(value: object) -> Fallback | Rate:
    if value == "share" or value == "even" or value == "closed":
        return value
    if isinstance(value, Rate):
        return value
    if isinstance(value, str):
        try:
            return Rate.parse(value)
        except ValueError:
            raise ValueError(
                f"fallback must be 'share', 'even', 'closed' or a rate, got {value!r}"
            ) from None
    raise TypeError(
        f"fallback must be 'share', 'even', 'closed' or a Rate, got {type(value).__name__}"
    )


# -- status (for the command line and dashboards) ---------------------------------------------


def read_status(client: Any, namespace: str) -> dict[str, Any]:
    """
    Everything a site holds, read from Redis without joining it: members and their
    ages, every shared rate with each member's want and share (the same max-min fair
    division the members compute), every request limiter's rate and burst. Times are
    seconds, from the server's clock. Returns plain data (JSON-ready).
    """
    check_name(namespace, "namespace")
    t = client.time()
    now = int(t[0]) + int(t[1]) / 1e6
    tag = f"{namespace}:{{{namespace}/site}}"
    members = {
        as_text(m): float(score) / 1000
        for m, score in client.zrange(f"{tag}:members", 0, -1, withscores=True)
    }
    infos = {as_text(k): as_text(v) for k, v in client.hgetall(f"{tag}:info").items()}
    status: dict[str, Any] = {
        "namespace": namespace,
        "server_time": now,
        "members": [],
        "rates": [],
        "requests": [],
    }
    for member, until in sorted(members.items()):
        info = json.loads(infos.get(member, "{}") or "{}")
        refresh = float(info.get("refresh", 0) or 0)
        lease = float(info.get("lease", 0) or 0)
        age = max(lease - (until - now), 0.0)
        status["members"].append(
            {
                "member": member,
                "host": info.get("host"),
                "pid": info.get("pid"),
                "refresh": refresh,
                "age": age,
                "expires_in": until - now,
                # Silent for more than two heartbeats: it cannot reach Redis (degraded,
                # on its fallback) or it is dying; it drops out when its lease ends.
                "late": age > 2 * refresh + 0.5,
            }
        )
    pattern = f"{namespace}:{{{namespace}/*}}:config"
    for key in sorted(as_text(k) for k in client.scan_iter(match=pattern, count=1000)):
        inner = key[len(namespace) + 2 : key.rindex("}")]
        _, kind, name = inner.split("/", 2)
        conf = {as_text(k): as_text(v) for k, v in client.hgetall(key).items()}
        prefix = key[: -len(":config")]
        if kind == "rate":
            alive = {
                as_text(m): float(s) / 1000
                for m, s in client.zrange(f"{prefix}:alive", 0, -1, withscores=True)
            }
            wants = {
                as_text(k): _num(as_text(v)) for k, v in client.hgetall(f"{prefix}:wants").items()
            }
            wants = {m: w for m, w in wants.items() if m in alive and alive[m] >= now}
            rate = _num(conf.get("rate", "inf"))
            shares = fair_shares(rate, wants)
            status["rates"].append(
                {
                    "name": name,
                    "rate": rate,
                    "kind": conf.get("kind", "bytes"),
                    "family": _rate_of(
                        rate, conf.get("kind", "bytes"), conf.get("family", "")
                    ).family,
                    "members": [
                        {
                            "member": m,
                            "want": wants[m],
                            "share": shares[m],
                            "expires_in": alive[m] - now,
                        }
                        for m in sorted(wants)
                    ],
                }
            )
        elif kind == "request":
            status["requests"].append(
                {
                    "name": name,
                    "rate": _num(conf.get("rate", "inf")),
                    "burst": _num(conf.get("burst", "1")),
                    "kind": conf.get("kind", "units"),
                    "family": _rate_of(
                        0.0, conf.get("kind", "units"), conf.get("family", "")
                    ).family,
                }
            )
    return status


def set_rate(client: Any, namespace: str, name: str, rate: Rate | str | float) -> list[str]:
    """
    Change the site-wide rate of ``name`` (a shared rate, a request limiter, or both):
    every member follows at its next refresh (request limiters at the next acquire).
    Returns the kinds changed; a :class:`LookupError` when the site has no such object.
    """
    check_name(namespace, "namespace")
    check_name(name, "name")
    value = _check_rate(rate)
    found = []
    for kind in ("rate", "request"):
        key = f"{namespace}:{{{namespace}/{kind}/{name}}}:config"
        if client.exists(key):
            stored = _rate_of(1.0, as_text(client.hget(key, "kind") or "bytes"))
            if not _same_kind(value, stored):
                what = "shared rate" if kind == "rate" else "request limiter"
                raise _other_kind("rate", value, f"the {what} {name!r}", stored.kind)
            found.append((kind, key))
    changed = []
    for kind, key in found:
        config = {"rate": _fmt(value.per_second), "kind": value.kind, "family": value.family or ""}
        client.hset(key, mapping=config)
        client.hdel(key, "level_at")
        changed.append(kind)
    if not changed:
        raise LookupError(f"site {namespace!r} has no shared rate or request limiter {name!r}")
    return changed
