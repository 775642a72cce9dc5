"""Connection actors: K markets' streams on one WebSocket, and the connections manager.

A :class:`ConnectionActor` owns a group of symbols. While healthy it holds one WebSocket carrying
every stream of the group (one SUBSCRIBE may name many streams, docs/protocol.md §4.1), decodes
each socket read and hands its frames to the reconciler *synchronously*, grouped per symbol in
arrival order: no channel hop, no cancel scope and no checkpoint per frame or per read beyond the
socket read itself. Staleness is one long-lived watchdog task per connection that looks at a read
counter, not a deadline re-armed on every read.

Every discontinuity of a symbol's stream reaches the reconciler as a :class:`StreamStarted` with
a fresh epoch before any frame of the new subscription: a dropped connection resyncs exactly its
markets; a gap on one market resyncs only that market (the reconciler's business).

Failures: a connection that failed counts toward ``max_ws_failures`` only if it did not deliver
data for ``ws_healthy_after`` seconds (a server that closes healthy connections every few seconds
is not an outage). After ``max_ws_failures`` consecutive failures the group is served by REST
polling through the REST actor (books about once a second, fairly, within the budget), and a
probe promotes it back once a WebSocket delivers decodable, in-sequence frames (or, for a quiet
market, nothing while REST shows the exchange did not move) for ``promote_healthy_after``
seconds. Downstream slowness never reaches this actor: it never waits for anybody but the socket.

The channels whose REST route serves every market in one call (tickers, mark prices, open
interest) and REST-only candles are polled by one :class:`ChannelPoller` for the whole feed, not
per group; it also fills, over REST, the candles a stream missed while it was down. The feed-wide
``liquidation`` stream rides one connection still on the WebSocket, chosen by
:class:`Connections` and handed over when that connection fails (docs/channels.md).
"""

from __future__ import annotations

import functools
import itertools
import logging
import math
import random
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import attrs
import msgspec
import trio

from backpack_actors.actors.messages import (
    CandlePoll,
    FrameError,
    PollRequest,
    RestChannels,
    StreamNews,
    StreamStarted,
)
from backpack_actors.actors.reconciler import Reconciler
from backpack_actors.actors.rest import RestActor, fetch_klines
from backpack_actors.channels import (
    CANDLE_GRACE_S,
    CANDLE_SECONDS,
    CHANNELS,
    candle_grid,
    global_streams,
    kline_span_us,
    streams_for,
)
from backpack_actors.core.budget import TokenBucket
from backpack_actors.core.clock import mono_ns, wall_ns_of
from backpack_actors.core.events import StatusKind
from backpack_actors.core.restart import Backoff
from backpack_actors.core.wire import (
    MARKET_DATA_DECODER,
    DepthEvent,
    Kline,
    LiquidationEvent,
    MarketData,
    TradeEvent,
    decode_ws_frame,
)
from backpack_actors.errors import (
    ExchangeRequestError,
    ExchangeUnavailableError,
    ProtocolError,
    RateLimitedError,
    StreamStaleError,
    TransientError,
    WsProtocolViolation,
    excerpt,
)
from backpack_actors.transport.ws import WsConnection, WsConnector

__all__ = [
    "CANDLE_GRACE_S",
    "ChannelPoller",
    "ConnectionActor",
    "ConnectionHealth",
    "ConnectionSettings",
    "Connections",
    "decode_read",
    "subscribe_frame",
]

log = logging.getLogger(__name__)

# A frame's symbol as it appears in its text: the event's "s" key or the stream name's suffix.
_SYMBOL_KEY = re.compile(r'"(?:s|stream)":"(?:[A-Za-z]+\.)?(?:\d+ms\.)?([A-Z0-9_.]+)"')


@attrs.frozen
class ConnectionSettings:
    """Tunables of the connection actors (from FeedConfig; reasons beside its defaults)."""

    channels: tuple[str, ...] = ("trades", "l2_book")
    """Canonical channel names (``backpack_actors.channels``)."""
    depth_stream: str = "realtime"
    group_size: int = 50
    stale_timeout: float = 30.0
    max_ws_failures: int = 5
    healthy_after: float = 5.0
    websocket: bool = True
    rest_poll_interval: float = 1.0
    promote_probe_interval: float = 60.0
    promote_healthy_after: float = 30.0
    record_raw: bool = False
    subscribe_rate_per_s: float = 5.0
    subscribe_burst: int = 10

    @property
    def trades(self) -> bool:
        return "trades" in self.channels

    @property
    def book(self) -> bool:
        return "l2_book" in self.channels


@attrs.define
class ConnectionHealth:
    """One group's counters; survives its reconnects."""

    id: str
    rest_only: bool = False
    consecutive_failures: int = 0
    connects: int = 0
    reconnects: int = 0
    degradations: int = 0
    promotions: int = 0
    reads: int = 0
    frames: int = 0
    decode_errors: int = 0
    frame_violations: int = 0
    stale: int = 0
    refused_subscriptions: int = 0
    last_error: str | None = None


def subscribe_frame(streams: Iterable[str], *, method: str = "SUBSCRIBE") -> str:
    """One SUBSCRIBE (or UNSUBSCRIBE) frame naming every stream in ``streams``."""
    return msgspec.json.encode({"method": method, "params": list(streams)}).decode()


# Channels whose one REST route serves every market, polled in REST-only mode (route, client
# method name), in registry order.
_ROUTES: dict[str, tuple[str, str]] = {
    "ticker": ("/api/v1/tickers", "tickers"),
    "mark_price": ("/api/v1/markPrices", "mark_prices"),
    "open_interest": ("/api/v1/openInterest", "open_interest"),
}
_OPEN_INTEREST_EVERY_S = 60.0
"""The exchange publishes open interest every 60 s (docs/protocol.md §4.9): no use asking more."""
KLINES_PER_CALL = 500
"""Buckets one ``/klines`` call asks for at most (the answer's size limit is not documented)."""
_KLINES_RETRY_S = 30.0
"""After a failed klines call, the wait before that market is asked again; it doubles with each
further failure, up to ``_KLINES_RETRY_MAX_S``."""
_KLINES_RETRY_MAX_S = 600.0
_OFF_GRID_RECHECK_S = 86_400
"""``3d``, ``1w`` and ``1month`` (no known grid): how often a market is asked when no candle in
progress said when it closes (a bucket without trades yet has no candle to say so)."""
_OFF_GRID_LOOKBACK_S = 86_400
"""Off the grid, how much longer than the interval a candle under way at a join may be (a
calendar month is up to a day longer than ``1month``'s 30 days)."""
_BEHIND_REPORT_EVERY_S = 60.0

# A wire type's stream prefix, to name a misrouted frame's stream in its report.
_STREAM_OF: dict[type, str] = {DepthEvent: "depth", TradeEvent: "trade"} | {
    c.wire_type: c.stream for c in CHANNELS.values() if c.wire_type is not None
}


def _symbol_of_stream(stream: str | None) -> str | None:
    if not stream or "." not in stream:
        return None
    return stream.rsplit(".", 1)[1]


def decode_read(
    symbol: str, batch: Sequence[str | bytes]
) -> tuple[list[MarketData], list[FrameError]]:
    """The market-data frames of ``symbol`` in one read, and a FrameError per undecodable frame.

    Replay uses this to re-decode a recorded read exactly as the connection actor did (a
    recording keeps, per symbol, only the frames that decoded as that symbol's).
    """
    frames: list[MarketData] = []
    errors: list[FrameError] = []
    decode = MARKET_DATA_DECODER.decode
    for raw in batch:
        try:
            data = decode(raw).data
        except Exception:  # any failure: classified below by the full decoder
            data = None
        if data is not None and data.symbol == symbol:
            frames.append(data)
            continue
        try:
            decode_ws_frame(raw)
        except ProtocolError as exc:
            errors.append(FrameError(symbol, exc.stream, exc.reason, exc.excerpt))
    return frames, errors


class _Session:
    """What one live WebSocket of a group shares between its reader, watchdog and control."""

    def __init__(self, conn: WsConnection) -> None:
        self.conn = conn
        self.connected_at = trio.current_time()
        self.first_data_at: float | None = None
        self.reads_at_start = 0
        self.control = trio.Event()


class ConnectionActor:
    """One group of symbols on one WebSocket (or REST-only); see the module docstring."""

    def __init__(
        self,
        group_id: str,
        symbols: Iterable[str],
        *,
        connector: WsConnector,
        reconciler: Reconciler,
        rest: RestActor,
        settings: ConnectionSettings,
        epochs: Iterator[int],
        wall_clock: Callable[[], float],
        backoff: Backoff,
        rng: random.Random,
        subscribe_budget: TokenBucket,
        poller: ChannelPoller | None = None,
    ) -> None:
        self.id = group_id
        self.health = ConnectionHealth(group_id, rest_only=not settings.websocket)
        # Per symbol: the epoch of its current stream (0: never started yet).
        self._symbols: dict[str, int] = dict.fromkeys(symbols, 0)
        # Per symbol: the wall time it joined this group, where the candles it is owed begin
        # (candle_floor; the reconciler knows which of them came).
        carried = wall_clock()
        self._since: dict[str, float] = dict.fromkeys(self._symbols, carried)
        self._connector = connector
        self._reconciler = reconciler
        self._rest = rest
        self.settings = settings
        self._epochs = epochs
        self._wall_clock = wall_clock
        self._wall_ns = wall_ns_of(wall_clock)
        self._backoff = backoff
        self._rng = rng
        self._subscribe_budget = subscribe_budget
        self._session: _Session | None = None
        # Runtime changes waiting for the live connection's control task to send them.
        self._to_subscribe: set[str] = set()
        # Per symbol removed while live, its streams: named when it is removed, since by the time
        # the control task sends the UNSUBSCRIBE the reconciler has forgotten the market.
        self._to_unsubscribe: dict[str, list[str]] = {}
        # Per symbol: the read counter when it last delivered (silence checks per market).
        self._seen: dict[str, int] = {}
        # Markets unsubscribed from this connection: their frames still in flight are expected.
        self._gone: set[str] = set()
        self._mode_changed = trio.Event()
        self.cancel_scope = trio.CancelScope()
        # Whether this connection carries the streams of every market (``liquidation``): one
        # connection of the feed does (the Connections manager decides which, told through
        # ``on_ws`` whenever a WebSocket session of this group starts or ends).
        self.carries_global = False
        self._global_pending = False
        self.on_ws: Callable[[ConnectionActor, bool], None] | None = None
        # The feed's poller of the REST-only channels; a group run alone polls for itself.
        self._own_poller = poller is None
        self.poller = poller or ChannelPoller(
            reconciler=reconciler, rest=rest, settings=settings, wall_clock=wall_clock
        )
        # Markets moved off an aggregated depth stream that did not keep the id chain, and the
        # aggregated streams still to unsubscribe on the live connection.
        self._realtime_depth: set[str] = set()
        self._drop_streams: list[str] = []

    def __repr__(self) -> str:
        return f"ConnectionActor({self.id!r}, symbols={len(self._symbols)})"

    @property
    def symbols(self) -> list[str]:
        return list(self._symbols)

    @property
    def streaming(self) -> bool:
        """Whether a WebSocket session of this group is up (connected, not REST-only)."""
        return self._session is not None and not self.health.rest_only

    def joined(self, symbol: str) -> float:
        """The wall time ``symbol`` joined this group (now, if it is not carried)."""
        return self._since.get(symbol, self._wall_clock())

    def candle_floor(self, symbol: str, interval: str) -> int:
        """Where (s) ``symbol``'s owed ``interval`` candles begin: the start of the bucket in
        progress when it joined the group — off the grid (``3d``, ``1w``, ``1month``), a
        moment at least one candle's length before the join. Which of them came, by stream or
        REST, the reconciler knows (:meth:`Reconciler.first_missing_candle`)."""
        since = self.joined(symbol)
        grid = candle_grid(interval)
        if grid is None:
            return math.floor(since) - CANDLE_SECONDS[interval] - _OFF_GRID_LOOKBACK_S
        return _grid(since, grid)

    def __len__(self) -> int:
        return len(self._symbols)

    def __contains__(self, symbol: object) -> bool:
        return symbol in self._symbols

    # -- runtime membership --------------------------------------------------------------------

    def add(self, symbol: str) -> None:
        """Carry ``symbol`` from now on (subscribed on the live connection, or polled)."""
        if symbol in self._symbols:
            return
        self._symbols[symbol] = 0
        self._since[symbol] = self._wall_clock()
        self._gone.discard(symbol)
        self._to_unsubscribe.pop(symbol, None)
        if self.health.rest_only or not self.settings.websocket:
            self._start_symbol(symbol, "rest")
            return
        self._to_subscribe.add(symbol)
        if self._session is not None:
            self._session.control.set()

    def remove(self, symbol: str) -> None:
        """Stop carrying ``symbol`` (unsubscribed on the live connection)."""
        if self._symbols.pop(symbol, None) is None:
            return
        self._gone.add(symbol)
        self._to_subscribe.discard(symbol)
        self._seen.pop(symbol, None)
        self._since.pop(symbol, None)
        self.poller.forget(symbol)
        if self._session is not None and not self.health.rest_only:
            self._to_unsubscribe[symbol] = self._streams([symbol])
            self._session.control.set()

    def carry_global(self) -> None:
        """Carry the feed-wide streams from now on (the previous carrier left or failed)."""
        if self.carries_global:
            return
        self.carries_global = True
        if self._session is not None and not self.health.rest_only:
            self._global_pending = True
            self._session.control.set()

    def drop_global(self) -> None:
        """Stop carrying the feed-wide streams (called once this group's session has ended, so
        nothing is left to unsubscribe and no frame of them can still arrive here)."""
        self.carries_global = False
        self._global_pending = False

    def use_realtime_depth(self, symbol: str) -> None:
        """Serve ``symbol``'s book from the real-time depth stream from now on (resubscribed)."""
        window = self.settings.depth_stream
        if window == "realtime" or symbol in self._realtime_depth or symbol not in self._symbols:
            return
        self._realtime_depth.add(symbol)
        if self._session is not None and not self.health.rest_only:
            self._drop_streams.append(f"depth.{window}.{symbol}")
            self._to_subscribe.add(symbol)
            self._session.control.set()

    def _streams(self, symbols: Iterable[str], *, with_global: bool = False) -> list[str]:
        """Every stream of ``symbols`` for the configured channels (registry order)."""
        settings = self.settings
        market = self._reconciler.market
        realtime = self._realtime_depth
        streams: list[str] = []
        for symbol in symbols:
            info = market(symbol)
            if info is not None:
                depth_stream = "realtime" if symbol in realtime else settings.depth_stream
                streams.extend(streams_for(settings.channels, info, depth_stream=depth_stream))
        if with_global:
            streams.extend(global_streams(settings.channels))
        return streams

    def _start_symbol(self, symbol: str, mode: str) -> None:
        previous = self._symbols[symbol]
        epoch = next(self._epochs)
        self._symbols[symbol] = epoch
        self._reconciler.handle(StreamStarted(symbol, epoch, mode))  # type: ignore[arg-type]
        if mode == "ws" and previous:
            # Streamed or polled before: a candle that closed in between (reconnecting, or
            # between the last REST poll and now) never reaches a new subscription.
            self.poller.resubscribed(self, symbol)

    def _news(self, kind: StatusKind, reason: str, counts: dict[str, int]) -> None:
        for symbol in list(self._symbols):
            self._reconciler.handle(StreamNews(symbol, kind, reason, dict(counts)))

    # -- the actor ------------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve the group until cancelled; ready once connected and subscribed (or REST-only)."""
        started = False

        def mark_started() -> None:
            nonlocal started
            if not started:
                started = True
                task_status.started()

        settings, health = self.settings, self.health
        with self.cancel_scope:
            while True:
                if health.rest_only or not settings.websocket:
                    await self._rest_mode(mark_started)
                    continue
                try:
                    await self._ws_session(mark_started)
                except TransientError as exc:
                    await self._after_failure(exc)

    async def _after_failure(self, exc: TransientError) -> None:
        settings, health = self.settings, self.health
        session = self._session
        self._session = None
        if self.on_ws is not None:
            # Ended (or never connected): a carrier of the feed-wide streams hands them over now,
            # not after the reconnects, so they pause only for the handover.
            self.on_ws(self, False)
        now = trio.current_time()
        # Healthy: it kept delivering (more than one read) for healthy_after seconds and did
        # not end by going silent — a stale connection's data stopped, whenever it started.
        healthy = (
            session is not None
            and session.first_data_at is not None
            and now - session.first_data_at >= settings.healthy_after
            and health.reads - session.reads_at_start > 1
            and not isinstance(exc, StreamStaleError)
        )
        if healthy:
            # It streamed correct data for a while: a new failure, not another consecutive one.
            health.consecutive_failures = 0
            self._backoff.reset()
        health.consecutive_failures += 1
        health.reconnects += 1
        health.last_error = str(exc)
        if isinstance(exc, WsProtocolViolation):
            # The server broke the framing: counted and reported like an undecodable frame
            # (the connection cannot continue; framing cannot be resynchronised).
            health.frame_violations += 1
            self._reconciler.handle(
                FrameError(
                    "",
                    "ws",
                    f"WebSocket framing violation on connection {self.id}: {exc.reason}; "
                    "reconnecting",
                    "",
                )
            )
        failures = health.consecutive_failures
        if failures >= settings.max_ws_failures:
            health.rest_only = True
            health.degradations += 1
            self._news(
                StatusKind.DEGRADED_REST_ONLY,
                f"{failures} consecutive WebSocket failures, last: {exc}",
                {"failures": failures},
            )
            return
        kind = StatusKind.STALE if isinstance(exc, StreamStaleError) else StatusKind.RECONNECTING
        delay = self._backoff.next_delay(now, self._rng)
        if isinstance(exc, RateLimitedError) and exc.retry_after is not None:
            delay = max(delay, exc.retry_after)
        self._news(
            kind,
            f"{exc}; reconnecting in {delay:.2f} s",
            {"failures": failures, "reconnects": health.reconnects},
        )
        await trio.sleep(delay)

    async def _ws_session(self, mark_started: Callable[[], None]) -> None:
        health = self.health
        await _take_token(self._subscribe_budget)
        try:
            async with self._connector() as conn:
                session = _Session(conn)
                session.reads_at_start = health.reads
                self._session = session
                self._backoff.mark_connected(session.connected_at)
                health.connects += 1
                self._to_subscribe.clear()
                self._to_unsubscribe.clear()
                for symbol in list(self._symbols):
                    self._start_symbol(symbol, "ws")
                    self._seen[symbol] = health.reads
                if self.on_ws is not None:
                    # May make this group the carrier: then the first SUBSCRIBE names them.
                    self.on_ws(self, True)
                self._global_pending = False
                await conn.send(
                    subscribe_frame(self._streams(self._symbols, with_global=self.carries_global))
                )
                mark_started()
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._watchdog, session)
                    nursery.start_soon(self._control, session)
                    await self._read_loop(session)
        except BaseExceptionGroup as group:
            raise _single(group) from None

    async def _control(self, session: _Session) -> None:
        # Runtime subscribe/unsubscribe on the live connection (paced like connects).
        while True:
            await session.control.wait()
            session.control = trio.Event()
            if self._global_pending:
                self._global_pending = False
                await session.conn.send(subscribe_frame(global_streams(self.settings.channels)))
            if self._drop_streams:
                drop, self._drop_streams = self._drop_streams, []
                await session.conn.send(subscribe_frame(drop, method="UNSUBSCRIBE"))
            if self._to_unsubscribe:
                gone, self._to_unsubscribe = self._to_unsubscribe, {}
                streams = [stream for symbol in sorted(gone) for stream in gone[symbol]]
                if streams:
                    await session.conn.send(subscribe_frame(streams, method="UNSUBSCRIBE"))
            if self._to_subscribe:
                new, self._to_subscribe = sorted(self._to_subscribe), set()
                await _take_token(self._subscribe_budget)
                for symbol in new:
                    if symbol in self._symbols:
                        self._start_symbol(symbol, "ws")
                        self._seen[symbol] = self.health.reads
                await session.conn.send(subscribe_frame(self._streams(new)))

    async def _read_loop(self, session: _Session) -> None:
        # The hot path: one await per socket read, everything after it synchronous.
        conn = session.conn
        health = self.health
        epochs = self._symbols
        seen = self._seen
        on_frames = self._reconciler.on_frames
        wall_ns = self._wall_ns
        mono = mono_ns
        decode = MARKET_DATA_DECODER.decode
        record_raw = self.settings.record_raw
        receive = conn.receive_batch
        while True:
            batch = await receive()
            health.reads += 1
            reads = health.reads
            received_ns = wall_ns()
            received_mono = mono()
            if session.first_data_at is None:
                session.first_data_at = trio.current_time()
            if len(batch) == 1:
                # One message per read, the common case at real rates: one of our markets'
                # frames goes straight to the reconciler (anything else takes the loop below).
                raw = batch[0]
                try:
                    data = decode(raw).data
                except Exception:  # anything unusual: the loop's slow path classifies it
                    data = None
                if data is not None:
                    symbol = data.symbol
                    only = epochs.get(symbol)
                    if only is not None:
                        raws = (raw,) if record_raw else ()
                        on_frames(symbol, only, [data], received_ns, raws, received_mono)
                        seen[symbol] = reads
                        health.frames += 1
                        continue
            run: list[MarketData] = []
            raw_run: list[str | bytes] = []
            current = ""
            epoch = 0
            count = 0
            for raw in batch:
                try:
                    data = decode(raw).data
                except Exception:  # anything unusual: the slow path classifies it
                    data = None
                if data is not None:
                    symbol = data.symbol
                    if symbol == current:
                        run.append(data)
                        if record_raw:
                            raw_run.append(raw)
                        continue
                    new_epoch = epochs.get(symbol)
                    if new_epoch is not None:
                        if run:
                            count += len(run)
                            on_frames(current, epoch, run, received_ns, raw_run, received_mono)
                            seen[current] = reads
                        current, epoch = symbol, new_epoch
                        run = [data]
                        raw_run = [raw] if record_raw else []
                        continue
                if run:
                    count += len(run)
                    on_frames(current, epoch, run, received_ns, raw_run, received_mono)
                    seen[current] = reads
                    run, raw_run, current = [], [], ""
                self._other(raw, data)
            if run:
                count += len(run)
                on_frames(current, epoch, run, received_ns, raw_run, received_mono)
                seen[current] = reads
            health.frames += count

    def _other(self, raw: str | bytes, data: MarketData | None) -> None:
        # Everything but our symbols' depth/trade frames: errors are reported, a refused
        # subscription is reported (never fatal: other markets on this connection are fine),
        # other events and other markets' frames are ignored.
        if data is not None:
            if type(data) is LiquidationEvent:
                # One stream carries every market's liquidations: the feed's markets on other
                # connections (or that left this one) get theirs from here; the rest are not
                # ours (expected).
                if data.symbol in self._reconciler:
                    raw_run = (raw,) if self.settings.record_raw else ()
                    self._reconciler.on_frames(
                        data.symbol, 0, [data], self._wall_ns(), raw_run, mono_ns()
                    )
                return
            if data.symbol in self._gone:
                return  # in flight when it was unsubscribed: expected, nothing to report
            # Ids are per market: another market's frame must never touch a book, and a
            # connection that delivers what it did not subscribe is worth a report.
            self.health.decode_errors += 1
            self._reconciler.handle(
                FrameError(
                    self._sole_symbol(),
                    f"{_STREAM_OF.get(type(data), 'ws')}.{data.symbol}",
                    f"frame for {data.symbol!r} on connection {self.id}, which does not carry it",
                    excerpt(raw),
                )
            )
            return
        try:
            frame = decode_ws_frame(raw)
        except ProtocolError as exc:
            self.health.decode_errors += 1
            owner = self._owner_of(raw, exc.stream)
            self._reconciler.handle(FrameError(owner or "", exc.stream, exc.reason, exc.excerpt))
            return
        if frame.error is not None:
            self.health.refused_subscriptions += 1
            self._reconciler.handle(
                FrameError(
                    "",
                    frame.stream or "ws",
                    f"the exchange refused a subscription on connection {self.id}: "
                    f"{frame.error.code} {frame.error.message}",
                    excerpt(raw),
                )
            )

    def _sole_symbol(self) -> str:
        """This connection's market when it carries exactly one, else "" (the connection)."""
        return next(iter(self._symbols)) if len(self._symbols) == 1 else ""

    def _owner_of(self, raw: str | bytes, stream: str | None) -> str:
        """Best effort: the symbol of ours an undecodable frame was about ("" if none)."""
        if len(self._symbols) == 1:
            return self._sole_symbol()
        symbol = _symbol_of_stream(stream)
        if symbol is not None and symbol in self._symbols:
            return symbol
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
        for match in _SYMBOL_KEY.finditer(text[:4096]):
            if match.group(1) in self._symbols:
                return match.group(1)
        return ""

    # -- staleness -------------------------------------------------------------------------------

    async def _watchdog(self, session: _Session) -> None:
        """Silence checks off the reader: the reader never awaits REST and keeps answering pings.

        Whole connection silent for ``stale_timeout``: stale only if REST shows the exchange moved
        on (a quiet market keeps its connection). One symbol silent while others deliver: the
        same REST check for that symbol, spaced out exponentially while it stays quiet; if its
        book moved, only that symbol is resubscribed (fresh epoch → resync).
        """
        settings = self.settings
        stale = settings.stale_timeout
        health = self.health
        last_reads = health.reads
        # Per quiet symbol: when to check it next, and the spacing that doubles while quiet.
        next_check: dict[str, float] = {}
        references: dict[str, int] = {}
        spacing: dict[str, float] = {}
        while True:
            await trio.sleep(stale)
            if health.reads == last_reads:
                # A connection that never delivered has no id of its own: its first silent
                # spell only records where the exchange is (REST), the next one compares.
                fresh = session.first_data_at is None
                moved = await self._moved_on(
                    list(self._symbols)[:3], reference=references if fresh else None
                )
                if moved is not None:
                    health.stale += 1
                    raise StreamStaleError(
                        f"connection {self.id}: no frame for {stale:g} s while {moved}"
                    )
                continue
            previous, last_reads = last_reads, health.reads
            if not settings.book:
                continue
            now = trio.current_time()
            for symbol in list(self._symbols):
                if self._seen.get(symbol, -1) > previous:
                    next_check.pop(symbol, None)
                    spacing.pop(symbol, None)
                    continue
                if now < next_check.get(symbol, 0.0):
                    continue
                moved = await self._moved_on([symbol])
                if moved is None:
                    # A quiet market: look again later, twice as late each time (REST budget).
                    gap = min(16 * stale, spacing.get(symbol, stale) * 2)
                    spacing[symbol] = gap
                    next_check[symbol] = now + gap
                    continue
                # Resubscribed: if the subscription stays dead, retry later and later too.
                gap = min(16 * stale, spacing.get(symbol, stale) * 2)
                spacing[symbol] = gap
                next_check[symbol] = now + gap
                health.stale += 1
                self._reconciler.handle(
                    StreamNews(
                        symbol,
                        StatusKind.STALE,
                        f"{symbol} silent while {moved}; resubscribing",
                        {},
                    )
                )
                if symbol in self._symbols:
                    self._to_subscribe.add(symbol)
                    session.control.set()

    async def _moved_on(
        self, symbols: list[str], *, reference: dict[str, int] | None = None
    ) -> str | None:
        """Why the exchange moved on for one of ``symbols`` (REST depth ids), or None.

        Compared with the reconciler's last id, or with ``reference`` (updated with what REST
        said) for a connection that has not delivered anything yet.
        """
        if not self.settings.book:
            return "trades-only streams cannot tell a quiet market from a dead one"
        for symbol in symbols:
            ours = (
                self._reconciler.last_update_id(symbol)
                if reference is None
                else reference.get(symbol)
            )
            try:
                snapshot = await self._rest.call(
                    f"depth {symbol} (silence check)",
                    lambda symbol=symbol: self._rest.client.depth(symbol),  # type: ignore[misc]
                    max_attempts=2,
                )
            except (TransientError, ExchangeRequestError, ProtocolError) as exc:
                # A REST failure says nothing about the WebSocket: keep the connection.
                log.info("%s: silence check failed: %s", symbol, exc)
                continue
            if reference is not None:
                reference[symbol] = snapshot.last_update_id
            if ours is not None and snapshot.last_update_id > ours:
                return (
                    f"the exchange moved {symbol} from update {ours} to {snapshot.last_update_id}"
                )
        return None

    # -- REST-only mode --------------------------------------------------------------------------

    async def _rest_mode(self, mark_started: Callable[[], None]) -> None:
        settings, health = self.settings, self.health
        for symbol in list(self._symbols):
            self._start_symbol(symbol, "rest")
        mark_started()
        promoted = False
        poller = self.poller
        # Books and trades per market here; the channels with a REST route and candles for
        # every REST-only group at once by the poller.
        poller.join(self)
        try:
            async with trio.open_nursery() as nursery:

                async def poll() -> None:
                    while True:
                        for symbol in list(self._symbols):
                            if settings.book:
                                self._rest.request(PollRequest(symbol, "book"))
                            if settings.trades:
                                self._rest.request(PollRequest(symbol, "trades"))
                        await trio.sleep(settings.rest_poll_interval)

                async def probe() -> None:
                    nonlocal promoted
                    while True:
                        await trio.sleep(settings.promote_probe_interval)
                        if await self._probe():
                            promoted = True
                            nursery.cancel_scope.cancel()
                            return

                nursery.start_soon(poll)
                if self._own_poller:
                    nursery.start_soon(poller.run)
                if settings.websocket:
                    nursery.start_soon(probe)
        finally:
            poller.leave(self)
        if promoted:
            health.rest_only = False
            health.consecutive_failures = 0
            health.promotions += 1
            self._backoff.reset()
            self._news(
                StatusKind.RECOVERED_WS,
                f"WebSocket delivered valid frames for {settings.promote_healthy_after:g} s; "
                "leaving REST-only",
                {"promotions": health.promotions},
            )

    async def _probe(self) -> bool:
        """Connect and subscribe; healthy = decodable, in-sequence frames and no refusal for
        ``promote_healthy_after`` s — or, for a quiet market, nothing while REST shows the
        exchange did not move."""
        settings = self.settings
        last_u: dict[str, int] = {}
        frames = 0
        try:
            await _take_token(self._subscribe_budget)
            async with self._connector() as conn:
                await conn.send(
                    subscribe_frame(self._streams(self._symbols, with_global=self.carries_global))
                )
                with trio.move_on_after(settings.promote_healthy_after):
                    while True:
                        with trio.fail_after(settings.stale_timeout):
                            batch = await conn.receive_batch()
                        for raw in batch:
                            problem = self._probe_frame(raw, last_u)
                            if problem is not None:
                                log.info("connection %s: probe failed: %s", self.id, problem)
                                return False
                            frames += 1
        except trio.TooSlowError:
            pass  # silent for stale_timeout: judged below like a quiet connection
        except (TransientError, ExchangeUnavailableError) as exc:
            log.info("connection %s: WebSocket probe failed: %s", self.id, exc)
            return False
        if frames:
            return True
        # Nothing at all: healthy only if the exchange did not move meanwhile (a quiet market).
        return await self._moved_on(list(self._symbols)[:3]) is None

    def _probe_frame(self, raw: str | bytes, last_u: dict[str, int]) -> str | None:
        try:
            frame = decode_ws_frame(raw)
        except ProtocolError as exc:
            return f"undecodable frame: {exc.reason}"
        if frame.error is not None:
            return f"subscription refused: {frame.error.code} {frame.error.message}"
        data = frame.data
        if type(data) is DepthEvent and data.symbol in self._symbols:
            previous = last_u.get(data.symbol)
            if previous is not None and data.first_update_id != previous + 1:
                return f"{data.symbol}: update {data.first_update_id} does not follow {previous}"
            last_u[data.symbol] = data.last_update_id
        return None


async def _take_token(bucket: TokenBucket) -> None:
    wait = bucket.reserve(trio.current_time())
    if wait > 0:
        await trio.sleep(wait)


def _single(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The one real error of a session's nursery (cancellations aside), else the group."""
    leaves: list[BaseException] = []
    stack: list[BaseException] = [group]
    while stack:
        item = stack.pop()
        if isinstance(item, BaseExceptionGroup):
            stack.extend(item.exceptions)
        elif not isinstance(item, trio.Cancelled):
            leaves.append(item)
    return leaves[0] if len(leaves) == 1 else group


def _grid(seconds_since_epoch: float, interval_s: int) -> int:
    """The start (s) of the ``interval_s`` bucket holding that moment (CANDLE_SECONDS' grid)."""
    moment = math.floor(seconds_since_epoch)
    return moment - moment % interval_s


def _closed_by(moment: float, interval: str) -> int:
    """The candles of ``interval`` closed by ``moment``: on the grid, the start (s) of the bucket
    holding it (every bucket before it is over); off the grid, the moment itself (whole s)."""
    grid = candle_grid(interval)
    return math.floor(moment) if grid is None else _grid(moment, grid)


_Pair = tuple[str, str]  # (exchange symbol, candle interval)
_Plan = tuple[int, int, float]  # (start_s, end_s, due): one klines call and when it is due


@attrs.define
class PollerStats:
    """Counters of the feed-wide REST-only poller (read through ``Connections.poller``)."""

    route_calls: dict[str, int] = attrs.field(factory=dict)
    klines_calls: int = 0
    klines_failures: int = 0
    candles_behind_s: int = 0
    """How late the last candle poll was: seconds since its oldest missing candle closed."""
    klines_needed_per_min: float = 0.0
    """The calls a minute REST-only candles need to poll each market once per interval."""


class ChannelPoller:
    """The REST-only channels of the whole feed: one poller per route, not one per group.

    ``/tickers``, ``/markPrices`` and ``/openInterest`` each answer for every market in one call,
    so one call per route and round (``rest_poll_interval``, at least a second — the streams' own
    rate; open interest every 60 s) serves every REST-only group's markets, whether one group is
    REST-only or all of them. Candles have a per-market history route (``/klines``): each call
    fills one market and interval from its oldest possibly missing candle — the reconciler knows
    which came, by stream or REST (:meth:`Reconciler.first_missing_candle`) — up to the last
    bucket closed ``CANDLE_GRACE_S`` ago, the most overdue market first (markets whose calls keep
    failing last, backing off), within the REST actor's klines budget. Each candle is published
    when closed, once: the reconciler drops any candle it already published, whoever delivered
    it. When the budget cannot poll every market once per interval, the markets polled late get
    a ``degraded_rest_only`` status saying how late (``candles_behind_s``), and another when they
    caught up.

    Markets on the WebSocket are polled too, after a (re)subscription, until the candles that
    closed while their stream was down (reconnects, the last REST poll before a promotion) are
    filled, however many newer candles the new subscription streamed meanwhile.
    """

    def __init__(
        self,
        *,
        reconciler: Reconciler,
        rest: RestActor,
        settings: ConnectionSettings,
        wall_clock: Callable[[], float],
    ) -> None:
        self._reconciler = reconciler
        self._rest = rest
        self.settings = settings
        self._wall_clock = wall_clock
        self._wall_ns = wall_ns_of(wall_clock)
        wanted = {c.partition(":")[0] for c in settings.channels}
        self._routes = tuple(name for name in _ROUTES if name in wanted)
        self._intervals = tuple(
            c.partition(":")[2] for c in settings.channels if c.startswith("candles:")
        )
        self._groups: dict[ConnectionActor, None] = {}
        self._routes_wake = trio.Event()
        self._candles_wake = trio.Event()
        # Candles: markets to fill after a resubscription — every candle closed by a moment
        # (_closed_by) — with their group; when a failed one may be asked again and how many
        # calls in a row failed; when a late one was last reported. Off the grid (3d, 1w,
        # 1month): how far each was last asked.
        self._catch_up: dict[_Pair, tuple[int, ConnectionActor]] = {}
        self._retry_at: dict[_Pair, float] = {}
        self._failures: dict[_Pair, int] = {}
        self._reported: dict[_Pair, float] = {}
        self._asked: dict[_Pair, int] = {}
        # The (market, interval) whose klines call is out, and whether its market left meanwhile
        # (its answer then is dropped: it could be older than a re-added market's join).
        self._in_flight: _Pair | None = None
        self._in_flight_gone = False
        self.stats = PollerStats()

    # -- membership (synchronous) ----------------------------------------------------------------

    def join(self, actor: ConnectionActor) -> None:
        """``actor``'s group is REST-only from now on: poll for its markets too."""
        self._groups[actor] = None
        self._wake()

    def leave(self, actor: ConnectionActor) -> None:
        self._groups.pop(actor, None)
        self._wake()

    def resubscribed(self, actor: ConnectionActor, symbol: str) -> None:
        """``symbol``'s streams are being subscribed again on ``actor``: fill its candles that
        closed meanwhile (nothing to ask unless a bucket closed since its last candle)."""
        if not self._intervals:
            return
        # A bucket that closes while the subscription takes effect may miss the stream as well:
        # it is asked for too (published once, whoever delivers it first).
        target = self._wall_clock() + CANDLE_GRACE_S
        for interval in self._intervals:
            pair = (symbol, interval)
            goal = _closed_by(target, interval)
            previous = self._catch_up.get(pair)
            self._catch_up[pair] = (max(goal, previous[0]) if previous else goal, actor)
        self._wake()

    def forget(self, symbol: str) -> None:
        """``symbol`` left the feed (or its group): nothing more to ask for it."""
        tables: tuple[dict[_Pair, Any], ...] = (
            self._catch_up,
            self._retry_at,
            self._failures,
            self._reported,
            self._asked,
        )
        for table in tables:
            for pair in [p for p in table if p[0] == symbol]:
                del table[pair]
        if self._in_flight is not None and self._in_flight[0] == symbol:
            self._in_flight_gone = True

    def _wake(self) -> None:
        self._routes_wake.set()
        self._candles_wake.set()

    def polled_symbols(self) -> set[str]:
        """The markets of every REST-only group."""
        return {symbol for actor in self._groups for symbol in actor.symbols}

    # -- the tasks -------------------------------------------------------------------------------

    async def run(self) -> None:
        """Poll until cancelled (returns at once when no configured channel needs it)."""
        async with trio.open_nursery() as nursery:
            if self._routes:
                nursery.start_soon(self._poll_routes)
            if self._intervals:
                nursery.start_soon(self._poll_candles)

    async def _poll_routes(self) -> None:
        every = max(1.0, self.settings.rest_poll_interval)
        next_round = -math.inf
        next_interest = -math.inf
        while True:
            symbols = self.polled_symbols()
            if not symbols:
                self._routes_wake = trio.Event()
                await self._routes_wake.wait()
                continue
            now = trio.current_time()
            if now < next_round:
                # Rounds start at least `every` apart, however many groups joined meanwhile.
                await trio.sleep(next_round - now)
                continue
            next_round = now + every
            perps = any(self._is_perp(symbol) for symbol in symbols)
            # Mark prices and open interest exist for perps only; open interest once a minute.
            calls = [
                name
                for name in self._routes
                if name == "ticker" or (perps and (name == "mark_price" or now >= next_interest))
            ]
            if "open_interest" in calls:
                next_interest = now + _OPEN_INTEREST_EVERY_S
            answers: dict[str, list[Any]] = {}
            async with trio.open_nursery() as nursery:
                for name in calls:
                    nursery.start_soon(self._route_call, name, answers)
            # Membership again: a group may have left while the calls were out.
            mine = self.polled_symbols()
            message = RestChannels(
                [t for t in answers.get("ticker", ()) if t.symbol in mine],
                [m for m in answers.get("mark_price", ()) if m.symbol in mine],
                [o for o in answers.get("open_interest", ()) if o.symbol in mine],
                self._wall_ns(),
                mono_ns(),
            )
            if message.tickers or message.mark_prices or message.open_interest:
                self._reconciler.handle(message)

    def _is_perp(self, symbol: str) -> bool:
        info = self._reconciler.market(symbol)
        return info is not None and info.market_type == "perp"

    async def _route_call(self, name: str, answers: dict[str, list[Any]]) -> None:
        route, method = _ROUTES[name]
        calls = self.stats.route_calls
        calls[route] = calls.get(route, 0) + 1
        fn = getattr(self._rest.client, method)
        try:
            answers[name] = await self._rest.call(f"{route} (REST-only)", fn, max_attempts=2)
        except (TransientError, ExchangeRequestError, ProtocolError) as exc:
            # Counted by the REST actor; the next round asks again.
            log.info("REST-only poll of %s failed: %s", route, exc)

    async def _poll_candles(self) -> None:
        client = self._rest.client
        while True:
            now = self._wall_clock()
            pick, wait = self._pick(now)
            if pick is None:
                self._candles_wake = trio.Event()
                with trio.move_on_after(min(wait, 60.0)):
                    await self._candles_wake.wait()
                continue
            pair, start_s, end_s, late, rest_only = pick
            symbol, interval = pair
            if rest_only:
                # A market on the WebSocket catching up is not "degraded": only the REST-only
                # ones are told how late their candles are.
                self._report_lateness(pair, late, now)
            self.stats.klines_calls += 1
            self._in_flight, self._in_flight_gone = pair, False
            try:
                klines = await self._rest.call(
                    f"klines {symbol} {interval} (REST-only candles)",
                    functools.partial(fetch_klines, client, symbol, interval, start_s, end_s),
                    klines=True,
                    max_attempts=2,
                )
            except NotImplementedError as exc:
                log.warning("REST-only candles are off: %s", exc)
                return
            except (TransientError, ExchangeRequestError, ProtocolError) as exc:
                self.stats.klines_failures += 1
                if not self._in_flight_gone:
                    # Backing off: a market whose calls keep failing must not take the budget
                    # of the others (it also ranks after them, _pick).
                    failures = self._failures[pair] = self._failures.get(pair, 0) + 1
                    delay = min(_KLINES_RETRY_S * 2 ** (failures - 1), _KLINES_RETRY_MAX_S)
                    self._retry_at[pair] = self._wall_clock() + delay
                log.info("klines %s %s failed: %s; asking again later", symbol, interval, exc)
                continue
            finally:
                self._in_flight = None
            if self._in_flight_gone:
                continue  # the market left while the call was out
            self._failures.pop(pair, None)
            self._retry_at.pop(pair, None)
            if candle_grid(interval) is None:
                self._asked[pair] = end_s
                start_s = self._owed_from(pair, start_s, klines)
            poll = CandlePoll(symbol, interval, start_s, end_s, klines)
            self._reconciler.handle(
                RestChannels(candles=[poll], received_ns=self._wall_ns(), mono_ns=mono_ns())
            )

    def _owed_from(self, pair: _Pair, start_s: int, klines: list[Kline]) -> int:
        """Off the grid a call starts a candle's length before the join (candle_floor): the
        candles of the answer that closed by the join are not owed — the poll is cut after them
        (the reconciler takes only candles inside it)."""
        owner = self._owner(pair)
        if owner is None:
            return start_s
        joined = math.floor(owner.joined(pair[0]))
        for kline in klines:
            start_us, end_us = kline_span_us(kline)
            if start_us >= start_s * 1_000_000 and end_us <= joined * 1_000_000:
                start_s = max(start_s, end_us // 1_000_000)
        return start_s

    def _owner(self, pair: _Pair) -> ConnectionActor | None:
        catch_up = self._catch_up.get(pair)
        if catch_up is not None:
            return catch_up[1]
        return next((actor for actor in self._groups if pair[0] in actor), None)

    def _plan(
        self, pair: _Pair, owner: ConnectionActor, now: float, goal: int | None
    ) -> _Plan | None:
        """The next klines call of ``pair`` — a REST-only market's, or (``goal``) a catch-up
        after a resubscription, None once that is done."""
        symbol, interval = pair
        interval_s = CANDLE_SECONDS[interval]
        floor = owner.candle_floor(symbol, interval)
        # From the oldest candle possibly missing: the stream may have delivered newer ones,
        # but never the ones it missed.
        cursor = self._reconciler.first_missing_candle(symbol, interval, floor)
        if goal is not None and cursor >= goal:
            return None
        grid = candle_grid(interval)
        if grid is not None:
            target = _grid(now - CANDLE_GRACE_S, grid)
            if goal is not None:
                target = min(target, goal)
            # Askable once its oldest missing bucket closed CANDLE_GRACE_S ago.
            due: float = cursor + interval_s + CANDLE_GRACE_S
            return cursor, max(cursor, min(target, cursor + KLINES_PER_CALL * interval_s)), due
        # Off the grid the candles say where buckets end: asked up to now (less the grace) when
        # the candle under way (seen on the stream or in an answer) closes — if nothing owed can
        # be missing before it — else once a day (once right away at first).
        asked = self._asked.get(pair)
        under_way = self._reconciler.candle_under_way(symbol, interval)
        closes = None
        if under_way is not None and under_way[0] <= max(cursor, owner.joined(symbol)):
            closes = under_way[1]
        if goal is not None:
            if (asked is not None and asked >= goal) or (closes is not None and closes > goal):
                return None  # every candle closed by the goal is answered, or none closed
            due = goal + CANDLE_GRACE_S
        elif closes is not None and (asked is None or asked < closes):
            due = closes + CANDLE_GRACE_S
        elif asked is None:
            due = now
        else:
            due = asked + CANDLE_GRACE_S + _OFF_GRID_RECHECK_S
        # Not before the range is a second long (a close may have come a moment ago).
        due = max(due, cursor + CANDLE_GRACE_S + 1)
        return cursor, max(cursor, math.floor(now) - CANDLE_GRACE_S), due

    def _pick(self, now: float) -> tuple[tuple[_Pair, int, int, float, bool] | None, float]:
        """The most overdue (market, interval), its range, how late it is and whether its group
        is REST-only — or None and how long to wait."""
        active: dict[_Pair, ConnectionActor] = {}
        for actor in self._groups:
            for symbol in actor.symbols:
                for interval in self._intervals:
                    active[(symbol, interval)] = actor
        self.stats.klines_needed_per_min = sum(
            60 / (CANDLE_SECONDS[iv] if candle_grid(iv) else _OFF_GRID_RECHECK_S)
            for _, iv in active
        )
        best: tuple[_Pair, int, int, float, bool] | None = None
        best_rank = (True, math.inf)
        wait = math.inf
        for pair, (_goal, owner) in list(self._catch_up.items()):
            if pair not in active and pair[0] not in owner:
                del self._catch_up[pair]  # the market left that group meanwhile
        for pair in active.keys() | self._catch_up.keys():
            polled = active.get(pair)
            if polled is None:
                goal, owner = self._catch_up[pair]
                plan = self._plan(pair, owner, now, goal)
                if plan is None:
                    del self._catch_up[pair]
                    continue
            else:
                plan = self._plan(pair, polled, now, None)
                assert plan is not None
            start_s, end_s, due = plan
            ready = max(due, self._retry_at.get(pair, -math.inf))
            if ready > now or end_s <= start_s:
                wait = min(wait, ready - now)
                continue
            # Since its oldest missing candle closed; a market whose calls keep failing ranks
            # after every other, so it cannot starve them.
            late = now - due + CANDLE_GRACE_S
            rank = (pair in self._failures, -late)
            if rank < best_rank:
                best_rank = rank
                best = (pair, start_s, end_s, late, polled is not None)
        # A lateness report, a retry delay and a failure count are about polling; how far an
        # off-grid market was asked is kept until it leaves the feed, for its next REST-only
        # spell.
        keep = active.keys() | self._catch_up.keys()
        for table in (self._retry_at, self._reported, self._failures):
            for pair in [p for p in table if p not in keep]:
                del table[pair]
        return best, max(wait, 0.0)

    def _report_lateness(self, pair: _Pair, late: float, now: float) -> None:
        symbol, interval = pair
        interval_s = CANDLE_SECONDS[interval]
        self.stats.candles_behind_s = int(late)
        # Keeping up: polled before the next candle closed (and became askable) too.
        behind = late > interval_s + CANDLE_GRACE_S
        last = self._reported.get(pair)
        if behind and (last is None or now - last >= max(_BEHIND_REPORT_EVERY_S, interval_s)):
            self._reported[pair] = now
            needed = self.stats.klines_needed_per_min
            budget = self._rest.settings.klines_per_min
            reason = (
                f"candles:{interval} over REST are {late:.0f} s behind (polling every REST-only "
                f"market once per interval takes {needed:.4g} klines calls a minute; the budget "
                f"is {budget:g}); closed candles still arrive, late"
            )
            counts = {"candles_behind_s": int(late), "klines_per_min": math.floor(budget)}
        elif not behind and last is not None:
            del self._reported[pair]
            reason = f"candles:{interval} over REST caught up ({late:.0f} s after the close)"
            counts = {"candles_behind_s": int(late)}
        else:
            return
        self._reconciler.handle(StreamNews(symbol, StatusKind.DEGRADED_REST_ONLY, reason, counts))


class Connections:
    """The connections manager: groups of ``group_size`` symbols, one actor each.

    Every group task lives in this actor's nursery, and so does the feed-wide
    :class:`ChannelPoller` when one is given. Retryable trouble is handled inside each group
    (reconnect with backoff, REST fallback); anything else is a bug and ends this actor, which
    its supervisor escalates.

    The feed-wide streams (``liquidation``) ride one group's connection, the carrier: the first
    group to begin with, then, whenever the carrier's session ends (a failure, the way to
    REST-only), the first group whose WebSocket session is up, at once — or, when none is, the
    next group whose session comes up. A carrier that is healthy keeps the role (moving it would
    only risk a gap). The old carrier's session is over before the new one subscribes, so no
    liquidation can arrive on both; those sent during the handover are not delivered (no REST
    route has them, docs/channels.md).
    """

    def __init__(
        self,
        symbols: Iterable[str],
        *,
        make_actor: Callable[[str, list[str]], ConnectionActor],
        group_size: int,
        poller: ChannelPoller | None = None,
    ) -> None:
        self._make_actor = make_actor
        self.group_size = max(1, group_size)
        self.poller = poller
        self.actors: list[ConnectionActor] = []
        self._carrier: ConnectionActor | None = None
        self.handovers = 0
        self._ids = itertools.count(1)
        self._pending: list[ConnectionActor] = []
        initial = list(symbols)
        for start in range(0, len(initial), self.group_size):
            self._new_actor(initial[start : start + self.group_size])
        self._nursery: trio.Nursery | None = None

    def _new_actor(self, symbols: list[str]) -> ConnectionActor:
        actor = self._make_actor(f"c{next(self._ids)}", symbols)
        actor.on_ws = self._ws_changed
        if not self.actors:
            actor.carries_global = True
            self._carrier = actor
        self.actors.append(actor)
        self._pending.append(actor)
        return actor

    @property
    def carrier(self) -> ConnectionActor | None:
        """The group carrying the feed-wide streams (None while no WebSocket session is up)."""
        return self._carrier

    def _ws_changed(self, actor: ConnectionActor, up: bool) -> None:
        # Synchronous, from the group's own task: a session just started (before its first
        # SUBSCRIBE) or ended (its connection closed).
        if up:
            if self._carrier is None:
                self._carrier = actor
                self.handovers += 1
                actor.carry_global()
            return
        if actor is not self._carrier:
            return
        actor.drop_global()
        self._carrier = None
        for other in self.actors:
            if other is not actor and other.streaming:
                self._carrier = other
                self.handovers += 1
                other.carry_global()
                return
        if global_streams(actor.settings.channels):
            log.warning(
                "connection %s stopped carrying the feed-wide streams and no other WebSocket "
                "is up: liquidations pause until one is",
                actor.id,
            )

    def use_realtime_depth(self, symbol: str) -> None:
        """Move ``symbol`` off the aggregated depth stream (see the reconciler's fallback)."""
        actor = self.actor_of(symbol)
        if actor is not None:
            actor.use_realtime_depth(symbol)

    def actor_of(self, symbol: str) -> ConnectionActor | None:
        for actor in self.actors:
            if symbol in actor._symbols:
                return actor
        return None

    def add(self, symbol: str) -> None:
        """Carry a new symbol: on a group with room, else on a new connection."""
        if self.actor_of(symbol) is not None:
            return
        for actor in self.actors:
            if len(actor) < self.group_size:
                actor.add(symbol)
                return
        actor = self._new_actor([symbol])
        if self._nursery is not None:
            self._pending.remove(actor)
            self._nursery.start_soon(actor.run)

    def remove(self, symbol: str) -> None:
        actor = self.actor_of(symbol)
        if actor is None:
            return
        actor.remove(symbol)
        if not len(actor):
            # An empty group holds a connection for nothing.
            actor.cancel_scope.cancel()
            self.actors.remove(actor)
            if actor is self._carrier:
                self._ws_changed(actor, False)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Start every group (concurrently) and run them; ready once each has started."""
        async with trio.open_nursery() as nursery:
            if self.poller is not None:
                nursery.start_soon(self.poller.run)
            pending, self._pending = self._pending, []
            remaining = len(pending)
            all_started = trio.Event()
            if not remaining:
                all_started.set()

            async def start(actor: ConnectionActor) -> None:
                nonlocal remaining
                await nursery.start(actor.run)
                remaining -= 1
                if remaining == 0:
                    all_started.set()

            for actor in pending:
                nursery.start_soon(start, actor)
            await all_started.wait()
            self._nursery = nursery
            task_status.started()
            await trio.sleep_forever()

    def statistics(self) -> list[dict[str, object]]:
        return [{"symbols": actor.symbols, **attrs.asdict(actor.health)} for actor in self.actors]
