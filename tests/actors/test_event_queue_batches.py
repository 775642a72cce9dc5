"""A subscription's list-at-a-time reads (what ``Feed.batches()`` uses)."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from backpack_actors.actors.emitter import Emitter, Subscription
from backpack_actors.core.events import Event, Side, StatusEvent, StatusKind, Trade


def _trade(trade_id: int) -> Trade:
    return Trade("BTC-USDC", "BTC_USDC", trade_id, "1.5", "2", Side.BUY, trade_id, trade_id, 0.0)


def _ids(events: list[Event]) -> list[int]:
    return [event.trade_id for event in events if isinstance(event, Trade)]


async def test_get_batch_waits_then_returns_everything_queued_in_order() -> None:
    queue = Subscription("test", 100, lambda _symbol: None)
    got: list[list[Event]] = []

    async def reader() -> None:
        got.append(await queue.get_batch())

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(reader)
            await trio.testing.wait_all_tasks_blocked()
            assert got == [], "nothing queued yet: the reader waits"
            queue.offer_many([_trade(1), _trade(2), _trade(3)])
    assert [_ids(batch) for batch in got] == [[1, 2, 3]]


async def test_get_batch_respects_its_limit_and_ends_when_closed() -> None:
    queue = Subscription("test", 100, lambda _symbol: None)
    queue.offer_many([_trade(i) for i in range(5)])
    assert _ids(await queue.get_batch(2)) == [0, 1]
    queue.close()
    assert _ids(await queue.get_batch()) == [2, 3, 4], "drained before the end"
    with pytest.raises(trio.EndOfChannel):
        await queue.get_batch()


def test_a_full_queue_never_blocks_the_publisher_and_reports_what_it_dropped() -> None:
    emitter = Emitter(lambda _symbol: None)
    slow = emitter.subscribe("slow", 2)
    fast = emitter.subscribe("fast", 100)
    emitter.publish([_trade(1), _trade(2), _trade(3), _trade(4)])
    assert _ids(fast.get_batch_nowait()) == [1, 2, 3, 4], "the other subscriber loses nothing"
    got = slow.get_batch_nowait()
    assert _ids(got) == [1, 2]
    (overflow,) = [e for e in got if isinstance(e, StatusEvent)]
    assert overflow.kind is StatusKind.CONSUMER_OVERFLOW
    assert overflow.counts["dropped_trades"] == 2
    assert (
        overflow.counts["first_dropped_trade_id"],
        overflow.counts["last_dropped_trade_id"],
    ) == (
        3,
        4,
    )


@pytest.mark.parametrize("limit", [0, -1])
def test_a_batch_limit_below_one_is_refused(limit: int) -> None:
    queue = Subscription("test", 10, lambda _symbol: None)
    with pytest.raises(ValueError, match="limit must be at least 1"):
        queue.get_batch_nowait(limit)


async def test_batches_iterates_lists_until_closed_and_drained() -> None:
    queue = Subscription("test", 100, lambda _symbol: None)
    got: list[list[int]] = []

    async def reader() -> None:
        async for batch in queue.batches(2):
            got.append(_ids(batch))

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(reader)
            await trio.testing.wait_all_tasks_blocked()
            queue.offer_many([_trade(1), _trade(2), _trade(3)])
            await trio.testing.wait_all_tasks_blocked()
            queue.offer_many([_trade(4)])
            queue.close()
    assert got == [[1, 2], [3], [4]]


async def test_a_waiting_batches_reader_can_be_cancelled_and_read_again(
    autojump_clock: trio.testing.MockClock,
) -> None:
    queue = Subscription("test", 100, lambda _symbol: None)
    batches = queue.batches()
    with trio.move_on_after(1) as scope:
        await batches.__anext__()
    assert scope.cancelled_caught
    queue.offer_many([_trade(7)])
    with trio.fail_after(5):
        assert _ids(await batches.__anext__()) == [7]
