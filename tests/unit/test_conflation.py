"""The consumer-queue policy: trades lossless, books conflated to the latest state, all counted."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from backpack_actors.core.conflation import ConflatingQueue
from backpack_actors.core.events import BookDelta, BookSnapshot, Side, Trade


def _trade(i: int, symbol: str = "BTC-USDC") -> Trade:
    return Trade(
        symbol=symbol,
        exchange_symbol=symbol.replace("-", "_"),
        trade_id=i,
        price=Decimal("100.5"),
        amount=Decimal("0.1"),
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
        bids=((Decimal(u), Decimal(1)),),
        asks=(),
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
            bids=((Decimal(u), Decimal(1)),),
            asks=(),
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
