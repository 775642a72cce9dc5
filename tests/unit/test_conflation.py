"""One subscriber's queue policy: books conflate, trades are lossless up to the bound and then
dropped with an in-band report, nothing ever waits."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

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


def _trade(i: int, symbol: str = "BTC-USDC") -> Trade:
    return Trade(
        symbol=symbol,
        exchange_symbol=symbol.replace("-", "_"),
        trade_id=i,
        raw_price="100.5",
        raw_amount="0.1",
        side=Side.BUY,
        event_time_us=i,
        engine_time_us=i,
        received_at_ns=0,
    )


def _delta(u: int, symbol: str = "BTC-USDC") -> BookDelta:
    return BookDelta(
        symbol=symbol,
        exchange_symbol=symbol.replace("-", "_"),
        first_update_id=u,
        last_update_id=u,
        raw_bids=((str(u), "1"),),
        raw_asks=(),
        event_time_us=u,
        engine_time_us=u,
        received_at_ns=0,
    )


class _Books:
    """Stands in for the reconciler: the 'current book' is the last delta id offered."""

    def __init__(self) -> None:
        self.last: dict[str, int] = {}

    def snapshot_of(self, symbol: str) -> BookSnapshot | None:
        if symbol not in self.last:
            return None
        u = self.last[symbol]
        return BookSnapshot(
            symbol=symbol,
            exchange_symbol=symbol,
            update_id=u,
            raw_bids=((str(u), "1"),),
            raw_asks=(),
            engine_time_us=None,
            received_at_ns=0,
            reason="conflated",
        )


def test_books_conflate_at_half_capacity_into_one_current_snapshot() -> None:
    books = _Books()
    q = SubscriberQueue(4, books.snapshot_of)
    q.offer(_trade(1))
    q.offer(_delta(10))
    books.last["BTC-USDC"] = 10
    for u in range(11, 21):
        books.last["BTC-USDC"] = u
        q.offer(_delta(u))
    assert q.conflated == {"BTC-USDC": 10}
    q.offer(_trade(2))  # trades keep the other half of the queue
    out = q.pop_many(10)
    assert [type(e).__name__ for e in out] == ["Trade", "BookDelta", "BookSnapshot", "Trade"]
    snapshot = out[2]
    assert isinstance(snapshot, BookSnapshot)
    assert (snapshot.update_id, snapshot.reason) == (20, "conflated")
    assert snapshot.bids == ((Decimal(20), Decimal(1)),)
    books.last["BTC-USDC"] = 21
    q.offer(_delta(21))
    assert isinstance(q.pop(), BookDelta), "after the marker, deltas flow again"


def test_trades_past_the_bound_are_dropped_and_reported_as_one_range() -> None:
    q = SubscriberQueue(3, _Books().snapshot_of)
    for i in range(1, 9):
        q.offer(_trade(i))
    out = q.pop_many(10)
    assert [e.trade_id for e in out if isinstance(e, Trade)] == [1, 2, 3]
    (report,) = [e for e in out if isinstance(e, StatusEvent)]
    assert report.kind is StatusKind.CONSUMER_OVERFLOW
    assert report.counts["dropped_trades"] == 5
    assert (report.counts["first_dropped_trade_id"], report.counts["last_dropped_trade_id"]) == (
        4,
        8,
    )
    q.offer(_trade(9))
    assert [e.trade_id for e in q.pop_many(10) if isinstance(e, Trade)] == [9]


def test_marker_of_a_resyncing_symbol_yields_nothing() -> None:
    books = _Books()
    q = SubscriberQueue(2, books.snapshot_of)
    q.offer(_trade(1))
    q.offer(_delta(5, "ETH-USDC"))
    assert isinstance(q.pop(), Trade)
    assert q.pop() is None, "no book while the symbol is not LIVE; its resync snapshot will follow"


def _status(kind: StatusKind, symbol: str = "BTC-USDC") -> StatusEvent:
    return StatusEvent(symbol=symbol, kind=kind, reason=kind.value, counts={})


def test_a_marker_never_carries_a_later_subscriptions_book_across_its_end() -> None:
    # Unsubscribed and subscribed again while the reader lags: the old subscription's marker
    # must not turn into the new subscription's book (ahead of "unsubscribed"), and the new
    # subscription's own first snapshot must reach the reader after "listed".
    books = _Books()
    q = SubscriberQueue(8, books.snapshot_of)
    for u in range(1, 12):
        books.last["BTC-USDC"] = u
        q.offer(_delta(u))
    assert q.conflated["BTC-USDC"] > 0
    q.offer(_status(StatusKind.UNSUBSCRIBED))
    del books.last["BTC-USDC"]
    q.offer(_status(StatusKind.LISTED))
    books.last["BTC-USDC"] = 100
    q.offer(
        BookSnapshot(
            symbol="BTC-USDC", exchange_symbol="BTC_USDC", update_id=100,
            raw_bids=(("100", "1"),), raw_asks=(), engine_time_us=100, received_at_ns=0,
            reason="initial",
        )
    )  # fmt: skip
    books.last["BTC-USDC"] = 101
    q.offer(_delta(101))
    out = q.pop_many(100)
    kinds: list[tuple[str, object, int | None]] = []
    for e in out:
        if isinstance(e, StatusEvent):
            kinds.append(("status", e.kind, None))
        elif isinstance(e, BookSnapshot):
            kinds.append(("BookSnapshot", e.reason, e.update_id))
        elif isinstance(e, BookDelta):
            kinds.append(("BookDelta", None, e.last_update_id))
    end = kinds.index(("status", StatusKind.UNSUBSCRIBED, None))
    assert all(row[2] is None or row[2] < 100 for row in kinds[:end]), kinds
    after = kinds[end + 1 :]
    assert after[0] == ("status", StatusKind.LISTED, None), kinds
    # The queue is still past half full: the new subscription conflates too, into its own
    # marker after "listed" — a whole book of the new subscription, at its latest update.
    assert after[1:] == [("BookSnapshot", "conflated", 101)], kinds


@given(
    st.lists(
        st.tuples(st.sampled_from(["t", "d", "r"]), st.sampled_from(["A", "B"])), max_size=200
    ),
    st.integers(1, 8),
    st.sampled_from(["drop_newest", "drop_oldest"]),
)
def test_every_trade_delivered_or_reported_and_books_end_current(
    ops: list[tuple[str, str]], capacity: int, policy: str
) -> None:
    """Any interleaving of offers and reads: each trade is delivered once or named in exactly
    one consumer_overflow range, in order per symbol, the queue stays bounded, and every
    symbol's last delivered book state is its current one."""
    books = _Books()
    q = SubscriberQueue(capacity, books.snapshot_of, trade_policy=policy)  # type: ignore[arg-type]
    sent: dict[str, list[int]] = {}
    got: dict[str, list[int]] = {}
    reported: dict[str, list[int]] = {}
    last_book: dict[str, int] = {}

    def take(event: Event) -> None:
        if isinstance(event, Trade):
            got.setdefault(event.symbol, []).append(event.trade_id)
        elif isinstance(event, StatusEvent):
            assert event.kind is StatusKind.CONSUMER_OVERFLOW
            first = event.counts["first_dropped_trade_id"]
            last = event.counts["last_dropped_trade_id"]
            span = [i for i in sent[event.symbol] if first <= i <= last]
            assert len(span) == event.counts["dropped_trades"], "one contiguous range"
            reported.setdefault(event.symbol, []).extend(span)
        elif isinstance(event, BookDelta):
            last_book[event.symbol] = event.last_update_id
        else:
            assert isinstance(event, BookSnapshot)
            last_book[event.symbol] = event.update_id

    for n, (kind, sym) in enumerate(ops, start=1):
        if kind == "t":
            sent.setdefault(sym, []).append(n)
            q.offer(_trade(n, sym))
        elif kind == "d":
            books.last[sym] = n
            q.offer(_delta(n, sym))
        elif (event := q.pop()) is not None:
            take(event)
        assert len(q) <= capacity + q.status_limit + 4
    while (event := q.pop()) is not None:
        take(event)
    for sym, ids in sent.items():
        delivered, lost = got.get(sym, []), reported.get(sym, [])
        assert sorted(delivered + lost) == ids, "each trade delivered or reported, once"
        assert delivered == sorted(delivered), "delivered trades keep their order"
    assert last_book == books.last, "every symbol's last delivered book state is its current one"


def _drain_one_by_one(q: SubscriberQueue) -> list[Event]:
    out: list[Event] = []
    while (event := q.pop()) is not None:
        out.append(event)
    return out


OPS = st.lists(st.tuples(st.sampled_from(["t", "d"]), st.sampled_from(["A", "B"])), max_size=60)


def _fill(q: SubscriberQueue, books: _Books, ops: list[tuple[str, str]]) -> None:
    for n, (kind, sym) in enumerate(ops, start=1):
        if kind == "t":
            q.offer(_trade(n, sym))
        else:
            books.last[sym] = n
            q.offer(_delta(n, sym))


@given(OPS, st.integers(1, 8), st.integers(1, 10))
def test_pop_many_gives_what_pop_gives(
    ops: list[tuple[str, str]], capacity: int, limit: int
) -> None:
    one_books, many_books = _Books(), _Books()
    one = SubscriberQueue(capacity, one_books.snapshot_of)
    many = SubscriberQueue(capacity, many_books.snapshot_of)
    _fill(one, one_books, ops)
    _fill(many, many_books, ops)
    expected = _drain_one_by_one(one)
    got: list[Event] = []
    while batch := many.pop_many(limit):
        assert len(batch) <= limit
        got.extend(batch)
    assert got == expected
    assert len(many) == 0


@given(OPS, st.lists(st.sampled_from(["t", "d"]), max_size=6), st.integers(1, 8))
def test_offer_many_is_offering_one_by_one(
    ops: list[tuple[str, str]], batch_kinds: list[str], capacity: int
) -> None:
    books = _Books()
    q = SubscriberQueue(capacity, books.snapshot_of)
    reference = SubscriberQueue(capacity, books.snapshot_of)
    _fill(q, books, ops)
    _fill(reference, books, ops)
    batch: list[Event] = [
        _trade(1000 + i) if kind == "t" else _delta(1000 + i) for i, kind in enumerate(batch_kinds)
    ]
    q.offer_many(batch)
    for event in batch:
        reference.offer(event)
    assert _drain_one_by_one(q) == _drain_one_by_one(reference)
