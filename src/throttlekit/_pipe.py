"""
``throttlekit pipe``: copy stdin to stdout at a rate, like ``pv -L``, with a progress line.

Built from the public pieces: a :class:`~throttlekit.RateLimiter` and a
:class:`~throttlekit.ThrottledWriter` around stdout. Byte-exact; reads what is available
(``read1``) so an interactive or slow producer is passed on as it comes.
"""

from __future__ import annotations

import re
import time
from collections import deque
from datetime import timedelta
from typing import BinaryIO, Final, TextIO

from ._ratelimit import RateLimiter
from ._streams import ThrottledWriter
from ._units import UnitError, parse_size

__all__ = ["copy", "human_bytes", "parse_burst"]

_CHUNK: Final = 65536
_DURATION_RE: Final = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s)\s*")
_IEC: Final = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


def parse_burst(text: str) -> float | timedelta:
    """``--burst``: a size (``64KiB``, ``1MB``) or a duration of the rate (``0.5s``, ``250ms``)."""
    m = _DURATION_RE.fullmatch(text)
    if m is not None:
        number = float(m[1])
        return timedelta(milliseconds=number) if m[2] == "ms" else timedelta(seconds=number)
    try:
        size = parse_size(text)
    except UnitError as e:
        raise UnitError(
            f"invalid burst {text!r}: expected a size such as '64KiB' or '1MB', or a "
            f"duration such as '0.5s' or '250ms'"
        ) from e
    if size <= 0:
        raise UnitError(f"invalid burst {text!r}: it must be more than zero")
    return size


def human_bytes(n: float) -> str:
    """``n`` bytes in binary units with three significant digits: ``'12.3MiB'``."""
    for unit in _IEC:
        if abs(n) < 1024 or unit == _IEC[-1]:
            return f"{n:.0f}{unit}" if unit == "B" else f"{n:.3g}{unit}"
        n /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


class _Progress:
    """A one-line ``pv``-style display: total, current rate (last second), average, time."""

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._start = time.monotonic()
        self._last_draw = -1.0
        self._total = 0
        self._recent: deque[tuple[float, int]] = deque()

    def add(self, n: int) -> None:
        now = time.monotonic()
        self._total += n
        self._recent.append((now, self._total))
        while len(self._recent) > 2 and now - self._recent[0][0] > 1.0:
            self._recent.popleft()
        if now - self._last_draw >= 0.25:
            self._draw(now)

    def _draw(self, now: float) -> None:
        self._last_draw = now
        elapsed = now - self._start
        first_time, first_total = self._recent[0] if self._recent else (now, 0)
        span = now - first_time
        current = (self._total - first_total) / span if span > 0 else 0.0
        average = self._total / elapsed if elapsed > 0 else 0.0
        minutes, seconds = divmod(int(elapsed), 60)
        self._out.write(
            f"\r{human_bytes(self._total):>9}  {human_bytes(current):>9}/s now  "
            f"{human_bytes(average):>9}/s avg  {minutes:d}:{seconds:02d} "
        )
        self._out.flush()

    def finish(self) -> None:
        self._draw(time.monotonic())
        self._out.write("\n")
        self._out.flush()


def copy(
    source: BinaryIO,
    sink: BinaryIO,
    limiter: RateLimiter,
    progress: TextIO | None = None,
) -> int:
    """Copy ``source`` to ``sink`` at the limiter's rate; returns the number of bytes."""
    writer = ThrottledWriter(sink, limiter, close=False)
    display = _Progress(progress) if progress is not None else None
    read = getattr(source, "read1", source.read)
    total = 0
    try:
        while True:
            data = read(_CHUNK)
            if not data:
                break
            writer.write(data)
            sink.flush()
            total += len(data)
            if display is not None:
                display.add(len(data))
    finally:
        if display is not None:
            display.finish()
    return total
