"""
The ``throttlekit`` command line (also ``python -m throttlekit``).

Every command turns bad input into one clear line on stderr and a non-zero exit status,
never a traceback: 1 when a configuration is not usable, 2 for a usage or input error
(a missing file, a malformed ``--labels``).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
from collections.abc import Mapping, Sequence
from importlib.resources import files
from typing import Any, TextIO

from ._config import describe, parse_json_text
from ._demo import DemoOptions, run_demo
from ._errors import ConfigError, ThrottlekitError
from ._pipe import copy, parse_burst
from ._policy import ConcurrencyPolicy, Resolution
from ._ratelimit import RateLimiter
from ._runcmd import run_command
from ._selectors import _key_problem, _value_problem
from ._units import Rate

__all__ = ["main"]

EXIT_UNUSABLE = 1
EXIT_USAGE = 2


class _InputError(Exception):
    """Bad command-line input: reported as one line, exit status 2."""


# -- input ---------------------------------------------------------------------------


def _read_text(path: str) -> bytes:
    try:
        if path == "-":
            return sys.stdin.buffer.read()
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise _InputError(f"cannot read {path}: {exc.strerror or exc}") from None


def parse_labels(text: str) -> dict[str, str]:
    """Parse ``k=v,k2=v2`` into a label mapping, validating keys and values."""
    labels: dict[str, str] = {}
    if text.strip() == "":
        return labels
    for part in text.split(","):
        key, sep, value = part.strip().partition("=")
        if not sep:
            raise _InputError(f"--labels: {part.strip()!r} is not key=value")
        problem = _key_problem(key) or _value_problem(value)
        if problem is not None:
            raise _InputError(f"--labels: {problem}")
        if key in labels:
            raise _InputError(f"--labels: key {key!r} is given twice")
        labels[key] = value
    return labels


def read_nodes(data: bytes, where: str) -> list[tuple[str, dict[str, str]]]:
    """
    Node names and labels from ``kubectl get nodes -o json`` output (a List or NodeList),
    a single Node object, or a plain list of Node objects.
    """
    try:
        doc = parse_json_text(data)
    except ConfigError as exc:
        raise _InputError(f"{where}: {exc}") from None
    if isinstance(doc, Mapping) and isinstance(doc.get("items"), list):
        items = doc["items"]
    elif isinstance(doc, Mapping) and doc.get("kind") == "Node":
        items = [doc]
    elif isinstance(doc, list):
        items = doc
    else:
        raise _InputError(
            f"{where}: expected `kubectl get nodes -o json` output, got {describe(doc)}"
        )
    nodes: list[tuple[str, dict[str, str]]] = []
    for i, item in enumerate(items):
        meta = item.get("metadata") if isinstance(item, Mapping) else None
        if not isinstance(meta, Mapping) or not isinstance(meta.get("name"), str):
            raise _InputError(f"{where}: items[{i}] has no metadata.name")
        labels = meta.get("labels") or {}
        if not isinstance(labels, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in labels.items()
        ):
            raise _InputError(f"{where}: items[{i}].metadata.labels must map strings to strings")
        nodes.append((meta["name"], dict(labels)))
    return nodes


# -- output --------------------------------------------------------------------------


def _table(rows: Sequence[Sequence[str]], out: TextIO) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=True)]
        out.write("  ".join(cells).rstrip() + "\n")


def _why(resolution: Resolution[Any]) -> str:
    return resolution.reason.removeprefix("from ").removeprefix("is ")


def _resolution_json(name: str, r: Resolution[Any]) -> dict[str, Any]:
    return {
        "node": name,
        "value": r.value,
        "source": r.source,
        "reason": r.reason,
        "matched": list(r.matched),
        "winner": r.winner,
        "skipped": [{"index": s.index, "path": s.path, "reason": s.reason} for s in r.skipped],
        "warnings": list(r.warnings),
    }


def print_resolutions(
    results: Mapping[str, Resolution[Any]], out: TextIO, *, explain: bool = False
) -> None:
    """A table, one node a row: its number, where it came from, and why."""
    rows = [["NODE", "CONCURRENCY", "SOURCE", "WHY"]]
    rows += [[name, str(r.value), r.source, _why(r)] for name, r in results.items()]
    _table(rows, out)
    if explain:
        for name, r in results.items():
            out.write(f"\n{name}: {r.explain()}\n")


# -- commands ------------------------------------------------------------------------


def _cmd_validate(args: argparse.Namespace, out: TextIO) -> int:
    data = _read_text(args.config)
    try:
        policy = ConcurrencyPolicy.from_velero(data, strict=args.strict)
    except ConfigError as exc:
        noun = "problem" if len(exc.problems) == 1 else "problems"
        out.write(f"{args.config}: not usable, {len(exc.problems)} {noun}:\n")
        for problem in exc.problems:
            out.write(f"  {problem}\n")
        return EXIT_UNUSABLE
    summary = f"{args.config}: usable"
    section = policy.config.load_concurrency if policy.config is not None else None
    if section is not None:
        total = len(section.per_node_config or ())
        summary += (
            f" (global number {policy.global_number}, {total} rules, {len(policy.skipped)} skipped)"
        )
    else:
        summary += f" (no loadConcurrency section: every node gets the default {policy.default})"
    out.write(summary + "\n")
    for warning in policy.warnings:
        out.write(f"  warning: {warning}\n")
    return 0


def _cmd_resolve(args: argparse.Namespace, out: TextIO) -> int:
    if args.labels is not None:
        subjects: list[tuple[str, dict[str, str] | None]] = [
            ("(labels)", parse_labels(args.labels))
        ]
    else:
        subjects = list(read_nodes(_read_text(args.nodes), args.nodes))
    try:
        policy = ConcurrencyPolicy.from_velero(_read_text(args.config), strict=args.strict)
    except ConfigError as exc:
        more = len(exc.problems) - 1
        hint = f" (and {more} more; see `throttlekit validate {args.config}`)" if more else ""
        _error_line(f"{args.config}: not usable: {exc.problems[0]}{hint}")
        return EXIT_UNUSABLE
    results = policy.resolve_many(subjects)
    if args.json:
        json.dump([_resolution_json(n, r) for n, r in results.items()], out, indent=2)
        out.write("\n")
    else:
        print_resolutions(results, out, explain=args.explain)
    return 0


def _sample(name: str) -> bytes:
    return files("throttlekit").joinpath("data").joinpath(name).read_bytes()


def _cmd_demo(args: argparse.Namespace, out: TextIO) -> int:
    configmap = _sample("sample-node-agent-configmap.json")
    nodes = read_nodes(_sample("sample-nodes.json"), "sample-nodes.json")
    policy = ConcurrencyPolicy.from_velero(configmap)
    if not (args.scale > 0 and args.scale <= 100):
        raise _InputError(f"--scale must be above 0 and at most 100, got {args.scale}")
    options = DemoOptions(
        scale=args.scale,
        site_rate=Rate.parse(args.site_rate),
        node_rate=Rate.parse(args.node_rate),
        seed=args.seed,
        json=args.json,
    )
    if args.json:
        report = run_demo(options, policy, nodes, io.StringIO())
        concurrency = {name: r.value for name, r in policy.resolve_many(nodes).items()}
        json.dump({"concurrency": concurrency, **report}, out, indent=2)
        out.write("\n")
        return 0
    out.write(
        "throttlekit demo: a simulated backup of a small cluster\n"
        "=======================================================\n\n"
        "Per-node concurrency, from the Velero node-agent ConfigMap shipped with throttlekit:\n"
    )
    out.write(f"    global number: {policy.global_number}\n")
    for index, rule in zip(policy.rule_indices, policy.rules, strict=True):
        out.write(f"    rule {index}: {rule}\n")
    out.write("    (smallest matching number wins; no match: the global number)\n\n")
    print_resolutions(policy.resolve_many(nodes), out, explain=args.explain)
    run_demo(options, policy, nodes, out)
    broken = json.loads(json.loads(configmap)["data"]["node-agent-config.json"])
    broken["loadConcurrency"]["globalconfig"] = broken["loadConcurrency"].pop("globalConfig")
    broken["loadConcurrency"]["perNodeConfig"][1]["number"] = 0
    broken["loadConcurrency"]["perNodeConfig"][2]["nodeSelector"]["matchExpressions"][0][
        "operator"
    ] = "in"
    out.write(
        "\nAnd validation: the same ConfigMap with three typical mistakes (a mis-cased key, a\n"
        "zero number, a lower-case operator), which Velero starts with anyway:\n\n"
    )
    try:
        ConcurrencyPolicy.from_velero(broken, strict=True)
    except ConfigError as exc:
        out.write(_indent(str(exc)) + "\n")
    out.write(
        "\nNext: `throttlekit resolve CONFIG --nodes NODES.json --explain` on your own cluster,\n"
        "`throttlekit demo --help` for the knobs, and the docs for the library behind it.\n"
    )
    return 0


def _cmd_pipe(args: argparse.Namespace, out: TextIO) -> int:
    burst = parse_burst(args.burst) if args.burst is not None else None
    limiter = RateLimiter(args.rate, burst=burst)
    progress = sys.stderr if (args.progress or sys.stderr.isatty()) and not args.quiet else None
    out.flush()
    copy(sys.stdin.buffer, sys.stdout.buffer, limiter, progress)
    return 0


def _cmd_run(args: argparse.Namespace, out: TextIO) -> int:
    command = list(args.command_line)
    if command and command[0] == "--":
        command = command[1:]
    out.flush()
    return run_command(command, cpu=args.cpu, nice=args.nice, ionice=args.ionice)


def _indent(text: str, prefix: str = "    ") -> str:
    return "\n".join(prefix + line if line else line for line in text.splitlines())


# -- entry point ---------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="throttlekit",
        description="Concurrency policy, execution and throttling for backup systems.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = commands.add_parser(
        "validate",
        help="check a Velero node-agent config",
        description="Check a Velero node-agent config (JSON, or a ConfigMap as kubectl prints it). "
        "Exit status 0 when usable, 1 when not, listing every problem with its path.",
    )
    p.add_argument("config", metavar="CONFIG", help="the config file ('-' for stdin)")
    p.add_argument("--strict", action="store_true", help="treat every warning as a problem")
    p.set_defaults(func=_cmd_validate)

    p = commands.add_parser(
        "resolve",
        help="the concurrency per node, and why",
        description="Resolve the per-node concurrency a Velero node-agent config gives.",
    )
    p.add_argument("config", metavar="CONFIG", help="the config file ('-' for stdin)")
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--labels", metavar="K=V,...", help="one node's labels")
    who.add_argument("--nodes", metavar="NODES.json", help="`kubectl get nodes -o json` output")
    p.add_argument("--explain", action="store_true", help="say what matched, was skipped and won")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--strict", action="store_true", help="refuse a config with any warning")
    p.set_defaults(func=_cmd_resolve)

    p = commands.add_parser(
        "pipe",
        help="copy stdin to stdout at a rate (like pv -L)",
        description="Copy stdin to stdout at RATE, byte for byte, with a progress line on "
        "stderr when it is a terminal.",
    )
    p.add_argument(
        "--rate",
        required=True,
        metavar="RATE",
        help="e.g. 10MiB/s, 80Mbit/s, 512k, off; or a timetable '08:00,1MiB/s 18:00,off'",
    )
    p.add_argument(
        "--burst",
        metavar="SIZE|DURATION",
        help="the most at once: a size (64KiB) or a duration of the rate (default 0.1s)",
    )
    show = p.add_mutually_exclusive_group()
    show.add_argument("--progress", action="store_true", help="show progress even if not a tty")
    show.add_argument("-q", "--quiet", action="store_true", help="never show progress")
    p.set_defaults(func=_cmd_pipe)

    p = commands.add_parser(
        "run",
        help="run a command at lower priority and under a CPU cap",
        description="Run COMMAND at lower CPU and I/O priority (nice 10, best-effort I/O by "
        "default, as Avamar does) and, with --cpu, with its average CPU held at PERCENT of "
        "one core. Its exit status is passed through and it is never left stopped.",
    )
    p.add_argument("--cpu", type=float, metavar="PERCENT", help="the most CPU, in %% of one core")
    p.add_argument("--nice", type=int, metavar="N", help="the nice value (default 10)")
    p.add_argument(
        "--ionice", metavar="CLASS[:LEVEL]", help="idle, best-effort[:0-7] or realtime[:0-7]"
    )
    p.add_argument("command_line", nargs=argparse.REMAINDER, metavar="-- COMMAND ...")
    p.set_defaults(func=_cmd_run)

    p = commands.add_parser(
        "demo",
        help="a simulated backup of a small cluster, on built-in sample data",
        description="A simulated backup of a small cluster: per-node concurrency from a Velero "
        "ConfigMap, ItemBlocks on a worker pool per node, per-node and site bandwidth "
        "limits, sequential restores, one failing snapshot, and a report measured in the run.",
    )
    p.add_argument("--explain", action="store_true", help="explain every node's result")
    p.add_argument("--scale", type=float, default=1.0, help="volume data scale (1.0: about 10 s)")
    p.add_argument("--site-rate", default="40MiB/s", metavar="RATE", help="site-wide limit")
    p.add_argument("--node-rate", default="16MiB/s", metavar="RATE", help="per-node limit")
    p.add_argument("--seed", type=int, default=7, help="seed of the simulated inventory")
    p.add_argument("--json", action="store_true", help="print the report as JSON only")
    p.set_defaults(func=_cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (the console script exits with it)."""
    args = _parser().parse_args(argv)
    try:
        status: int = args.func(args, sys.stdout)
    except (_InputError, ThrottlekitError) as exc:
        _error_line(str(exc))
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # e.g. `throttlekit resolve ... | head`: the reader is done
        # Point stdout at /dev/null so the interpreter's final flush cannot fail again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 0
    sys.stdout.flush()
    return status


def _error_line(message: str) -> None:
    sys.stderr.write(f"throttlekit: error: {message}\n")
