"""A consumer that rebuilds books from published events, to compare with the simulator's truth."""

from __future__ import annotations

from decimal import Decimal

from backpack_actors.core.book import OrderBook
from backpack_actors.core.events import (
    BookDelta,
    BookSnapshot,
    Event,
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
        # consumer_overflow reports: the id range each says was dropped, until the next trade.
        self.skipped: dict[str, tuple[int, int]] = {}
        self.dropped: dict[str, int] = {}

    def apply(self, event: Event) -> None:
        sym = getattr(event, "exchange_symbol", None)
        if isinstance(event, BookSnapshot):
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
            if seen:
                expected = seen[-1].trade_id + 1
                skip = self.skipped.get(sym)
                if skip is not None and event.trade_id != expected:
                    # A consumer_overflow report named the ids this subscriber lost.
                    assert skip[0] == expected, f"{sym}: report {skip} after {expected - 1}"
                    expected = skip[1] + 1
                assert event.trade_id == expected, (
                    f"{sym}: trade {event.trade_id} after {seen[-1].trade_id}"
                )
            self.skipped.pop(sym, None)
            seen.append(event)
        elif isinstance(event, StatusEvent):
            self.statuses.append(event)
            if event.kind is StatusKind.CONSUMER_OVERFLOW and event.counts["dropped_trades"]:
                exchange_id = event.symbol.replace("-", "_")
                first = event.counts["first_dropped_trade_id"]
                last = event.counts["last_dropped_trade_id"]
                assert last - first + 1 == event.counts["dropped_trades"], event
                self.dropped[exchange_id] = self.dropped.get(exchange_id, 0) + (last - first + 1)
                self.skipped[exchange_id] = (first, last)

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
    """Every delivered trade equals the simulator's trade with that id."""
    truth = {t.id: t for t in exchange.trades(sym)}  # type: ignore[attr-defined]
    got = consumer.trades.get(sym, [])
    for trade in got:
        real = truth[trade.trade_id]
        assert (trade.price, trade.amount) == (real.price, real.quantity), trade
    return len(got)


async def run_pipeline(
    exchange: object,
    config: object,
    *,
    after_ready: object = None,
    deltas_after: int = 500,
    symbols: tuple[str, ...] = ("BTC_USDC", "ETH_USDC"),
    limit: float = 300.0,
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
                ws_connect=sim_memory_connector(exchange),
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
