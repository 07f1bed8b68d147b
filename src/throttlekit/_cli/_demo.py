"""
``throttlekit demo``: the main job, end to end, on embedded sample data.

A simulated backup of a small cluster: per-node concurrency resolved from a Velero
node-agent ConfigMap, ItemBlocks built from an inventory (pods with their PVCs and PVs,
shared config maps de-duplicated), one worker pool per node with that concurrency, every
byte through a per-node rate limit under a site-wide one, one failing snapshot, a few
restores one at a time, and a report of what was measured in this run.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

import anyio
from attrs import define, field, frozen

from .._errors import ItemBlockError, ThrottlekitError, UnitError
from .._execution._blocks import (
    ItemBlock,
    RunProgress,
    RunResult,
    build_item_blocks,
)
from .._execution._operation_limits import OperationLimits
from .._execution._pool import ItemBlockWorkerPool
from .._policy._rules import ConcurrencyPolicy
from .._throttle._ratelimit import RateLimiter
from .._throttle._units import Rate, format_amount, parse_data_rate
from . import print_table

__all__ = ["DemoError", "DemoOptions", "parse_demo_rate", "prepare_demo", "run_demo"]

MiB = 2**20
_CHUNK = MiB
_RESTORES = 3
_LONGEST = 3600.0  # seconds: a demo that cannot finish within an hour is refused


class DemoError(ThrottlekitError, ValueError):
    """Demo options with which the demo cannot run (or cannot finish); names the option."""


def parse_demo_rate(text: str, option: str) -> Rate:
    """A demo rate option: a data rate or ``off`` (a bare number is bytes per second)."""
    try:
        return parse_data_rate(text)
    except UnitError as e:
        raise DemoError(f"{option}: {e}") from None


@frozen(kw_only=True)
class DemoOptions:
    scale: float = 1.0
    site_rate: Rate = field(factory=lambda: Rate.parse("40MiB/s"))
    node_rate: Rate = field(factory=lambda: Rate.parse("16MiB/s"))
    seed: int = 7
    json: bool = False


@frozen(kw_only=True)
class _Item:
    kind: str
    name: str
    node: str
    metadata: int = 4096  # bytes of the object itself
    volume: int = 0  # bytes of volume data (PVCs): moved by their snapshot
    claims: tuple[str, ...] = ()  # a pod's PVCs: its related items
    extras: tuple[str, ...] = ()  # returned as additional items

    def __str__(self) -> str:
        return f"{self.kind}/{self.name}"


@define
class _NodeTally:
    concurrency: int
    blocks: int = 0
    bytes: int = 0
    started: float = 0.0
    finished: float = 0.0
    result: RunResult | None = None


def _inventory(nodes: list[str], scale: float, rng: random.Random) -> dict[str, list[_Item]]:
    """Pods with PVCs (and their PVs) per node; pods share config maps and accounts."""
    out: dict[str, list[_Item]] = {}
    for node in nodes:
        items: list[_Item] = []
        shared_cm = f"{node}-app-config"
        for p in range(rng.randint(4, 6)):
            app = f"{node}-app{p}"
            pvcs = []
            for v in range(rng.randint(1, 2)):
                pvc = f"data-{app}-{v}"
                volume = max(_CHUNK // 4, int(rng.uniform(6, 14) * MiB * scale))
                pvcs.append(pvc)
                items.append(_Item(kind="pvc", name=pvc, node=node, volume=volume))
                items.append(_Item(kind="pv", name=f"pv-{pvc}", node=node))
            items.append(
                _Item(
                    kind="pod",
                    name=f"{app}-0",
                    node=node,
                    metadata=65536,
                    claims=tuple(pvcs),
                    extras=(f"configmap/{shared_cm}", f"serviceaccount/{node}-backup"),
                )
            )
        out[node] = items
    return out


class _Demo:
    def __init__(self, options: DemoOptions, policy: ConcurrencyPolicy, nodes: Any) -> None:
        self.options = options
        self.rng = random.Random(options.seed)
        self.site = RateLimiter(options.site_rate)
        self.node_names = [name for name, _ in nodes]
        self.concurrency = {name: int(r.value) for name, r in policy.resolve_many(nodes).items()}
        self.limiters = {
            name: RateLimiter(options.node_rate, parent=self.site) for name in self.node_names
        }
        self.tally = {
            name: _NodeTally(concurrency=self.concurrency[name]) for name in self.node_names
        }
        self.inventory = _inventory(self.node_names, options.scale, self.rng)
        self.by_name = {
            f"{item.kind}/{item.name}": item for items in self.inventory.values() for item in items
        }
        # one snapshot of one volume times out: the aggregated error shows it under its PVC
        victims = [i for i in self.inventory[self.node_names[1 % len(nodes)]] if i.kind == "pvc"]
        self.failing = f"snapshot/{victims[0].name}" if victims else ""
        self.node_blocks = {name: self.blocks(name) for name in self.node_names}
        self.total_blocks = sum(len(b) for b in self.node_blocks.values())
        self.blocks_done_per_node = dict.fromkeys(self.node_names, 0)
        self.restore_size = max(_CHUNK // 4, int(6 * MiB * options.scale))
        self.restore_bytes = 0
        self.errors = 0
        self.bytes = 0
        self.started = 0.0

    def blocks(self, node: str) -> list[ItemBlock[_Item]]:
        items = self.inventory[node]
        by_claim = {i.name: i for i in items if i.kind == "pvc"}

        def related(item: _Item) -> list[_Item]:
            if item.kind == "pod":
                return [by_claim[c] for c in item.claims]
            if item.kind == "pvc":
                return [self.by_name[f"pv/pv-{item.name}"]]
            return []

        # pods first, as Velero orders them, so each block reads pod, PVC, PV
        ordered = sorted(items, key=lambda i: i.kind != "pod")
        return build_item_blocks(ordered, related=related, key=str, name=lambda i: str(i))

    async def transfer(self, node: str, size: int) -> None:
        await self._move(self.limiters[node], size)
        self.tally[node].bytes += size

    async def _move(self, limiter: RateLimiter, size: int) -> None:
        left = size
        while left > 0:
            piece = min(_CHUNK, left)
            await limiter.acquire(piece)
            left -= piece
            self.bytes += piece

    async def process(self, node: str, item: _Item | str) -> list[Any] | None:
        if isinstance(item, str):  # an additional item: a snapshot, a config map...
            kind, _, name = item.partition("/")
            if kind == "snapshot":
                await anyio.sleep(0.05)  # ask the CSI driver
                if item == self.failing:
                    raise TimeoutError("CSI snapshot not ready after 10m (simulated)")
                await self.transfer(node, self.by_name[f"pvc/{name}"].volume)
            else:
                await self.transfer(node, 8192)
            return None
        await self.transfer(node, item.metadata)
        if item.kind == "pod":
            return list(item.extras)
        if item.kind == "pvc":
            return [f"snapshot/{item.name}"]
        return None

    async def back_up_node(self, node: str) -> None:
        tally = self.tally[node]
        blocks = self.node_blocks[node]
        tally.blocks = len(blocks)
        tally.started = time.monotonic()

        def on_error(error: Any) -> None:
            self.errors += 1

        async def process(item: Any) -> Any:
            return await self.process(node, item)

        def on_progress(progress: RunProgress) -> None:
            self.blocks_done_per_node[node] = progress.blocks_done

        async with ItemBlockWorkerPool(workers=tally.concurrency) as pool:
            tally.result = await pool.run(
                blocks,
                process,
                key=str,
                additional_concurrency=2,
                on_error=on_error,
                on_progress=on_progress,
                progress_interval=0,
            )
        tally.finished = time.monotonic()

    async def restore(self, limits: OperationLimits, name: str, size: int, log: list[str]) -> None:
        async with limits.slot("restore", key=name):
            start = time.monotonic() - self.started
            await self._move(self.site, size)  # restores share the site's bandwidth
            self.restore_bytes += size
            log.append(f"{name}: {start:5.1f}s -> {time.monotonic() - self.started:5.1f}s")

    async def progress(self, out: TextIO, live: bool) -> None:
        interval = 0.25 if live else 2.0
        while True:
            await anyio.sleep(interval)
            self.show(out, live)

    def show(self, out: TextIO, live: bool, *, end: bool = False) -> None:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        family = self.options.site_rate.family
        line = (
            f"  {elapsed:5.1f}s  {format_amount(self.bytes, family):>8} moved  "
            f"{format_amount(self.bytes / elapsed, family):>8}/s  "
            f"blocks {sum(self.blocks_done_per_node.values())}/{self.total_blocks}  "
            f"errors {self.errors}"
        )
        if live:
            out.write("\r" + line + ("\n" if end else ""))
        else:
            out.write(line + "\n")
        out.flush()

    async def run(self, out: TextIO, live: bool) -> list[str]:
        self.started = time.monotonic()
        restores: list[str] = []
        limits = OperationLimits(per_kind={"restore": 1})
        async with anyio.create_task_group() as outer:
            if not self.options.json:
                outer.start_soon(self.progress, out, live)
            async with anyio.create_task_group() as tg:
                for node in self.node_names:
                    tg.start_soon(self.back_up_node, node)
                for k in range(_RESTORES):
                    tg.start_soon(self.restore, limits, f"restore-{k}", self.restore_size, restores)
            outer.cancel_scope.cancel()
        if not self.options.json:
            self.show(out, live, end=True)
        return sorted(restores)


def _duration(seconds: float) -> str:
    if seconds < 2 * 86400:
        return f"about {seconds / 3600:.1f} hours"
    return f"about {seconds / 86400:,.0f} days"


def prepare_demo(
    options: DemoOptions,
    policy: ConcurrencyPolicy,
    nodes: Sequence[tuple[str, Mapping[str, str]]],
) -> _Demo:
    """
    The demo to run, once its options are checked: a :class:`DemoError` naming the option
    for a scale out of (0, 100], or rates under which it could not finish within an hour
    (a rate of 0 pauses everything; the demo would never end).
    """
    scale = options.scale
    if not (math.isfinite(scale) and 0 < scale <= 100):
        raise DemoError(f"--scale must be above 0 and at most 100, got {scale}")
    demo = _Demo(options, policy, nodes)
    per_node = {
        node: sum(i.metadata + i.volume for i in items) + 2 * 8192  # + a config map, an account
        for node, items in demo.inventory.items()
    }
    restores = _RESTORES * demo.restore_size
    total = sum(per_node.values()) + restores
    biggest = max(per_node.values())
    for option, rate, amount in (
        ("--site-rate", options.site_rate, total),
        ("--node-rate", options.node_rate, biggest),
    ):
        if rate.is_paused:
            raise DemoError(
                f"{option} {rate}: a rate of 0 lets nothing through, so the demo would never "
                "finish; give a rate above 0, or 'off'"
            )
        seconds = amount / rate.per_second
        if seconds > _LONGEST:
            raise DemoError(
                f"{option} {rate}: the demo moves {format_amount(amount, rate.family)} through "
                f"this limit, which would take {_duration(seconds)}; give at least "
                f"{format_amount(amount / _LONGEST, rate.family)}/s, or a smaller --scale"
            )
    return demo


def run_demo(demo: _Demo, out: TextIO) -> dict[str, Any]:
    """Run the simulation and print its report (or return it as data with ``json``)."""
    options = demo.options
    live = not options.json and out.isatty()
    if not options.json:
        total = sum(i.volume for items in demo.inventory.values() for i in items)
        out.write(
            f"\nBacking up {sum(len(v) for v in demo.inventory.values())} items "
            f"({format_amount(total)} of volume data) from {len(demo.node_names)} nodes: one "
            f"worker pool per node\nwith the concurrency above, each node at most "
            f"{options.node_rate}, all together at most {options.site_rate};\n3 restores "
            "one at a time alongside; one snapshot will time out.\n\n"
        )
    restores = anyio.run(demo.run, out, live)
    elapsed = max(t.finished for t in demo.tally.values()) - demo.started
    rows = []
    for name in demo.node_names:
        t = demo.tally[name]
        assert t.result is not None
        seconds = max(t.finished - t.started, 1e-9)
        rows.append(
            {
                "node": name,
                "concurrency": t.concurrency,
                "blocks": t.blocks,
                "succeeded": t.result.succeeded,
                "failed": t.result.failed,
                "skipped": t.result.skipped,
                "items": sum(b.items_done for b in t.result.blocks),
                "bytes": t.bytes,
                "seconds": round(seconds, 3),
                "rate_per_second": t.bytes / seconds,
                "limit_per_second": options.node_rate.per_second,
            }
        )
    errors: list[str] = []
    error_count = 0
    for name in demo.node_names:
        result = demo.tally[name].result
        assert result is not None
        error_count += len(result.errors)
        try:
            result.raise_for_errors()
        except ItemBlockError as group:
            errors.extend(_messages(group))
    report: dict[str, Any] = {
        "nodes": rows,
        "total_bytes": demo.bytes,
        "restore_bytes": demo.restore_bytes,
        "seconds": round(elapsed, 3),
        "rate_per_second": demo.bytes / elapsed,
        "site_limit_per_second": options.site_rate.per_second,
        "restores": restores,
        "error_count": error_count,
        "errors": errors,
    }
    if options.json:
        json.dump(report, out, indent=2)
        out.write("\n")
        return report
    out.write("\nReport (measured in this run):\n\n")
    node_family, site_family = options.node_rate.family, options.site_rate.family
    header = ("NODE", "WORKERS", "BLOCKS", "OK", "FAILED", "ITEMS", "MOVED", "RATE", "LIMIT")
    table = [header] + [
        (
            r["node"],
            str(r["concurrency"]),
            str(r["blocks"]),
            str(r["succeeded"]),
            str(r["failed"]),
            str(r["items"]),
            format_amount(r["bytes"], node_family),
            f"{format_amount(r['rate_per_second'], node_family)}/s",
            f"{format_amount(r['limit_per_second'], node_family)}/s",
        )
        for r in rows
    ]
    print_table(table, out, indent="  ")
    out.write(
        f"\n  site: {format_amount(demo.bytes, site_family)} in {elapsed:.1f}s = "
        f"{format_amount(report['rate_per_second'], site_family)}/s against a limit of "
        f"{format_amount(options.site_rate.per_second, site_family)}/s "
        f"({100 * report['rate_per_second'] / options.site_rate.per_second:.0f}%; "
        "the per-node limits add up to more, the site limit holds)\n"
    )
    out.write(
        f"  restores ({format_amount(demo.restore_bytes, site_family)} through the site "
        "limit), one at a time: " + "; ".join(restores) + "\n"
    )
    out.write(f"\nErrors ({error_count}), none dropped, grouped by block and parent item:\n")
    for message in errors:
        out.write(f"  {message}\n")
    return report


def _messages(group: ItemBlockError, depth: int = 0) -> list[str]:
    out = []
    for exc in group.exceptions:
        if isinstance(exc, ItemBlockError):
            out.append("  " * depth + exc.message)
            out.extend(_messages(exc, depth + 1))
    return out
