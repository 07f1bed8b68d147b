"""
``throttlekit pipe``: copy stdin to stdout at a rate, like ``pv -L``, at ``pv``'s cost.

**How the bytes move.** The cheapest way the kernel allows, chosen once per run from
what the two file descriptors are:

* ``splice(2)`` when either side is a pipe (Linux): the kernel moves the pages from one
  side to the other and they never enter this process. Pipes on either side are grown to
  1 MiB where the system allows it (``F_SETPIPE_SZ``), so one call moves up to 1 MiB.
* ``copy_file_range(2)`` from a regular file to a regular file, ``sendfile(2)`` from a
  regular file to anything else: also inside the kernel.
* otherwise ``read`` into one reused 1 MiB buffer and ``write`` from it (a terminal, a
  socket as the source, other systems).

A zero-copy call that fails moves nothing, so on any error from one the copy goes on with
plain ``read`` and ``write`` from the same point (a file opened for appending refuses
``splice``, for example). An error that is real then comes back from the read or the
write, which says which side failed (:class:`CopyError`).

**How the rate is kept.** Bytes are paid for before they pass: the copy pays the limiter
for a piece (one burst, at most 1 MiB) with :meth:`~throttlekit.RateLimiter.acquire_blocking`,
then moves at most that much, in as many calls as it takes, and pays for the next piece
when the credit is used up. Before paying it waits until the input has data or has ended,
so a quiet producer banks no credit and the end of the input costs no wait. Each call of
the kernel costs a subtraction and, with a progress line, a clock read; nothing else.
Over any interval the output gets at most ``rate x interval + burst + one piece``; over a
whole run, the rate.
"""

from __future__ import annotations

import errno
import os
import select
import stat
import time
from collections import deque
from collections.abc import Callable
from typing import BinaryIO, Final, TextIO

from .._errors import ThrottlekitError, UnitError
from .._throttle._ratelimit import RateLimiter
from .._throttle._schedule import Schedule
from .._throttle._streams import piece_size
from .._throttle._units import Family, Rate, format_amount, parse_data_rate

try:
    import fcntl
except ImportError:  # pragma: no cover - not on Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["CopyError", "copy", "parse_pipe_rate", "rate_family", "silence"]

_PIECE: Final = 1 << 20  # the most paid for at once, and the read/write buffer
_UNPACED: Final = 8 << 20  # the most asked of the kernel in one call when nothing is paid
_PIPE_SIZE: Final = 1 << 20  # pipes are grown to this where allowed
_MIN_RATE: Final = 1 / 3600  # one byte an hour; anything slower never gets anywhere


# -- arguments -------------------------------------------------------------------------


def parse_pipe_rate(text: str) -> Rate | Schedule:
    """
    ``--rate``: a rate (a bare number is bytes per second, as for ``pv -L``), ``off``, or a
    timetable. Refuses what would never let a byte through: a rate of 0 (a timetable may
    pause for a while, but not always) and rates under one byte an hour.
    """
    spec: Rate | Schedule = Schedule.parse(text) if "," in text else parse_data_rate(text)
    rates = [e.rate for e in spec.entries] if isinstance(spec, Schedule) else [spec]
    if all(rate.is_paused for rate in rates):
        raise UnitError(
            f"invalid rate {text!r}: nothing would ever pass; give a rate above 0, or 'off'"
        )
    for rate in rates:
        if 0 < rate.per_second < _MIN_RATE:
            raise UnitError(
                f"invalid rate {text!r}: {rate} is under one byte an hour, so nothing would "
                "get through; give a larger rate, or 'off'"
            )
    return spec


def rate_family(spec: Rate | Schedule) -> Family | None:
    """
    The family ``--rate`` was written in, for the progress line: a rate's own, or the
    first a timetable's entries name; ``None`` (shown in IEC units, as ``pv`` does) for
    ``off`` and plain bytes.
    """
    rates = [e.rate for e in spec.entries] if isinstance(spec, Schedule) else [spec]
    return next((rate.family for rate in rates if rate.family is not None), None)


def silence(stream: TextIO | None) -> None:
    """
    Point ``stream``'s file descriptor at /dev/null once a write to it failed: what its
    buffer still holds can go nowhere, and the interpreter's last flush at exit must not
    fail again (it would print "Exception ignored" and exit with status 120).
    """
    try:
        if stream is None:
            return
        fd = stream.fileno()
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, fd)
        finally:
            os.close(devnull)
    except (OSError, ValueError):  # not a real file (a test's capture), or already gone
        pass


# -- errors ----------------------------------------------------------------------------


class CopyError(ThrottlekitError):
    """
    Reading the source or writing the sink failed: ``action`` is ``"read"`` or
    ``"write"``, ``name`` the stream's name (``stdin``, ``stdout``), ``error`` the
    :class:`OSError`. ``reader_gone`` is true when the sink's reader went away (``EPIPE``).
    """

    def __init__(self, action: str, name: str, error: OSError) -> None:
        self.action = action
        self.name = name
        self.error = error
        doing = "read" if action == "read" else "write to"
        super().__init__(f"cannot {doing} {name}: {error.strerror or error}")

    @property
    def reader_gone(self) -> bool:
        """Whether the sink's reader closed its end (``| head``), which is not a failure."""
        return self.action == "write" and self.error.errno in (errno.EPIPE, errno.ECONNRESET)


# -- progress --------------------------------------------------------------------------


class _Progress:
    """
    A one-line ``pv``-style display: total, current rate (last second), average, time.

    Best effort: if the stream it draws on fails (stderr closed or full), it stops
    drawing and the copy goes on.
    """

    def __init__(self, out: TextIO, family: Family | None = None) -> None:
        self._out: TextIO | None = out
        self._family = family
        self._start = time.monotonic()
        self._next_draw = self._start + 0.25
        self._total = 0
        self._recent: deque[tuple[float, int]] = deque([(self._start, 0)])

    def add(self, n: int) -> None:
        self._total += n
        now = time.monotonic()
        if now >= self._next_draw:
            self._draw(now)

    def _draw(self, now: float) -> None:
        self._next_draw = now + 0.25
        recent = self._recent
        recent.append((now, self._total))
        while len(recent) > 2 and now - recent[1][0] >= 1.0:
            recent.popleft()
        first_time, first_total = recent[0]
        span = now - first_time
        current = (self._total - first_total) / span if span > 0 else 0.0
        elapsed = now - self._start
        average = self._total / elapsed if elapsed > 0 else 0.0
        minutes, seconds = divmod(int(elapsed), 60)
        family = self._family
        self._write(
            f"\r{format_amount(self._total, family):>9}  "
            f"{format_amount(current, family):>9}/s now  "
            f"{format_amount(average, family):>9}/s avg  {minutes:d}:{seconds:02d} "
        )

    def _write(self, text: str) -> None:
        if self._out is None:
            return
        try:
            self._out.write(text)
            self._out.flush()
        except (OSError, ValueError):
            silence(self._out)
            self._out = None  # nowhere to draw: stop drawing, keep copying

    def finish(self) -> None:
        self._draw(time.monotonic())
        self._write("\n")


# -- moving bytes ----------------------------------------------------------------------


def _kind(fd: int, action: str, name: str) -> int:
    """The file type bits of ``fd`` (``S_IFIFO``...); a closed fd is a :class:`CopyError`."""
    try:
        return stat.S_IFMT(os.fstat(fd).st_mode)
    except OSError as e:
        raise CopyError(action, name, e) from None


def _grow(fd: int) -> None:
    """Grow a pipe to 1 MiB so that one call moves more; a refusal is fine."""
    if fcntl is None or not hasattr(fcntl, "F_SETPIPE_SZ"):  # pragma: no cover
        return
    try:
        if fcntl.fcntl(fd, fcntl.F_GETPIPE_SZ) < _PIPE_SIZE:
            fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, _PIPE_SIZE)
    except OSError:  # over the user's pipe quota, or not allowed: keep the size
        pass


def _wait(fd: int, event: int) -> int:
    """Block until ``fd`` is ready for ``event`` (or hung up); returns the events seen."""
    poller = select.poll()
    poller.register(fd, event)
    while True:
        ready = poller.poll()
        if ready:
            return ready[0][1]


class _FdMover:
    """Moves bytes from one file descriptor to another by the cheapest means that works."""

    def __init__(self, src: int, dst: int, names: tuple[str, str]) -> None:
        self.src, self.dst, self.names = src, dst, names
        src_kind = _kind(src, "read", names[0])
        dst_kind = _kind(dst, "write", names[1])
        self._view: memoryview | None = None  # the read/write buffer, made when needed
        self._poller: select.poll | None = None
        if src_kind != stat.S_IFREG and hasattr(select, "poll"):
            self._poller = select.poll()
            self._poller.register(src, select.POLLIN)
        methods: list[tuple[str, Callable[[int], int]]] = []
        if stat.S_IFIFO in (src_kind, dst_kind) and hasattr(os, "splice"):
            for fd, kind in ((src, src_kind), (dst, dst_kind)):
                if kind == stat.S_IFIFO:
                    _grow(fd)
            methods.append(("splice", self._splice))
        elif src_kind == stat.S_IFREG:
            if dst_kind == stat.S_IFREG and hasattr(os, "copy_file_range"):
                methods.append(("copy_file_range", self._copy_file_range))
            if hasattr(os, "sendfile") and hasattr(os, "splice"):  # Linux semantics
                methods.append(("sendfile", self._sendfile))
        self._methods = methods
        self.method = methods[0][0] if methods else "read/write"

    # Every way of moving returns the bytes moved, 0 at the end of the input.

    def _splice(self, count: int) -> int:
        return os.splice(self.src, self.dst, count)

    def _copy_file_range(self, count: int) -> int:
        return os.copy_file_range(self.src, self.dst, count)

    def _sendfile(self, count: int) -> int:
        return os.sendfile(self.dst, self.src, None, count)

    def move(self, count: int) -> int:
        """Move at most ``count`` bytes (at least one when any is left); 0 at the end."""
        while self._methods:
            try:
                return self._methods[0][1](count)
            except BlockingIOError:  # a non-blocking descriptor someone else set up
                _wait(self.src, select.POLLIN)
                _wait(self.dst, select.POLLOUT)
            except OSError:
                # Nothing moved. Go on with the next way, and in the end read and write,
                # which name the side that failed if the error is real.
                del self._methods[0]
                self.method = self._methods[0][0] if self._methods else "read/write"
        return self._read_write(count)

    def _read_write(self, count: int) -> int:
        if self._view is None:
            self._view = memoryview(bytearray(_PIECE))  # one buffer, reused for every call
        view = self._view[: min(count, _PIECE)]
        while True:
            try:
                n = os.readv(self.src, [view])
                break
            except BlockingIOError:
                _wait(self.src, select.POLLIN)
            except OSError as e:
                raise CopyError("read", self.names[0], e) from None
        written = 0
        while written < n:
            try:
                written += os.write(self.dst, view[written:n])
            except BlockingIOError:
                _wait(self.dst, select.POLLOUT)
            except OSError as e:
                raise CopyError("write", self.names[1], e) from None
        return n

    def more(self) -> bool:
        """
        Wait until the input has data or has ended; whether there may be more to copy.

        Pipes, sockets and terminals are polled (a pipe that ended reports a hang-up with
        no data); for a regular file, its size says. Where neither tells, assume more.
        """
        if self._poller is not None:
            while True:
                ready = self._poller.poll()
                if ready:
                    events = ready[0][1]
                    return bool(events & select.POLLIN) or not events & select.POLLHUP
        try:
            size = os.fstat(self.src).st_size
            return size == 0 or os.lseek(self.src, 0, os.SEEK_CUR) < size  # /proc: size 0
        except OSError:
            return True  # the read will say what is wrong


class _ObjectMover:
    """Moves bytes between binary file objects (no file descriptor), through one buffer."""

    method = "read/write"

    def __init__(self, source: BinaryIO, sink: BinaryIO, names: tuple[str, str]) -> None:
        self.names = names
        self._buffer = bytearray(_PIECE)
        self._view = memoryview(self._buffer)
        readinto = getattr(source, "readinto1", None) or getattr(source, "readinto", None)
        self._readinto = readinto
        self._read = getattr(source, "read1", None) or source.read
        self._write = sink.write
        self._flush = sink.flush

    def more(self) -> bool:
        return True

    def move(self, count: int) -> int:
        view = self._view[: min(count, _PIECE)]
        try:
            if self._readinto is not None:
                n = self._readinto(view) or 0
            else:
                data = self._read(len(view))
                n = len(data)
                view[:n] = data
        except OSError as e:
            raise CopyError("read", self.names[0], e) from None
        written = 0
        try:
            while written < n:
                w = self._write(view[written:n])
                written += n - written if w is None else w
            self._flush()
        except OSError as e:
            raise CopyError("write", self.names[1], e) from None
        return n


def _unpaced(limiter: RateLimiter | None) -> bool:
    return limiter is None or (limiter.schedule is None and limiter.rate.is_unlimited)


def copy(
    source: int | BinaryIO,
    sink: int | BinaryIO,
    limiter: RateLimiter | None = None,
    progress: TextIO | None = None,
    *,
    names: tuple[str, str] = ("stdin", "stdout"),
    family: Family | None = None,
    live: bool = False,
) -> int:
    """
    Copy ``source`` to ``sink`` at the limiter's rate until the end of ``source``; returns
    the number of bytes copied.

    ``source`` and ``sink`` are both file descriptors (the fast paths above) or both
    binary file objects (read and written through one buffer). ``progress``, if given,
    gets a ``pv``-style line, redrawn four times a second and ended with a newline on
    every way out, in the units of ``family`` (see :func:`rate_family`; ``None``: IEC).
    ``live``: the limiter's rate may change during the copy (a share of a site rate,
    ``pipe --site``), so the copy pays even while the rate is unlimited; otherwise an
    unlimited rate at the start means nothing is ever paid.
    A failed read or write raises :class:`CopyError`; an interrupt
    (:class:`KeyboardInterrupt`) propagates, after the bytes that were moved.

    >>> import io
    >>> sink = io.BytesIO()
    >>> copy(io.BytesIO(b"backup data"), sink, RateLimiter("1MiB/s"))
    11
    >>> sink.getvalue()
    b'backup data'
    """
    if isinstance(source, int) and isinstance(sink, int):
        mover: _FdMover | _ObjectMover = _FdMover(source, sink, names)
    elif not isinstance(source, int) and not isinstance(sink, int):
        mover = _ObjectMover(source, sink, names)
    else:
        raise TypeError("source and sink must be both file descriptors or both file objects")
    display = _Progress(progress, family) if progress is not None else None
    move, more = mover.move, mover.more
    total = 0
    try:
        if not live and _unpaced(limiter):
            while n := move(_UNPACED):
                total += n
                if display is not None:
                    display.add(n)
            return total
        assert limiter is not None
        credit = 0
        while True:
            if credit <= 0:
                if not more():
                    return total
                credit = min(_PIECE, piece_size(limiter))
                limiter.acquire_blocking(credit)
            n = move(credit)
            if not n:
                return total
            credit -= n
            total += n
            if display is not None:
                display.add(n)
    finally:
        if display is not None:
            display.finish()
