"""WebSocket transport: a batch-oriented client driving wsproto directly over a trio stream.

``receive_batch()`` parses everything one socket read returned and hands over every complete
message at once, so the stream actor pays one trio scheduling round per read instead of one per
frame (measured: trio-websocket's per-message ``get_message()`` delivers ~24k frames/s on
loopback, a reader that parses each read completely ~83k/s). Server pings are answered inside
``receive_batch`` as soon as they are parsed; the stream actor calls it continuously (it never
blocks on the reconciler), so pings are answered promptly.

The handshake answer's head (up to its blank line) goes to wsproto and nothing more: whatever
followed it in the same read is the start of the frame stream and goes to the
:class:`~backpack_actors.transport.wsframes.FrameReader`, so a frame split across the handshake
read and the next one still comes out whole. Every phase of connecting has a deadline, and a
timeout says which phase and after how long. A framing violation ends the connection as a
:class:`~backpack_actors.errors.WsProtocolViolation`. No message shows a URL's password.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Protocol
from urllib.parse import urlsplit

import trio
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    CloseConnection,
    Pong,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

from backpack_actors.errors import (
    ExchangeUnavailableError,
    RegionRestrictedError,
    WsProtocolViolation,
    redact_url,
)
from backpack_actors.transport.wsframes import FrameReader, WsProtocolError

__all__ = [
    "TrioWsConnection",
    "WsConnection",
    "WsConnector",
    "WsprotoConnection",
    "open_ws",
    "ws_connector",
    "wsproto_client",
]

# One read: big enough that a busy stream needs few reads, small enough to keep latency low.
RECEIVE_BYTES = 65_536
# Reads that found data at once before one yields anyway (fairness with other tasks).
_MAX_IMMEDIATE = 8
# Largest message accepted (Backpack frames are ~200 bytes; a depth burst is a few KiB).
MAX_MESSAGE_BYTES = 4 * 1024 * 1024
CLOSE_TIMEOUT = 2.0
# h11's own limit for an HTTP head; a 101 answer is a few hundred bytes.
MAX_HANDSHAKE_HEAD = 16 * 1024
# Where an HTTP head ends, as h11 finds it (a bare "\n" line end is accepted too).
_HEAD_END = re.compile(rb"\n\r?\n")
_GONE = (trio.BrokenResourceError, trio.ClosedResourceError, LocalProtocolError, OSError)


class WsConnection(Protocol):
    """What a stream actor needs from a WebSocket connection."""

    async def send(self, text: str) -> None: ...

    async def receive_batch(self) -> list[str | bytes]: ...


WsConnector = Callable[[], AbstractAsyncContextManager[WsConnection]]
"""Opens one connection; errors are mapped onto the project's error tree."""


class WsprotoConnection:
    """A client WebSocket connection over any trio stream.

    wsproto does the handshake and frames everything we send; what the server sends is parsed
    by :class:`~backpack_actors.transport.wsframes.FrameReader`, one whole read at a time.
    ``initial`` is what arrived after the handshake answer in its read: the frame stream's start.
    """

    def __init__(
        self,
        stream: trio.abc.Stream,
        ws: WSConnection,
        url: str,
        initial: bytes = b"",
    ) -> None:
        self._stream = stream
        self._ws = ws
        self.url = url
        self._shown_url = redact_url(url)
        self._reader = FrameReader(MAX_MESSAGE_BYTES)
        # Plain TCP: read the socket directly (see _receive_raw); TLS and memory streams go
        # through their trio stream.
        self._raw: socket.socket | None = None
        self._fd = -1
        self._immediate = 0
        # Whether the last read filled the whole buffer (more is surely waiting): only then is
        # the next read tried before waiting for readability.
        self._more = False
        if isinstance(stream, trio.SocketStream):
            self._raw = socket.socket(fileno=os.dup(stream.socket.fileno()))
            self._raw.setblocking(False)
            self._fd = self._raw.fileno()
        self._initial = initial
        self._closed: str | None = None
        # Set once framing broke: every later call raises the same violation.
        self._violation: str | None = None
        self.pings_answered = 0

    async def send(self, text: str) -> None:
        self._check_open()
        try:
            await self._stream.send_all(self._ws.send(TextMessage(data=text)))
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            raise self._closed_error(f"send failed: {exc}") from exc

    async def receive_batch(self) -> list[str | bytes]:
        """At least one complete message: every message the next socket read(s) completed."""
        if self._closed is not None or self._violation is not None:
            self._check_open()
        feed = self._reader.feed
        raw = self._raw
        wait_readable = trio.lowlevel.wait_readable
        while True:
            data: bytes | bytearray
            try:
                if self._initial:
                    data, self._initial = self._initial, b""
                elif raw is not None and not self._more:
                    # _receive_raw's common case inline (one coroutine less per read).
                    await wait_readable(self._fd)
                    try:
                        data = raw.recv(RECEIVE_BYTES)
                    except BlockingIOError:
                        continue  # woken without data after all: wait again
                    self._more = len(data) == RECEIVE_BYTES
                    self._immediate = 0
                elif raw is not None:
                    data = await self._receive_raw(raw)
                else:
                    data = await self._stream.receive_some(RECEIVE_BYTES)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                raise self._closed_error(f"receive failed: {exc}") from exc
            if not data:
                self._closed = "connection closed by the server without a close frame"
                raise self._closed_error(self._closed)
            try:
                batch, pings, close = feed(data)
            except WsProtocolError as exc:
                # Framing cannot be resynchronised: fail the connection (RFC 6455 §7.1.7).
                self._violation = str(exc)
                self._closed = f"protocol error from the server: {exc}"
                # Bounded: a server that stopped reading must not hold the failure up.
                with trio.move_on_after(CLOSE_TIMEOUT):
                    await self._send_control(CloseConnection(code=1002))
                if exc.messages:
                    # Whole messages before the violation are valid: hand them over first;
                    # the next call raises.
                    return exc.messages
                raise WsProtocolViolation(self.url, self._violation) from exc
            if pings:
                for payload in pings:
                    self.pings_answered += 1
                    await self._send_control(Pong(payload=payload))
            if close is not None:
                code, reason = close
                self._closed = f"closed by the server: code {code} {reason}".rstrip()
                # The server may already have gone; the close itself is what matters.
                await self._send_control(CloseConnection(code=code if code != 1005 else 1000))
                if not batch:
                    raise self._closed_error(self._closed)
                # Hand over what arrived before the close; the next call raises.
            if batch:
                return batch

    async def _receive_raw(self, raw: socket.socket) -> bytes:
        """One read, with at most one scheduler pass per read (trio's ``receive_some`` takes two).

        trio's ``receive_some`` tries the read, waits for readability if there was nothing, reads
        and then yields once more (a checkpoint per call, even with data ready). Here a read waits
        first unless the previous one filled the whole buffer: a shorter read drained the socket,
        so trying again at once would nearly always fail, and a failed non-blocking read costs an
        exception (measured: ~3 µs, as much as the frame it waits for). After a wait the read
        returns at once. A run of reads that found data without waiting yields after
        ``_MAX_IMMEDIATE`` of them, so a busy socket cannot starve the other tasks (and
        cancellation is still seen).
        """
        if self._more:
            try:
                data = raw.recv(RECEIVE_BYTES)
            except BlockingIOError:
                pass
            else:
                self._more = len(data) == RECEIVE_BYTES
                if self._immediate >= _MAX_IMMEDIATE:
                    self._immediate = 0
                    await trio.lowlevel.checkpoint()
                else:
                    self._immediate += 1
                return data
        self._immediate = 0
        wait = trio.lowlevel.wait_readable
        fd = self._fd
        while True:
            await wait(fd)
            try:
                data = raw.recv(RECEIVE_BYTES)
            except BlockingIOError:
                continue  # woken without data after all: wait again
            self._more = len(data) == RECEIVE_BYTES
            return data

    async def _send_control(self, event: Pong | CloseConnection) -> None:
        with contextlib.suppress(*_GONE):
            await self._stream.send_all(self._ws.send(event))

    def _check_open(self) -> None:
        if self._violation is not None:
            raise WsProtocolViolation(self.url, self._violation)
        if self._closed is not None:
            raise self._closed_error(self._closed)

    def _closed_error(self, reason: str) -> ExchangeUnavailableError:
        return ExchangeUnavailableError(f"WebSocket {self._shown_url}: {reason}")

    async def aclose(self) -> None:
        """Send a close frame (best effort, bounded) and close the stream."""
        with trio.move_on_after(CLOSE_TIMEOUT) as scope:
            scope.shield = True
            if self._closed is None:
                self._closed = "closed by the client"
                # Already gone: nothing left to tell the server.
                with contextlib.suppress(*_GONE):
                    await self._stream.send_all(self._ws.send(CloseConnection(code=1000)))
        if self._raw is not None:
            # trio must forget the descriptor before our duplicate of it goes away.
            raw, self._raw = self._raw, None
            trio.lowlevel.notify_closing(raw)
            raw.close()
        await trio.aclose_forcefully(self._stream)


class TrioWsConnection:
    """A :class:`WsConnection` over an existing ``trio_websocket.WebSocketConnection``.

    For code that already holds a trio-websocket connection; the feed itself uses
    :class:`WsprotoConnection`, which batches per socket read.
    """

    def __init__(self, ws: Any) -> None:
        self._ws = ws

    async def send(self, text: str) -> None:
        import trio_websocket

        try:
            await self._ws.send_message(text)
        except trio_websocket.ConnectionClosed as exc:
            raise ExchangeUnavailableError(f"WebSocket closed while sending: {exc.reason}") from exc

    async def receive_batch(self) -> list[str | bytes]:
        import trio_websocket

        try:
            return [await self._ws.get_message()]
        except trio_websocket.ConnectionClosed as exc:
            raise ExchangeUnavailableError(f"WebSocket closed: {exc.reason}") from exc


async def _handshake(
    stream: trio.abc.Stream, url: str, host: str, path: str
) -> tuple[WSConnection, bytes]:
    """wsproto's client handshake; returns the connection and the bytes after the answer's head.

    Only the head is given to wsproto: fed more, it would parse (and keep) the start of the
    frame stream, which belongs to our FrameReader.
    """
    ws = WSConnection(ConnectionType.CLIENT)
    await stream.send_all(ws.send(Request(host=host, target=path)))
    buffer = b""
    while True:
        end = _HEAD_END.search(buffer)
        if end is None:
            if len(buffer) > MAX_HANDSHAKE_HEAD:
                raise ExchangeUnavailableError(
                    f"WebSocket handshake to {redact_url(url)}: the answer's HTTP head exceeds "
                    f"{MAX_HANDSHAKE_HEAD} bytes"
                )
            data = await stream.receive_some(RECEIVE_BYTES)
            if not data:
                raise ExchangeUnavailableError(
                    f"WebSocket {redact_url(url)}: closed during the handshake"
                )
            buffer += data
            continue
        head, buffer = buffer[: end.end()], buffer[end.end() :]
        ws.receive_data(head)
        for event in ws.events():
            if isinstance(event, AcceptConnection):
                return ws, buffer
            if isinstance(event, RejectConnection):
                body = await _rejection_body(stream, ws, buffer) if event.has_body else b""
                _raise_rejected(url, event.status_code, body)
        # A head wsproto made nothing of yet (e.g. an informational answer): read on.


async def _rejection_body(
    stream: trio.abc.Stream, ws: WSConnection, data: bytes | bytearray
) -> bytes:
    """The first 200 bytes of a refusal's body (enough to tell a JSON error from a CDN page)."""
    body = b""
    while True:
        if data:
            ws.receive_data(bytes(data))
        for event in ws.events():
            if isinstance(event, RejectData):
                body = (body + bytes(event.data))[:200]
                if event.body_finished:
                    return body
        data = await stream.receive_some(RECEIVE_BYTES)
        if not data:
            return body


def _raise_rejected(url: str, status: int, body: bytes) -> None:
    url = redact_url(url)
    detail = body.decode("utf-8", "replace").strip()
    # The same rule as REST: 451, or a 403 that is not a JSON API error, means "not from here".
    if status == 451 or (status == 403 and not detail.startswith("{")):
        raise RegionRestrictedError(url, status)
    raise ExchangeUnavailableError(
        f"WebSocket handshake to {url} refused with HTTP {status}"
        + (f": {detail}" if detail else "")
    )


@asynccontextmanager
async def wsproto_client(
    stream: trio.abc.Stream, url: str, *, connect_timeout: float = 10.0
) -> AsyncIterator[WsprotoConnection]:
    """Run the client handshake over an already-open ``stream`` (TCP, TLS or in-memory)."""
    parts = urlsplit(url)
    host = _host_header(url)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    shown = redact_url(url)
    try:
        with trio.fail_after(connect_timeout):
            ws, initial = await _handshake(stream, url, host, path)
    except trio.TooSlowError as exc:
        await trio.aclose_forcefully(stream)
        raise ExchangeUnavailableError(
            f"WebSocket handshake to {shown} timed out after {connect_timeout:g} s"
        ) from exc
    except (trio.BrokenResourceError, OSError, RemoteProtocolError) as exc:
        await trio.aclose_forcefully(stream)
        raise ExchangeUnavailableError(f"WebSocket handshake to {shown} failed: {exc}") from exc
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise
    conn = WsprotoConnection(stream, ws, url, initial)
    try:
        yield conn
    finally:
        await conn.aclose()


@asynccontextmanager
async def open_ws(url: str, *, connect_timeout: float = 10.0) -> AsyncIterator[WsConnection]:
    """Connect to ``ws://`` or ``wss://`` ``url``; failures become project errors."""
    shown = redact_url(url)
    try:
        parts = urlsplit(url)
        scheme, hostname, port = parts.scheme, parts.hostname, parts.port
    except ValueError:  # an unclosed "[" or a port that is not a number
        scheme, hostname, port = "", None, None
    secure = scheme == "wss"
    if scheme not in ("ws", "wss") or not hostname:
        raise ExchangeUnavailableError(f"not a WebSocket URL: {shown!r}")
    port = port or (443 if secure else 80)
    phase = "TCP connect to"
    try:
        with trio.fail_after(connect_timeout):
            stream: trio.abc.Stream = await trio.open_tcp_stream(hostname, port)
            if secure:
                phase = "TLS handshake with"
                tls = trio.SSLStream(stream, ssl.create_default_context(), server_hostname=hostname)
                try:
                    await tls.do_handshake()
                except BaseException:
                    await trio.aclose_forcefully(stream)
                    raise
                stream = tls
    except trio.TooSlowError as exc:
        raise ExchangeUnavailableError(
            f"cannot reach {shown}: {phase} the server timed out after {connect_timeout:g} s"
        ) from exc
    except (OSError, trio.BrokenResourceError) as exc:
        raise ExchangeUnavailableError(f"cannot reach {shown}: {exc}") from exc
    async with wsproto_client(stream, url, connect_timeout=connect_timeout) as conn:
        yield conn


def _host_header(url: str) -> str:
    """``host[:port]`` for the Host header: never the userinfo (it would send the password)."""
    try:
        parts = urlsplit(url)
        hostname, port = parts.hostname, parts.port
    except ValueError:
        hostname, port = None, None
    if not hostname:
        return "localhost"
    name = f"[{hostname}]" if ":" in hostname else hostname
    return f"{name}:{port}" if port is not None else name


def ws_connector(url: str, *, connect_timeout: float = 10.0) -> WsConnector:
    """A connector opening real WebSocket connections to ``url``."""

    def connect() -> AbstractAsyncContextManager[WsConnection]:
        return open_ws(url, connect_timeout=connect_timeout)

    return connect
