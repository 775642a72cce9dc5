"""TradeSync: dedup, gaps, backfill merging in id order, REST-only polling, backfill planning."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backpack_actors.core.events import Side, StatusKind
from backpack_actors.core.sync import Status
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
    trade_id: int
    price: Decimal = Decimal("150.25")
    quantity: Decimal = Decimal("0.5")
    buyer_is_maker: bool = False
    event_time: int = 0
    engine_time: int = 0
    symbol: str = SYM


@dataclass(frozen=True)
class Rest:
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
        EmitTrade(SYM, 10, Decimal("150.25"), Decimal("0.5"), Side.BUY, 10001, 10000),
        EmitTrade(SYM, 11, Decimal("150.25"), Decimal("0.5"), Side.BUY, 11001, 11000),
    ]
    seller = sync.on_trade(1, Live(12, buyer_is_maker=True, event_time=5, engine_time=4))
    assert seller == [EmitTrade(SYM, 12, Decimal("150.25"), Decimal("0.5"), Side.SELL, 5, 4)]


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
        Decimal("150.25"),
        Decimal("0.5"),
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
def scenarios(draw: st.DrawFn) -> tuple[list[int], list[str]]:
    n = draw(st.integers(2, 40))
    stream: list[int] = []
    for t in range(1, n + 1):
        fate = draw(st.sampled_from(["ok", "ok", "ok", "drop", "dup", "swap"]))
        if fate == "drop":
            continue
        stream.append(t)
        if fate == "dup":
            stream.append(draw(st.integers(1, t)))
        if fate == "swap" and len(stream) >= 2:
            stream[-1], stream[-2] = stream[-2], stream[-1]
    answers = draw(st.lists(st.sampled_from(["later", "full", "partial", "fail"]), max_size=60))
    return stream, answers


@settings(max_examples=300, deadline=None)
@given(scenarios())
def test_trades_emitted_in_order_without_duplicates(scenario: tuple[list[int], list[str]]) -> None:
    stream, answers = scenario
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
        if sync.last_trade_id is None or t > sync.last_trade_id:
            must.add(t)
        run(sync.on_trade(1, live(t)))
        how = next(choices, "full")
        if queue and how != "later":
            answer(how)
    while queue:
        answer("full")
    emitted = ids(out)
    assert emitted == sorted(set(emitted)), "strictly increasing, no duplicates"
    assert sync.pending is None
    assert sync.held == 0
    if stream:
        assert emitted[0] == stream[0]
        assert emitted[-1] == max(stream)
        # Every id between the first and the newest is either emitted or reported lost.
        assert len(emitted) + sync.counters["unrecoverable"] == emitted[-1] - emitted[0] + 1
        # A live trade newer than everything emitted when it arrived is never lost.
        assert must <= set(emitted)
    for a in out:
        if isinstance(a, EmitTrade):
            assert a.side is (Side.SELL if a.backfilled else Side.BUY)
