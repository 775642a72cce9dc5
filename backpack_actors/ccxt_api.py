"""A ccxt.pro-shaped face of the trio feed: ``watch_order_book``, ``watch_trades``,
``watch_ticker`` and ``feed.book(symbol)`` with ``Decimal`` accessors.

The structures are ccxt's unified ones (the same keys, the same symbol form ``BTC/USDC``, times
in integer milliseconds, ``datetime`` in ccxt's ISO 8601 form), with one difference: prices,
sizes and costs are exact :class:`~decimal.Decimal` values instead of floats.

Semantics follow ccxt.pro: each ``watch_*`` call waits for the next change after the previous
call returned (the first call returns as soon as there is something: a book that is in sync, a
trade). ``watch_trades`` returns the trades that arrived since its previous call. Everything is
served from one subscriber queue of the feed (created at the first ``watch_*`` call, with the
live books copied at that instant so no delta is missing); while a market resyncs after a gap
``watch_order_book`` waits, and the next book it returns is the resynced one.

The ticker has the maintained book's best bid and ask (which ccxt.pro's Backpack ticker leaves
None) and, when the feed subscribes the ``ticker`` channel, Backpack's 24-hour statistics as
ccxt.pro reads them (``open``, ``high``, ``low``, ``last``, volumes, and ccxt's derived
``change``, ``percentage``, ``average``, ``vwap``); without it ``last`` is the last trade's price
and the 24-hour fields are None.
"""

from __future__ import annotations

import datetime
import decimal
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import trio

from backpack_actors.actors.emitter import Subscription
from backpack_actors.core.book import OrderBook
from backpack_actors.core.events import (
    BookDelta,
    BookSnapshot,
    Event,
    StatusEvent,
    StatusKind,
    Ticker,
)
from backpack_actors.core.events import Trade as TradeEvent
from backpack_actors.core.symbols import MarketInfo

if TYPE_CHECKING:
    from backpack_actors.feed import Feed

__all__ = [
    "BookView",
    "CcxtWatcher",
    "ccxt_datetime",
    "ccxt_order_book",
    "ccxt_ticker",
    "ccxt_trade",
]

Pair = tuple[Decimal, Decimal]

_TRADES_KEPT = 1000
_UNSYNCED = frozenset({StatusKind.GAP_DETECTED, StatusKind.RESYNCING, StatusKind.STALE})
_GONE = frozenset({StatusKind.DELISTED, StatusKind.UNSUBSCRIBED})


def _pair(level: tuple[str, str] | None) -> Pair | None:
    return None if level is None else (Decimal(level[0]), Decimal(level[1]))


class BookView:
    """One market's live book with ``Decimal`` answers; ``text`` is the book as exchange text.

    It reads the feed's own book (no copy): what it says is current at the moment of the call.
    """

    __slots__ = ("market", "text")

    def __init__(self, book: OrderBook, market: MarketInfo) -> None:
        self.text = book
        self.market = market

    def __repr__(self) -> str:
        return f"BookView({self.market.normalized}, bid={self.best_bid()}, ask={self.best_ask()})"

    def best_bid(self) -> Pair | None:
        """Highest bid ``(price, size)``, or None when there are no bids."""
        return _pair(self.text.best_bid())

    def best_ask(self) -> Pair | None:
        """Lowest ask ``(price, size)``, or None when there are no asks."""
        return _pair(self.text.best_ask())

    def depth(self, n: int | None = None) -> tuple[list[Pair], list[Pair]]:
        """The best ``n`` levels per side (all when None): ``(bids, asks)``, best first."""
        bids, asks = self.text.depth(n)
        return (
            [(Decimal(p), Decimal(s)) for p, s in bids],
            [(Decimal(p), Decimal(s)) for p, s in asks],
        )

    def spread(self) -> Decimal | None:
        """Best ask − best bid, or None when a side is empty."""
        bid, ask = self.best_bid(), self.best_ask()
        return None if bid is None or ask is None else ask[0] - bid[0]

    def mid(self) -> Decimal | None:
        """(best bid + best ask) / 2, exact, or None when a side is empty."""
        bid, ask = self.best_bid(), self.best_ask()
        return None if bid is None or ask is None else (bid[0] + ask[0]) / 2

    def as_dicts(self) -> tuple[dict[Decimal, Decimal], dict[Decimal, Decimal]]:
        """``(bids, asks)`` as price -> size dicts."""
        return self.text.as_dicts()

    def is_crossed(self) -> bool:
        """True when the best bid is at or above the best ask."""
        return self.text.is_crossed()

    def __len__(self) -> int:
        return len(self.text)


def ccxt_datetime(ms: int | None) -> str | None:
    """ccxt's ``iso8601``: ``2026-01-01T00:00:00.441Z`` (UTC, milliseconds)."""
    if ms is None:
        return None
    moment = datetime.datetime.fromtimestamp(ms // 1000, datetime.UTC)
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{ms % 1000:03d}Z"


def _ms(us: int | None) -> int | None:
    return None if us is None else us // 1000


def ccxt_order_book(
    book: OrderBook,
    market: MarketInfo,
    *,
    nonce: int | None,
    engine_time_us: int | None,
    limit: int | None = None,
) -> dict[str, Any]:
    """ccxt's order book structure (``bids``/``asks`` as ``[price, amount]`` lists, best first)."""
    bids, asks = book.depth(limit)
    timestamp = _ms(engine_time_us)
    return {
        "symbol": market.ccxt_symbol,
        "bids": [[Decimal(p), Decimal(s)] for p, s in bids],
        "asks": [[Decimal(p), Decimal(s)] for p, s in asks],
        "timestamp": timestamp,
        "datetime": ccxt_datetime(timestamp),
        "nonce": nonce,
    }


def ccxt_trade(trade: TradeEvent, market: MarketInfo) -> dict[str, Any]:
    """ccxt's trade structure. ``info`` is the event; ``order`` is None (the feed's trades do
    not carry order ids); ``timestamp`` is the event time ``E`` in ms, as ccxt.pro reads it."""
    timestamp = trade.event_time_us // 1000
    price, amount = trade.price, trade.amount
    return {
        "info": trade,
        "id": str(trade.trade_id),
        "timestamp": timestamp,
        "datetime": ccxt_datetime(timestamp),
        "symbol": market.ccxt_symbol,
        "order": None,
        "type": None,
        "side": trade.side.value,
        "takerOrMaker": "taker",
        "price": price,
        "amount": amount,
        "cost": price * amount,
        "fee": {"currency": None, "cost": None},
        "fees": [],
    }


def _daily(ticker: Ticker, market: MarketInfo) -> dict[str, Any]:
    """The 24-hour fields as ccxt's ``safe_ticker`` derives them, exact (its ``average`` is cut
    to the market's tick decimals, as ccxt's is)."""
    open_, last = ticker.open, ticker.last
    volume, quote = ticker.volume, ticker.quote_volume
    change = last - open_
    places = -market.tick_size.normalize().as_tuple().exponent  # type: ignore[operator]
    average = ((open_ + last) / 2).quantize(
        Decimal(1).scaleb(-max(places, 0)), rounding=decimal.ROUND_DOWN
    )
    return {
        "open": open_ or None,
        "high": ticker.high or None,
        "low": ticker.low or None,
        "close": last or None,
        "last": last or None,
        "change": change,
        "percentage": change / open_ * 100 if open_ else None,
        "average": average if open_ and last else None,
        "vwap": quote / volume if quote and volume else None,
        "baseVolume": volume,
        "quoteVolume": quote,
    }


def ccxt_ticker(
    book: OrderBook,
    last_trade: TradeEvent | None,
    market: MarketInfo,
    *,
    time_us: int | None,
    daily: Ticker | None = None,
) -> dict[str, Any]:
    """ccxt's ticker structure: the book's best levels, and the 24-hour ``daily`` statistics
    (the ``ticker`` channel) or else the last trade's price."""
    bid, ask = _pair(book.best_bid()), _pair(book.best_ask())
    last = last_trade.price if last_trade is not None else None
    if daily is not None:
        time_us = daily.event_time_us
    timestamp = _ms(time_us)
    out = {
        "symbol": market.ccxt_symbol,
        "timestamp": timestamp,
        "datetime": ccxt_datetime(timestamp),
        "high": None,
        "low": None,
        "bid": bid[0] if bid else None,
        "bidVolume": bid[1] if bid else None,
        "ask": ask[0] if ask else None,
        "askVolume": ask[1] if ask else None,
        "vwap": None,
        "open": None,
        "close": last,
        "last": last,
        "previousClose": None,
        "change": None,
        "percentage": None,
        "average": None,
        "baseVolume": None,
        "quoteVolume": None,
        "markPrice": None,
        "indexPrice": None,
        "info": daily if daily is not None else last_trade,
    }
    if daily is not None:
        out.update(_daily(daily, market))
    return out


@dataclass
class _Market:
    info: MarketInfo
    book: OrderBook = field(default_factory=OrderBook)
    ready: bool = False
    nonce: int | None = None
    engine_time_us: int | None = None
    book_version: int = 0
    # Like ccxt.pro's trade cache (1000): unread trades beyond that are forgotten, oldest first.
    trades: deque[TradeEvent] = field(default_factory=lambda: deque(maxlen=_TRADES_KEPT))
    trade_version: int = 0
    last_trade: TradeEvent | None = None
    daily: Ticker | None = None
    daily_version: int = 0
    gone: str | None = None


class CcxtWatcher:
    """The state behind a feed's ``watch_*`` calls: one subscription, books kept from it."""

    def __init__(self, feed: Feed, *, capacity: int | None = None) -> None:
        self._feed = feed
        self._markets: dict[str, _Market] = {}
        self._seen: dict[tuple[str, str], int] = {}
        self._lock = trio.Lock()
        self._changed = trio.Event()
        # Subscribing and copying the live books happen in one synchronous step, so the first
        # delta the subscription holds follows the copied book.
        self._sub: Subscription = feed.subscribe_events("ccxt", capacity)
        reconciler = feed.reconciler
        for exchange_id, info in feed.markets.items():
            market = self._markets[exchange_id] = _Market(info)
            snapshot = reconciler.snapshot_event(exchange_id, "ccxt")
            if snapshot is not None:
                self._load(market, snapshot)

    def _market(self, symbol: str) -> _Market:
        info = self._feed._resolve(symbol)
        market = self._markets.get(info.exchange_id)
        if market is None:
            market = self._markets[info.exchange_id] = _Market(info)
        return market

    @staticmethod
    def _load(market: _Market, snapshot: BookSnapshot) -> None:
        market.book.load(snapshot.raw_bids, snapshot.raw_asks)
        market.nonce = snapshot.update_id
        market.engine_time_us = snapshot.engine_time_us
        market.ready = True
        market.book_version += 1

    def _apply(self, event: Event) -> None:
        exchange_id = getattr(event, "exchange_symbol", None)
        market = self._markets.get(exchange_id) if exchange_id else self._by_symbol(event.symbol)
        if market is None:
            return
        if isinstance(event, BookSnapshot):
            self._load(market, event)
        elif isinstance(event, BookDelta):
            if market.ready:
                market.book.apply(event.raw_bids, event.raw_asks)
                market.nonce = event.last_update_id
                market.engine_time_us = event.engine_time_us
                market.book_version += 1
        elif isinstance(event, TradeEvent):
            market.trades.append(event)
            market.last_trade = event
            market.trade_version += 1
        elif isinstance(event, Ticker):
            market.daily = event
            market.daily_version += 1
        elif isinstance(event, StatusEvent):
            if event.kind in _UNSYNCED:
                market.ready = False
            elif event.kind in _GONE:
                market.gone = f"{event.kind.value}: {event.reason}"
                market.book_version += 1
                market.trade_version += 1

    def _by_symbol(self, symbol: str) -> _Market | None:
        for market in self._markets.values():
            if symbol in (market.info.normalized, market.info.exchange_id):
                return market
        return None

    async def _until(self, done: Callable[[], bool]) -> None:
        """Pump the subscription (one task at a time; the others wait for its news)."""
        while not done():
            if self._lock.locked():
                await self._changed.wait()
                continue
            async with self._lock:
                try:
                    batch = await self._sub.get_batch(4096)
                except trio.EndOfChannel:
                    raise RuntimeError("the feed has stopped") from None
                for event in batch:
                    self._apply(event)
                changed, self._changed = self._changed, trio.Event()
                changed.set()

    def _next(self, kind: str, market: _Market, version: Callable[[], int]) -> Callable[[], bool]:
        key = (kind, market.info.exchange_id)
        seen = self._seen.get(key)

        def done() -> bool:
            if market.gone is not None:
                return True
            current = version()
            return current > 0 and (seen is None or current > seen)

        return done

    def _check_gone(self, market: _Market) -> None:
        if market.gone is not None:
            raise RuntimeError(f"{market.info.normalized} left the feed ({market.gone})")

    async def order_book(self, symbol: str, limit: int | None = None) -> dict[str, Any]:
        """The next in-sync book of ``symbol`` (ccxt's structure, ``Decimal`` levels)."""
        market = self._market(symbol)
        key = ("book", market.info.exchange_id)
        ready = self._next("book", market, lambda: market.book_version if market.ready else 0)
        await self._until(ready)
        self._check_gone(market)
        self._seen[key] = market.book_version
        return ccxt_order_book(
            market.book,
            market.info,
            nonce=market.nonce,
            engine_time_us=market.engine_time_us,
            limit=limit,
        )

    async def trades(
        self, symbol: str, since: int | None = None, limit: int | None = None
    ) -> list[dict[str, Any]]:
        """The trades of ``symbol`` since the previous call (at least one; ccxt's structure)."""
        market = self._market(symbol)
        await self._until(lambda: bool(market.trades) or market.gone is not None)
        self._check_gone(market)
        out = [ccxt_trade(trade, market.info) for trade in market.trades]
        market.trades.clear()
        if since is not None:
            out = [trade for trade in out if trade["timestamp"] >= since]
        return out[-limit:] if limit else out

    async def ticker(self, symbol: str) -> dict[str, Any]:
        """The next ticker of ``symbol``: after a new 24-hour ticker when the feed has the
        ``ticker`` channel (as ccxt.pro), else after a change of the book or a new trade."""
        market = self._market(symbol)
        key = ("ticker", market.info.exchange_id)
        daily = "ticker" in self._feed.config.channels

        def version() -> int:
            if daily:
                return market.daily_version
            return (market.book_version if market.ready else 0) + market.trade_version

        await self._until(self._next("ticker", market, version))
        self._check_gone(market)
        self._seen[key] = version()
        last = market.last_trade
        times = [t for t in (market.engine_time_us, last.engine_time_us if last else None) if t]
        return ccxt_ticker(
            market.book,
            last,
            market.info,
            time_us=max(times) if times else None,
            daily=market.daily,
        )
