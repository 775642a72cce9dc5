"""Every cryptofeed channel the drop-in maps: its name, its type, its fields, from real events.

The events come from a virtual-time simulator run with every channel subscribed (open interest
is published once a minute, so the run covers minutes of market in a fraction of a second).
"""

from __future__ import annotations

from decimal import Decimal

import pytest
import trio
import trio.testing
from cryptofeed.defines import (
    CANDLES,
    FUNDING,
    L2_BOOK,
    LIQUIDATIONS,
    OPEN_INTEREST,
    TICKER,
    TRADES,
)
from cryptofeed.types import Candle, Funding, Liquidation, OpenInterest, OrderBook, Ticker, Trade

from backpack_actors import core
from backpack_actors.cryptofeed import CcxtBackpackFeed
from backpack_actors.testing import simulate_feed

CHANNELS = [TRADES, L2_BOOK, TICKER, FUNDING, OPEN_INTEREST, LIQUIDATIONS, CANDLES]


def test_channel_names_map_to_the_feeds() -> None:
    feed = CcxtBackpackFeed(symbols=["BTC-USDC-PERP"], channels=CHANNELS, candle_interval="5m")
    assert feed.config.channels == (
        "trades",
        "l2_book",
        "book_ticker",
        "mark_price",
        "open_interest",
        "liquidations",
        "candles:5m",
    )
    with pytest.raises(ValueError, match="unknown cryptofeed channel 'l3_book'"):
        CcxtBackpackFeed(symbols=["BTC-USDC"], channels=["l3_book"])


async def test_every_channel_becomes_cryptofeeds_type(
    autojump_clock: trio.testing.MockClock,
) -> None:
    feed = CcxtBackpackFeed(symbols=["BTC-USDC-PERP"], channels=CHANNELS)
    events = await simulate_feed(
        ["BTC-USDC-PERP"],
        rate=20,
        events=4000,
        config={"channels": list(feed.config.channels)},
    )
    seen: set[type] = set()
    for event in events:
        obj = feed._convert(event)
        if isinstance(event, core.events.Trade):
            assert isinstance(obj, Trade)
            assert (obj.id, obj.side) == (str(event.trade_id), event.side.value)
            assert (obj.price, obj.amount) == (event.price, event.amount)
        elif isinstance(event, core.events.BookSnapshot | core.events.BookDelta):
            assert isinstance(obj, OrderBook)
            if isinstance(event, core.events.BookSnapshot):
                assert (obj.sequence_number, obj.delta) == (event.update_id, None)
            else:
                assert obj.sequence_number == event.last_update_id
                assert obj.delta == {"bid": list(event.bids), "ask": list(event.asks)}
        elif isinstance(event, core.events.BookTicker):
            assert isinstance(obj, Ticker)
            assert (obj.bid, obj.ask) == (event.bid_price, event.ask_price)
            assert obj.bid < obj.ask
        elif isinstance(event, core.events.MarkPrice):
            assert isinstance(obj, Funding)
            assert (obj.mark_price, obj.rate) == (event.mark_price, event.funding_rate)
            assert obj.next_funding_time == event.next_funding_time_us / 1e6
        elif isinstance(event, core.events.OpenInterest):
            assert isinstance(obj, OpenInterest)
            assert obj.open_interest == event.open_interest
        elif isinstance(event, core.events.Liquidation):
            assert isinstance(obj, Liquidation)
            assert (obj.quantity, obj.price, obj.side) == (
                event.amount,
                event.price,
                event.side.value,
            )
        elif isinstance(event, core.events.Candle):
            assert isinstance(obj, Candle)
            assert (obj.open, obj.high, obj.low, obj.close, obj.volume) == (
                event.open,
                event.high,
                event.low,
                event.close,
                event.volume,
            )
            assert (obj.interval, obj.closed, obj.trades) == ("1m", event.closed, event.trade_count)
            assert obj.stop - obj.start == pytest.approx(60, abs=1)
        else:
            continue
        assert obj.symbol == "BTC-USDC-PERP"
        assert obj.exchange == "BACKPACK"
        for name in ("price", "amount", "bid", "ask", "open_interest", "mark_price", "close"):
            value = getattr(obj, name, None)
            assert value is None or isinstance(value, Decimal), name
        seen.add(type(obj))
    assert seen == {Trade, OrderBook, Ticker, Funding, OpenInterest, Liquidation, Candle}
