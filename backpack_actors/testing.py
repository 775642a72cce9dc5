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
import trio_websocket

from backpack_actors.errors import ExchangeUnavailableError, RegionRestrictedError
from backpack_actors.transport.rest import SimRestClient
from backpack_actors.transport.ws import TrioWsConnection, WsConnection, WsConnector

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
    """Open WebSocket connections to ``exchange`` over in-memory streams."""

    @asynccontextmanager
    async def connect() -> AsyncIterator[WsConnection]:
        try:
            async with trio.open_nursery() as nursery:
                try:
                    ws = await exchange.connect_memory_ws(nursery)
                except trio_websocket.ConnectionRejected as exc:
                    if exc.status_code in (451, 403):
                        raise RegionRestrictedError("sim://memory", exc.status_code) from exc
                    raise ExchangeUnavailableError(
                        f"WebSocket handshake refused with HTTP {exc.status_code}"
                    ) from exc
                except trio_websocket.HandshakeError as exc:
                    raise ExchangeUnavailableError(f"WebSocket handshake failed: {exc!r}") from exc
                try:
                    yield TrioWsConnection(ws)
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
