"""Helpers for testing against the simulator in-process (virtual time friendly).

:func:`sim_memory_connector` and :class:`~backpack_actors.transport.rest.SimRestClient` wire a feed
to a :class:`~backpack_actors.sim.SimExchange` without sockets or threads, so a whole pipeline runs
under trio's ``MockClock``/``autojump_clock``. :func:`simulate_feed` runs such a pipeline (and
can record it); :func:`replay_events`, :func:`replay_iter` and :func:`load_recording` replay
recordings (see :mod:`backpack_actors.recording`), e.g. inside hypothesis property tests.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import trio
import trio.testing
import trio_websocket

from backpack_actors.core.events import Event, StatusEvent, StatusKind
from backpack_actors.recording import (
    Recorder,
    Recording,
    load_recording,
    replay_events,
    replay_iter,
)
from backpack_actors.transport.rest import SimRestClient
from backpack_actors.transport.ws import WsConnection, WsConnector, wsproto_client

__all__ = [
    "Recorder",
    "Recording",
    "SimRestClient",
    "load_recording",
    "replay_events",
    "replay_iter",
    "sim_memory_connector",
    "simulate_feed",
    "unwrap_group",
]


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


async def simulate_feed(
    symbols: Sequence[str] = ("BTC-USDC",),
    *,
    seed: int = 1,
    rate: float = 50.0,
    levels: int = 300,
    events: int = 1000,
    on_ready: Callable[[Any], None] | None = None,
    record_to: str | Path | None = None,
    config: Mapping[str, Any] | None = None,
    wall_clock: Callable[[], float] | None = None,
    time_limit: float = 600.0,
) -> list[Event]:
    """Run a feed against an in-process seeded simulator; every event the feed emitted.

    ``on_ready(exchange)`` is called once every symbol's book is ready (arm faults there with
    ``exchange.faults``); the run stops ``events`` events later. ``record_to`` records the run.
    The feed's wall clock defaults to the simulator's clock; under ``autojump_clock`` (or
    ``trio.testing.MockClock``) a run takes no real waiting. Events still queued when the feed
    stops are included: the result is everything the reconciler emitted.
    """
    from backpack_actors.config import FeedConfig
    from backpack_actors.feed import open_feed
    from backpack_actors.sim import SimConfig, SimExchange

    ids = [symbol.upper().replace("-", "_") for symbol in symbols]
    exchange = SimExchange(seed=seed, markets=ids, config=SimConfig(rate=rate, levels=levels))
    settings: dict[str, Any] = {"rest_url": "http://sim.invalid", "ws_url": "ws://sim.invalid"}
    settings.update(config or {})
    feed_config = FeedConfig.from_kwargs(symbols=list(symbols), **settings)

    def exchange_clock() -> float:
        return exchange.now_us() / 1_000_000

    clock = wall_clock or exchange_clock
    recorder = Recorder(record_to, wall_clock=clock) if record_to is not None else None
    delivered: list[Event] = []
    ready: set[str] = set()
    remaining: int | None = None
    try:
        with trio.fail_after(time_limit):
            async with trio.open_nursery() as nursery:
                await nursery.start(exchange.run)
                async with open_feed(
                    feed_config,
                    rest_client=SimRestClient(exchange),
                    ws_connect=sim_memory_connector(exchange),
                    wall_clock=clock,
                    recorder=recorder,
                ) as feed:
                    async for event in feed:
                        delivered.append(event)
                        if remaining is not None:
                            remaining -= 1
                            if remaining <= 0:
                                break
                        elif isinstance(event, StatusEvent) and event.kind is StatusKind.BOOK_READY:
                            ready.add(event.symbol)
                            if len(ready) == len(ids):
                                remaining = events
                                if on_ready is not None:
                                    on_ready(exchange)
                assert feed.queue is not None
                while (rest := feed.queue.get_nowait()) is not None:
                    delivered.append(rest)
                nursery.cancel_scope.cancel()
    finally:
        if recorder is not None:
            recorder.close()
    return delivered
