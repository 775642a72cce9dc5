"""EventQueue's list-at-a-time reads (what ``Feed.batches()`` uses)."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from backpack_actors.actors.emitter import EventQueue
from backpack_actors.core.events import Event, Side, Trade


def _trade(trade_id: int) -> Trade:
    return Trade("BTC-USDC", "BTC_USDC", trade_id, "1.5", "2", Side.BUY, trade_id, trade_id, 0.0)


def _ids(events: list[Event]) -> list[int]:
    return [event.trade_id for event in events if isinstance(event, Trade)]


async def test_get_batch_waits_then_returns_everything_queued_in_order() -> None:
    queue = EventQueue(100, lambda _symbol: None)
    got: list[list[Event]] = []

    async def reader() -> None:
        got.append(await queue.get_batch())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(reader)
        await trio.testing.wait_all_tasks_blocked()
        assert got == [], "nothing queued yet: the reader waits"
        await queue.put_many([_trade(1), _trade(2), _trade(3)])
    assert [_ids(batch) for batch in got] == [[1, 2, 3]]


async def test_get_batch_respects_its_limit_and_ends_when_closed() -> None:
    queue = EventQueue(100, lambda _symbol: None)
    await queue.put_many([_trade(i) for i in range(5)])
    assert _ids(await queue.get_batch(2)) == [0, 1]
    queue.close()
    assert _ids(await queue.get_batch()) == [2, 3, 4], "drained before the end"
    with pytest.raises(trio.EndOfChannel):
        await queue.get_batch()


async def test_a_full_queue_writer_is_woken_by_a_batch_read() -> None:
    queue = EventQueue(2, lambda _symbol: None)
    async with trio.open_nursery() as nursery:
        # Trades are lossless: the third waits for room.
        nursery.start_soon(queue.put_many, [_trade(1), _trade(2), _trade(3)])
        await trio.testing.wait_all_tasks_blocked()
        assert queue.blocked == 1
        assert _ids(await queue.get_batch()) == [1, 2]
    assert _ids(queue.get_batch_nowait()) == [3]


@pytest.mark.parametrize("limit", [0, -1])
def test_a_batch_limit_below_one_is_refused(limit: int) -> None:
    queue = EventQueue(10, lambda _symbol: None)
    with pytest.raises(ValueError, match="limit must be at least 1"):
        queue.get_batch_nowait(limit)
