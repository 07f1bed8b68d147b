"""
Cluster-wide slots when things break, with real heartbeat threads, a real redis-server
and real member processes: the overlap check across processes, a holder and a waiter
killed with SIGKILL, a member that stops renewing, Redis paused (lost leases, on_lost)
and killed and restarted empty while holders and waiters exist, and SiteUnavailable
after timeout=. Every wait is bounded; no test asserts a duration.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
import time
from typing import Any

import anyio
import pytest

redis = pytest.importorskip("redis")

from _procs import WAIT, wait_until  # noqa: E402
from _redis_server import RedisServer, redis_server_fixture  # noqa: E402, F401
from test_site_slots import Holder, real_time_limit, sites, waiting  # noqa: E402
from throttlekit import SiteUnavailable  # noqa: E402
from throttlekit._site._slots import SiteOperationLimits  # noqa: E402

FAST: dict[str, Any] = {"refresh": 0.05, "lease": 0.5}

CHILD = """
import json, sys, time
from throttlekit.redis import RedisSite
url, member, mode = sys.argv[1], sys.argv[2], sys.argv[3]
site = RedisSite(url, namespace="t", member=member, refresh=0.05, lease=0.5)
site.start()
nas = site.operation_limits("nas", total=2, per_kind={"restore": 1}, per_key=1)
print("ready", flush=True)
if mode == "work":
    out = []
    for i in range(int(sys.argv[4])):
        kind = "restore" if i % 3 == 0 else "backup"
        key = "vm%d" % ((i + int(member[1:])) % 3)
        with nas.slot_blocking(kind, key=key) as grant:
            start = time.monotonic()
            time.sleep(0.02)
            out.append([kind, key, grant.token, start, time.monotonic()])
    site.close()
    print(json.dumps(out), flush=True)
elif mode == "hold":
    with nas.slot_blocking("backup", key="child") as grant:
        print("held", flush=True)
        time.sleep(60)
elif mode == "wait":
    with nas.slot_blocking("backup", key="child") as grant:
        print("granted", flush=True)
"""


def child(server: RedisServer, member: str, mode: str, *extra: str) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, "-c", CHILD, server.url, member, mode, *extra],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "ready"
    return process


def reap(processes: list[subprocess.Popen[str]]) -> None:
    for process in processes:
        process.kill()
        process.wait(WAIT)
        if process.stdout is not None:
            process.stdout.close()


def most_at_once(intervals: list[tuple[float, float]]) -> int:
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    peak = now = 0
    for _, step in events:
        now += step
        peak = max(peak, now)
    return peak


def test_never_more_than_the_limits_across_processes(redis_server: RedisServer) -> None:
    """4 processes, 15 operations each: total, per kind and per key held at every moment."""
    processes = [child(redis_server, f"p{i}", "work", "15") for i in range(4)]
    try:
        results = []
        for process in processes:
            assert process.stdout is not None
            results.extend(json.loads(process.stdout.readline()))
            assert process.wait(WAIT * 3) == 0
    finally:
        reap(processes)
    assert len(results) == 60
    assert most_at_once([(s, e) for *_, s, e in results]) <= 2
    assert most_at_once([(s, e) for kind, _, _, s, e in results if kind == "restore"]) <= 1
    for vm in ("vm0", "vm1", "vm2"):
        assert most_at_once([(s, e) for _, key, _, s, e in results if key == vm]) <= 1
    tokens = [token for _, _, token, _, _ in results]
    assert len(set(tokens)) == 60
    client = redis_server.client()
    assert client.hlen("t:{t/slots/nas}:entries") == 0  # nothing leaked


def test_a_holder_killed_with_sigkill(redis_server: RedisServer) -> None:
    """Its slot goes to a waiter once its lease has run out, not before."""
    holder = child(redis_server, "holder", "hold")
    try:
        assert holder.stdout is not None
        with sites(redis_server, 1, **FAST) as (site,):
            nas = site.operation_limits("nas", total=2, per_kind={"restore": 1}, per_key=1)
            assert holder.stdout.readline().strip() == "held"
            waiter = Holder(nas, "backup", "child")  # the same key: waits for the child
            wait_until(lambda: waiting(nas) == 1, "in line")
            # The child's lease is renewed: it keeps its slot past one lease.
            wait_until(lambda: nas.statistics().holders[0].age > 2 * FAST["lease"], "renewals")
            assert not waiter.granted.is_set()
            holder.kill()
            holder.wait(WAIT)
            assert waiter.granted.wait(WAIT)
            assert [h.member for h in nas.statistics().holders] == ["m0"]
            waiter.release()
    finally:
        reap([holder])


def test_a_waiter_killed_with_sigkill_leaves_the_line(redis_server: RedisServer) -> None:
    with sites(redis_server, 1, **FAST) as (site,):
        nas = site.operation_limits("nas", total=2, per_kind={"restore": 1}, per_key=1)
        with nas.slot_nowait("backup", key="child"):
            process = subprocess.Popen(
                [sys.executable, "-c", CHILD, redis_server.url, "dead", "wait"],
                stdout=subprocess.PIPE,
                text=True,
            )
            try:
                assert process.stdout is not None
                assert process.stdout.readline().strip() == "ready"
                wait_until(lambda: waiting(nas) == 1, "the child is in line")
                later = Holder(nas, "backup", "child")
                wait_until(lambda: waiting(nas) == 2, "behind it")
                process.kill()
                process.wait(WAIT)
                wait_until(lambda: waiting(nas) == 1, "the dead waiter leaves the line")
                assert nas.statistics().waiters[0].member == "m0"
            finally:
                reap([process])
        assert later.granted.wait(WAIT)
        later.release()


def test_a_member_that_cannot_renew_is_told_and_its_slot_freed(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A frozen heartbeat: the holder is told (grant.lost), the others take the slot."""
    with (
        sites(redis_server, 1, heartbeat=False, **FAST) as (frozen,),
        sites(redis_server, 1, **FAST) as (alive,),
    ):
        a = frozen.operation_limits("nas", total=1)
        b = alive.operation_limits("nas", total=1)
        with (
            caplog.at_level(logging.WARNING, "throttlekit.redis"),
            a.slot_nowait("backup") as grant,
        ):
            other = Holder(b, "backup")
            assert other.granted.wait(WAIT)
            wait_until(lambda: grant.lost, "the holder is told")
            assert other.grant.token > grant.token  # fencing: the newer one wins
            other.release()
        assert "lost its lease" in caplog.text
        assert b.statistics().in_use == 0


async def _hold_until_cancelled(
    nas: SiteOperationLimits, on_lost: Any, release: threading.Event
) -> tuple[Any, bool]:
    finished = False
    async with nas.slot("backup", on_lost=on_lost) as grant:
        await anyio.to_thread.run_sync(release.wait, WAIT, abandon_on_cancel=True)
        finished = True
    return grant, finished


@pytest.mark.anyio
@pytest.mark.parametrize("on_lost", ["warn", "cancel"])
async def test_redis_paused_longer_than_the_lease(
    redis_server: RedisServer, on_lost: str, caplog: pytest.LogCaptureFixture
) -> None:
    with sites(redis_server, 1, **FAST) as (site,):
        nas = site.operation_limits("nas", total=1)
        release = threading.Event()
        result: list[Any] = []

        async def hold() -> None:
            result.append(await _hold_until_cancelled(nas, on_lost, release))

        with real_time_limit(), caplog.at_level(logging.WARNING, "throttlekit.redis"):
            async with anyio.create_task_group() as tg:
                tg.start_soon(hold)
                await anyio.to_thread.run_sync(
                    wait_until, lambda: nas.statistics().held_here == 1, "held"
                )
                redis_server.pause()
                try:
                    await anyio.to_thread.run_sync(
                        wait_until, lambda: "lost its lease" in caplog.text, "told"
                    )
                    if on_lost == "warn":
                        release.set()
                finally:
                    redis_server.resume()
        grant, finished = result[0]
        assert grant.lost
        assert finished == (on_lost == "warn")  # "cancel": the block was cancelled
        wait_until(lambda: nas.statistics().in_use == 0, "released once Redis is back")
        with nas.slot_nowait("backup") as again:
            assert again.token > grant.token and not again.lost


def test_redis_restarted_empty_with_holders_and_waiters(redis_server: RedisServer) -> None:
    """The holder claims its slot back; the waiter gets it only after its release."""
    with sites(redis_server, 2, **FAST) as (a, b):
        la = a.operation_limits("nas", total=1)
        lb = b.operation_limits("nas", total=1)
        holder = Holder(la, "backup", "vm1")
        assert holder.granted.wait(WAIT)
        waiter = Holder(lb, "backup", "vm2")
        wait_until(lambda: waiting(la) == 1, "in line")
        redis_server.restart_empty()

        def both_back() -> bool:
            try:
                stats = la.statistics()
            except SiteUnavailable:
                return False
            return [h.member for h in stats.holders] == ["m0"] and len(stats.waiters) == 1

        wait_until(both_back, "the holder and the waiter are back")
        # It cannot know whether someone held the slot meanwhile: told once the heartbeat
        # has its answer (a moment after the server has the holder back).
        wait_until(lambda: holder.grant.lost, "the holder is told")
        time.sleep(3 * FAST["lease"])  # past the grace period: still not granted twice
        assert not waiter.granted.is_set()
        holder.release()
        assert waiter.granted.wait(WAIT)
        assert waiter.grant.token > holder.grant.token
        waiter.release()
        assert la.statistics().in_use == 0 and la.statistics().waiters == ()


def test_site_unavailable_after_timeout(redis_server: RedisServer) -> None:
    with sites(redis_server, 1, **FAST) as (site,):
        nas = site.operation_limits("nas", total=1)
        redis_server.kill()
        with pytest.raises(SiteUnavailable), nas.slot_blocking("backup", timeout=0.2):
            pass  # pragma: no cover
        with pytest.raises(SiteUnavailable), nas.slot_nowait("backup"):
            pass  # pragma: no cover
        with pytest.raises(SiteUnavailable):
            nas.statistics()
        # No timeout: it waits until Redis is back, then takes its place in line.
        waiter = Holder(nas, "backup")
        time.sleep(0.3)
        assert not waiter.granted.is_set() and waiter.errors == []
        redis_server.start()
        assert waiter.granted.wait(WAIT)
        waiter.release()
        assert nas.statistics().in_use == 0


@pytest.mark.anyio
async def test_async_slot_unavailable_after_timeout(redis_server: RedisServer) -> None:
    with sites(redis_server, 1, **FAST) as (site,):
        nas = site.operation_limits("nas", total=1)
        redis_server.kill()
        with real_time_limit(), pytest.raises(SiteUnavailable):
            async with nas.slot("backup", timeout=0.2):
                pass  # pragma: no cover
        assert nas._entries == {}


def test_the_overlap_count_itself() -> None:
    """The check above counts what runs at once (so it can fail)."""
    assert most_at_once([(0, 2), (1, 3), (1.5, 4), (3.5, 5)]) == 3
    assert most_at_once([(0, 1), (1, 2)]) == 1  # one ends as the next starts


def test_redis_paused_shorter_than_the_lease(redis_server: RedisServer) -> None:
    """Holders and waiters ride it out: nothing lost, nothing granted twice, no leak."""
    with sites(redis_server, 2, refresh=0.1, lease=3.0) as (a, b):
        la = a.operation_limits("nas", total=1)
        lb = b.operation_limits("nas", total=1)
        holder = Holder(la, "backup", "vm1")
        assert holder.granted.wait(WAIT)
        waiter = Holder(lb, "backup", "vm2")
        wait_until(lambda: waiting(la) == 1, "in line")
        redis_server.pause()
        try:
            wait_until(lambda: a.statistics().degraded, "the outage is noticed")
        finally:
            redis_server.resume()
        wait_until(lambda: not a.statistics().degraded, "back")
        before = b.statistics().refreshes
        wait_until(lambda: b.statistics().refreshes > before + 3, "a few heartbeats after it")
        assert not holder.grant.lost and not waiter.granted.is_set()
        stats = la.statistics()
        assert [h.member for h in stats.holders] == ["m0"]
        assert [w.member for w in stats.waiters] == ["m1"]
        holder.release()
        assert waiter.granted.wait(WAIT)
        waiter.release()
        assert la.statistics().in_use == 0
