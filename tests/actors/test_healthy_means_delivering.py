"""A connection that delivers one read and then nothing is not a healthy connection.

The first version of the rebuilt tree called a session healthy when
``now - first_data_at >= ws_healthy_after``, i.e. when its *first* read came long enough ago,
whatever happened after it. A WebSocket that answers one read per connection and
then goes silent (while REST shows the market moving) is therefore "healthy" at every stale
failure, the failure count restarts at 1 each time, and the group never falls back to REST-only:
its books go stale and resync every ``2 x stale_timeout`` forever."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio

from backpack_actors.config import FeedConfig
from backpack_actors.core.events import StatusKind
from backpack_actors.feed import open_feed
from backpack_actors.sim import SimConfig, SimExchange
from backpack_actors.testing import SimRestClient, sim_memory_connector
from tests.pipeline_helpers import ConsumerBooks


class OneRead:
    """A WsConnection that passes one read through and then never returns again."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.reads = 0

    async def send(self, text: str) -> None:
        await self.conn.send(text)

    async def receive_batch(self) -> list[str | bytes]:
        if self.reads >= 1:
            await trio.sleep_forever()
        self.reads += 1
        batch: list[str | bytes] = await self.conn.receive_batch()
        return batch


def one_read_connector(exchange: SimExchange) -> Any:
    inner = sim_memory_connector(exchange)

    @asynccontextmanager
    async def connect() -> AsyncIterator[OneRead]:
        async with inner() as conn:
            yield OneRead(conn)

    return connect


async def test_connection_silent_after_its_first_read_degrades(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Every connection delivers one read, then silence while the market moves: each is
    declared stale, and after ``max_ws_failures`` of them the group is served by REST."""
    exchange = SimExchange(seed=63, markets=["BTC_USDC"], config=SimConfig(rate=40))
    config = FeedConfig.from_kwargs(
        symbols=["BTC-USDC"],
        rest_url="http://sim.invalid",
        ws_url="ws://sim.invalid",
        snapshot_interval=0,
        stale_timeout=5,
        max_ws_failures=3,
        promote_probe_interval=600,
    )
    consumer = ConsumerBooks()
    with trio.fail_after(300):
        async with trio.open_nursery() as nursery:
            await nursery.start(exchange.run)
            async with open_feed(
                config,
                rest_client=SimRestClient(exchange),
                ws_connect=one_read_connector(exchange),
            ) as feed:
                with trio.move_on_after(120):
                    async for event in feed:
                        consumer.apply(event)
                        if StatusKind.DEGRADED_REST_ONLY in consumer.kinds():
                            break
                stats = feed.statistics()
            nursery.cancel_scope.cancel()
    kinds = consumer.kinds()
    # Two stale reconnects, and the third failure is the degradation (its reason says why).
    assert kinds.count(StatusKind.STALE) == 2, kinds
    assert StatusKind.DEGRADED_REST_ONLY in kinds, (
        f"{kinds.count(StatusKind.STALE)} stale reconnects in 120 s and still on WebSocket: "
        f"{stats['connections']}"
    )
