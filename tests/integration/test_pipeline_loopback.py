"""The whole pipeline over real sockets: ccxt's REST client and trio-websocket against the simulator
served by hypercorn on 127.0.0.1:0. Books and trades are checked against the simulator's truth."""

from __future__ import annotations

import trio

from backpack_actors.config import FeedConfig
from backpack_actors.feed import open_feed
from backpack_actors.sim import open_simulator
from tests.pipeline_helpers import ConsumerBooks, assert_matches_truth, assert_trades_match

MARKETS = ["BTC_USDT", "ETH_USDT", "SOL_USDC_PERP"]
# The simulator, hypercorn, the feed and this consumer share one process and one core: the load
# stays below what that carries (the feed's own ceiling is the benchmarks' business).
UPDATES = 10_000


async def test_three_markets_on_one_connection_equal_ground_truth() -> None:
    consumer = ConsumerBooks()
    first_id: dict[str, int] = {}
    with trio.fail_after(300):
        async with open_simulator(port=0, seed=5, markets=MARKETS, rate=400) as sim:
            config = FeedConfig.from_kwargs(
                symbols=["BTC-USDT", "ETH/USDT", "SOL-USDC-PERP"],
                rest_url=sim.rest_url,
                ws_url=sim.ws_url,
                snapshot_interval=10,
            )
            async with open_feed(config) as feed:
                async for event in feed:
                    consumer.apply(event)
                    for sym, last in consumer.last_id.items():
                        first_id.setdefault(sym, last)
                    if len(first_id) == len(MARKETS) and all(
                        consumer.last_id[s] - first_id[s] >= UPDATES for s in MARKETS
                    ):
                        break
                stats = feed.statistics()
            for sym in MARKETS:
                assert_matches_truth(consumer, sim.exchange, sym)
                # Each trade once, equal to the exchange's; every id in the delivered span was
                # delivered or announced (ConsumerBooks checked this as events arrived).
                assert assert_trades_match(consumer, sim.exchange, sym) > 1000
    connections = stats["connections"]
    assert sum(c["reconnects"] for c in connections) == 0, connections
