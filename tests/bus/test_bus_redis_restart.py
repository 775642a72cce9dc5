"""Redis restarted mid-run (a redis-server of the test's own, on a free port, killed with
SIGKILL and started again empty): the publisher reconnects and writes a checkpoint first; the
reader recovers, reports the hole and resyncs from that checkpoint; its book ends equal to the
simulator's."""

from __future__ import annotations

from functools import partial

import trio

from backpack_actors.bus import open_bus_feed
from backpack_actors.bus.schema import Keys, parse_meta
from backpack_actors.core.events import BookDelta, Event, StatusEvent, StatusKind, Trade
from backpack_actors.sinks.redis import open_redis_sink
from tests.bus.helpers import Books, PrivateRedis, Watch, generate


def _bus_kinds(events: list[Event]) -> list[StatusKind]:
    return [e.kind for e in events if isinstance(e, StatusEvent) and e.reason.startswith("bus: ")]


async def test_redis_restart_is_reported_and_readers_resync_from_a_checkpoint() -> None:
    emitted, exchange = await trio.to_thread.run_sync(
        partial(generate, ["BTC-USDC"], events=3000, seed=12)
    )
    final_update = max(e.last_update_id for e in emitted if isinstance(e, BookDelta))
    final_trade = max(e.trade_id for e in emitted if isinstance(e, Trade))
    redis = PrivateRedis()
    redis.start()
    keys = Keys("bpatest")
    got: list[Event] = []
    books = Books()
    watch = Watch()
    newest_trade = 0
    try:
        with trio.fail_after(60):
            await redis.wait_up()
            async with (
                open_redis_sink(
                    redis.url,
                    keys=keys,
                    checkpoint_deltas=200,
                    backoff=(0.02, 0.2),
                    write_timeout=2.0,
                ) as sink,
                open_bus_feed(redis.url, ["BTC-USDC"], prefix="bpatest", block=0.05) as bus,
            ):
                reading = trio.Event()
                reading.set()

                async def read() -> None:
                    nonlocal newest_trade
                    async for batch in bus.batches():
                        await reading.wait()
                        for event in batch:
                            books.apply(event)
                            if isinstance(event, Trade):
                                newest_trade = max(newest_trade, event.trade_id)
                        got.extend(batch)
                        watch.poke()

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(read)
                    for start in range(0, 1000, 100):
                        await sink.publish(emitted[start : start + 100])
                    first_part = _last_update(emitted[:1000])
                    await watch.until(lambda: books.last_id.get("BTC_USDC", 0) >= first_part)
                    # These entries are written while the reader is away, and lost with Redis.
                    reading = trio.Event()
                    for start in range(1000, 1500, 100):
                        await sink.publish(emitted[start : start + 100])
                    redis.kill()
                    redis.start()
                    await redis.wait_up()
                    reading.set()
                    await sink.publish(emitted[1500:1600])
                    # The restarted server's book stream begins with the publisher's checkpoint.
                    first = await sink.client.xrange(keys.book("BTC-USDC"), count=1)
                    assert parse_meta(first[0].field_values).kind == b"c"
                    for start in range(1600, len(emitted), 100):
                        await sink.publish(emitted[start : start + 100])
                    await watch.until(
                        lambda: (
                            books.last_id.get("BTC_USDC", 0) >= final_update
                            and newest_trade >= final_trade
                        )
                    )
                    nursery.cancel_scope.cancel()
                assert sink.restarts == 1
    finally:
        redis.stop()
    kinds = _bus_kinds(got)
    assert StatusKind.GAP_DETECTED in kinds, "the book hole was reported"
    assert StatusKind.RESYNCED in kinds, "the book resynced from a checkpoint"
    assert kinds.index(StatusKind.GAP_DETECTED) < kinds.index(StatusKind.RESYNCED)
    assert StatusKind.TRADE_GAP in kinds, "the lost trade entries were reported"
    assert books.assert_truth(exchange, "BTC_USDC") == final_update


def _last_update(events: list[Event]) -> int:
    return max(e.last_update_id for e in events if isinstance(e, BookDelta))
