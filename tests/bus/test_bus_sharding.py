"""Connection sharding: a publisher given its feed streams exactly the symbols it leases. It
unsubscribes what it gives back when a peer joins, and subscribes what it takes over when that
peer dies; a symbol taken over starts from a fresh snapshot of the feed (not a book kept from
before), readers report the handover and end with the simulator's books. The handover is timed
and printed: the lease expiry, then subscribe + snapshot (the snapshot's REST call given a real
round trip).

Real Redis (own key prefix), the simulator in-process, real time. The peer is a bare lease
holder: it "dies" by stopping its heartbeats without releasing anything, as a SIGKILL would.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import coredis
import trio

from backpack_actors.bus import open_bus_feed
from backpack_actors.bus.lease import ShardCoordinator
from backpack_actors.bus.publisher import BusOptions, run_bus_publisher
from backpack_actors.bus.schema import Keys, decode_payload, parse_meta
from backpack_actors.config import FeedConfig
from backpack_actors.core.events import BookDelta, BookSnapshot, Event, StatusEvent, StatusKind
from backpack_actors.feed import Feed
from backpack_actors.sim import SimConfig, SimExchange
from backpack_actors.testing import SimRestClient, sim_memory_connector
from backpack_actors.transport.rest import DepthSnapshotText
from tests.bus.helpers import REDIS_URL, Books, Watch, isolated_prefix

MARKETS = ["BTC_USDC", "ETH_USDC", "SOL_USDC", "BTC_USDC_PERP"]
SYMBOLS = [m.replace("_", "-") for m in MARKETS]
TTL = 1.0
# What one REST depth call to the exchange takes (a round trip and the answer): the snapshot a
# takeover now waits for.
REST_DELAY = 0.2


class SlowDepth(SimRestClient):
    """The simulator's REST API, its depth snapshots answered after a real round trip's time."""

    async def depth(self, exchange_symbol: str) -> DepthSnapshotText:
        await trio.sleep(REST_DELAY)
        return await super().depth(exchange_symbol)


def _feed(exchange: SimExchange) -> Feed:
    config = FeedConfig.from_kwargs(
        symbols=SYMBOLS,
        rest_url="http://sim.invalid",
        ws_url="ws://sim.invalid",
        snapshot_interval=0,
    )
    return Feed(
        config,
        rest_client=SlowDepth(exchange),
        ws_connect=sim_memory_connector(exchange),
        consume=False,
    )


def carried(feed: Feed) -> set[str]:
    """The symbols the feed's connection actors carry (normalized)."""
    connections = feed.tree.connections
    assert connections is not None
    return {s.replace("_", "-") for actor in connections.actors for s in actor.symbols}


def streamed(exchange: SimExchange) -> set[str]:
    """The symbols (normalized) some WS session of the simulator is subscribed to."""
    return {
        stream.rsplit(".", 1)[-1].replace("_", "-")
        for session in exchange._sessions
        for stream in session.streams
    }


async def settled(condition: Callable[[], bool], within: float) -> bool:
    """Whether ``condition`` holds within ``within`` seconds (checked every 10 ms)."""
    with trio.move_on_after(within):
        while True:
            if condition():
                return True
            await trio.sleep(0.01)
    return condition()


class Peer:
    """Another publisher's leases, without a feed: takes its share, then dies silently."""

    def __init__(self, client: coredis.Redis[bytes], prefix: str) -> None:
        self.leases = ShardCoordinator(
            client, SYMBOLS, keys=Keys(prefix), publisher_id="peer", ttl=TTL
        )
        self.scope = trio.CancelScope()
        self.last_beat = 0.0

    async def beat(self) -> None:
        with self.scope:
            while True:
                await self.leases.tick()
                self.last_beat = trio.current_time()
                await trio.sleep(TTL / 4)


async def test_publisher_streams_exactly_its_leases_and_takes_over_from_a_fresh_snapshot() -> None:
    exchange = SimExchange(seed=23, markets=MARKETS, config=SimConfig(rate=40))
    feed = _feed(exchange)
    subscription = feed.subscribe_events("redis", 100_000)
    books = Books()
    watch = Watch()
    deltas: dict[str, int] = {}
    handed_over: set[str] = set()
    resynced_at: dict[str, float] = {}

    def note(event: Event) -> None:
        books.apply(event)
        if isinstance(event, BookDelta):
            deltas[event.symbol] = deltas.get(event.symbol, 0) + 1
        elif isinstance(event, StatusEvent):
            if event.kind is StatusKind.RESYNCING and "handover" in event.reason:
                handed_over.add(event.symbol)
            elif event.kind is StatusKind.RESYNCED and event.symbol in handed_over:
                resynced_at.setdefault(event.symbol, trio.current_time())

    with trio.fail_after(60):
        async with (
            isolated_prefix() as prefix,
            open_bus_feed(REDIS_URL, SYMBOLS, prefix=prefix, block=0.1) as bus,
            trio.open_nursery() as nursery,
        ):

            async def read() -> None:
                async for batch in bus.batches():
                    for event in batch:
                        note(event)
                    watch.poke()

            nursery.start_soon(read)
            await nursery.start(exchange.run)
            await nursery.start(feed.run)
            options = BusOptions(
                url=REDIS_URL,
                prefix=prefix,
                lease_ttl=TTL,
                checkpoint_interval=1.0,
                publisher_id="publisher",
            )
            publisher: ShardCoordinator = await nursery.start(
                partial(run_bus_publisher, subscription, options, SYMBOLS, feed=feed)
            )
            # Alone: it leases, carries and writes every symbol.
            assert set(publisher.owned) == set(SYMBOLS)
            await watch.until(lambda: all(deltas.get(s, 0) >= 20 for s in SYMBOLS))
            assert carried(feed) == set(SYMBOLS)
            old_epochs = dict(publisher.owned)

            # A peer joins: the publisher gives half back and stops carrying those symbols.
            client: coredis.Redis[bytes] = coredis.Redis.from_url(REDIS_URL)
            async with client:
                peer = Peer(client, prefix)
                nursery.start_soon(peer.beat)
                assert await settled(
                    lambda: len(peer.leases.owned) == 2 and len(publisher.owned) == 2, 5 * TTL
                )
                given_up = set(peer.leases.owned)
                kept = set(publisher.owned)
                assert await settled(lambda: carried(feed) == kept, 10.0), (
                    f"carries {sorted(carried(feed))}, leases {sorted(kept)}"
                )
                assert kept <= streamed(exchange)
                at_split = dict(deltas)
                await watch.until(lambda: all(deltas[s] >= at_split[s] + 10 for s in kept))
                assert carried(feed) == kept == set(publisher.owned)

                # The peer dies: its leases expire; the publisher takes them over, subscribes them
                # and writes each from the feed's fresh snapshot.
                peer.scope.cancel()
                died_at = peer.last_beat
                await watch.until(lambda: given_up <= resynced_at.keys())
            assert set(publisher.owned) == set(SYMBOLS)
            assert await settled(lambda: carried(feed) == set(SYMBOLS), 10.0)
            assert set(SYMBOLS) <= streamed(exchange)
            at_takeover = dict(deltas)
            await watch.until(lambda: all(deltas[s] >= at_takeover[s] + 20 for s in given_up))
            exchange.pause()
            final = {m: exchange.last_update_id(m) for m in MARKETS}
            await watch.until(lambda: all(books.last_id.get(m, 0) >= final[m] for m in MARKETS))
            raw = {s: await _book_entries(prefix, s) for s in given_up}
            new_epochs = dict(publisher.owned)
            await feed.aclose()
            nursery.cancel_scope.cancel()

    for market in MARKETS:
        books.assert_truth(exchange, market)
    assert bus.stats.handovers >= len(given_up)
    for symbol in given_up:
        new_epoch = new_epochs[symbol]
        assert new_epoch > peer.leases.owned[symbol] > old_epochs[symbol]
        entries = raw[symbol]
        first = next(i for i, (epoch, _, _) in enumerate(entries) if epoch == new_epoch)
        _, kind, event = entries[first]
        # A snapshot the feed took after subscribing, not a checkpoint of a book kept before.
        assert kind == b"e", f"{symbol}: the new epoch starts with a {kind!r} entry"
        assert isinstance(event, BookSnapshot), event
        assert event.reason == "initial", event
        assert all(epoch >= new_epoch for epoch, _, _ in entries[first:])
        # The handover: the lease's expiry (TTL plus up to a heartbeat), then subscribe + snapshot.
        total = resynced_at[symbol] - died_at
        fresh = resynced_at[symbol] - publisher.taken_at[symbol]
        timing = f"{total:.3f} s after the peer's last renewal, {fresh:.3f} s of it subscribe"
        print(f"handover {symbol}: {timing} + snapshot ({REST_DELAY:g} s REST round trip)")
        # The new epoch waited for a snapshot taken after the takeover (a lower bound cannot
        # flake under load; the upper bound is the test's own time cap).
        assert fresh >= REST_DELAY, fresh
        assert total >= TTL, total


async def test_a_symbol_given_up_is_unsubscribed_at_the_exchange() -> None:
    exchange = SimExchange(seed=29, markets=MARKETS, config=SimConfig(rate=20))
    feed = _feed(exchange)
    subscription = feed.subscribe_events("redis", 100_000)
    with trio.fail_after(30):
        async with (
            isolated_prefix() as prefix,
            trio.open_nursery() as nursery,
            coredis.Redis.from_url(REDIS_URL) as client,
        ):
            await nursery.start(exchange.run)
            await nursery.start(feed.run)
            options = BusOptions(url=REDIS_URL, prefix=prefix, lease_ttl=TTL)
            publisher: ShardCoordinator = await nursery.start(
                partial(run_bus_publisher, subscription, options, SYMBOLS, feed=feed)
            )
            peer = Peer(client, prefix)
            nursery.start_soon(peer.beat)
            assert await settled(lambda: len(publisher.owned) == 2, 5 * TTL)
            assert await settled(lambda: carried(feed) == set(publisher.owned), 10.0)
            gone = await settled(lambda: streamed(exchange) == set(publisher.owned), 10.0)
            left = streamed(exchange) - set(publisher.owned)
            await feed.aclose()
            nursery.cancel_scope.cancel()
    assert gone, f"the exchange still streams {sorted(left)} to the publisher"


async def _book_entries(prefix: str, symbol: str) -> list[tuple[int, bytes, Event]]:
    """(epoch, kind, event) of every book entry of ``symbol`` still in its stream, oldest first."""
    client: coredis.Redis[bytes] = coredis.Redis.from_url(REDIS_URL)
    async with client:
        entries = await client.xrange(Keys(prefix).book(symbol))
    out = []
    for entry in entries:
        fields = entry.field_values
        meta = parse_meta(fields)
        out.append((meta.epoch, meta.kind, decode_payload(fields[b"d"], meta.codec)))
    return out
