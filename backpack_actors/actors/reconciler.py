"""Reconciliation: every symbol's BookSync and TradeSync, called synchronously, never awaiting.

The connection actors call :meth:`Reconciler.on_frames` with each socket read's frames, the REST
actor calls :meth:`Reconciler.handle` with each answer, and the metadata actor adds and removes
symbols. Nothing here awaits, so trio's single thread makes every call atomic: a message is
applied and its events are published (to the emitter, synchronously) before anything else runs.
That is what lets a subscriber's conflated snapshot be built from the live book at any moment.

This replaced the single reconciler *task* with one inbox: that inbox was a channel hop and a
scheduler pass per socket read, and its overflow restarted every stream at 300 markets (measured,
see docs/architecture.md). REST requests go out through ``request`` (the REST actor's non-blocking
enqueue; at most one outstanding snapshot and one backfill per symbol).
"""

from __future__ import annotations

import bisect
import logging
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import msgspec

from backpack_actors.actors.messages import (
    BackfillDone,
    BackfillRequest,
    FrameBatch,
    FrameError,
    InboxMessage,
    RestChannels,
    RestRequest,
    RestTrades,
    SnapshotFailed,
    SnapshotReady,
    SnapshotRequest,
    StreamNews,
    StreamStarted,
    SymbolAdded,
    SymbolRemoved,
)
from backpack_actors.channels import (
    CANDLE_GRACE_S,
    CANDLE_INTERVALS,
    builders_for,
    candle_grid,
    rest_candle,
    rest_mark_price,
    rest_open_interest,
    rest_ticker,
)
from backpack_actors.core import sync as bsync
from backpack_actors.core import trades as tsync
from backpack_actors.core.events import (
    BookDelta,
    BookSnapshot,
    BookTicker,
    Candle,
    Event,
    IntervalSnapshot,
    ProtocolErrorEvent,
    Side,
    StatusEvent,
    StatusKind,
    Trade,
)
from backpack_actors.core.symbols import MarketInfo
from backpack_actors.core.sync import Status as BookStatus
from backpack_actors.core.wire import DepthEvent, KlineEvent, MarketData, TradeEvent
from backpack_actors.errors import excerpt

__all__ = ["Reconciler"]

log = logging.getLogger(__name__)

AGGREGATED_GAPS_BEFORE_FALLBACK = 2
"""Gaps on an aggregated depth stream after which a market falls back to the real-time one."""

_NEVER = 2**63
"""A boundary no engine time reaches (interval snapshots off)."""

CLOSED_CANDLES_KEPT = 64
"""Closed candles remembered by start per market and interval (the newest) to refuse a second
copy; older ones are refused when they lie in a span known to be complete (``_ClosedCandles``)."""
CANDLE_GAPS_KEPT = 64
"""Gaps — spans whose candles may be missing — remembered per market and interval. Beyond that
the oldest gap counts as filled: its candles, if REST ever brings them, are refused."""

_OFF_GRID = frozenset(iv for iv in CANDLE_INTERVALS if candle_grid(iv) is None)
"""Candle intervals whose buckets are not known to lie on the epoch grid (``candle_grid``)."""

Publish = Callable[[list[Event]], None]
Request = Callable[[RestRequest], None]


class _ClosedCandles:
    """The closed candles of one market and interval published so far, and where none is missing.

    The stream and REST polls can both deliver a candle (around a fallback, a promotion or a
    reconnect), and a REST catch-up may land after newer candles from the stream. ``starts`` are
    the newest published starts; ``known`` are the spans (µs, a flat sorted list of disjoint
    ``[start, end)`` pairs) in which every candle was published or does not exist: the candles
    published, the buckets between two closes of one subscription (it would have sent any
    other), on the bucket grid those from its start (plus ``CANDLE_GRACE_S``) to its first
    close, and what REST answered for. Between the spans lie the gaps a catch-up must fill; an
    old candle is refused only inside a span, so a gap's candles are taken however late they
    come, and however many newer candles were published meanwhile.
    """

    __slots__ = (
        "floor",
        "known",
        "newest_end",
        "newest_start",
        "starts",
        "stream_end",
        "stream_epoch",
        "under_way",
    )

    def __init__(self) -> None:
        self.starts: set[int] = set()
        self.floor = -1
        self.known: list[int] = []
        self.newest_start = -1
        self.newest_end = 0
        # The subscription (epoch) whose close came last, and that close's end.
        self.stream_epoch = 0
        self.stream_end = 0
        # Off the bucket grid (3d, 1w, 1month): the newest candle seen under way (start, end),
        # which says when the next close is due.
        self.under_way: tuple[int, int] | None = None

    def published(self, start_us: int) -> bool:
        if start_us in self.starts:
            return True
        return start_us <= self.floor and self.is_known(start_us)

    def is_known(self, moment_us: int) -> bool:
        return bisect.bisect_right(self.known, moment_us) % 2 == 1

    def first_missing(self, moment_us: int) -> int:
        """``moment_us``, or the end of the span holding it: where a candle may be missing."""
        known = self.known
        i = bisect.bisect_right(known, moment_us)
        return known[i] if i % 2 else moment_us

    def saw_under_way(self, start_us: int, end_us: int) -> None:
        if self.under_way is None or start_us >= self.under_way[0]:
            self.under_way = (start_us, end_us)

    def add(self, start_us: int, end_us: int) -> None:
        """A closed candle published."""
        if self.under_way == (start_us, end_us):
            self.under_way = None
        self.starts.add(start_us)
        if start_us > self.newest_start:
            self.newest_start, self.newest_end = start_us, end_us
        if len(self.starts) > CLOSED_CANDLES_KEPT:
            oldest = min(self.starts)
            self.starts.discard(oldest)
            self.floor = max(self.floor, oldest)
        self.add_known(start_us, end_us)

    def add_known(self, start_us: int, end_us: int) -> None:
        """No candle is missing in ``[start_us, end_us)``: merged with the spans it touches."""
        if start_us >= end_us:
            return
        known = self.known
        i = bisect.bisect_left(known, start_us)
        if i % 2:  # inside a span, or touching its end
            i -= 1
            start_us = known[i]
        j = bisect.bisect_right(known, end_us)
        if j % 2:  # inside a span, or touching its start
            end_us = known[j]
            j += 1
        known[i:j] = (start_us, end_us)
        if len(known) > 2 * (CANDLE_GAPS_KEPT + 1):
            del known[1:3]  # the oldest gap counts as filled (CANDLE_GAPS_KEPT)


class _Symbol:
    __slots__ = (
        "aggregated_gaps",
        "backfill",
        "book",
        "candles",
        "info",
        "mode",
        "next_boundary",
        "polled",
        "rx_mono",
        "rx_ns",
        "snapshot_pending",
        "trades",
        "ws_epoch",
        "ws_since",
    )

    def __init__(self, info: MarketInfo, side_cap: int) -> None:
        self.info = info
        bounds = info.bounds
        self.book: bsync.BookSync[DepthEvent] = bsync.BookSync(
            info.exchange_id, bounds=bounds, side_cap=side_cap
        )
        self.trades = tsync.TradeSync(info.exchange_id, bounds=bounds)
        self.mode = "ws"
        # REST-only: whether a trade poll was answered yet (the first answer is history).
        self.polled = False
        self.snapshot_pending: str | None = None
        # The trade-id range of the backfill in flight (at most one per symbol), or None.
        self.backfill: tuple[int, int] | None = None
        # Receipt stamps (wall and monotonic ns) of the last message applied to this symbol:
        # what an event built from the symbol's state (a snapshot) was received with.
        self.rx_ns = 0
        self.rx_mono = 0
        # Interval snapshots: the next exchange-time boundary (µs) a depth frame may cross.
        self.next_boundary = _NEVER
        # Gaps seen on an aggregated depth stream; -1 once the symbol fell back to real time.
        self.aggregated_gaps = 0
        # Per candle interval: the closed candles published (one copy each, stream or REST).
        self.candles: dict[str, _ClosedCandles] = {}
        # The current WebSocket subscription (epoch) and the wall time it started: any bucket
        # that closed CANDLE_GRACE_S after it would have come on it.
        self.ws_epoch = 0
        self.ws_since = 0.0


class Reconciler:
    """Owns the per-symbol state machines; see the module docstring."""

    def __init__(
        self,
        *,
        markets: Mapping[str, MarketInfo],
        publish: Publish,
        request: Request,
        wall_clock: Callable[[], float],
        book_depth: int = 0,
        trades: bool = True,
        books: bool = True,
        channels: Sequence[str] = (),
        book_snapshots: tuple[int, int] | None = None,
        snapshot_side_levels: int = bsync.SNAPSHOT_SIDE_CAP,
        depth_stream: str = "realtime",
        on_depth_fallback: Callable[[str], None] | None = None,
        recorder: Callable[[InboxMessage, float], None] | None = None,
    ) -> None:
        self._aggregated = depth_stream != "realtime"
        self._on_depth_fallback = on_depth_fallback
        self._recorder = recorder
        self._side_cap = snapshot_side_levels
        # Interval snapshots (depth, interval): µs between exchange-time boundaries, 0 = off.
        depth, interval_ms = book_snapshots or (0, 0)
        self._interval_us = interval_ms * 1000
        self._interval_depth = depth or None
        # The depth a consumer asked for: the valid window must cover it (0: whole book only).
        self._need_depth = max(book_depth, depth if book_snapshots else 0)
        self._symbols: dict[str, _Symbol] = {}
        # Events carry normalized symbols; conflation asks for books by that name.
        self._by_normalized: dict[str, _Symbol] = {}
        for info in markets.values():
            self.add_symbol(info)
        self._publish = publish
        self._request = request
        self._wall_clock = wall_clock
        self._depth = book_depth or None
        self._want_trades = trades
        self._want_books = books
        # Stateless channels (``backpack_actors.channels``): wire type -> public event builder.
        self._builders = builders_for(channels)
        self._rest_wanted = frozenset(c.partition(":")[0] for c in channels)
        self._candle_channels = frozenset(c for c in channels if c.startswith("candles:"))
        self._book_ticker = "book_ticker" in self._rest_wanted
        self.protocol_errors: dict[str, int] = {}
        self.frames = 0
        self._out: list[Event] = []

    # -- symbols ---------------------------------------------------------------------------------

    def add_symbol(self, info: MarketInfo) -> None:
        """Start tracking ``info`` (a no-op when already tracked)."""
        if info.exchange_id in self._symbols:
            return
        state = _Symbol(info, self._side_cap)
        self._symbols[info.exchange_id] = state
        self._by_normalized[info.normalized] = state

    def remove_symbol(self, symbol: str, kind: StatusKind, reason: str) -> None:
        """Stop tracking ``symbol`` and tell consumers why (``delisted``/``unsubscribed``)."""
        state = self._symbols.pop(symbol, None)
        if state is None:
            return
        self._by_normalized.pop(state.info.normalized, None)
        self._status(state, kind, reason, {})
        self._flush()

    def __contains__(self, symbol: object) -> bool:
        return symbol in self._symbols

    def market(self, symbol: str) -> MarketInfo | None:
        """The market of a tracked symbol (exchange id), or None."""
        state = self._symbols.get(symbol)
        return None if state is None else state.info

    @property
    def symbols(self) -> list[str]:
        return list(self._symbols)

    # -- introspection --------------------------------------------------------------------------

    def book_sync(self, symbol: str) -> bsync.BookSync[DepthEvent]:
        """The state machine of ``symbol`` (exchange id), for tests and statistics."""
        return self._symbols[symbol].book

    def trade_sync(self, symbol: str) -> tsync.TradeSync:
        return self._symbols[symbol].trades

    def is_live(self, symbol: str) -> bool:
        state = self._symbols.get(symbol)
        return state is not None and state.book.state is bsync.SyncState.LIVE

    def last_update_id(self, symbol: str) -> int | None:
        state = self._symbols.get(symbol)
        return None if state is None else state.book.last_update_id

    def last_closed_candle_end(self, symbol: str, interval: str) -> int | None:
        """The close time (µs) of the newest closed ``interval`` candle published for ``symbol``."""
        state = self._symbols.get(symbol)
        seen = None if state is None else state.candles.get(interval)
        return None if seen is None or seen.newest_start < 0 else seen.newest_end

    def first_missing_candle(self, symbol: str, interval: str, from_s: int) -> int:
        """The moment (s), at or after ``from_s``, from which ``symbol``'s ``interval`` candles
        may be missing: ``from_s`` itself, or the end of the span from there in which every
        candle was published or does not exist. Where a REST catch-up starts."""
        state = self._symbols.get(symbol)
        seen = None if state is None else state.candles.get(interval)
        if seen is None:
            return from_s
        return max(from_s, seen.first_missing(from_s * 1_000_000) // 1_000_000)

    def candle_under_way(self, symbol: str, interval: str) -> tuple[int, int] | None:
        """Off the bucket grid (``3d``, ``1w``, ``1month``): the start and close (s) of the newest
        ``interval`` candle of ``symbol`` seen under way (stream or REST), if not closed since."""
        state = self._symbols.get(symbol)
        seen = None if state is None else state.candles.get(interval)
        if seen is None or seen.under_way is None:
            return None
        start, end = seen.under_way
        return start // 1_000_000, end // 1_000_000

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

    def outstanding_requests(self) -> list[RestRequest]:
        """What this reconciler waits for (re-sent when a restarted REST actor starts)."""
        out: list[RestRequest] = []
        for symbol, state in self._symbols.items():
            if state.snapshot_pending is not None:
                out.append(SnapshotRequest(symbol, state.snapshot_pending, True))
            if state.backfill is not None:
                out.append(BackfillRequest(symbol, *state.backfill))
        return out

    def statistics(self) -> dict[str, object]:
        return {
            "frames": self.frames,
            "protocol_errors": dict(self.protocol_errors),
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

    # -- input -----------------------------------------------------------------------------------

    def handle(self, message: InboxMessage) -> None:
        """Process one message and publish what it produced (public so replay can drive it)."""
        now = math.nan
        if self._recorder is not None:
            now = self._wall_clock()
            self._recorder(message, now)
        if isinstance(message, SymbolAdded):
            self.add_symbol(message.info)
            self._status(self._symbols[message.symbol], StatusKind.LISTED, message.reason, {})
            self._flush()
            return
        if isinstance(message, SymbolRemoved):
            self.remove_symbol(message.symbol, message.kind, message.reason)
            return
        if isinstance(message, RestChannels):
            self._on_rest_channels(message)
            self._flush()
            return
        state = self._symbols.get(message.symbol)
        if state is None:
            if isinstance(message, FrameError):
                # A frame no symbol can be blamed for (e.g. undecodable before its stream name).
                self._connection_error(message)
                self._flush()
            return
        if isinstance(message, SnapshotReady | BackfillDone | RestTrades):
            state.rx_ns, state.rx_mono = message.received_ns, message.mono_ns
        if isinstance(message, FrameBatch):
            self._on_frames(
                state, message.epoch, message.frames, message.received_ns, message.mono_ns
            )
        elif isinstance(message, StreamStarted):
            # The moment replay hands back (the recorded one), so candles replay identically.
            self._on_stream_started(state, message, self._wall_clock() if math.isnan(now) else now)
        elif isinstance(message, SnapshotReady):
            self._on_snapshot(state, message)
        elif isinstance(message, SnapshotFailed):
            self._on_snapshot_failed(state, message)
        elif isinstance(message, BackfillDone):
            self._on_backfill(state, message)
        elif isinstance(message, RestTrades):
            self._on_rest_trades(state, message)
        elif isinstance(message, StreamNews):
            self._status(state, message.kind, message.reason, message.counts)
        elif isinstance(message, FrameError):
            self._protocol_error(state, message.stream, message.reason, message.excerpt)
        self._flush()

    def on_frames(
        self,
        symbol: str,
        epoch: int,
        frames: list[MarketData],
        received_ns: int,
        raw: Sequence[str | bytes] = (),
        mono_ns: int = 0,
    ) -> None:
        """One socket read's frames of ``symbol``: the hot path (a FrameBatch, unwrapped)."""
        if self._recorder is not None:
            self.handle(FrameBatch(symbol, epoch, frames, received_ns, tuple(raw), mono_ns))
            return
        state = self._symbols.get(symbol)
        if state is not None:
            self._on_frames(state, epoch, frames, received_ns, mono_ns)
            # _flush, inlined: this runs once per socket read.
            out = self._out
            if out:
                self._out = []
                self._publish(out)

    def _flush(self) -> None:
        out = self._out
        if out:
            self._out = []
            self._publish(out)

    # -- handlers --------------------------------------------------------------------------------

    def _on_frames(
        self,
        state: _Symbol,
        epoch: int,
        frames: list[MarketData],
        received_ns: int,
        mono_ns: int,
    ) -> None:
        # The hot path: events are built positionally into the one output list.
        state.rx_ns = received_ns
        state.rx_mono = mono_ns
        sync = state.book
        trades = state.trades
        info = state.info
        symbol = info.normalized
        exchange_id = info.exchange_id
        want_books = self._want_books
        want_trades = self._want_trades
        sell, buy = Side.SELL, Side.BUY
        self.frames += len(frames)
        append = self._out.append
        for frame in frames:
            if type(frame) is DepthEvent:
                if frame.engine_time >= state.next_boundary:
                    self._interval_snapshot(state, frame.engine_time)
                actions = sync.on_delta_fast(epoch, frame)
                if actions is None:
                    if want_books:
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
                                received_ns,
                                mono_ns,
                            )
                        )
                    continue
                self._book_actions(state, actions)
            elif type(frame) is TradeEvent:
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
                                received_ns,
                                False,
                                mono_ns,
                            )
                        )
                    continue
                self._trade_actions(state, trades.on_trade(epoch, frame))
            else:
                # A stateless channel's frame: one event each (unless not asked for).
                build = self._builders.get(type(frame))
                if build is not None:
                    event = build(frame, info, received_ns, mono_ns)
                    if type(frame) is not KlineEvent or self._new_candle(state, event, epoch):
                        append(event)
        if self._need_depth:
            self._check_window(state)

    def _check_window(self, state: _Symbol) -> None:
        # The consumer asked for a depth: its levels must lie inside the valid window; once they
        # would not, fetch a snapshot to renew it (published snapshots never include levels
        # beyond the window meanwhile, see _snapshot).
        # Only recorded state decides (not ``snapshot_pending``, which unrecorded refresh timers
        # touch): BookSync itself allows one refetch at a time, spaced on engine time.
        sync = state.book
        floor, ceiling = sync.bid_floor, sync.ask_ceiling
        if (floor is None and ceiling is None) or state.mode == "rest":
            return
        # O(1): the n-th best level of each bounded side must lie inside the window.
        n = self._need_depth
        bids, asks = sync.book._bids.prices, sync.book._asks.prices
        if (floor is not None and (len(bids) < n or bids[-n] < floor)) or (
            ceiling is not None and (len(asks) < n or asks[n - 1] > ceiling)
        ):
            self._book_actions(state, sync.request_window())

    def _interval_snapshot(self, state: _Symbol, engine_time: int) -> None:
        # A depth frame at or past the boundary: the book before it is the book at the boundary
        # (every frame with an earlier engine time is applied). One snapshot per interval the book
        # changed in; frames carry the only clock, so replay gives the same snapshots.
        interval = self._interval_us
        boundary = engine_time - engine_time % interval
        sync = state.book
        if (
            state.next_boundary
            and sync.state is bsync.SyncState.LIVE
            and sync.last_update_id is not None
            and self._want_books
        ):
            view = self._snapshot(
                state, sync.last_update_id, "interval", boundary, depth=self._interval_depth
            )
            self._out.append(
                IntervalSnapshot(
                    symbol=view.symbol,
                    exchange_symbol=view.exchange_symbol,
                    update_id=view.update_id,
                    raw_bids=view.raw_bids,
                    raw_asks=view.raw_asks,
                    engine_time_us=boundary,
                    received_at_ns=view.received_at_ns,
                    depth=self._interval_depth,
                    valid_bid_floor=view.valid_bid_floor,
                    valid_ask_ceiling=view.valid_ask_ceiling,
                    received_mono_ns=view.received_mono_ns,
                )
            )
        state.next_boundary = boundary + interval

    def _new_candle(self, state: _Symbol, candle: Event, epoch: int = 0) -> bool:
        """Whether ``candle`` is news: not a closed candle already published, nor an update of
        one (a candle is closed once, whether the stream — ``epoch``, its subscription — or a
        REST poll delivered it)."""
        assert isinstance(candle, Candle)
        seen = state.candles.get(candle.interval)
        if not candle.closed:
            if candle.interval in _OFF_GRID:
                if seen is None:
                    seen = state.candles[candle.interval] = _ClosedCandles()
                seen.saw_under_way(candle.start_us, candle.end_us)
            return seen is None or not seen.published(candle.start_us)
        if seen is None:
            seen = state.candles[candle.interval] = _ClosedCandles()
        news = not seen.published(candle.start_us)
        if news:
            seen.add(candle.start_us, candle.end_us)
        if epoch:
            self._streamed_close(state, seen, candle, epoch)
        return news

    @staticmethod
    def _streamed_close(state: _Symbol, seen: _ClosedCandles, candle: Candle, epoch: int) -> None:
        # One subscription sends the close of every bucket that ends while it is in effect: the
        # buckets since its previous close had no trade, and so did those since it started
        # (CANDLE_GRACE_S to take effect) — where the bucket grid is known.
        start, end = candle.start_us, candle.end_us
        if seen.stream_epoch == epoch and seen.stream_end <= start:
            start = seen.stream_end
        elif seen.stream_epoch != epoch and epoch == state.ws_epoch:
            grid = candle_grid(candle.interval)
            if grid is not None:
                since = math.floor(state.ws_since + CANDLE_GRACE_S)
                start = min(start, (since - since % grid) * 1_000_000)
        seen.add_known(start, end)
        if seen.stream_epoch != epoch or end > seen.stream_end:
            seen.stream_epoch, seen.stream_end = epoch, end

    def _on_rest_channels(self, message: RestChannels) -> None:
        # REST-only: the channels Backpack also serves over REST, for markets polled, not
        # streamed (a market back on the WebSocket gets them from there).
        ns, mono = message.received_ns, message.mono_ns
        wanted = self._rest_wanted
        out = self._out
        # Candles in any mode: a catch-up after a reconnect or a promotion fills what the
        # stream missed, and _new_candle keeps each closed candle to one copy.
        for poll in message.candles:
            state = self._symbols.get(poll.symbol)
            if state is None or f"candles:{poll.interval}" not in self._candle_channels:
                continue
            low, high = poll.start_s * 1_000_000, poll.end_s * 1_000_000
            seen = state.candles.get(poll.interval)
            if seen is None:
                seen = state.candles[poll.interval] = _ClosedCandles()
            newest = low
            off_grid = poll.interval in _OFF_GRID
            for kline in sorted(poll.klines, key=lambda k: k.start):
                candle = rest_candle(kline, state.info, ns, mono)
                if candle is None or not low <= candle.start_us < candle.end_us:
                    continue
                if candle.end_us > high:
                    if off_grid:
                        seen.saw_under_way(candle.start_us, candle.end_us)
                    continue
                newest = max(newest, candle.end_us)
                if self._new_candle(state, candle):
                    out.append(candle)
            # The answer holds every candle that closed in the range: none is missing there. On
            # the grid the range ends on a bucket boundary; off it (3d, 1w, 1month) the newest
            # close returned is the last boundary known — a candle under way at ``end_s`` may
            # have begun before it.
            seen.add_known(low, newest if off_grid else high)
        groups: tuple[tuple[str, list[Any], Callable[..., Event | None]], ...] = (
            ("ticker", message.tickers, rest_ticker),
            ("mark_price", message.mark_prices, rest_mark_price),
            ("open_interest", message.open_interest, rest_open_interest),
        )
        for channel, items, build in groups:
            if channel not in wanted:
                continue
            for item in items:
                state = self._symbols.get(item.symbol)
                if state is None or state.mode != "rest":
                    continue
                event = build(item, state.info, ns, mono)
                if event is not None:
                    out.append(event)

    def _on_stream_started(self, state: _Symbol, message: StreamStarted, now: float) -> None:
        state.mode = message.mode
        if message.mode == "ws":
            state.ws_epoch, state.ws_since = message.epoch, now
        if message.mode == "rest":
            # REST-only: books come as whole snapshots from the poller; old WS frames are stale.
            state.book.enter_rest_mode(message.epoch)
            return
        self._book_actions(state, state.book.stream_started(message.epoch))

    def _on_snapshot(self, state: _Symbol, message: SnapshotReady) -> None:
        if message.reason != "rest_only":
            state.snapshot_pending = None
        sync = state.book
        if state.mode == "rest":
            actions = sync.on_rest_snapshot(message.snapshot)
            age = None
            if message.snapshot.timestamp is not None:
                age = message.received_ns // 1000 - message.snapshot.timestamp
            self._book_actions(state, actions, age_us=age)
            return
        if message.reason == "rest_only":
            # A REST-only poll answered after the symbol went back to WebSocket: stale.
            return
        self._book_actions(state, sync.on_snapshot(message.snapshot))

    def _on_snapshot_failed(self, state: _Symbol, message: SnapshotFailed) -> None:
        state.snapshot_pending = None
        counts = dict(state.book.counts())
        counts["attempts"] = message.attempts
        self._status(
            state,
            StatusKind.SNAPSHOT_FAILED,
            f"depth snapshot failed {message.attempts} times ({message.reason}); "
            f"retrying every {message.retry_in:g} s",
            counts,
        )
        self._book_actions(state, state.book.on_snapshot_failed(message.reason))

    def _on_backfill(self, state: _Symbol, message: BackfillDone) -> None:
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
        self._trade_actions(state, actions)

    def _on_rest_trades(self, state: _Symbol, message: RestTrades) -> None:
        trades = state.trades
        if trades.last_trade_id is None:
            newest = max((t.id for t in message.trades), default=None)
            if not state.polled:
                # The first poll of a symbol never seen trading: its answer is history (up to
                # 1000 trades, perhaps minutes old), not news. Publish from the next poll on.
                state.polled = True
                if newest is not None:
                    trades.last_trade_id = newest
                return
            if newest is not None:
                # The first poll was empty: everything after it is news.
                trades.last_trade_id = min(t.id for t in message.trades) - 1
        self._trade_actions(state, trades.on_rest_trades(message.trades))

    # -- actions -> events and requests ---------------------------------------------------------

    def _book_actions(
        self,
        state: _Symbol,
        actions: Iterable[bsync.Action[DepthEvent]],
        *,
        age_us: int | None = None,
    ) -> None:
        for action in actions:
            if isinstance(action, bsync.PublishDelta):
                if self._want_books:
                    delta = action.delta
                    assert isinstance(delta, DepthEvent)
                    self._out.append(_book_delta(state, delta))
            elif isinstance(action, bsync.PublishSnapshot):
                if self._interval_us and action.reason in ("initial", "resync"):
                    state.next_boundary = 0  # the next depth frame sets the first boundary
                if self._book_ticker and action.reason == "rest_only":
                    self._rest_book_ticker(state, action.update_id, action.engine_time_us)
                if self._want_books:
                    self._out.append(
                        self._snapshot(
                            state,
                            action.update_id,
                            action.reason,
                            action.engine_time_us,
                            age_us=age_us if action.reason == "rest_only" else None,
                        )
                    )
            elif isinstance(action, bsync.RequestSnapshot):
                if state.snapshot_pending is None and state.mode != "rest":
                    state.snapshot_pending = action.reason
                    self._request(
                        SnapshotRequest(state.info.exchange_id, action.reason, action.retry)
                    )
            elif isinstance(action, bsync.Status):
                self._status(state, action.kind, action.reason, action.counts)
                if action.kind is StatusKind.GAP_DETECTED and self._aggregated:
                    self._aggregated_gap(state)
            elif isinstance(action, bsync.Malformed):
                self._malformed(state, action)

    def _rest_book_ticker(self, state: _Symbol, update_id: int, engine_time: int | None) -> None:
        # REST-only: the polled book's touch is the book ticker (same update id and time).
        book = state.book.book
        bid, ask = book.best_bid(), book.best_ask()
        if bid is None or ask is None:
            return
        info = state.info
        when = engine_time if engine_time is not None else state.rx_ns // 1000
        self._out.append(
            BookTicker(
                info.normalized,
                info.exchange_id,
                update_id,
                bid[0],
                bid[1],
                ask[0],
                ask[1],
                when,
                when,
                state.rx_ns,
                state.rx_mono,
            )
        )

    def _aggregated_gap(self, state: _Symbol) -> None:
        # Whether an aggregated depth stream keeps the U/u chain is not documented. Two gaps on
        # one market say it does not (losing frames twice on a healthy connection is rare): the
        # market moves to the real-time stream, which does (docs/protocol.md §4.3).
        if state.aggregated_gaps < 0:
            return
        state.aggregated_gaps += 1
        if state.aggregated_gaps < AGGREGATED_GAPS_BEFORE_FALLBACK:
            return
        state.aggregated_gaps = -1
        self._status(
            state,
            StatusKind.DEPTH_STREAM_FALLBACK,
            f"the aggregated depth stream broke the update-id chain "
            f"{AGGREGATED_GAPS_BEFORE_FALLBACK} times; using the real-time depth stream",
            {"gaps": AGGREGATED_GAPS_BEFORE_FALLBACK},
        )
        if self._on_depth_fallback is not None:
            self._on_depth_fallback(state.info.exchange_id)

    def _trade_actions(self, state: _Symbol, actions: Iterable[tsync.TradeAction]) -> None:
        info = state.info
        for action in actions:
            if isinstance(action, tsync.EmitTrade):
                if self._want_trades:
                    self._out.append(
                        Trade(
                            symbol=info.normalized,
                            exchange_symbol=info.exchange_id,
                            trade_id=action.trade_id,
                            raw_price=action.price,
                            raw_amount=action.amount,
                            side=action.side,
                            event_time_us=action.event_time_us,
                            engine_time_us=action.engine_time_us,
                            received_at_ns=state.rx_ns,
                            backfilled=action.backfilled,
                            received_mono_ns=state.rx_mono,
                        )
                    )
            elif isinstance(action, tsync.RequestBackfill):
                # With one in flight, the answer's handler re-asks for whatever gap is open then.
                if state.backfill is None:
                    self._request_backfill(state, action.first_missing, action.last_missing)
            elif isinstance(action, BookStatus):
                self._status(state, action.kind, action.reason, action.counts)
            elif isinstance(action, bsync.Malformed):
                self._malformed(state, action)

    def request_refresh(self, symbol: str) -> None:
        """A periodic snapshot check of a live symbol (from the REST actor's timer)."""
        state = self._symbols.get(symbol)
        if state is None or state.mode == "rest":
            return
        self._book_actions(state, state.book.request_refresh())

    def _malformed(self, state: _Symbol, action: bsync.Malformed) -> None:
        # A frame that decoded but whose content is unusable: one report, like undecodable ones.
        self._protocol_error(
            state, action.stream, action.reason, excerpt(msgspec.json.encode(action.frame))
        )

    def _request_backfill(self, state: _Symbol, first: int, last: int) -> None:
        state.backfill = (first, last)
        self._request(BackfillRequest(state.info.exchange_id, first, last))

    # -- event construction ---------------------------------------------------------------------

    def _protocol_error(self, state: _Symbol, stream: str, reason: str, text: str) -> None:
        symbol = state.info.exchange_id
        count = self.protocol_errors.get(symbol, 0) + 1
        self.protocol_errors[symbol] = count
        self._out.append(
            ProtocolErrorEvent(
                symbol=state.info.normalized,
                stream=stream,
                reason=reason,
                excerpt=text,
                count=count,
                at=self._wall_clock(),
            )
        )

    def _connection_error(self, message: FrameError) -> None:
        count = self.protocol_errors.get("", 0) + 1
        self.protocol_errors[""] = count
        self._out.append(
            ProtocolErrorEvent(
                symbol="",
                stream=message.stream,
                reason=message.reason,
                excerpt=message.excerpt,
                count=count,
                at=self._wall_clock(),
            )
        )

    def _snapshot(
        self,
        state: _Symbol,
        update_id: int,
        reason: str,
        engine_time_us: int | None,
        *,
        age_us: int | None = None,
        depth: int | None = -1,
    ) -> BookSnapshot:
        sync = state.book
        book = sync.book
        # -1: the feed's book_depth; None: the whole book.
        limit = self._depth if depth == -1 else depth
        floor, ceiling = sync.bid_floor, sync.ask_ceiling
        if limit is not None and (floor is not None or ceiling is not None):
            # A depth was asked for: never past the valid window (a refetch renews it).
            nb, na = book.levels_within(floor, ceiling)
            bids = book.depth(min(limit, nb))[0]
            asks = book.depth(min(limit, na))[1]
        else:
            bids, asks = book.depth(limit)
        return BookSnapshot(
            symbol=state.info.normalized,
            exchange_symbol=state.info.exchange_id,
            update_id=update_id,
            raw_bids=bids,
            raw_asks=asks,
            engine_time_us=engine_time_us,
            received_at_ns=state.rx_ns,
            reason=reason,
            age_us=age_us,
            valid_bid_floor=None if floor is None else format(floor, "f"),
            valid_ask_ceiling=None if ceiling is None else format(ceiling, "f"),
            received_mono_ns=state.rx_mono,
        )

    def _status(
        self, state: _Symbol, kind: StatusKind, reason: str, counts: Mapping[str, int]
    ) -> None:
        self._out.append(
            StatusEvent(
                symbol=state.info.normalized,
                kind=kind,
                reason=reason,
                counts=dict(counts),
                at=self._wall_clock(),
            )
        )


def _book_delta(state: _Symbol, delta: DepthEvent) -> BookDelta:
    """The public event for an applied depth frame (levels shared, not copied: both immutable)."""
    info = state.info
    return BookDelta(
        symbol=info.normalized,
        exchange_symbol=info.exchange_id,
        first_update_id=delta.first_update_id,
        last_update_id=delta.last_update_id,
        raw_bids=delta.bids,
        raw_asks=delta.asks,
        event_time_us=delta.event_time,
        engine_time_us=delta.engine_time,
        received_at_ns=state.rx_ns,
        received_mono_ns=state.rx_mono,
    )
