"""Connection sharding: a publisher's feed streams only the symbols whose lease it holds.

:class:`FeedShard` follows the :class:`~backpack_actors.bus.lease.ShardCoordinator`'s changes
and keeps the feed's markets equal to the leases held, with the feed's runtime
``subscribe``/``unsubscribe``. A symbol taken over is subscribed from scratch, so its first book
entry under the new epoch is the feed's fresh snapshot of it, not a book kept from earlier.

:class:`ShardedSink` is the Redis sink of such a publisher. Its subscription of the feed is a
queue, so when a symbol is unsubscribed, events of it emitted before may still be waiting there;
if the symbol is taken back later (a new epoch), those old events must not be written under the
new epoch, and the book the sink kept of the symbol must not become a checkpoint. So the sink
forgets the symbol's book when it is unsubscribed and drops its queued events up to the feed's
``unsubscribed`` status (the end of that subscription in queue order). The ``listed`` and
``unsubscribed`` status events the publisher causes itself are not written either: they are
this publisher's connection management, not news about the market (readers report a handover
themselves).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import coredis
import trio

from backpack_actors.core.events import BookSnapshot, Event, StatusEvent, StatusKind
from backpack_actors.errors import UnknownSymbolError
from backpack_actors.sinks.redis import RedisStreamsSink

if TYPE_CHECKING:
    from backpack_actors.feed import Feed

__all__ = ["FeedShard", "ShardedSink"]

log = logging.getLogger(__name__)


class ShardedSink(RedisStreamsSink):
    """A :class:`~backpack_actors.sinks.redis.RedisStreamsSink` told by a :class:`FeedShard`
    when its feed stops or starts streaming a symbol (see the module docstring)."""

    def __init__(self, client: coredis.Redis[bytes], **options: Any) -> None:
        super().__init__(client, **options)
        # Per symbol: `unsubscribed` status events still to come from ended subscriptions.
        self._ending: dict[str, int] = {}
        # Per symbol: `listed` status events of this publisher's own subscribes still to come.
        self._starting: dict[str, int] = {}
        # Per symbol subscribed: when, until its fresh snapshot is written.
        self._subscribed_at: dict[str, float] = {}
        self.takeover_seconds: dict[str, float] = {}
        """Per symbol taken over, the last time from subscribing to its snapshot written."""

    # -- told by the FeedShard (trio thread) ----------------------------------------------------

    def unsubscribing(self, symbol: str) -> None:
        """The feed is about to stop streaming ``symbol``."""
        self._ending[symbol] = self._ending.get(symbol, 0) + 1
        self._subscribed_at.pop(symbol, None)
        self._forget(symbol)

    def subscribing(self, symbol: str) -> None:
        """The feed is about to start streaming ``symbol`` (a lease just taken)."""
        self._starting[symbol] = self._starting.get(symbol, 0) + 1
        self._subscribed_at[symbol] = trio.current_time()

    def undo_unsubscribing(self, symbol: str) -> None:
        """The feed did not remove ``symbol`` after all: no `unsubscribed` status will come."""
        self._decrement(self._ending, symbol)

    def undo_subscribing(self, symbol: str) -> None:
        """The feed did not add ``symbol`` after all: no `listed` status will come."""
        self._decrement(self._starting, symbol)
        self._subscribed_at.pop(symbol, None)

    def _forget(self, symbol: str) -> None:
        # The book kept of a symbol no longer streamed goes stale at once: were it kept, a
        # retried write or the next epoch could turn it into a checkpoint.
        self.forget(symbol)

    @staticmethod
    def _decrement(counts: dict[str, int], symbol: str) -> None:
        left = counts.get(symbol, 0) - 1
        if left > 0:
            counts[symbol] = left
        else:
            counts.pop(symbol, None)

    # -- writing ----------------------------------------------------------------------------------

    async def publish(self, events: list[Event]) -> None:
        admitted = self._admit(events) if self._ending or self._starting else events
        fresh = [
            e.symbol
            for e in admitted
            if isinstance(e, BookSnapshot) and e.symbol in self._subscribed_at
        ]
        await super().publish(admitted)
        now = trio.current_time()
        for symbol in fresh:
            started = self._subscribed_at.pop(symbol, None)
            if started is not None and self.ownership.epoch_of(symbol) is not None:
                self.takeover_seconds[symbol] = now - started
                log.info(
                    "bus: %s written from a fresh snapshot %.3f s after subscribing it",
                    symbol,
                    now - started,
                )

    def _admit(self, events: list[Event]) -> list[Event]:
        out: list[Event] = []
        for event in events:
            symbol: str = getattr(event, "symbol", "")
            if symbol in self._ending:
                self._in_ending(symbol, event)
            elif symbol in self._starting and _is(event, StatusKind.LISTED):
                self._decrement(self._starting, symbol)
            else:
                out.append(event)
        return out

    def _in_ending(self, symbol: str, event: Event) -> None:
        """An event of a subscription that ended: dropped; the end itself counted."""
        if _is(event, StatusKind.UNSUBSCRIBED):
            self._decrement(self._ending, symbol)
        elif _is(event, StatusKind.LISTED):
            # A later subscription that ended too (two cycles queued): its start is counted,
            # but the wait goes on to its own end. (A status lost to the queue's bound always
            # leaves the overflow report below, never a bare `listed`.)
            self._decrement(self._starting, symbol)
        elif (
            isinstance(event, StatusEvent)
            and event.kind is StatusKind.CONSUMER_OVERFLOW
            and event.counts.get("dropped_status", 0) > 0
        ):
            # Status events of the symbol were lost, maybe the very ones awaited: waiting on
            # would silence the symbol for good. Start over from nothing known instead (a delta
            # is not written before the next snapshot).
            self._ending.pop(symbol, None)
            self._starting.pop(symbol, None)
            self._forget(symbol)

    def statistics(self) -> dict[str, object]:
        return {**super().statistics(), "takeover_seconds": dict(self.takeover_seconds)}


def _is(event: Event, kind: StatusKind) -> bool:
    return isinstance(event, StatusEvent) and event.kind is kind


class FeedShard:
    """Keeps ``feed``'s markets equal to the leases held: pass :meth:`changed` to the
    coordinator as ``on_change``; run :meth:`run` in a nursery."""

    def __init__(self, feed: Feed, sink: ShardedSink, *, resync_every: float = 5.0) -> None:
        self.feed = feed
        self.sink = sink
        # The feed's markets change without a lease change too (a market newly listed at a
        # metadata refresh with ``symbols: all``): they are brought back to the leases this often.
        self.resync_every = resync_every
        self.wanted: set[str] = set()
        self._changed = trio.Event()
        self.subscribed = 0
        self.unsubscribed = 0

    def changed(self, symbol: str, epoch: int | None) -> None:
        """The coordinator took (``epoch``) or gave up (None) ``symbol``."""
        if epoch is None:
            self.wanted.discard(symbol)
        else:
            self.wanted.add(symbol)
        self._changed.set()

    def streamed(self) -> set[str]:
        """The symbols (normalized) the feed streams now."""
        return {info.normalized for info in self.feed.markets.values()}

    async def sync(self) -> None:
        """Unsubscribe what is no longer leased, then subscribe what is newly leased."""
        current = self.streamed()
        for symbol in sorted(current - self.wanted):
            # Told first: the feed queues its `unsubscribed` status before this call returns.
            self.sink.unsubscribing(symbol)
            removed: list[str] = []
            try:
                removed = await self.feed.unsubscribe(symbol)
            except UnknownSymbolError:
                log.warning("bus: %s is no longer listed", symbol)
            if removed:
                self.unsubscribed += 1
            else:
                self.sink.undo_unsubscribing(symbol)
        for symbol in sorted(self.wanted - current):
            self.sink.subscribing(symbol)
            added: list[str] = []
            try:
                added = await self.feed.subscribe(symbol)
            except UnknownSymbolError:
                log.warning("bus: leased %s, which the exchange does not list", symbol)
            if added:
                self.subscribed += 1
            else:
                self.sink.undo_subscribing(symbol)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Sync now (ready after that), then after every change, until cancelled."""
        started = False
        while True:
            self._changed = trio.Event()
            await self.sync()
            if not started:
                started = True
                task_status.started()
            with trio.move_on_after(self.resync_every):
                await self._changed.wait()
