"""Market metadata and Retry-After from a peer that may not be the exchange (issue 12): bounded,
and every refusal a ProtocolError naming the market and the field."""

from __future__ import annotations

import copy
import math
from decimal import Decimal
from typing import Any

import pytest

from backpack_actors.core.symbols import (
    MAX_FRACTION_DIGITS,
    MAX_INTEGER_DIGITS,
    MarketTable,
)
from backpack_actors.errors import ProtocolError, RateLimitedError
from backpack_actors.transport.rest import (
    RETRY_AFTER_MAX,
    RETRY_AFTER_MIN,
    _retry_after,
    raise_for_status,
)

MARKET: dict[str, Any] = {
    "baseSymbol": "BTC",
    "quoteSymbol": "USDC",
    "symbol": "BTC_USDC",
    "marketType": "SPOT",
    "orderBookState": "Open",
    "filters": {
        "price": {"tickSize": "0.1"},
        "quantity": {"minQuantity": "0.00001", "stepSize": "0.00001"},
    },
}


def _with(section: str, key: str, value: object) -> list[dict[str, Any]]:
    market = copy.deepcopy(MARKET)
    market["filters"][section][key] = value
    return [market]


def _ccxt(tick: object, step: object = 1e-05, minimum: object = None) -> dict[str, Any]:
    return {
        "BTC/USDC": {
            "id": "BTC_USDC",
            "symbol": "BTC/USDC",
            "base": "BTC",
            "quote": "USDC",
            "type": "spot",
            "precision": {"price": tick, "amount": step},
            "limits": {"amount": {"min": minimum}},
            "active": True,
        }
    }


BAD_POSITIVE = [
    "0." + "0" * 39 + "1",  # the 40-digit tick
    "0." + "0" * (MAX_FRACTION_DIGITS) + "1",  # one digit past the bound
    "1" + "0" * MAX_INTEGER_DIGITS,  # 11 integer digits
    "1E+40",
    "1e-40",
    "0",
    "-0.1",
    "NaN",
    "Infinity",
    "-Infinity",
    "abc",
    "",
    "1" * 5000,
    None,
    True,
    [1],
    {"v": 1},
]


@pytest.mark.parametrize("value", BAD_POSITIVE, ids=lambda v: repr(v)[:20])
def test_a_tick_size_out_of_bounds_names_the_market_and_field(value: object) -> None:
    with pytest.raises(ProtocolError) as info:
        MarketTable.from_markets_json(_with("price", "tickSize", value))
    message = str(info.value)
    assert message.startswith("rest:/api/v1/markets: market 'BTC_USDC': filters.price.tickSize ")
    assert "at most 10 integer and 18 fractional digits" in message
    assert len(message) < 300


@pytest.mark.parametrize("value", BAD_POSITIVE, ids=lambda v: repr(v)[:20])
def test_a_step_size_out_of_bounds_names_the_market_and_field(value: object) -> None:
    with pytest.raises(ProtocolError, match=r"'BTC_USDC': filters\.quantity\.stepSize"):
        MarketTable.from_markets_json(_with("quantity", "stepSize", value))


def test_a_minimum_may_be_zero_but_not_negative() -> None:
    table = MarketTable.from_markets_json(_with("quantity", "minQuantity", "0"))
    assert table.resolve("BTC-USDC").min_size == Decimal(0)
    with pytest.raises(ProtocolError, match="minQuantity '-1' is not a decimal >= 0"):
        MarketTable.from_markets_json(_with("quantity", "minQuantity", "-1"))


@pytest.mark.parametrize(
    ("tick", "expected"),
    [
        ("0." + "0" * (MAX_FRACTION_DIGITS - 1) + "1", Decimal("1e-18")),
        ("9" * MAX_INTEGER_DIGITS, Decimal("9" * MAX_INTEGER_DIGITS)),
        ("0.10000000000000000000000000000", Decimal("0.1")),  # trailing zeros are no digits
        ("1e-05", Decimal("0.00001")),
        (5, Decimal(5)),
    ],
)
def test_ticks_within_the_bounds_are_kept_exactly(tick: object, expected: Decimal) -> None:
    info = MarketTable.from_markets_json(_with("price", "tickSize", tick)).resolve("BTC-USDC")
    assert info.tick_size == expected


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ({"symbol": "BTC_USDC"}, "a list of markets, got a dict"),
        ("<html>", "a list of markets, got a str"),
        (None, "a list of markets, got null"),
        ([MARKET, 7], "market #1: a int, not an object"),
        ([{**MARKET, "filters": None}], "market 'BTC_USDC': no filters.price"),
        ([{k: v for k, v in MARKET.items() if k != "filters"}], "market 'BTC_USDC': no filters"),
        ([{**MARKET, "filters": {"price": {}}}], "no filters.price.tickSize"),
        ([{**MARKET, "baseSymbol": 3}], "market 'BTC_USDC': baseSymbol 3 is not a name"),
        ([{**MARKET, "symbol": None}], "market #0: symbol None is not a name"),
    ],
)
def test_malformed_listings_are_protocol_errors(body: Any, problem: str) -> None:
    with pytest.raises(ProtocolError) as info:
        MarketTable.from_markets_json(body)
    assert problem in str(info.value)


def test_markets_of_other_types_are_skipped_unchecked() -> None:
    other = {**MARKET, "symbol": "X_Y", "marketType": "PREDICTION", "filters": None}
    assert [m.exchange_id for m in MarketTable.from_markets_json([MARKET, other])] == ["BTC_USDC"]


@pytest.mark.parametrize("tick", [1e-40, 1e40, -0.1, 0.0, math.nan, math.inf, None, "x"])
def test_ccxt_metadata_out_of_bounds_is_a_protocol_error(tick: object) -> None:
    with pytest.raises(ProtocolError, match=r"'BTC_USDC': tick size \(precision\.price\)"):
        MarketTable.from_ccxt_markets(_ccxt(tick))


def test_ccxt_metadata_shapes() -> None:
    markets = _ccxt(0.1)
    del markets["BTC/USDC"]["precision"]
    with pytest.raises(ProtocolError, match="no precision"):
        MarketTable.from_ccxt_markets(markets)
    with pytest.raises(ProtocolError, match=r"minimum size \(limits\.amount\.min\) -1"):
        MarketTable.from_ccxt_markets(_ccxt(0.1, minimum=-1.0))
    no_limits = _ccxt(0.1)
    no_limits["BTC/USDC"]["limits"] = None
    assert MarketTable.from_ccxt_markets(no_limits).resolve("BTC-USDC").min_size == 0


# --- Retry-After -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("2", 2.0),
        (" 7.5 ", 7.5),
        ("0.1", RETRY_AFTER_MIN),
        ("0.0001", RETRY_AFTER_MIN),
        ("60", 60.0),
        ("3600", RETRY_AFTER_MAX),
        ("1e9", RETRY_AFTER_MAX),
        ("0", None),
        ("-5", None),
        ("nan", None),
        ("NaN", None),
        ("inf", None),
        ("-inf", None),
        ("1e400", None),  # parses as inf
        ("soon", None),
        ("", None),
        ("Wed, 21 Oct 2015 07:28:00 GMT", None),
    ],
)
def test_retry_after_is_clamped_or_ignored(value: str, seconds: float | None) -> None:
    assert _retry_after({"Retry-After": value}) == seconds
    assert _retry_after({"retry-after": value}) == seconds


def test_retry_after_range_and_absence() -> None:
    assert (RETRY_AFTER_MIN, RETRY_AFTER_MAX) == (0.5, 60.0)
    assert _retry_after(None) is None
    assert _retry_after({"Content-Type": "text/plain"}) is None


def test_a_429_carries_the_clamped_wait() -> None:
    with pytest.raises(RateLimitedError) as info:
        raise_for_status(429, {"Retry-After": "86400"}, b"", "http://x/api/v1/depth")
    assert info.value.retry_after == RETRY_AFTER_MAX
    assert "retry after 60 s" in str(info.value)
    with pytest.raises(RateLimitedError) as nan:
        raise_for_status(429, {"Retry-After": "nan"}, b"", "http://x/api/v1/depth")
    assert nan.value.retry_after is None
