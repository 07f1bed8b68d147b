"""
All the headline figures in one run: ``python -m benchmarks [--repeat N] [--quick]``.

Runs throttlekit and the peers that are installed (``pip install -e '.[bench]'``; nothing
is installed by this script) side by side, takes the median of ``--repeat`` runs of each
figure, prints a Markdown table (figure, throttlekit, peer, ratio, target) and writes the
same records as JSON (``--json PATH``, default ``benchmark-results.json``). The scripts
``bench_*.py`` next to it show more detail per pillar.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from throttlekit import ConcurrencyPolicy, available_cpus

from . import bench_cpu, bench_pipe, bench_policy, bench_pool, bench_ratelimit


def median(fn: Callable[[], float], repeat: int) -> float:
    return statistics.median(fn() for _ in range(repeat))


def have(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


GROUPS = ("ratelimit", "pool", "policy", "cpu", "pipe")


def collect(
    repeat: int, quick: bool, only: frozenset[str] = frozenset(GROUPS)
) -> list[dict[str, Any]]:
    seconds = 1.0 if quick else 2.0
    rows: list[dict[str, Any]] = []

    def add(figure: str, ours: float, peer: str, theirs: float | None, unit: str, target: str,
            better: str = "lower") -> None:  # fmt: skip
        ratio = None
        if theirs not in (None, 0):
            ratio = ours / theirs  # type: ignore[operator]
        rows.append(
            {
                "figure": figure,
                "throttlekit": ours,
                "peer": peer,
                "peer_value": theirs,
                "unit": unit,
                "ratio": ratio,
                "better": better,
                "target": target,
            }
        )

    if "ratelimit" in only:
        ratelimit_rows(repeat, seconds, add)
    if "pool" in only:
        pool_rows(repeat, add)
    if "policy" in only:
        policy_rows(repeat, add)
    if "cpu" in only and sys.platform.startswith("linux"):
        cpu_rows(repeat, seconds, add)
    if "pipe" in only and sys.platform.startswith("linux") and shutil.which("pv"):
        pipe_rows(repeat, quick, seconds, add)
    return rows


def ratelimit_rows(repeat: int, seconds: float, add: Callable[..., None]) -> None:
    rl = bench_ratelimit
    aiolimiter = have("aiolimiter")
    peer = "aiolimiter" if aiolimiter else "-"

    def run_rl(make: Any, fn: Any, *args: Any) -> float:
        return float(asyncio.run(fn(make, *args)))

    ours = median(lambda: run_rl(rl.make_throttlekit, rl.overhead, 20_000), repeat)
    theirs = (
        median(lambda: run_rl(rl.make_aiolimiter, rl.overhead, 20_000), repeat)
        if aiolimiter
        else None
    )
    add("uncontended acquire", ours, peer, theirs, "us", "<= 1.5x aiolimiter")
    ours = median(lambda: rl.overhead_anyio(rl.make_throttlekit, 20_000), repeat)
    theirs = (
        median(lambda: rl.overhead_anyio(rl.make_aiolimiter, 20_000), repeat)
        if aiolimiter
        else None
    )
    add("uncontended acquire, anyio.run task", ours, peer, theirs, "us", "<= 1.5x aiolimiter")

    def accuracy(make: Any, index: int) -> float:
        return float(asyncio.run(rl.accuracy(make, 50, seconds, "bytes"))[index])

    ours = median(lambda: accuracy(rl.make_throttlekit, 0), repeat)
    theirs = median(lambda: accuracy(rl.make_aiolimiter, 0), repeat) if aiolimiter else None
    add("10 MiB/s, 50 tasks: achieved / rate", ours, peer, theirs, "x", "within 3%", "closer to 1")
    ours = median(lambda: accuracy(rl.make_throttlekit, 1), repeat)
    theirs = median(lambda: accuracy(rl.make_aiolimiter, 1), repeat) if aiolimiter else None
    add("10 MiB/s: worst 100 ms window / its share", ours, peer, theirs, "x", "<= 1.5x")
    ours = median(lambda: rl.threads_and_tasks(seconds), repeat)
    add("3 threads + 3 tasks: granted / rate", ours, "-", None, "x", "within 4%", "closer to 1")
    ours = median(lambda: rl.threads_and_tasks(seconds, "trio"), repeat)
    add(
        "3 threads + 3 trio tasks: granted / rate", ours, "-", None, "x", "within 4%", "closer to 1"
    )
    floor = median(lambda: float(asyncio.run(rl.cpu_of_waiters(None, seconds + 1))), repeat)
    ours = median(lambda: run_rl(rl.make_throttlekit, rl.cpu_of_waiters, seconds + 1), repeat)
    add("50 waiters at 20/s: CPU per grant / a sleep's", ours / floor, "-", None, "x", "<= 5x")
    ours = median(lambda: run_rl(rl.make_throttlekit, rl.pacing, seconds), repeat)
    theirs = (
        median(lambda: run_rl(rl.make_aiolimiter, rl.pacing, seconds), repeat)
        if aiolimiter
        else None
    )
    add(
        "pacing, burst of one: achieved / rate", ours, peer, theirs, "x", "within 2%", "closer to 1"
    )
    ours = median(lambda: run_rl(rl.make_throttlekit, rl.cancel_storm, seconds), repeat)
    theirs = (
        median(lambda: run_rl(rl.make_aiolimiter, rl.cancel_storm, seconds), repeat)
        if aiolimiter
        else None
    )
    add("cancel storm: throughput / rate", ours, peer, theirs, "x", ">= 0.98", "closer to 1")
    ours = median(lambda: float(asyncio.run(rl.parent_and_children(seconds))), repeat)
    add("parent 10 MiB/s, two 8 MiB/s children: total / parent", ours, "-", None, "x",
        "within 3%", "closer to 1")  # fmt: skip


def pool_rows(repeat: int, add: Callable[..., None]) -> None:
    bp = bench_pool

    def dispatch(approach: Any) -> float:
        return bp.JOBS / bp._timed(approach)

    ours = median(lambda: dispatch(bp.with_pool), repeat)
    theirs = median(lambda: dispatch(bp.with_anyio), repeat)
    add("pool dispatch, 5,000 jobs on 16 workers", ours, "anyio TaskGroup + CapacityLimiter",
        theirs, "jobs/s", ">= 2x the anyio TaskGroup", "higher")  # fmt: skip
    if have("aiometer"):
        theirs = median(lambda: dispatch(bp.with_aiometer), repeat)
        add("pool dispatch, 5,000 jobs on 16 workers", ours, "aiometer", theirs, "jobs/s", "-",
            "higher")  # fmt: skip
    ours = float(asyncio.run(bp.with_pool(bp.fail_some, 100)))
    theirs = float(asyncio.run(bp.with_anyio(bp.fail_some, 100)))
    add("errors reported, 3 of 100 jobs fail", ours, "anyio TaskGroup", theirs, "errors",
        "3 of 3", "higher")  # fmt: skip
    one = asyncio.run(bp.scaling(1))
    sixteen = median(lambda: asyncio.run(bp.scaling(16)), repeat)
    add("Velero-shaped scaling on 16 workers: speedup / ideal", one / sixteen / 16, "-", None,
        "x", ">= 0.9", "higher")  # fmt: skip


def policy_rows(repeat: int, add: Callable[..., None]) -> None:
    nodes = bench_policy.make_cluster(5000)
    config = bench_policy.make_config(200, 5000)
    policy = ConcurrencyPolicy.from_velero(config)
    naive = bench_policy.linear_scan(config)
    ours = statistics.median(
        bench_policy.timed(lambda: [policy.resolve(lbl) for _, lbl in nodes], repeat)
    )
    theirs = statistics.median(bench_policy.timed(lambda: [naive(lbl) for _, lbl in nodes], repeat))
    add("resolve 5,000 nodes x 200 rules", ours * 1e3, "hand-written linear scan",
        theirs * 1e3, "ms", "well under 500 ms")  # fmt: skip


def cpu_rows(repeat: int, seconds: float, add: Callable[..., None]) -> None:
    bench_cpu.SECONDS = seconds + 1
    ours = median(lambda: bench_cpu.governed_thread(30), repeat)
    add("CpuGovernor at 30%, a thread: measured", ours, "-", None, "%", "within 5 points",
        "closer to 30")  # fmt: skip
    ours = median(lambda: asyncio.run(bench_cpu.governed_task(30)), repeat)
    add("CpuGovernor at 30%, a task: measured", ours, "-", None, "%", "within 5 points",
        "closer to 30")  # fmt: skip
    ours = median(lambda: asyncio.run(bench_cpu.throttled_child(30))[0], repeat)
    theirs = bench_cpu.cpulimit_child(30)
    add("busy child held at 30%: measured", ours, "cpulimit" if theirs else "-", theirs, "%",
        "within 6 points", "closer to 30")  # fmt: skip


def pipe_rows(repeat: int, quick: bool, seconds: float, add: Callable[..., None]) -> None:
    size = 200_000_000 if quick else 500_000_000
    with tempfile.TemporaryDirectory(prefix="bench-pipe-") as tmp:
        work = Path(tmp)
        data = bench_pipe.make_data(work, size)
        for scenario in bench_pipe.SCENARIOS:
            for rate, label in ((1e9, "1 GB/s"), (None, "off")):
                f = bench_pipe.compare(scenario, rate, data, work / "out", repeat)
                tk, pv = f["throttlekit"], f["pv"]
                what = f"pipe {size / 1e6:g} MB {scenario}, {label}"
                add(f"{what}: CPU", tk["cpu"], "pv -L", pv["cpu"], "s", "<= 2x pv")
                add(f"{what}: throughput", tk["throughput"] / 1e6, "pv -L",
                    pv["throughput"] / 1e6, "MB/s", ">= 0.9x pv", "higher")  # fmt: skip
                if rate is None:
                    cat = f["cat"]
                    add(f"{what}: throughput", tk["throughput"] / 1e6, "cat",
                        cat["throughput"] / 1e6, "MB/s", "-", "higher")  # fmt: skip
        acc = bench_pipe.accuracies(50e6, seconds, work, repeat)
        tk, pv = acc["throttlekit"], acc["pv"]
        add("pipe at 50 MB/s: achieved / rate (first burst included)", tk["achieved/rate"],
            "pv -L", pv["achieved/rate"], "x", "within 5%", "closer to 1")  # fmt: skip
        add("pipe at 50 MB/s: steady (from 0.5 s) / rate", tk["steady/rate"], "pv -L",
            pv["steady/rate"], "x", "within 1%", "closer to 1")  # fmt: skip
        add("pipe at 50 MB/s: worst 100 ms window / its share", tk["worst100ms/share"],
            "pv -L", pv["worst100ms/share"], "x", "-")  # fmt: skip


def fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure (median)")
    parser.add_argument("--quick", action="store_true", help="shorter runs, less precise")
    parser.add_argument("--json", default="benchmark-results.json", help="where to write")
    parser.add_argument(
        "--only", action="append", choices=GROUPS, help="only these groups (repeatable)"
    )
    args = parser.parse_args()
    machine = (
        f"Python {platform.python_version()} on {platform.machine()}, "
        f"{os.cpu_count()} CPUs ({available_cpus():g} available), {platform.system()}"
    )
    missing = [m for m in ("aiolimiter", "aiometer") if not have(m)]
    if missing:
        print(f"(not installed, skipped: {', '.join(missing)}; pip install -e '.[bench]')")
    rows = collect(args.repeat, args.quick, frozenset(args.only or GROUPS))
    print(f"\n{machine}; median of {args.repeat} runs\n")
    print("| figure | throttlekit | peer | peer's | ratio | unit | target |")
    print("| --- | ---: | --- | ---: | ---: | --- | --- |")
    for r in rows:
        print(
            f"| {r['figure']} | {fmt(r['throttlekit'])} | {r['peer']} | {fmt(r['peer_value'])} "
            f"| {fmt(r['ratio'])} | {r['unit']} | {r['target']} |"
        )
    with open(args.json, "w") as f:
        json.dump({"machine": machine, "repeat": args.repeat, "figures": rows}, f, indent=2)
    print(f"\n(also written to {args.json})")


if __name__ == "__main__":
    main()
