"""
Wrappers that charge a :class:`~throttlekit.RateLimiter` for exactly the bytes that pass.

They sit as close to the wire as the caller lets them: a send is charged just before the
bytes go out, a receive just after they arrive, and each is cut to at most the limiter's
burst, so no single write or read is a larger burst than the limiter allows. A burst
smaller than a millisecond of the rate is not honoured byte by byte: pieces are then a
millisecond of the rate (a burst of one byte at 1 GB/s would otherwise cost a limiter
call and a system call per byte, and no link or disk can tell the difference). Nothing is
buffered: what a wrapper returns or accepts is byte-for-byte what the wrapped object did.
"""

from __future__ import annotations

import io
import math
from collections.abc import AsyncIterable, AsyncIterator, Callable, Mapping
from typing import Any, BinaryIO, Final, final

from anyio.abc import ByteStream

from ._ratelimit import RateLimiter

__all__ = [
    "ThrottledByteStream",
    "ThrottledReader",
    "ThrottledWriter",
    "piece_size",
    "throttle_chunks",
]

# The shortest piece, in seconds of the rate: a smaller burst is not worth a call per piece.
_MIN_PIECE_SECONDS: Final = 0.001


def _check_limiter(value: object, name: str) -> RateLimiter | None:
    if value is not None and not isinstance(value, RateLimiter):
        raise TypeError(f"{name} must be a RateLimiter or None, got {type(value).__name__}")
    return value


def piece_size(limiter: RateLimiter) -> int:
    """
    The largest single read or write: one burst, or a millisecond of the rate if that is
    more (at an unlimited rate, one burst: the rate says nothing then).
    """
    size = limiter.burst
    rate = limiter.rate.per_second
    if rate != math.inf:
        size = max(size, rate * _MIN_PIECE_SECONDS)
    return max(1, int(size)) if size < 2**62 else 2**62


def _split(data: bytes | bytearray | memoryview, limiter: RateLimiter) -> list[memoryview]:
    view = memoryview(data).cast("B")
    size = piece_size(limiter)
    return [view[i : i + size] for i in range(0, len(view), size)] or [view]


@final
class ThrottledByteStream(ByteStream):
    """
    An anyio :class:`~anyio.abc.ByteStream` whose sends and receives are rate limited.

    ``send`` charges ``send_limiter`` before each piece goes out; ``receive`` asks the
    wrapped stream for at most one burst and charges ``receive_limiter`` for what arrived.
    Either limiter may be ``None`` (that direction is not limited), and both may be the
    same limiter (one budget for both directions). Give the same limiter to many streams to
    cap their total, or limiters with a common ``parent`` to cap each and the total.
    Here over a socket pair, on virtual time (in an agent:
    ``await anyio.connect_tcp("backup.example", 7000)``):

        >>> import socket, anyio
        >>> from anyio.abc import SocketStream
        >>> from throttlekit import RateLimiter, ThrottledByteStream
        >>> from throttlekit.testing import run
        >>> host = RateLimiter("100MiB/s")
        >>> async def main():
        ...     ours, theirs = socket.socketpair()
        ...     async with await SocketStream.from_socket(theirs) as peer:
        ...         stream = ThrottledByteStream(
        ...             await SocketStream.from_socket(ours),
        ...             send_limiter=RateLimiter("1MiB/s", burst=65536, parent=host),
        ...         )
        ...         async with stream, anyio.create_task_group() as tg:
        ...             tg.start_soon(stream.send, bytes(3 << 20))    # 3 MiB at 1 MiB/s
        ...             received, start = 0, anyio.current_time()
        ...             while received < 3 << 20:
        ...                 received += len(await peer.receive())
        ...             return round(anyio.current_time() - start)
        >>> run(main)                                   # seconds it took
        3

    The wrapper owns nothing besides the wrapped stream: closing it closes that stream. It
    works with any anyio byte stream (TCP, TLS, Unix sockets, process pipes, memory).
    """

    def __init__(
        self,
        stream: ByteStream,
        *,
        send_limiter: RateLimiter | None = None,
        receive_limiter: RateLimiter | None = None,
    ) -> None:
        if not isinstance(stream, ByteStream):
            raise TypeError(f"stream must be an anyio ByteStream, got {type(stream).__name__}")
        self._stream = stream
        # Bytes that arrived while their charge was cancelled: handed out (and charged)
        # by the next receive, so a cancelled receive never loses data.
        self._unpaid = b""
        self._send_limiter = _check_limiter(send_limiter, "send_limiter")
        self._receive_limiter = _check_limiter(receive_limiter, "receive_limiter")

    @property
    def stream(self) -> ByteStream:
        """The wrapped stream."""
        return self._stream

    async def send(self, item: bytes) -> None:
        """Send ``item``, one burst-sized piece at a time, each charged just before it goes."""
        limiter = self._send_limiter
        if limiter is None:
            await self._stream.send(item)
            return
        for piece in _split(item, limiter):
            await limiter.acquire(len(piece))
            await self._stream.send(bytes(piece))

    async def receive(self, max_bytes: int = 65536) -> bytes:
        """
        Receive at most ``max_bytes`` (and at most one burst), charged once it arrived.

        Cancellation-safe: bytes that arrived while the charge for them was cancelled (or
        interrupted) are kept and returned, charged, by the next ``receive``.
        """
        limiter = self._receive_limiter
        if limiter is None:
            return await self._stream.receive(max_bytes)
        want = min(max_bytes, piece_size(limiter))
        if self._unpaid:
            data, self._unpaid = self._unpaid[:want], self._unpaid[want:]
        else:
            data = await self._stream.receive(want)
        try:
            await limiter.acquire(len(data))
        except BaseException:
            self._unpaid = data + self._unpaid
            raise
        return data

    async def send_eof(self) -> None:
        """Close the sending direction of the wrapped stream."""
        await self._stream.send_eof()

    async def aclose(self) -> None:
        """Close the wrapped stream."""
        await self._stream.aclose()

    @property
    def extra_attributes(self) -> Mapping[Any, Callable[[], Any]]:
        """The wrapped stream's extra attributes (socket addresses and so on)."""
        return self._stream.extra_attributes


@final
class _ThrottledChunks(AsyncIterator[bytes]):
    __slots__ = ("_chunks", "_limiter", "_pending")

    def __init__(self, chunks: AsyncIterable[bytes], limiter: RateLimiter) -> None:
        self._chunks = aiter(chunks)
        self._limiter = limiter
        self._pending: list[memoryview] = []

    async def __anext__(self) -> bytes:
        while not self._pending:
            chunk = await anext(self._chunks)
            if chunk:
                self._pending = _split(chunk, self._limiter)
        piece = self._pending.pop(0)
        await self._limiter.acquire(len(piece))
        return bytes(piece)


def throttle_chunks(chunks: AsyncIterable[bytes], limiter: RateLimiter) -> AsyncIterator[bytes]:
    """
    Pass the byte chunks of ``chunks`` on at the limiter's rate, each cut to at most one
    burst and charged just before it is handed out.

    For producers that are async iterators rather than streams (an HTTP response body, an
    object-store download, a generator reading a file):

        >>> import anyio
        >>> from throttlekit import RateLimiter, throttle_chunks
        >>> from throttlekit.testing import run
        >>> async def download():                       # e.g. response.aiter_bytes()
        ...     for _ in range(4):
        ...         yield bytes(1 << 20)
        >>> async def main():
        ...     start, size = anyio.current_time(), 0
        ...     async for piece in throttle_chunks(download(), RateLimiter("2MiB/s")):
        ...         size += len(piece)                  # write it to the sink here
        ...     return size, anyio.current_time() - start
        >>> run(main)                                   # 4 MiB at 2 MiB/s: (bytes, seconds)
        (4194304, 2.0)

    Empty chunks are skipped; the concatenation of what comes out is exactly what went in.
    """
    if not isinstance(limiter, RateLimiter):
        raise TypeError(f"limiter must be a RateLimiter, got {type(limiter).__name__}")
    if not hasattr(chunks, "__aiter__"):
        raise TypeError(f"chunks must be an async iterable of bytes, got {type(chunks).__name__}")
    return _ThrottledChunks(chunks, limiter)


class _ThrottledFile(io.RawIOBase):
    """Shared plumbing of the sync file wrappers (blocking threads, not event loops)."""

    # Class-level defaults, so that closing (also from __del__) works on an object whose
    # __init__ refused its arguments.
    _raw: BinaryIO = None  # type: ignore[assignment]
    _close_raw = False

    def __init__(self, raw: BinaryIO, limiter: RateLimiter, *, close: bool) -> None:
        super().__init__()
        if not isinstance(limiter, RateLimiter):
            raise TypeError(f"limiter must be a RateLimiter, got {type(limiter).__name__}")
        self._raw = raw
        self._limiter = limiter
        self._close_raw = close

    @property
    def raw(self) -> BinaryIO:
        """The wrapped file object."""
        return self._raw

    def close(self) -> None:
        was_open = not self.closed
        super().close()  # flushes first
        if was_open and self._close_raw:
            self._raw.close()

    def flush(self) -> None:
        if not self.closed and self._raw is not None:
            self._raw.flush()


@final
class ThrottledReader(_ThrottledFile):
    """
    A readable binary file object that reads from ``raw`` at the limiter's rate.

    Each read asks ``raw`` for at most one burst and blocks (with
    :meth:`RateLimiter.acquire_blocking`) until what arrived may pass. It works wherever a
    binary file does, for example with :func:`shutil.copyfileobj` (an image file in an
    agent; bytes in memory here):

        >>> import io, shutil
        >>> from throttlekit import RateLimiter, ThrottledReader
        >>> destination = io.BytesIO()
        >>> with ThrottledReader(io.BytesIO(b"disk image"), RateLimiter("50MiB/s")) as source:
        ...     shutil.copyfileobj(source, destination)
        >>> destination.getvalue()
        b'disk image'

    ``close=True`` (the default) closes ``raw`` with the wrapper. For threads, not for
    code on an event loop: use :func:`throttle_chunks` or :class:`ThrottledByteStream`
    there.
    """

    def __init__(self, raw: BinaryIO, limiter: RateLimiter, *, close: bool = True) -> None:
        if not callable(getattr(raw, "read", None)):
            raise TypeError(f"raw must be a readable binary file, got {type(raw).__name__}")
        super().__init__(raw, limiter, close=close)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        want = min(len(view), piece_size(self._limiter))
        data = self._raw.read(want)
        if not data:
            return 0
        n = len(data)
        view[:n] = data
        self._limiter.acquire_blocking(n)
        return n


@final
class ThrottledWriter(_ThrottledFile):
    """
    A writable binary file object that writes to ``raw`` at the limiter's rate.

    Each write is cut into burst-sized pieces, each charged (blocking) just before it is
    written, and every byte is written before ``write`` returns. Use it as the destination
    of :func:`shutil.copyfileobj`, or anywhere a binary file is written:

        >>> import io, shutil
        >>> from throttlekit import RateLimiter, ThrottledWriter
        >>> archive = io.BytesIO()                      # open("backup.tar", "wb") in an agent
        >>> writer = ThrottledWriter(archive, RateLimiter("80Mbit/s"), close=False)
        >>> shutil.copyfileobj(io.BytesIO(b"tar stream"), writer)
        >>> writer.close(); archive.getvalue()
        b'tar stream'

    ``close=True`` (the default) closes ``raw`` with the wrapper. For threads, not for
    code on an event loop.
    """

    def __init__(self, raw: BinaryIO, limiter: RateLimiter, *, close: bool = True) -> None:
        if not callable(getattr(raw, "write", None)):
            raise TypeError(f"raw must be a writable binary file, got {type(raw).__name__}")
        super().__init__(raw, limiter, close=close)

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        for piece in _split(view, self._limiter):
            self._limiter.acquire_blocking(len(piece))
            written = 0
            while written < len(piece):
                n = self._raw.write(piece[written:])
                written += len(piece) - written if n is None else n
        return len(view)
