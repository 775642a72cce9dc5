"""Per-symbol trade-id continuity: dedup, gap detection, backfill planning and merging.

Trade ids ``t`` are sequential per symbol (REFERENCE.md §4.4). :class:`TradeSync` emits trades in
strict id order: a jump asks for a REST backfill and holds the live trades that follow until the
backfill resolves; duplicates (typically replayed after a reconnect) are dropped and counted.
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal
from typing import Literal, Protocol

import msgspec

from backpack_actors.core.dectext import decimal_text, is_price_text, is_size_text
from backpack_actors.core.events import Side, StatusKind
from backpack_actors.core.sync import Malformed, Status

__all__ = [
    "RECENT_TRADES_LIMIT",
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


def trade_problem(trade: LiveTrade) -> str | None:
    """Why a live trade must not be published (bad price or quantity text), or None."""
    if not is_price_text(trade.price):
        return f"p={trade.price!r} is not a finite decimal > 0"
    if not is_size_text(trade.quantity):
        return f"q={trade.quantity!r} is not a finite decimal >= 0"
    return None


class BackfillPage(msgspec.Struct, frozen=True, gc=False):
    """One REST call: ``recent`` is ``/api/v1/trades?limit=``, ``history`` adds ``offset=``."""

    endpoint: Literal["recent", "history"]
    limit: int
    offset: int = 0


def plan_backfill(
    first: int, last: int, newest_known: int, *, page: int = RECENT_TRADES_LIMIT, slack: int = 0
) -> list[BackfillPage]:
    """The REST calls that cover trade ids ``first..last`` given the newest id seen.

    Both endpoints count back from the newest trade (offset 0 = newest). ``slack`` widens the
    window for trades that happened after ``newest_known`` (they shift every offset).
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
    pages = []
    for offset in range(start, end + 1, page):
        pages.append(BackfillPage("history", min(page, end - offset + 1), offset))
    return pages


def _side(buyer_is_maker: bool) -> Side:
    # The maker rested; a resting buyer means the aggressor sold.
    return Side.SELL if buyer_is_maker else Side.BUY


def _span(first: int, last: int) -> str:
    return str(first) if first == last else f"{first}..{last}"


_COUNTER_NAMES = (
    "gaps",
    "missing",
    "duplicates",
    "backfilled",
    "unrecoverable",
    "held_overflows",
    "late_backfills",
    "malformed",
)


class TradeSync:
    """Trade-id continuity for one symbol; every method returns the actions to carry out."""

    __slots__ = ("_held", "_max_held", "counters", "epoch", "last_trade_id", "pending", "symbol")

    def __init__(self, symbol: str, *, max_held: int = 10_000) -> None:
        if max_held < 1:
            raise ValueError("max_held must be at least 1")
        self.symbol = symbol
        self.epoch: int | None = None
        self.last_trade_id: int | None = None
        # The id range a backfill was asked for; while set, later trades are held.
        self.pending: tuple[int, int] | None = None
        self.counters: dict[str, int] = dict.fromkeys(_COUNTER_NAMES, 0)
        self._max_held = max_held
        self._held: dict[int, EmitTrade] = {}

    @property
    def held(self) -> int:
        """Trades waiting for a backfill to resolve."""
        return len(self._held)

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
        """The emit action for a REST trade (ms timestamp -> µs)."""
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

    def on_trade(self, epoch: int, trade: LiveTrade) -> list[TradeAction]:
        """One live trade. Ids are authoritative across connections, so every epoch is accepted.

        A malformed trade is reported and otherwise treated as never received (its id is then a
        gap that a backfill fills from REST).
        """
        problem = trade_problem(trade)
        if problem is not None:
            self.counters["malformed"] += 1
            return [Malformed(self.symbol, f"trade.{self.symbol}", problem, trade)]
        self.epoch = epoch
        return self._ingest(self.from_live(trade))

    def accept_in_order(self, trade: LiveTrade) -> bool:
        """Fast path: True (and recorded) when ``trade`` simply continues the sequence.

        That takes plain decimal text for price and quantity too. Otherwise nothing changes and
        the caller goes through :meth:`on_trade`.
        """
        last = self.last_trade_id
        trade_id = trade.trade_id
        if self.pending is None and last is not None and trade_id == last + 1:
            price = trade.price
            quantity = trade.quantity
            # core.dectext's plain-text test, inlined: this runs for every trade.
            if (
                price.isascii()
                and price.replace(".", "", 1).isdigit()
                and price.strip("0.")
                and quantity.isascii()
                and quantity.replace(".", "", 1).isdigit()
            ):
                self.last_trade_id = trade_id
                return True
        return False

    def on_rest_trades(self, trades: Iterable[RestTradeLike]) -> list[TradeAction]:
        """REST-only mode: one poll of recent trades (any order); emits the new ones, ascending."""
        actions: list[TradeAction] = []
        by_id = {t.id: t for t in trades}
        for trade_id in sorted(by_id):
            if self.last_trade_id is not None and trade_id <= self.last_trade_id:
                continue
            actions.extend(self._ingest(self.from_rest(by_id[trade_id], backfilled=False)))
        return actions

    def _ingest(self, act: EmitTrade) -> list[TradeAction]:
        t = act.trade_id
        last = self.last_trade_id
        if last is None:
            self.last_trade_id = t
            return [act]
        if t <= last or t in self._held:
            self.counters["duplicates"] += 1
            return []
        pending = self.pending
        if pending is not None:
            self._held[t] = act
            if len(self._held) > self._max_held:
                self.counters["held_overflows"] += 1
                return self._resolve({}, f"more than {self._max_held} trades held")
            first, end = pending
            if first <= t <= end and all(i in self._held for i in range(first, end + 1)):
                # Live trades arrived out of order and closed the gap themselves.
                return self._resolve({}, "")
            return []
        if t == last + 1:
            self.last_trade_id = t
            return [act]
        self._held[t] = act
        return self._open_gap(last + 1, t - 1, t)

    def _open_gap(self, first: int, end: int, newest: int) -> list[TradeAction]:
        self.pending = (first, end)
        count = end - first + 1
        self.counters["gaps"] += 1
        self.counters["missing"] += count
        return [
            self._status(
                StatusKind.TRADE_GAP,
                f"trade ids {_span(first, end)} missing ({count}); backfilling",
            ),
            RequestBackfill(self.symbol, first, end, newest),
        ]

    def on_backfill(self, trades: Iterable[RestTradeLike]) -> list[TradeAction]:
        """The REST backfill answered (any order, any overlap); emit the gap, then held trades."""
        if self.pending is None:
            self.counters["late_backfills"] += 1
            return []
        last = self.last_trade_id
        assert last is not None
        newest = max(self._held, default=self.pending[1])
        fill = {
            t.id: self.from_rest(t)
            for t in trades
            if last < t.id <= newest and t.id not in self._held
        }
        return self._resolve(fill, "")

    def on_backfill_failed(self, reason: str) -> list[TradeAction]:
        """The backfill failed for good: release the held trades and report the loss."""
        if self.pending is None:
            return []
        return self._resolve({}, f"backfill failed: {reason}")

    def _resolve(self, fill: dict[int, EmitTrade], failure: str) -> list[TradeAction]:
        pending = self.pending
        last = self.last_trade_id
        assert pending is not None
        assert last is not None
        first, end = pending
        self.pending = None
        merged = fill | self._held
        self._held = {}
        actions: list[TradeAction] = []
        statuses: list[TradeAction] = []
        lost: list[str] = []
        lost_count = 0
        recovered = 0
        expected = last + 1
        ids = sorted(merged)
        for index, trade_id in enumerate(ids):
            if trade_id != expected:
                hole_end = trade_id - 1
                if expected <= end:
                    lost_end = min(hole_end, end)
                    lost.append(_span(expected, lost_end))
                    lost_count += lost_end - expected + 1
                if hole_end > end:
                    # A second gap among the held trades: keep holding what follows it.
                    self._held = {i: merged[i] for i in ids[index:]}
                    statuses.extend(self._open_gap(max(expected, end + 1), hole_end, ids[-1]))
                    break
            act = merged[trade_id]
            recovered += act.backfilled
            actions.append(act)
            expected = trade_id + 1
            self.last_trade_id = trade_id
        else:
            if expected <= end:
                # The end of the range never arrived (a defensive path: the trade that opened
                # the gap is always held).
                lost.append(_span(expected, end))
                lost_count += end - expected + 1
        self.counters["backfilled"] += recovered
        self.counters["unrecoverable"] += lost_count
        if recovered:
            actions.append(
                self._status(
                    StatusKind.TRADES_BACKFILLED,
                    f"backfilled {recovered} trades in {_span(first, end)}",
                )
            )
        if lost_count:
            why = f" ({failure})" if failure else ""
            actions.append(
                self._status(
                    StatusKind.TRADE_GAP,
                    f"{lost_count} trade ids unrecoverable: {', '.join(lost)}{why}",
                )
            )
        return actions + statuses

    def _status(self, kind: StatusKind, reason: str) -> Status:
        return Status(self.symbol, kind, reason, dict(self.counters))
