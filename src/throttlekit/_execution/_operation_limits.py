"""
OperationLimits: how many operations of each kind, and on each key, may run at once.

CloudStack runs backups of different VMs in parallel but restores one at a time, and never
two operations on the same VM; a backup agent wants "at most 4 operations, at most 1
restore, at most 1 per volume" with urgent work first. One slot checks all three counters
at once and takes them together, so acquiring several limits never deadlocks (there is no
order of acquisition to get wrong) and a slot never holds one counter while waiting for
another.
"""

from __future__ import annotations

import bisect
import itertools
import warnings
from collections.abc import AsyncIterator, Hashable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from typing import final

import anyio
from attrs import frozen

from .._checks import check_kind, check_limits_per_kind, check_optional_int, check_priority

__all__ = ["OperationLimits", "OperationLimitsStatistics"]


def _check_limit(value: object, name: str) -> int | None:
    return check_optional_int(value, name, minimum=1)


@frozen(kw_only=True)
class OperationLimitsStatistics:
    """
    A snapshot of :class:`OperationLimits`, from its ``statistics()``: the limits as
    they are now, the slots held, and the tasks in line.

    The deprecated ``waiting`` still reads ``tasks_waiting``, for one release.
    """

    #: Operations at once in all (``None``: no limit).
    total: int | None
    #: The limit of each kind that has its own (kinds without one share ``total``).
    per_kind: Mapping[str, int]
    #: Operations at once on one key (``None``: no limit).
    per_key: int | None
    #: Slots held now.
    in_use: int
    #: Slots held now, per kind.
    in_use_per_kind: Mapping[str, int]
    #: Tasks waiting in line for a slot (anyio's name; the deprecated ``waiting`` still
    #: reads it, for one release).
    tasks_waiting: int

    @property
    def waiting(self) -> int:
        """Deprecated alias of :attr:`tasks_waiting`, kept for one release."""
        warnings.warn(
            "OperationLimitsStatistics.waiting is deprecated; use tasks_waiting",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.tasks_waiting


class _Waiter:
    __slots__ = ("event", "granted", "key", "kind", "order")

    def __init__(self, kind: str, key: Hashable | None, order: tuple[int, int]) -> None:
        self.kind, self.key, self.order = kind, key, order
        self.granted = False
        self.event = anyio.Event()


@final
class OperationLimits:
    """
    Limits on operations running at once: in total, per kind, and per key.

    >>> limits = OperationLimits(total=4, per_kind={"restore": 1}, per_key=1)
    >>> async def back_up(vm):
    ...     async with limits.slot("backup", key=vm):   # waits for a free slot
    ...         ...                                    # at most 4 in all, 1 per VM

    A kind with limit 1 is sequential (restores, one after another); kinds without their
    own limit share ``total`` (backups, deletes, in parallel). ``per_key`` bounds
    operations on one key (one VM, one volume). Limits can change at any time:
    shrinking never cancels holders, growing wakes exactly the waiters that now fit.
    Cancelling a waiter, or a holder, never leaks a slot.

    One rule decides who gets a slot, for :meth:`slot` and :meth:`slot_nowait` alike:
    **a request is granted when it fits and no request ahead of it in line shares a
    limited kind or a limited key with it.** The line is ordered by ``priority`` (higher
    first), then by arrival; a kind is limited when it has its own limit, a key when
    ``per_key`` is set. So operations of one limited kind, or on one key, start first
    come first served (a restore of vm2 does not overtake a restore of vm1 that waits for
    vm1 to be free), while a request that shares no limited counter with anyone waiting
    goes past them (a waiting restore does not hold up a backup of another VM, nor one
    backup another when backups have no limit of their own). :meth:`slot_nowait` raises
    :class:`anyio.WouldBlock` exactly where :meth:`slot` would wait.

    It bounds how many operations run, not how fast: see :class:`RateLimiter` for that.
    Use it from one event loop (asyncio or trio); it is not for threads.
    """

    def __init__(
        self,
        total: int | None = None,
        per_kind: Mapping[str, int] | None = None,
        per_key: int | None = None,
    ) -> None:
        self._total = _check_limit(total, "total")
        self._per_kind = check_limits_per_kind(per_kind)
        self._per_key = _check_limit(per_key, "per_key")
        self._in_use = 0
        self._kind_in_use: dict[str, int] = {}
        self._key_in_use: dict[Hashable, int] = {}
        self._waiters: list[_Waiter] = []  # sorted by (-priority, arrival)
        self._arrival = itertools.count()

    # -- limits ----------------------------------------------------------------------------

    @property
    def total(self) -> int | None:
        """Operations at once in all (``None``: no limit). Settable live."""
        return self._total

    @total.setter
    def total(self, value: int | None) -> None:
        self._total = _check_limit(value, "total")
        self._wake()

    @property
    def per_key(self) -> int | None:
        """Operations at once on one key (``None``: no limit). Settable live."""
        return self._per_key

    @per_key.setter
    def per_key(self, value: int | None) -> None:
        self._per_key = _check_limit(value, "per_key")
        self._wake()

    @property
    def per_kind(self) -> Mapping[str, int]:
        """The limit of each kind that has one (a copy; change it with set_kind_limit)."""
        return dict(self._per_kind)

    def set_kind_limit(self, kind: str, limit: int | None) -> None:
        """Set (or with ``None`` remove) the limit of one kind, live."""
        kind = check_kind(kind)
        checked = _check_limit(limit, f"per_kind[{kind!r}]")
        if checked is None:
            self._per_kind.pop(kind, None)
        else:
            self._per_kind[kind] = checked
        self._wake()

    # -- slots -----------------------------------------------------------------------------

    def _fits(self, kind: str, key: Hashable | None) -> bool:
        if self._total is not None and self._in_use >= self._total:
            return False
        limit = self._per_kind.get(kind)
        if limit is not None and self._kind_in_use.get(kind, 0) >= limit:
            return False
        return not (
            key is not None
            and self._per_key is not None
            and self._key_in_use.get(key, 0) >= self._per_key
        )

    def _take(self, kind: str, key: Hashable | None) -> None:
        self._in_use += 1
        self._kind_in_use[kind] = self._kind_in_use.get(kind, 0) + 1
        if key is not None:
            self._key_in_use[key] = self._key_in_use.get(key, 0) + 1

    def _release(self, kind: str, key: Hashable | None) -> None:
        self._in_use -= 1
        left = self._kind_in_use[kind] - 1
        if left:
            self._kind_in_use[kind] = left
        else:
            del self._kind_in_use[kind]
        if key is not None:
            left = self._key_in_use[key] - 1
            if left:
                self._key_in_use[key] = left
            else:
                del self._key_in_use[key]
        self._wake()

    def _wake(self) -> None:
        """
        Grant, in line order, every waiter that fits now and shares neither its kind nor
        its key with a waiter ahead of it that stays in line.
        """
        kept: list[_Waiter] = []
        kinds: set[str] = set()  # limited kinds that a waiter kept in line needs
        keys: set[Hashable] = set()  # keys that a waiter kept in line needs (with per_key)
        for w in self._waiters:
            overtakes = w.kind in kinds or (w.key is not None and w.key in keys)
            if not overtakes and self._fits(w.kind, w.key):
                self._take(w.kind, w.key)
                w.granted = True
                w.event.set()
                continue
            kept.append(w)
            if w.kind in self._per_kind:
                kinds.add(w.kind)
            if w.key is not None and self._per_key is not None:
                keys.add(w.key)
        self._waiters = kept

    def _grantable(self, kind: str, key: Hashable | None, priority: int) -> bool:
        """Whether a request would be granted at once: the rule of :meth:`_wake`."""
        if not self._fits(kind, key):
            return False
        for w in self._waiters:
            if w.order[0] > -priority:
                break  # the rest of the line is behind this request
            if (kind == w.kind and kind in self._per_kind) or (
                key is not None and key == w.key and self._per_key is not None
            ):
                return False
        return True

    def _check_key(self, key: object) -> Hashable | None:
        if key is None:
            return None
        try:
            hash(key)
        except TypeError as e:
            raise TypeError(f"key must be hashable, got {type(key).__name__}") from e
        return key

    @asynccontextmanager
    async def slot(
        self, kind: str, key: Hashable | None = None, priority: int = 0
    ) -> AsyncIterator[None]:
        """
        Wait for a slot for an operation of ``kind`` (on ``key``) and hold it for the
        ``async with`` block. Higher ``priority`` waiters are served first; see the class
        for the one rule that decides when a slot is granted.
        """
        kind = check_kind(kind)
        key = self._check_key(key)
        priority = check_priority(priority)
        await anyio.lowlevel.checkpoint_if_cancelled()
        if self._grantable(kind, key, priority):
            self._take(kind, key)
        else:
            w = _Waiter(kind, key, (-priority, next(self._arrival)))
            bisect.insort(self._waiters, w, key=lambda x: x.order)
            try:
                await w.event.wait()
            except BaseException:
                if w.granted:
                    self._release(kind, key)
                else:
                    self._waiters.remove(w)
                raise
        try:
            yield
        finally:
            self._release(kind, key)

    @contextmanager
    def slot_nowait(
        self, kind: str, key: Hashable | None = None, priority: int = 0
    ) -> Iterator[None]:
        """
        Take a slot now, or raise :class:`anyio.WouldBlock` where :meth:`slot` (with the
        same arguments) would wait: when it does not fit, or when a request ahead of it
        in line shares a limited kind or key with it. Hold it for the ``with`` block.
        """
        kind = check_kind(kind)
        key = self._check_key(key)
        priority = check_priority(priority)
        if not self._grantable(kind, key, priority):
            raise anyio.WouldBlock
        self._take(kind, key)
        try:
            yield
        finally:
            self._release(kind, key)

    def statistics(self) -> OperationLimitsStatistics:
        """
        A snapshot: the limits, slots in use (in all and per kind), tasks waiting. It only
        reads: it never grants or wakes anyone.
        """
        return OperationLimitsStatistics(
            total=self._total,
            per_kind=dict(self._per_kind),
            per_key=self._per_key,
            in_use=self._in_use,
            in_use_per_kind=dict(self._kind_in_use),
            tasks_waiting=len(self._waiters),
        )
