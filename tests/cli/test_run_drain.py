"""What a stopped run writes of the events still queued (``runner.app.drain_queued``)."""

from __future__ import annotations

from backpack_actors.actors.emitter import EventQueue
from backpack_actors.core.events import Event, Side, Trade
from backpack_actors.runner.app import drain_queued


def _queue(n: int) -> EventQueue:
    queue = EventQueue(10_000, lambda _symbol: None)
    for i in range(n):
        trade = Trade("BTC-USDC", "BTC_USDC", i, "1.5", "2", Side.BUY, i, i, 0.0)
        assert queue.put_nowait_or_false(trade)
    return queue


def _ids(batches: list[list[Event]]) -> list[int]:
    return [event.trade_id for batch in batches for event in batch if isinstance(event, Trade)]


def test_drain_writes_every_queued_event_in_order_without_a_limit() -> None:
    queue = _queue(2500)
    taken: list[list[Event]] = []
    assert drain_queued(queue, None, taken.append) is None
    assert _ids(taken) == list(range(2500))
    assert len(queue) == 0


def test_drain_stops_at_what_max_events_still_allows() -> None:
    queue = _queue(2500)
    taken: list[list[Event]] = []
    assert drain_queued(queue, 1500, taken.append) == 0
    assert _ids(taken) == list(range(1500))
    # What was not allowed stays queued, untouched.
    assert len(queue) == 1000
    assert drain_queued(queue, 0, taken.append) == 0
    assert _ids(taken) == list(range(1500))
