"""Per-symbol book continuity: the state machine that keeps a local book provably in sync.

The exact bridging rule is docs/protocol.md §4.5.3. :class:`BookSync` is fed stream starts, depth
deltas and REST snapshots and answers with small action objects that the trio shell carries out
(request a snapshot, publish the book or a delta, tell consumers about a gap). It never awaits,
never reads a clock and raises nothing on bad input: every discontinuity becomes a resync of this
symbol only, and nothing is published for it between the gap and the end of its resync.

Given the market's :class:`~backpack_actors.core.dectext.MarketBounds`, every level of a delta or a
snapshot is checked against them before the book changes: an out-of-bounds price or size makes the
frame (or body) a protocol error (``Malformed``), counted in ``malformed`` (``snapshots_rejected``
for a snapshot), and the book stays as it was.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Generic, Protocol, TypeVar

import msgspec

from backpack_actors.core.book import InvalidLevel, OrderBook
from backpack_actors.core.dectext import MarketBounds, RawLevel, is_price_text, is_size_text
from backpack_actors.core.events import StatusKind

__all__ = [
    "Action",
    "BookSync",
    "DepthDelta",
    "DepthSnapshotLike",
    "Malformed",
    "PublishDelta",
    "PublishSnapshot",
    "RequestSnapshot",
    "Status",
    "SyncState",
    "delta_problem",
]

_Levels = Sequence[RawLevel]
_SnapshotLevels = Sequence[tuple[str | Decimal, str | Decimal]]


class DepthDelta(Protocol):
    """What :class:`BookSync` reads from a WS depth event (``core.wire.DepthEvent`` fits)."""

    @property
    def first_update_id(self) -> int: ...
    @property
    def last_update_id(self) -> int: ...
    @property
    def engine_time(self) -> int: ...
    @property
    def bids(self) -> _Levels: ...
    @property
    def asks(self) -> _Levels: ...


class DepthSnapshotLike(Protocol):
    """What :class:`BookSync` reads from a REST depth body (``core.wire.DepthSnapshot`` fits)."""

    @property
    def last_update_id(self) -> int: ...
    @property
    def timestamp(self) -> int | None: ...
    @property
    def bids(self) -> _SnapshotLevels: ...
    @property
    def asks(self) -> _SnapshotLevels: ...


D = TypeVar("D", bound=DepthDelta)


class SyncState(enum.Enum):
    """Where a symbol's book stands."""

    WAITING_FOR_STREAM = "waiting_for_stream"
    BUFFERING = "buffering"
    LIVE = "live"


class RequestSnapshot(msgspec.Struct, frozen=True, gc=False):
    """Fetch ``/api/v1/depth`` for ``symbol``; ``retry`` marks a repeat after a useless snapshot."""

    symbol: str
    reason: str
    retry: bool = False


class PublishSnapshot(msgspec.Struct, frozen=True, gc=False):
    """Publish the whole current ``sync.book`` (force) as of ``update_id``."""

    symbol: str
    update_id: int
    reason: str
    engine_time_us: int | None = None


class PublishDelta(msgspec.Struct, Generic[D], frozen=True, gc=False):
    """Publish ``delta``; it has been applied to ``sync.book``."""

    symbol: str
    delta: D


class Status(msgspec.Struct, frozen=True, gc=False):
    """Tell consumers in-band what happened to the symbol's feed."""

    symbol: str
    kind: StatusKind
    reason: str
    counts: dict[str, int] = msgspec.field(default_factory=dict)


class Malformed(msgspec.Struct, frozen=True, gc=False):
    """A frame that must not be used (bad level text, ``U > u``): report it as a protocol error.

    ``frame`` is the offending wire object, for the report's excerpt.
    """

    symbol: str
    stream: str
    reason: str
    frame: object


Action = RequestSnapshot | PublishSnapshot | PublishDelta[D] | Status | Malformed
"""What :class:`BookSync` asks the shell to do (generic in the delta type)."""

_COUNTER_NAMES = (
    "gaps",
    "crossed",
    "resyncs",
    "duplicates",
    "stale_duplicates",
    "stale_epoch_frames",
    "buffer_gaps",
    "buffer_overflows",
    "snapshots_too_old",
    "snapshots_rejected",
    "snapshots_failed",
    "snapshot_mismatches",
    "snapshot_checks",
    "ignored_snapshots",
    "sequence_resets",
    "malformed",
    "window_refetches",
    "window_adoptions",
)


def delta_problem(delta: DepthDelta, bounds: MarketBounds | None = None) -> str | None:
    """Why ``delta`` must not be applied, or None when it is sound.

    ``U > u``, a level that is no number, or one outside the market's ``bounds`` (when given).
    """
    if delta.first_update_id > delta.last_update_id:
        return f"U={delta.first_update_id} > u={delta.last_update_id}"
    for side, levels in (("ask", delta.asks), ("bid", delta.bids)):
        for price, size in levels:
            if not (is_price_text(price) and is_size_text(size)):
                return f"bad {side} level [{price!r:.60}, {size!r:.60}]: need price > 0, size >= 0"
        if bounds is not None:
            problem = bounds.levels_problem(levels)
            if problem is not None:
                return f"bad {side} level: {problem}"
    return None


def _snapshot_problem(snapshot: DepthSnapshotLike, bounds: MarketBounds | None) -> str | None:
    # Levels outside the market's bounds; the book checks the rest when it loads them.
    if bounds is None:
        return None
    for side, levels in (("ask", snapshot.asks), ("bid", snapshot.bids)):
        problem = bounds.levels_problem(levels)
        if problem is not None:
            return f"bad {side} level in snapshot {snapshot.last_update_id}: {problem}"
    return None


SEQUENCE_RESET_RUN = 100
"""Consecutive LIVE deltas at or below the last applied id taken as a sequence reset."""

MAX_BUFFER_LEVELS = 500_000
"""Default budget of levels held in the pending-delta buffer while a snapshot is outstanding.

The count bound alone allows 10,000 deltas of up to 4 MB each (40 GB). A buffered level costs
~170 bytes (a tuple and two short strings), so 500,000 levels is ~85 MB for one symbol in the
worst case, while it still holds minutes of the busiest book's real flow (a few thousand levels
a second), far longer than a snapshot takes to arrive.
"""

SNAPSHOT_SIDE_CAP = 1000
"""Levels per side a REST ``/depth`` answer carries at most (Backpack's default and maximum
``limit``, docs/protocol.md §3.4). A snapshot side with this many levels may be truncated: the book
is known only down to (bids) / up to (asks) its last level — the valid window."""


_WINDOW_BACKOFF_US = 1_000_000
_WINDOW_BACKOFF_MAX_US = 60_000_000


def _nonzero(levels: _SnapshotLevels) -> int:
    return sum(1 for _price, size in levels if Decimal(size) != 0)


def _inside(
    book: OrderBook, floor: Decimal | None, ceiling: Decimal | None
) -> tuple[dict[Decimal, Decimal], dict[Decimal, Decimal]]:
    bids, asks = book.as_dicts()
    return (
        {p: q for p, q in bids.items() if floor is None or p >= floor},
        {p: q for p, q in asks.items() if ceiling is None or p <= ceiling},
    )


def _tighter(
    mine: Decimal | None, theirs: Decimal | None, pick: Callable[[Decimal, Decimal], Decimal]
) -> Decimal | None:
    # Where both views are exact: the nearer of two window bounds (None = the whole side).
    if mine is None:
        return theirs
    if theirs is None:
        return mine
    return pick(mine, theirs)


def _window_bound(levels: _SnapshotLevels, cap: int, lowest: bool) -> Decimal | None:
    # A side shorter than the cap is the whole side: no bound. Otherwise its farthest price.
    if len(levels) < cap:
        return None
    prices = [p if isinstance(p, Decimal) else Decimal(p) for p, _size in levels]
    return min(prices) if lowest else max(prices)


def _levels(delta: DepthDelta) -> int:
    # What a buffered delta costs, in levels; an empty delta still holds its ids.
    return len(delta.bids) + len(delta.asks) + 1


def _snapshot_book(snapshot: DepthSnapshotLike) -> tuple[OrderBook, None] | tuple[None, str]:
    """The snapshot as a new book, or why it must not be used (a bad level, or crossed)."""
    book = OrderBook()
    try:
        book.load(snapshot.bids, snapshot.asks)
    except InvalidLevel as exc:
        return None, str(exc)
    if book.is_crossed():
        bid, ask = book.best_bid(), book.best_ask()
        assert bid is not None
        assert ask is not None
        return None, f"crossed: best bid {bid[0]} >= best ask {ask[0]}"
    return book, None


class BookSync(Generic[D]):
    """The continuity state machine for one symbol's L2 book.

    Feed it :meth:`stream_started` before the first frame of every connection, every depth frame
    via :meth:`on_delta`, and every REST snapshot outcome via :meth:`on_snapshot` /
    :meth:`on_snapshot_failed`. Each call returns the actions to carry out, in order. Epochs must
    increase per symbol across connections; frames tagged with another epoch are dropped.
    """

    __slots__ = (
        "_bounds",
        "_bridging_v",
        "_buffer",
        "_buffer_levels",
        "_cause",
        "_check_v",
        "_duplicate_run_v",
        "_ever_ready",
        "_max_buffer",
        "_max_buffer_levels",
        "_sequence_reset",
        "_shadow",
        "_shadow_levels",
        "_state_v",
        "_steady",
        "_window_backoff_us",
        "_window_retry_at",
        "ask_ceiling",
        "bid_floor",
        "book",
        "counters",
        "epoch",
        "last_engine_time_us",
        "last_update_id",
        "side_cap",
        "symbol",
    )

    def __init__(
        self,
        symbol: str,
        *,
        max_buffer: int = 10_000,
        max_buffer_levels: int = MAX_BUFFER_LEVELS,
        bounds: MarketBounds | None = None,
        side_cap: int = SNAPSHOT_SIDE_CAP,
    ) -> None:
        if max_buffer < 1:
            raise ValueError("max_buffer must be at least 1")
        if max_buffer_levels < 1:
            raise ValueError("max_buffer_levels must be at least 1")
        self.symbol = symbol
        # The market's bounds for level text (None: only core.dectext's global ones).
        self._bounds = bounds
        # What on_delta_fast tests in one load: LIVE, not bridging, no pending check, no run of
        # duplicates. Kept current by the setters of those four below.
        self._steady = False
        # While a window refetch is out: the deltas applied since it was asked for, so an answer
        # older than the book can be brought up to it and compared (None: no refetch out).
        self._shadow: deque[D] | None = None
        self._shadow_levels = 0
        # Window refetches are spaced on the exchange's own clock (engine time, so replay asks at
        # the same frames): 1 s after the last, doubling while they keep being needed (to 60 s),
        # back to 1 s once the window held for four spacings.
        self._window_backoff_us = _WINDOW_BACKOFF_US
        self._window_retry_at = 0
        self._state_v = SyncState.WAITING_FOR_STREAM
        self._bridging_v = False
        self._check_v: DepthSnapshotLike | None = None
        self._duplicate_run_v = 0
        self.book = OrderBook()
        self.epoch: int | None = None
        self.last_update_id: int | None = None
        self.last_engine_time_us: int | None = None
        self.counters: dict[str, int] = dict.fromkeys(_COUNTER_NAMES, 0)
        self._max_buffer = max_buffer
        self._max_buffer_levels = max_buffer_levels
        self._buffer: deque[D] = deque()
        # Levels held in _buffer (see _levels), kept with it by _clear_buffer and _buffer_delta.
        self._buffer_levels = 0
        # The next delta is the first after a snapshot: it must bridge (U <= last+1 <= u).
        self._bridging = False
        # Consecutive LIVE deltas at or below the last applied id; a long run means the exchange's
        # update ids went backwards (e.g. an engine restart), which must not freeze the book.
        self._duplicate_run = 0
        self._sequence_reset = False
        self._ever_ready = False
        # Why the current resync started (reported with RESYNCED).
        self._cause = ""
        # A snapshot newer than the book while LIVE, compared when the book reaches its id.
        self._check = None
        # The valid window: the book is exact at bids >= bid_floor and asks <= ask_ceiling (None:
        # the whole side), from the last snapshot adopted or confirmed. Deltas do not widen it:
        # a delta proves the levels it names, not the absence of levels between them.
        self.side_cap = side_cap
        self.bid_floor: Decimal | None = None
        self.ask_ceiling: Decimal | None = None

    def request_window(self) -> list[Action[D]]:
        """Ask for a snapshot to renew the valid window (the consumer's depth left it).

        At most one at a time, spaced out on engine time (see ``_window_retry_at``): a market
        whose book is deeper than a snapshot can show never spins the REST budget.
        """
        now = self.last_engine_time_us
        if (
            self.state is not SyncState.LIVE
            or self._shadow is not None
            or now is None
            or now < self._window_retry_at
        ):
            return []
        backoff = self._window_backoff_us
        if self._window_retry_at and now >= self._window_retry_at + 4 * backoff:
            backoff = _WINDOW_BACKOFF_US
        self._window_retry_at = now + backoff
        self._window_backoff_us = min(2 * backoff, _WINDOW_BACKOFF_MAX_US)
        self._shadow = deque()
        self._shadow_levels = 0
        self._settle()
        self.counters["window_refetches"] += 1
        return [RequestSnapshot(self.symbol, "window")]

    def _end_shadow(self) -> None:
        self._shadow = None
        self._shadow_levels = 0
        self._settle()

    def _catch_up(self, snapshot: DepthSnapshotLike) -> list[Action[D]]:
        """A window refetch answered with a snapshot older than the book.

        The deltas applied since the request bring it to the book's id; inside the snapshot's
        range the result must equal the book. Equal: the window is the snapshot's range. Not
        equal: the book was wrong there, so the caught-up book replaces it (a resync). A snapshot
        older than every delta kept cannot be brought up: nothing changes, the caller asks again.
        """
        shadow = self._shadow or deque()
        self._end_shadow()
        s = snapshot.last_update_id
        kept = [d for d in shadow if d.last_update_id > s]
        if not kept or not kept[0].first_update_id <= s + 1 <= kept[0].last_update_id:
            self.counters["snapshots_too_old"] += 1
            return []
        candidate, problem = _snapshot_book(snapshot)
        if candidate is None:
            return self._reject_snapshot(
                snapshot, f"REST snapshot {s} refused: {problem}", retry=False
            )
        for d in kept:
            candidate.apply(d.bids, d.asks)
        floor = _window_bound(snapshot.bids, self.side_cap, lowest=True)
        ceiling = _window_bound(snapshot.asks, self.side_cap, lowest=False)
        if _inside(candidate, floor, ceiling) == _inside(self.book, floor, ceiling):
            self.counters["snapshot_checks"] += 1
            self.bid_floor, self.ask_ceiling = floor, ceiling
            return []
        if candidate.is_crossed():
            return self._reject_snapshot(snapshot, f"REST snapshot {s} crossed", retry=False)
        last = self.last_update_id
        assert last is not None
        if self._differs_only_unvouched(candidate, floor, ceiling):
            return self._adopt_window(candidate, floor, ceiling, last)
        self.counters["snapshot_mismatches"] += 1
        self.counters["resyncs"] += 1
        reason = f"book differs from REST snapshot {s} brought up to update {last}"
        self.book.adopt(candidate)
        self.bid_floor, self.ask_ceiling = floor, ceiling
        return [
            self._status(StatusKind.RESYNCING, reason),
            PublishSnapshot(self.symbol, last, "resync", self.last_engine_time_us),
            self._status(StatusKind.RESYNCED, f"resynced at update {last} after {reason}"),
        ]

    def _differs_only_unvouched(
        self, candidate: OrderBook, floor: Decimal | None, ceiling: Decimal | None
    ) -> bool:
        """True when ``candidate`` (the exchange's book, exact down to ``floor`` / up to
        ``ceiling``) equals the book wherever both are exact: the book was never vouched for
        beyond its own window, so a difference only there is the window growing, not an error.
        """
        if self.bid_floor is None and self.ask_ceiling is None:
            return False  # the whole book was exact: any difference is a real one
        bid_floor = _tighter(self.bid_floor, floor, max)
        ask_ceiling = _tighter(self.ask_ceiling, ceiling, min)
        return _inside(candidate, bid_floor, ask_ceiling) == _inside(
            self.book, bid_floor, ask_ceiling
        )

    def _adopt_window(
        self, candidate: OrderBook, floor: Decimal | None, ceiling: Decimal | None, last: int
    ) -> list[Action[D]]:
        # Consumers hold the old levels beyond the window: a snapshot replaces them, but nothing
        # was wrong where the book claimed to be exact, so it is no resync.
        self.counters["window_adoptions"] += 1
        self.book.adopt(candidate)
        self.bid_floor, self.ask_ceiling = floor, ceiling
        return [PublishSnapshot(self.symbol, last, "window", self.last_engine_time_us)]

    def _whole_sides_match(self, snapshot: DepthSnapshotLike) -> bool:
        # A side shorter than the cap is the whole side: the book must hold exactly its levels
        # (top_matches compares only as many as the snapshot has), or it knows levels the
        # exchange does not — a mismatch, not a confirmation.
        cap = self.side_cap
        if len(snapshot.bids) < cap and self.book.bid_count != _nonzero(snapshot.bids):
            return False
        return not (len(snapshot.asks) < cap and self.book.ask_count != _nonzero(snapshot.asks))

    def _set_window(self, snapshot: DepthSnapshotLike) -> None:
        self.bid_floor = _window_bound(snapshot.bids, self.side_cap, lowest=True)
        self.ask_ceiling = _window_bound(snapshot.asks, self.side_cap, lowest=False)

    def _settle(self) -> None:
        self._steady = (
            self._state_v is SyncState.LIVE
            and not self._bridging_v
            and self._check_v is None
            and not self._duplicate_run_v
            and self._shadow is None
        )

    @property
    def state(self) -> SyncState:
        """Where the book stands."""
        return self._state_v

    @state.setter
    def state(self, value: SyncState) -> None:
        self._state_v = value
        self._settle()

    @property
    def _bridging(self) -> bool:
        return self._bridging_v

    @_bridging.setter
    def _bridging(self, value: bool) -> None:
        self._bridging_v = value
        self._settle()

    @property
    def _check(self) -> DepthSnapshotLike | None:
        return self._check_v

    @_check.setter
    def _check(self, value: DepthSnapshotLike | None) -> None:
        self._check_v = value
        self._settle()

    @property
    def _duplicate_run(self) -> int:
        return self._duplicate_run_v

    @_duplicate_run.setter
    def _duplicate_run(self, value: int) -> None:
        self._duplicate_run_v = value
        self._settle()

    @property
    def buffered(self) -> int:
        """Deltas held while waiting for a snapshot."""
        return len(self._buffer)

    @property
    def buffered_levels(self) -> int:
        """What the held deltas cost against ``max_buffer_levels`` (levels, +1 per delta)."""
        return self._buffer_levels

    def _clear_buffer(self) -> None:
        self._buffer.clear()
        self._buffer_levels = 0
        self._shadow = None

    @property
    def bridging(self) -> bool:
        """True when the next live delta is the first after a snapshot (``U <= last+1 <= u``)."""
        return self._bridging

    def counts(self) -> dict[str, int]:
        """A copy of the counters (as sent in status events)."""
        return dict(self.counters)

    # -- stream lifecycle ---------------------------------------------------------------------

    def stream_started(self, epoch: int) -> list[Action[D]]:
        """A new connection (first or reconnect) whose frames carry ``epoch``."""
        was_live = self.state is SyncState.LIVE
        self.epoch = epoch
        self._clear_buffer()
        self._check = None
        self.state = SyncState.BUFFERING
        actions: list[Action[D]] = []
        if was_live:
            self._cause = "reconnect"
            actions.append(self._status(StatusKind.RESYNCING, "reconnect"))
        elif not self._ever_ready:
            self._cause = ""
        else:
            self._cause = self._cause or "reconnect"
        reason = "resync: reconnect" if self._ever_ready else "initial"
        actions.append(RequestSnapshot(self.symbol, reason))
        return actions

    def request_refresh(self) -> list[Action[D]]:
        """A periodic snapshot refresh; only asked for while LIVE."""
        if self.state is not SyncState.LIVE:
            return []
        return [RequestSnapshot(self.symbol, "interval")]

    # -- deltas -------------------------------------------------------------------------------

    def on_delta(self, epoch: int, delta: D) -> list[Action[D]]:
        """One depth frame of connection ``epoch``; a malformed one is reported and dropped."""
        problem = delta_problem(delta, self._bounds)
        if problem is not None:
            self.counters["malformed"] += 1
            return [Malformed(self.symbol, f"depth.{self.symbol}", problem, delta)]
        if epoch != self.epoch:
            self.counters["stale_epoch_frames"] += 1
            return []
        if self.state is SyncState.LIVE:
            return self._on_live_delta(delta)
        self._buffer_delta(delta)
        return []

    def _on_live_delta(self, delta: D) -> list[Action[D]]:
        last = self.last_update_id
        assert last is not None
        first_id = delta.first_update_id
        last_id = delta.last_update_id
        if last_id <= last:
            self.counters["duplicates"] += 1
            known = self.last_engine_time_us
            if known is not None and delta.engine_time <= known:
                # Older than the book: frames still in flight when a snapshot overtook them (the
                # REST answer can beat the WebSocket), or a replay. A reset brings new events.
                self.counters["stale_duplicates"] += 1
                return []
            self._duplicate_run += 1
            if self._duplicate_run >= SEQUENCE_RESET_RUN:
                self.counters["sequence_resets"] += 1
                self._sequence_reset = True
                reason = (
                    f"update ids went backwards: {self._duplicate_run} consecutive deltas at or "
                    f"below the last applied id {last}"
                )
                return self._desync(StatusKind.GAP_DETECTED, reason, delta)
            return []
        self._duplicate_run = 0
        if self._bridging:
            ok = first_id <= last + 1
            expected = f"U <= {last + 1} <= u"
        else:
            ok = first_id == last + 1
            expected = f"U == {last + 1}"
        if not ok:
            self.counters["gaps"] += 1
            reason = f"gap: expected {expected}, got U={first_id} u={last_id}"
            return self._desync(StatusKind.GAP_DETECTED, reason, delta)
        self.book.apply(delta.bids, delta.asks)
        if self.book.is_crossed():
            return self._crossed(delta)
        self._bridging = False
        self.last_update_id = last_id
        self.last_engine_time_us = delta.engine_time
        shadow = self._shadow
        if shadow is not None:
            shadow.append(delta)
            self._shadow_levels += _levels(delta)
            if len(shadow) > self._max_buffer or self._shadow_levels > self._max_buffer_levels:
                self._end_shadow()  # the answer is too late to catch up with; asked again later
        actions: list[Action[D]] = [PublishDelta(self.symbol, delta)]
        if self._check is not None and last_id >= self._check.last_update_id:
            actions.extend(self._run_check())
        return actions

    def on_delta_fast(self, epoch: int, delta: D) -> list[Action[D]] | None:
        """:meth:`on_delta` with a fast path: ``None`` means "applied in order, publish it".

        The common case (LIVE, same epoch, ``U == last + 1 <= u``, no pending check) allocates no
        action list and checks level text while applying it; anything else returns exactly what
        :meth:`on_delta` would. A bad first level is reported and the frame dropped (nothing was
        applied); a bad level found later leaves the book unknown, so that frame is reported and
        the symbol resyncs.
        """
        last = self.last_update_id
        if (
            self._steady
            and epoch == self.epoch
            and last is not None
            and delta.first_update_id == last + 1
            and delta.last_update_id > last
        ):
            book = self.book
            bids = delta.bids
            asks = delta.asks
            bounds = self._bounds
            if bounds is not None and (
                (bids and bounds.levels_problem(bids) is not None)
                or (asks and bounds.levels_problem(asks) is not None)
            ):
                # Before anything is applied: the frame is dropped, the book intact.
                return self.on_delta(epoch, delta)
            try:
                # OrderBook.apply, one call shallower (its sides are core-internal, like this).
                inserted = bool(bids) and book._bids.apply(bids)
                if asks and book._asks.apply(asks):
                    inserted = True
            except InvalidLevel as exc:
                return self._malformed_live(delta, str(exc))
            if inserted and book.is_crossed():
                return self._crossed(delta)
            self.last_update_id = delta.last_update_id
            self.last_engine_time_us = delta.engine_time
            return None
        return self.on_delta(epoch, delta)

    def _malformed_live(self, delta: D, problem: str) -> list[Action[D]]:
        self.counters["malformed"] += 1
        report: list[Action[D]] = [Malformed(self.symbol, f"depth.{self.symbol}", problem, delta)]
        first = delta.bids[0] if delta.bids else delta.asks[0]
        if not (is_price_text(first[0]) and is_size_text(first[1])):
            # The very first level was refused: nothing was applied, so the book is intact and
            # the frame is dropped like any undecodable one (its ids then show as a gap).
            return report
        reason = (
            f"malformed update {delta.first_update_id}..{delta.last_update_id} "
            f"left the book unknown: {problem}"
        )
        return report + self._desync(StatusKind.GAP_DETECTED, reason, None)

    def _crossed(self, delta: D) -> list[Action[D]]:
        self.counters["crossed"] += 1
        bid = self.book.best_bid()
        ask = self.book.best_ask()
        reason = (
            f"book crossed after update {delta.first_update_id}..{delta.last_update_id}: "
            f"best bid {bid[0] if bid else None} >= best ask {ask[0] if ask else None}"
        )
        return self._desync(StatusKind.GAP_DETECTED, reason, delta)

    def _desync(self, kind: StatusKind, reason: str, delta: D | None) -> list[Action[D]]:
        self.state = SyncState.BUFFERING
        self._clear_buffer()
        self._check = None
        self._bridging = False
        if delta is not None:
            self._buffer_delta(delta)
        self._cause = reason
        return [
            self._status(kind, reason),
            self._status(StatusKind.RESYNCING, reason),
            RequestSnapshot(self.symbol, f"resync: {reason}"),
        ]

    def _buffer_delta(self, delta: D) -> None:
        buffer = self._buffer
        if buffer:
            prev_u = buffer[-1].last_update_id
            if delta.last_update_id <= prev_u:
                if delta.last_update_id >= buffer[0].first_update_id:
                    self.counters["duplicates"] += 1
                    return
                # Older than everything held: the buffer does not continue this stream (a bogus
                # far-future frame may have started it). Start again from here; a snapshot that
                # bridges the newer deltas will come, so nothing can wedge the symbol.
                self.counters["buffer_gaps"] += 1
                self._clear_buffer()
            if delta.first_update_id != prev_u + 1:
                # Any snapshot that bridges the new delta makes everything before it obsolete.
                self.counters["buffer_gaps"] += 1
                self._clear_buffer()
        cost = _levels(delta)
        if len(buffer) >= self._max_buffer:
            # Dropping the oldest makes an old snapshot fail the bridge check, which re-requests.
            self.counters["buffer_overflows"] += 1
            self._buffer_levels -= _levels(buffer.popleft())
        while buffer and self._buffer_levels + cost > self._max_buffer_levels:
            # The same, by size: memory is bounded by levels held, not only by deltas held. A
            # single delta over the whole budget is still held alone (the decoder bounds frames).
            self.counters["buffer_overflows"] += 1
            self._buffer_levels -= _levels(buffer.popleft())
        buffer.append(delta)
        self._buffer_levels += cost

    # -- snapshots ----------------------------------------------------------------------------

    def on_snapshot(
        self, snapshot: DepthSnapshotLike, *, epoch: int | None = None
    ) -> list[Action[D]]:
        """A REST snapshot arrived.

        Update ids are one sequence per market, independent of connections, so a snapshot is
        judged by its ``lastUpdateId`` against the buffer whatever ``epoch`` it was asked for in.
        """
        if self.state is SyncState.WAITING_FOR_STREAM:
            self.counters["ignored_snapshots"] += 1
            return []
        problem = _snapshot_problem(snapshot, self._bounds)
        if problem is not None:
            # A live book stays (nothing but this body showed it wrong); a fresh one is asked for.
            return self._reject_snapshot(snapshot, problem, retry=True)
        if self.state is SyncState.LIVE:
            return self._on_live_snapshot(snapshot)
        return self._bridge(snapshot)

    def _bridge(self, snapshot: DepthSnapshotLike) -> list[Action[D]]:
        s = snapshot.last_update_id
        buffer = self._buffer
        if buffer and buffer[0].first_update_id > s + 1:
            self.counters["snapshots_too_old"] += 1
            return [RequestSnapshot(self.symbol, "snapshot older than stream", retry=True)]
        kept = [d for d in buffer if d.last_update_id > s]
        last = s
        # After a sequence reset every new id is below the old ones: do not wait for them.
        published = None if self._sequence_reset else self.last_update_id
        if published is not None and max(s, buffer[-1].last_update_id if buffer else s) < published:
            # Consumers already hold a newer book: going live on this one would rewind them.
            self.counters["snapshots_too_old"] += 1
            return [RequestSnapshot(self.symbol, "snapshot older than published book", retry=True)]
        for d in kept:
            if last == s:
                ok = d.first_update_id <= s + 1 <= d.last_update_id
            else:
                ok = d.first_update_id == last + 1
            if not ok:
                self.counters["snapshots_rejected"] += 1
                self._clear_buffer()
                return [
                    RequestSnapshot(
                        self.symbol,
                        f"buffered deltas do not bridge snapshot {s}: "
                        f"expected U={last + 1}, got U={d.first_update_id}",
                        retry=True,
                    )
                ]
            last = d.last_update_id
        book = self.book
        try:
            book.load(snapshot.bids, snapshot.asks)
        except InvalidLevel as exc:
            # Only a snapshot that did not come through core.wire (which checks every level) can
            # get here; the book was not changed.
            return self._reject_snapshot(snapshot, f"bad level in snapshot {s}: {exc}", retry=True)
        for d in kept:
            book.apply(d.bids, d.asks)
        if book.is_crossed():
            self.counters["snapshots_rejected"] += 1
            book.clear()
            return [RequestSnapshot(self.symbol, f"book crossed after snapshot {s}", retry=True)]
        self._set_window(snapshot)
        self._clear_buffer()
        self._sequence_reset = False
        self._duplicate_run = 0
        self.state = SyncState.LIVE
        self.last_update_id = last
        self.last_engine_time_us = kept[-1].engine_time if kept else snapshot.timestamp
        self._bridging = not kept
        if self._ever_ready:
            self.counters["resyncs"] += 1
            cause = self._cause or "resync"
            self._cause = ""
            return [
                PublishSnapshot(self.symbol, last, "resync", self.last_engine_time_us),
                self._status(StatusKind.RESYNCED, f"resynced at update {last} after {cause}"),
            ]
        self._ever_ready = True
        return [
            PublishSnapshot(self.symbol, last, "initial", self.last_engine_time_us),
            self._status(StatusKind.BOOK_READY, f"book ready at update {last}"),
        ]

    def _on_live_snapshot(self, snapshot: DepthSnapshotLike) -> list[Action[D]]:
        last = self.last_update_id
        assert last is not None
        s = snapshot.last_update_id
        if self._shadow is not None:
            # A window refetch's answer: it renews the window (matched or adopted), and is no
            # news for consumers otherwise (no "check" republish).
            if s < last:
                return self._catch_up(snapshot)
            self._end_shadow()
            self._check = snapshot
            return self._run_check() if s == last else []
        if s > last:
            # Newer than the book: keep it and compare once the book reaches its id.
            self._check = snapshot
            return [PublishSnapshot(self.symbol, last, "check", self.last_engine_time_us)]
        if s == last:
            self._check = snapshot
            return self._run_check(publish_reason="check")
        return [PublishSnapshot(self.symbol, last, "check", self.last_engine_time_us)]

    def _run_check(self, publish_reason: str | None = None) -> list[Action[D]]:
        snapshot = self._check
        assert snapshot is not None
        self._check = None
        last = self.last_update_id
        assert last is not None
        if snapshot.last_update_id != last:
            # A merged delta jumped over the snapshot's id: nothing comparable.
            return []
        self.counters["snapshot_checks"] += 1
        if self.book.top_matches(snapshot.bids, snapshot.asks) and self._whole_sides_match(
            snapshot
        ):
            # The book equals the snapshot over the snapshot's range: that range is known now.
            self._set_window(snapshot)
            if publish_reason is None:
                return []
            return [PublishSnapshot(self.symbol, last, publish_reason, self.last_engine_time_us)]
        # The snapshot is the exchange's book at our own id: adopt it instead of fetching again,
        # unless it is no possible book. A crossed one is refused (the live book stays, since
        # nothing showed it wrong but this snapshot) and checked again with a fresh one.
        candidate, problem = _snapshot_book(snapshot)
        if candidate is None:
            self.counters["snapshot_mismatches"] += 1
            return self._reject_snapshot(
                snapshot, f"REST snapshot at update {last} refused: {problem}", retry=True
            )
        floor = _window_bound(snapshot.bids, self.side_cap, lowest=True)
        ceiling = _window_bound(snapshot.asks, self.side_cap, lowest=False)
        if self._differs_only_unvouched(candidate, floor, ceiling):
            return self._adopt_window(candidate, floor, ceiling, last)
        self.counters["snapshot_mismatches"] += 1
        self.counters["resyncs"] += 1
        reason = f"book differs from REST snapshot at update {last}"
        self.book.adopt(candidate)
        self._set_window(snapshot)
        return [
            self._status(StatusKind.RESYNCING, reason),
            PublishSnapshot(self.symbol, last, "resync", self.last_engine_time_us),
            self._status(StatusKind.RESYNCED, f"resynced at update {last} after {reason}"),
        ]

    # -- REST-only mode -----------------------------------------------------------------------

    def enter_rest_mode(self, epoch: int) -> None:
        """REST polling replaces the stream from ``epoch`` on: older frames are stale now."""
        self.epoch = epoch
        self._clear_buffer()
        self._check = None
        self._bridging = False

    def on_rest_snapshot(self, snapshot: DepthSnapshotLike) -> list[Action[D]]:
        """REST-only mode: each polled snapshot replaces the book (never rewinding it)."""
        s = snapshot.last_update_id
        if self.last_update_id is not None and s < self.last_update_id:
            self.counters["ignored_snapshots"] += 1
            return []
        problem = _snapshot_problem(snapshot, self._bounds)
        if problem is not None:
            return self._reject_snapshot(snapshot, problem, retry=not self._ever_ready)
        candidate, problem = _snapshot_book(snapshot)
        if candidate is None:
            # Never published. Consumers keep the last good book; before there is one the
            # poller's next answer may be late, so a retry is asked for at once.
            return self._reject_snapshot(
                snapshot, f"REST snapshot {s} refused: {problem}", retry=not self._ever_ready
            )
        self.book.adopt(candidate)
        self._set_window(snapshot)
        self.last_update_id = s
        self.last_engine_time_us = snapshot.timestamp
        self.state = SyncState.LIVE
        actions: list[Action[D]] = [
            PublishSnapshot(self.symbol, s, "rest_only", self.last_engine_time_us)
        ]
        if not self._ever_ready:
            self._ever_ready = True
            actions.append(self._status(StatusKind.BOOK_READY, f"REST-only book at update {s}"))
        return actions

    def _reject_snapshot(
        self, snapshot: DepthSnapshotLike, reason: str, *, retry: bool
    ) -> list[Action[D]]:
        # A REST body that decoded but holds no possible book: reported like a bad frame.
        self.counters["snapshots_rejected"] += 1
        actions: list[Action[D]] = [
            Malformed(self.symbol, f"/api/v1/depth?symbol={self.symbol}", reason, snapshot)
        ]
        if retry:
            actions.append(RequestSnapshot(self.symbol, reason, retry=True))
        return actions

    def on_snapshot_failed(self, reason: str) -> list[Action[D]]:
        """The snapshot request failed; while the book is not live, ask again."""
        self.counters["snapshots_failed"] += 1
        self._end_shadow()  # a window refetch that failed: asked again after its spacing
        if self.state is SyncState.BUFFERING:
            return [RequestSnapshot(self.symbol, f"snapshot failed: {reason}", retry=True)]
        return []

    def _status(self, kind: StatusKind, reason: str) -> Status:
        return Status(self.symbol, kind, reason, dict(self.counters))
