"""Issue 12: decimal text is bounded per market (tick and step size), not only globally.

A market with tick 0.01 and step 0.0001 takes prices of at most 2 + PLACES_SLACK decimal places
and PRICE_INTEGER_DIGITS integer digits, sizes of at most 4 + PLACES_SLACK places and
SIZE_INTEGER_DIGITS integer digits. Text outside that, from a WS frame, a REST depth body or a REST
trade, is a protocol error for that frame or body: reported, counted, never applied; the book is
unchanged and the next good frame (or body) applies.
"""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backpack_actors.actors.messages import FrameBatch, SnapshotReady, StreamStarted
from backpack_actors.actors.reconciler import Reconciler
from backpack_actors.core import wire
from backpack_actors.core.dectext import (
    PLACES_SLACK,
    PRICE_INTEGER_DIGITS,
    SIZE_INTEGER_DIGITS,
    MarketBounds,
    is_price_text,
    is_size_text,
)
from backpack_actors.core.events import BookDelta, Event, ProtocolErrorEvent, Trade
from backpack_actors.core.symbols import MarketInfo
from backpack_actors.core.sync import BookSync, Malformed, PublishSnapshot, RequestSnapshot
from backpack_actors.core.trades import EmitTrade, TradeSync
from backpack_actors.core.wire import DepthEvent, TradeEvent

SYM = "SOL_USDC"
TICK, STEP = Decimal("0.01"), Decimal("0.0001")
BOUNDS = MarketBounds.for_increments(TICK, STEP)
PRICE_PLACES = 2 + PLACES_SLACK
SIZE_PLACES = 4 + PLACES_SLACK
# One place more than the market allows, and one integer digit more.
LONG_PRICE = "179." + "1" * (PRICE_PLACES + 1)
LONG_SIZE = "1." + "1" * (SIZE_PLACES + 1)
BIG_PRICE = "1" * (PRICE_INTEGER_DIGITS + 1)
BIG_SIZE = "1" * (SIZE_INTEGER_DIGITS + 1)
INFO = MarketInfo(
    exchange_id=SYM,
    ccxt_symbol="SOL/USDC",
    normalized="SOL-USDC",
    base="SOL",
    quote="USDC",
    market_type="spot",
    tick_size=TICK,
    step_size=STEP,
    min_size=STEP,
    active=True,
)


def depth(first: int, last: int, bids: list[list[str]], asks: list[list[str]]) -> DepthEvent:
    frame = {
        "stream": f"depth.{SYM}",
        "data": {"e": "depth", "E": last, "T": last, "s": SYM, "U": first, "u": last}
        | {"b": bids, "a": asks},
    }
    data = wire.decode_ws_frame(json.dumps(frame)).data
    assert isinstance(data, DepthEvent)
    return data


def trade(trade_id: int, price: str = "179.7", quantity: str = "1.5") -> TradeEvent:
    frame = {
        "stream": f"trade.{SYM}",
        "data": {"e": "trade", "E": trade_id, "T": trade_id, "s": SYM, "t": trade_id}
        | {"p": price, "q": quantity, "b": "1", "a": "2", "m": False},
    }
    data = wire.decode_ws_frame(json.dumps(frame)).data
    assert isinstance(data, TradeEvent)
    return data


def snapshot(last: int, bids: list[list[str]], asks: list[list[str]]) -> wire.DepthSnapshot:
    body = {"lastUpdateId": str(last), "timestamp": last, "bids": bids, "asks": asks}
    return wire.decode_depth_snapshot(json.dumps(body), SYM)


def rest_trades(*trades: tuple[int, str, str]) -> list[wire.RestTrade]:
    body = [
        {"id": i, "price": p, "quantity": q, "quoteQuantity": "1", "timestamp": i}
        | {"isBuyerMaker": True}
        for i, p, q in trades
    ]
    return wire.decode_trades(json.dumps(body), SYM)


GOOD_SNAPSHOT = snapshot(10, [["179.60", "2.0000"]], [["179.70", "1.5000"]])


def live_sync() -> BookSync[DepthEvent]:
    sync: BookSync[DepthEvent] = BookSync(SYM, bounds=BOUNDS)
    sync.stream_started(1)
    sync.on_snapshot(GOOD_SNAPSHOT)
    assert sync.last_update_id == 10
    # The first delta after a snapshot bridges; after it the fast path is taken.
    assert sync.on_delta_fast(1, depth(11, 11, [["179.61", "1.0000"]], [])) is not None
    assert sync.on_delta_fast(1, depth(12, 12, [["179.62", "1.0000"]], [])) is None
    return sync


# -- the bounds themselves --------------------------------------------------------------------


def test_bounds_follow_the_tick_and_step_size() -> None:
    assert BOUNDS.price_places == PRICE_PLACES
    assert BOUNDS.size_places == SIZE_PLACES
    assert BOUNDS.price_digits == PRICE_INTEGER_DIGITS
    assert BOUNDS.size_digits == SIZE_INTEGER_DIGITS
    # A tick written with trailing zeros counts its significant places; a coarse tick raises
    # the integer digits so that 100 ticks always fit.
    wide = MarketBounds.for_increments(Decimal("0.0100"), Decimal("1000000000000000"))
    assert wide.price_places == PRICE_PLACES
    assert wide.size_places == PLACES_SLACK
    assert wide.size_digits == 18


@pytest.mark.parametrize(
    "increment", ["0", "-0.01", "NaN", "Infinity", "1e-100", "1e100", "1" + "0" * 45]
)
def test_unbounded_increments_are_refused(increment: str) -> None:
    with pytest.raises(ValueError, match="tick size"):
        MarketBounds.for_increments(Decimal(increment), STEP)
    with pytest.raises(ValueError, match="step size"):
        MarketBounds.for_increments(TICK, Decimal(increment))


@pytest.mark.parametrize(
    ("text", "accepted"),
    [
        ("179.70", True),
        ("179." + "1" * PRICE_PLACES, True),
        (LONG_PRICE, False),
        ("9" * PRICE_INTEGER_DIGITS, True),
        (BIG_PRICE, False),
        ("1E-10", True),
        ("1E-11", False),
        ("1.5E+11", True),
        ("1E+12", False),
        ("0" * 30 + "1.5", True),
        ("1e-30", False),
        ("0", False),
        ("abc", False),
    ],
)
def test_price_text_against_the_markets_bounds(text: str, accepted: bool) -> None:
    assert (BOUNDS.price_problem(text) is None) is accepted
    assert (BOUNDS.price_problem(Decimal(text) if text != "abc" else text) is None) is accepted


def test_size_text_against_the_markets_bounds() -> None:
    assert BOUNDS.size_problem("0." + "0" * SIZE_PLACES) is None
    assert BOUNDS.size_problem("0." + "0" * (SIZE_PLACES + 1)) is not None
    assert BOUNDS.size_problem(LONG_SIZE) is not None
    assert BOUNDS.size_problem(BIG_SIZE) is not None
    assert BOUNDS.size_problem("9" * SIZE_INTEGER_DIGITS) is None
    problem = BOUNDS.size_problem(LONG_SIZE)
    assert problem is not None
    assert f"{SIZE_PLACES + 1} decimal places" in problem
    assert f"market's {SIZE_PLACES}" in problem


NUMBER_TEXT = st.one_of(
    st.from_regex(r"\A[0-9]{1,20}(\.[0-9]{0,20})?\Z"),
    st.from_regex(r"\A[0-9]{1,6}(\.[0-9]{0,6})?[eE][+-]?[0-9]{1,3}\Z"),
    st.text(alphabet="0123456789.eE+-", max_size=30),
)


def _exact(text: str, places: int, digits: int) -> bool:
    # The rule by definition: at most `places` places and `digits` integer digits.
    value = Decimal(text)
    exponent = value.as_tuple().exponent
    assert isinstance(exponent, int)
    return -exponent <= places and value.adjusted() < digits


@settings(max_examples=400, deadline=None)
@given(price=NUMBER_TEXT, size=NUMBER_TEXT)
def test_levels_problem_agrees_with_the_exact_rule(price: str, size: str) -> None:
    problem = BOUNDS.levels_problem([(price, size)])
    valid = is_price_text(price) and is_size_text(size)
    if not valid:
        # Text that is no number may pass here only when short: the book refuses it then.
        if problem is None:
            assert len(price) <= BOUNDS.price_fast
            assert len(size) <= BOUNDS.size_fast
        return
    inside = _exact(price, PRICE_PLACES, PRICE_INTEGER_DIGITS) and _exact(
        size, SIZE_PLACES, SIZE_INTEGER_DIGITS
    )
    assert (problem is None) is inside, (price, size, problem)
    # Decimals get the same answer as their text.
    assert (BOUNDS.levels_problem([(Decimal(price), Decimal(size))]) is None) is inside


def test_market_info_carries_its_bounds() -> None:
    assert INFO.bounds == BOUNDS


# -- WebSocket depth --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "level", [[LONG_PRICE, "1.0000"], ["179.63", LONG_SIZE], [BIG_PRICE, "1"], ["1e-20", "1"]]
)
@pytest.mark.parametrize("fast", [True, False], ids=["fast-path", "on_delta"])
def test_a_delta_outside_the_markets_bounds_is_dropped_and_the_next_good_one_applies(
    level: list[str], fast: bool
) -> None:
    sync = live_sync()
    before = sync.book.depth()
    # The bad level comes after a good one: nothing of the frame may be applied.
    bad = depth(13, 13, [["179.55", "3.0000"], level], [])
    actions = sync.on_delta_fast(1, bad) if fast else sync.on_delta(1, bad)
    assert actions is not None
    assert [type(a) for a in actions] == [Malformed]
    malformed = actions[0]
    assert isinstance(malformed, Malformed)
    assert malformed.stream == f"depth.{SYM}"
    assert "bad bid level" in malformed.reason
    assert malformed.frame is bad
    assert sync.book.depth() == before
    assert sync.last_update_id == 12
    assert sync.counters["malformed"] == 1
    # The same update, sent right, applies on the fast path.
    good = depth(13, 13, [["179.55", "3.0000"]], [])
    assert sync.on_delta_fast(1, good) is None
    assert sync.book.best_bid() == ("179.62", "1.0000")
    assert ("179.55", "3.0000") in sync.book.depth()[0]
    assert sync.last_update_id == 13


def test_a_buffered_delta_outside_the_bounds_is_not_buffered() -> None:
    sync: BookSync[DepthEvent] = BookSync(SYM, bounds=BOUNDS)
    sync.stream_started(1)
    actions = sync.on_delta(1, depth(11, 11, [], [[LONG_PRICE, "1"]]))
    assert [type(a) for a in actions] == [Malformed]
    assert sync.buffered == 0


def test_without_market_bounds_the_global_ones_apply() -> None:
    sync: BookSync[DepthEvent] = BookSync(SYM)
    sync.stream_started(1)
    sync.on_snapshot(GOOD_SNAPSHOT)
    assert sync.on_delta_fast(1, depth(11, 11, [[LONG_PRICE, "1"]], [])) is not None
    assert (LONG_PRICE, "1") in sync.book.depth()[0]


# -- REST depth snapshots ---------------------------------------------------------------------


@pytest.mark.parametrize("level", [[LONG_PRICE, "1.0000"], ["179.50", LONG_SIZE], [BIG_PRICE, "1"]])
def test_a_snapshot_outside_the_bounds_is_refused_and_the_next_good_one_bridges(
    level: list[str],
) -> None:
    sync: BookSync[DepthEvent] = BookSync(SYM, bounds=BOUNDS)
    sync.stream_started(1)
    bad = snapshot(10, [["179.60", "2.0000"], level], [["179.70", "1.5000"]])
    actions = sync.on_snapshot(bad)
    assert [type(a) for a in actions] == [Malformed, RequestSnapshot]
    malformed, request = actions
    assert isinstance(malformed, Malformed)
    assert malformed.stream == f"/api/v1/depth?symbol={SYM}"
    assert "snapshot 10" in malformed.reason
    assert isinstance(request, RequestSnapshot)
    assert request.retry
    assert len(sync.book) == 0
    assert sync.counters["snapshots_rejected"] == 1
    actions = sync.on_snapshot(GOOD_SNAPSHOT)
    assert actions[0] == PublishSnapshot(SYM, 10, "initial", 10)
    assert sync.book.depth() == ((("179.60", "2.0000"),), (("179.70", "1.5000"),))


def test_a_periodic_snapshot_outside_the_bounds_leaves_the_live_book() -> None:
    sync = live_sync()
    before = sync.book.depth()
    actions = sync.on_snapshot(snapshot(12, [[LONG_PRICE, "1"]], [["179.70", "1.5000"]]))
    assert [type(a) for a in actions] == [Malformed, RequestSnapshot]
    assert sync.book.depth() == before
    # The stream goes on.
    assert sync.on_delta_fast(1, depth(13, 13, [], [["179.71", "1.0000"]])) is None


def test_a_rest_only_snapshot_outside_the_bounds_is_never_published() -> None:
    sync: BookSync[DepthEvent] = BookSync(SYM, bounds=BOUNDS)
    sync.enter_rest_mode(1)
    actions = sync.on_rest_snapshot(GOOD_SNAPSHOT)
    assert isinstance(actions[0], PublishSnapshot)
    before = sync.book.depth()
    actions = sync.on_rest_snapshot(snapshot(11, [["179.60", LONG_SIZE]], []))
    assert [type(a) for a in actions] == [Malformed]
    assert sync.book.depth() == before
    assert sync.last_update_id == 10
    actions = sync.on_rest_snapshot(snapshot(12, [["179.61", "1.0000"]], []))
    assert actions == [PublishSnapshot(SYM, 12, "rest_only", 12)]
    assert sync.book.depth() == ((("179.61", "1.0000"),), ())


# -- trades -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("price", "quantity"), [(LONG_PRICE, "1.5"), ("179.7", LONG_SIZE), ("179.7", "1e-20")]
)
def test_a_live_trade_outside_the_bounds_is_malformed_and_the_next_one_is_emitted(
    price: str, quantity: str
) -> None:
    sync = TradeSync(SYM, bounds=BOUNDS)
    assert sync.on_trade(1, trade(100)) == [sync.from_live(trade(100))]
    bad = trade(101, price, quantity)
    # The fast path leaves it alone; on_trade reports it and its id becomes a gap.
    assert not sync.accept_in_order(bad)
    actions = sync.on_trade(1, bad)
    assert isinstance(actions[0], Malformed)
    assert actions[0].stream == f"trade.{SYM}"
    assert sync.counters["malformed"] == 1
    assert sync.gaps == ((101, 101),)
    # The next trade goes on, and the bad trade's id is backfilled from REST.
    assert sync.last_trade_id == 101
    assert sync.accept_in_order(trade(102))
    assert sync.last_trade_id == 102
    actions = sync.on_backfill(rest_trades((101, "179.7", "1.5")))
    emitted = [a for a in actions if isinstance(a, EmitTrade)]
    assert [(a.trade_id, a.price, a.amount, a.backfilled) for a in emitted] == [
        (101, "179.7", "1.5", True)
    ]


def test_long_plain_text_inside_the_bounds_still_takes_the_exact_check() -> None:
    sync = TradeSync(SYM, bounds=BOUNDS)
    sync.on_trade(1, trade(1))
    price = "179." + "1" * PRICE_PLACES  # longer than price_fast, inside the bounds
    assert not sync.accept_in_order(trade(2, price))
    assert sync.on_trade(1, trade(2, price)) == [sync.from_live(trade(2, price))]


@pytest.mark.parametrize(
    ("price", "quantity"), [(LONG_PRICE, "1.5"), ("179.7", LONG_SIZE), (BIG_PRICE, "1")]
)
def test_rest_trades_outside_the_bounds_are_malformed_the_rest_are_emitted(
    price: str, quantity: str
) -> None:
    sync = TradeSync(SYM, bounds=BOUNDS)
    sync.last_trade_id = 9
    polled = rest_trades((10, "179.7", "1.5"), (11, price, quantity), (12, "179.8", "2"))
    actions = sync.on_rest_trades(polled)
    bad = [a for a in actions if isinstance(a, Malformed)]
    assert len(bad) == 1
    assert bad[0].stream == f"/api/v1/trades?symbol={SYM}"
    assert bad[0].reason.startswith("trade 11: ")
    emitted = [a for a in actions if isinstance(a, EmitTrade)]
    assert [(a.trade_id, a.price, a.amount) for a in emitted] == [
        (10, "179.7", "1.5"),
        (12, "179.8", "2"),
    ]
    assert sync.counters["malformed"] == 1
    # Trade 11 is a gap now; a good answer for it is emitted.
    assert sync.gaps == ((11, 11),)
    actions = sync.on_backfill(rest_trades((11, "179.75", "1")))
    assert [(a.trade_id, a.price) for a in actions if isinstance(a, EmitTrade)] == [(11, "179.75")]


# -- through the reconciler: reported as protocol errors ----------------------------------------


def test_the_reconciler_reports_out_of_bounds_text_as_protocol_errors() -> None:
    events: list[Event] = []
    reconciler = Reconciler(
        markets={SYM: INFO}, publish=events.extend, request=lambda _: None, wall_clock=lambda: 1.0
    )
    reconciler.handle(StreamStarted(SYM, 1))
    bad_body = snapshot(10, [[LONG_PRICE, "1"]], [["179.70", "1.5000"]])
    reconciler.handle(SnapshotReady(SYM, bad_body, "initial", 1.0))
    reconciler.handle(SnapshotReady(SYM, GOOD_SNAPSHOT, "initial", 1.0))
    frames: list[DepthEvent | TradeEvent] = [
        depth(11, 11, [["179.61", "1.0000"]], []),
        depth(12, 12, [["179.62", LONG_SIZE]], []),
        depth(12, 12, [["179.62", "1.0000"]], []),
        trade(1),
        trade(2, BIG_PRICE),
    ]
    reconciler.handle(FrameBatch(SYM, 1, frames, 2.0))
    errors = [e for e in events if isinstance(e, ProtocolErrorEvent)]
    assert [(e.stream, e.count) for e in errors] == [
        (f"/api/v1/depth?symbol={SYM}", 1),
        (f"depth.{SYM}", 2),
        (f"trade.{SYM}", 3),
    ]
    assert reconciler.protocol_errors == {SYM: 3}
    assert all(e.symbol == "SOL-USDC" for e in errors)
    deltas = [e for e in events if isinstance(e, BookDelta)]
    assert [(d.first_update_id, d.raw_bids) for d in deltas] == [
        (11, (("179.61", "1.0000"),)),
        (12, (("179.62", "1.0000"),)),
    ]
    trades = [e for e in events if isinstance(e, Trade)]
    assert [t.trade_id for t in trades] == [1]
    book = reconciler.book_sync(SYM).book
    assert book.depth() == (
        (("179.62", "1.0000"), ("179.61", "1.0000"), ("179.60", "2.0000")),
        (("179.70", "1.5000"),),
    )
