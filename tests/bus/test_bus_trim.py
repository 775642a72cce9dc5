"""A reader slower than the trim: it reports the hole in-band and resumes correct from the
newest checkpoint (real Redis, test-only prefix)."""

from __future__ import annotations

from functools import partial

import trio

from backpack_actors.bus.reader import BusFeed
from backpack_actors.bus.schema import Keys
from backpack_actors.core.events import BookDelta, BookSnapshot, Event, StatusEvent, StatusKind
from backpack_actors.sinks.redis import open_redis_sink
from tests.bus.helpers import REDIS_URL, Books, generate, isolated_prefix, per_stream


def _bus_status(events: list[Event], kind: StatusKind) -> list[StatusEvent]:
    return [
        e
        for e in events
        if isinstance(e, StatusEvent) and e.kind is kind and e.reason.startswith("bus: ")
    ]


async def test_reader_behind_the_trim_reports_the_hole_and_resumes_correct() -> None:
    emitted, exchange = await trio.to_thread.run_sync(
        partial(generate, ["BTC-USDC"], events=3000, seed=11)
    )
    books = Books()
    got: list[Event] = []
    with trio.fail_after(60):
        async with (
            isolated_prefix() as prefix,
            open_redis_sink(
                REDIS_URL, keys=Keys(prefix), checkpoint_deltas=20, trades_maxlen=100
            ) as sink,
        ):
            bus = BusFeed(sink.client, ["BTC-USDC"], keys=Keys(prefix), block=0.05, count=50)
            await bus.start()
            await sink.publish(emitted[:300])
            got += await bus.read_batch()
            assert got, "the reader read the start"
            # The reader stalls while the publisher writes far more than the streams keep.
            for start in range(300, len(emitted), 100):
                await sink.publish(emitted[start : start + 100])
            book_len = await sink.client.xlen(Keys(prefix).book("BTC-USDC"))
            assert book_len < 1000, "the book stream was trimmed"
            while batch := await bus.read_batch():
                got += batch
    for event in got:
        books.apply(event)
    gaps = _bus_status(got, StatusKind.GAP_DETECTED)
    resynced = _bus_status(got, StatusKind.RESYNCED)
    trade_gaps = _bus_status(got, StatusKind.TRADE_GAP)
    assert gaps, "the book hole was reported"
    assert gaps[0].counts["missing_entries"] > 100
    assert resynced, "and the book resynced from a checkpoint"
    assert trade_gaps, "the trade-stream hole was reported"
    assert bus.stats.holes >= 2
    # Nothing of the book between the hole and the checkpoint: the next book event after the
    # report is the snapshot it resynced from.
    after = got[got.index(gaps[0]) + 1 :]
    first_book = next(e for e in after if isinstance(e, (BookSnapshot, BookDelta)))
    assert isinstance(first_book, BookSnapshot)
    assert first_book.reason == "checkpoint"
    # Resumed correct: the book equals the simulator's, and from the resync on the reader
    # yielded exactly what the feed emitted.
    last = books.assert_truth(exchange, "BTC_USDC")
    assert last == max(e.last_update_id for e in emitted if isinstance(e, BookDelta))
    book_tail = per_stream(got[got.index(resynced[-1]) + 1 :])[("BTC-USDC", "book")]
    assert book_tail, "deltas after the resync"
    emitted_book = per_stream(emitted)[("BTC-USDC", "book")]
    assert emitted_book[-len(book_tail) :] == book_tail
