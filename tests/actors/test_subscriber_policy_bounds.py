"""Issue 11, ``drop_oldest`` past its bound: status events still fit, the queue stays bounded.

Fails on the current library (see the final report): ``SubscriberQueue.offer`` compares
``len(self._items)`` with the capacity and the status limit, but under ``drop_oldest`` the dropped
trades stay in ``_items`` (marked dead, skipped when popped), so every dropped trade grows the
deque by one: a subscriber that does not read holds every trade ever offered, and once the dead
entries exceed ``status_slack`` every status event (resyncing, snapshot_failed, delisted, ...) is
dropped although only ``capacity`` live events are queued."""

from __future__ import annotations

from backpack_actors.core.conflation import SubscriberQueue
from backpack_actors.core.events import (
    BookSnapshot,
    Side,
    StatusEvent,
    StatusKind,
    Trade,
)

SYM, XID = "BTC-USDC", "BTC_USDC"


def trade(i: int) -> Trade:
    return Trade(SYM, XID, i, "100.0", "0.5", Side.BUY, i, i, 0.0)


def test_drop_oldest_never_drops_a_status_event_for_a_trade() -> None:
    """Capacity 10, 100 trades offered (90 of them dropped), then a ``resyncing`` status: the
    queue holds 10 live events, so the status event fits in its slack and is delivered."""
    queue = SubscriberQueue(10, lambda symbol: None, trade_policy="drop_oldest")
    queue.offer(
        BookSnapshot(
            symbol=SYM,
            exchange_symbol=XID,
            update_id=1,
            raw_bids=(("99.0", "1.0"),),
            raw_asks=(("101.0", "1.0"),),
            engine_time_us=1,
            received_at_ns=0,
            reason="initial",
        )
    )
    queue.offer_many([trade(i) for i in range(1, 101)])
    resyncing = StatusEvent(symbol=SYM, kind=StatusKind.RESYNCING, reason="gap")
    queue.offer(resyncing)
    assert queue.dropped_status == 0
    events = queue.pop_many(1000)
    assert resyncing in events, "drop_oldest drops trades only, never a status event"


def test_drop_oldest_queue_stays_bounded_for_a_reader_that_never_reads() -> None:
    """100 000 trades into a capacity-10 ``drop_oldest`` queue nobody reads: the module promises
    at most ``capacity + status_slack + 2 x symbols`` entries; the deque must not keep the
    dropped trades."""
    queue = SubscriberQueue(10, lambda symbol: None, trade_policy="drop_oldest")
    for i in range(1, 100_001):
        queue.offer(trade(i))
    bound = 10 + queue.status_limit - queue.capacity + 2
    assert len(queue) <= bound
    assert queue.max_depth <= bound, queue.max_depth
    assert len(queue._items) <= bound, len(queue._items)
