"""The private feed's view of the account: pure, synchronous, no I/O.

Stream events and REST answers both go through :class:`PrivateState`, which decides what reaches
the consumer so that nothing is emitted twice and nothing goes backwards:

* a fill is emitted once per trade id, whether it came from the stream or from fill history;
* an order's state only moves forward — more executed quantity, or the same quantity and a later
  status (new → partially filled → filled / cancelled / expired) — or changes its terms
  (a modification); a state equal to the last one emitted is not repeated;
* a position or balance is emitted when it differs from the last one emitted; a stream position
  event older than the last REST read of that position is stale and dropped.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from backpack_actors.core import wire
from backpack_actors.core.symbols import normalize
from backpack_actors.errors import ProtocolError
from backpack_actors.private.events import (
    Balance,
    Fill,
    OrderKind,
    OrderUpdate,
    PositionKind,
    PositionUpdate,
    PrivateEvent,
)

__all__ = ["PrivateState", "parse_time_ms"]

_WIRE_KINDS = {
    "orderAccepted": OrderKind.NEW,
    "orderCancelled": OrderKind.CANCELLED,
    "orderExpired": OrderKind.EXPIRED,
    "orderModified": OrderKind.MODIFIED,
    "triggerPlaced": OrderKind.TRIGGER_PENDING,
    "triggerFailed": OrderKind.TRIGGER_FAILED,
    "orderUpdate": OrderKind.UPDATED,
}
_STATUS_KINDS = {
    "New": OrderKind.NEW,
    "PartiallyFilled": OrderKind.PARTIALLY_FILLED,
    "Filled": OrderKind.FILLED,
    "Cancelled": OrderKind.CANCELLED,
    "Expired": OrderKind.EXPIRED,
    "TriggerPending": OrderKind.TRIGGER_PENDING,
    "TriggerFailed": OrderKind.TRIGGER_FAILED,
}
_RANK = {"TriggerPending": 0, "New": 0, "PartiallyFilled": 1}
_TERMINAL_RANK = 2
_POSITION_KINDS = {
    "positionOpened": PositionKind.OPENED,
    "positionAdjusted": PositionKind.ADJUSTED,
    "positionClosed": PositionKind.CLOSED,
    "positionUpdated": PositionKind.UPDATED,
}
_ZERO = Decimal(0)


def parse_time_ms(value: object) -> int | None:
    """A REST time (ms integer, or ISO text in UTC such as ``2025-07-27T17:39:00.092``) in ms."""
    if value is None:
        return None
    if isinstance(value, int):
        return value
    text = str(value)
    if text.isdigit():
        return int(text)
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def _dec(value: object) -> Decimal | None:
    if value is None:
        return None
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        raise ProtocolError("private REST", f"not a decimal: {str(value)[:40]!r}") from None
    if not number.is_finite():
        raise ProtocolError("private REST", f"not a finite decimal: {str(value)[:40]!r}")
    return number


def _int(value: object) -> int | None:
    if value is None:
        return None
    try:
        return int(str(value))
    except ValueError:
        raise ProtocolError("private REST", f"not an integer: {str(value)[:40]!r}") from None


def _rank(status: str | None) -> int:
    if status is None:
        return 0
    return _RANK.get(status, _TERMINAL_RANK)


class PrivateState:
    """What the consumer has been told about orders, fills, positions and balances."""

    def __init__(
        self, symbols: Iterable[str] = (), *, clock: Callable[[], float] = time.time
    ) -> None:
        self._symbols = frozenset(symbols)
        self._clock = clock
        self.orders: dict[str, OrderUpdate] = {}
        self.fill_ids: set[int] = set()
        self._fill_times: dict[int, int] = {}
        self.positions: dict[str, PositionUpdate] = {}
        self.balances: dict[str, Balance] = {}
        self.last_fill_ms: int | None = None
        self._position_read_us: dict[str, int] = {}
        self.duplicates_suppressed = 0

    def prune(self, before_ms: int) -> int:
        """Forget fills and finished orders last heard of before ``before_ms``; returns how many.

        Only safe for what history reads can no longer return (the feed reads fill history from a
        little before the newest fill its previous read returned), so the horizon is kept well
        behind that.
        """
        horizon_us = before_ms * 1000
        old_fills = [t for t, us in self._fill_times.items() if us < horizon_us]
        for trade_id in old_fills:
            self.fill_ids.discard(trade_id)
            del self._fill_times[trade_id]
        old_orders = [
            oid
            for oid, o in self.orders.items()
            if _rank(o.status) == _TERMINAL_RANK and (o.engine_time_us or 0) < horizon_us
        ]
        for order_id in old_orders:
            del self.orders[order_id]
        return len(old_fills) + len(old_orders)

    def wants(self, exchange_symbol: str) -> bool:
        """Whether the feed follows ``exchange_symbol`` (every symbol when none was named)."""
        return not self._symbols or exchange_symbol in self._symbols

    def open_order_ids(self) -> dict[str, str]:
        """``order id -> exchange symbol`` of the orders last reported open."""
        return {
            oid: o.exchange_symbol
            for oid, o in self.orders.items()
            if _rank(o.status) < _TERMINAL_RANK
        }

    # ------------------------------------------------------------------ stream events
    def on_event(self, event: object) -> list[PrivateEvent]:
        """Events for one decoded ``account.*`` stream event (``core.wire`` types)."""
        now = self._clock()
        if isinstance(event, wire.OrderUpdateEvent):
            if not self.wants(event.symbol):
                return []
            return self._on_order_event(event, now)
        if isinstance(event, wire.PositionUpdateEvent):
            if not self.wants(event.symbol):
                return []
            read_us = self._position_read_us.get(event.symbol)
            engine = event.engine_time
            if read_us is not None and engine is not None and engine < read_us:
                # Older than the REST read already reported: stale, not news.
                self.duplicates_suppressed += 1
                return []
            kind = _POSITION_KINDS.get(event.event_type, PositionKind.SNAPSHOT)
            return self._position(self._position_from_wire(event, kind, now))
        return []

    def _on_order_event(self, ev: wire.OrderUpdateEvent, now: float) -> list[PrivateEvent]:
        kind = _WIRE_KINDS.get(ev.event_type)
        if kind is None:
            kind = OrderKind.FILLED if ev.status == "Filled" else OrderKind.PARTIALLY_FILLED
        update = OrderUpdate(
            symbol=normalize(ev.symbol),
            exchange_symbol=ev.symbol,
            order_id=ev.order_id,
            kind=kind,
            event_type=ev.event_type,
            status=ev.status,
            side=ev.side,
            order_type=ev.order_type,
            time_in_force=ev.time_in_force,
            quantity=ev.quantity,
            quote_quantity=ev.quote_quantity,
            price=ev.price,
            trigger_price=ev.trigger_price,
            executed_quantity=ev.executed_quantity,
            executed_quote_quantity=ev.executed_quote_quantity,
            client_order_id=ev.client_order_id,
            post_only=ev.post_only,
            reduce_only=ev.reduce_only,
            self_trade_prevention=ev.self_trade_prevention,
            origin=ev.origin,
            expiry_reason=ev.expiry_reason,
            related_order_id=ev.related_order_id,
            strategy_id=ev.strategy_id,
            trade_id=ev.trade_id,
            fill_quantity=ev.fill_quantity,
            fill_price=ev.fill_price,
            fee=ev.fee,
            fee_symbol=ev.fee_symbol,
            is_maker=ev.is_maker,
            event_time_us=ev.event_time,
            engine_time_us=ev.engine_time,
            received_at=now,
        )
        out = self._order(update)
        if ev.trade_id is not None and ev.fill_quantity is not None and ev.fill_price is not None:
            fill = Fill(
                symbol=update.symbol,
                exchange_symbol=ev.symbol,
                trade_id=ev.trade_id,
                order_id=ev.order_id,
                side=ev.side or "",
                price=ev.fill_price,
                quantity=ev.fill_quantity,
                fee=ev.fee,
                fee_symbol=ev.fee_symbol,
                is_maker=ev.is_maker,
                engine_time_us=ev.engine_time,
                client_order_id=ev.client_order_id,
                received_at=now,
            )
            out.extend(self._fill(fill))
        return out

    @staticmethod
    def _position_from_wire(
        ev: wire.PositionUpdateEvent, kind: PositionKind, now: float
    ) -> PositionUpdate:
        return PositionUpdate(
            symbol=normalize(ev.symbol),
            exchange_symbol=ev.symbol,
            kind=kind,
            net_quantity=ev.net_quantity if ev.net_quantity is not None else _ZERO,
            entry_price=ev.entry_price,
            break_even_price=ev.break_even_price,
            mark_price=ev.mark_price,
            realized_pnl=ev.realized_pnl,
            unrealized_pnl=ev.unrealized_pnl,
            net_exposure_quantity=ev.net_exposure_quantity,
            net_exposure_notional=ev.net_exposure_notional,
            liquidation_price=ev.liquidation_price,
            initial_margin_fraction=ev.initial_margin_fraction,
            maintenance_margin_fraction=ev.maintenance_margin_fraction,
            position_id=ev.position_id,
            event_time_us=ev.event_time,
            engine_time_us=ev.engine_time,
            received_at=now,
        )

    # ------------------------------------------------------------------ guards
    def _order(self, update: OrderUpdate) -> list[PrivateEvent]:
        last = self.orders.get(update.order_id)
        if last is not None and not _advances(last, update):
            self.duplicates_suppressed += 1
            return []
        self.orders[update.order_id] = update
        return [update]

    def _fill(self, fill: Fill) -> list[PrivateEvent]:
        if fill.trade_id in self.fill_ids:
            self.duplicates_suppressed += 1
            return []
        self.fill_ids.add(fill.trade_id)
        self._fill_times[fill.trade_id] = fill.engine_time_us or 0
        if fill.engine_time_us is not None:
            ms = fill.engine_time_us // 1000
            self.last_fill_ms = ms if self.last_fill_ms is None else max(self.last_fill_ms, ms)
        return [fill]

    def _position(self, update: PositionUpdate) -> list[PrivateEvent]:
        last = self.positions.get(update.exchange_symbol)
        if last is None and update.net_quantity == 0:
            return []
        if last is not None and _position_key(last) == _position_key(update):
            self.duplicates_suppressed += 1
            return []
        self.positions[update.exchange_symbol] = update
        return [update]

    # ------------------------------------------------------------------ reconciliation
    def reconcile(
        self,
        *,
        open_orders: Iterable[Mapping[str, Any]],
        orders: Iterable[Mapping[str, Any]],
        fills: Iterable[Mapping[str, Any]],
        positions: Iterable[Mapping[str, Any]] | None,
        capital: Mapping[str, Mapping[str, Any]] | None,
        read_us: int,
    ) -> tuple[list[PrivateEvent], dict[str, int]]:
        """Events that bring the consumer up to date with REST answers read at ``read_us``.

        Missed fills first (oldest first), then orders whose state moved, then positions and
        balances that changed. Returns the events and what was found, counted.
        """
        now = self._clock()
        out: list[PrivateEvent] = []
        counts = {"fills": 0, "orders": 0, "positions": 0, "balances": 0}
        parsed = [self._fill_from_rest(f, now) for f in fills]
        parsed = [f for f in parsed if self.wants(f.exchange_symbol)]
        parsed.sort(key=lambda f: (f.engine_time_us or 0, f.trade_id))
        for fill in parsed:
            got = self._fill(fill)
            counts["fills"] += len(got)
            out.extend(got)
        seen: dict[str, OrderUpdate] = {}
        for body in [*orders, *open_orders]:
            update = self._order_from_rest(body, now)
            if self.wants(update.exchange_symbol):
                seen[update.order_id] = _later(seen.get(update.order_id), update)
        for update in sorted(seen.values(), key=lambda u: (u.engine_time_us or 0, u.order_id)):
            got = self._order(update)
            counts["orders"] += len(got)
            out.extend(got)
        if positions is not None:
            current: dict[str, PositionUpdate] = {}
            for body in positions:
                position = self._position_from_rest(body, now)
                if self.wants(position.exchange_symbol):
                    current[position.exchange_symbol] = position
            for symbol, last in list(self.positions.items()):
                if symbol not in current and last.net_quantity != 0:
                    current[symbol] = PositionUpdate(
                        symbol=last.symbol,
                        exchange_symbol=symbol,
                        kind=PositionKind.CLOSED,
                        net_quantity=_ZERO,
                        received_at=now,
                        reconciled=True,
                    )
            for symbol, position in sorted(current.items()):
                self._position_read_us[symbol] = read_us
                got = self._position(position)
                counts["positions"] += len(got)
                out.extend(got)
        if capital is not None:
            for asset, body in sorted(capital.items()):
                balance = Balance(
                    asset=asset,
                    available=_dec(body.get("available")) or _ZERO,
                    locked=_dec(body.get("locked")) or _ZERO,
                    staked=_dec(body.get("staked")) or _ZERO,
                    received_at=now,
                )
                last_balance = self.balances.get(asset)
                if last_balance is not None and _balance_key(last_balance) == _balance_key(balance):
                    continue
                self.balances[asset] = balance
                counts["balances"] += 1
                out.append(balance)
        return out, counts

    @staticmethod
    def _fill_from_rest(body: Mapping[str, Any], now: float) -> Fill:
        symbol = str(body.get("symbol") or "")
        ms = parse_time_ms(body.get("timestamp"))
        trade_id = _int(body.get("tradeId"))
        price, quantity = _dec(body.get("price")), _dec(body.get("quantity"))
        if trade_id is None or price is None or quantity is None or not symbol:
            raise ProtocolError("fill history", "a fill without tradeId, symbol, price or quantity")
        return Fill(
            symbol=normalize(symbol),
            exchange_symbol=symbol,
            trade_id=trade_id,
            order_id=str(body.get("orderId")),
            side=str(body.get("side") or ""),
            price=price,
            quantity=quantity,
            fee=_dec(body.get("fee")),
            fee_symbol=body.get("feeSymbol"),
            is_maker=body.get("isMaker"),
            engine_time_us=None if ms is None else ms * 1000,
            client_order_id=_int(body.get("clientId")),
            received_at=now,
            reconciled=True,
        )

    @staticmethod
    def _order_from_rest(body: Mapping[str, Any], now: float) -> OrderUpdate:
        symbol = str(body.get("symbol") or "")
        order_id = body.get("id")
        if not symbol or order_id is None:
            raise ProtocolError("orders", "an order without id or symbol")
        status = body.get("status")
        ms = parse_time_ms(body.get("createdAt"))
        return OrderUpdate(
            symbol=normalize(symbol),
            exchange_symbol=symbol,
            order_id=str(order_id),
            kind=_STATUS_KINDS.get(str(status), OrderKind.UPDATED),
            event_type="orderState",
            status=None if status is None else str(status),
            side=body.get("side"),
            order_type=body.get("orderType"),
            time_in_force=body.get("timeInForce"),
            quantity=_dec(body.get("quantity")),
            quote_quantity=_dec(body.get("quoteQuantity")),
            price=_dec(body.get("price")),
            trigger_price=_dec(body.get("triggerPrice")),
            executed_quantity=_dec(body.get("executedQuantity")),
            executed_quote_quantity=_dec(body.get("executedQuoteQuantity")),
            client_order_id=_int(body.get("clientId")),
            post_only=body.get("postOnly"),
            reduce_only=body.get("reduceOnly"),
            self_trade_prevention=body.get("selfTradePrevention"),
            expiry_reason=body.get("expiryReason"),
            related_order_id=None
            if body.get("relatedOrderId") is None
            else str(body.get("relatedOrderId")),
            strategy_id=body.get("strategyId"),
            engine_time_us=None if ms is None else ms * 1000,
            received_at=now,
            reconciled=True,
        )

    @staticmethod
    def _position_from_rest(body: Mapping[str, Any], now: float) -> PositionUpdate:
        symbol = str(body.get("symbol") or "")
        if not symbol:
            raise ProtocolError("positions", "a position without symbol")
        net = _dec(body.get("netQuantity")) or _ZERO
        return PositionUpdate(
            symbol=normalize(symbol),
            exchange_symbol=symbol,
            kind=PositionKind.SNAPSHOT if net else PositionKind.CLOSED,
            net_quantity=net,
            entry_price=_dec(body.get("entryPrice")),
            break_even_price=_dec(body.get("breakEvenPrice")),
            mark_price=_dec(body.get("markPrice")),
            realized_pnl=_dec(body.get("pnlRealized")),
            unrealized_pnl=_dec(body.get("pnlUnrealized")),
            net_exposure_quantity=_dec(body.get("netExposureQuantity")),
            net_exposure_notional=_dec(body.get("netExposureNotional")),
            liquidation_price=_dec(body.get("estLiquidationPrice")),
            initial_margin_fraction=_dec(body.get("imf")),
            maintenance_margin_fraction=_dec(body.get("mmf")),
            position_id=_int(body.get("positionId")),
            received_at=now,
            reconciled=True,
        )


def _order_key(update: OrderUpdate) -> tuple[Decimal, int]:
    return (update.executed_quantity or _ZERO, _rank(update.status))


def _advances(last: OrderUpdate, new: OrderUpdate) -> bool:
    old_key, new_key = _order_key(last), _order_key(new)
    if new_key != old_key:
        return new_key > old_key
    # Same progress: only a change of terms (a modification) is news.
    return old_key[1] < _TERMINAL_RANK and (last.price, last.quantity) != (
        new.price,
        new.quantity,
    )


def _later(old: OrderUpdate | None, new: OrderUpdate) -> OrderUpdate:
    return new if old is None or _order_key(new) >= _order_key(old) else old


def _position_key(p: PositionUpdate) -> tuple[Decimal, Decimal | None, Decimal | None]:
    if p.net_quantity == 0:
        return (_ZERO, None, None)
    return (p.net_quantity, p.entry_price, p.realized_pnl)


def _balance_key(b: Balance) -> tuple[Decimal, Decimal, Decimal]:
    return (b.available, b.locked, b.staked)
