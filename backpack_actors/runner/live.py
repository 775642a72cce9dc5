"""The ``--live`` terminal view: per symbol the top levels, last trades, rates, lag and health.

:class:`LiveState` is fed events and ``feed.statistics()`` snapshots and holds everything the view
shows; :func:`render_live` turns it into a rich renderable (tests print it to a recording
``Console``); :class:`LiveView` redraws it at most ``max_fps`` times a second, or prints plain
lines once a second when stdout is not a terminal.

Announcements (the demo's fault injections, :meth:`LiveState.announce`) are printed once above the
redrawn area and the latest few stay in the view; while the view is up, anything else written to
``sys.stderr`` (log lines) is printed above it too, so no foreign write can shift the area rich
redraws and leave stale copies of its lines behind.
"""

from __future__ import annotations

import sys
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import trio
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.panel import Panel
from rich.spinner import Spinner
from rich.table import Table
from rich.text import Text

from backpack_actors.core.book import OrderBook
from backpack_actors.core.events import (
    BookDelta,
    BookSnapshot,
    BookTicker,
    Candle,
    Event,
    Liquidation,
    MarkPrice,
    OpenInterest,
    ProtocolErrorEvent,
    StatusEvent,
    StatusKind,
    Ticker,
    Trade,
)
from backpack_actors.core.symbols import normalize

try:
    # The account channels' events, when the [private] extra is installed.
    from backpack_actors.private.events import Balance, Fill, OrderUpdate, PositionUpdate
except ImportError:  # pragma: no cover - depends on the installed extras
    Balance = Fill = OrderUpdate = PositionUpdate = None  # type: ignore[assignment,misc]

__all__ = ["LiveState", "LiveView", "SymbolView", "plain_lines", "render_live"]

_LAG_WINDOW = 200
_NOTICES = 3


@dataclass
class SymbolView:
    """What the view knows about one symbol (normalized name)."""

    symbol: str
    book: OrderBook = field(default_factory=OrderBook)
    ready: bool = False
    mode: str = "ws"
    trades: deque[Trade] = field(default_factory=lambda: deque(maxlen=5))
    lags: deque[float] = field(default_factory=lambda: deque(maxlen=_LAG_WINDOW))
    frames: int = 0
    frames_per_s: float = 0.0
    book_gaps: int = 0
    trade_gaps: int = 0
    resyncs: int = 0
    reconnects: int = 0
    decode_errors: int = 0
    last_status: str = ""
    # The other channels' latest values, one short text each (book ticker, ticker, candle, ...).
    channels: dict[str, str] = field(default_factory=dict)

    @property
    def gaps(self) -> int:
        """Book and trade gaps together (each is shown on its own)."""
        return self.book_gaps + self.trade_gaps

    @property
    def lag_ms(self) -> float | None:
        """Median receipt − ``T`` over the recent window, in milliseconds."""
        if not self.lags:
            return None
        ordered = sorted(self.lags)
        return ordered[len(ordered) // 2] * 1000.0


class LiveState:
    """Event- and statistics-driven model of the view (no I/O, no clock of its own)."""

    def __init__(self, symbols: list[str] | tuple[str, ...] = (), *, levels: int = 5) -> None:
        self.levels = levels
        self.symbols: dict[str, SymbolView] = {}
        self.events = 0
        self.started_at: float | None = None
        self.now: float | None = None
        self._frames_at: dict[str, tuple[float, int]] = {}
        self.notices: deque[str] = deque(maxlen=_NOTICES)
        self.unprinted: list[str] = []
        # The account channels: open orders (id -> text), positions (symbol -> text), balances,
        # fills seen, and the private feed's last status.
        self.orders: dict[str, str] = {}
        self.positions: dict[str, str] = {}
        self.balances: dict[str, str] = {}
        self.fills = 0
        self.account_status = ""
        for symbol in symbols:
            self.view(symbol)

    def view(self, symbol: str) -> SymbolView:
        """The (created on first use) view of ``symbol`` in any accepted form."""
        key = normalize(symbol.upper())
        state = self.symbols.get(key)
        if state is None:
            state = self.symbols[key] = SymbolView(key)
        return state

    def announce(self, text: str) -> None:
        """A line of news (e.g. an injected fault): printed once above the view, and kept."""
        self.notices.append(text)
        self.unprinted.append(text)

    def take_unprinted(self) -> list[str]:
        """The announcements not printed yet (and forget them)."""
        taken, self.unprinted = self.unprinted, []
        return taken

    def observe(self, event: Event) -> None:
        """Account one event."""
        self.events += 1
        if self._observe_account(event):
            return
        view = self.view(event.symbol)
        if isinstance(event, BookSnapshot):
            view.book.load(event.raw_bids, event.raw_asks)
            view.ready = True
        elif isinstance(event, BookDelta):
            view.book.apply(event.raw_bids, event.raw_asks)
            view.lags.append(event.received_at - event.engine_time_us / 1_000_000)
        elif isinstance(event, Trade):
            view.trades.appendleft(event)
            view.lags.append(event.received_at - event.engine_time_us / 1_000_000)
        elif isinstance(event, StatusEvent):
            view.last_status = f"{event.kind.value}: {event.reason}"
            if event.kind in (StatusKind.RESYNCING, StatusKind.GAP_DETECTED, StatusKind.STALE):
                view.ready = False
            elif event.kind in (StatusKind.BOOK_READY, StatusKind.RESYNCED):
                view.ready = True
            elif event.kind is StatusKind.DEGRADED_REST_ONLY:
                view.mode = "rest"
            elif event.kind is StatusKind.RECOVERED_WS:
                view.mode = "ws"
        elif isinstance(event, ProtocolErrorEvent):
            view.last_status = f"protocol error on {event.stream}: {event.reason}"
        else:
            text = _channel_text(event)
            if text is not None:
                view.channels[text[0]] = text[1]

    def _observe_account(self, event: object) -> bool:
        """The account channels' events (True when ``event`` was one)."""
        if isinstance(event, StatusEvent) and event.symbol == "account":
            self.account_status = f"{event.kind.value}: {event.reason}"
            return True
        if OrderUpdate is None:
            return False
        if isinstance(event, OrderUpdate):
            if event.status in ("New", "PartiallyFilled", "TriggerPending"):
                qty = "-" if event.quantity is None else format(event.quantity, "f")
                done = "0" if event.executed_quantity is None else f"{event.executed_quantity:f}"
                price = "market" if event.price is None else f"@{event.price:f}"
                self.orders[event.order_id] = (
                    f"{event.symbol} {event.side or ''} {done}/{qty} {price} {event.status}"
                )
            else:
                self.orders.pop(event.order_id, None)
            return True
        if isinstance(event, PositionUpdate):
            if event.net_quantity == 0:
                self.positions.pop(event.symbol, None)
            else:
                entry = "-" if event.entry_price is None else f"{event.entry_price:f}"
                pnl = "-" if event.unrealized_pnl is None else f"{event.unrealized_pnl:f}"
                self.positions[event.symbol] = (
                    f"{event.symbol} {event.net_quantity:f} entry {entry} unrealized {pnl}"
                )
            return True
        if isinstance(event, Fill):
            self.fills += 1
            return True
        if isinstance(event, Balance):
            self.balances[event.asset] = f"{event.asset} {event.available:f} (+{event.locked:f})"
            return True
        return False

    def update_stats(self, stats: Mapping[str, Any], now: float) -> None:
        """Take counters from ``feed.statistics()`` at monotonic time ``now``."""
        if self.started_at is None:
            self.started_at = now
        self.now = now
        for exchange_id, stream in stats.get("streams", {}).items():
            view = self.view(exchange_id)
            view.mode = str(stream.get("mode", view.mode))
            view.frames = int(stream.get("frames", 0))
            view.reconnects = int(stream.get("reconnects", 0))
            view.decode_errors = int(stream.get("decode_errors", 0))
            # The rate over windows of at least a second: steadier than per-refresh deltas.
            previous = self._frames_at.get(view.symbol)
            if previous is None:
                self._frames_at[view.symbol] = (now, view.frames)
            elif now - previous[0] >= 1.0:
                view.frames_per_s = (view.frames - previous[1]) / (now - previous[0])
                self._frames_at[view.symbol] = (now, view.frames)
        symbols = stats.get("reconciler", {}).get("symbols", {})
        for exchange_id, sync in symbols.items():
            view = self.view(exchange_id)
            book = sync.get("book", {})
            view.book_gaps = int(book.get("gaps", 0))
            view.trade_gaps = int(sync.get("trades", {}).get("gaps", 0))
            view.resyncs = int(book.get("resyncs", 0))
            view.ready = sync.get("state") == "live"


def _channel_text(event: object) -> tuple[str, str] | None:
    """A stateless channel event as (label, short text) for its symbol's panel."""
    if isinstance(event, BookTicker):
        return (
            "touch",
            f"{event.raw_bid_size}@{event.raw_bid_price} / "
            f"{event.raw_ask_size}@{event.raw_ask_price}",
        )
    if isinstance(event, Ticker):
        return (
            "24h",
            f"last {event.raw_last} high {event.raw_high} low {event.raw_low} "
            f"vol {event.raw_volume}",
        )
    if isinstance(event, Candle):
        state = "closed" if event.closed else "open"
        return (
            f"candle {event.interval}",
            f"O {event.raw_open} H {event.raw_high} L {event.raw_low} C {event.raw_close} "
            f"V {event.raw_volume} ({state})",
        )
    if isinstance(event, MarkPrice):
        funding = event.raw_funding_rate or "-"
        return (
            "mark",
            f"{event.raw_mark_price} index {event.raw_index_price or '-'} funding {funding}",
        )
    if isinstance(event, OpenInterest):
        return "open interest", event.raw_open_interest
    if isinstance(event, Liquidation):
        return "liquidation", f"{event.side.value} {event.raw_amount}@{event.raw_price}"
    return None


def _fmt(value: Decimal | str) -> str:
    return value if isinstance(value, str) else format(value, "f")


def _book_table(view: SymbolView, levels: int) -> Table:
    table = Table(box=None, pad_edge=False, show_edge=False, expand=False)
    table.add_column("bid size", justify="right", style="green")
    table.add_column("bid", justify="right", style="bold green")
    table.add_column("ask", justify="left", style="bold red")
    table.add_column("ask size", justify="left", style="red")
    bids, asks = view.book.depth(levels)
    for i in range(max(len(bids), len(asks))):
        bid = bids[i] if i < len(bids) else None
        ask = asks[i] if i < len(asks) else None
        table.add_row(
            _fmt(bid[1]) if bid else "",
            _fmt(bid[0]) if bid else "",
            _fmt(ask[0]) if ask else "",
            _fmt(ask[1]) if ask else "",
        )
    return table


def _trades_table(view: SymbolView) -> Table:
    table = Table(box=None, pad_edge=False, show_edge=False, title="last trades", expand=False)
    table.add_column("side")
    table.add_column("price", justify="right")
    table.add_column("amount", justify="right")
    table.add_column("id", justify="right", style="dim")
    for trade in view.trades:
        style = "green" if trade.side.value == "buy" else "red"
        table.add_row(
            Text(trade.side.value, style=style),
            _fmt(trade.price),
            _fmt(trade.amount),
            str(trade.trade_id),
        )
    return table


def _health_line(view: SymbolView) -> Text:
    lag = view.lag_ms
    lag_text = "-" if lag is None else f"{lag:.1f} ms"
    return Text(
        f"frames/s {view.frames_per_s:.1f}  lag {lag_text}  book gaps {view.book_gaps}  "
        f"trade gaps {view.trade_gaps}  resyncs {view.resyncs}  reconnects {view.reconnects}  "
        f"decode errors {view.decode_errors}"
    )


def _symbol_panel(view: SymbolView, levels: int) -> Panel:
    mode = "WS" if view.mode == "ws" else "REST-only"
    title = f"{view.symbol}  [{mode}]"
    parts: list[RenderableType]
    if view.ready and len(view.book):
        parts = [_book_table(view, levels), _trades_table(view)]
    else:
        parts = [Spinner("dots", text=f"waiting for the {view.symbol} book…")]
    parts.append(_health_line(view))
    if view.channels:
        parts.append(Text("  ".join(f"{k} {v}" for k, v in view.channels.items()), style="cyan"))
    if view.last_status:
        parts.append(Text(view.last_status, style="dim"))
    return Panel(Group(*parts), title=title, title_align="left")


def render_live(state: LiveState) -> RenderableType:
    """The whole view: a header line and one panel per symbol."""
    uptime = 0.0
    if state.started_at is not None and state.now is not None:
        uptime = state.now - state.started_at
    header = Text(f"backpack_actors  events {state.events}  uptime {uptime:.0f} s", style="bold")
    notices = [Text(notice, style="yellow") for notice in state.notices]
    panels: list[RenderableType] = [
        _symbol_panel(view, state.levels) for view in state.symbols.values()
    ]
    account = _account_panel(state)
    if account is not None:
        panels.append(account)
    return Group(header, *notices, *panels)


def _account_panel(state: LiveState) -> Panel | None:
    """Open orders, positions and balances of the account channels (when there are any)."""
    if not (state.orders or state.positions or state.balances or state.account_status):
        return None
    lines: list[RenderableType] = []
    lines.append(Text(f"open orders {len(state.orders)}  fills {state.fills}", style="bold"))
    lines.extend(Text(text) for text in list(state.orders.values())[:10])
    if state.positions:
        lines.append(Text("positions", style="bold"))
        lines.extend(Text(text) for text in state.positions.values())
    if state.balances:
        lines.append(Text("balances (polled)  " + "  ".join(state.balances.values())))
    if state.account_status:
        lines.append(Text(state.account_status, style="dim"))
    return Panel(Group(*lines), title="account", title_align="left")


def plain_lines(state: LiveState) -> list[str]:
    """One plain line per symbol (the view when stdout is not a terminal)."""
    lines = []
    for view in state.symbols.values():
        best_bid = view.book.best_bid() if view.ready else None
        best_ask = view.book.best_ask() if view.ready else None
        bid = f"{_fmt(best_bid[1])}@{_fmt(best_bid[0])}" if best_bid else "-"
        ask = f"{_fmt(best_ask[1])}@{_fmt(best_ask[0])}" if best_ask else "-"
        lag = view.lag_ms
        lines.append(
            f"{view.symbol} {view.mode} {'ready' if view.ready else 'syncing'} "
            f"bid {bid} ask {ask} frames/s {view.frames_per_s:.1f} "
            f"lag {'-' if lag is None else f'{lag:.1f}ms'} book gaps {view.book_gaps} "
            f"trade gaps {view.trade_gaps} "
            f"resyncs {view.resyncs} reconnects {view.reconnects}"
            + "".join(f" {k} {v}" for k, v in view.channels.items())
        )
    if state.orders or state.positions:
        lines.append(f"account open orders {len(state.orders)} positions {len(state.positions)}")
    return lines


def _stderr_is_terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed streams
        return False


class LiveView:
    """Redraws a :class:`LiveState` on a console: rich ``Live`` on a terminal, plain otherwise."""

    def __init__(
        self,
        state: LiveState,
        console: Console | None = None,
        *,
        max_fps: float = 10.0,
        plain_interval: float = 1.0,
    ) -> None:
        self.state = state
        self.console = console or Console()
        self.interval = 1.0 / min(max_fps, 10.0)
        self.plain_interval = plain_interval
        self.redraws = 0

    @property
    def is_terminal(self) -> bool:
        """True when the console is an interactive terminal."""
        return self.console.is_terminal

    async def run(self, refresh_stats: Any = None) -> None:
        """Redraw until cancelled; ``refresh_stats()`` (if given) runs before each redraw."""
        if not self.is_terminal:
            await self._run_plain(refresh_stats)
            return
        with Live(
            render_live(self.state),
            console=self.console,
            auto_refresh=False,
            transient=False,
            # Only when stderr shares the terminal: a redirected stderr keeps its log lines.
            redirect_stderr=_stderr_is_terminal(),
            redirect_stdout=False,
        ) as live:
            while True:
                if refresh_stats is not None:
                    refresh_stats()
                for notice in self.state.take_unprinted():
                    live.console.print(notice, markup=False, highlight=False, soft_wrap=True)
                live.update(render_live(self.state), refresh=True)
                self.redraws += 1
                await trio.sleep(self.interval)

    async def _run_plain(self, refresh_stats: Any) -> None:
        while True:
            await trio.sleep(self.plain_interval)
            if refresh_stats is not None:
                refresh_stats()
            stamp = time.strftime("%H:%M:%S")
            for notice in self.state.take_unprinted():
                self.console.print(f"{stamp} {notice}", markup=False, highlight=False)
            for line in plain_lines(self.state):
                self.console.print(f"{stamp} {line}", markup=False, highlight=False, soft_wrap=True)
            self.redraws += 1
