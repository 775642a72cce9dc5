"""A quiet market keeps its connection; silence only means "stale" when the exchange moved on.

Found in review: every market silent for stale_timeout was torn down and resynced, so a quiet
market reconnected every 30 s and used up the restart budget.
"""

from __future__ import annotations

import trio

from backpack_actors.config import FeedConfig
from backpack_actors.core.events import BookDelta, StatusKind
from backpack_actors.feed import open_feed
from backpack_actors.sim import SimConfig, SimExchange
from backpack_actors.testing import SimRestClient, sim_memory_connector
from tests.pipeline_helpers import ConsumerBooks, assert_matches_truth


async def test_quiet_market_is_not_stale(autojump_clock: trio.testing.MockClock) -> None:
    exchange = SimExchange(seed=9, markets=["SOL_USDC"], config=SimConfig(rate=50))
    config = FeedConfig.from_kwargs(
        symbols=["SOL-USDC"],
        rest_url="http://sim.invalid",
        ws_url="ws://sim.invalid",
        snapshot_interval=0,
        stale_timeout=5,
    )
    consumer = ConsumerBooks()
    with trio.fail_after(600):
        async with trio.open_nursery() as nursery:
            await nursery.start(exchange.run)
            async with open_feed(
                config,
                rest_client=SimRestClient(exchange),
                ws_connect=sim_memory_connector(exchange),
            ) as feed:
                phase = "warm"
                async for event in feed:
                    consumer.apply(event)
                    if phase == "warm" and consumer.deltas.get("SOL_USDC", 0) >= 100:
                        exchange.pause()  # nothing trades or quotes for a while
                        await trio.sleep(120)
                        exchange.resume()
                        phase = "after"
                        quiet_end = consumer.deltas["SOL_USDC"]
                    elif (
                        phase == "after"
                        and isinstance(event, BookDelta)
                        and consumer.deltas["SOL_USDC"] - quiet_end >= 100
                    ):
                        break
                stats = feed.statistics()
            nursery.cancel_scope.cancel()
    assert stats["streams"]["SOL_USDC"]["reconnects"] == 0  # type: ignore[index]
    assert StatusKind.STALE not in consumer.kinds()
    assert StatusKind.RESYNCING not in consumer.kinds()
    assert_matches_truth(consumer, exchange, "SOL_USDC")
