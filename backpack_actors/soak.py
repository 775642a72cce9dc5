"""Soak run: the whole pipeline against the simulator with random faults, checked against truth.

``python -m backpack_actors.soak --duration 1800`` serves a simulator on loopback and runs a feed
with the default ccxt REST client against it. A seeded injector arms one fault every few seconds,
cycling through shuffled decks of :data:`FAULT_MIX` (so every kind is used). At each checkpoint the
simulator's generation is paused, the consumer waits until it holds every symbol's last update id,
every book is compared with the simulator's book at that id and every new trade with the
simulator's trade, and generation resumes. The consumer also checks that every published delta
continues the previous one (an *undetected gap* otherwise). Exit status 1 on any mismatch,
undetected gap, stuck checkpoint or crash.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any

import attrs
import trio

from backpack_actors.config import FeedConfig
from backpack_actors.core.book import OrderBook, RawLevel
from backpack_actors.core.events import (
    BookDelta,
    BookSnapshot,
    Event,
    ProtocolErrorEvent,
    StatusEvent,
    StatusKind,
    Trade,
)
from backpack_actors.feed import open_feed
from backpack_actors.supervisor import SupervisorEventKind
from backpack_actors.transport.rest import RestClient
from backpack_actors.transport.ws import WsConnector

__all__ = [
    "FAULT_MIX",
    "SoakConsumer",
    "SoakReport",
    "inject_fault",
    "main",
    "run_soak",
    "soak_over_loopback",
]

FAULT_MIX = (
    "drop",
    "duplicate",
    "reorder",
    "stall",
    "disconnect",
    "malformed",
    "refuse_handshake",
    "http_429",
    "http_5xx",
    "slow",
)
"""Every simulator fault except ``http_451``, which is terminal by design (the feed stops)."""

Levels = tuple[tuple[Decimal, Decimal], ...]


def _decimal_levels(levels: tuple[RawLevel, ...]) -> Levels:
    return tuple([(Decimal(price), Decimal(size)) for price, size in levels])


def inject_fault(faults: Any, kind: str, rng: random.Random, symbols: Sequence[str]) -> None:
    """Arm one fault of ``kind`` on the simulator's :class:`~backpack_actors.sim.Faults`."""
    sym = rng.choice(list(symbols))
    if kind == "drop":
        faults.drop_delta(sym, count=rng.randint(1, 3))
    elif kind == "duplicate":
        faults.duplicate_delta(sym, count=rng.randint(1, 3))
    elif kind == "reorder":
        faults.reorder_deltas(sym)
    elif kind == "stall":
        faults.stall(seconds=rng.uniform(0.5, 8.0), symbol=sym)
    elif kind == "disconnect":
        faults.disconnect_after(frames=rng.randint(5, 200), connections=1)
    elif kind == "malformed":
        faults.malformed_frame(sym, count=rng.randint(1, 3))
    elif kind == "refuse_handshake":
        faults.refuse_handshake(count=rng.randint(1, 2), status=rng.choice([500, 502, 503]))
    elif kind == "http_429":
        faults.http_429(count=rng.randint(1, 2), retry_after=rng.randint(1, 2))
    elif kind == "http_5xx":
        faults.http_5xx(count=rng.randint(1, 3), status=rng.choice([500, 502, 503, 504]))
    elif kind == "slow":
        faults.slow_responses(delay=rng.uniform(0.2, 2.0), count=rng.randint(1, 3))
    else:
        raise ValueError(f"unknown fault kind {kind!r}")


class SoakConsumer:
    """Rebuilds books from events like a user would, counting what a user must never see."""

    def __init__(self) -> None:
        self.books: dict[str, OrderBook] = {}
        self.last_id: dict[str, int] = {}
        self.trades: dict[str, list[Trade]] = {}
        self.statuses: Counter[StatusKind] = Counter()
        self.protocol_errors = 0
        self.undetected_gaps = 0
        self.rewinds = 0
        self.trade_id_breaks = 0
        self.events = 0
        self._trade_ids: dict[str, set[int]] = {}
        self._newest: dict[str, int] = {}
        self._gap: dict[str, bool] = {}

    def apply(self, event: Event) -> None:
        self.events += 1
        if isinstance(event, BookSnapshot):
            sym = event.exchange_symbol
            prev = self.last_id.get(sym)
            if prev is not None and event.update_id < prev:
                self.rewinds += 1
            self.books.setdefault(sym, OrderBook()).load(event.raw_bids, event.raw_asks)
            self.last_id[sym] = event.update_id
        elif isinstance(event, BookDelta):
            sym = event.exchange_symbol
            prev = self.last_id.get(sym)
            if prev is None or not event.first_update_id <= prev + 1 <= event.last_update_id:
                self.undetected_gaps += 1
            self.books.setdefault(sym, OrderBook()).apply(event.raw_bids, event.raw_asks)
            self.last_id[sym] = event.last_update_id
        elif isinstance(event, Trade):
            sym = event.exchange_symbol
            seen = self.trades.setdefault(sym, [])
            ids = self._trade_ids.setdefault(sym, set())
            newest = self._newest.get(sym)
            # Trades are never held back, so a gap's trades may arrive after higher ids; what a
            # user must never see is a trade twice, or a jump nobody announced.
            if event.trade_id in ids or (
                newest is not None and event.trade_id > newest + 1 and not self._gap.get(sym)
            ):
                self.trade_id_breaks += 1
            ids.add(event.trade_id)
            if newest is None or event.trade_id > newest:
                self._newest[sym] = event.trade_id
            seen.append(event)
        elif isinstance(event, StatusEvent):
            self.statuses[event.kind] += 1
            if event.kind in (
                StatusKind.TRADE_GAP,
                StatusKind.TRADE_ID_RESET,
                StatusKind.CONSUMER_OVERFLOW,
            ):
                self._gap[event.symbol.replace("-", "_")] = True
        elif isinstance(event, ProtocolErrorEvent):
            self.protocol_errors += 1

    def depth(self, sym: str) -> tuple[Levels, Levels]:
        bids, asks = self.books[sym].depth()
        return _decimal_levels(bids), _decimal_levels(asks)


@attrs.define
class SoakReport:
    """What a soak run observed; :meth:`ok` is the verdict."""

    duration: float = 0.0
    symbols: tuple[str, ...] = ()
    faults_armed: Counter[str] = attrs.field(factory=Counter)
    faults_injected: dict[str, int] = attrs.field(factory=dict)
    checkpoints: int = 0
    books_compared: int = 0
    trades_compared: int = 0
    gaps_detected: int = 0
    resyncs: int = 0
    statuses: dict[str, int] = attrs.field(factory=dict)
    protocol_errors: int = 0
    undetected_gaps: int = 0
    trade_id_breaks: int = 0
    rewinds: int = 0
    book_mismatches: int = 0
    trade_mismatches: int = 0
    stuck_checkpoints: int = 0
    crashes: int = 0
    crash_reasons: list[str] = attrs.field(factory=list)
    events: int = 0
    supervisor_restarts: int = 0
    rss_start_kib: int | None = None
    rss_end_kib: int | None = None
    open_sockets_start: int | None = None
    open_sockets_end: int | None = None
    tasks_end: int | None = None

    def ok(self) -> bool:
        """No mismatch, no undetected gap or rewind, no stuck checkpoint, no crash."""
        return not (
            self.book_mismatches
            or self.trade_mismatches
            or self.undetected_gaps
            or self.trade_id_breaks
            or self.rewinds
            or self.stuck_checkpoints
            or self.crashes
        )

    def format(self) -> str:
        """The human-readable summary printed by ``nox -s soak``."""
        injected = ", ".join(f"{k} {self.faults_injected.get(k, 0)}" for k in FAULT_MIX)
        armed = ", ".join(f"{k} {self.faults_armed.get(k, 0)}" for k in FAULT_MIX)
        lines = [
            f"soak: {self.duration:.0f} s, symbols {', '.join(self.symbols)}",
            f"faults injected per kind: {injected}",
            f"faults armed per kind:    {armed}",
            f"checkpoints: {self.checkpoints} ({self.books_compared} books and "
            f"{self.trades_compared} trades compared with ground truth)",
            f"gaps detected: {self.gaps_detected}",
            f"resyncs: {self.resyncs}",
            f"protocol errors reported: {self.protocol_errors}",
            f"status events: {dict(sorted(self.statuses.items()))}",
            f"supervisor restarts: {self.supervisor_restarts}",
            f"events consumed: {self.events}",
            f"undetected gaps: {self.undetected_gaps}",
            f"trade id breaks (repeated trades or unannounced jumps): {self.trade_id_breaks}",
            f"book rewinds: {self.rewinds}",
            f"book mismatches: {self.book_mismatches}",
            f"trade mismatches: {self.trade_mismatches}",
            f"stuck checkpoints: {self.stuck_checkpoints}",
            f"crashes: {self.crashes} {self.crash_reasons}",
            f"RSS start: {_kib(self.rss_start_kib)}, end: {_kib(self.rss_end_kib)}",
            f"open sockets at start: {self.open_sockets_start}, at end: {self.open_sockets_end}"
            f" (trio's own wake-up pair included), trio tasks at end: {self.tasks_end}",
            f"verdict: {'OK' if self.ok() else 'FAILED'}",
        ]
        return "\n".join(lines)


def _kib(value: int | None) -> str:
    return "n/a" if value is None else f"{value / 1024:.1f} MiB"


def rss_kib() -> int | None:
    """Resident set size of this process in KiB (Linux ``/proc``), None elsewhere."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def open_sockets() -> int | None:
    """Sockets this process holds open (Linux ``/proc/self/fd``), None elsewhere."""
    try:
        names = os.listdir("/proc/self/fd")
    except OSError:
        return None
    count = 0
    for name in names:
        try:
            if os.readlink(f"/proc/self/fd/{name}").startswith("socket:"):
                count += 1
        except OSError:
            continue
    return count


def trio_tasks() -> int:
    """Tasks alive in the current trio run (the caller's included)."""
    root = trio.lowlevel.current_root_task()
    count = 0
    stack = [] if root is None else [root]
    while stack:
        task = stack.pop()
        count += 1
        for nursery in task.child_nurseries:
            stack.extend(nursery.child_tasks)
    return count


async def run_soak(
    exchange: Any,
    config: FeedConfig,
    *,
    duration: float,
    seed: int = 1,
    rest_client_factory: Callable[[], RestClient | None] = lambda: None,
    ws_connect: WsConnector | None = None,
    fault_interval: float = 5.0,
    checkpoint_interval: float = 30.0,
    checkpoint_timeout: float = 120.0,
    nudge_after: float = 2.0,
    report: SoakReport | None = None,
    progress: Callable[[str], None] | None = None,
) -> SoakReport:
    """Run a feed against ``exchange`` (already generating) for ``duration`` s of trio time."""
    report = report or SoakReport()
    report.symbols = tuple(exchange.symbols)
    rng = random.Random(seed)
    deck: list[str] = []
    start = trio.current_time()
    end = start + duration
    while trio.current_time() < end:
        consumer = SoakConsumer()
        trade_checked: dict[str, int] = {}
        try:
            async with (
                open_feed(
                    config,
                    rest_client=rest_client_factory(),
                    ws_connect=ws_connect,
                    rng=random.Random(rng.random()),
                ) as feed,
                trio.open_nursery() as nursery,
            ):
                nursery.start_soon(_consume, feed, consumer)
                next_checkpoint = trio.current_time() + checkpoint_interval
                while trio.current_time() < end:
                    await trio.sleep(min(fault_interval, max(0.0, end - trio.current_time())))
                    if not deck:
                        deck = list(FAULT_MIX)
                        rng.shuffle(deck)
                    kind = deck.pop()
                    inject_fault(exchange.faults, kind, rng, report.symbols)
                    report.faults_armed[kind] += 1
                    if trio.current_time() >= next_checkpoint or trio.current_time() >= end:
                        await _checkpoint(
                            exchange, consumer, report, trade_checked, checkpoint_timeout,
                            nudge_after,
                        )  # fmt: skip
                        next_checkpoint = trio.current_time() + checkpoint_interval
                        if progress is not None:
                            progress(
                                f"t={trio.current_time() - start:.0f}s checkpoints="
                                f"{report.checkpoints} mismatches={report.book_mismatches} "
                                f"undetected={consumer.undetected_gaps} events={consumer.events}"
                            )
                report.supervisor_restarts += sum(
                    1 for e in feed.supervisor_events if e.kind is SupervisorEventKind.RESTARTING
                )
                nursery.cancel_scope.cancel()
        except Exception as exc:
            # A soak counts crashes (and starts a fresh feed) instead of stopping at the first.
            report.crashes += 1
            report.crash_reasons.append(f"{type(exc).__name__}: {exc}"[:200])
            exchange.faults.clear()
            exchange.resume()
        _merge(report, consumer)
    report.duration = trio.current_time() - start
    report.faults_injected = dict(exchange.faults.injected)
    return report


async def _consume(feed: Any, consumer: SoakConsumer) -> None:
    async for event in feed:
        consumer.apply(event)


def _merge(report: SoakReport, consumer: SoakConsumer) -> None:
    report.gaps_detected += consumer.statuses[StatusKind.GAP_DETECTED]
    report.resyncs += consumer.statuses[StatusKind.RESYNCED]
    for kind, n in consumer.statuses.items():
        report.statuses[kind.value] = report.statuses.get(kind.value, 0) + n
    report.protocol_errors += consumer.protocol_errors
    report.undetected_gaps += consumer.undetected_gaps
    report.trade_id_breaks += consumer.trade_id_breaks
    report.rewinds += consumer.rewinds
    report.events += consumer.events


async def _checkpoint(
    exchange: Any,
    consumer: SoakConsumer,
    report: SoakReport,
    trade_checked: dict[str, int],
    limit: float,
    nudge_after: float,
) -> None:
    exchange.pause()
    try:
        begun = trio.current_time()
        nudged = begun
        with trio.move_on_after(limit):
            while True:
                behind = [
                    s
                    for s in report.symbols
                    if consumer.last_id.get(s) != exchange.last_update_id(s)
                ]
                if not behind:
                    break
                if trio.current_time() - nudged >= nudge_after:
                    # A dropped (or still armed) last delta is only revealed by the next one.
                    nudged = trio.current_time()
                    for sym in behind:
                        exchange.generate(1, sym)
                await trio.sleep(0.05)
        if behind:
            report.stuck_checkpoints += 1
            return
        report.checkpoints += 1
        for sym in report.symbols:
            bids, asks = exchange.book_at(sym, consumer.last_id[sym])
            report.books_compared += 1
            if consumer.depth(sym) != (tuple(bids), tuple(asks)):
                report.book_mismatches += 1
            truth = {t.id: t for t in exchange.trades(sym)}
            delivered = consumer.trades.get(sym, [])
            for trade in delivered[trade_checked.get(sym, 0) :]:
                real = truth.get(trade.trade_id)
                report.trades_compared += 1
                if real is None or (trade.price, trade.amount) != (real.price, real.quantity):
                    report.trade_mismatches += 1
            trade_checked[sym] = len(delivered)
    finally:
        exchange.resume()


async def soak_over_loopback(
    *,
    duration: float,
    seed: int = 1,
    markets: Sequence[str] = ("BTC_USDC", "ETH_USDC", "SOL_USDC"),
    rate: float = 50.0,
    fault_interval: float = 5.0,
    checkpoint_interval: float = 30.0,
    progress: Callable[[str], None] | None = None,
) -> SoakReport:
    """Serve a simulator on 127.0.0.1 and soak a feed using the default ccxt REST client."""
    from backpack_actors.sim import open_simulator

    report = SoakReport(rss_start_kib=rss_kib(), open_sockets_start=open_sockets())
    async with open_simulator(port=0, seed=seed, markets=list(markets), rate=rate) as sim:
        config = FeedConfig.from_kwargs(
            symbols=[m.replace("_", "-") for m in markets],
            rest_url=sim.rest_url,
            ws_url=sim.ws_url,
            snapshot_interval=10,
            stale_timeout=5.0,
        )
        await run_soak(
            sim.exchange,
            config,
            duration=duration,
            seed=seed,
            fault_interval=fault_interval,
            checkpoint_interval=checkpoint_interval,
            report=report,
            progress=progress,
        )
    # Give closed sockets and cancelled tasks one scheduling round to go away.
    await trio.sleep(0.5)
    report.rss_end_kib = rss_kib()
    report.open_sockets_end = open_sockets()
    report.tasks_end = trio_tasks()
    return report


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m backpack_actors.soak [--duration S] [--seed N] ...``; 1 if the soak failed."""
    parser = argparse.ArgumentParser(prog="python -m backpack_actors.soak", description=__doc__)
    parser.add_argument("--duration", type=float, default=1800.0, help="seconds (default 1800)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--markets", default="BTC_USDC,ETH_USDC,SOL_USDC")
    parser.add_argument("--rate", type=float, default=50.0, help="depth messages/s per market")
    parser.add_argument("--fault-interval", type=float, default=5.0)
    parser.add_argument("--checkpoint-interval", type=float, default=30.0)
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    args = parser.parse_args(argv)
    started = time.monotonic()

    def progress(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    report = trio.run(
        lambda: soak_over_loopback(
            duration=args.duration,
            seed=args.seed,
            markets=[m.strip() for m in args.markets.split(",") if m.strip()],
            rate=args.rate,
            fault_interval=args.fault_interval,
            checkpoint_interval=args.checkpoint_interval,
            progress=None if args.quiet else progress,
        )
    )
    print(report.format())
    print(f"wall time: {time.monotonic() - started:.0f} s")
    return 0 if report.ok() else 1


if __name__ == "__main__":
    sys.exit(main())
