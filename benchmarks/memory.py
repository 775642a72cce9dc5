"""RSS over a long stream through our path with a slow consumer, under the default policy.

Run as its own process (``python -m benchmarks.memory --frames N``) so the RSS it reads is not
inflated by the other benchmarks' allocations; it prints one JSON line. Frames are generated
lazily, so the process never holds the stream.

The consumer takes one event per scheduling round while the producer handles a whole batch (64
frames) per round, so the queue stays full: book events are conflated (default policy) and trades
make the producer wait (lossless). The consumer keeps its own book from the events it receives;
at the end it must equal the ground truth, and it must have received every trade in id order.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from typing import Any

import trio

from backpack_actors.actors.emitter import EventQueue
from backpack_actors.actors.messages import FrameBatch, RestRequest, SnapshotReady, StreamStarted
from backpack_actors.actors.reconciler import Reconciler
from backpack_actors.core.book import OrderBook
from backpack_actors.core.events import BookDelta, BookSnapshot, StatusEvent, Trade
from backpack_actors.core.wire import DepthEvent, TradeEvent, decode_depth_snapshot, decode_ws_frame
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
        self.trade_order_errors = 0
        self.snapshots = 0
        self.deltas = 0
        self.statuses: list[StatusEvent] = []
        self.last_update_id: int | None = None

    def take(self, event: object) -> None:
        self.events += 1
        if isinstance(event, Trade):
            if self.last_trade_id is not None and event.trade_id != self.last_trade_id + 1:
                self.trade_order_errors += 1
            self.last_trade_id = event.trade_id
            self.trades += 1
        elif isinstance(event, BookDelta):
            self.book.apply(event.raw_bids, event.raw_asks)
            self.last_update_id = event.last_update_id
            self.deltas += 1
        elif isinstance(event, BookSnapshot):
            self.book.load(event.raw_bids, event.raw_asks)
            self.last_update_id = event.update_id
            self.snapshots += 1
        elif isinstance(event, StatusEvent):
            self.statuses.append(event)


async def _run(frames: int, seed: int, capacity: int) -> dict[str, Any]:
    gen = StreamGenerator(seed)
    symbol = gen.symbol
    markets = {symbol: market_info(ccxt_markets(symbol), symbol)}
    # Events (and so the queue's conflation markers) carry the normalized symbol;
    # Reconciler.snapshot_event wants the exchange id.
    exchange_ids = {info.normalized: sym for sym, info in markets.items()}
    send, _recv = trio.open_memory_channel[RestRequest](16)
    holder: list[Reconciler] = []
    queue = EventQueue(capacity, lambda s: holder[0].snapshot_event(exchange_ids[s], "conflated"))
    reconciler = Reconciler(markets=markets, out=queue, requests=send, wall_clock=time.time)
    holder.append(reconciler)
    consumer = _SlowConsumer()
    marks: list[tuple[str, int, int]] = []
    gc.collect()
    marks.append(("start", 0, rss_kib()))
    started = time.perf_counter()

    async def produce() -> None:
        await reconciler.handle(StreamStarted(symbol, 1))
        snapshot = decode_depth_snapshot(gen.snapshot_json(), symbol)
        await reconciler.handle(SnapshotReady(symbol, snapshot, "initial", time.time()))
        quarter = frames // 4
        done = 0
        next_mark = quarter
        stream = gen.frames(frames)
        while done < frames:
            chunk = [next(stream) for _ in range(min(BATCH, frames - done))]
            decoded: list[DepthEvent | TradeEvent] = []
            for raw in chunk:
                data = decode_ws_frame(raw).data
                if isinstance(data, DepthEvent | TradeEvent):
                    decoded.append(data)
            await reconciler.handle(FrameBatch(symbol, 1, decoded, time.time()))
            done += len(chunk)
            if done >= next_mark:
                marks.append((f"{round(100 * done / frames)}%", done, rss_kib()))
                next_mark += quarter
            await trio.lowlevel.checkpoint()
        queue.close()

    async def consume() -> None:
        while True:
            try:
                event = await queue.get()
            except trio.EndOfChannel:
                return
            consumer.take(event)
            # Slow: one event per scheduling round against a producer's batch per round.
            await trio.lowlevel.checkpoint()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(consume)
        nursery.start_soon(produce)
    seconds = time.perf_counter() - started
    truth = gen.truth()
    check_book("memory run (consumer's book)", *consumer.book.as_dicts(), truth.bids, truth.asks)
    problems = []
    if consumer.trades != truth.trade_frames or consumer.trade_order_errors:
        problems.append(
            f"trades {consumer.trades}/{truth.trade_frames}, "
            f"{consumer.trade_order_errors} out of order"
        )
    if consumer.last_update_id != truth.last_update_id:
        problems.append(f"consumer ended at {consumer.last_update_id}, not {truth.last_update_id}")
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
        "trades": consumer.trades,
        "conflated": conflated,
        "max_depth": queue.max_depth,
        "blocked": queue.blocked,
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
