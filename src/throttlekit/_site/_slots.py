"""
Operation slots shared by every member of a Redis site: the surface of
:class:`~throttlekit.OperationLimits`, across machines (see :class:`SiteOperationLimits`).

How it is built, and why:

* **One script per step.** Entering the line, taking a slot now, releasing, renewing and
  changing the limits are each one atomic server-side script (``_slots_lua.SLOTS``), which
  ends with the grant pass: a slot takes its total, kind and key counters together, and
  the line is served by priority, then arrival at the server, whichever machine asks.
* **Leases.** Every holder and waiter has a lease on the server, renewed by the site's
  heartbeat (one more script in its pipeline, whatever the number of slots); an entry
  whose lease ran out is removed by the next script, so a dead machine frees its slots
  within ``lease`` and a dead waiter never blocks the line.
* **Waking.** Grants are published on the object's channel; one subscriber thread per
  object wakes the local waiters (tasks on asyncio or trio, and threads) within a round
  trip, without polling. Each waiter also looks again every few refreshes (the safety net
  for a lost message), and the heartbeat reports grants too.
* **Fencing.** Each grant carries a token that grows with every grant of the object (it
  goes on from the server's clock after a restart), for storage systems that refuse a
  holder that lost its lease and came back.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from typing import TYPE_CHECKING, Any, Final, Literal

import anyio
import anyio.lowlevel
import anyio.to_thread
import sniffio
from attrs import frozen

from .._checks import (
    check_kind,
    check_limits_per_kind,
    check_optional_int,
    check_priority,
    check_seconds,
)
from .._errors import SiteUnavailable
from .._throttle._ratelimit import ThreadSignal, task_signal
from ._core import REDIS_ERRORS, Command, Participant, as_text, check_name, site_unavailable
from ._slots_lua import SLOTS

if TYPE_CHECKING:
    from ._core import RedisSite

__all__ = [
    "SiteOperationLimits",
    "SiteOperationLimitsStatistics",
    "SlotGrant",
    "SlotHolder",
    "SlotWaiter",
    "operation_limits",
    "read_all_slots",
    "read_slots",
]

logger: Final = logging.getLogger("throttlekit.redis")

OnLost = Literal["warn", "cancel"]
_MAX_PRIORITY: Final = 10**12  # priorities travel through JSON on the server


# -- arguments -------------------------------------------------------------------------------


def _check_limit(value: object, name: str) -> int | None:
    return check_optional_int(value, name, minimum=1)


def _check_key(key: object) -> str | None:
    if key is None:
        return None
    if not isinstance(key, str):
        raise TypeError(
            f"key must be a str or None (keys are shared across machines as text), "
            f"got {type(key).__name__}"
        )
    if not key or len(key) > 200 or not key.isprintable():
        raise ValueError(f"key must be 1 to 200 printable characters or None, got {key!r}")
    return key


def _check_priority(value: object) -> int:
    priority = check_priority(value)
    if abs(priority) > _MAX_PRIORITY:
        raise ValueError(f"priority must be within ±{_MAX_PRIORITY}, got {priority!r}")
    return priority


def _check_on_lost(value: object) -> OnLost:
    if value == "warn" or value == "cancel":
        return value
    raise ValueError(f"on_lost must be 'warn' or 'cancel', got {value!r}")


def _check_timeout(value: object) -> float | None:
    return None if value is None else check_seconds(value, "timeout")


# -- records ---------------------------------------------------------------------------------


class SlotGrant:
    """
    A slot held, from :meth:`SiteOperationLimits.slot` and its siblings.

    ``token`` is the fencing token: it grows with every grant of the limits object, on
    every machine, so a storage system that remembers the largest token it has seen can
    refuse a holder that lost its lease and came back. ``lost`` becomes true when this
    member could not renew the slot's lease in time (Redis unreachable for longer than
    ``lease``, or restarted empty): another machine may hold the slot now.
    """

    __slots__ = {
        "_lost": "Whether the lease was lost (read it as lost).",
        "key": "The key the slot holds, or None.",
        "kind": "The operation's kind.",
        "priority": "The priority it was asked with.",
        "token": "The fencing token: larger for every later grant of the object.",
    }

    def __init__(self, kind: str, key: str | None, priority: int, token: int) -> None:
        self.kind, self.key, self.priority, self.token = kind, key, priority, token
        self._lost = False

    @property
    def lost(self) -> bool:
        """Whether the lease could not be renewed in time (see the class)."""
        return self._lost

    def __repr__(self) -> str:
        lost = " lost" if self._lost else ""
        return f"<SlotGrant {self.kind!r} key={self.key!r} token={self.token}{lost}>"


@frozen(kw_only=True)
class SlotHolder:
    """One slot held, as the server sees it: who, what, on which key, since when."""

    #: The member holding it (its ``member`` name on the site).
    member: str
    #: The operation's kind.
    kind: str
    #: The key it holds, or ``None``.
    key: str | None
    #: The priority it asked with.
    priority: int
    #: Its fencing token.
    token: int
    #: Seconds since it was granted (server time).
    age: float


@frozen(kw_only=True)
class SlotWaiter:
    """One request waiting in line, as the server sees it (in line order)."""

    #: The member waiting.
    member: str
    #: The operation's kind.
    kind: str
    #: The key it asks for, or ``None``.
    key: str | None
    #: Its priority (higher goes first).
    priority: int
    #: Seconds since it entered the line (server time).
    age: float


@frozen(kw_only=True)
class SiteOperationLimitsStatistics:
    """
    A snapshot of one cluster-wide limits object, read from Redis: the limits, every
    holder and waiter on every machine, and this member's own count of each.
    """

    #: The object's name on the site.
    name: str
    #: Operations at once in all, site-wide (``None``: no limit).
    total: int | None
    #: The limit of each kind that has one.
    per_kind: Mapping[str, int]
    #: Operations at once on one key (``None``: no limit).
    per_key: int | None
    #: Slots held on every machine.
    in_use: int
    #: Slots held on every machine, per kind.
    in_use_per_kind: Mapping[str, int]
    #: Every holder, oldest grant first.
    holders: tuple[SlotHolder, ...]
    #: Every waiter, in line order (priority, then arrival at Redis).
    waiters: tuple[SlotWaiter, ...]
    #: This member's tasks and threads waiting in line.
    tasks_waiting: int
    #: Slots this member holds.
    held_here: int


# -- the local side of one entry -------------------------------------------------------------


class _Entry:
    __slots__ = (
        "cancel",
        "grant",
        "id",
        "key",
        "kind",
        "poll_at",
        "priority",
        "renewed_at",
        "signal",
        "state",
    )

    def __init__(self, kind: str, key: str | None, priority: int, signal: Any) -> None:
        self.id = uuid.uuid4().hex
        self.kind, self.key, self.priority = kind, key, priority
        self.signal = signal
        self.state: Literal["waiting", "held", "done"] = "waiting"
        self.grant: SlotGrant | None = None
        self.renewed_at = self.poll_at = time.monotonic()
        self.cancel: Callable[[], None] | None = None  # on_lost="cancel": cancels the body


def _threadsafe_cancel(scope: anyio.CancelScope) -> Callable[[], None]:
    """A function that cancels ``scope`` from any thread (the heartbeat's)."""
    if sniffio.current_async_library() == "trio":
        import trio

        call_soon: Callable[[Callable[[], object]], object] = (
            trio.lowlevel.current_trio_token().run_sync_soon
        )
    else:
        import asyncio

        call_soon = asyncio.get_running_loop().call_soon_threadsafe

    def cancel() -> None:
        with contextlib.suppress(RuntimeError):  # a closed loop: nothing runs any more
            call_soon(scope.cancel)

    return cancel


def _config_args(
    total: int | None, per_kind: Mapping[str, int], per_key: int | None
) -> tuple[str, str, str]:
    return (
        "" if total is None else str(total),
        json.dumps(dict(sorted(per_kind.items()))),
        "" if per_key is None else str(per_key),
    )


def _parse_limits(
    total: str, per_kind: str, per_key: str
) -> tuple[int | None, dict[str, int], int | None]:
    kinds = json.loads(per_kind or "{}")
    return (
        int(total) if total else None,
        {str(k): int(v) for k, v in (kinds.items() if isinstance(kinds, dict) else ())},
        int(per_key) if per_key else None,
    )


# -- the limits object -----------------------------------------------------------------------


class SiteOperationLimits(Participant):
    """
    Limits on operations running at once across every machine of a Redis site: in
    total, per kind and per key, with the meaning of the local
    :class:`~throttlekit.OperationLimits`.

    Made by ``site.operation_limits(name, total=..., per_kind=..., per_key=...)``::

        nas = site.operation_limits("nas", total=8, per_kind={"restore": 1}, per_key=1)
        async with nas.slot("backup", key="vm-17") as grant:    # asyncio or trio
            write_backup(fencing_token=grant.token)
        with nas.slot_blocking("restore", key="vm-3") as grant: # threads
            ...

    **One rule decides who gets a slot**, as locally: a request is granted when it fits
    and no request ahead of it in line shares a limited kind or a limited key with it.
    The line is ordered by ``priority`` (higher first), then by arrival at Redis, across
    all machines; a waiter whose kind or key is full does not hold up later waiters that
    fit. One atomic server-side script takes the total, kind and key counters together.

    **Leases.** Holders and waiters have a lease of the site's ``lease`` seconds, renewed
    by its heartbeat: a machine that dies frees its slots within ``lease``, and a dead
    waiter leaves the line as quickly. **Fencing:** ``grant.token`` grows with every
    grant. **Lost leases:** when the heartbeat cannot renew a holder's lease in time,
    ``grant.lost`` becomes true and a warning is logged; with ``on_lost="cancel"`` the
    body of ``async with slot(...)`` is also cancelled (like ``move_on_after``: the block
    ends quietly, ``grant.lost`` says why), because another machine may hold the slot.

    While Redis is unreachable, waiting goes on (the entry takes its place in line again
    when the server is back) unless ``timeout=`` says how long an outage may last before
    :class:`~throttlekit.SiteUnavailable`; holders keep running.

    It bounds how many operations run at once, site-wide, not how fast. Each slot costs
    two round trips (take and release); it is for operations that last long against a
    round trip (backups, restores, snapshots), not for per-chunk work.
    """

    def __init__(
        self,
        site: RedisSite,
        name: str,
        total: int | None,
        per_kind: Mapping[str, int],
        per_key: int | None,
    ) -> None:
        self._site = site
        self.name = name
        tag = f"{site.namespace}:{{{site.namespace}/slots/{name}}}"
        self._keys = (f"{tag}:config", f"{tag}:entries", f"{tag}:leases", f"{tag}:gone")
        self._channel = f"{tag}:grants"
        self._limits = (total, dict(per_kind), per_key)
        self._write = True  # the next script sets the limits in Redis
        # Whether a script of this object has reached Redis: a member that knew the object
        # and finds it gone knows the server restarted empty (the grace then holds).
        self._known = False
        self._top = 0  # the largest token this member has seen (tokens go on after it)
        self._lock = threading.Lock()
        self._entries: dict[str, _Entry] = {}
        self._drops: set[str] = set()  # released or cancelled, not yet told to the server
        self._sent: tuple[float, list[_Entry], list[str], object] | None = None
        self._stop = threading.Event()
        self._subscribed = threading.Event()
        self._listener: threading.Thread | None = None
        self._lease_ms = str(int(site.lease * 1000))
        # The safety net: a waiter looks again this often if no grant reached it.
        self._poll = min(site.lease / 3, max(site.refresh, 1.0))

    # -- limits --------------------------------------------------------------------------

    @property
    def total(self) -> int | None:
        """Operations at once in all, site-wide (as last seen from Redis)."""
        return self._limits[0]

    @property
    def per_kind(self) -> Mapping[str, int]:
        """The limit of each kind that has one (a copy, as last seen from Redis)."""
        return dict(self._limits[1])

    @property
    def per_key(self) -> int | None:
        """Operations at once on one key, site-wide (as last seen from Redis)."""
        return self._limits[2]

    def set_limits(
        self,
        *,
        total: int | None,
        per_kind: Mapping[str, int] | None = None,
        per_key: int | None = None,
    ) -> None:
        """
        Set all three limits for every member, live: growing grants the waiters that
        now fit at once; shrinking never takes a slot from a holder (new grants wait
        until the holders are within the limits). One round trip. If Redis cannot be
        reached it raises :class:`~throttlekit.SiteUnavailable`, and the new limits are
        written by this member's next script that reaches Redis (its heartbeat's, at the
        latest), unless they are changed again before.
        """
        limits = (
            _check_limit(total, "total"),
            check_limits_per_kind(per_kind, shared=True),
            _check_limit(per_key, "per_key"),
        )
        with self._lock:
            self._limits, self._write = limits, True
        self._call("config", ())

    # -- talking to the server -----------------------------------------------------------

    def _call(self, op: str, args: tuple[str, ...], *, write: bool = False) -> list[str]:
        with self._lock:
            write = write or self._write
            limits = self._limits
        argv = (op, self._channel, self._lease_ms, *_config_args(*limits))
        try:
            result = self._site._scripts.call(
                "slots", self._keys, (*argv, self._write_flag(write), *args)
            )
        except REDIS_ERRORS as error:
            raise site_unavailable(error, f"operation limits {self.name!r}") from error
        out = [as_text(r) for r in result]
        with self._lock:
            self._known = True
            if write and self._limits is limits:
                self._write = False
            self._limits = _parse_limits(out[2], out[3], out[4])
        return out

    def _write_flag(self, write: bool) -> str:
        """
        The script's ``write`` argument: '0' (do not set the limits), '1' (set them: a
        member that has never reached the object) or '2' (set them: a member that has,
        so an object missing on the server means a restart, and the grace holds).
        """
        return "0" if not write else ("2" if self._known else "1")

    def _enter(self, entry: _Entry, nowait: bool) -> str:
        """Enter the line (or look again, keeping the place): 'granted', 'waiting', 'busy'."""
        sent = time.monotonic()
        key = "" if entry.key is None else entry.key
        args = (entry.id, self._site.member, entry.kind, key, str(entry.priority))
        status, token, *_ = self._call("enter", (*args, "1" if nowait else "0"))
        with self._lock:
            if entry.state == "waiting":
                entry.renewed_at = sent
                if status == "granted":
                    self._granted(entry, int(token))
        return status

    def _granted(self, entry: _Entry, token: int) -> None:
        """(Lock held.) The server made ``entry`` a holder."""
        entry.state = "held"
        entry.grant = SlotGrant(entry.kind, entry.key, entry.priority, token)
        self._top = max(self._top, token)
        entry.signal.fire()

    def _release(self, entry: _Entry) -> None:
        """Give the slot (or the place in line) back; never raises."""
        with self._lock:
            if entry.state == "done":  # the site was left: the server was told then
                return
            held = entry.state == "held"
            entry.state = "done"
            self._entries.pop(entry.id, None)
        try:
            self._call("release", (entry.id,))
        except SiteUnavailable as error:
            # The heartbeat tells the server when it is back; meanwhile the lease runs out.
            with self._lock:
                self._drops.add(entry.id)
            logger.log(
                logging.WARNING if held else logging.DEBUG,
                "operation limits %r: could not give a %s back now (the heartbeat will, "
                "or its lease runs out): %s",
                self.name,
                "slot" if held else "place in line",
                error,
            )

    def _lose(self, entry: _Entry, why: str) -> None:
        """(Lock held.) The holder's lease could not be renewed in time."""
        grant = entry.grant
        if grant is None or grant._lost:
            return
        grant._lost = True
        logger.warning(
            "operation limits %r: the slot of %r (key %r, token %d) lost its lease (%s): "
            "another machine may hold it now",
            self.name,
            entry.kind,
            entry.key,
            grant.token,
            why,
        )
        if entry.cancel is not None:
            entry.cancel()

    def _check_leases(self) -> None:
        """Tell holders whose lease ran out; wake waiters whose look is due (real time)."""
        now = time.monotonic()
        with self._lock:
            for entry in self._entries.values():
                if entry.state == "held" and now - entry.renewed_at > self._site.lease:
                    self._lose(entry, "Redis could not be reached in time")
                elif entry.state == "waiting" and now >= entry.poll_at:
                    entry.poll_at = now + self._poll
                    entry.signal.fire()

    # -- the heartbeat (Participant) -----------------------------------------------------

    def commands(self, elapsed: float) -> list[Command]:
        with self._lock:
            entries = [e for e in self._entries.values() if e.state != "done"]
            drops = sorted(self._drops)
            limits, write = self._limits, self._write
            flag, top = self._write_flag(write), str(self._top)
            self._sent = (time.monotonic(), entries, drops, write and limits)
        mine = [
            {
                "i": e.id,
                "k": e.kind,
                "y": "" if e.key is None else e.key,
                "p": e.priority,
                "h": 1 if e.state == "held" else 0,
                "t": str(e.grant.token) if e.grant is not None else "0",
            }
            for e in entries
        ]
        argv = ("renew", self._channel, self._lease_ms, *_config_args(*limits))
        args = (flag, self._site.member, json.dumps(mine), json.dumps(drops), top)
        return [("slots", self._keys, (*argv, *args))]

    def apply(self, results: list[Any]) -> None:
        out = [as_text(r) for r in results[0]]
        answers = json.loads(out[5])
        if self._sent is None:  # pragma: no cover - apply always follows commands
            return
        sent, entries, drops, written = self._sent
        with self._lock:
            self._known = True
            if written and self._limits is written:
                self._write = False
            self._limits = _parse_limits(out[2], out[3], out[4])
            self._drops.difference_update(drops)
            for entry, answer in zip(
                entries, answers if isinstance(answers, list) else [], strict=False
            ):
                words = str(answer).split()
                if entry.state == "done" or words[0] == "gone":
                    continue
                if words[0] == "reclaimed" and entry.state == "held":
                    self._lose(entry, "the server had forgotten it")
                entry.renewed_at = sent
                if entry.state == "waiting" and len(words) > 1:
                    self._granted(entry, int(words[1]))

    def unavailable(self, error: BaseException) -> None:
        self._check_leases()
        with self._lock:  # waiters look at their timeouts
            for entry in self._entries.values():
                if entry.state == "waiting":
                    entry.signal.fire()

    def leave(self) -> list[Command]:
        self._stop.set()
        listener = self._listener
        if listener is not None and listener is not threading.current_thread():
            listener.join(5.0)
        with self._lock:
            ids = sorted({*self._entries, *self._drops})
            for entry in self._entries.values():
                if entry.state == "held":
                    # Its slot goes back to the server now: the holder is told, as when
                    # a lease is lost (and cancelled with on_lost="cancel").
                    self._lose(entry, "the site was left")
                entry.state = "done"
                entry.signal.fire()  # a waiter ends: the site was left while waiting
            self._entries.clear()
            self._drops.clear()
            top = str(self._top)
        argv = ("renew", self._channel, self._lease_ms, *_config_args(*self._limits), "0")
        args = (self._site.member, "[]", json.dumps(ids), top)
        return [("slots", self._keys, (*argv, *args))]

    # -- waking ----------------------------------------------------------------------------

    def _start_listening(self) -> None:
        self._listener = threading.Thread(
            target=self._listen, name=f"throttlekit-slots-{self.name}", daemon=True
        )
        self._listener.start()
        self._subscribed.wait(1.0)  # grants published from now on reach us

    def _listen(self) -> None:
        """Wake local waiters when the server publishes their grants; never raises."""
        backoff = 0.05
        first = True
        while not self._stop.is_set():
            pubsub = None
            try:
                pubsub = self._site.client.pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(self._channel)
                pubsub.get_message(timeout=1.0)  # the subscription's confirmation
                self._subscribed.set()
                if not first:
                    # Grants may have been published while we were away: look now.
                    self._site._wake.set()
                    with self._lock:
                        for entry in self._entries.values():
                            entry.signal.fire()
                first, backoff = False, 0.05
                while not self._stop.is_set():
                    message = pubsub.get_message(timeout=0.2)
                    if message is not None and message.get("type") == "message":
                        self._on_grants(as_text(message["data"]))
                    self._check_leases()
            except Exception as error:
                logger.debug("operation limits %r: listening again: %s", self.name, error)
                self._check_leases()
                self._stop.wait(backoff)
                backoff = min(backoff * 2, self._site.refresh)
            finally:
                if pubsub is not None:
                    with contextlib.suppress(Exception):  # a broken connection
                        pubsub.close()

    def _on_grants(self, data: str) -> None:
        words = data.split()
        with self._lock:
            for i in range(0, len(words) - 1, 2):
                entry = self._entries.get(words[i])
                if entry is not None and entry.state == "waiting":
                    self._granted(entry, int(words[i + 1]))

    # -- slots -----------------------------------------------------------------------------

    def _checked(self, kind: object, key: object, priority: object) -> tuple[str, str | None, int]:
        self._site._require_started()
        if self._stop.is_set():
            raise RuntimeError(f"operation limits {self.name!r}: the site was left")
        return check_kind(kind, shared=True), _check_key(key), _check_priority(priority)

    def _add(self, entry: _Entry) -> None:
        with self._lock:
            self._entries[entry.id] = entry

    def _held(self, entry: _Entry) -> SlotGrant | None:
        with self._lock:
            entry.signal.arm()
            return entry.grant if entry.state == "held" else None

    @asynccontextmanager
    async def slot(
        self,
        kind: str,
        key: str | None = None,
        priority: int = 0,
        *,
        timeout: float | None = None,
        on_lost: OnLost = "warn",
    ) -> AsyncIterator[SlotGrant]:
        """
        Wait for a slot for an operation of ``kind`` (on ``key``), site-wide, and hold it
        for the ``async with`` block; yields the :class:`SlotGrant` (its fencing token).

        Higher ``priority`` goes first, then arrival at Redis. ``timeout``: how long
        Redis may stay unreachable while waiting before
        :class:`~throttlekit.SiteUnavailable` (``None``, the default: wait until it is
        back, then take the place in line again). It is not a bound on the wait for a
        slot: use ``anyio.fail_after`` for that. ``on_lost``: ``"warn"`` (log, set
        ``grant.lost``, go on) or ``"cancel"`` (also cancel the block). Cancelling a
        waiter removes it from the line; a grant that raced with the cancellation is
        given back at once.
        """
        kind, key, priority = self._checked(kind, key, priority)
        limit = _check_timeout(timeout)
        lost = _check_on_lost(on_lost)
        await anyio.lowlevel.checkpoint_if_cancelled()
        entry = _Entry(kind, key, priority, task_signal())
        self._add(entry)
        try:
            grant = await self._wait_async(entry, limit)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(self._release, entry)
            raise
        try:
            if lost == "cancel":
                with anyio.CancelScope() as scope:
                    with self._lock:
                        entry.cancel = _threadsafe_cancel(scope)
                        if grant._lost:
                            scope.cancel()
                    yield grant
            else:
                yield grant
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(self._release, entry)

    def _look(self, entry: _Entry, timeout: float | None, down_since: float | None) -> float | None:
        """
        Enter the line, or look again keeping the place (in a worker thread for tasks):
        when Redis has been unreachable since ``down_since`` for ``timeout`` (real
        seconds: an outage is real time, also on a test's virtual clock), raise.
        """
        entry.poll_at = time.monotonic() + self._poll
        if entry.state == "done":
            raise RuntimeError(f"operation limits {self.name!r}: the site was left while waiting")
        try:
            self._enter(entry, False)
        except SiteUnavailable:
            now = time.monotonic()
            down_since = now if down_since is None else down_since
            if timeout is not None and now - down_since >= timeout:
                raise
            return down_since
        return None

    async def _wait_async(self, entry: _Entry, timeout: float | None) -> SlotGrant:
        # The waits have no timer of their own: grants fire the signal, and so does the
        # listener thread when the safety-net look is due (no virtual-time busy loop).
        down_since: float | None = None
        while True:
            down_since = await anyio.to_thread.run_sync(self._look, entry, timeout, down_since)
            grant = self._held(entry)
            if grant is not None:
                await anyio.lowlevel.checkpoint()
                return grant
            await entry.signal.wait(math.inf)
            grant = self._held(entry)
            if grant is not None:
                return grant

    @contextmanager
    def slot_blocking(
        self,
        kind: str,
        key: str | None = None,
        priority: int = 0,
        *,
        timeout: float | None = None,
    ) -> Iterator[SlotGrant]:
        """
        :meth:`slot` for threads: block the calling thread until a slot is free, hold it
        for the ``with`` block. A thread cannot be cancelled from outside: a long body
        should look at ``grant.lost`` now and then. ``timeout`` as in :meth:`slot`.
        """
        kind, key, priority = self._checked(kind, key, priority)
        limit = _check_timeout(timeout)
        entry = _Entry(kind, key, priority, ThreadSignal())
        self._add(entry)
        try:
            grant = self._wait_blocking(entry, limit)
        except BaseException:
            self._release(entry)
            raise
        try:
            yield grant
        finally:
            self._release(entry)

    def _wait_blocking(self, entry: _Entry, timeout: float | None) -> SlotGrant:
        down_since: float | None = None
        while True:
            down_since = self._look(entry, timeout, down_since)
            grant = self._held(entry)
            if grant is not None:
                return grant
            entry.signal.wait(self._poll)
            grant = self._held(entry)
            if grant is not None:
                return grant

    @contextmanager
    def slot_nowait(
        self, kind: str, key: str | None = None, priority: int = 0
    ) -> Iterator[SlotGrant]:
        """
        Take a slot now, or raise :class:`anyio.WouldBlock` where :meth:`slot` would wait
        (it does not fit, or a request ahead in line shares a limited kind or key with
        it). One round trip (it blocks the calling thread for it);
        :class:`~throttlekit.SiteUnavailable` if Redis cannot be reached.
        """
        kind, key, priority = self._checked(kind, key, priority)
        entry = _Entry(kind, key, priority, ThreadSignal())
        # Known to the heartbeat only once granted: a renew sent before the answer would
        # put an entry the server has never seen into the line.
        try:
            status = self._enter(entry, True)
        except BaseException:
            self._release(entry)  # it may have been granted before the connection broke
            raise
        grant = entry.grant
        if status != "granted" or grant is None:
            entry.state = "done"
            raise anyio.WouldBlock
        self._add(entry)
        try:
            yield grant
        finally:
            self._release(entry)

    # -- statistics --------------------------------------------------------------------------

    def statistics(self) -> SiteOperationLimitsStatistics:
        """
        A snapshot from Redis (one round trip): the limits, every holder and waiter on
        every machine, and this member's own. :class:`~throttlekit.SiteUnavailable` if
        Redis cannot be reached. It only reads.
        """
        try:
            status = read_slots(self._site.client, self._site.namespace, self.name)
        except REDIS_ERRORS as error:
            raise site_unavailable(error, f"operation limits {self.name!r}") from error
        with self._lock:
            waiting = sum(e.state == "waiting" for e in self._entries.values())
            held = sum(e.state == "held" for e in self._entries.values())
        return SiteOperationLimitsStatistics(
            name=self.name,
            total=status["total"],
            per_kind=status["per_kind"],
            per_key=status["per_key"],
            in_use=len(status["holders"]),
            in_use_per_kind=status["in_use_per_kind"],
            holders=tuple(SlotHolder(**h) for h in status["holders"]),
            waiters=tuple(SlotWaiter(**w) for w in status["waiters"]),
            tasks_waiting=waiting,
            held_here=held,
        )

    def __repr__(self) -> str:
        total, per_kind, per_key = self._limits
        return (
            f"<SiteOperationLimits {self.name!r} total={total} per_kind={per_kind} "
            f"per_key={per_key}>"
        )


# -- reading and making ----------------------------------------------------------------------


def read_slots(client: Any, namespace: str, name: str) -> dict[str, Any]:
    """
    One limits object as Redis holds it, without joining the site: the limits, the
    holders and the waiters (in line order) with their ages in seconds (server time);
    entries whose lease ran out are left out. Plain data (JSON-ready).
    """
    tag = f"{namespace}:{{{namespace}/slots/{name}}}"
    t = client.time()
    now_ms = int(t[0]) * 1000 + int(t[1]) // 1000
    conf = {as_text(k): as_text(v) for k, v in client.hgetall(f"{tag}:config").items()}
    leases = {
        as_text(m): float(s) for m, s in client.zrange(f"{tag}:leases", 0, -1, withscores=True)
    }
    raw = {as_text(k): json.loads(as_text(v)) for k, v in client.hgetall(f"{tag}:entries").items()}
    total, per_kind, per_key = _parse_limits(
        conf.get("total", ""), conf.get("per_kind", "{}"), conf.get("per_key", "")
    )
    holders: list[dict[str, Any]] = []
    waiters: list[tuple[int, int, dict[str, Any]]] = []
    kinds: dict[str, int] = {}
    for entry_id, e in raw.items():
        if leases.get(entry_id, -math.inf) < now_ms:
            continue
        row: dict[str, Any] = {
            "member": str(e["m"]),
            "kind": str(e["k"]),
            "key": str(e["y"]) or None,
            "priority": int(e["p"]),
            "age": max(now_ms - float(e["a"]), 0.0) / 1000,
        }
        if e["h"] == 1:
            holders.append({**row, "token": int(e["t"])})
            kinds[row["kind"]] = kinds.get(row["kind"], 0) + 1
        else:
            waiters.append((-int(e["p"]), int(e["s"]), row))
    waiters.sort(key=lambda w: (w[0], w[1]))
    holders.sort(key=lambda h: h["token"])
    return {
        "name": name,
        "total": total,
        "per_kind": per_kind,
        "per_key": per_key,
        "in_use_per_kind": kinds,
        "holders": holders,
        "waiters": [w[2] for w in waiters],
    }


def read_all_slots(client: Any, namespace: str) -> list[dict[str, Any]]:
    """Every limits object of the site, as :func:`read_slots` reads one, by name."""
    check_name(namespace, "namespace")
    pattern = f"{namespace}:{{{namespace}/slots/*}}:config"
    names = sorted(
        key[len(namespace) + 2 : key.rindex("}")].split("/", 2)[2]
        for key in (as_text(k) for k in client.scan_iter(match=pattern, count=1000))
    )
    return [read_slots(client, namespace, name) for name in names]


_REGISTRY_LOCK: Final = threading.Lock()


def operation_limits(
    site: RedisSite,
    name: str,
    *,
    total: int | None,
    per_kind: Mapping[str, int] | None = None,
    per_key: int | None = None,
) -> SiteOperationLimits:
    """
    The cluster-wide limits object ``name`` of ``site`` (what
    ``site.operation_limits(...)`` returns). The limits are stored in Redis for every
    member: asking again (here or on another machine) with other limits changes them
    for everybody, as :meth:`SiteOperationLimits.set_limits` does. Asking twice for one
    name in one site returns the same object.
    """
    site._require_started()
    check_name(name, "name")
    limits = (
        _check_limit(total, "total"),
        check_limits_per_kind(per_kind, shared=True),
        _check_limit(per_key, "per_key"),
    )
    with _REGISTRY_LOCK:
        registry: dict[str, SiteOperationLimits] = site.__dict__.setdefault("_slot_limits", {})
        existing = registry.get(name)
        if existing is None:
            site._scripts.register("slots", SLOTS)
            existing = registry[name] = SiteOperationLimits(site, name, *limits)
            site.add(existing)
            existing._start_listening()
        with existing._lock:
            existing._limits, existing._write = limits, True
    try:
        existing._call("config", ())
    except SiteUnavailable as error:  # written by the first script that reaches Redis
        logger.debug("operation limits %r: not published yet: %s", name, error)
    return existing
