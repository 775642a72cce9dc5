"""Public event types delivered to consumers.

Prices and sizes are exact: events carry the exchange's decimal text (``raw_*`` fields, checked
before anything was published) and give ``Decimal`` values through properties (``price``,
``bids``...), built on each access; exchange times are integer microseconds (``E`` is the
WebSocket emit time, ``T`` the matching-engine time) with float-second properties for convenience;
receipt times are integer nanoseconds: ``received_at_ns`` on the wall clock (``time.time_ns``) and
``received_mono_ns`` on the monotonic clock, stamped when the socket read (or REST answer) arrived;
``received_at`` gives the wall time in float seconds.
Symbols are normalized (``BTC-USDC``, perps ``BTC-USDC-PERP``); ``exchange_symbol`` keeps the
exchange id (``BTC_USDC``).
"""

from __future__ import annotations

import enum
from decimal import Decimal

import msgspec

__all__ = [
    "BookDelta",
    "BookSnapshot",
    "BookTicker",
    "Candle",
    "Event",
    "IntervalSnapshot",
    "Level",
    "Liquidation",
    "MarkPrice",
    "MarketEvent",
    "OpenInterest",
    "ProtocolErrorEvent",
    "RawLevel",
    "Side",
    "StatusEvent",
    "StatusKind",
    "Ticker",
    "Trade",
]

Level = tuple[Decimal, Decimal]
"""One price level: ``(price, size)``; a size of zero in a delta removes the level."""

RawLevel = tuple[str, str]
"""One price level as the exchange's decimal text."""


def _levels(raw: tuple[RawLevel, ...]) -> tuple[Level, ...]:
    return tuple([(Decimal(price), Decimal(size)) for price, size in raw])


class Side(enum.StrEnum):
    """Aggressor side of a trade."""

    BUY = "buy"
    SELL = "sell"


class StatusKind(enum.StrEnum):
    """What a :class:`StatusEvent` announces."""

    BOOK_READY = "book_ready"
    GAP_DETECTED = "gap_detected"
    RESYNCING = "resyncing"
    RESYNCED = "resynced"
    STALE = "stale"
    RECONNECTING = "reconnecting"
    DEGRADED_REST_ONLY = "degraded_rest_only"
    RECOVERED_WS = "recovered_ws"
    TRADE_GAP = "trade_gap"
    TRADES_BACKFILLED = "trades_backfilled"
    BOOK_CONFLATED = "book_conflated"
    SNAPSHOT_FAILED = "snapshot_failed"
    DELISTED = "delisted"
    LISTED = "listed"
    UNSUBSCRIBED = "unsubscribed"
    CONSUMER_OVERFLOW = "consumer_overflow"
    TRADE_ID_RESET = "trade_id_reset"
    DEPTH_STREAM_FALLBACK = "depth_stream_fallback"


class _Received(msgspec.Struct, frozen=True, gc=False):
    """Base of the market-data events: ``received_at``, the float-seconds view of their
    ``received_at_ns`` field."""

    @property
    def received_at(self) -> float:
        """Receipt time in float seconds (``received_at_ns`` / 1e9)."""
        return self.received_at_ns / 1_000_000_000  # type: ignore[attr-defined, no-any-return]


class Trade(_Received, frozen=True, gc=False):
    """One public trade."""

    symbol: str
    exchange_symbol: str
    trade_id: int
    raw_price: str
    raw_amount: str
    side: Side
    event_time_us: int
    engine_time_us: int
    received_at_ns: int
    backfilled: bool = False
    received_mono_ns: int = 0
    """Receipt time on the monotonic clock (``time.monotonic_ns``), for ordering and latency."""

    @property
    def price(self) -> Decimal:
        """The price as an exact ``Decimal``."""
        return Decimal(self.raw_price)

    @property
    def amount(self) -> Decimal:
        """The size as an exact ``Decimal``."""
        return Decimal(self.raw_amount)

    @property
    def timestamp(self) -> float:
        """Engine time ``T`` in float seconds."""
        return self.engine_time_us / 1_000_000

    @property
    def event_time(self) -> float:
        """Emit time ``E`` in float seconds."""
        return self.event_time_us / 1_000_000


class BookSnapshot(_Received, frozen=True, kw_only=True, gc=False):
    """A whole book (``force=True``): after a (re)sync, on every snapshot interval, or conflated.

    ``bids`` are best (highest) first, ``asks`` best (lowest) first. ``update_id`` is the id of the
    last update the book contains (REST ``lastUpdateId`` or the last applied ``u``).
    """

    symbol: str
    exchange_symbol: str
    update_id: int
    raw_bids: tuple[RawLevel, ...]
    raw_asks: tuple[RawLevel, ...]
    engine_time_us: int | None
    received_at_ns: int
    reason: str
    force: bool = True
    age_us: int | None = None
    """REST-only snapshots: receipt time − the snapshot's engine time, in µs (how old the book
    is when it reaches you); None for books kept live from the stream."""
    valid_bid_floor: str | None = None
    """The valid window: bids at or above this price are exact; below it levels may be missing
    (the REST snapshot the book came from was truncated there). None: every bid is known."""
    valid_ask_ceiling: str | None = None
    """Asks at or below this price are exact (None: every ask is known)."""
    received_mono_ns: int = 0
    """Receipt time on the monotonic clock (``time.monotonic_ns``), for ordering and latency."""

    @property
    def bids(self) -> tuple[Level, ...]:
        """Bids as ``Decimal`` levels, best first."""
        return _levels(self.raw_bids)

    def vouched(self) -> tuple[int, int]:
        """How many of this snapshot's best bids and asks lie inside the valid window."""
        floor = None if self.valid_bid_floor is None else Decimal(self.valid_bid_floor)
        ceiling = None if self.valid_ask_ceiling is None else Decimal(self.valid_ask_ceiling)
        nb = sum(1 for p, _ in self.raw_bids if floor is None or Decimal(p) >= floor)
        na = sum(1 for p, _ in self.raw_asks if ceiling is None or Decimal(p) <= ceiling)
        return nb, na

    @property
    def asks(self) -> tuple[Level, ...]:
        """Asks as ``Decimal`` levels, best first."""
        return _levels(self.raw_asks)

    @property
    def timestamp(self) -> float | None:
        """Engine time in float seconds, when the exchange gave one."""
        return None if self.engine_time_us is None else self.engine_time_us / 1_000_000


class IntervalSnapshot(_Received, frozen=True, kw_only=True, gc=False):
    """``book_snapshots``: the top ``depth`` levels on an exchange-time boundary (a view).

    Not a :class:`BookSnapshot` on purpose: it holds only the top levels, so nothing that keeps a
    book may load it as one (``force`` is always False). ``engine_time_us`` is the boundary; the
    book is the one after every update with an earlier engine time. Levels are vouched for: never
    beyond the valid window (see :class:`BookSnapshot`).
    """

    symbol: str
    exchange_symbol: str
    update_id: int
    raw_bids: tuple[RawLevel, ...]
    raw_asks: tuple[RawLevel, ...]
    engine_time_us: int
    received_at_ns: int
    depth: int | None
    """Levels per side asked for (None: the whole book)."""
    reason: str = "interval"
    force: bool = False
    valid_bid_floor: str | None = None
    valid_ask_ceiling: str | None = None
    received_mono_ns: int = 0

    @property
    def bids(self) -> tuple[Level, ...]:
        """Bids as ``Decimal`` levels, best first."""
        return _levels(self.raw_bids)

    @property
    def asks(self) -> tuple[Level, ...]:
        """Asks as ``Decimal`` levels, best first."""
        return _levels(self.raw_asks)


class BookDelta(_Received, frozen=True, gc=False):
    """Changed levels (absolute sizes; zero removes) covering update ids ``first..last``."""

    symbol: str
    exchange_symbol: str
    first_update_id: int
    last_update_id: int
    raw_bids: tuple[RawLevel, ...]
    raw_asks: tuple[RawLevel, ...]
    event_time_us: int
    engine_time_us: int
    received_at_ns: int
    received_mono_ns: int = 0
    """Receipt time on the monotonic clock (``time.monotonic_ns``), for ordering and latency."""

    @property
    def bids(self) -> tuple[Level, ...]:
        """Changed bids as ``Decimal`` levels, in the order sent."""
        return _levels(self.raw_bids)

    @property
    def asks(self) -> tuple[Level, ...]:
        """Changed asks as ``Decimal`` levels, in the order sent."""
        return _levels(self.raw_asks)

    @property
    def timestamp(self) -> float:
        """Engine time ``T`` in float seconds."""
        return self.engine_time_us / 1_000_000

    @property
    def event_time(self) -> float:
        """Emit time ``E`` in float seconds."""
        return self.event_time_us / 1_000_000


class StatusEvent(msgspec.Struct, frozen=True, kw_only=True):
    """In-band news about a symbol's feed: readiness, gaps, resyncs, reconnects, mode changes."""

    symbol: str
    kind: StatusKind
    reason: str
    counts: dict[str, int] = msgspec.field(default_factory=dict)
    at: float = 0.0


class ProtocolErrorEvent(msgspec.Struct, frozen=True, kw_only=True):
    """A frame or body that did not decode: counted, reported, and otherwise dropped."""

    symbol: str
    stream: str
    reason: str
    excerpt: str
    count: int
    at: float = 0.0


def _dec(text: str | None) -> Decimal | None:
    return None if text is None else Decimal(text)


class BookTicker(_Received, frozen=True, gc=False):
    """``book_ticker``: the best bid and ask with their sizes; ``update_id`` is the book's ``u``."""

    symbol: str
    exchange_symbol: str
    update_id: int
    raw_bid_price: str
    raw_bid_size: str
    raw_ask_price: str
    raw_ask_size: str
    event_time_us: int
    engine_time_us: int
    received_at_ns: int
    received_mono_ns: int = 0
    """Receipt time on the monotonic clock (``time.monotonic_ns``), for ordering and latency."""

    @property
    def bid_price(self) -> Decimal:
        return Decimal(self.raw_bid_price)

    @property
    def bid_size(self) -> Decimal:
        return Decimal(self.raw_bid_size)

    @property
    def ask_price(self) -> Decimal:
        return Decimal(self.raw_ask_price)

    @property
    def ask_size(self) -> Decimal:
        return Decimal(self.raw_ask_size)


class Ticker(_Received, frozen=True, gc=False):
    """``ticker``: 24 h rolling statistics (Backpack pushes one a second; no engine time)."""

    symbol: str
    exchange_symbol: str
    raw_open: str
    raw_high: str
    raw_low: str
    raw_last: str
    raw_volume: str
    raw_quote_volume: str
    trade_count: int
    event_time_us: int
    received_at_ns: int
    received_mono_ns: int = 0
    """Receipt time on the monotonic clock (``time.monotonic_ns``), for ordering and latency."""

    @property
    def open(self) -> Decimal:
        return Decimal(self.raw_open)

    @property
    def high(self) -> Decimal:
        return Decimal(self.raw_high)

    @property
    def low(self) -> Decimal:
        return Decimal(self.raw_low)

    @property
    def last(self) -> Decimal:
        return Decimal(self.raw_last)

    @property
    def volume(self) -> Decimal:
        """Base-asset volume."""
        return Decimal(self.raw_volume)

    @property
    def quote_volume(self) -> Decimal:
        return Decimal(self.raw_quote_volume)


class Candle(_Received, frozen=True, gc=False):
    """``candles:<interval>``: one OHLCV candle; sent on every change, ``closed`` on the last."""

    symbol: str
    exchange_symbol: str
    interval: str
    start_us: int
    end_us: int
    raw_open: str
    raw_high: str
    raw_low: str
    raw_close: str
    raw_volume: str
    trade_count: int
    closed: bool
    event_time_us: int
    received_at_ns: int
    received_mono_ns: int = 0
    """Receipt time on the monotonic clock (``time.monotonic_ns``), for ordering and latency."""

    @property
    def open(self) -> Decimal:
        return Decimal(self.raw_open)

    @property
    def high(self) -> Decimal:
        return Decimal(self.raw_high)

    @property
    def low(self) -> Decimal:
        return Decimal(self.raw_low)

    @property
    def close(self) -> Decimal:
        return Decimal(self.raw_close)

    @property
    def volume(self) -> Decimal:
        return Decimal(self.raw_volume)


class MarkPrice(_Received, frozen=True, gc=False):
    """``mark_price`` (perps): mark and index price, estimated funding rate, next funding time.

    ``index_price``, ``funding_rate`` and ``next_funding_time_us`` are None where the exchange
    leaves them out (prediction markets).
    """

    symbol: str
    exchange_symbol: str
    raw_mark_price: str
    raw_index_price: str | None
    raw_funding_rate: str | None
    next_funding_time_us: int | None
    event_time_us: int
    engine_time_us: int
    received_at_ns: int
    received_mono_ns: int = 0
    """Receipt time on the monotonic clock (``time.monotonic_ns``), for ordering and latency."""

    @property
    def mark_price(self) -> Decimal:
        return Decimal(self.raw_mark_price)

    @property
    def index_price(self) -> Decimal | None:
        return _dec(self.raw_index_price)

    @property
    def funding_rate(self) -> Decimal | None:
        return _dec(self.raw_funding_rate)


class OpenInterest(_Received, frozen=True, gc=False):
    """``open_interest`` (perps): open interest in contracts, every 60 s."""

    symbol: str
    exchange_symbol: str
    raw_open_interest: str
    event_time_us: int
    received_at_ns: int
    received_mono_ns: int = 0
    """Receipt time on the monotonic clock (``time.monotonic_ns``), for ordering and latency."""

    @property
    def open_interest(self) -> Decimal:
        return Decimal(self.raw_open_interest)


class Liquidation(_Received, frozen=True, gc=False):
    """``liquidations``: one liquidation; ``side`` is the liquidation order's side."""

    symbol: str
    exchange_symbol: str
    raw_price: str
    raw_amount: str
    side: Side
    event_time_us: int
    engine_time_us: int
    received_at_ns: int
    received_mono_ns: int = 0
    """Receipt time on the monotonic clock (``time.monotonic_ns``), for ordering and latency."""

    @property
    def price(self) -> Decimal:
        return Decimal(self.raw_price)

    @property
    def amount(self) -> Decimal:
        return Decimal(self.raw_amount)


MarketEvent = BookTicker | Ticker | Candle | MarkPrice | OpenInterest | Liquidation
"""The stateless channels' events (one per frame; see ``backpack_actors.channels``)."""

Event = (
    Trade
    | BookSnapshot
    | BookDelta
    | StatusEvent
    | ProtocolErrorEvent
    | BookTicker
    | Ticker
    | Candle
    | MarkPrice
    | OpenInterest
    | Liquidation
    | IntervalSnapshot
)
