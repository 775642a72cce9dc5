"""The emitter: fan-out of published events to every subscriber, each with its own bounded queue.

The reconciler publishes synchronously (no await) right after applying a message; the emitter
hands the events to every :class:`Subscription` at once. A subscription never makes the publisher
wait: each applies the written policy of :mod:`backpack_actors.core.conflation` (books conflate,
trades are lossless up to the bound and then dropped with an in-band ``consumer_overflow`` report).
So a slow consumer, a stalled sink or a busy callback pays for itself; streams, sockets and REST
never notice (the slow subscriber pays — tractor's rule).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import trio

from backpack_actors.core.conflation import SubscriberQueue, TradePolicy
from backpack_actors.core.events import BookSnapshot, Event

__all__ = ["Emitter", "EventQueue", "Subscription"]


class Subscription:
    """One subscriber's queue (see the module docstring); read with :meth:`get_batch`."""

    def __init__(
        self,
        name: str,
        capacity: int,
        snapshot_of: Callable[[str], BookSnapshot | None],
        *,
        trade_policy: TradePolicy = "drop_newest",
        now: Callable[[], float] = lambda: 0.0,
        on_close: Callable[[Subscription], None] | None = None,
    ) -> None:
        self.name = name
        self._queue = SubscriberQueue(capacity, snapshot_of, trade_policy=trade_policy, now=now)
        # The reader task parked in _wait (at most one), rescheduled directly by the publisher:
        # cheaper per wake-up than a trio.Event (no lot, no object per wait).
        self._waiter: trio.lowlevel.Task | None = None
        self._closed = False
        self._on_close = on_close
        self.published = 0

    def __repr__(self) -> str:
        return f"Subscription({self.name!r}, queued={len(self._queue)})"

    def __len__(self) -> int:
        return len(self._queue)

    @property
    def closed(self) -> bool:
        return self._closed

    # -- producer side ---------------------------------------------------------------------------

    def offer_many(self, events: list[Event]) -> None:
        """Queue ``events`` (never waits); wakes a waiting reader."""
        if self._closed:
            return
        self.published += len(events)
        self._queue.offer_many(events)
        waiter = self._waiter
        if waiter is not None:
            # Only a waiting reader costs a wake-up: most publishes find it busy.
            self._waiter = None
            trio.lowlevel.reschedule(waiter)

    def close(self) -> None:
        """No more events: a waiting reader drains what is queued, then ends."""
        if self._closed:
            return
        self._closed = True
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            trio.lowlevel.reschedule(waiter)
        if self._on_close is not None:
            self._on_close(self)

    # -- consumer side ---------------------------------------------------------------------------

    def get_nowait(self) -> Event | None:
        """The next event, or None when nothing is queued."""
        return self._queue.pop()

    def get_batch_nowait(self, limit: int = 4096) -> list[Event]:
        """Up to ``limit`` queued events, oldest first (empty when none)."""
        if limit < 1:
            # pop_many(0) is always empty: a waiting get_batch would never return.
            raise ValueError(f"limit must be at least 1, got {limit}")
        return self._queue.pop_many(limit)

    async def get(self) -> Event:
        """The next event; raises ``trio.EndOfChannel`` once closed and drained."""
        while True:
            event = self._queue.pop()
            if event is not None:
                return event
            await self._wait()

    async def get_batch(self, limit: int = 4096) -> list[Event]:
        """At least one and up to ``limit`` events; ``trio.EndOfChannel`` once closed and
        drained. Returns without a checkpoint while events are queued."""
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        pop_many = self._queue.pop_many
        while True:
            events = pop_many(limit)
            if events:
                return events
            await self._wait()

    def batches(self, limit: int = 4096) -> AsyncIterator[list[Event]]:
        """``async for events in sub.batches()``: :meth:`get_batch` until closed and drained.

        An iterator object rather than an async generator: each list costs one coroutine, not
        a generator step around one (this is the consumer's per-read path)."""
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        return _Batches(self, limit)

    async def _wait(self) -> None:
        if self._closed:
            raise trio.EndOfChannel
        if self._waiter is not None:
            raise trio.BusyResourceError(f"subscription {self.name!r} already has a reader")
        self._waiter = trio.lowlevel.current_task()
        await trio.lowlevel.wait_task_rescheduled(self._abort)

    def _abort(self, _raise_cancel: object) -> trio.lowlevel.Abort:
        self._waiter = None
        return trio.lowlevel.Abort.SUCCEEDED

    def __aiter__(self) -> AsyncIterator[Event]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Event]:
        while True:
            try:
                yield await self.get()
            except trio.EndOfChannel:
                return

    # -- statistics ------------------------------------------------------------------------------

    @property
    def conflated(self) -> dict[str, int]:
        """Book events absorbed per symbol by conflation."""
        return dict(self._queue.conflated)

    @property
    def dropped_trades(self) -> dict[str, int]:
        """Trades dropped per symbol because this subscriber fell behind (each reported)."""
        return dict(self._queue.dropped_trades)

    @property
    def dropped(self) -> int:
        """Every event dropped (trades and status events), each reported in-band."""
        return sum(self._queue.dropped_trades.values()) + self._queue.dropped_status

    @property
    def max_depth(self) -> int:
        return self._queue.max_depth

    def statistics(self) -> dict[str, object]:
        return {
            "name": self.name,
            "depth": len(self._queue),
            "max_depth": self._queue.max_depth,
            "capacity": self._queue.capacity,
            "published": self.published,
            "conflated": self.conflated,
            "dropped_trades": self.dropped_trades,
            "dropped_status": self._queue.dropped_status,
        }


class _Batches:
    """What :meth:`Subscription.batches` returns."""

    __slots__ = ("_limit", "_pop_many", "_queue", "_sub")

    def __init__(self, sub: Subscription, limit: int) -> None:
        self._sub = sub
        self._limit = limit
        self._queue = sub._queue
        self._pop_many = sub._queue.pop_many

    def __aiter__(self) -> _Batches:
        return self

    async def __anext__(self) -> list[Event]:
        while True:
            # An empty queue goes straight to waiting (a length costs less than an empty pop).
            if len(self._queue):
                events = self._pop_many(self._limit)
                if events:
                    return events
            sub = self._sub
            # Subscription._wait inline (one coroutine less per wait).
            if sub._closed:
                raise StopAsyncIteration
            if sub._waiter is not None:
                raise trio.BusyResourceError(f"subscription {sub.name!r} already has a reader")
            sub._waiter = trio.lowlevel.current_task()
            await trio.lowlevel.wait_task_rescheduled(sub._abort)


EventQueue = Subscription
"""The consumer queue's name before every subscriber had its own (kept for existing imports)."""


class Emitter:
    """Fan-out to subscriptions; :meth:`publish` is synchronous and never waits."""

    def __init__(
        self,
        snapshot_of: Callable[[str], BookSnapshot | None],
        *,
        now: Callable[[], float] = lambda: 0.0,
    ) -> None:
        self._snapshot_of = snapshot_of
        self._now = now
        self._subs: list[Subscription] = []
        self.published = 0

    @property
    def subscriptions(self) -> list[Subscription]:
        return list(self._subs)

    def subscribe(
        self,
        name: str,
        capacity: int = 10_000,
        *,
        trade_policy: TradePolicy = "drop_newest",
    ) -> Subscription:
        """A new subscriber queue, receiving every event published from now on."""
        sub = Subscription(
            name,
            capacity,
            self._snapshot_of,
            trade_policy=trade_policy,
            now=self._now,
            on_close=self._remove,
        )
        self._subs.append(sub)
        return sub

    def _remove(self, sub: Subscription) -> None:
        if sub in self._subs:
            self._subs.remove(sub)

    def publish(self, events: list[Event]) -> None:
        """Hand ``events`` to every subscriber (each copies what it keeps)."""
        if not events:
            return
        count = len(events)
        self.published += count
        reschedule = trio.lowlevel.reschedule
        for sub in self._subs:
            # Subscription.offer_many inline: this runs once per socket read.
            if sub._closed:
                continue
            sub.published += count
            sub._queue.offer_many(events)
            waiter = sub._waiter
            if waiter is not None:
                sub._waiter = None
                reschedule(waiter)

    def close(self) -> None:
        """End every subscription (readers drain what is queued, then stop)."""
        for sub in list(self._subs):
            sub.close()
