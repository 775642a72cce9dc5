"""Pure, seeded market model for the simulator: one L2 book, its update ids and its trades.

No trio, no clock, no global randomness: times arrive as arguments and every market owns a
``random.Random`` seeded from ``(seed, symbol)``. Prices and sizes are integers in units of the
market's tick/step decimals (``_units``) so arithmetic is exact and fast; they are rendered as the
wire strings of ``protocol/fixtures`` (padded for depth/bookTicker, trailing zeros stripped for
trades and tickers) and exposed as ``Decimal`` for ground truth.

Book model: a random-walk "fair" mid; adds, size updates and removals concentrated near the touch
(exponential distance), a trickle of far adds/trims that keeps a few hundred levels per side, and
trades that take liquidity at the touch (more likely when the fair mid has moved through it) — a
trade also produces the depth change it causes, in the same update. Every update consumes exactly
one id; a message covers one update, or occasionally several (merged, ``U < u``); updates that
change nothing still consume their id and go out as empty-side messages.
"""

from __future__ import annotations

import bisect
import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal

__all__ = [
    "DEFAULT_MARKETS",
    "BookLevels",
    "DepthMessage",
    "MarketModel",
    "MarketSpec",
    "ModelParams",
    "SimTrade",
    "format_padded",
    "format_stripped",
]

BookLevels = tuple[list[tuple[Decimal, Decimal]], list[tuple[Decimal, Decimal]]]
"""``(bids, asks)``, each best-first, as exact ``(price, size)`` pairs."""


@dataclass(frozen=True, slots=True)
class MarketSpec:
    """Static description of one simulated market (what ``/api/v1/markets`` reports)."""

    symbol: str
    base: str
    quote: str
    market_type: str
    tick_size: Decimal
    step_size: Decimal
    min_quantity: Decimal
    initial_price: Decimal
    typical_size: Decimal
    created_at: str = "2025-01-21T06:34:54.691858"


DEFAULT_MARKETS: tuple[MarketSpec, ...] = (
    MarketSpec("BTC_USDC", "BTC", "USDC", "SPOT", Decimal("0.1"), Decimal("0.00001"),
               Decimal("0.00001"), Decimal("106815.7"), Decimal("0.02")),
    MarketSpec("ETH_USDC", "ETH", "USDC", "SPOT", Decimal("0.01"), Decimal("0.0001"),
               Decimal("0.0001"), Decimal("2486.83"), Decimal("0.5")),
    MarketSpec("SOL_USDC", "SOL", "USDC", "SPOT", Decimal("0.01"), Decimal("0.01"),
               Decimal("0.01"), Decimal("179.64"), Decimal("8")),
    MarketSpec("BTC_USDC_PERP", "BTC", "USDC", "PERP", Decimal("0.1"), Decimal("0.00001"),
               Decimal("0.00001"), Decimal("106754.6"), Decimal("0.05")),
    MarketSpec("ETH_USDC_PERP", "ETH", "USDC", "PERP", Decimal("0.01"), Decimal("0.0001"),
               Decimal("0.0001"), Decimal("2484.96"), Decimal("1.2")),
    MarketSpec("SOL_USDC_PERP", "SOL", "USDC", "PERP", Decimal("0.01"), Decimal("0.01"),
               Decimal("0.01"), Decimal("167.77"), Decimal("20")),
    # Not listed on the real exchange (docs/protocol.md §2.2); here so offline configs naming
    # BTC-USDT run.
    MarketSpec("BTC_USDT", "BTC", "USDT", "SPOT", Decimal("0.1"), Decimal("0.00001"),
               Decimal("0.00001"), Decimal("106790.2"), Decimal("0.02")),
    MarketSpec("ETH_USDT", "ETH", "USDT", "SPOT", Decimal("0.01"), Decimal("0.0001"),
               Decimal("0.0001"), Decimal("2485.51"), Decimal("0.5")),
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class ModelParams:
    """Tuning of the random book process (probabilities are per update id)."""

    levels: int = 300
    trade_probability: float = 0.12
    empty_probability: float = 0.03
    remove_probability: float = 0.33
    merge_probability: float = 0.05
    max_merge: int = 4
    checkpoint_interval: int = 1000
    max_history: int = 500_000


@dataclass(frozen=True, slots=True)
class SimTrade:
    """One trade as the exchange recorded it (ground truth)."""

    symbol: str
    id: int
    price: Decimal
    quantity: Decimal
    quote_quantity: Decimal
    is_buyer_maker: bool
    engine_time_us: int
    event_time_us: int
    buyer_order_id: str
    seller_order_id: str
    price_str: str
    quantity_str: str
    quote_quantity_str: str


@dataclass(slots=True)
class DepthMessage:
    """One emitted depth message (covering update ids ``first_id..last_id``) and its trades."""

    symbol: str
    first_id: int
    last_id: int
    bids: list[tuple[str, str]]
    asks: list[tuple[str, str]]
    engine_time_us: int
    event_time_us: int
    trades: list[SimTrade] = field(default_factory=list)
    touch_changed: bool = False


def _decimals(unit: Decimal) -> tuple[int, int]:
    """``unit = mantissa × 10^-decimals`` with integer mantissa."""
    sign, digits, exp = unit.as_tuple()
    if sign or not isinstance(exp, int) or unit <= 0:
        raise ValueError(f"unit must be a positive finite decimal, got {unit}")
    mantissa = int("".join(map(str, digits)))
    if exp >= 0:
        return mantissa * 10**exp, 0
    return mantissa, -exp


def format_padded(value: int, decimals: int) -> str:
    """Render ``value × 10^-decimals`` with exactly ``decimals`` fraction digits."""
    if decimals == 0:
        return str(value)
    sign = "-" if value < 0 else ""
    digits = str(abs(value)).rjust(decimals + 1, "0")
    return f"{sign}{digits[:-decimals]}.{digits[-decimals:]}"


def format_stripped(value: int, decimals: int) -> str:
    """Render ``value × 10^-decimals`` with trailing fraction zeros removed."""
    text = format_padded(value, decimals)
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


class MarketModel:
    """State and evolution of one market; every call is deterministic given the rng."""

    def __init__(self, spec: MarketSpec, seed: int, params: ModelParams | None = None) -> None:
        self.spec = spec
        self.params = params or ModelParams()
        self.rng = random.Random(f"{seed}:{spec.symbol}")
        self._tick, self.price_decimals = _decimals(spec.tick_size)
        self._step, self.size_decimals = _decimals(spec.step_size)
        self._min_steps = max(1, int(spec.min_quantity / spec.step_size))
        self._typical_steps = max(self._min_steps, int(spec.typical_size / spec.step_size))
        self._price_scale = Decimal(1).scaleb(-self.price_decimals)
        self._size_scale = Decimal(1).scaleb(-self.size_decimals)
        # Books in ticks -> steps; ascending price lists give the touch and near-touch picks.
        self.bids: dict[int, int] = {}
        self.asks: dict[int, int] = {}
        self._bid_prices: list[int] = []
        self._ask_prices: list[int] = []
        self.fair = int(spec.initial_price / spec.tick_size)
        self.last_update_id = self.rng.randint(1_000_000_000, 1_900_000_000)
        self.last_trade_id = self.rng.randint(10_000_000, 400_000_000)
        self._order_id = self.rng.randint(5_000_000_000, 9_000_000_000)
        self.trades: list[SimTrade] = []
        self._build_initial_book()
        # Ground truth: per-update changes since `_log_base` plus periodic full checkpoints.
        self._log_base = self.last_update_id + 1
        self._log: list[tuple[tuple[tuple[int, int], ...], tuple[tuple[int, int], ...]]] = []
        self._checkpoints: list[tuple[int, dict[int, int], dict[int, int]]] = [
            (self.last_update_id, dict(self.bids), dict(self.asks))
        ]
        self._last_touch = self._touch()
        # 24 h ticker stats (kept since start: simulator runs are much shorter than a day).
        first = self.fair * self._tick
        self.first_price = first
        self.last_price = first
        self.high = first
        self.low = first
        self.volume = 0
        self.quote_volume = 0

    # ------------------------------------------------------------------ construction
    def _random_size(self) -> int:
        size = int(self._typical_steps * self.rng.lognormvariate(0.0, 1.0))
        return max(self._min_steps, size)

    def _build_initial_book(self) -> None:
        price = self.fair - 1
        for _ in range(self.params.levels):
            self._set(True, price, self._random_size())
            price -= self.rng.randint(1, 3)
        price = self.fair + 1
        for _ in range(self.params.levels):
            self._set(False, price, self._random_size())
            price += self.rng.randint(1, 3)

    # ------------------------------------------------------------------ book primitives
    def _set(self, is_bid: bool, price: int, size: int) -> None:
        book, prices = (self.bids, self._bid_prices) if is_bid else (self.asks, self._ask_prices)
        if size > 0:
            if price not in book:
                bisect.insort(prices, price)
            book[price] = size
        elif price in book:
            del book[price]
            del prices[bisect.bisect_left(prices, price)]

    def best_bid(self) -> int:
        """Best bid in ticks."""
        return self._bid_prices[-1]

    def best_ask(self) -> int:
        """Best ask in ticks."""
        return self._ask_prices[0]

    def _touch(self) -> tuple[int, int, int, int]:
        bid, ask = self.best_bid(), self.best_ask()
        return bid, self.bids[bid], ask, self.asks[ask]

    def _near_index(self, count: int, mean: float) -> int:
        return min(int(self.rng.expovariate(1.0 / mean)), count - 1)

    # ------------------------------------------------------------------ one update id
    def _update(
        self, engine_us: int, event_us: int
    ) -> tuple[list[tuple[bool, int, int]], list[SimTrade]]:
        """Apply one update (one id); returns the level changes and trades it caused."""
        rng = self.rng
        self.fair += rng.choice((-1, 0, 0, 0, 0, 0, 1))
        changes: list[tuple[bool, int, int]] = []
        trades: list[SimTrade] = []
        roll = rng.random()
        p = self.params
        through = self.fair >= self.best_ask() or self.fair <= self.best_bid()
        if roll < p.empty_probability:
            return changes, trades
        roll -= p.empty_probability
        is_bid = rng.random() < 0.5
        if (through and roll < 0.5) or roll < p.trade_probability:
            self._trade(engine_us, event_us, changes, trades)
        elif roll < p.trade_probability + p.remove_probability:
            self._remove(is_bid, changes)
        else:
            self._add_or_update(is_bid, changes)
        return changes, trades

    def _add_or_update(self, is_bid: bool, changes: list[tuple[bool, int, int]]) -> None:
        rng = self.rng
        prices = self._bid_prices if is_bid else self._ask_prices
        if rng.random() < 0.08 or len(prices) < self.params.levels // 2:
            # Far add: refills the depth that trims and trades take away.
            span = abs(prices[0] - prices[-1]) + 2
            dist = rng.randint(0, span)
        else:
            dist = int(rng.expovariate(1.0 / 6.0))
        if is_bid:
            price = min(self.fair - 1, self.best_ask() - 1) - dist
            price = min(price, self.best_ask() - 1)
        else:
            price = max(self.fair + 1, self.best_bid() + 1) + dist
            price = max(price, self.best_bid() + 1)
        size = self._random_size()
        self._set(is_bid, price, size)
        changes.append((is_bid, price, size))

    def _remove(self, is_bid: bool, changes: list[tuple[bool, int, int]]) -> None:
        rng = self.rng
        prices = self._bid_prices if is_bid else self._ask_prices
        count = len(prices)
        # Below the target depth a removal turns into an add, so the book keeps its size.
        if count <= 2 or (count < self.params.levels and rng.random() < 0.5):
            self._add_or_update(is_bid, changes)
            return
        if count > self.params.levels and rng.random() < 0.5:
            k = count - 1
        else:
            k = self._near_index(count, 8.0)
        price = prices[count - 1 - k] if is_bid else prices[k]
        if rng.random() < 0.4:
            # Partial cancel: the level stays with a new absolute size.
            book = self.bids if is_bid else self.asks
            size = book[price] // 2
            if size >= self._min_steps:
                self._set(is_bid, price, size)
                changes.append((is_bid, price, size))
                return
        self._set(is_bid, price, 0)
        changes.append((is_bid, price, 0))

    def _trade(
        self,
        engine_us: int,
        event_us: int,
        changes: list[tuple[bool, int, int]],
        trades: list[SimTrade],
    ) -> None:
        rng = self.rng
        if self.fair >= self.best_ask():
            buy = True
        elif self.fair <= self.best_bid():
            buy = False
        else:
            buy = rng.random() < 0.5
        levels = 1
        while rng.random() < 0.25 and levels < 4:
            levels += 1
        self._order_id += rng.randint(1, 50)
        taker = self._order_id
        for i in range(levels):
            prices = self._ask_prices if buy else self._bid_prices
            if len(prices) <= 2:
                break
            price = prices[0] if buy else prices[-1]
            book = self.asks if buy else self.bids
            resting = book[price]
            full = i < levels - 1 or rng.random() < 0.35
            qty = resting if full else max(1, min(resting, self._random_size() // 3))
            left = resting - qty
            self._set(not buy, price, left)
            changes.append((not buy, price, left))
            trades.append(self._record_trade(price, qty, buy, taker, engine_us, event_us))
            if left > 0:
                break

    def _record_trade(
        self, price: int, qty: int, buy: bool, taker: int, engine_us: int, event_us: int
    ) -> SimTrade:
        self.last_trade_id += 1
        maker = taker - self.rng.randint(1, 4_000_000)
        p_units = price * self._tick
        q_units = qty * self._step
        quote_units = p_units * q_units
        quote_dec = self.price_decimals + self.size_decimals
        self.last_price = p_units
        self.high = max(self.high, p_units)
        self.low = min(self.low, p_units)
        self.volume += q_units
        self.quote_volume += quote_units
        trade = SimTrade(
            symbol=self.spec.symbol,
            id=self.last_trade_id,
            price=Decimal(p_units).scaleb(-self.price_decimals),
            quantity=Decimal(q_units).scaleb(-self.size_decimals),
            quote_quantity=Decimal(quote_units).scaleb(-quote_dec),
            is_buyer_maker=not buy,
            engine_time_us=engine_us,
            event_time_us=event_us,
            buyer_order_id=str(taker if buy else maker),
            seller_order_id=str(maker if buy else taker),
            price_str=format_stripped(p_units, self.price_decimals),
            quantity_str=format_stripped(q_units, self.size_decimals),
            quote_quantity_str=format_stripped(quote_units, quote_dec),
        )
        self.trades.append(trade)
        return trade

    # ------------------------------------------------------------------ messages
    def next_message(self, engine_us: int) -> DepthMessage:
        """Advance by one message (one or several update ids) stamped with ``engine_us``."""
        rng = self.rng
        count = 1
        if rng.random() < self.params.merge_probability:
            count = rng.randint(2, self.params.max_merge)
        event_us = engine_us + rng.randint(150, 2500)
        merged: dict[tuple[bool, int], int] = {}
        trades: list[SimTrade] = []
        first = self.last_update_id + 1
        for _ in range(count):
            changes, new_trades = self._update(engine_us, event_us)
            self.last_update_id += 1
            self._log_update(changes)
            for is_bid, price, size in changes:
                merged[(is_bid, price)] = size
            trades.extend(new_trades)
        bids = sorted((p, s) for (b, p), s in merged.items() if b)
        asks = sorted((p, s) for (b, p), s in merged.items() if not b)
        touch = self._touch()
        touch_changed = touch != self._last_touch
        self._last_touch = touch
        return DepthMessage(
            symbol=self.spec.symbol,
            first_id=first,
            last_id=self.last_update_id,
            bids=[self._level(p, s) for p, s in bids],
            asks=[self._level(p, s) for p, s in asks],
            engine_time_us=engine_us,
            event_time_us=event_us,
            trades=trades,
            touch_changed=touch_changed,
        )

    def _level(self, price: int, size: int) -> tuple[str, str]:
        return (
            format_padded(price * self._tick, self.price_decimals),
            format_padded(size * self._step, self.size_decimals),
        )

    def _log_update(self, changes: list[tuple[bool, int, int]]) -> None:
        self._log.append(
            (
                tuple((p, s) for b, p, s in changes if b),
                tuple((p, s) for b, p, s in changes if not b),
            )
        )
        if (self.last_update_id - self._log_base + 1) % self.params.checkpoint_interval == 0:
            self._checkpoints.append((self.last_update_id, dict(self.bids), dict(self.asks)))
            self._trim_history()

    def _trim_history(self) -> None:
        excess = len(self._log) - self.params.max_history
        if excess < self.params.checkpoint_interval:
            return
        # Keep the newest checkpoint at or before the new log base so book_at stays exact.
        keep_from = self.last_update_id - self.params.max_history
        idx = bisect.bisect_right([c[0] for c in self._checkpoints], keep_from) - 1
        if idx <= 0:
            return
        base_cp = self._checkpoints[idx][0]
        del self._log[: base_cp + 1 - self._log_base]
        self._log_base = base_cp + 1
        del self._checkpoints[:idx]

    # ------------------------------------------------------------------ ground truth / views
    @property
    def first_known_update_id(self) -> int:
        """Oldest update id ``book_at`` can still answer."""
        return self._checkpoints[0][0]

    def book_at(self, update_id: int) -> BookLevels:
        """Exact book after update ``update_id`` (bids and asks best-first)."""
        if not self.first_known_update_id <= update_id <= self.last_update_id:
            raise KeyError(
                f"{self.spec.symbol}: update id {update_id} outside "
                f"[{self.first_known_update_id}, {self.last_update_id}]"
            )
        ids = [c[0] for c in self._checkpoints]
        cp_id, cp_bids, cp_asks = self._checkpoints[bisect.bisect_right(ids, update_id) - 1]
        bids, asks = dict(cp_bids), dict(cp_asks)
        for bid_changes, ask_changes in self._log[
            cp_id + 1 - self._log_base : update_id + 1 - self._log_base
        ]:
            _apply(bids, bid_changes)
            _apply(asks, ask_changes)
        return (
            [self._exact(p, bids[p]) for p in sorted(bids, reverse=True)],
            [self._exact(p, asks[p]) for p in sorted(asks)],
        )

    def _exact(self, price: int, size: int) -> tuple[Decimal, Decimal]:
        return (
            Decimal(price * self._tick) * self._price_scale,
            Decimal(size * self._step) * self._size_scale,
        )

    def depth_levels(self, limit: int) -> tuple[list[list[str]], list[list[str]]]:
        """Current ``(bids ascending, asks ascending)`` wire levels, ``limit`` nearest the touch."""
        bids = self._bid_prices[-limit:]
        asks = self._ask_prices[:limit]
        return (
            [list(self._level(p, self.bids[p])) for p in bids],
            [list(self._level(p, self.asks[p])) for p in asks],
        )

    def book_ticker(self) -> tuple[str, str, str, str]:
        """Current ``(bid, bidQty, ask, askQty)`` wire strings."""
        bid, bid_qty, ask, ask_qty = self._touch()
        b, bq = self._level(bid, bid_qty)
        a, aq = self._level(ask, ask_qty)
        return b, bq, a, aq

    def ticker_fields(self) -> dict[str, str]:
        """Rolling stats as wire strings (trailing zeros stripped)."""
        pd, sd = self.price_decimals, self.size_decimals
        change = self.last_price - self.first_price
        # Fraction with 6 decimals, like the recorded bodies (-0.004868); integer maths, half-up.
        num = change * 2_000_000
        den = self.first_price * 2
        pct = (abs(num) + den // 2) // den if den else 0
        pct_text = format_padded(pct if change >= 0 else -pct, 6)
        return {
            "firstPrice": format_stripped(self.first_price, pd),
            "lastPrice": format_stripped(self.last_price, pd),
            "high": format_stripped(self.high, pd),
            "low": format_stripped(self.low, pd),
            "priceChange": format_stripped(change, pd),
            "priceChangePercent": pct_text,
            "volume": format_stripped(self.volume, sd),
            "quoteVolume": format_stripped(self.quote_volume, pd + sd),
            "trades": str(len(self.trades)),
        }


def _apply(book: dict[int, int], changes: Iterable[tuple[int, int]]) -> None:
    for price, size in changes:
        if size:
            book[price] = size
        else:
            book.pop(price, None)
