"""Per-symbol trade-id continuity: dedup, gap detection, backfill planning and merging.

Trade ids ``t`` are sequential per symbol (docs/protocol.md §4.4.2). :class:`TradeSync` never holds
a trade back, so nothing waits on a slow backfill and nothing is left over to drop at exit:

* A trade with a new id is emitted at once. A jump (``t > last + 1``) opens a *gap* for the ids in
  between, reported in-band (``TRADE_GAP``) and backfilled from REST (``RequestBackfill``).
* **Ordering:** trades are emitted in arrival order, not id order. A gap's trades (a late live
  trade, or the backfill's, marked ``backfilled=True``) arrive after higher ids; consumers that need
  id order sort by ``trade_id``. Every id is emitted at most once.
* Backfills go one at a time: :attr:`TradeSync.pending` is the range asked for, further gaps are
  queued and asked for when it resolves (nearby gaps share one request). An answer emits what it
  recovered; the ids of the asked range it lacks, or all of them when it fails, are reported as
  unrecoverable, exactly, in a ``TRADE_GAP`` status.
* Duplicates (replays across a reconnect, a late backfill) are dropped and counted. The record that
  decides is the newest id ``last_trade_id`` plus a few id ranges, each list at most ``max_held``
  long (beyond that the oldest gaps are given up and reported): the open gaps, the ids given up
  (emitted after all should they still arrive) and, after a bogus id, the ids emitted above the
  followed sequence. Every other id up to ``last_trade_id`` has been emitted, or was reported
  unrecoverable. Trades that arrive below the first one seen are taken for duplicates.
* A malformed trade is reported (``Malformed``) and its id becomes a gap, backfilled like any other.
* The sequence cannot be poisoned. A bogus far-future id, or ids going backwards (an engine reset),
  shows as trades arriving below ``last_trade_id`` with no progress above it. After
  :data:`TRADE_RESET_RUN` of them, ascending among themselves, they are followed (``TRADE_ID_RESET``
  says why and how): if they were new ids (they filled the gap the bogus id opened) the ids above
  them are forgotten; if they were "duplicates", ids were reused, so the old gaps are reported
  unrecoverable and the run's dropped trades are backfilled. Replays inside the run and repeated
  bogus ids far above it do not count, so they can neither fake a reset nor hide one.
* REST-only polling (:meth:`TradeSync.on_rest_trades`) uses the same record; polls overlap, so ids
  already emitted are skipped silently there, and resets are not detected from polls.
* Given the market's :class:`~backpack_actors.core.dectext.MarketBounds`, a price or quantity
  outside them (live or REST) makes that trade malformed, like text that is no number.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterable
from decimal import Decimal
from typing import Literal, Protocol

import msgspec

from backpack_actors.core.dectext import MarketBounds, decimal_text, is_price_text, is_size_text
from backpack_actors.core.events import Side, StatusKind
from backpack_actors.core.sync import Malformed, Status

__all__ = [
    "MAX_BACKFILL_PAGES",
    "RECENT_TRADES_LIMIT",
    "TRADE_RESET_RUN",
    "BackfillPage",
    "EmitTrade",
    "LiveTrade",
    "RequestBackfill",
    "RestTradeLike",
    "TradeAction",
    "TradeSync",
    "plan_backfill",
    "trade_problem",
]

RECENT_TRADES_LIMIT = 1000
"""``/api/v1/trades`` reaches only the newest 1000 trades; older ones need ``/trades/history``."""

TRADE_RESET_RUN = 100
"""Trades below the newest id, ascending, with no progress above it, taken as a reset.

Far more than a replay across a reconnect overlaps (a handful), so real duplicates are not taken
for a reset; few enough that a reset's dropped trades fit one REST page to backfill.
"""

_NO_ID = 2**64
"""Above every trade id (ids are int64)."""

_INT64_MAX = 2**63 - 1


class LiveTrade(Protocol):
    """What :class:`TradeSync` reads from a WS trade event (``core.wire.TradeEvent`` fits)."""

    @property
    def trade_id(self) -> int: ...
    @property
    def price(self) -> str: ...
    @property
    def quantity(self) -> str: ...
    @property
    def buyer_is_maker(self) -> bool: ...
    @property
    def event_time(self) -> int: ...
    @property
    def engine_time(self) -> int: ...


class RestTradeLike(Protocol):
    """What :class:`TradeSync` reads from a REST trade (``core.wire.RestTrade`` fits)."""

    @property
    def id(self) -> int: ...
    @property
    def price(self) -> Decimal: ...
    @property
    def quantity(self) -> Decimal: ...
    @property
    def timestamp(self) -> int: ...
    @property
    def is_buyer_maker(self) -> bool: ...


class EmitTrade(msgspec.Struct, frozen=True, gc=False):
    """Publish one trade; times are integer µs (REST trades: the ms timestamp × 1000 for both).

    ``price`` and ``amount`` are checked decimal text.
    """

    symbol: str
    trade_id: int
    price: str
    amount: str
    side: Side
    event_time_us: int
    engine_time_us: int
    backfilled: bool = False


class RequestBackfill(msgspec.Struct, frozen=True, gc=False):
    """Fetch trade ids ``first_missing..last_missing`` (``newest_known``: see plan_backfill)."""

    symbol: str
    first_missing: int
    last_missing: int
    newest_known: int


TradeAction = EmitTrade | RequestBackfill | Status | Malformed


def trade_problem(trade: LiveTrade, bounds: MarketBounds | None = None) -> str | None:
    """Why a live trade must not be published, or None.

    Price or quantity text that is no number, is unbounded, or lies outside the market's
    ``bounds`` (when given).
    """
    if not is_price_text(trade.price):
        return f"p={trade.price!r:.60} is not a finite decimal > 0"
    if not is_size_text(trade.quantity):
        return f"q={trade.quantity!r:.60} is not a finite decimal >= 0"
    if bounds is not None:
        problem = bounds.price_problem(trade.price) or bounds.size_problem(trade.quantity)
        if problem is not None:
            return problem
    return None


class BackfillPage(msgspec.Struct, frozen=True, gc=False):
    """One REST call: ``recent`` is ``/api/v1/trades?limit=``, ``history`` adds ``offset=``."""

    endpoint: Literal["recent", "history"]
    limit: int
    offset: int = 0


MAX_BACKFILL_PAGES = 1000
"""Most pages :func:`plan_backfill` plans (a million trades at 1000 a page)."""


def plan_backfill(
    first: int,
    last: int,
    newest_known: int,
    *,
    page: int = RECENT_TRADES_LIMIT,
    slack: int = 0,
    max_pages: int = MAX_BACKFILL_PAGES,
) -> list[BackfillPage]:
    """The REST calls that cover trade ids ``first..last`` given the newest id seen.

    Both endpoints count back from the newest trade (offset 0 = newest). ``slack`` widens the
    window for trades that happened after ``newest_known`` (they shift every offset). At most
    ``max_pages`` pages are planned, the newest first: a gap opened by a bogus far-future id spans
    up to 2**63 ids, and the plan must stay a short list.
    """
    if first > last:
        return []
    if last > newest_known:
        raise ValueError(f"last ({last}) is newer than newest_known ({newest_known})")
    span = newest_known - first + 1 + slack
    if span <= page:
        return [BackfillPage("recent", span)]
    start = max(0, newest_known - last - slack)
    end = newest_known - first + slack
    end = min(end, start + max_pages * page - 1)
    pages = []
    for offset in range(start, end + 1, page):
        pages.append(BackfillPage("history", min(page, end - offset + 1), offset))
    return pages


def _side(buyer_is_maker: bool) -> Side:
    # The maker rested; a resting buyer means the aggressor sold.
    return Side.SELL if buyer_is_maker else Side.BUY


def _span(first: int, last: int) -> str:
    return str(first) if first == last else f"{first}..{last}"


def _spans(ranges: Iterable[tuple[int, int]]) -> str:
    return ", ".join(_span(a, b) for a, b in ranges)


def _count(ranges: Iterable[tuple[int, int]]) -> int:
    return sum(b - a + 1 for a, b in ranges)


def _complement(first: int, last: int, taken: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The ids of ``first..last`` outside the sorted, disjoint ``taken`` ranges, as ranges."""
    out: list[tuple[int, int]] = []
    at = first
    for a, b in taken:
        if b < at:
            continue
        if a > last:
            break
        if a > at:
            out.append((at, a - 1))
        at = max(at, b + 1)
    if at <= last:
        out.append((at, last))
    return out


def _find(ranges: list[tuple[int, int]], t: int) -> int:
    """The index of the range of the sorted, disjoint ``ranges`` holding ``t``, or -1."""
    index = bisect_right(ranges, (t, _NO_ID)) - 1
    if index >= 0 and ranges[index][1] >= t:
        return index
    return -1


def _take(ranges: list[tuple[int, int]], index: int, t: int) -> None:
    """Remove ``t`` from ``ranges[index]`` (splitting it)."""
    first, last = ranges[index]
    pieces = []
    if first < t:
        pieces.append((first, t - 1))
    if t < last:
        pieces.append((t + 1, last))
    ranges[index : index + 1] = pieces


_COUNTER_NAMES = (
    "gaps",
    "missing",
    "duplicates",
    "late_trades",
    "backfilled",
    "unrecoverable",
    "gap_overflows",
    "late_backfills",
    "malformed",
    "id_resets",
)

_FILL, _DUP, _BAD = 0, 1, 2
"""What a trade below the newest id turned out to be (for reset detection)."""


class TradeSync:
    """Trade-id continuity for one symbol; every method returns the actions to carry out.

    ``max_held`` bounds the open gaps (the name dates from when trades were held); ``reset_run``
    is :data:`TRADE_RESET_RUN`.
    """

    __slots__ = (
        "_ahead",
        "_ahead_floor",
        "_bounds",
        "_gaps",
        "_max_gaps",
        "_price_fast",
        "_reset_run",
        "_run_anchor",
        "_run_count",
        "_run_dups",
        "_run_emitted",
        "_run_fills",
        "_run_high",
        "_run_low",
        "_run_prev",
        "_size_fast",
        "_unrecoverable",
        "counters",
        "epoch",
        "last_trade_id",
        "pending",
        "symbol",
    )

    def __init__(
        self,
        symbol: str,
        *,
        max_held: int = 10_000,
        reset_run: int = TRADE_RESET_RUN,
        bounds: MarketBounds | None = None,
    ) -> None:
        if max_held < 1:
            raise ValueError("max_held must be at least 1")
        if reset_run < 2:
            raise ValueError("reset_run must be at least 2")
        self.symbol = symbol
        self._bounds = bounds
        # Plain text up to these lengths is inside the bounds (dectext.MAX_PLAIN without any).
        self._price_fast = 40 if bounds is None else bounds.price_fast
        self._size_fast = 40 if bounds is None else bounds.size_fast
        self.epoch: int | None = None
        # The newest id of the sequence followed: every id up to it is emitted, reported
        # unrecoverable, or in an open gap.
        self.last_trade_id: int | None = None
        # The id range a backfill is in flight for (the reconciler compares it with its answer).
        self.pending: tuple[int, int] | None = None
        self.counters: dict[str, int] = dict.fromkeys(_COUNTER_NAMES, 0)
        self._max_gaps = max_held
        self._reset_run = reset_run
        # Open gaps: sorted, disjoint (first, last) ranges, all below last_trade_id. Whenever there
        # is one, a backfill is pending.
        self._gaps: list[tuple[int, int]] = []
        # Ids reported unrecoverable, still emitted should they arrive after all (a late live
        # trade, a later answer): what was given up is not turned into "duplicates". Sorted,
        # disjoint, at most max_held ranges (beyond that the oldest are closed for good).
        self._unrecoverable: list[tuple[int, int]] = []
        # Ids above last_trade_id already emitted: only after a bogus far-future id was dropped
        # from the sequence (see _reset). Sorted, disjoint ranges; _ahead_floor is the lowest id
        # in them (the fast path stops below it).
        self._ahead: list[tuple[int, int]] = []
        self._ahead_floor = _NO_ID
        # The run of trades below last_trade_id (reset detection, see _run_step): valid while
        # last_trade_id is _run_anchor (normal progress breaks it; jumps carry it along).
        self._run_anchor: int | None = None
        self._run_prev = 0  # the run's head (its newest trade)
        self._run_low = 0  # the ids the run spans
        self._run_high = 0
        self._run_count = 0  # trades in steps, and how many were duplicates or new
        self._run_dups = 0
        self._run_fills = 0
        self._run_emitted: list[int] = []  # every trade emitted since the run began

    @property
    def held(self) -> int:
        """Trades held back: always 0 (kept for callers of the old, holding design)."""
        return 0

    @property
    def gaps(self) -> tuple[tuple[int, int], ...]:
        """The open gaps, oldest first, as ``(first, last)`` id ranges."""
        return tuple(self._gaps)

    @property
    def record_size(self) -> int:
        """Id ranges the duplicate record holds (open gaps, given-up ids, ids emitted ahead).

        Each part is bounded by ``max_held``, so memory does not grow with what a peer sends.
        """
        return len(self._gaps) + len(self._unrecoverable) + len(self._ahead)

    def from_live(self, trade: LiveTrade) -> EmitTrade:
        """The emit action for a WS trade."""
        return EmitTrade(
            self.symbol,
            trade.trade_id,
            trade.price,
            trade.quantity,
            _side(trade.buyer_is_maker),
            trade.event_time,
            trade.engine_time,
        )

    def from_rest(self, trade: RestTradeLike, *, backfilled: bool = True) -> EmitTrade:
        """The emit action for a REST trade (ms timestamp -> µs).

        ``ValueError`` for a price or quantity outside ``core.dectext``'s bounds (``core.wire``
        refuses those already; other callers' objects are checked here, before formatting).
        """
        micros = trade.timestamp * 1000
        return EmitTrade(
            self.symbol,
            trade.id,
            decimal_text(trade.price),
            decimal_text(trade.quantity),
            _side(trade.is_buyer_maker),
            micros,
            micros,
            backfilled,
        )

    def _rest_act(
        self, trade: RestTradeLike, backfilled: bool
    ) -> tuple[EmitTrade, None] | tuple[None, Malformed]:
        try:
            act = self.from_rest(trade, backfilled=backfilled)
        except ValueError as exc:
            problem = str(exc)
        else:
            bounds = self._bounds
            if not (is_price_text(act.price) and is_size_text(act.amount)):
                problem = (
                    f"p={act.price!r:.60} q={act.amount!r:.60}: "
                    "need a finite price > 0, quantity >= 0"
                )
            elif bounds is None:
                return act, None
            else:
                found = bounds.price_problem(act.price) or bounds.size_problem(act.amount)
                if found is None:
                    return act, None
                problem = found
        self.counters["malformed"] += 1
        stream = f"/api/v1/trades?symbol={self.symbol}"
        return None, Malformed(self.symbol, stream, f"trade {trade.id}: {problem}", trade)

    # -- live trades ----------------------------------------------------------------------------

    def on_trade(self, epoch: int, trade: LiveTrade) -> list[TradeAction]:
        """One live trade. Ids are authoritative across connections, so every epoch is accepted.

        A malformed trade is reported and its id becomes a gap (a backfill fetches it from REST).
        """
        self.epoch = epoch
        problem = trade_problem(trade, self._bounds)
        if problem is None:
            return self._arrive(trade.trade_id, self.from_live(trade), run=True)
        self.counters["malformed"] += 1
        report = Malformed(self.symbol, f"trade.{self.symbol}", problem, trade)
        return [report, *self._arrive(trade.trade_id, None, run=True)]

    def accept_in_order(self, trade: LiveTrade) -> bool:
        """Fast path: True (and recorded) when ``trade`` simply continues the sequence.

        That takes plain decimal text for price and quantity too. Otherwise nothing changes and
        the caller goes through :meth:`on_trade`.
        """
        last = self.last_trade_id
        trade_id = trade.trade_id
        # last + 1 is always a new id (gaps lie below last), unless a forgotten far-future id
        # was emitted there: _ahead_floor is _NO_ID but in that rare case.
        if last is not None and trade_id == last + 1 and trade_id < self._ahead_floor:
            price = trade.price
            quantity = trade.quantity
            # core.dectext's plain-text test, inlined (length bound included): this runs for
            # every trade. Longer text goes to on_trade for the exact check.
            if (
                len(price) <= self._price_fast
                and price.isascii()
                and price.replace(".", "", 1).isdigit()
                and price.strip("0.")
                and len(quantity) <= self._size_fast
                and quantity.isascii()
                and quantity.replace(".", "", 1).isdigit()
            ):
                self.last_trade_id = trade_id
                return True
        return False

    def _arrive(self, t: int, act: EmitTrade | None, *, run: bool) -> list[TradeAction]:
        # One trade id seen (act None: the trade was malformed, so its id is missing).
        last = self.last_trade_id
        if last is None:
            self.last_trade_id = t
            if act is None:
                statuses, requests = self._open_gaps([(t, t)])
                return statuses + requests
            return [act]
        if t > last:
            if t >= self._ahead_floor and self._in_ahead(t):
                if act is not None:
                    self.counters["duplicates"] += 1
                return []
            # The ids in between are missing, bar any emitted ahead of the sequence.
            end = t - 1 if act is not None else t
            holes = _complement(last + 1, end, self._ahead) if end > last else []
            if self._ahead:
                self._ahead = [r for r in self._ahead if r[0] > t]
                self._ahead_floor = self._ahead[0][0] if self._ahead else _NO_ID
            if self._run_anchor == last and t > last + 1:
                # A jump does not break a run below (a second bogus id must not hide the first).
                self._run_anchor = t
            self.last_trade_id = t
            if not holes:
                return [act] if act is not None else []
            statuses, requests = self._open_gaps(holes)
            return [*statuses, act, *requests] if act is not None else statuses + requests
        # Below the newest id: a gap's trade arriving late, or a duplicate.
        index = _find(self._gaps, t)
        actions: list[TradeAction] = []
        if act is None:
            kind = _BAD
        elif index >= 0:
            kind = _FILL
            _take(self._gaps, index, t)
            self.counters["late_trades"] += 1
            actions.append(act)
            actions.extend(self._limit_gaps())
            actions.extend(self._pending_settled())
        elif (given_up := _find(self._unrecoverable, t)) >= 0:
            kind = _FILL
            _take(self._unrecoverable, given_up, t)
            self._limit_unrecoverable()
            self.counters["late_trades"] += 1
            actions.append(act)
        else:
            kind = _DUP
            self.counters["duplicates"] += 1
        if run and t < last:
            # A replay of the newest trade itself is the commonest duplicate: no sign of a reset.
            actions.extend(self._run_step(t, kind))
        return actions

    # -- reset detection ------------------------------------------------------------------------

    def _run_step(self, t: int, kind: int) -> list[TradeAction]:
        # A sequence continuing below the newest id moves up in small steps from its head (a
        # dropped frame makes a step of a few ids). A replay inside it, or a repeated bogus id
        # far above, does not count; a trade below it starts a new candidate, so an old run can
        # neither hide a new sequence nor be mixed with it.
        if self._run_anchor != self.last_trade_id:
            self._run_anchor = self.last_trade_id
            self._run_emitted = []
            self._start_run(t)
        elif self._run_prev < t <= self._run_prev + RECENT_TRADES_LIMIT:
            self._run_count += 1
            self._run_dups += kind == _DUP
            self._run_fills += kind == _FILL
            self._run_prev = self._run_high = t
        elif t < self._run_low:
            self._start_run(t)
        if kind == _FILL:
            self._run_emitted.append(t)
        if self._run_count >= self._reset_run:
            return self._reset()
        if len(self._run_emitted) > 2 * self._reset_run:
            # Many late trades but no run (reordered, not reset): start again, bounded.
            self._run_anchor = None
        return []

    def _start_run(self, t: int) -> None:
        # What the first trade was is no evidence: it may be a stray replay. The steps are.
        self._run_prev = self._run_low = self._run_high = t
        self._run_count = 1
        self._run_dups = self._run_fills = 0

    def _reset(self) -> list[TradeAction]:
        last = self.last_trade_id
        assert last is not None
        low, high, count = self._run_low, self._run_high, self._run_count
        # Mostly "duplicates": ids are reused. Mostly new ids: they fill a gap below a bogus id.
        reused = self._run_dups > self._run_fills
        emitted = sorted(t for t in set(self._run_emitted) if low <= t <= high)
        self._run_anchor = None
        self._run_emitted = []
        self.counters["id_resets"] += 1
        self.pending = None
        self.last_trade_id = high
        actions: list[TradeAction] = []
        if not reused:
            # The run filled a gap: the stream goes on below a bogus far-future id. Ids above the
            # run are forgotten (never sent yet), those emitted up there remembered as _ahead.
            above = [(max(a, high + 1), b) for a, b in self._gaps if b > high]
            given_up = [(max(a, high + 1), b) for a, b in self._unrecoverable if b > high]
            emitted_above = _complement(high + 1, last, sorted(above + given_up))
            # Bounded like the gaps: the farthest (likeliest bogus, least likely replayed) go.
            self._ahead = (emitted_above + self._ahead)[: self._max_gaps]
            self._ahead_floor = self._ahead[0][0] if self._ahead else _NO_ID
            self._gaps = [(a, min(b, high)) for a, b in self._gaps if a <= high]
            self._unrecoverable = [(a, min(b, high)) for a, b in self._unrecoverable if a <= high]
            reason = (
                f"trade ids continue below the last id {last}: {count} trades in "
                f"{_span(low, high)} arrived since; following them"
            )
            if above:
                reason += f" (ids {_spans(above)} no longer awaited)"
            actions.append(self._status(StatusKind.TRADE_ID_RESET, reason))
        else:
            # The run repeated ids already emitted: the exchange reuses ids (an engine reset).
            # The old gaps can no longer be told apart from new trades; the run's dropped ids
            # are new trades, to backfill.
            old = self._gaps
            self._gaps = []
            self._unrecoverable = []
            self._ahead = []
            self._ahead_floor = _NO_ID
            reason = (
                f"trade ids went backwards: {count} trades in {_span(low, high)} at or below the "
                f"last id {last}; following the new sequence"
            )
            actions.append(self._status(StatusKind.TRADE_ID_RESET, reason))
            if old:
                # Not kept as unrecoverable: from now on those ids are the new sequence's.
                actions.append(self._report_lost(old, "trade ids reset", keep=False))
            holes = _complement(low, high, [(t, t) for t in emitted])
            statuses, requests = self._open_gaps(holes)
            return actions + statuses + requests
        return actions + self._ask_next()

    # -- gaps -----------------------------------------------------------------------------------

    def _in_ahead(self, t: int) -> bool:
        return _find(self._ahead, t) >= 0

    def _open_gaps(
        self, holes: list[tuple[int, int]]
    ) -> tuple[list[TradeAction], list[TradeAction]]:
        """Add ``holes`` (above every open gap): their status, then the backfill request."""
        count = _count(holes)
        self.counters["gaps"] += len(holes)
        self._add("missing", count)
        self._gaps.extend(holes)
        requests = self._ask_next()
        pending = self.pending
        assert pending is not None
        how = "backfilling" if pending[0] <= holes[0][0] <= pending[1] else "backfill queued"
        statuses: list[TradeAction] = [
            self._status(
                StatusKind.TRADE_GAP, f"trade ids {_spans(holes)} missing ({count}); {how}"
            )
        ]
        return statuses + self._limit_gaps(), requests

    def _limit_gaps(self) -> list[TradeAction]:
        # Bounded record: give up the oldest gaps rather than grow without limit (new gaps, and
        # late trades splitting one, add ranges).
        excess = len(self._gaps) - self._max_gaps
        if excess <= 0:
            return []
        given_up, self._gaps = self._gaps[:excess], self._gaps[excess:]
        self.counters["gap_overflows"] += excess
        why = f"more than {self._max_gaps} gaps open"
        return [self._report_lost(given_up, why, keep=True)]

    def _limit_unrecoverable(self) -> None:
        # Ids given up long ago are closed for good (they were reported when given up).
        excess = len(self._unrecoverable) - self._max_gaps
        if excess > 0:
            del self._unrecoverable[:excess]

    def _ask_next(self) -> list[TradeAction]:
        """Ask for the oldest open gaps (nearby ones together) when no backfill is pending."""
        if self.pending is not None or not self._gaps:
            return []
        first, last = self._gaps[0]
        for _, b in self._gaps[1:]:
            if b - first + 1 > RECENT_TRADES_LIMIT:
                break
            last = b
        self.pending = (first, last)
        newest = self.last_trade_id
        assert newest is not None
        return [RequestBackfill(self.symbol, first, last, newest)]

    def _open_in(self, first: int, last: int) -> list[tuple[int, int]]:
        """The open gaps' ids within ``first..last``, as ranges."""
        gaps = self._gaps
        start = bisect_left(gaps, (first, -1))
        if start > 0 and gaps[start - 1][1] >= first:
            start -= 1
        out = []
        for a, b in gaps[start:]:
            if a > last:
                break
            out.append((max(a, first), min(b, last)))
        return out

    def _give_up(self, first: int, last: int) -> list[tuple[int, int]]:
        """Close the open gaps' ids within ``first..last``; returns them."""
        lost = self._open_in(first, last)
        if lost:
            kept: list[tuple[int, int]] = []
            for a, b in self._gaps:
                if b < first or a > last:
                    kept.append((a, b))
                    continue
                if a < first:
                    kept.append((a, first - 1))
                if b > last:
                    kept.append((last + 1, b))
            self._gaps = kept
        return lost

    def _pending_settled(self) -> list[TradeAction]:
        # Live trades filled the whole pending range: move on to the next gap (the reconciler
        # re-asks when the old answer comes back for a range no longer pending).
        pending = self.pending
        if pending is None or self._open_in(*pending):
            return []
        self.pending = None
        return self._ask_next()

    def _awaited(self, t: int) -> bool:
        # Not emitted yet: in an open gap, or given up (and still welcome).
        return _find(self._gaps, t) >= 0 or _find(self._unrecoverable, t) >= 0

    def _report_lost(self, ranges: list[tuple[int, int]], why: str, *, keep: bool) -> Status:
        count = _count(ranges)
        self._add("unrecoverable", count)
        if keep:
            self._unrecoverable = sorted(self._unrecoverable + ranges)
            self._limit_unrecoverable()
        return self._status(
            StatusKind.TRADE_GAP, f"{count} trade ids unrecoverable: {_spans(ranges)} ({why})"
        )

    # -- REST -----------------------------------------------------------------------------------

    def on_rest_trades(self, trades: Iterable[RestTradeLike]) -> list[TradeAction]:
        """REST-only mode: one poll of recent trades (any order); emits the new ones, ascending.

        Polls overlap, so ids already emitted are skipped without counting them as duplicates.
        """
        actions: list[TradeAction] = []
        by_id = {t.id: t for t in trades}
        for trade_id in sorted(by_id):
            last = self.last_trade_id
            if last is not None and trade_id <= last and not self._awaited(trade_id):
                continue
            act, bad = self._rest_act(by_id[trade_id], backfilled=False)
            if bad is not None:
                actions.append(bad)
            actions.extend(self._arrive(trade_id, act, run=False))
        return actions

    def on_backfill(self, trades: Iterable[RestTradeLike]) -> list[TradeAction]:
        """The REST backfill for :attr:`pending` answered (any order, any overlap).

        Emits the trades of open gaps it holds (``backfilled=True``, ascending) and reports the
        pending range's ids it lacks as unrecoverable; then asks for the next gap, if any.
        """
        pending = self.pending
        if pending is None:
            self.counters["late_backfills"] += 1
            return []
        actions: list[TradeAction] = []
        fill: dict[int, EmitTrade] = {}
        for trade in trades:
            if trade.id in fill or not self._awaited(trade.id):
                continue
            act, bad = self._rest_act(trade, backfilled=True)
            if bad is not None:
                actions.append(bad)
            elif act is not None:
                fill[trade.id] = act
        for trade_id in sorted(fill):
            index = _find(self._gaps, trade_id)
            if index >= 0:
                _take(self._gaps, index, trade_id)
            else:
                _take(self._unrecoverable, _find(self._unrecoverable, trade_id), trade_id)
            actions.append(fill[trade_id])
        self._limit_unrecoverable()
        return actions + self._limit_gaps() + self._resolve(len(fill), "")

    def on_backfill_failed(self, reason: str) -> list[TradeAction]:
        """The backfill for :attr:`pending` failed for good: report its ids as unrecoverable."""
        if self.pending is None:
            return []
        return self._resolve(0, f"backfill failed: {reason}")

    def _resolve(self, recovered: int, failure: str) -> list[TradeAction]:
        pending = self.pending
        assert pending is not None
        self.pending = None
        actions: list[TradeAction] = []
        self.counters["backfilled"] += recovered
        if recovered:
            actions.append(
                self._status(
                    StatusKind.TRADES_BACKFILLED,
                    f"backfilled {recovered} trades in {_span(*pending)}",
                )
            )
        lost = self._give_up(*pending)
        if lost:
            actions.append(self._report_lost(lost, failure or "not in the backfill", keep=True))
        return actions + self._ask_next()

    def _add(self, name: str, count: int) -> None:
        # A gap opened by a bogus id counts up to 2**63 ids: keep counters within int64.
        self.counters[name] = min(self.counters[name] + count, _INT64_MAX)

    def _status(self, kind: StatusKind, reason: str) -> Status:
        return Status(self.symbol, kind, reason, dict(self.counters))
