"""
Adversarial probes of cluster-wide operation slots against a real redis-server: odd
input that must not poison the shared object, leaving the site while slots are held or
waited for, and a restart of Redis (empty, with a clock behind) while holders run.
"""

from __future__ import annotations

import pytest

redis = pytest.importorskip("redis")

from _redis_server import RedisServer, redis_server_fixture  # noqa: E402, F401
from test_site_slots import sites  # noqa: E402


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
