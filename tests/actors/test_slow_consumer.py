"""A consumer slower than the feed: books conflate (counted), no trade lost, memory bounded."""

from __future__ import annotations

import trio

from backpack_actors.config import FeedConfig
from backpack_actors.core.events import BookSnapshot
from backpack_actors.feed import open_feed
from backpack_actors.sim import SimConfig, SimExchange
from backpack_actors.testing import SimRestClient, sim_memory_connector
from tests.pipeline_helpers import ConsumerBooks, assert_matches_truth, assert_trades_match

SYMBOLS = ("BTC_USDC", "ETH_USDC")


async def test_slow_consumer_conflates_books_and_keeps_every_trade(
    autojump_clock: trio.testing.MockClock,
) -> None:
    exchange = SimExchange(seed=21, markets=list(SYMBOLS), config=SimConfig(rate=300))
    config = FeedConfig.from_kwargs(
        symbols=["BTC-USDC", "ETH-USDC"],
        rest_url="http://sim.invalid",
        ws_url="ws://sim.invalid",
        snapshot_interval=0,
        consumer_queue=200,
    )
    consumer = ConsumerBooks()
    conflated_snapshots = 0
    with trio.fail_after(600):
        async with trio.open_nursery() as nursery:
            await nursery.start(exchange.run)
            async with open_feed(
                config,
                rest_client=SimRestClient(exchange),
                ws_connect=sim_memory_connector(exchange),
            ) as feed:
                deadline = trio.current_time() + 60
                async for event in feed:
                    consumer.apply(event)
                    if isinstance(event, BookSnapshot) and event.reason == "conflated":
                        conflated_snapshots += 1
                    # ~150 events/s: well below the ~700/s the two markets produce.
                    await trio.sleep(1 / 150)
                    if trio.current_time() > deadline:
                        break
                stats = feed.statistics()
                exchange.pause()
            nursery.cancel_scope.cancel()
    queue = stats["queue"]
    assert sum(queue["conflated"].values()) > 1000, queue
    assert conflated_snapshots > 10
    assert queue["max_depth"] <= 200 + len(SYMBOLS), "bounded: capacity plus one marker per symbol"
    assert queue["dropped"] == 0
    for sym in SYMBOLS:
        assert_matches_truth(consumer, exchange, sym)
        # ConsumerBooks checked id continuity on arrival; here: a long, complete run of trades.
        assert assert_trades_match(consumer, exchange, sym) > 500
