"""Events as column rows: one row per trade, per book level changed, per snapshot level (books and
interval snapshots alike), per status.

This module needs no pyarrow: it turns events into plain per-column lists grouped by partition
(channel, symbol, UTC date), which the Parquet writers turn into Arrow tables. Prices and sizes
stay the exchange's text here; :func:`fits` decides whether a text is exact at a column's decimal
scale (else the row keeps it in the ``*_text`` column instead).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any, Final, get_type_hints

import msgspec

from backpack_actors.core.events import (
    BookDelta,
    BookSnapshot,
    BookTicker,
    Candle,
    Event,
    IntervalSnapshot,
    Liquidation,
    MarkPrice,
    OpenInterest,
    ProtocolErrorEvent,
    Side,
    StatusEvent,
    Ticker,
    Trade,
)

__all__ = [
    "CHANNELS",
    "COLUMNS",
    "GENERIC",
    "GENERIC_KINDS",
    "GENERIC_SCALE",
    "PRECISION",
    "UNATTRIBUTED",
    "Columns",
    "PartitionKey",
    "Partitioner",
    "at_ns",
    "fits",
    "partition_of",
    "received_at_ns",
    "seconds_to_ns",
    "utc_date",
]

CHANNELS: Final = (
    "trades",
    "book",
    "interval_snapshots",
    "status",
    "book_ticker",
    "ticker",
    "candles",
    "mark_price",
    "open_interest",
    "liquidations",
)
"""The datasets an export writes: trades, book levels (snapshots and deltas), the top-N views of
``book_snapshots`` (:class:`IntervalSnapshot`), status news, and one per stateless channel."""

PRECISION: Final = 38
"""Digits of every decimal column (decimal128's maximum)."""

UNATTRIBUTED: Final = "_unattributed"
"""The symbol partition of a protocol error no market can be blamed for (``symbol`` ``""``)."""

PartitionKey = tuple[str, str, str]
"""``(channel, symbol, date)``: one Parquet file (or, in the live sink, one per hour)."""

_ENCODER = msgspec.json.Encoder(order="sorted")


def seconds_to_ns(seconds: float) -> int:
    """Float seconds as integer ns through the float's shortest decimal (``0.15`` -> exact)."""
    return int(Decimal(repr(seconds)).scaleb(9).to_integral_value(ROUND_HALF_EVEN))


def received_at_ns(event: Trade | BookSnapshot | BookDelta | IntervalSnapshot) -> int:
    """The receipt time in integer ns: ``received_at_ns`` where events carry it, else converted."""
    ns = getattr(event, "received_at_ns", None)
    if isinstance(ns, int):
        return ns
    return seconds_to_ns(event.received_at)


def at_ns(event: StatusEvent | ProtocolErrorEvent) -> int:
    """A status or error's local time in integer ns (``at_ns`` where carried, else converted)."""
    ns = getattr(event, "at_ns", None)
    if isinstance(ns, int):
        return ns
    return seconds_to_ns(event.at)


def utc_date(us: int) -> str:
    """``YYYY-MM-DD`` (UTC) of a time in µs."""
    return (dt.datetime(1970, 1, 1) + dt.timedelta(microseconds=us)).date().isoformat()


def fits(text: str, scale: int) -> bool:
    """True when ``text`` is plain ``[-]digits[.digits]`` exact at ``scale`` in
    :data:`PRECISION` (a funding rate may be negative)."""
    whole, _, fraction = text.removeprefix("-").partition(".")
    return (
        len(fraction) <= scale
        and 0 < len(whole) <= PRECISION - scale
        and whole.isascii()
        and whole.isdigit()
        and (not fraction or (fraction.isascii() and fraction.isdigit()))
    )


def _split(text: str | None, scale: int) -> tuple[str | None, str | None]:
    """An optional decimal as ``(decimal column, text column)``: exact at ``scale`` goes in the
    first, anything else in the second; None leaves both empty."""
    if text is None:
        return None, None
    return (text, None) if fits(text, scale) else (None, text)


_TRADE = (
    "seq",
    "exchange_symbol",
    "trade_id",
    "price",
    "amount",
    "price_text",
    "amount_text",
    "side",
    "event_time_us",
    "engine_time_us",
    "received_at_ns",
    "backfilled",
)
_BOOK = (
    "seq",
    "exchange_symbol",
    "is_snapshot",
    "side",
    "price",
    "size",
    "price_text",
    "size_text",
    "first_update_id",
    "update_id",
    "event_time_us",
    "engine_time_us",
    "received_at_ns",
    "reason",
)
_INTERVAL = (
    "seq",
    "exchange_symbol",
    "side",
    "level",
    "price",
    "size",
    "price_text",
    "size_text",
    "update_id",
    "engine_time_us",
    "received_at_ns",
    "depth",
    "valid_bid_floor",
    "valid_ask_ceiling",
    "valid_bid_floor_text",
    "valid_ask_ceiling_text",
)
_STATUS = ("seq", "kind", "reason", "stream", "excerpt", "counts", "at_ns")

GENERIC_SCALE: Final = 18
"""Decimal places of the stateless channels' decimal columns (rates, volumes, prices alike)."""

GENERIC: Final[dict[type, str]] = {
    BookTicker: "book_ticker",
    Ticker: "ticker",
    Candle: "candles",
    MarkPrice: "mark_price",
    OpenInterest: "open_interest",
    Liquidation: "liquidations",
}
"""The stateless channels' events and their datasets (named as the feed's channels)."""

_SKIPPED_FIELDS = ("symbol", "received_mono_ns")


def _kinds(cls: type) -> list[tuple[str, str, str]]:
    """``(field, column, kind)`` per field; kind: decimal, dict, text, int or bool."""
    hints = get_type_hints(cls)
    out = []
    for name in cls.__struct_fields__:  # type: ignore[attr-defined]
        if name in _SKIPPED_FIELDS:
            continue
        hint = hints[name]
        if name.startswith("raw_"):
            out.append((name, name.removeprefix("raw_"), "decimal"))
        elif hint is Side or name in ("exchange_symbol", "interval"):
            out.append((name, name, "dict"))
        elif hint is bool:
            out.append((name, name, "bool"))
        elif hint is str:
            out.append((name, name, "text"))
        else:
            out.append((name, name, "int"))
    return out


GENERIC_KINDS: Final[dict[str, list[tuple[str, str, str]]]] = {
    channel: _kinds(cls) for cls, channel in GENERIC.items()
}
"""Each stateless channel's fields: ``(event field, column, kind)``."""


def _generic_columns(channel: str) -> tuple[str, ...]:
    names = ["seq"]
    for _field, column, kind in GENERIC_KINDS[channel]:
        names.append(column)
        if kind == "decimal":
            names.append(f"{column}_text")
    return tuple(names)


COLUMNS: Final[dict[str, tuple[str, ...]]] = {
    "trades": _TRADE,
    "book": _BOOK,
    "interval_snapshots": _INTERVAL,
    "status": _STATUS,
    **{channel: _generic_columns(channel) for channel in GENERIC_KINDS},
}
"""Every dataset's columns, in file order."""


class Columns:
    """One partition's rows so far, column by column (prices as text; None where absent)."""

    __slots__ = ("channel", "data", "price_scale", "size_scale")

    def __init__(self, channel: str, price_scale: int, size_scale: int) -> None:
        self.channel = channel
        self.price_scale = price_scale
        self.size_scale = size_scale
        self.data: dict[str, list[Any]] = {name: [] for name in COLUMNS[channel]}

    def __len__(self) -> int:
        return len(self.data["seq"])

    def take(self) -> dict[str, list[Any]]:
        """The rows so far; the buffer starts empty again."""
        data = self.data
        self.data = {name: [] for name in COLUMNS[self.channel]}
        return data

    def _decimal(self, text: str, scale: int, exact: list[Any], spill: list[Any]) -> None:
        if fits(text, scale):
            exact.append(text)
            spill.append(None)
        else:
            exact.append(None)
            spill.append(text)

    def add_trade(self, seq: int, trade: Trade) -> None:
        d = self.data
        d["seq"].append(seq)
        d["exchange_symbol"].append(trade.exchange_symbol)
        d["trade_id"].append(trade.trade_id)
        self._decimal(trade.raw_price, self.price_scale, d["price"], d["price_text"])
        self._decimal(trade.raw_amount, self.size_scale, d["amount"], d["amount_text"])
        d["side"].append(trade.side.value)
        d["event_time_us"].append(trade.event_time_us)
        d["engine_time_us"].append(trade.engine_time_us)
        d["received_at_ns"].append(received_at_ns(trade))
        d["backfilled"].append(trade.backfilled)

    def add_book(self, seq: int, event: BookSnapshot | BookDelta) -> None:
        d = self.data
        snapshot = isinstance(event, BookSnapshot)
        if isinstance(event, BookSnapshot):
            first: int | None = None
            last = event.update_id
            emitted: int | None = None
            reason: str | None = event.reason
        else:
            first, last = event.first_update_id, event.last_update_id
            emitted = event.event_time_us
            reason = None
        received = received_at_ns(event)
        price_scale, size_scale = self.price_scale, self.size_scale
        for side, levels in (("bid", event.raw_bids), ("ask", event.raw_asks)):
            for price, size in levels:
                d["seq"].append(seq)
                d["exchange_symbol"].append(event.exchange_symbol)
                d["is_snapshot"].append(snapshot)
                d["side"].append(side)
                self._decimal(price, price_scale, d["price"], d["price_text"])
                self._decimal(size, size_scale, d["size"], d["size_text"])
                d["first_update_id"].append(first)
                d["update_id"].append(last)
                d["event_time_us"].append(emitted)
                d["engine_time_us"].append(event.engine_time_us)
                d["received_at_ns"].append(received)
                d["reason"].append(reason)

    def add_interval(self, seq: int, event: IntervalSnapshot) -> None:
        """One row per level of the view; ``level`` is its rank on its side (0 = best)."""
        d = self.data
        received = received_at_ns(event)
        price_scale, size_scale = self.price_scale, self.size_scale
        floor, floor_text = _split(event.valid_bid_floor, price_scale)
        ceiling, ceiling_text = _split(event.valid_ask_ceiling, price_scale)
        for side, levels in (("bid", event.raw_bids), ("ask", event.raw_asks)):
            for rank, (price, size) in enumerate(levels):
                d["seq"].append(seq)
                d["exchange_symbol"].append(event.exchange_symbol)
                d["side"].append(side)
                d["level"].append(rank)
                self._decimal(price, price_scale, d["price"], d["price_text"])
                self._decimal(size, size_scale, d["size"], d["size_text"])
                d["update_id"].append(event.update_id)
                d["engine_time_us"].append(event.engine_time_us)
                d["received_at_ns"].append(received)
                d["depth"].append(event.depth)
                d["valid_bid_floor"].append(floor)
                d["valid_ask_ceiling"].append(ceiling)
                d["valid_bid_floor_text"].append(floor_text)
                d["valid_ask_ceiling_text"].append(ceiling_text)

    def add_generic(self, seq: int, event: Event) -> None:
        d = self.data
        d["seq"].append(seq)
        for field, column, kind in GENERIC_KINDS[self.channel]:
            value = getattr(event, field)
            if kind == "decimal":
                if value is None:
                    d[column].append(None)
                    d[f"{column}_text"].append(None)
                else:
                    self._decimal(value, GENERIC_SCALE, d[column], d[f"{column}_text"])
            elif kind == "dict" and isinstance(value, Side):
                d[column].append(value.value)
            else:
                d[column].append(value)

    def add_status(self, seq: int, event: StatusEvent | ProtocolErrorEvent) -> None:
        d = self.data
        d["seq"].append(seq)
        d["reason"].append(event.reason)
        d["at_ns"].append(at_ns(event))
        if isinstance(event, StatusEvent):
            d["kind"].append(event.kind.value)
            d["stream"].append(None)
            d["excerpt"].append(None)
            d["counts"].append(_ENCODER.encode(event.counts).decode())
        else:
            d["kind"].append("protocol_error")
            d["stream"].append(event.stream)
            d["excerpt"].append(event.excerpt)
            d["counts"].append(_ENCODER.encode({"count": event.count}).decode())


def partition_of(event: Event) -> PartitionKey | None:
    """The channel, symbol and UTC date an event's rows belong to; None for other event types.

    The date is the exchange's time (engine time — an interval snapshot's is its boundary — else
    for snapshots without one the receipt time); for status news it is the local time.
    """
    if isinstance(event, Trade):
        return "trades", event.symbol, utc_date(event.engine_time_us)
    if isinstance(event, BookDelta):
        return "book", event.symbol, utc_date(event.engine_time_us)
    if isinstance(event, BookSnapshot):
        us = event.engine_time_us
        if us is None:
            us = received_at_ns(event) // 1000
        return "book", event.symbol, utc_date(us)
    if isinstance(event, IntervalSnapshot):
        return "interval_snapshots", event.symbol, utc_date(event.engine_time_us)
    if isinstance(event, StatusEvent | ProtocolErrorEvent):
        return "status", event.symbol or UNATTRIBUTED, utc_date(at_ns(event) // 1000)
    channel = GENERIC.get(type(event))
    if channel is None:
        return None
    engine = getattr(event, "engine_time_us", None)
    us = engine if isinstance(engine, int) else int(getattr(event, "event_time_us", 0))
    return channel, event.symbol, utc_date(us)


class Partitioner:
    """Routes events to per-partition :class:`Columns`, numbering them in order (``seq``)."""

    def __init__(
        self,
        price_scale: int,
        size_scale: int,
        *,
        first_seq: int = 0,
        key: Callable[[Event], PartitionKey | None] | None = None,
    ) -> None:
        self._key = key if key is not None else partition_of
        self.price_scale = price_scale
        self.size_scale = size_scale
        self.seq = first_seq
        self.parts: dict[PartitionKey, Columns] = {}
        self.skipped = 0
        """Events of types without a dataset (every public event type has one; a key function
        may leave some out)."""

    def columns(self, key: PartitionKey) -> Columns:
        part = self.parts.get(key)
        if part is None:
            part = self.parts[key] = Columns(key[0], self.price_scale, self.size_scale)
        return part

    def add(self, events: Iterable[Event]) -> list[PartitionKey]:
        """Add events; returns the partitions that received rows (in first-touched order)."""
        touched: dict[PartitionKey, None] = {}
        for event in events:
            key = self._key(event)
            if key is None:
                self.skipped += 1
                self.seq += 1
                continue
            part = self.columns(key)
            if isinstance(event, Trade):
                part.add_trade(self.seq, event)
            elif isinstance(event, BookSnapshot | BookDelta):
                part.add_book(self.seq, event)
            elif isinstance(event, IntervalSnapshot):
                part.add_interval(self.seq, event)
            elif isinstance(event, StatusEvent | ProtocolErrorEvent):
                part.add_status(self.seq, event)
            else:
                part.add_generic(self.seq, event)
            touched[key] = None
            self.seq += 1
        return list(touched)
