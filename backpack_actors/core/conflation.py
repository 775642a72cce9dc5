"""The consumer queue's policy (ARCHITECTURE §5): trades lossless, books conflated when slow.

Pure: the trio shell waits when :meth:`ConflatingQueue.offer` says the queue is full.

- Trades, status and error events are never dropped: when the queue is full the producer must wait.
- Book events (snapshots and deltas) of a symbol are never allowed to block the producer: once the
  queue is full, a marker for that symbol is queued and every later book event of the symbol is
  absorbed (counted) until the reader reaches the marker; the marker then becomes one
  ``BookSnapshot(reason="conflated")`` of the symbol's book at that moment, built by a callback.
  Markers add at most one entry per symbol, so the queue stays bounded by capacity + symbols.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from backpack_actors.core.events import BookDelta, BookSnapshot, Event

__all__ = ["ConflatedMarker", "ConflatingQueue"]


class ConflatedMarker:
    """Stands in the queue for every book event of ``symbol`` absorbed since it was queued."""

    __slots__ = ("absorbed", "symbol")

    def __init__(self, symbol: str) -> None:
        self.symbol = symbol
        self.absorbed = 0

    def __repr__(self) -> str:
        return f"ConflatedMarker({self.symbol!r}, absorbed={self.absorbed})"


class ConflatingQueue:
    """Bounded FIFO of events with per-symbol book conflation."""

    def __init__(
        self,
        capacity: int,
        snapshot_of: Callable[[str], BookSnapshot | None],
        *,
        conflate_books: bool = True,
    ) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        # False (book_policy "block"): books are lossless too and wait like trades.
        self.conflate_books = conflate_books
        self._snapshot_of = snapshot_of
        self._items: deque[Event | ConflatedMarker] = deque()
        self._markers: dict[str, ConflatedMarker] = {}
        self.conflated: dict[str, int] = {}
        self.max_depth = 0

    def __len__(self) -> int:
        return len(self._items)

    def offer(self, event: Event) -> bool:
        """Queue ``event``; False means the queue is full and a lossless event must wait."""
        items = self._items
        if self.conflate_books and isinstance(event, BookDelta | BookSnapshot):
            marker = self._markers.get(event.symbol)
            if marker is not None:
                marker.absorbed += 1
                self.conflated[event.symbol] = self.conflated.get(event.symbol, 0) + 1
                return True
            if len(items) >= self.capacity:
                marker = ConflatedMarker(event.symbol)
                marker.absorbed = 1
                self._markers[event.symbol] = marker
                self.conflated[event.symbol] = self.conflated.get(event.symbol, 0) + 1
                items.append(marker)
                self._note_depth()
                return True
        elif len(items) >= self.capacity:
            return False
        items.append(event)
        self._note_depth()
        return True

    def extend_if_room(self, events: list[Event]) -> bool:
        """Queue all ``events`` at once when nothing is being conflated and they all fit.

        Exactly what offering them one by one would do in that case (the hot path's batch
        hand-off); False (nothing queued) otherwise.
        """
        items = self._items
        if self._markers or len(items) + len(events) > self.capacity:
            return False
        items.extend(events)
        if len(items) > self.max_depth:
            self.max_depth = len(items)
        return True

    def _note_depth(self) -> None:
        if len(self._items) > self.max_depth:
            self.max_depth = len(self._items)

    def has_room(self) -> bool:
        """True when a lossless event would be accepted now."""
        return len(self._items) < self.capacity

    def pop(self) -> Event | None:
        """The next event, or None when empty. A marker turns into the symbol's current book."""
        items = self._items
        while items:
            item = items.popleft()
            if type(item) is ConflatedMarker:
                snapshot = self._resolve(item)
                if snapshot is None:
                    continue
                return snapshot
            return item  # type: ignore[return-value]
        return None

    def pop_many(self, limit: int) -> list[Event]:
        """Up to ``limit`` events, as :meth:`pop` would give them one by one."""
        items = self._items
        if not self._markers and len(items) <= limit:
            # Nothing conflated: the whole queue, as it is.
            events: list[Event] = list(items)  # type: ignore[arg-type]
            items.clear()
            return events
        events = []
        while items and len(events) < limit:
            item = items.popleft()
            if type(item) is ConflatedMarker:
                snapshot = self._resolve(item)
                if snapshot is not None:
                    events.append(snapshot)
            else:
                events.append(item)  # type: ignore[arg-type]
        return events

    def _resolve(self, marker: ConflatedMarker) -> BookSnapshot | None:
        del self._markers[marker.symbol]
        # None while the symbol resyncs: its next published snapshot will carry the book.
        return self._snapshot_of(marker.symbol)
