"""Every recorded payload in tests/data decodes through core.wire to the exact values it holds.

The test enumerates the folder: a fixture file without an entry in ``HANDLERS`` fails the suite, and
so does a new named variant inside a covered file (each handler lists the variants it expects).
Expected values are written out by hand from the fixture text; list-valued fixtures are also
checked element by element against ``json`` + ``Decimal`` parsing of the same file.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import pytest

from backpack_actors.core import wire
from backpack_actors.core.wire import (
    BookTickerEvent,
    DepthEvent,
    KlineEvent,
    LiquidationEvent,
    MarkPriceEvent,
    OpenInterestEvent,
    OrderAcceptedEvent,
    OrderFillEvent,
    PositionOpenedEvent,
    TickerEvent,
    TradeEvent,
    WsError,
    WsFrame,
)
from backpack_actors.errors import ProtocolError

DATA = Path(__file__).resolve().parent.parent / "data"
D = Decimal

# Files in tests/data that are documentation, not payloads.
NOT_PAYLOADS = {"PROVENANCE.md"}


def _load(name: str) -> Any:
    return json.loads((DATA / name).read_text())


def _variants(obj: dict[str, Any], expected: set[str]) -> dict[str, Any]:
    """The named entries of a fixture, minus ``_`` notes; fails on an unexpected new entry."""
    found = {k: v for k, v in obj.items() if not k.startswith("_")}
    assert set(found) == expected, f"fixture variants changed: {sorted(set(found) ^ expected)}"
    return found


def _bytes(obj: Any) -> bytes:
    return json.dumps(obj).encode()


def _same_text(got: Sequence[tuple[Decimal, Decimal]], pairs: list[list[str]]) -> None:
    # Equality of Decimals ignores scale ("0.000" == "0"); the wire scale must survive too.
    assert [(str(p), str(q)) for p, q in got] == [(p, q) for p, q in pairs]


def _ws(obj: dict[str, Any], stream: str | None = None) -> WsFrame:
    """Decode a full envelope, or wrap a data-only fixture in one first; check a round trip."""
    envelope = obj if "data" in obj or "error" in obj else {"stream": stream, "data": obj}
    frame = wire.decode_ws_frame(_bytes(envelope))
    assert wire.decode_ws_frame(wire.encode_json(frame)) == frame
    return frame


# --------------------------------------------------------------------------------------------------
# REST


def check_assets(name: str) -> None:
    (asset,) = wire.decode_assets((DATA / name).read_bytes())
    assert (asset.symbol, asset.display_name, asset.coingecko_id) == (
        "JTO",
        "Jito",
        "jito-governance-token",
    )
    (token,) = asset.tokens
    assert token.blockchain == "Solana"
    assert token.contract_address == "jtojtomepa8beP8AuQc6eXt5FriJwfFMwQx2v2f9mCL"
    assert token.deposit_enabled is True
    assert token.withdraw_enabled is True
    assert token.maximum_withdrawal is None
    assert (token.minimum_deposit, token.minimum_withdrawal, token.withdrawal_fee) == (
        D("0.28"),
        D("0.58"),
        D("0.29"),
    )


def check_depth_docs(name: str) -> None:
    raw = (DATA / name).read_bytes()
    snap = wire.decode_depth_snapshot(raw, "SOL_USDC")
    assert snap.asks == [(D("21.9"), D("500.123")), (D("22.1"), D("2321.11"))]
    assert snap.bids == [(D("20.12"), D("255.123")), (D("20.5"), D("499.555"))]
    assert snap.last_update_id == 1684026955123
    assert snap.timestamp == 1684026955123
    assert wire.convert_depth_snapshot(json.loads(raw), "SOL_USDC") == snap


def check_depth_sdk(name: str) -> None:
    variants = _variants(_load(name), {"lastUpdateId_as_string", "lastUpdateId_as_integer"})
    decoded = []
    for body in variants.values():
        snap = wire.decode_depth_snapshot(_bytes(body), "SOL_USDC")
        assert snap.last_update_id == 94978271
        assert type(snap.last_update_id) is int
        assert snap.timestamp == 1694687965941000
        _same_text(snap.asks, [["18.70", "0.000"]])
        _same_text(snap.bids, [["18.67", "0.832"]])
        assert wire.convert_depth_snapshot(body, "SOL_USDC") == snap
        decoded.append(snap)
    assert decoded[0] == decoded[1]


def check_depth_recorded(name: str) -> None:
    obj = _load(name)
    body = {k: v for k, v in obj.items() if not k.startswith("_")}
    assert set(body) == {"asks", "bids"}
    # The recorder dropped lastUpdateId; the server always sends it, so the decoder requires it.
    with pytest.raises(ProtocolError, match="lastUpdateId") as info:
        wire.decode_depth_snapshot(_bytes(body), "SOL_USDC")
    assert info.value.stream == "/api/v1/depth?symbol=SOL_USDC"
    snap = wire.decode_depth_snapshot(_bytes({**body, "lastUpdateId": "1"}), "SOL_USDC")
    assert snap.asks[0] == (D("179.65"), D("38.09"))
    assert snap.asks[4] == (D("179.70"), D("2.61"))
    assert snap.asks[-1] == (D("179.88"), D("1.01"))
    assert snap.bids[0] == (D("179.33"), D("1.31"))
    assert snap.bids[-1] == (D("179.64"), D("0.20"))  # best bid LAST, as sent
    assert snap.timestamp is None
    _same_text(snap.asks, body["asks"])
    _same_text(snap.bids, body["bids"])
    assert len(snap.asks) == len(snap.bids) == 20


def check_funding_rates(name: str) -> None:
    rates = wire.decode_funding_rates((DATA / name).read_bytes())
    assert [(r.symbol, r.interval_end_timestamp, r.funding_rate) for r in rates] == [
        ("ETH_USDC_PERP", "2025-09-11T12:00:00", D("0.0000125")),
        ("ETH_USDC_PERP", "2025-09-11T11:00:00", D("0.0000125")),
        ("ETH_USDC_PERP", "2025-09-11T10:00:00", D("0.000006196")),
    ]


def check_klines(name: str) -> None:
    variants = _variants(_load(name), {"ccxt_static_ETH_USDC_1m", "ccxt_comment"})
    (k,) = wire.decode_klines(_bytes(variants["ccxt_static_ETH_USDC_1m"]))
    assert (k.start, k.end) == ("2025-09-11 15:33:00", "2025-09-11 15:34:00")
    assert (k.open, k.high, k.low, k.close) == (
        D("4422.62"),
        D("4422.75"),
        D("4422.62"),
        D("4422.62"),
    )
    assert (k.volume, k.quote_volume, k.trades) == (D("0.0176"), D("77.840361"), 2)
    (k,) = wire.decode_klines(_bytes(variants["ccxt_comment"]))
    assert (k.start, k.end) == ("2025-07-19 13:09:00", "2025-07-19 13:12:00")
    assert (k.open, k.high, k.low, k.close) == (
        D("118238"),
        D("118297.6"),
        D("118237.5"),
        D("118294.6"),
    )
    assert (k.volume, k.quote_volume, k.trades) == (D("0.03473"), D("4106.558156"), 12)


def check_mark_prices(name: str) -> None:
    variants = _variants(_load(name), {"ccxt_comment", "ccxt_static_stringified"})
    (m,) = wire.decode_mark_prices(_bytes(variants["ccxt_comment"]))
    assert m == wire.MarkPrice(
        symbol="BTC_USDC_PERP",
        mark_price=D("118343.51853741"),
        index_price=D("118333.18643195"),
        funding_rate=D("0.0001"),
        next_funding_timestamp=1753113600000,
    )
    (m,) = wire.decode_mark_prices(_bytes(variants["ccxt_static_stringified"]))
    assert m.next_funding_timestamp == 1754956800000  # "1754956800000" on the fixture
    assert (m.symbol, m.mark_price, m.index_price) == (
        "ETH_USDC_PERP",
        D("4307.57627888"),
        D("4308.72205352"),
    )


def check_market_examples(name: str) -> None:
    variants = _variants(
        _load(name), {"perp_SOL_USDC_PERP", "closed_spot_WEN_USDC", "stock_spot_SPCX.US_USDC"}
    )
    perp = wire.decode_market(_bytes(variants["perp_SOL_USDC_PERP"]), "SOL_USDC_PERP")
    assert (perp.symbol, perp.base_symbol, perp.quote_symbol, perp.market_type) == (
        "SOL_USDC_PERP",
        "SOL",
        "USDC",
        "PERP",
    )
    assert perp.funding_interval == 3600000
    assert perp.visible is True
    assert perp.position_limit_weight == D("1")
    assert perp.filters.price.tick_size == D("0.01")
    assert perp.filters.price.max_price == D("1000")
    assert perp.filters.price.mean_mark_price_band == wire.MultiplierBand(D("1.1"), D("0.9"))
    assert perp.filters.price.mean_premium_band == wire.PremiumBand(D("0.05"))
    assert perp.filters.quantity == wire.QuantityFilter(D("0.01"), D("0.01"), None)
    assert perp.imf_function == wire.MarginFunction("sqrt", D("0.02"), D("0.00006"))
    assert perp.mmf_function == wire.MarginFunction("sqrt", D("0.0135"), D("0.000036"))
    assert (perp.funding_rate_lower_bound, perp.funding_rate_upper_bound) == (D("-100"), D("100"))
    assert perp.open_interest_limit == D("4000000")
    assert perp.created_at == "2025-01-21T06:34:54.691858"
    wen = wire.decode_market(_bytes(variants["closed_spot_WEN_USDC"]))
    assert (wen.symbol, wen.order_book_state, wen.visible, wen.funding_interval) == (
        "WEN_USDC",
        "Closed",
        False,
        None,
    )
    assert wen.filters.price.tick_size == D("0.0001")
    assert wen.filters.price.max_price is None
    stock = wire.decode_market(_bytes(variants["stock_spot_SPCX.US_USDC"]))
    assert (stock.symbol, stock.base_symbol, stock.rwa_market_type, stock.order_book_state) == (
        "SPCX.US_USDC",
        "SPCX.US",
        "STOCK",
        "PostOnly",
    )


def check_markets(name: str) -> None:
    markets = wire.decode_markets((DATA / name).read_bytes())
    assert [m.symbol for m in markets] == ["ETH_USDC", "ETH_USDC_PERP", "ADA_USDC_PERP"]
    assert [m.market_type for m in markets] == ["SPOT", "PERP", "PERP"]
    assert [m.funding_interval for m in markets] == [28800000, 28800000, 3600000]  # strings
    assert [m.visible for m in markets] == [None, None, True]
    assert [m.filters.price.tick_size for m in markets] == [D("0.01"), D("0.01"), D("0.0001")]
    assert [m.filters.quantity.step_size for m in markets] == [D("0.0001"), D("0.0001"), D("1")]
    assert markets[0].filters.price.mean_premium_band is None
    assert markets[0].imf_function is None
    assert markets[1].filters.price.max_price == D("1000000")
    assert markets[2].created_at == "2025-02-12T03:49:50.513163"
    assert markets[2].mmf_function == wire.MarginFunction("sqrt", D("0.05"), D("0.00026"))


def check_markets_ccxt(name: str) -> None:
    spot, perp = wire.decode_markets((DATA / name).read_bytes())
    assert (spot.symbol, perp.symbol) == ("SOL_USDC", "SOL_USDC_PERP")
    assert (spot.funding_interval, perp.funding_interval) == (28800000, 28800000)  # int, string
    assert spot.filters.price.mean_mark_price_band == wire.MultiplierBand(D("1.15"), D("0.9"))
    assert spot.open_interest_limit == D("0")
    assert perp.open_interest_limit == D("4000000")
    assert perp.imf_function == wire.MarginFunction("sqrt", D("0.02"), D("0.0001275"))
    assert perp.filters.price.max_impact_multiplier == D("1.03")


def check_open_interest(name: str) -> None:
    variants = _variants(_load(name), {"ccxt_comment", "ccxt_static_stringified"})
    assert wire.decode_open_interest(_bytes(variants["ccxt_comment"])) == [
        wire.OpenInterest("BTC_USDC_PERP", D("1273.85214"), 1753105735301)
    ]
    assert wire.decode_open_interest(_bytes(variants["ccxt_static_stringified"])) == [
        wire.OpenInterest("ETH_USDC_PERP", D("27481.6232"), 1755006837991)
    ]


def check_ping(name: str) -> None:
    assert wire.decode_ping((DATA / name).read_bytes()) == "pong"


def check_rest_errors(name: str) -> None:
    variants = _variants(
        _load(name),
        {
            "invalid_order",
            "invalid_client_request_trigger",
            "invalid_price",
            "docs_sample",
            "parse_error_text_symbol",
            "parse_error_text_interval",
        },
    )
    expected = {
        "invalid_order": ("INVALID_ORDER", "Invalid order"),
        "invalid_client_request_trigger": (
            "INVALID_CLIENT_REQUEST",
            "Must specify both `triggerPrice` and `triggerQuantity` or neither",
        ),
        "invalid_price": ("INVALID_PRICE", "Price is too far from the last active price"),
        "docs_sample": ("ACCOUNT_LIQUIDATING", "string"),
    }
    for key, value in variants.items():
        if isinstance(value, dict):
            err = wire.decode_rest_error(_bytes(value), "/api/v1/order")
            assert (err.code, err.message, err.plain_text) == (*expected[key], False)
        else:
            # Framework messages: text bodies, framing unknown; decoded as plain text.
            err = wire.decode_rest_error(value.encode(), "/api/v1/klines")
            assert (err.code, err.message, err.plain_text) == (None, value, True)
            assert err.message.startswith(("Bad Request parse", "failed to parse parameter"))


def check_signing_vectors(name: str) -> None:
    obj = _load(name)
    assert set(obj) == {"_comment", "key", "vectors"}
    frames = [v for v in obj["vectors"] if "frame" in v]
    # Only one vector carries a wire frame; the rest are signing inputs for the auth tests.
    assert [v["name"] for v in frames] == [
        "ccxt.pro watch_private subscribe frame (account.orderUpdate)"
    ]
    assert all(set(v) >= {"name", "signing_string"} for v in obj["vectors"])
    request = wire.decode_ws_request(_bytes(frames[0]["frame"]))
    assert request.method == "SUBSCRIBE"
    assert request.params == ["account.orderUpdate"]
    assert request.signature == (
        "/NqLWUwBCIH2X2jArhTmTjYpG0X24vxledaT744Ri6o=",
        "4TylgSJb49O1nUAZCsadV5yClMAX6V4iZK/rHQrrlotye0YFF3Apgc2L2gwTVoweeB2DdGHR4hJMxoUEhTK/AA==",
        "1614550000000",
        "5000",
    )
    assert json.loads(wire.encode_json(request)) == frames[0]["frame"]


def check_status(name: str) -> None:
    assert wire.decode_status((DATA / name).read_bytes()) == wire.Status(status="Ok", message=None)


def check_ticker(name: str) -> None:
    variants = _variants(_load(name), {"ccxt_static_ETH_USDC", "ccxt_comment_AAVE_USDC"})
    eth = wire.decode_ticker(_bytes(variants["ccxt_static_ETH_USDC"]), "ETH_USDC")
    assert eth == wire.Ticker(
        symbol="ETH_USDC",
        first_price=D("4202.87"),
        last_price=D("4182.41"),
        price_change=D("-20.46"),
        price_change_percent_raw="-0.004868",
        high=D("4349.75"),
        low=D("4161.84"),
        volume=D("6732.4927"),
        quote_volume=D("28695174.189628"),
        trades=24843,
    )
    assert eth.price_change_percent == D("-0.004868")
    aave = wire.decode_ticker(_bytes(variants["ccxt_comment_AAVE_USDC"]))
    assert (aave.symbol, aave.last_price, aave.trades) == ("AAVE_USDC", D("317.14"), 245)
    assert aave.price_change_percent == D("-0.031279")


def check_tickers(name: str) -> None:
    obj = _load(name)
    assert set(obj) == {"_excerpt_note", "tickers"}
    tickers = wire.decode_tickers(_bytes(obj["tickers"]))
    assert [t.symbol for t in tickers] == [
        "AAVE_USDC",
        "BTC_USDC",
        "BTC_USDC_PERP",
        "ETH_USDC",
        "ETH_USDC_PERP",
        "SOL_USDC",
        "SOL_USDC_PERP",
        "USDT_USDC",
    ]
    btc = tickers[1]
    assert (btc.first_price, btc.last_price, btc.low, btc.trades) == (
        D("106281.6"),
        D("106815.7"),
        D("105274"),
        22225,
    )
    assert tickers[-1].price_change == D("0")
    assert tickers[-1].price_change_percent == D("0")
    for got, src in zip(tickers, obj["tickers"], strict=True):
        assert got.volume == D(src["volume"])
        assert got.quote_volume == D(src["quoteVolume"])
        assert got.trades == int(src["trades"])
        assert got.high == D(src["high"])


def check_time(name: str) -> None:
    assert wire.decode_time((DATA / name).read_bytes()) == 1753131712992


def _check_trades_against(trades: list[wire.RestTrade], src: list[dict[str, Any]]) -> None:
    assert len(trades) == len(src)
    for got, item in zip(trades, src, strict=True):
        assert type(got.id) is int
        assert type(got.timestamp) is int
        assert got.id == int(item["id"])
        assert got.timestamp == int(item["timestamp"])
        assert (got.price, got.quantity, got.quote_quantity) == (
            D(item["price"]),
            D(item["quantity"]),
            D(item["quoteQuantity"]),
        )
        assert got.is_buyer_maker is item["isBuyerMaker"]


def check_trades_comment(name: str) -> None:
    raw = (DATA / name).read_bytes()
    trades = wire.decode_trades(raw, "BTC_USDC")
    assert trades == [
        wire.RestTrade(8721563, D("117427.6"), D("0.00016"), D("18.788416"), 1753123916819, False)
    ]
    assert wire.convert_trades(json.loads(raw), "BTC_USDC") == trades


def check_trades_static(name: str) -> None:
    obj = _load(name)
    assert set(obj) == {"_note", "request", "httpResponse"}
    trades = wire.decode_trades(_bytes(obj["httpResponse"]), "ETH_USDC")
    assert [t.id for t in trades] == [7558558, 7558557, 7558556, 7558555, 7558554]
    assert trades[0].timestamp == 1781067801978  # "1781067801978" on the fixture
    assert trades[3].price == D("1624")
    assert trades[3].is_buyer_maker is False
    _check_trades_against(trades, obj["httpResponse"])
    assert wire.convert_trades(obj["httpResponse"], "ETH_USDC") == trades


def check_trades_recorded(name: str) -> None:
    obj = _load(name)
    assert set(obj) == {"_excerpt_note", "trades"}
    trades = wire.decode_trades(_bytes(obj["trades"]), "SOL_USDC")
    assert trades[0] == wire.RestTrade(
        355822333, D("167.4"), D("0.13"), D("21.762"), 1747849978470, True
    )
    assert [t.id for t in trades] == list(range(355822333, 355822323, -1))  # newest first
    _check_trades_against(trades, obj["trades"])


# --------------------------------------------------------------------------------------------------
# WebSocket


def check_ws_book_ticker(name: str) -> None:
    variants = _variants(_load(name), {"ccxt_recorded", "docs_example_data"})
    frame = _ws(variants["ccxt_recorded"])
    assert frame.stream == "bookTicker.ETH_USDC"
    assert frame.data == BookTickerEvent(
        event_time=1754517402450016,
        engine_time=1754517402449064,
        symbol="ETH_USDC",
        ask_price=D("3667.50"),
        ask_quantity=D("0.4087"),
        bid_price=D("3667.49"),
        bid_quantity=D("0.0020"),
        update_id=1328288557,
    )
    frame = _ws(variants["docs_example_data"], "bookTicker.SOL_USDC")
    assert frame.data == BookTickerEvent(
        event_time=1694687965941000,
        engine_time=1694687965940999,
        symbol="SOL_USDC",
        ask_price=D("18.70"),
        ask_quantity=D("1.000"),
        bid_price=D("18.67"),
        bid_quantity=D("2.000"),
        update_id=111063070525358080,  # "111063070525358080" on the fixture
    )


def check_ws_depth(name: str) -> None:
    variants = _variants(
        _load(name),
        {"ccxt_recorded_empty_sides", "ccxt_recorded_level_removal_data", "docs_example_data"},
    )
    frame = _ws(variants["ccxt_recorded_empty_sides"])
    assert frame.stream == "depth.ETH_USDC"
    assert frame.error is None
    assert frame.data == DepthEvent(
        event_time=1754903057555305,
        engine_time=1754903057554352,
        symbol="ETH_USDC",
        first_update_id=1345937436,
        last_update_id=1345937436,
        asks=(),
        bids=(),
    )
    frame = _ws(variants["ccxt_recorded_level_removal_data"], "depth.BTC_USDC_PERP")
    assert frame.data == DepthEvent(
        event_time=1759338824897386,
        engine_time=1759338824895616,
        symbol="BTC_USDC_PERP",
        first_update_id=1662976171,
        last_update_id=1662976171,
        asks=(),
        # The exchange's text, scale included: "0.00000" is not normalised to "0".
        bids=(("117357.0", "0.00000"),),
    )
    frame = _ws(variants["docs_example_data"], "depth.SOL_USDC")
    assert frame.data == DepthEvent(
        event_time=1694687965941000,
        engine_time=1694687965940999,
        symbol="SOL_USDC",
        first_update_id=94978271,
        last_update_id=94978271,
        asks=(("18.70", "0.000"),),
        bids=(("18.67", "0.832"), ("18.68", "0.000")),
    )


def check_ws_error(name: str) -> None:
    raw = (DATA / name).read_bytes()
    frame = wire.decode_ws_frame(raw)
    assert frame == WsFrame(stream=None, data=None, error=WsError(4006, "Invalid stream"), id=None)
    error_frame = wire.decode_ws_error(raw)
    assert error_frame == wire.WsErrorFrame(error=WsError(4006, "Invalid stream"), id=None)
    assert json.loads(wire.encode_json(error_frame)) == json.loads(raw)


def check_ws_kline(name: str) -> None:
    variants = _variants(_load(name), {"ccxt_recorded", "docs_example_data"})
    frame = _ws(variants["ccxt_recorded"])
    assert frame.stream == "kline.2h.ETH_USDC"
    assert frame.data == KlineEvent(
        event_time=1754519557526056,
        symbol="ETH_USDC",
        start_time="2025-08-06T22:00:00",
        close_time="2025-08-07T00:00:00",
        open=D("3670.150000000"),
        close=D("3680.520000000"),
        high=D("3681.370000000"),
        low=D("3667.650000000"),
        volume=D("62.2621000"),
        trade_count=255,
        closed=False,
    )
    assert isinstance(frame.data, KlineEvent)
    assert str(frame.data.close) == "3680.520000000"
    frame = _ws(variants["docs_example_data"], "kline.1m.SOL_USD")
    assert frame.data == KlineEvent(
        event_time=1694687692980000,
        symbol="SOL_USD",
        start_time="2024-09-11T12:00:00",
        close_time="2024-09-11T12:01:00",
        open=D("18.75"),
        close=D("19.25"),
        high=D("19.80"),
        low=D("18.50"),
        volume=D("32123"),
        trade_count=93828,
        closed=False,
    )


def check_ws_liquidation(name: str) -> None:
    variants = _variants(_load(name), {"docs_example_data"})
    frame = _ws(variants["docs_example_data"], "liquidation")
    assert frame.data == LiquidationEvent(
        event_time=1694688638091000,
        engine_time=567,
        symbol="SOL_USDC",
        price=D("18.70"),
        quantity=D("10"),
        side="Bid",
    )


def check_ws_mark_price(name: str) -> None:
    variants = _variants(_load(name), {"official_sdk_test_data", "docs_example_data"})
    frame = _ws(variants["official_sdk_test_data"], "markPrice.SOL_USDC_PERP")
    assert frame.data == MarkPriceEvent(
        event_time=1747291031914525,
        symbol="SOL_USDC_PERP",
        mark_price=D("173.35998175"),
        engine_time=1747291031910025,
        funding_rate=D("-0.0000039641039274236048482914"),
        index_price=D("173.44031179"),
        next_funding_time_ms=1747296000000,
    )
    frame = _ws(variants["docs_example_data"], "markPrice.SOL_USDC")
    assert frame.data == MarkPriceEvent(
        event_time=1694687965941000,
        symbol="SOL_USDC",
        mark_price=D("18.70"),
        engine_time=1694687965940999,
        funding_rate=D("1.70"),
        index_price=D("19.70"),
        next_funding_time_ms=1694687965941,
    )


def check_ws_open_interest(name: str) -> None:
    variants = _variants(_load(name), {"docs_example_data"})
    frame = _ws(variants["docs_example_data"], "openInterest.SOL_USDC_PERP")
    assert frame.data == OpenInterestEvent(1694687965941000, "SOL_USDC_PERP", D("100"))


def check_ws_order_updates(name: str) -> None:
    variants = _variants(
        _load(name), {"ccxt_recorded_orderAccepted", "ccxt_recorded_orderFill_data"}
    )
    frame = _ws(variants["ccxt_recorded_orderAccepted"])
    assert frame.stream == "account.orderUpdate.ETH_USDC"
    assert frame.data == OrderAcceptedEvent(
        event_time=1754939110175843,
        engine_time=1754939110174703,
        symbol="ETH_USDC",
        order_id="5406825793",
        origin="USER",
        quote_quantity=D("4.30"),
        side="Bid",
        self_trade_prevention="RejectTaker",
        status="New",
        executed_quote_quantity=D("0"),
        time_in_force="GTC",
        order_type="MARKET",
        quantity=D("0.0010"),
        reduce_only=False,
        trade_id=None,
        executed_quantity=D("0"),
    )
    assert isinstance(frame.data, OrderAcceptedEvent)
    assert frame.data.event_type == "orderAccepted"
    frame = _ws(variants["ccxt_recorded_orderFill_data"], "account.orderUpdate.ETH_USDC")
    assert frame.data == OrderFillEvent(
        event_time=1754939110175879,
        engine_time=1754939110174705,
        symbol="ETH_USDC",
        order_id="5406825793",
        fill_price=D("4299.16"),
        fee_symbol="ETH",
        origin="USER",
        quote_quantity=D("4.30"),
        side="Bid",
        self_trade_prevention="RejectTaker",
        status="Filled",
        executed_quote_quantity=D("4.299160"),
        time_in_force="GTC",
        fill_quantity=D("0.0010"),
        is_maker=False,
        fee=D("0.000001"),
        order_type="MARKET",
        quantity=D("0.0010"),
        reduce_only=False,
        trade_id=2888471,
        executed_quantity=D("0.0010"),
    )
    assert isinstance(frame.data, OrderFillEvent)
    assert frame.data.event_type == "orderFill"


def check_ws_position_update(name: str) -> None:
    variants = _variants(_load(name), {"ccxt_recorded"})
    frame = _ws(variants["ccxt_recorded"])
    assert frame.stream == "account.positionUpdate"
    expected = PositionOpenedEvent(
        symbol="ETH_USDC_PERP",
        event_time=1754943862040486,
        engine_time=1754943862040487,
        position_id=5411399049,
        break_even_price=D("4238.479"),
        entry_price=D("4236.36"),
        initial_margin_fraction=D("0.02"),
        mark_price=D("4235.88650933"),
        maintenance_margin_fraction=D("0.0125"),
        net_quantity=D("0.0010"),
        net_exposure_quantity=D("0.0010"),
        net_exposure_notional=D("4.23588650933"),
        realized_pnl=D("0"),
        unrealized_pnl=D("-0.000473"),
        liquidation_price=D("0"),
    )
    assert frame.data == expected
    assert isinstance(frame.data, PositionOpenedEvent)
    assert frame.data.event_type == "positionOpened"
    # The subscribe-time snapshot of the same position has no "e" key.
    snapshot_data = {k: v for k, v in variants["ccxt_recorded"]["data"].items() if k != "e"}
    snap = wire.decode_ws_frame(_bytes({"stream": "account.positionUpdate", "data": snapshot_data}))
    assert isinstance(snap.data, wire.PositionSnapshot)
    assert msgspec.structs.asdict(snap.data) == msgspec.structs.asdict(expected)


def check_ws_requests(name: str) -> None:
    expected = {
        "docs_subscribe": ("SUBSCRIBE", ["depth.SOL_USDC"], None),
        "docs_unsubscribe_template": ("UNSUBSCRIBE", ["stream"], None),
        "docs_private_subscribe_template": (
            "SUBSCRIBE",
            ["stream"],
            ("<verifying key>", "<signature>", "<timestamp>", "<window>"),
        ),
        "ccxt_public_subscribe_trade": ("SUBSCRIBE", ["trade.ETH_USDC"], None),
        "ccxt_public_subscribe_multi": (
            "SUBSCRIBE",
            ["trade.ETH_USDC", "trade.ETH_USDC_PERP"],
            None,
        ),
        "ccxt_public_subscribe_depth": ("SUBSCRIBE", ["depth.ETH_USDC_PERP"], None),
        "ccxt_public_subscribe_ticker": ("SUBSCRIBE", ["ticker.ETH_USDC"], None),
        "ccxt_public_subscribe_bookTicker": ("SUBSCRIBE", ["bookTicker.ETH_USDC"], None),
        "ccxt_public_subscribe_kline_1m": ("SUBSCRIBE", ["kline.1m.ETH_USDC"], None),
        "ccxt_public_subscribe_kline_1M": ("SUBSCRIBE", ["kline.1month.ETH_USDC"], None),
        "ccxt_unsubscribe_trade": ("UNSUBSCRIBE", ["trade.ETH_USDC"], None),
    }
    variants = _variants(_load(name), set(expected))
    for key, body in variants.items():
        request = wire.decode_ws_request(_bytes(body))
        assert (request.method, request.params, request.signature) == expected[key]
        assert json.loads(wire.encode_json(request)) == body


def check_ws_ticker(name: str) -> None:
    variants = _variants(
        _load(name), {"ccxt_recorded_as_printed", "ccxt_recorded_data_2", "docs_example_data"}
    )
    frame = _ws(variants["ccxt_recorded_as_printed"])
    assert frame.stream == "bookTicker.ETH_USDC"  # sic: as printed in the ccxt comment
    assert frame.data == TickerEvent(
        event_time=1754176123312507,
        symbol="ETH_USDC",
        open=D("3475.45"),
        close=D("3398.57"),
        high=D("3536.65"),
        low=D("3371.8"),
        volume=D("5573.5827"),
        quote_volume=D("19419526.742584"),
        trade_count=17152,
    )
    frame = _ws(variants["ccxt_recorded_data_2"], "ticker.ETH_USDC")
    assert frame.data == TickerEvent(
        1754178406415232,
        "ETH_USDC",
        D("3481.71"),
        D("3407.54"),
        D("3536.65"),
        D("3369.18"),
        D("5542.3911"),
        D("19303818.6923"),
        17272,
    )
    frame = _ws(variants["docs_example_data"], "ticker.SOL_USD")
    assert frame.data == TickerEvent(
        1694687692980000,
        "SOL_USD",
        D("18.75"),
        D("19.24"),
        D("19.80"),
        D("18.50"),
        D("32123"),
        D("928190"),
        93828,
    )


def check_ws_trade(name: str) -> None:
    variants = _variants(_load(name), {"ccxt_recorded", "docs_example_data"})
    frame = _ws(variants["ccxt_recorded"])
    assert frame.stream == "trade.ETH_USDC_PERP"
    assert frame.data == TradeEvent(
        event_time=1754601477746429,  # "1754601477746429" on the fixture
        engine_time=1754601477744000,
        symbol="ETH_USDC_PERP",
        price="3870.25",
        quantity="0.0008",
        buyer_order_id="5121861755",
        seller_order_id="5121860761",
        trade_id=10782547,
        buyer_is_maker=False,
    )
    assert isinstance(frame.data, TradeEvent)
    assert type(frame.data.event_time) is int
    frame = _ws(variants["docs_example_data"], "trade.SOL_USDC")
    assert frame.data == TradeEvent(
        event_time=1694688638091000,
        engine_time=1694688638089000,
        symbol="SOL_USDC",
        price="18.68",
        quantity="0.122",
        buyer_order_id="111063114377265150",
        seller_order_id="111063114585735170",
        trade_id=12345,
        buyer_is_maker=True,
    )


HANDLERS: dict[str, Callable[[str], None]] = {
    "assets_response_ccxt_comment.json": check_assets,
    "depth_response_docs_example.json": check_depth_docs,
    "depth_response_official_sdk_tests.json": check_depth_sdk,
    "depth_response_sol_usdc_recorded_excerpt.json": check_depth_recorded,
    "funding_rates_response.json": check_funding_rates,
    "klines_response.json": check_klines,
    "mark_prices_response.json": check_mark_prices,
    "market_examples_official_sdk_tests.json": check_market_examples,
    "markets_response.json": check_markets,
    "markets_response_ccxt_comment.json": check_markets_ccxt,
    "open_interest_response.json": check_open_interest,
    "ping_response.txt": check_ping,
    "rest_error_examples.json": check_rest_errors,
    "signing_vectors.json": check_signing_vectors,
    "status_response.json": check_status,
    "ticker_response.json": check_ticker,
    "tickers_response_recorded_subset.json": check_tickers,
    "time_response.txt": check_time,
    "trades_response_ccxt_comment.json": check_trades_comment,
    "trades_response_ccxt_static.json": check_trades_static,
    "trades_response_sol_usdc_recorded_excerpt.json": check_trades_recorded,
    "ws_book_ticker_event.json": check_ws_book_ticker,
    "ws_depth_event.json": check_ws_depth,
    "ws_error.json": check_ws_error,
    "ws_kline_event.json": check_ws_kline,
    "ws_liquidation_event.json": check_ws_liquidation,
    "ws_mark_price_event.json": check_ws_mark_price,
    "ws_open_interest_event.json": check_ws_open_interest,
    "ws_order_update_events.json": check_ws_order_updates,
    "ws_position_update_event.json": check_ws_position_update,
    "ws_requests.json": check_ws_requests,
    "ws_ticker_event.json": check_ws_ticker,
    "ws_trade_event.json": check_ws_trade,
}


def test_every_fixture_file_has_a_decoder() -> None:
    files = {p.name for p in DATA.iterdir() if p.is_file()}
    uncovered = files - set(HANDLERS) - NOT_PAYLOADS
    assert not uncovered, f"fixtures without a decoder mapping in HANDLERS: {sorted(uncovered)}"
    missing = set(HANDLERS) - files
    assert not missing, f"HANDLERS names files that no longer exist: {sorted(missing)}"


@pytest.mark.parametrize("name", sorted(HANDLERS))
def test_fixture_decodes_to_exact_values(name: str) -> None:
    HANDLERS[name](name)


def test_tickers_decoder_maps_na_percentage_to_none() -> None:
    body = _load("ticker_response.json")["ccxt_static_ETH_USDC"] | {"priceChangePercent": "N/A"}
    ticker = wire.decode_ticker(_bytes(body), "ETH_USDC")
    assert ticker.price_change_percent is None
    assert ticker.last_price == D("4182.41")
