"""A publisher: one feed subscription into Redis Streams, for the symbols this process leases.

``backpack-actors run --bus redis://...`` runs :func:`run_bus_publisher` beside its other
outputs. Given its ``feed``, a publisher shards the exchange connections too
(:mod:`backpack_actors.bus.shard`): the feed streams only the symbols whose lease it holds, a
symbol taken over is subscribed then and starts from the feed's fresh snapshot, a symbol given
up is unsubscribed. Without the feed it can only write the symbols it leases of whatever the
feed streams (every symbol, when the feed runs the whole list).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any

import trio

from backpack_actors.actors.emitter import Subscription
from backpack_actors.bus.lease import ShardCoordinator
from backpack_actors.bus.schema import Codec, Keys
from backpack_actors.bus.shard import FeedShard, ShardedSink
from backpack_actors.sinks import SinkStats, run_sink
from backpack_actors.sinks.redis import RedisStreamsSink, redis_client

if TYPE_CHECKING:
    from backpack_actors.feed import Feed

__all__ = ["BusOptions", "run_bus_publisher"]


@dataclass
class BusOptions:
    """Where and how a publisher writes (``run --bus URL`` and its ``--bus-*`` options)."""

    url: str = field(repr=False)
    """``redis://[user:password@]host:port/db`` (kept out of reprs: it may hold a password)."""
    prefix: str = "bpa"
    codec: Codec = "json"
    lease_ttl: float = 3.0
    checkpoint_deltas: int = 500
    checkpoint_interval: float = 5.0
    publisher_id: str | None = None


async def run_bus_publisher(
    subscription: Subscription,
    options: BusOptions,
    symbols: Sequence[str],
    *,
    feed: Feed | None = None,
    stats: SinkStats | None = None,
    stderr: IO[str] | None = None,
    task_status: trio.TaskStatus[ShardCoordinator] = trio.TASK_STATUS_IGNORED,
) -> SinkStats:
    """Publish ``subscription`` to the bus at ``options.url`` until cancelled, sharing
    ``symbols`` (normalized) with the other publishers of ``options.prefix``.

    With ``feed`` (the feed ``subscription`` belongs to), the publisher owns that feed's market
    set: it subscribes exactly the symbols it leases and unsubscribes the others."""
    stats = stats if stats is not None else SinkStats()
    keys = Keys(options.prefix)
    # coredis runs its connections as tasks inside `async with client`: a cancellation reaching
    # them would close the client before the sink's last writes and the lease release. So the
    # client lives in a shielded scope, and a cancellation from outside only stops the work
    # (the sink then flushes within its 2 s and the leases are released, within 5 s in all).
    shield = trio.CancelScope(shield=True)
    work = trio.CancelScope()
    finished = trio.Event()

    async def publish(*, task_status: trio.TaskStatus[ShardCoordinator]) -> None:
        try:
            with shield:
                async with redis_client(options.url) as client:
                    settings: dict[str, Any] = {
                        "keys": keys,
                        "codec": options.codec,
                        "checkpoint_deltas": options.checkpoint_deltas,
                        "checkpoint_interval": options.checkpoint_interval,
                    }
                    shard: FeedShard | None = None
                    sink: RedisStreamsSink
                    if feed is None:
                        sink = RedisStreamsSink(client, **settings)
                    else:
                        sharded = ShardedSink(client, **settings)
                        shard, sink = FeedShard(feed, sharded), sharded
                    # The coordinator, built once the shard is there to be told of its changes,
                    # is the sink's ownership.
                    coordinator = ShardCoordinator(
                        client,
                        symbols,
                        keys=keys,
                        publisher_id=options.publisher_id,
                        ttl=options.lease_ttl,
                        on_change=None if shard is None else shard.changed,
                    )
                    sink.ownership = coordinator
                    with work:
                        async with trio.open_nursery() as nursery:
                            await nursery.start(coordinator.run)
                            if shard is not None:
                                # After the first heartbeat: the symbols not leased then are
                                # unsubscribed at once.
                                await nursery.start(shard.run)
                            task_status.started(coordinator)
                            await run_sink(
                                sink, subscription, stats=stats, stderr=stderr or sys.stderr
                            )
                            nursery.cancel_scope.cancel()
        finally:
            finished.set()

    async with trio.open_nursery() as outer:
        coordinator = await outer.start(publish)
        task_status.started(coordinator)
        try:
            await finished.wait()
        finally:
            work.cancel()
            shield.deadline = trio.current_time() + 5.0
    return stats
