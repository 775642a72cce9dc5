"""OrderBook: text levels, one level per price value, ordering, crossing, and the hot-path cost."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from backpack_actors.core.book import InvalidLevel, OrderBook

D = Decimal
Text = tuple[str, str]
Deltas = list[tuple[list[Text], list[Text]]]


def values(levels: tuple[Text, ...]) -> list[tuple[Decimal, Decimal]]:
    return [(D(p), D(s)) for p, s in levels]


# Prices 0.01..4.00 spelled with 2 to 4 decimals, so one price often arrives spelled two ways.
prices = st.builds(
    lambda i, places: f"{D(i) / 100:.{places}f}", st.integers(1, 400), st.integers(2, 4)
)
# Zero sizes in plain, exponent and signed spellings: the fast and the slow delete paths.
sizes = st.one_of(
    st.sampled_from(["0", "0.000", "0E-8", "-0"]),
    st.builds(lambda i: str(D(i) / 1000), st.integers(1, 5000)),
)
levels = st.lists(st.tuples(prices, sizes), max_size=12)
deltas = st.lists(st.tuples(levels, levels), max_size=25)


class SideModel:
    """The expected side: value -> (first spelling since the level appeared, last size text)."""

    def __init__(self) -> None:
        self.levels: dict[Decimal, Text] = {}

    def apply(self, lv: list[Text]) -> bool:
        inserted = False
        for price, size in lv:
            value = D(price)
            if D(size) == 0:
                self.levels.pop(value, None)
            elif value in self.levels:
                self.levels[value] = (self.levels[value][0], size)
            else:
                self.levels[value] = (price, size)
                inserted = True
        return inserted

    def best_first(self, descending: bool) -> list[Text]:
        return [self.levels[v] for v in sorted(self.levels, reverse=descending)]

    def as_dict(self) -> dict[Decimal, Decimal]:
        return {v: D(s) for v, (_, s) in self.levels.items()}


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
        bids=[("179.59", "1"), ("179.63", "2"), ("179.64", "3")],
        asks=[("179.65", "4"), ("179.66", "5"), ("18.70", "0.000")],
    )
    assert book.best_bid() == ("179.64", "3")
    assert book.best_ask() == ("179.65", "4")
    assert book.depth(2) == (
        (("179.64", "3"), ("179.63", "2")),
        (("179.65", "4"), ("179.66", "5")),
    )
    assert book.bid_count == 3
    assert book.ask_count == 2
    assert len(book) == 5
    assert book.depth(0) == ((), ())


def test_levels_are_text_and_ordered_by_value_not_by_text() -> None:
    book = OrderBook()
    # As text "9.5" > "10" > "100"; by value the order is the other way round.
    book.load([("9.5", "1"), ("10", "2"), ("100", "3")], [("1000", "1"), ("200", "1")])
    bids, asks = book.depth()
    assert bids == (("100", "3"), ("10", "2"), ("9.5", "1"))
    assert asks == (("200", "1"), ("1000", "1"))
    best = book.best_bid()
    assert best == ("100", "3")
    assert best is not None
    assert all(type(x) is str for level in bids + asks + (best,) for x in level)


def test_zero_deletes_and_absent_delete_is_noop() -> None:
    book = OrderBook()
    book.apply([("10", "1"), ("9", "2")], [("11", "1")])
    book.apply([("10", "0.00"), ("8", "0")], [("12", "0")])
    assert book.depth() == ((("9", "2"),), (("11", "1"),))
    book.apply([("9", "7")], [])
    book.apply([], [("11", "0E-3")])
    assert book.best_bid() == ("9", "7")
    assert book.best_ask() is None
    assert len(book) == 1


def test_two_spellings_of_one_price_are_one_level() -> None:
    book = OrderBook()
    assert book.apply([("1.50", "1")], [])
    assert not book.apply([("1.5", "2")], []), "another spelling is no new price"
    assert book.depth() == ((("1.50", "2"),), ())
    assert book.bid_count == 1
    assert not book.apply([("1.500", "0")], [])
    assert book.depth() == ((), ())
    # Once gone, the level comes back under whatever spelling arrives first.
    assert book.apply([("1.5", "4")], [])
    assert book.depth() == ((("1.5", "4"),), ())
    assert book.as_dicts() == ({D("1.5"): D("4")}, {})


def test_apply_returns_true_only_when_a_new_price_is_inserted() -> None:
    book = OrderBook()
    book.load([("99", "1"), ("100", "1")], [("101", "1")])
    assert not book.apply([("100", "5")], []), "size change"
    assert not book.apply([], [("101", "1e1")]), "size change, exponent"
    assert not book.apply([("99", "0")], []), "delete"
    assert not book.apply([("98", "0")], [("105", "0")]), "delete of an absent level"
    assert not book.apply([], [])
    assert book.apply([("97", "1")], [])
    assert book.apply([], [("102", "1")])
    assert book.apply([("96", "1")], [("101", "3")]), "new bid, changed ask"
    assert book.apply([("96", "2")], [("103", "1")]), "changed bid, new ask"
    assert book.depth() == (
        (("100", "5"), ("97", "1"), ("96", "2")),
        (("101", "3"), ("102", "1"), ("103", "1")),
    )


def test_decimal_pairs_are_accepted_by_apply_and_load() -> None:
    book = OrderBook()
    book.load([(D("1.50"), D("2.0")), (D("1E+0"), D("3"))], [(D("2"), D("0E-8")), (D("3"), D(1))])
    assert book.depth() == ((("1.50", "2.0"), ("1", "3")), (("3", "1"),))
    assert book.apply([(D("1.2"), D("1"))], [])
    assert not book.apply([(D("1.5"), D("7"))], []), "same value as the text level 1.50"
    assert not book.apply([], [(D("3.00"), D("0"))])
    assert book.depth() == ((("1.50", "7"), ("1.2", "1"), ("1", "3")), ())
    # Text and Decimal input build the same book.
    text = OrderBook()
    text.load([("1.5", "7"), ("1.2", "1"), ("1", "3")], [])
    assert text == book


@pytest.mark.parametrize(
    ("bids", "asks", "message"),
    [
        ([("abc", "1")], [], "bad level ['abc', '1']: price 'abc' is not a decimal number"),
        ([("1", "NaN")], [], "bad level ['1', 'NaN']: size 'NaN' must be a finite decimal >= 0"),
        ([("1", "-1")], [], "bad level ['1', '-1']: size '-1' must be a finite decimal >= 0"),
        ([("0", "1")], [], "bad level ['0', '1']: price '0' must be a finite decimal > 0"),
        ([], [("-2", "1")], "bad level ['-2', '1']: price '-2' must be a finite decimal > 0"),
        ([], [("Infinity", "1")], "price 'Infinity' must be a finite decimal > 0"),
        ([], [(".", "1")], "price '.' is not a decimal number"),
        ([], [("", "1")], "price '' is not a decimal number"),
        ([], [("2", "²")], "size '²' is not a decimal number"),
        # A known price: the size still has to be checked.
        ([("100", "x")], [], "size 'x' is not a decimal number"),
        ([], [("101", "sNaN")], "size 'sNaN' must be a finite decimal >= 0"),
    ],
)
def test_bad_level_raises_invalid_level(bids: list[Text], asks: list[Text], message: str) -> None:
    book = OrderBook()
    book.load([("100", "1")], [("101", "1")])
    with pytest.raises(InvalidLevel) as info:
        book.apply(bids, asks)
    assert message in str(info.value)
    assert isinstance(info.value, ValueError)
    # A single bad level changes nothing.
    assert book.depth() == ((("100", "1"),), (("101", "1"),))


@pytest.mark.parametrize("level", [("abc", "1"), ("1", "NaN"), ("1", "-1"), ("0", "1")])
def test_load_rejects_bad_level_and_keeps_the_old_book(level: Text) -> None:
    book = OrderBook()
    book.load([("100", "1")], [("101", "1")])
    with pytest.raises(InvalidLevel, match="bad level"):
        book.load([("99", "1"), level], [("102", "1")])
    assert book.depth() == ((("100", "1"),), (("101", "1"),))


def test_crossed_detection() -> None:
    book = OrderBook()
    book.load([("10", "1")], [("11", "1")])
    assert not book.is_crossed()
    # Compared by value: "9.99" > "11" as text, yet it is not crossed.
    book.apply([("9.99", "1")], [])
    assert not book.is_crossed()
    book.apply([("11.0", "1")], [])
    assert book.is_crossed()


def test_equality_ignores_decimal_scale_and_copy_is_independent() -> None:
    a = OrderBook()
    a.load([("1.0", "2.50")], [("2", "1")])
    b = OrderBook()
    b.apply([("1.00", "2.5")], [("2.0", "1.000")])
    assert a == b
    assert a.as_dicts() == ({D("1"): D("2.5")}, {D("2"): D("1")})
    c = a.copy()
    c.apply([("1.5", "1")], [])
    c.apply([("1.0", "9")], [("2", "0")])
    assert c != a
    assert a.best_bid() == ("1.0", "2.50")
    assert a.best_ask() == ("2", "1")
    assert c.depth() == ((("1.5", "1"), ("1.0", "9")), ())


def test_top_matches_accepts_truncated_snapshot_only_when_top_levels_agree() -> None:
    book = OrderBook()
    book.load([(str(p), "1") for p in range(1, 11)], [(str(p), "1") for p in range(11, 21)])
    assert book.top_matches([("9", "1"), ("10.0", "1.00")], [("11", "1")])
    assert book.top_matches([(D("9"), D("1")), (D("10"), D("1"))], [(D("11"), D("1"))])
    assert not book.top_matches([("8", "1"), ("10", "1")], [("11", "1")])
    assert not book.top_matches([("10", "2")], [])
    too_many = [(str(p), "1") for p in range(1, 12)]
    assert not book.top_matches(too_many, [])


@given(deltas, st.integers(1, 6))
def test_chunking_invariance_and_model(ds: Deltas, chunk: int) -> None:
    whole = OrderBook()
    chunked = OrderBook()
    bids_model = SideModel()
    asks_model = SideModel()
    all_bids = [lv for b, _ in ds for lv in b]
    all_asks = [lv for _, a in ds for lv in a]
    whole.apply(all_bids, all_asks)
    for i in range(0, len(all_bids), chunk):
        chunked.apply(all_bids[i : i + chunk], [])
    for i in range(0, len(all_asks), chunk):
        chunked.apply([], all_asks[i : i + chunk])
    bids_model.apply(all_bids)
    asks_model.apply(all_asks)
    assert whole == chunked
    assert whole.as_dicts() == (bids_model.as_dict(), asks_model.as_dict())
    expected = (tuple(bids_model.best_first(True)), tuple(asks_model.best_first(False)))
    assert whole.depth() == expected
    assert chunked.depth() == expected
    assert whole.best_bid() == (expected[0][0] if expected[0] else None)
    assert whole.best_ask() == (expected[1][0] if expected[1] else None)
    assert (whole.bid_count, whole.ask_count) == (len(expected[0]), len(expected[1]))


@given(deltas)
def test_apply_reports_exactly_the_new_prices(ds: Deltas) -> None:
    book = OrderBook()
    bids_model = SideModel()
    asks_model = SideModel()
    for b, a in ds:
        # Deleted and re-added within one delta counts: the level is new again.
        new = bids_model.apply(b) | asks_model.apply(a)
        assert book.apply(b, a) is new


@given(deltas)
def test_decimal_input_builds_the_same_book_as_text(ds: Deltas) -> None:
    text = OrderBook()
    dec = OrderBook()
    for b, a in ds:
        text.apply(b, a)
        dec.apply([(D(p), D(s)) for p, s in b], [(D(p), D(s)) for p, s in a])
    assert dec == text
    assert [values(side) for side in dec.depth()] == [values(side) for side in text.depth()]


@given(deltas)
def test_absolute_levels_are_idempotent(ds: Deltas) -> None:
    once = OrderBook()
    twice = OrderBook()
    for b, a in ds:
        once.apply(b, a)
        twice.apply(b, a)
        twice.apply(b, a)
    assert once == twice
    assert once.depth() == twice.depth()


@given(deltas, st.integers(0, 30))
def test_depth_is_sorted_and_bounded(ds: Deltas, n: int) -> None:
    book = OrderBook()
    for b, a in ds:
        book.apply(b, a)
    bids, asks = book.depth(n)
    assert len(bids) == min(n, book.bid_count)
    assert len(asks) == min(n, book.ask_count)
    bid_prices = [D(p) for p, _ in bids]
    ask_prices = [D(p) for p, _ in asks]
    assert bid_prices == sorted(bid_prices, reverse=True)
    assert len(set(bid_prices)) == len(bid_prices)
    assert ask_prices == sorted(ask_prices)
    assert len(set(ask_prices)) == len(ask_prices)
    assert all(D(size) != 0 for _, size in bids + asks)
    assert (bids, asks) == tuple(side[:n] for side in book.depth())


@given(deltas)
def test_never_crossed_after_valid_stream(ds: Deltas) -> None:
    # A valid stream keeps bids below the asks: map bid prices under 2.00, asks at/over 2.00.
    book = OrderBook()
    for b, a in ds:
        book.apply(
            [(str(D(p) / 2), s) for p, s in b if D(p) / 2 < 2],
            [(str(D(p) / 2 + 2), s) for p, s in a],
        )
        assert not book.is_crossed()


def test_text_price_with_decimal_size_is_applied_not_crashed() -> None:
    book = OrderBook()
    book.apply([("1.0", "1")], [])
    # A known text price with a Decimal size misses the text fast path and is normalized.
    assert not book.apply([("1.0", D("2.5"))], [])
    assert book.depth() == ((("1.0", "2.5"),), ())
    assert book.apply([], [("3", D("0.10"))]), "a new ask price"
    assert not book.apply([("1.0", D("0"))], [])
    book.apply([("2.0", D("1E-3"))], [])
    assert book.depth() == ((("2.0", "0.001"),), (("3", "0.10"),))


def test_load_keeps_the_first_spelling_of_a_price_like_apply() -> None:
    loaded = OrderBook()
    loaded.load([("1.50", "1"), ("1.5", "2")], [])
    applied = OrderBook()
    applied.apply([("1.50", "1"), ("1.5", "2")], [])
    assert loaded.depth() == applied.depth() == ((("1.50", "2"),), ())
