"""The simulated exchange: market generation on trio time, REST handlers, WS sessions, fan-out.

Transport-independent: ``server.py`` adapts it to hypercorn (ASGI http + websocket on one port);
``connect_memory_ws`` wires a trio-websocket client to the same session logic in memory, and
``handle_http`` is the REST entry point, so both work under ``MockClock``.

Consistency rule: generating a message and queueing its frames to every subscriber happen in one
synchronous step (no checkpoint in between), and REST reads the book synchronously, so a REST
``lastUpdateId`` always falls between emitted messages and every frame with ``u <= lastUpdateId`` is
already queued, in order (unless a stall/reorder fault is holding it on purpose).

REST error choices (the real ones are undocumented, docs/protocol.md §6): unknown symbol → 400
``INVALID_SYMBOL`` (ccxt: BadSymbol); missing/unparsable parameter → 400 ``INVALID_CLIENT_REQUEST``
with the framework-style ``failed to parse parameter ...`` message; unknown path → 404
``RESOURCE_NOT_FOUND``; non-GET → 405; rate limit / injected 429 → 429 ``TOO_MANY_REQUESTS`` with
``Retry-After``; injected 451 and 5xx → plain-text bodies (like a CDN/load balancer; ccxt maps
them by status to ExchangeNotAvailable / NetworkError).
"""

from __future__ import annotations

import math
import time
from collections import Counter, deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Protocol, cast
from urllib.parse import parse_qs

import msgspec
import trio
import trio.testing
import trio_websocket

from backpack_actors.sim.derived import (
    DerivedStreams,
    derived_stream_names,
    kline_bucket,
    mark_price_fields,
)
from backpack_actors.sim.faults import Faults
from backpack_actors.sim.market import (
    DEFAULT_MARKETS,
    BookLevels,
    DepthMessage,
    MarketModel,
    MarketSpec,
    ModelParams,
    SimTrade,
    format_stripped,
)
from backpack_actors.sim.orders import OrderEngine

__all__ = ["EPOCH_BASE_US", "HttpResponse", "SimConfig", "SimExchange"]

EPOCH_BASE_US = 1_767_225_600_000_000
"""2026-01-01T00:00:00Z in µs: the default start of an in-process exchange's clock."""

DEPTH_WINDOWS = {"200ms": 0.2, "600ms": 0.6, "1000ms": 1.0}
DEPTH_LIMITS = (5, 10, 20, 50, 100, 500, 1000)
KLINE_INTERVALS = {
    "1s": 1, "1m": 60, "3m": 180, "5m": 300, "15m": 900, "30m": 1800, "1h": 3600,
    "2h": 7200, "4h": 14400, "6h": 21600, "8h": 28800, "12h": 43200, "1d": 86400,
    "3d": 259200, "1w": 604800, "1month": 2592000,
}  # fmt: skip
HISTORY_ROUTES = frozenset({"/api/v1/trades/history", "/api/v1/klines"})
HTTP_LOG_SIZE = 10_000
"""REST requests ``SimExchange.http_log`` keeps (the newest)."""
INVALID_STREAM = {"code": 4006, "message": "Invalid stream"}
_encode = msgspec.json.Encoder(order="sorted").encode


@dataclass(frozen=True, slots=True)
class SimConfig:
    """Simulator settings (every field is also an ``open_simulator`` keyword)."""

    rate: float = 20.0
    """Depth messages per second per market."""
    tick_interval: float = 0.05
    """Generation batch period (seconds of trio time)."""
    autostart: bool = True
    """Generate on trio time from the start; ``pause()``/``resume()`` toggle it."""
    ping_interval: float = 60.0
    pong_timeout: float = 120.0
    client_queue_size: int = 10_000
    """Frames queued per WS client before it is dropped as too slow."""
    rate_limit: bool = False
    rate_limit_per_minute: int = 2000
    history_rate_limit_per_minute: int = 30
    ticker_interval: float = 1.0
    kline_calendar: bool = False
    """``1w`` candles from Monday and ``1month`` ones from the 1st, 00:00 UTC (stream and REST),
    instead of multiples of the interval since the Unix epoch (Backpack's alignment of them is
    not documented; docs/channels.md)."""
    aggregated_keeps_chain: bool = True
    """Whether ``depth.<window>.*`` frames keep the U/u chain (U = the window's first id); False
    sends U = u = the window's last id, so merged windows skip ids (the case the docs leave
    open, docs/protocol.md §4.3)."""
    depth_cap: int = 1000
    """Levels per side a ``/depth`` answer holds at most (Backpack: 1000). Below ``levels`` it
    truncates snapshots, so a book is known only inside their range (the valid window)."""
    levels: int = 300
    trade_probability: float = 0.12
    empty_probability: float = 0.03
    merge_probability: float = 0.05
    checkpoint_interval: int = 1000
    max_history: int = 500_000
    api_keys: tuple[str, ...] = ()
    """Base64 public keys the account accepts (``sim --api-key``); none = every private request
    is refused as an unknown key."""
    epoch_us: int | None = EPOCH_BASE_US
    """Exchange time at start, µs; None = the wall clock when the exchange is built. In-process
    exchanges (virtual time) keep a fixed start so their frames are reproducible;
    ``open_simulator`` (real sockets: the ``sim`` and ``demo`` commands) starts at the wall clock,
    so receipt − ``T`` is a real lag."""

    def model_params(self) -> ModelParams:
        """The market-model part of the config."""
        return ModelParams(
            levels=self.levels,
            trade_probability=self.trade_probability,
            empty_probability=self.empty_probability,
            merge_probability=self.merge_probability,
            checkpoint_interval=self.checkpoint_interval,
            max_history=self.max_history,
        )


@dataclass(frozen=True, slots=True)
class HttpResponse:
    """A REST response: status, headers (lower-case names), body bytes."""

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        """The body decoded as JSON."""
        return msgspec.json.decode(self.body)

    @property
    def text(self) -> str:
        """The body as text."""
        return self.body.decode()


def _json_response(
    status: int, payload: Any, headers: Mapping[str, str] | None = None
) -> HttpResponse:
    hdrs = {"content-type": "application/json; charset=utf-8", **(headers or {})}
    return HttpResponse(status, hdrs, _encode(payload))


def _text_response(status: int, text: str) -> HttpResponse:
    return HttpResponse(status, {"content-type": "text/plain; charset=utf-8"}, text.encode())


def _error(
    status: int, code: str, message: str, headers: Mapping[str, str] | None = None
) -> HttpResponse:
    return _json_response(status, {"code": code, "message": message}, headers)


class _ParamError(Exception):
    def __init__(self, response: HttpResponse) -> None:
        super().__init__(response.status)
        self.response = response


def _parse_error(name: str, type_name: str, reason: str) -> _ParamError:
    msg = f'failed to parse parameter `{name}`: failed to parse "{type_name}": {reason}'
    return _ParamError(_error(400, "INVALID_CLIENT_REQUEST", msg))


class WsTransport(Protocol):
    """What a WS session needs from its connection (trio-websocket or ASGI)."""

    async def receive(self) -> str | bytes | None: ...

    async def send(self, text: str) -> None: ...

    async def close(self, code: int, reason: str) -> None: ...

    async def keepalive(self) -> None: ...


class _TrioWsTransport:
    """trio-websocket server connection: real protocol pings, silent clients dropped."""

    def __init__(self, conn: trio_websocket.WebSocketConnection, interval: float, timeout: float):
        self._conn = conn
        self._interval = interval
        self._timeout = timeout

    async def receive(self) -> str | bytes | None:
        try:
            message: str | bytes = await self._conn.get_message()
        except trio_websocket.ConnectionClosed:
            return None
        return message

    async def send(self, text: str) -> None:
        await self._conn.send_message(text)

    async def close(self, code: int, reason: str) -> None:
        await self._conn.aclose(code, reason)

    async def keepalive(self) -> None:
        while True:
            await trio.sleep(self._interval)
            with trio.move_on_after(self._timeout):
                await self._conn.ping()
                continue
            return


class _Session:
    """One WS client: subscriptions, a bounded outgoing queue, fault budgets."""

    def __init__(self, exchange: SimExchange, queue_size: int) -> None:
        self.exchange = exchange
        self.streams: set[str] = set()
        self._send, self._recv = trio.open_memory_channel[str](queue_size)
        self._scope = trio.CancelScope()
        self.close_reason: tuple[int, str] | None = None
        self.frames_sent = 0
        self._disconnect_epoch = 0
        self._disconnect_left: int | None = None

    def offer(self, frame: str) -> None:
        """Queue a frame without blocking; a client whose queue is full is dropped."""
        if self.close_reason is not None:
            return
        try:
            self._send.send_nowait(frame)
        except trio.WouldBlock:
            self.exchange.stats["slow_clients_dropped"] += 1
            self.kill(1008, "client too slow")

    def kill(self, code: int, reason: str) -> None:
        """Stop the session; ``run`` closes the connection with ``code``."""
        if self.close_reason is None:
            self.close_reason = (code, reason)
        self._scope.cancel()

    async def run(self, transport: WsTransport) -> None:
        """Serve the connection until the client leaves or the exchange drops it."""
        self.exchange._sessions.add(self)
        try:
            with self._scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._reader, transport, nursery.cancel_scope)
                    nursery.start_soon(self._writer, transport)
                    nursery.start_soon(self._keepalive, transport)
        finally:
            self.exchange._unsubscribe_all(self)
            self.exchange._sessions.discard(self)
            if self.close_reason is not None:
                with trio.move_on_after(1.0) as cs:
                    cs.shield = True
                    await transport.close(*self.close_reason)

    async def _keepalive(self, transport: WsTransport) -> None:
        await transport.keepalive()
        self.exchange.stats["silent_clients_dropped"] += 1
        self.kill(1008, "pong timeout")

    async def _reader(self, transport: WsTransport, scope: trio.CancelScope) -> None:
        while True:
            message = await transport.receive()
            if message is None:
                scope.cancel()
                return
            self.exchange._handle_ws_request(self, message)

    async def _writer(self, transport: WsTransport) -> None:
        faults = self.exchange.faults
        async for frame in self._recv:
            await transport.send(frame)
            self.frames_sent += 1
            if faults.disconnect_frames is None or faults.disconnect_connections <= 0:
                continue
            if self._disconnect_epoch != faults.disconnect_epoch:
                self._disconnect_epoch = faults.disconnect_epoch
                self._disconnect_left = faults.disconnect_frames
            if self._disconnect_left is not None:
                self._disconnect_left -= 1
                if self._disconnect_left <= 0:
                    self._disconnect_left = None
                    faults.disconnect_connections -= 1
                    faults.injected["disconnect"] += 1
                    self.kill(1011, "injected disconnect")


@dataclass
class _Aggregate:
    first_id: int = 0
    last_id: int = 0
    bids: dict[str, str] = field(default_factory=dict)
    asks: dict[str, str] = field(default_factory=dict)
    engine_us: int = 0
    event_us: int = 0
    deadline: float = 0.0


class SimExchange:
    """Seeded multi-market exchange; see the module docstring for the consistency rule."""

    def __init__(
        self,
        seed: int = 1,
        markets: Sequence[MarketSpec | str] | None = None,
        config: SimConfig | None = None,
    ) -> None:
        self.config = config or SimConfig()
        self.seed = seed
        specs = _resolve_markets(markets)
        params = self.config.model_params()
        self.models: dict[str, MarketModel] = {
            s.symbol: MarketModel(s, seed, params) for s in specs
        }
        self.faults = Faults(now=_trio_now)
        self.stats: dict[str, int] = {
            "slow_clients_dropped": 0,
            "silent_clients_dropped": 0,
            "frames_published": 0,
        }
        self._running = self.config.autostart
        self._sessions: set[_Session] = set()
        self._subs: dict[str, dict[_Session, None]] = {}
        # Frames held by a stall, with the sessions subscribed when each was held: a session that
        # subscribes later must not receive another connection's stale frames.
        self._held: dict[str, list[tuple[str, str, tuple[_Session, ...]]]] = {}
        self._reorder_held: dict[str, str] = {}
        self._aggregates: dict[str, _Aggregate] = {}
        self._rate_windows: dict[tuple[str, bool], deque[float]] = {}
        # Every REST request as received, by public route ("other" for the rest): totals, and
        # the newest requests with their trio time, so a test can see how often a route is asked.
        self.http_calls: Counter[str] = Counter()
        self.http_log: deque[tuple[float, str]] = deque(maxlen=HTTP_LOG_SIZE)
        self._last_gen: float | None = None
        self._carry: dict[str, int] = dict.fromkeys(self.models, 0)
        self._next_ticker = 0.0
        self.derived = DerivedStreams(
            self.models,
            lambda stream: bool(self._subs.get(stream)),
            lambda sym, stream, data: self._emit(sym, stream, _frame(stream, data)),
            calendar=self.config.kline_calendar,
        )
        self._valid_streams = self._build_valid_streams()
        # The account side (sim/orders.py): private REST routes, order engine, private streams.
        self.engine = OrderEngine(self, frozenset(self.config.api_keys))
        self._origin: float | None = None
        epoch = self.config.epoch_us
        self._epoch_us = round(time.time() * 1_000_000) if epoch is None else epoch

    def now_us(self) -> int:
        """Exchange time in µs: ``config.epoch_us`` plus trio time since this exchange started."""
        return self._clock_us(trio.current_time())

    def _clock_us(self, now: float) -> int:
        # Relative to the first reading, so equal seeds give equal frames whatever the clock start.
        if self._origin is None:
            self._origin = now
        return self._epoch_us + round((now - self._origin) * 1_000_000)

    # ------------------------------------------------------------------ ground truth
    def book_at(self, symbol: str, update_id: int) -> BookLevels:
        """Exact book after ``update_id``: ``(bids best-first, asks best-first)``."""
        return self._model(symbol).book_at(update_id)

    def trades(self, symbol: str) -> list[SimTrade]:
        """Every trade the market produced, oldest first."""
        return list(self._model(symbol).trades)

    def last_update_id(self, symbol: str) -> int:
        """Id of the last update applied (what REST reports as ``lastUpdateId``)."""
        return self._model(symbol).last_update_id

    @property
    def symbols(self) -> list[str]:
        """Market ids in listing order."""
        return list(self.models)

    def _model(self, symbol: str) -> MarketModel:
        try:
            return self.models[symbol]
        except KeyError:
            raise KeyError(f"unknown simulated market {symbol!r}") from None

    # ------------------------------------------------------------------ generation
    def pause(self) -> None:
        """Stop generating on trio time (pending stalls are still released)."""
        self._running = False

    def resume(self) -> None:
        """Resume generating (no catch-up burst for the paused time)."""
        self._running = True
        self._last_gen = None

    @property
    def running(self) -> bool:
        """Whether the generator produces messages on trio time."""
        return self._running

    def generate(self, n: int = 1, symbol: str | None = None) -> None:
        """Produce and publish ``n`` messages now for ``symbol`` (or every market)."""
        now_us = self.now_us()
        for sym in [symbol] if symbol else list(self.models):
            model = self._model(sym)
            for _ in range(n):
                self._publish_message(model.next_message(now_us))

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Generator task: batches ``rate × elapsed`` messages per market every tick."""
        self._clock_us(trio.current_time())
        self._last_gen = trio.current_time() if self._running else None
        task_status.started()
        cfg = self.config
        while True:
            await trio.sleep(cfg.tick_interval)
            now = trio.current_time()
            # Held frames first: a stall delays frames, it never reorders them.
            self._release_stalls(now)
            if self._running:
                self._generate_batch(now)
            self._flush_aggregates(now)
            if now >= self._next_ticker:
                self._next_ticker = now + cfg.ticker_interval
                self._publish_tickers()
                self.derived.tick(self.now_us())

    def _generate_batch(self, now: float) -> None:
        last = self._last_gen
        self._last_gen = now
        if last is None:
            return
        t0 = self._clock_us(last)
        span = self._clock_us(now) - t0
        # Integer accounting (milli-messages × µs) so batch sizes never depend on float rounding.
        rate_milli = round(self.config.rate * 1000)
        for sym, model in self.models.items():
            due = self._carry[sym] + rate_milli * span
            n, self._carry[sym] = divmod(due, 1_000_000_000)
            for i in range(n):
                engine_us = t0 + (i + 1) * span // n
                self._publish_message(model.next_message(engine_us))

    # ------------------------------------------------------------------ publishing
    def _publish_message(self, msg: DepthMessage) -> None:
        sym = msg.symbol
        subs = self._subs
        if msg.trades:
            self.engine.on_market_message(msg)
        trade_stream = f"trade.{sym}"
        if msg.trades and subs.get(trade_stream):
            for t in msg.trades:
                data = {
                    "E": t.event_time_us, "T": t.engine_time_us, "a": t.seller_order_id,
                    "b": t.buyer_order_id, "e": "trade", "m": t.is_buyer_maker, "p": t.price_str,
                    "q": t.quantity_str, "s": sym, "t": t.id,
                }  # fmt: skip
                self._emit(sym, trade_stream, _frame(trade_stream, data))
        if msg.trades:
            self.derived.on_trades(sym, msg.trades)
        depth_stream = f"depth.{sym}"
        if subs.get(depth_stream):
            self._emit_depth(sym, depth_stream, _frame(depth_stream, _depth_data(msg)))
        for window in DEPTH_WINDOWS:
            stream = f"depth.{window}.{sym}"
            if subs.get(stream):
                self._aggregate(stream, window, msg)
        book_stream = f"bookTicker.{sym}"
        if msg.touch_changed and subs.get(book_stream):
            b, bq, a, aq = self.models[sym].book_ticker()
            data = {
                "A": aq, "B": bq, "E": msg.event_time_us, "T": msg.engine_time_us, "a": a,
                "b": b, "e": "bookTicker", "s": sym, "u": msg.last_id,
            }  # fmt: skip
            self._emit(sym, book_stream, _frame(book_stream, data))

    def _emit_depth(self, sym: str, stream: str, frame: str) -> None:
        faults = self.faults
        if faults.drops and Faults.take(faults.drops, sym):
            faults.injected["drop"] += 1
            return
        if sym in self._reorder_held:
            held = self._reorder_held.pop(sym)
            self._emit(sym, stream, frame)
            self._emit(sym, stream, held)
            faults.injected["reorder"] += 1
            return
        if faults.reorders and Faults.take(faults.reorders, sym):
            self._reorder_held[sym] = frame
            return
        self._emit(sym, stream, frame)
        if faults.duplicates and Faults.take(faults.duplicates, sym):
            faults.injected["duplicate"] += 1
            self._emit(sym, stream, frame)

    def _emit(self, sym: str, stream: str, frame: str) -> None:
        faults = self.faults
        if faults.stalls and faults.stalled_until(sym) is not None:
            sessions = tuple(self._subs.get(stream, {}))
            self._held.setdefault(sym, []).append((stream, frame, sessions))
            return
        if sym in self._held:
            # The stall ended between two generator ticks: its held frames go out first.
            self._release_stalls(trio.current_time())
        if faults.malformed and Faults.take(faults.malformed, sym):
            faults.injected["malformed"] += 1
            self._broadcast(stream, frame[: max(1, len(frame) // 2)])
        self._broadcast(stream, frame)

    def _broadcast(self, stream: str, frame: str) -> None:
        sessions = self._subs.get(stream)
        if not sessions:
            return
        self.stats["frames_published"] += 1
        for session in list(sessions):
            session.offer(frame)

    def _release_stalls(self, now: float) -> None:
        if not self._held:
            return
        for sym in list(self._held):
            if self.faults.stalled_until(sym) is None:
                for stream, frame, sessions in self._held.pop(sym):
                    live = self._subs.get(stream, {})
                    self.stats["frames_published"] += 1
                    for session in sessions:
                        if session in live:
                            session.offer(frame)

    def _aggregate(self, stream: str, window: str, msg: DepthMessage) -> None:
        agg = self._aggregates.get(stream)
        if agg is None or not agg.first_id:
            agg = _Aggregate(first_id=msg.first_id, deadline=_trio_now() + DEPTH_WINDOWS[window])
            self._aggregates[stream] = agg
        agg.last_id = msg.last_id
        agg.bids.update(msg.bids)
        agg.asks.update(msg.asks)
        agg.engine_us = msg.engine_time_us
        agg.event_us = msg.event_time_us

    def _flush_aggregates(self, now: float) -> None:
        for stream, agg in list(self._aggregates.items()):
            if not agg.first_id or now < agg.deadline:
                continue
            del self._aggregates[stream]
            sym = stream.split(".", 2)[2]
            first = agg.first_id if self.config.aggregated_keeps_chain else agg.last_id
            data = {
                "E": agg.event_us, "T": agg.engine_us, "U": first,
                "a": sorted(agg.asks.items(), key=_price_key),
                "b": sorted(agg.bids.items(), key=_price_key),
                "e": "depth", "s": sym, "u": agg.last_id,
            }  # fmt: skip
            self._emit(sym, stream, _frame(stream, data))

    def _publish_tickers(self) -> None:
        now_us = self.now_us()
        for sym, model in self.models.items():
            stream = f"ticker.{sym}"
            if not self._subs.get(stream):
                continue
            f = model.ticker_fields()
            data = {
                "E": now_us, "V": f["quoteVolume"], "c": f["lastPrice"], "e": "ticker",
                "h": f["high"], "l": f["low"], "n": len(model.trades), "o": f["firstPrice"],
                "s": sym, "v": f["volume"],
            }  # fmt: skip
            self._emit(sym, stream, _frame(stream, data))

    # ------------------------------------------------------------------ account (sim/orders.py)
    def publish_market(self, msg: DepthMessage) -> None:
        """Publish a book update (and its trades) the order engine made."""
        self._publish_message(msg)

    def publish_private(self, stream: str, frame: str) -> None:
        """Send a private frame to the sessions subscribed to ``stream``."""
        self._broadcast(stream, frame)

    def kill_private_sessions(self) -> int:
        """Drop every session holding a private subscription; returns how many."""
        victims = [s for s in self._sessions if any(n.startswith("account.") for n in s.streams)]
        for session in victims:
            session.kill(1011, "injected disconnect")
        return len(victims)

    def _private_request(
        self, session: _Session, method: str, params: list[Any], request: dict[str, Any]
    ) -> list[Any]:
        # account.* streams need a valid signature (docs/private.md); returns the other names.
        private = [p for p in params if isinstance(p, str) and p.startswith("account.")]
        if not private:
            return params
        rest = [p for p in params if p not in private]
        if method == "UNSUBSCRIBE":
            for stream in private:
                session.streams.discard(stream)
                self._subs.get(stream, {}).pop(session, None)
            return rest
        if not all(self.engine.valid_stream(s) for s in private):
            session.offer(_encode({"error": INVALID_STREAM, "id": request.get("id")}).decode())
            return rest
        sig = request.get("signature")
        parts = [str(x) for x in sig] if isinstance(sig, list) and len(sig) == 4 else []
        failure = self.engine.verify("subscribe", {}, *parts) if parts else (401, {})
        if failure is not None:
            text = failure[1].get("message") or "Missing signature"
            error = {"code": 4001, "message": text}
            session.offer(_encode({"error": error, "id": request.get("id")}).decode())
            return rest
        for stream in private:
            session.streams.add(stream)
            self._subs.setdefault(stream, {})[session] = None
            for frame in self.engine.snapshot_frames(stream):
                session.offer(frame)
        return rest

    # ------------------------------------------------------------------ WS sessions
    def _build_valid_streams(self) -> frozenset[str]:
        names: set[str] = set()
        for sym in self.models:
            names.update(
                {f"trade.{sym}", f"depth.{sym}", f"bookTicker.{sym}", f"ticker.{sym}"}
                | {f"depth.{w}.{sym}" for w in DEPTH_WINDOWS}
            )
        perps = [s for s, m in self.models.items() if m.spec.market_type == "PERP"]
        names |= derived_stream_names(self.models, perps)
        return frozenset(names)

    def _handle_ws_request(self, session: _Session, message: str | bytes) -> None:
        try:
            request = msgspec.json.decode(message)
        except msgspec.DecodeError:
            return
        if not isinstance(request, dict):
            return
        method = request.get("method")
        params = request.get("params")
        if method not in ("SUBSCRIBE", "UNSUBSCRIBE") or not isinstance(params, list):
            return
        params = self._private_request(session, method, params, request)
        for stream in params:
            if not isinstance(stream, str) or stream not in self._valid_streams:
                error = {"error": INVALID_STREAM, "id": request.get("id")}
                session.offer(_encode(error).decode())
                continue
            if method == "SUBSCRIBE":
                session.streams.add(stream)
                self._subs.setdefault(stream, {})[session] = None
            else:
                session.streams.discard(stream)
                self._subs.get(stream, {}).pop(session, None)

    def _unsubscribe_all(self, session: _Session) -> None:
        for stream in session.streams:
            self._subs.get(stream, {}).pop(session, None)
        session.streams.clear()

    def new_session(self) -> _Session:
        """A session for a transport adapter (used by the ASGI server)."""
        return _Session(self, self.config.client_queue_size)

    def take_handshake_refusal(self) -> int | None:
        """HTTP status to refuse a WS handshake with (451 or an injected refusal), else None."""
        if self.faults.http451:
            self.faults.injected["http_451"] += 1
            return 451
        if self.faults.refuse_remaining > 0:
            self.faults.refuse_remaining -= 1
            self.faults.injected["refuse_handshake"] += 1
            return self.faults.refuse_status
        return None

    async def serve_trio_websocket(self, request: trio_websocket.WebSocketRequest) -> None:
        """Serve one trio-websocket handshake request (memory streams or a real listener)."""
        refusal = self.take_handshake_refusal()
        if refusal is not None:
            await request.reject(refusal, body=b"handshake refused")
            return
        conn = await request.accept()
        cfg = self.config
        await self.new_session().run(_TrioWsTransport(conn, cfg.ping_interval, cfg.pong_timeout))

    async def connect_memory_ws(self, nursery: trio.Nursery) -> trio_websocket.WebSocketConnection:
        """A client WS connection over in-memory streams, served by this exchange in ``nursery``."""
        client_stream, server_stream = trio.testing.memory_stream_pair()

        async def serve() -> None:
            try:
                request = await trio_websocket.wrap_server_stream(nursery, server_stream)
                await self.serve_trio_websocket(request)
            finally:
                await trio.aclose_forcefully(server_stream)

        nursery.start_soon(serve)
        conn: trio_websocket.WebSocketConnection = await nursery.start(
            self._memory_client, client_stream
        )
        return conn

    async def _memory_client(
        self,
        stream: trio.abc.Stream,
        *,
        task_status: trio.TaskStatus[trio_websocket.WebSocketConnection],
    ) -> None:
        # trio-websocket raises a rejected handshake from its reader task; an inner nursery turns
        # that into a plain ConnectionRejected for the caller instead of crashing their nursery.
        rejected: trio_websocket.ConnectionRejected | None = None
        try:
            async with trio.open_nursery() as inner:
                conn = await trio_websocket.wrap_client_stream(
                    inner,
                    # trio-websocket is typed for sockets but works over any trio Stream.
                    cast(Any, stream),
                    "ws.sim.local",
                    "/",
                )
                task_status.started(conn)
        except BaseExceptionGroup as group:
            match, rest = group.split(trio_websocket.ConnectionRejected)
            if match is None or rest is not None:
                raise
            leaf: BaseException = match
            while isinstance(leaf, BaseExceptionGroup):
                leaf = leaf.exceptions[0]
            rejected = cast(trio_websocket.ConnectionRejected, leaf)
        if rejected is not None:
            await trio.aclose_forcefully(stream)
            raise rejected

    # ------------------------------------------------------------------ REST
    async def handle_http(
        self,
        method: str,
        path: str,
        query: str | Mapping[str, str | Sequence[str]] | None = None,
        *,
        client: str = "memory",
        headers: Mapping[str, str] | None = None,
        body: bytes = b"",
    ) -> HttpResponse:
        """Answer one REST request (``path`` may carry ``?query``); awaits only injected delays."""
        path, _, inline = path.partition("?")
        params = _parse_query(query, inline)
        route = path if path in _ROUTES else "other"
        self.http_calls[route] += 1
        self.http_log.append((trio.current_time(), route))
        faults = self.faults
        if faults.http451:
            faults.injected["http_451"] += 1
            return _text_response(451, "Unavailable For Legal Reasons")
        if faults.slow_remaining > 0:
            faults.slow_remaining -= 1
            faults.injected["slow"] += 1
            await trio.sleep(faults.slow_delay)
        if faults.http429_remaining > 0:
            faults.http429_remaining -= 1
            faults.injected["http_429"] += 1
            return self._too_many(faults.retry_after)
        if faults.http5xx_remaining > 0:
            faults.http5xx_remaining -= 1
            faults.injected["http_5xx"] += 1
            status = faults.http5xx_status
            return _text_response(status, _REASONS.get(status, "Server Error"))
        if self.config.rate_limit:
            limited = self._rate_limit(client, path in HISTORY_ROUTES)
            if limited is not None:
                return limited
        private = self.engine.handle(method, path, params, body, headers or {})
        if private is not None:
            return _json_response(*private)
        if method.upper() != "GET":
            return _error(405, "INVALID_CLIENT_REQUEST", "Method not allowed")
        handler = _ROUTES.get(path)
        if handler is None:
            return _error(404, "RESOURCE_NOT_FOUND", "Not found")
        try:
            return handler(self, params)
        except _ParamError as exc:
            return exc.response

    def _too_many(self, retry_after: int) -> HttpResponse:
        headers = {"retry-after": str(retry_after)}
        return _error(429, "TOO_MANY_REQUESTS", "Too many requests", headers)

    def _rate_limit(self, client: str, history: bool) -> HttpResponse | None:
        cfg = self.config
        now = trio.current_time()
        limit = cfg.history_rate_limit_per_minute if history else cfg.rate_limit_per_minute
        window = self._rate_windows.setdefault((client, history), deque())
        while window and window[0] <= now - 60.0:
            window.popleft()
        if len(window) >= limit:
            return self._too_many(max(1, math.ceil(window[0] + 60.0 - now)))
        window.append(now)
        return None

    def _symbol(self, params: dict[str, list[str]]) -> MarketModel:
        values = params.get("symbol")
        if not values:
            raise _ParamError(
                _error(400, "INVALID_CLIENT_REQUEST", "failed to parse parameter `symbol`: missing")
            )
        model = self.models.get(values[0])
        if model is None:
            raise _ParamError(_error(400, "INVALID_SYMBOL", "Invalid symbol"))
        return model

    def _market_json(self, spec: MarketSpec) -> dict[str, Any]:
        perp = spec.market_type == "PERP"
        return {
            "baseSymbol": spec.base,
            "createdAt": spec.created_at,
            "filters": {
                "price": {
                    "borrowEntryFeeMaxMultiplier": None,
                    "borrowEntryFeeMinMultiplier": None,
                    "maxImpactMultiplier": "1.02",
                    "maxMultiplier": "1.25",
                    "maxPrice": "1000000" if perp else None,
                    "meanMarkPriceBand": {"maxMultiplier": "1.07", "minMultiplier": "0.92"},
                    "meanPremiumBand": {"tolerancePct": "0.05"} if perp else None,
                    "minImpactMultiplier": "0.98",
                    "minMultiplier": "0.75",
                    "minPrice": str(spec.tick_size),
                    "tickSize": str(spec.tick_size),
                },
                "quantity": {
                    "maxQuantity": None,
                    "minQuantity": str(spec.min_quantity),
                    "stepSize": str(spec.step_size),
                },
            },
            "fundingInterval": 28_800_000 if perp else None,
            "fundingRateLowerBound": "-100" if perp else None,
            "fundingRateUpperBound": "100" if perp else None,
            "imfFunction": {"base": "0.02", "factor": "0.0000935", "type": "sqrt"}
            if perp
            else None,
            "marketType": spec.market_type,
            "mmfFunction": {"base": "0.0125", "factor": "0.0000561", "type": "sqrt"}
            if perp
            else None,
            "openInterestLimit": "64000" if perp else "0",
            "orderBookState": "Open",
            "positionLimitWeight": "1",
            "quoteSymbol": spec.quote,
            "rwaMarketType": None,
            "symbol": spec.symbol,
            "visible": True,
        }

    def _get_assets(self, params: dict[str, list[str]]) -> HttpResponse:
        assets = sorted({s for m in self.models.values() for s in (m.spec.base, m.spec.quote)})
        body = [
            {
                "coingeckoId": None,
                "displayName": a,
                "symbol": a,
                "tokens": [
                    {
                        "blockchain": "Solana",
                        "contractAddress": None,
                        "depositEnabled": True,
                        "displayName": a,
                        "maximumWithdrawal": None,
                        "minimumDeposit": "0.0001",
                        "minimumWithdrawal": "0.0002",
                        "nativeDecimals": 8,
                        "withdrawEnabled": True,
                        "withdrawalFee": "0.0001",
                    }
                ],
            }
            for a in assets
        ]
        return _json_response(200, body)

    def _get_markets(self, params: dict[str, list[str]]) -> HttpResponse:
        types = set(params.get("marketType") or ("SPOT", "PERP"))
        known = {"SPOT", "PERP", "IPERP", "DATED", "PREDICTION", "RFQ"}
        bad = types - known
        if bad:
            raise _parse_error("marketType", "MarketType", "Expect a valid enumeration value.")
        body = [
            self._market_json(m.spec) for m in self.models.values() if m.spec.market_type in types
        ]
        return _json_response(200, body)

    def _get_market(self, params: dict[str, list[str]]) -> HttpResponse:
        return _json_response(200, self._market_json(self._symbol(params).spec))

    def _get_depth(self, params: dict[str, list[str]]) -> HttpResponse:
        model = self._symbol(params)
        limit = 1000
        if "limit" in params:
            text = params["limit"][0]
            if not text.isdigit() or int(text) not in DEPTH_LIMITS:
                raise _parse_error(
                    "limit", "OrderBookDepthLimit", "Expect a valid enumeration value."
                )
            limit = int(text)
        bids, asks = model.depth_levels(min(limit, self.config.depth_cap))
        body = {
            "asks": asks,
            "bids": bids,
            "lastUpdateId": str(model.last_update_id),
            "timestamp": self.now_us(),
        }
        return _json_response(200, body)

    def _trade_slice(self, params: dict[str, list[str]], offset_allowed: bool) -> HttpResponse:
        model = self._symbol(params)
        limit = _int_param(params, "limit", 100, "uint16")
        if not 1 <= limit <= 1000:
            raise _ParamError(
                _error(400, "INVALID_CLIENT_REQUEST", "Limit must be between 1 and 1000")
            )
        offset = _int_param(params, "offset", 0, "uint64") if offset_allowed else 0
        trades = model.trades
        end = max(0, len(trades) - offset)
        chosen = trades[max(0, end - limit) : end]
        body = [
            {
                "id": t.id,
                "isBuyerMaker": t.is_buyer_maker,
                "price": t.price_str,
                "quantity": t.quantity_str,
                "quoteQuantity": t.quote_quantity_str,
                "timestamp": t.engine_time_us // 1000,
            }
            for t in reversed(chosen)
        ]
        return _json_response(200, body)

    def _get_trades(self, params: dict[str, list[str]]) -> HttpResponse:
        return self._trade_slice(params, offset_allowed=False)

    def _get_trades_history(self, params: dict[str, list[str]]) -> HttpResponse:
        return self._trade_slice(params, offset_allowed=True)

    def _ticker_json(self, model: MarketModel) -> dict[str, str]:
        return {"symbol": model.spec.symbol, **model.ticker_fields()}

    def _check_interval(self, params: dict[str, list[str]]) -> None:
        if params.get("interval", ["1d"])[0] not in ("1d", "1w"):
            raise _parse_error("interval", "TickerInterval", "Expect a valid enumeration value.")

    def _get_ticker(self, params: dict[str, list[str]]) -> HttpResponse:
        self._check_interval(params)
        return _json_response(200, self._ticker_json(self._symbol(params)))

    def _get_tickers(self, params: dict[str, list[str]]) -> HttpResponse:
        self._check_interval(params)
        models = sorted(self.models.values(), key=lambda m: m.spec.symbol)
        return _json_response(200, [self._ticker_json(m) for m in models])

    def _get_klines(self, params: dict[str, list[str]]) -> HttpResponse:
        model = self._symbol(params)
        interval = params.get("interval", [""])[0]
        seconds = KLINE_INTERVALS.get(interval)
        if seconds is None:
            raise _parse_error("interval", "KlineInterval", "Expect a valid enumeration value.")
        if "startTime" not in params:
            raise _ParamError(
                _error(400, "INVALID_CLIENT_REQUEST", "failed to parse parameter `startTime`")
            )
        start = _int_param(params, "startTime", 0, "i64")
        end = _int_param(params, "endTime", self.now_us() // 1_000_000 + 1, "i64")
        if self.config.kline_calendar and seconds in (
            KLINE_INTERVALS["1w"],
            KLINE_INTERVALS["1month"],
        ):
            return _json_response(200, _calendar_klines(model, seconds, start, end))
        return _json_response(200, _klines(model, seconds, start, end))

    def _perps(self, params: dict[str, list[str]]) -> list[MarketModel]:
        if params.get("symbol"):
            models = [self._symbol(params)]
        else:
            models = sorted(self.models.values(), key=lambda m: m.spec.symbol)
        return [m for m in models if m.spec.market_type == "PERP"]

    def _get_mark_prices(self, params: dict[str, list[str]]) -> HttpResponse:
        now_us = self.now_us()
        out = []
        for model in self._perps(params):
            f = mark_price_fields(model, now_us)
            out.append(
                {
                    "fundingRate": f["f"],
                    "indexPrice": f["i"],
                    "markPrice": f["p"],
                    "nextFundingTimestamp": f["n"],
                    "symbol": model.spec.symbol,
                }
            )
        return _json_response(200, out)

    def _get_open_interest(self, params: dict[str, list[str]]) -> HttpResponse:
        now_ms = self.now_us() // 1000
        out = [
            {
                "openInterest": format_stripped(m.volume, m.size_decimals),
                "symbol": m.spec.symbol,
                "timestamp": now_ms,
            }
            for m in self._perps(params)
        ]
        return _json_response(200, out)

    def _get_time(self, params: dict[str, list[str]]) -> HttpResponse:
        return _text_response(200, str(self.now_us() // 1000))

    def _get_ping(self, params: dict[str, list[str]]) -> HttpResponse:
        return _text_response(200, "pong")

    def _get_status(self, params: dict[str, list[str]]) -> HttpResponse:
        return _json_response(200, {"message": None, "status": "Ok"})

    def _get_securities(self, params: dict[str, list[str]]) -> HttpResponse:
        return _json_response(200, [])


_ROUTES = {
    "/api/v1/assets": SimExchange._get_assets,
    "/api/v1/markets": SimExchange._get_markets,
    "/api/v1/market": SimExchange._get_market,
    "/api/v1/securities": SimExchange._get_securities,
    "/api/v1/depth": SimExchange._get_depth,
    "/api/v1/trades": SimExchange._get_trades,
    "/api/v1/trades/history": SimExchange._get_trades_history,
    "/api/v1/ticker": SimExchange._get_ticker,
    "/api/v1/tickers": SimExchange._get_tickers,
    "/api/v1/klines": SimExchange._get_klines,
    "/api/v1/markPrices": SimExchange._get_mark_prices,
    "/api/v1/openInterest": SimExchange._get_open_interest,
    "/api/v1/time": SimExchange._get_time,
    "/api/v1/ping": SimExchange._get_ping,
    "/api/v1/status": SimExchange._get_status,
}
_REASONS = {500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable",
            504: "Gateway Timeout"}  # fmt: skip


def _trio_now() -> float:
    return trio.current_time()


def _frame(stream: str, data: dict[str, Any]) -> str:
    return _encode({"data": data, "stream": stream}).decode()


def _depth_data(msg: DepthMessage) -> dict[str, Any]:
    return {
        "E": msg.event_time_us, "T": msg.engine_time_us, "U": msg.first_id, "a": msg.asks,
        "b": msg.bids, "e": "depth", "s": msg.symbol, "u": msg.last_id,
    }  # fmt: skip


def _price_key(level: tuple[str, str]) -> Decimal:
    return Decimal(level[0])


def _int_param(params: dict[str, list[str]], name: str, default: int, type_name: str) -> int:
    values = params.get(name)
    if not values:
        return default
    text = values[0]
    try:
        value = int(text)
    except ValueError:
        raise _parse_error(name, type_name, f"invalid digit found in string {text!r}") from None
    if value < 0 and type_name.startswith("u"):
        raise _parse_error(name, type_name, "invalid digit found in string")
    return value


def _parse_query(
    query: str | Mapping[str, str | Sequence[str]] | None, inline: str
) -> dict[str, list[str]]:
    params: dict[str, list[str]] = {}
    if inline:
        params.update(parse_qs(inline, keep_blank_values=True))
    if isinstance(query, str):
        for k, v in parse_qs(query, keep_blank_values=True).items():
            params.setdefault(k, []).extend(v)
    elif query is not None:
        for k, val in query.items():
            params.setdefault(k, []).extend([val] if isinstance(val, str) else list(val))
    return params


def _klines(model: MarketModel, seconds: int, start: int, end: int) -> list[dict[str, str]]:
    # The epoch grid: the trades in the range, by bucket.
    spans: dict[int, int] = {}
    picked = []
    for t in model.trades:
        ts = t.engine_time_us // 1_000_000
        if start <= ts < end:
            bucket = ts - ts % seconds
            spans[bucket] = bucket + seconds
            picked.append((bucket, t))
    return _kline_items(model, spans, picked)


def _calendar_klines(
    model: MarketModel, seconds: int, start: int, end: int
) -> list[dict[str, str]]:
    # Calendar buckets: each whole (every trade so far), for the buckets starting in the range.
    spans: dict[int, int] = {}
    picked = []
    for t in model.trades:
        bucket, stop = kline_bucket(seconds, t.engine_time_us // 1_000_000, calendar=True)
        if start <= bucket < end:
            spans[bucket] = stop
            picked.append((bucket, t))
    return _kline_items(model, spans, picked)


def _kline_items(
    model: MarketModel, spans: dict[int, int], picked: list[tuple[int, SimTrade]]
) -> list[dict[str, str]]:
    """The ``/klines`` items of the buckets (start: end) from their trades, in time order."""
    pd, sd = model.price_decimals, model.size_decimals
    candles: dict[int, list[Any]] = {}
    for bucket, t in picked:
        p = int(t.price.scaleb(pd))
        q = int(t.quantity.scaleb(sd))
        c = candles.get(bucket)
        if c is None:
            candles[bucket] = [p, p, p, p, q, p * q, 1]
        else:
            c[1] = max(c[1], p)
            c[2] = min(c[2], p)
            c[3] = p
            c[4] += q
            c[5] += p * q
            c[6] += 1
    out = []
    for bucket in sorted(candles):
        o, h, lo, c, v, qv, n = candles[bucket]
        out.append(
            {
                "close": _strip(c, pd),
                "end": _kline_time(spans[bucket]),
                "high": _strip(h, pd),
                "low": _strip(lo, pd),
                "open": _strip(o, pd),
                "quoteVolume": _strip(qv, pd + sd),
                "start": _kline_time(bucket),
                "trades": str(n),
                "volume": _strip(v, sd),
            }
        )
    return out


def _strip(value: int, decimals: int) -> str:
    return format_stripped(value, decimals)


def _kline_time(seconds: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(seconds))


def _resolve_markets(markets: Sequence[MarketSpec | str] | None) -> list[MarketSpec]:
    if markets is None:
        return list(DEFAULT_MARKETS)
    by_symbol = {m.symbol: m for m in DEFAULT_MARKETS}
    specs: list[MarketSpec] = []
    for item in markets:
        if isinstance(item, MarketSpec):
            specs.append(item)
            continue
        symbol = item.strip().upper().replace("-", "_").replace("/", "_")
        if symbol not in by_symbol:
            raise ValueError(f"unknown default market {item!r}; known: {sorted(by_symbol)}")
        specs.append(by_symbol[symbol])
    if not specs:
        raise ValueError("at least one market is required")
    return specs
