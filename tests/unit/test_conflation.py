"""The consumer-queue policy: trades lossless, books conflated to the latest state, all counted."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from backpack_actors.core.conflation import ConflatingQueue
from backpack_actors.core.events import BookDelta, BookSnapshot, Event, Side, Trade


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
        received_at=0.0,
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
        received_at=0.0,
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
            received_at=0.0,
            reason="conflated",
        )


def test_trades_refused_when_full_books_conflated_into_one_snapshot() -> None:
    books = _Books()
    q = ConflatingQueue(3, books.snapshot_of)
    for event in (_trade(1), _trade(2), _delta(10)):
        assert q.offer(event)
    assert not q.offer(_trade(3)), "a full queue must make a lossless producer wait"
    for u in range(11, 21):
        books.last["BTC-USDC"] = u
        assert q.offer(_delta(u)), "book events never block the producer"
    assert len(q) == 4, "one marker for the conflated symbol, nothing more"
    assert q.conflated == {"BTC-USDC": 10}
    out = [q.pop() for _ in range(4)]
    assert [type(e).__name__ for e in out] == ["Trade", "Trade", "BookDelta", "BookSnapshot"]
    last = out[-1]
    assert isinstance(last, BookSnapshot)
    assert last.update_id == 20
    assert last.reason == "conflated"
    assert last.raw_bids == (("20", "1"),)
    assert last.bids == ((Decimal(20), Decimal(1)),)
    assert q.pop() is None
    books.last["BTC-USDC"] = 21
    assert q.offer(_delta(21))
    assert isinstance(q.pop(), BookDelta), "after the marker, deltas flow"


def test_marker_of_a_resyncing_symbol_yields_nothing() -> None:
    books = _Books()
    q = ConflatingQueue(1, books.snapshot_of)
    q.offer(_trade(1))
    q.offer(_delta(5, "ETH-USDC"))
    assert isinstance(q.pop(), Trade)
    assert q.pop() is None, "no book while the symbol is not LIVE; its resync snapshot will follow"


@given(
    st.lists(st.tuples(st.sampled_from(["t", "d"]), st.sampled_from(["A", "B"])), max_size=200),
    st.integers(1, 8),
)
def test_no_trade_lost_and_books_end_current(ops: list[tuple[str, str]], capacity: int) -> None:
    books = _Books()
    q = ConflatingQueue(capacity, books.snapshot_of)
    sent: list[int] = []
    got_trades: list[int] = []
    last_book: dict[str, int] = {}
    for n, (kind, sym) in enumerate(ops, start=1):
        if kind == "t":
            while not q.offer(_trade(n, sym)):
                event = q.pop()
                assert event is not None
                if isinstance(event, Trade):
                    got_trades.append(event.trade_id)
                elif isinstance(event, BookDelta | BookSnapshot):
                    last_book[event.symbol] = (
                        event.last_update_id if isinstance(event, BookDelta) else event.update_id
                    )
            sent.append(n)
        else:
            books.last[sym] = n
            assert q.offer(_delta(n, sym))
        assert len(q) <= capacity + 2
    while (event := q.pop()) is not None:
        if isinstance(event, Trade):
            got_trades.append(event.trade_id)
        elif isinstance(event, BookDelta):
            last_book[event.symbol] = event.last_update_id
        else:
            assert isinstance(event, BookSnapshot), event
            last_book[event.symbol] = event.update_id
    assert got_trades == sent, "trades are lossless and in order"
    assert last_book == books.last, "every symbol's last delivered book state is its current one"


def test_book_policy_block_makes_books_wait_like_trades() -> None:
    books = _Books()
    q = ConflatingQueue(2, books.snapshot_of, conflate_books=False)
    assert q.offer(_delta(1))
    assert q.offer(_delta(2))
    assert not q.offer(_delta(3)), "with books lossless, a full queue makes the producer wait"
    assert q.conflated == {}
    assert isinstance(q.pop(), BookDelta)
    assert q.offer(_delta(3))


def _drain_one_by_one(q: ConflatingQueue) -> list[Event]:
    out: list[Event] = []
    while (event := q.pop()) is not None:
        out.append(event)
    return out


OPS = st.lists(st.tuples(st.sampled_from(["t", "d"]), st.sampled_from(["A", "B"])), max_size=60)


def _fill(q: ConflatingQueue, books: _Books, ops: list[tuple[str, str]]) -> None:
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
    one = ConflatingQueue(capacity, one_books.snapshot_of)
    many = ConflatingQueue(capacity, many_books.snapshot_of)
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
def test_extend_if_room_is_offering_one_by_one_or_nothing(
    ops: list[tuple[str, str]], batch_kinds: list[str], capacity: int
) -> None:
    books = _Books()
    q = ConflatingQueue(capacity, books.snapshot_of)
    _fill(q, books, ops)
    batch: list[Event] = [
        _trade(1000 + i) if kind == "t" else _delta(1000 + i) for i, kind in enumerate(batch_kinds)
    ]
    reference = ConflatingQueue(capacity, books.snapshot_of)
    _fill(reference, books, ops)
    before = len(q)
    if q.extend_if_room(batch):
        assert all(reference.offer(event) for event in batch)
        assert _drain_one_by_one(q) == _drain_one_by_one(reference)
    else:
        assert len(q) == before, "refused: nothing queued"
        assert q.conflated or before + len(batch) > capacity
