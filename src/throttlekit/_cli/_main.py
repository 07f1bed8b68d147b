"""
The ``throttlekit`` command line (also ``python -m throttlekit``).

Every way out is an exit status and at most one line on stderr, never a traceback:

* 0: done. 1: a configuration is not usable (``validate``, ``resolve``).
* 2: bad input (an argument, a file, stdin), or our own output failed (stdout closed or
  full): one ``throttlekit: error:`` line. An unexpected internal error is also one line
  and 2; ``THROTTLEKIT_DEBUG=1`` adds its traceback.
* 130: interrupted (Ctrl-C).
* ``run``: the command's own status (128 + N when signal N killed it); 127 when the
  command is not found and 126 when it cannot be run, as ``env`` and ``nice`` do.

When the reader of stdout goes away (``| head``), the command stops writing and exits
quietly with the status it would have had. Arguments are all checked before anything
starts: before any output, before the demo runs, before the pipe reads a byte.
"""

from __future__ import annotations

import argparse
import errno
import io
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NoReturn, TextIO, cast

from .._errors import ConfigError, ThrottlekitError, UnitError
from .._throttle._units import format_amount
from . import describe_error, print_table
from ._pipe import CopyError, silence

# Each command imports what it needs when it runs: `throttlekit pipe` starts in the time
# it takes to import the pipe, not the policy engine and the worker pool.
if TYPE_CHECKING:
    from .._policy._rules import Resolution

if sys.version_info < (3, 11):  # pragma: no cover - the backport on 3.10
    from exceptiongroup import BaseExceptionGroup

__all__ = ["main"]

EXIT_UNUSABLE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

_CONFIG_LIMIT = 64 << 20  # a ConfigMap holds at most 1 MiB; this only stops endless input
_NODES_LIMIT = 1 << 30


class _InputError(Exception):
    """Bad command-line input: reported as one line, exit status 2."""


class _OutputError(Exception):
    """Writing our own output failed (closed, full, an I/O error): one line, exit status 2."""

    def __init__(self, error: OSError, name: str = "stdout") -> None:
        self.error = error
        super().__init__(f"cannot write to {name}: {error.strerror or error}")


class _ReaderGone(Exception):
    """The reader of stdout went away (``| head``): stop writing, exit quietly."""


class _Output:
    """
    stdout as the commands see it: a failed write or flush raises :class:`_OutputError`
    (or :class:`_ReaderGone` for a broken pipe) naming the cause, and after a failure every
    later write is dropped, so nothing fails twice. A closed stdout (``>&-``, which leaves
    ``sys.stdout`` as ``None``) fails on the first write, not before: ``run`` writes
    nothing of its own and works with it closed.

    Deliberately not an :class:`io.IOBase`: those flush when they are garbage collected,
    which would meet (and swallow) a failure before the command could report it.
    """

    def __init__(self, stream: TextIO | None) -> None:
        self._stream = stream
        self._failed = False

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        try:
            return self._stream is not None and self._stream.isatty()
        except (OSError, ValueError):
            return False

    def write(self, text: str) -> int:
        if self._failed:
            return len(text)
        if self._stream is None:
            self._fail(OSError(errno.EBADF, "Bad file descriptor (stdout is closed)"))
        try:
            return self._stream.write(text)
        except (OSError, ValueError) as e:
            self._fail(e)

    def flush(self) -> None:
        if self._failed or self._stream is None:
            return
        try:
            self._stream.flush()
        except (OSError, ValueError) as e:
            self._fail(e)

    def _fail(self, error: OSError | ValueError) -> NoReturn:
        self._failed = True
        silence(self._stream)  # so the interpreter's last flush cannot fail again
        if isinstance(error, BrokenPipeError):
            raise _ReaderGone from None
        if isinstance(error, ValueError):  # "I/O operation on closed file"
            error = OSError(errno.EBADF, "Bad file descriptor (stdout is closed)")
        raise _OutputError(error) from None


# -- input ---------------------------------------------------------------------------


def _read_text(path: str, limit: int = _CONFIG_LIMIT) -> bytes:
    """The bytes of ``path`` (``-``: stdin), at most ``limit`` of them (``/dev/zero`` ends)."""
    try:
        if path == "-":
            if sys.stdin is None:
                raise OSError(errno.EBADF, "Bad file descriptor (stdin is closed)")
            data = sys.stdin.buffer.read(limit + 1)
        else:
            with open(path, "rb") as f:
                data = f.read(limit + 1)
    except OSError as exc:
        raise _InputError(f"cannot read {path}: {exc.strerror or exc}") from None
    if len(data) > limit:
        raise _InputError(f"cannot read {path}: it is larger than {format_amount(limit)}")
    return data


def parse_labels(text: str) -> dict[str, str]:
    """Parse ``k=v,k2=v2`` into a label mapping, validating keys and values."""
    from .._policy._selectors import key_problem, value_problem

    labels: dict[str, str] = {}
    if text.strip() == "":
        return labels
    for part in text.split(","):
        key, sep, value = part.strip().partition("=")
        if not sep:
            raise _InputError(f"--labels: {part.strip()!r} is not key=value")
        problem = key_problem(key) or value_problem(value)
        if problem is not None:
            raise _InputError(f"--labels: {problem}")
        if key in labels:
            raise _InputError(f"--labels: key {key!r} is given twice")
        labels[key] = value
    return labels


def read_nodes(data: bytes, where: str) -> list[tuple[str, dict[str, str]]]:
    """
    Node names and labels from ``kubectl get nodes -o json`` output (a List or NodeList),
    a single Node object, or a plain list of Node objects: :func:`throttlekit.read_node_labels`,
    with its problems as one line (the first, and how many more).
    """
    from .._policy._nodes import read_node_labels

    try:
        return list(read_node_labels(data).items())
    except ConfigError as exc:
        more = len(exc.problems) - 1
        raise _InputError(
            f"{where}: {exc.problems[0]}" + (f" (and {more} more)" if more else "")
        ) from None


# -- output --------------------------------------------------------------------------


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
    """
    A table, one node a row: its number, where it came from, and why (the resolution's
    one-sentence reason, which names a matching rule that was skipped).
    """
    rows = [["NODE", "CONCURRENCY", "SOURCE", "WHY"]]
    rows += [[name, str(r.value), r.source, r.reason] for name, r in results.items()]
    print_table(rows, out)
    if explain:
        for name, r in results.items():
            out.write(f"\n{name}: {r.explain()}\n")


# -- commands ------------------------------------------------------------------------


def _cmd_validate(args: argparse.Namespace, out: TextIO) -> int:
    from .._policy._rules import ConcurrencyPolicy

    data = _read_text(args.config)
    lines: list[str] = []
    try:
        policy = ConcurrencyPolicy.from_velero(data, strict=args.strict)
    except ConfigError as exc:
        noun = "problem" if len(exc.problems) == 1 else "problems"
        lines.append(f"{args.config}: not usable, {len(exc.problems)} {noun}:")
        lines += [f"  {problem}" for problem in exc.problems]
        status = EXIT_UNUSABLE
    else:
        summary = f"{args.config}: usable"
        section = policy.config.load_concurrency if policy.config is not None else None
        if section is not None:
            total = len(section.per_node_config or ())
            summary += (
                f" (global number {policy.global_number}, {total} rules, "
                f"{len(policy.skipped)} skipped)"
            )
        else:
            summary += (
                f" (no loadConcurrency section: every node gets the default {policy.default})"
            )
        lines.append(summary)
        lines += [f"  warning: {warning}" for warning in policy.warnings]
        status = 0
    try:
        out.write("".join(line + "\n" for line in lines))
        out.flush()
    except _ReaderGone:  # the verdict stands even if nobody reads it
        pass
    return status


def _cmd_resolve(args: argparse.Namespace, out: TextIO) -> int:
    import json

    from .._policy._rules import ConcurrencyPolicy

    if args.labels is not None:
        subjects: list[tuple[str, dict[str, str] | None]] = [
            ("(labels)", parse_labels(args.labels))
        ]
    else:
        subjects = list(read_nodes(_read_text(args.nodes, _NODES_LIMIT), args.nodes))
    try:
        policy = ConcurrencyPolicy.from_velero(_read_text(args.config), strict=args.strict)
    except ConfigError as exc:
        more = len(exc.problems) - 1
        hint = f" (and {more} more; see `throttlekit validate {args.config}`)" if more else ""
        _error_line(f"{args.config}: not usable: {exc.problems[0]}{hint}")
        return EXIT_UNUSABLE
    results = policy.resolve_many(subjects)
    # Every warning once, on stderr (stdout stays the table or the JSON): what loading
    # found (unknown keys, skipped rules), then what resolving added (labels unreadable).
    shown = [str(problem) for problem in policy.warnings]
    for r in results.values():
        shown += [w for w in r.warnings if not any(w in seen for seen in shown)]
    for warning in shown:
        _message_line("warning", f"{args.config}: {warning}")
    if args.json:
        json.dump([_resolution_json(n, r) for n, r in results.items()], out, indent=2)
        out.write("\n")
    else:
        print_resolutions(results, out, explain=args.explain)
    return 0


def _sample(name: str) -> bytes:
    from importlib.resources import files

    return files("throttlekit._cli").joinpath("data").joinpath(name).read_bytes()


def _cmd_demo(args: argparse.Namespace, out: TextIO) -> int:
    import json

    from .._policy._rules import ConcurrencyPolicy
    from ._demo import DemoOptions, parse_demo_rate, prepare_demo, run_demo

    configmap = _sample("sample-node-agent-configmap.json")
    nodes = read_nodes(_sample("sample-nodes.json"), "sample-nodes.json")
    policy = ConcurrencyPolicy.from_velero(configmap)
    options = DemoOptions(
        scale=args.scale,
        site_rate=parse_demo_rate(args.site_rate, "--site-rate"),
        node_rate=parse_demo_rate(args.node_rate, "--node-rate"),
        seed=args.seed,
        json=args.json,
    )
    demo = prepare_demo(options, policy, nodes)  # refuses a demo that could not finish
    if args.json:
        report = run_demo(demo, io.StringIO())
        concurrency = {name: r.value for name, r in policy.resolve_many(nodes).items()}
        json.dump({"concurrency": concurrency, **report}, out, indent=2)
        out.write("\n")
        return 0
    out.write(
        "throttlekit demo: a simulated backup of a small cluster\n"
        "=======================================================\n\n"
        "Per-node concurrency, from the Velero node-agent ConfigMap shipped with throttlekit:\n"
    )
    out.flush()  # a stdout that cannot be written fails now, not after the run
    out.write(f"    global number: {policy.global_number}\n")
    for index, rule in zip(policy.rule_indices, policy.rules, strict=True):
        out.write(f"    rule {index}: {rule}\n")
    out.write("    (smallest matching number wins; no match: the global number)\n\n")
    print_resolutions(policy.resolve_many(nodes), out, explain=args.explain)
    run_demo(demo, out)
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


def _descriptor(stream: TextIO | None, action: str, name: str) -> int | None:
    """The file descriptor behind ``stream``; None if it has none (a test's capture)."""
    if stream is None:  # closed before we started (``<&-``, ``>&-``)
        closed = OSError(errno.EBADF, f"Bad file descriptor ({name} is closed)")
        raise CopyError(action, name, closed)
    try:
        return stream.fileno()
    except (OSError, ValueError):
        return None


def _cmd_pipe(args: argparse.Namespace, out: TextIO) -> int:
    from .._throttle._units import parse_burst
    from ._pipe import copy, parse_pipe_rate, rate_family
    from ._site import pipe_limiter

    try:
        rate = parse_pipe_rate(args.rate)
    except UnitError as e:
        raise _InputError(f"--rate: {e}") from None
    try:
        burst = parse_burst(args.burst) if args.burst is not None else None
    except UnitError as e:
        raise _InputError(f"--burst: {e}") from None
    stderr = sys.stderr
    show = args.progress or (stderr is not None and _Output(stderr).isatty())
    progress = stderr if show and not args.quiet else None
    family = rate_family(rate)  # progress in the units --rate was given in
    out.flush()
    try:
        src = _descriptor(sys.stdin, "read", "stdin")
        dst = _descriptor(sys.stdout, "write", "stdout")
        # Local and full from the start, as pv is (a process that just started has already
        # waited); with --site, this member's share of the site rate while the copy runs.
        # A share changes while the copy runs (set-rate, members coming and going): it is
        # paid for even while unlimited, so that a limit set later holds.
        live = args.site is not None
        with pipe_limiter(args, rate, burst) as limiter:
            if src is not None and dst is not None:
                copy(src, dst, limiter, progress, family=family, live=live)
            else:
                assert sys.stdin is not None
                assert sys.stdout is not None
                source, sink = sys.stdin.buffer, sys.stdout.buffer
                copy(source, sink, limiter, progress, family=family, live=live)
    except CopyError as exc:
        if exc.reader_gone:
            silence(sys.stdout)
            raise _ReaderGone from None
        if exc.action == "write":
            silence(sys.stdout)
            raise _OutputError(exc.error) from None
        raise
    return 0


def _cmd_run(args: argparse.Namespace, out: TextIO) -> int:
    from ._run import run_command

    command = list(args.command_line)
    if command and command[0] == "--":
        command = command[1:]
    out.flush()
    return run_command(
        command,
        cpu=args.cpu,
        nice=args.nice,
        ionice=args.ionice,
        children=args.children,
        backend=args.backend,
        verbose=args.verbose,
    )


def _indent(text: str, prefix: str = "    ") -> str:
    return "\n".join(prefix + line if line else line for line in text.splitlines())


# -- entry point ---------------------------------------------------------------------


class _UsageError(Exception):
    """A command line argparse cannot parse: one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    """argparse, with one-line errors and help that goes through :class:`_Output`."""

    def error(self, message: str) -> NoReturn:
        raise _UsageError(f"{message} (see '{self.prog} --help')")

    def print_help(self, file: Any = None) -> None:
        _Output(sys.stdout if file is None else file).write(self.format_help())


class _Version(argparse.Action):
    """``--version``, looked up only when asked for (it costs an import)."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest=argparse.SUPPRESS, nargs=0, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *args: Any) -> None:
        from .. import __version__

        _Output(sys.stdout).write(f"{parser.prog} {__version__}\n")
        parser.exit()


def _parser() -> argparse.ArgumentParser:
    from ._site import add_pipe_site_options, add_site_command

    parser = _Parser(
        prog="throttlekit",
        description="Concurrency policy, execution and throttling for backup systems.",
    )
    parser.add_argument("--version", action=_Version, help="show the version and exit")
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
        help="e.g. 10MiB/s, 20MB/s, 80Mbit/s (80mbps), 512k or 10m (binary, as rclone, rsync, "
        "curl and pv), a bare number in bytes/s, off; or a timetable '08:00,1MiB/s "
        "18:00:30,off'; progress is shown in the same units",
    )
    p.add_argument(
        "--burst",
        metavar="SIZE|DURATION",
        help="the most at once: a size (64KiB) or a duration of the rate (default 0.1s)",
    )
    show = p.add_mutually_exclusive_group()
    show.add_argument("--progress", action="store_true", help="show progress even if not a tty")
    show.add_argument("-q", "--quiet", action="store_true", help="never show progress")
    add_pipe_site_options(p)
    p.set_defaults(func=_cmd_pipe)

    p = commands.add_parser(
        "run",
        help="run a command at lower priority and under a CPU cap",
        description="Run COMMAND at lower CPU and I/O priority (nice 10, best-effort I/O by "
        "default, as Avamar does) and, with --cpu, with the average CPU of COMMAND and every "
        "process it starts held at PERCENT of one core. The cap is the kernel's (a cgroup "
        "made for the command: exact, nothing is ever stopped) where throttlekit may write "
        "a cgroup (root, or a delegated cgroup v2 subtree with the cpu controller), else "
        "signals (stopping and continuing it, as cpulimit does); -v says which and why. "
        "Its exit status is passed through (127: not found, 126: cannot be run) and it is "
        "never left stopped, not even if throttlekit itself is killed. Every option is "
        "checked before it starts.",
    )
    p.add_argument(
        "--cpu",
        type=float,
        metavar="PERCENT",
        help="the most CPU on average, in %% of one core (above 0, at most 100 x the CPUs "
        "available; 250 is 2.5 cores)",
    )
    p.add_argument(
        "--nice",
        type=int,
        metavar="N",
        help="the nice value, -20 to 19 (default 10, or this process's own if higher; "
        "lower than that needs privilege)",
    )
    p.add_argument(
        "--ionice",
        metavar="CLASS[:LEVEL]",
        help="idle, none, best-effort[:0-7] or realtime[:0-7] (realtime needs privilege)",
    )
    p.add_argument(
        "--no-children",
        dest="children",
        action="store_false",
        help="cap COMMAND alone, not the processes it starts (signals backend only)",
    )
    p.add_argument(
        "--backend",
        choices=("auto", "cgroup", "signals"),
        default="auto",
        help="how --cpu is held: cgroup (the kernel's quota; needs a writable cgroup), "
        "signals (SIGSTOP/SIGCONT), or auto (default: cgroup where possible, else signals)",
    )
    p.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="say on stderr how the CPU cap is held and why",
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
    p.add_argument(
        "--scale", type=float, default=1.0, help="volume data scale, above 0 to 100 (1.0: ~10 s)"
    )
    p.add_argument("--site-rate", default="40MiB/s", metavar="RATE", help="site-wide limit")
    p.add_argument("--node-rate", default="16MiB/s", metavar="RATE", help="per-node limit")
    p.add_argument("--seed", type=int, default=7, help="seed of the simulated inventory")
    p.add_argument("--json", action="store_true", help="print the report as JSON only")
    p.set_defaults(func=_cmd_demo)

    add_site_command(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """
    Run the command line; returns the exit status (the console script exits with it).

    Nothing escapes as a traceback: every exception a command raises, on purpose or not,
    is turned into an exit status and at most one line on stderr (see the module's
    docstring for the statuses).
    """
    try:
        return _main(argv)
    except SystemExit:
        raise
    except BaseException as exc:  # the one place that catches everything
        try:
            return _failed(exc)
        except KeyboardInterrupt:  # a second Ctrl-C while handling the first
            return EXIT_INTERRUPTED
        except BaseException:  # even reporting it failed: the status still tells
            return EXIT_USAGE


def _main(argv: Sequence[str] | None) -> int:
    out = _Output(sys.stdout)
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:  # --help or --version, already written: make sure it is out
        out.flush()
        return exc.code if isinstance(exc.code, int) else 0
    status: int = args.func(args, cast(TextIO, out))
    out.flush()
    return status


def _leaves(exc: BaseException) -> Iterator[BaseException]:
    """The exceptions inside ``exc``'s groups (a task group wraps what its tasks raised)."""
    if isinstance(exc, BaseExceptionGroup) and not isinstance(exc, ThrottlekitError):
        for inner in exc.exceptions:
            yield from _leaves(inner)
    else:
        yield exc


def _failed(exc: BaseException) -> int:
    """The exit status for ``exc``, after its one line on stderr (if any)."""
    leaves = list(_leaves(exc))
    if any(isinstance(e, KeyboardInterrupt) for e in leaves):
        return EXIT_INTERRUPTED
    if any(isinstance(e, _ReaderGone) for e in leaves):
        return 0
    for kinds in ((_OutputError,), (_UsageError, _InputError, ThrottlekitError)):
        for leaf in leaves:
            if isinstance(leaf, kinds):
                _error_line(describe_error(leaf))
                return EXIT_USAGE
    for leaf in leaves:
        if isinstance(leaf, SystemExit):
            return leaf.code if isinstance(leaf.code, int) else EXIT_USAGE
    leaf = leaves[0]
    text = describe_error(leaf)
    what = f"{type(leaf).__name__}: {text}" if text else type(leaf).__name__
    _error_line(
        f"internal error: {what} (a bug: please report it, with the traceback that "
        "THROTTLEKIT_DEBUG=1 shows)"
    )
    if os.environ.get("THROTTLEKIT_DEBUG"):
        _traceback(exc)
    return EXIT_USAGE


def _traceback(exc: BaseException) -> None:
    import traceback

    try:
        if sys.stderr is not None:
            traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
    except (OSError, ValueError):
        pass


def _error_line(message: str) -> None:
    """``throttlekit: error: MESSAGE`` on stderr; if stderr is closed or full, nothing."""
    _message_line("error", message)


def _message_line(level: str, message: str) -> None:
    """``throttlekit: LEVEL: MESSAGE`` on stderr; if stderr is closed or full, nothing."""
    stream = sys.stderr
    if stream is None:
        return
    try:
        stream.write(f"throttlekit: {level}: {message}\n")
        stream.flush()
    except (OSError, ValueError):
        silence(stream)  # the exit status still tells; the last flush must not fail
