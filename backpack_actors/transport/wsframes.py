"""A pure parser for the frames a WebSocket server sends (RFC 6455 §5), one socket read at a time.

wsproto's general-purpose parser costs several µs per frame in Python (measured: ~39% of our client
CPU at saturation). A server → client frame is simple — never masked, and we negotiate no
extensions — so this reader walks each read's bytes in one loop and returns every complete message.
The handshake, and every frame we send, stay with wsproto.
"""

from __future__ import annotations

__all__ = ["FrameReader", "WsProtocolError"]

_TEXT, _BINARY, _CONTINUATION, _CLOSE, _PING, _PONG = 0x1, 0x2, 0x0, 0x8, 0x9, 0xA


class WsProtocolError(ValueError):
    """The server broke the WebSocket framing rules; the connection cannot continue."""


class FrameReader:
    """Feed it the bytes of each read; it returns complete messages, pings and a close.

    Text messages come back as ``str`` (or as their raw ``bytes`` when they are not valid UTF-8,
    so the decoder reports them as a protocol error instead of the connection failing); binary
    messages as ``bytes``.
    """

    __slots__ = ("_buffer", "_fragment_opcode", "_fragment_size", "_fragments", "max_message")

    def __init__(self, max_message: int) -> None:
        self.max_message = max_message
        self._buffer = bytearray()
        self._fragments: list[bytes] = []
        self._fragment_opcode = 0
        self._fragment_size = 0

    def feed(
        self, data: bytes | bytearray
    ) -> tuple[list[str | bytes], list[bytes], tuple[int, str] | None]:
        """Messages completed by ``data``, ping payloads, and ``(code, reason)`` if closed."""
        buf = self._buffer
        buf += data
        messages: list[str | bytes] = []
        pings: list[bytes] = []
        close: tuple[int, str] | None = None
        size = len(buf)
        pos = 0
        max_message = self.max_message
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
                    self._fragment_size = length
            elif opcode == _CONTINUATION:
                if not self._fragment_opcode:
                    raise WsProtocolError("a continuation frame without a message")
                self._fragments.append(payload)
                self._fragment_size += length
                if self._fragment_size > max_message:
                    raise WsProtocolError(f"message exceeds {max_message} bytes")
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
                close = (code, payload[2:].decode("utf-8", "replace"))
                break
            else:
                raise WsProtocolError(f"unknown opcode {opcode:#x}")
        del buf[:pos]
        return messages, pings, close


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
