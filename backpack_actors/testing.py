"""Helpers for testing against the simulator in-process (virtual time friendly).

:func:`sim_memory_connector` and :class:`~backpack_actors.transport.rest.SimRestClient` wire a feed
to a :class:`~backpack_actors.sim.SimExchange` without sockets or threads, so a whole pipeline runs
under trio's ``MockClock``/``autojump_clock``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import trio
import trio.testing
import trio_websocket

from backpack_actors.transport.rest import SimRestClient
from backpack_actors.transport.ws import WsConnection, WsConnector, wsproto_client

__all__ = ["SimRestClient", "sim_memory_connector", "unwrap_group"]


def unwrap_group(exc: BaseException) -> BaseException:
    """The single non-cancellation leaf of nested exception groups, else ``exc`` itself."""
    if not isinstance(exc, BaseExceptionGroup):
        return exc
    leaves: list[BaseException] = []
    stack: list[BaseException] = [exc]
    while stack:
        item = stack.pop()
        if isinstance(item, BaseExceptionGroup):
            stack.extend(item.exceptions)
        elif not isinstance(item, trio.Cancelled):
            leaves.append(item)
    return leaves[0] if len(leaves) == 1 else exc


def sim_memory_connector(exchange: Any) -> WsConnector:
    """Open WebSocket connections to ``exchange`` over in-memory streams.

    The client side is the feed's own :func:`~backpack_actors.transport.ws.wsproto_client`; the
    server side is the simulator's real WebSocket session logic.
    """

    @asynccontextmanager
    async def connect() -> AsyncIterator[WsConnection]:
        client_stream, server_stream = trio.testing.memory_stream_pair()
        try:
            async with trio.open_nursery() as nursery:

                async def serve() -> None:
                    # Server-side failures are the server's: over a socket the client would
                    # only see the connection end, which is what ending this task does here.
                    try:
                        request = await trio_websocket.wrap_server_stream(nursery, server_stream)
                        await exchange.serve_trio_websocket(request)
                    except* (trio_websocket.ConnectionClosed, trio.BrokenResourceError):
                        pass

                nursery.start_soon(serve)
                try:
                    async with wsproto_client(client_stream, "ws://sim.memory/") as conn:
                        yield conn
                finally:
                    nursery.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            single = unwrap_group(group)
            if single is group:
                raise
            raise single from None

    def factory() -> AbstractAsyncContextManager[WsConnection]:
        return connect()

    return factory
