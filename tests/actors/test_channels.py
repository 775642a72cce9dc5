"""Issue 13 / the channel registry of issue 11: every public channel end to end.

Each channel's recorded fixture decodes to its event with the exact text; against the simulator
every event equals ground truth recomputed here from the simulator's own trades and books; the
JSON Lines form round-trips; bad channel names name the key and the closest channel.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import msgspec
import pytest
import trio

from backpack_actors.actors.connection import ConnectionActor
from backpack_actors.actors.reconciler import Reconciler
from backpack_actors.channels import CHANNELS, parse_channel, streams_for
from backpack_actors.config import FeedConfig
from backpack_actors.core.events import (
    BookTicker,
    Candle,
    Event,
    Liquidation,
    MarkPrice,
    OpenInterest,
    Side,
    StatusKind,
    Ticker,
)
from backpack_actors.core.symbols import MarketInfo
from backpack_actors.core.wire import MARKET_DATA_DECODER
from backpack_actors.errors import ConfigError
from backpack_actors.sim import SimConfig, SimExchange
from backpack_actors.sinks.jsonl import EVENT_TYPES, encode_event
from tests.actors.test_multiplexing import _config, running, wait_for
from tests.conftest import DATA
from tests.pipeline_helpers import assert_matches_truth, assert_trades_match

ALL_CHANNELS = [
    "trades",
    "l2_book",
    "book_ticker",
    "ticker",
    "candles:1m",
    "mark_price",
    "open_interest",
    "liquidations",
]


def _info(symbol: str, market_type: str = "spot") -> MarketInfo:
    base, quote = symbol.split("_")[:2]
    suffix = "-PERP" if market_type == "perp" else ""
    return MarketInfo(
        exchange_id=symbol,
        ccxt_symbol=f"{base}/{quote}" + (f":{quote}" if market_type == "perp" else ""),
        normalized=f"{base}-{quote}{suffix}",
        base=base,
        quote=quote,
        market_type=market_type,  # type: ignore[arg-type]
        tick_size=Decimal("0.01"),
        step_size=Decimal("0.0001"),
        min_size=Decimal("0.0001"),
        active=True,
    )


def _reconciler(infos: list[MarketInfo]) -> tuple[Reconciler, list[Event]]:
    out: list[Event] = []
    reconciler = Reconciler(
        markets={i.exchange_id: i for i in infos},
        publish=out.extend,
        request=lambda _request: None,
        wall_clock=lambda: 12.5,
        channels=ALL_CHANNELS,
    )
    return reconciler, out


def _fixture(name: str, key: str) -> dict[str, Any]:
    data = json.loads((DATA / name).read_text())[key]
    result: dict[str, Any] = data.get("data", data)
    return result


def _publish_fixture(data: dict[str, Any], info: MarketInfo) -> Event:
    reconciler, out = _reconciler([info])
    frame = json.dumps({"data": data, "stream": "x"})
    decoded = MARKET_DATA_DECODER.decode(frame).data
    reconciler.on_frames(info.exchange_id, 1, [decoded], 12.5)
    assert len(out) == 1
    return out[0]


# --- recorded fixtures decode with their exact text -------------------------------------------


def test_book_ticker_fixture_keeps_exact_text() -> None:
    event = _publish_fixture(
        _fixture("ws_book_ticker_event.json", "ccxt_recorded"), _info("ETH_USDC")
    )
    assert event == BookTicker(
        "ETH-USDC", "ETH_USDC", 1328288557, "3667.49", "0.0020", "3667.50", "0.4087",
        1754517402450016, 1754517402449064, 12.5,
    )  # fmt: skip
    assert event.bid_size == Decimal("0.0020")
    # The docs example sends the update id as a string: accepted, an integer here.
    docs = _publish_fixture(
        _fixture("ws_book_ticker_event.json", "docs_example_data"), _info("SOL_USDC")
    )
    assert isinstance(docs, BookTicker)
    assert docs.update_id == 111063070525358080


def test_ticker_candle_mark_open_interest_liquidation_fixtures() -> None:
    ticker = _publish_fixture(
        _fixture("ws_ticker_event.json", "ccxt_recorded_data_2"), _info("ETH_USDC")
    )
    assert ticker == Ticker(
        "ETH-USDC", "ETH_USDC", "3481.71", "3536.65", "3369.18", "3407.54", "5542.3911",
        "19303818.6923", 17272, 1754178406415232, 12.5,
    )  # fmt: skip
    candle = _publish_fixture(_fixture("ws_kline_event.json", "ccxt_recorded"), _info("ETH_USDC"))
    assert isinstance(candle, Candle)
    assert (candle.interval, candle.raw_close, candle.raw_volume) == (
        "2h",
        "3680.520000000",
        "62.2621000",
    )
    assert candle.start_us == 1754517600 * 1_000_000
    assert candle.end_us - candle.start_us == 7200 * 1_000_000
    assert not candle.closed
    perp = _info("SOL_USDC_PERP", "perp")
    mark = _publish_fixture(_fixture("ws_mark_price_event.json", "official_sdk_test_data"), perp)
    assert mark == MarkPrice(
        "SOL-USDC-PERP", "SOL_USDC_PERP", "173.35998175", "173.44031179",
        "-0.0000039641039274236048482914", 1747296000000 * 1000, 1747291031914525,
        1747291031910025, 12.5,
    )  # fmt: skip
    oi = _publish_fixture(_fixture("ws_open_interest_event.json", "docs_example_data"), perp)
    assert oi == OpenInterest("SOL-USDC-PERP", "SOL_USDC_PERP", "100", 1694687965941000, 12.5)
    liq = _publish_fixture(
        _fixture("ws_liquidation_event.json", "docs_example_data"), _info("SOL_USDC")
    )
    assert liq == Liquidation(
        "SOL-USDC", "SOL_USDC", "18.70", "10", Side.BUY, 1694688638091000, 567, 12.5
    )


def test_a_channel_not_asked_for_is_not_published() -> None:
    out: list[Event] = []
    reconciler = Reconciler(
        markets={"ETH_USDC": _info("ETH_USDC")},
        publish=out.extend,
        request=lambda _request: None,
        wall_clock=lambda: 0.0,
        channels=["trades", "l2_book"],
    )
    data = _fixture("ws_ticker_event.json", "ccxt_recorded_data_2")
    decoded = MARKET_DATA_DECODER.decode(json.dumps({"data": data})).data
    reconciler.on_frames("ETH_USDC", 1, [decoded], 0.0)
    assert out == []


# --- configuration ------------------------------------------------------------------------------


def test_channel_names_any_case_and_parameters() -> None:
    assert parse_channel("TRADES") == "trades"
    assert parse_channel("Candles:5m") == "candles:5m"
    assert parse_channel("liquidation") == "liquidations"
    config = FeedConfig.from_kwargs(symbols=["BTC-USDC"], channels=["L2_BOOK", "book_ticker"])
    assert config.channels == ("l2_book", "book_ticker")


@pytest.mark.parametrize(
    ("item", "words"),
    [
        ("book_tikcer", ["book_ticker"]),
        ("BOOK_TIKCER", ["'BOOK_TICKER'"]),
        ("candles", ["interval", "1m"]),
        ("candles:7m", ["interval", "15m"]),
        ("ticker:1m", ["no parameter"]),
    ],
)
def test_bad_channel_names_the_key_and_the_closest(item: str, words: list[str]) -> None:
    with pytest.raises(ConfigError) as caught:
        FeedConfig.from_kwargs(symbols=["BTC-USDC"], channels=["trades", item])
    text = str(caught.value)
    assert "channels[1]" in text
    for word in words:
        assert word in text


def test_bad_depth_stream_is_named() -> None:
    with pytest.raises(ConfigError, match="depth_stream"):
        FeedConfig.from_kwargs(symbols=["BTC-USDC"], depth_stream="100ms")


def test_streams_per_market_follow_the_registry() -> None:
    spot, perp = _info("SOL_USDC"), _info("SOL_USDC_PERP", "perp")
    assert streams_for(ALL_CHANNELS, spot) == [
        "trade.SOL_USDC",
        "depth.SOL_USDC",
        "bookTicker.SOL_USDC",
        "ticker.SOL_USDC",
        "kline.1m.SOL_USDC",
    ]
    assert streams_for(["l2_book", "mark_price", "open_interest"], perp, depth_stream="200ms") == [
        "depth.200ms.SOL_USDC_PERP",
        "markPrice.SOL_USDC_PERP",
        "openInterest.SOL_USDC_PERP",
    ]
    # Every JSONL type name is the registry's.
    for channel in CHANNELS.values():
        if channel.event_type is not None:
            assert EVENT_TYPES[channel.event_type] == channel.json_type


# --- against the simulator: every event equals ground truth -----------------------------------


def _truth_candle(exchange: SimExchange, sym: str, start_us: int) -> dict[str, str | int]:
    trades = [
        t for t in exchange.trades(sym) if start_us <= t.engine_time_us < start_us + 60_000_000
    ]
    return {
        "open": str(trades[0].price),
        "high": str(max(t.price for t in trades)),
        "low": str(min(t.price for t in trades)),
        "close": str(trades[-1].price),
        "volume": str(sum(t.quantity for t in trades)),
        "n": len(trades),
    }


async def test_every_channel_against_the_simulator(autojump_clock: trio.testing.MockClock) -> None:
    exchange = SimExchange(
        seed=13, markets=["BTC_USDC", "BTC_USDC_PERP"], config=SimConfig(rate=20.0)
    )
    # One market per connection: the perp's liquidations arrive on the spot market's
    # connection, which carries the one feed-wide stream.
    config = _config(["BTC-USDC", "BTC-USDC-PERP"], channels=ALL_CHANNELS, connection_group_size=1)
    with trio.fail_after(600):
        async with running(exchange, config) as (feed, consumer, log):
            await wait_for(
                lambda: (
                    sum(1 for _, e in log if isinstance(e, Candle) and e.closed) >= 2
                    and any(isinstance(e, OpenInterest) for _, e in log)
                    and sum(1 for _, e in log if isinstance(e, Liquidation)) >= 3
                ),
                within=400,
            )
            carriers = [a for a in feed.tree.connections.actors if a.carries_global]
            assert isinstance(carriers[0], ConnectionActor)
            assert carriers[0].symbols == ["BTC_USDC"]
    events = [e for _, e in log]
    for sym in ("BTC_USDC", "BTC_USDC_PERP"):
        tickers = [e for e in events if isinstance(e, BookTicker) and e.exchange_symbol == sym]
        assert tickers
        for bt in tickers:
            bids, asks = exchange.book_at(sym, bt.update_id)
            assert (bt.bid_price, bt.bid_size) == bids[0]
            assert (bt.ask_price, bt.ask_size) == asks[0]
        stats = [e for e in events if isinstance(e, Ticker) and e.exchange_symbol == sym]
        assert stats
        for t in stats:
            so_far = [x for x in exchange.trades(sym) if x.engine_time_us <= t.event_time_us]
            assert t.trade_count == len(so_far)
            assert t.volume == sum(x.quantity for x in so_far)
            if so_far:
                assert t.last == so_far[-1].price
                assert t.high >= max(x.price for x in so_far)
        closed = [e for e in events if isinstance(e, Candle) and e.exchange_symbol == sym]
        closed = [c for c in closed if c.closed]
        assert closed
        for c in closed:
            truth = _truth_candle(exchange, sym, c.start_us)
            got = {
                "open": str(c.open),
                "high": str(c.high),
                "low": str(c.low),
                "close": str(c.close),
                "volume": str(c.volume),
                "n": c.trade_count,
            }
            assert {k: Decimal(v) for k, v in got.items()} == {
                k: Decimal(v) for k, v in truth.items()
            }
            assert c.interval == "1m"
    perp_marks = [e for e in events if isinstance(e, MarkPrice)]
    assert perp_marks
    assert {e.exchange_symbol for e in perp_marks} == {"BTC_USDC_PERP"}
    sent = exchange.derived.mark_prices["BTC_USDC_PERP"]
    assert [(m.raw_mark_price, m.raw_index_price, m.raw_funding_rate) for m in perp_marks] == [
        (s["p"], s["i"], s["f"]) for s in sent[: len(perp_marks)]
    ]
    for m in perp_marks:
        assert m.index_price is not None
        assert m.mark_price > 0
        assert m.next_funding_time_us is not None
        assert m.next_funding_time_us > m.event_time_us
    for oi in (e for e in events if isinstance(e, OpenInterest)):
        assert oi.exchange_symbol == "BTC_USDC_PERP"
        traded = exchange.trades(oi.exchange_symbol)
        assert oi.open_interest == sum(
            x.quantity for x in traded if x.engine_time_us <= oi.event_time_us
        )
    liquidations = [e for e in events if isinstance(e, Liquidation)]
    truth = exchange.derived.liquidations["BTC_USDC_PERP"]
    assert [(e.raw_price, e.raw_amount) for e in liquidations] == [
        (t.price_str, t.quantity_str) for t in truth[: len(liquidations)]
    ]
    assert all(t.id % 37 == 0 for t in truth)
    assert "BTC_USDC" not in exchange.derived.liquidations  # spot markets have none
    # Books and trades stayed exact beside the other channels, with no frame misread.
    assert consumer.events == []
    for sym in ("BTC_USDC", "BTC_USDC_PERP"):
        assert_matches_truth(consumer, exchange, sym)
        assert_trades_match(consumer, exchange, sym)


def test_jsonl_round_trip_of_every_channel_event() -> None:
    perp = _info("SOL_USDC_PERP", "perp")
    events = [
        _publish_fixture(_fixture("ws_book_ticker_event.json", "ccxt_recorded"), _info("ETH_USDC")),
        _publish_fixture(_fixture("ws_ticker_event.json", "ccxt_recorded_data_2"), perp),
        _publish_fixture(_fixture("ws_kline_event.json", "ccxt_recorded"), perp),
        _publish_fixture(_fixture("ws_mark_price_event.json", "official_sdk_test_data"), perp),
        _publish_fixture(_fixture("ws_open_interest_event.json", "docs_example_data"), perp),
        _publish_fixture(_fixture("ws_liquidation_event.json", "docs_example_data"), perp),
    ]
    for event in events:
        line = json.loads(encode_event(event))
        assert line["type"] == EVENT_TYPES[type(event)]
        fields = msgspec.structs.asdict(event)  # type: ignore[arg-type]
        rebuilt = {(k[4:] if k.startswith("raw_") else k): v for k, v in fields.items()}
        rebuilt = {k: (v.value if isinstance(v, Side) else v) for k, v in rebuilt.items()}
        assert {k: v for k, v in line.items() if k != "type"} == rebuilt


# --- aggregated depth streams -----------------------------------------------------------------


async def test_an_aggregated_depth_stream_that_keeps_the_chain_is_used_as_is(
    autojump_clock: trio.testing.MockClock,
) -> None:
    exchange = SimExchange(seed=4, markets=["ETH_USDC"], config=SimConfig(rate=20.0))
    config = _config(["ETH-USDC"], depth_stream="200ms")
    with trio.fail_after(300):
        async with running(exchange, config) as (_feed, consumer, _log):
            await wait_for(lambda: consumer.deltas.get("ETH_USDC", 0) >= 100, within=200)
            subscribed = {stream for stream, sessions in exchange._subs.items() if sessions}
    assert StatusKind.GAP_DETECTED not in consumer.kinds("ETH-USDC")
    assert "depth.200ms.ETH_USDC" in subscribed
    assert "depth.ETH_USDC" not in subscribed
    assert_matches_truth(consumer, exchange, "ETH_USDC")


async def test_an_aggregated_depth_stream_that_breaks_the_chain_falls_back_to_real_time(
    autojump_clock: trio.testing.MockClock,
) -> None:
    exchange = SimExchange(
        seed=4, markets=["ETH_USDC"], config=SimConfig(rate=20.0, aggregated_keeps_chain=False)
    )
    config = _config(["ETH-USDC"], depth_stream="200ms")
    with trio.fail_after(300):
        async with running(exchange, config) as (_feed, consumer, _log):
            await wait_for(
                lambda: StatusKind.DEPTH_STREAM_FALLBACK in consumer.kinds("ETH-USDC"), within=200
            )
            fallback_at = consumer.deltas.get("ETH_USDC", 0)
            await wait_for(
                lambda: consumer.deltas.get("ETH_USDC", 0) >= fallback_at + 200, within=200
            )
            kinds = consumer.kinds("ETH-USDC")
            subscribed = {stream for stream, sessions in exchange._subs.items() if sessions}
    # Detected, reported once, and on the real-time stream from then on: no gap after it.
    assert kinds.count(StatusKind.DEPTH_STREAM_FALLBACK) == 1
    after = kinds[kinds.index(StatusKind.DEPTH_STREAM_FALLBACK) :]
    assert StatusKind.GAP_DETECTED not in after
    assert "depth.ETH_USDC" in subscribed
    assert "depth.200ms.ETH_USDC" not in subscribed
    assert_matches_truth(consumer, exchange, "ETH_USDC")


# --- REST-only: the channels Backpack serves over REST too ------------------------------------


async def test_rest_only_mode_serves_ticker_mark_price_open_interest_and_book_ticker(
    autojump_clock: trio.testing.MockClock,
) -> None:
    exchange = SimExchange(
        seed=8, markets=["ETH_USDC", "ETH_USDC_PERP"], config=SimConfig(rate=20.0)
    )
    config = _config(
        ["ETH-USDC", "ETH-USDC-PERP"],
        channels=["l2_book", "book_ticker", "ticker", "mark_price", "open_interest"],
        rest_only=True,
    )
    with trio.fail_after(400):
        async with running(exchange, config) as (_feed, _consumer, log):
            await wait_for(
                lambda: (
                    sum(1 for _, e in log if isinstance(e, Ticker)) >= 20
                    and any(isinstance(e, OpenInterest) for _, e in log)
                ),
                within=300,
            )
    events = [e for _, e in log]
    for t in (e for e in events if isinstance(e, Ticker)):
        # The REST answer counts every trade up to the moment it was made, before receipt.
        trades = exchange.trades(t.exchange_symbol)
        received = [x for x in trades if x.engine_time_us * 1000 <= t.received_at_ns]
        n = t.trade_count
        assert n <= len(received)
        assert t.volume == sum(x.quantity for x in trades[:n])
        if n:
            assert t.last == trades[n - 1].price
    marks = [e for e in events if isinstance(e, MarkPrice)]
    assert marks
    assert {m.exchange_symbol for m in marks} == {"ETH_USDC_PERP"}
    for m in marks:
        # Index = the last trade price when the answer was made: one of the trades received.
        trades = exchange.trades(m.exchange_symbol)
        received = [x.price for x in trades if x.engine_time_us * 1000 <= m.received_at_ns]
        # (Before the first trade the index is the market's opening price.)
        initial = exchange.models[m.exchange_symbol].spec.initial_price
        assert m.index_price in [initial, *received[-3:]]
    for oi in (e for e in events if isinstance(e, OpenInterest)):
        assert oi.exchange_symbol == "ETH_USDC_PERP"
        trades = exchange.trades(oi.exchange_symbol)
        totals = [sum(x.quantity for x in trades[:k]) for k in range(len(trades) + 1)]
        assert oi.open_interest in totals  # the base volume traded up to the answer
    touches = [e for e in events if isinstance(e, BookTicker)]
    assert {b.exchange_symbol for b in touches} == {"ETH_USDC", "ETH_USDC_PERP"}
    for bt in touches:
        bids, asks = exchange.book_at(bt.exchange_symbol, bt.update_id)
        assert (bt.bid_price, bt.bid_size) == bids[0]
        assert (bt.ask_price, bt.ask_size) == asks[0]
