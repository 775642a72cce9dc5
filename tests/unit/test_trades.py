"""TradeSync: dedup, gaps, backfills, REST-only polling, backfill planning.

Issue 12 changed the design: live trades are never held for a backfill, so a gap's trades arrive
after higher ids (each test that changed says how). Resets, bogus ids and the properties are in
test_trade_continuity.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

import pytest

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


def test_gap_is_reported_and_live_trades_go_on_while_it_is_backfilled() -> None:
    # Changed (issue 12): 13 and 14 used to be held until the backfill answered and then came in
    # id order; now they are emitted at once and the backfill's 11, 12 follow them.
    sync = TradeSync(SYM)
    feed(sync, 10)
    acts = feed(sync, 13)
    assert statuses(acts) == [(StatusKind.TRADE_GAP, "trade ids 11..12 missing (2); backfilling")]
    assert ids(acts) == [13]
    assert acts[-1] == RequestBackfill(SYM, 11, 12, 13)
    assert ids(feed(sync, 14, 13)) == [14], "13 again is a duplicate"
    assert sync.held == 0
    # REST answers newest first, overlapping what we already have.
    acts = sync.on_backfill(
        [Rest(14), Rest(13), Rest(12), Rest(11, is_buyer_maker=False), Rest(10)]
    )
    assert ids(acts) == [11, 12]
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
    assert second.backfilled
    assert statuses(acts) == [(StatusKind.TRADES_BACKFILLED, "backfilled 2 trades in 11..12")]
    assert sync.pending is None
    assert sync.gaps == ()
    assert ids(feed(sync, 15)) == [15]
    assert sync.counters["duplicates"] == 1


def test_partial_backfill_reports_unrecoverable_ids() -> None:
    # Changed: 14 and 15 are emitted when they arrive, not after the backfill.
    sync = TradeSync(SYM)
    assert ids(feed(sync, 10, 14, 15)) == [10, 14, 15]
    acts = sync.on_backfill([Rest(12)])
    assert ids(acts) == [12]
    assert statuses(acts) == [
        (StatusKind.TRADES_BACKFILLED, "backfilled 1 trades in 11..13"),
        (StatusKind.TRADE_GAP, "2 trade ids unrecoverable: 11, 13 (not in the backfill)"),
    ]
    assert sync.counters["unrecoverable"] == 2
    # Given up is not "delivered": should 11 arrive after all it is emitted, once.
    assert ids(feed(sync, 11)) == [11]
    assert feed(sync, 11) == []


def test_backfill_failure_reports_exactly_the_lost_ids() -> None:
    # Changed: nothing is held, so a failure releases nothing; it only reports the loss.
    sync = TradeSync(SYM)
    assert ids(feed(sync, 10, 13, 14)) == [10, 13, 14]
    acts = sync.on_backfill_failed("HTTP 429")
    assert acts == [
        Status(
            SYM,
            StatusKind.TRADE_GAP,
            "2 trade ids unrecoverable: 11..12 (backfill failed: HTTP 429)",
            acts[0].counts if isinstance(acts[0], Status) else {},
        )
    ]
    assert sync.on_backfill([Rest(11)]) == []
    assert sync.counters["late_backfills"] == 1
    assert sync.on_backfill_failed("again") == []


def test_second_gap_is_queued_and_asked_for_when_the_first_resolves() -> None:
    # Changed: 12, 14, 15 are emitted at once; the second gap is reported (queued) when it
    # opens, and asked for when the first backfill answers.
    sync = TradeSync(SYM)
    acts = feed(sync, 10, 12, 14, 15)
    assert ids(acts) == [10, 12, 14, 15]
    assert [a for a in acts if isinstance(a, RequestBackfill)] == [RequestBackfill(SYM, 11, 11, 12)]
    assert statuses(acts)[1] == (StatusKind.TRADE_GAP, "trade ids 13 missing (1); backfill queued")
    assert sync.pending == (11, 11)
    acts = sync.on_backfill([Rest(11)])
    assert ids(acts) == [11]
    assert acts[-1] == RequestBackfill(SYM, 13, 13, 15)
    assert sync.pending == (13, 13)
    acts = sync.on_backfill([Rest(13)])
    assert ids(acts) == [13]
    assert sync.pending is None


def test_backfill_may_fill_later_holes_too() -> None:
    sync = TradeSync(SYM)
    feed(sync, 10, 12, 14)
    acts = sync.on_backfill([Rest(13), Rest(11)])
    assert ids(acts) == [11, 13]
    assert sync.pending is None
    assert sync.gaps == ()


def test_nearby_gaps_are_asked_for_together() -> None:
    sync = TradeSync(SYM)
    feed(sync, 10)
    sync.on_backfill_failed("not yet")  # nothing pending: ignored
    feed(sync, 12)
    assert sync.pending == (11, 11)
    feed(sync, 14, 16, 5000)
    sync.on_backfill([])
    # 13 and 15 share a request; 17..4999 would make it longer than one recent page.
    assert sync.pending == (13, 15)
    sync.on_backfill([Rest(13), Rest(14), Rest(15)])
    assert sync.pending == (17, 4999)


def test_reordered_live_trades_close_the_gap_without_rest() -> None:
    sync = TradeSync(SYM)
    feed(sync, 10)
    acts = feed(sync, 12)
    assert ids(acts) == [12]
    assert isinstance(acts[-1], RequestBackfill)
    acts = feed(sync, 11)
    assert ids(acts) == [11]
    assert [a.backfilled for a in acts if isinstance(a, EmitTrade)] == [False]
    assert statuses(acts) == []
    assert sync.pending is None
    assert sync.on_backfill([Rest(11)]) == []
    assert sync.counters["late_trades"] == 1


def test_too_many_open_gaps_give_up_the_oldest() -> None:
    # Changed: max_held now bounds the open gaps (the record), since nothing is held.
    sync = TradeSync(SYM, max_held=2)
    feed(sync, 10, 12, 14)
    acts = feed(sync, 16)
    assert ids(acts) == [16]
    assert statuses(acts) == [
        (StatusKind.TRADE_GAP, "trade ids 15 missing (1); backfill queued"),
        (StatusKind.TRADE_GAP, "1 trade ids unrecoverable: 11 (more than 2 gaps open)"),
    ]
    assert sync.gaps == ((13, 13), (15, 15))
    assert sync.counters["gap_overflows"] == 1
    # 11 was pending: its answer still recovers it (given up is not "delivered"), and the next
    # gaps are asked for.
    acts = sync.on_backfill([Rest(11)])
    assert ids(acts) == [11]
    assert acts[-1] == RequestBackfill(SYM, 13, 15, 16)


def test_rest_only_mode() -> None:
    sync = TradeSync(SYM)
    acts = sync.on_rest_trades([Rest(5), Rest(4), Rest(3)])
    assert ids(acts) == [3, 4, 5]
    assert all(isinstance(a, EmitTrade) and not a.backfilled for a in acts)
    assert ids(sync.on_rest_trades([Rest(7), Rest(6), Rest(5), Rest(6)])) == [6, 7]
    assert sync.counters["duplicates"] == 0, "polls overlap by design"
    # Changed: 9 and 10 are emitted at once; 8 is backfilled (or polled) later.
    acts = sync.on_rest_trades([Rest(10), Rest(9)])
    assert [a for a in acts if isinstance(a, RequestBackfill)] == [RequestBackfill(SYM, 8, 8, 9)]
    assert ids(acts) == [9, 10]
    assert ids(sync.on_rest_trades([Rest(11), Rest(10), Rest(9), Rest(8)])) == [8, 11]
    assert sync.pending is None


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
def test_malformed_trade_is_reported_and_its_id_backfilled_at_once(
    price: str, quantity: str, reason: str
) -> None:
    # Changed: the malformed trade's id is a gap at once (it used to wait for the next good
    # trade), and the trades after it are not held behind its backfill.
    sync = TradeSync(SYM)
    feed(sync, 10)
    bad = Live(11, price=price, quantity=quantity, event_time=11001, engine_time=11000)
    assert not sync.accept_in_order(bad), "the fast path must not take it either"
    acts = sync.on_trade(1, bad)
    assert acts[0] == Malformed(SYM, "trade.SOL_USDC", reason, bad)
    assert statuses(acts) == [(StatusKind.TRADE_GAP, "trade ids 11 missing (1); backfilling")]
    assert acts[-1] == RequestBackfill(SYM, 11, 11, 11)
    assert ids(acts) == []
    assert sync.last_trade_id == 11
    assert sync.counters["malformed"] == 1
    # The next good trade takes the fast path: nothing waits for the backfill.
    assert sync.accept_in_order(live(12))
    acts = sync.on_backfill([Rest(12), Rest(11, price=Decimal("150.26"))])
    assert ids(acts) == [11]
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


def test_malformed_first_trade_is_a_gap_too() -> None:
    # Changed: it used to set no baseline, so its id was never reported; now it is backfilled.
    sync = TradeSync(SYM)
    bad = Live(10, price="abc")
    acts = sync.on_trade(1, bad)
    assert acts[0] == Malformed(SYM, "trade.SOL_USDC", "p='abc' is not a finite decimal > 0", bad)
    assert acts[-1] == RequestBackfill(SYM, 10, 10, 10)
    assert sync.last_trade_id == 10
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
    assert not sync.accept_in_order(Live(13, quantity="1" * 41)), "plain but out of bounds"
    assert sync.accept_in_order(Live(13, price="00.10", quantity="0"))
    assert sync.last_trade_id == 13
    # Changed: a pending backfill no longer stops the fast path (nothing is held).
    feed(sync, 15)
    assert sync.pending == (14, 14)
    assert sync.accept_in_order(live(16))


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
    acts = sync.on_trade(1, bad)
    assert acts[0] == Malformed(SYM, "trade.SOL_USDC", "p='-1' is not a finite decimal > 0", bad)
    assert acts[-1] == RequestBackfill(SYM, 12, 12, 12)


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
    # A gap as wide as a bogus far-future id makes: a bounded plan of the newest pages.
    huge = plan_backfill(11, 2**63 - 2, 2**63 - 1, max_pages=3)
    assert huge == [
        BackfillPage("history", 1000, 1),
        BackfillPage("history", 1000, 1001),
        BackfillPage("history", 1000, 2001),
    ]
    assert len(plan_backfill(11, 2**63 - 2, 2**63 - 1)) == 1000


# The old property test here ("emitted in order without duplicates") asserted strict id order,
# which issue 12 gives up on purpose (trades are no longer held for a backfill). Its replacement,
# with resets and bogus far-future ids, is tests/unit/test_trade_continuity.py.
