"""Leases on the real Redis: publishers split the symbols fairly, a silent publisher's symbols
move to the others with a larger epoch, a publisher whose renewals stopped stops writing before
its lease can have expired, and Redis itself refuses entries of a superseded epoch."""

from __future__ import annotations

from functools import partial

import coredis
import trio

from backpack_actors.bus.lease import ShardCoordinator
from backpack_actors.bus.schema import Keys
from backpack_actors.sinks.redis import RedisStreamsSink, redis_client
from tests.bus.helpers import REDIS_URL, generate, isolated_prefix

SYMBOLS = ["AAA-USDC", "BBB-USDC", "CCC-USDC", "DDD-USDC"]


async def test_fair_split_takeover_with_larger_epochs_and_local_fencing() -> None:
    ttl = 0.6
    with trio.fail_after(30):
        async with isolated_prefix() as prefix:
            client: coredis.Redis[bytes] = coredis.Redis.from_url(REDIS_URL)
            async with client:
                keys = Keys(prefix)
                a = ShardCoordinator(client, SYMBOLS, keys=keys, publisher_id="a", ttl=ttl)
                b = ShardCoordinator(client, SYMBOLS, keys=keys, publisher_id="b", ttl=ttl)
                await a.tick()
                assert set(a.owned) == set(SYMBOLS), "alone, a takes everything"
                first_epochs = dict(a.owned)
                await b.tick()
                assert not b.owned, "nothing is free yet"
                await a.tick()  # sees two publishers: gives half back
                await b.tick()
                assert len(a.owned) == len(b.owned) == 2
                assert not set(a.owned) & set(b.owned), "one publisher per symbol"
                for symbol, epoch in b.owned.items():
                    assert epoch > first_epochs[symbol], "a new owner has a larger epoch"
                    assert a.epoch_of(symbol) is None
                # a falls silent (no more heartbeats): it stops writing on its own first...
                a_symbols = set(a.owned)
                silent_since = trio.current_time()
                assert all(a.epoch_of(s) is not None for s in a_symbols)
                await trio.sleep_until(silent_since + 0.8 * ttl)
                assert all(a.epoch_of(s) is None for s in a_symbols)
                stopped_after = trio.current_time() - silent_since
                # ...and b takes its symbols once its leases and registration expired.
                while set(b.owned) != set(SYMBOLS):
                    await b.tick()
                    await trio.sleep(ttl / 4)
                taken_after = trio.current_time() - silent_since
                assert taken_after <= ttl * 1.25 + 0.3, taken_after
                assert stopped_after < taken_after, "the old owner stopped before the takeover"
                for symbol in a_symbols:
                    assert b.epoch_of(symbol) is not None
                # a's stale renewals fail (compare-and-renew): it drops what it lost.
                await a.tick()
                assert not set(a.owned) & a_symbols
                assert a.lost == len(a_symbols)
                await b.release_all()
                await a.release_all()
                assert await client.zcard(keys.publishers) == 0


async def test_redis_refuses_entries_of_a_superseded_epoch() -> None:
    """Fencing at the storage: once a symbol's epoch moved on (a takeover), entries of the old
    epoch are not written, whatever the old publisher believes."""
    emitted, _ = await trio.to_thread.run_sync(partial(generate, ["BTC-USDC"], events=300))
    with trio.fail_after(30):
        async with isolated_prefix() as prefix, redis_client(REDIS_URL) as client:
            keys = Keys(prefix)
            old = RedisStreamsSink(client, keys=keys)
            await old.publish(emitted[:150])
            before = (
                await client.xlen(keys.book("BTC-USDC")),
                await client.xlen(keys.trades("BTC-USDC")),
            )
            assert min(before) > 0
            await client.incr(keys.epoch("BTC-USDC"))  # another publisher took BTC-USDC over
            await old.publish(emitted[150:])
            after = (
                await client.xlen(keys.book("BTC-USDC")),
                await client.xlen(keys.trades("BTC-USDC")),
            )
            assert after == before, "nothing of the old epoch was written"
            assert old.fenced > 0
            new = RedisStreamsSink(client, keys=keys)
            await new.publish(emitted[150:])
            # (The new sink has seen no snapshot yet: it writes trades, no book entries.)
            assert await client.xlen(keys.trades("BTC-USDC")) > before[1]
            assert new.fenced == 0
