"""Sinks: where a feed's events go besides the consumer — each on its own subscription.

A :class:`Sink` is written from a worker thread (``write`` may block on a pipe, a disk or a
network), never from the trio thread, so a stalled output can never freeze the feed: while a
write blocks, the sink's own subscription fills and applies the feed's per-subscriber policy
(books conflate; trades are dropped with an in-band ``consumer_overflow`` entry that the sink
writes when it catches up). :func:`run_sink` is the loop that moves events from a subscription to a
sink; on exit it writes what is still queued within ``flush_timeout`` seconds and says on stderr
what it could not write.

To add a sink (a message bus, Parquet): implement ``write``/``close`` and run it with
:func:`run_sink` on ``feed.subscribe_events(name)``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import IO, Protocol

import trio

from backpack_actors.actors.emitter import Subscription
from backpack_actors.core.events import Event

__all__ = ["Sink", "SinkStats", "run_sink"]


class Sink(Protocol):
    """Something events are written to; both methods run in a worker thread."""

    name: str

    def write(self, events: list[Event]) -> object:
        """Write one batch (whole, in order); may block. The result is ignored."""

    def close(self) -> None:
        """Flush and release; called once, after the last write."""


class SinkStats:
    """What :func:`run_sink` did: events written, and those it had to give up on at exit."""

    __slots__ = ("batches", "events", "unwritten")

    def __init__(self) -> None:
        self.events = 0
        self.batches = 0
        self.unwritten = 0


async def run_sink(
    sink: Sink,
    subscription: Subscription,
    *,
    stats: SinkStats | None = None,
    max_events: int | None = None,
    on_limit: Callable[[], None] | None = None,
    batch: int = 1000,
    flush_timeout: float = 2.0,
    stderr: IO[str] | None = None,
) -> SinkStats:
    """Write ``subscription``'s events to ``sink`` until cancelled, the subscription ends, or
    ``max_events`` were written (then ``on_limit()`` is called)."""
    stats = stats if stats is not None else SinkStats()
    # One thread at a time per sink: writes stay in order; a write abandoned at exit is the
    # only one that may still be running when the process ends.
    limiter = trio.CapacityLimiter(1)
    in_flight = 0  # events of a write not known to have finished (abandoned at exit)

    def room() -> int:
        if max_events is None:
            return batch
        return max(0, min(batch, max_events - stats.events))

    async def write(events: list[Event]) -> None:
        nonlocal in_flight
        in_flight = len(events)
        await trio.to_thread.run_sync(sink.write, events, limiter=limiter, abandon_on_cancel=True)
        in_flight = 0
        stats.events += len(events)
        stats.batches += 1

    try:
        while room() > 0:
            try:
                events = await subscription.get_batch(room())
            except trio.EndOfChannel:
                break
            await write(events)
        else:
            if on_limit is not None:
                on_limit()
    finally:
        with trio.CancelScope(shield=True):
            with trio.move_on_after(flush_timeout) as flushing:
                # An abandoned write still holds the limiter: these wait for it, in order.
                while room() > 0 and (events := subscription.get_batch_nowait(room())):
                    await write(events)
                await trio.to_thread.run_sync(sink.close, limiter=limiter, abandon_on_cancel=True)
            if flushing.cancelled_caught:
                stats.unwritten = len(subscription) + in_flight
                err = stderr if stderr is not None else sys.stderr
                print(
                    f"warning: {sink.name}: output stalled; {stats.unwritten} events not "
                    f"written (gave up after {flush_timeout:g} s)",
                    file=err,
                    flush=True,
                )
            subscription.close()
    return stats
