"""Per-symbol stream actors: a WebSocket reader, and the REST-only poller that replaces it.

:func:`run_symbol_stream` is the supervised child for one symbol. It runs the WebSocket reader while
the symbol is healthy; after ``max_ws_failures`` consecutive failures (a failure counts only if the
connection had not been stable for ``stable_after`` seconds) it switches the symbol to REST-only
polling, and a background probe promotes it back to WebSocket once a probe connection stays healthy
for ``promote_healthy_after`` seconds. Each (re)connection and each mode switch is announced to the
reconciler as a :class:`StreamStarted` with a fresh epoch *before* its first frame.

Overflow policy of the stream → reconciler edge: the reader never blocks on the reconciler (a
blocked reader stops answering pings); if the inbox is full it raises
:class:`StreamOverflowError`, the supervisor restarts the stream and the new epoch forces a resync.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence

import attrs
import msgspec
import trio

from backpack_actors.actors.messages import (
    FrameBatch,
    FrameError,
    InboxMessage,
    RestTrades,
    SnapshotReady,
    StreamNews,
    StreamStarted,
)
from backpack_actors.actors.rest_gateway import RestGateway
from backpack_actors.core.events import StatusKind
from backpack_actors.core.wire import MARKET_DATA_DECODER, DepthEvent, TradeEvent, decode_ws_frame
from backpack_actors.errors import (
    ExchangeRequestError,
    ProtocolError,
    StreamOverflowError,
    StreamStaleError,
    TransientError,
    excerpt,
)
from backpack_actors.transport.rest import RestClient
from backpack_actors.transport.ws import WsConnector

__all__ = [
    "StreamContext",
    "StreamSettings",
    "SymbolHealth",
    "decode_read",
    "run_symbol_stream",
    "subscribe_frame",
]

log = logging.getLogger(__name__)


@attrs.frozen
class StreamSettings:
    """Tunables of one symbol's stream (from FeedConfig)."""

    trades: bool = True
    book: bool = True
    stale_timeout: float = 30.0
    max_ws_failures: int = 5
    stable_after: float = 30.0
    websocket: bool = True
    snapshot_interval: float = 30.0
    rest_poll_interval: float = 1.0
    promote_probe_interval: float = 60.0
    promote_healthy_after: float = 30.0
    record_raw: bool = False
    """Attach each socket read's raw texts to its FrameBatch (for a recorder)."""


@attrs.define
class SymbolHealth:
    """Survives restarts of the symbol's child: failure count and mode."""

    symbol: str
    rest_only: bool = False
    consecutive_failures: int = 0
    connected_at: float | None = None
    reconnects: int = 0
    degradations: int = 0
    promotions: int = 0
    frames: int = 0
    decode_errors: int = 0

    def record_failure(self, now: float, stable_after: float) -> int:
        if self.connected_at is not None and now - self.connected_at >= stable_after:
            self.consecutive_failures = 0
        self.connected_at = None
        self.consecutive_failures += 1
        return self.consecutive_failures


def subscribe_frame(symbol: str, *, trades: bool, book: bool) -> str:
    streams = []
    if trades:
        streams.append(f"trade.{symbol}")
    if book:
        streams.append(f"depth.{symbol}")
    return msgspec.json.encode({"method": "SUBSCRIBE", "params": streams}).decode()


@attrs.frozen
class StreamContext:
    """Everything one symbol's stream child works with; survives nothing but ``health``."""

    symbol: str
    connector: WsConnector
    inbox: trio.MemorySendChannel[InboxMessage]
    gateway: RestGateway
    client: RestClient
    settings: StreamSettings
    health: SymbolHealth
    epochs: Iterator[int]
    wall_clock: Callable[[], float]

    def offer(self, message: InboxMessage) -> None:
        """Hand a message to the reconciler without ever blocking the reader."""
        try:
            self.inbox.send_nowait(message)
        except trio.WouldBlock:
            raise StreamOverflowError("reconciler inbox full; restarting the stream") from None


async def run_symbol_stream(
    ctx: StreamContext, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    """The supervised child for one symbol: WebSocket while healthy, REST-only otherwise."""
    started = False

    def mark_started() -> None:
        nonlocal started
        if not started:
            started = True
            task_status.started()

    settings, health = ctx.settings, ctx.health
    while True:
        if health.rest_only or not settings.websocket:
            if not await _run_rest_poller(ctx, mark_started):
                return
            continue
        try:
            await _run_ws(ctx, mark_started)
        except TransientError as exc:
            failures = health.record_failure(trio.current_time(), settings.stable_after)
            health.reconnects += 1
            if failures >= settings.max_ws_failures:
                health.rest_only = True
                health.degradations += 1
                await ctx.inbox.send(
                    StreamNews(
                        ctx.symbol,
                        StatusKind.DEGRADED_REST_ONLY,
                        f"{failures} consecutive WebSocket failures, last: {exc}",
                        {"failures": failures},
                    )
                )
                continue
            kind = (
                StatusKind.STALE if isinstance(exc, StreamStaleError) else StatusKind.RECONNECTING
            )
            await ctx.inbox.send(
                StreamNews(
                    ctx.symbol,
                    kind,
                    str(exc),
                    {"failures": failures, "reconnects": health.reconnects},
                )
            )
            raise


async def _run_ws(ctx: StreamContext, mark_started: Callable[[], None]) -> None:
    symbol, settings, health = ctx.symbol, ctx.settings, ctx.health
    async with ctx.connector() as conn:
        epoch = next(ctx.epochs)
        await ctx.inbox.send(StreamStarted(symbol, epoch, "ws"))
        await conn.send(subscribe_frame(symbol, trades=settings.trades, book=settings.book))
        health.connected_at = trio.current_time()
        mark_started()
        record_raw = settings.record_raw
        offer = ctx.offer
        wall_clock = ctx.wall_clock
        # The last depth id this connection delivered, or (before any) the exchange's id seen
        # at the previous silent spell: what "the exchange moved on without us" is judged by.
        reference: int | None = None
        while True:
            with trio.move_on_after(settings.stale_timeout) as scope:
                batch = await conn.receive_batch()
            if scope.cancelled_caught:
                reference = await _check_silence(ctx, reference)
                continue
            received_at = wall_clock()
            frames, errors = decode_read(symbol, batch)
            undecodable = bool(errors)
            if errors:
                health.decode_errors += len(errors)
                for error in errors:
                    offer(error)
            health.frames += len(frames)
            for data in reversed(frames):
                if type(data) is DepthEvent:
                    reference = data.last_update_id
                    break
            if record_raw:
                # A recording keeps undecodable reads too (an empty batch changes no state).
                if frames or undecodable:
                    offer(FrameBatch(symbol, epoch, frames, received_at, tuple(batch)))
            elif frames:
                offer(FrameBatch(symbol, epoch, frames, received_at))


def decode_read(
    symbol: str, batch: Sequence[str | bytes]
) -> tuple[list[DepthEvent | TradeEvent], list[FrameError]]:
    """Decode one socket read of ``symbol``'s connection: its depth/trade frames, in order, and
    one :class:`FrameError` per frame that cannot be used. Other data (unknown events) is ignored.

    Raises :class:`ExchangeRequestError` on an error frame: the exchange refused the subscription.
    """
    frames: list[DepthEvent | TradeEvent] = []
    errors: list[FrameError] = []
    append = frames.append
    decode = MARKET_DATA_DECODER.decode
    for raw in batch:
        try:
            data = decode(raw).data
        except Exception:  # any failure: _decode_other classifies it
            data = None
        if (type(data) is DepthEvent or type(data) is TradeEvent) and data.symbol == symbol:
            append(data)
        else:
            _decode_other(symbol, raw, errors)
    return frames, errors


def _decode_other(symbol: str, raw: str | bytes, errors: list[FrameError]) -> None:
    # Everything but this market's depth/trade frames, through the full decoder: errors become
    # FrameErrors, unknown events and pongs are ignored, an error frame raises.
    try:
        frame = decode_ws_frame(raw)
    except ProtocolError as exc:
        errors.append(FrameError(symbol, exc.stream, exc.reason, exc.excerpt))
        return
    data = frame.data
    if type(data) is DepthEvent or type(data) is TradeEvent:
        # Ids are per market: applying another market's frame would corrupt this book, and
        # routing by content is not this connection's job.
        errors.append(
            FrameError(
                symbol,
                frame.stream or "ws",
                f"frame for {data.symbol!r} on {symbol}'s connection",
                excerpt(raw),
            )
        )
    elif frame.error is not None:
        # The exchange refused our subscription: retrying the same frame won't help.
        raise ExchangeRequestError(
            "ws", 200, str(frame.error.code), f"{symbol}: {frame.error.message}"
        )


async def _check_silence(ctx: StreamContext, reference: int | None) -> int | None:
    """A silent stream is stale only if the exchange moved on: ask REST where the book is.

    A quiet market (nothing traded or quoted) keeps its connection; a stream that stopped
    delivering while the book moved is reconnected (the new epoch forces a resync).
    """
    settings = ctx.settings
    silent = f"{ctx.symbol}: no frame for {settings.stale_timeout:g} s"
    if not settings.book:
        raise StreamStaleError(f"{silent}; reconnecting")
    snapshot = await ctx.gateway.call(
        f"depth {ctx.symbol} (silence check)", lambda: ctx.client.depth(ctx.symbol), max_attempts=3
    )
    now = snapshot.last_update_id
    if reference is not None and now > reference:
        raise StreamStaleError(
            f"{silent} while the exchange moved from update {reference} to {now}; reconnecting"
        )
    return now if reference is None else reference


async def _run_rest_poller(ctx: StreamContext, mark_started: Callable[[], None]) -> bool:
    """Poll snapshots and trades over REST; True when a WebSocket probe succeeded (promote)."""
    symbol, settings, health = ctx.symbol, ctx.settings, ctx.health
    gateway, client, inbox = ctx.gateway, ctx.client, ctx.inbox
    await inbox.send(StreamStarted(symbol, next(ctx.epochs), "rest"))
    mark_started()
    promoted = False
    snapshot_every = settings.snapshot_interval if settings.snapshot_interval > 0 else 5.0
    async with trio.open_nursery() as nursery:

        async def poll_book() -> None:
            while True:
                snapshot = await gateway.call(f"depth {symbol}", lambda: client.depth(symbol))
                await inbox.send(SnapshotReady(symbol, snapshot, "rest_only", ctx.wall_clock()))
                await trio.sleep(snapshot_every)

        async def poll_trades() -> None:
            while True:
                trades = await gateway.call(
                    f"trades {symbol}", lambda: client.recent_trades(symbol, 1000)
                )
                await inbox.send(RestTrades(symbol, trades, ctx.wall_clock()))
                await trio.sleep(settings.rest_poll_interval)

        async def probe() -> None:
            nonlocal promoted
            while True:
                await trio.sleep(settings.promote_probe_interval)
                if await _probe_ws(ctx):
                    promoted = True
                    nursery.cancel_scope.cancel()
                    return

        if settings.book:
            nursery.start_soon(poll_book)
        if settings.trades:
            nursery.start_soon(poll_trades)
        if settings.websocket:
            nursery.start_soon(probe)
    if promoted:
        health.rest_only = False
        health.consecutive_failures = 0
        health.promotions += 1
        await inbox.send(
            StreamNews(
                symbol,
                StatusKind.RECOVERED_WS,
                f"WebSocket healthy for {settings.promote_healthy_after:g} s; leaving REST-only",
                {"promotions": health.promotions},
            )
        )
    return promoted


async def _probe_ws(ctx: StreamContext) -> bool:
    """Connect, subscribe and require frames without error for ``promote_healthy_after`` s."""
    settings = ctx.settings
    try:
        async with ctx.connector() as conn:
            await conn.send(subscribe_frame(ctx.symbol, trades=settings.trades, book=settings.book))
            with trio.move_on_after(settings.promote_healthy_after):
                while True:
                    with trio.fail_after(settings.stale_timeout):
                        await conn.receive_batch()
            return True
    except (TransientError, trio.TooSlowError) as exc:
        log.info("%s: WebSocket probe failed: %s", ctx.symbol, exc)
        return False
