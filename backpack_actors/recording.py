"""Record a feed's reconciler inbox to JSON Lines and replay it into identical events.

The reconciler's inbox is the total order of everything that shapes the events, so a recording is
that inbox: one line per message (raw WebSocket frame texts, REST bodies re-encoded exactly with
Decimals as strings, stream news, frame errors) with the reconciler's wall time when it handled the
message, after a header line with the markets and the reconciler settings. Replaying re-decodes
the raw frames with :func:`~backpack_actors.core.wire.decode_ws_frame` and drives a fresh
:class:`~backpack_actors.actors.reconciler.Reconciler` whose wall clock returns the recorded times,
so it emits exactly the events the recorded reconciler emitted.

While recording, the reconciler's wall clock is latched once per message (every event built while
handling a message carries that message's recorded time), which is what makes replay exact.
Replay reproduces what the reconciler emitted: identical to what the consumer received unless the
consumer fell behind and its queue conflated books or dropped trades.

A ``.gz`` suffix selects gzip for both writing and reading.
"""

from __future__ import annotations

import gzip
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Literal, cast

import msgspec
import trio

from backpack_actors.actors.connection import decode_read
from backpack_actors.actors.messages import (
    BackfillDone,
    CandlePoll,
    FrameBatch,
    FrameError,
    InboxMessage,
    RestChannels,
    RestTrades,
    SnapshotFailed,
    SnapshotReady,
    StreamNews,
    StreamStarted,
    SymbolAdded,
    SymbolRemoved,
)
from backpack_actors.actors.reconciler import Reconciler
from backpack_actors.core.events import Event, StatusKind
from backpack_actors.core.symbols import MarketInfo
from backpack_actors.core.wire import (
    DepthSnapshotText,
    MarketData,
    MarkPrice,
    OpenInterest,
    RestTrade,
    Ticker,
)
from backpack_actors.errors import ProtocolError

if TYPE_CHECKING:
    from backpack_actors.config import FeedConfig

__all__ = [
    "FORMAT_VERSION",
    "BackfillRecord",
    "BinaryFrame",
    "FrameErrorRecord",
    "FramesRecord",
    "NewsRecord",
    "Pace",
    "ReconcilerSettings",
    "ReconcilerStartedRecord",
    "RecordLine",
    "Recorder",
    "Recording",
    "RecordingHeader",
    "RestChannelsRecord",
    "RestTradesRecord",
    "SnapshotFailedRecord",
    "SnapshotRecord",
    "StreamStartedRecord",
    "SymbolAddedRecord",
    "SymbolRemovedRecord",
    "load_recording",
    "replay_batches",
    "replay_events",
    "replay_iter",
]

FORMAT_VERSION = 2
"""2: receipt stamps as integer ns (wall and monotonic); 1 (float seconds) is still read."""
_READABLE_VERSIONS = (1, 2)
Pace = Literal["fast", "recorded"]


# --- the file format ---------------------------------------------------------------------------


class BinaryFrame(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A binary WebSocket message (base64 in JSON)."""

    b: bytes


class ReconcilerSettings(msgspec.Struct, frozen=True):
    """What the reconciler was built with."""

    book_depth: int
    trades: bool
    books: bool
    # The stateless channels published (backpack_actors.channels); older recordings had none.
    channels: tuple[str, ...] = ()
    # Interval snapshots (depth, interval_ms) and the REST snapshot side cap (valid window).
    book_snapshots: tuple[int, int] | None = None
    snapshot_side_levels: int = 1000
    depth_stream: str = "realtime"


class RecordingHeader(msgspec.Struct, frozen=True, tag="header", tag_field="kind"):
    """The first line: format version, the feed's symbols and markets, reconciler settings."""

    version: int
    symbols: list[str]
    markets: list[MarketInfo]
    settings: ReconcilerSettings
    source: dict[str, str]
    now: float


class ReconcilerStartedRecord(
    msgspec.Struct, frozen=True, tag="reconciler_started", tag_field="kind"
):
    """The feed restarted its reconciler: replay starts a fresh one too."""

    markets: list[MarketInfo]
    now: float


class StreamStartedRecord(msgspec.Struct, frozen=True, tag="stream_started", tag_field="kind"):
    """A new connection or REST poller (:class:`StreamStarted`)."""

    symbol: str
    epoch: int
    mode: Literal["ws", "rest"]
    now: float


class FramesRecord(msgspec.Struct, frozen=True, tag="frames", tag_field="kind", omit_defaults=True):
    """One socket read (:class:`FrameBatch`): its raw texts, re-decoded on replay."""

    symbol: str
    epoch: int
    raw: list[str | BinaryFrame]
    now: float
    received_ns: int = 0
    mono_ns: int = 0
    # Format 1 stored float seconds; read for old recordings only (never written).
    received_at: float | None = None


class FrameErrorRecord(msgspec.Struct, frozen=True, tag="frame_error", tag_field="kind"):
    """An undecodable frame as the stream actor reported it (:class:`FrameError`)."""

    symbol: str
    stream: str
    reason: str
    excerpt: str
    now: float


class NewsRecord(msgspec.Struct, frozen=True, tag="news", tag_field="kind"):
    """A stream actor's status news (:class:`StreamNews`)."""

    symbol: str
    status: StatusKind
    reason: str
    counts: dict[str, int]
    now: float


class SnapshotRecord(
    msgspec.Struct, frozen=True, tag="snapshot", tag_field="kind", omit_defaults=True
):
    """A REST depth snapshot (:class:`SnapshotReady`), Decimals as strings."""

    symbol: str
    # Text levels: what the REST clients give, and how every format stored them.
    snapshot: DepthSnapshotText
    reason: str
    now: float
    received_ns: int = 0
    mono_ns: int = 0
    # Format 1 stored float seconds; read for old recordings only (never written).
    received_at: float | None = None


class SnapshotFailedRecord(msgspec.Struct, frozen=True, tag="snapshot_failed", tag_field="kind"):
    """A snapshot that could not be fetched (:class:`SnapshotFailed`)."""

    symbol: str
    reason: str
    now: float
    attempts: int = 0
    retry_in: float = 0.0


class SymbolAddedRecord(msgspec.Struct, frozen=True, tag="symbol_added", tag_field="kind"):
    """A market joined the feed at runtime (:class:`SymbolAdded`)."""

    symbol: str
    info: MarketInfo
    reason: str
    now: float


class SymbolRemovedRecord(msgspec.Struct, frozen=True, tag="symbol_removed", tag_field="kind"):
    """A market left the feed (:class:`SymbolRemoved`)."""

    symbol: str
    status: StatusKind
    reason: str
    now: float


class RestTradesRecord(
    msgspec.Struct, frozen=True, tag="rest_trades", tag_field="kind", omit_defaults=True
):
    """Recent trades polled in REST-only mode (:class:`RestTrades`)."""

    symbol: str
    trades: list[RestTrade]
    now: float
    received_ns: int = 0
    mono_ns: int = 0
    # Format 1 stored float seconds; read for old recordings only (never written).
    received_at: float | None = None


class BackfillRecord(
    msgspec.Struct, frozen=True, tag="backfill", tag_field="kind", omit_defaults=True
):
    """A trade backfill's answer (:class:`BackfillDone`)."""

    symbol: str
    trades: list[RestTrade]
    error: str | None
    now: float
    received_ns: int = 0
    mono_ns: int = 0
    # Format 1 stored float seconds; read for old recordings only (never written).
    received_at: float | None = None


class RestChannelsRecord(
    msgspec.Struct, frozen=True, tag="rest_channels", tag_field="kind", omit_defaults=True
):
    """REST-only tickers, mark prices, open interest, candles (:class:`RestChannels`).

    ``candles`` (klines answers) was added within format 2: absent, as in older files, it is
    empty, and a line without candles is written exactly as before.
    """

    now: float
    tickers: list[Ticker] = []
    mark_prices: list[MarkPrice] = []
    open_interest: list[OpenInterest] = []
    received_ns: int = 0
    mono_ns: int = 0
    candles: list[CandlePoll] = []


RecordLine = (  # one line of a recording file
    RecordingHeader
    | ReconcilerStartedRecord
    | StreamStartedRecord
    | FramesRecord
    | FrameErrorRecord
    | NewsRecord
    | SnapshotRecord
    | SnapshotFailedRecord
    | RestTradesRecord
    | BackfillRecord
    | SymbolAddedRecord
    | SymbolRemovedRecord
    | RestChannelsRecord
)
_Entry = (
    StreamStartedRecord
    | FramesRecord
    | FrameErrorRecord
    | NewsRecord
    | SnapshotRecord
    | SnapshotFailedRecord
    | RestTradesRecord
    | SymbolAddedRecord
    | SymbolRemovedRecord
    | RestChannelsRecord
)
_ENCODER = msgspec.json.Encoder()
_DECODER = msgspec.json.Decoder(RecordLine)


def _open(path: str | Path, mode: Literal["rb", "wb"]) -> IO[bytes]:
    if str(path).endswith(".gz"):
        return cast(IO[bytes], gzip.open(path, mode))
    return open(path, mode)


def _raw_item(raw: str | bytes) -> str | BinaryFrame:
    return raw if isinstance(raw, str) else BinaryFrame(raw)


def _line_of(message: InboxMessage, now: float) -> RecordLine:
    if isinstance(message, FrameBatch):
        raw = [_raw_item(r) for r in message.raw]
        return FramesRecord(
            message.symbol, message.epoch, raw, now, message.received_ns, message.mono_ns
        )
    if isinstance(message, StreamStarted):
        return StreamStartedRecord(message.symbol, message.epoch, message.mode, now)
    if isinstance(message, FrameError):
        return FrameErrorRecord(
            message.symbol, message.stream, message.reason, message.excerpt, now
        )
    if isinstance(message, StreamNews):
        return NewsRecord(message.symbol, message.kind, message.reason, dict(message.counts), now)
    if isinstance(message, SnapshotReady):
        snapshot = message.snapshot
        if not isinstance(snapshot, DepthSnapshotText):
            # A Decimal snapshot (a custom REST client): stored as text like the others.
            snapshot = msgspec.convert(msgspec.to_builtins(snapshot), DepthSnapshotText)
        return SnapshotRecord(
            message.symbol,
            snapshot,
            message.reason,
            now,
            message.received_ns,
            message.mono_ns,
        )
    if isinstance(message, SnapshotFailed):
        return SnapshotFailedRecord(
            message.symbol, message.reason, now, message.attempts, message.retry_in
        )
    if isinstance(message, SymbolAdded):
        return SymbolAddedRecord(message.symbol, message.info, message.reason, now)
    if isinstance(message, SymbolRemoved):
        return SymbolRemovedRecord(message.symbol, message.kind, message.reason, now)
    if isinstance(message, RestTrades):
        return RestTradesRecord(
            message.symbol, message.trades, now, message.received_ns, message.mono_ns
        )
    if isinstance(message, RestChannels):
        return RestChannelsRecord(
            now,
            message.tickers,
            message.mark_prices,
            message.open_interest,
            message.received_ns,
            message.mono_ns,
            message.candles,
        )
    return BackfillRecord(
        message.symbol, message.trades, message.error, now, message.received_ns, message.mono_ns
    )


# --- recording ---------------------------------------------------------------------------------


class Recorder:
    """Writes a feed's reconciler inbox to ``path`` (``.jsonl`` or ``.jsonl.gz``).

    Pass it to :func:`~backpack_actors.feed.open_feed` (``recorder=``); close it when the feed is
    done (or use it as a context manager). ``wall_clock`` must be the feed's wall clock.
    """

    def __init__(self, path: str | Path, *, wall_clock: Callable[[], float] = time.time) -> None:
        self.path = Path(path)
        self.wall_clock = wall_clock
        """The real wall clock (the feed's); the reconciler gets the latched :meth:`clock`."""
        self._file: IO[bytes] | None = _open(self.path, "wb")
        self._now = wall_clock()
        self._started = False
        self.records = 0

    def __repr__(self) -> str:
        return f"Recorder({str(self.path)!r}, records={self.records})"

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Flush and close the file (idempotent)."""
        if self._file is not None:
            self._file.close()
            self._file = None

    def _write(self, line: RecordLine) -> None:
        if self._file is None:
            raise ValueError(f"recorder for {self.path} is closed")
        self._file.write(_ENCODER.encode(line) + b"\n")

    def attach(
        self,
        markets: Mapping[str, MarketInfo],
        config: FeedConfig,
    ) -> tuple[Callable[[], float], Callable[[InboxMessage, float], None]]:
        """Called by the feed each time it (re)starts a reconciler.

        Returns the reconciler's wall clock (latched per message) and its recorder callable.
        """
        from backpack_actors.config import L2_BOOK, TRADES

        self._now = self.wall_clock()
        infos = list(markets.values())
        if not self._started:
            self._started = True
            settings = ReconcilerSettings(
                book_depth=config.book_depth,
                trades=TRADES in config.channels,
                books=L2_BOOK in config.channels,
                channels=tuple(config.channels),
                book_snapshots=(
                    None
                    if config.book_snapshots is None
                    else (config.book_snapshots.depth, config.book_snapshots.interval_ms)
                ),
                snapshot_side_levels=config.snapshot_side_levels,
                depth_stream=config.depth_stream,
            )
            source = {"rest_url": config.rest_url, "ws_url": config.ws_url}
            symbols = list(config.symbols)
            self._write(
                RecordingHeader(FORMAT_VERSION, symbols, infos, settings, source, self._now)
            )
        else:
            self._write(ReconcilerStartedRecord(infos, self._now))
        return self.clock, self.record

    def clock(self) -> float:
        """The wall time latched for the message being handled."""
        return self._now

    def record(self, message: InboxMessage, now: float) -> None:
        """Latch the wall clock and write ``message`` (the reconciler's ``now`` is superseded)."""
        self._now = self.wall_clock()
        self._write(_line_of(message, self._now))
        self.records += 1


# --- reading and replay ------------------------------------------------------------------------


@dataclass
class Recording:
    """A loaded recording: its header and the lines after it, in inbox order."""

    header: RecordingHeader
    lines: list[RecordLine]

    @property
    def markets(self) -> dict[str, MarketInfo]:
        return {m.exchange_id: m for m in self.header.markets}

    def __len__(self) -> int:
        return len(self.lines)


def _read_lines(path: str | Path) -> Iterator[RecordLine]:
    """Decoded lines; a recording cut short (killed recorder) ends at its last whole line."""
    with _open(path, "rb") as stream:
        lines = iter(stream)
        number = 0
        while True:
            try:
                text = next(lines, b"")
            except EOFError:
                return  # a gzip stream without its end marker
            number += 1
            if not text.endswith(b"\n"):
                return  # end of file, or a torn last line
            if not text.strip():
                continue
            try:
                yield _DECODER.decode(text)
            except msgspec.DecodeError as exc:
                raise ProtocolError(f"recording:{path}:{number}", str(exc), text) from exc


def load_recording(path: str | Path) -> Recording:
    """Read a whole recording; raises :class:`ProtocolError` on a malformed line."""
    lines = _read_lines(path)
    header = next(lines, None)
    if not isinstance(header, RecordingHeader):
        raise ProtocolError(f"recording:{path}", "the first line is not a header", b"")
    if header.version not in _READABLE_VERSIONS:
        readable = " or ".join(str(v) for v in _READABLE_VERSIONS)
        raise ProtocolError(
            f"recording:{path}", f"format version {header.version}, expected {readable}", b""
        )
    return Recording(header, list(lines))


def _raw_text(item: str | BinaryFrame) -> str | bytes:
    return item if isinstance(item, str) else item.b


def _decode_batch(
    symbol: str, raw: list[str | BinaryFrame]
) -> tuple[list[MarketData], tuple[str | bytes, ...]]:
    """The frames the stream actor decoded from this read (its frame errors are their own lines)."""
    texts = tuple(_raw_text(item) for item in raw)
    frames, _errors = decode_read(symbol, texts)
    return frames, texts


def _message_of(line: _Entry | BackfillRecord) -> InboxMessage:
    if isinstance(line, FramesRecord):
        frames, texts = _decode_batch(line.symbol, line.raw)
        return FrameBatch(line.symbol, line.epoch, frames, _rx(line), texts, line.mono_ns)
    if isinstance(line, StreamStartedRecord):
        return StreamStarted(line.symbol, line.epoch, line.mode)
    if isinstance(line, FrameErrorRecord):
        return FrameError(line.symbol, line.stream, line.reason, line.excerpt)
    if isinstance(line, NewsRecord):
        return StreamNews(line.symbol, line.status, line.reason, dict(line.counts))
    if isinstance(line, SnapshotRecord):
        return SnapshotReady(line.symbol, line.snapshot, line.reason, _rx(line), line.mono_ns)
    if isinstance(line, SnapshotFailedRecord):
        return SnapshotFailed(line.symbol, line.reason, line.attempts, line.retry_in)
    if isinstance(line, SymbolAddedRecord):
        return SymbolAdded(line.symbol, line.info, line.reason)
    if isinstance(line, SymbolRemovedRecord):
        return SymbolRemoved(line.symbol, line.status, line.reason)
    if isinstance(line, RestTradesRecord):
        return RestTrades(line.symbol, line.trades, _rx(line), line.mono_ns)
    if isinstance(line, RestChannelsRecord):
        return RestChannels(
            line.tickers,
            line.mark_prices,
            line.open_interest,
            line.received_ns,
            line.mono_ns,
            candles=line.candles,
        )
    return BackfillDone(line.symbol, line.trades, line.error, _rx(line), line.mono_ns)


def _rx(line: FramesRecord | SnapshotRecord | RestTradesRecord | BackfillRecord) -> int:
    """A record's receipt time in ns (format 1 kept float seconds)."""
    if line.received_at is not None:
        return round(line.received_at * 1_000_000_000)
    return line.received_ns


class _Replayer:
    """A fresh reconciler per (re)start, fed recorded messages at their recorded wall times."""

    def __init__(self, header: RecordingHeader) -> None:
        self.header = header
        self.now = header.now
        self._events: list[Event] = []
        self.reconciler = self._fresh(header.markets)

    def _fresh(self, markets: list[MarketInfo]) -> Reconciler:
        settings = self.header.settings
        return Reconciler(
            markets={m.exchange_id: m for m in markets},
            publish=self._events.extend,
            # Requests were answered in the recorded run; their answers are recorded lines.
            request=lambda _request: None,
            wall_clock=lambda: self.now,
            book_depth=settings.book_depth,
            trades=settings.trades,
            books=settings.books,
            channels=settings.channels,
            book_snapshots=settings.book_snapshots,
            snapshot_side_levels=settings.snapshot_side_levels,
            depth_stream=settings.depth_stream,
        )

    def feed(self, line: RecordLine) -> list[Event]:
        self.now = line.now
        if isinstance(line, RecordingHeader):
            raise ProtocolError("recording", "a second header line", b"")
        if isinstance(line, ReconcilerStartedRecord):
            self.reconciler = self._fresh(line.markets)
            return []
        self.reconciler.handle(_message_of(line))
        events, self._events[:] = list(self._events), []
        return events


async def replay_batches(
    source: str | Path | Recording, *, pace: Pace = "fast"
) -> AsyncIterator[list[Event]]:
    """The events of each recorded inbox message, in order (often empty lists).

    ``pace="recorded"`` sleeps (trio time) the recorded wall-time gap before each message.
    """
    recording = source if isinstance(source, Recording) else load_recording(source)
    replayer = _Replayer(recording.header)
    previous = recording.header.now
    for line in recording.lines:
        if pace == "recorded":
            if line.now > previous:
                await trio.sleep(line.now - previous)
            else:
                await trio.lowlevel.checkpoint()
        previous = max(previous, line.now)
        yield replayer.feed(line)


async def replay_iter(
    source: str | Path | Recording, *, pace: Pace = "fast"
) -> AsyncIterator[Event]:
    """The recorded run's events, in order; ``pace="recorded"`` sleeps the recorded gaps."""
    async for batch in replay_batches(source, pace=pace):
        for event in batch:
            yield event


async def replay_events(source: str | Path | Recording) -> list[Event]:
    """Every event of a replay, as fast as possible."""
    return [event async for event in replay_iter(source)]
