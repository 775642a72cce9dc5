"""A sharded publisher's sink, against the real Redis: events of a subscription that ended are
never written under a later epoch. A symbol's lease is lost (the feed unsubscribes it) and taken
back (the feed subscribes it again) while events of the old subscription still wait in the
sink's queue; the new epoch must start with the new subscription's snapshot, hold nothing of the
old one and no checkpoint of the book the sink kept before (not even when Redis loses its data
just then and the sink starts again behind checkpoints), and end equal to the simulator's book.
Also when the queue's status bound lost both statuses (a lost status always leaves an overflow
report in its place), and with two ended subscriptions queued."""

from __future__ import annotations

from functools import partial
from typing import Any

import coredis
import pytest
import trio

from backpack_actors.bus.schema import Keys, decode_payload, parse_meta
from backpack_actors.bus.shard import ShardedSink
from backpack_actors.core.events import (
    BookDelta,
    BookSnapshot,
    Event,
    StatusEvent,
    StatusKind,
    Trade,
)
from backpack_actors.sinks.redis import redis_client
from tests.bus.helpers import REDIS_URL, Books, generate, isolated_prefix, stream_of

SYMBOL = "BTC-USDC"


class Leases:
    """An ownership moved by hand: the symbol's epoch while this publisher holds it."""

    def __init__(self) -> None:
        self.epochs: dict[str, int] = {}

    async def ensure(self, client: coredis.Redis[bytes], symbols: set[str]) -> None:
        """Nothing to fetch: the test sets the epochs."""

    def epoch_of(self, symbol: str) -> int | None:
        return self.epochs.get(symbol)


def _reconnect_later(exchange: Any) -> None:
    # The feed's resync after a reconnect: a fresh REST snapshot, as after subscribing again.
    exchange.faults.disconnect_after(frames=200)


def _status(kind: StatusKind, **counts: int) -> StatusEvent:
    return StatusEvent(symbol=SYMBOL, kind=kind, reason=f"{kind.value} (test)", counts=counts)


async def _entries(client: coredis.Redis[bytes], key: str) -> list[tuple[int, bytes, Event]]:
    out = []
    for entry in await client.xrange(key):
        meta = parse_meta(entry.field_values)
        out.append((meta.epoch, meta.kind, decode_payload(entry.field_values[b"d"], meta.codec)))
    return out


@pytest.mark.parametrize("lost", ["nothing", "both"])
async def test_events_of_an_ended_subscription_never_reach_a_later_epoch(lost: str) -> None:
    emitted, exchange = await trio.to_thread.run_sync(
        partial(generate, [SYMBOL], events=600, seed=5, on_ready=_reconnect_later)
    )
    # The simulator's resync snapshot stands for the new subscription's first snapshot.
    resync = next(
        i for i, e in enumerate(emitted) if isinstance(e, BookSnapshot) and e.reason == "resync"
    )
    cut = resync // 2
    written, queued, new = emitted[:cut], emitted[cut:resync], emitted[resync:]
    # Trades of the new subscription arrive while its REST snapshot is still on the way.
    first_trades = [i for i, e in enumerate(new) if isinstance(e, Trade)][:3]
    early = [new[i] for i in first_trades]
    late = [e for i, e in enumerate(new) if i not in first_trades]
    assert sum(isinstance(e, BookDelta) for e in queued) > 20
    assert sum(isinstance(e, Trade) for e in queued) > 0
    boundary = {
        "nothing": [_status(StatusKind.UNSUBSCRIBED), _status(StatusKind.LISTED)],
        "both": [_status(StatusKind.CONSUMER_OVERFLOW, dropped_status=2, dropped_trades=0)],
    }[lost]
    with trio.fail_after(30):
        async with isolated_prefix() as prefix, redis_client(REDIS_URL) as client:
            keys = Keys(prefix)
            leases = Leases()
            sink = ShardedSink(client, keys=keys, ownership=leases, checkpoint_deltas=100)
            await client.set(keys.epoch(SYMBOL), 1)
            leases.epochs[SYMBOL] = 1
            await sink.publish(written)
            # The lease is lost; the feed unsubscribes the symbol...
            del leases.epochs[SYMBOL]
            sink.unsubscribing(SYMBOL)
            # ...and it is taken back at a later epoch and subscribed again, before the sink
            # got to the old subscription's last events.
            await client.set(keys.epoch(SYMBOL), 3)
            leases.epochs[SYMBOL] = 3
            sink.subscribing(SYMBOL)
            # Redis loses its data while the new subscription's first trades are written, before
            # its snapshot came: the write is retried behind checkpoints of every book the sink
            # knows, which must not include the book kept from the old subscription.
            alive = [key async for key in client.scan_iter(match=f"{prefix}:alive:*")]
            await client.delete(alive)
            await sink.publish(queued + boundary + early)
            assert sink.restarts == 1
            await sink.publish(late)
            book = await _entries(client, keys.book(SYMBOL))
            trades = await _entries(client, keys.trades(SYMBOL))
            status = await _entries(client, keys.status)
    later = [(kind, event) for epoch, kind, event in book if epoch == 3]
    assert later, "the new epoch was written"
    kind, first = later[0]
    assert kind == b"e", "the new epoch starts with a feed event, not a checkpoint"
    assert first == late[0], "the new epoch starts with the new subscription's snapshot"
    delivered = [event for kind, event in later if kind == b"e"]
    assert delivered == [e for e in late if e.symbol and stream_of(e) == (SYMBOL, "book")]
    new_trades = [e for e in new if isinstance(e, Trade)]
    assert [e for epoch, _, e in trades if epoch == 3 and isinstance(e, Trade)] == new_trades
    assert all(epoch == 1 for epoch, _, _ in book[: len(book) - len(later)])
    markers = {StatusKind.LISTED, StatusKind.UNSUBSCRIBED, StatusKind.CONSUMER_OVERFLOW}
    assert not [
        e for _, _, e in book + trades + status if isinstance(e, StatusEvent) and e.kind in markers
    ], "the publisher's own subscription changes are not written"
    books = Books()
    for _, event in later:
        books.apply(event)
    books.assert_truth(exchange, "BTC_USDC")


async def test_two_ended_subscriptions_queued_are_both_dropped() -> None:
    """Lost, retaken, lost and retaken again before the sink reads any of it: only the third
    (current) subscription's events are admitted, in order; nothing of the second one."""
    emitted, _exchange = await trio.to_thread.run_sync(
        partial(generate, [SYMBOL], events=300, seed=6)
    )
    books = [e for e in emitted if isinstance(e, BookSnapshot | BookDelta)]
    first, second, third = books[:40], books[40:80], books[80:]
    sink = ShardedSink(None)  # admission needs no Redis
    queue: list[Event] = [*first]
    for part in (second, third):
        sink.unsubscribing(SYMBOL)
        queue.append(_status(StatusKind.UNSUBSCRIBED))
        sink.subscribing(SYMBOL)
        queue.append(_status(StatusKind.LISTED))
        queue.extend(part)
    assert sink._admit(queue) == third
    assert not sink._ending
    assert not sink._starting
