"""The whole pipeline in-process against the simulator, in virtual time (no sockets, no threads)."""

from __future__ import annotations

import trio

from backpack_actors.config import FeedConfig
from backpack_actors.core.events import StatusKind
from backpack_actors.feed import open_feed
from backpack_actors.sim import SimConfig, SimExchange
from backpack_actors.testing import SimRestClient, sim_memory_connector
from tests.pipeline_helpers import ConsumerBooks, assert_matches_truth, assert_trades_match


def _config(symbols: list[str], **overrides: object) -> FeedConfig:
    return FeedConfig.from_kwargs(
        symbols=symbols, rest_url="http://sim.invalid", ws_url="ws://sim.invalid", **overrides
    )


async def test_books_and_trades_equal_ground_truth(autojump_clock: trio.testing.MockClock) -> None:
    exchange = SimExchange(seed=7, markets=["BTC_USDC", "ETH_USDC"], config=SimConfig(rate=200))
    consumer = ConsumerBooks()
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            await nursery.start(exchange.run)
            async with open_feed(
                _config(["BTC-USDC", "eth_usdc"], snapshot_interval=5),
                rest_client=SimRestClient(exchange),
                ws_connect=sim_memory_connector(exchange),
            ) as feed:
                async for event in feed:
                    consumer.apply(event)
                    if all(consumer.deltas.get(s, 0) > 3000 for s in ("BTC_USDC", "ETH_USDC")):
                        break
            nursery.cancel_scope.cancel()
    for sym in ("BTC_USDC", "ETH_USDC"):
        assert_matches_truth(consumer, exchange, sym)
        assert assert_trades_match(consumer, exchange, sym) > 50
        assert consumer.deltas[sym] > 1000
        assert consumer.kinds(sym.replace("_", "-")).count(StatusKind.BOOK_READY) == 1
