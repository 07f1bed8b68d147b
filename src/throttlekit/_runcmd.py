"""
``throttlekit run``: start a command at lower priority and under a CPU cap.

Like ``nice -n 10 ionice -c2 -n6 cpulimit -l 30 -- CMD``, in one step that never leaves
the command stopped: the command's exit status is passed through, Ctrl-C reaches it (it
is in the terminal's foreground process group, and this process ignores the interrupt
while it waits), and SIGTERM or SIGHUP sent to this process is forwarded to it.
"""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Sequence
from typing import Any

import anyio

from ._cpu import _apply_priority_in_child, _check_priority, throttle_process
from ._errors import ThrottlekitError

__all__ = ["parse_ionice", "run_command"]

_IONICE_NAMES = {
    "realtime": "realtime",
    "rt": "realtime",
    "1": "realtime",
    "best-effort": "best-effort",
    "be": "best-effort",
    "2": "best-effort",
    "idle": "idle",
    "3": "idle",
}


def parse_ionice(text: str) -> tuple[str, int | None]:
    """``CLASS[:LEVEL]`` as ``ionice`` spells it: ``idle``, ``best-effort:4``, ``2:7``."""
    name, _, level = text.partition(":")
    io_class = _IONICE_NAMES.get(name.strip().lower())
    if io_class is None:
        raise ThrottlekitError(
            f"invalid --ionice {text!r}: the class is realtime, best-effort or idle "
            "(or 1, 2, 3), optionally followed by ':LEVEL' (0-7)"
        )
    if not level:
        return io_class, None
    if not level.isdigit() or int(level) > 7:
        raise ThrottlekitError(f"invalid --ionice {text!r}: the level must be 0 to 7")
    if io_class == "idle":
        raise ThrottlekitError(f"invalid --ionice {text!r}: the idle class has no level")
    return io_class, int(level)


def run_command(
    argv: Sequence[str],
    *,
    cpu: float | None = None,
    nice: int | None = None,
    ionice: str | None = None,
) -> int:
    """Run ``argv`` as described above; returns the exit status to exit with."""
    if not argv:
        raise ThrottlekitError("no command given: throttlekit run [OPTIONS] -- COMMAND ...")
    io_class, io_level = parse_ionice(ionice) if ionice is not None else ("best-effort", None)
    nice_value = 10 if nice is None else nice
    io_value = _check_priority(nice_value, io_class, io_level)
    if cpu is not None and not cpu > 0:
        raise ThrottlekitError(f"invalid --cpu {cpu!r}: a percentage of one core, above 0")

    def in_child() -> None:
        _apply_priority_in_child(nice_value, io_value)

    try:
        process = subprocess.Popen(list(argv), preexec_fn=in_child)
    except FileNotFoundError as e:
        raise ThrottlekitError(f"command not found: {argv[0]}") from e
    except PermissionError as e:
        raise ThrottlekitError(f"cannot run {argv[0]}: {e.strerror}") from e

    def forward(signum: int, frame: Any) -> None:
        process.send_signal(signum)

    previous = {
        signal.SIGINT: signal.signal(signal.SIGINT, signal.SIG_IGN),
        signal.SIGTERM: signal.signal(signal.SIGTERM, forward),
        signal.SIGHUP: signal.signal(signal.SIGHUP, forward),
    }
    try:
        if cpu is not None:
            anyio.run(_throttle_until_exit, process, cpu)
        status = process.wait()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return status if status >= 0 else 128 - status


async def _throttle_until_exit(process: subprocess.Popen[bytes], cpu: float) -> None:
    async with anyio.create_task_group() as tg:

        async def wait() -> None:
            await anyio.to_thread.run_sync(process.wait, abandon_on_cancel=True)
            tg.cancel_scope.cancel()

        tg.start_soon(wait)
        await throttle_process(process.pid, cpu)
        tg.cancel_scope.cancel()
