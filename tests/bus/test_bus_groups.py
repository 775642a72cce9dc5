"""Consumer groups: work-sharing readers each get part of the trade streams, acknowledge after
processing, and a member that dies leaves its entries pending until another claims them, so
every trade is processed (and acknowledged) exactly once here."""

from __future__ import annotations

from functools import partial

import trio

from backpack_actors.bus.group import GroupEntry, open_bus_group
from backpack_actors.bus.schema import Keys
from backpack_actors.core.events import Trade
from backpack_actors.sinks.redis import open_redis_sink
from tests.bus.helpers import REDIS_URL, generate, isolated_prefix

SYMBOLS = ["BTC-USDC", "ETH-USDC"]


async def test_a_dead_members_entries_are_claimed_and_every_trade_processed_once() -> None:
    emitted, _ = await trio.to_thread.run_sync(partial(generate, SYMBOLS, events=3000, seed=13))
    truth = {(e.symbol, e.trade_id) for e in emitted if isinstance(e, Trade)}
    assert len(truth) > 300
    processed: list[tuple[str, int]] = []
    with trio.fail_after(60):
        async with isolated_prefix() as prefix:
            async with open_redis_sink(REDIS_URL, keys=Keys(prefix)) as sink:
                await sink.publish(emitted)
            async with open_bus_group(
                REDIS_URL, SYMBOLS, "writers", "a", prefix=prefix, claim_after=0.5, block=0.05
            ) as a:
                taken = await a.read_batch()
                assert taken, "a got work"
                # a dies here: nothing of what it took is acknowledged.
            dead = {(i.event.symbol, i.event.trade_id) for i in taken if _is_trade(i)}
            async with open_bus_group(
                REDIS_URL, SYMBOLS, "writers", "b", prefix=prefix, claim_after=0.5, block=0.05
            ) as b:
                while {*processed} != truth:
                    for item in await b.read_batch():
                        if _is_trade(item):
                            assert isinstance(item.event, Trade)
                            processed.append((item.event.symbol, item.event.trade_id))
                        await b.ack(item)
                assert b.claimed >= len(taken), "a's pending entries were claimed"
                for key in b.streams:
                    pending = await b.client.xpending(key, "writers")
                    assert pending.pending == 0
    assert len(processed) == len(set(processed)), "no trade twice"
    assert dead <= set(processed)


def _is_trade(item: GroupEntry) -> bool:
    return isinstance(item.event, Trade)
