"""A consumer that folds private events into the account view, for comparing with sim truth."""

from __future__ import annotations

from collections import Counter
from decimal import Decimal
from typing import Any

from backpack_actors.core.events import StatusEvent
from backpack_actors.private import Balance, Fill, OrderUpdate, PositionUpdate
from backpack_actors.sim.orders import OrderEngine


class Account:
    """What a consumer knows after applying every event in order."""

    def __init__(self) -> None:
        self.orders: dict[str, tuple[str | None, Decimal | None]] = {}
        self.fills: dict[int, Fill] = {}
        self.fill_counts: Counter[int] = Counter()
        self.positions: dict[str, tuple[Decimal, Decimal | None, Decimal | None]] = {}
        self.balances: dict[str, tuple[Decimal, Decimal]] = {}
        self.statuses: list[StatusEvent] = []
        self.events: list[Any] = []

    def apply(self, event: Any) -> None:
        self.events.append(event)
        if isinstance(event, OrderUpdate):
            self.orders[event.order_id] = (event.status, event.executed_quantity)
        elif isinstance(event, Fill):
            self.fill_counts[event.trade_id] += 1
            self.fills[event.trade_id] = event
        elif isinstance(event, PositionUpdate):
            if event.net_quantity == 0:
                self.positions.pop(event.exchange_symbol, None)
            else:
                self.positions[event.exchange_symbol] = (
                    event.net_quantity,
                    event.entry_price,
                    event.realized_pnl,
                )
        elif isinstance(event, Balance):
            self.balances[event.asset] = (event.available, event.locked)
        elif isinstance(event, StatusEvent):
            self.statuses.append(event)

    def assert_matches(self, engine: OrderEngine) -> None:
        truth_orders = {o.id: (o.status, o.executed_quantity) for o in engine.orders.values()}
        assert self.orders == truth_orders
        assert [n for n in self.fill_counts.values() if n != 1] == []
        truth_fills = {
            f.trade_id: (f.order_id, f.side, f.price, f.quantity, f.fee, f.fee_symbol, f.is_maker)
            for f in engine.fills
        }
        mine = {
            f.trade_id: (f.order_id, f.side, f.price, f.quantity, f.fee, f.fee_symbol, f.is_maker)
            for f in self.fills.values()
        }
        assert mine == truth_fills
        truth_positions = {
            s: (p.net_quantity, p.entry_price, p.realized_pnl)
            for s, p in engine.positions().items()
        }
        assert self.positions == truth_positions
        assert self.balances == engine.balances()
