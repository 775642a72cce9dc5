"""How events sit on the bus: stream keys, entry fields, and the payload codecs.

Per symbol there are two streams, ``{prefix}:book:{symbol}`` (book snapshots, deltas, and the
status events about books, in the feed's order) and ``{prefix}:trades:{symbol}`` (trades and the
status events about trades: ``trade_gap``, ``trades_backfilled``, ``trade_id_reset``,
``consumer_overflow``), plus ``{prefix}:channels:{symbol}`` for the symbol's other channels
(tickers, candles, mark prices, ...), and one ``{prefix}:status`` stream with a copy of every
status and protocol-error event. Every entry has two fields:

``m``  its metadata, five ASCII words separated by spaces:
       the publisher's fencing epoch for the symbol (an integer, increasing per handover);
       the entry's sequence number in its stream, counted by the publisher (1, 2, ...);
       ``e`` for a feed event or ``c`` for a checkpoint (a whole book the publisher wrote so a
       reader can start or resync there without a REST call);
       the payload codec, ``j`` (the JSON Lines object) or ``m`` (the same object as msgpack);
       the publisher's wall time at writing, integer microseconds (for lag and latency)
``d``  the payload: the event in the JSONL schema of :mod:`backpack_actors.sinks.jsonl`

(One metadata field instead of five: appending an entry costs about half as much.)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, NamedTuple

import msgspec

from backpack_actors.core.events import (
    BookDelta,
    BookSnapshot,
    Event,
    ProtocolErrorEvent,
    StatusEvent,
    StatusKind,
    Trade,
)
from backpack_actors.sinks.jsonl import EVENT_TYPES, event_to_dict

__all__ = [
    "TRADE_STATUS_KINDS",
    "Codec",
    "Keys",
    "Meta",
    "decode_payload",
    "encode_meta",
    "encode_payload",
    "is_resync_point",
    "parse_meta",
]

Codec = Literal["json", "msgpack"]

TRADE_STATUS_KINDS = frozenset(
    {
        StatusKind.TRADE_GAP,
        StatusKind.TRADES_BACKFILLED,
        StatusKind.TRADE_ID_RESET,
        StatusKind.CONSUMER_OVERFLOW,
    }
)
"""Status kinds that travel in a symbol's trade stream (in order with its trades)."""

_CLASSES: dict[str, type] = {name: cls for cls, name in EVENT_TYPES.items()}
_RAW_NAMES: dict[type, dict[str, str]] = {}
_json_encoder = msgspec.json.Encoder()
_msgpack_encoder = msgspec.msgpack.Encoder()
_json_decoder = msgspec.json.Decoder(dict[str, Any])
_msgpack_decoder = msgspec.msgpack.Decoder(dict[str, Any])


class Keys:
    """The Redis key names under one prefix (tests and deployments each use their own)."""

    __slots__ = ("prefix",)

    def __init__(self, prefix: str = "bpa") -> None:
        self.prefix = prefix

    def book(self, symbol: str) -> str:
        return f"{self.prefix}:book:{symbol}"

    def trades(self, symbol: str) -> str:
        return f"{self.prefix}:trades:{symbol}"

    @property
    def status(self) -> str:
        return f"{self.prefix}:status"

    def channels(self, symbol: str) -> str:
        """The symbol's other channels (tickers, candles, mark prices, ...), in order."""
        return f"{self.prefix}:channels:{symbol}"

    def lease(self, symbol: str) -> str:
        return f"{self.prefix}:lease:{symbol}"

    def epoch(self, symbol: str) -> str:
        return f"{self.prefix}:epoch:{symbol}"

    @property
    def publishers(self) -> str:
        """Sorted set: publisher id -> its registration's expiry (ms since the epoch)."""
        return f"{self.prefix}:publishers"

    @property
    def readers(self) -> str:
        """Hash: reader name -> its last reported position (JSON)."""
        return f"{self.prefix}:readers"

    @property
    def symbols(self) -> str:
        """Set of the symbols the publishers share."""
        return f"{self.prefix}:symbols"

    def stream_of(self, event: Event) -> str | None:
        """The per-symbol stream an event belongs to (None: only the status stream)."""
        if isinstance(event, Trade):
            return self.trades(event.symbol)
        if isinstance(event, (BookSnapshot, BookDelta)):
            return self.book(event.symbol)
        if isinstance(event, StatusEvent) and event.symbol:
            if event.kind in TRADE_STATUS_KINDS:
                return self.trades(event.symbol)
            return self.book(event.symbol)
        if isinstance(event, ProtocolErrorEvent) or not getattr(event, "symbol", ""):
            return None
        return self.channels(event.symbol)


def encode_payload(event: Event, codec: Codec) -> bytes:
    """The event as its JSONL object, encoded with ``codec`` (no trailing newline)."""
    body = event_to_dict(event)
    if codec == "msgpack":
        return _msgpack_encoder.encode(body)
    return _json_encoder.encode(body)


def _raw_names(cls: type) -> dict[str, str]:
    """Schema name -> field name: the JSONL schema drops the ``raw_`` of the text fields."""
    names = _RAW_NAMES.get(cls)
    if names is None:
        fields: tuple[str, ...] = getattr(cls, "__struct_fields__", ())
        names = _RAW_NAMES[cls] = {f[4:]: f for f in fields if f.startswith("raw_")}
    return names


def decode_payload(data: bytes, codec: bytes | str) -> Event:
    """The event of an entry's ``d`` field; ``msgspec.ValidationError`` when it is not one."""
    body = _msgpack_decoder.decode(data) if codec in (b"m", "m") else _json_decoder.decode(data)
    cls = _CLASSES.get(body.pop("type", None))
    if cls is None:
        raise msgspec.ValidationError("not an event: unknown or missing type")
    names = _raw_names(cls)
    fields = {names.get(key, key): value for key, value in body.items()}
    event: Event = msgspec.convert(fields, cls)
    return event


class Meta(NamedTuple):
    """An entry's ``m`` field."""

    epoch: int
    seq: int
    kind: bytes
    codec: bytes
    written_us: int


def encode_meta(epoch: int, seq: int, kind: bytes, codec: bytes, written_us: int) -> bytes:
    return b"%d %d %s %s %d" % (epoch, seq, kind, codec, written_us)


def parse_meta(fields: Mapping[bytes, bytes]) -> Meta:
    """The entry's metadata; ``ValueError``/``KeyError`` when it has none that parses."""
    epoch, seq, kind, codec, written = fields[b"m"].split(b" ")
    return Meta(int(epoch), int(seq), kind, codec, int(written))


def is_resync_point(kind: bytes | str, event: Event) -> bool:
    """A checkpoint, or a book snapshot the feed published: a reader can (re)start there."""
    return kind in (b"c", "c") or isinstance(event, BookSnapshot)
