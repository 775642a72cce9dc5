"""The edge to consumers: a bounded queue with the written policy of ``core.conflation``.

Producers (the reconciler) call :meth:`EventQueue.put`: it returns at once for book events
(conflated for a slow reader) and waits for room for trades and status events (lossless by default).
With ``trade_policy="drop_oldest"`` a full queue drops its oldest lossless event instead, counted.
"""

from __future__ import annotations

from collections.abc import Callable

import trio

from backpack_actors.core.conflation import ConflatingQueue
from backpack_actors.core.events import BookSnapshot, Event

__all__ = ["EventQueue"]


class EventQueue:
    """One consumer's queue; trio-aware wrapper around :class:`ConflatingQueue`."""

    def __init__(
        self,
        capacity: int,
        snapshot_of: Callable[[str], BookSnapshot | None],
        *,
        trade_policy: str = "block",
        book_policy: str = "conflate",
    ) -> None:
        self._queue = ConflatingQueue(
            capacity, snapshot_of, conflate_books=book_policy == "conflate"
        )
        self._trade_policy = trade_policy
        self._readable = trio.Event()
        self._writable = trio.Event()
        self._closed = False
        # Readers wake a writer only when one waits (saves an Event.set per event read).
        self._writer_waiting = False
        self.dropped = 0
        self.blocked = 0

    def __len__(self) -> int:
        return len(self._queue)

    @property
    def conflated(self) -> dict[str, int]:
        """Book events absorbed per symbol by conflation."""
        return dict(self._queue.conflated)

    @property
    def max_depth(self) -> int:
        return self._queue.max_depth

    def close(self) -> None:
        """No more events: a waiting reader wakes and ends."""
        self._closed = True
        self._readable.set()

    async def put(self, event: Event) -> None:
        queue = self._queue
        while not queue.offer(event):
            if self._trade_policy == "drop_oldest":
                queue.pop()
                self.dropped += 1
                continue
            self.blocked += 1
            self._writable = trio.Event()
            self._writer_waiting = True
            try:
                await self._writable.wait()
            finally:
                self._writer_waiting = False
        self._readable.set()

    async def put_many(self, events: list[Event]) -> None:
        """Queue events in order, waking the reader once; waits only where ``put`` would."""
        queue = self._queue
        if queue.extend_if_room(events):
            self._readable.set()
            return
        offer = queue.offer
        for index, event in enumerate(events):
            if not offer(event):
                self._readable.set()
                await self.put(event)
                for rest in events[index + 1 :]:
                    await self.put(rest)
                return
        self._readable.set()

    def put_nowait_or_false(self, event: Event) -> bool:
        accepted = self._queue.offer(event)
        if accepted:
            self._readable.set()
        return accepted

    async def get(self) -> Event:
        """The next event; raises ``trio.EndOfChannel`` once closed and drained."""
        while True:
            event = self._queue.pop()
            if event is not None:
                if self._writer_waiting:
                    self._writable.set()
                return event
            if self._closed:
                raise trio.EndOfChannel
            self._readable = trio.Event()
            await self._readable.wait()

    def get_nowait(self) -> Event | None:
        """The next event, or None when the queue is empty."""
        event = self._queue.pop()
        if event is not None and self._writer_waiting:
            self._writable.set()
        return event

    def get_batch_nowait(self, limit: int = 4096) -> list[Event]:
        """Up to ``limit`` queued events, oldest first (empty when none): one call per batch."""
        if limit < 1:
            # pop_many(0) is always empty: a waiting get_batch would never return.
            raise ValueError(f"limit must be at least 1, got {limit}")
        events = self._queue.pop_many(limit)
        if events and self._writer_waiting:
            self._writable.set()
        return events

    async def get_batch(self, limit: int = 4096) -> list[Event]:
        """At least one and up to ``limit`` events; raises ``trio.EndOfChannel`` once closed
        and drained. Cheaper per event than :meth:`get` for consumers that keep up."""
        while True:
            events = self.get_batch_nowait(limit)
            if events:
                return events
            if self._closed:
                raise trio.EndOfChannel
            self._readable = trio.Event()
            await self._readable.wait()
