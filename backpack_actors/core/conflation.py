"""One subscriber's queue policy: the subscriber pays for its own slowness, nothing upstream does.

Pure (no trio): the emitter offers events with :meth:`SubscriberQueue.offer_many`, which never
waits and never fails; what a full queue does instead is the written policy below.

- **Books conflate.** Once the queue is half full, a book event (snapshot or delta) of a symbol
  queues a marker for that symbol and every later book event of the symbol is absorbed (counted)
  until the reader reaches the marker; the marker then becomes one
  ``BookSnapshot(reason="conflated")`` of the symbol's book *at that moment*, built by a callback
  from the reconciler's book. The emitter publishes synchronously after the reconciler applied a
  message, so that book always equals what the published events so far add up to: no delta that
  follows can be one the snapshot already contains. A symbol that is resyncing has no book to
  give; its marker is dropped (its next published snapshot carries the book).
- **Trades are lossless up to the bound.** Past it, ``drop_newest`` (the default) drops the
  arriving trade, ``drop_oldest`` drops the oldest queued *trade* (never a book or status event).
  With ``drop_newest`` every later trade of that symbol is dropped too until the reader reaches
  the report, so the report names one contiguous range of ids (trades of a symbol arrive in id
  order); ``drop_oldest`` drops from the front, contiguous as well. Either way the loss is
  reported in-band: per symbol, one marker that becomes a
  ``StatusEvent(kind="consumer_overflow")`` whose ``counts`` give ``dropped_trades``,
  ``first_dropped_trade_id`` and ``last_dropped_trade_id`` (and ``dropped_status`` when status
  events were lost too) of every drop up to the moment the reader reaches it.
- **Latest-value channels** (book ticker, ticker, mark price, open interest, candles) conflate
  like books, keyed by symbol and type (candles also by interval and start time, so every
  candle's final update survives): past half the bound, the first event of a key queues a marker
  that holds the newest event of that key until the reader reaches it.
- **Liquidations** are discrete like trades: lossless up to the bound, then dropped and counted
  (``dropped_liquidations``) in the symbol's overflow report.
- **Account events** (orders, fills, positions, balances) are few and none may be lost: always
  queued, whatever the bound.
- **Status and protocol-error events** are rare and small: they may use ``status_slack`` slots
  beyond the bound; past that they are dropped and counted in the same overflow report.

Markers add at most two entries per symbol, so the queue holds at most
``capacity + status_slack + 2 × symbols`` entries.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Literal

from backpack_actors.core.events import (
    BookDelta,
    BookSnapshot,
    BookTicker,
    Candle,
    Event,
    IntervalSnapshot,
    Liquidation,
    MarkPrice,
    OpenInterest,
    ProtocolErrorEvent,
    StatusEvent,
    StatusKind,
    Ticker,
    Trade,
)

__all__ = [
    "ConflatedMarker",
    "ConflatingQueue",
    "LatestMarker",
    "OverflowMarker",
    "SubscriberQueue",
    "TradePolicy",
]

TradePolicy = Literal["drop_newest", "drop_oldest"]


class ConflatedMarker:
    """Stands in the queue for every book event of ``symbol`` absorbed since it was queued."""

    __slots__ = ("absorbed", "ended", "symbol")

    def __init__(self, symbol: str) -> None:
        self.symbol = symbol
        self.absorbed = 0
        # The subscription whose book events it stands for ended (unsubscribed, delisted, or a
        # new one listed) before the reader reached it: it then stands for nothing.
        self.ended = False

    def __repr__(self) -> str:
        return f"ConflatedMarker({self.symbol!r}, absorbed={self.absorbed})"


_SUBSCRIPTION_ENDS = frozenset({StatusKind.UNSUBSCRIBED, StatusKind.DELISTED, StatusKind.LISTED})
_LATEST_KINDS = frozenset({BookTicker, Ticker, MarkPrice, OpenInterest, Candle, IntervalSnapshot})


def _latest_key(event: Event) -> tuple[object, ...]:
    if type(event) is Candle:
        return (Candle, event.symbol, event.interval, event.start_us)
    return (type(event), event.symbol)


class LatestMarker:
    """Stands in the queue for a latest-value channel's key; holds the newest event of it."""

    __slots__ = ("absorbed", "event", "key")

    def __init__(self, key: tuple[object, ...], event: Event) -> None:
        self.key = key
        self.event = event
        self.absorbed = 0

    def __repr__(self) -> str:
        return f"LatestMarker({self.key!r}, absorbed={self.absorbed})"


class OverflowMarker:
    """Stands in the queue for the trades (and status events) of ``symbol`` dropped since."""

    __slots__ = (
        "dropped_liquidations",
        "dropped_status",
        "dropped_trades",
        "first_id",
        "last_id",
        "symbol",
    )

    def __init__(self, symbol: str) -> None:
        self.symbol = symbol
        self.dropped_trades = 0
        self.dropped_status = 0
        self.dropped_liquidations = 0
        self.first_id: int | None = None
        self.last_id: int | None = None

    def add_trade(self, trade_id: int) -> None:
        self.dropped_trades += 1
        if self.first_id is None or trade_id < self.first_id:
            self.first_id = trade_id
        if self.last_id is None or trade_id > self.last_id:
            self.last_id = trade_id

    def __repr__(self) -> str:
        return (
            f"OverflowMarker({self.symbol!r}, trades={self.dropped_trades}, "
            f"ids={self.first_id}..{self.last_id}, status={self.dropped_status})"
        )


_Item = Event | ConflatedMarker | OverflowMarker | LatestMarker


class SubscriberQueue:
    """Bounded FIFO of events with the policy of the module docstring."""

    def __init__(
        self,
        capacity: int,
        snapshot_of: Callable[[str], BookSnapshot | None],
        *,
        trade_policy: TradePolicy = "drop_newest",
        status_slack: int | None = None,
        now: Callable[[], float] = lambda: 0.0,
    ) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        if trade_policy not in ("drop_newest", "drop_oldest"):
            raise ValueError(f"trade_policy must be drop_newest or drop_oldest: {trade_policy!r}")
        self.capacity = capacity
        # Books conflate once the queue is half full: the other half stays for trades and
        # status events, so a consumer that keeps up with the trades loses none of them.
        self.book_limit = max(1, capacity // 2)
        self.trade_policy: TradePolicy = trade_policy
        self.status_limit = capacity + (
            max(16, capacity // 8) if status_slack is None else status_slack
        )
        self._snapshot_of = snapshot_of
        self._now = now
        self._items: deque[_Item] = deque()
        self._conflating: dict[str, ConflatedMarker] = {}
        self._overflow: dict[str, OverflowMarker] = {}
        self._latest: dict[tuple[object, ...], LatestMarker] = {}
        # Per symbol, the keys of its latest-value markers: an event of the symbol queued after
        # a marker retires it (the marker keeps its value), so per-symbol order is kept.
        self._latest_of: dict[str, list[tuple[object, ...]]] = {}
        # drop_oldest only: the queued trades in order, and the ids of those dropped in place
        # (skipped when popped), so dropping the oldest trade is O(1) whatever is queued.
        self._trades: deque[Trade] = deque()
        self._dead: set[int] = set()
        self.conflated: dict[str, int] = {}
        self.dropped_trades: dict[str, int] = {}
        self.dropped_status = 0
        self.dropped_liquidations = 0
        self.conflated_latest = 0
        self.max_depth = 0

    def __len__(self) -> int:
        return len(self._items) - len(self._dead)

    # -- producer side (never waits) ------------------------------------------------------------

    def offer_many(self, events: list[Event]) -> None:
        """Queue ``events`` in order under the policy; never refuses, never waits."""
        items = self._items
        if (
            not self._conflating
            and not self._overflow
            and not self._latest
            and len(items) + len(events) <= self.book_limit
            and self.trade_policy == "drop_newest"
        ):
            # The hot path: room for all, nothing being conflated or reported.
            items.extend(events)
            if len(items) > self.max_depth:
                self.max_depth = len(items)
            return
        for event in events:
            self.offer(event)

    def offer(self, event: Event) -> None:
        """Queue one event under the policy."""
        items = self._items
        kind = type(event)
        if self._latest_of and kind not in _LATEST_KINDS:
            self._retire_latest(event.symbol)
        if kind is BookDelta or kind is BookSnapshot:
            symbol = event.symbol
            marker = self._conflating.get(symbol)
            if marker is None and len(items) - len(self._dead) >= self.book_limit:
                marker = ConflatedMarker(symbol)
                self._conflating[symbol] = marker
                items.append(marker)
            if marker is not None:
                marker.absorbed += 1
                self.conflated[symbol] = self.conflated.get(symbol, 0) + 1
                self._note_depth()
                return
        elif kind is Trade:
            assert isinstance(event, Trade)
            if self.trade_policy == "drop_newest" and event.symbol in self._overflow:
                # Until the reader reaches the report, later trades of the symbol are dropped
                # too: the report then names one contiguous range of ids.
                self._dropped(event, front=False)
                return
            if len(items) - len(self._dead) >= self.capacity and not self._make_room_for_trade(
                event
            ):
                return
            if self.trade_policy == "drop_oldest":
                self._trades.append(event)
        elif kind in _LATEST_KINDS:
            # Invariant: a marker still taking values is the last queued item of its symbol
            # (anything else of the symbol queued later retires it), so replacing its value in
            # place never lets a newer value overtake an older event of the same symbol.
            key = _latest_key(event)
            latest = self._latest.get(key)
            if latest is not None:
                latest.event = event
                latest.absorbed += 1
                self.conflated_latest += 1
                return
            if self._latest_of:
                self._retire_latest(event.symbol)
            if len(items) - len(self._dead) >= self.book_limit:
                latest = LatestMarker(key, event)
                self._latest[key] = latest
                self._latest_of[event.symbol] = [key]
                items.append(latest)
                self._note_depth()
                return
        elif kind is Liquidation:
            if len(items) - len(self._dead) >= self.capacity:
                self._overflow_marker(event.symbol, front=False).dropped_liquidations += 1
                self.dropped_liquidations += 1
                return
        elif kind is StatusEvent and self._conflating and _ends_subscription(event):
            self._end_conflation(event.symbol)
            if len(items) - len(self._dead) >= self.status_limit:
                self._overflow_marker(event.symbol, front=False).dropped_status += 1
                self.dropped_status += 1
                return
        elif (kind is StatusEvent or kind is ProtocolErrorEvent) and len(items) - len(
            self._dead
        ) >= self.status_limit:
            self._overflow_marker(event.symbol, front=False).dropped_status += 1
            self.dropped_status += 1
            return
        # (Not ``items``: making room may have compacted the deque into a new one.)
        self._items.append(event)
        self._note_depth()

    def _end_conflation(self, symbol: str) -> None:
        # A marker resolves to the book at the moment it is read: after the subscription it
        # stood for ended, that would be a later subscription's book, delivered before the end
        # and then missing where that subscription starts. Book events from here on queue anew.
        marker = self._conflating.pop(symbol, None)
        if marker is not None:
            marker.ended = True

    def _retire_latest(self, symbol: str) -> None:
        keys = self._latest_of.pop(symbol, None)
        if keys:
            for key in keys:
                self._latest.pop(key, None)

    def _make_room_for_trade(self, trade: Trade) -> bool:
        """A full queue and a trade to queue: apply the trade policy; True to queue ``trade``."""
        if self.trade_policy == "drop_oldest":
            while self._trades:
                oldest = self._trades.popleft()
                if id(oldest) in self._dead:
                    continue
                self._dead.add(id(oldest))
                self._dropped(oldest, front=True)
                if len(self._dead) > self.capacity:
                    self._compact()
                return True
        self._dropped(trade, front=False)
        return False

    def _compact(self) -> None:
        # drop_oldest leaves dropped trades in place (skipped when popped); a reader that never
        # reads must not keep them all: past ``capacity`` of them, rebuild without them.
        dead = self._dead
        self._items = deque(item for item in self._items if id(item) not in dead)
        dead.clear()

    def _dropped(self, trade: Trade, *, front: bool) -> None:
        self._overflow_marker(trade.symbol, front=front).add_trade(trade.trade_id)
        self.dropped_trades[trade.symbol] = self.dropped_trades.get(trade.symbol, 0) + 1

    def _overflow_marker(self, symbol: str, *, front: bool) -> OverflowMarker:
        marker = self._overflow.get(symbol)
        if marker is None:
            marker = OverflowMarker(symbol)
            self._overflow[symbol] = marker
            # drop_oldest lost trades from the front: say so before what follows them.
            if front:
                self._items.appendleft(marker)
            else:
                self._items.append(marker)
        return marker

    def _note_depth(self) -> None:
        depth = len(self._items) - len(self._dead)
        if depth > self.max_depth:
            self.max_depth = depth

    # -- consumer side ---------------------------------------------------------------------------

    def pop(self) -> Event | None:
        """The next event, or None when empty (markers turn into their events here)."""
        items = self._items
        while items:
            event = self._resolve(items.popleft())
            if event is not None:
                return event
        return None

    def pop_many(self, limit: int) -> list[Event]:
        """Up to ``limit`` events, as :meth:`pop` would give them one by one."""
        items = self._items
        if (
            not self._conflating
            and not self._overflow
            and not self._latest
            and not self._dead
            and not self._trades
            and len(items) <= limit
        ):
            events: list[Event] = list(items)  # type: ignore[arg-type]
            items.clear()
            return events
        events = []
        while items and len(events) < limit:
            event = self._resolve(items.popleft())
            if event is not None:
                events.append(event)
        return events

    def _resolve(self, item: _Item) -> Event | None:
        kind = type(item)
        if kind is ConflatedMarker:
            assert isinstance(item, ConflatedMarker)
            if item.ended:
                return None
            del self._conflating[item.symbol]
            return self._snapshot_of(item.symbol)
        if kind is LatestMarker:
            assert isinstance(item, LatestMarker)
            if self._latest.get(item.key) is item:
                del self._latest[item.key]
                keys = self._latest_of.get(item.event.symbol)
                if keys is not None and item.key in keys:
                    keys.remove(item.key)
                    if not keys:
                        del self._latest_of[item.event.symbol]
            return item.event
        if kind is OverflowMarker:
            assert isinstance(item, OverflowMarker)
            del self._overflow[item.symbol]
            return _overflow_event(item, self._now())
        if kind is Trade and self._trades:
            if id(item) in self._dead:
                self._dead.discard(id(item))
                return None
            if self._trades and self._trades[0] is item:
                self._trades.popleft()
        return item  # type: ignore[return-value]


def _ends_subscription(event: Event) -> bool:
    return isinstance(event, StatusEvent) and event.kind in _SUBSCRIPTION_ENDS


def _overflow_event(marker: OverflowMarker, now: float) -> StatusEvent:
    counts = {"dropped_trades": marker.dropped_trades, "dropped_status": marker.dropped_status}
    if marker.dropped_liquidations:
        counts["dropped_liquidations"] = marker.dropped_liquidations
    if marker.first_id is not None and marker.last_id is not None:
        counts["first_dropped_trade_id"] = marker.first_id
        counts["last_dropped_trade_id"] = marker.last_id
        ids = (
            str(marker.first_id)
            if marker.first_id == marker.last_id
            else f"{marker.first_id}..{marker.last_id}"
        )
        reason = f"this subscriber fell behind: {marker.dropped_trades} trades dropped (ids {ids})"
    else:
        reason = "this subscriber fell behind"
    if marker.dropped_status:
        reason += f", {marker.dropped_status} status events dropped"
    if marker.dropped_liquidations:
        reason += f", {marker.dropped_liquidations} liquidations dropped"
    return StatusEvent(
        symbol=marker.symbol,
        kind=StatusKind.CONSUMER_OVERFLOW,
        reason=reason,
        counts=counts,
        at=now,
    )


ConflatingQueue = SubscriberQueue
"""The name this queue had before trades could overflow (kept for existing imports)."""
