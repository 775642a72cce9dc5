"""WebSocket transport: a batch-oriented client driving wsproto directly over a trio stream.

``receive_batch()`` parses everything one socket read returned and hands over every complete
message at once, so the stream actor pays one trio scheduling round per read instead of one per
frame (ARCHITECTURE §5: trio-websocket's per-message ``get_message()`` delivers ~24k frames/s on
loopback, a reader that parses each read completely ~83k/s). Server pings are answered inside
``receive_batch`` as soon as they are parsed; the stream actor calls it continuously (it never
blocks on the reconciler), so pings are answered promptly.
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Protocol
from urllib.parse import urlsplit

import trio
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Pong,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

from backpack_actors.errors import ExchangeUnavailableError, RegionRestrictedError
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
# Largest message accepted (Backpack frames are ~200 bytes; a depth burst is a few KiB).
MAX_MESSAGE_BYTES = 4 * 1024 * 1024
CLOSE_TIMEOUT = 2.0
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
    """

    def __init__(
        self,
        stream: trio.abc.Stream,
        ws: WSConnection,
        url: str,
        pending: list[str | bytes] | None = None,
    ) -> None:
        self._stream = stream
        self._ws = ws
        self.url = url
        self._reader = FrameReader(MAX_MESSAGE_BYTES)
        self._pending: list[str | bytes] = pending or []
        self._closed: str | None = None
        self.pings_answered = 0

    async def send(self, text: str) -> None:
        self._check_open()
        try:
            await self._stream.send_all(self._ws.send(TextMessage(data=text)))
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            raise self._closed_error(f"send failed: {exc}") from exc

    async def receive_batch(self) -> list[str | bytes]:
        """At least one complete message: every message the next socket read(s) completed."""
        if self._pending:
            batch, self._pending = self._pending, []
            return batch
        self._check_open()
        reader = self._reader
        while True:
            try:
                data = await self._stream.receive_some(RECEIVE_BYTES)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                raise self._closed_error(f"receive failed: {exc}") from exc
            if not data:
                self._closed = "connection closed by the server without a close frame"
                raise self._closed_error(self._closed)
            try:
                batch, pings, close = reader.feed(data)
            except WsProtocolError as exc:
                self._closed = f"protocol error from the server: {exc}"
                raise self._closed_error(self._closed) from exc
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

    async def _send_control(self, event: Pong | CloseConnection) -> None:
        with contextlib.suppress(*_GONE):
            await self._stream.send_all(self._ws.send(event))

    def _check_open(self) -> None:
        if self._closed is not None:
            raise self._closed_error(self._closed)

    def _closed_error(self, reason: str) -> ExchangeUnavailableError:
        return ExchangeUnavailableError(f"WebSocket {self.url}: {reason}")

    async def aclose(self) -> None:
        """Send a close frame (best effort, bounded) and close the stream."""
        with trio.move_on_after(CLOSE_TIMEOUT) as scope:
            scope.shield = True
            if self._closed is None:
                self._closed = "closed by the client"
                # Already gone: nothing left to tell the server.
                with contextlib.suppress(*_GONE):
                    await self._stream.send_all(self._ws.send(CloseConnection(code=1000)))
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
) -> tuple[WSConnection, list[str | bytes]]:
    ws = WSConnection(ConnectionType.CLIENT)
    await stream.send_all(ws.send(Request(host=host, target=path)))
    rejected: RejectConnection | None = None
    body = b""
    while True:
        data = await stream.receive_some(RECEIVE_BYTES)
        if not data:
            if rejected is not None:
                _raise_rejected(url, rejected.status_code, body)
            raise ExchangeUnavailableError(f"WebSocket {url}: closed during the handshake")
        ws.receive_data(bytes(data))
        for event in ws.events():
            if isinstance(event, AcceptConnection):
                return ws, _early_messages(ws)
            if isinstance(event, RejectConnection):
                rejected = event
                if not event.has_body:
                    _raise_rejected(url, event.status_code, b"")
            elif isinstance(event, RejectData) and rejected is not None:
                body = (body + bytes(event.data))[:200]
                if event.body_finished:
                    _raise_rejected(url, rejected.status_code, body)


def _early_messages(ws: WSConnection) -> list[str | bytes]:
    """Messages that arrived in the same read as the handshake answer (wsproto parsed them)."""
    early: list[str | bytes] = []
    for event in ws.events():
        if isinstance(event, TextMessage):
            early.append(event.data)
        elif isinstance(event, BytesMessage):
            early.append(bytes(event.data))
    return early


def _raise_rejected(url: str, status: int, body: bytes) -> None:
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
    host = parts.netloc or "localhost"
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    try:
        with trio.fail_after(connect_timeout):
            ws, pending = await _handshake(stream, url, host, path)
    except trio.TooSlowError as exc:
        await trio.aclose_forcefully(stream)
        raise ExchangeUnavailableError(f"WebSocket handshake to {url} timed out") from exc
    except (trio.BrokenResourceError, OSError, RemoteProtocolError) as exc:
        await trio.aclose_forcefully(stream)
        raise ExchangeUnavailableError(f"WebSocket handshake to {url} failed: {exc}") from exc
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise
    conn = WsprotoConnection(stream, ws, url, pending)
    try:
        yield conn
    finally:
        await conn.aclose()


@asynccontextmanager
async def open_ws(url: str, *, connect_timeout: float = 10.0) -> AsyncIterator[WsConnection]:
    """Connect to ``ws://`` or ``wss://`` ``url``; failures become project errors."""
    parts = urlsplit(url)
    secure = parts.scheme == "wss"
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise ExchangeUnavailableError(f"not a WebSocket URL: {url!r}")
    port = parts.port or (443 if secure else 80)
    try:
        with trio.fail_after(connect_timeout):
            stream: trio.abc.Stream = await trio.open_tcp_stream(parts.hostname, port)
            if secure:
                tls = trio.SSLStream(
                    stream, ssl.create_default_context(), server_hostname=parts.hostname
                )
                await tls.do_handshake()
                stream = tls
    except trio.TooSlowError as exc:
        raise ExchangeUnavailableError(f"cannot reach {url}: connect timed out") from exc
    except (OSError, trio.BrokenResourceError) as exc:
        raise ExchangeUnavailableError(f"cannot reach {url}: {exc}") from exc
    async with wsproto_client(stream, url, connect_timeout=connect_timeout) as conn:
        yield conn


def ws_connector(url: str, *, connect_timeout: float = 10.0) -> WsConnector:
    """A connector opening real WebSocket connections to ``url``."""

    def connect() -> AbstractAsyncContextManager[WsConnection]:
        return open_ws(url, connect_timeout=connect_timeout)

    return connect
