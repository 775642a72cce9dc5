"""Issue 12: numbers from a hostile or broken peer are bounded before anything uses them.

``Decimal("1e999999999")`` is a valid, tiny object; written out as plain digits it is a gigabyte.
Every layer that takes exchange numbers (wire decoders, decimal text checks, the book, BookSync,
TradeSync) must refuse it (and its cousins: huge coefficients, huge negative exponents, overlong
text) before formatting or comparing it. The exponents used where the old code would accept the
value are moderate (``1e100000``: 100 kB written out) so that running these tests against the old
code fails quickly instead of exhausting memory; the bounds are the same for any exponent.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backpack_actors.core import wire
from backpack_actors.core.book import InvalidLevel, OrderBook
from backpack_actors.core.dectext import (
    bounds_problem,
    decimal_text,
    is_price_text,
    is_size_text,
    parse_price,
    parse_size,
)
from backpack_actors.core.sync import BookSync, Malformed, PublishSnapshot, SyncState
from backpack_actors.core.trades import EmitTrade, TradeSync
from backpack_actors.errors import ProtocolError

D = Decimal
SYM = "BTC_USDC"

# Text a hostile peer may send for a price or size; every one is a valid Decimal literal (except
# the overlong ones, which are refused unparsed).
HOSTILE_TEXT = [
    pytest.param("1e999999999", id="huge-exponent"),
    pytest.param("1e100000", id="large-exponent"),
    pytest.param("1e-100000", id="tiny-exponent"),
    pytest.param("0E-100000", id="zero-tiny-exponent"),
    pytest.param("0E+100000", id="zero-huge-exponent"),
    pytest.param("1" * 41, id="41-digits-plain"),
    pytest.param("1." + "1" * 45, id="45-decimals-plain"),
    pytest.param("9" * 100_000, id="100k-digits-plain"),
    pytest.param("1" * 200 + "e-150", id="200-digit-coefficient"),
]
HOSTILE_DECIMALS = [
    pytest.param(D("1e100000"), id="large-exponent"),
    pytest.param(D("1e-100000"), id="tiny-exponent"),
    pytest.param(D("0E-100000"), id="zero-tiny-exponent"),
    pytest.param(D("1" * 200), id="200-digits"),
]


# -- core.dectext --------------------------------------------------------------------------------


@pytest.mark.parametrize("text", HOSTILE_TEXT)
def test_text_outside_the_bounds_is_no_price_and_no_size(text: str) -> None:
    assert not is_price_text(text)
    assert not is_size_text(text)
    with pytest.raises(ValueError, match=r"^price "):
        parse_price(text)
    with pytest.raises(ValueError, match=r"^size "):
        parse_size(text)


@pytest.mark.parametrize("value", [*HOSTILE_DECIMALS, pytest.param(D("1e999999999"), id="huge")])
def test_decimal_text_refuses_to_write_out_an_unbounded_decimal(value: Decimal) -> None:
    with pytest.raises(ValueError, match="out of bounds"):
        decimal_text(value)


def test_the_bounds_are_exactly_as_documented() -> None:
    # 40 significant digits, 40 decimal places, below 1e41; one past each edge is refused.
    assert bounds_problem(D("9" * 40)) is None
    assert bounds_problem(D("9" * 41)) is not None
    assert bounds_problem(D("1e-40")) is None
    assert bounds_problem(D("1e-41")) is not None
    assert bounds_problem(D("0E-40")) is None
    assert bounds_problem(D("0E-41")) is not None
    assert bounds_problem(D("9.9e40")) is None
    assert bounds_problem(D("1e41")) is not None
    # Tighter per-market bounds, e.g. from a tick size of 0.01.
    assert bounds_problem(D("1.25"), min_exponent=-2) is None
    assert bounds_problem(D("1.255"), min_exponent=-2) is not None


@settings(max_examples=500, deadline=None)
@given(st.from_regex(r"\A[0-9]{1,45}(\.[0-9]{0,45})?\Z"))
def test_plain_fast_path_agrees_with_the_exact_bounds(text: str) -> None:
    # The fast path decides plain text by its length alone: it must never disagree with Decimal.
    value = D(text)
    _, digits, exponent = value.as_tuple()
    assert isinstance(exponent, int)
    inside = len(digits) <= 40 and exponent >= -40 and exponent + len(digits) - 1 <= 40
    assert is_size_text(text) is inside
    assert is_price_text(text) is (inside and value > 0)


def test_real_prices_and_sizes_are_inside_the_bounds() -> None:
    for text in ("0.00000001", "123456789012.123456789", "0.000", "3870.25", "1E-10", "5e14"):
        assert is_size_text(text), text
    assert decimal_text(D("1E-10")) == "0.0000000001"


# -- core.wire: REST bodies and WS events --------------------------------------------------------

HUGE = "1e999999999"


def depth_body(price: str, size: str = "1") -> str:
    return json.dumps(
        {"asks": [[price, size]], "bids": [["1", "1"]], "lastUpdateId": "5", "timestamp": 1}
    )


def trades_body(price: str, quantity: str = "1") -> str:
    trade = {
        "id": 1,
        "price": price,
        "quantity": quantity,
        "quoteQuantity": "1",
        "timestamp": 1,
        "isBuyerMaker": True,
    }
    return json.dumps([trade])


@pytest.mark.parametrize("text", HOSTILE_TEXT[:6])
def test_rest_depth_with_an_unbounded_level_is_a_protocol_error(text: str) -> None:
    with pytest.raises(ProtocolError, match="out of bounds") as info:
        wire.decode_depth_snapshot(depth_body("2", text), SYM)
    assert info.value.stream == f"/api/v1/depth?symbol={SYM}"
    with pytest.raises(ProtocolError):
        wire.decode_depth_snapshot(depth_body(text), SYM)
    # The same numbers as JSON numbers rather than strings.
    raw = depth_body("2").replace('"2"', text)
    with pytest.raises(ProtocolError):
        wire.decode_depth_snapshot(raw, SYM)


@pytest.mark.parametrize("text", HOSTILE_TEXT[:6])
def test_rest_trade_with_an_unbounded_value_is_a_protocol_error(text: str) -> None:
    with pytest.raises(ProtocolError, match="out of bounds"):
        wire.decode_trades(trades_body("1", text), SYM)
    with pytest.raises(ProtocolError):
        wire.decode_trades(trades_body(text), SYM)


def ticker(**changes: Any) -> dict[str, Any]:
    body = {
        "symbol": SYM,
        "firstPrice": "1",
        "lastPrice": "1",
        "priceChange": "0",
        "priceChangePercent": "0",
        "high": "1",
        "low": "1",
        "volume": "1",
        "quoteVolume": "1",
        "trades": "1",
    }
    body.update(changes)
    return body


def market(**changes: Any) -> dict[str, Any]:
    body = {
        "symbol": SYM,
        "baseSymbol": "BTC",
        "quoteSymbol": "USDC",
        "marketType": "SPOT",
        "filters": {
            "price": {"minPrice": "0.01", "tickSize": "0.01"},
            "quantity": {"minQuantity": "0.001", "stepSize": "0.001"},
        },
        "orderBookState": "Open",
        "createdAt": "2025-01-21T06:34:54.691858",
    }
    body.update(changes)
    return body


OTHER_BODIES = [
    pytest.param(lambda: wire.decode_tickers(json.dumps([ticker(priceChange=HUGE)])), id="ticker"),
    pytest.param(
        lambda: wire.decode_markets(json.dumps([market(openInterestLimit=HUGE)])), id="mk"
    ),
    pytest.param(
        lambda: wire.decode_markets(
            json.dumps(
                [
                    market(
                        filters={
                            "price": {"minPrice": "0.01", "tickSize": "0.01", "maxPrice": HUGE},
                            "quantity": {"minQuantity": "0.001", "stepSize": "0.001"},
                        }
                    )
                ]
            )
        ),
        id="market-filter",
    ),
    pytest.param(
        lambda: wire.decode_klines(json.dumps([{"start": "a", "end": "b", "open": HUGE}])),
        id="kline",
    ),
    pytest.param(
        lambda: wire.decode_mark_prices(json.dumps([{"symbol": SYM, "markPrice": HUGE}])),
        id="mark-price",
    ),
    pytest.param(
        lambda: wire.decode_open_interest(
            json.dumps([{"symbol": SYM, "openInterest": HUGE, "timestamp": 1}])
        ),
        id="open-interest",
    ),
    pytest.param(
        lambda: wire.decode_funding_rates(
            json.dumps([{"symbol": SYM, "intervalEndTimestamp": "x", "fundingRate": HUGE}])
        ),
        id="funding-rate",
    ),
    pytest.param(
        lambda: wire.decode_ws_frame(
            json.dumps(
                {
                    "stream": "bookTicker.BTC_USDC",
                    "data": {
                        "e": "bookTicker",
                        "E": 1,
                        "T": 1,
                        "s": SYM,
                        "a": HUGE,
                        "A": "1",
                        "b": "1",
                        "B": "1",
                        "u": 1,
                    },
                }
            )
        ),
        id="ws-book-ticker",
    ),
    pytest.param(
        lambda: wire.decode_ws_frame(
            json.dumps(
                {
                    "stream": "account.orderUpdate",
                    "data": {"e": "orderFill", "E": 1, "T": 1, "s": SYM, "i": "1", "L": HUGE},
                }
            )
        ),
        id="ws-order-fill",
    ),
]


@pytest.mark.parametrize("decode", OTHER_BODIES)
def test_every_other_decimal_field_is_bounded(decode: Any) -> None:
    with pytest.raises(ProtocolError, match="out of bounds"):
        decode()


def test_ticker_percent_out_of_bounds_reads_as_unknown() -> None:
    (got,) = wire.decode_tickers(json.dumps([ticker(priceChangePercent=HUGE)]))
    assert got.price_change_percent is None
    (ok,) = wire.decode_tickers(json.dumps([ticker(priceChangePercent="-0.004868")]))
    assert ok.price_change_percent == D("-0.004868")


# -- core.book -----------------------------------------------------------------------------------


@pytest.mark.parametrize("value", HOSTILE_DECIMALS)
def test_book_refuses_unbounded_decimal_levels_without_changing(value: Decimal) -> None:
    book = OrderBook()
    book.load([("1", "1")], [("2", "1")])
    before = book.copy()
    with pytest.raises(InvalidLevel, match="out of bounds"):
        book.apply([(value, D(1))], [])
    with pytest.raises(InvalidLevel, match="out of bounds"):
        book.apply([], [(D(3), value)])
    with pytest.raises(InvalidLevel, match="out of bounds"):
        book.load([(D(1), value)], [])
    assert book == before
    assert book.depth() == before.depth()


@pytest.mark.parametrize("text", HOSTILE_TEXT)
def test_book_refuses_unbounded_text_for_new_and_known_levels(text: str) -> None:
    book = OrderBook()
    book.load([("1", "1")], [("2", "1")])
    with pytest.raises(InvalidLevel):
        book.apply([(text, "1")], [])
    # A known price with a plain but overlong size must not slip through the hot path.
    with pytest.raises(InvalidLevel):
        book.apply([("1", text)], [])
    assert book.depth() == ((("1", "1"),), (("2", "1"),))


# -- BookSync and TradeSync ----------------------------------------------------------------------


@dataclass(frozen=True)
class Delta:
    first_update_id: int
    last_update_id: int
    bids: tuple[tuple[str, str], ...] = ()
    asks: tuple[tuple[str, str], ...] = ()
    engine_time: int = 0


@dataclass(frozen=True)
class Snap:
    last_update_id: int
    bids: list[tuple[Decimal, Decimal]]
    asks: list[tuple[Decimal, Decimal]]
    timestamp: int | None = None


def live_book() -> BookSync[Delta]:
    sync: BookSync[Delta] = BookSync(SYM)
    sync.stream_started(1)
    sync.on_snapshot(Snap(10, [(D(1), D(1))], [(D(2), D(1))]))
    assert sync.state is SyncState.LIVE
    return sync


@pytest.mark.parametrize("text", HOSTILE_TEXT)
@pytest.mark.parametrize("fast", [False, True], ids=["on_delta", "on_delta_fast"])
def test_book_sync_reports_an_unbounded_level_and_keeps_the_book(text: str, fast: bool) -> None:
    for level in ((text, "1"), ("1", text)):
        sync = live_book()
        delta = Delta(11, 11, bids=(level,))
        acts = sync.on_delta_fast(1, delta) if fast else sync.on_delta(1, delta)
        assert acts is not None
        assert [type(a) for a in acts] == [Malformed], acts
        assert sync.book.depth() == ((("1", "1"),), (("2", "1"),))
        assert sync.counters["malformed"] == 1


@pytest.mark.parametrize("value", HOSTILE_DECIMALS)
def test_book_sync_refuses_a_snapshot_with_unbounded_levels(value: Decimal) -> None:
    # Not from core.wire (which refuses it already): a caller's own snapshot object.
    sync: BookSync[Delta] = BookSync(SYM)
    sync.stream_started(1)
    acts = sync.on_snapshot(Snap(10, [(value, D(1))], [(D(2), D(1))]))
    assert not any(isinstance(a, PublishSnapshot) for a in acts)
    assert any(isinstance(a, Malformed) for a in acts)
    assert sync.state is SyncState.BUFFERING
    assert sync.counters["snapshots_rejected"] == 1
    rest: BookSync[Delta] = BookSync(SYM)
    rest.enter_rest_mode(1)
    acts = rest.on_rest_snapshot(Snap(10, [(D(1), D(1))], [(D(2), value)]))
    assert not any(isinstance(a, PublishSnapshot) for a in acts)
    assert rest.counters["snapshots_rejected"] == 1


ONE_HALF = D("1.5")
TWO = D("2")


@dataclass(frozen=True)
class Live:
    trade_id: int
    price: str = "1.5"
    quantity: str = "2"
    buyer_is_maker: bool = False
    event_time: int = 0
    engine_time: int = 0


@dataclass(frozen=True)
class Rest:
    id: int
    price: Decimal = ONE_HALF
    quantity: Decimal = TWO
    timestamp: int = 1
    is_buyer_maker: bool = False


@pytest.mark.parametrize("text", HOSTILE_TEXT)
def test_trade_sync_reports_unbounded_live_trades(text: str) -> None:
    for trade in (Live(11, price=text), Live(11, quantity=text)):
        sync = TradeSync(SYM)
        assert sync.on_trade(1, Live(10)) != []
        assert not sync.accept_in_order(trade)
        acts = sync.on_trade(1, trade)
        assert isinstance(acts[0], Malformed)
        assert not any(isinstance(a, EmitTrade) for a in acts)
        assert sync.counters["malformed"] == 1


@pytest.mark.parametrize("value", HOSTILE_DECIMALS)
def test_trade_sync_reports_unbounded_rest_trades_instead_of_formatting_them(
    value: Decimal,
) -> None:
    sync = TradeSync(SYM)
    acts = sync.on_rest_trades([Rest(5), Rest(6, price=value), Rest(7, quantity=value)])
    assert [a.trade_id for a in acts if isinstance(a, EmitTrade)] == [5]
    assert [type(a) for a in acts].count(Malformed) == 2
    assert sync.counters["malformed"] == 2


def test_an_unbounded_backfilled_trade_is_reported_and_its_id_unrecoverable() -> None:
    sync = TradeSync(SYM)
    sync.on_trade(1, Live(10))
    sync.on_trade(1, Live(13))
    acts = sync.on_backfill([Rest(11, price=D("1e100000")), Rest(12)])
    assert [type(a) for a in acts if not isinstance(a, EmitTrade)].count(Malformed) == 1
    bad = next(a for a in acts if isinstance(a, Malformed))
    assert bad.stream == f"/api/v1/trades?symbol={SYM}"
    assert bad.reason.startswith("trade 11: decimal 1E+100000 is out of bounds")
    assert [a.trade_id for a in acts if isinstance(a, EmitTrade)] == [12]
    assert sync.counters["unrecoverable"] == 1


@settings(max_examples=3000, deadline=None)
@given(
    st.one_of(
        st.decimals(allow_nan=False, allow_infinity=False),
        st.builds(
            lambda digits, exp: Decimal(f"{digits}E{exp}"),
            st.integers(1, 10**45),
            st.integers(-90, 50),
        ),
    )
)
def test_the_cheap_bounds_check_agrees_with_the_exact_rule(value: Decimal) -> None:
    _, digits, exponent = value.as_tuple()
    assert isinstance(exponent, int)
    inside = len(digits) <= 40 and exponent >= -40 and exponent + len(digits) - 1 <= 40
    assert (bounds_problem(value) is None) is inside
