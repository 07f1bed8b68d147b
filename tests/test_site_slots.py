"""
Cluster-wide operation slots against a real redis-server: the rule of the local
OperationLimits across members (priority, then arrival; a waiter whose kind or key is
full does not hold up later ones that fit), fencing tokens, live limits, statistics and
bad input. Several members of one site live in this process (distinct member names);
test_site_slots_faults.py kills processes and the server.
"""

from __future__ import annotations

import contextlib
import random
import threading
from collections.abc import Iterator
from typing import Any

import anyio
import anyio.lowlevel
import pytest

redis = pytest.importorskip("redis")

from _procs import WAIT, wait_until  # noqa: E402
from _redis_server import RedisServer, redis_server_fixture, sites  # noqa: E402, F401
from throttlekit import OperationLimits  # noqa: E402
from throttlekit._site._slots import SiteOperationLimits, _threadsafe_cancel  # noqa: E402
from throttlekit.redis import RedisSite  # noqa: E402


class Holder:
    """A thread that takes a slot (slot_blocking), notes the grant, holds until told."""

    def __init__(
        self,
        limits: SiteOperationLimits,
        kind: str,
        key: str | None = None,
        priority: int = 0,
        log: list[str] | None = None,
        name: str = "",
    ) -> None:
        self.limits = limits
        self.args = (kind, key, priority)
        self.log = log if log is not None else []
        self.name = name or f"{kind}/{key}/{priority}"
        self.granted = threading.Event()
        self.go = threading.Event()
        self.grant: Any = None
        self.errors: list[BaseException] = []
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        try:
            with self.limits.slot_blocking(*self.args) as grant:
                self.grant = grant
                self.log.append(self.name)
                self.granted.set()
                self.go.wait(WAIT)
        except BaseException as error:  # recorded: the test fails on it
            self.errors.append(error)

    def release(self) -> None:
        self.go.set()
        self.thread.join(WAIT)
        assert not self.thread.is_alive()
        assert self.errors == []


@contextlib.contextmanager
def real_time_limit(seconds: float = WAIT) -> Iterator[None]:
    """
    Fail (never hang) when the block takes more than ``seconds`` of real time. Not
    ``fail_after``: with a real server, tasks wait for real I/O, and a virtual clock
    jumps to the next timer whenever they all do.
    """
    with anyio.CancelScope() as scope:
        timer = threading.Timer(seconds, _threadsafe_cancel(scope))
        timer.start()
        try:
            yield
        finally:
            timer.cancel()
    if scope.cancelled_caught:
        pytest.fail(f"not within {seconds} real seconds")


def waiting(limits: SiteOperationLimits) -> int:
    return len(limits.statistics().waiters)


def enqueue(limits: SiteOperationLimits, *args: Any, **kwargs: Any) -> Holder:
    """A Holder that is in line at the server when this returns."""
    before = waiting(limits)
    holder = Holder(limits, *args, **kwargs)
    wait_until(lambda: waiting(limits) == before + 1 or holder.granted.is_set(), "in line")
    return holder


def test_total_kind_and_key_are_taken_together(redis_server: RedisServer) -> None:
    with sites(redis_server, 2) as (a, b):
        la = a.operation_limits("nas", total=3, per_kind={"restore": 1}, per_key=1)
        lb = b.operation_limits("nas", total=3, per_kind={"restore": 1}, per_key=1)
        with la.slot_nowait("restore", key="vm1") as g1:
            with pytest.raises(anyio.WouldBlock):  # the kind is full, on another member
                lb.slot_nowait("restore", key="vm2").__enter__()
            with pytest.raises(anyio.WouldBlock):  # the key is full
                lb.slot_nowait("backup", key="vm1").__enter__()
            with lb.slot_nowait("backup", key="vm2") as g2, lb.slot_nowait("backup") as g3:
                assert g1.token < g2.token < g3.token
                with pytest.raises(anyio.WouldBlock):  # the total is full
                    la.slot_nowait("backup").__enter__()
                stats = la.statistics()
                assert stats.in_use == 3
                assert stats.in_use_per_kind == {"restore": 1, "backup": 2}
                assert [(h.member, h.kind, h.key) for h in stats.holders] == [
                    ("m0", "restore", "vm1"),
                    ("m1", "backup", "vm2"),
                    ("m1", "backup", None),
                ]
                assert stats.held_here == 1 and lb.statistics().held_here == 2
        assert la.statistics().in_use == 0  # nothing leaked, WouldBlock took nothing


def test_priority_then_arrival_across_members(redis_server: RedisServer) -> None:
    with sites(redis_server, 3) as members:
        limits = [s.operation_limits("nas", total=1) for s in members]
        log: list[str] = []
        first = Holder(limits[0], "backup", log=log, name="first")
        assert first.granted.wait(WAIT)
        # 20 waiters on three members; a high-priority one arrives last and goes next.
        line = [
            enqueue(limits[i % 3], "backup", f"vm{i}", 0, log=log, name=f"w{i}") for i in range(19)
        ]
        urgent = enqueue(limits[1], "backup", "vm-urgent", 5, log=log, name="urgent")
        assert [w.kind for w in limits[2].statistics().waiters] == ["backup"] * 20
        assert limits[2].statistics().waiters[0].priority == 5
        first.release()
        for holder in [urgent, *line]:
            assert holder.granted.wait(WAIT)
            holder.release()
        assert log == ["first", "urgent", *(f"w{i}" for i in range(19))]


def test_a_waiter_whose_kind_is_full_does_not_block_later_ones(
    redis_server: RedisServer,
) -> None:
    with sites(redis_server, 2) as (a, b):
        la = a.operation_limits("nas", total=4, per_kind={"restore": 1}, per_key=1)
        lb = b.operation_limits("nas", total=4, per_kind={"restore": 1}, per_key=1)
        restore = Holder(la, "restore", "vm1")
        assert restore.granted.wait(WAIT)
        second = enqueue(lb, "restore", "vm2")  # the kind is full: waits
        with lb.slot_nowait("backup", key="vm3"):  # shares nothing limited: goes past
            backup = Holder(la, "backup", "vm4")
            assert backup.granted.wait(WAIT)
        # A restore that would fit by the key still queues behind the restore ahead,
        # unless it comes first by priority.
        with pytest.raises(anyio.WouldBlock):
            la.slot_nowait("restore", key="vm5").__enter__()
        assert not second.granted.is_set()
        restore.release()
        assert second.granted.wait(WAIT)
        second.release()
        backup.release()
        assert la.statistics().in_use == 0


def test_nowait_behind_a_waiter_that_shares_a_limited_kind(redis_server: RedisServer) -> None:
    """It fits, but a waiter ahead needs the same limited kind: WouldBlock, as locally."""
    with sites(redis_server, 2) as (a, b):
        la = a.operation_limits("nas", total=4, per_kind={"restore": 2}, per_key=1)
        lb = b.operation_limits("nas", total=4, per_kind={"restore": 2}, per_key=1)
        with la.slot_nowait("backup", key="vm1"):
            w = enqueue(lb, "restore", "vm1")  # the key is full: it waits
            with pytest.raises(anyio.WouldBlock):
                la.slot_nowait("restore", key="vm2").__enter__()
            with la.slot_nowait("restore", key="vm2", priority=1):  # ahead of it: goes
                pass
        assert w.granted.wait(WAIT)
        w.release()


def test_same_outcomes_as_the_local_limits(redis_server: RedisServer) -> None:
    """Random slot_nowait/release sequences: the site and the local object agree."""
    rng = random.Random(7)
    with sites(redis_server, 2, heartbeat=False) as members:
        site = [s.operation_limits("nas", total=3, per_kind={"r": 1}, per_key=2) for s in members]
        local = OperationLimits(total=3, per_kind={"r": 1}, per_key=2)
        held: list[tuple[Any, Any]] = []
        for _ in range(150):
            if held and rng.random() < 0.4:
                a, b = held.pop(rng.randrange(len(held)))
                a.__exit__(None, None, None)
                b.__exit__(None, None, None)
                continue
            kind = rng.choice(["r", "b", "d"])
            key = rng.choice([None, "k1", "k2"])
            remote = rng.choice(site).slot_nowait(kind, key=key)
            here = local.slot_nowait(kind, key=key)
            outcomes = []
            for cm in (remote, here):
                try:
                    cm.__enter__()
                    outcomes.append(True)
                except anyio.WouldBlock:
                    outcomes.append(False)
            assert outcomes[0] == outcomes[1], (kind, key)
            if outcomes[0]:
                held.append((remote, here))
            assert site[0].statistics().in_use == local.statistics().in_use
        for a, b in held:
            a.__exit__(None, None, None)
            b.__exit__(None, None, None)
        assert site[1].statistics().in_use == 0


def test_set_limits_live(redis_server: RedisServer) -> None:
    with sites(redis_server, 2) as (a, b):
        la = a.operation_limits("nas", total=1)
        lb = b.operation_limits("nas", total=1)
        first = Holder(la, "backup")
        assert first.granted.wait(WAIT)
        waiters = [enqueue(lb, "backup") for _ in range(3)]
        # Growing grants the waiters that now fit, at once, on every member.
        lb.set_limits(total=3)
        for w in waiters[:2]:
            assert w.granted.wait(WAIT)
        assert not waiters[2].granted.is_set()
        wait_until(lambda: la.total == 3, "the other member sees the new limit")
        # Shrinking keeps the holders; new grants wait until they are within it.
        la.set_limits(total=1, per_kind={"backup": 5})
        assert la.statistics().in_use == 3
        first.release()
        waiters[0].release()
        assert not waiters[2].granted.is_set()
        waiters[1].release()
        assert waiters[2].granted.wait(WAIT)
        waiters[2].release()
        assert lb.statistics().per_kind == {"backup": 5}


def test_asking_again_returns_the_same_object_and_sets_the_limits(
    redis_server: RedisServer,
) -> None:
    with sites(redis_server, 2) as (a, b):
        first = a.operation_limits("nas", total=2)
        assert a.operation_limits("nas", total=5, per_key=1) is first
        assert first.total == 5 and first.per_key == 1
        other = b.operation_limits("nas", total=5, per_key=1)
        assert other is not first and other.statistics().total == 5


def test_tokens_grow_across_a_restart(redis_server: RedisServer) -> None:
    with sites(redis_server, 1, refresh=0.1, lease=0.3) as (a,):
        limits = a.operation_limits("nas", total=1)
        tokens = []
        for _ in range(3):
            with limits.slot_nowait("backup") as grant:
                tokens.append(grant.token)
        redis_server.restart_empty()
        limits.set_limits(total=1)  # it knew the object: nothing is granted for one lease

        def take() -> bool:
            try:
                with limits.slot_nowait("backup") as grant:
                    tokens.append(grant.token)
            except anyio.WouldBlock:
                return False
            return True

        wait_until(take, "a grant once the grace after the restart is over")
        assert tokens == sorted(tokens) and len(set(tokens)) == 4


@pytest.mark.anyio
async def test_async_slots_never_exceed_the_limits(redis_server: RedisServer) -> None:
    """Tasks on two members; some are cancelled at random moments; nothing leaks."""
    rng = random.Random(3)
    with sites(redis_server, 2) as members:
        limits = [s.operation_limits("nas", total=2, per_kind={"r": 1}, per_key=1) for s in members]
        running: dict[str, int] = {}
        peaks = {"total": 0, "r": 0, "key": 0}
        done = 0

        async def work(i: int) -> None:
            nonlocal done
            kind = "r" if i % 3 == 0 else "b"
            key = f"vm{i % 4}"
            async with limits[i % 2].slot(kind, key=key, priority=i % 2) as grant:
                assert grant.kind == kind and grant.key == key
                assert grant.token > 0 and not grant.lost
                running[kind] = running.get(kind, 0) + 1
                running[key] = running.get(key, 0) + 1
                total = running.get("r", 0) + running.get("b", 0)
                peaks["total"] = max(peaks["total"], total)
                peaks["r"] = max(peaks["r"], running.get("r", 0))
                peaks["key"] = max(peaks["key"], running[key])
                try:
                    for _ in range(20):
                        await anyio.lowlevel.checkpoint()
                finally:
                    running[kind] -= 1
                    running[key] -= 1
            done += 1

        with real_time_limit():
            async with anyio.create_task_group() as tg:
                for i in range(30):
                    scope = anyio.CancelScope()

                    async def run(i: int = i, scope: anyio.CancelScope = scope) -> None:
                        with scope:
                            await work(i)

                    tg.start_soon(run)
                    if rng.random() < 0.3:
                        # a random moment: the task may be entering, in line, or holding
                        for _ in range(rng.randrange(200)):
                            await anyio.lowlevel.checkpoint()
                        scope.cancel()
        assert peaks == {"total": 2, "r": 1, "key": 1}
        assert done > 0
        stats = limits[0].statistics()
        assert stats.in_use == 0 and stats.waiters == ()
        assert stats.tasks_waiting == 0 and limits[1].statistics().tasks_waiting == 0


@pytest.mark.anyio
async def test_a_cancelled_waiter_leaves_the_line(redis_server: RedisServer) -> None:
    with sites(redis_server, 2) as (a, b):
        la, lb = a.operation_limits("nas", total=1), b.operation_limits("nas", total=1)
        with la.slot_nowait("backup"), real_time_limit():
            with anyio.CancelScope() as scope:

                async def wait_then_cancel() -> None:
                    await anyio.to_thread.run_sync(wait_until, lambda: waiting(la) == 1, "in line")
                    scope.cancel()

                async with anyio.create_task_group() as tg:
                    tg.start_soon(wait_then_cancel)
                    async with lb.slot("backup"):
                        pytest.fail("granted while the slot is held")  # pragma: no cover
            assert scope.cancelled_caught
            assert waiting(la) == 0
        # The slot it would have had is free: nothing was lost.
        with lb.slot_nowait("backup"):
            pass


BAD: list[tuple[dict[str, Any], type[Exception], str]] = [
    ({"total": 0}, ValueError, "total"),
    ({"total": -1}, ValueError, "total"),
    ({"total": 1.5}, TypeError, "total"),
    ({"total": True}, TypeError, "total"),
    ({"total": 1, "per_kind": {"r": 0}}, ValueError, "per_kind"),
    ({"total": 1, "per_kind": [("r", 1)]}, TypeError, "per_kind"),
    ({"total": 1, "per_kind": {"": 1}}, ValueError, "kind"),
    ({"total": 1, "per_key": 0}, ValueError, "per_key"),
    ({"total": 1, "per_key": "1"}, TypeError, "per_key"),
]


@pytest.mark.parametrize(("kwargs", "error", "word"), BAD)
def test_bad_limits(
    redis_server: RedisServer, kwargs: dict[str, Any], error: type[Exception], word: str
) -> None:
    with sites(redis_server, 1, heartbeat=False) as (a,):
        with pytest.raises(error, match=word):
            a.operation_limits("nas", **kwargs)
        limits = a.operation_limits("nas", total=1)
        with pytest.raises(error, match=word):
            limits.set_limits(**{"total": 1, **kwargs})
        assert limits.total == 1


BAD_SLOT: list[tuple[tuple[Any, ...], dict[str, Any], type[Exception], str]] = [
    ((1,), {}, TypeError, "kind"),
    (("",), {}, ValueError, "kind"),
    (("b", 3), {}, TypeError, "key"),
    (("b", ""), {}, ValueError, "key"),
    (("b", None, 1.5), {}, TypeError, "priority"),
    (("b", None, 10**13), {}, ValueError, "priority"),
    (("b",), {"timeout": -1}, ValueError, "timeout"),
    (("b",), {"timeout": "x"}, TypeError, "timeout"),
    (("b",), {"on_lost": "explode"}, ValueError, "on_lost"),
]


@pytest.mark.anyio
@pytest.mark.parametrize(("args", "kwargs", "error", "word"), BAD_SLOT)
async def test_bad_slot_arguments(
    redis_server: RedisServer,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    error: type[Exception],
    word: str,
) -> None:
    with sites(redis_server, 1, heartbeat=False) as (a,):
        limits = a.operation_limits("nas", total=1)
        with pytest.raises(error, match=word):
            async with limits.slot(*args, **kwargs):
                pass  # pragma: no cover
        thread_kwargs = {k: v for k, v in kwargs.items() if k != "on_lost"}
        if thread_kwargs or "on_lost" not in kwargs:
            with pytest.raises(error, match=word), limits.slot_blocking(*args, **thread_kwargs):
                pass  # pragma: no cover
        if not kwargs:
            with pytest.raises(error, match=word), limits.slot_nowait(*args):
                pass  # pragma: no cover
        assert limits.statistics().in_use == 0


def test_bad_name_and_a_site_not_entered(redis_server: RedisServer) -> None:
    with sites(redis_server, 1, heartbeat=False) as (a,):
        with pytest.raises(ValueError, match="name"):
            a.operation_limits("a b", total=1)
        with pytest.raises(TypeError, match="name"):
            a.operation_limits(3, total=1)  # type: ignore[arg-type]
        limits = a.operation_limits("nas", total=1)
    site = RedisSite(redis_server.url, namespace="t")
    with pytest.raises(RuntimeError, match="enter the site"):
        site.operation_limits("nas", total=1)
    with pytest.raises(RuntimeError, match="enter the site"), limits.slot_nowait("b"):
        pass  # pragma: no cover


class Custom(BaseException):
    """A BaseException that is neither an Exception nor a known control-flow one."""


RAISED: list[type[BaseException]] = [ValueError, KeyboardInterrupt, SystemExit, Custom]


@pytest.mark.anyio
@pytest.mark.parametrize("error", RAISED)
@pytest.mark.parametrize("where", ["slot", "slot_blocking", "slot_nowait"])
async def test_what_the_body_raises_propagates_and_frees_the_slot(
    redis_server: RedisServer, error: type[BaseException], where: str
) -> None:
    with sites(redis_server, 2) as (a, b):
        la = a.operation_limits("nas", total=1, per_key=1)
        lb = b.operation_limits("nas", total=1, per_key=1)

        async def body() -> None:
            if where == "slot":
                async with la.slot("backup", key="vm1"):
                    raise error
            else:
                with getattr(la, where)("backup", key="vm1"):
                    raise error

        with pytest.raises(error):
            await body()
        assert la.statistics().in_use == 0 and la._entries == {}
        with lb.slot_nowait("backup", key="vm1"):  # free for the other member at once
            pass


@pytest.mark.anyio
async def test_a_holder_cancelled_in_its_body_frees_the_slot(redis_server: RedisServer) -> None:
    with sites(redis_server, 2) as (a, b):
        la, lb = a.operation_limits("nas", total=1), b.operation_limits("nas", total=1)
        with real_time_limit(), anyio.CancelScope() as scope:
            async with la.slot("backup"):
                scope.cancel()
                await anyio.sleep(1)
        assert scope.cancelled_caught
        with lb.slot_nowait("backup"):
            pass


def test_leaving_the_site_gives_everything_back(redis_server: RedisServer) -> None:
    with sites(redis_server, 1) as (observer,):
        watch = observer.operation_limits("nas", total=1)
        site = RedisSite(redis_server.url, namespace="t", member="leaver")
        site.start()
        leaving = site.operation_limits("nas", total=1)
        held = leaving.slot_nowait("backup")
        held.__enter__()
        waiter = Holder(leaving, "backup")
        wait_until(lambda: waiting(watch) == 1, "in line")
        site.close()
        stats = watch.statistics()
        assert stats.holders == () and stats.waiters == ()
        waiter.thread.join(WAIT)  # it wakes, and gives up: the site was left
        assert not waiter.thread.is_alive()
        assert [type(e) for e in waiter.errors] == [RuntimeError]
        assert "the site was left" in str(waiter.errors[0])
        assert watch.statistics().waiters == ()  # it did not come back into line
        with watch.slot_nowait("backup"):
            pass
        held.__exit__(None, None, None)  # after the site was left: nothing to give back


def test_a_heartbeat_during_nowait_does_not_put_it_in_line(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A renew sent while slot_nowait asks must not enter it in line (it would leak)."""
    with sites(redis_server, 1, heartbeat=False) as (site,):
        nas = site.operation_limits("nas", total=1)
        enter = SiteOperationLimits._enter

        def beat_first(self: SiteOperationLimits, entry: Any, nowait: bool) -> str:
            assert site.beat()  # the heartbeat's renew gets there first
            return enter(self, entry, nowait)

        with nas.slot_nowait("backup"):
            monkeypatch.setattr(SiteOperationLimits, "_enter", beat_first)
            with pytest.raises(anyio.WouldBlock):
                nas.slot_nowait("backup").__enter__()
            assert nas.statistics().waiters == ()
        assert nas.statistics().in_use == 0 and nas._entries == {}
