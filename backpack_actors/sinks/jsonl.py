"""Events as JSON Lines: one object per event, ``"type"`` first, exact decimals as strings.

Schema (every event type's fields, as msgspec encodes them; ``rx`` stands for the receipt
stamps ``"received_at_ns", "received_mono_ns"``)::

    {"type": "trade", "symbol", "exchange_symbol", "trade_id", "price", "amount", "side",
     "event_time_us", "engine_time_us", "received_at_ns", "backfilled", "received_mono_ns"}
    {"type": "book_snapshot", "symbol", "exchange_symbol", "update_id", "bids", "asks",
     "engine_time_us", "received_at_ns", "reason", "force", "age_us", "received_mono_ns"}
    {"type": "book_delta", "symbol", "exchange_symbol", "first_update_id", "last_update_id",
     "bids", "asks", "event_time_us", "engine_time_us", rx}
    {"type": "status", "symbol", "kind", "reason", "counts", "at"}
    {"type": "protocol_error", "symbol", "stream", "reason", "excerpt", "count", "at"}
    {"type": "book_ticker", "symbol", "exchange_symbol", "update_id", "bid_price", "bid_size",
     "ask_price", "ask_size", "event_time_us", "engine_time_us", rx}
    {"type": "ticker", "symbol", "exchange_symbol", "open", "high", "low", "last", "volume",
     "quote_volume", "trade_count", "event_time_us", rx}
    {"type": "candle", "symbol", "exchange_symbol", "interval", "start_us", "end_us", "open",
     "high", "low", "close", "volume", "trade_count", "closed", "event_time_us", rx}
    {"type": "mark_price", "symbol", "exchange_symbol", "mark_price", "index_price",
     "funding_rate", "next_funding_time_us", "event_time_us", "engine_time_us", rx}
    {"type": "open_interest", "symbol", "exchange_symbol", "open_interest", "event_time_us", rx}
    {"type": "liquidation", "symbol", "exchange_symbol", "price", "amount", "side",
     "event_time_us", "engine_time_us", rx}

Prices and sizes are decimal strings (``"106815.5"``), levels ``[price, size]`` pairs best first;
``*_us`` fields are integer microseconds; ``received_at_ns``/``received_mono_ns`` are integer
nanoseconds on the wall and monotonic clocks (schema version 2; version 1 had a float
``received_at`` in seconds); a status or protocol error's ``at`` is local float seconds.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import IO, Any

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
    StatusEvent,
    Ticker,
    Trade,
)

__all__ = ["EVENT_TYPES", "SCHEMA_VERSION", "JsonlSink", "encode_event", "event_to_dict"]

SCHEMA_VERSION = 2
"""The JSON Lines schema: 2 = integer-ns receipt stamps and the channel events (docs/events.md)."""

EVENT_TYPES: dict[type, str] = {
    Trade: "trade",
    BookSnapshot: "book_snapshot",
    BookDelta: "book_delta",
    StatusEvent: "status",
    ProtocolErrorEvent: "protocol_error",
    BookTicker: "book_ticker",
    Ticker: "ticker",
    Candle: "candle",
    MarkPrice: "mark_price",
    OpenInterest: "open_interest",
    Liquidation: "liquidation",
    IntervalSnapshot: "interval_snapshot",
}
"""The ``"type"`` value of each event class."""

try:
    # The account channels' events, when the [private] extra is installed.
    from backpack_actors.private.jsonl import PRIVATE_EVENT_TYPES
except ImportError:  # pragma: no cover - depends on the installed extras
    PRIVATE_EVENT_TYPES = {}
EVENT_TYPES.update({k: v for k, v in PRIVATE_EVENT_TYPES.items() if k not in EVENT_TYPES})

_encoder = msgspec.json.Encoder()

# Events hold the exchange's text in ``raw_*`` fields; the schema names them by their meaning, and
# the text is written as received (it is the exact decimal, scale included).
_SCHEMA_NAMES: dict[str, str] = {
    "raw_price": "price",
    "raw_amount": "amount",
    "raw_bids": "bids",
    "raw_asks": "asks",
}


def event_to_dict(event: Event, *, book_depth: int = 0) -> dict[str, Any]:
    """The JSON object of one event; ``book_depth`` > 0 trims snapshot sides to that many levels."""
    body: dict[str, Any] = {"type": EVENT_TYPES[type(event)]}
    # to_builtins renders enums as their values; the rename keeps the fields' order.
    for key, value in msgspec.to_builtins(event).items():
        body[_SCHEMA_NAMES.get(key) or (key[4:] if key.startswith("raw_") else key)] = value
    if book_depth > 0 and isinstance(event, BookSnapshot):
        body["bids"] = body["bids"][:book_depth]
        body["asks"] = body["asks"][:book_depth]
    return body


def encode_event(event: Event, *, book_depth: int = 0) -> bytes:
    """One JSON line (with its trailing newline)."""
    return _encoder.encode(event_to_dict(event, book_depth=book_depth)) + b"\n"


class JsonlSink:
    """Writes batches of events as whole lines; the :class:`~backpack_actors.sinks.Sink` for
    JSON Lines, to a file (appended) or to a file descriptor such as stdout.

    A batch is encoded into one buffer and written with ``os.write`` calls on the descriptor (a
    reader, or a process killed between batches, never sees a torn line). Writing to the
    descriptor directly, not through ``sys.stdout``'s buffer, matters when the pipe stalls: a
    write abandoned in its worker thread holds no Python lock that interpreter shutdown would wait
    for. ``by_type`` counts the events written per JSONL ``type``.
    """

    name = "jsonl"

    def __init__(
        self, stream: IO[bytes] | int, *, book_depth: int = 0, owned: bool = False
    ) -> None:
        if isinstance(stream, int):
            self._fd: int | None = stream
            self._stream: IO[bytes] | None = None
        else:
            self._fd = None
            self._stream = stream
        self._book_depth = book_depth
        self._owned = owned
        self.events = 0
        self.batches = 0
        self.by_type: dict[str, int] = dict.fromkeys(EVENT_TYPES.values(), 0)

    @classmethod
    def open(cls, path: str, *, book_depth: int = 0) -> JsonlSink:
        """Append to ``path`` (created if missing)."""
        return cls(open(path, "ab"), book_depth=book_depth, owned=True)

    @classmethod
    def stdout(cls, *, book_depth: int = 0) -> JsonlSink:
        """Write to (a duplicate of) the process's standard output descriptor."""
        import sys

        sys.stdout.flush()
        return cls(os.dup(sys.stdout.fileno()), book_depth=book_depth, owned=True)

    def write(self, events: Iterable[Event]) -> int:
        """Write one batch; returns the number of events written."""
        depth = self._book_depth
        by_type = self.by_type
        lines = []
        for event in events:
            lines.append(encode_event(event, book_depth=depth))
            by_type[EVENT_TYPES[type(event)]] += 1
        if not lines:
            return 0
        data = b"".join(lines)
        if self._fd is not None:
            view = memoryview(data)
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
        else:
            assert self._stream is not None
            self._stream.write(data)
            self._stream.flush()
        self.events += len(lines)
        self.batches += 1
        return len(lines)

    def close(self) -> None:
        """Flush, and close what this sink opened."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            if self._owned:
                os.close(fd)
            return
        if self._stream is None:
            return
        stream, self._stream = self._stream, None
        try:
            stream.flush()
        finally:
            if self._owned:
                stream.close()
