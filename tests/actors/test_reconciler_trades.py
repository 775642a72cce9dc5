"""Trade gaps at the reconciler: a gap closed by late live trades while its backfill is in flight,
and a new gap opened meanwhile, must be backfilled too (found in review: the second request was
dropped and its ids reported unrecoverable although REST still had them)."""

from __future__ import annotations

from decimal import Decimal

from backpack_actors.actors.messages import (
    BackfillDone,
    BackfillRequest,
    FrameBatch,
    RestRequest,
    StreamStarted,
)
from backpack_actors.actors.reconciler import Reconciler
from backpack_actors.core.events import Event, StatusEvent, StatusKind, Trade
from backpack_actors.core.symbols import MarketInfo
from backpack_actors.core.wire import DepthEvent, RestTrade, TradeEvent

SYM = "SOL_USDC"
INFO = MarketInfo(
    exchange_id=SYM,
    ccxt_symbol="SOL/USDC",
    normalized="SOL-USDC",
    base="SOL",
    quote="USDC",
    market_type="spot",
    tick_size=Decimal("0.01"),
    step_size=Decimal("0.01"),
    min_size=Decimal("0.01"),
    active=True,
)


def _live(*ids: int) -> FrameBatch:
    frames: list[DepthEvent | TradeEvent] = [
        TradeEvent(
            event_time=i,
            engine_time=i,
            symbol=SYM,
            price="100.5",
            quantity="1",
            buyer_order_id="b",
            seller_order_id="a",
            trade_id=i,
            buyer_is_maker=False,
        )
        for i in ids
    ]
    return FrameBatch(SYM, 1, frames, 0.0)


def _rest(*ids: int) -> list[RestTrade]:
    return [
        RestTrade(
            id=i,
            price=Decimal("100.5"),
            quantity=Decimal("1"),
            quote_quantity=Decimal("100.5"),
            timestamp=i,
            is_buyer_maker=False,
        )
        for i in ids
    ]


def _drain_requests(requests: list[RestRequest]) -> list[RestRequest]:
    out = list(requests)
    requests.clear()
    return out


def test_second_gap_opened_during_a_backfill_is_backfilled_too() -> None:
    requests: list[RestRequest] = []
    events: list[Event] = []
    reconciler = Reconciler(
        markets={SYM: INFO}, publish=events.extend, request=requests.append, wall_clock=lambda: 1.0
    )
    reconciler.handle(StreamStarted(SYM, 1))
    _drain_requests(requests)  # the book's initial snapshot request
    reconciler.handle(_live(1, 2, 5))
    assert _drain_requests(requests) == [BackfillRequest(SYM, 3, 4)]
    # 3 and 4 arrive late (closing the gap themselves), then 6 and 9: a new gap 7..8.
    reconciler.handle(_live(3, 4, 6, 9))
    assert _drain_requests(requests) == [], "one backfill in flight per symbol"
    reconciler.handle(BackfillDone(SYM, _rest(3, 4), None, 2.0))
    assert _drain_requests(requests) == [BackfillRequest(SYM, 7, 8)]
    reconciler.handle(BackfillDone(SYM, _rest(7, 8), None, 3.0))
    trades = [e for e in events if isinstance(e, Trade)]
    # Nothing is held back: live trades in arrival order, the backfill's after them.
    assert [t.trade_id for t in trades] == [1, 2, 5, 3, 4, 6, 9, 7, 8]
    assert [t.trade_id for t in trades if t.backfilled] == [7, 8]
    assert {(t.price, t.amount) for t in trades} == {(Decimal("100.5"), Decimal("1"))}
    statuses = [e for e in events if isinstance(e, StatusEvent)]
    assert not any("unrecoverable" in s.reason for s in statuses)
    assert StatusKind.TRADES_BACKFILLED in [s.kind for s in statuses]
