"""
``throttlekit run``: start a command at lower priority and under a CPU cap.

Like ``nice -n 10 ionice -c2 -n6 cpulimit -l 30 -m -- CMD``, in one step that never leaves
the command stopped and never loses its exit status.

The cap covers the whole process tree (the command and every process it starts:
``tar czf`` and its ``gzip``) unless told otherwise (``children=False``,
``--no-children``). It is held one of two ways (``backend``, ``--backend``):

* ``cgroup``: the kernel's own quota. A cgroup is made for the command (v2 ``cpu.max``,
  or v1 ``cpu.cfs_quota_us`` where the cpu controller is on a v1 hierarchy), the
  command joins it before it execs, so every child is born inside, and the cgroup is
  removed when the command ends. Exact, costs nothing while it runs, never stops
  anything. Needs a cgroup this process may write: root, or a delegated v2 subtree whose
  ``cgroup.subtree_control`` enables ``cpu`` (see :func:`cgroup_place`).
* ``signals``: :func:`throttle_process` stops and continues the processes
  (SIGSTOP/SIGCONT) so their average stays at the cap, as ``cpulimit`` does. Works
  anywhere, for the command alone too; coarse (it pauses I/O as well).
* ``auto`` (the default): ``cgroup`` when it is available and can express the request,
  else ``signals``. :func:`describe_cap` says which one and why (``-v``).

* Every option is checked before the command starts (:func:`check_run_options`): a bad
  value, or a priority this process may not give, is an error and nothing runs. A
  command that is not found exits 127, one that cannot be run 126 (as ``env`` does).
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
  is lost with this process. With the cgroup backend nothing is ever stopped: the
  command runs on in its cgroup, still capped, and the next ``throttlekit run`` removes
  that cgroup once it is empty.
* With the cgroup backend, processes the command left running in the background when
  it ends are moved back to this process's own cgroup (the cap lasts as long as the
  command, as with signals), and the cgroup is removed on every way out (the command's
  end, Ctrl-C, a failed start).
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final

import anyio
import attrs
from attrs import frozen

from .._checks import check_number, check_optional_int
from .._errors import ConfigError, ProcessControlError
from .._throttle._cpu import (
    CGROUP_MIN_PERCENT,
    CgroupPlace,
    CpuCgroup,
    apply_priority_in_child,
    available_cpus,
    cgroup_place,
    check_process_priority,
    load_libc,
    throttle_process,
)
from . import describe_error

if sys.version_info < (3, 11):  # pragma: no cover - the backport on 3.10
    pass

__all__ = [
    "BACKENDS",
    "RunOptions",
    "check_run_options",
    "describe_cap",
    "parse_ionice",
    "run_command",
]

BACKENDS: Final = ("auto", "cgroup", "signals")

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
EXIT_NOT_FOUND: Final = 127  # the command was not found (as env, nice, timeout and shells)
EXIT_CANNOT_RUN: Final = 126  # found, but it could not be run (not executable, say)


class _CannotExecute(ProcessControlError):
    """The command could not be executed; ``status`` is what ``run`` exits with."""

    def __init__(self, code: int | None, message: str, status: int) -> None:
        super().__init__(code, message)
        self.status = status


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
    children: bool = True  # the cap covers the command's descendants too
    backend: str | None = None  # "cgroup" or "signals" when cpu is set
    requested: str = "auto"  # the backend asked for: "auto" may fall back to signals
    why: str = ""  # why that backend
    place: CgroupPlace | None = None  # where the cgroup is made (backend "cgroup")


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
    children: bool = True,
    backend: str = "auto",
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
    CAP_SYS_ADMIN. ``children`` (default True) extends the cap to every descendant.
    ``backend`` is ``"auto"``, ``"cgroup"`` or ``"signals"`` (module docstring):
    ``"cgroup"`` where no cgroup may be made, ``"cgroup"`` with ``children=False``, or a
    backend other than ``"auto"`` without ``cpu`` is a :class:`ConfigError`.
    """
    return _check(
        argv,
        cpu,
        nice,
        ionice,
        _privileges(),
        available_cpus(),
        children=children,
        backend=backend,
        find_place=cgroup_place,
    )


def _check(
    argv: object,
    cpu: object,
    nice: object,
    ionice: object,
    privileges: _Privileges,
    cpus: float,
    *,
    children: object = True,
    backend: object = "auto",
    find_place: Callable[[], CgroupPlace | str] = cgroup_place,
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
    io_value = check_process_priority(nice, io_class, io_level)
    if not isinstance(children, bool):
        raise TypeError(f"children must be True or False, got {children!r}")
    chosen, why, place = _choose_backend(
        None if cpu is None else float(cpu), children, backend, find_place
    )
    return RunOptions(
        argv=tuple(argv),
        cpu=None if cpu is None else float(cpu),
        nice=nice,
        io_class=io_class,
        io_level=io_level,
        io_value=io_value,
        children=children,
        backend=chosen,
        why=why,
        place=place,
        requested=str(backend),  # checked by _choose_backend
    )


def _choose_backend(
    cpu: float | None,
    children: bool,
    backend: object,
    find_place: Callable[[], CgroupPlace | str],
) -> tuple[str | None, str, CgroupPlace | None]:
    """(backend, why, where the cgroup goes) for the checked options."""
    if not isinstance(backend, str):
        raise TypeError(f"backend must be a string, got {type(backend).__name__}")
    if backend not in BACKENDS:
        raise _invalid(f"invalid --backend {backend!r}: auto, cgroup or signals")
    if cpu is None:
        if backend != "auto":
            raise _invalid(f"--backend {backend} needs --cpu: without it nothing is capped")
        return None, "", None
    if backend == "signals":
        return "signals", "--backend signals", None
    if not children:
        if backend == "cgroup":
            raise _invalid(
                "--no-children needs --backend signals: a cgroup caps every process in "
                "it, children included"
            )
        return "signals", "--no-children: a cgroup would cap the children too", None
    if cpu < CGROUP_MIN_PERCENT:
        found: CgroupPlace | str = (
            f"a cgroup quota cannot go below {CGROUP_MIN_PERCENT:g}% of one core"
        )
    else:
        found = find_place()
    if isinstance(found, CgroupPlace):
        why = "--backend cgroup" if backend == "cgroup" else "auto: a cgroup may be made here"
        return "cgroup", why, found
    if backend == "cgroup":
        raise _invalid(f"--backend cgroup is not available here: {found}")
    return "signals", f"auto: no cgroup ({found})", None


def describe_cap(options: RunOptions, cgroup: CpuCgroup | None = None) -> str:
    """One line: how ``--cpu`` is held for this run, and why that way."""
    if options.cpu is None:
        return "no --cpu: no CPU cap"
    who = "the whole process tree" if options.children else "the command only"
    if options.backend == "cgroup":
        where = cgroup.describe() if cgroup is not None else f"a cgroup in {options.place}"
        how = f"by the kernel ({where})"
    else:
        how = "by stopping and continuing (SIGSTOP/SIGCONT, as cpulimit does)"
    return f"--cpu {options.cpu:g} for {who}, {how}; {options.why}"


def run_command(
    argv: Sequence[str],
    *,
    cpu: float | None = None,
    nice: int | None = None,
    ionice: str | None = None,
    children: bool = True,
    backend: str = "auto",
    verbose: bool = False,
) -> int:
    """
    Run ``argv`` as described above; returns the exit status to exit with.

    Call it from the main thread (it handles signals). The options are checked first
    (:func:`check_run_options`). A command that cannot be executed returns 127 (not
    found) or 126 (found but not runnable: not executable, a directory, not a program)
    after one ``throttlekit: error:`` line on stderr, as ``env``, ``nice`` and
    ``timeout`` do; a priority the system refuses at the start is a
    :class:`ProcessControlError` (nothing ran). ``verbose`` writes one line to stderr saying how the
    CPU cap is held and why (:func:`describe_cap`).
    """
    options = check_run_options(
        argv, cpu=cpu, nice=nice, ionice=ionice, children=children, backend=backend
    )
    if not isinstance(verbose, bool):
        raise TypeError(f"verbose must be True or False, got {verbose!r}")
    return _run(options, verbose=verbose)


def _say(kind: str, message: str) -> None:
    """One ``throttlekit: KIND: MESSAGE`` line on stderr; nothing if stderr is closed."""
    stream = sys.stderr
    if stream is None:
        return
    with contextlib.suppress(OSError, ValueError):
        stream.write(f"throttlekit: {kind}: {message}\n")
        stream.flush()


def _run(options: RunOptions, *, verbose: bool = False) -> int:
    process: subprocess.Popen[bytes] | None = None
    early: list[int] = []
    cgroup: CpuCgroup | None = None

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
        if options.backend == "cgroup":
            cgroup, options = _make_cgroup(options)
        try:
            try:
                process, options = _start(options, ignored, cgroup)
            except _CannotExecute as e:  # as env, nice and timeout do: 127 or 126
                _say("error", str(e))
                return e.status
            if verbose and options.cpu is not None:
                _say("info", describe_cap(options, cgroup))
            for number in early:
                process.send_signal(number)
            try:
                if options.cpu is not None and options.backend == "signals":
                    _throttle(process, options.cpu, options.argv[0], options.children)
            finally:
                status = process.wait()  # reached on every way out: never orphaned
        finally:
            if cgroup is not None:
                _remove_cgroup(cgroup)
    finally:
        for signum, handler in previous.items():  # None: set outside Python; the default
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)
    return status if status >= 0 else 128 - status


def _make_cgroup(options: RunOptions) -> tuple[CpuCgroup | None, RunOptions]:
    """The command's cgroup; with ``auto``, signals instead when it cannot be made."""
    assert options.place is not None
    assert options.cpu is not None
    try:
        return CpuCgroup(options.place, options.cpu), options
    except OSError as e:
        reason = f"cannot make a cgroup in {options.place.parent}: {e.strerror or e}"
        if options.requested != "auto":
            raise ProcessControlError(e.errno or errno.EPERM, reason) from e
        return None, _fall_back(options, reason)


def _fall_back(options: RunOptions, reason: str) -> RunOptions:
    return attrs.evolve(options, backend="signals", why=f"auto: no cgroup ({reason})", place=None)


def _remove_cgroup(cgroup: CpuCgroup) -> None:
    try:
        left = cgroup.close()
    except OSError as e:
        left, failure = [], f" ({e.strerror or e})"
    else:
        failure = ""
        if not left:
            return
    count = f"{len(left)} process(es) still in it keep the cap" if left else "it is not empty"
    _say("warning", f"cannot remove the cgroup {cgroup.path}{failure}: {count}")


def _start(
    options: RunOptions, ignored: set[signal.Signals], cgroup: CpuCgroup | None
) -> tuple[subprocess.Popen[bytes], RunOptions]:
    """Start the command (in ``cgroup`` if given); the options it really runs with."""
    if cgroup is None:
        return _popen(options, ignored, None), options
    report, tell = os.pipe()  # the child writes why it could not join, then fails
    try:
        try:
            return _popen(options, ignored, (cgroup, tell)), options
        except ProcessControlError:
            os.close(tell)
            tell = -1
            why = os.read(report, 64).decode()
            if not why:
                raise  # it joined: something else failed
        code = int(why)
        reason = f"cannot move {options.argv[0]} into {cgroup.path}: {os.strerror(code)}"
        if options.requested != "auto":
            raise ProcessControlError(code, reason)
        options = _fall_back(options, reason)
        return _popen(options, ignored, None), options
    finally:
        os.close(report)
        if tell >= 0:
            os.close(tell)


def _popen(
    options: RunOptions,
    ignored: set[signal.Signals],
    cgroup: tuple[CpuCgroup, int] | None,
) -> subprocess.Popen[bytes]:
    name = options.argv[0]
    libc = load_libc()  # loaded here, not in the child
    death_signal = signal.SIGCONT if options.backend == "signals" else None

    def in_child() -> None:
        for signum in (signal.SIGINT, *_FORWARDED):
            signal.signal(signum, signal.SIG_IGN if signum in ignored else signal.SIG_DFL)
        if death_signal is not None and libc is not None:
            # If we die while it is stopped, the kernel continues it (SIGCONT always
            # resumes a stopped process). Tied to the thread that forks: this one, the
            # main thread, which lives as long as this process.
            libc.prctl(_PR_SET_PDEATHSIG, int(death_signal), 0, 0, 0)
        if cgroup is not None:  # before the exec: every child it starts is born inside
            try:
                cgroup[0].join_in_child()
            except OSError as e:
                os.write(cgroup[1], str(e.errno or errno.EPERM).encode())
                raise
        apply_priority_in_child(options.nice, options.io_value)

    try:
        return subprocess.Popen(list(options.argv), preexec_fn=in_child)
    except FileNotFoundError as e:
        raise _CannotExecute(e.errno, f"command not found: {name}", EXIT_NOT_FOUND) from e
    except OSError as e:  # not executable, a directory, not a program (ENOEXEC), ...
        raise _CannotExecute(e.errno, f"cannot run {name}: {e.strerror}", EXIT_CANNOT_RUN) from e
    except subprocess.SubprocessError as e:  # the child could not take the priority
        raise ProcessControlError(
            errno.EPERM,
            f"cannot start {name} at nice {options.nice} and {options.io_class} I/O "
            "priority: the system refused",
        ) from e


def _throttle(process: subprocess.Popen[bytes], cpu: float, name: str, children: bool) -> None:
    try:
        anyio.run(_throttle_until_exit, process, cpu, children)
    except Exception as e:  # the command runs on: say so, then wait for it
        sys.stderr.write(
            f"throttlekit: warning: cannot hold {name} to --cpu {cpu:g} ({describe_error(e)}); "
            "it runs on without a CPU cap\n"
        )
        sys.stderr.flush()


async def _throttle_until_exit(
    process: subprocess.Popen[bytes], cpu: float, children: bool
) -> None:
    async with anyio.create_task_group() as tg:

        async def wait() -> None:
            await anyio.to_thread.run_sync(process.wait, abandon_on_cancel=True)
            tg.cancel_scope.cancel()

        tg.start_soon(wait)
        await throttle_process(process, cpu, include_children=children)
        tg.cancel_scope.cancel()
