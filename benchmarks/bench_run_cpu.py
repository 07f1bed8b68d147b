"""
``throttlekit run --cpu`` against ``cpulimit -l`` and ``cpulimit -l -m``, side by side.

Three workloads, each running for a fixed wall time and then printing the CPU seconds
its whole process tree used (its own and its children's, from the kernel's accounting):

* single: one busy Python loop;
* threads: two threads hashing in C (hashlib releases the GIL), up to two cores;
* forking: a parent that idles while two busy children work (the ``tar czf`` + ``gzip``
  shape that a limiter watching one process misses).

Each runs uncapped, under ``throttlekit run`` with the cgroup backend (where this machine
allows one), with the signals backend, with signals and ``--no-children``, and under
``cpulimit -l`` and ``cpulimit -l -m`` (Debian's package; skipped when not installed).
Printed: the tree's CPU against the target (percent of one core), and the limiter's own
CPU (every process of the run that is not the workload: the limiter and its helpers,
sampled from /proc every 50 ms, so a last slice of a helper that exits may be missed),
both as a percentage of one core over the run.

``throttlekit run`` is started as ``python -c "run_command(...)"``, the code behind the
command line, so the backend can be chosen whatever the installed option parser offers.

Run: ``python benchmarks/bench_run_cpu.py [--seconds S] [--percent P]``.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from throttlekit import available_cpus
from throttlekit._throttle._cpu import CgroupPlace, cgroup_place

WORKLOADS = {
    "single": """
import os, sys, time  # WORKLOAD
end = time.monotonic() + float(sys.argv[1])
while time.monotonic() < end:
    pass
t = os.times()
print("TREE_CPU", t.user + t.system + t.children_user + t.children_system)
""",
    "threads": """
import hashlib, os, sys, threading, time  # WORKLOAD
end = time.monotonic() + float(sys.argv[1])
block = os.urandom(1 << 20)
def work():
    while time.monotonic() < end:
        hashlib.sha256(block).digest()
threads = [threading.Thread(target=work) for _ in range(2)]
for t in threads:
    t.start()
for t in threads:
    t.join()
t = os.times()
print("TREE_CPU", t.user + t.system + t.children_user + t.children_system)
""",
    "forking": """
import os, sys, time  # WORKLOAD
end = time.monotonic() + float(sys.argv[1])
pids = []
for _ in range(2):
    pid = os.fork()
    if pid == 0:
        while time.monotonic() < end:
            pass
        os._exit(0)
    pids.append(pid)
for pid in pids:
    os.waitpid(pid, 0)
t = os.times()
print("TREE_CPU", t.user + t.system + t.children_user + t.children_system)
""",
}

LAUNCH = (
    "import sys; from throttlekit._cli._run import run_command; "
    "sys.exit(run_command(sys.argv[2:], **eval(sys.argv[1])))"
)


def limiters(percent: float) -> dict[str, list[str] | None]:
    """name -> the argv prefix that runs a command under it (None: not available here)."""

    def run(**kwargs: object) -> list[str]:
        return [sys.executable, "-c", LAUNCH, repr({"cpu": percent, **kwargs})]

    cpulimit = shutil.which("cpulimit")
    limit = str(round(percent))
    return {
        "uncapped": [],
        "throttlekit run (cgroup)": (
            run(backend="cgroup") if isinstance(cgroup_place(), CgroupPlace) else None
        ),
        "throttlekit run (signals)": run(backend="signals"),
        "throttlekit run --no-children": run(children=False),
        "cpulimit -l": [cpulimit, "-q", "-l", limit, "--"] if cpulimit else None,
        "cpulimit -l -m": [cpulimit, "-q", "-m", "-l", limit, "--"] if cpulimit else None,
    }


TICKS = os.sysconf("SC_CLK_TCK")


def sample(session: int, seen: dict[int, tuple[bool, float]]) -> int:
    """
    Record the CPU seconds of every process of the run: those in its session, and their
    children that started sessions of their own (throttlekit's watchdog; cpulimit's
    limiter is reparented to init but keeps the session). ``seen[pid] = (is the
    workload, CPU seconds so far)``. Returns how many of them are still running.
    """
    running = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[3]) != session and int(fields[1]) not in seen:
                continue
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            # the workload (and its forks) is `python -c SCRIPT`; the limiters name it later
            if len(argv) < 3:  # a zombie shows no command line: keep what it was
                workload = seen.get(pid, (False, 0.0))[0]
            else:
                workload = argv[1] == b"-c" and b"WORKLOAD" in argv[2]
        except (OSError, IndexError):
            continue
        seen[pid] = (workload, (int(fields[11]) + int(fields[12])) / TICKS)
        running += fields[0] != "Z"
    return running


def measure(prefix: list[str], workload: str, seconds: float) -> tuple[float, float, float]:
    """(tree CPU %, limiter CPU %, wall s) for one run of ``workload`` under ``prefix``."""
    seen: dict[int, tuple[bool, float]] = {}
    t0 = time.monotonic()
    run = subprocess.Popen(
        [*prefix, sys.executable, "-c", WORKLOADS[workload], str(seconds)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        # Until every process of the run is gone (cpulimit's first process exits at once;
        # the workload prints only when it ends, so no pipe fills up meanwhile).
        while sample(run.pid, seen) or run.poll() is None:
            if time.monotonic() - t0 > seconds * 10 + 30:
                raise RuntimeError(f"{prefix} {workload} did not end")
            time.sleep(0.05)
        out, err = run.communicate(timeout=30)
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)  # the session this function started
            run.communicate()
    wall = time.monotonic() - t0
    if run.returncode != 0:
        raise RuntimeError(f"{prefix} {workload} failed: {err.strip()}")
    tree = next(float(line.split()[1]) for line in out.splitlines() if line.startswith("TREE_CPU"))
    own = sum(cpu for is_workload, cpu in seen.values() if not is_workload)
    return 100 * tree / seconds, 100 * own / wall, wall


def startup(prefix: list[str]) -> float:
    """CPU seconds of ``PREFIX true``: the limiter's fixed cost (it waits for ``true``)."""

    def once() -> float:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        subprocess.run([*prefix, "true"], check=True, timeout=60)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        return after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime

    return sorted(once() for _ in range(5))[2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="wall time per run")
    parser.add_argument("--percent", type=float, default=30.0, help="the cap, %% of one core")
    args = parser.parse_args()
    place = cgroup_place()
    print(
        f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs, {available_cpus():g} "
        f"available; cap {args.percent:g}% of one core; {args.seconds:g} s per run"
    )
    print(
        "cgroup here: "
        + (f"v{place.version} in {place.parent}" if isinstance(place, CgroupPlace) else place)
    )
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    print()
    header = f"| {'workload':8} | {'limiter':30} | tree CPU % | vs target | limiter CPU % |"
    print(header)
    print("|" + "|".join("-" * (len(cell)) for cell in header.split("|")[1:-1]) + "|")
    for workload in WORKLOADS:
        for name, prefix in limiters(args.percent).items():
            if prefix is None:
                print(f"| {workload:8} | {name:30} | {'(not available here)':>40} |")
                continue
            tree, own, _ = measure(prefix, workload, args.seconds)
            ratio = f"{tree / args.percent:8.2f}x" if name != "uncapped" else " " * 9
            print(f"| {workload:8} | {name:30} | {tree:10.1f} | {ratio} | {own:13.2f} |")
    print("\nThe start-up alone (Python and the import), included in the limiter's CPU above:")
    for name, prefix in limiters(args.percent).items():
        if name.startswith("throttlekit") and prefix is not None:
            print(f"  {name:30} -- true: {1000 * startup(prefix):5.0f} ms of CPU (median of 5)")
    print(f"\nload average after: {os.getloadavg()[0]:.2f} (other work on the machine skews")
    print("the uncapped rows first; a cap below what is free is not affected)")


if __name__ == "__main__":
    main()
