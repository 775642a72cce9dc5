"""cryptofeed's shapes without cryptofeed: channel names, maintained books, trade objects.

:mod:`backpack_actors.cryptofeed` hands cryptofeed's own types to its callbacks; the standalone
:class:`backpack_actors.feed.CcxtBackpackFeed` (no cryptofeed installed) hands these look-alikes
with the same field names (``exchange``, ``symbol``, ``side``, ``amount``, ``price``, ``id``,
``timestamp``; books ``.book.bids``/``.book.asks``, ``.delta``, ``.sequence_number``). Every
field of the feed's own event is still there (``trade.trade_id``, ``book.update_id``, ...): the
objects read what they do not define from the event in ``.raw``.

Both keep one book per symbol: a :class:`~backpack_actors.core.events.BookSnapshot` replaces it
(``delta`` is None: a reset, as cryptofeed's own feeds signal one), each
:class:`~backpack_actors.core.events.BookDelta` changes it (``delta`` holds the changed levels,
size 0 = removed). After a gap the feed publishes nothing for the market until its resync
snapshot, which reaches the callback as such a reset.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, MutableMapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Generic, Protocol, TypeVar

from backpack_actors.core.events import BookDelta, BookSnapshot

__all__ = [
    "ASK",
    "BID",
    "CF_CHANNELS",
    "EXCHANGE",
    "Book",
    "BookKeeper",
    "BookSides",
    "TradeView",
    "feed_channels",
]

EXCHANGE = "BACKPACK"
"""The ``exchange`` field of every object (cryptofeed spells exchange ids in capitals)."""

BID = "bid"
ASK = "ask"

CF_CHANNELS: Mapping[str, str] = {
    "trades": "trades",
    "l2_book": "l2_book",
    # cryptofeed's TICKER is the best bid/ask, which Backpack calls bookTicker.
    "ticker": "book_ticker",
    # cryptofeed's FUNDING carries the mark price and the funding rate: Backpack's markPrice.
    "funding": "mark_price",
    "open_interest": "open_interest",
    "liquidations": "liquidations",
    "candles": "candles",
}
"""cryptofeed channel name → the feed's channel (``candles`` takes ``candle_interval``)."""


def feed_channels(channels: Iterable[str], candle_interval: str = "1m") -> list[str]:
    """The feed's channel names for cryptofeed's; ValueError names an unknown one."""
    out: list[str] = []
    for channel in channels:
        name = channel.lower()
        if name not in CF_CHANNELS:
            known = ", ".join(n.upper() for n in CF_CHANNELS)
            raise ValueError(f"unknown cryptofeed channel {channel!r}; known: {known}")
        mapped = CF_CHANNELS[name]
        out.append(f"{mapped}:{candle_interval}" if mapped == "candles" else mapped)
    return out


class _Delegating:
    """Fields not defined here are read from the feed's event (``raw``)."""

    raw: Any

    def __getattr__(self, name: str) -> Any:
        if name == "raw":
            raise AttributeError(name)
        return getattr(self.raw, name)


@dataclass(eq=False, slots=False)
class TradeView(_Delegating):
    """cryptofeed's ``Trade`` fields over the feed's :class:`~backpack_actors.core.events.Trade`."""

    exchange: str
    symbol: str
    side: str
    amount: Decimal
    price: Decimal
    timestamp: float
    id: str
    type: str | None
    raw: Any


@dataclass(eq=False)
class BookSides:
    """``bids`` and ``asks`` as price → size dicts (``Decimal``)."""

    bids: dict[Decimal, Decimal] = field(default_factory=dict)
    asks: dict[Decimal, Decimal] = field(default_factory=dict)


@dataclass(eq=False, slots=False)
class Book(_Delegating):
    """cryptofeed's ``OrderBook`` fields: a maintained book (``.book.bids``/``.book.asks``)."""

    exchange: str
    symbol: str
    book: BookSides = field(default_factory=BookSides)
    delta: dict[str, list[tuple[Decimal, Decimal]]] | None = None
    sequence_number: int | None = None
    timestamp: float | None = None
    raw: Any = None


class _BookLike(Protocol):
    book: Any
    delta: Any
    sequence_number: Any
    timestamp: Any
    raw: Any


B = TypeVar("B", bound=_BookLike)


def _levels(raw: Iterable[tuple[str, str]]) -> list[tuple[Decimal, Decimal]]:
    return [(Decimal(price), Decimal(size)) for price, size in raw]


def _set(side: MutableMapping[Any, Any], levels: list[tuple[Decimal, Decimal]]) -> None:
    for price, size in levels:
        if size:
            side[price] = size
        elif price in side:
            del side[price]


def _seconds(us: int | None) -> float | None:
    return None if us is None else us / 1_000_000


class BookKeeper(Generic[B]):
    """One maintained book per symbol, updated by the feed's book events.

    ``new_book(symbol)`` makes an empty book of the caller's type (cryptofeed's ``OrderBook``
    or :class:`Book`); :meth:`apply` returns the updated book, or None for a delta of a symbol
    that has no book yet (never the case with the feed: its first book event is a snapshot).
    """

    def __init__(self, new_book: Callable[[str], B]) -> None:
        self._new = new_book
        self.books: dict[str, B] = {}

    def apply(self, event: BookSnapshot | BookDelta) -> B | None:
        """Apply one book event; the book to hand to the callback."""
        if isinstance(event, BookSnapshot):
            book = self._new(event.symbol)
            sides = book.book
            _set(sides.bids, _levels(event.raw_bids))
            _set(sides.asks, _levels(event.raw_asks))
            book.delta = None
            book.sequence_number = event.update_id
            book.timestamp = _seconds(event.engine_time_us)
            book.raw = event
            self.books[event.symbol] = book
            return book
        current = self.books.get(event.symbol)
        if current is None:
            return None
        bids, asks = _levels(event.raw_bids), _levels(event.raw_asks)
        _set(current.book.bids, bids)
        _set(current.book.asks, asks)
        current.delta = {BID: bids, ASK: asks}
        current.sequence_number = event.last_update_id
        current.timestamp = _seconds(event.engine_time_us)
        current.raw = event
        return current
