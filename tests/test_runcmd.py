"""
``throttlekit run``: options checked before anything starts, the exit status always
passed through, signals forwarded, and the command never left stopped, even when
``throttlekit`` itself is SIGKILLed while the command is stopped.

Real processes, real time: every wait is bounded, and only states are asserted (stopped
or not, exit statuses), never durations.
"""

from __future__ import annotations

import asyncio
import errno
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest

import throttlekit._cli._run as runcmd
import throttlekit._throttle._cpu as cpu_module
from _procs import WAIT, state, wait_until
from throttlekit import ConfigError, ProcessControlError, ThrottlekitError
from throttlekit._cli._run import _check, _Privileges, check_run_options, run_command

if sys.version_info < (3, 11):  # pragma: no cover - the backport on 3.10
    from exceptiongroup import BaseExceptionGroup, ExceptionGroup

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs /proc")

UNPRIVILEGED = _Privileges(nice=0, rlimit_nice=0, capabilities=0)
CAP_SYS_NICE = 1 << 23


def throttlekit(*args: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # type: ignore[call-overload, no-any-return]
        [sys.executable, "-m", "throttlekit", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        **kwargs,
    )


def children(parent: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except (FileNotFoundError, ProcessLookupError):
                continue
            if int(fields[1]) == parent and fields[0] != "Z":
                found.append(int(entry.name))
    return found


# -- every option checked before the command starts ---------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "fragment"),
    [
        ({"cpu": math.inf}, ConfigError, "invalid --cpu inf: a percentage of one core"),
        ({"cpu": math.nan}, ConfigError, "invalid --cpu nan"),
        ({"cpu": 0.0}, ConfigError, "invalid --cpu 0.0"),
        ({"cpu": -30.0}, ConfigError, "invalid --cpu -30.0"),
        ({"cpu": 201.0}, ConfigError, "at most 200 (2 CPUs available here)"),
        ({"cpu": True}, TypeError, "cpu must be a number"),
        ({"cpu": "30"}, TypeError, "cpu must be a number"),
        ({"nice": 999}, ConfigError, "invalid --nice 999: the nice value is -20"),
        ({"nice": -21}, ConfigError, "invalid --nice -21"),
        ({"nice": 20}, ConfigError, "invalid --nice 20"),
        ({"nice": 1.5}, TypeError, "nice must be an int"),
        ({"nice": -5}, ConfigError, "invalid --nice -5: going below this process's nice"),
        ({"ionice": "fast"}, ConfigError, "invalid --ionice 'fast': the class is"),
        ({"ionice": ""}, ConfigError, "invalid --ionice '': the class is"),
        ({"ionice": "be:8"}, ConfigError, "the level must be 0 to 7"),
        ({"ionice": "be:x"}, ConfigError, "the level must be 0 to 7"),
        ({"ionice": "be:"}, ConfigError, "the level must be 0 to 7"),
        ({"ionice": "be:\u00b2"}, ConfigError, "the level must be 0 to 7"),  # a digit, not 0-9
        ({"ionice": "be:-1"}, ConfigError, "the level must be 0 to 7"),
        ({"ionice": "idle:3"}, ConfigError, "the idle class has no level"),
        ({"ionice": "none:2"}, ConfigError, "the none class has no level"),
        ({"ionice": "realtime"}, ConfigError, "the realtime class needs root"),
        ({"ionice": 2}, TypeError, "ionice must be a string"),
        ({"argv": []}, ConfigError, "no command given"),
        ({"argv": "ls"}, TypeError, "argv must be a sequence of strings"),
        ({"argv": [b"ls"]}, TypeError, "argv must be a sequence of strings"),
    ],
)
def test_bad_run_options_are_refused(
    kwargs: dict[str, object], error: type[Exception], fragment: str
) -> None:
    """Every bad value names its option (unprivileged, on a 2-CPU machine)."""
    arguments: dict[str, object] = {"argv": ["true"], "cpu": None, "nice": None, "ionice": None}
    arguments.update(kwargs)
    with pytest.raises(error) as caught:
        _check(**arguments, privileges=UNPRIVILEGED, cpus=2.0)  # type: ignore[arg-type]
    assert fragment in str(caught.value)
    if error is ConfigError:
        assert isinstance(caught.value, ThrottlekitError | ValueError)


ROOTLESS_NICE = _Privileges(nice=0, rlimit_nice=0, capabilities=CAP_SYS_NICE)


@pytest.mark.parametrize(
    ("kwargs", "privileges", "expected"),
    [
        ({}, UNPRIVILEGED, {"nice": 10, "io_class": "best-effort", "io_value": 2 << 13 | 6}),
        ({"nice": 19, "ionice": "idle"}, UNPRIVILEGED, {"io_class": "idle", "io_value": 3 << 13}),
        ({"ionice": "2:7"}, UNPRIVILEGED, {"io_level": 7, "io_value": 2 << 13 | 7}),
        ({"ionice": " BE : 3 "}, UNPRIVILEGED, {"io_level": 3, "io_value": 2 << 13 | 3}),
        ({"ionice": "none"}, UNPRIVILEGED, {"io_class": "none", "io_value": 0}),
        # Never raised by default: under nice 15, the command stays at 15.
        ({}, _Privileges(nice=15, rlimit_nice=0, capabilities=0), {"nice": 15}),
        # Below its own nice value: allowed by RLIMIT_NICE (20 - nice) or CAP_SYS_NICE.
        ({"nice": -5}, _Privileges(nice=0, rlimit_nice=25, capabilities=0), {"nice": -5}),
        ({"nice": -5}, ROOTLESS_NICE, {"nice": -5}),
        ({"ionice": "rt:0"}, ROOTLESS_NICE, {"io_class": "realtime", "io_value": 1 << 13}),
        ({"cpu": 200}, UNPRIVILEGED, {"cpu": 200.0}),
    ],
)
def test_good_run_options(
    kwargs: dict[str, object], privileges: _Privileges, expected: dict[str, object]
) -> None:
    """What is allowed: the defaults, explicit classes and levels, privileges that permit."""
    options = _check(
        ["true"],
        kwargs.get("cpu"),
        kwargs.get("nice"),
        kwargs.get("ionice"),
        privileges=privileges,
        cpus=2.0,
    )
    assert {name: getattr(options, name) for name in expected} == expected


def test_the_real_check_reads_this_process() -> None:
    """check_run_options uses this machine's CPUs and this process's privileges."""
    cpus = cpu_module.available_cpus()
    assert check_run_options(["true"], cpu=100 * cpus).cpu == 100 * cpus
    with pytest.raises(ConfigError, match=r"invalid --cpu"):
        check_run_options(["true"], cpu=100 * cpus + 1)


@pytest.mark.parametrize(
    "options",
    [["--cpu", "inf"], ["--ionice", "be:\u00b2"]],  # it was orphaned; a traceback
)
def test_nothing_starts_when_an_option_is_bad(options: list[str], tmp_path: Path) -> None:
    """The command is checked first: one error line, exit 2, and the command never ran."""
    marker = tmp_path / "ran"
    result = throttlekit("run", *options, "--", "touch", str(marker))
    assert (result.returncode, marker.exists()) == (2, False)
    assert result.stderr.startswith("throttlekit: error: invalid --")
    assert result.stderr.count("\n") == 1


@pytest.fixture
def without_cap_sys_nice() -> list[str]:
    """A command prefix that runs without CAP_SYS_NICE (root drops it from its bounding set)."""
    if os.geteuid() != 0:
        if runcmd._privileges().has(23):
            pytest.skip("this user has CAP_SYS_NICE and is not root")
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("setpriv (util-linux) is not installed")
    return [setpriv, "--bounding-set=-sys_nice", "--"]


@linux_only
def test_a_priority_it_may_not_give_is_refused_before_start(
    without_cap_sys_nice: list[str], tmp_path: Path
) -> None:
    """Unprivileged, --nice -5 is an error and nothing runs; --nice 15 runs (the control)."""

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*without_cap_sys_nice, sys.executable, "-m", "throttlekit", "run", *args],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )

    refused = run("--nice", "-5", "--", "touch", str(tmp_path / "refused"))
    assert refused.returncode == 2
    assert "invalid --nice -5: going below this process's nice value" in refused.stderr
    assert not (tmp_path / "refused").exists()
    allowed = run("--nice", "15", "--", "touch", str(tmp_path / "allowed"))
    assert allowed.returncode == 0, allowed.stderr
    assert (tmp_path / "allowed").exists()


def test_a_priority_the_kernel_refuses_is_an_error_and_nothing_runs(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Should the kernel refuse what the check allowed, the command still never starts."""

    def refuse(nice: int, io_value: int) -> None:  # runs in the forked child
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(runcmd, "apply_priority_in_child", refuse)
    marker = tmp_path / "ran"
    with pytest.raises(ProcessControlError, match="cannot start touch at nice 10 and best"):
        run_command(["touch", str(marker)])
    assert not marker.exists()


@pytest.mark.parametrize("backend", ["signals", "cgroup"])
@pytest.mark.parametrize(
    ("make", "status", "fragment"),
    [
        (lambda d: "no-such-command-here", 127, "command not found: no-such-command-here"),
        (lambda d: str(d / "missing" / "tool"), 127, "command not found: "),
        (lambda d: _script(d, "#!/bin/sh\n", 0o644), 126, "Permission denied"),
        (lambda d: str(d), 126, "cannot run "),
        (lambda d: _script(d, "\x7fELF garbage", 0o755), 126, "Exec format error"),
    ],
    ids=["not on PATH", "no such path", "not executable", "a directory", "not a program"],
)
def test_a_command_that_cannot_run_exits_127_or_126(
    capfd: pytest.CaptureFixture[str],
    tmp_path: Path,
    backend: str,
    make: Callable[[Path], str],
    status: int,
    fragment: str,
) -> None:
    """As env, nice and timeout: 127 not found, 126 found but not runnable; one line."""
    if backend == "cgroup" and not isinstance(cpu_module.cgroup_place(), cpu_module.CgroupPlace):
        pytest.skip(f"no cgroup may be made here: {cpu_module.cgroup_place()}")
    assert run_command([make(tmp_path)], cpu=30, backend=backend) == status
    err = capfd.readouterr().err
    assert err.startswith("throttlekit: error: ")
    assert fragment in err
    assert err.count("\n") == 1


def _script(directory: Path, text: str, mode: int) -> str:
    path = directory / "script"
    path.write_text(text)
    path.chmod(mode)
    return str(path)


def test_the_command_line_exits_127_and_126() -> None:
    """Through `throttlekit run` itself, without --cpu."""
    missing = throttlekit("run", "--", "no-such-command-here")
    assert missing.returncode == 127
    assert missing.stderr == "throttlekit: error: command not found: no-such-command-here\n"
    directory = throttlekit("run", "--", "/")
    assert directory.returncode == 126
    assert directory.stderr.startswith("throttlekit: error: cannot run /: ")


# -- a failure once the command runs: never orphaned, status kept ------------------------


class CustomBaseError(BaseException):
    pass


def cancelled() -> BaseException:
    return anyio.get_cancelled_exc_class()()


# (name, how to make it, an Exception: warned and the status returned?)
FAULTS: list[tuple[str, Callable[[], BaseException], bool]] = [
    ("ProcessControlError", lambda: ProcessControlError(errno.EPERM, "cannot signal it"), True),
    ("RuntimeError", lambda: RuntimeError("boom"), True),
    ("ExceptionGroup", lambda: ExceptionGroup("many", [ValueError("a"), OSError("b")]), True),
    ("KeyboardInterrupt", KeyboardInterrupt, False),
    ("SystemExit", lambda: SystemExit(5), False),
    ("CustomBaseError", CustomBaseError, False),
    ("cancellation", cancelled, False),
]


def leaves(error: BaseException) -> list[type[BaseException]]:
    if isinstance(error, BaseExceptionGroup):
        return [kind for inner in error.exceptions for kind in leaves(inner)]
    return [type(error)]


@linux_only
@pytest.mark.parametrize("where", ["at once", "after a while"])
@pytest.mark.parametrize(("name", "fault", "is_error"), FAULTS, ids=[f[0] for f in FAULTS])
def test_a_throttle_failure_after_start_keeps_the_command(
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    tmp_path: Path,
    where: str,
    name: str,
    fault: Callable[[], BaseException],
    is_error: bool,
) -> None:
    """
    Whatever the throttle raises once the command runs, the command is waited for (never
    orphaned) and signal handlers are restored. An Exception is a warning and the
    command's own status is returned; an interrupt (any other BaseException) propagates,
    but only after the command ended.
    """
    seen: list[int] = []
    raised: list[BaseException] = []

    async def failing_throttle(
        process: subprocess.Popen[bytes], percent: float, *, include_children: bool
    ) -> None:
        seen.append(process.pid)
        if where == "after a while":
            for _ in range(5):
                await anyio.sleep(0.002)
        raised.append(fault())
        go.touch()  # the command ends only now: the fault always comes while it runs
        raise raised[0]

    monkeypatch.setattr(runcmd, "throttle_process", failing_throttle)
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    go = tmp_path / "go"
    command = ["sh", "-c", f"while [ ! -e '{go}' ]; do sleep 0.01; done; exit 7"]
    if is_error:
        assert run_command(command, cpu=50, backend="signals") == 7
        err = capfd.readouterr().err
        warnings = [line for line in err.splitlines() if line.startswith("throttlekit: ")]
        assert len(warnings) == 1, err
        assert warnings[0].startswith("throttlekit: warning: cannot hold sh to --cpu 50 (")
        assert warnings[0].endswith("it runs on without a CPU cap")
    else:
        interrupts = (KeyboardInterrupt, SystemExit, CustomBaseError, asyncio.CancelledError)
        with pytest.raises((*interrupts, BaseExceptionGroup)) as caught:
            run_command(command, cpu=50, backend="signals")  # anyio.run: on asyncio
        assert type(raised[0]) in leaves(caught.value)
    assert state(seen[0]) == "gone"  # waited for: reaped, not orphaned
    assert {s: signal.getsignal(s) for s in before} == before


@linux_only
def test_a_command_that_becomes_unsignallable_runs_on_uncapped(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    """The real throttle failing mid-run (a set-user-ID exec, say): warned, status kept."""
    real = cpu_module._Target.signal

    def refuse_stops(self: cpu_module._Target, sig: int) -> None:
        if sig == signal.SIGSTOP:
            raise PermissionError(errno.EPERM, "Operation not permitted")
        real(self, sig)

    monkeypatch.setattr(cpu_module._Target, "signal", refuse_stops)
    busy_then_7 = "i=0; while [ $i -lt 30000 ]; do i=$((i+1)); done; exit 7"
    assert run_command(["sh", "-c", busy_then_7], cpu=5, backend="signals") == 7
    assert "cannot signal process" in capfd.readouterr().err


# -- signals ----------------------------------------------------------------------------

BUSY_SH = "echo $$; while :; do :; done"
# `throttlekit run --cpu PERCENT --backend signals -- COMMAND...` (run_command itself, so
# that these tests do not depend on the option parser)
RUN_SIGNALS = (
    "import sys; from throttlekit._cli._run import run_command; "
    "sys.exit(run_command(sys.argv[2:], cpu=float(sys.argv[1]), backend='signals'))"
)


def start_run(cpu: str) -> tuple[subprocess.Popen[bytes], int]:
    """`throttlekit run --cpu CPU --backend signals -- sh -c BUSY_SH`, and its pid."""
    run = subprocess.Popen(
        [sys.executable, "-c", RUN_SIGNALS, cpu, "sh", "-c", BUSY_SH],
        stdout=subprocess.PIPE,
    )
    assert run.stdout is not None
    return run, int(run.stdout.readline())


@linux_only
def test_sigterm_is_forwarded_even_to_a_stopped_command() -> None:
    """SIGTERM to throttlekit reaches the (mostly stopped) command: exit 128 + 15."""
    run, command = start_run("5")
    try:
        wait_until(lambda: state(command) == "T", "the command stopped once")
        run.send_signal(signal.SIGTERM)
        assert run.wait(WAIT) == 128 + signal.SIGTERM
        assert state(command) == "gone"
    finally:
        run.kill()
        run.wait(WAIT)
        assert run.stdout is not None
        run.stdout.close()


@pytest.mark.parametrize(
    ("ignored", "signum", "status"),
    [
        (False, signal.SIGHUP, 128 + signal.SIGHUP),
        (True, signal.SIGHUP, 3),  # nohup throttlekit run ...: the command ignores it too
        (False, signal.SIGINT, 128 + signal.SIGINT),  # ignored by us, not by the command
    ],
)
def test_the_command_gets_the_signal_dispositions_we_were_given(
    ignored: bool, signum: signal.Signals, status: int
) -> None:
    """Handlers are installed before the start, yet the command inherits ours, not theirs."""

    def dispositions() -> None:
        signal.signal(signum, signal.SIG_IGN if ignored else signal.SIG_DFL)

    script = f"kill -{signum.name[3:]} $$; exit 3"
    result = throttlekit("run", "--", "sh", "-c", script, preexec_fn=dispositions)
    assert result.returncode == status, result.stderr


# -- SIGKILL of throttlekit while the command is stopped ------------------------------------


def freeze_while_stopped(run: subprocess.Popen[bytes], command: int) -> None:
    """SIGSTOP ``run`` at a moment when ``command`` is stopped (seen while frozen)."""
    deadline = time.monotonic() + WAIT
    while True:
        os.kill(run.pid, signal.SIGSTOP)
        wait_until(lambda: state(run.pid) == "T", "throttlekit frozen")
        if state(command) == "T":
            return
        os.kill(run.pid, signal.SIGCONT)
        if time.monotonic() > deadline:
            pytest.fail("the command was never seen stopped")
        time.sleep(0.01)


@linux_only
@pytest.mark.parametrize("attempt", [1, 2])
def test_sigkill_of_throttlekit_never_leaves_the_command_stopped(attempt: int) -> None:
    """
    `throttlekit run --cpu 5` (the command stopped 95% of the time) is SIGKILLed while the
    command is stopped: the command is continued (by the watchdog, and by its
    parent-death signal), and the watchdog exits.
    """
    run, command = start_run("5")
    try:
        freeze_while_stopped(run, command)
        helpers = [pid for pid in children(run.pid) if pid != command]
        assert len(helpers) == 1  # the watchdog
        os.kill(run.pid, signal.SIGKILL)
        run.wait(WAIT)
        wait_until(lambda: state(command) not in ("T", "gone"), "the command continued")
        wait_until(lambda: state(helpers[0]) in ("Z", "gone"), "the watchdog gone")
    finally:
        os.kill(command, signal.SIGKILL)
        run.kill()
        run.wait(WAIT)
        assert run.stdout is not None
        run.stdout.close()


@linux_only
def test_the_parent_death_signal_continues_the_command_without_the_watchdog() -> None:
    """
    The second guard alone: with the watchdog SIGKILLed first, SIGKILL of throttlekit
    still continues the command, through the SIGCONT the kernel sends when its parent
    dies.
    """
    run, command = start_run("5")
    try:
        freeze_while_stopped(run, command)
        helpers = [pid for pid in children(run.pid) if pid != command]
        assert len(helpers) == 1
        os.kill(helpers[0], signal.SIGKILL)
        wait_until(lambda: state(helpers[0]) in ("Z", "gone"), "the watchdog killed")
        assert state(command) == "T"
        os.kill(run.pid, signal.SIGKILL)
        run.wait(WAIT)
        wait_until(lambda: state(command) not in ("T", "gone"), "the command continued")
    finally:
        os.kill(command, signal.SIGKILL)
        run.kill()
        run.wait(WAIT)
        assert run.stdout is not None
        run.stdout.close()


# -- the command line's backend options --------------------------------------------------


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        (["--backend", "signals"], "for the whole process tree, by stopping and continuing"),
        (["--no-children"], "for the command only, by stopping and continuing"),
        (["--backend", "auto"], "for the whole process tree, by "),
    ],
)
def test_run_says_which_backend_and_why(options: list[str], fragment: str) -> None:
    result = throttlekit("run", "-v", "--cpu", "40", *options, "--", "sh", "-c", "exit 5")
    assert result.returncode == 5, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("throttlekit: info: --cpu 40 ")
    assert fragment in lines[0]


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        (["--cpu", "30", "--backend", "cgroup", "--no-children"], "--no-children needs"),
        (["--backend", "signals"], "--backend signals needs --cpu"),
        (["--cpu", "30", "--backend", "kernel"], "invalid choice: 'kernel'"),
    ],
)
def test_run_refuses_backend_options_that_do_not_fit(
    options: list[str], fragment: str, tmp_path: Path
) -> None:
    marker = tmp_path / "ran"
    result = throttlekit("run", *options, "--", "touch", str(marker))
    assert result.returncode == 2
    assert fragment in result.stderr
    assert not marker.exists()


def test_run_help_names_the_backends() -> None:
    text = " ".join(throttlekit("run", "--help").stdout.split())
    for words in ("--backend {auto,cgroup,signals}", "--no-children", "127: not found"):
        assert words in text
