"""Stream, iterator and file wrappers: byte-exact, charged per piece, never above one burst."""

from __future__ import annotations

import io
import shutil
from collections.abc import AsyncIterator

import anyio
import pytest
from anyio.abc import ByteStream
from anyio.streams.stapled import StapledByteStream

from throttlekit import (
    RateLimiter,
    ThrottledByteStream,
    ThrottledReader,
    ThrottledWriter,
    throttle_chunks,
)
from throttlekit.testing import ManualClock

pytestmark = pytest.mark.anyio

DATA = bytes(range(256)) * 40  # 10,240 bytes


class NullStream(ByteStream):
    """A byte stream that holds nothing."""

    async def send(self, item: bytes) -> None:
        pass

    async def receive(self, max_bytes: int = 65536) -> bytes:
        return b""

    async def send_eof(self) -> None:
        pass

    async def aclose(self) -> None:
        pass


class RecordingStream(StapledByteStream):
    """A memory byte stream that records the size of every send."""

    def __init__(self) -> None:
        send, receive = anyio.create_memory_object_stream[bytes](100)
        self.sizes: list[int] = []
        self._send_side, self._receive_side = send, receive
        super().__init__(send, receive)  # type: ignore[arg-type]

    async def send(self, item: bytes) -> None:
        self.sizes.append(len(item))
        await self._send_side.send(item)

    async def receive(self, max_bytes: int = 65536) -> bytes:
        return await self._receive_side.receive()


async def test_send_is_cut_into_bursts_and_charged_at_the_rate() -> None:
    """A 10,240-byte send at 1,024 B/s with a 1,000-byte burst goes out in 11 pieces over 10 s."""
    inner = RecordingStream()
    limiter = RateLimiter(1024, burst=1000)
    stream = ThrottledByteStream(inner, send_limiter=limiter)
    t0 = anyio.current_time()
    await stream.send(DATA)
    assert anyio.current_time() - t0 == pytest.approx(10.0)
    assert inner.sizes == [1000] * 10 + [240]
    assert limiter.statistics().total_granted == len(DATA)
    received = b"".join([await inner._receive_side.receive() for _ in inner.sizes])
    assert received == DATA
    await stream.aclose()


async def test_receive_asks_for_at_most_one_burst_and_charges_what_arrived() -> None:
    """Receive never reads more than the burst and charges exactly the bytes received."""
    send, receive = anyio.create_memory_object_stream[bytes](10)
    from anyio.streams.buffered import BufferedByteReceiveStream

    buffered = BufferedByteReceiveStream(receive)
    limiter = RateLimiter(1e4, burst=100, full=True)  # a burst above a millisecond's 10 B
    stream = ThrottledByteStream(StapledByteStream(send, buffered), receive_limiter=limiter)  # type: ignore[arg-type]
    await send.send(b"x" * 250)
    with anyio.fail_after(10):
        got = [await stream.receive(4096) for _ in range(3)]
    assert [len(g) for g in got] == [100, 100, 50]
    assert limiter.statistics().total_granted == 250
    await stream.aclose()


async def test_a_cancelled_receive_loses_no_bytes() -> None:
    """Bytes that arrived while their charge was cancelled come back, charged, next time."""
    send, receive = anyio.create_memory_object_stream[bytes](10)
    from anyio.streams.buffered import BufferedByteReceiveStream

    limiter = RateLimiter(10, burst=100)  # empty: 100 bytes take 10 s to earn
    inner = StapledByteStream(send, BufferedByteReceiveStream(receive))  # type: ignore[arg-type]
    stream = ThrottledByteStream(inner, receive_limiter=limiter)
    await send.send(DATA[:150])
    with anyio.move_on_after(1):
        await stream.receive(4096)  # 100 bytes arrive; their charge is cancelled
    with anyio.fail_after(100):
        got = await stream.receive(60) + await stream.receive(4096) + await stream.receive()
    assert got == DATA[:150]
    assert limiter.statistics().total_granted == 150
    await stream.aclose()


async def test_unlimited_directions_pass_through() -> None:
    """Without limiters, the wrapper forwards send, receive, send_eof and aclose unchanged."""
    inner = RecordingStream()
    stream = ThrottledByteStream(inner)
    await stream.send(DATA)
    assert inner.sizes == [len(DATA)]
    assert stream.stream is inner
    assert stream.extra_attributes == inner.extra_attributes
    await stream.aclose()


async def test_chunks_are_cut_and_paced() -> None:
    """throttle_chunks yields the same bytes, in pieces of at most one burst, at the rate."""

    async def source() -> AsyncIterator[bytes]:
        yield DATA[:5000]
        yield b""
        yield DATA[5000:]

    limiter = RateLimiter(2048, burst=2048)
    t0 = anyio.current_time()
    pieces = [piece async for piece in throttle_chunks(source(), limiter)]
    assert b"".join(pieces) == DATA
    assert max(len(p) for p in pieces) <= 2048
    assert anyio.current_time() - t0 == pytest.approx(5.0)


def test_reader_with_copyfileobj_is_byte_exact_and_charged() -> None:
    """shutil.copyfileobj through a ThrottledReader copies every byte and charges each one."""
    clock = ManualClock()
    limiter = RateLimiter(float("inf"), burst=1000, clock=clock)
    reads: list[int] = []

    class Source(io.BytesIO):
        def read(self, size: int | None = -1) -> bytes:
            data = super().read(size)
            reads.append(len(data))
            return data

    out = io.BytesIO()
    with ThrottledReader(Source(DATA), limiter) as reader:  # type: ignore[arg-type]
        shutil.copyfileobj(reader, out)
    assert out.getvalue() == DATA
    assert max(reads) <= 1000
    assert limiter.statistics().total_granted == len(DATA)


def test_writer_cuts_writes_into_bursts() -> None:
    """A ThrottledWriter writes everything, in burst-sized pieces, each charged."""
    sizes: list[int] = []

    class Sink(io.BytesIO):
        def write(self, data: object) -> int:
            sizes.append(len(data))  # type: ignore[arg-type]
            return super().write(data)  # type: ignore[arg-type]

    sink = Sink()
    limiter = RateLimiter(float("inf"), burst=4096)
    writer = ThrottledWriter(sink, limiter, close=False)  # type: ignore[arg-type]
    assert writer.write(DATA) == len(DATA)
    writer.close()
    assert not sink.closed
    assert sink.getvalue() == DATA
    assert sizes == [4096, 4096, 2048]
    assert limiter.statistics().total_granted == len(DATA)


def test_a_tiny_burst_at_a_high_rate_costs_no_call_per_byte() -> None:
    """
    At 1 GB/s with a burst of one byte, a 64 KiB write goes out whole (a millisecond of
    the rate is a megabyte), not as 65,536 one-byte writes each charged on its own.
    """
    sizes: list[int] = []

    class Sink(io.BytesIO):
        def write(self, data: object) -> int:
            sizes.append(len(data))  # type: ignore[arg-type]
            return super().write(data)  # type: ignore[arg-type]

    limiter = RateLimiter("1GB/s", burst=1)
    data = bytes(65536) * 20  # 1.3 MB: two pieces of a millisecond and the rest
    with ThrottledWriter(Sink(), limiter) as writer:  # type: ignore[arg-type]
        assert writer.write(data) == len(data)
    assert sizes == [1_000_000, len(data) - 1_000_000]
    assert limiter.statistics().total_granted == len(data)
    reader = ThrottledReader(io.BytesIO(data), limiter)  # type: ignore[arg-type]
    assert len(reader.read(len(data))) == 1_000_000


def test_reader_read_all_and_limits_to_the_rate() -> None:
    """read() with no size reads to the end, every byte charged; then reads return b''."""
    limiter = RateLimiter(1e9, burst=1024, full=True)
    reader = ThrottledReader(io.BytesIO(DATA), limiter)  # type: ignore[arg-type]
    assert reader.read() == DATA
    assert reader.read(10) == b""
    assert limiter.statistics().total_granted == len(DATA)


@pytest.mark.parametrize(
    ("make", "fragment"),
    [
        (lambda: ThrottledByteStream(b"x"), "stream must be an anyio ByteStream"),  # type: ignore[arg-type]
        (
            lambda: ThrottledByteStream(NullStream(), send_limiter=5),  # type: ignore[arg-type]
            "send_limiter must be a RateLimiter",
        ),
        (lambda: throttle_chunks([b"x"], RateLimiter(1)), "async iterable"),  # type: ignore[arg-type]
        (lambda: throttle_chunks(None, None), "limiter must be a RateLimiter"),  # type: ignore[arg-type]
        (lambda: ThrottledReader(object(), RateLimiter(1)), "readable binary file"),  # type: ignore[arg-type]
        (lambda: ThrottledWriter(io.BytesIO(), "1MiB/s"), "limiter must be a RateLimiter"),  # type: ignore[arg-type]
    ],
)
async def test_bad_arguments_are_named(make: object, fragment: str) -> None:
    """Wrong wrapped objects and limiters are refused with the argument's name."""
    with pytest.raises(TypeError, match=fragment):
        make()  # type: ignore[operator]
