"""Events of the private feed: order updates, fills, positions and (polled) balances.

Amounts are exact ``Decimal`` values built from the exchange's text; exchange times are integer
µs. Symbols are normalized (``ETH-USDC``); ``exchange_symbol`` keeps the exchange id. Every event
built from a REST answer during a reconciliation has ``reconciled=True``.
"""

from __future__ import annotations

import enum
from decimal import Decimal

import msgspec

__all__ = [
    "Balance",
    "Fill",
    "OrderKind",
    "OrderUpdate",
    "PositionKind",
    "PositionUpdate",
    "PrivateEvent",
]


class OrderKind(enum.StrEnum):
    """What happened to an order."""

    NEW = "new"
    PARTIALLY_FILLED = "partially_filled"
    FILLED = "filled"
    CANCELLED = "cancelled"
    EXPIRED = "expired"
    MODIFIED = "modified"
    TRIGGERED = "triggered"
    TRIGGER_PENDING = "trigger_pending"
    TRIGGER_FAILED = "trigger_failed"
    UPDATED = "updated"


class PositionKind(enum.StrEnum):
    """What happened to a position."""

    OPENED = "opened"
    ADJUSTED = "adjusted"
    CLOSED = "closed"
    UPDATED = "updated"
    SNAPSHOT = "snapshot"
    """The current position, sent right after subscribing (or found by a reconciliation)."""


class OrderUpdate(msgspec.Struct, frozen=True, kw_only=True):
    """A change of one order: every field of Backpack's ``account.orderUpdate`` event.

    ``event_type`` is the wire ``e`` (``orderAccepted``, ``orderFill``, ...) or ``orderState``
    for a state read back from REST. Fill fields (``trade_id``, ``fill_*``, ``fee``) are set on
    fills only; the :class:`Fill` derived from them is emitted right after.
    """

    symbol: str
    exchange_symbol: str
    order_id: str
    kind: OrderKind
    event_type: str
    status: str | None
    side: str | None = None
    order_type: str | None = None
    time_in_force: str | None = None
    quantity: Decimal | None = None
    quote_quantity: Decimal | None = None
    price: Decimal | None = None
    trigger_price: Decimal | None = None
    executed_quantity: Decimal | None = None
    executed_quote_quantity: Decimal | None = None
    client_order_id: int | None = None
    post_only: bool | None = None
    reduce_only: bool | None = None
    self_trade_prevention: str | None = None
    origin: str | None = None
    expiry_reason: str | None = None
    related_order_id: str | None = None
    strategy_id: str | None = None
    trade_id: int | None = None
    fill_quantity: Decimal | None = None
    fill_price: Decimal | None = None
    fee: Decimal | None = None
    fee_symbol: str | None = None
    is_maker: bool | None = None
    event_time_us: int | None = None
    engine_time_us: int | None = None
    received_at: float = 0.0
    reconciled: bool = False


class Fill(msgspec.Struct, frozen=True, kw_only=True):
    """One fill of one of the account's orders; each ``trade_id`` is emitted once."""

    symbol: str
    exchange_symbol: str
    trade_id: int
    order_id: str
    side: str
    price: Decimal
    quantity: Decimal
    fee: Decimal | None
    fee_symbol: str | None
    is_maker: bool | None
    engine_time_us: int | None
    client_order_id: int | None = None
    received_at: float = 0.0
    reconciled: bool = False


class PositionUpdate(msgspec.Struct, frozen=True, kw_only=True):
    """A perp position as Backpack reports it (``net_quantity`` signed: negative is short)."""

    symbol: str
    exchange_symbol: str
    kind: PositionKind
    net_quantity: Decimal
    entry_price: Decimal | None = None
    break_even_price: Decimal | None = None
    mark_price: Decimal | None = None
    realized_pnl: Decimal | None = None
    unrealized_pnl: Decimal | None = None
    net_exposure_quantity: Decimal | None = None
    net_exposure_notional: Decimal | None = None
    liquidation_price: Decimal | None = None
    initial_margin_fraction: Decimal | None = None
    maintenance_margin_fraction: Decimal | None = None
    position_id: int | None = None
    event_time_us: int | None = None
    engine_time_us: int | None = None
    received_at: float = 0.0
    reconciled: bool = False


class Balance(msgspec.Struct, frozen=True, kw_only=True):
    """One asset's balance, polled from ``/api/v1/capital`` (no balance stream is confirmed)."""

    asset: str
    available: Decimal
    locked: Decimal
    staked: Decimal
    source: str = "polled"
    received_at: float = 0.0


PrivateEvent = OrderUpdate | Fill | PositionUpdate | Balance
"""Anything the private feed emits besides status events."""
