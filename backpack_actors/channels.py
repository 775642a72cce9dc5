"""The channel registry: every public channel as data.

A channel is what a user asks for (config ``channels:``, ``--channels``); the registry says which
WebSocket stream carries it, which wire type it decodes to, which public event it becomes and how,
whether it exists only for perps, and which REST route serves it in REST-only mode. The connection
actors build their SUBSCRIBE frames from it, the reconciler its event builders, the JSON Lines sink
its ``type`` names; adding a public channel means a wire type (``core/wire.py``), an event type
(``core/events.py``) and one :class:`Channel` here.

Two channels are special: ``trades`` and ``l2_book`` go through their state machines
(``core/trades.py``, ``core/sync.py``) rather than a stateless builder. Every other channel is a
stream of self-contained events: each frame becomes one event, nothing is held or sequenced.
"""

from __future__ import annotations

import datetime
import difflib
from collections.abc import Callable, Iterable, Sequence
from decimal import Decimal
from typing import Any, Final

import attrs

from backpack_actors.config import DEPTH_STREAMS
from backpack_actors.core.events import (
    BookTicker,
    Candle,
    Event,
    Liquidation,
    MarkPrice,
    OpenInterest,
    Side,
    Ticker,
)
from backpack_actors.core.symbols import MarketInfo
from backpack_actors.core.wire import (
    BookTickerEvent,
    Kline,
    KlineEvent,
    LiquidationEvent,
    MarkPriceEvent,
    OpenInterestEvent,
    TickerEvent,
)
from backpack_actors.core.wire import MarkPrice as RestMarkPrice
from backpack_actors.core.wire import OpenInterest as RestOpenInterest
from backpack_actors.core.wire import Ticker as RestTicker

__all__ = [
    "CANDLE_GRACE_S",
    "CANDLE_INTERVALS",
    "CANDLE_SECONDS",
    "CHANNELS",
    "DEPTH_STREAMS",
    "Channel",
    "ChannelError",
    "builders_for",
    "candle_grid",
    "channel_of",
    "global_streams",
    "interval_of",
    "kline_span_us",
    "parse_channel",
    "private_channels",
    "rest_candle",
    "rest_mark_price",
    "rest_open_interest",
    "rest_ticker",
    "streams_for",
]

CANDLE_INTERVALS: Final = (
    "1s",
    "1m",
    "3m",
    "5m",
    "15m",
    "30m",
    "1h",
    "2h",
    "4h",
    "6h",
    "8h",
    "12h",
    "1d",
    "3d",
    "1w",
    "1month",
)
"""Backpack's kline intervals (REST and WebSocket share them; docs/protocol.md §3)."""

CANDLE_SECONDS: Final = {
    "1s": 1,
    "1m": 60,
    "3m": 180,
    "5m": 300,
    "15m": 900,
    "30m": 1800,
    "1h": 3600,
    "2h": 7200,
    "4h": 14400,
    "6h": 21600,
    "8h": 28800,
    "12h": 43200,
    "1d": 86400,
    "3d": 259200,
    "1w": 604800,
    "1month": 2592000,
}
"""Each interval's length. For ``1s``..``1d`` (each divides a UTC day) it is also the grid
REST-only candle polls align to: buckets start at multiples of it since the Unix epoch
(:func:`candle_grid`). For ``3d``, ``1w`` and ``1month`` (30 days here) the exchange's alignment
is not documented (weeks may start on Mondays, months on the 1st): no grid is assumed, and the
candles' own ``start``/``end`` in the REST answers say where buckets begin and end
(docs/channels.md)."""

CANDLE_GRACE_S: Final = 2
"""Seconds after a candle's close before REST is asked for it, and the time a subscription is
allowed to take effect: trades printed at the very end of the bucket must have reached the
exchange's candles, and the local clock may be off the exchange's by that much."""


def candle_grid(interval: str) -> int | None:
    """The grid (s) ``interval``'s buckets start on — multiples since the Unix epoch — or None
    when the exchange's alignment is not known (``3d``, ``1w``, ``1month``)."""
    seconds = CANDLE_SECONDS[interval]
    return seconds if 86_400 % seconds == 0 else None


def kline_span_us(wire: Kline) -> tuple[int, int]:
    """A REST ``/klines`` item's start and close (µs)."""
    return _iso_us(wire.start), _iso_us(wire.end)


Builder = Callable[[Any, MarketInfo, int, int], Event]


class ChannelError(ValueError):
    """A channel name the registry does not know, or a bad parameter.

    ``expected`` says what is allowed (and the closest known name), for config errors.
    """

    def __init__(self, text: str, expected: str) -> None:
        super().__init__(f"{text!r}: expected {expected}")
        self.expected = expected


@attrs.frozen
class Channel:
    """One public channel; see the module docstring."""

    name: str
    stream: str
    """The stream name's prefix: ``<stream>.<symbol>`` (``<stream>`` alone when global)."""
    event_type: type | None
    wire_type: type | None
    json_type: str
    build: Builder | None = None
    perps_only: bool = False
    global_stream: bool = False
    """One stream for every market (``liquidation``); events of markets not in the feed are
    dropped."""
    parameter: tuple[str, ...] = ()
    """Allowed values of ``name:<value>`` (candle intervals); empty for plain channels."""
    rest_route: str | None = None
    description: str = ""
    private: bool = False
    """An account channel: signed, served by the private feed (``backpack_actors.private``), not
    by the public connections; it needs ``api_key``/``api_secret``."""


def _text(value: Decimal) -> str:
    # Wire decimals were bounds-checked when decoded (core/wire.py), so plain notation is short.
    return format(value, "f")


def _opt_text(value: Decimal | None) -> str | None:
    return None if value is None else _text(value)


def _iso_us(text: str) -> int:
    # Kline times are naive ISO strings in UTC ("2025-08-06T22:00:00"; REST uses a space).
    moment = datetime.datetime.fromisoformat(text.replace(" ", "T"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return int(moment.timestamp()) * 1_000_000 + moment.microsecond


_INTERVAL_SECONDS: Final = {
    60: "1m",
    180: "3m",
    300: "5m",
    900: "15m",
    1800: "30m",
    3600: "1h",
    7200: "2h",
    14400: "4h",
    21600: "6h",
    28800: "8h",
    43200: "12h",
    86400: "1d",
    259200: "3d",
    604800: "1w",
    1: "1s",
}


def interval_of(start_us: int, end_us: int) -> str:
    """A candle's interval name from its start and close times (a kline event does not say)."""
    seconds = (end_us - start_us) // 1_000_000
    if seconds in _INTERVAL_SECONDS:
        return _INTERVAL_SECONDS[seconds]
    if 28 * 86400 <= seconds <= 31 * 86400:
        return "1month"
    return f"{seconds}s"


def _book_ticker(
    wire: BookTickerEvent, info: MarketInfo, received_ns: int, mono: int
) -> BookTicker:
    return BookTicker(
        info.normalized,
        info.exchange_id,
        wire.update_id,
        _text(wire.bid_price),
        _text(wire.bid_quantity),
        _text(wire.ask_price),
        _text(wire.ask_quantity),
        wire.event_time,
        wire.engine_time,
        received_ns,
        mono,
    )


def _ticker(wire: TickerEvent, info: MarketInfo, received_ns: int, mono: int) -> Ticker:
    return Ticker(
        info.normalized,
        info.exchange_id,
        _text(wire.open),
        _text(wire.high),
        _text(wire.low),
        _text(wire.close),
        _text(wire.volume),
        _text(wire.quote_volume),
        wire.trade_count,
        wire.event_time,
        received_ns,
        mono,
    )


def _candle(wire: KlineEvent, info: MarketInfo, received_ns: int, mono: int) -> Candle:
    start, end = _iso_us(wire.start_time), _iso_us(wire.close_time)
    return Candle(
        info.normalized,
        info.exchange_id,
        interval_of(start, end),
        start,
        end,
        _text(wire.open),
        _text(wire.high),
        _text(wire.low),
        _text(wire.close),
        _text(wire.volume),
        wire.trade_count,
        wire.closed,
        wire.event_time,
        received_ns,
        mono,
    )


def _mark_price(wire: MarkPriceEvent, info: MarketInfo, received_ns: int, mono: int) -> MarkPrice:
    next_funding = wire.next_funding_time_ms
    return MarkPrice(
        info.normalized,
        info.exchange_id,
        _text(wire.mark_price),
        _opt_text(wire.index_price),
        _opt_text(wire.funding_rate),
        None if next_funding is None else next_funding * 1000,
        wire.event_time,
        wire.engine_time,
        received_ns,
        mono,
    )


def _open_interest(
    wire: OpenInterestEvent, info: MarketInfo, received_ns: int, mono: int
) -> OpenInterest:
    return OpenInterest(
        info.normalized,
        info.exchange_id,
        _text(wire.open_interest),
        wire.event_time,
        received_ns,
        mono,
    )


def rest_ticker(wire: RestTicker, info: MarketInfo, received_ns: int, mono: int) -> Ticker:
    """A ``/api/v1/tickers`` item as the ticker channel's event (REST-only mode).

    REST gives no emit time: ``event_time_us`` is the receipt time.
    """
    return Ticker(
        info.normalized,
        info.exchange_id,
        _text(wire.first_price),
        _text(wire.high),
        _text(wire.low),
        _text(wire.last_price),
        _text(wire.volume),
        _text(wire.quote_volume),
        wire.trades,
        received_ns // 1000,
        received_ns,
        mono,
    )


def rest_mark_price(
    wire: RestMarkPrice, info: MarketInfo, received_ns: int, mono: int
) -> MarkPrice:
    """A ``/api/v1/markPrices`` item (REST-only mode; its times are the receipt time)."""
    next_funding = wire.next_funding_timestamp
    return MarkPrice(
        info.normalized,
        info.exchange_id,
        _text(wire.mark_price),
        _opt_text(wire.index_price),
        _opt_text(wire.funding_rate),
        None if next_funding is None else next_funding * 1000,
        received_ns // 1000,
        received_ns // 1000,
        received_ns,
        mono,
    )


def rest_open_interest(
    wire: RestOpenInterest, info: MarketInfo, received_ns: int, mono: int
) -> OpenInterest | None:
    """A ``/api/v1/openInterest`` item (None when the exchange gives no value)."""
    if wire.open_interest is None:
        return None
    return OpenInterest(
        info.normalized,
        info.exchange_id,
        _text(wire.open_interest),
        wire.timestamp * 1000,
        received_ns,
        mono,
    )


def rest_candle(wire: Kline, info: MarketInfo, received_ns: int, mono: int) -> Candle | None:
    """A closed ``/api/v1/klines`` item (REST-only mode); None for a bucket without values.

    REST gives no emit time: ``event_time_us`` is the receipt time. Only candles the caller knows
    are over are given here, so ``closed`` is true.
    """
    o, h, lo, c, v = wire.open, wire.high, wire.low, wire.close, wire.volume
    if o is None or h is None or lo is None or c is None or v is None:
        return None
    start, end = _iso_us(wire.start), _iso_us(wire.end)
    return Candle(
        info.normalized,
        info.exchange_id,
        interval_of(start, end),
        start,
        end,
        _text(o),
        _text(h),
        _text(lo),
        _text(c),
        _text(v),
        wire.trades or 0,
        True,
        received_ns // 1000,
        received_ns,
        mono,
    )


def _liquidation(
    wire: LiquidationEvent, info: MarketInfo, received_ns: int, mono: int
) -> Liquidation:
    # "Bid": the liquidated position was closed by buying; docs/protocol.md §4.9.
    side = Side.BUY if wire.side.lower() == "bid" else Side.SELL
    return Liquidation(
        info.normalized,
        info.exchange_id,
        _text(wire.price),
        _text(wire.quantity),
        side,
        wire.event_time,
        wire.engine_time,
        received_ns,
        mono,
    )


_REGISTRY: Final = (
    Channel(
        "trades",
        "trade",
        None,
        None,
        "trade",
        rest_route="/api/v1/trades",
        description="every public trade, id-continuity checked (core/trades.py)",
    ),
    Channel(
        "l2_book",
        "depth",
        None,
        None,
        "book_delta",
        rest_route="/api/v1/depth",
        description="the exact L2 book: snapshots and bridged deltas (core/sync.py)",
    ),
    Channel(
        "book_ticker",
        "bookTicker",
        BookTicker,
        BookTickerEvent,
        "book_ticker",
        build=_book_ticker,
        description="best bid/ask with sizes and the book's update id",
    ),
    Channel(
        "ticker",
        "ticker",
        Ticker,
        TickerEvent,
        "ticker",
        build=_ticker,
        rest_route="/api/v1/ticker",
        description="24 h rolling open/high/low/last, volumes and trade count, every second",
    ),
    Channel(
        "candles",
        "kline",
        Candle,
        KlineEvent,
        "candle",
        build=_candle,
        parameter=CANDLE_INTERVALS,
        rest_route="/api/v1/klines",
        description="OHLCV candles of one interval (candles:1m); closed=true on the final one",
    ),
    Channel(
        "mark_price",
        "markPrice",
        MarkPrice,
        MarkPriceEvent,
        "mark_price",
        build=_mark_price,
        perps_only=True,
        rest_route="/api/v1/markPrices",
        description="mark and index price, estimated funding rate, next funding time (perps)",
    ),
    Channel(
        "open_interest",
        "openInterest",
        OpenInterest,
        OpenInterestEvent,
        "open_interest",
        build=_open_interest,
        perps_only=True,
        rest_route="/api/v1/openInterest",
        description="open interest in contracts, every 60 s (perps)",
    ),
    Channel(
        "liquidations",
        "liquidation",
        Liquidation,
        LiquidationEvent,
        "liquidation",
        build=_liquidation,
        global_stream=True,
        description="liquidations of the feed's markets (one stream for all markets)",
    ),
    Channel(
        "orders",
        "account.orderUpdate",
        None,
        None,
        "order_update",
        private=True,
        rest_route="/api/v1/orders",
        description="the account's order updates and fills, reconciled over REST after reconnects",
    ),
    Channel(
        "positions",
        "account.positionUpdate",
        None,
        None,
        "position_update",
        private=True,
        rest_route="/api/v1/position",
        description="the account's perp positions (and polled balances)",
    ),
)

CHANNELS: Final = {channel.name: channel for channel in _REGISTRY}
"""Every channel by name."""

_ALIASES: Final = {"liquidation": "liquidations", "candle": "candles", "kline": "candles"}


def _suggest(written: str) -> str:
    names = [c.name if not c.parameter else f"{c.name}:1m" for c in _REGISTRY]
    close = difflib.get_close_matches(written.lower(), names, n=1, cutoff=0.5)
    if not close:
        return ""
    # Answer in the user's style: cryptofeed configs write channel names in capitals.
    hint = close[0].upper() if written.isupper() else close[0]
    return f" (did you mean {hint!r}?)"


def parse_channel(text: str) -> str:
    """The canonical name of a channel as written by a user (any case; ``candles:<interval>``).

    Raises :class:`ChannelError` naming what is allowed and the closest known name.
    """
    written, _, value = text.strip().partition(":")
    name = _ALIASES.get(written.lower(), written.lower())
    channel = CHANNELS.get(name)
    if channel is None:
        known = ", ".join(c.name + (":<interval>" if c.parameter else "") for c in _REGISTRY)
        raise ChannelError(text, f"a channel: {known}{_suggest(written)}")
    if channel.parameter:
        if value not in channel.parameter:
            choices = " ".join(channel.parameter)
            raise ChannelError(text, f"{name}:<interval>, the interval one of {choices}")
        return f"{name}:{value}"
    if value:
        raise ChannelError(text, f"{name} alone (it takes no parameter)")
    return name


def channel_of(name: str) -> Channel:
    """The :class:`Channel` of a canonical name (``candles:1m`` → candles)."""
    return CHANNELS[name.partition(":")[0]]


def _applies(channel: Channel, info: MarketInfo) -> bool:
    return not channel.perps_only or info.market_type == "perp"


def streams_for(
    names: Iterable[str], info: MarketInfo, *, depth_stream: str = "realtime"
) -> list[str]:
    """The per-market streams of ``info`` for the configured channels, in a stable order."""
    streams: list[str] = []
    symbol = info.exchange_id
    for name in names:
        channel = channel_of(name)
        if channel.global_stream or channel.private or not _applies(channel, info):
            continue
        if channel.name == "l2_book" and depth_stream != "realtime":
            streams.append(f"depth.{depth_stream}.{symbol}")
        elif channel.parameter:
            streams.append(f"{channel.stream}.{name.partition(':')[2]}.{symbol}")
        else:
            streams.append(f"{channel.stream}.{symbol}")
    return streams


def global_streams(names: Iterable[str]) -> list[str]:
    """The streams carrying every market (subscribed once, on one connection)."""
    return [channel_of(n).stream for n in names if channel_of(n).global_stream]


def private_channels(names: Iterable[str]) -> tuple[str, ...]:
    """The account channels among ``names`` (served by the private feed)."""
    return tuple(n for n in names if channel_of(n).private)


def builders_for(names: Sequence[str]) -> dict[type, Builder]:
    """Wire type → event builder for the configured stateless channels."""
    out: dict[type, Builder] = {}
    for name in names:
        channel = channel_of(name)
        if channel.build is not None and channel.wire_type is not None:
            out[channel.wire_type] = channel.build
    return out
