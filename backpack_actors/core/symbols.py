"""Symbols: exchange ids (``BTC_USDC``), ccxt symbols (``BTC/USDC``) and normalized names.

Normalized names use dashes (``BTC-USDC``, perps ``BTC-USDC-PERP``). :class:`MarketTable` is
built from ccxt's ``exchange.markets`` or from the raw ``/api/v1/markets`` body and resolves any
accepted spelling to one :class:`MarketInfo`, suggesting close listed symbols otherwise.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

from backpack_actors.errors import UnknownSymbolError

__all__ = ["MarketInfo", "MarketTable", "normalize", "to_decimal"]

MarketType = Literal["spot", "perp"]
_SEPARATORS = re.compile(r"[-_/\s]+")


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
        """From ccxt's ``exchange.markets``; markets other than spot and swap are skipped."""
        infos = []
        for m in markets.values():
            kind = m.get("type")
            if kind not in ("spot", "swap"):
                continue
            precision = m.get("precision") or {}
            limits = (m.get("limits") or {}).get("amount") or {}
            minimum = limits.get("min")
            exchange_id = str(m["id"])
            infos.append(
                MarketInfo(
                    exchange_id=exchange_id,
                    ccxt_symbol=str(m["symbol"]),
                    normalized=normalize(exchange_id),
                    base=str(m["base"]),
                    quote=str(m["quote"]),
                    market_type="spot" if kind == "spot" else "perp",
                    tick_size=to_decimal(precision["price"]),
                    step_size=to_decimal(precision["amount"]),
                    min_size=Decimal(0) if minimum is None else to_decimal(minimum),
                    active=bool(m.get("active", True)),
                )
            )
        return cls(infos)

    @classmethod
    def from_markets_json(cls, markets: Iterable[Mapping[str, Any]]) -> MarketTable:
        """From the raw ``GET /api/v1/markets`` body; only SPOT and PERP markets are kept."""
        infos = []
        for m in markets:
            kind = m.get("marketType")
            if kind not in ("SPOT", "PERP"):
                continue
            base = str(m["baseSymbol"])
            quote = str(m["quoteSymbol"])
            filters = m["filters"]
            spot = kind == "SPOT"
            exchange_id = str(m["symbol"])
            infos.append(
                MarketInfo(
                    exchange_id=exchange_id,
                    ccxt_symbol=f"{base}/{quote}" if spot else f"{base}/{quote}:{quote}",
                    normalized=normalize(exchange_id),
                    base=base,
                    quote=quote,
                    market_type="spot" if spot else "perp",
                    tick_size=to_decimal(filters["price"]["tickSize"]),
                    step_size=to_decimal(filters["quantity"]["stepSize"]),
                    min_size=to_decimal(filters["quantity"]["minQuantity"]),
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
