"""Symbols: exchange ids (``BTC_USDC``), ccxt symbols (``BTC/USDC``) and normalized names.

Normalized names use dashes (``BTC-USDC``, perps ``BTC-USDC-PERP``). :class:`MarketTable` is
built from ccxt's ``exchange.markets`` or from the raw ``/api/v1/markets`` body and resolves any
accepted spelling to one :class:`MarketInfo`, suggesting close listed symbols otherwise.

Market metadata comes from a peer that may not be the exchange (a proxy, a captive portal, a wrong
URL): a missing field, a wrong shape or a tick/step/minimum outside the bounds below raises a
:class:`~backpack_actors.errors.ProtocolError` naming the market and the field, never a bare
KeyError. Bounds: finite, tick and step > 0, minimum >= 0, at most
:data:`MAX_FRACTION_DIGITS` fractional and :data:`MAX_INTEGER_DIGITS` integer digits (28 in all:
Decimal's default precision, so prices quantized to the tick stay exact).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

from backpack_actors.core.dectext import MarketBounds
from backpack_actors.errors import ProtocolError, UnknownSymbolError, echo

__all__ = [
    "MARKETS_STREAM",
    "MAX_FRACTION_DIGITS",
    "MAX_INTEGER_DIGITS",
    "MarketInfo",
    "MarketTable",
    "normalize",
    "to_decimal",
]

MarketType = Literal["spot", "perp"]
_SEPARATORS = re.compile(r"[-_/\s]+")
MARKETS_STREAM = "rest:/api/v1/markets"
# Backpack's finest tick is 1e-8 or so; 18 is the finest any exchange asset needs (ETH's wei).
MAX_FRACTION_DIGITS = 18
# 10 integer digits: a tick or lot of 10 billion is no market; with the 18 above, 28 digits.
MAX_INTEGER_DIGITS = 10
# Longer text is no decimal within the bounds (28 digits, a sign, a point, an exponent).
_MAX_NUMBER_TEXT = 64


def normalize(exchange_id: str) -> str:
    """``BTC_USDC`` -> ``BTC-USDC``; ``BTC_USDC_PERP`` -> ``BTC-USDC-PERP``."""
    return exchange_id.replace("_", "-")


def to_decimal(value: object) -> Decimal:
    """An exact Decimal from a decimal string, an int or a float (``1e-05`` -> ``0.00001``).

    Exponent forms are rewritten positionally so the value prints as a plain decimal.
    """
    if isinstance(value, Decimal):
        number = value
    elif isinstance(value, bool) or value is None:
        raise ValueError(f"not a number: {value!r}")
    else:
        try:
            # A float's str() is its shortest round-trip repr: the decimal it was parsed from.
            number = Decimal(str(value))
        except InvalidOperation:
            raise ValueError(f"not a number: {value!r}") from None
    if not number.is_finite():
        raise ValueError(f"not a finite number: {value!r}")
    if number == number.to_integral_value():
        return number.quantize(Decimal(1))
    return Decimal(format(number, "f"))


@dataclass(frozen=True, slots=True)
class MarketInfo:
    """One listed market."""

    exchange_id: str
    ccxt_symbol: str
    normalized: str
    base: str
    quote: str
    market_type: MarketType
    tick_size: Decimal
    step_size: Decimal
    min_size: Decimal
    active: bool

    @property
    def bounds(self) -> MarketBounds:
        """The bounds of this market's price and size text (from its tick and step size)."""
        return MarketBounds.for_increments(self.tick_size, self.step_size)


def _kind(value: object) -> str:
    return "null" if value is None else f"a {type(value).__name__}"


def _market_name(market: Mapping[str, Any], key: str, index: int) -> str:
    value = market.get(key)
    return echo(value) if isinstance(value, str) and value else f"#{index}"


def _path(market: Mapping[str, Any], name: str, *keys: str, optional: bool = False) -> Any:
    """``market[k1][k2]...``; ProtocolError naming the market and the dotted field otherwise."""
    value: Any = market
    for depth, key in enumerate(keys):
        if value is None and optional:
            return None
        if not isinstance(value, Mapping) or (key not in value and not optional):
            field = ".".join(keys[: depth + 1])
            raise ProtocolError(MARKETS_STREAM, f"market {name}: no {field}")
        value = value.get(key)
    return value


def _text(market: Mapping[str, Any], name: str, key: str) -> str:
    value = _path(market, name, key)
    if not isinstance(value, str) or not value:
        raise ProtocolError(MARKETS_STREAM, f"market {name}: {key} {echo(value)} is not a name")
    return value


def _size(value: object, name: str, field: str, *, allow_zero: bool = False) -> Decimal:
    """A tick, step or minimum within the module's bounds, as an exact positional Decimal."""
    floor = ">= 0" if allow_zero else "> 0"
    problem = (
        f"market {name}: {field} {echo(value)} is not a decimal {floor} with at most "
        f"{MAX_INTEGER_DIGITS} integer and {MAX_FRACTION_DIGITS} fractional digits"
    )
    if isinstance(value, bool) or not isinstance(value, str | int | float | Decimal):
        raise ProtocolError(MARKETS_STREAM, problem)
    text = str(value).strip()
    if len(text) > _MAX_NUMBER_TEXT:
        raise ProtocolError(MARKETS_STREAM, problem)
    try:
        number = Decimal(text)
    except InvalidOperation:
        raise ProtocolError(MARKETS_STREAM, problem) from None
    if not number.is_finite() or number < 0 or (number == 0 and not allow_zero):
        raise ProtocolError(MARKETS_STREAM, problem)
    # Digit counts from the exact digits (no arithmetic: a 28-digit context would round).
    _sign, digits, exponent = number.as_tuple()
    assert isinstance(exponent, int)  # finite
    significant = list(digits)
    while len(significant) > 1 and significant[-1] == 0 and exponent < 0:
        significant.pop()
        exponent += 1
    fraction = max(0, -exponent)
    integer = max(0, len(significant) + exponent)
    if fraction > MAX_FRACTION_DIGITS or integer > MAX_INTEGER_DIGITS:
        raise ProtocolError(MARKETS_STREAM, problem)
    return to_decimal(number)


def _canonical(symbol: str) -> str | None:
    """Any accepted spelling -> the normalized upper-case form, or None when malformed."""
    text = symbol.strip().upper()
    perp = False
    if ":" in text:
        # ccxt swap symbols: BASE/QUOTE:SETTLE.
        text, _, settle = text.partition(":")
        if not settle:
            return None
        perp = True
    parts = [p for p in _SEPARATORS.split(text) if p]
    if parts and parts[-1] == "PERP":
        perp = True
        parts.pop()
    if len(parts) != 2:
        return None
    return "-".join(parts) + ("-PERP" if perp else "")


class MarketTable:
    """Listed markets indexed by every spelling :meth:`resolve` accepts."""

    __slots__ = ("_by_key",)

    def __init__(self, markets: Iterable[MarketInfo]) -> None:
        self._by_key: dict[str, MarketInfo] = {}
        for market in markets:
            self._by_key[market.normalized.upper()] = market

    @classmethod
    def from_ccxt_markets(cls, markets: Mapping[str, Mapping[str, Any]]) -> MarketTable:
        """From ccxt's ``exchange.markets``; markets other than spot and swap are skipped.

        Raises ProtocolError (naming the market and field) for malformed or unbounded metadata.
        """
        if not isinstance(markets, Mapping):
            raise ProtocolError(MARKETS_STREAM, f"a mapping of markets, got {_kind(markets)}")
        infos = []
        for index, m in enumerate(markets.values()):
            if not isinstance(m, Mapping):
                raise ProtocolError(MARKETS_STREAM, f"market #{index}: {_kind(m)}, not an object")
            kind = m.get("type")
            if kind not in ("spot", "swap"):
                continue
            name = _market_name(m, "id", index)
            exchange_id = _text(m, name, "id")
            minimum = _path(m, name, "limits", "amount", "min", optional=True)
            infos.append(
                MarketInfo(
                    exchange_id=exchange_id,
                    ccxt_symbol=_text(m, name, "symbol"),
                    normalized=normalize(exchange_id),
                    base=_text(m, name, "base"),
                    quote=_text(m, name, "quote"),
                    market_type="spot" if kind == "spot" else "perp",
                    tick_size=_size(
                        _path(m, name, "precision", "price"), name, "tick size (precision.price)"
                    ),
                    step_size=_size(
                        _path(m, name, "precision", "amount"), name, "step size (precision.amount)"
                    ),
                    min_size=Decimal(0)
                    if minimum is None
                    else _size(minimum, name, "minimum size (limits.amount.min)", allow_zero=True),
                    active=bool(m.get("active", True)),
                )
            )
        return cls(infos)

    @classmethod
    def from_markets_json(cls, markets: Iterable[Mapping[str, Any]]) -> MarketTable:
        """From the raw ``GET /api/v1/markets`` body; only SPOT and PERP markets are kept.

        Raises ProtocolError (naming the market and field) for malformed or unbounded metadata.
        """
        if isinstance(markets, str | bytes | Mapping) or not isinstance(markets, Iterable):
            raise ProtocolError(MARKETS_STREAM, f"a list of markets, got {_kind(markets)}")
        infos = []
        for index, m in enumerate(markets):
            if not isinstance(m, Mapping):
                raise ProtocolError(MARKETS_STREAM, f"market #{index}: {_kind(m)}, not an object")
            kind = m.get("marketType")
            if kind not in ("SPOT", "PERP"):
                continue
            name = _market_name(m, "symbol", index)
            base = _text(m, name, "baseSymbol")
            quote = _text(m, name, "quoteSymbol")
            spot = kind == "SPOT"
            exchange_id = _text(m, name, "symbol")
            tick = _path(m, name, "filters", "price", "tickSize")
            step = _path(m, name, "filters", "quantity", "stepSize")
            minimum = _path(m, name, "filters", "quantity", "minQuantity")
            infos.append(
                MarketInfo(
                    exchange_id=exchange_id,
                    ccxt_symbol=f"{base}/{quote}" if spot else f"{base}/{quote}:{quote}",
                    normalized=normalize(exchange_id),
                    base=base,
                    quote=quote,
                    market_type="spot" if spot else "perp",
                    tick_size=_size(tick, name, "filters.price.tickSize"),
                    step_size=_size(step, name, "filters.quantity.stepSize"),
                    min_size=_size(minimum, name, "filters.quantity.minQuantity", allow_zero=True),
                    active=m.get("orderBookState") == "Open",
                )
            )
        return cls(infos)

    def __len__(self) -> int:
        return len(self._by_key)

    def __iter__(self) -> Iterator[MarketInfo]:
        return iter(sorted(self._by_key.values(), key=lambda m: m.normalized))

    def __contains__(self, symbol: object) -> bool:
        return isinstance(symbol, str) and self.get(symbol) is not None

    def get(self, symbol: str) -> MarketInfo | None:
        """The market for any accepted spelling, or None."""
        key = _canonical(symbol)
        return None if key is None else self._by_key.get(key)

    def by_exchange_id(self, exchange_id: str) -> MarketInfo:
        """The market with this exact exchange id (as on the wire); KeyError otherwise."""
        market = self._by_key.get(normalize(exchange_id).upper())
        if market is None or market.exchange_id != exchange_id:
            raise KeyError(exchange_id)
        return market

    def resolve(self, symbol: str) -> MarketInfo:
        """Resolve ``BTC-USDC``, ``btc/usdc``, ``BTC_USDC_PERP``, ``BTC/USDC:USDC``, ...

        Raises UnknownSymbolError with the closest listed symbols (normalized) otherwise.
        """
        market = self.get(symbol)
        if market is None:
            raise UnknownSymbolError(symbol, self.suggest(symbol))
        return market

    def suggest(self, symbol: str, limit: int = 5) -> list[str]:
        """Listed symbols close to ``symbol``: the same base first, then by spelling."""
        key = _canonical(symbol) or symbol.strip().upper()
        base = key.split("-", 1)[0]
        wants_perp = key.endswith("-PERP")
        same_base = [m for m in self._by_key.values() if m.base.upper() == base]
        # Same market type first, then by name; a perp request prefers perps.
        same_base.sort(key=lambda m: ((m.market_type == "perp") != wants_perp, m.normalized))
        names = [m.normalized for m in same_base]
        listed = sorted(m.normalized for m in self._by_key.values())
        upper = {name.upper(): name for name in listed}
        for close in difflib.get_close_matches(key, list(upper), n=limit, cutoff=0.6):
            if upper[close] not in names:
                names.append(upper[close])
        return names[:limit]
