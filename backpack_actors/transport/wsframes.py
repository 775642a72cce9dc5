"""A pure parser for the frames a WebSocket server sends (RFC 6455 §5), one socket read at a time.

wsproto's general-purpose parser costs several µs per frame in Python (measured: ~39% of our client
CPU at saturation). A server → client frame is simple — never masked, and we negotiate no
extensions — so this reader walks each read's bytes in one loop and returns every complete message.
The handshake, and every frame we send, stay with wsproto.

Memory is bounded whatever the server sends: a fragmented message may take at most
``max_message`` bytes *on the wire* (headers included, so a flood of empty fragments counts) and
at most ``max_fragments`` frames; the unparsed remainder is at most one frame.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["MAX_FRAGMENTS", "FrameReader", "WsProtocolError"]

_TEXT, _BINARY, _CONTINUATION, _CLOSE, _PING, _PONG = 0x1, 0x2, 0x0, 0x8, 0x9, 0xA
# Backpack never fragments; 1024 fragments lets a 4 MiB message come in 4 KiB pieces (the
# smallest fragment size servers commonly use) while an endless run of empty ones is refused.
MAX_FRAGMENTS = 1024


class WsProtocolError(ValueError):
    """The server broke the WebSocket framing rules; the connection cannot continue.

    ``messages`` are the complete messages of the same read that came before the violation:
    they are valid and are handed on, not lost with the connection.
    """

    messages: list[str | bytes]

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.messages = []


class FrameReader:
    """Feed it the bytes of each read; it returns complete messages, pings and a close.

    Text messages come back as ``str`` (or as their raw ``bytes`` when they are not valid UTF-8,
    so the decoder reports them as a protocol error instead of the connection failing); binary
    messages as ``bytes``.
    """

    __slots__ = (
        "_buffer",
        "_fragment_opcode",
        "_fragment_size",
        "_fragments",
        "_need",
        "max_fragments",
        "max_message",
    )

    def __init__(self, max_message: int, max_fragments: int = MAX_FRAGMENTS) -> None:
        self.max_message = max_message
        self.max_fragments = max_fragments
        # The start of a frame a read cut off; parsed again once ``_need`` bytes are there.
        self._buffer = bytearray()
        self._need = 0
        self._fragments: list[bytes] = []
        self._fragment_opcode = 0
        self._fragment_size = 0

    def feed(
        self, data: bytes | bytearray
    ) -> tuple[list[str | bytes], Sequence[bytes], tuple[int, str] | None]:
        """Messages completed by ``data``, ping payloads, and ``(code, reason)`` if closed."""
        messages: list[str | bytes] = []
        buf = self._buffer
        if buf:
            buf += data
            if len(buf) < self._need:
                # A large frame still arriving: nothing to parse yet (no copy per read).
                return messages, (), None
            data = bytes(buf)
            buf.clear()
        elif type(data) is not bytes:
            data = bytes(data)
        size = len(data)
        # The common read: whole unfragmented text frames of under 64 KiB, nothing pending.
        # Parsed straight from the read's bytes: one slice and one decode per frame.
        pos = 0
        if not self._fragment_opcode:
            if (
                size > 4
                and data[0] == 0x81
                and data[1] == 126
                and ((data[2] << 8) | data[3]) == size - 4 <= self.max_message
            ):
                # Exactly one frame of 126..65535 bytes (Backpack's are ~200): the most common
                # read of all at real rates.
                try:
                    messages.append(data[4:].decode())
                except UnicodeDecodeError:
                    messages.append(data[4:])
                return messages, (), None
            append = messages.append
            while size - pos >= 4:
                b1 = data[pos + 1]
                if data[pos] != 0x81 or b1 > 126:
                    break
                if b1 == 126:
                    end = pos + 4 + ((data[pos + 2] << 8) | data[pos + 3])
                    start = pos + 4
                else:
                    end = pos + 2 + b1
                    start = pos + 2
                if end > size or end - start > self.max_message:
                    break
                try:
                    append(data[start:end].decode())
                except UnicodeDecodeError:
                    append(data[start:end])
                pos = end
            if pos == size:
                return messages, (), None
        pings: list[bytes] = []
        try:
            close = self._parse(data, pos, messages, pings)
        except WsProtocolError as exc:
            exc.messages = messages
            raise
        return messages, pings, close

    def _parse(
        self, buf: bytes | bytearray, pos: int, messages: list[str | bytes], pings: list[bytes]
    ) -> tuple[int, str] | None:
        """Append what ``buf[pos:]`` completes to ``messages``/``pings``; keep the cut-off rest."""
        size = len(buf)
        max_message = self.max_message
        need = 0
        while size - pos >= 2:
            b0 = buf[pos]
            b1 = buf[pos + 1]
            if b1 & 0x80:
                raise WsProtocolError("the server masked a frame")
            if b0 & 0x70:
                raise WsProtocolError("reserved bits set without a negotiated extension")
            length = b1 & 0x7F
            header = 2
            if length == 126:
                if size - pos < 4:
                    break
                length = int.from_bytes(buf[pos + 2 : pos + 4], "big")
                header = 4
            elif length == 127:
                if size - pos < 10:
                    break
                length = int.from_bytes(buf[pos + 2 : pos + 10], "big")
                header = 10
            if length > max_message:
                raise WsProtocolError(f"frame of {length} bytes exceeds {max_message}")
            end = pos + header + length
            if end > size:
                need = end - pos
                break
            payload = bytes(buf[pos + header : end])
            pos = end
            opcode = b0 & 0x0F
            fin = b0 & 0x80
            if opcode in (_TEXT, _BINARY):
                if self._fragment_opcode:
                    raise WsProtocolError("a new message began inside a fragmented one")
                if fin:
                    messages.append(_message(opcode, payload))
                else:
                    self._fragment_opcode = opcode
                    self._fragments = [payload]
                    # Wire bytes, header included: empty fragments are not free.
                    self._fragment_size = header + length
            elif opcode == _CONTINUATION:
                if not self._fragment_opcode:
                    raise WsProtocolError("a continuation frame without a message")
                self._fragments.append(payload)
                self._fragment_size += header + length
                if self._fragment_size > max_message:
                    raise WsProtocolError(
                        f"fragmented message exceeds {max_message} bytes (headers included)"
                    )
                if len(self._fragments) > self.max_fragments:
                    raise WsProtocolError(
                        f"fragmented message of more than {self.max_fragments} frames"
                    )
                if fin:
                    messages.append(_message(self._fragment_opcode, b"".join(self._fragments)))
                    self._fragments = []
                    self._fragment_opcode = 0
                    self._fragment_size = 0
            elif opcode == _PING:
                _check_control(fin, length)
                pings.append(payload)
            elif opcode == _PONG:
                _check_control(fin, length)
            elif opcode == _CLOSE:
                _check_control(fin, length)
                code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
                return (code, payload[2:].decode("utf-8", "replace"))
            else:
                raise WsProtocolError(f"unknown opcode {opcode:#x}")
        if pos < size:
            # At most one frame, cut off by the end of the read (bounded by max_message).
            self._buffer += buf[pos:]
            self._need = need
        return None


def _message(opcode: int, payload: bytes) -> str | bytes:
    if opcode == _BINARY:
        return payload
    try:
        return payload.decode("utf-8")
    except UnicodeDecodeError:
        return payload


def _check_control(fin: int, length: int) -> None:
    if not fin or length > 125:
        raise WsProtocolError("a control frame must be whole and at most 125 bytes")
