"""A publisher: one feed subscription into Redis Streams, for the symbols this process leases.

``backpack-actors run --bus redis://...`` runs :func:`run_bus_publisher` beside its other
outputs. Each publisher runs the feed on the whole symbol list (so a symbol it takes over starts
with a checkpoint of a book it already keeps, with no REST call and no wait for a resync) and
writes only the symbols it holds the lease of.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import IO

import trio

from backpack_actors.actors.emitter import Subscription
from backpack_actors.bus.lease import ShardCoordinator
from backpack_actors.bus.schema import Codec, Keys
from backpack_actors.sinks import SinkStats, run_sink
from backpack_actors.sinks.redis import RedisStreamsSink, redis_client

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
    stats: SinkStats | None = None,
    stderr: IO[str] | None = None,
    task_status: trio.TaskStatus[ShardCoordinator] = trio.TASK_STATUS_IGNORED,
) -> SinkStats:
    """Publish ``subscription`` to the bus at ``options.url`` until cancelled, sharing
    ``symbols`` (normalized) with the other publishers of ``options.prefix``."""
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
                    coordinator = ShardCoordinator(
                        client,
                        symbols,
                        keys=keys,
                        publisher_id=options.publisher_id,
                        ttl=options.lease_ttl,
                    )
                    sink = RedisStreamsSink(
                        client,
                        keys=keys,
                        codec=options.codec,
                        ownership=coordinator,
                        checkpoint_deltas=options.checkpoint_deltas,
                        checkpoint_interval=options.checkpoint_interval,
                    )
                    with work:
                        async with trio.open_nursery() as nursery:
                            await nursery.start(coordinator.run)
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
