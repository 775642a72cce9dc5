"""Reader equivalence: what a bus reader yields is what the feed emitted, per symbol and stream
(books, trades, and the other channels: book tickers, tickers), over a simulator run with faults
(a dropped delta, a dropped connection) — against the real Redis server, under a test-only key
prefix."""

from __future__ import annotations

import pytest
import trio

from backpack_actors.bus import open_bus_feed
from backpack_actors.bus.schema import Codec, Keys
from backpack_actors.config import FeedConfig
from backpack_actors.core.events import BookDelta, Event, StatusEvent, StatusKind
from backpack_actors.feed import Feed
from backpack_actors.sim import SimConfig, SimExchange
from backpack_actors.sinks import run_sink
from backpack_actors.sinks.redis import RedisStreamsSink, open_redis_sink
from backpack_actors.testing import SimRestClient, sim_memory_connector
from tests.bus.helpers import REDIS_URL, Books, isolated_prefix, per_stream

SYMBOLS = ("BTC_USDC", "ETH_USDC")


class RecordingSink:
    """The Redis sink, remembering every event it was given (what the feed emitted to it)."""

    name = "redis"

    def __init__(self, sink: RedisStreamsSink) -> None:
        self.sink = sink
        self.events: list[Event] = []

    def write(self, events: list[Event]) -> None:
        self.events.extend(events)
        self.sink.write(events)

    def close(self) -> None:
        self.sink.close()


@pytest.mark.parametrize("codec", ["json", "msgpack"])
async def test_reader_yields_what_the_feed_emitted_over_faults(codec: Codec) -> None:
    exchange = SimExchange(seed=31, markets=list(SYMBOLS), config=SimConfig(rate=150))
    config = FeedConfig.from_kwargs(
        symbols=["BTC-USDC", "ETH-USDC"],
        rest_url="http://sim.invalid",
        ws_url="ws://sim.invalid",
        snapshot_interval=0,
        consumer_queue=100_000,
        channels=["trades", "l2_book", "book_ticker", "ticker"],
    )
    consumed: list[Event] = []
    from_bus: list[Event] = []
    books = Books()
    with trio.fail_after(90):
        async with (
            isolated_prefix() as prefix,
            open_redis_sink(
                REDIS_URL, keys=Keys(prefix), codec=codec, checkpoint_deltas=100
            ) as redis_sink,
            open_bus_feed(REDIS_URL, ["BTC-USDC", "ETH-USDC"], prefix=prefix, block=0.1) as bus,
        ):
            sink = RecordingSink(redis_sink)

            async def read_bus() -> None:
                async for batch in bus.batches():
                    for event in batch:
                        books.apply(event)
                    from_bus.extend(batch)

            feed = Feed(
                config,
                rest_client=SimRestClient(exchange),
                ws_connect=sim_memory_connector(exchange),
            )
            subscription = feed.subscribe_events("redis", 100_000)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(read_bus)
                await nursery.start(exchange.run)
                await nursery.start(feed.run)
                sink_done = trio.Event()

                async def write_bus() -> None:
                    await run_sink(sink, subscription)
                    sink_done.set()

                nursery.start_soon(write_bus)
                ready: set[str] = set()
                deltas = 0
                async for event in feed:
                    consumed.append(event)
                    if isinstance(event, StatusEvent) and event.kind is StatusKind.BOOK_READY:
                        ready.add(event.symbol)
                        if len(ready) == len(SYMBOLS):
                            exchange.faults.drop_delta(symbol="BTC_USDC")
                            exchange.faults.disconnect_after(frames=200)
                    if ready and isinstance(event, BookDelta):
                        deltas += 1
                    if deltas >= 1500:
                        break
                exchange.pause()
                # The sink's subscription ends: the sink writes what is queued, then stops.
                subscription.close()
                await sink_done.wait()
                want = per_stream(sink.events)
                # Everything the sink was given reaches the reader.
                while True:
                    got = per_stream(from_bus)
                    if all(len(got.get(key, ())) >= len(value) for key, value in want.items()):
                        break
                    await trio.sleep(0.05)
                await feed.aclose()
                nursery.cancel_scope.cancel()
    kinds = {e.kind for e in consumed if isinstance(e, StatusEvent)}
    assert StatusKind.GAP_DETECTED in kinds, "the dropped delta was detected"
    assert StatusKind.RECONNECTING in kinds, "the connection was dropped"
    # No conflation or drop for the sink's subscriber: it was given what the consumer got.
    common = min(len(sink.events), len(consumed))
    assert common > 1500
    assert sink.events[:common] == consumed[:common]
    emitted = per_stream(sink.events)
    assert per_stream(from_bus) == emitted
    assert {key for key in emitted} == {
        (s, k) for s in ("BTC-USDC", "ETH-USDC") for k in ("book", "trades", "channels")
    }
    assert bus.stats.holes == 0
    assert bus.stats.discontinuities == 0
    assert bus.stats.checkpoints_checked > 5, "checkpoints were written and checked"
    for sym in SYMBOLS:
        books.assert_truth(exchange, sym)
