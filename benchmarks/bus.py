"""The Redis Streams bus: publish throughput and feed -> Redis -> reader latency.

* **Throughput**: one seeded simulator run's events (generated first, in virtual time) written by
  :class:`~backpack_actors.sinks.redis.RedisStreamsSink` in batches of 1000, JSON or msgpack
  payloads, batching on (one script call per batch) or off (one call per entry); beside it the
  JSON Lines sink writing the same events to a file. Every bus run is read back with the
  verifying reader and must equal what was written, per symbol and stream, or the run fails.
* **Latency**: a live feed on the in-process simulator at a realistic load (markets x depth
  messages/s), the sink on its own subscription (run_sink, worker thread, trio), a reader in the
  same process; per event, the reader's receipt time minus the feed's receipt stamp of the
  socket read (wall clock), p50/p99.

Runs against the Redis at ``BUS_REDIS_URL`` (default ``redis://127.0.0.1:6379/0``) under a key
prefix of its own, deleted afterwards.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import time
import uuid
from collections.abc import Sequence
from typing import Any

import trio
import trio.testing

from benchmarks.common import percentiles

__all__ = ["run"]

REDIS_URL = os.environ.get("BUS_REDIS_URL", "redis://127.0.0.1:6379/0")


class BenchmarkFailure(AssertionError):
    """What the reader got is not what was written."""


def _generate(symbols: Sequence[str], events: int, seed: int) -> list[Any]:
    from backpack_actors.testing import simulate_feed

    async def go() -> list[Any]:
        return await simulate_feed(
            symbols, seed=seed, rate=100, events=events, config={"snapshot_interval": 0}
        )

    result: list[Any] = trio.run(go, clock=trio.testing.MockClock(autojump_threshold=0))
    return result


def _per_stream(events: Sequence[Any]) -> dict[tuple[str, str], list[Any]]:
    from backpack_actors.bus.schema import TRADE_STATUS_KINDS
    from backpack_actors.core.events import BookDelta, BookSnapshot, StatusEvent, Trade

    out: dict[tuple[str, str], list[Any]] = {}
    for e in events:
        if isinstance(e, Trade) or (isinstance(e, StatusEvent) and e.kind in TRADE_STATUS_KINDS):
            key = (e.symbol, "trades")
        elif isinstance(e, (BookSnapshot, BookDelta, StatusEvent)) and e.symbol:
            key = (e.symbol, "book")
        else:
            continue
        out.setdefault(key, []).append(e)
    return out


async def _cleanup(prefix: str) -> None:
    import coredis

    client: coredis.Redis[bytes] = coredis.Redis.from_url(REDIS_URL)
    async with client:
        keys = [k async for k in client.scan_iter(match=f"{prefix}:*")]
        if keys:
            await client.delete(keys)


async def _publish_run(
    events: list[Any], symbols: Sequence[str], codec: str, batching: bool
) -> float:
    """Seconds to publish ``events``; raises BenchmarkFailure if the reader disagrees."""
    from backpack_actors.bus.reader import BusFeed
    from backpack_actors.bus.schema import Keys
    from backpack_actors.sinks.redis import open_redis_sink

    prefix = f"bpabench:{uuid.uuid4().hex[:8]}"
    keys = Keys(prefix)
    try:
        async with open_redis_sink(
            REDIS_URL,
            keys=keys,
            codec=codec,  # type: ignore[arg-type]
            batching=batching,
            checkpoint_deltas=max(1000, len(events)),
            trades_maxlen=len(events) + 1000,
        ) as sink:
            # Positioned before the streams exist: it reads them from their first entry.
            bus = BusFeed(sink.client, symbols, keys=keys, block=0.05, count=10_000)
            await bus.start()
            started = time.perf_counter()
            for i in range(0, len(events), 1000):
                await sink.publish(events[i : i + 1000])
            seconds = time.perf_counter() - started
            got: list[Any] = []
            while batch := await bus.read_batch():
                got += batch
    finally:
        await _cleanup(prefix)
    if _per_stream(got) != _per_stream(events):
        raise BenchmarkFailure(f"{codec}/batching={batching}: the reader got other events")
    return seconds


def _jsonl_seconds(events: list[Any]) -> float:
    from backpack_actors.sinks.jsonl import JsonlSink

    with tempfile.TemporaryDirectory() as tmp:
        sink = JsonlSink.open(os.path.join(tmp, "events.jsonl"))
        started = time.perf_counter()
        for i in range(0, len(events), 1000):
            sink.write(events[i : i + 1000])
        sink.close()
        return time.perf_counter() - started


async def _latency(markets: int, rate: float, seconds: float, seed: int) -> dict[str, Any]:
    from backpack_actors.bus import open_bus_feed
    from backpack_actors.bus.schema import Keys
    from backpack_actors.config import FeedConfig
    from backpack_actors.core.events import BookDelta, StatusEvent, StatusKind, Trade
    from backpack_actors.feed import Feed
    from backpack_actors.sim import DEFAULT_MARKETS, SimConfig, SimExchange
    from backpack_actors.sinks import run_sink
    from backpack_actors.sinks.redis import open_redis_sink
    from backpack_actors.testing import SimRestClient, sim_memory_connector

    # Copies of the BTC market under their own names: as many markets as asked.
    specs = [
        dataclasses.replace(DEFAULT_MARKETS[0], symbol=f"M{i:03d}_USDC", base=f"M{i:03d}")
        for i in range(markets)
    ]
    ids = [spec.symbol for spec in specs]
    exchange = SimExchange(seed=seed, markets=specs, config=SimConfig(rate=rate))
    config = FeedConfig.from_kwargs(
        symbols=[s.replace("_", "-") for s in ids],
        rest_url="http://sim.invalid",
        ws_url="ws://sim.invalid",
        snapshot_interval=0,
    )
    prefix = f"bpabench:{uuid.uuid4().hex[:8]}"
    samples: list[int] = []
    received = 0
    try:
        async with (
            open_redis_sink(REDIS_URL, keys=Keys(prefix)) as sink,
            open_bus_feed(REDIS_URL, config.symbols, prefix=prefix, block=0.05) as bus,
        ):

            async def read() -> None:
                nonlocal received
                async for batch in bus.batches():
                    now_ns = time.time_ns()
                    for event in batch:
                        if isinstance(event, (BookDelta, Trade)):
                            samples.append(now_ns - int(event.received_at * 1e9))
                    received += len(batch)

            feed = Feed(
                config,
                rest_client=SimRestClient(exchange),
                ws_connect=sim_memory_connector(exchange),
                consume=False,
            )
            subscription = feed.subscribe_events("redis")
            observer = feed.subscribe_events("observer")
            async with trio.open_nursery() as nursery:
                nursery.start_soon(read)
                await nursery.start(exchange.run)
                await nursery.start(feed.run)
                nursery.start_soon(run_sink, sink, subscription)
                # Every book ready first: the steady state only is measured.
                ready: set[str] = set()
                with trio.fail_after(120):
                    while len(ready) < len(ids):
                        for event in await observer.get_batch():
                            if (
                                isinstance(event, StatusEvent)
                                and event.kind is StatusKind.BOOK_READY
                            ):
                                ready.add(event.symbol)
                observer.close()
                samples.clear()
                received = 0
                await trio.sleep(seconds)
                events = received
                stats = subscription.statistics()
                await feed.aclose()
                nursery.cancel_scope.cancel()
    finally:
        await _cleanup(prefix)
    p50, p99 = percentiles(samples, [50, 99]) if samples else (float("nan"), float("nan"))
    return {
        "markets": len(ids),
        "rate": rate,
        "events_per_s": events / seconds,
        "p50_ms": p50 / 1000,
        "p99_ms": p99 / 1000,
        "samples": len(samples),
        "conflated": sum(stats["conflated"].values()),  # type: ignore[attr-defined]
        "dropped": sum(stats["dropped_trades"].values()),  # type: ignore[attr-defined]
    }


def _load() -> str:
    try:
        return "/".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return "unknown"


def run(report: Any, *, quick: bool = False, seed: int = 1) -> dict[str, Any]:
    """Measure, add a section to ``report``, return the numbers."""
    from backpack_actors.errors import redact_urls

    symbols = ["BTC-USDC", "ETH-USDC", "SOL-USDC", "BTC-USDC-PERP"]
    n = 5_000 if quick else 30_000
    events = _generate(symbols, n, seed)
    rows: list[tuple[str, int, float]] = []
    jsonl = min(_jsonl_seconds(events) for _ in range(3))
    rows.append(("JSON Lines sink to a file (reference)", len(events), len(events) / jsonl))
    unbatched = events[: min(len(events), 3_000)]
    for codec in ("json", "msgpack"):
        best = min(trio.run(_publish_run, events, symbols, codec, True) for _ in range(3))
        rows.append((f"bus, {codec}, batched (1000 per call)", len(events), len(events) / best))
    for codec in ("json", "msgpack"):
        one = trio.run(_publish_run, unbatched, symbols, codec, False)
        rows.append((f"bus, {codec}, one call per entry", len(unbatched), len(unbatched) / one))
    markets, rate, seconds = (10, 20.0, 5.0) if quick else (20, 20.0, 15.0)
    latency = trio.run(_latency, markets, rate, seconds, seed)
    table = [
        "| writer | events | events/s |",
        "| --- | ---: | ---: |",
        *[f"| {name} | {count:,} | {per_s:,.0f} |" for name, count, per_s in rows],
    ]
    body = "\n".join(
        [
            f"Events of one seeded simulator run over {len(symbols)} markets (books and trades, "
            "full-depth snapshots), written in batches of 1000 to the Redis at "
            f"`{redact_urls(REDIS_URL)}`; best of 3 (one call per entry: 1 run). Every bus run "
            "was read back by the verifying reader and equalled what was written.",
            "",
            *table,
            "",
            f"Feed -> Redis -> reader at {latency['markets']} markets x {latency['rate']:g} "
            f"depth messages/s ({latency['events_per_s']:,.0f} events/s through the bus, "
            f"feed, sink and reader in one process): receipt of the socket read -> the reader "
            f"has the event, p50 {latency['p50_ms']:.2f} ms, p99 {latency['p99_ms']:.2f} ms "
            f"({latency['samples']:,} deltas and trades; the sink's queue conflated "
            f"{latency['conflated']} book events and dropped {latency['dropped']} trades). "
            f"Load average {_load()} (1/5/15 min) on this machine, which other jobs share.",
        ]
    )
    report.section("Redis Streams bus", body)
    return {"throughput": rows, "latency": latency}
