"""WebSocket transport: a batch-oriented connection over trio-websocket.

``receive_batch()`` returns every frame already read, so the stream actor pays one trio scheduling
round per socket read instead of one per frame (ARCHITECTURE §5). trio-websocket's reader task keeps
answering server pings while frames wait in its queue, which is why that queue is large.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Protocol

import trio
import trio_websocket

from backpack_actors.errors import ExchangeUnavailableError, RegionRestrictedError

__all__ = [
    "TrioWsConnection",
    "WsConnection",
    "WsConnector",
    "open_ws",
    "ws_connector",
]

# Frames a connection may hold before its reader stops reading (and answering pings).
DEFAULT_QUEUE_SIZE = 8192
# How many queued frames one receive_batch() hands over at most.
MAX_BATCH = 1024


class WsConnection(Protocol):
    """What a stream actor needs from a WebSocket connection."""

    async def send(self, text: str) -> None: ...

    async def receive_batch(self) -> list[str | bytes]: ...


WsConnector = Callable[[], AbstractAsyncContextManager[WsConnection]]
"""Opens one connection; errors are mapped onto the project's error tree."""


class TrioWsConnection:
    """A :class:`WsConnection` over a ``trio_websocket.WebSocketConnection``."""

    def __init__(self, ws: Any) -> None:
        self._ws = ws
        # trio-websocket keeps received messages in a memory channel; draining it without awaiting
        # is what makes a batch. Pinned to trio-websocket 0.12 in pyproject.toml.
        self._queue: Any = getattr(ws, "_recv_channel", None)

    async def send(self, text: str) -> None:
        try:
            await self._ws.send_message(text)
        except trio_websocket.ConnectionClosed as exc:
            raise ExchangeUnavailableError(f"WebSocket closed while sending: {exc.reason}") from exc

    async def receive_batch(self) -> list[str | bytes]:
        try:
            first = await self._ws.get_message()
        except trio_websocket.ConnectionClosed as exc:
            raise ExchangeUnavailableError(f"WebSocket closed: {exc.reason}") from exc
        batch: list[str | bytes] = [first]
        queue = self._queue
        if queue is not None:
            try:
                while len(batch) < MAX_BATCH:
                    batch.append(queue.receive_nowait())
            except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                pass
        return batch


@asynccontextmanager
async def open_ws(
    url: str,
    *,
    queue_size: int = DEFAULT_QUEUE_SIZE,
    connect_timeout: float = 10.0,
) -> AsyncIterator[WsConnection]:
    """Connect to ``url``; handshake and network failures become project errors."""
    try:
        async with trio_websocket.open_websocket_url(
            url,
            message_queue_size=queue_size,
            connect_timeout=connect_timeout,
            disconnect_timeout=2.0,
        ) as ws:
            yield TrioWsConnection(ws)
    except trio_websocket.ConnectionRejected as exc:
        if exc.status_code in (451, 403):
            raise RegionRestrictedError(url, exc.status_code) from exc
        raise ExchangeUnavailableError(
            f"WebSocket handshake to {url} refused with HTTP {exc.status_code}"
        ) from exc
    except trio_websocket.HandshakeError as exc:
        raise ExchangeUnavailableError(f"WebSocket handshake to {url} failed: {exc!r}") from exc
    except trio_websocket.ConnectionClosed as exc:
        raise ExchangeUnavailableError(f"WebSocket to {url} closed: {exc.reason}") from exc
    except OSError as exc:
        raise ExchangeUnavailableError(f"cannot reach {url}: {exc}") from exc


def ws_connector(url: str, *, queue_size: int = DEFAULT_QUEUE_SIZE) -> WsConnector:
    """A connector opening real WebSocket connections to ``url``."""

    def connect() -> AbstractAsyncContextManager[WsConnection]:
        return open_ws(url, queue_size=queue_size)

    return connect
