"""Backpack wire layer: msgspec structs and decoders for every REST and WebSocket payload.

Pure and I/O-free. Structs mirror the wire objects with readable attribute names (the wire keys are
kept via ``field(name=...)``), prices and sizes are ``Decimal`` — except in the two hot-path
events, :class:`DepthEvent` and :class:`TradeEvent`, which keep the exchange's decimal text for
``BookSync``/``TradeSync`` to check (``core.dectext``) — ids and timestamps ``int``. Integer
fields accept a JSON integer or a string holding one (``"1754601477746429"``): real payloads carry
integers, ccxt recordings and some docs examples strings (decoders run with ``strict=False``, which
accepts ``"123"`` for ``int`` but rejects ``"1.5"``). Decimal fields accept a JSON string or number
and never pass through ``float``; every finite one must lie within ``core.dectext``'s bounds (a
valid ``Decimal`` such as ``1e999999999`` would take a gigabyte written out), checked before the
value is compared or formatted.

Every decoder raises :class:`~backpack_actors.errors.ProtocolError` (stream or endpoint, reason,
excerpt) on any failure. Decoders are built once at import time; :func:`decode_ws_frame` is the hot
path and costs one msgspec call for valid frames.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Annotated, Any, Final, TypeVar

import msgspec
from msgspec import Meta, Struct, field

from backpack_actors.core.dectext import (
    MAX_TEXT,
    RawLevel,
    bounds_problem,
    is_price_text,
    is_size_text,
)
from backpack_actors.errors import ProtocolError

__all__ = [
    "MARKET_DATA_DECODER",
    "Asset",
    "AssetToken",
    "BalanceUpdateEvent",
    "BookTickerEvent",
    "DepthEvent",
    "DepthSnapshot",
    "DepthSnapshotText",
    "FundingRate",
    "Kline",
    "KlineEvent",
    "LiquidationEvent",
    "MarginFunction",
    "MarkPrice",
    "MarkPriceEvent",
    "Market",
    "MarketData",
    "MarketDataFrame",
    "MarketFilters",
    "MultiplierBand",
    "OpenInterest",
    "OpenInterestEvent",
    "OrderAcceptedEvent",
    "OrderCancelledEvent",
    "OrderExpiredEvent",
    "OrderFillEvent",
    "OrderModifiedEvent",
    "OrderUpdateEvent",
    "OrderUpdatedEvent",
    "PositionAdjustedEvent",
    "PositionClosedEvent",
    "PositionOpenedEvent",
    "PositionSnapshot",
    "PositionUpdateEvent",
    "PositionUpdatedEvent",
    "PremiumBand",
    "PriceFilter",
    "QuantityFilter",
    "RestError",
    "RestTrade",
    "Status",
    "Ticker",
    "TickerEvent",
    "TradeEvent",
    "TriggerFailedEvent",
    "TriggerPlacedEvent",
    "UnknownEvent",
    "WsError",
    "WsErrorFrame",
    "WsEvent",
    "WsFrame",
    "WsRequest",
    "convert_depth_snapshot",
    "convert_trades",
    "decode_assets",
    "decode_depth_snapshot",
    "decode_depth_snapshot_text",
    "decode_funding_rates",
    "decode_klines",
    "decode_mark_prices",
    "decode_market",
    "decode_markets",
    "decode_open_interest",
    "decode_ping",
    "decode_rest_error",
    "decode_status",
    "decode_ticker",
    "decode_tickers",
    "decode_time",
    "decode_trades",
    "decode_ws_error",
    "decode_ws_frame",
    "decode_ws_request",
    "encode_json",
]

NonNegInt = Annotated[int, Meta(ge=0, le=2**63 - 1)]
"""Ids and timestamps: non-negative and within int64, as the exchange's own types are."""

Level = tuple[Decimal, Decimal]
"""One ``(price, size)`` level as sent."""

_DECODE_ERRORS: Final = (msgspec.DecodeError, UnicodeError, RecursionError, ArithmeticError)
"""What msgspec (and ``Decimal`` inside ``__post_init__``) raise on bad input."""

_ZERO: Final = Decimal(0)


def _check_bounds(value: Decimal, what: str) -> None:
    # Before anything formats or compares it: "1e999999999" is a valid Decimal that would take a
    # gigabyte as plain text (core.dectext explains the bounds). Called on finite values only.
    problem = bounds_problem(value)
    if problem is not None:
        raise ValueError(f"{what} is out of bounds: {problem}")


def _bound_decimals(obj: Struct) -> None:
    # Every Decimal field of a struct whose fields are not all checked one by one below; NaN and
    # infinities are left to the field's own rule (some fields may carry them).
    for name, wire_name in zip(obj.__struct_fields__, obj.__struct_encode_fields__, strict=True):
        value = getattr(obj, name)
        if type(value) is Decimal and value.is_finite():
            _check_bounds(value, wire_name)


def _check_price(value: Decimal, what: str) -> None:
    # NaN/Infinity parse as Decimal; is_finite() first because comparing NaN raises.
    if not value.is_finite() or value <= _ZERO:
        raise ValueError(f"{what} must be a finite positive decimal, got {value}")
    _check_bounds(value, what)


def _check_size(value: Decimal, what: str) -> None:
    if not value.is_finite() or value < _ZERO:
        raise ValueError(f"{what} must be a finite non-negative decimal, got {value}")
    _check_bounds(value, what)


def _check_optional(value: Decimal | None, what: str) -> None:
    if value is not None:
        if not value.is_finite():
            raise ValueError(f"{what} must be a finite decimal, got {value}")
        _check_bounds(value, what)


def _check_levels(levels: Sequence[Level], side: str) -> None:
    for price, size in levels:
        if not (price.is_finite() and size.is_finite()) or price <= _ZERO or size < _ZERO:
            raise ValueError(f"bad {side} level [{price}, {size}]: need price > 0, size >= 0")
        # bounds_problem's cheap sufficient test, inlined: snapshots carry 10,000s of levels.
        if not (
            -6 <= price.adjusted() <= 40
            and -6 <= size.adjusted() <= 40
            and len(str(price)) <= 40
            and len(str(size)) <= 40
        ):
            problem = bounds_problem(price) or bounds_problem(size)
            if problem is not None:
                raise ValueError(f"bad {side} level out of bounds: {problem}")


# --------------------------------------------------------------------------------------------------
# WebSocket public events (``data`` of an envelope), tagged by their ``e`` key.


class TradeEvent(Struct, frozen=True, gc=False, tag="trade", tag_field="e"):
    """``trade.<symbol>``: one public trade. ``buyer_is_maker`` ⇒ the aggressor sold.

    Price and quantity stay the exchange's text here (the hot path); ``TradeSync`` checks them
    before a trade is published (``core.dectext``).
    """

    event_time: NonNegInt = field(name="E")
    engine_time: NonNegInt = field(name="T")
    symbol: str = field(name="s")
    price: str = field(name="p")
    quantity: str = field(name="q")
    buyer_order_id: str = field(name="b")
    seller_order_id: str = field(name="a")
    trade_id: NonNegInt = field(name="t")
    buyer_is_maker: bool = field(name="m")


class DepthEvent(Struct, frozen=True, gc=False, tag="depth", tag_field="e"):
    """``depth[.<interval>].<symbol>``: absolute sizes of changed levels; size 0 deletes.

    Levels stay the exchange's text, and ``U <= u`` is not checked here: this is the hot path, and
    ``BookSync`` checks both before anything is applied or published (a bad frame is reported).
    """

    event_time: NonNegInt = field(name="E")
    engine_time: NonNegInt = field(name="T")
    symbol: str = field(name="s")
    first_update_id: NonNegInt = field(name="U")
    last_update_id: NonNegInt = field(name="u")
    # Tuples: the public BookDelta carries them as they are, without a copy per event.
    asks: tuple[RawLevel, ...] = field(name="a")
    bids: tuple[RawLevel, ...] = field(name="b")


class BookTickerEvent(Struct, frozen=True, gc=False, tag="bookTicker", tag_field="e"):
    """``bookTicker.<symbol>``: best bid/ask change. ``u`` arrives as int or string."""

    event_time: NonNegInt = field(name="E")
    engine_time: NonNegInt = field(name="T")
    symbol: str = field(name="s")
    ask_price: Decimal = field(name="a")
    ask_quantity: Decimal = field(name="A")
    bid_price: Decimal = field(name="b")
    bid_quantity: Decimal = field(name="B")
    update_id: NonNegInt = field(name="u")

    def __post_init__(self) -> None:
        _check_price(self.ask_price, "a")
        _check_size(self.ask_quantity, "A")
        _check_price(self.bid_price, "b")
        _check_size(self.bid_quantity, "B")


class TickerEvent(Struct, frozen=True, gc=False, tag="ticker", tag_field="e"):
    """``ticker.<symbol>``: 24 h rolling statistics, pushed every second (no ``T``)."""

    event_time: NonNegInt = field(name="E")
    symbol: str = field(name="s")
    open: Decimal = field(name="o")
    close: Decimal = field(name="c")
    high: Decimal = field(name="h")
    low: Decimal = field(name="l")
    volume: Decimal = field(name="v")
    quote_volume: Decimal = field(name="V")
    trade_count: NonNegInt = field(name="n")

    def __post_init__(self) -> None:
        _check_size(self.volume, "v")
        _check_size(self.quote_volume, "V")
        for value, key in ((self.open, "o"), (self.close, "c"), (self.high, "h"), (self.low, "l")):
            _check_optional(value, key)


class KlineEvent(Struct, frozen=True, gc=False, tag="kline", tag_field="e"):
    """``kline.<interval>.<symbol>``: candle; ``t``/``T`` are naive ISO strings (UTC)."""

    event_time: NonNegInt = field(name="E")
    symbol: str = field(name="s")
    start_time: str = field(name="t")
    close_time: str = field(name="T")
    open: Decimal = field(name="o")
    close: Decimal = field(name="c")
    high: Decimal = field(name="h")
    low: Decimal = field(name="l")
    volume: Decimal = field(name="v")
    trade_count: NonNegInt = field(name="n")
    closed: bool = field(name="X")

    def __post_init__(self) -> None:
        _check_size(self.volume, "v")
        for value, key in ((self.open, "o"), (self.close, "c"), (self.high, "h"), (self.low, "l")):
            _check_optional(value, key)


class MarkPriceEvent(Struct, frozen=True, gc=False, tag="markPrice", tag_field="e"):
    """``markPrice.<symbol>``; ``f``/``i``/``n`` are absent for prediction markets; ``n`` is ms."""

    event_time: NonNegInt = field(name="E")
    symbol: str = field(name="s")
    mark_price: Decimal = field(name="p")
    engine_time: NonNegInt = field(name="T")
    funding_rate: Decimal | None = field(default=None, name="f")
    index_price: Decimal | None = field(default=None, name="i")
    next_funding_time_ms: NonNegInt | None = field(default=None, name="n")

    def __post_init__(self) -> None:
        _check_optional(self.mark_price, "p")
        _check_optional(self.funding_rate, "f")
        _check_optional(self.index_price, "i")


class OpenInterestEvent(Struct, frozen=True, gc=False, tag="openInterest", tag_field="e"):
    """``openInterest.<symbol>``: open interest in contracts, every 60 s."""

    event_time: NonNegInt = field(name="E")
    symbol: str = field(name="s")
    open_interest: Decimal = field(name="o")

    def __post_init__(self) -> None:
        _check_size(self.open_interest, "o")


class LiquidationEvent(Struct, frozen=True, gc=False, tag="liquidation", tag_field="e"):
    """``liquidation``: one liquidation; ``side`` is ``Bid`` or ``Ask``."""

    event_time: NonNegInt = field(name="E")
    engine_time: NonNegInt = field(name="T")
    symbol: str = field(name="s")
    price: Decimal = field(name="p")
    quantity: Decimal = field(name="q")
    side: str = field(name="S")

    def __post_init__(self) -> None:
        _check_price(self.price, "p")
        _check_size(self.quantity, "q")


# --------------------------------------------------------------------------------------------------
# WebSocket private events (``account.*`` streams).


class BalanceUpdateEvent(Struct, frozen=True, gc=False, tag="balanceUpdate", tag_field="e"):
    """``account.balanceUpdate`` (used by ccxt; not in the spec snapshot): absolute balances."""

    event_time: NonNegInt = field(name="E")
    asset: str = field(name="a")
    available: Decimal | None = field(default=None, name="A")
    locked: Decimal | None = field(default=None, name="L")
    staked: Decimal | None = field(default=None, name="S")

    def __post_init__(self) -> None:
        _bound_decimals(self)


class OrderUpdateEvent(Struct, frozen=True, gc=False, kw_only=True, tag_field="e"):
    """Base of ``account.orderUpdate`` events; the subclass (tag ``e``) names the event."""

    event_time: NonNegInt = field(name="E")
    engine_time: NonNegInt = field(name="T")
    symbol: str = field(name="s")
    order_id: str = field(name="i")
    client_order_id: NonNegInt | None = field(default=None, name="c")
    side: str | None = field(default=None, name="S")
    order_type: str | None = field(default=None, name="o")
    time_in_force: str | None = field(default=None, name="f")
    quantity: Decimal | None = field(default=None, name="q")
    quote_quantity: Decimal | None = field(default=None, name="Q")
    price: Decimal | None = field(default=None, name="p")
    trigger_price: Decimal | None = field(default=None, name="P")
    trigger_by: str | None = field(default=None, name="B")
    take_profit_trigger_price: Decimal | None = field(default=None, name="a")
    stop_loss_trigger_price: Decimal | None = field(default=None, name="b")
    take_profit_limit_price: Decimal | None = field(default=None, name="j")
    stop_loss_limit_price: Decimal | None = field(default=None, name="k")
    take_profit_trigger_by: str | None = field(default=None, name="d")
    stop_loss_trigger_by: str | None = field(default=None, name="g")
    trigger_quantity: Decimal | None = field(default=None, name="Y")
    status: str | None = field(default=None, name="X")
    expiry_reason: str | None = field(default=None, name="R")
    trade_id: NonNegInt | None = field(default=None, name="t")
    fill_quantity: Decimal | None = field(default=None, name="l")
    executed_quantity: Decimal | None = field(default=None, name="z")
    executed_quote_quantity: Decimal | None = field(default=None, name="Z")
    fill_price: Decimal | None = field(default=None, name="L")
    is_maker: bool | None = field(default=None, name="m")
    fee: Decimal | None = field(default=None, name="n")
    fee_symbol: str | None = field(default=None, name="N")
    self_trade_prevention: str | None = field(default=None, name="V")
    origin: str | None = field(default=None, name="O")
    related_order_id: str | None = field(default=None, name="I")
    strategy_id: str | None = field(default=None, name="H")
    post_only: bool | None = field(default=None, name="y")
    reduce_only: bool | None = field(default=None, name="r")

    def __post_init__(self) -> None:
        _bound_decimals(self)

    @property
    def event_type(self) -> str:
        """The wire ``e`` value, e.g. ``orderFill``."""
        return str(type(self).__struct_config__.tag)


class OrderAcceptedEvent(OrderUpdateEvent, frozen=True, gc=False, tag="orderAccepted"):
    """Order accepted by the engine."""


class OrderCancelledEvent(OrderUpdateEvent, frozen=True, gc=False, tag="orderCancelled"):
    """Order cancelled."""


class OrderExpiredEvent(OrderUpdateEvent, frozen=True, gc=False, tag="orderExpired"):
    """Order expired."""


class OrderFillEvent(OrderUpdateEvent, frozen=True, gc=False, tag="orderFill"):
    """Order (partially) filled."""


class OrderModifiedEvent(OrderUpdateEvent, frozen=True, gc=False, tag="orderModified"):
    """Order modified."""


class OrderUpdatedEvent(OrderUpdateEvent, frozen=True, gc=False, tag="orderUpdate"):
    """Generic order update (``e: orderUpdate``, handled by ccxt)."""


class TriggerPlacedEvent(OrderUpdateEvent, frozen=True, gc=False, tag="triggerPlaced"):
    """Trigger order placed."""


class TriggerFailedEvent(OrderUpdateEvent, frozen=True, gc=False, tag="triggerFailed"):
    """Trigger order failed."""


class PositionUpdateEvent(Struct, frozen=True, gc=False, kw_only=True, tag_field="e"):
    """Base of ``account.positionUpdate`` events; the subclass (tag ``e``) names the event."""

    symbol: str = field(name="s")
    event_time: NonNegInt | None = field(default=None, name="E")
    engine_time: NonNegInt | None = field(default=None, name="T")
    position_id: NonNegInt | None = field(default=None, name="i")
    break_even_price: Decimal | None = field(default=None, name="b")
    entry_price: Decimal | None = field(default=None, name="B")
    initial_margin_fraction: Decimal | None = field(default=None, name="f")
    mark_price: Decimal | None = field(default=None, name="M")
    maintenance_margin_fraction: Decimal | None = field(default=None, name="m")
    net_quantity: Decimal | None = field(default=None, name="q")
    net_exposure_quantity: Decimal | None = field(default=None, name="Q")
    net_exposure_notional: Decimal | None = field(default=None, name="n")
    realized_pnl: Decimal | None = field(default=None, name="p")
    unrealized_pnl: Decimal | None = field(default=None, name="P")
    liquidation_price: Decimal | None = field(default=None, name="l")

    def __post_init__(self) -> None:
        _bound_decimals(self)

    @property
    def event_type(self) -> str:
        """The wire ``e`` value, e.g. ``positionOpened`` (``?positionSnapshot`` for snapshots)."""
        return str(type(self).__struct_config__.tag)


class PositionOpenedEvent(PositionUpdateEvent, frozen=True, gc=False, tag="positionOpened"):
    """Position opened."""


class PositionAdjustedEvent(PositionUpdateEvent, frozen=True, gc=False, tag="positionAdjusted"):
    """Position adjusted."""


class PositionClosedEvent(PositionUpdateEvent, frozen=True, gc=False, tag="positionClosed"):
    """Position closed."""


class PositionUpdatedEvent(PositionUpdateEvent, frozen=True, gc=False, tag="positionUpdated"):
    """Position updated (handled by ccxt)."""


class PositionSnapshot(PositionUpdateEvent, frozen=True, gc=False, tag="?positionSnapshot"):
    """A current position sent on subscribe, which carries no ``e`` key on the wire.

    The tag is a placeholder that never occurs on the wire; it only lets the type sit in the
    :data:`WsEvent` union. :func:`decode_ws_frame` builds it for ``e``-less position data.
    """


class UnknownEvent(Struct, frozen=True, gc=False, tag="?unknown", tag_field="e"):
    """An event this library does not model (unknown or missing ``e``), kept as parsed JSON.

    ``payload`` is the decoded ``data`` value with JSON fractions as ``Decimal`` (never float).
    The tag is a placeholder that never occurs on the wire.
    """

    event_type: str | None = None
    payload: Any = None


WsEvent = (
    TradeEvent
    | DepthEvent
    | BookTickerEvent
    | TickerEvent
    | KlineEvent
    | MarkPriceEvent
    | OpenInterestEvent
    | LiquidationEvent
    | BalanceUpdateEvent
    | OrderAcceptedEvent
    | OrderCancelledEvent
    | OrderExpiredEvent
    | OrderFillEvent
    | OrderModifiedEvent
    | OrderUpdatedEvent
    | TriggerPlacedEvent
    | TriggerFailedEvent
    | PositionOpenedEvent
    | PositionAdjustedEvent
    | PositionClosedEvent
    | PositionUpdatedEvent
    | PositionSnapshot
    | UnknownEvent
)
"""Everything a frame's ``data`` can decode to."""

_KNOWN_TAGS: Final = frozenset(
    str(cls.__struct_config__.tag)
    for cls in (
        TradeEvent,
        DepthEvent,
        BookTickerEvent,
        TickerEvent,
        KlineEvent,
        MarkPriceEvent,
        OpenInterestEvent,
        LiquidationEvent,
        BalanceUpdateEvent,
        OrderAcceptedEvent,
        OrderCancelledEvent,
        OrderExpiredEvent,
        OrderFillEvent,
        OrderModifiedEvent,
        OrderUpdatedEvent,
        TriggerPlacedEvent,
        TriggerFailedEvent,
        PositionOpenedEvent,
        PositionAdjustedEvent,
        PositionClosedEvent,
        PositionUpdatedEvent,
    )
)
"""Wire ``e`` values this module models; a failure on one of them is a real protocol error."""


class WsError(Struct, frozen=True, gc=False):
    """The ``error`` object of a WebSocket error frame (``4006`` = invalid stream)."""

    code: int
    message: str


class WsErrorFrame(Struct, frozen=True, gc=False):
    """A WebSocket error frame ``{"id": null, "error": {...}}``."""

    error: WsError
    id: int | str | None = None


class WsFrame(Struct, frozen=True, gc=False, omit_defaults=True):
    """Any server frame: a data envelope (``stream`` + ``data``) or an error (``error``).

    A frame with none of the three (e.g. an acknowledgement, which Backpack does not document)
    decodes with all fields ``None``; callers ignore it.
    """

    stream: str | None = None
    data: WsEvent | None = None
    error: WsError | None = None
    id: int | str | None = None


class WsRequest(Struct, frozen=True, gc=False, omit_defaults=True):
    """Client frame: ``{"method": "SUBSCRIBE"|"UNSUBSCRIBE", "params": [...]}``.

    ``signature`` (private streams): ``[api key, signature, timestamp ms, window ms]``, strings.
    """

    method: str
    params: list[str]
    signature: tuple[str, str, str, str] | None = None
    id: int | str | None = None


# --------------------------------------------------------------------------------------------------
# REST bodies.


class DepthSnapshot(Struct, frozen=True, gc=False):
    """``GET /api/v1/depth``. Both sides as sent: ascending by price (best bid LAST)."""

    asks: list[Level]
    bids: list[Level]
    last_update_id: NonNegInt = field(name="lastUpdateId")
    timestamp: NonNegInt | None = None
    """Engine time in µs."""

    def __post_init__(self) -> None:
        _check_levels(self.asks, "ask")
        _check_levels(self.bids, "bid")


class DepthSnapshotText(Struct, frozen=True, gc=False):
    """``GET /api/v1/depth`` with its levels kept as the exchange's text (what the book stores).

    What the feed's REST clients decode into: a ``Decimal`` per level (and the book turning it
    back into text) made a 1,000-level snapshot several times dearer than the text it came as,
    and the feed fetches one per market at startup. Every level is checked as text here (finite,
    bounded, price > 0, size >= 0: what :class:`DepthSnapshot` checks); the market's own bounds
    and a crossed book are refused where the book is built, as for :class:`DepthSnapshot`.
    """

    asks: list[RawLevel]
    bids: list[RawLevel]
    last_update_id: NonNegInt = field(name="lastUpdateId")
    timestamp: NonNegInt | None = None
    """Engine time in µs."""

    def __post_init__(self) -> None:
        for side, levels in (("ask", self.asks), ("bid", self.bids)):
            for price, size in levels:
                if not (is_price_text(price) and is_size_text(size)):
                    raise ValueError(
                        f"bad {side} level [{price!r:.60}, {size!r:.60}]: "
                        "need a bounded decimal price > 0 and size >= 0"
                    )


class RestTrade(Struct, frozen=True, gc=False, rename="camel"):
    """One item of ``GET /api/v1/trades`` (newest first). ``timestamp`` is in ms."""

    id: NonNegInt
    price: Decimal
    quantity: Decimal
    quote_quantity: Decimal
    timestamp: NonNegInt
    is_buyer_maker: bool

    def __post_init__(self) -> None:
        _check_price(self.price, "price")
        _check_size(self.quantity, "quantity")
        _check_size(self.quote_quantity, "quoteQuantity")


class MultiplierBand(Struct, frozen=True, gc=False, rename="camel"):
    """A ``{maxMultiplier, minMultiplier}`` band."""

    max_multiplier: Decimal
    min_multiplier: Decimal

    def __post_init__(self) -> None:
        _bound_decimals(self)


class PremiumBand(Struct, frozen=True, gc=False, rename="camel"):
    """``meanPremiumBand``."""

    tolerance_pct: Decimal

    def __post_init__(self) -> None:
        _bound_decimals(self)


class PriceFilter(Struct, frozen=True, gc=False, rename="camel"):
    """``filters.price`` of a market; ``tick_size`` is the price increment."""

    min_price: Decimal
    tick_size: Decimal
    max_price: Decimal | None = None
    max_multiplier: Decimal | None = None
    min_multiplier: Decimal | None = None
    max_impact_multiplier: Decimal | None = None
    min_impact_multiplier: Decimal | None = None
    mean_mark_price_band: MultiplierBand | None = None
    mean_premium_band: PremiumBand | None = None
    borrow_entry_fee_max_multiplier: Decimal | None = None
    borrow_entry_fee_min_multiplier: Decimal | None = None

    def __post_init__(self) -> None:
        _bound_decimals(self)
        _check_price(self.tick_size, "tickSize")
        _check_size(self.min_price, "minPrice")


class QuantityFilter(Struct, frozen=True, gc=False, rename="camel"):
    """``filters.quantity`` of a market; ``step_size`` is the quantity increment."""

    min_quantity: Decimal
    step_size: Decimal
    max_quantity: Decimal | None = None

    def __post_init__(self) -> None:
        _bound_decimals(self)
        _check_price(self.step_size, "stepSize")
        _check_size(self.min_quantity, "minQuantity")


class MarketFilters(Struct, frozen=True, gc=False):
    """``filters`` of a market."""

    price: PriceFilter
    quantity: QuantityFilter


class MarginFunction(Struct, frozen=True, gc=False):
    """``imfFunction`` / ``mmfFunction``: ``{type: "sqrt", base, factor}``."""

    type: str
    base: Decimal
    factor: Decimal

    def __post_init__(self) -> None:
        _bound_decimals(self)


class Market(Struct, frozen=True, gc=False, rename="camel"):
    """One item of ``GET /api/v1/markets`` (or the body of ``/api/v1/market``)."""

    symbol: str
    base_symbol: str
    quote_symbol: str
    market_type: str
    filters: MarketFilters
    order_book_state: str
    created_at: str
    """Naive ISO datetime (UTC) with µs, as sent."""
    visible: bool | None = None
    rwa_market_type: str | None = None
    funding_interval: NonNegInt | None = None
    """Milliseconds; a string in some recordings."""
    funding_rate_upper_bound: Decimal | None = None
    funding_rate_lower_bound: Decimal | None = None
    imf_function: MarginFunction | None = None
    mmf_function: MarginFunction | None = None
    open_interest_limit: Decimal | None = None
    position_limit_weight: Decimal | None = None

    def __post_init__(self) -> None:
        _bound_decimals(self)


class Ticker(Struct, frozen=True, gc=False, rename="camel"):
    """One item of ``GET /api/v1/tickers`` (or ``/api/v1/ticker``); every field is a string."""

    symbol: str
    first_price: Decimal
    last_price: Decimal
    price_change: Decimal
    price_change_percent_raw: str = field(name="priceChangePercent")
    high: Decimal
    low: Decimal
    volume: Decimal
    quote_volume: Decimal
    trades: NonNegInt

    def __post_init__(self) -> None:
        _bound_decimals(self)

    @property
    def price_change_percent(self) -> Decimal | None:
        """Change as a fraction (``-0.004868`` = −0.4868 %); ``None`` when sent as ``"N/A"``."""
        raw = self.price_change_percent_raw
        if len(raw) > MAX_TEXT:
            return None
        try:
            value = Decimal(raw)
        except ArithmeticError:
            return None
        return value if value.is_finite() and bounds_problem(value) is None else None


class Status(Struct, frozen=True, gc=False):
    """``GET /api/v1/status``: ``status`` is ``Ok`` or ``Maintenance``."""

    status: str
    message: str | None = None


class AssetToken(Struct, frozen=True, gc=False, rename="camel"):
    """One chain of an asset in ``GET /api/v1/assets``."""

    blockchain: str
    deposit_enabled: bool
    withdraw_enabled: bool
    display_name: str | None = None
    contract_address: str | None = None
    maximum_withdrawal: Decimal | None = None
    minimum_deposit: Decimal | None = None
    minimum_withdrawal: Decimal | None = None
    withdrawal_fee: Decimal | None = None
    native_decimals: NonNegInt | None = None

    def __post_init__(self) -> None:
        _bound_decimals(self)


class Asset(Struct, frozen=True, gc=False, rename="camel"):
    """One item of ``GET /api/v1/assets``."""

    symbol: str
    tokens: list[AssetToken]
    display_name: str | None = None
    coingecko_id: str | None = None


class Kline(Struct, frozen=True, gc=False, rename="camel"):
    """One item of ``GET /api/v1/klines``; ``start``/``end`` are ``YYYY-MM-DD HH:MM:SS`` UTC."""

    start: str
    end: str
    open: Decimal | None = None
    high: Decimal | None = None
    low: Decimal | None = None
    close: Decimal | None = None
    volume: Decimal | None = None
    quote_volume: Decimal | None = None
    trades: NonNegInt | None = None

    def __post_init__(self) -> None:
        _bound_decimals(self)


class MarkPrice(Struct, frozen=True, gc=False, rename="camel"):
    """One item of ``GET /api/v1/markPrices``; ``next_funding_timestamp`` in ms."""

    symbol: str
    mark_price: Decimal
    index_price: Decimal | None = None
    funding_rate: Decimal | None = None
    next_funding_timestamp: NonNegInt | None = None

    def __post_init__(self) -> None:
        _bound_decimals(self)


class OpenInterest(Struct, frozen=True, gc=False, rename="camel"):
    """One item of ``GET /api/v1/openInterest``; ``timestamp`` in ms."""

    symbol: str
    open_interest: Decimal | None
    timestamp: NonNegInt

    def __post_init__(self) -> None:
        _bound_decimals(self)


class FundingRate(Struct, frozen=True, gc=False, rename="camel"):
    """One item of ``GET /api/v1/fundingRates``; ``interval_end_timestamp`` is naive ISO (UTC)."""

    symbol: str
    interval_end_timestamp: str
    funding_rate: Decimal

    def __post_init__(self) -> None:
        _bound_decimals(self)


class RestError(Struct, frozen=True, gc=False):
    """An error body: JSON ``{"code", "message"}`` (some endpoints send only ``message``).

    ``plain_text`` is true when the body was not a JSON object; ``message`` is then the text.
    """

    message: str
    code: str | None = None
    plain_text: bool = False


# --------------------------------------------------------------------------------------------------
# Decoders, built once.

_T = TypeVar("_T")

_FRAME_DECODER: Final = msgspec.json.Decoder(WsFrame, strict=False)


MarketData = (
    DepthEvent
    | TradeEvent
    | BookTickerEvent
    | TickerEvent
    | KlineEvent
    | MarkPriceEvent
    | OpenInterestEvent
    | LiquidationEvent
)
"""The public market-data events: what the connection actors route by symbol."""


class MarketDataFrame(Struct, frozen=True, gc=False):
    """The envelope of a public market-data frame, ``stream`` skipped: the hot path's first try."""

    data: MarketData


MARKET_DATA_DECODER: Final = msgspec.json.Decoder(MarketDataFrame, strict=False)
"""Decodes public market-data frames only (cheaper than the full union); anything it rejects (a
msgspec error) must go through :func:`decode_ws_frame`, which tolerates or names the problem."""


class _LooseFrame(Struct, gc=False):
    # Envelope with ``data`` left undecoded: used only after the fast path failed.
    stream: str | None = None
    data: msgspec.Raw = field(default_factory=msgspec.Raw)
    error: WsError | None = None
    id: int | str | None = None


class _TagProbe(Struct, gc=False):
    e: str | None = None


class _StreamProbe(Struct, gc=False):
    stream: Any = None


_LOOSE_DECODER: Final = msgspec.json.Decoder(_LooseFrame, strict=False)
_STREAM_PROBE: Final = msgspec.json.Decoder(_StreamProbe)
_TAG_PROBE: Final = msgspec.json.Decoder(_TagProbe)


def _bounded_number(text: str) -> Decimal:
    # The numbers of a payload kept whole (an unknown event's): bounded like every other decimal
    # (found by fuzzing: {"e":"x","v":1e999999999} was kept as an unbounded Decimal). msgspec
    # turns the ValueError into a ValidationError, so the frame is a ProtocolError.
    if len(text) > MAX_TEXT:
        raise ValueError(f"a number of more than {MAX_TEXT} characters")
    value = Decimal(text)
    _check_bounds(value, "number")
    return value


_ANY_DECODER: Final = msgspec.json.Decoder(float_hook=_bounded_number)
_WS_ERROR_DECODER: Final = msgspec.json.Decoder(WsErrorFrame, strict=False)
_WS_REQUEST_DECODER: Final = msgspec.json.Decoder(WsRequest, strict=False)
_DEPTH_DECODER: Final = msgspec.json.Decoder(DepthSnapshot, strict=False)
_DEPTH_TEXT_DECODER: Final = msgspec.json.Decoder(DepthSnapshotText, strict=False)
_TRADES_DECODER: Final = msgspec.json.Decoder(list[RestTrade], strict=False)
_MARKETS_DECODER: Final = msgspec.json.Decoder(list[Market], strict=False)
_MARKET_DECODER: Final = msgspec.json.Decoder(Market, strict=False)
_TICKER_DECODER: Final = msgspec.json.Decoder(Ticker, strict=False)
_TICKERS_DECODER: Final = msgspec.json.Decoder(list[Ticker], strict=False)
_STATUS_DECODER: Final = msgspec.json.Decoder(Status, strict=False)
_ASSETS_DECODER: Final = msgspec.json.Decoder(list[Asset], strict=False)
_KLINES_DECODER: Final = msgspec.json.Decoder(list[Kline], strict=False)
_MARK_PRICES_DECODER: Final = msgspec.json.Decoder(list[MarkPrice], strict=False)
_OPEN_INTEREST_DECODER: Final = msgspec.json.Decoder(list[OpenInterest], strict=False)
_FUNDING_RATES_DECODER: Final = msgspec.json.Decoder(list[FundingRate], strict=False)
_REST_ERROR_DECODER: Final = msgspec.json.Decoder(RestError, strict=False)
_ENCODER: Final = msgspec.json.Encoder(order="sorted")

_WS: Final = "ws"


def _reason(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 200 else text[:200] + "…"


def _decode(decoder: msgspec.json.Decoder[_T], raw: bytes | str, where: str) -> _T:
    try:
        return decoder.decode(raw)
    except _DECODE_ERRORS as exc:
        raise ProtocolError(where, _reason(exc), raw) from exc


def _convert(obj: Any, kind: type[_T], where: str) -> _T:
    try:
        return msgspec.convert(obj, kind, strict=False)
    except _DECODE_ERRORS as exc:
        raise ProtocolError(where, _reason(exc), repr(obj)) from exc


def _stream_of(raw: bytes | str) -> str:
    """Best-effort stream name of a frame that failed to decode, for the error message."""
    try:
        stream = _STREAM_PROBE.decode(raw).stream
    except _DECODE_ERRORS:
        return _WS
    return stream if isinstance(stream, str) and stream else _WS


def decode_ws_frame(raw: bytes | str) -> WsFrame:
    """Decode one server WebSocket frame (data envelope, error frame or ignorable noise).

    Data with an unknown ``e`` becomes :class:`UnknownEvent`; ``e``-less data on a
    ``account.positionUpdate`` stream becomes :class:`PositionSnapshot` when it fits.
    """
    try:
        frame = _FRAME_DECODER.decode(raw)
    except _DECODE_ERRORS as exc:
        return _decode_ws_frame_slow(raw, exc)
    if frame.data is None and frame.stream is not None:
        raise ProtocolError(frame.stream, "data frame without data", raw)
    return frame


def _decode_ws_frame_slow(raw: bytes | str, exc: BaseException) -> WsFrame:
    try:
        loose = _LOOSE_DECODER.decode(raw)
    except _DECODE_ERRORS:
        raise ProtocolError(_stream_of(raw), _reason(exc), raw) from exc
    stream = loose.stream or _WS
    data_raw = loose.data
    try:
        probe = _TAG_PROBE.decode(data_raw) if data_raw else _TagProbe()
    except _DECODE_ERRORS:
        # data is not an object (or e is not a string): only tolerated on private streams.
        if not stream.startswith("account.") or not isinstance(exc, msgspec.ValidationError):
            raise ProtocolError(stream, _reason(exc), raw) from exc
        probe = _TagProbe()
    if probe.e in _KNOWN_TAGS or not data_raw:
        raise ProtocolError(stream, _reason(exc), raw) from exc
    try:
        payload = _ANY_DECODER.decode(data_raw)
    except _DECODE_ERRORS as payload_exc:
        raise ProtocolError(stream, _reason(payload_exc), raw) from payload_exc
    event: WsEvent | None = None
    if (
        probe.e is None
        and stream.startswith("account.positionUpdate")
        and isinstance(payload, dict)
    ):
        try:
            event = msgspec.convert(payload, PositionSnapshot, strict=False)
        except _DECODE_ERRORS:
            event = None
    if event is None:
        event = UnknownEvent(event_type=probe.e, payload=payload)
    return WsFrame(stream=loose.stream, data=event, error=loose.error, id=loose.id)


def decode_ws_error(raw: bytes | str) -> WsErrorFrame:
    """Decode an error frame ``{"id": null, "error": {"code": 4006, "message": ...}}``."""
    return _decode(_WS_ERROR_DECODER, raw, _WS)


def decode_ws_request(raw: bytes | str) -> WsRequest:
    """Decode a client SUBSCRIBE/UNSUBSCRIBE frame (the simulator's side)."""
    return _decode(_WS_REQUEST_DECODER, raw, "ws-request")


def _endpoint(path: str, symbol: str | None = None) -> str:
    return f"{path}?symbol={symbol}" if symbol else path


def decode_depth_snapshot(raw: bytes | str, symbol: str) -> DepthSnapshot:
    """Decode a ``GET /api/v1/depth`` body."""
    return _decode(_DEPTH_DECODER, raw, _endpoint("/api/v1/depth", symbol))


def decode_depth_snapshot_text(raw: bytes | str, symbol: str) -> DepthSnapshotText:
    """Decode a ``GET /api/v1/depth`` body, levels kept as text (see :class:`DepthSnapshotText`)."""
    return _decode(_DEPTH_TEXT_DECODER, raw, _endpoint("/api/v1/depth", symbol))


def convert_depth_snapshot(obj: Any, symbol: str) -> DepthSnapshot:
    """Convert an already-parsed ``/api/v1/depth`` body (e.g. from ccxt)."""
    return _convert(obj, DepthSnapshot, _endpoint("/api/v1/depth", symbol))


def decode_trades(raw: bytes | str, symbol: str) -> list[RestTrade]:
    """Decode a ``GET /api/v1/trades`` (or ``/trades/history``) body; newest first as sent."""
    return _decode(_TRADES_DECODER, raw, _endpoint("/api/v1/trades", symbol))


def convert_trades(obj: Any, symbol: str) -> list[RestTrade]:
    """Convert an already-parsed ``/api/v1/trades`` body (e.g. from ccxt)."""
    return _convert(obj, list[RestTrade], _endpoint("/api/v1/trades", symbol))


def decode_markets(raw: bytes | str) -> list[Market]:
    """Decode a ``GET /api/v1/markets`` body."""
    return _decode(_MARKETS_DECODER, raw, "/api/v1/markets")


def decode_market(raw: bytes | str, symbol: str | None = None) -> Market:
    """Decode a ``GET /api/v1/market`` body (one market object)."""
    return _decode(_MARKET_DECODER, raw, _endpoint("/api/v1/market", symbol))


def decode_ticker(raw: bytes | str, symbol: str | None = None) -> Ticker:
    """Decode a ``GET /api/v1/ticker`` body."""
    return _decode(_TICKER_DECODER, raw, _endpoint("/api/v1/ticker", symbol))


def decode_tickers(raw: bytes | str) -> list[Ticker]:
    """Decode a ``GET /api/v1/tickers`` body."""
    return _decode(_TICKERS_DECODER, raw, "/api/v1/tickers")


def decode_status(raw: bytes | str) -> Status:
    """Decode a ``GET /api/v1/status`` body."""
    return _decode(_STATUS_DECODER, raw, "/api/v1/status")


def _text(raw: bytes | str, where: str) -> str:
    if isinstance(raw, str):
        return raw.strip()
    try:
        return raw.decode("utf-8").strip()
    except UnicodeError as exc:
        raise ProtocolError(where, _reason(exc), raw) from exc


def decode_time(raw: bytes | str) -> int:
    """Decode the ``text/plain`` body of ``GET /api/v1/time``: server time in ms."""
    where = "/api/v1/time"
    text = _text(raw, where)
    if not (text.isascii() and text.isdigit()) or len(text) > 19:
        raise ProtocolError(where, "expected an integer of milliseconds", raw)
    return int(text)


def decode_ping(raw: bytes | str) -> str:
    """Decode the ``text/plain`` body of ``GET /api/v1/ping`` (``pong``)."""
    text = _text(raw, "/api/v1/ping")
    if text != "pong":
        raise ProtocolError("/api/v1/ping", "expected 'pong'", raw)
    return text


def decode_assets(raw: bytes | str) -> list[Asset]:
    """Decode a ``GET /api/v1/assets`` body."""
    return _decode(_ASSETS_DECODER, raw, "/api/v1/assets")


def decode_klines(raw: bytes | str, symbol: str | None = None) -> list[Kline]:
    """Decode a ``GET /api/v1/klines`` body."""
    return _decode(_KLINES_DECODER, raw, _endpoint("/api/v1/klines", symbol))


def decode_mark_prices(raw: bytes | str) -> list[MarkPrice]:
    """Decode a ``GET /api/v1/markPrices`` body."""
    return _decode(_MARK_PRICES_DECODER, raw, "/api/v1/markPrices")


def decode_open_interest(raw: bytes | str) -> list[OpenInterest]:
    """Decode a ``GET /api/v1/openInterest`` body."""
    return _decode(_OPEN_INTEREST_DECODER, raw, "/api/v1/openInterest")


def decode_funding_rates(raw: bytes | str, symbol: str | None = None) -> list[FundingRate]:
    """Decode a ``GET /api/v1/fundingRates`` body."""
    return _decode(_FUNDING_RATES_DECODER, raw, _endpoint("/api/v1/fundingRates", symbol))


def decode_rest_error(raw: bytes | str, endpoint: str = "rest") -> RestError:
    """Decode an error body. A JSON object must have ``message`` (and optionally ``code``);
    a body that is not a JSON object (framework text, a CDN page) is returned as plain text."""
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    stripped = text.strip()
    if not stripped.startswith("{"):
        if not stripped:
            raise ProtocolError(endpoint, "empty error body", raw)
        return RestError(message=stripped, plain_text=True)
    return _decode(_REST_ERROR_DECODER, raw, endpoint)


def encode_json(obj: Any) -> bytes:
    """Encode any wire struct (or plain data) as compact JSON with ASCII-sorted keys, like the
    exchange; ``Decimal`` becomes a string, ints stay ints."""
    return _ENCODER.encode(obj)
