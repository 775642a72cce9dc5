"""Symbols: every accepted spelling, table construction from ccxt and raw JSON, suggestions."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from backpack_actors.core.symbols import MarketInfo, MarketTable, normalize, to_decimal
from backpack_actors.errors import ConfigError, UnknownSymbolError
from tests.conftest import DATA


def ccxt_market(
    exchange_id: str,
    *,
    tick: float = 0.01,
    step: float = 1e-05,
    minimum: float | None = 1e-05,
    active: bool = True,
    kind: str = "spot",
) -> dict[str, Any]:
    """The subset of a ccxt 4.5 market dict that MarketTable reads (floats, as ccxt gives them)."""
    parts = exchange_id.split("_")
    base, quote = parts[0], parts[1]
    symbol = f"{base}/{quote}" + (f":{quote}" if kind == "swap" else "")
    return {
        "id": exchange_id,
        "symbol": symbol,
        "base": base,
        "quote": quote,
        "type": kind,
        "precision": {"price": tick, "amount": step},
        "limits": {"amount": {"min": minimum, "max": None}},
        "active": active,
    }


@pytest.fixture
def table() -> MarketTable:
    markets = [
        ccxt_market("BTC_USDC", tick=0.1),
        ccxt_market("BTC_USDC_PERP", tick=0.1, step=0.0001, kind="swap"),
        ccxt_market("ETH_USDC"),
        ccxt_market("USDT_USDC", tick=0.0001, step=1.0, minimum=None),
        ccxt_market("SOL_USDC_RFQ", kind="option"),
    ]
    return MarketTable.from_ccxt_markets({m["symbol"]: m for m in markets})


@pytest.mark.parametrize(
    "spelling", ["BTC-USDC", "BTC/USDC", "BTC_USDC", "btc-usdc", " btc/usdc ", "Btc_Usdc"]
)
def test_spot_spellings(table: MarketTable, spelling: str) -> None:
    market = table.resolve(spelling)
    assert market.exchange_id == "BTC_USDC"
    assert market.normalized == "BTC-USDC"
    assert market.ccxt_symbol == "BTC/USDC"
    assert market.market_type == "spot"


@pytest.mark.parametrize(
    "spelling", ["BTC-USDC-PERP", "BTC/USDC:USDC", "BTC_USDC_PERP", "btc-usdc-perp"]
)
def test_perp_spellings(table: MarketTable, spelling: str) -> None:
    market = table.resolve(spelling)
    assert market.exchange_id == "BTC_USDC_PERP"
    assert market.normalized == "BTC-USDC-PERP"
    assert market.ccxt_symbol == "BTC/USDC:USDC"
    assert market.market_type == "perp"


def test_ccxt_floats_become_exact_decimals(table: MarketTable) -> None:
    btc = table.resolve("BTC-USDC")
    assert (btc.tick_size, btc.step_size, btc.min_size) == (
        Decimal("0.1"),
        Decimal("0.00001"),
        Decimal("0.00001"),
    )
    assert str(btc.step_size) == "0.00001"
    usdt = table.resolve("USDT-USDC")
    assert str(usdt.step_size) == "1"
    assert usdt.min_size == 0
    assert "SOL-USDC-RFQ" not in table
    assert len(table) == 4
    assert [m.normalized for m in table] == ["BTC-USDC", "BTC-USDC-PERP", "ETH-USDC", "USDT-USDC"]


def test_unknown_usdt_symbol_suggests_usdc_markets_of_the_same_base(table: MarketTable) -> None:
    with pytest.raises(UnknownSymbolError) as info:
        table.resolve("BTC-USDT")
    assert info.value.symbol == "BTC-USDT"
    assert info.value.suggestions[:2] == ["BTC-USDC", "BTC-USDC-PERP"]
    assert isinstance(info.value, ConfigError)
    assert "BTC-USDC" in str(info.value)
    with pytest.raises(UnknownSymbolError) as perp:
        table.resolve("BTC_USDT_PERP")
    assert perp.value.suggestions[:2] == ["BTC-USDC-PERP", "BTC-USDC"]


def test_misspelling_gets_difflib_suggestions(table: MarketTable) -> None:
    with pytest.raises(UnknownSymbolError) as info:
        table.resolve("ETH-USCD")
    assert info.value.suggestions[0] == "ETH-USDC"
    with pytest.raises(UnknownSymbolError) as nothing:
        table.resolve("ZZZZZZ")
    assert nothing.value.suggestions == []


@pytest.mark.parametrize("bad", ["", "BTC", "BTC/USDC:", "A-B-C", "///"])
def test_malformed_symbols_are_unknown(table: MarketTable, bad: str) -> None:
    assert table.get(bad) is None
    with pytest.raises(UnknownSymbolError):
        table.resolve(bad)


def test_from_real_markets_json_and_ccxt_agree() -> None:
    raw = json.loads((DATA / "markets_response.json").read_text())
    table = MarketTable.from_markets_json(raw)
    assert [m.normalized for m in table] == ["ADA-USDC-PERP", "ETH-USDC", "ETH-USDC-PERP"]
    ada = table.resolve("ADA/USDC:USDC")
    assert ada == MarketInfo(
        exchange_id="ADA_USDC_PERP",
        ccxt_symbol="ADA/USDC:USDC",
        normalized="ADA-USDC-PERP",
        base="ADA",
        quote="USDC",
        market_type="perp",
        tick_size=Decimal("0.0001"),
        step_size=Decimal("1"),
        min_size=Decimal("1"),
        active=True,
    )
    import ccxt  # tests may use ccxt; the core may not

    exchange = ccxt.backpack()
    parsed = {m["symbol"]: m for m in (exchange.parse_market(r) for r in raw)}
    via_ccxt = MarketTable.from_ccxt_markets(parsed)
    assert list(via_ccxt) == list(table)


def test_sdk_examples_states_and_dotted_bases() -> None:
    examples = json.loads((DATA / "market_examples_official_sdk_tests.json").read_text())
    table = MarketTable.from_markets_json(examples.values())
    assert table.resolve("wen-usdc").active is False
    stock = table.resolve("SPCX.US/USDC")
    assert stock.exchange_id == "SPCX.US_USDC"
    assert stock.active is False  # PostOnly is not open for our purposes
    assert table.by_exchange_id("SOL_USDC_PERP").ccxt_symbol == "SOL/USDC:USDC"
    with pytest.raises(KeyError):
        table.by_exchange_id("sol_usdc_perp")


def test_normalize() -> None:
    assert normalize("BTC_USDC") == "BTC-USDC"
    assert normalize("BTC_USDC_PERP") == "BTC-USDC-PERP"


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (1e-05, "0.00001"),
        (1e-8, "0.00000001"),
        (0.1, "0.1"),
        (1.0, "1"),
        (10, "10"),
        ("0.0100", "0.0100"),
        ("1E-7", "0.0000001"),
        (Decimal("5"), "5"),
    ],
)
def test_to_decimal(value: object, text: str) -> None:
    # Same value and scale; tiny values still print as 1E-8 (Decimal's str rule, not ours).
    result = to_decimal(value)
    assert format(result, "f") == text
    assert result.as_tuple() == Decimal(text).as_tuple()


@pytest.mark.parametrize("bad", [None, True, "abc", float("nan"), float("inf")])
def test_to_decimal_rejects(bad: object) -> None:
    with pytest.raises(ValueError, match="number"):
        to_decimal(bad)


@given(st.decimals(min_value=Decimal("1e-12"), max_value=Decimal("1e6"), places=12))
def test_to_decimal_roundtrips_floats_exactly_when_representable(value: Decimal) -> None:
    as_float = float(value)
    assert to_decimal(as_float) == Decimal(repr(as_float))
    assert to_decimal(as_float).as_tuple().exponent <= 0
