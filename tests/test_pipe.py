"""
``throttlekit pipe``: its arguments, the copy over every kind of file descriptor, how it
pays the limiter, its failures, and the command in real processes.

Speed is measured in benchmarks/bench_pipe.py, not here.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import io
import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from throttlekit import Rate, RateLimiter, UnitError
from throttlekit._cli._pipe import (
    _PIECE,
    CopyError,
    _FdMover,
    copy,
    parse_pipe_rate,
    rate_family,
)
from throttlekit._throttle._streams import piece_size
from throttlekit._throttle._units import parse_burst

linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux system calls")
DATA = random.Random(1).randbytes(3 * _PIECE + 12345)  # several pieces, not a round number


# -- arguments ---------------------------------------------------------------------------


def test_burst_accepts_sizes_and_durations() -> None:
    """--burst takes a size in any unit or a duration in s or ms."""
    assert parse_burst("64KiB") == 65536
    assert parse_burst("1MB") == 1e6
    assert parse_burst("1") == 1
    assert parse_burst("1e30") == 1e30
    assert parse_burst("250ms") == timedelta(milliseconds=250)
    assert parse_burst("0.5s") == timedelta(seconds=0.5)
    assert parse_burst("0.001ms") == timedelta(microseconds=1)


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("0", "at least one byte"),
        ("0.5", "at least one byte"),
        ("1e-300", "at least one byte"),
        ("0s", "more than zero"),
        ("0ms", "more than zero"),
        ("0.0001ms", "shortest duration is 1 microsecond"),
        ("99999999999999999999s", "too long"),
        ("-1s", "expected a size"),
        ("-1", "expected a size"),
        ("nan", "expected a size"),
        ("inf", "expected a size"),
        ("1e400", "expected a size"),
        ("1/s", "expected a size"),
        ("lots", "expected a size"),
    ],
)
def test_burst_refuses_what_no_limiter_can_hold(text: str, why: str) -> None:
    """Zero, tiny, huge, negative and NaN bursts are a UnitError saying why, never a crash."""
    with pytest.raises(UnitError, match="invalid burst") as info:
        parse_burst(text)
    assert why in str(info.value)


def test_rate_accepts_rates_off_and_timetables() -> None:
    """--rate takes any rate (a bare number is bytes/s, as for pv -L), off, or a timetable."""
    assert parse_pipe_rate("10MiB/s").per_second == 10 * 2**20  # type: ignore[union-attr]
    assert parse_pipe_rate("1000").per_second == 1000  # type: ignore[union-attr]
    assert parse_pipe_rate("1e6") == Rate.parse("1MB/s")  # bytes, not a count of units
    assert parse_pipe_rate("10m") == Rate.parse("10MiB/s")  # as pv -L 10m
    assert parse_pipe_rate("inf").is_unlimited  # type: ignore[union-attr]
    assert parse_pipe_rate("60B/h").per_second == 1 / 60  # type: ignore[union-attr]
    assert str(parse_pipe_rate("08:00,0 18:00,off")) == "08:00,0/s 18:00,unlimited"


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("0", "nothing would ever pass"),
        ("08:00,0 20:00,0", "nothing would ever pass"),
        ("1e-300", "under one byte an hour"),
        ("08:00,1e-9B/s 20:00,off", "under one byte an hour"),
        ("-1", "cannot be negative"),
        ("nan", "not a number"),
        ("1e400", "too large"),
        ("fast", "not a number"),
    ],
)
def test_rate_refuses_what_would_never_finish(text: str, why: str) -> None:
    """A rate that never lets a byte through (or is not a rate) is a UnitError."""
    with pytest.raises(UnitError) as info:
        parse_pipe_rate(text)
    assert why in str(info.value)


# -- endpoints of every kind ----------------------------------------------------------------


class Endpoint:
    """One side of a copy: a file descriptor, and what it ends up holding (for a sink)."""

    def __init__(self, fd: int, result: Callable[[], bytes], cleanup: Callable[[], None]):
        self.fd, self.result, self.cleanup = fd, result, cleanup


def _drain(fd: int, into: bytearray) -> threading.Thread:
    def run() -> None:
        with os.fdopen(fd, "rb", buffering=0) as f:
            while chunk := f.read(65536):
                into.extend(chunk)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def _feed(fd: int, data: bytes) -> threading.Thread:
    def run() -> None:
        # suppress: the copy may stop early (a failure under test)
        with os.fdopen(fd, "wb", buffering=0) as f, contextlib.suppress(BrokenPipeError):
            f.write(data)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def source(kind: str, tmp_path: Path, data: bytes) -> Endpoint:
    if kind == "file":
        path = tmp_path / "in.bin"
        path.write_bytes(data)
        fd = os.open(path, os.O_RDONLY)
        return Endpoint(fd, lambda: b"", lambda: os.close(fd))
    if kind == "pipe":
        r, w = os.pipe()
    else:
        assert kind == "socket"
        a, b = socket.socketpair()
        r, w = a.detach(), b.detach()
    feeder = _feed(w, data)

    def cleanup() -> None:
        os.close(r)
        feeder.join(10)

    return Endpoint(r, lambda: b"", cleanup)


def sink(kind: str, tmp_path: Path) -> Endpoint:
    if kind in ("file", "append"):
        path = tmp_path / "out.bin"
        path.write_bytes(b"old " if kind == "append" else b"")
        flags = os.O_WRONLY | (os.O_APPEND if kind == "append" else 0)
        fd = os.open(path, flags)
        return Endpoint(fd, path.read_bytes, lambda: None)
    got = bytearray()
    if kind == "pipe":
        r, fd = os.pipe()
    else:
        a, b = socket.socketpair()
        r, fd = b.detach(), a.detach()
    drainer = _drain(r, got)

    def result() -> bytes:
        os.close(fd)
        drainer.join(10)
        return bytes(got)

    return Endpoint(fd, result, lambda: None)


@linux
@pytest.mark.parametrize(
    ("src_kind", "dst_kind", "method"),
    [
        ("file", "file", "copy_file_range"),
        ("file", "pipe", "splice"),
        ("pipe", "file", "splice"),
        ("pipe", "pipe", "splice"),
        ("socket", "pipe", "splice"),
        ("file", "socket", "sendfile"),
        ("socket", "socket", "read/write"),
    ],
)
@pytest.mark.parametrize("rate", ["off", "1GiB/s"])
def test_copy_takes_the_cheapest_way_and_is_byte_exact(
    tmp_path: Path, src_kind: str, dst_kind: str, method: str, rate: str
) -> None:
    """Each pair of descriptor kinds uses the zero-copy call it allows, byte for byte."""
    src, dst = source(src_kind, tmp_path, DATA), sink(dst_kind, tmp_path)
    mover = _FdMover(src.fd, dst.fd, ("stdin", "stdout"))
    assert mover.method == method
    del mover
    assert copy(src.fd, dst.fd, RateLimiter(rate, full=True)) == len(DATA)
    src.cleanup()
    assert dst.result() == DATA


@linux
def test_pipes_are_grown_so_one_call_moves_a_megabyte(tmp_path: Path) -> None:
    """A pipe on either side is grown to 1 MiB (F_SETPIPE_SZ) where the system allows."""
    r, w = os.pipe()
    before = fcntl.fcntl(r, fcntl.F_GETPIPE_SZ)
    f = os.open(tmp_path / "x", os.O_RDONLY | os.O_CREAT)
    _FdMover(f, w, ("stdin", "stdout"))
    assert before < fcntl.fcntl(r, fcntl.F_GETPIPE_SZ) == 1 << 20
    for fd in (r, w, f):
        os.close(fd)


@linux
@pytest.mark.parametrize("src_kind", ["pipe", "file"])
def test_a_zero_copy_refusal_goes_on_with_read_and_write(tmp_path: Path, src_kind: str) -> None:
    """A file opened for appending refuses splice and copy_file_range: read/write takes over."""
    src, dst = source(src_kind, tmp_path, DATA), sink("append", tmp_path)
    mover = _FdMover(src.fd, dst.fd, ("stdin", "stdout"))
    assert mover.method != "read/write"
    total = 0
    while n := mover.move(_PIECE):
        total += n
    assert mover.method == "read/write"
    src.cleanup()
    assert (total, dst.result()) == (len(DATA), b"old " + DATA)


def test_file_objects_are_copied_through_one_buffer() -> None:
    """Without descriptors (file objects), the copy goes through one reused buffer."""
    sink_ = io.BytesIO()
    assert copy(io.BytesIO(DATA), sink_, RateLimiter("off")) == len(DATA)
    assert sink_.getvalue() == DATA
    with pytest.raises(TypeError, match="both file descriptors or both file objects"):
        copy(0, sink_)  # type: ignore[arg-type]


# -- paying the limiter -------------------------------------------------------------------


class Till(RateLimiter):
    """A limiter that records each payment with how many bytes had passed before it."""

    def __init__(self, rate: str, passed: Callable[[], int], **kwargs: Any) -> None:
        super().__init__(rate, **kwargs)
        self.passed = passed
        self.payments: list[tuple[float, int]] = []  # (amount, bytes passed before it)
        self.interrupt_at: int | None = None

    def acquire_blocking(self, amount: float = 1) -> None:
        if self.interrupt_at == len(self.payments):
            raise KeyboardInterrupt
        self.payments.append((amount, self.passed()))
        # no waiting: the order of payments and bytes is what is checked here

    @property
    def paid(self) -> float:
        return sum(amount for amount, _ in self.payments)


@linux
@pytest.mark.parametrize("src_kind", ["file", "pipe"])
@pytest.mark.parametrize("burst", [None, 1000.0, 5 * _PIECE])
def test_every_byte_is_paid_for_before_it_passes(
    tmp_path: Path, src_kind: str, burst: float | None
) -> None:
    """
    Payments come before the bytes, are at most one piece (a burst, or a millisecond of
    the rate if that is more, and at most 1 MiB) each, and the end of the input costs no
    payment: what was paid exceeds what passed by less than a piece.
    """
    src, dst = source(src_kind, tmp_path, DATA[:300_000]), sink("file", tmp_path)
    till = Till("10MiB/s", lambda: os.fstat(dst.fd).st_size, burst=burst)
    total = copy(src.fd, dst.fd, till)
    src.cleanup()
    assert total == 300_000
    piece = min(piece_size(till), _PIECE)
    paid_before = 0.0
    for amount, passed in till.payments:
        assert passed <= paid_before  # nothing passed that was not paid for
        assert amount <= piece
        paid_before += amount
    assert total <= till.paid < total + piece
    assert dst.result() == DATA[:300_000]


def test_a_tiny_burst_at_a_high_rate_costs_no_payment_per_byte() -> None:
    """A burst of one byte at 1 GB/s pays in pieces of a millisecond of the rate (1 MB)."""
    till = Till("1GB/s", lambda: 0, burst=1.0)
    assert copy(io.BytesIO(DATA[:200_000]), io.BytesIO(), till) == 200_000
    assert [amount for amount, _ in till.payments] == [1_000_000]


def test_an_unlimited_rate_pays_nothing() -> None:
    """With --rate off the copy never calls the limiter (no per-chunk work at all)."""
    till = Till("off", lambda: 0)
    assert copy(io.BytesIO(DATA), io.BytesIO(), till) == len(DATA)
    assert till.payments == []


def test_an_interrupt_stops_the_copy_and_ends_the_progress_line() -> None:
    """Ctrl-C while paying: it propagates, after the bytes paid for, and the line ends."""
    sink_, progress = io.BytesIO(), io.StringIO()
    till = Till("1MiB/s", lambda: len(sink_.getvalue()), burst=100_000)
    till.interrupt_at = 3
    with pytest.raises(KeyboardInterrupt):
        copy(io.BytesIO(DATA), sink_, till, progress)
    assert len(sink_.getvalue()) == till.paid == 300_000
    assert progress.getvalue().endswith("\n")


# -- failures -------------------------------------------------------------------------------


@linux
@pytest.mark.parametrize("src_kind", ["file", "pipe"])
def test_a_full_disk_is_a_write_error_naming_stdout(tmp_path: Path, src_kind: str) -> None:
    """/dev/full: whichever call fails first, the error is ENOSPC on the write side."""
    src = source(src_kind, tmp_path, DATA)
    full = os.open("/dev/full", os.O_WRONLY)
    with pytest.raises(CopyError) as info:
        copy(src.fd, full, RateLimiter("off"))
    os.close(full)
    src.cleanup()
    assert (info.value.action, info.value.error.errno) == ("write", errno.ENOSPC)
    assert str(info.value) == "cannot write to stdout: No space left on device"
    assert not info.value.reader_gone


@linux
@pytest.mark.parametrize("src_kind", ["file", "pipe"])
def test_a_reader_that_went_away_is_reported_as_such(tmp_path: Path, src_kind: str) -> None:
    """A closed downstream pipe is EPIPE on the write side: `reader_gone`, not a failure."""
    src = source(src_kind, tmp_path, DATA)
    r, w = os.pipe()
    os.close(r)
    with pytest.raises(CopyError) as info:
        copy(src.fd, w, RateLimiter("1GiB/s", full=True))
    os.close(w)
    src.cleanup()
    assert info.value.reader_gone


@pytest.mark.parametrize("what", ["directory", "closed"])
def test_an_unreadable_source_is_a_read_error_naming_stdin(tmp_path: Path, what: str) -> None:
    """A directory or a closed descriptor as the source: one CopyError on the read side."""
    fd = os.open(tmp_path, os.O_RDONLY)
    if what == "closed":
        os.close(fd)
    out = os.open(tmp_path / "out", os.O_WRONLY | os.O_CREAT)
    with pytest.raises(CopyError) as info:
        copy(fd, out, RateLimiter("off"))
    os.close(out)
    if what == "directory":
        os.close(fd)
    assert info.value.action == "read"
    assert info.value.error.errno == (errno.EISDIR if what == "directory" else errno.EBADF)
    assert str(info.value).startswith("cannot read stdin: ")


@linux
def test_non_blocking_descriptors_are_waited_on() -> None:
    """Descriptors someone made non-blocking: EAGAIN waits for readiness, bytes stay exact."""
    src_r, src_w = os.pipe()
    dst_r, dst_w = os.pipe()
    for fd in (src_r, dst_w):
        os.set_blocking(fd, False)

    def slow_feed() -> None:
        with os.fdopen(src_w, "wb", buffering=0) as f:
            for i in range(0, 200_000, 50_000):
                time.sleep(0.01)
                f.write(DATA[i : i + 50_000])

    got = bytearray()
    feeder = threading.Thread(target=slow_feed, daemon=True)
    feeder.start()
    drainer = _drain(dst_r, got)
    assert copy(src_r, dst_w, RateLimiter("off")) == 200_000
    os.close(dst_w)
    drainer.join(10)
    feeder.join(10)
    os.close(src_r)
    assert bytes(got) == DATA[:200_000]


def test_a_progress_stream_that_fails_does_not_stop_the_copy() -> None:
    """The progress line is best effort: a stderr that fails stops the line, not the copy."""

    class Broken(io.StringIO):
        def write(self, text: str) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

    sink_ = io.BytesIO()
    assert copy(io.BytesIO(DATA), sink_, RateLimiter("off"), Broken()) == len(DATA)
    assert sink_.getvalue() == DATA


def test_progress_line_shows_total_and_rates() -> None:
    """The progress display reports bytes copied and ends with a newline."""
    progress = io.StringIO()
    source_, sink_ = io.BytesIO(b"x" * 300_000), io.BytesIO()
    assert copy(source_, sink_, RateLimiter("off"), progress) == 300_000
    line = progress.getvalue()
    assert "293KiB" in line
    assert "/s avg" in line
    assert line.endswith("\n")


SI, IEC, BITS = r"[\d.]+[KMGTP]?B/s", r"[\d.]+([KMGTP]i)?B/s", r"[\d.]+[KMGTP]?bit/s"


@pytest.mark.parametrize(
    ("rate", "total", "unit"),
    [
        ("20MB/s", "300KB", SI),
        ("160Mbit/s", "2.4Mbit", BITS),
        ("20MiB/s", "293KiB", IEC),
        ("20m", "293KiB", IEC),
        ("off", "293KiB", IEC),
        ("1000000", "293KiB", IEC),
        ("08:00,20MB/s 18:00,off", "300KB", SI),
    ],
)
def test_progress_is_shown_in_the_units_of_the_rate(rate: str, total: str, unit: str) -> None:
    """`pipe --rate 20MB/s` counts in MB and MB/s, not MiB; bits in bits; off and plain
    bytes in IEC units, as pv shows them."""
    progress = io.StringIO()
    spec = parse_pipe_rate(rate)
    limiter = RateLimiter(spec, burst=300_000, full=True)  # the next piece: 15 ms or none
    source_, sink_ = io.BytesIO(b"x" * 300_000), io.BytesIO()
    assert copy(source_, sink_, limiter, progress, family=rate_family(spec)) == 300_000
    line = progress.getvalue()
    words = line.split()
    assert words[0] == total
    assert re.fullmatch(unit, words[1])  # the rate now
    assert re.fullmatch(unit, words[3])  # the average


def test_pipe_shows_progress_in_the_units_given() -> None:
    """The command passes the family of --rate to its progress line."""
    result = pipe("--rate", "20MB/s", "--progress", data=b"y" * 300_000)
    assert result.returncode == 0
    assert b"300KB" in result.stderr
    assert b"iB" not in result.stderr


# -- the command, in real processes -----------------------------------------------------------


def pipe(*args: str, data: bytes = b"", **kwargs: Any) -> subprocess.CompletedProcess[bytes]:
    command = [sys.executable, "-m", "throttlekit", "pipe", *args]
    return subprocess.run(
        command, input=data, capture_output=True, check=False, timeout=60, **kwargs
    )


def test_pipe_copies_stdin_to_stdout_byte_for_byte() -> None:
    """`throttlekit pipe` passes every byte through unchanged, with no progress when piped."""
    result = pipe("--rate", "1GiB/s", "--burst", "64KiB", data=DATA)
    assert (result.returncode, result.stderr) == (0, b"")
    assert result.stdout == DATA


def test_pipe_exits_cleanly_when_the_reader_goes_away() -> None:
    """A closed downstream pipe (`| head`) ends the copy with status 0 and no traceback."""
    command = f"{sys.executable} -m throttlekit pipe --rate off"
    script = f"yes | {command} | head -c 10; exit ${{PIPESTATUS[1]}}"
    result = subprocess.run(["bash", "-c", script], capture_output=True, check=False, timeout=60)
    assert result.returncode == 0
    assert result.stdout == b"y\ny\ny\ny\ny\n"
    assert result.stderr == b""


@pytest.fixture
def slow_pipe() -> Iterator[subprocess.Popen[bytes]]:
    """`pipe --rate 100KB/s --progress`, fed by the test, already copying."""
    process = subprocess.Popen(
        [sys.executable, "-m", "throttlekit", "pipe", "--rate", "100KB/s", "--progress"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdin is not None
    assert process.stdout is not None
    process.stdin.write(b"z" * 30_000)
    process.stdin.flush()
    assert process.stdout.read(1000) == b"z" * 1000  # main() is running and copying
    yield process
    process.kill()
    process.wait()
    for stream in (process.stdin, process.stdout, process.stderr):
        if stream is not None:
            stream.close()


def test_ctrl_c_exits_130_without_a_traceback(slow_pipe: subprocess.Popen[bytes]) -> None:
    """SIGINT during a copy: exit status 130, the progress line ended, no traceback."""
    slow_pipe.send_signal(signal.SIGINT)
    _, err = slow_pipe.communicate(timeout=30)
    assert slow_pipe.returncode == 130
    assert b"Traceback" not in err
    assert b"/s avg" in err
    assert err.endswith(b"\n")


def test_the_writer_going_away_ends_the_copy_with_what_it_sent(
    slow_pipe: subprocess.Popen[bytes],
) -> None:
    """The producer closing its end is the end of the input: exit 0 with every byte sent."""
    assert slow_pipe.stdin is not None
    assert slow_pipe.stdout is not None
    assert slow_pipe.stderr is not None
    slow_pipe.stdin.close()
    out, err = slow_pipe.stdout.read(), slow_pipe.stderr.read()
    assert slow_pipe.wait(timeout=30) == 0
    assert len(out) == 30_000 - 1000
    assert b"Traceback" not in err


@pytest.mark.parametrize("fd", [0, 1])
def test_a_closed_stdin_or_stdout_is_one_error_line(fd: int) -> None:
    """`<&-` or `>&-`: one line naming the stream, exit status 2, nothing read."""
    result = pipe("--rate", "off", data=b"x", preexec_fn=lambda: os.close(fd))
    name, doing = ("stdin", "read") if fd == 0 else ("stdout", "write to")
    assert result.returncode == 2
    assert result.stderr.decode() == (
        f"throttlekit: error: cannot {doing} {name}: Bad file descriptor ({name} is closed)\n"
    )


def test_a_live_rate_is_paid_for_even_while_unlimited() -> None:
    """A share of a site rate (pipe --site) may be unlimited at the start and limited
    later: with live=True the copy pays for every piece, so a limit set mid-copy holds."""
    till = Till("off", lambda: 0)
    data = DATA[: 3 * _PIECE]

    class Source(io.BytesIO):
        def readinto1(self, buffer: Any) -> int:
            if till.payments and till.rate.is_unlimited:
                till.rate = Rate.parse("1MB/s")  # set-rate, while the copy runs
            return super().readinto1(buffer)

    assert copy(Source(data), io.BytesIO(), till, live=True) == len(data)
    assert till.rate == Rate.parse("1MB/s")
    assert till.paid >= len(data)  # every byte paid for, before and after the change
