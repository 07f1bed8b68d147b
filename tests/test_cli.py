"""The throttlekit command line: every command, its arguments, and every way out."""

from __future__ import annotations

import asyncio
import functools
import json
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest

from throttlekit import ThrottlekitError
from throttlekit._cli import _demo
from throttlekit._cli import _main as _cli
from throttlekit._cli._main import main

if sys.version_info < (3, 11):  # pragma: no cover - the backport on 3.10
    from exceptiongroup import BaseExceptionGroup

SAMPLE_DIR = Path(__file__).parent.parent / "src" / "throttlekit" / "_cli" / "data"
CONFIGMAP = str(SAMPLE_DIR / "sample-node-agent-configmap.json")
NODES = str(SAMPLE_DIR / "sample-nodes.json")


class Hung(BaseException):
    """main() ran past its time limit (raised by a timer, so that a hang fails the test)."""


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """main(argv) in this process, with at most 30 s to finish: status, stdout, stderr."""
    hung = []

    def alarm(signum: int, frame: Any) -> None:
        hung.append(True)
        raise Hung(f"main({argv!r}) took more than 30 s")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, 30)
    try:
        status = main(list(argv))
    except SystemExit as exc:
        status = int(exc.code or 0)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    out, err = capsys.readouterr()
    if hung:  # main() turns even this into a status: the flag tells
        pytest.fail(f"main({list(argv)!r}) hung: {err}")
    return status, out, err


def write(tmp_path: Path, doc: object) -> str:
    path = tmp_path / "cfg.json"
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return str(path)


def test_validate_usable_config(capsys: pytest.CaptureFixture[str]) -> None:
    """A good ConfigMap validates with exit 0 and a summary."""
    status, out, _ = run(capsys, "validate", CONFIGMAP)
    assert status == 0
    assert "usable (global number 2, 4 rules, 0 skipped)" in out


def test_validate_lists_every_problem_and_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An unusable config prints each problem with its path and exits 1."""
    cfg = write(
        tmp_path, {"loadConcurrency": {"globalConfig": "2", "perNodeConfig": [{"number": 1.5}]}}
    )
    status, out, _ = run(capsys, "validate", cfg)
    assert status == 1
    assert "not usable, 2 problems" in out
    assert "loadConcurrency.globalConfig: expected an integer" in out
    assert "loadConcurrency.perNodeConfig[0].number: expected an integer" in out


def test_validate_warnings_pass_lenient_and_fail_strict(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Warnings are printed with exit 0; --strict makes them problems with exit 1."""
    cfg = write(tmp_path, {"loadConcurrency": {"globalConfig": 0}})
    status, out, _ = run(capsys, "validate", cfg)
    assert status == 0
    assert "warning: loadConcurrency.globalConfig: global number 0 is invalid" in out
    status, out, _ = run(capsys, "validate", "--strict", cfg)
    assert status == 1
    assert "loadConcurrency.globalConfig" in out


def test_resolve_nodes_prints_a_table(capsys: pytest.CaptureFixture[str]) -> None:
    """--nodes resolves every node of `kubectl get nodes -o json` output, one row each."""
    status, out, _ = run(capsys, "resolve", CONFIGMAP, "--nodes", NODES)
    assert status == 0
    lines = out.splitlines()
    assert lines[0].split() == ["NODE", "CONCURRENCY", "SOURCE", "WHY"]
    rows = {line.split()[0]: line.split()[1:3] for line in lines[1:]}
    assert rows == {
        "node1": ["3", "rule"],
        "node2": ["5", "rule"],
        "node3": ["8", "rule"],
        "node4": ["1", "rule"],
        "node5": ["2", "global"],
    }


def test_resolve_labels_with_explain(capsys: pytest.CaptureFixture[str]) -> None:
    """--labels resolves one node; --explain adds the full account."""
    status, out, _ = run(
        capsys, "resolve", CONFIGMAP, "--labels", "kubernetes.io/hostname=node1", "--explain"
    )
    assert status == 0
    assert "3 from rule 0 (kubernetes.io/hostname=node1): the only matching rule" in out


BROKEN_RULES = {
    "loadConcurrency": {
        "globalConfig": 2,
        "perNodeConfig": [
            {"nodeSelector": {"matchLabels": {"zone": "a"}}, "number": 0},
            {
                "nodeSelector": {
                    "matchExpressions": [{"key": "x", "operator": "in", "values": ["y"]}]
                },
                "number": 3,
            },
            {"nodeSelector": {"matchLabels": {"tier": "bulk"}}, "number": 4},
        ],
    },
    "globalconfig": 5,
}


@pytest.mark.parametrize("output", [(), ("--json",), ("--explain",)])
def test_resolve_prints_warnings_on_stderr_and_skipped_matches_in_the_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], output: tuple[str, ...]
) -> None:
    """A node matched only by a skipped rule does not read "no rule matches": the reason says
    the rule matched and why it was skipped; every warning of the config is on stderr, once,
    naming the file and the path, whatever the output format; stdout stays parseable."""
    cfg = write(tmp_path, BROKEN_RULES)
    status, out, err = run(capsys, "resolve", cfg, "--labels", "zone=a", *output)
    assert status == 0
    lines = err.splitlines()
    assert all(line.startswith(f"throttlekit: warning: {cfg}: ") for line in lines)
    assert len(lines) == len(set(lines)) == 3
    assert "globalconfig: unknown key" in err
    assert "loadConcurrency.perNodeConfig[0].number: rule skipped: number 0 is invalid" in err
    assert "perNodeConfig[1].nodeSelector.matchExpressions[0].operator: rule skipped" in err
    if output == ("--json",):
        (record,) = json.loads(out)
        reason = record["reason"]
    else:
        reason = out.splitlines()[1].split(None, 3)[3]
    assert "no rule matches" not in reason
    assert "rule 0 matched but was skipped: number 0 is invalid" in reason
    assert reason.startswith("The value is 2, the global number")


def test_resolve_without_warnings_prints_nothing_on_stderr(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A clean config resolves with an empty stderr."""
    status, _, err = run(capsys, "resolve", CONFIGMAP, "--nodes", NODES)
    assert (status, err) == (0, "")


def test_resolve_json(capsys: pytest.CaptureFixture[str]) -> None:
    """--json prints one record per node."""
    status, out, _ = run(capsys, "resolve", CONFIGMAP, "--nodes", NODES, "--json")
    assert status == 0
    records = json.loads(out)
    assert [(r["node"], r["value"], r["winner"]) for r in records][:2] == [
        ("node1", 3, 0),
        ("node2", 5, 1),
    ]


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["validate", "/nonexistent/cfg.json"], "cannot read /nonexistent/cfg.json"),
        (["resolve", CONFIGMAP, "--labels", "a=b c"], "--labels: label value 'b c'"),
        (["resolve", CONFIGMAP, "--labels", "novalue"], "--labels: 'novalue' is not key=value"),
        (["resolve", CONFIGMAP, "--labels", "a=1,a=2"], "given twice"),
        (
            ["resolve", CONFIGMAP, "--nodes", CONFIGMAP],
            "expected `kubectl get nodes -o json` output",
        ),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    argv: list[str], fragment: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Bad input gives one clear line on stderr and exit status 2, never a traceback."""
    status, _, err = run(capsys, *argv)
    assert status == 2
    assert err.count("\n") == 1
    assert err.startswith("throttlekit: error: ")
    assert fragment in err


def test_malformed_nodes_are_one_line_with_the_first_problem_and_a_count(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--nodes reads through read_node_labels: its first problem, with its path, on one line."""
    nodes = tmp_path / "nodes.json"
    nodes.write_text('{"items": [{"metadata": {}}, {"metadata": {"name": 3}}]}')
    status, out, err = run(capsys, "resolve", CONFIGMAP, "--nodes", str(nodes))
    assert (status, out) == (2, "")
    assert err == (
        f"throttlekit: error: {nodes}: items[0].metadata.name: expected the node's name, "
        "got null (and 1 more)\n"
    )


def test_resolve_with_unusable_config_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """resolve on a broken config names the first problem, points at validate, exits 1."""
    cfg = write(tmp_path, "{")
    status, _, err = run(capsys, "resolve", cfg, "--labels", "a=b")
    assert status == 1
    assert err.count("\n") == 1
    assert "not usable: not valid JSON" in err


def test_demo_runs_the_main_job(capsys: pytest.CaptureFixture[str]) -> None:
    """The demo resolves concurrency, backs up the sample cluster and reports, errors included."""
    status, out, _ = run(capsys, "demo", "--scale", "0.02", "--site-rate", "400MiB/s")
    assert status == 0
    assert "node4  1            rule" in out
    assert "Report (measured in this run):" in out
    assert "Errors (1), none dropped" in out
    assert "One or more additional items for pvc/data-node2-app0-0 failed" in out
    assert "through the site limit), one at a time:" in out
    assert "3 problems:" in out
    assert "did you mean globalConfig?" in out


def test_demo_json_report_adds_up(capsys: pytest.CaptureFixture[str]) -> None:
    """--json prints one document whose per-node figures add up to the totals."""
    status, out, _ = run(
        capsys, "demo", "--json", "--scale", "0.02", "--site-rate", "400MiB/s", "--seed", "3"
    )
    assert status == 0
    report = json.loads(out)
    assert report["concurrency"] == {"node1": 3, "node2": 5, "node3": 8, "node4": 1, "node5": 2}
    assert [n["concurrency"] for n in report["nodes"]] == [3, 5, 8, 1, 2]
    # everything moved went through a node (backups) or straight through the site (restores)
    assert report["restore_bytes"] > 0
    assert (
        report["total_bytes"] == sum(n["bytes"] for n in report["nodes"]) + report["restore_bytes"]
    )
    assert report["error_count"] == 1
    assert sum(n["failed"] for n in report["nodes"]) == 1
    assert all(n["succeeded"] + n["failed"] + n["skipped"] == n["blocks"] for n in report["nodes"])
    assert report["site_limit_per_second"] == 400 * 2**20


@pytest.mark.parametrize(
    ("args", "fragment"),
    [(["--scale", "0"], "--scale must be above 0"), (["--site-rate", "fast"], "invalid rate")],
)
def test_demo_bad_options(
    capsys: pytest.CaptureFixture[str], args: list[str], fragment: str
) -> None:
    """Bad demo options are one error line."""
    status, _, err = run(capsys, "demo", *args)
    assert status == 2
    assert fragment in err


def test_python_dash_m_works() -> None:
    """`python -m throttlekit` runs the same command line."""
    proc = subprocess.run(
        [sys.executable, "-m", "throttlekit", "validate", CONFIGMAP],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "usable" in proc.stdout


# -- run -----------------------------------------------------------------------------------


def throttlekit(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "throttlekit", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux priorities")
def test_run_lowers_priority_and_passes_the_exit_status() -> None:
    """`throttlekit run` starts the command at the nice value and returns its status."""
    script = "import os, sys; print(os.nice(0)); sys.exit(3)"
    result = throttlekit("run", "--nice", "13", "--", sys.executable, "-c", script)
    assert result.returncode == 3
    assert result.stdout.strip() == "13"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs /proc")
def test_run_with_a_cpu_cap_ends_with_the_command() -> None:
    """With --cpu, the throttle stops when the command exits, and the status passes through."""
    result = throttlekit("run", "--cpu", "50", "--", sys.executable, "-c", "print('done')")
    assert (result.returncode, result.stdout.strip()) == (0, "done")


def test_run_reports_death_by_signal_as_128_plus_n() -> None:
    """A command killed by a signal gives 128 + the signal number, as shells do."""
    result = throttlekit("run", "--", "sh", "-c", "kill -TERM $$")
    assert result.returncode == 128 + 15


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["run", "--ionice", "fast", "--", "true"], "invalid --ionice 'fast'"),
        (["run", "--ionice", "idle:3", "--", "true"], "the idle class has no level"),
        (["run", "--cpu", "0", "--", "true"], "invalid --cpu 0.0"),
        (["run"], "no command given"),
    ],
)
def test_run_bad_input_is_one_line(args: list[str], fragment: str) -> None:
    """Bad options and missing commands are one error line and exit status 2."""
    result = throttlekit(*args)
    assert result.returncode == 2
    assert result.stderr.startswith("throttlekit: error: ")
    assert fragment in result.stderr


@pytest.mark.parametrize("command", ["validate", "resolve", "pipe", "run", "demo"])
def test_every_command_has_help(capsys: pytest.CaptureFixture[str], command: str) -> None:
    """--help works for every command (argparse help texts are format strings)."""
    status, out, _ = run(capsys, command, "--help")
    assert status == 0
    assert "usage: throttlekit" in out


# -- every way out: real processes ------------------------------------------------------------

UNUSABLE = b'{"loadConcurrency": {"globalConfig": "2"}}'
SMALL_DEMO = ["--scale", "0.02", "--site-rate", "400MiB/s"]

# Runs many cases in real processes at the cost of one interpreter start: it imports the
# command line once, then forks a child per case. Each child puts a real /dev/full, a
# closed descriptor or a pipe with no reader on fd 0/1/2, rebuilds sys.stdin/stdout/stderr
# from them as the interpreter does at start (None for a closed descriptor; buffered, with
# stderr line buffered, or unbuffered as with PYTHONUNBUFFERED=1), runs main() and leaves
# through the interpreter's own exit, which flushes the streams as any process does. A few
# cases also run in fresh interpreters (FRESH), and a test checks they end the same way.
DRIVER = """
import io, json, os, sys
from throttlekit._cli._main import main

cases, work, buffered = json.load(open(sys.argv[1])), sys.argv[2], sys.argv[3] == "buffered"

def stdio(fd, write):
    try:
        os.fstat(fd)
    except OSError:
        return None
    raw = io.FileIO(fd, "w" if write else "r", closefd=False)
    if not write:
        return io.TextIOWrapper(io.BufferedReader(raw), encoding="utf-8")
    errors = "backslashreplace" if fd == 2 else "strict"
    line = buffered and (fd == 2 or raw.isatty())
    return io.TextIOWrapper(
        io.BufferedWriter(raw) if buffered else raw,
        encoding="utf-8", errors=errors, line_buffering=line, write_through=not buffered,
    )

def place(how, fd, capture):
    if how == "closed":
        os.close(fd)
        return
    if how == "full":
        new = os.open("/dev/full", os.O_WRONLY)
    elif how == "gone":
        r, new = os.pipe()
        os.close(r)
    elif how == "capture":
        new = os.open(capture, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    else:
        new = os.open(how, os.O_RDONLY)
    os.dup2(new, fd)
    os.close(new)

sys.stdout.flush()
children = {}
for name, case in cases.items():
    pid = os.fork()
    if pid == 0:
        place(case["stdin"], 0, None)
        place(case["stdout"], 1, os.path.join(work, sys.argv[3] + name + ".out"))
        place(case["stderr"], 2, os.path.join(work, sys.argv[3] + name + ".err"))
        sys.stdin, sys.stdout, sys.stderr = stdio(0, False), stdio(1, True), stdio(2, True)
        raise SystemExit(main(case["argv"]))
    children[name] = pid
statuses = {n: os.waitstatus_to_exitcode(os.waitpid(p, 0)[1]) for n, p in children.items()}
print(json.dumps(statuses))
"""


@dataclass(frozen=True)
class Case:
    """A command with its stdin/stdout/stderr set up as a user might."""

    argv: tuple[str, ...]
    stdout: str = "capture"  # capture | full (/dev/full) | closed (>&-) | gone (no reader)
    stderr: str = "capture"  # capture | full | closed
    stdin: bytes | None = b""  # None: closed (<&-)

    def start(self, mode: str) -> subprocess.Popen[bytes]:
        """This case in a fresh interpreter (stdin, and captures, are pipes)."""
        closed = [
            fd
            for fd, how in ((0, self.stdin), (1, self.stdout), (2, self.stderr))
            if how is None or how == "closed"
        ]
        ends: list[int] = []

        def target(how: str) -> Any:
            if how == "capture":
                return subprocess.PIPE
            if how == "full":
                fd = os.open("/dev/full", os.O_WRONLY)
            elif how == "gone":
                r, fd = os.pipe()
                os.close(r)
            else:
                return subprocess.DEVNULL  # closed in the child, below
            ends.append(fd)
            return fd

        env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
        if mode == "unbuffered":
            env["PYTHONUNBUFFERED"] = "1"
        process = subprocess.Popen(
            [sys.executable, "-m", "throttlekit", *self.argv],
            env=env,
            stdin=subprocess.PIPE,
            stdout=target(self.stdout),
            stderr=target(self.stderr),
            preexec_fn=(lambda: [os.close(fd) for fd in closed]) if closed else None,
        )
        for fd in ends:
            os.close(fd)
        return process


OUTPUTS = ("full", "closed", "gone")
COMMANDS = {  # argv, stdin, status when all goes well
    "validate": (("validate", CONFIGMAP), b"", 0),
    "resolve": (("resolve", CONFIGMAP, "--nodes", NODES), b"", 0),
    "pipe": (("pipe", "--rate", "100MB/s"), b"x" * 100_000, 0),
    "run": (("run", "--", "sh", "-c", "exit 3"), b"", 3),
    "demo": (("demo", *SMALL_DEMO), b"", 0),
    "--help": (("pipe", "--help"), b"", 0),
    "--version": (("--version",), b"", 0),
}
CASES = {
    f"{name} >{how}": Case(argv, stdout=how, stdin=data)
    for name, (argv, data, _) in COMMANDS.items()
    for how in OUTPUTS
} | {
    "validate unusable >gone": Case(("validate", "-"), stdout="gone", stdin=UNUSABLE),
    "demo --json >full": Case(("demo", "--json", *SMALL_DEMO), stdout="full"),
    "validate - <&-": Case(("validate", "-"), stdin=None),
    "pipe <&-": Case(("pipe", "--rate", "off"), stdin=None),
    "error 2>/dev/full": Case(("pipe", "--rate", "0"), stderr="full"),
    "error 2>&-": Case(("pipe", "--rate", "0"), stderr="closed"),
    "error >&- 2>&-": Case(("validate", "/nonexistent"), stdout="closed", stderr="closed"),
    "pipe --progress 2>/dev/full": Case(
        ("pipe", "--rate", "off", "--progress"), stderr="full", stdin=b"y" * 1000
    ),
}
FRESH = ("--help >full", "pipe --progress 2>/dev/full", "demo >gone")
MODES = ("buffered", "unbuffered")
Outcome = tuple[int, str, bytes]  # status, stderr, stdout


def forked(cases: dict[str, Case], work: Path) -> dict[str, dict[str, Outcome]]:
    plan = {}
    for i, case in enumerate(cases.values()):
        stdin: str = "closed"
        if case.stdin is not None:
            (work / f"{i}.in").write_bytes(case.stdin)
            stdin = str(work / f"{i}.in")
        plan[str(i)] = {"argv": case.argv, "stdout": case.stdout, "stderr": case.stderr}
        plan[str(i)]["stdin"] = stdin
    (work / "plan.json").write_text(json.dumps(plan))
    drivers = {
        mode: subprocess.Popen(
            [sys.executable, "-c", DRIVER, str(work / "plan.json"), str(work), mode],
            stdout=subprocess.PIPE,
        )
        for mode in MODES
    }
    statuses = {mode: json.loads(d.communicate(timeout=120)[0]) for mode, d in drivers.items()}

    def captured(path: Path) -> bytes:
        return path.read_bytes() if path.exists() else b""

    return {
        mode: {
            name: (
                statuses[mode][str(i)],
                captured(work / f"{mode}{i}.err").decode(),
                captured(work / f"{mode}{i}.out"),
            )
            for i, name in enumerate(cases)
        }
        for mode in MODES
    }


@functools.cache
def outcomes() -> tuple[dict[str, dict[str, Outcome]], dict[str, dict[str, Outcome]]]:
    """Every case (forked children of one interpreter per mode) and the FRESH ones."""
    fresh = {(mode, name): CASES[name].start(mode) for name in FRESH for mode in MODES}
    with tempfile.TemporaryDirectory() as work:
        every = forked(CASES, Path(work))
    results: dict[str, dict[str, Outcome]] = {mode: {} for mode in MODES}
    for (mode, name), process in fresh.items():
        out, err = process.communicate(CASES[name].stdin or b"", timeout=120)
        results[mode][name] = (process.returncode, (err or b"").decode(), out or b"")
    return every, results


def outcome(name: str, mode: str) -> Outcome:
    return outcomes()[0][mode][name]


def assert_one_error_line(err: str, fragment: str) -> None:
    assert "Traceback" not in err
    assert err.startswith("throttlekit: error: ")
    assert err.count("\n") == 1
    assert fragment in err


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("how", OUTPUTS)
@pytest.mark.parametrize("command", COMMANDS)
def test_our_output_failing_is_one_line_and_never_a_traceback(
    command: str, how: str, mode: str
) -> None:
    """
    Every command x stdout to /dev/full, closed, or a pipe whose reader is gone: a full or
    closed stdout is one error line and status 2 (run writes nothing of its own: the
    command's status passes); a reader gone is quiet, with the status the command would
    have had.
    """
    status, err, _ = outcome(f"{command} >{how}", mode)
    normal = COMMANDS[command][2]
    if how == "gone" or command == "run":
        assert (status, err) == (normal, "")
    elif how == "full":
        assert status == 2
        assert_one_error_line(err, "cannot write to stdout: No space left on device")
    else:
        assert status == 2
        assert_one_error_line(err, "cannot write to stdout: Bad file descriptor")


@pytest.mark.parametrize(
    ("case", "status", "fragment"),
    [
        ("validate unusable >gone", 1, None),  # the verdict stands, even unread
        ("demo --json >full", 2, "cannot write to stdout: No space left on device"),
        ("validate - <&-", 2, "cannot read -: Bad file descriptor (stdin is closed)"),
        ("pipe <&-", 2, "cannot read stdin: Bad file descriptor (stdin is closed)"),
        ("error 2>/dev/full", 2, None),
        ("error 2>&-", 2, None),
        ("error >&- 2>&-", 2, None),
        ("pipe --progress 2>/dev/full", 0, None),
    ],
)
@pytest.mark.parametrize("mode", MODES)
def test_other_ways_out(case: str, status: int, fragment: str | None, mode: str) -> None:
    """
    A closed stdin is one line; a report written at the end (demo --json) fails at the end;
    when stderr itself fails, the status still tells (and the pipe's progress line, best
    effort, stops while the copy goes on).
    """
    got, err, _ = outcome(case, mode)
    assert got == status
    if fragment is None:
        assert err == ""
    else:
        assert_one_error_line(err, fragment)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", FRESH)
def test_a_fresh_interpreter_ends_the_same_way(case: str, mode: str) -> None:
    """The forked children above behave as fresh `python -m throttlekit` processes do."""
    every, fresh = outcomes()
    assert fresh[mode][case] == every[mode][case]


# -- every numeric option x zero, negative, NaN, infinite, huge, tiny, garbage -------------

HUGE, TINY = "1e300", "1e-300"
NUMERIC: dict[tuple[str, str], dict[str, int]] = {
    ("pipe", "--rate"): {
        "0": 2, "-1": 2, "nan": 2, "inf": 0, HUGE: 0, TINY: 2, "garbage": 2, "1e400": 2,
    },
    ("pipe", "--burst"): {
        "0": 2, "-1": 2, "nan": 2, "inf": 2, "1e30": 0, "0.5": 2, "garbage": 2, "0s": 2,
        "-1s": 2, "0.0001ms": 2, "0.001ms": 0, "99999999999999999999s": 2,
    },
    ("demo", "--scale"): {
        "0": 2, "-1": 2, "nan": 2, "inf": 2, HUGE: 2, TINY: 0, "garbage": 2, "100": 0,
    },
    ("demo", "--site-rate"): {
        "0": 2, "-1": 2, "nan": 2, "inf": 0, HUGE: 0, TINY: 2, "garbage": 2, "1KiB/s": 2,
    },
    ("demo", "--node-rate"): {
        "0": 2, "-1": 2, "nan": 2, "inf": 0, HUGE: 0, TINY: 2, "garbage": 2, "1KiB/s": 2,
    },
    ("demo", "--seed"): {
        "0": 0, "-1": 0, "nan": 2, "inf": 2, "1" + "0" * 40: 0, "0.5": 2, "garbage": 2,
    },
    ("run", "--cpu"): {"0": 2, "-1": 2, "nan": 2, "inf": 2, HUGE: 2, "garbage": 2},
    ("run", "--nice"): {
        "999": 2, "-999": 2, "nan": 2, "inf": 2, "99999999999999999999": 2, "0.5": 2,
        "garbage": 2,
    },
}  # fmt: skip
NUMERIC_CASES = [
    (command, option, value, status)
    for (command, option), values in NUMERIC.items()
    for value, status in values.items()
]


@pytest.mark.parametrize(("command", "option", "value", "status"), NUMERIC_CASES)
def test_numeric_options(
    command: str,
    option: str,
    value: str,
    status: int,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """
    Refused values are one error line naming the option and status 2, before anything
    starts; accepted ones run (the demo's simulation is stubbed here: it runs in full in
    the tests above; an accepted pipe copies between real files).
    """
    monkeypatch.setattr(_demo, "run_demo", lambda demo, out: {"stubbed": True})
    if command == "pipe":
        (tmp_path / "in").write_bytes(b"y" * 1000)
        stdin, stdout = (tmp_path / "in").open(), (tmp_path / "out").open("w")
        monkeypatch.setattr(sys, "stdin", stdin)
        monkeypatch.setattr(sys, "stdout", stdout)
        request.addfinalizer(stdin.close)
        request.addfinalizer(stdout.close)
    argv = [command, f"{option}={value}"]
    if option == "--burst":
        argv.append("--rate=1MB/s")
    elif command == "demo":
        argv.append("--json")
    elif command == "run":
        argv += ["--", "true"]
    got, out, err = run(capsys, *argv)
    assert got == status, err
    if status == 2:
        assert_one_error_line(err, option)
        assert out == ""
    elif command == "pipe":
        assert (tmp_path / "out").read_bytes() == b"y" * 1000
    else:
        assert err == ""
        assert json.loads(out)["stubbed"] is True


# -- what a command raises x how it is raised ------------------------------------------------


class Custom(BaseException):
    """A BaseException of someone's own, not an Exception."""


class Unprintable(Exception):
    """An exception whose message itself fails."""

    def __str__(self) -> str:
        raise RuntimeError("no message")


RAISED: dict[str, tuple[Callable[[], BaseException], int, str | None]] = {
    "Exception": (lambda: ValueError("boom"), 2, "internal error: ValueError: boom"),
    "ThrottlekitError": (lambda: ThrottlekitError("refused"), 2, "refused"),
    "KeyboardInterrupt": (KeyboardInterrupt, 130, None),
    "SystemExit": (lambda: SystemExit(5), 5, None),
    "custom BaseException": (lambda: Custom("odd"), 2, "internal error: Custom: odd"),
    "cancellation": (asyncio.CancelledError, 2, "internal error: CancelledError"),
    "MemoryError": (MemoryError, 2, "internal error: MemoryError"),
    "unprintable": (
        Unprintable,
        2,
        "internal error: Unprintable: (its message cannot be shown)",
    ),
    "RecursionError": (
        lambda: RecursionError("maximum recursion depth exceeded"),
        2,
        "internal error: RecursionError: maximum recursion depth exceeded",
    ),
}


def raise_directly(exc: BaseException) -> None:
    raise exc


def raise_in_a_group(exc: BaseException) -> None:
    raise BaseExceptionGroup("several", [exc])


def raise_in_a_task(backend: str) -> Callable[[BaseException], None]:
    def raiser(exc: BaseException) -> None:
        async def task() -> None:
            raise exc

        async def body() -> None:
            async with anyio.create_task_group() as tg:
                tg.start_soon(task)

        anyio.run(body, backend=backend)

    return raiser


HOW = {
    "directly": raise_directly,
    "in a group": raise_in_a_group,
    "in an asyncio task": raise_in_a_task("asyncio"),
    "in a trio task": raise_in_a_task("trio"),
}


@pytest.mark.parametrize("how", HOW)
@pytest.mark.parametrize("raised", RAISED)
def test_whatever_a_command_raises_is_a_status_and_at_most_one_line(
    raised: str, how: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """
    Anything a command raises, on purpose or not, directly or out of a task group on either
    backend, becomes an exit status and at most one line: never a traceback.
    """
    make, status, fragment = RAISED[raised]
    if (raised, how) == ("cancellation", "in an asyncio task"):
        # anyio takes a task's own CancelledError for that task being cancelled: nothing
        # escapes the task group, so the command simply returns.
        status, fragment = 0, None

    def command(args: Any, out: Any) -> int:
        HOW[how](make())
        return 0

    monkeypatch.setattr(_cli, "_cmd_validate", command)
    monkeypatch.delenv("THROTTLEKIT_DEBUG", raising=False)
    got, out, err = run(capsys, "validate", CONFIGMAP)
    assert got == status
    assert out == ""
    if fragment is None:
        assert err == ""
    else:
        assert_one_error_line(err, fragment)


def test_throttlekit_debug_shows_the_traceback_of_an_internal_error(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """THROTTLEKIT_DEBUG=1 adds the traceback after the line, for a bug report."""

    def command(args: Any, out: Any) -> int:
        raise ZeroDivisionError("oops")

    monkeypatch.setattr(_cli, "_cmd_validate", command)
    monkeypatch.setenv("THROTTLEKIT_DEBUG", "1")
    status, _, err = run(capsys, "validate", CONFIGMAP)
    assert status == 2
    assert err.startswith("throttlekit: error: internal error: ZeroDivisionError: oops")
    assert "Traceback (most recent call last)" in err


def test_ctrl_c_in_the_demo_exits_130_without_a_traceback() -> None:
    """SIGINT while the demo runs (its tasks, its limiters): 130, nothing on stderr."""
    process = subprocess.Popen(
        [sys.executable, "-m", "throttlekit", "demo"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None
    assert process.stdout.readline().startswith(b"throttlekit demo")  # main() is running
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=30)
    assert process.returncode == 130
    assert err == b""


# -- validate and resolve arguments -----------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["validate", str(SAMPLE_DIR)], "Is a directory"),
        (["validate", "/dev/zero"], "it is larger than 64MiB"),
        (["resolve", CONFIGMAP, "--nodes", "/nonexistent.json"], "cannot read /nonexistent"),
        (["resolve", CONFIGMAP, "--nodes", str(SAMPLE_DIR)], "Is a directory"),
        (["resolve", CONFIGMAP, "--labels", "=v"], "--labels"),
        (["resolve", CONFIGMAP], "one of the arguments --labels --nodes is required"),
        (["resolve", CONFIGMAP, "--labels", "a=b", "--nodes", NODES], "not allowed with"),
        (["nonsense"], "invalid choice: 'nonsense'"),
        ([], "the following arguments are required: COMMAND"),
        (["validate", CONFIGMAP, "--frobnicate"], "unrecognized arguments: --frobnicate"),
    ],
)
def test_bad_arguments_are_one_line_naming_them(
    argv: list[str], fragment: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Files that are not files, endless input, malformed labels, usage errors: one line."""
    status, out, err = run(capsys, *argv)
    assert (status, out) == (2, "")
    assert_one_error_line(err, fragment)


def test_deeply_nested_json_is_never_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """'['*1000: whatever the loader does with it, the command line says so in one line."""
    status, out, err = run(capsys, "validate", write(tmp_path, "[" * 100_000 + "]" * 100_000))
    assert status in (1, 2)
    assert "Traceback" not in err + out
    assert err.count("\n") + out.count("\n") >= 1
