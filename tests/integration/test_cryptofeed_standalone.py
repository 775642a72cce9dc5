"""The standalone CcxtBackpackFeed (no cryptofeed needed): cryptofeed's field names on our events,
a maintained book per symbol, and a gap that reaches the callback as a reset."""

from __future__ import annotations

from decimal import Decimal

import trio

from backpack_actors.cf_shapes import BookDeltaView, BookSnapshotView, TradeView
from backpack_actors.config import L2_BOOK, TRADES
from backpack_actors.core.events import BookDelta, BookSnapshot, Trade
from backpack_actors.feed import CcxtBackpackFeed
from backpack_actors.sim import open_simulator


async def test_standalone_feed_speaks_cryptofeeds_field_names() -> None:
    trades: list[TradeView] = []
    resets: list[int] = []
    last: dict[str, tuple[int, dict[Decimal, Decimal], dict[Decimal, Decimal]]] = {}
    deltas = 0

    def on_trade(trade: TradeView, receipt: float) -> None:
        assert isinstance(trade, Trade)  # the older API still holds
        trades.append(trade)

    def on_book(book: BookSnapshotView | BookDeltaView, receipt: float) -> None:
        nonlocal deltas
        assert isinstance(book, BookSnapshot | BookDelta)
        assert book.exchange == "BACKPACK"
        if book.delta is None:
            assert isinstance(book, BookSnapshot)
            if book.symbol == "BTC-USDC":
                resets.append(book.sequence_number)
        else:
            assert set(book.delta) == {"bid", "ask"}
            deltas += 1
            if deltas == 30:
                armed.set()
        last[book.symbol] = (
            book.sequence_number,
            dict(book.book.bids),
            dict(book.book.asks),
        )
        if len(resets) >= 2 and len(trades) >= 20:
            feed.stop()

    armed = trio.Event()
    with trio.fail_after(60):
        async with open_simulator(seed=23, markets=["BTC_USDC", "ETH_USDC"], rate=60) as sim:
            feed = CcxtBackpackFeed(
                symbols=["BTC-USDC", "ETH-USDC"],
                channels=[TRADES, L2_BOOK],
                callbacks={TRADES: on_trade, L2_BOOK: on_book},
                rest_url=sim.rest_url,
                ws_url=sim.ws_url,
            )

            async def drop_one() -> None:
                await armed.wait()
                sim.faults.drop_delta(symbol="BTC_USDC")

            async with trio.open_nursery() as nursery:
                nursery.start_soon(drop_one)
                await feed.run_async()
                nursery.cancel_scope.cancel()
            assert sim.faults.injected["drop"] == 1
            assert resets[1] > resets[0]
            for symbol, (sequence, bids, asks) in last.items():
                true_bids, true_asks = sim.exchange.book_at(symbol.replace("-", "_"), sequence)
                assert bids == dict(true_bids)
                assert asks == dict(true_asks)
    for trade in trades:
        assert trade.id == str(trade.trade_id)
        assert trade.exchange == "BACKPACK"
        assert trade.type is None
        assert isinstance(trade.price, Decimal)
        assert trade.timestamp == trade.engine_time_us / 1e6
