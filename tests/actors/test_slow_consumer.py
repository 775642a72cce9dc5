"""A consumer slower than the feed: books conflate (counted), no trade lost, memory bounded."""

from __future__ import annotations

import trio

from backpack_actors.config import FeedConfig
from backpack_actors.core.events import BookSnapshot, StatusKind
from backpack_actors.feed import open_feed
from backpack_actors.sim import SimConfig, SimExchange
from backpack_actors.testing import SimRestClient, sim_memory_connector
from tests.pipeline_helpers import ConsumerBooks, assert_matches_truth, assert_trades_match

SYMBOLS = ("BTC_USDC", "ETH_USDC")


async def test_slow_consumer_conflates_books_and_keeps_every_trade(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Books faster than the consumer, trades slower: books conflate, no trade is lost."""
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
                    # ~300 events/s: well below the ~800/s the two markets produce, above their
                    # ~175 trades/s: conflated books make room for every trade.
                    await trio.sleep(1 / 300)
                    if trio.current_time() > deadline:
                        break
                stats = feed.statistics()
                exchange.pause()
            nursery.cancel_scope.cancel()
    queue = stats["queue"]
    assert sum(queue["conflated"].values()) > 1000, queue
    assert conflated_snapshots > 10
    assert queue["max_depth"] <= 200 + 16 + 2 * len(SYMBOLS), "bounded: capacity, slack, markers"
    assert queue["dropped"] == 0
    for sym in SYMBOLS:
        assert_matches_truth(consumer, exchange, sym)
        # ConsumerBooks checked id continuity on arrival; here: a long, complete run of trades.
        assert assert_trades_match(consumer, exchange, sym) > 500


async def test_trades_faster_than_the_consumer_never_touch_the_stream(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Trades alone outrun the consumer for a minute: the consumer pays (dropped trades, each
    reported in a consumer_overflow event); nothing upstream notices — zero reconnects, zero
    degradations, zero resyncs — and every delivered book equals the exchange's."""
    exchange = SimExchange(
        seed=22, markets=list(SYMBOLS), config=SimConfig(rate=400, trade_probability=0.6)
    )
    config = FeedConfig.from_kwargs(
        symbols=["BTC-USDC", "ETH-USDC"],
        rest_url="http://sim.invalid",
        ws_url="ws://sim.invalid",
        snapshot_interval=0,
        consumer_queue=300,
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
                deadline = trio.current_time() + 60
                async for event in feed:
                    consumer.apply(event)
                    # 100 events/s against ~500 trades/s: the queue overflows all the time.
                    await trio.sleep(1 / 100)
                    if trio.current_time() > deadline:
                        break
                stats = feed.statistics()
                exchange.pause()
            nursery.cancel_scope.cancel()
    kinds = consumer.kinds()
    assert StatusKind.CONSUMER_OVERFLOW in kinds
    for kind in (
        StatusKind.RECONNECTING,
        StatusKind.STALE,
        StatusKind.DEGRADED_REST_ONLY,
        StatusKind.RESYNCING,
        StatusKind.GAP_DETECTED,
    ):
        assert kind not in kinds, kind
    (connection,) = stats["connections"]
    assert (connection["reconnects"], connection["degradations"]) == (0, 0)
    assert stats["rest"]["calls"] == 1 + len(SYMBOLS), "markets, initial snapshots: no resync"
    for sym in SYMBOLS:
        assert_matches_truth(consumer, exchange, sym)
        truth = [t.id for t in exchange.trades(sym)]
        delivered = [t.trade_id for t in consumer.trades[sym]]
        assert consumer.dropped[sym] > 1000, "the consumer really fell behind"
        # Every trade from the first delivered to the last delivered was either delivered or
        # named in a consumer_overflow report (ConsumerBooks checked the ranges on arrival).
        first, last = delivered[0], delivered[-1]
        span = [i for i in truth if first <= i <= last]
        assert len(delivered) + consumer.dropped[sym] == len(span)
        assert_trades_match(consumer, exchange, sym)
