"""
Cluster-wide operation slots through a real redis-server (``site.operation_limits``).

Starts its own ``redis-server`` on a Unix socket in a temporary directory, then:

1. **Overlap and throughput.** ``total=2`` shared by 4 processes, 200 operations of
   50 ms: the most running at once (from each operation's start and end; must be 2),
   and the throughput against the ideal 2 / 50 ms (target: at least 0.9).
2. **Kinds and keys.** ``total=4, per_kind={"restore": 1}, per_key=1`` under the same
   load (a third restores, three keys): the most at once in all, per kind, per key.
3. **Release to next start.** ``total=1``, 4 processes always waiting: the time from one
   holder leaving its block to the next one starting, on another process (median and
   p99; target: median under 5 ms over a local Unix socket).
4. **SIGKILL.** A holder killed with SIGKILL: seconds until a waiter has its slot
   (target: within lease + 1 s).
5. **Priority.** 20 waiters on 4 members, the last to arrive with a higher priority:
   its place among them once the slot is free (target: first).
6. **A long line.** The round trip of one ``slot_nowait`` with 10, 100 and 1,000 waiters
   in line (each step walks the line: sizing, not a target).

Run: ``python benchmarks/bench_site_slots.py [--quick]``. Needs redis-server and redis-py.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

try:
    from .bench_site import Server
except ImportError:  # run as a script
    from bench_site import Server  # type: ignore[no-redef]

REFRESH = 0.5
LEASE = 2.0


# -- workers (subprocesses: python bench_site_slots.py --worker MODE ...) ------------------


def worker(mode: str, url: str, member: str, count: int, seconds: float, config: str) -> None:
    """Run ``count`` operations of ``seconds`` each; print each one's start and end."""
    from throttlekit.redis import RedisSite

    limits = json.loads(config)
    site = RedisSite(url, namespace="bench", member=member, refresh=REFRESH, lease=LEASE)
    with site:
        nas = site.operation_limits("nas", **limits)
        print("ready", flush=True)
        sys.stdin.readline()  # everybody starts together
        if mode == "hold":
            with nas.slot_blocking("backup"):
                print("held", flush=True)
                time.sleep(3600)
        out = []
        for i in range(count):
            kind = "restore" if i % 3 == 0 else "backup"
            key = f"vm{(i + int(member[1:])) % 3}"
            with nas.slot_blocking(kind, key=key) as grant:
                start = time.monotonic()
                if seconds:
                    time.sleep(seconds)
                end = time.monotonic()
            out.append([kind, key, grant.token, start, end])
        print(json.dumps(out), flush=True)


def spawn(url: str, member: str, mode: str, count: int, seconds: float, limits: dict[str, Any]):  # type: ignore[no-untyped-def]
    process = subprocess.Popen(
        [sys.executable, __file__, "--worker", mode, url, member, str(count), str(seconds),
         json.dumps(limits)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "ready"
    return process


def run_group(server: Server, n: int, count: int, seconds: float, limits: dict[str, Any]):  # type: ignore[no-untyped-def]
    server.reset()
    processes = [spawn(server.url, f"p{i}", "work", count, seconds, limits) for i in range(n)]
    try:
        begin = time.monotonic()
        for p in processes:
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        results: list[list[Any]] = []
        for p in processes:
            assert p.stdout is not None
            results.extend(json.loads(p.stdout.readline()))
            p.wait(60)
        return results, time.monotonic() - begin
    finally:
        for p in processes:
            p.kill()
            p.wait(10)


def most_at_once(intervals: list[tuple[float, float]]) -> int:
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    peak = now = 0
    for _, step in events:
        now += step
        peak = max(peak, now)
    return peak


# -- the figures ---------------------------------------------------------------------------


def overlap(server: Server, ops: int) -> None:
    results, _ = run_group(server, 4, ops // 4, 0.05, {"total": 2})
    starts = sorted(s for *_, s, _ in results)
    ends = sorted(e for *_, e in results)
    elapsed = ends[-1] - starts[0]
    ideal = len(results) * 0.05 / 2
    peak = most_at_once([(s, e) for *_, s, e in results])
    print(f"1. total=2, 4 processes, {len(results)} x 50 ms: at most {peak} at once "
          f"(target 2); {elapsed:.2f} s against an ideal {ideal:.2f} s: "
          f"throughput {ideal / elapsed:.3f} of ideal (target >= 0.9)")  # fmt: skip


def kinds_and_keys(server: Server, ops: int) -> None:
    limits = {"total": 4, "per_kind": {"restore": 1}, "per_key": 1}
    results, _ = run_group(server, 4, ops // 4, 0.05, limits)
    peak = most_at_once([(s, e) for *_, s, e in results])
    restores = most_at_once([(s, e) for k, _, _, s, e in results if k == "restore"])
    keys = max(most_at_once([(s, e) for _, y, _, s, e in results if y == vm])
               for vm in ("vm0", "vm1", "vm2"))  # fmt: skip
    print(f"2. total=4, restore=1, per_key=1 (3 keys): at most {peak} at once (<= 4), {restores} "
          f"restore (1), {keys} per key (1)")  # fmt: skip


def latency(server: Server, ops: int) -> None:
    results, _ = run_group(server, 4, ops // 4, 0.0, {"total": 1})
    ordered = sorted(results, key=lambda r: r[2])  # by token: the order of the grants
    gaps = [(b[3] - a[4]) * 1000 for a, b in itertools.pairwise(ordered) if b[3] >= a[4]]
    gaps.sort()
    p99 = gaps[min(len(gaps) - 1, int(len(gaps) * 0.99))]
    median = statistics.median(gaps)
    print(f"3. release to next start (total=1, 4 processes, {len(gaps)} hand-overs): "
          f"median {median:.2f} ms, p99 {p99:.2f} ms (target: median < 5 ms)")  # fmt: skip


def sigkill(server: Server) -> None:
    from throttlekit.redis import RedisSite

    server.reset()
    holder = spawn(server.url, "p9", "hold", 0, 0.0, {"total": 1})
    try:
        assert holder.stdin is not None
        assert holder.stdout is not None
        holder.stdin.write("go\n")
        holder.stdin.flush()
        assert holder.stdout.readline().strip() == "held"
        with RedisSite(server.url, namespace="bench", member="parent", refresh=REFRESH,
                       lease=LEASE) as site:  # fmt: skip
            nas = site.operation_limits("nas", total=1)
            granted = threading.Event()
            at: list[float] = []

            def wait() -> None:
                with nas.slot_blocking("backup"):
                    at.append(time.monotonic())
                    granted.set()

            thread = threading.Thread(target=wait)
            thread.start()
            time.sleep(REFRESH * 2)
            killed = time.monotonic()
            os.kill(holder.pid, signal.SIGKILL)
            granted.wait(LEASE + 10)
            thread.join(10)
            taken = at[0] - killed if at else float("inf")
        print(f"4. holder killed with SIGKILL: its slot taken after {taken:.2f} s "
              f"(lease {LEASE:g} s; target <= {LEASE + 1:g} s)")  # fmt: skip
    finally:
        holder.kill()
        holder.wait(10)


def priority(server: Server) -> None:
    from throttlekit.redis import RedisSite

    server.reset()
    sites = [RedisSite(server.url, namespace="bench", member=f"m{i}", refresh=REFRESH,
                       lease=LEASE) for i in range(4)]  # fmt: skip
    for site in sites:
        site.start()
    try:
        limits = [site.operation_limits("nas", total=1) for site in sites]
        order: list[int] = []
        lock = threading.Lock()
        threads = []
        with limits[0].slot_nowait("backup"):
            for i in range(20):

                def wait(i: int = i) -> None:
                    urgent = 5 if i == 19 else 0
                    with limits[i % 4].slot_blocking("backup", priority=urgent), lock:
                        order.append(i)

                thread = threading.Thread(target=wait)
                thread.start()
                threads.append(thread)
                while len(limits[0].statistics().waiters) < i + 1:
                    time.sleep(0.001)
        for thread in threads:
            thread.join(30)
        place = order.index(19) + 1
        print(f"5. priority: the high-priority waiter that arrived last of 20 went "
              f"number {place} (target: 1)")  # fmt: skip
    finally:
        for site in sites:
            site.close()


def line_length(server: Server) -> None:
    """What one script costs with a long line: every step walks the line (grant pass)."""
    from throttlekit.redis import RedisSite

    server.reset()
    with RedisSite(server.url, namespace="bench", member="m", refresh=REFRESH,
                   lease=60.0) as site:  # fmt: skip
        nas = site.operation_limits("nas", total=1, per_key=1)
        figures = []
        with nas.slot_nowait("backup"):
            entered = 0
            for n in (10, 100, 1000):
                for i in range(entered, n):  # waiters of other members, as the server sees them
                    nas._call("enter", (f"w{i}", f"m{i % 50}", "backup", f"vm{i}", "0", "0"))
                entered = n
                took = []
                for _ in range(50):
                    start = time.perf_counter()
                    try:
                        with nas.slot_nowait("backup", key="x"):
                            pass
                    except Exception:  # WouldBlock: the slot is held
                        pass
                    took.append((time.perf_counter() - start) * 1000)
                figures.append(f"{n} waiting: {statistics.median(took):.2f} ms")
        print("6. one slot_nowait round trip with a line of " + ", ".join(figures))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer operations")
    parser.add_argument("--worker", nargs=6, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        mode, url, member, count, seconds, config = args.worker
        worker(mode, url, member, int(count), float(seconds), config)
        return
    ops = 80 if args.quick else 200
    with tempfile.TemporaryDirectory(prefix="tk-bench-") as directory:
        server = Server(Path(directory))
        try:
            print(f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs, "
                  f"refresh {REFRESH:g} s, lease {LEASE:g} s")  # fmt: skip
            overlap(server, ops)
            kinds_and_keys(server, ops)
            latency(server, 400 if not args.quick else 200)
            sigkill(server)
            priority(server)
            line_length(server)
        finally:
            server.close()


if __name__ == "__main__":
    main()
