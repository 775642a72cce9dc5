"""Hot path: frame text in -> event out, one core, every path's final book checked.

Paths, all fed the same generated frames in one process:

- ``ours``: ``decode_read`` (one call per simulated socket read, as the connection actor decodes
  it) -> ``Reconciler.on_frames`` (``BookSync`` continuity, ``OrderBook`` apply, event
  construction; synchronous) -> ``Emitter.publish`` -> the subscriber's ``Subscription`` -> a
  consumer draining it after every read. No event loop: nothing on this path awaits.
- ``ccxt.pro``: ccxt's real ``Client.handle_message`` (JSON parse, ``backpack.handle_message``,
  book update, resolve) with a stand-in for aiohttp's message; its book pre-seeded from the same
  snapshot the way ``watch_order_book`` seeds it. asyncio is used here only because ccxt's futures
  need a loop.
- ``floor``: msgspec typed decode with strings left as str.

Stage rows isolate where our time goes (decode, ``OrderBook.apply``, ``BookSync``/``TradeSync``,
event construction, ``Emitter``/``Subscription``).
"""

from __future__ import annotations

import asyncio
import gc
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, NamedTuple

import msgspec

from backpack_actors.actors.connection import decode_read
from backpack_actors.actors.emitter import Emitter, Subscription
from backpack_actors.actors.messages import RestRequest, SnapshotReady, StreamStarted
from backpack_actors.actors.reconciler import Reconciler
from backpack_actors.core.book import OrderBook
from backpack_actors.core.events import BookDelta, BookSnapshot, StatusEvent, StatusKind, Trade
from backpack_actors.core.sync import BookSync
from backpack_actors.core.trades import TradeSync
from backpack_actors.core.wire import DepthEvent, TradeEvent, decode_depth_snapshot
from benchmarks.common import BenchmarkFailure, ccxt_market, ccxt_markets, check_book, market_info
from benchmarks.generator import GroundTruth, Workload

__all__ = [
    "CcxtRun",
    "OursRun",
    "latency_ccxt",
    "latency_ours",
    "predecode",
    "profile_ours",
    "run_ccxt",
    "run_floor",
    "run_ours",
    "stage_apply",
    "stage_decode",
    "stage_reconciler",
    "stage_sync",
]

EPOCH = 1


# --------------------------------------------------------------------------------------------
# ours


class _Consumer:
    """Counts what it receives and keeps the last delta and trade for the final checks."""

    __slots__ = ("deltas", "last_delta", "last_trade", "other", "snapshots", "statuses", "trades")

    def __init__(self) -> None:
        self.deltas = 0
        self.trades = 0
        self.snapshots = 0
        self.other = 0
        self.statuses: list[StatusEvent] = []
        self.last_delta: BookDelta | None = None
        self.last_trade: Trade | None = None

    def take(self, event: object) -> None:
        if isinstance(event, BookDelta):
            self.deltas += 1
            self.last_delta = event
        elif isinstance(event, Trade):
            self.trades += 1
            self.last_trade = event
        elif isinstance(event, BookSnapshot):
            self.snapshots += 1
        elif isinstance(event, StatusEvent):
            self.statuses.append(event)
        else:
            self.other += 1


@dataclass
class OursRun:
    """One run of our path: wall seconds for the frames, and what came out."""

    seconds: float
    frames: int
    reconciler: Reconciler
    queue: Subscription | None
    consumer: _Consumer
    notes: dict[str, Any] = field(default_factory=dict)


def _discard(events: list[Any]) -> None:
    """``publish`` with no subscriber: the events are built, then dropped."""


def _ready_reconciler(
    workload: Workload, *, capacity: int | None
) -> tuple[Reconciler, Subscription | None, _Consumer]:
    """A reconciler for the workload's symbol, live on the workload's snapshot.

    With ``capacity``, it publishes to an :class:`Emitter` with one subscriber of that capacity
    (what a feed with one consumer has); without, its events are built and discarded.
    """
    symbol = workload.symbol
    markets = {symbol: market_info(ccxt_markets(symbol), symbol)}
    requests: list[RestRequest] = []
    holder: list[Reconciler] = []
    queue: Subscription | None = None
    publish = _discard
    if capacity is not None:
        # Conflation markers carry the normalized symbol; snapshot_event takes either form.
        emitter = Emitter(lambda s: holder[0].snapshot_event(s, "conflated"))
        queue = emitter.subscribe("bench", capacity)
        publish = emitter.publish
    reconciler = Reconciler(
        markets=markets, publish=publish, request=requests.append, wall_clock=time.time
    )
    holder.append(reconciler)
    reconciler.handle(StreamStarted(symbol, EPOCH))
    snapshot = decode_depth_snapshot(workload.snapshot_json, symbol)
    reconciler.handle(SnapshotReady(symbol, snapshot, "initial", time.time_ns()))
    consumer = _Consumer()
    if queue is not None:
        while (event := queue.get_nowait()) is not None:
            consumer.take(event)
        if consumer.snapshots != 1 or not any(
            s.kind is StatusKind.BOOK_READY for s in consumer.statuses
        ):
            raise BenchmarkFailure(f"ours: not ready after the snapshot: {consumer.statuses}")
        consumer.snapshots = 0
        consumer.statuses.clear()
    if not reconciler.is_live(symbol):
        raise BenchmarkFailure(f"ours: {symbol} not live after the snapshot")
    return reconciler, queue, consumer


def _decode_batch(symbol: str, chunk: Sequence[str]) -> list[DepthEvent | TradeEvent]:
    # What the connection actor does with one socket read (its own function).
    frames, errors = decode_read(symbol, chunk)
    if errors:
        raise BenchmarkFailure(f"undecodable frames: {errors[:2]}")
    return frames


def _ours(workload: Workload, batch: int, capacity: int, one_by_one: bool) -> OursRun:
    reconciler, queue, consumer = _ready_reconciler(workload, capacity=capacity)
    assert queue is not None
    symbol = workload.symbol
    frames = workload.frames
    chunks = [frames[i : i + batch] for i in range(0, len(frames), batch)]
    on_frames = reconciler.on_frames
    get = queue.get_nowait
    get_batch = queue.get_batch_nowait
    take = consumer.take
    wall = time.time_ns
    gc.collect()
    start = time.perf_counter()
    if one_by_one:
        # The consumer reads one event per call (``async for event in feed`` does this).
        for chunk in chunks:
            on_frames(symbol, EPOCH, _decode_batch(symbol, chunk), wall())
            while (event := get()) is not None:
                take(event)
    else:
        # The consumer reads what is queued, a list per call (``feed.batches()``).
        for chunk in chunks:
            on_frames(symbol, EPOCH, _decode_batch(symbol, chunk), wall())
            for event in get_batch():
                take(event)
    seconds = time.perf_counter() - start
    return OursRun(seconds, len(frames), reconciler, queue, consumer)


def run_ours(
    workload: Workload, *, batch: int = 64, capacity: int = 4096, one_by_one: bool = False
) -> OursRun:
    """Time our path over the workload and check everything it produced."""
    result = _ours(workload, batch, capacity, one_by_one)
    check_ours(result, workload.truth, workload.symbol, f"ours (batch {batch})")
    return result


def check_ours(result: OursRun, truth: GroundTruth, symbol: str, path: str) -> None:
    """Final book, event counts and last ids against the ground truth; no gap, no conflation."""
    sync = result.reconciler.book_sync(symbol)
    bids, asks = sync.book.as_dicts()
    check_book(path, bids, asks, truth.bids, truth.asks)
    consumer = result.consumer
    problems = []
    if result.queue is not None:
        if consumer.deltas != truth.depth_frames:
            problems.append(f"{consumer.deltas} deltas for {truth.depth_frames} depth frames")
        if consumer.trades != truth.trade_frames:
            problems.append(f"{consumer.trades} trades for {truth.trade_frames} trade frames")
        if consumer.statuses or consumer.snapshots:
            problems.append(f"unexpected events {consumer.statuses[:2]} / {consumer.snapshots}")
        last = consumer.last_delta
        if last is None or last.last_update_id != truth.last_update_id:
            problems.append(f"last delta {last} is not update {truth.last_update_id}")
        trade = consumer.last_trade
        if trade is None or trade.trade_id != truth.last_trade_id:
            problems.append(f"last trade {trade} is not trade {truth.last_trade_id}")
        if result.queue.conflated or result.queue.dropped:
            problems.append(
                f"conflated {result.queue.conflated}, dropped {result.queue.dropped_trades} "
                "(queue too small for a batch)"
            )
    if sync.last_update_id != truth.last_update_id:
        problems.append(f"book at update {sync.last_update_id}, want {truth.last_update_id}")
    if sync.counters["gaps"] or sync.counters["crossed"]:
        problems.append(f"book sync counters {sync.counters}")
    if problems:
        raise BenchmarkFailure(f"{path}: " + "; ".join(problems))


# --------------------------------------------------------------------------------------------
# stages (where our time goes)


def stage_decode(workload: Workload, batch: int = 64) -> float:
    """``decode_read`` alone, 64 frames a read (the connection actor's decoding)."""
    symbol = workload.symbol
    frames = workload.frames
    chunks = [frames[i : i + batch] for i in range(0, len(frames), batch)]
    gc.collect()
    start = time.perf_counter()
    for chunk in chunks:
        decode_read(symbol, chunk)
    return time.perf_counter() - start


def predecode(workload: Workload) -> list[DepthEvent | TradeEvent]:
    """Every frame decoded once, for the stages that start after decoding."""
    return _decode_batch(workload.symbol, workload.frames)


def profile_ours(workload: Workload) -> float:
    """Our path without the final checks (``workload.truth`` may not match the frames)."""
    return _ours(workload, 64, 4096, False).seconds


def stage_apply(workload: Workload, decoded: Sequence[DepthEvent | TradeEvent]) -> float:
    """``OrderBook.apply`` of every delta on pre-decoded frames (no continuity check)."""
    snapshot = decode_depth_snapshot(workload.snapshot_json, workload.symbol)
    book = OrderBook()
    book.load(snapshot.bids, snapshot.asks)
    deltas = [d for d in decoded if isinstance(d, DepthEvent)]
    apply = book.apply
    gc.collect()
    start = time.perf_counter()
    for d in deltas:
        apply(d.bids, d.asks)
    seconds = time.perf_counter() - start
    bids, asks = book.as_dicts()
    check_book("stage OrderBook.apply", bids, asks, workload.truth.bids, workload.truth.asks)
    return seconds


def stage_sync(workload: Workload, decoded: Sequence[DepthEvent | TradeEvent]) -> float:
    """``BookSync``/``TradeSync`` as the reconciler calls them (fast paths first), no events."""
    symbol = workload.symbol
    snapshot = decode_depth_snapshot(workload.snapshot_json, symbol)
    sync: BookSync[DepthEvent] = BookSync(symbol)
    trades = TradeSync(symbol)
    sync.stream_started(EPOCH)
    sync.on_snapshot(snapshot)
    on_delta = sync.on_delta_fast
    accept = trades.accept_in_order
    on_trade = trades.on_trade
    gc.collect()
    start = time.perf_counter()
    for frame in decoded:
        if type(frame) is DepthEvent:
            on_delta(EPOCH, frame)
        elif type(frame) is TradeEvent and not accept(frame):
            on_trade(EPOCH, frame)
    seconds = time.perf_counter() - start
    bids, asks = sync.book.as_dicts()
    check_book("stage BookSync", bids, asks, workload.truth.bids, workload.truth.asks)
    return seconds


def _stage_reconciler(
    workload: Workload,
    decoded: Sequence[DepthEvent | TradeEvent],
    batch: int,
    capacity: int | None,
) -> OursRun:
    reconciler, queue, consumer = _ready_reconciler(workload, capacity=capacity)
    symbol = workload.symbol
    batches = [list(decoded[i : i + batch]) for i in range(0, len(decoded), batch)]
    on_frames = reconciler.on_frames
    wall = time.time_ns
    gc.collect()
    start = time.perf_counter()
    if queue is None:
        for frames in batches:
            on_frames(symbol, EPOCH, frames, wall())
    else:
        get_batch = queue.get_batch_nowait
        take = consumer.take
        for frames in batches:
            on_frames(symbol, EPOCH, frames, wall())
            for event in get_batch():
                take(event)
    seconds = time.perf_counter() - start
    return OursRun(seconds, len(decoded), reconciler, queue, consumer)


def stage_reconciler(
    workload: Workload,
    decoded: Sequence[DepthEvent | TradeEvent],
    *,
    batch: int = 64,
    capacity: int | None,
) -> float:
    """``Reconciler.on_frames`` on pre-decoded batches; ``capacity=None`` builds the events and
    publishes them nowhere (no emitter, no subscriber)."""
    result = _stage_reconciler(workload, decoded, batch, capacity)
    name = "stage reconciler" + (" + Emitter/Subscription" if capacity else " (no subscriber)")
    check_ours(result, workload.truth, workload.symbol, name)
    return result.seconds


# --------------------------------------------------------------------------------------------
# ccxt.pro


class _WsMessage(NamedTuple):
    """Stands in for aiohttp's ``WSMessage`` (``type``, ``data``, ``extra``)."""

    type: Any
    data: str
    extra: Any = None


@dataclass
class CcxtRun:
    seconds: float
    frames: int
    samples_ns: list[int] = field(default_factory=list)


async def _ccxt(workload: Workload, latency: bool) -> CcxtRun:
    import ccxt.pro
    from aiohttp import WSMsgType
    from ccxt.async_support.base.ws.client import Client

    exchange = ccxt.pro.backpack({"enableRateLimit": False})
    try:
        exchange.set_markets(exchange.parse_markets([ccxt_market(workload.symbol)]))
        symbol = exchange.safe_symbol(workload.symbol)
        # What watch_order_book does once fetch_order_book answers: parse, then reset the book.
        raw = json.loads(workload.snapshot_json)
        snapshot = exchange.parse_order_book(raw, symbol, int(raw["timestamp"] / 1000))
        snapshot["nonce"] = exchange.safe_integer(raw, "lastUpdateId")
        stored = exchange.order_book({})
        stored.reset(snapshot)
        exchange.orderbooks[symbol] = stored
        client = Client(
            "ws://127.0.0.1:1",
            exchange.handle_message,
            exchange.on_error,
            exchange.on_close,
            exchange.on_connected,
            {},
        )
        text = WSMsgType.TEXT
        messages = [_WsMessage(text, raw_frame) for raw_frame in workload.frames]
        handle = client.handle_message
        samples: list[int] = []
        gc.collect()
        if latency:
            clock = time.perf_counter_ns
            append = samples.append
            start = time.perf_counter()
            for message in messages:
                t0 = clock()
                handle(message)
                append(clock() - t0)
        else:
            start = time.perf_counter()
            for message in messages:
                handle(message)
        seconds = time.perf_counter() - start
        _check_ccxt(exchange, symbol, workload.truth)
        return CcxtRun(seconds, len(messages), samples)
    finally:
        await exchange.close()


def _check_ccxt(exchange: Any, symbol: str, truth: GroundTruth) -> None:
    book = exchange.orderbooks[symbol]
    bids = {price: size for price, size in book["bids"]}
    asks = {price: size for price, size in book["asks"]}
    want_bids, want_asks = truth.float_sides()
    check_book("ccxt.pro", bids, asks, want_bids, want_asks)
    problems = []
    if book["nonce"] != truth.last_update_id:
        problems.append(f"book nonce {book['nonce']} is not {truth.last_update_id}")
    trades = exchange.trades.get(symbol)
    if truth.last_trade_id is not None and (
        not trades or trades[-1]["id"] != str(truth.last_trade_id)
    ):
        problems.append(f"last trade is not {truth.last_trade_id}")
    if problems:
        raise BenchmarkFailure("ccxt.pro: " + "; ".join(problems))


def run_ccxt(workload: Workload) -> CcxtRun:
    """Time ccxt.pro's client over the workload (asyncio only for ccxt's futures)."""
    return asyncio.run(_ccxt(workload, False))


def latency_ccxt(workload: Workload) -> list[int]:
    """Per-frame ``handle_message`` times of ccxt.pro in ns."""
    return asyncio.run(_ccxt(workload, True)).samples_ns


# --------------------------------------------------------------------------------------------
# floor


class _FloorDepth(msgspec.Struct, tag="depth", tag_field="e", gc=False):
    E: int
    T: int
    U: int
    u: int
    s: str
    a: list[tuple[str, str]]
    b: list[tuple[str, str]]


class _FloorTrade(msgspec.Struct, tag="trade", tag_field="e", gc=False):
    E: int
    T: int
    s: str
    p: str
    q: str
    a: str
    b: str
    t: int
    m: bool


class _FloorFrame(msgspec.Struct, gc=False):
    stream: str
    data: _FloorDepth | _FloorTrade


_FLOOR_DECODER = msgspec.json.Decoder(_FloorFrame)


def run_floor(workload: Workload) -> float:
    """msgspec typed decode, strings left as str; its output replayed (untimed) onto a book."""
    decode = _FLOOR_DECODER.decode
    frames = workload.frames
    gc.collect()
    start = time.perf_counter()
    for raw in frames:
        decode(raw)
    seconds = time.perf_counter() - start
    raw_snapshot = json.loads(workload.snapshot_json)
    bids = {Decimal(p): Decimal(s) for p, s in raw_snapshot["bids"]}
    asks = {Decimal(p): Decimal(s) for p, s in raw_snapshot["asks"]}
    for raw in frames:
        data = decode(raw).data
        if isinstance(data, _FloorDepth):
            for side, levels in ((bids, data.b), (asks, data.a)):
                for p, s in levels:
                    size = Decimal(s)
                    if size:
                        side[Decimal(p)] = size
                    else:
                        side.pop(Decimal(p), None)
    check_book("floor", bids, asks, workload.truth.bids, workload.truth.asks)
    return seconds


# --------------------------------------------------------------------------------------------
# per-frame latency of our path


def _latency_ours(workload: Workload) -> tuple[list[int], OursRun]:
    reconciler, queue, consumer = _ready_reconciler(workload, capacity=4096)
    assert queue is not None
    symbol = workload.symbol
    on_frames = reconciler.on_frames
    get = queue.get_nowait
    take = consumer.take
    clock = time.perf_counter_ns
    wall = time.time_ns
    samples: list[int] = []
    append = samples.append
    gc.collect()
    start = time.perf_counter()
    for raw in workload.frames:
        # One frame per socket read: the worst case for per-read overhead.
        t0 = clock()
        on_frames(symbol, EPOCH, _decode_batch(symbol, (raw,)), wall())
        while (event := get()) is not None:
            take(event)
        append(clock() - t0)
    seconds = time.perf_counter() - start
    return samples, OursRun(seconds, len(workload.frames), reconciler, queue, consumer)


def latency_ours(workload: Workload) -> list[int]:
    """Per-frame ns of our path (decode -> reconciler -> emitter -> subscriber), 1 frame a read."""
    samples, result = _latency_ours(workload)
    check_ours(result, workload.truth, workload.symbol, "ours (latency pass)")
    return samples
