"""A consumer that rebuilds books from published events, to compare with the simulator's truth."""

from __future__ import annotations

from decimal import Decimal

from backpack_actors.core.book import OrderBook
from backpack_actors.core.events import (
    BookDelta,
    BookSnapshot,
    Event,
    ProtocolErrorEvent,
    StatusEvent,
    StatusKind,
    Trade,
)


class ConsumerBooks:
    """Applies events the way a user would and checks what a user relies on as it goes."""

    def __init__(self) -> None:
        self.books: dict[str, OrderBook] = {}
        self.last_id: dict[str, int] = {}
        self.trades: dict[str, list[Trade]] = {}
        self.statuses: list[StatusEvent] = []
        self.snapshots: dict[str, int] = {}
        self.deltas: dict[str, int] = {}
        # Protocol-error events, as delivered (tests inspect them).
        self.events: list[Event] = []
        self.trade_ids: dict[str, set[int]] = {}
        self.newest_trade: dict[str, int] = {}
        # Trade ids a subscriber may miss, each announced: gaps (TRADE_GAP, whose backfilled
        # trades arrive later, out of id order) and this subscriber's consumer_overflow drops.
        self.gap_reported: dict[str, bool] = {}
        self.unrecoverable: dict[str, int] = {}
        self.dropped: dict[str, int] = {}

    def apply(self, event: Event) -> None:
        if isinstance(event, ProtocolErrorEvent):
            self.events.append(event)
        sym = getattr(event, "exchange_symbol", None)
        if isinstance(event, BookSnapshot) and not event.force:
            # An interval snapshot (a fixed-depth view): it must agree with the book held.
            assert sym is not None
            assert event.update_id == self.last_id.get(sym), "a view of another book state"
        elif isinstance(event, BookSnapshot):
            assert sym is not None
            assert event.force
            prev = self.last_id.get(sym)
            assert prev is None or event.update_id >= prev, "a published book never rewinds"
            book = self.books.setdefault(sym, OrderBook())
            book.load(event.raw_bids, event.raw_asks)
            assert not book.is_crossed()
            self.last_id[sym] = event.update_id
            self.snapshots[sym] = self.snapshots.get(sym, 0) + 1
        elif isinstance(event, BookDelta):
            assert sym is not None
            prev = self.last_id.get(sym)
            assert prev is not None, "a delta before any snapshot"
            assert event.first_update_id <= prev + 1 <= event.last_update_id, (
                f"{sym}: published delta {event.first_update_id}..{event.last_update_id} "
                f"does not continue {prev}"
            )
            self.books[sym].apply(event.raw_bids, event.raw_asks)
            self.last_id[sym] = event.last_update_id
            self.deltas[sym] = self.deltas.get(sym, 0) + 1
        elif isinstance(event, Trade):
            assert sym is not None
            seen = self.trades.setdefault(sym, [])
            ids = self.trade_ids.setdefault(sym, set())
            assert event.trade_id not in ids, f"{sym}: trade {event.trade_id} delivered twice"
            newest = self.newest_trade.get(sym)
            if newest is not None and event.trade_id > newest + 1:
                # Trades are never held back: a jump must have been announced, as a trade_gap
                # (backfill under way) or a consumer_overflow report of this subscriber.
                assert self.gap_reported.get(sym), (
                    f"{sym}: trade {event.trade_id} after {newest} with no gap reported"
                )
            if newest is None or event.trade_id > newest:
                self.newest_trade[sym] = event.trade_id
            ids.add(event.trade_id)
            seen.append(event)
        elif isinstance(event, StatusEvent):
            self.statuses.append(event)
            exchange_id = event.symbol.replace("-", "_")
            if event.kind in (StatusKind.TRADE_GAP, StatusKind.TRADE_ID_RESET):
                self.gap_reported[exchange_id] = True
                # Cumulative ids reported missing (their backfill may still be under way).
                if "missing" in event.counts:
                    self.unrecoverable[exchange_id] = event.counts["missing"]
            if event.kind is StatusKind.CONSUMER_OVERFLOW and event.counts["dropped_trades"]:
                first = event.counts["first_dropped_trade_id"]
                last = event.counts["last_dropped_trade_id"]
                assert last - first + 1 == event.counts["dropped_trades"], event
                self.dropped[exchange_id] = self.dropped.get(exchange_id, 0) + (last - first + 1)
                self.gap_reported[exchange_id] = True

    def kinds(self, symbol: str | None = None) -> list[StatusKind]:
        return [s.kind for s in self.statuses if symbol is None or s.symbol == symbol]

    def levels(
        self, sym: str
    ) -> tuple[list[tuple[Decimal, Decimal]], list[tuple[Decimal, Decimal]]]:
        """The consumer's book by value, best first (the book keeps the exchange's text)."""
        bids, asks = self.books[sym].depth()
        return _values(bids), _values(asks)


def _values(levels: tuple[tuple[str, str], ...]) -> list[tuple[Decimal, Decimal]]:
    return [(Decimal(price), Decimal(size)) for price, size in levels]


def assert_matches_truth(consumer: ConsumerBooks, exchange: object, sym: str) -> int:
    """The consumer's book equals the simulator's at the consumer's last update id."""
    last = consumer.last_id[sym]
    bids, asks = exchange.book_at(sym, last)  # type: ignore[attr-defined]
    got_bids, got_asks = consumer.levels(sym)
    assert got_bids == [tuple(level) for level in bids], f"{sym} bids differ at {last}"
    assert got_asks == [tuple(level) for level in asks], f"{sym} asks differ at {last}"
    return last


def assert_trades_match(consumer: ConsumerBooks, exchange: object, sym: str) -> int:
    """Every delivered trade equals the simulator's trade with that id, and every id between the
    first and the newest delivered was delivered or announced (in a trade gap, whose backfill may
    still be under way, or dropped for this subscriber in a consumer_overflow report): nothing is
    lost silently."""
    truth = {t.id: t for t in exchange.trades(sym)}  # type: ignore[attr-defined]
    got = consumer.trades.get(sym, [])
    for trade in got:
        real = truth[trade.trade_id]
        assert (trade.price, trade.amount) == (real.price, real.quantity), trade
    if got:
        ids = consumer.trade_ids[sym]
        span = set(range(min(ids), max(ids) + 1))
        missing = len(span - ids)
        announced = consumer.unrecoverable.get(sym, 0) + consumer.dropped.get(sym, 0)
        assert missing <= announced, f"{sym}: {missing} trade ids missing, {announced} announced"
    return len(got)


async def run_pipeline(
    exchange: object,
    config: object,
    *,
    after_ready: object = None,
    deltas_after: int = 500,
    symbols: tuple[str, ...] = ("BTC_USDC", "ETH_USDC"),
    limit: float = 300.0,
    ws_connect: object = None,
) -> tuple[ConsumerBooks, dict[str, object]]:
    """Run the in-memory pipeline; call ``after_ready(exchange)`` once every book is ready, then
    stop once every symbol has ``deltas_after`` more deltas. Returns the consumer and statistics."""
    import trio

    from backpack_actors.feed import open_feed
    from backpack_actors.testing import SimRestClient, sim_memory_connector

    consumer = ConsumerBooks()
    ready: set[str] = set()
    injected = False
    baseline: dict[str, int] = {}
    stats: dict[str, object] = {}
    with trio.fail_after(limit):
        async with trio.open_nursery() as nursery:
            await nursery.start(exchange.run)  # type: ignore[attr-defined]
            async with open_feed(
                config,  # type: ignore[arg-type]
                rest_client=SimRestClient(exchange),
                ws_connect=ws_connect or sim_memory_connector(exchange),  # type: ignore[arg-type]
            ) as feed:
                async for event in feed:
                    consumer.apply(event)
                    if isinstance(event, StatusEvent) and event.kind is StatusKind.BOOK_READY:
                        ready.add(event.symbol.replace("-", "_"))
                    if not injected and ready >= set(symbols):
                        injected = True
                        baseline = dict(consumer.deltas)
                        if after_ready is not None:
                            after_ready(exchange)  # type: ignore[operator]
                    if injected and all(
                        consumer.deltas.get(s, 0) - baseline.get(s, 0) >= deltas_after
                        for s in symbols
                    ):
                        break
                stats = feed.statistics()
            nursery.cancel_scope.cancel()
    return consumer, stats
