"""cryptofeed's shapes without cryptofeed: channel names, maintained books, trade objects.

:mod:`backpack_actors.cryptofeed` hands cryptofeed's own types to its callbacks; the standalone
:class:`backpack_actors.feed.CcxtBackpackFeed` (no cryptofeed installed) hands these look-alikes
with the same field names (``exchange``, ``symbol``, ``side``, ``amount``, ``price``, ``id``,
``timestamp``; books ``.book.bids``/``.book.asks``, ``.delta``, ``.sequence_number``). They are
the feed's own events (subclasses), so every older field and ``isinstance`` check still works
(``trade.trade_id``, ``isinstance(book, BookSnapshot)``, ``book.update_id``, ...).

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

import msgspec

from backpack_actors.core.events import BookDelta, BookSnapshot, Trade

__all__ = [
    "ASK",
    "BID",
    "CF_CHANNELS",
    "EXCHANGE",
    "BookDeltaView",
    "BookKeeper",
    "BookSides",
    "BookSnapshotView",
    "StandaloneBooks",
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


class TradeView(Trade, frozen=True, gc=False):
    """The feed's :class:`~backpack_actors.core.events.Trade` with cryptofeed's field names too:
    ``exchange``, ``id`` (text), ``type``; ``side``, ``amount``, ``price``, ``timestamp``
    (engine time, seconds) are the event's own."""

    exchange: str = EXCHANGE

    @property
    def id(self) -> str:
        """The trade id as text, as cryptofeed has it."""
        return str(self.trade_id)

    @property
    def type(self) -> str | None:
        """The order type (Backpack's public trades do not say)."""
        return None

    @classmethod
    def of(cls, trade: Trade) -> TradeView:
        """The view of ``trade``."""
        return cls(**msgspec.structs.asdict(trade))


@dataclass(eq=False)
class BookSides:
    """A maintained book: ``bids`` and ``asks`` as ``Decimal`` price → size dicts."""

    bids: dict[Decimal, Decimal] = field(default_factory=dict)
    asks: dict[Decimal, Decimal] = field(default_factory=dict)


class BookSnapshotView(BookSnapshot, frozen=True, kw_only=True, gc=False):
    """A :class:`~backpack_actors.core.events.BookSnapshot` with cryptofeed's ``OrderBook``
    fields: ``book`` (the maintained book after it), ``delta`` (None: a reset),
    ``sequence_number``, ``exchange``."""

    book: BookSides = msgspec.field(default_factory=BookSides)
    exchange: str = EXCHANGE

    @property
    def delta(self) -> None:
        """None: this book replaces the previous one."""
        return None

    @property
    def sequence_number(self) -> int:
        """The last update id the book contains."""
        return self.update_id


class BookDeltaView(BookDelta, frozen=True, gc=False):
    """A :class:`~backpack_actors.core.events.BookDelta` with cryptofeed's ``OrderBook`` fields:
    ``book`` (the maintained book after it), ``delta`` (``{"bid": [...], "ask": [...]}``, size
    0 = removed), ``sequence_number``, ``exchange``."""

    book: BookSides = msgspec.field(default_factory=BookSides)
    exchange: str = EXCHANGE

    @property
    def delta(self) -> dict[str, list[tuple[Decimal, Decimal]]]:
        """The changed levels."""
        return {BID: list(self.bids), ASK: list(self.asks)}

    @property
    def sequence_number(self) -> int:
        """The last update id the book contains."""
        return self.last_update_id


class StandaloneBooks:
    """The maintained books behind :class:`BookSnapshotView` and :class:`BookDeltaView`."""

    def __init__(self) -> None:
        self.books: dict[str, BookSides] = {}

    def view(self, event: BookSnapshot | BookDelta) -> BookSnapshotView | BookDeltaView:
        """Apply ``event`` to its symbol's book; the event with the book attached."""
        fields = msgspec.structs.asdict(event)
        if isinstance(event, BookSnapshot):
            sides = self.books[event.symbol] = BookSides()
            _set(sides.bids, _levels(event.raw_bids))
            _set(sides.asks, _levels(event.raw_asks))
            return BookSnapshotView(**fields, book=sides)
        sides = self.books.setdefault(event.symbol, BookSides())
        _set(sides.bids, _levels(event.raw_bids))
        _set(sides.asks, _levels(event.raw_asks))
        return BookDeltaView(**fields, book=sides)


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
