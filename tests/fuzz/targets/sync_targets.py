"""Targets for the state machines: ``BookSync`` and ``TradeSync`` fed decoded events, and the
REST depth and trades bodies decoded and fed to them.

Invariants: no exception at all (a state machine answers bad input with actions); a live book is
never crossed and holds only text inside the market's bounds; the pending-delta buffer stays
within its count and level budgets; every trade id is emitted at most once (until a reported id
reset); the trade record stays bounded; counters stay within int64; every reason is bounded.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from decimal import Decimal

from backpack_actors.core import wire
from backpack_actors.core.dectext import MarketBounds
from backpack_actors.core.events import StatusKind
from backpack_actors.core.sync import (
    BookSync,
    Malformed,
    PublishDelta,
    PublishSnapshot,
    Status,
    SyncState,
)
from backpack_actors.core.trades import (
    EmitTrade,
    RequestBackfill,
    TradeSync,
    plan_backfill,
)
from backpack_actors.errors import ProtocolError
from tests.fuzz.targets._input import Input

__all__ = ["book_sync", "rest_depth", "rest_trades", "trade_sync"]

SYM = "BTC_USDC"
BOUNDS = MarketBounds.for_increments(Decimal("0.01"), Decimal("0.0001"))
MAX_BUFFER = 32
MAX_BUFFER_LEVELS = 128
MAX_HELD = 16
MAX_REASON = 1000
INT64_MAX = 2**63 - 1

PRICES = ["99.98", "99.99", "100.00", "100.01", "100.02", "100.1", "100.010", "1E+2", "99.990"]
SIZES = ["0", "0.0000", "1", "1.5000", "2.25", "0E-4", "10"]
HOSTILE = [
    "1e999999999",
    "1e-30",
    "100." + "1" * 11,
    "1" * 13,
    "NaN",
    "-1",
    "",
    " 1",
    "1_0",
    "١",
    "Infinity",
    "0." + "0" * 13,
    "9" * 41,
]


def _text(source: Input, pool: Sequence[str]) -> str:
    return source.pick(HOSTILE) if source.byte() >= 240 else source.pick(pool)


def _levels(source: Input) -> list[tuple[str, str]]:
    return [(_text(source, PRICES), _text(source, SIZES)) for _ in range(source.below(5))]


def _reason_ok(actions: Sequence[object]) -> None:
    for action in actions:
        if isinstance(action, Malformed | Status):
            assert len(action.reason) <= MAX_REASON, len(action.reason)
        if isinstance(action, Status):
            assert all(0 <= n <= INT64_MAX for n in action.counts.values())


def _check_book(sync: BookSync[wire.DepthEvent], actions: Sequence[object]) -> None:
    _reason_ok(actions)
    book = sync.book
    if sync.state is SyncState.LIVE or any(
        isinstance(a, PublishDelta | PublishSnapshot) for a in actions
    ):
        assert not book.is_crossed(), book
    if sync.state is SyncState.LIVE:
        bids, asks = book.depth()
        assert BOUNDS.levels_problem([*bids, *asks]) is None
    assert sync.buffered <= MAX_BUFFER
    assert sync.buffered_levels <= MAX_BUFFER_LEVELS + 6
    assert all(0 <= n <= INT64_MAX for n in sync.counters.values())


def _delta(first: int, last: int, source: Input) -> wire.DepthEvent:
    return wire.DepthEvent(
        event_time=max(0, last),
        engine_time=max(0, last),
        symbol=SYM,
        first_update_id=first,
        last_update_id=last,
        bids=_levels(source),
        asks=_levels(source),
    )


def _snapshot(last: int, source: Input) -> wire.DepthSnapshot | None:
    body = {
        "lastUpdateId": str(max(0, last)),
        "timestamp": max(0, last),
        "bids": _levels(source),
        "asks": _levels(source),
    }
    try:
        return wire.decode_depth_snapshot(json.dumps(body), SYM)
    except ProtocolError:
        return None


def book_sync(data: bytes) -> None:
    """Stream starts, deltas (in order, duplicated, gapped, stale, malformed), snapshots,
    window refetches, REST-only polls and failures."""
    source = Input(data)
    sync: BookSync[wire.DepthEvent] = BookSync(
        SYM, max_buffer=MAX_BUFFER, max_buffer_levels=MAX_BUFFER_LEVELS, bounds=BOUNDS
    )
    epoch = 0
    head = 100
    while source.remaining:
        op = source.below(17)
        actions: Sequence[object]
        if op == 0:
            epoch += 1
            actions = sync.stream_started(epoch)
        elif op == 16:
            # A window refetch: the next snapshot is caught up with the deltas since.
            actions = sync.request_window()
        elif op <= 9:
            # Mostly the next update, sometimes a merge, a repeat, a gap or a jump back.
            step = source.pick([1, 1, 1, 1, 0, -1, 2, 5, -200, 1000])
            first = head + step
            last = first + source.pick([0, 0, 0, 1, 3, -1])
            head = max(head, last)
            delta = _delta(first, last, source)
            frame_epoch = epoch if source.byte() < 240 else epoch - 1
            if source.flag():
                fast = sync.on_delta_fast(frame_epoch, delta)
                actions = [] if fast is None else fast
            else:
                actions = sync.on_delta(frame_epoch, delta)
        elif op <= 12:
            snapshot = _snapshot(head - source.below(8), source)
            if snapshot is None:
                continue
            actions = sync.on_snapshot(snapshot)
        elif op == 13:
            snapshot = _snapshot(head - source.below(4), source)
            if snapshot is None:
                continue
            actions = sync.on_rest_snapshot(snapshot)
        elif op == 14:
            epoch += 1
            sync.enter_rest_mode(epoch)
            actions = []
        else:
            actions = sync.on_snapshot_failed("fuzz") + sync.request_refresh()
        _check_book(sync, actions)


class _Trades:
    """What one TradeSync emitted so far (ids since the last id reset)."""

    def __init__(self) -> None:
        self.sync = TradeSync(SYM, max_held=MAX_HELD, bounds=BOUNDS)
        self.emitted: set[int] = set()

    def check(self, actions: Sequence[object]) -> None:
        sync = self.sync
        _reason_ok(actions)
        for action in actions:
            if isinstance(action, Status) and action.kind is StatusKind.TRADE_ID_RESET:
                self.emitted.clear()
            elif isinstance(action, EmitTrade):
                self.emit(action.trade_id, action.price, action.amount)
            elif isinstance(action, RequestBackfill):
                assert action.first_missing <= action.last_missing <= action.newest_known
                plan_backfill(action.first_missing, action.last_missing, action.newest_known)
        assert sync.record_size <= 3 * MAX_HELD
        assert all(0 <= n <= INT64_MAX for n in sync.counters.values())
        if sync.pending is not None:
            assert sync.pending[0] <= sync.pending[1]

    def emit(self, trade_id: int, price: str, amount: str) -> None:
        assert trade_id not in self.emitted, trade_id
        self.emitted.add(trade_id)
        assert BOUNDS.price_problem(price) is None
        assert BOUNDS.size_problem(amount) is None


def _rest_trade(trade_id: int, source: Input) -> wire.RestTrade | None:
    body = [
        {
            "id": trade_id,
            "price": _text(source, PRICES),
            "quantity": _text(source, SIZES),
            "quoteQuantity": "1",
            "timestamp": trade_id,
            "isBuyerMaker": source.flag(),
        }
    ]
    try:
        return wire.decode_trades(json.dumps(body), SYM)[0]
    except ProtocolError:
        return None


def trade_sync(data: bytes) -> None:
    """Live trades (in order, repeated, gapped, far ahead, going back), backfills and polls."""
    source = Input(data)
    state = _Trades()
    sync = state.sync
    head = 1000
    while source.remaining:
        op = source.below(12)
        actions: Sequence[object]
        if op <= 7:
            step = source.pick([1, 1, 1, 1, 1, 0, -1, 2, 7, -3, -1000, 2000])
            trade_id = head + step
            if source.byte() == 255:
                trade_id = INT64_MAX - source.below(4)
            if trade_id < 0 or trade_id > INT64_MAX:
                continue
            head = max(head, trade_id) if trade_id < 2**40 else head
            event = wire.TradeEvent(
                event_time=trade_id,
                engine_time=trade_id,
                symbol=SYM,
                price=_text(source, PRICES[:6]),
                quantity=_text(source, SIZES[2:5]),
                buyer_order_id="b",
                seller_order_id="a",
                trade_id=trade_id,
                buyer_is_maker=source.flag(),
            )
            # As the reconciler does: the fast path first.
            if sync.accept_in_order(event):
                state.emit(event.trade_id, event.price, event.quantity)
                actions = []
            else:
                actions = sync.on_trade(1, event)
        elif op <= 9:
            pending = sync.pending
            if pending is None or source.flag():
                actions = sync.on_backfill([])
            else:
                first, last = pending
                ids = {first + source.below(min(last - first + 1, 64)) for _ in range(4)}
                trades = [t for t in (_rest_trade(i, source) for i in ids) if t is not None]
                actions = sync.on_backfill(trades)
        elif op == 10:
            actions = sync.on_backfill_failed("fuzz")
        else:
            ids = {head - source.below(8) for _ in range(source.below(6))}
            polled = [t for t in (_rest_trade(i, source) for i in ids if i >= 0) if t]
            actions = sync.on_rest_trades(polled)
        state.check(actions)


def rest_depth(data: bytes) -> None:
    """A REST depth body, decoded and given to a buffering and to a REST-only BookSync."""
    try:
        snapshot = wire.decode_depth_snapshot(data, SYM)
    except ProtocolError as exc:
        message = str(exc)
        assert len(message) <= 600
        return
    for rest_only in (False, True):
        sync: BookSync[wire.DepthEvent] = BookSync(SYM, bounds=BOUNDS)
        if rest_only:
            sync.enter_rest_mode(1)
            actions = sync.on_rest_snapshot(snapshot)
        else:
            sync.stream_started(1)
            actions = sync.on_snapshot(snapshot)
        _check_book(sync, actions)
        published = any(isinstance(a, PublishSnapshot) for a in actions)
        if published:
            assert sync.state is SyncState.LIVE
            # The book is exactly the snapshot's non-zero levels, by value.
            want_bids = {p: s for p, s in snapshot.bids}
            want_asks = {p: s for p, s in snapshot.asks}
            want = (
                {p: s for p, s in want_bids.items() if s != 0},
                {p: s for p, s in want_asks.items() if s != 0},
            )
            assert sync.book.as_dicts() == want
        else:
            # Refused (reported, or asked for again when it came out crossed), book untouched.
            assert len(sync.book) == 0
            assert actions


def rest_trades(data: bytes) -> None:
    """A REST trades body, decoded and polled into a TradeSync."""
    try:
        trades = wire.decode_trades(data, SYM)
    except ProtocolError as exc:
        message = str(exc)
        assert len(message) <= 600
        return
    state = _Trades()
    sync = state.sync
    if trades:
        sync.last_trade_id = min(t.id for t in trades) - 1
    actions = sync.on_rest_trades(trades)
    state.check(actions)
    emitted = [a for a in actions if isinstance(a, EmitTrade)]
    bad = [a for a in actions if isinstance(a, Malformed)]
    ids = [a.trade_id for a in emitted]
    assert ids == sorted(set(ids))
    assert len(emitted) + len(bad) == len({t.id for t in trades})
    by_id = {t.id: t for t in trades}
    for action in emitted:
        trade = by_id[action.trade_id]
        assert Decimal(action.price) == trade.price
        assert Decimal(action.amount) == trade.quantity
