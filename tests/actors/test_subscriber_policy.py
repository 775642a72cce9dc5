"""Issue 11, every subscriber pays for itself (unit level: SubscriberQueue and Emitter).

Old design: one consumer queue; when it was full the reconciler waited for room for every trade
and status event (so a slow consumer stalled every stream, whose overflow then restarted them),
and ``drop_oldest`` dropped the oldest lossless event, status events included, with no report."""

from __future__ import annotations

from backpack_actors.actors.emitter import Emitter
from backpack_actors.core.conflation import SubscriberQueue
from backpack_actors.core.events import (
    BookDelta,
    BookSnapshot,
    Event,
    Side,
    StatusEvent,
    StatusKind,
    Trade,
)

SYM, XID = "BTC-USDC", "BTC_USDC"


def trade(i: int, symbol: str = SYM) -> Trade:
    return Trade(symbol, symbol.replace("-", "_"), i, "100.0", "0.5", Side.BUY, i, i, 0.0)


def snapshot(update_id: int, reason: str = "initial") -> BookSnapshot:
    return BookSnapshot(
        symbol=SYM,
        exchange_symbol=XID,
        update_id=update_id,
        raw_bids=(("99.0", "1.0"),),
        raw_asks=(("101.0", "1.0"),),
        engine_time_us=update_id,
        received_at_ns=0,
        reason=reason,
    )


def delta(update_id: int) -> BookDelta:
    return BookDelta(
        SYM, XID, update_id, update_id, (("99.0", str(update_id)),), (), update_id, update_id, 0.0
    )


def status(kind: StatusKind = StatusKind.RESYNCING) -> StatusEvent:
    return StatusEvent(symbol=SYM, kind=kind, reason="test")


def _drain(queue: SubscriberQueue) -> list[Event]:
    return queue.pop_many(1_000_000)


def _overflow(events: list[Event]) -> list[StatusEvent]:
    return [
        e for e in events if isinstance(e, StatusEvent) and e.kind is StatusKind.CONSUMER_OVERFLOW
    ]


def test_drop_oldest_drops_only_the_oldest_trades_and_reports_them() -> None:
    """``drop_oldest`` with capacity 10: the initial snapshot, the deltas and the status events
    queued before the trades all survive 100 trades; the 94 oldest trades are dropped and named
    (first/last id) in one ``consumer_overflow`` report, the newest trades are kept in order."""
    queue = SubscriberQueue(10, lambda symbol: None, trade_policy="drop_oldest")
    book: list[Event] = [snapshot(1), delta(2), delta(3)]
    queue.offer_many([*book, status(StatusKind.BOOK_READY)])
    queue.offer_many([trade(i) for i in range(1, 101)])
    assert len(queue) == 10 + 1, "capacity, plus the overflow report's marker"
    events = _drain(queue)
    (report,) = _overflow(events)
    assert report.symbol == SYM
    assert report.counts["dropped_trades"] == 94
    assert (report.counts["first_dropped_trade_id"], report.counts["last_dropped_trade_id"]) == (
        1,
        94,
    )
    rest = [e for e in events if e is not report]
    assert rest[:3] == book, "the snapshot and deltas are never dropped"
    assert rest[3] == status(StatusKind.BOOK_READY)
    assert [e.trade_id for e in rest[4:] if isinstance(e, Trade)] == list(range(95, 101))
    assert queue.dropped_trades == {SYM: 94}
    assert queue.dropped_status == 0
    assert not _drain(queue)


def test_drop_oldest_report_comes_before_the_kept_trades() -> None:
    """The overflow report names a contiguous range that ends right before the first kept
    trade, and precedes it: a consumer sees "94 dropped (1..94)", then 95, 96, ..."""
    queue = SubscriberQueue(8, lambda symbol: None, trade_policy="drop_oldest")
    queue.offer_many([trade(i) for i in range(1, 51)])
    events = _drain(queue)
    (report,) = _overflow(events)
    trades = [e for e in events if isinstance(e, Trade)]
    assert events.index(report) < events.index(trades[0])
    assert report.counts["last_dropped_trade_id"] + 1 == trades[0].trade_id
    assert [t.trade_id for t in trades] == list(range(43, 51))
    # The reader caught up: the next overflow is a new report with a new range.
    queue.offer_many([trade(i) for i in range(51, 71)])
    events = _drain(queue)
    (report,) = _overflow(events)
    assert (report.counts["first_dropped_trade_id"], report.counts["last_dropped_trade_id"]) == (
        51,
        62,
    )
    assert [e.trade_id for e in events if isinstance(e, Trade)] == list(range(63, 71))


def test_drop_oldest_per_symbol_reports() -> None:
    """Two symbols' trades overflow together: each symbol's report names its own ids only."""
    queue = SubscriberQueue(6, lambda symbol: None, trade_policy="drop_oldest")
    for i in range(1, 21):
        queue.offer_many([trade(i), trade(1000 + i, "ETH-USDC")])
    events = _drain(queue)
    reports = {r.symbol: r for r in _overflow(events)}
    assert set(reports) == {SYM, "ETH-USDC"}
    kept = {
        sym: [e.trade_id for e in events if isinstance(e, Trade) and e.symbol == sym]
        for sym in reports
    }
    for sym, report in reports.items():
        first, last = (
            report.counts["first_dropped_trade_id"],
            report.counts["last_dropped_trade_id"],
        )
        assert last - first + 1 == report.counts["dropped_trades"]
        assert kept[sym][0] == last + 1
        assert kept[sym] == list(range(last + 1, kept[sym][-1] + 1))


def test_two_subscribers_the_slow_one_pays_alone() -> None:
    """Two subscribers on one emitter, one reading after every publish, one never reading: the
    fast one gets every event exactly once and in order (nothing conflated, nothing dropped);
    the slow one's queue stays bounded and reports what it lost."""
    books: dict[str, BookSnapshot] = {}
    emitter = Emitter(lambda symbol: books.get(symbol))
    fast = emitter.subscribe("fast", 100)
    slow = emitter.subscribe("slow", 20)
    published: list[Event] = []
    got: list[Event] = []
    update = 1
    batch: list[Event] = [snapshot(update), status(StatusKind.BOOK_READY)]
    books[SYM] = snapshot(update, "conflated")
    for i in range(1, 2001):
        update += 1
        batch += [delta(update), trade(i)]
        books[SYM] = snapshot(update, "conflated")
        if i % 7 == 0:
            batch.append(status(StatusKind.TRADES_BACKFILLED))
        emitter.publish(batch)
        published += batch
        batch = []
        got += fast.get_batch_nowait(1000)
    assert got == published
    assert (fast.dropped, fast.conflated, fast.dropped_trades) == (0, {}, {})
    assert fast.max_depth <= 4, "never more than one publish queued"
    assert slow.dropped > 0
    assert slow.conflated
    assert slow.max_depth <= 20 + 16 + 2
    slow_events = slow.get_batch_nowait(1000)
    assert _overflow(slow_events), "the slow subscriber is told what it lost"
