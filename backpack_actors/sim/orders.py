"""The simulator's account side: API-key verification and an order engine on the market model.

One account (any number of configured public keys) trades against the simulated books:

* **Verification** — every private REST request and private SUBSCRIBE is checked like Backpack
  does (docs/protocol.md §5): a known ``X-API-Key``, a timestamp inside ``X-Window`` (at most
  60 000 ms) of the exchange clock, and an Ed25519 signature over the sorted parameters. Failures
  answer 401 ``INVALID_CLIENT_REQUEST`` with Backpack's texts (``Invalid signature``, ``Request has
  expired``, ...); an unknown key answers 401 ``UNAUTHORIZED``.
* **Orders** — limit and market orders, post-only, IOC/FOK/GTC, cancel and cancel-all. A taker
  order consumes the market model's book levels: each fill is a public trade (``trade.<sym>``)
  and the level change a depth update (``depth.<sym>``), exactly as the model's own trades are.
  A resting order adds its size to its book level; it fills when the model's own trades take
  that level (the user's share first, one resting order per print, so a trade id is one fill).
  Self-trade prevention is ``RejectTaker``: a taker stops before its own resting order and the
  rest of it expires.
* **Account** — spot balances (resting orders lock what they could spend, fees are taken in the
  received asset), perp positions in the quote collateral with average entry price, realized
  PnL on reduction and a mark price at the model's mid (a simple mark-to-market).
* **Private streams** — ``account.orderUpdate[.<sym>]`` and ``account.positionUpdate[.<sym>]`` in
  the recorded wire format (µs times as strings, order id a string); current positions are sent
  without ``e`` right after subscribing. Fault injection: :meth:`OrderEngine.drop_updates` loses
  the next private frames, :meth:`OrderEngine.disconnect_private` cuts every private session.

Ground truth: :attr:`OrderEngine.orders`, :attr:`OrderEngine.fills`, :meth:`OrderEngine.positions`
and :meth:`OrderEngine.balances`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, Protocol
from urllib.parse import urlencode

from backpack_actors.sim.market import DepthMessage, MarketModel, SimTrade

__all__ = [
    "INSTRUCTIONS",
    "OrderEngine",
    "OrderRejected",
    "PrivateFaultSpec",
    "PrivateHost",
    "SimFill",
    "SimOrder",
    "SimPosition",
    "parse_private_fault",
    "sim_api_keys",
]

INSTRUCTIONS: dict[tuple[str, str], str] = {
    ("GET", "/api/v1/capital"): "balanceQuery",
    ("GET", "/api/v1/position"): "positionQuery",
    ("GET", "/api/v1/order"): "orderQuery",
    ("POST", "/api/v1/order"): "orderExecute",
    ("DELETE", "/api/v1/order"): "orderCancel",
    ("GET", "/api/v1/orders"): "orderQueryAll",
    ("DELETE", "/api/v1/orders"): "orderCancelAll",
    ("GET", "/wapi/v1/history/orders"): "orderHistoryQueryAll",
    ("GET", "/wapi/v1/history/fills"): "fillHistoryQueryAll",
}
"""Private routes the simulator serves, with the instruction each one is signed with.

Kept apart from the client's table (``backpack_actors.private.rest.INSTRUCTIONS``) on purpose:
the simulator is the client's independent peer, so a wrong instruction name on either side
fails against the other instead of being shared by both."""

PRIVATE_STREAMS = ("account.orderUpdate", "account.positionUpdate")
MAKER_FEE = Decimal("0.0002")
TAKER_FEE = Decimal("0.0005")
DEFAULT_BALANCES = {
    "USDC": Decimal(1_000_000), "USDT": Decimal(1_000_000), "BTC": Decimal(10),
    "ETH": Decimal(200), "SOL": Decimal(5000),
}  # fmt: skip
_ZERO = Decimal(0)
_IMF = "0.02"
_MMF = "0.0125"

Reply = tuple[int, Any]
"""``(HTTP status, JSON body)``."""


class PrivateHost(Protocol):
    """What the engine needs from the exchange that hosts it."""

    models: dict[str, MarketModel]

    def now_us(self) -> int: ...

    def publish_market(self, msg: DepthMessage) -> None: ...

    def publish_private(self, stream: str, frame: str) -> None: ...

    def kill_private_sessions(self) -> int: ...


def _text(value: Decimal) -> str:
    """Decimal as plain wire text, trailing fraction zeros removed."""
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def _iso_ms(us: int) -> str:
    seconds, rest = divmod(us, 1_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{rest // 1000:03d}"


def _error(status: int, code: str, message: str) -> Reply:
    return status, {"code": code, "message": message}


class OrderRejected(Exception):
    """An order or cancel the exchange refuses; ``reply`` is its HTTP status and error body."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(reply[0])
        self.reply = reply


def _reject(status: int, code: str, message: str) -> OrderRejected:
    return OrderRejected(_error(status, code, message))


@dataclass(slots=True)
class SimOrder:
    """One order as the exchange holds it (ground truth)."""

    id: str
    symbol: str
    side: str
    order_type: str
    time_in_force: str
    quantity: Decimal | None
    quote_quantity: Decimal | None
    price: Decimal | None
    post_only: bool
    reduce_only: bool | None
    client_id: int | None
    created_us: int
    status: str = "New"
    executed_quantity: Decimal = _ZERO
    executed_quote_quantity: Decimal = _ZERO
    expiry_reason: str | None = None
    locked: Decimal = _ZERO
    """Spot: what a resting order locks (quote for a bid, base for an ask)."""
    resting_steps: int = 0
    """Size this order added to its public book level, in the model's step units."""

    @property
    def open(self) -> bool:
        """Whether the order can still fill."""
        return self.status in ("New", "PartiallyFilled")

    @property
    def remaining(self) -> Decimal:
        """Base quantity still to fill (``None`` quantity: quote-sized market order)."""
        return (self.quantity or _ZERO) - self.executed_quantity

    def rest_json(self, iso_time: bool = False) -> dict[str, Any]:
        """The REST order object (``createdAt`` in ms, or ISO text as order history has it)."""
        return {
            "clientId": self.client_id,
            "createdAt": _iso_ms(self.created_us) if iso_time else self.created_us // 1000,
            "executedQuantity": _text(self.executed_quantity),
            "executedQuoteQuantity": _text(self.executed_quote_quantity),
            "expiryReason": self.expiry_reason,
            "id": self.id,
            "orderType": self.order_type,
            "postOnly": self.post_only,
            "price": _text(self.price) if self.price is not None else None,
            "quantity": _text(self.quantity) if self.quantity is not None else None,
            "quoteQuantity": _text(self.quote_quantity)
            if self.quote_quantity is not None
            else None,
            "reduceOnly": self.reduce_only,
            "relatedOrderId": None,
            "selfTradePrevention": "RejectTaker",
            "side": self.side,
            "status": self.status,
            "stopLossLimitPrice": None,
            "stopLossTriggerBy": None,
            "stopLossTriggerPrice": None,
            "strategyId": None,
            "symbol": self.symbol,
            "systemOrderType": None,
            "takeProfitLimitPrice": None,
            "takeProfitTriggerBy": None,
            "takeProfitTriggerPrice": None,
            "timeInForce": self.time_in_force,
            "triggerBy": None,
            "triggerPrice": None,
            "triggerQuantity": None,
            "triggeredAt": None,
        }


@dataclass(frozen=True, slots=True)
class SimFill:
    """One fill of one of the account's orders (ground truth)."""

    trade_id: int
    order_id: str
    symbol: str
    side: str
    price: Decimal
    quantity: Decimal
    fee: Decimal
    fee_symbol: str
    is_maker: bool
    engine_time_us: int
    client_id: int | None

    def rest_json(self) -> dict[str, Any]:
        """The ``/wapi/v1/history/fills`` item."""
        return {
            "clientId": self.client_id,
            "fee": _text(self.fee),
            "feeSymbol": self.fee_symbol,
            "isMaker": self.is_maker,
            "orderId": self.order_id,
            "price": _text(self.price),
            "quantity": _text(self.quantity),
            "side": self.side,
            "symbol": self.symbol,
            "systemOrderType": None,
            "timestamp": _iso_ms(self.engine_time_us),
            "tradeId": self.trade_id,
        }


@dataclass(slots=True)
class SimPosition:
    """A perp position: signed net quantity, average entry, realized PnL (ground truth)."""

    symbol: str
    position_id: int
    net_quantity: Decimal = _ZERO
    entry_price: Decimal = _ZERO
    realized_pnl: Decimal = _ZERO


@dataclass(slots=True)
class _Balance:
    available: Decimal = _ZERO
    locked: Decimal = _ZERO


@dataclass(slots=True)
class _PrivateFaults:
    drop_next: int = 0
    dropped: int = 0
    disconnects: int = 0


@dataclass
class OrderEngine:
    """Orders, fills, balances and positions of the simulator's one account."""

    host: PrivateHost
    api_keys: frozenset[str]
    auth_clock_ms: Callable[[], int] | None = None
    """Clock for window checks; the exchange clock (``/api/v1/time``) by default."""
    orders: dict[str, SimOrder] = field(default_factory=dict)
    fills: list[SimFill] = field(default_factory=list)
    faults: _PrivateFaults = field(default_factory=_PrivateFaults)
    frames_published: int = 0

    def __post_init__(self) -> None:
        self._balances: dict[str, _Balance] = {
            asset: _Balance(amount) for asset, amount in DEFAULT_BALANCES.items()
        }
        self._positions: dict[str, SimPosition] = {}
        self._next_order_id = 11_000_000_000
        self._next_position_id = 5_400_000_000
        # Resting orders per (symbol, is_bid, price in ticks), oldest first.
        self._resting: dict[tuple[str, bool, int], list[SimOrder]] = {}
        self._own_trade_ids: set[int] = set()

    # ------------------------------------------------------------------ ground truth
    def balances(self) -> dict[str, tuple[Decimal, Decimal]]:
        """``asset -> (available, locked)``."""
        return {a: (b.available, b.locked) for a, b in sorted(self._balances.items())}

    def positions(self) -> dict[str, SimPosition]:
        """Open perp positions (non-zero net quantity) by symbol."""
        return {s: p for s, p in sorted(self._positions.items()) if p.net_quantity}

    def open_orders(self) -> list[SimOrder]:
        """Orders that can still fill, oldest first."""
        return [o for o in self.orders.values() if o.open]

    # ------------------------------------------------------------------ faults
    def drop_updates(self, count: int = 1) -> None:
        """Lose the next ``count`` private frames (every subscriber misses them)."""
        self.faults.drop_next += count

    def disconnect_private(self) -> int:
        """Close every session holding a private subscription; returns how many."""
        self.faults.disconnects += 1
        return self.host.kill_private_sessions()

    # ------------------------------------------------------------------ verification
    def _now_ms(self) -> int:
        if self.auth_clock_ms is not None:
            return self.auth_clock_ms()
        return self.host.now_us() // 1000

    def verify(
        self,
        instruction: str,
        params: Mapping[str, object] | Sequence[Mapping[str, object]],
        api_key: str | None,
        signature: str | None,
        timestamp: str | None,
        window: str | None,
    ) -> Reply | None:
        """``None`` when the request is properly signed, else the error reply."""
        # Imported here: the public simulator runs without the [private] extra installed.
        from backpack_actors.auth import MAX_WINDOW_MS, signing_string, verify_signature

        if not api_key or not signature or not timestamp:
            missing = (
                "X-API-Key" if not api_key else "X-Signature" if not signature else "X-Timestamp"
            )
            return _error(401, "INVALID_CLIENT_REQUEST", f"Missing {missing} header")
        if api_key not in self.api_keys:
            return _error(401, "UNAUTHORIZED", "Invalid API key")
        if not timestamp.isdigit():
            return _error(400, "INVALID_CLIENT_REQUEST", "Invalid X-Timestamp header")
        window_text = window if window is not None else "5000"
        if not window_text.isdigit() or not 0 < int(window_text) <= MAX_WINDOW_MS:
            return _error(400, "INVALID_CLIENT_REQUEST", "Invalid X-Window header")
        ts, win = int(timestamp), int(window_text)
        now = self._now_ms()
        if ts + win < now or ts > now + win:
            return _error(401, "INVALID_CLIENT_REQUEST", "Request has expired")
        text = signing_string(instruction, params, ts, win)
        if verify_signature(api_key, text, signature):
            return None
        # ccxt signs the url-encoded parameter text (docs/ccxt.md §6); the same values either way.
        if isinstance(params, Mapping) and params:
            encoded = {k: _enc(v) for k, v in params.items()}
            alt = signing_string(instruction, encoded, ts, win)
            if alt != text and verify_signature(api_key, alt, signature):
                return None
        return _error(401, "INVALID_CLIENT_REQUEST", "Invalid signature")

    # ------------------------------------------------------------------ REST
    def handle(
        self,
        method: str,
        path: str,
        query: Mapping[str, Sequence[str]],
        body: bytes,
        headers: Mapping[str, str],
    ) -> Reply | None:
        """Answer a private route, or ``None`` when ``(method, path)`` is not one."""
        instruction = INSTRUCTIONS.get((method.upper(), path))
        if instruction is None:
            return None
        params: dict[str, Any] = {k: v[0] for k, v in query.items() if v}
        if body.strip():
            try:
                decoded = json.loads(body, parse_float=Decimal)
            except ValueError:
                return _error(400, "INVALID_CLIENT_REQUEST", "Invalid JSON body")
            if not isinstance(decoded, dict):
                return _error(400, "INVALID_CLIENT_REQUEST", "Expected a JSON object")
            params.update(decoded)
        low = {k.lower(): v for k, v in headers.items()}
        failure = self.verify(
            instruction,
            params,
            low.get("x-api-key"),
            low.get("x-signature"),
            low.get("x-timestamp"),
            low.get("x-window"),
        )
        if failure is not None:
            return failure
        try:
            return self._route(instruction, params)
        except OrderRejected as exc:
            return exc.reply

    def _route(self, instruction: str, params: dict[str, Any]) -> Reply:
        if instruction == "balanceQuery":
            body = {
                a: {"available": _text(b.available), "locked": _text(b.locked), "staked": "0"}
                for a, b in sorted(self._balances.items())
            }
            return 200, body
        if instruction == "positionQuery":
            symbol = params.get("symbol")
            return 200, [
                self._position_json(p)
                for p in self.positions().values()
                if symbol is None or p.symbol == symbol
            ]
        if instruction == "orderExecute":
            return 200, self.execute(params).rest_json()
        if instruction == "orderCancel":
            return 200, self.cancel(self._find_order(params, open_only=True)).rest_json()
        if instruction == "orderCancelAll":
            symbol = self._market(params).spec.symbol
            cancelled = [self.cancel(o) for o in self.open_orders() if o.symbol == symbol]
            return 200, [o.rest_json() for o in cancelled]
        if instruction == "orderQuery":
            return 200, self._find_order(params, open_only=False).rest_json()
        if instruction == "orderQueryAll":
            symbol = params.get("symbol")
            orders = [o for o in self.open_orders() if symbol is None or o.symbol == symbol]
            return 200, [o.rest_json() for o in orders]
        if instruction == "orderHistoryQueryAll":
            return 200, self._order_history(params)
        return 200, self._fill_history(params)

    def _market(self, params: Mapping[str, Any]) -> MarketModel:
        symbol = params.get("symbol")
        if not isinstance(symbol, str) or not symbol:
            raise _reject(400, "INVALID_CLIENT_REQUEST", "failed to parse parameter `symbol`")
        model = self.host.models.get(symbol)
        if model is None:
            raise _reject(400, "INVALID_SYMBOL", "Invalid symbol")
        return model

    def _find_order(self, params: Mapping[str, Any], *, open_only: bool) -> SimOrder:
        symbol = self._market(params).spec.symbol
        order_id = params.get("orderId")
        client_id = params.get("clientId")
        for order in self.orders.values():
            if order.symbol != symbol or (open_only and not order.open):
                continue
            if order_id is not None and order.id == str(order_id):
                return order
            if (
                order_id is None
                and client_id is not None
                and str(order.client_id) == str(client_id)
            ):
                return order
        raise _reject(404, "RESOURCE_NOT_FOUND", "Order not found")

    @staticmethod
    def _page(items: list[Any], params: Mapping[str, Any]) -> list[Any]:
        limit = _int(params, "limit", 100)
        offset = _int(params, "offset", 0)
        if not 1 <= limit <= 1000:
            raise _reject(400, "INVALID_CLIENT_REQUEST", "Limit must be between 1 and 1000")
        return items[offset : offset + limit]

    def _order_history(self, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        symbol = params.get("symbol")
        order_id = params.get("orderId")
        chosen = [
            o
            for o in reversed(self.orders.values())
            if (symbol is None or o.symbol == symbol)
            and (order_id is None or o.id == str(order_id))
        ]
        return [o.rest_json(iso_time=True) for o in self._page(chosen, params)]

    def _fill_history(self, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        symbol = params.get("symbol")
        order_id = params.get("orderId")
        start = _int(params, "from", 0)
        end = _int(params, "to", 2**63 - 1)
        chosen = [
            f
            for f in self.fills
            if (symbol is None or f.symbol == symbol)
            and (order_id is None or f.order_id == str(order_id))
            and start <= f.engine_time_us // 1000 <= end
        ]
        if params.get("sortDirection", "Desc") != "Asc":
            chosen.reverse()
        return [f.rest_json() for f in self._page(chosen, params)]

    # ------------------------------------------------------------------ orders
    def execute(self, params: Mapping[str, Any]) -> SimOrder:
        """Place an order (``POST /api/v1/order`` parameters); refusals raise ``OrderRejected``."""
        model = self._market(params)
        spec = model.spec
        side = params.get("side")
        if side not in ("Bid", "Ask"):
            raise _reject(400, "INVALID_CLIENT_REQUEST", "failed to parse parameter `side`")
        order_type = params.get("orderType")
        if order_type not in ("Limit", "Market"):
            raise _reject(400, "INVALID_CLIENT_REQUEST", "failed to parse parameter `orderType`")
        quantity = _decimal(params, "quantity")
        quote_quantity = _decimal(params, "quoteQuantity")
        price = _decimal(params, "price")
        post_only = params.get("postOnly") in (True, "true")
        tif = str(params.get("timeInForce") or ("IOC" if order_type == "Market" else "GTC"))
        if tif not in ("GTC", "IOC", "FOK"):
            raise _reject(400, "INVALID_CLIENT_REQUEST", "failed to parse parameter `timeInForce`")
        if order_type == "Limit":
            if price is None or quantity is None:
                raise _reject(400, "INVALID_ORDER", "Limit orders need price and quantity")
            _check_multiple(price, spec.tick_size, "INVALID_PRICE", "Price")
        elif quantity is None and quote_quantity is None:
            raise _reject(400, "INVALID_ORDER", "Market orders need quantity or quoteQuantity")
        if post_only and (order_type != "Limit" or tif != "GTC"):
            raise _reject(400, "INVALID_ORDER", "Post only orders must be GTC limit orders")
        if quantity is not None:
            _check_multiple(quantity, spec.step_size, "INVALID_QUANTITY", "Quantity")
            if quantity < spec.min_quantity:
                raise _reject(400, "INVALID_QUANTITY", "Quantity is below the minimum")
        is_bid = side == "Bid"
        if post_only and price is not None and self._crosses(model, is_bid, price):
            raise _reject(400, "INVALID_ORDER", "Order would immediately match and take")
        perp = spec.market_type == "PERP"
        if not perp and order_type == "Limit" and price is not None and quantity is not None:
            need_asset, need = (spec.quote, price * quantity) if is_bid else (spec.base, quantity)
            if self._balance(need_asset).available < need:
                raise _reject(400, "INSUFFICIENT_FUNDS", "Insufficient funds")
        client_id = params.get("clientId")
        now = self.host.now_us()
        self._next_order_id += 1
        order = SimOrder(
            id=str(self._next_order_id),
            symbol=spec.symbol,
            side=side,
            order_type=order_type,
            time_in_force=tif,
            quantity=quantity,
            quote_quantity=quote_quantity,
            price=price,
            post_only=post_only,
            reduce_only=params.get("reduceOnly") in (True, "true") if perp else None,
            client_id=int(client_id) if client_id is not None else None,
            created_us=now,
        )
        self.orders[order.id] = order
        self._order_event("orderAccepted", order, now)
        if tif == "FOK" and not self._fillable(model, order):
            self._expire(order, now, "FillOrKill")
            return order
        self._take(model, order, now)
        if not order.open:
            return order
        if order_type == "Market" or tif in ("IOC", "FOK"):
            self._expire(order, now, order.expiry_reason or "ImmediateOrCancel")
        elif order.expiry_reason is not None:
            self._expire(order, now, order.expiry_reason)
        else:
            self._rest(model, order, now)
        return order

    def cancel(self, order: SimOrder) -> SimOrder:
        """Cancel an open order (its book share leaves the public book)."""
        now = self.host.now_us()
        self._unrest(order, now)
        order.status = "Cancelled"
        self._order_event("orderCancelled", order, now)
        return order

    def _expire(self, order: SimOrder, now: int, reason: str) -> None:
        order.status = "Expired"
        order.expiry_reason = reason
        self._order_event("orderExpired", order, now)

    def _crosses(self, model: MarketModel, is_bid: bool, price: Decimal) -> bool:
        ticks = int(price / model.spec.tick_size)
        if is_bid:
            return bool(model._ask_prices) and ticks >= model.best_ask()
        return bool(model._bid_prices) and ticks <= model.best_bid()

    def _fillable(self, model: MarketModel, order: SimOrder) -> bool:
        step = model.spec.step_size
        need = int(order.remaining / step)
        is_bid = order.side == "Bid"
        prices = model._ask_prices if is_bid else list(reversed(model._bid_prices))
        book = model.asks if is_bid else model.bids
        limit = None if order.price is None else int(order.price / model.spec.tick_size)
        got = 0
        for price in prices[: max(0, len(prices) - 2)]:
            if limit is not None and (price > limit if is_bid else price < limit):
                break
            got += book[price] - self._own_steps(model.spec.symbol, not is_bid, price)
            if got >= need:
                return True
        return False

    def _own_steps(self, symbol: str, is_bid: bool, price: int) -> int:
        return sum(o.resting_steps for o in self._resting.get((symbol, is_bid, price), ()))

    def _take(self, model: MarketModel, order: SimOrder, now: int) -> None:
        spec = model.spec
        tick, step = spec.tick_size, spec.step_size
        is_bid = order.side == "Bid"
        limit = None if order.price is None else int(order.price / tick)
        changes: list[tuple[bool, int, int]] = []
        trades: list[SimTrade] = []
        event_us = now + 200
        taker = model._order_id = model._order_id + 1
        while order.open:
            prices = model._ask_prices if is_bid else model._bid_prices
            # The model needs a few levels per side to keep generating; never sweep it empty.
            if len(prices) <= 2:
                break
            price = prices[0] if is_bid else prices[-1]
            if limit is not None and (price > limit if is_bid else price < limit):
                break
            if self._resting.get((spec.symbol, not is_bid, price)):
                order.expiry_reason = "SelfTradePrevention"
                break
            book = model.asks if is_bid else model.bids
            level = book[price]
            want = self._want_steps(order, price * tick, step)
            qty = min(level, want, self._affordable_steps(model, order, price * tick))
            if qty <= 0:
                break
            model._set(not is_bid, price, level - qty)
            changes.append((not is_bid, price, level - qty))
            trade = model._record_trade(price, qty, is_bid, taker, now, event_us)
            trades.append(trade)
            self._own_trade_ids.add(trade.id)
            self._fill(order, trade.id, trade.price, trade.quantity, False, now)
            if qty < want and qty < level:
                # Out of funds: the rest of the order cannot be paid for.
                break
        if changes:
            self._publish_update(model, changes, trades, now, event_us)

    @staticmethod
    def _want_steps(order: SimOrder, price: Decimal, step: Decimal) -> int:
        if order.quantity is None and order.quote_quantity is not None:
            left = order.quote_quantity - order.executed_quote_quantity
            return int(left / price / step)
        return int(order.remaining / step)

    def _affordable_steps(self, model: MarketModel, order: SimOrder, price: Decimal) -> int:
        spec = model.spec
        if spec.market_type == "PERP":
            return 2**62
        if order.side == "Bid":
            return int(self._balance(spec.quote).available / price / spec.step_size)
        return int(self._balance(spec.base).available / spec.step_size)

    def _publish_update(
        self,
        model: MarketModel,
        changes: list[tuple[bool, int, int]],
        trades: list[SimTrade],
        engine_us: int,
        event_us: int,
    ) -> None:
        # One update id, like one of the model's own updates (docs: sim/market.py).
        first = model.last_update_id + 1
        model.last_update_id = first
        model._log_update(changes)
        merged = {(b, p): s for b, p, s in changes}
        touch = model._touch()
        touch_changed = touch != model._last_touch
        model._last_touch = touch
        msg = DepthMessage(
            symbol=model.spec.symbol,
            first_id=first,
            last_id=first,
            bids=[model._level(p, s) for (b, p), s in sorted(merged.items()) if b],
            asks=[model._level(p, s) for (b, p), s in sorted(merged.items()) if not b],
            engine_time_us=engine_us,
            event_time_us=event_us,
            trades=trades,
            touch_changed=touch_changed,
        )
        self.host.publish_market(msg)

    def _rest(self, model: MarketModel, order: SimOrder, now: int) -> None:
        spec = model.spec
        is_bid = order.side == "Bid"
        assert order.price is not None
        ticks = int(order.price / spec.tick_size)
        steps = int(order.remaining / spec.step_size)
        if spec.market_type != "PERP":
            asset, amount = (
                (spec.quote, order.price * order.remaining)
                if is_bid
                else (
                    spec.base,
                    order.remaining,
                )
            )
            self._move_to_locked(asset, amount)
            order.locked = amount
        book = model.bids if is_bid else model.asks
        level = book.get(ticks, 0) + steps
        model._set(is_bid, ticks, level)
        order.resting_steps = steps
        self._resting.setdefault((spec.symbol, is_bid, ticks), []).append(order)
        self._publish_update(model, [(is_bid, ticks, level)], [], now, now + 200)

    def _unrest(self, order: SimOrder, now: int) -> None:
        model = self.host.models[order.symbol]
        spec = model.spec
        is_bid = order.side == "Bid"
        if order.locked:
            asset = spec.quote if is_bid else spec.base
            balance = self._balance(asset)
            balance.locked -= order.locked
            balance.available += order.locked
            order.locked = _ZERO
        if order.price is None:
            return
        ticks = int(order.price / spec.tick_size)
        queue = self._resting.get((spec.symbol, is_bid, ticks))
        if queue and order in queue:
            queue.remove(order)
            if not queue:
                del self._resting[(spec.symbol, is_bid, ticks)]
        if order.resting_steps:
            book = model.bids if is_bid else model.asks
            level = book.get(ticks, 0)
            left = max(0, level - order.resting_steps)
            order.resting_steps = 0
            if left != level:
                model._set(is_bid, ticks, left)
                self._publish_update(model, [(is_bid, ticks, left)], [], now, now + 200)

    def on_market_message(self, msg: DepthMessage) -> None:
        """The model's own trades fill resting orders at the level they take (user share first)."""
        if not self._resting:
            return
        for trade in msg.trades:
            if trade.id in self._own_trade_ids:
                self._own_trade_ids.discard(trade.id)
                continue
            model = self.host.models[trade.symbol]
            ticks = int(trade.price / model.spec.tick_size)
            maker_is_bid = trade.is_buyer_maker
            queue = self._resting.get((trade.symbol, maker_is_bid, ticks))
            if not queue:
                continue
            # One trade id is one maker fill: the oldest resting order takes its share, any rest
            # of the print was someone else's liquidity (later prints reach the next order).
            order = queue[0]
            qty = min(trade.quantity, order.remaining)
            order.resting_steps = max(0, order.resting_steps - int(qty / model.spec.step_size))
            self._fill(order, trade.id, trade.price, qty, True, msg.engine_time_us)
            if not order.open:
                queue.pop(0)
            if not queue:
                del self._resting[(trade.symbol, maker_is_bid, ticks)]

    # ------------------------------------------------------------------ accounting
    def _balance(self, asset: str) -> _Balance:
        return self._balances.setdefault(asset, _Balance())

    def _move_to_locked(self, asset: str, amount: Decimal) -> None:
        balance = self._balance(asset)
        balance.available -= amount
        balance.locked += amount

    def _fill(
        self,
        order: SimOrder,
        trade_id: int,
        price: Decimal,
        qty: Decimal,
        is_maker: bool,
        now: int,
    ) -> None:
        spec = self.host.models[order.symbol].spec
        is_bid = order.side == "Bid"
        quote = price * qty
        rate = MAKER_FEE if is_maker else TAKER_FEE
        perp = spec.market_type == "PERP"
        position_kind = ""
        if perp:
            fee, fee_symbol = quote * rate, spec.quote
            position_kind = self._apply_position(spec.symbol, price, qty if is_bid else -qty)
            self._balance(spec.quote).available -= fee
        elif is_bid:
            fee, fee_symbol = qty * rate, spec.base
            self._spend(order, spec.quote, quote, price * qty)
            self._balance(spec.base).available += qty - fee
        else:
            fee, fee_symbol = quote * rate, spec.quote
            self._spend(order, spec.base, qty, qty)
            self._balance(spec.quote).available += quote - fee
        order.executed_quantity += qty
        order.executed_quote_quantity += quote
        done = order.quantity is not None and order.executed_quantity >= order.quantity
        if order.quantity is None and order.quote_quantity is not None:
            done = order.executed_quote_quantity >= order.quote_quantity
        order.status = "Filled" if done else "PartiallyFilled"
        if done and order.locked:
            # Whatever a filled order still locks (rounding of its quote lock) goes back.
            self._balance(spec.quote if is_bid else spec.base).available += order.locked
            self._balance(spec.quote if is_bid else spec.base).locked -= order.locked
            order.locked = _ZERO
        fill = SimFill(
            trade_id=trade_id,
            order_id=order.id,
            symbol=order.symbol,
            side=order.side,
            price=price,
            quantity=qty,
            fee=fee,
            fee_symbol=fee_symbol,
            is_maker=is_maker,
            engine_time_us=now,
            client_id=order.client_id,
        )
        self.fills.append(fill)
        self._order_event("orderFill", order, now, fill)
        if position_kind:
            self._position_event(spec.symbol, position_kind, now)

    def _spend(self, order: SimOrder, asset: str, amount: Decimal, locked_part: Decimal) -> None:
        balance = self._balance(asset)
        from_locked = min(order.locked, locked_part)
        balance.locked -= from_locked
        order.locked -= from_locked
        balance.available -= amount - from_locked

    def _apply_position(self, symbol: str, price: Decimal, signed_qty: Decimal) -> str:
        """Apply one perp fill; returns the position event it causes."""
        position = self._positions.get(symbol)
        if position is None:
            self._next_position_id += 1
            position = self._positions[symbol] = SimPosition(symbol, self._next_position_id)
        old = position.net_quantity
        new = old + signed_qty
        if old == 0 or (old > 0) == (signed_qty > 0):
            total = abs(old) + abs(signed_qty)
            position.entry_price = (
                position.entry_price * abs(old) + price * abs(signed_qty)
            ) / total
        else:
            closed = min(abs(old), abs(signed_qty))
            direction = 1 if old > 0 else -1
            pnl = (price - position.entry_price) * closed * direction
            position.realized_pnl += pnl
            self._balance(self.host.models[symbol].spec.quote).available += pnl
            if new == 0:
                position.entry_price = _ZERO
            elif (new > 0) != (old > 0):
                position.entry_price = price
        position.net_quantity = new
        if new == 0:
            return "positionClosed"
        return "positionOpened" if old == 0 else "positionAdjusted"

    def _mark(self, symbol: str) -> Decimal:
        model = self.host.models[symbol]
        mid = (model.best_bid() + model.best_ask()) * model.spec.tick_size / 2
        return mid

    def _position_fields(self, position: SimPosition) -> dict[str, str]:
        mark = self._mark(position.symbol)
        q = position.net_quantity
        unrealized = (mark - position.entry_price) * q if q else _ZERO
        return {
            "entry": _text(position.entry_price),
            "mark": _text(mark),
            "q": _text(q),
            "notional": _text(mark * q),
            "realized": _text(position.realized_pnl),
            "unrealized": _text(unrealized),
        }

    def _position_json(self, position: SimPosition) -> dict[str, Any]:
        f = self._position_fields(position)
        return {
            "breakEvenPrice": f["entry"],
            "cumulativeFundingPayment": "0",
            "cumulativeInterest": "0",
            "entryPrice": f["entry"],
            "estLiquidationPrice": "0",
            "imf": _IMF,
            "imfFunction": {"base": _IMF, "factor": "0.0000935", "type": "sqrt"},
            "markPrice": f["mark"],
            "mmf": _MMF,
            "mmfFunction": {"base": _MMF, "factor": "0.0000561", "type": "sqrt"},
            "netCost": _text(position.entry_price * position.net_quantity),
            "netExposureNotional": f["notional"],
            "netExposureQuantity": f["q"],
            "netQuantity": f["q"],
            "pnlRealized": f["realized"],
            "pnlUnrealized": f["unrealized"],
            "positionId": str(position.position_id),
            "subaccountId": None,
            "symbol": position.symbol,
            "userId": 1,
        }

    def _position_data(self, position: SimPosition, now: int | None) -> dict[str, Any]:
        f = self._position_fields(position)
        data: dict[str, Any] = {
            "B": f["entry"], "M": f["mark"], "P": f["unrealized"], "Q": f["q"],
            "b": f["entry"], "f": _IMF, "i": position.position_id, "l": "0", "m": _MMF,
            "n": f["notional"], "p": f["realized"], "q": f["q"], "s": position.symbol,
        }  # fmt: skip
        if now is not None:
            data["E"] = str(now + 100)
            data["T"] = str(now)
        return data

    # ------------------------------------------------------------------ private events
    def _order_event(
        self, kind: str, order: SimOrder, now: int, fill: SimFill | None = None
    ) -> None:
        data: dict[str, Any] = {
            "E": str(now + 100),
            "O": "USER",
            "S": order.side,
            "T": str(now),
            "V": "RejectTaker",
            "X": order.status,
            "Z": _text(order.executed_quote_quantity),
            "e": kind,
            "f": order.time_in_force,
            "i": order.id,
            "o": order.order_type.upper(),
            "r": bool(order.reduce_only),
            "s": order.symbol,
            "t": fill.trade_id if fill is not None else None,
            "y": order.post_only,
            "z": _text(order.executed_quantity),
        }
        if order.quantity is not None:
            data["q"] = _text(order.quantity)
        if order.quote_quantity is not None:
            data["Q"] = _text(order.quote_quantity)
        if order.price is not None:
            data["p"] = _text(order.price)
        if order.client_id is not None:
            data["c"] = order.client_id
        if order.expiry_reason is not None and kind == "orderExpired":
            data["R"] = order.expiry_reason
        if fill is not None:
            data.update(
                {
                    "L": _text(fill.price),
                    "N": fill.fee_symbol,
                    "l": _text(fill.quantity),
                    "m": fill.is_maker,
                    "n": _text(fill.fee),
                }
            )
        self._publish("account.orderUpdate", order.symbol, data)

    def _position_event(self, symbol: str, kind: str, now: int) -> None:
        data = self._position_data(self._positions[symbol], now)
        data["e"] = kind
        self._publish("account.positionUpdate", symbol, data)

    def _publish(self, base: str, symbol: str, data: dict[str, Any]) -> None:
        if self.faults.drop_next > 0:
            self.faults.drop_next -= 1
            self.faults.dropped += 1
            return
        for stream in (base, f"{base}.{symbol}"):
            frame = json.dumps({"data": data, "stream": stream}, separators=(",", ":"))
            self.frames_published += 1
            self.host.publish_private(stream, frame)

    def snapshot_frames(self, stream: str) -> list[str]:
        """Frames sent right after a ``account.positionUpdate[.<sym>]`` subscription."""
        if not stream.startswith("account.positionUpdate"):
            return []
        symbol = stream.split(".", 2)[2] if stream.count(".") >= 2 else None
        out = []
        for position in self.positions().values():
            if symbol is None or position.symbol == symbol:
                data = self._position_data(position, self.host.now_us())
                out.append(json.dumps({"data": data, "stream": stream}, separators=(",", ":")))
        return out

    def valid_stream(self, stream: str) -> bool:
        """Whether ``stream`` names a private stream of this exchange."""
        base, _, symbol = stream.partition(".")
        kind, _, symbol = symbol.partition(".")
        full = f"{base}.{kind}"
        return full in PRIVATE_STREAMS and (not symbol or symbol in self.host.models)


def _enc(value: object) -> str:
    text = "true" if value is True else "false" if value is False else str(value)
    return urlencode({"": text})[1:]


def _int(params: Mapping[str, Any], name: str, default: int) -> int:
    value = params.get(name)
    if value is None:
        return default
    try:
        return int(str(value))
    except ValueError:
        raise _reject(
            400, "INVALID_CLIENT_REQUEST", f"failed to parse parameter `{name}`"
        ) from None


def _decimal(params: Mapping[str, Any], name: str) -> Decimal | None:
    value = params.get(name)
    if value is None:
        return None
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        raise _reject(
            400, "INVALID_CLIENT_REQUEST", f"failed to parse parameter `{name}`"
        ) from None
    if not number.is_finite() or number <= 0:
        raise _reject(400, "INVALID_CLIENT_REQUEST", f"`{name}` must be positive")
    return number


def _check_multiple(value: Decimal, unit: Decimal, code: str, what: str) -> None:
    if value % unit != 0:
        raise _reject(400, code, f"{what} decimal too long")


def private_streams(streams: Iterable[str]) -> list[str]:
    """The ``account.*`` names among ``streams``."""
    return [s for s in streams if s.startswith("account.")]


def sim_api_keys(api_key: str | None, api_secret: str | None) -> tuple[tuple[str, ...], list[str]]:
    """The keys ``sim --api-key/--api-secret`` accepts and the lines to print about them.

    Without both a key pair is generated; its public key and secret are printed once, because
    the person starting a local simulator needs the secret to sign with.
    """
    from backpack_actors.auth import AuthError, Signer, generate_keypair

    if api_key is None and api_secret is None:
        public, secret = generate_keypair()
        return (public,), [
            f"api key (generated): {public}",
            f"api secret (generated, for this simulator only): {secret.reveal()}",
        ]
    if api_key is None or api_secret is None:
        raise ValueError("--api-key and --api-secret go together (or give neither)")
    try:
        signer = Signer(api_key, api_secret)
    except AuthError as exc:
        raise ValueError(str(exc)) from None
    return (signer.api_key,), [f"api key: {signer.api_key}"]


@dataclass(frozen=True, slots=True)
class PrivateFaultSpec:
    """A private-stream fault for ``sim --fault``: ``private_drop[:count=N]`` or
    ``private_disconnect``, armed ``at`` seconds after start (``@SECONDS``)."""

    kind: str
    count: int = 1
    at: float = 0.0

    async def arm(self, engine: OrderEngine) -> None:
        """Wait ``at`` seconds of trio time, then inject the fault into ``engine``."""
        import trio

        await trio.sleep(self.at)
        if self.kind == "private_drop":
            engine.drop_updates(self.count)
        else:
            engine.disconnect_private()


def parse_private_fault(text: str) -> PrivateFaultSpec:
    """Parse ``private_drop[:count=N][@SECONDS]`` or ``private_disconnect[@SECONDS]``."""
    body, _, at_text = text.partition("@")
    kind, _, options = body.partition(":")
    if kind not in ("private_drop", "private_disconnect"):
        raise ValueError(f"unknown private fault {kind!r}: private_drop or private_disconnect")
    count = 1
    for item in filter(None, options.split(",")):
        key, _, value = item.partition("=")
        if key != "count" or kind != "private_drop" or not value.isdigit() or int(value) < 1:
            raise ValueError(f"{kind}: bad option {item!r} (private_drop takes count=N)")
        count = int(value)
    try:
        at = float(at_text) if at_text else 0.0
    except ValueError:
        raise ValueError(f"{kind}: bad time {at_text!r} after @") from None
    if not 0 <= at < float("inf"):
        raise ValueError(f"{kind}: the time after @ must be >= 0")
    return PrivateFaultSpec(kind, count, at)
