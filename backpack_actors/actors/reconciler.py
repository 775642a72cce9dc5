"""The book reconciler: ONE inbox, every symbol's BookSync and TradeSync; never awaits REST.

It turns the pure state machines' actions into public events (put on the consumer's
:class:`EventQueue`) and into REST requests for the snapshot actor (``send_nowait``; at most one
outstanding snapshot and one backfill per symbol, so the request channel never fills).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping

import msgspec
import trio

from backpack_actors.actors.emitter import EventQueue
from backpack_actors.actors.messages import (
    BackfillDone,
    BackfillRequest,
    FrameBatch,
    FrameError,
    InboxMessage,
    RestRequest,
    RestTrades,
    SnapshotFailed,
    SnapshotReady,
    SnapshotRequest,
    StreamNews,
    StreamStarted,
)
from backpack_actors.core import sync as bsync
from backpack_actors.core import trades as tsync
from backpack_actors.core.events import (
    BookDelta,
    BookSnapshot,
    Event,
    ProtocolErrorEvent,
    Side,
    StatusEvent,
    StatusKind,
    Trade,
)
from backpack_actors.core.symbols import MarketInfo
from backpack_actors.core.sync import Status as BookStatus
from backpack_actors.core.wire import DepthEvent, TradeEvent
from backpack_actors.errors import excerpt

__all__ = ["Reconciler"]

log = logging.getLogger(__name__)


class _Symbol:
    __slots__ = ("backfill", "book", "info", "mode", "snapshot_pending", "trades")

    def __init__(self, info: MarketInfo) -> None:
        self.info = info
        self.book: bsync.BookSync[DepthEvent] = bsync.BookSync(info.exchange_id)
        self.trades = tsync.TradeSync(info.exchange_id)
        self.mode = "ws"
        self.snapshot_pending = False
        # The trade-id range of the backfill in flight (at most one per symbol), or None.
        self.backfill: tuple[int, int] | None = None


class Reconciler:
    """Owns the per-symbol state machines; see the module docstring."""

    def __init__(
        self,
        *,
        markets: Mapping[str, MarketInfo],
        out: EventQueue | None,
        requests: trio.MemorySendChannel[RestRequest],
        wall_clock: Callable[[], float],
        book_depth: int = 0,
        trades: bool = True,
        books: bool = True,
        recorder: Callable[[InboxMessage, float], None] | None = None,
    ) -> None:
        self._recorder = recorder
        self._symbols = {sym: _Symbol(info) for sym, info in markets.items()}
        # Events carry normalized symbols; conflation asks for books by that name.
        self._by_normalized = {st.info.normalized: st for st in self._symbols.values()}
        self.out = out
        self._requests = requests
        self._wall_clock = wall_clock
        self._depth = book_depth or None
        self._want_trades = trades
        self._want_books = books
        self.protocol_errors: dict[str, int] = {}
        self.request_overflows = 0
        self.frames = 0

    # -- introspection --------------------------------------------------------------------------

    def book_sync(self, symbol: str) -> bsync.BookSync[DepthEvent]:
        """The state machine of ``symbol`` (exchange id), for tests and statistics."""
        return self._symbols[symbol].book

    def trade_sync(self, symbol: str) -> tsync.TradeSync:
        return self._symbols[symbol].trades

    def snapshot_event(self, symbol: str, reason: str = "conflated") -> BookSnapshot | None:
        """The current book of a LIVE (or REST-only) symbol as an event; None while resyncing.

        ``symbol`` is an exchange id (``BTC_USDC``) or the normalized form (``BTC-USDC``).
        """
        state = self._symbols.get(symbol) or self._by_normalized.get(symbol)
        if state is None:
            return None
        sync = state.book
        if sync.state is not bsync.SyncState.LIVE or sync.last_update_id is None:
            return None
        return self._snapshot(state, sync.last_update_id, reason, sync.last_engine_time_us)

    def statistics(self) -> dict[str, object]:
        return {
            "frames": self.frames,
            "protocol_errors": dict(self.protocol_errors),
            "request_overflows": self.request_overflows,
            "symbols": {
                sym: {
                    "state": st.book.state.value,
                    "mode": st.mode,
                    "last_update_id": st.book.last_update_id,
                    "book": st.book.counts(),
                    "trades": dict(st.trades.counters),
                }
                for sym, st in self._symbols.items()
            },
        }

    # -- the actor ------------------------------------------------------------------------------

    async def run(
        self,
        inbox: trio.MemoryReceiveChannel[InboxMessage],
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        task_status.started()
        async for message in inbox:
            await self.handle(message)

    async def handle(self, message: InboxMessage) -> None:
        """Process one inbox message (public so replay and tests can drive it directly)."""
        if self._recorder is not None:
            self._recorder(message, self._wall_clock())
        state = self._symbols.get(message.symbol)
        if state is None:
            log.warning("message for unknown symbol %r dropped", message.symbol)
            return
        if isinstance(message, FrameBatch):
            await self._on_frames(state, message)
        elif isinstance(message, StreamStarted):
            await self._on_stream_started(state, message)
        elif isinstance(message, SnapshotReady):
            await self._on_snapshot(state, message)
        elif isinstance(message, SnapshotFailed):
            state.snapshot_pending = False
            await self._book_actions(state, state.book.on_snapshot_failed(message.reason), 0.0)
        elif isinstance(message, BackfillDone):
            asked, state.backfill = state.backfill, None
            gap = state.trades.pending
            if gap is not None and asked is not None and gap != asked:
                # The gap this answers was closed by late live trades and another one opened
                # meanwhile: ask for the open one rather than calling its ids unrecoverable.
                self._request_backfill(state, *gap)
                return
            actions = (
                state.trades.on_backfill(message.trades)
                if message.error is None
                else state.trades.on_backfill_failed(message.error)
            )
            await self._trade_actions(state, actions, message.received_at)
        elif isinstance(message, RestTrades):
            actions = state.trades.on_rest_trades(message.trades)
            await self._trade_actions(state, actions, message.received_at)
        elif isinstance(message, StreamNews):
            await self._status(state, message.kind, message.reason, message.counts)
        elif isinstance(message, FrameError):
            await self._protocol_error(state, message.stream, message.reason, message.excerpt)

    async def _protocol_error(self, state: _Symbol, stream: str, reason: str, excerpt: str) -> None:
        symbol = state.info.exchange_id
        count = self.protocol_errors.get(symbol, 0) + 1
        self.protocol_errors[symbol] = count
        await self._put(
            ProtocolErrorEvent(
                symbol=state.info.normalized,
                stream=stream,
                reason=reason,
                excerpt=excerpt,
                count=count,
                at=self._wall_clock(),
            )
        )

    async def _on_stream_started(self, state: _Symbol, message: StreamStarted) -> None:
        state.mode = message.mode
        if message.mode == "rest":
            # REST-only: books come as whole snapshots from the poller; old WS frames are stale.
            state.book.enter_rest_mode(message.epoch)
            return
        await self._book_actions(state, state.book.stream_started(message.epoch), 0.0)

    async def _on_frames(self, state: _Symbol, batch: FrameBatch) -> None:
        # The hot path. Plain in-order frames become events collected in one list and handed to
        # the queue once per batch; anything unusual flushes that list first so order is kept.
        sync = state.book
        trades = state.trades
        info = state.info
        symbol = info.normalized
        exchange_id = info.exchange_id
        received_at = batch.received_at
        epoch = batch.epoch
        want_books = self._want_books
        want_trades = self._want_trades
        sell, buy = Side.SELL, Side.BUY
        self.frames += len(batch.frames)
        events: list[Event] = []
        append = events.append
        for frame in batch.frames:
            if type(frame) is DepthEvent:
                actions = sync.on_delta_fast(epoch, frame)
                if actions is None:
                    if want_books:
                        # _book_delta inlined, positional: this runs for every depth frame.
                        append(
                            BookDelta(
                                symbol,
                                exchange_id,
                                frame.first_update_id,
                                frame.last_update_id,
                                frame.bids,
                                frame.asks,
                                frame.event_time,
                                frame.engine_time,
                                received_at,
                            )
                        )
                    continue
                if events:
                    await self._put_many(events)
                    events = []
                    append = events.append
                await self._book_actions(state, actions, received_at)
            elif isinstance(frame, TradeEvent):
                if trades.accept_in_order(frame):
                    if want_trades:
                        append(
                            Trade(
                                symbol,
                                exchange_id,
                                frame.trade_id,
                                frame.price,
                                frame.quantity,
                                sell if frame.buyer_is_maker else buy,
                                frame.event_time,
                                frame.engine_time,
                                received_at,
                            )
                        )
                    continue
                if events:
                    await self._put_many(events)
                    events = []
                    append = events.append
                await self._trade_actions(state, trades.on_trade(epoch, frame), received_at)
        if events:
            await self._put_many(events)

    async def _on_snapshot(self, state: _Symbol, message: SnapshotReady) -> None:
        state.snapshot_pending = False
        sync = state.book
        if state.mode == "rest":
            actions = sync.on_rest_snapshot(message.snapshot)
        else:
            actions = sync.on_snapshot(message.snapshot)
        await self._book_actions(state, actions, message.received_at)

    # -- actions -> events and requests ---------------------------------------------------------

    async def _book_actions(
        self, state: _Symbol, actions: Iterable[bsync.Action[DepthEvent]], received_at: float
    ) -> None:
        for action in actions:
            if isinstance(action, bsync.PublishDelta):
                if self._want_books:
                    delta = action.delta
                    assert isinstance(delta, DepthEvent)
                    await self._put(self._delta_event(state, delta, received_at))
            elif isinstance(action, bsync.PublishSnapshot):
                if self._want_books:
                    await self._put(
                        self._snapshot(
                            state, action.update_id, action.reason, action.engine_time_us
                        )
                    )
            elif isinstance(action, bsync.RequestSnapshot):
                if not state.snapshot_pending:
                    state.snapshot_pending = True
                    self._request(
                        SnapshotRequest(state.info.exchange_id, action.reason, action.retry)
                    )
            elif isinstance(action, bsync.Status):
                await self._status(state, action.kind, action.reason, action.counts)
            elif isinstance(action, bsync.Malformed):
                await self._malformed(state, action)

    async def _trade_actions(
        self, state: _Symbol, actions: Iterable[tsync.TradeAction], received_at: float
    ) -> None:
        info = state.info
        for action in actions:
            if isinstance(action, tsync.EmitTrade):
                if self._want_trades:
                    await self._put(
                        Trade(
                            symbol=info.normalized,
                            exchange_symbol=info.exchange_id,
                            trade_id=action.trade_id,
                            raw_price=action.price,
                            raw_amount=action.amount,
                            side=action.side,
                            event_time_us=action.event_time_us,
                            engine_time_us=action.engine_time_us,
                            received_at=received_at,
                            backfilled=action.backfilled,
                        )
                    )
            elif isinstance(action, tsync.RequestBackfill):
                # With one in flight, the answer's handler re-asks for whatever gap is open then.
                if state.backfill is None:
                    self._request_backfill(state, action.first_missing, action.last_missing)
            elif isinstance(action, BookStatus):
                await self._status(state, action.kind, action.reason, action.counts)
            elif isinstance(action, bsync.Malformed):
                await self._malformed(state, action)

    async def _malformed(self, state: _Symbol, action: bsync.Malformed) -> None:
        # A frame that decoded but whose content is unusable: one report, like undecodable ones.
        await self._protocol_error(
            state, action.stream, action.reason, excerpt(msgspec.json.encode(action.frame))
        )

    def _request_backfill(self, state: _Symbol, first: int, last: int) -> None:
        state.backfill = (first, last)
        self._request(BackfillRequest(state.info.exchange_id, first, last))

    def _request(self, request: RestRequest) -> None:
        try:
            self._requests.send_nowait(request)
        except trio.WouldBlock:
            # Cannot happen with one outstanding request per symbol and kind and a channel sized
            # for that; counted rather than silently dropped if the invariant is ever broken.
            self.request_overflows += 1
            log.error("snapshot request channel full; dropped %r", request)

    # -- event construction ---------------------------------------------------------------------

    def _delta_event(self, state: _Symbol, delta: DepthEvent, received_at: float) -> BookDelta:
        return _book_delta(state.info.normalized, state.info.exchange_id, delta, received_at)

    def _snapshot(
        self, state: _Symbol, update_id: int, reason: str, engine_time_us: int | None
    ) -> BookSnapshot:
        bids, asks = state.book.book.depth(self._depth)
        return BookSnapshot(
            symbol=state.info.normalized,
            exchange_symbol=state.info.exchange_id,
            update_id=update_id,
            raw_bids=bids,
            raw_asks=asks,
            engine_time_us=engine_time_us,
            received_at=self._wall_clock(),
            reason=reason,
        )

    async def _status(
        self, state: _Symbol, kind: StatusKind, reason: str, counts: Mapping[str, int]
    ) -> None:
        await self._put(
            StatusEvent(
                symbol=state.info.normalized,
                kind=kind,
                reason=reason,
                counts=dict(counts),
                at=self._wall_clock(),
            )
        )

    async def _put(self, event: Event) -> None:
        if self.out is not None:
            await self.out.put(event)

    async def _put_many(self, events: list[Event]) -> None:
        if self.out is not None:
            await self.out.put_many(events)


def _book_delta(symbol: str, exchange_id: str, delta: DepthEvent, received_at: float) -> BookDelta:
    """The public event for an applied depth frame (levels shared, not copied: both immutable)."""
    return BookDelta(
        symbol=symbol,
        exchange_symbol=exchange_id,
        first_update_id=delta.first_update_id,
        last_update_id=delta.last_update_id,
        raw_bids=delta.bids,
        raw_asks=delta.asks,
        event_time_us=delta.event_time,
        engine_time_us=delta.engine_time,
        received_at=received_at,
    )
