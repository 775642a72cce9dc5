"""RSS over a long stream through our path with a slow subscriber, under the default policy.

Run as its own process (``python -m benchmarks.memory --frames N``) so the RSS it reads is not
inflated by the other benchmarks' allocations; it prints one JSON line. Frames are generated
lazily, so the process never holds the stream.

The producer decodes a socket read (64 frames) and hands it to ``Reconciler.on_frames``, which
publishes synchronously through an :class:`Emitter` to one :class:`Subscription`; the consumer
takes one event per scheduling round, so the subscription stays full. Nothing makes the producer
wait: past half the bound book events are conflated (a marker that becomes a snapshot of the book
when read), past the bound trades are dropped and reported in-band by a ``consumer_overflow``
``StatusEvent``. The consumer keeps its own book from the events it receives; at the end it must
equal the ground truth (after its last conflated snapshot and the deltas after it). Every trade it
receives must be in id order, each jump in ids covered by an overflow report received before it,
and the received plus the reported trades must add up to every trade of the stream.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from typing import Any

import trio

from backpack_actors.actors.connection import decode_read
from backpack_actors.actors.emitter import Emitter
from backpack_actors.actors.messages import RestRequest, SnapshotReady, StreamStarted
from backpack_actors.actors.reconciler import Reconciler
from backpack_actors.core.book import OrderBook
from backpack_actors.core.events import BookDelta, BookSnapshot, StatusEvent, StatusKind, Trade
from backpack_actors.core.wire import decode_depth_snapshot
from benchmarks.common import (
    BenchmarkFailure,
    ccxt_markets,
    check_book,
    market_info,
    rss_kib,
)
from benchmarks.generator import StreamGenerator

__all__ = ["DEFAULT_CAPACITY", "main", "run_memory"]

DEFAULT_CAPACITY = 1024
"""Consumer queue capacity when the feed's config module does not say otherwise."""

BATCH = 64


def _default_capacity() -> int:
    try:
        from backpack_actors.config import FeedConfig
    except ImportError:
        return DEFAULT_CAPACITY
    fields = getattr(FeedConfig, "__dataclass_fields__", None) or {}
    default = getattr(fields.get("consumer_queue"), "default", None)
    if default is None:
        attr_fields = getattr(FeedConfig, "__attrs_attrs__", ())
        default = next((a.default for a in attr_fields if a.name == "consumer_queue"), None)
    return default if isinstance(default, int) else DEFAULT_CAPACITY


class _SlowConsumer:
    def __init__(self) -> None:
        self.book = OrderBook()
        self.events = 0
        self.trades = 0
        self.last_trade_id: int | None = None
        # Trade ids announced dropped by overflow reports, not yet passed by a received trade.
        self.reported_through: int | None = None
        self.trade_order_errors = 0
        self.unreported_gaps = 0
        self.book_gaps = 0
        self.snapshots = 0
        self.conflated_snapshots = 0
        self.deltas = 0
        self.overflow_reports = 0
        self.reported_dropped = 0
        self.statuses: list[StatusEvent] = []
        self.last_update_id: int | None = None

    def take(self, event: object) -> None:
        self.events += 1
        if isinstance(event, Trade):
            last = self.last_trade_id
            if last is not None and event.trade_id <= last:
                self.trade_order_errors += 1
            elif (
                last is not None
                and event.trade_id != last + 1
                and (self.reported_through is None or self.reported_through < event.trade_id - 1)
            ):
                # A jump: the ids skipped must have been reported dropped before this trade.
                self.unreported_gaps += 1
            self.last_trade_id = event.trade_id
            self.trades += 1
        elif isinstance(event, BookDelta):
            if self.last_update_id is not None and event.first_update_id > self.last_update_id + 1:
                # A delta the consumer's book cannot follow (a snapshot must come first).
                self.book_gaps += 1
            self.book.apply(event.raw_bids, event.raw_asks)
            self.last_update_id = event.last_update_id
            self.deltas += 1
        elif isinstance(event, BookSnapshot):
            self.book.load(event.raw_bids, event.raw_asks)
            self.last_update_id = event.update_id
            self.snapshots += 1
            if event.reason == "conflated":
                self.conflated_snapshots += 1
        elif isinstance(event, StatusEvent):
            if event.kind is StatusKind.CONSUMER_OVERFLOW:
                self.overflow_reports += 1
                self.reported_dropped += int(event.counts.get("dropped_trades", 0))
                last_dropped = event.counts.get("last_dropped_trade_id")
                if last_dropped is not None:
                    self.reported_through = int(last_dropped)
            else:
                self.statuses.append(event)


async def _run(frames: int, seed: int, capacity: int) -> dict[str, Any]:
    gen = StreamGenerator(seed)
    symbol = gen.symbol
    markets = {symbol: market_info(ccxt_markets(symbol), symbol)}
    requests: list[RestRequest] = []
    holder: list[Reconciler] = []
    # Conflation markers carry the normalized symbol; snapshot_event takes either form.
    emitter = Emitter(lambda s: holder[0].snapshot_event(s, "conflated"), now=time.time)
    queue = emitter.subscribe("slow", capacity)
    reconciler = Reconciler(
        markets=markets, publish=emitter.publish, request=requests.append, wall_clock=time.time
    )
    holder.append(reconciler)
    consumer = _SlowConsumer()
    marks: list[tuple[str, int, int]] = []
    gc.collect()
    marks.append(("start", 0, rss_kib()))
    started = time.perf_counter()

    async def produce() -> None:
        reconciler.handle(StreamStarted(symbol, 1))
        snapshot = decode_depth_snapshot(gen.snapshot_json(), symbol)
        reconciler.handle(SnapshotReady(symbol, snapshot, "initial", time.time_ns()))
        on_frames = reconciler.on_frames
        quarter = frames // 4
        done = 0
        next_mark = quarter
        stream = gen.frames(frames)
        while done < frames:
            chunk = [next(stream) for _ in range(min(BATCH, frames - done))]
            decoded, errors = decode_read(symbol, chunk)
            if errors:
                raise BenchmarkFailure(f"memory run: undecodable frames {errors[:2]}")
            on_frames(symbol, 1, decoded, time.time_ns())
            done += len(chunk)
            if done >= next_mark:
                marks.append((f"{round(100 * done / frames)}%", done, rss_kib()))
                next_mark += quarter
            await trio.lowlevel.checkpoint()
        emitter.close()

    async def consume() -> None:
        while True:
            try:
                event = await queue.get()
            except trio.EndOfChannel:
                return
            consumer.take(event)
            # Slow: one event per scheduling round against a producer's read per round.
            await trio.lowlevel.checkpoint()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(consume)
        nursery.start_soon(produce)
    seconds = time.perf_counter() - started
    truth = gen.truth()
    check_book("memory run (consumer's book)", *consumer.book.as_dicts(), truth.bids, truth.asks)
    problems = []
    dropped = sum(queue.dropped_trades.values())
    if consumer.trade_order_errors or consumer.unreported_gaps:
        problems.append(
            f"{consumer.trade_order_errors} trades out of order, "
            f"{consumer.unreported_gaps} jumps in trade ids not reported"
        )
    if consumer.trades + consumer.reported_dropped != truth.trade_frames:
        problems.append(
            f"trades {consumer.trades} received + {consumer.reported_dropped} reported dropped "
            f"!= {truth.trade_frames} in the stream"
        )
    if consumer.reported_dropped != dropped:
        problems.append(f"{consumer.reported_dropped} drops reported in-band, {dropped} counted")
    if consumer.book_gaps:
        problems.append(f"{consumer.book_gaps} deltas did not follow the consumer's book")
    if consumer.last_update_id != truth.last_update_id:
        problems.append(f"consumer ended at {consumer.last_update_id}, not {truth.last_update_id}")
    if (
        truth.last_trade_id is not None
        and consumer.last_trade_id != truth.last_trade_id
        # drop_newest: the last trades may be the dropped ones, but then a report says so.
        and consumer.reported_through != truth.last_trade_id
    ):
        problems.append(
            f"last trade {consumer.last_trade_id}, not {truth.last_trade_id}, "
            f"and not reported dropped (reported through {consumer.reported_through})"
        )
    conflated = sum(queue.conflated.values())
    if not conflated:
        problems.append("nothing was conflated: the consumer was not slow")
    if problems:
        raise BenchmarkFailure("memory run: " + "; ".join(problems))
    after = [kib for _, done, kib in marks if done > 0]
    base = after[0]
    return {
        "frames": frames,
        "seconds": seconds,
        "capacity": capacity,
        "marks": marks,
        "flatness_pct": 100 * (max(after) - min(after)) / base,
        "end_vs_q1_pct": 100 * (after[-1] - base) / base,
        "events": consumer.events,
        "deltas": consumer.deltas,
        "snapshots": consumer.snapshots,
        "conflated_snapshots": consumer.conflated_snapshots,
        "trades": consumer.trades,
        "trade_frames": truth.trade_frames,
        "dropped_trades": dropped,
        "overflow_reports": consumer.overflow_reports,
        "conflated": conflated,
        "max_depth": queue.max_depth,
        "statuses": [s.kind.value for s in consumer.statuses],
    }


def run_memory(frames: int, seed: int = 2, capacity: int | None = None) -> dict[str, Any]:
    """Run the memory benchmark in this process and return its numbers."""
    return trio.run(_run, frames, seed, capacity or _default_capacity())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.memory")
    parser.add_argument("--frames", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=2)
    parser.add_argument("--capacity", type=int, default=0)
    args = parser.parse_args(argv)
    result = run_memory(args.frames, args.seed, args.capacity or None)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
