"""
Adversarial probes of cluster-wide operation slots against a real redis-server: odd
input that must not poison the shared object, leaving the site while slots are held or
waited for, and a restart of Redis (empty, with a clock behind) while holders run.
"""

from __future__ import annotations

import time

import anyio
import anyio.abc
import pytest

redis = pytest.importorskip("redis")

from _procs import WAIT, wait_until  # noqa: E402
from _redis_server import RedisServer, redis_server_fixture  # noqa: E402, F401
from test_site_slots import Holder, real_time_limit, sites  # noqa: E402
from throttlekit.redis import RedisSite  # noqa: E402


@pytest.mark.parametrize("text", ["\ud800", "a\udfffb", "nl\n"])
@pytest.mark.parametrize("where", ["kind", "key", "per_kind"])
def test_unprintable_text_is_refused_and_poisons_nothing(
    redis_server: RedisServer, where: str, text: str
) -> None:
    with sites(redis_server, 1, heartbeat=False) as (a,):
        limits = a.operation_limits("nas", total=2)
        ask = {
            "per_kind": lambda: limits.set_limits(total=2, per_kind={text: 1}),
            "kind": lambda: limits.slot_nowait(text).__enter__(),
            "key": lambda: limits.slot_nowait("backup", key=text).__enter__(),
        }[where]
        with pytest.raises(ValueError, match=where):
            ask()
        assert a.beat()  # the heartbeat still reaches Redis: nothing stored broke it
        assert not a.statistics().degraded
        with limits.slot_nowait("backup", key="vm-1") as grant:
            assert grant.token > 0
        assert limits.statistics().in_use == 0


# -- leaving the site while slots are held or waited for ------------------------------------


@pytest.mark.anyio
async def test_leaving_the_site_wakes_a_task_waiting_in_line(redis_server: RedisServer) -> None:
    """The site is closed from another thread: the waiting task ends (it used to hang)."""
    with sites(redis_server, 2) as (a, b):
        lb = b.operation_limits("nas", total=1)
        la = a.operation_limits("nas", total=1)
        errors: list[BaseException] = []
        with lb.slot_nowait("backup"), real_time_limit():

            async def wait() -> None:
                try:
                    async with la.slot("backup"):
                        pytest.fail("granted after the site was left")  # pragma: no cover
                except RuntimeError as error:
                    errors.append(error)

            async with anyio.create_task_group() as tg:
                tg.start_soon(wait)
                await anyio.to_thread.run_sync(
                    wait_until, lambda: len(lb.statistics().waiters) == 1, "in line"
                )
                await anyio.to_thread.run_sync(a.close)
            assert lb.statistics().waiters == ()  # its place in line was given back
        assert [str(e) for e in errors] == [
            "operation limits 'nas': the site was left while waiting"
        ]


def test_leaving_the_site_while_a_thread_holds_a_slot_marks_it_lost(
    redis_server: RedisServer,
) -> None:
    """The slot goes back to the server on leaving: its holder is told (grant.lost)."""
    with sites(redis_server, 2) as (a, b):
        la = a.operation_limits("nas", total=1)
        lb = b.operation_limits("nas", total=1)
        holder = Holder(la, "backup")
        assert holder.granted.wait(WAIT)
        a.close()
        assert holder.grant.lost  # another member may take it now, and does:
        with lb.slot_nowait("backup") as grant:
            assert grant.token > holder.grant.token
        holder.release()  # giving it back afterwards is harmless
        assert lb.statistics().in_use == 0


@pytest.mark.anyio
async def test_leaving_the_site_cancels_a_holder_with_on_lost_cancel(
    redis_server: RedisServer,
) -> None:
    with sites(redis_server, 1) as (a,):
        la = a.operation_limits("nas", total=1)
        seen: list[bool] = []
        with real_time_limit():
            async with anyio.create_task_group() as tg:

                async def hold(task_status: anyio.abc.TaskStatus[None]) -> None:
                    async with la.slot("backup", on_lost="cancel") as grant:
                        task_status.started()
                        await anyio.sleep_forever()
                    seen.append(grant.lost)

                await tg.start(hold)
                await anyio.to_thread.run_sync(a.close)
        assert seen == [True]


# -- Redis restarted empty while holders run ------------------------------------------------


def test_a_known_member_writing_limits_after_a_restart_keeps_the_grace(
    redis_server: RedisServer,
) -> None:
    """
    After Redis restarts empty, nothing is granted for one lease so that running holders
    claim their slots back. A member that knew the object and writes its limits (a
    set_limits during the outage, or asking for the object again) used to end that grace
    at once: a second slot was granted while the first holder still ran.
    """
    with sites(redis_server, 2, heartbeat=False) as (a, b):
        la = a.operation_limits("nas", total=1)
        lb = b.operation_limits("nas", total=1)
        with la.slot_nowait("backup"):
            redis_server.restart_empty()
            lb.set_limits(total=1)  # b knew the object: the grace holds
            b.operation_limits("nas", total=1)
            with pytest.raises(anyio.WouldBlock):
                lb.slot_nowait("backup").__enter__()
            assert a.beat()  # the holder claims its slot back
            stats = lb.statistics()
            assert [h.member for h in stats.holders] == ["m0"]
        assert lb.statistics().in_use == 0


def test_tokens_grow_across_a_restart_with_a_clock_behind(redis_server: RedisServer) -> None:
    """
    Tokens go on after an empty restart; when the new server's clock is behind the old
    one's, they used to start below the tokens already handed out (fencing broken). A
    member's renew tells the server the largest token it has seen.
    """
    with sites(redis_server, 1, heartbeat=False, refresh=0.2, lease=0.5) as (a,):
        la = a.operation_limits("nas", total=2)
        client = redis_server.client()
        (config,) = [k for k in client.keys("*slots/nas*") if k.endswith(b":config")]
        # the old server's clock ran 60 s ahead of the one that comes back
        client.hincrby(config, "token", 60 * 1000 * 1000)
        with la.slot_nowait("backup") as old:
            redis_server.restart_empty()
            assert a.beat()  # the holder renews: its token is known again
            for _ in range(6):  # the grace after the restart (one lease) ends
                time.sleep(0.1)
                assert a.beat()
            b_site = RedisSite(redis_server.url, namespace="t", member="late")
            with b_site:
                lb = b_site.operation_limits("nas", total=2)
                with lb.slot_nowait("backup") as new:
                    pass
        assert new.token > old.token
