"""Targets for the WebSocket frame reader and the handshake that hands it its first bytes.

``frame_reader``: any bytes, cut into any reads. Invariants: the only exception is
``WsProtocolError``; what is held between reads stays within one frame (``max_message`` plus a
header) and ``max_fragments`` fragments, so fragment floods and oversized frames are refused
instead of growing; and the result does not depend on how the bytes were cut into reads (the
same bytes in one read give the same messages, pings, close and error).

``ws_handshake``: a server answers the real client handshake with a valid ``101`` and then a
stream of messages (fragmented or not, pings between them), cut into reads anywhere — the first
read carries the answer's head and the first bytes of the stream. Invariant: the client receives
exactly the messages sent, in order, and answers every ping; the stream's end is reported as
``ExchangeUnavailableError``.
"""

from __future__ import annotations

import base64
import hashlib
import re

import trio

from backpack_actors.errors import ExchangeUnavailableError
from backpack_actors.transport.ws import wsproto_client
from backpack_actors.transport.wsframes import FrameReader, WsProtocolError
from tests.fuzz.targets._input import Input

__all__ = ["frame_reader", "ws_handshake"]

Result = tuple[list[str | bytes], list[bytes], tuple[int, str] | None, str | None]


def _cuts(source: Input, total: int) -> list[int]:
    # Read sizes that add up to `total` (small ones are the interesting ones).
    sizes = []
    left = total
    while left > 0:
        # Once the input is used up, the rest comes in one read (not in 1-byte reads).
        size = 1 + source.below(64 if source.flag() else 4096) if source.remaining else left
        sizes.append(min(size, left))
        left -= size
    return sizes


def _run(reader: FrameReader, reads: list[bytes]) -> Result:
    messages: list[str | bytes] = []
    pings: list[bytes] = []
    for data in reads:
        try:
            got, ping, close = reader.feed(data)
        except WsProtocolError as exc:
            return messages + exc.messages, pings, None, str(exc)
        messages += got
        pings += ping
        # What the reader holds between reads: at most one frame's header and payload...
        assert len(reader._buffer) <= reader.max_message + 14
        # ...and a fragmented message within its budgets.
        assert len(reader._fragments) <= reader.max_fragments
        assert reader._fragment_size <= reader.max_message
        for payload in ping:
            assert len(payload) <= 125
        if close is not None:
            return messages, pings, close, None
    return messages, pings, None, None


def frame_reader(data: bytes) -> None:
    """Bytes from a server, cut into reads by the input's first bytes."""
    source = Input(data)
    max_message = 16 + source.below(4096)
    max_fragments = 1 + source.below(64)
    head = source.below(64)
    cut_seed = source.bytes(head)
    stream = source.rest()
    reads = []
    at = 0
    for size in _cuts(Input(cut_seed), len(stream)):
        reads.append(stream[at : at + size])
        at += size
    whole = _run(FrameReader(max_message, max_fragments), [stream] if stream else [])
    pieces = _run(FrameReader(max_message, max_fragments), reads)
    # Pings parsed in the read that broke framing are not answered (the connection fails), so
    # they are compared only when framing held.
    if whole[3] is not None:
        whole, pieces = (*whole[:1], [], *whole[2:]), (*pieces[:1], [], *pieces[2:])
    assert whole == pieces, (whole, pieces)
    messages = whole[0]
    assert sum(len(m) for m in messages) <= len(stream)


_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_KEY = re.compile(rb"(?im)^sec-websocket-key:\s*(\S+)\s*$")


def _frame(opcode: int, payload: bytes, *, fin: bool = True) -> bytes:
    first = (0x80 if fin else 0) | opcode
    size = len(payload)
    if size < 126:
        header = bytes([first, size])
    elif size < 65536:
        header = bytes([first, 126]) + size.to_bytes(2, "big")
    else:
        header = bytes([first, 127]) + size.to_bytes(8, "big")
    return header + payload


class _Server(trio.abc.Stream):
    """Answers the client's handshake, then serves ``stream`` cut as ``sizes``."""

    def __init__(self, stream: bytes, first: int, sizes: list[int]) -> None:
        self.stream = stream
        self.first = first
        self.sizes = sizes
        self.sent = b""
        self.reads: list[bytes] | None = None

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        self.sent += bytes(data)
        if self.reads is None:
            match = _KEY.search(self.sent)
            assert match is not None
            accept = base64.b64encode(hashlib.sha1(match.group(1) + _GUID).digest())
            head = (
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n"
            )
            # The head and the stream's first bytes in one read.
            self.reads = [head + self.stream[: self.first]]
            at = self.first
            for size in self.sizes:
                if at >= len(self.stream):
                    break
                self.reads.append(self.stream[at : at + size])
                at += size

    async def wait_send_all_might_not_block(self) -> None:
        await trio.lowlevel.checkpoint()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        # No checkpoint: a scheduler pass per read would be most of the target's time.
        assert self.reads is not None
        if not self.reads:
            return b""
        data = self.reads.pop(0)
        if max_bytes is not None and len(data) > max_bytes:
            self.reads.insert(0, data[max_bytes:])
            data = data[:max_bytes]
        return data

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()


def _messages(source: Input) -> tuple[list[str | bytes], bytes, int]:
    # Up to 8 messages, each whole or in up to 4 fragments, with pings before some.
    sent: list[str | bytes] = []
    stream = b""
    pings = 0
    for _ in range(source.below(9)):
        if source.flag():
            stream += _frame(0x9, source.bytes(source.below(126)))
            pings += 1
        binary = source.flag()
        size = source.below(70_000 if source.byte() == 255 else 300)
        if size > 300:
            size = 65_536 + size % 4096  # a 64-bit length header, rarely
        raw = source.bytes(size).ljust(size, b"b") if binary else b""
        if not binary:
            raw = ("é" * (size // 2) + "x" * (size % 2)).encode()
        message: str | bytes = raw if binary else raw.decode()
        sent.append(message)
        parts = 1 + source.below(4)
        step = max(1, len(raw) // parts)
        chunks = [raw[i : i + step] for i in range(0, len(raw), step)] or [b""]
        for index, chunk in enumerate(chunks):
            opcode = (0x2 if binary else 0x1) if index == 0 else 0x0
            stream += _frame(opcode, chunk, fin=index == len(chunks) - 1)
    return sent, stream, pings


def ws_handshake(data: bytes) -> None:
    """A valid handshake answer followed by a fuzzed message stream, cut anywhere."""
    source = Input(data)
    sent, stream, pings = _messages(source)
    first = source.below(len(stream) + 1)
    sizes = _cuts(source, max(0, len(stream) - first))
    server = _Server(stream, first, sizes)
    received: list[str | bytes] = []

    async def main() -> None:
        async with wsproto_client(server, "ws://fuzz.invalid/") as conn:
            try:
                while True:
                    received.extend(await conn.receive_batch())
            except ExchangeUnavailableError:
                # The stream's end (no close frame): how a dropped connection is reported.
                pass
            assert conn.pings_answered == pings

    trio.run(main)
    assert received == sent
