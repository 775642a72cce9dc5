"""Messages between actors. Frames travel in batches: one channel send per socket read."""

from __future__ import annotations

from typing import Literal

import attrs
import msgspec

from backpack_actors.core.events import StatusKind
from backpack_actors.core.symbols import MarketInfo
from backpack_actors.core.wire import (
    DepthSnapshot,
    DepthSnapshotText,
    Kline,
    MarketData,
    MarkPrice,
    OpenInterest,
    RestTrade,
    Ticker,
)

__all__ = [
    "BackfillDone",
    "BackfillRequest",
    "CandlePoll",
    "FrameBatch",
    "FrameError",
    "InboxMessage",
    "PollRequest",
    "RestChannels",
    "RestRequest",
    "RestTrades",
    "SnapshotFailed",
    "SnapshotReady",
    "SnapshotRequest",
    "StreamNews",
    "StreamStarted",
    "SymbolAdded",
    "SymbolRemoved",
]

Mode = Literal["ws", "rest"]


@attrs.frozen
class StreamStarted:
    """A new connection (or REST poller) for ``symbol``; sent before its first frame."""

    symbol: str
    epoch: int
    mode: Mode = "ws"


class FrameBatch(msgspec.Struct, frozen=True):
    """Decoded frames of one socket read, in arrival order.

    ``raw`` holds the read's undecoded texts (undecodable ones too), only while recording.
    A msgspec struct, unlike its siblings: built once per read, it costs ~0.1 µs instead of attrs'
    ~0.6 µs (frozen attrs classes set each field through ``object.__setattr__``).
    """

    symbol: str
    epoch: int
    frames: list[MarketData]
    received_ns: int
    raw: tuple[str | bytes, ...] = ()
    mono_ns: int = 0


@attrs.frozen
class FrameError:
    """A frame that did not decode: counted and reported, never fatal."""

    symbol: str
    stream: str
    reason: str
    excerpt: str


@attrs.frozen
class StreamNews:
    """A stream actor's status news (stale, reconnecting, degraded, recovered)."""

    symbol: str
    kind: StatusKind
    reason: str
    counts: dict[str, int] = attrs.field(factory=dict)


@attrs.frozen
class SnapshotReady:
    symbol: str
    # The REST clients give text levels; a Decimal one (a custom client) works the same.
    snapshot: DepthSnapshotText | DepthSnapshot
    reason: str
    received_ns: int
    mono_ns: int = 0


@attrs.frozen
class SnapshotFailed:
    """A symbol's snapshot failed ``attempts`` times in a row; it keeps being retried, slower."""

    symbol: str
    reason: str
    attempts: int = 0
    retry_in: float = 0.0


@attrs.frozen
class RestTrades:
    """Recent trades polled over REST (REST-only mode)."""

    symbol: str
    trades: list[RestTrade]
    received_ns: int
    mono_ns: int = 0


@attrs.frozen
class BackfillDone:
    """The answer to a :class:`BackfillRequest`; ``trades`` may be partial or empty on failure."""

    symbol: str
    trades: list[RestTrade]
    error: str | None
    received_ns: int
    mono_ns: int = 0


@attrs.frozen
class SymbolAdded:
    """A market joins the feed (a listing under ``symbols: all``, or a runtime subscribe)."""

    symbol: str
    info: MarketInfo
    reason: str


@attrs.frozen
class SymbolRemoved:
    """A market leaves the feed: ``kind`` is ``delisted`` or ``unsubscribed``."""

    symbol: str
    kind: StatusKind
    reason: str


class CandlePoll(msgspec.Struct, frozen=True):
    """One ``/api/v1/klines`` answer: ``symbol``'s ``interval`` candles, for the range from
    ``start_s`` to ``end_s`` (exchange seconds; ``end_s`` is the request's ``endTime``).

    The reconciler publishes, as closed, only the candles lying wholly inside that range: the
    poller puts ``end_s`` behind the clock (docs/channels.md), and the bucket holding ``end_s``
    may be partial. ``start_s`` is the request's ``startTime``, except off the bucket grid
    (``3d``, ``1w``, ``1month``), where the poller moves it past the answer's candles that closed
    before the market joined (they are not owed). A msgspec struct so a recording stores the
    answer as it was used.
    """

    symbol: str
    interval: str
    start_s: int
    end_s: int
    klines: list[Kline]


@attrs.frozen
class RestChannels:
    """REST-only mode: tickers, mark prices, open interest or candles of the polled markets.

    Not about one symbol (``symbol`` is ""): each item names its market.
    """

    tickers: list[Ticker] = attrs.field(factory=list)
    mark_prices: list[MarkPrice] = attrs.field(factory=list)
    open_interest: list[OpenInterest] = attrs.field(factory=list)
    received_ns: int = 0
    mono_ns: int = 0
    symbol: str = ""
    candles: list[CandlePoll] = attrs.field(factory=list)


InboxMessage = (
    StreamStarted
    | FrameBatch
    | FrameError
    | StreamNews
    | SnapshotReady
    | SnapshotFailed
    | RestTrades
    | BackfillDone
    | SymbolAdded
    | SymbolRemoved
    | RestChannels
)


@attrs.frozen
class SnapshotRequest:
    """A depth snapshot for the reconciler (``reason`` "interval" marks a periodic check)."""

    symbol: str
    reason: str
    retry: bool = False


@attrs.frozen
class BackfillRequest:
    symbol: str
    first_id: int
    last_id: int


@attrs.frozen
class PollRequest:
    """REST-only mode: one poll of ``what`` ("book" or "trades") for ``symbol``."""

    symbol: str
    what: Literal["book", "trades"]


RestRequest = SnapshotRequest | BackfillRequest | PollRequest
