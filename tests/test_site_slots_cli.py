"""``throttlekit site status`` shows every cluster-wide operation limits object."""

from __future__ import annotations

import json

import pytest

redis = pytest.importorskip("redis")

from _procs import wait_until  # noqa: E402
from _redis_server import RedisServer, redis_server_fixture  # noqa: E402, F401
from test_site_cli import run  # noqa: E402
from test_site_slots import Holder, sites, waiting  # noqa: E402


def test_status_shows_holders_and_waiters(redis_server: RedisServer) -> None:
    with sites(redis_server, 2) as (a, b):
        nas = a.operation_limits("nas", total=1, per_kind={"restore": 1}, per_key=2)
        other = b.operation_limits("nas", total=1, per_kind={"restore": 1}, per_key=2)
        b.operation_limits("pools", total=None, per_key=1)
        with nas.slot_nowait("restore", key="vm-3") as grant:
            first = Holder(other, "backup", "vm-9")
            wait_until(lambda: waiting(nas) == 1, "in line")
            second = Holder(other, "backup", None, 7)
            wait_until(lambda: waiting(nas) == 2, "in line")
            table = run("site", "status", redis_server.url, "--namespace", "t")
            data = json.loads(run("site", "status", redis_server.url, "--namespace", "t", "--json"))
        second.release()  # ahead by priority
        first.release()
    assert "operation limits nas: total 1, per kind: restore 1, per key 2; 1 held, 2 waiting" in (
        table
    )
    assert "operation limits pools: total no limit, per kind: none, per key 1; 0 held" in table
    lines = table.splitlines()
    holder = next(line for line in lines if line.startswith("m0") and "restore" in line)
    assert holder.split()[:5] == ["m0", "restore", "vm-3", "0", str(grant.token)]
    line = [row.split() for row in lines if row[:2] in ("1 ", "2 ")]
    assert [row[1:5] for row in line] == [["m1", "backup", "-", "7"], ["m1", "backup", "vm-9", "0"]]
    (slots, pools) = data["slots"]
    assert slots["name"] == "nas" and pools["name"] == "pools"
    assert [h["token"] for h in slots["holders"]] == [grant.token]
    assert [w["priority"] for w in slots["waiters"]] == [7, 0]
