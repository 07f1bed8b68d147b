"""
``throttlekit run``: start a command at lower priority and under a CPU cap.

Like ``nice -n 10 ionice -c2 -n6 cpulimit -l 30 -- CMD``, in one step that never leaves
the command stopped and never loses its exit status:

* Every option is checked before the command starts (:func:`check_run_options`): a bad
  value, or a priority this process may not give, is an error and nothing runs.
* The command's exit status is passed through (128 + N when signal N killed it). Ctrl-C
  reaches it (it is in the terminal's foreground process group; this process ignores the
  interrupt while it waits), and SIGTERM or SIGHUP sent to this process is forwarded to
  it; a signal this process was told to ignore (``nohup``) stays ignored by both.
* If the CPU cap fails once the command runs (it became another user's program by
  running a set-user-ID one, say), a warning says so and the command runs on without
  the cap: it is waited for and its status passed through, never orphaned.
* If this process is killed outright (SIGKILL) while the command is stopped, the
  command is continued twice over: by :func:`throttle_process`'s watchdog, and by the
  kernel, which sends the command SIGCONT when this process dies (its parent-death
  signal, set as it starts). It then runs on, unthrottled, as an orphan; its exit status
  is lost with this process.
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import anyio
from attrs import frozen

from .._checks import check_number, check_optional_int
from .._errors import ConfigError, ProcessControlError
from .._throttle._cpu import (
    _apply_priority_in_child,
    _check_priority,
    _libc,
    available_cpus,
    throttle_process,
)

if sys.version_info < (3, 11):  # pragma: no cover - the backport on 3.10
    from exceptiongroup import BaseExceptionGroup

__all__ = ["RunOptions", "check_run_options", "parse_ionice", "run_command"]

_IONICE_NAMES: Final = {
    "none": "none",
    "0": "none",
    "realtime": "realtime",
    "rt": "realtime",
    "1": "realtime",
    "best-effort": "best-effort",
    "be": "best-effort",
    "2": "best-effort",
    "idle": "idle",
    "3": "idle",
}
_DEFAULT_NICE: Final = 10
_CAP_SYS_ADMIN: Final = 21
_CAP_SYS_NICE: Final = 23
_PR_SET_PDEATHSIG: Final = 1
_FORWARDED: Final = (signal.SIGTERM, signal.SIGHUP)


def _invalid(message: str) -> ConfigError:
    return ConfigError(message)


def parse_ionice(text: str) -> tuple[str, int | None]:
    """
    ``CLASS[:LEVEL]`` as ``ionice`` spells it: ``idle``, ``best-effort:4``, ``2:7``.

    The class is ``realtime``/``rt``/``1``, ``best-effort``/``be``/``2``, ``idle``/``3`` or
    ``none``/``0``; the level, 0 (highest) to 7, belongs to the first two only.
    """
    if not isinstance(text, str):
        raise TypeError(f"ionice must be a string, got {type(text).__name__}")
    name, colon, level = text.partition(":")
    io_class = _IONICE_NAMES.get(name.strip().lower())
    if io_class is None:
        raise _invalid(
            f"invalid --ionice {text!r}: the class is realtime, best-effort, idle or none "
            "(or 1, 2, 3, 0), optionally followed by ':LEVEL' (0-7)"
        )
    if not colon:
        return io_class, None
    level = level.strip()
    if not (level.isascii() and level.isdecimal()) or int(level) > 7:
        raise _invalid(f"invalid --ionice {text!r}: the level must be 0 to 7")
    if io_class not in ("realtime", "best-effort"):
        raise _invalid(f"invalid --ionice {text!r}: the {io_class} class has no level")
    return io_class, int(level)


@frozen(kw_only=True)
class RunOptions:
    """A checked ``throttlekit run``: what to start, at which priority, under which cap."""

    argv: tuple[str, ...]
    cpu: float | None
    nice: int
    io_class: str
    io_level: int | None
    io_value: int


@frozen(kw_only=True)
class _Privileges:
    """What this process may do to priorities (read from the kernel, or given in tests)."""

    nice: int  # its own nice value, which the command inherits
    rlimit_nice: int  # RLIMIT_NICE (soft): may lower the nice value down to 20 - this
    capabilities: int | None  # effective capability bits; None when unknown

    def has(self, capability: int) -> bool:
        return self.capabilities is None or bool(self.capabilities >> capability & 1)

    def may_set_nice(self, nice: int) -> bool:
        """The kernel's rule (``can_nice``): raising priority needs a privilege."""
        return nice >= self.nice or 20 - nice <= self.rlimit_nice or self.has(_CAP_SYS_NICE)


def _privileges() -> _Privileges:
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_NICE)[0]
        rlimit = 40 if soft == resource.RLIM_INFINITY else soft
    except (ImportError, AttributeError, OSError):  # pragma: no cover - not Linux
        rlimit = 0
    capabilities = None
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("CapEff:"):
                capabilities = int(line.split()[1], 16)
    return _Privileges(
        nice=os.getpriority(os.PRIO_PROCESS, 0), rlimit_nice=rlimit, capabilities=capabilities
    )


def check_run_options(
    argv: Sequence[str],
    *,
    cpu: float | None = None,
    nice: int | None = None,
    ionice: str | None = None,
) -> RunOptions:
    """
    Check everything ``throttlekit run`` was given, before anything starts.

    A bad value is a :class:`ConfigError` naming the option (so the command line prints
    one line and starts nothing); a wrong type (from Python code) a :class:`TypeError`.
    ``cpu`` is a percentage of one core: finite, above 0 and at most 100 times the CPUs
    this process may use (:func:`available_cpus`). ``nice`` is -20 to 19, by default 10
    (or this process's own value if that is higher: ``run`` never raises a priority
    unless told to); a value below this process's own needs the privilege the kernel
    asks for (root, CAP_SYS_NICE, or a ``RLIMIT_NICE`` that allows it). ``ionice`` is
    ``CLASS[:LEVEL]`` (:func:`parse_ionice`); the realtime class needs CAP_SYS_NICE or
    CAP_SYS_ADMIN.
    """
    return _check(argv, cpu, nice, ionice, _privileges(), available_cpus())


def _check(
    argv: object,
    cpu: object,
    nice: object,
    ionice: object,
    privileges: _Privileges,
    cpus: float,
) -> RunOptions:
    if isinstance(argv, str | bytes) or not isinstance(argv, Sequence):
        raise TypeError(f"argv must be a sequence of strings, got {argv!r}")
    if not argv:
        raise _invalid("no command given: throttlekit run [OPTIONS] -- COMMAND ...")
    if not all(isinstance(arg, str) for arg in argv):
        raise TypeError(f"argv must be a sequence of strings, got {argv!r}")
    if cpu is not None:
        cpu = check_number(cpu, "cpu", "a number or None")
        top = 100 * cpus
        if not (math.isfinite(cpu) and 0 < cpu <= top):
            raise _invalid(
                f"invalid --cpu {cpu!r}: a percentage of one core, above 0 and at most "
                f"{top:g} ({cpus:g} CPUs available here)"
            )
    nice = check_optional_int(nice, "nice")
    if nice is None:
        nice = max(_DEFAULT_NICE, privileges.nice)
    elif not -20 <= nice <= 19:
        raise _invalid(f"invalid --nice {nice}: the nice value is -20 (first) to 19 (last)")
    elif not privileges.may_set_nice(nice):
        raise _invalid(
            f"invalid --nice {nice}: going below this process's nice value "
            f"({privileges.nice}) needs root (CAP_SYS_NICE) or a nice limit that allows "
            f"it (ulimit -e {20 - nice})"
        )
    if ionice is None:
        io_class, io_level = "best-effort", None
    elif isinstance(ionice, str):
        io_class, io_level = parse_ionice(ionice)
    else:
        raise TypeError(f"ionice must be a string or None, got {type(ionice).__name__}")
    if io_class == "realtime" and not (
        privileges.has(_CAP_SYS_NICE) or privileges.has(_CAP_SYS_ADMIN)
    ):
        raise _invalid(
            f"invalid --ionice {ionice!r}: the realtime class needs root "
            "(CAP_SYS_NICE or CAP_SYS_ADMIN)"
        )
    io_value = _check_priority(nice, io_class, io_level)
    return RunOptions(
        argv=tuple(argv),
        cpu=None if cpu is None else float(cpu),
        nice=nice,
        io_class=io_class,
        io_level=io_level,
        io_value=io_value,
    )


def run_command(
    argv: Sequence[str],
    *,
    cpu: float | None = None,
    nice: int | None = None,
    ionice: str | None = None,
) -> int:
    """
    Run ``argv`` as described above; returns the exit status to exit with.

    Call it from the main thread (it handles signals). The options are checked first
    (:func:`check_run_options`); a command that cannot start is a
    :class:`ProcessControlError`.
    """
    return _run(check_run_options(argv, cpu=cpu, nice=nice, ionice=ionice))


def _run(options: RunOptions) -> int:
    process: subprocess.Popen[bytes] | None = None
    early: list[int] = []

    def forward(signum: int, frame: Any) -> None:
        if process is None:
            early.append(signum)  # arrived while it starts: sent once it runs
        else:
            process.send_signal(signum)

    # Installed before the command starts, so that no interrupt can land between its
    # start and the wait; the command itself gets what this process was given.
    previous = {signal.SIGINT: signal.signal(signal.SIGINT, signal.SIG_IGN)}
    for signum in _FORWARDED:
        if signal.getsignal(signum) is not signal.SIG_IGN:
            previous[signum] = signal.signal(signum, forward)
    ignored = {
        signum
        for signum in (signal.SIGINT, *_FORWARDED)
        if previous.get(signum, signal.SIG_IGN) is signal.SIG_IGN
    }
    try:
        process = _start(options, ignored)
        for number in early:
            process.send_signal(number)
        try:
            if options.cpu is not None:
                _throttle(process, options.cpu, options.argv[0])
        finally:
            status = process.wait()  # reached on every way out: never orphaned
    finally:
        for signum, handler in previous.items():  # None: set outside Python; the default
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)
    return status if status >= 0 else 128 - status


def _start(options: RunOptions, ignored: set[signal.Signals]) -> subprocess.Popen[bytes]:
    name = options.argv[0]
    libc = _libc()  # loaded here, not in the child
    death_signal = signal.SIGCONT if options.cpu is not None else None

    def in_child() -> None:
        for signum in (signal.SIGINT, *_FORWARDED):
            signal.signal(signum, signal.SIG_IGN if signum in ignored else signal.SIG_DFL)
        if death_signal is not None and libc is not None:
            # If we die while it is stopped, the kernel continues it (SIGCONT always
            # resumes a stopped process). Tied to the thread that forks: this one, the
            # main thread, which lives as long as this process.
            libc.prctl(_PR_SET_PDEATHSIG, int(death_signal), 0, 0, 0)
        _apply_priority_in_child(options.nice, options.io_value)

    try:
        return subprocess.Popen(list(options.argv), preexec_fn=in_child)
    except FileNotFoundError as e:
        raise ProcessControlError(e.errno, f"command not found: {name}") from e
    except OSError as e:
        raise ProcessControlError(e.errno, f"cannot run {name}: {e.strerror}") from e
    except subprocess.SubprocessError as e:  # the child could not take the priority
        raise ProcessControlError(
            errno.EPERM,
            f"cannot start {name} at nice {options.nice} and {options.io_class} I/O "
            "priority: the system refused",
        ) from e


def _throttle(process: subprocess.Popen[bytes], cpu: float, name: str) -> None:
    try:
        anyio.run(_throttle_until_exit, process, cpu)
    except Exception as e:  # the command runs on: say so, then wait for it
        sys.stderr.write(
            f"throttlekit: warning: cannot hold {name} to --cpu {cpu:g} ({_describe(e)}); "
            "it runs on without a CPU cap\n"
        )
        sys.stderr.flush()


def _describe(error: BaseException) -> str:
    if isinstance(error, BaseExceptionGroup):
        return "; ".join(_describe(inner) for inner in error.exceptions)
    return str(error) or type(error).__name__


async def _throttle_until_exit(process: subprocess.Popen[bytes], cpu: float) -> None:
    async with anyio.create_task_group() as tg:

        async def wait() -> None:
            await anyio.to_thread.run_sync(process.wait, abandon_on_cancel=True)
            tg.cancel_scope.cancel()

        tg.start_soon(wait)
        await throttle_process(process, cpu)
        tg.cancel_scope.cancel()
