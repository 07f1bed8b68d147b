"""
``throttlekit pipe`` against ``pv -L`` and ``cat``, in real processes.

1. **Throughput and cost.** A file copied ``file->file`` (stdin a file, stdout a file) and
   ``pipe->pipe`` (``head -c N FILE | TOOL | cat > /dev/null``), at ``--rate`` 1 GB/s,
   100 MB/s and off, by ``throttlekit pipe -q``, ``pv -q -L`` at the same rate, and ``cat``
   (no rate). Each run moves at most 2 s of the rate (500 MB by default). Median of
   ``--repeat`` paired runs (each repetition runs every tool once, in turn): the tool's
   wall time (spawned to reaped), its CPU (user + system, from ``os.wait4``), throughput
   (bytes / wall), and the ratios to pv and cat within each pair.
2. **Accuracy at a limiting rate.** 50 MB/s for 2 s (100 MB) from a file into a pipe read
   by this process, which stamps every read: the rate achieved from the first byte to the
   last (the first burst included), and from 0.5 s on (steady: the slope of bytes over
   time, fitted to every read), the worst 100 ms window
   against its share of the rate, and the whole run (start included) against the ideal
   time. throttlekit and pv.

Needs Linux and ``pv``; ``cat`` and ``head`` from coreutils. Run:
``python benchmarks/bench_pipe.py [--size 500MB] [--repeat 7]``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from throttlekit._throttle._units import parse_size

RATES: tuple[float | None, ...] = (1e9, 1e8, None)  # bytes per second; None: no limit
SCENARIOS = ("file->file", "pipe->pipe")
BUFFER = 1 << 20


def tools(rate: float | None) -> dict[str, list[str]]:
    """The commands compared at ``rate`` (cat only without a limit)."""
    text = "off" if rate is None else f"{rate:.0f}B/s"
    commands = {"throttlekit": [sys.executable, "-m", "throttlekit", "pipe", "-q", "--rate", text]}
    if shutil.which("pv"):
        commands["pv"] = ["pv", "-q"] + ([] if rate is None else ["-L", f"{rate:.0f}"])
    if rate is None:
        commands["cat"] = ["cat"]
    return commands


def reap(process: subprocess.Popen[bytes]) -> tuple[float, float]:
    """Wait for ``process``; its end time and its CPU seconds (user + system)."""
    _, status, usage = os.wait4(process.pid, 0)
    end = time.perf_counter()
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise RuntimeError(f"{process.args!r} exited with {process.returncode}")
    return end, usage.ru_utime + usage.ru_stime


def run_once(command: list[str], scenario: str, data: Path, out: Path) -> tuple[float, float]:
    """One copy of ``data`` by ``command`` in ``scenario``: (wall, CPU) of the tool."""
    size = data.stat().st_size
    if scenario == "file->file":
        with data.open("rb") as stdin, out.open("wb") as stdout:
            start = time.perf_counter()
            tool = subprocess.Popen(command, stdin=stdin, stdout=stdout)
            end, cpu = reap(tool)
        if out.stat().st_size != size:
            raise RuntimeError(f"{command[0]} copied {out.stat().st_size} of {size} bytes")
        return end - start, cpu
    producer = subprocess.Popen(["head", "-c", str(size), str(data)], stdout=subprocess.PIPE)
    start = time.perf_counter()
    tool = subprocess.Popen(command, stdin=producer.stdout, stdout=subprocess.PIPE)
    consumer = subprocess.Popen(["cat"], stdin=tool.stdout, stdout=subprocess.DEVNULL)
    assert producer.stdout is not None
    assert tool.stdout is not None
    producer.stdout.close()
    tool.stdout.close()
    end, cpu = reap(tool)
    producer.wait()
    consumer.wait()
    return end - start, cpu


def compare(
    scenario: str, rate: float | None, data: Path, out: Path, repeat: int
) -> dict[str, dict[str, float]]:
    """Median figures per tool, and median per-pair ratios to pv and cat."""
    commands = tools(rate)
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in commands}
    for i in range(repeat):
        names = list(commands)
        names = names[i % len(names) :] + names[: i % len(names)]  # rotate who goes first
        for name in names:
            runs[name].append(run_once(commands[name], scenario, data, out))
    size = data.stat().st_size
    figures: dict[str, dict[str, float]] = {}
    for name, pairs in runs.items():
        figures[name] = {
            "wall": statistics.median(w for w, _ in pairs),
            "cpu": statistics.median(c for _, c in pairs),
            "throughput": statistics.median(size / w for w, _ in pairs),
        }
        for peer in ("pv", "cat"):
            if peer in runs and peer != name:
                theirs = runs[peer]
                figures[name][f"cpu/{peer}"] = statistics.median(
                    c / tc for (_, c), (_, tc) in zip(pairs, theirs, strict=True)
                )
                figures[name][f"throughput/{peer}"] = statistics.median(
                    tw / w for (w, _), (tw, _) in zip(pairs, theirs, strict=True)
                )
    return figures


def accuracy(command: list[str], rate: float, data: Path) -> dict[str, float]:
    """Stamp every read of ``command``'s output: achieved rate, worst 100 ms, whole run."""
    read_end, write_end = os.pipe()
    with data.open("rb") as stdin:
        start = time.perf_counter()
        tool = subprocess.Popen(command, stdin=stdin, stdout=write_end)
    os.close(write_end)
    buffer = bytearray(BUFFER)
    stamps: list[tuple[float, int]] = []
    total = 0
    while n := os.readv(read_end, [buffer]):
        total += n
        stamps.append((time.perf_counter(), total))
    os.close(read_end)
    tool.wait()
    first_time, first_total = stamps[0]
    last_time = stamps[-1][0]
    worst, j = 0, 0
    points = [(first_time, 0), *stamps]
    for i in range(1, len(points)):  # the most that arrived within any 100 ms
        while points[i][0] - points[j][0] > 0.1:
            j += 1
        worst = max(worst, points[i][1] - points[max(j - 1, 0)][1])
    settled = [p for p in stamps if p[0] >= first_time + 0.5]  # past the first burst
    slope = statistics.linear_regression([t for t, _ in settled], [b for _, b in settled]).slope
    return {
        "achieved/rate": (total - first_total) / (last_time - first_time) / rate,
        "steady/rate": slope / rate,
        "worst100ms/share": worst / (rate * 0.1),
        "run/ideal": (last_time - start) / (total / rate),
    }


def accuracies(rate: float, seconds: float, work: Path, repeat: int) -> dict[str, dict[str, float]]:
    data = make_data(work, int(rate * seconds))
    results: dict[str, dict[str, float]] = {}
    for name, command in tools(rate).items():
        runs = [accuracy(command, rate, data) for _ in range(repeat)]
        results[name] = {key: statistics.median(r[key] for r in runs) for key in runs[0]}
    return results


def make_data(work: Path, size: int) -> Path:
    path = work / f"data-{size}.bin"
    if not path.exists():
        with path.open("wb") as f:
            chunk = os.urandom(BUFFER)
            for offset in range(0, size, BUFFER):
                f.write(chunk[: min(BUFFER, size - offset)])
    return path


def collect(
    size: int, repeat: int, work: Path
) -> tuple[list[tuple[str, str, int, dict[str, dict[str, float]]]], dict[str, dict[str, float]]]:
    """Every comparison, and the accuracy figures."""
    rows = []
    for scenario in SCENARIOS:
        for rate in RATES:
            moved = size if rate is None else min(size, int(2 * rate))
            data = make_data(work, moved)
            label = "off" if rate is None else f"{rate / 1e6:g} MB/s"
            rows.append(
                (scenario, label, moved, compare(scenario, rate, data, work / "out", repeat))
            )
    return rows, accuracies(50e6, 2.0, work, max(1, repeat // 2))


def fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}g}"


def print_tables(
    rows: Sequence[tuple[str, str, int, dict[str, dict[str, float]]]],
    accuracy_rows: dict[str, dict[str, float]],
) -> None:
    print("| copy | rate | tool | wall s | CPU s | MB/s | CPU / pv | MB/s / pv | MB/s / cat |")
    print("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for scenario, label, moved, figures in rows:
        for name, f in figures.items():
            print(
                f"| {scenario}, {moved / 1e6:g} MB | {label} | {name} | {fmt(f['wall'])} "
                f"| {fmt(f['cpu'])} | {f['throughput'] / 1e6:,.0f} | {fmt(f.get('cpu/pv'))} "
                f"| {fmt(f.get('throughput/pv'))} | {fmt(f.get('throughput/cat'))} |"
            )
    print("\n50 MB/s for 2 s, file -> pipe read by this process:\n")
    print(
        "| tool | achieved / rate | steady (from 0.5 s) / rate | worst 100 ms / its share "
        "| whole run / ideal time |"
    )
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, f in accuracy_rows.items():
        print(
            f"| {name} | {f['achieved/rate']:.4f} | {f['steady/rate']:.4f} "
            f"| {f['worst100ms/share']:.2f} | {f['run/ideal']:.3f} |"
        )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--size", default="500MB", help="the most moved per run")
    parser.add_argument("--repeat", type=int, default=7, help="paired runs (median)")
    args = parser.parse_args(argv)
    if not sys.platform.startswith("linux") or shutil.which("pv") is None:
        print("needs Linux and pv (apt install pv)")
        return
    with tempfile.TemporaryDirectory(prefix="bench-pipe-") as work:
        rows, accuracy_rows = collect(int(parse_size(args.size)), args.repeat, Path(work))
    print(f"\nmedian of {args.repeat} paired runs\n")
    print_tables(rows, accuracy_rows)


if __name__ == "__main__":
    main()
