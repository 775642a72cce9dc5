"""Events as JSON Lines: one object per event, ``"type"`` first, exact decimals as strings.

Schema (every event type's fields, as msgspec encodes them)::

    {"type": "trade", "symbol", "exchange_symbol", "trade_id", "price", "amount", "side",
     "event_time_us", "engine_time_us", "received_at", "backfilled"}
    {"type": "book_snapshot", "symbol", "exchange_symbol", "update_id", "bids", "asks",
     "engine_time_us", "received_at", "reason", "force"}
    {"type": "book_delta", "symbol", "exchange_symbol", "first_update_id", "last_update_id",
     "bids", "asks", "event_time_us", "engine_time_us", "received_at"}
    {"type": "status", "symbol", "kind", "reason", "counts", "at"}
    {"type": "protocol_error", "symbol", "stream", "reason", "excerpt", "count", "at"}

Prices and sizes are decimal strings (``"106815.5"``), levels ``[price, size]`` pairs best first;
``*_us`` fields are integer microseconds; ``received_at``/``at`` are local float seconds.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import IO, Any

import msgspec

from backpack_actors.core.events import (
    BookDelta,
    BookSnapshot,
    Event,
    ProtocolErrorEvent,
    StatusEvent,
    Trade,
)

__all__ = ["EVENT_TYPES", "JsonlSink", "encode_event", "event_to_dict"]

EVENT_TYPES: dict[type, str] = {
    Trade: "trade",
    BookSnapshot: "book_snapshot",
    BookDelta: "book_delta",
    StatusEvent: "status",
    ProtocolErrorEvent: "protocol_error",
}
"""The ``"type"`` value of each event class."""

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
        body[_SCHEMA_NAMES.get(key, key)] = value
    if book_depth > 0 and isinstance(event, BookSnapshot):
        body["bids"] = body["bids"][:book_depth]
        body["asks"] = body["asks"][:book_depth]
    return body


def encode_event(event: Event, *, book_depth: int = 0) -> bytes:
    """One JSON line (with its trailing newline)."""
    return _encoder.encode(event_to_dict(event, book_depth=book_depth)) + b"\n"


class JsonlSink:
    """Writes batches of events as whole lines and flushes after each batch.

    A batch is joined into one buffer and written with one ``write`` call on a binary stream
    opened for appending, so a reader (or a process killed between batches) never sees a torn
    line.
    """

    def __init__(self, stream: IO[bytes], *, book_depth: int = 0, owned: bool = False) -> None:
        self._stream = stream
        self._book_depth = book_depth
        self._owned = owned
        self.events = 0
        self.batches = 0

    @classmethod
    def open(cls, path: str, *, book_depth: int = 0) -> JsonlSink:
        """Append to ``path`` (created if missing)."""
        return cls(open(path, "ab"), book_depth=book_depth, owned=True)

    def write(self, events: Iterable[Event]) -> int:
        """Write one batch; returns the number of events written."""
        depth = self._book_depth
        lines = [encode_event(event, book_depth=depth) for event in events]
        if not lines:
            return 0
        self._stream.write(b"".join(lines))
        self._stream.flush()
        self.events += len(lines)
        self.batches += 1
        return len(lines)

    def close(self) -> None:
        """Flush, and close the file when this sink opened it."""
        try:
            self._stream.flush()
        finally:
            if self._owned:
                self._stream.close()
