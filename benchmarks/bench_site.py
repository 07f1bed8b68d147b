"""
Budgets shared across processes through a real redis-server (``throttlekit.redis``).

Starts its own ``redis-server`` on a Unix socket in a temporary directory, then:

1. **Saturating.** 4 processes, each greedy (64 KiB acquires in a loop) on one 40 MiB/s
   site budget: aggregate over ``--measure`` seconds after ``--warmup`` seconds against the
   rate (target: within 3%), and each member against an equal share (within 10%).
2. **Unequal demand.** The same, one member held locally at 4 MiB/s (a child limiter):
   each greedy member against (40 - 4) / 3 MiB/s (10%), the total (3%).
3. **Redis commands.** ``INFO commandstats`` over run 1: commands per member per refresh
   interval (independent of acquires), next to ``limits`` (moving window, Redis storage)
   and ``pyrate-limiter`` (Redis bucket) on the same workload (64 KiB chunks as units of a
   640/s limit), with their accuracy across the 4 processes.
4. **Join and kill.** A member that joins: refresh intervals until it is within 10% of
   its fair share; a member killed with SIGKILL: seconds until the others have its
   share (target: lease + 1 interval).
5. **1,000 members** in one process on one Redis: the cost of one member's refresh
   (client wall time) and the server's CPU per member refresh.
6. **request_limiter.** 4 processes sharing 50 requests/s for ``--measure`` seconds:
   total against the rate (2%), the worst 100 ms window against its share + burst, and
   the latency of an acquire that need not wait (over the Unix socket).

Run: ``python benchmarks/bench_site.py [--quick]``. Needs redis-server and redis-py; the
peers are optional (``pip install -e '.[bench]'``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

MIB = 2**20
CHUNK = 64 * 1024
SITE = 40 * MIB
REFRESH = 1.0
LEASE = 5.0


# -- the server ---------------------------------------------------------------------------


class Server:
    def __init__(self, directory: Path) -> None:
        self.socket = str(directory / "redis.sock")
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        self.process = subprocess.Popen(
            [binary, "--port", "0", "--unixsocket", self.socket, "--save", "",
             "--appendonly", "no", "--dir", str(directory), "--loglevel", "warning"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        import redis

        self.client = redis.Redis(unix_socket_path=self.socket, socket_timeout=10)
        deadline = time.monotonic() + 10
        while True:
            try:
                self.client.ping()
                break
            except redis.exceptions.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def reset(self) -> None:
        self.client.flushall()
        self.client.config_resetstat()

    def commands(self) -> int:
        """Every command the server ran, those run inside scripts included."""
        stats = self.client.info("commandstats")
        return sum(v["calls"] for k, v in stats.items() if k != "cmdstat_info")

    def round_trips(self) -> int:
        """Script calls (EVALSHA, EVAL): one per request of every library here."""
        stats = self.client.info("commandstats")
        return sum(stats.get(k, {}).get("calls", 0) for k in ("cmdstat_evalsha", "cmdstat_eval"))

    def cpu(self) -> float:
        info = self.client.info("cpu")
        return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])

    def close(self) -> None:
        self.client.close()
        self.process.kill()
        self.process.wait(10)


# -- workers (run as subprocesses: python bench_site.py --worker KIND ...) -------------------


def worker(kind: str, url: str, member: str, start: float, warmup: float, measure: float) -> None:
    """Acquire greedily until start + warmup + measure; print what passed in the window."""
    begin, end = start + warmup, start + warmup + measure
    counted = 0
    stamps: list[float] = []
    if kind.startswith("tk"):
        from throttlekit import RateLimiter
        from throttlekit.redis import RedisSite

        site = RedisSite(url, namespace="bench", member=member, refresh=REFRESH, lease=LEASE)
        site.start()
        if kind == "tk-request":
            api = site.request_limiter("api", "50/s", burst=5)
            while (now := time.time()) < end:
                api.acquire_blocking()
                stamps.append(time.time())
            site.close()
            print(json.dumps({"stamps": stamps}))
            return
        limiter = site.rate_limiter("uplink", f"{SITE}B/s")
        if kind == "tk-held":
            limiter = RateLimiter("4MiB/s", parent=limiter)
        while (now := time.time()) < end:
            limiter.acquire_blocking(CHUNK)
            if begin <= time.time() < end:
                counted += CHUNK
        site.close()
    elif kind == "limits":
        from limits import RateLimitItemPerSecond, storage, strategies

        store = storage.storage_from_string("redis+unix://" + url[len("unix://") :])
        moving = strategies.MovingWindowRateLimiter(store)
        item = RateLimitItemPerSecond(SITE // CHUNK)
        while (now := time.time()) < end:
            if moving.hit(item, "uplink"):
                if begin <= time.time() < end:
                    counted += CHUNK
            else:
                reset = moving.get_window_stats(item, "uplink").reset_time
                time.sleep(min(max(reset - time.time(), 0.001), 0.05))
    elif kind == "pyrate":
        import redis
        from pyrate_limiter import Duration, Limiter, Rate, RedisBucket

        client = redis.Redis.from_url(url)
        bucket = RedisBucket.init([Rate(SITE // CHUNK, Duration.SECOND)], client, "uplink")
        limiter = Limiter(bucket)
        while (now := time.time()) < end:
            if limiter.try_acquire("uplink", 1, blocking=True, timeout=1) and (
                begin <= time.time() < end
            ):
                counted += CHUNK
    del now
    print(json.dumps({"bytes": counted}))


def spawn(kind: str, url: str, member: str, start: float, warmup: float, measure: float):  # type: ignore[no-untyped-def]
    args = [kind, url, member, repr(start), repr(warmup), repr(measure)]
    return subprocess.Popen(
        [sys.executable, __file__, "--worker", *args], stdout=subprocess.PIPE, text=True
    )


def run_group(kinds: list[str], url: str, warmup: float, measure: float) -> list[dict[str, Any]]:
    start = time.time() + 1.0  # every process imports and joins before this
    procs = [spawn(k, url, f"w{i}", start, warmup, measure) for i, k in enumerate(kinds)]
    out = []
    try:
        for p in procs:
            stdout, _ = p.communicate(timeout=warmup + measure + 60)
            out.append(json.loads(stdout.strip().splitlines()[-1]))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(10)
    return out


# -- scenarios ----------------------------------------------------------------------------


def pct(value: float, target: float) -> str:
    return f"{(value / target - 1) * 100:+.1f}%"


def saturating(server: Server, warmup: float, measure: float) -> dict[str, Any]:
    server.reset()
    results = run_group(["tk"] * 4, server.url, warmup, measure)
    commands = server.commands()
    trips = server.round_trips()
    rates = [r["bytes"] / measure for r in results]
    total = sum(rates)
    print("\n## 1. Four greedy members, 40 MiB/s site budget")
    print(f"aggregate {total / MIB:.2f} MiB/s ({pct(total, SITE)} of the rate; target 3%)")
    for i, r in enumerate(rates):
        print(f"  member {i}: {r / MIB:.2f} MiB/s ({pct(r, SITE / 4)} of an equal share; 10%)")
    intervals = (warmup + measure + 1.0) / REFRESH
    per = commands / 4 / intervals
    acquires = sum(r["bytes"] for r in results) / CHUNK
    print(
        f"Redis: {trips / 4 / intervals:.2f} script calls and {per:.1f} commands (those inside "
        "the scripts included) per member per refresh interval"
    )
    print(f"  ({acquires / measure:.0f} acquires/s in the window cost no command)")
    return {"total": total, "rates": rates, "commands": commands, "trips": trips}


def unequal(server: Server, warmup: float, measure: float) -> None:
    server.reset()
    results = run_group(["tk-held", "tk", "tk", "tk"], server.url, warmup, measure)
    rates = [r["bytes"] / measure for r in results]
    target = (SITE - 4 * MIB) / 3
    print("\n## 2. One member held at 4 MiB/s, three greedy")
    print(f"  held member: {rates[0] / MIB:.2f} MiB/s")
    for i, r in enumerate(rates[1:], 1):
        print(f"  greedy {i}: {r / MIB:.2f} MiB/s ({pct(r, target)} of (40-4)/3; 10%)")
    print(f"aggregate {sum(rates) / MIB:.2f} MiB/s ({pct(sum(rates), SITE)}; target 3%)")


def peers(server: Server, warmup: float, measure: float, ours: dict[str, Any]) -> None:
    print("\n## 3. Redis commands and accuracy against peers (4 processes, same workload)")
    print(
        "| library | aggregate MiB/s | vs rate | worst member vs equal | script calls/s "
        "| commands/s (incl. in scripts) |"
    )
    print("|---|---|---|---|---|---|")
    worst = max(abs(r / (SITE / 4) - 1) for r in ours["rates"]) * 100
    span = warmup + measure + 1.0
    print(
        f"| throttlekit (shares) | {ours['total'] / MIB:.2f} | {pct(ours['total'], SITE)} "
        f"| {worst:.1f}% | {ours['trips'] / span:.1f} | {ours['commands'] / span:.1f} |"
    )
    for kind, label, module in (
        ("limits", "limits (moving window)", "limits"),
        ("pyrate", "pyrate-limiter (Redis bucket)", "pyrate_limiter"),
    ):
        try:
            __import__(module)
        except ImportError:
            print(f"| {label} | not installed | | | |")
            continue
        server.reset()
        results = run_group([kind] * 4, server.url, warmup, measure)
        commands, trips = server.commands(), server.round_trips()
        rates = [r["bytes"] / measure for r in results]
        total = sum(rates)
        worst = max(abs(r / (SITE / 4) - 1) for r in rates) * 100
        print(
            f"| {label} | {total / MIB:.2f} | {pct(total, SITE)} | {worst:.1f}% "
            f"| {trips / span:.1f} | {commands / span:.1f} |"
        )


SHARE_REPORTER = f"""
import sys, time
from throttlekit.redis import RedisSite
site = RedisSite(
    sys.argv[1], namespace="bench", member=sys.argv[2], refresh={REFRESH!r}, lease={LEASE!r}
)
site.start()
limiter = site.rate_limiter("uplink", "{SITE}B/s")
import threading
def greedy():
    while True:
        limiter.acquire_blocking({CHUNK})
threading.Thread(target=greedy, daemon=True).start()
t0 = time.monotonic()
while True:
    print(time.monotonic() - t0, limiter.rate.per_second, flush=True)
    time.sleep(0.05)
"""


def join_and_kill(server: Server) -> None:
    from throttlekit.redis import RedisSite

    server.reset()
    print("\n## 4. A member joins; a member is killed (refresh 1 s, lease 5 s)")
    site = RedisSite(server.url, namespace="bench", member="observer", refresh=REFRESH,
                     lease=LEASE)  # fmt: skip
    site.start()
    mine = site.rate_limiter("uplink", f"{SITE}B/s")
    stop = threading.Event()

    def greedy() -> None:
        while not stop.is_set():
            mine.acquire_blocking(CHUNK)

    thread = threading.Thread(target=greedy, daemon=True)
    thread.start()
    procs = []
    try:
        for name in ("a", "b"):
            procs.append(subprocess.Popen([sys.executable, "-c", SHARE_REPORTER, server.url, name],
                                          stdout=subprocess.DEVNULL))  # fmt: skip
        time.sleep(4 * REFRESH)
        joiner = subprocess.Popen([sys.executable, "-c", SHARE_REPORTER, server.url, "c"],
                                  stdout=subprocess.PIPE, text=True)  # fmt: skip
        procs.append(joiner)
        assert joiner.stdout is not None
        fair = SITE / 4
        reached = None
        for line in joiner.stdout:
            t, rate = map(float, line.split())
            if abs(rate / fair - 1) <= 0.1 and t > 0:
                reached = t
                break
            if t > 20:
                break
        if reached is None:
            print("the joiner did not reach its share within 20 s")
        else:
            print(f"joiner within 10% of its fair share after {reached:.2f} s "
                  f"({reached / REFRESH:.1f} refresh intervals; target 3)")  # fmt: skip
        joined = time.monotonic()
        while time.monotonic() - joined < 10 * REFRESH:
            if abs(mine.rate.per_second / fair - 1) <= 0.1:
                took = time.monotonic() - joined
                print(f"an older member down to its new share after {took:.2f} s "
                      f"({took / REFRESH:.1f} intervals)")  # fmt: skip
                break
            time.sleep(0.02)
        time.sleep(2 * REFRESH)
        procs[0].send_signal(signal.SIGKILL)
        killed = time.monotonic()
        target = SITE / 3
        while time.monotonic() - killed < LEASE + 10 * REFRESH:
            if abs(mine.rate.per_second / target - 1) <= 0.1:
                took = time.monotonic() - killed
                print(f"after SIGKILL, a survivor had its new share after {took:.2f} s "
                      f"(target: lease + 1 interval = {LEASE + REFRESH:.1f} s)")  # fmt: skip
                break
            time.sleep(0.02)
        else:
            print("the survivors did not get the dead member's share in time")
    finally:
        stop.set()
        mine.rate = "off"
        for p in procs:
            p.kill()
            p.wait(10)
            if p.stdout is not None:
                p.stdout.close()
        thread.join(10)
        site.close()


def thousand(server: Server, members: int) -> None:
    import redis

    from throttlekit.redis import RedisSite

    server.reset()
    client = redis.Redis(unix_socket_path=server.socket, socket_timeout=10)
    sites = []
    for i in range(members):
        site = RedisSite(client=client, namespace="bench", member=f"sim{i}", refresh=REFRESH,
                         lease=60.0)  # fmt: skip
        site._heartbeat_thread = False
        site.start()
        site.rate_limiter("uplink", f"{SITE}B/s")
        sites.append(site)
    rounds = 3
    cpu0, t0 = server.cpu(), time.perf_counter()
    calls0 = server.commands()
    for _ in range(rounds):
        for site in sites:
            site.beat()
    wall = time.perf_counter() - t0
    cpu = server.cpu() - cpu0
    calls = server.commands() - calls0
    refreshes = rounds * members
    print(f"\n## 5. {members} members on one Redis (simulated in one process)")
    print(f"one member's refresh: {wall / refreshes * 1e3:.3f} ms of client wall time "
          f"({calls / refreshes:.1f} commands)")  # fmt: skip
    print(f"server CPU: {cpu / refreshes * 1e6:.0f} us per member refresh; at refresh "
          f"{REFRESH:g} s that is {cpu / refreshes * members / REFRESH * 100:.1f}% of one core "
          f"for {members} members")  # fmt: skip
    for site in sites:
        site.close()
    client.close()


def requests(server: Server, measure: float) -> None:
    from throttlekit.redis import RedisSite

    server.reset()
    results = run_group(["tk-request"] * 4, server.url, 0.0, measure)
    stamps = sorted(s for r in results for s in r["stamps"])
    start = stamps[0]
    window = [s for s in stamps if s - start < measure]
    total = len(window)
    expected = 50 * measure + 5
    worst = 0
    j = 0
    for i, s in enumerate(window):
        while window[j] < s - 0.1:
            j += 1
        worst = max(worst, i - j + 1)
    print("\n## 6. request_limiter: 4 processes sharing 50/s (burst 5)")
    print(
        f"granted {total} in {measure:g} s (ideal {expected:g}: {pct(total, expected)}; target 2%)"
    )
    print(f"worst 100 ms window: {worst} (share + burst = {5 + 5})")
    site = RedisSite(server.url, namespace="bench", member="lat", refresh=REFRESH, lease=LEASE)
    with site:
        api = site.request_limiter("fast", "1000000/s", burst=1000)
        samples = []
        for _ in range(2000):
            t = time.perf_counter()
            api.acquire_blocking()
            samples.append(time.perf_counter() - t)
    samples.sort()
    print(f"acquire latency (no wait, Unix socket): median {statistics.median(samples) * 1e6:.0f} "
          f"us, p99 {samples[int(len(samples) * 0.99)] * 1e6:.0f} us")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="shorter runs, 200 members")
    parser.add_argument("--worker", nargs=6, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        kind, url, member, start, warmup, measure = args.worker
        worker(kind, url, member, float(start), float(warmup), float(measure))
        return
    warmup, measure = (2.0, 5.0) if args.quick else (2.0, 10.0)
    with tempfile.TemporaryDirectory(prefix="tk-bench-") as directory:
        server = Server(Path(directory))
        try:
            print(f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs, "
                  f"refresh {REFRESH:g} s, lease {LEASE:g} s")  # fmt: skip
            ours = saturating(server, warmup, measure)
            unequal(server, warmup, measure)
            peers(server, warmup, measure, ours)
            join_and_kill(server)
            thousand(server, 200 if args.quick else 1000)
            requests(server, measure)
        finally:
            server.close()


if __name__ == "__main__":
    main()
