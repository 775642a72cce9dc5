"""Redis down under a live feed: the feed never waits for it (the consumer keeps receiving at the
same pace), the sink's own subscription applies the per-subscriber policy (books conflate,
dropped trades are reported in a consumer_overflow entry written once Redis is back), and a
reader ends with the simulator's books."""

from __future__ import annotations

import trio

from backpack_actors.bus import open_bus_feed
from backpack_actors.bus.schema import Keys
from backpack_actors.config import FeedConfig
from backpack_actors.core.events import Event, StatusEvent, StatusKind, Trade
from backpack_actors.feed import Feed
from backpack_actors.sim import SimConfig, SimExchange
from backpack_actors.sinks import run_sink
from backpack_actors.sinks.redis import open_redis_sink
from backpack_actors.testing import SimRestClient, sim_memory_connector
from tests.bus.helpers import Books, PrivateRedis, Watch

OUTAGE = 3.0


async def test_redis_outage_never_stalls_the_feed_and_the_sink_pays() -> None:
    exchange = SimExchange(
        seed=41, markets=["BTC_USDC"], config=SimConfig(rate=150, trade_probability=0.5)
    )
    config = FeedConfig.from_kwargs(
        symbols=["BTC-USDC"],
        rest_url="http://sim.invalid",
        ws_url="ws://sim.invalid",
        snapshot_interval=0,
        consumer_queue=100_000,
    )
    redis = PrivateRedis()
    redis.start()
    books = Books()
    watch = Watch()
    from_bus: list[Event] = []
    consumed_during = 0
    try:
        with trio.fail_after(60):
            await redis.wait_up()
            async with (
                open_redis_sink(
                    redis.url, keys=Keys("bpatest"), checkpoint_deltas=100,
                    backoff=(0.05, 0.2), write_timeout=0.5,
                ) as sink,
                open_bus_feed(redis.url, ["BTC-USDC"], prefix="bpatest", block=0.1) as bus,
            ):  # fmt: skip

                async def read() -> None:
                    async for batch in bus.batches():
                        for event in batch:
                            books.apply(event)
                        from_bus.extend(batch)
                        watch.poke()

                feed = Feed(
                    config,
                    rest_client=SimRestClient(exchange),
                    ws_connect=sim_memory_connector(exchange),
                )
                # A small queue for the sink: an outage of seconds overflows it.
                subscription = feed.subscribe_events("redis", 200)
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(read)
                    await nursery.start(exchange.run)
                    await nursery.start(feed.run)
                    nursery.start_soon(run_sink, sink, subscription)
                    await watch.until(lambda: len(from_bus) > 300)
                    redis.kill()
                    down_at = trio.current_time()
                    async for _event in feed:
                        consumed_during += 1
                        if trio.current_time() - down_at >= OUTAGE:
                            break
                    redis.start()
                    await redis.wait_up()
                    exchange.pause()
                    final = exchange.last_update_id("BTC_USDC")
                    await watch.until(lambda: books.last_id.get("BTC_USDC", 0) >= final)
                    stats = subscription.statistics()
                    await feed.aclose()
                    nursery.cancel_scope.cancel()
    finally:
        redis.stop()
    # The feed went on at its pace (~150 depth messages/s and trades) while Redis was down.
    assert consumed_during > 200 * OUTAGE
    assert sum(stats["conflated"].values()) > 0, "the sink's books conflated"  # type: ignore[attr-defined]
    dropped = sum(stats["dropped_trades"].values())  # type: ignore[attr-defined]
    assert dropped > 0, "the sink's trade bound was exceeded"
    overflow = [
        e for e in from_bus if isinstance(e, StatusEvent) and e.kind is StatusKind.CONSUMER_OVERFLOW
    ]
    assert sum(e.counts["dropped_trades"] for e in overflow) == dropped, "each drop reported"
    assert sink.restarts + sink.reconnects >= 1
    assert any(isinstance(e, Trade) for e in from_bus)
    books.assert_truth(exchange, "BTC_USDC")
