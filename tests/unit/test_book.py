"""OrderBook: absolute levels, ordering, crossing, and the hot-path cost."""

from __future__ import annotations

import timeit
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from backpack_actors.core.book import OrderBook

D = Decimal
ZEROS = [D("0"), D("0.000"), D("0E-8")]

prices = st.integers(1, 400).map(lambda i: D(i) / 100)
sizes = st.one_of(st.sampled_from(ZEROS), st.integers(1, 5000).map(lambda i: D(i) / 1000))
levels = st.lists(st.tuples(prices, sizes), max_size=12)
deltas = st.lists(st.tuples(levels, levels), max_size=25)


def model_apply(model: dict[Decimal, Decimal], lv: list[tuple[Decimal, Decimal]]) -> None:
    for price, size in lv:
        if size == 0:
            model.pop(price, None)
        else:
            model[price] = size


def test_empty_book() -> None:
    book = OrderBook()
    assert book.best_bid() is None
    assert book.best_ask() is None
    assert book.depth(5) == ((), ())
    assert not book.is_crossed()
    assert len(book) == 0


def test_load_snapshot_with_ascending_bids_gives_best_first_depth() -> None:
    book = OrderBook()
    # REST order: both sides ascending, best bid LAST; a zero level means "no level".
    book.load(
        bids=[(D("179.59"), D("1")), (D("179.63"), D("2")), (D("179.64"), D("3"))],
        asks=[(D("179.65"), D("4")), (D("179.66"), D("5")), (D("18.70"), D("0.000"))],
    )
    assert book.best_bid() == (D("179.64"), D("3"))
    assert book.best_ask() == (D("179.65"), D("4"))
    assert book.depth(2) == (
        ((D("179.64"), D("3")), (D("179.63"), D("2"))),
        ((D("179.65"), D("4")), (D("179.66"), D("5"))),
    )
    assert book.bid_count == 3
    assert book.ask_count == 2
    assert len(book) == 5
    assert book.depth(0) == ((), ())


def test_zero_deletes_and_absent_delete_is_noop() -> None:
    book = OrderBook()
    book.apply([(D("10"), D("1")), (D("9"), D("2"))], [(D("11"), D("1"))])
    book.apply([(D("10"), D("0.00")), (D("8"), D("0"))], [(D("12"), D("0"))])
    assert book.depth() == (((D("9"), D("2")),), ((D("11"), D("1")),))
    book.apply_bids([(D("9"), D("7"))])
    book.apply_asks([(D("11"), D("0"))])
    assert book.best_bid() == (D("9"), D("7"))
    assert book.best_ask() is None


def test_crossed_detection() -> None:
    book = OrderBook()
    book.load([(D("10"), D("1"))], [(D("11"), D("1"))])
    assert not book.is_crossed()
    book.apply_bids([(D("11"), D("1"))])
    assert book.is_crossed()


def test_equality_ignores_decimal_scale_and_copy_is_independent() -> None:
    a = OrderBook()
    a.load([(D("1.0"), D("2.50"))], [(D("2"), D("1"))])
    b = OrderBook()
    b.apply([(D("1.00"), D("2.5"))], [(D("2.0"), D("1.000"))])
    assert a == b
    c = a.copy()
    c.apply_bids([(D("1.5"), D("1"))])
    assert c != a
    assert a.best_bid() == (D("1.0"), D("2.50"))


def test_top_matches_accepts_truncated_snapshot_only_when_top_levels_agree() -> None:
    book = OrderBook()
    book.load([(D(p), D("1")) for p in range(1, 11)], [(D(p), D("1")) for p in range(11, 21)])
    assert book.top_matches([(D("9"), D("1")), (D("10"), D("1"))], [(D("11"), D("1"))])
    assert not book.top_matches([(D("8"), D("1")), (D("10"), D("1"))], [(D("11"), D("1"))])
    assert not book.top_matches([(D("10"), D("2"))], [])
    too_many = [(D(p), D("1")) for p in range(-5, 11)]
    assert not book.top_matches(too_many, [])


@given(deltas, st.integers(1, 6))
def test_chunking_invariance_and_model(ds: list[tuple[list, list]], chunk: int) -> None:
    whole = OrderBook()
    chunked = OrderBook()
    bids_model: dict[Decimal, Decimal] = {}
    asks_model: dict[Decimal, Decimal] = {}
    all_bids = [lv for b, _ in ds for lv in b]
    all_asks = [lv for _, a in ds for lv in a]
    whole.apply(all_bids, all_asks)
    for i in range(0, len(all_bids), chunk):
        chunked.apply_bids(all_bids[i : i + chunk])
    for i in range(0, len(all_asks), chunk):
        chunked.apply_asks(all_asks[i : i + chunk])
    model_apply(bids_model, all_bids)
    model_apply(asks_model, all_asks)
    assert whole == chunked
    assert whole.as_dicts() == (bids_model, asks_model)
    bids, asks = whole.depth()
    assert list(bids) == sorted(bids_model.items(), reverse=True)
    assert list(asks) == sorted(asks_model.items())
    assert whole.best_bid() == (max(bids_model.items()) if bids_model else None)
    assert whole.best_ask() == (min(asks_model.items()) if asks_model else None)


@given(deltas)
def test_absolute_levels_are_idempotent(ds: list[tuple[list, list]]) -> None:
    once = OrderBook()
    twice = OrderBook()
    for b, a in ds:
        once.apply(b, a)
        twice.apply(b, a)
        twice.apply(b, a)
    assert once == twice


@given(deltas, st.integers(0, 30))
def test_depth_is_sorted_and_bounded(ds: list[tuple[list, list]], n: int) -> None:
    book = OrderBook()
    for b, a in ds:
        book.apply(b, a)
    bids, asks = book.depth(n)
    assert len(bids) == min(n, book.bid_count)
    assert len(asks) == min(n, book.ask_count)
    assert [p for p, _ in bids] == sorted((p for p, _ in bids), reverse=True)
    assert [p for p, _ in asks] == sorted(p for p, _ in asks)
    assert all(size != 0 for _, size in bids + asks)


@given(deltas)
def test_never_crossed_after_valid_stream(ds: list[tuple[list, list]]) -> None:
    # A valid stream keeps bids below the asks: map bid prices under 2.00, asks at/over 2.00.
    book = OrderBook()
    for b, a in ds:
        book.apply([(p / 2, s) for p, s in b if p / 2 < 2], [(p / 2 + 2, s) for p, s in a])
        assert not book.is_crossed()


def test_apply_hot_path_cost() -> None:
    book = OrderBook()
    book.load(
        [(D(100) - D(i) / 100, D(1)) for i in range(1, 1001)],
        [(D(100) + D(i) / 100, D(1)) for i in range(1001)],
    )
    bids = [(D("99.98"), D("2.5")), (D("99.96"), D("1.5"))]
    asks = [(D("100.01"), D("3"))]
    n = 20_000
    per_call = min(timeit.repeat(lambda: book.apply(bids, asks), number=n, repeat=3)) / n
    print(f"OrderBook.apply, 3-level delta on a 2000-level book: {per_call * 1e6:.2f} µs")
    # About 0.6 µs measured; the bound only catches an accidental O(n) path.
    assert per_call < 20e-6
