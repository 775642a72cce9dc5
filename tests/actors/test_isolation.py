"""Issue 11, "every symbol fails alone": one symbol's failing snapshot, a delisting, a new listing
and runtime (un)subscription each touch that symbol only; the other books stay equal to the
simulator's ground truth and the feed goes on."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio

from backpack_actors.actors.metadata import NoSymbolsLeftError
from backpack_actors.config import FeedConfig
from backpack_actors.core.events import (
    BookDelta,
    BookSnapshot,
    Event,
    StatusEvent,
    StatusKind,
    Trade,
)
from backpack_actors.core.symbols import MarketTable
from backpack_actors.errors import ExchangeRequestError, ExchangeUnavailableError
from backpack_actors.feed import Feed, open_feed
from backpack_actors.sim import SimConfig, SimExchange
from backpack_actors.testing import SimRestClient, sim_memory_connector
from tests.pipeline_helpers import ConsumerBooks, assert_matches_truth, assert_trades_match


def _config(symbols: Any, **overrides: object) -> FeedConfig:
    settings: dict[str, object] = {
        "symbols": symbols,
        "rest_url": "http://sim.invalid",
        "ws_url": "ws://sim.invalid",
        "snapshot_interval": 0,
    }
    settings.update(overrides)
    return FeedConfig.from_kwargs(**settings)


class Recorded:
    """What the background consumer saw: ConsumerBooks plus every event with its virtual time."""

    def __init__(self) -> None:
        self.books = ConsumerBooks()
        self.events: list[tuple[float, Event]] = []

    def of(self, symbol: str) -> list[tuple[float, Event]]:
        """Events of ``symbol`` (normalized, ``BTC-USDC``)."""
        return [(t, e) for t, e in self.events if getattr(e, "symbol", None) == symbol]

    def statuses(self, symbol: str) -> list[StatusEvent]:
        return [e for _, e in self.of(symbol) if isinstance(e, StatusEvent)]

    def first(self, symbol: str, kind: StatusKind) -> float | None:
        for t, e in self.of(symbol):
            if isinstance(e, StatusEvent) and e.kind is kind:
                return t
        return None

    def deltas(self, symbol: str) -> int:
        return sum(isinstance(e, BookDelta) for _, e in self.of(symbol))


@asynccontextmanager
async def running(
    exchange: SimExchange, config: FeedConfig, client: Any = None
) -> AsyncIterator[tuple[Feed, Recorded]]:
    """A feed on ``exchange`` with a consumer that reads (and checks) every event at once."""
    seen = Recorded()
    books = seen.books
    async with trio.open_nursery() as outer:
        await outer.start(exchange.run)
        async with (
            open_feed(
                config,
                rest_client=client if client is not None else SimRestClient(exchange),
                ws_connect=sim_memory_connector(exchange),
            ) as feed,
            trio.open_nursery() as nursery,
        ):

            async def consume() -> None:
                async for event in feed:
                    if isinstance(event, StatusEvent) and event.kind is StatusKind.LISTED:
                        # A market (re)joining is a fresh subscription: its trades start
                        # wherever the exchange is now.
                        xid = event.symbol.replace("-", "_")
                        for state in (books.newest_trade, books.trade_ids, books.trades):
                            state.pop(xid, None)
                    seen.books.apply(event)
                    seen.events.append((trio.current_time(), event))

            nursery.start_soon(consume)
            yield feed, seen
            nursery.cancel_scope.cancel()
        outer.cancel_scope.cancel()


async def wait_for(predicate: Callable[[], bool], within: float, what: str) -> None:
    # Polling in virtual time: the state is another task's (the consumer's).
    with trio.move_on_after(within):
        while not predicate():  # noqa: ASYNC110
            await trio.sleep(0.05)
        return
    raise AssertionError(f"not within {within:g} virtual seconds: {what}")


# --- 1. one symbol's snapshot fails forever ---------------------------------------------------


class FailingDepth:
    """SimRestClient whose ``depth()`` of one symbol always fails with ``error()``."""

    def __init__(self, exchange: SimExchange, symbol: str, error: Callable[[], Exception]):
        self.inner = SimRestClient(exchange)
        self.symbol = symbol
        self.error = error
        self.failed_calls: list[float] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def depth(self, exchange_symbol: str) -> Any:
        if exchange_symbol == self.symbol:
            self.failed_calls.append(trio.current_time())
            await trio.lowlevel.checkpoint()
            raise self.error()
        return await self.inner.depth(exchange_symbol)


def _server_error() -> Exception:
    return ExchangeUnavailableError("Backpack answered HTTP 503 for /api/v1/depth?symbol=ETH_USDC")


def _invalid_symbol() -> Exception:
    return ExchangeRequestError(
        "http://sim.invalid/api/v1/depth?symbol=ETH_USDC", 400, "INVALID_SYMBOL", "Invalid symbol"
    )


@pytest.mark.parametrize("error", [_server_error, _invalid_symbol], ids=["5xx", "400"])
async def test_failing_snapshot_fails_alone_and_is_retried_slowly(
    autojump_clock: trio.testing.MockClock, error: Callable[[], Exception]
) -> None:
    """ETH's depth snapshot fails forever (a 5xx, or a 400 INVALID_SYMBOL): BTC's book becomes
    ready and equals the truth, ETH gets ``snapshot_failed`` (attempts >= snapshot_attempts), and
    is retried every 30..300 s for ten minutes while the feed goes on.

    Old design: the single snapshot worker retried ETH's depth in-line forever
    (``max_attempts=None``), so a snapshot queued behind it never got served, and a 4xx (not
    caught there) crashed the snapshot actor and with it every book's resyncs."""
    exchange = SimExchange(seed=31, markets=["BTC_USDC", "ETH_USDC"], config=SimConfig(rate=20))
    client = FailingDepth(exchange, "ETH_USDC", error)
    config = _config(["ETH-USDC", "BTC-USDC"])
    with trio.fail_after(900):
        async with running(exchange, config, client) as (feed, seen):
            await wait_for(
                lambda: seen.first("BTC-USDC", StatusKind.BOOK_READY) is not None,
                30,
                "BTC book ready",
            )
            await wait_for(
                lambda: seen.first("ETH-USDC", StatusKind.SNAPSHOT_FAILED) is not None,
                60,
                "ETH snapshot_failed",
            )
            failed_at = seen.first("ETH-USDC", StatusKind.SNAPSHOT_FAILED)
            assert failed_at is not None
            await trio.sleep(600)
            btc_deltas = seen.deltas("BTC-USDC")
            await trio.sleep(5)
            assert seen.deltas("BTC-USDC") > btc_deltas, "BTC still streams after ten minutes"
            exchange.pause()
            await trio.sleep(1)
            stats = feed.statistics()
            assert feed.symbols == ["ETH_USDC", "BTC_USDC"]
    failed = [s for s in seen.statuses("ETH-USDC") if s.kind is StatusKind.SNAPSHOT_FAILED]
    assert failed[0].counts["attempts"] >= config.snapshot_attempts
    assert all(s.counts["attempts"] >= config.snapshot_attempts for s in failed)
    eth_kinds = {s.kind for s in seen.statuses("ETH-USDC")}
    assert StatusKind.BOOK_READY not in eth_kinds
    assert not any(isinstance(e, BookSnapshot | BookDelta) for _, e in seen.of("ETH-USDC")), (
        "no book is published for a symbol that never got a snapshot"
    )
    # The first attempts come quickly; then at most one call per 30 s, at least one per 300 s.
    calls = client.failed_calls
    first_attempts = [t for t in calls if t <= failed_at]
    later = [t for t in calls if failed_at < t <= failed_at + 600]
    assert 1 <= len(first_attempts) <= config.snapshot_attempts
    if error is _server_error:
        assert len(first_attempts) == config.snapshot_attempts
    assert 3 <= len(later) <= 600 / 30 + 1, later
    gaps = [b - a for a, b in zip([failed_at, *later], later, strict=False)]
    assert all(25 <= gap <= 330 for gap in gaps), gaps
    assert len(failed) >= 1 + len(later) - 1, "each slow retry that fails is reported"
    # BTC was never disturbed: ready once, no resync, equal to the truth.
    assert [s.kind for s in seen.statuses("BTC-USDC")] == [StatusKind.BOOK_READY]
    assert_matches_truth(seen.books, exchange, "BTC_USDC")
    assert assert_trades_match(seen.books, exchange, "BTC_USDC") > 100
    assert stats["connections"][0]["reconnects"] == 0


# --- 2. delisting ------------------------------------------------------------------------------


class Listing:
    """SimRestClient whose ``load_markets`` answers with ``tables[i]`` on the i-th call (the last
    one from then on): each entry filters the exchange's real listing."""

    def __init__(self, exchange: SimExchange, *filters: Callable[[str], bool]) -> None:
        self.inner = SimRestClient(exchange)
        self.filters = filters
        self.loads = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def load_markets(self) -> MarketTable:
        table = await self.inner.load_markets()
        keep = self.filters[min(self.loads, len(self.filters) - 1)]
        self.loads += 1
        return MarketTable([m for m in table if keep(m.exchange_id)])


async def test_delisted_market_leaves_and_the_other_continues(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """ETH disappears from the listing at the first refresh: it gets ``delisted`` and nothing
    after it, ``feed.symbols`` drops it, BTC streams on and equals the truth.

    Old design: a changed listing was only logged ("market listing changed under a running
    feed"); the delisted market's stream kept reconnecting and no status reached consumers."""
    exchange = SimExchange(seed=32, markets=["BTC_USDC", "ETH_USDC"], config=SimConfig(rate=40))
    client = Listing(exchange, lambda s: True, lambda s: s != "ETH_USDC")
    config = _config(["BTC-USDC", "ETH-USDC"], metadata_refresh_interval=20)
    with trio.fail_after(300):
        async with running(exchange, config, client) as (feed, seen):
            await wait_for(
                lambda: seen.first("ETH-USDC", StatusKind.DELISTED) is not None, 60, "delisted"
            )
            assert feed.symbols == ["BTC_USDC"]
            assert "ETH_USDC" not in feed.markets
            await trio.sleep(30)
            exchange.pause()
            await trio.sleep(1)
            stats = feed.statistics()
    delisted_at = seen.first("ETH-USDC", StatusKind.DELISTED)
    assert delisted_at is not None
    eth = seen.of("ETH-USDC")
    assert isinstance(eth[-1][1], StatusEvent)
    assert eth[-1][1].kind is StatusKind.DELISTED
    assert seen.first("ETH-USDC", StatusKind.BOOK_READY) is not None
    assert "ETH_USDC" not in stats["streams"]
    btc_after = [e for t, e in seen.of("BTC-USDC") if t > delisted_at]
    assert sum(isinstance(e, BookDelta) for e in btc_after) > 500
    assert sum(isinstance(e, Trade) for e in btc_after) > 10
    assert [s.kind for s in seen.statuses("BTC-USDC")] == [StatusKind.BOOK_READY]
    assert_matches_truth(seen.books, exchange, "BTC_USDC")
    assert_trades_match(seen.books, exchange, "BTC_USDC")


async def test_every_market_delisted_ends_the_feed(autojump_clock: trio.testing.MockClock) -> None:
    """The whole listing goes away: each market gets ``delisted``, then ``open_feed`` raises
    NoSymbolsLeftError (not a group, not a hang).

    Old design: nothing happened (the change was logged), the feed streamed dead markets on."""
    exchange = SimExchange(seed=33, markets=["BTC_USDC", "ETH_USDC"], config=SimConfig(rate=40))
    client = Listing(exchange, lambda s: True, lambda s: False)
    config = _config(["BTC-USDC", "ETH-USDC"], metadata_refresh_interval=20)
    seen: list[Event] = []
    with trio.fail_after(300):
        async with trio.open_nursery() as outer:
            await outer.start(exchange.run)

            async def run_feed() -> None:
                async with open_feed(
                    config, rest_client=client, ws_connect=sim_memory_connector(exchange)
                ) as feed:
                    async for event in feed:
                        seen.append(event)
                    # The feed's end closes the consumer queue; then open_feed raises.
                    await trio.sleep_forever()

            with pytest.raises(NoSymbolsLeftError):
                await run_feed()
            outer.cancel_scope.cancel()
    delisted = {
        e.symbol for e in seen if isinstance(e, StatusEvent) and e.kind is StatusKind.DELISTED
    }
    assert delisted == {"BTC-USDC", "ETH-USDC"}
    assert trio.current_time() < 100, "the feed ended at the refresh, it did not hang"


# --- 3. a new listing under symbols: all ----------------------------------------------------------


async def test_new_listing_joins_symbols_all(autojump_clock: trio.testing.MockClock) -> None:
    """``symbols: all`` with ``quotes: [USDC]`` (spot only): SOL is listed at the first refresh
    and joins with ``listed``, then ``book_ready``, and its book equals the truth; BTC and ETH are
    not disturbed.

    Old design: ``symbols: all`` did not exist; a listing change was only logged."""
    exchange = SimExchange(
        seed=34, markets=["BTC_USDC", "ETH_USDC", "SOL_USDC"], config=SimConfig(rate=40)
    )
    client = Listing(exchange, lambda s: s != "SOL_USDC", lambda s: True)
    config = _config("all", quotes=["USDC"], market_types=["spot"], metadata_refresh_interval=20)
    with trio.fail_after(300):
        async with running(exchange, config, client) as (feed, seen):
            assert sorted(feed.symbols) == ["BTC_USDC", "ETH_USDC"]
            await wait_for(
                lambda: seen.first("SOL-USDC", StatusKind.BOOK_READY) is not None,
                90,
                "SOL book ready",
            )
            assert sorted(feed.symbols) == ["BTC_USDC", "ETH_USDC", "SOL_USDC"]
            await wait_for(lambda: seen.deltas("SOL-USDC") >= 300, 60, "SOL deltas")
            exchange.pause()
            await trio.sleep(1)
    sol = [s.kind for s in seen.statuses("SOL-USDC")]
    assert sol[:2] == [StatusKind.LISTED, StatusKind.BOOK_READY], sol
    listed_at = seen.first("SOL-USDC", StatusKind.LISTED)
    assert listed_at is not None
    assert listed_at >= 20
    for sym in ("BTC-USDC", "ETH-USDC"):
        assert [s.kind for s in seen.statuses(sym)] == [StatusKind.BOOK_READY]
    for sym in ("BTC_USDC", "ETH_USDC", "SOL_USDC"):
        assert_matches_truth(seen.books, exchange, sym)
        assert_trades_match(seen.books, exchange, sym)


# --- 4. runtime subscribe / unsubscribe --------------------------------------------------------


@pytest.mark.parametrize("group_size", [1, 50])
async def test_runtime_subscribe_and_unsubscribe_leave_btc_alone(
    autojump_clock: trio.testing.MockClock, group_size: int
) -> None:
    """While BTC streams, ``await feed.subscribe("SOL-USDC")`` makes SOL ready and equal to the
    truth, ``await feed.unsubscribe("ETH-USDC")`` ends ETH with ``unsubscribed`` (nothing of ETH
    after it), and BTC sees no resync or reconnect, on a shared connection or its own.

    Old design: the symbol set was fixed at start; there was no runtime subscribe."""
    exchange = SimExchange(
        seed=35, markets=["BTC_USDC", "ETH_USDC", "SOL_USDC"], config=SimConfig(rate=40)
    )
    config = _config(["BTC-USDC", "ETH-USDC"], connection_group_size=group_size)
    with trio.fail_after(300):
        async with running(exchange, config) as (feed, seen):
            await wait_for(
                lambda: all(
                    seen.first(s, StatusKind.BOOK_READY) is not None
                    for s in ("BTC-USDC", "ETH-USDC")
                ),
                30,
                "books ready",
            )
            await trio.sleep(5)
            assert await feed.subscribe("SOL-USDC") == ["SOL_USDC"]
            assert await feed.unsubscribe("ETH-USDC") == ["ETH_USDC"]
            unsubscribed_at = trio.current_time()
            assert sorted(feed.symbols) == ["BTC_USDC", "SOL_USDC"]
            await wait_for(
                lambda: seen.first("SOL-USDC", StatusKind.BOOK_READY) is not None,
                30,
                "SOL book ready",
            )
            await wait_for(lambda: seen.deltas("SOL-USDC") >= 300, 60, "SOL deltas")
            # The exchange was told too: no session of ours still streams ETH.
            streamed = {s for session in exchange._sessions for s in session.streams}
            assert not [s for s in streamed if s.endswith("ETH_USDC")], sorted(streamed)
            assert {"depth.BTC_USDC", "depth.SOL_USDC"} <= streamed, sorted(streamed)
            exchange.pause()
            await trio.sleep(1)
            stats = feed.statistics()
    eth = seen.of("ETH-USDC")
    last_t, last = eth[-1]
    assert isinstance(last, StatusEvent)
    assert last.kind is StatusKind.UNSUBSCRIBED
    assert [k for k in seen.books.kinds("ETH-USDC")].count(StatusKind.UNSUBSCRIBED) == 1
    assert last_t >= unsubscribed_at
    sol = [s.kind for s in seen.statuses("SOL-USDC")]
    assert sol[:2] == [StatusKind.LISTED, StatusKind.BOOK_READY], sol
    assert [s.kind for s in seen.statuses("BTC-USDC")] == [StatusKind.BOOK_READY]
    assert all(c["reconnects"] == 0 for c in stats["connections"]), stats["connections"]
    assert "ETH_USDC" not in stats["streams"]
    btc_after = [e for t, e in seen.of("BTC-USDC") if t > unsubscribed_at]
    assert not any(isinstance(e, BookSnapshot) for e in btc_after), "no BTC resnapshot"
    for sym in ("BTC_USDC", "SOL_USDC"):
        assert_matches_truth(seen.books, exchange, sym)
        assert_trades_match(seen.books, exchange, sym)


async def test_unsubscribed_market_can_be_subscribed_again(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """ETH unsubscribed and, 10 s later, subscribed again on the same shared connection: it
    comes back with ``listed`` then ``book_ready`` and equals the truth; BTC is not disturbed."""
    exchange = SimExchange(seed=36, markets=["BTC_USDC", "ETH_USDC"], config=SimConfig(rate=40))
    config = _config(["BTC-USDC", "ETH-USDC"])
    with trio.fail_after(300):
        async with running(exchange, config) as (feed, seen):
            await wait_for(
                lambda: seen.first("ETH-USDC", StatusKind.BOOK_READY) is not None, 30, "ready"
            )
            await wait_for(lambda: len(seen.books.trades.get("ETH_USDC", [])) >= 10, 30, "trades")
            await feed.unsubscribe("ETH-USDC")
            await trio.sleep(10)
            back_at = trio.current_time()
            assert await feed.subscribe("ETH-USDC") == ["ETH_USDC"]
            await wait_for(
                lambda: any(
                    s.kind is StatusKind.BOOK_READY
                    for t, s in seen.of("ETH-USDC")
                    if t >= back_at and isinstance(s, StatusEvent)
                ),
                30,
                "ETH ready again",
            )
            await trio.sleep(10)
            exchange.pause()
            await trio.sleep(1)
            stats = feed.statistics()
    kinds = [s.kind for s in seen.statuses("ETH-USDC")]
    assert kinds == [
        StatusKind.BOOK_READY,
        StatusKind.UNSUBSCRIBED,
        StatusKind.LISTED,
        StatusKind.BOOK_READY,
    ], kinds
    gone = [e for t, e in seen.of("ETH-USDC") if back_at - 9 < t < back_at]
    assert not gone, "nothing of ETH between its unsubscribe and its subscribe"
    assert [s.kind for s in seen.statuses("BTC-USDC")] == [StatusKind.BOOK_READY]
    assert stats["connections"][0]["reconnects"] == 0
    for sym in ("BTC_USDC", "ETH_USDC"):
        assert_matches_truth(seen.books, exchange, sym)
        assert_trades_match(seen.books, exchange, sym)
