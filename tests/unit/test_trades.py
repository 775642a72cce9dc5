"""TradeSync: dedup, gaps, backfill merging in id order, REST-only polling, backfill planning."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backpack_actors.core.events import Side, StatusKind
from backpack_actors.core.sync import Malformed, Status
from backpack_actors.core.trades import (
    BackfillPage,
    EmitTrade,
    RequestBackfill,
    TradeAction,
    TradeSync,
    plan_backfill,
)

SYM = "SOL_USDC"


@dataclass(frozen=True)
class Live:
    """A WS trade: price and quantity are the exchange's text, as ``wire.TradeEvent`` holds them."""

    trade_id: int
    price: str = "150.25"
    quantity: str = "0.5"
    buyer_is_maker: bool = False
    event_time: int = 0
    engine_time: int = 0
    symbol: str = SYM


@dataclass(frozen=True)
class Rest:
    """A REST trade: ``Decimal`` values, as ``wire.RestTrade`` holds them."""

    id: int
    price: Decimal = Decimal("150.25")
    quantity: Decimal = Decimal("0.5")
    quote_quantity: Decimal = Decimal("75.125")
    timestamp: int = 1_716_000_000_123
    is_buyer_maker: bool = True


def live(t: int) -> Live:
    return Live(t, event_time=t * 1000 + 1, engine_time=t * 1000)


def ids(actions: list[TradeAction]) -> list[int]:
    return [a.trade_id for a in actions if isinstance(a, EmitTrade)]


def statuses(actions: list[TradeAction]) -> list[tuple[StatusKind, str]]:
    return [(a.kind, a.reason) for a in actions if isinstance(a, Status)]


def feed(sync: TradeSync, *tids: int, epoch: int = 1) -> list[TradeAction]:
    out: list[TradeAction] = []
    for t in tids:
        out += sync.on_trade(epoch, live(t))
    return out


def test_baseline_sequence_and_fields() -> None:
    sync = TradeSync(SYM)
    acts = feed(sync, 10, 11)
    assert acts == [
        EmitTrade(SYM, 10, "150.25", "0.5", Side.BUY, 10001, 10000),
        EmitTrade(SYM, 11, "150.25", "0.5", Side.BUY, 11001, 11000),
    ]
    seller = sync.on_trade(1, Live(12, buyer_is_maker=True, event_time=5, engine_time=4))
    assert seller == [EmitTrade(SYM, 12, "150.25", "0.5", Side.SELL, 5, 4)]
    # The exchange's text is passed on as it is, in whatever valid spelling it came.
    odd = sync.on_trade(1, Live(13, price="1.5E+2", quantity="0.50"))
    assert odd == [EmitTrade(SYM, 13, "1.5E+2", "0.50", Side.BUY, 0, 0)]


def test_duplicates_after_reconnect_are_dropped() -> None:
    sync = TradeSync(SYM)
    feed(sync, 10, 11, 12)
    assert feed(sync, 11, 12, epoch=2) == []
    assert ids(feed(sync, 13, epoch=2)) == [13]
    assert sync.counters["duplicates"] == 2
    assert sync.counters["gaps"] == 0


def test_gap_backfill_merges_in_order() -> None:
    sync = TradeSync(SYM)
    feed(sync, 10)
    acts = feed(sync, 13)
    assert statuses(acts) == [(StatusKind.TRADE_GAP, "trade ids 11..12 missing (2); backfilling")]
    assert acts[-1] == RequestBackfill(SYM, 11, 12, 13)
    assert feed(sync, 14, 13) == []
    assert sync.held == 2
    # REST answers newest first, overlapping what we already have.
    acts = sync.on_backfill(
        [Rest(14), Rest(13), Rest(12), Rest(11, is_buyer_maker=False), Rest(10)]
    )
    assert ids(acts) == [11, 12, 13, 14]
    first, second = acts[0], acts[1]
    assert first == EmitTrade(
        SYM,
        11,
        "150.25",
        "0.5",
        Side.BUY,
        1_716_000_000_123_000,
        1_716_000_000_123_000,
        backfilled=True,
    )
    assert isinstance(second, EmitTrade)
    assert second.side is Side.SELL
    assert [a.backfilled for a in acts if isinstance(a, EmitTrade)] == [True, True, False, False]
    assert statuses(acts) == [(StatusKind.TRADES_BACKFILLED, "backfilled 2 trades in 11..12")]
    assert sync.pending is None
    assert ids(feed(sync, 15)) == [15]


def test_partial_backfill_reports_unrecoverable_ids() -> None:
    sync = TradeSync(SYM)
    feed(sync, 10, 14, 15)
    acts = sync.on_backfill([Rest(12)])
    assert ids(acts) == [12, 14, 15]
    assert statuses(acts) == [
        (StatusKind.TRADES_BACKFILLED, "backfilled 1 trades in 11..13"),
        (StatusKind.TRADE_GAP, "2 trade ids unrecoverable: 11, 13"),
    ]
    assert sync.counters["unrecoverable"] == 2


def test_backfill_failure_releases_held_trades() -> None:
    sync = TradeSync(SYM)
    feed(sync, 10, 13, 14)
    acts = sync.on_backfill_failed("HTTP 429")
    assert ids(acts) == [13, 14]
    assert statuses(acts) == [
        (StatusKind.TRADE_GAP, "2 trade ids unrecoverable: 11..12 (backfill failed: HTTP 429)")
    ]
    assert sync.on_backfill([Rest(11)]) == []
    assert sync.counters["late_backfills"] == 1
    assert sync.on_backfill_failed("again") == []


def test_second_gap_among_held_trades_is_backfilled_next() -> None:
    sync = TradeSync(SYM)
    feed(sync, 10, 12, 14, 15)
    acts = sync.on_backfill([Rest(11)])
    assert ids(acts) == [11, 12]
    assert acts[-1] == RequestBackfill(SYM, 13, 13, 15)
    assert sync.pending == (13, 13)
    acts = sync.on_backfill([Rest(13)])
    assert ids(acts) == [13, 14, 15]


def test_backfill_may_fill_later_holes_too() -> None:
    sync = TradeSync(SYM)
    feed(sync, 10, 12, 14)
    acts = sync.on_backfill([Rest(13), Rest(11)])
    assert ids(acts) == [11, 12, 13, 14]
    assert sync.pending is None


def test_reordered_live_trades_close_the_gap_without_rest() -> None:
    sync = TradeSync(SYM)
    feed(sync, 10)
    assert isinstance(feed(sync, 12)[-1], RequestBackfill)
    acts = feed(sync, 11)
    assert ids(acts) == [11, 12]
    assert [a.backfilled for a in acts if isinstance(a, EmitTrade)] == [False, False]
    assert statuses(acts) == []
    assert sync.on_backfill([Rest(11)]) == []


def test_held_overflow_releases() -> None:
    sync = TradeSync(SYM, max_held=2)
    feed(sync, 10, 12, 13)
    acts = feed(sync, 14)
    assert ids(acts) == [12, 13, 14]
    assert statuses(acts) == [
        (StatusKind.TRADE_GAP, "1 trade ids unrecoverable: 11 (more than 2 trades held)")
    ]


def test_rest_only_mode() -> None:
    sync = TradeSync(SYM)
    acts = sync.on_rest_trades([Rest(5), Rest(4), Rest(3)])
    assert ids(acts) == [3, 4, 5]
    assert all(isinstance(a, EmitTrade) and not a.backfilled for a in acts)
    assert ids(sync.on_rest_trades([Rest(7), Rest(6), Rest(5), Rest(6)])) == [6, 7]
    acts = sync.on_rest_trades([Rest(10), Rest(9)])
    assert [a for a in acts if isinstance(a, RequestBackfill)] == [RequestBackfill(SYM, 8, 8, 9)]
    assert ids(acts) == []
    assert ids(sync.on_rest_trades([Rest(11), Rest(10), Rest(9), Rest(8)])) == [8, 9, 10, 11]


def test_rest_values_become_plain_text() -> None:
    sync = TradeSync(SYM)
    acts = sync.on_rest_trades([Rest(3, price=Decimal("1.5E+2"), quantity=Decimal("0.50"))])
    assert acts == [
        EmitTrade(SYM, 3, "150", "0.50", Side.SELL, 1_716_000_000_123_000, 1_716_000_000_123_000)
    ]


BAD_TRADES = [
    pytest.param("0", "0.5", "p='0' is not a finite decimal > 0", id="zero-price"),
    pytest.param("x", "0.5", "p='x' is not a finite decimal > 0", id="text-price"),
    pytest.param("-1", "0.5", "p='-1' is not a finite decimal > 0", id="negative-price"),
    pytest.param("NaN", "0.5", "p='NaN' is not a finite decimal > 0", id="nan-price"),
    pytest.param("", "0.5", "p='' is not a finite decimal > 0", id="empty-price"),
    pytest.param("²", "0.5", "p='²' is not a finite decimal > 0", id="superscript-price"),
    pytest.param("150.25", "-1", "q='-1' is not a finite decimal >= 0", id="negative-qty"),
    pytest.param("150.25", "Infinity", "q='Infinity' is not a finite decimal >= 0", id="inf-qty"),
    pytest.param("150.25", ".", "q='.' is not a finite decimal >= 0", id="dot-qty"),
]


@pytest.mark.parametrize(("price", "quantity", "reason"), BAD_TRADES)
def test_malformed_trade_is_reported_and_becomes_a_gap(
    price: str, quantity: str, reason: str
) -> None:
    sync = TradeSync(SYM)
    feed(sync, 10)
    bad = Live(11, price=price, quantity=quantity, event_time=11001, engine_time=11000)
    assert not sync.accept_in_order(bad), "the fast path must not take it either"
    assert sync.on_trade(1, bad) == [Malformed(SYM, "trade.SOL_USDC", reason, bad)]
    assert sync.last_trade_id == 10
    assert sync.counters["malformed"] == 1
    # Treated as never received: the next good trade opens a gap for its id.
    acts = feed(sync, 12)
    assert statuses(acts) == [(StatusKind.TRADE_GAP, "trade ids 11 missing (1); backfilling")]
    assert acts[-1] == RequestBackfill(SYM, 11, 11, 12)
    assert ids(acts) == []
    acts = sync.on_backfill([Rest(12), Rest(11, price=Decimal("150.26"))])
    assert ids(acts) == [11, 12]
    assert acts[0] == EmitTrade(
        SYM,
        11,
        "150.26",
        "0.5",
        Side.SELL,
        1_716_000_000_123_000,
        1_716_000_000_123_000,
        backfilled=True,
    )
    assert statuses(acts) == [(StatusKind.TRADES_BACKFILLED, "backfilled 1 trades in 11")]


def test_malformed_first_trade_sets_no_baseline() -> None:
    sync = TradeSync(SYM)
    bad = Live(10, price="abc")
    assert sync.on_trade(1, bad) == [
        Malformed(SYM, "trade.SOL_USDC", "p='abc' is not a finite decimal > 0", bad)
    ]
    assert sync.last_trade_id is None
    assert ids(feed(sync, 11, 12)) == [11, 12]


def test_accept_in_order_takes_only_plain_trades_that_continue_the_sequence() -> None:
    sync = TradeSync(SYM)
    assert not sync.accept_in_order(live(10)), "no baseline yet"
    feed(sync, 10)
    assert sync.accept_in_order(live(11))
    assert sync.last_trade_id == 11
    assert not sync.accept_in_order(live(13)), "a jump"
    assert not sync.accept_in_order(live(11)), "a duplicate"
    # Valid but not plain text goes the slow way, which still emits it.
    exp = Live(12, price="1.5e2")
    assert not sync.accept_in_order(exp)
    assert sync.last_trade_id == 11
    assert ids(sync.on_trade(1, exp)) == [12]
    assert not sync.accept_in_order(Live(13, price="0.00")), "zero price"
    assert not sync.accept_in_order(Live(13, quantity="٣")), "non-ASCII digits"
    assert sync.accept_in_order(Live(13, price="00.10", quantity="0"))
    assert sync.last_trade_id == 13
    # While a backfill is pending nothing takes the fast path.
    feed(sync, 15)
    assert sync.pending == (14, 14)
    assert not sync.accept_in_order(live(16))


def test_accept_in_order_takes_a_trade_event() -> None:
    from backpack_actors.core import wire

    raw = (
        '{"stream":"trade.SOL_USDC","data":{"e":"trade","E":2,"T":1,"s":"SOL_USDC",'
        '"p":"150.25","q":"0.5","b":"1","a":"2","t":%d,"m":false}}'
    )
    sync = TradeSync(SYM)
    events = [wire.decode_ws_frame(raw % t).data for t in (10, 11)]
    first, second = events
    assert isinstance(first, wire.TradeEvent)
    assert isinstance(second, wire.TradeEvent)
    assert sync.on_trade(1, first) == [EmitTrade(SYM, 10, "150.25", "0.5", Side.BUY, 2, 1)]
    assert sync.accept_in_order(second)
    assert sync.last_trade_id == 11
    # Decoding lets bad text through; TradeSync is where it is caught.
    bad = wire.decode_ws_frame((raw % 12).replace('"p":"150.25"', '"p":"-1"')).data
    assert isinstance(bad, wire.TradeEvent)
    assert not sync.accept_in_order(bad)
    assert sync.on_trade(1, bad) == [
        Malformed(SYM, "trade.SOL_USDC", "p='-1' is not a finite decimal > 0", bad)
    ]


def test_plan_backfill() -> None:
    assert plan_backfill(11, 12, 20) == [BackfillPage("recent", 10)]
    assert plan_backfill(11, 12, 20, slack=5) == [BackfillPage("recent", 15)]
    assert plan_backfill(5, 4, 20) == []
    # Ids 1000..1500 when the newest is 5000: offsets 3500..4000, one page of 501.
    assert plan_backfill(1000, 1500, 5000) == [BackfillPage("history", 501, 3500)]
    assert plan_backfill(1, 2500, 3000, page=1000) == [
        BackfillPage("history", 1000, 500),
        BackfillPage("history", 1000, 1500),
        BackfillPage("history", 500, 2500),
    ]
    with pytest.raises(ValueError, match="newer than newest_known"):
        plan_backfill(1, 10, 5)


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[list[int], list[str], bool]:
    """Trade ids as they arrive (a negative id: that trade with a malformed price), answers."""
    n = draw(st.integers(2, 40))
    stream: list[int] = []
    for t in range(1, n + 1):
        fate = draw(st.sampled_from(["ok", "ok", "ok", "drop", "dup", "swap", "bad"]))
        if fate == "drop":
            continue
        stream.append(-t if fate == "bad" else t)
        if fate == "dup":
            stream.append(draw(st.integers(1, t)))
        if fate == "swap" and len(stream) >= 2:
            stream[-1], stream[-2] = stream[-2], stream[-1]
    answers = draw(st.lists(st.sampled_from(["later", "full", "partial", "fail"]), max_size=60))
    return stream, answers, draw(st.booleans())


@settings(max_examples=300, deadline=None)
@given(scenarios())
def test_trades_emitted_in_order_without_duplicates(
    scenario: tuple[list[int], list[str], bool],
) -> None:
    stream, answers, fast = scenario
    sync = TradeSync(SYM, max_held=8)
    out: list[TradeAction] = []
    queue: list[RequestBackfill] = []
    choices = iter(answers)

    def run(acts: list[TradeAction]) -> None:
        out.extend(acts)
        queue.extend(a for a in acts if isinstance(a, RequestBackfill))

    def answer(how: str) -> None:
        req = queue.pop(0)
        span = range(req.first_missing, req.newest_known + 1)
        if how == "full":
            run(sync.on_backfill([Rest(i) for i in reversed(span)]))
        elif how == "partial":
            run(sync.on_backfill([Rest(i) for i in span if i % 2]))
        else:
            run(sync.on_backfill_failed("boom"))

    must: set[int] = set()
    for t in stream:
        if t < 0:
            bad = Live(-t, price="NaN")
            assert sync.on_trade(1, bad) == [
                Malformed(SYM, "trade.SOL_USDC", "p='NaN' is not a finite decimal > 0", bad)
            ]
            continue
        if sync.last_trade_id is None or t > sync.last_trade_id:
            must.add(t)
        trade = live(t)
        # The shell's hot path first, when this example takes it.
        if fast and sync.accept_in_order(trade):
            out.append(sync.from_live(trade))
        else:
            run(sync.on_trade(1, trade))
        how = next(choices, "full")
        if queue and how != "later":
            answer(how)
    while queue:
        answer("full")
    emitted = ids(out)
    assert emitted == sorted(set(emitted)), "strictly increasing, no duplicates"
    assert sync.pending is None
    assert sync.held == 0
    good = [t for t in stream if t > 0]
    if good:
        assert emitted[0] == good[0]
        assert emitted[-1] == max(good)
        # Every id between the first and the newest is either emitted or reported lost.
        assert len(emitted) + sync.counters["unrecoverable"] == emitted[-1] - emitted[0] + 1
        # A live trade newer than everything emitted when it arrived is never lost.
        assert must <= set(emitted)
    else:
        assert emitted == []
    only_bad = {-t for t in stream if t < 0} - set(good)
    for a in out:
        if isinstance(a, EmitTrade):
            assert a.side is (Side.SELL if a.backfilled else Side.BUY)
            # A trade that only ever arrived malformed can come from REST alone.
            assert a.backfilled or a.trade_id not in only_bad
            assert (a.price, a.amount) == ("150.25", "0.5")
