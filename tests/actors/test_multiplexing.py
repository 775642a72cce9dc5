"""Issue 11, connection actors: a healthy connection that keeps being closed is not an outage,
REST-only mode polls fairly and publishes no history, the promotion probe judges what it reads,
and many markets multiplexed on few sockets never notice a slow consumer."""

from __future__ import annotations

import itertools
import random
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any

import msgspec
import trio

from backpack_actors.actors.connection import ConnectionActor, ConnectionSettings
from backpack_actors.actors.reconciler import Reconciler
from backpack_actors.actors.rest import RestActor
from backpack_actors.config import FeedConfig
from backpack_actors.core.budget import TokenBucket
from backpack_actors.core.events import (
    BookSnapshot,
    Event,
    StatusKind,
    Trade,
)
from backpack_actors.core.restart import Backoff
from backpack_actors.core.wire import RestTrade
from backpack_actors.feed import open_feed
from backpack_actors.sim import SimConfig, SimExchange
from backpack_actors.sim.market import MarketSpec
from backpack_actors.testing import SimRestClient, sim_memory_connector
from tests.pipeline_helpers import ConsumerBooks, assert_matches_truth, assert_trades_match

UPSTREAM_TROUBLE = (
    StatusKind.RECONNECTING,
    StatusKind.STALE,
    StatusKind.DEGRADED_REST_ONLY,
    StatusKind.RESYNCING,
    StatusKind.GAP_DETECTED,
)


def _config(symbols: list[str], **overrides: object) -> FeedConfig:
    settings: dict[str, object] = {
        "symbols": symbols,
        "rest_url": "http://sim.invalid",
        "ws_url": "ws://sim.invalid",
        "snapshot_interval": 0,
    }
    settings.update(overrides)
    return FeedConfig.from_kwargs(**settings)


def _exchange_clock(exchange: SimExchange) -> Callable[[], float]:
    return lambda: exchange.now_us() / 1_000_000


@asynccontextmanager
async def running(
    exchange: SimExchange,
    config: FeedConfig,
    *,
    client: Any = None,
    delay: float = 0.0,
    read_pause: float = 0.0,
) -> AsyncIterator[tuple[Any, ConsumerBooks, list[tuple[float, Event]]]]:
    """A feed on ``exchange`` (started ``delay`` s after the exchange) with a consumer task that
    checks every event (and sleeps ``read_pause`` after each)."""
    consumer = ConsumerBooks()
    log: list[tuple[float, Event]] = []
    async with trio.open_nursery() as outer:
        await outer.start(exchange.run)
        await trio.sleep(delay)
        async with (
            open_feed(
                config,
                rest_client=client if client is not None else SimRestClient(exchange),
                ws_connect=sim_memory_connector(exchange),
                wall_clock=_exchange_clock(exchange),
            ) as feed,
            trio.open_nursery() as nursery,
        ):

            async def consume() -> None:
                async for event in feed:
                    consumer.apply(event)
                    log.append((trio.current_time(), event))
                    if read_pause:
                        await trio.sleep(read_pause)

            nursery.start_soon(consume)
            yield feed, consumer, log
            nursery.cancel_scope.cancel()
        outer.cancel_scope.cancel()


async def wait_for(predicate: Callable[[], bool], within: float) -> None:
    """Poll (in virtual time) state that another task, the consumer, updates."""
    with trio.fail_after(within):
        while not predicate():  # noqa: ASYNC110
            await trio.sleep(0.1)


# --- 5. a healthy connection closed every ~10 s is not a WebSocket outage ----------------------


async def test_repeated_disconnects_of_a_healthy_connection_never_degrade(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The server closes the (healthy, data-delivering) connection about every 10 s for 150 s:
    each close reconnects and resyncs, but the feed never goes ``degraded_rest_only``, and the
    books equal the truth at the end.

    Old design: a failure stopped counting only after 30 s of stable connection, so five closes
    10 s apart were "five consecutive failures" and the symbol degraded to REST-only at ~58 s."""
    symbols = ["BTC_USDC", "ETH_USDC"]
    exchange = SimExchange(seed=51, markets=symbols, config=SimConfig(rate=40))
    config = _config(["BTC-USDC", "ETH-USDC"])
    with trio.fail_after(400):
        async with running(exchange, config) as (feed, consumer, _log):
            await trio.sleep(5)
            for _ in range(15):
                exchange.faults.disconnect_after(frames=20, connections=1)
                await trio.sleep(10)
            await trio.sleep(10)
            exchange.pause()
            await trio.sleep(2)
            stats = feed.statistics()
    assert exchange.faults.injected["disconnect"] == 15
    kinds = consumer.kinds()
    assert StatusKind.DEGRADED_REST_ONLY not in kinds
    (connection,) = stats["connections"]
    assert connection["reconnects"] == 15
    assert (connection["degradations"], connection["rest_only"]) == (0, False)
    assert connection["consecutive_failures"] <= 1
    assert kinds.count(StatusKind.RECONNECTING) == 15 * len(symbols)
    for sym in symbols:
        assert stats["streams"][sym]["mode"] == "ws"
        assert_matches_truth(consumer, exchange, sym)
        assert_trades_match(consumer, exchange, sym)


# --- 6. REST-only mode --------------------------------------------------------------------------


class RecordingTrades:
    """SimRestClient that remembers the newest trade id of each symbol's first trade poll."""

    def __init__(self, exchange: SimExchange) -> None:
        self.inner = SimRestClient(exchange)
        self.first_newest: dict[str, int] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def recent_trades(self, exchange_symbol: str, limit: int) -> list[RestTrade]:
        trades: list[RestTrade] = await self.inner.recent_trades(exchange_symbol, limit)
        if exchange_symbol not in self.first_newest and trades:
            self.first_newest[exchange_symbol] = max(t.id for t in trades)
        return trades


async def test_rest_only_polls_books_every_second_and_publishes_no_history(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """``rest_only: true`` on an exchange that traded for a minute already: each book comes as
    a ``rest_only`` snapshot about once a second (>= 20 in 30 s) carrying an integer ``age_us``
    >= 0; the first trade poll only marks where the feed starts (no trade at or below its newest
    id is published), later polls publish every new trade in order.

    Old design: REST-only books came only every ``snapshot_interval`` (30 s by default) and the
    first trade poll published its whole answer (~1000 old trades) as news."""
    symbols = ["BTC_USDC", "ETH_USDC"]
    exchange = SimExchange(seed=52, markets=symbols, config=SimConfig(rate=40))
    client = RecordingTrades(exchange)
    # Default settings (snapshot_interval 30 s, rest_poll_interval 1 s) but rest_only.
    config = _config(["BTC-USDC", "ETH-USDC"], rest_only=True, snapshot_interval=30)
    with trio.fail_after(300):
        async with running(exchange, config, client=client, delay=60) as (feed, consumer, log):
            started = trio.current_time()
            await trio.sleep(30)
            stats = feed.statistics()
    for sym, name in zip(symbols, ("BTC-USDC", "ETH-USDC"), strict=True):
        snapshots = [
            (t, e)
            for t, e in log
            if isinstance(e, BookSnapshot) and e.symbol == name and t <= started + 30
        ]
        assert all(e.reason == "rest_only" for _, e in snapshots), {e.reason for _, e in snapshots}
        assert len(snapshots) >= 20, len(snapshots)
        for _, snap in snapshots:
            assert type(snap.age_us) is int, snap.age_us
            assert snap.age_us >= 0, snap.age_us
        gaps = [b - a for (a, _), (b, _) in itertools.pairwise(snapshots)]
        assert max(gaps) <= 3, gaps
        assert stats["streams"][sym]["mode"] == "rest"
        history = exchange.trades(sym)
        assert len(history) > 200, "the market traded before the feed started"
        newest_at_start = client.first_newest[sym]
        published = [e.trade_id for _, e in log if isinstance(e, Trade) and e.symbol == name]
        assert published, "new trades are published from the second poll on"
        assert min(published) > newest_at_start, (min(published), newest_at_start)
        # Every trade after the first poll's newest, up to the last published, was published.
        expected = [t.id for t in history if newest_at_start < t.id <= published[-1]]
        assert published == expected
        assert_matches_truth(consumer, exchange, sym)
        assert_trades_match(consumer, exchange, sym)
    assert "BTC_USDC" not in consumer.deltas, "no WebSocket at all"


# --- 7. the promotion probe -----------------------------------------------------------------------


def _depth_frame(symbol: str, first: int, last: int, price: str = "100.0") -> str:
    data = {
        "E": 1_767_225_600_000_000 + last,
        "T": 1_767_225_600_000_000 + last,
        "U": first,
        "a": [[str(Decimal(price) + 1), "1.0"]],
        "b": [[price, "2.0"]],
        "e": "depth",
        "s": symbol,
        "u": last,
    }
    return msgspec.json.encode({"data": data, "stream": f"depth.{symbol}"}).decode()


REFUSED = '{"id":null,"error":{"code":4006,"message":"Invalid stream"}}'


class ScriptedConnection:
    """A WsConnection that returns one scripted batch per second, then stays silent."""

    def __init__(self, batches: list[list[str]], every: float = 1.0) -> None:
        self.batches = list(batches)
        self.every = every
        self.sent: list[str] = []

    async def send(self, text: str) -> None:
        self.sent.append(text)
        await trio.lowlevel.checkpoint()

    async def receive_batch(self) -> list[str | bytes]:
        await trio.sleep(self.every)
        if not self.batches:
            await trio.sleep_forever()
        return list(self.batches.pop(0))


def _probe_actor(conn: ScriptedConnection, **settings: Any) -> tuple[ConnectionActor, SimExchange]:
    exchange = SimExchange(seed=53, markets=["BTC_USDC"], config=SimConfig(autostart=False))
    client = SimRestClient(exchange)

    @asynccontextmanager
    async def connector() -> AsyncIterator[ScriptedConnection]:
        yield conn

    rest = RestActor(client, lambda message: None, wall_clock=lambda: 0.0)
    from backpack_actors.core.symbols import MarketInfo

    info = MarketInfo(
        "BTC_USDC", "BTC/USDC", "BTC-USDC", "BTC", "USDC", "spot",
        Decimal("0.1"), Decimal("0.00001"), Decimal("0.00001"), True,
    )  # fmt: skip
    reconciler = Reconciler(
        markets={"BTC_USDC": info},
        publish=lambda events: None,
        request=lambda request: None,
        wall_clock=lambda: 0.0,
    )
    defaults: dict[str, Any] = {"stale_timeout": 5.0, "promote_healthy_after": 30.0}
    defaults.update(settings)
    actor = ConnectionActor(
        "c1",
        ["BTC_USDC"],
        connector=connector,
        reconciler=reconciler,
        rest=rest,
        settings=ConnectionSettings(**defaults),
        epochs=itertools.count(1),
        wall_clock=lambda: 0.0,
        backoff=Backoff(base=0.5, factor=2.0, cap=30.0, jitter=0.0, stable_after=30.0),
        rng=random.Random(1),
        subscribe_budget=TokenBucket(5.0, 10),
    )
    return actor, exchange


def _healthy(n: int, start: int = 1000) -> list[list[str]]:
    return [[_depth_frame("BTC_USDC", start + i, start + i)] for i in range(n)]


async def test_probe_promotes_on_in_sequence_frames(autojump_clock: trio.testing.MockClock) -> None:
    """Control for the probe tests below: decodable, in-sequence frames for the whole
    ``promote_healthy_after`` promote, after exactly that long."""
    conn = ScriptedConnection(_healthy(40))
    actor, _ = _probe_actor(conn)
    with trio.fail_after(120):
        start = trio.current_time()
        assert await actor._probe() is True
    assert 30 <= trio.current_time() - start <= 31
    assert "depth.BTC_USDC" in conn.sent[0]


async def test_probe_refused_subscription_does_not_promote(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A probe that gets a subscription-refused error frame (code 4006) among good frames does
    not promote: the WebSocket does not serve these markets.

    Old design: the probe counted any received frame as health, so an error answer promoted."""
    batches = _healthy(3)
    batches.append([REFUSED])
    batches.extend(_healthy(40, start=1003))
    conn = ScriptedConnection(batches)
    actor, _ = _probe_actor(conn)
    with trio.fail_after(120):
        assert await actor._probe() is False
        assert trio.current_time() < 10, "judged at the refusal, not after the probe time"


async def test_probe_undecodable_frames_do_not_promote(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Undecodable frames (truncated JSON, a depth frame without its ids) fail the probe.

    Old design: any frame counted as health."""
    for bad in ('{"data":{"e":"depth","s":"BTC_U', '{"data":{"e":"depth","s":"BTC_USDC"},'
                '"stream":"depth.BTC_USDC"}'):  # fmt: skip
        conn = ScriptedConnection([*_healthy(2), [bad], *_healthy(40, start=1002)])
        actor, _ = _probe_actor(conn)
        with trio.fail_after(120):
            assert await actor._probe() is False, bad


async def test_probe_out_of_sequence_frames_do_not_promote(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Depth frames that skip an update id fail the probe (the stream would gap at once)."""
    batches = [*_healthy(3), [_depth_frame("BTC_USDC", 1005, 1005)], *_healthy(40, start=1006)]
    conn = ScriptedConnection(batches)
    actor, _ = _probe_actor(conn)
    with trio.fail_after(120):
        assert await actor._probe() is False


async def test_quiet_market_is_promoted_back(autojump_clock: trio.testing.MockClock) -> None:
    """Degraded to REST-only (refused handshakes), then the market goes quiet
    (``exchange.pause()``): with ``stale_timeout`` (5 s) < ``promote_healthy_after`` (30 s) the
    probe's socket is silent, REST shows the exchange did not move, and the group is promoted
    back to WebSocket; once trading resumes the book resyncs and equals the truth.

    Old design: the probe had to see frames for ``promote_healthy_after`` and a silent probe
    failed as stale, so a quiet market stayed on REST polling forever."""
    exchange = SimExchange(seed=54, markets=["BTC_USDC"], config=SimConfig(rate=40))
    exchange.faults.refuse_handshake(count=2, status=503)
    config = _config(
        ["BTC-USDC"],
        max_ws_failures=2,
        stale_timeout=5,
        promote_probe_interval=20,
        promote_healthy_after=30,
    )
    with trio.fail_after(600):
        async with running(exchange, config) as (feed, consumer, _):
            await wait_for(lambda: StatusKind.BOOK_READY in consumer.kinds("BTC-USDC"), 60)
            assert StatusKind.DEGRADED_REST_ONLY in consumer.kinds("BTC-USDC")
            await trio.sleep(3)
            exchange.pause()
            paused_at = trio.current_time()
            await wait_for(lambda: StatusKind.RECOVERED_WS in consumer.kinds("BTC-USDC"), 200)
            promoted_at = trio.current_time()
            # Still quiet on the WebSocket: the connection is kept, not declared stale.
            await trio.sleep(20)
            exchange.resume()
            await wait_for(lambda: consumer.deltas.get("BTC_USDC", 0) >= 300, 60)
            exchange.pause()
            await trio.sleep(1)
            stats = feed.statistics()
    assert promoted_at - paused_at <= 100
    health = stats["streams"]["BTC_USDC"]
    assert (health["mode"], health["degradations"], health["promotions"]) == ("ws", 1, 1)
    kinds = consumer.kinds("BTC-USDC")
    after = kinds[kinds.index(StatusKind.RECOVERED_WS) :]
    assert StatusKind.STALE not in after, after
    assert StatusKind.DEGRADED_REST_ONLY not in after, after
    assert_matches_truth(consumer, exchange, "BTC_USDC")


# --- 10. many markets on few sockets, a slow consumer and a stalled sink -----------------------


def _markets(n: int) -> list[MarketSpec]:
    return [
        MarketSpec(
            f"M{i:02d}_USDC",
            f"M{i:02d}",
            "USDC",
            "SPOT",
            Decimal("0.01"),
            Decimal("0.001"),
            Decimal("0.001"),
            Decimal(100 + 7 * i),
            Decimal("1.5"),
        )
        for i in range(n)
    ]


async def test_twenty_markets_on_two_connections_never_notice_slow_readers(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """20 markets on 2 connections (group size 10) at 100 messages/s each; the consumer reads
    200 events/s for 60 s and a sink subscribed beside it never reads: zero reconnects, stale
    spells, degradations and resyncs, in the statistics and in the status events; every book the
    consumer holds equals the truth.

    Old design: one reconciler inbox for every stream; a consumer slower than the feed filled
    it and the overflow restarted every stream (resyncs at ~300 markets, measured)."""
    specs = _markets(20)
    exchange = SimExchange(seed=55, markets=specs, config=SimConfig(rate=100))
    symbols = [s.symbol for s in specs]
    config = _config(
        [s.replace("_", "-") for s in symbols], connection_group_size=10, consumer_queue=500
    )
    with trio.fail_after(600):
        async with running(exchange, config, read_pause=1 / 200) as (feed, consumer, _):
            sink = feed.subscribe_events("stalled_sink", 100)
            await trio.sleep(60)
            stats = feed.statistics()
            exchange.pause()
            # Let the consumer drain what is queued (nothing new is produced now).
            await wait_for(lambda: not len(feed.queue), 60)
    assert len(stats["connections"]) == 2
    assert sorted(len(c["symbols"]) for c in stats["connections"]) == [10, 10]
    for connection in stats["connections"]:
        assert (connection["reconnects"], connection["degradations"], connection["stale"]) == (
            0,
            0,
            0,
        ), connection
        assert connection["connects"] == 1
    kinds = consumer.kinds()
    for kind in UPSTREAM_TROUBLE:
        assert kind not in kinds, kind
    assert kinds.count(StatusKind.BOOK_READY) == len(symbols)
    assert StatusKind.CONSUMER_OVERFLOW in kinds, "the consumer really fell behind"
    assert sum(stats["queue"]["conflated"].values()) > 1000
    assert sink.dropped > 0
    assert len(sink) <= 100 + 16 + 2 * len(symbols)
    for sym, counts in stats["reconciler"]["symbols"].items():
        assert counts["state"] == "live", (sym, counts["state"])
        assert (counts["book"]["resyncs"], counts["book"]["gaps"]) == (0, 0), (sym, counts)
    assert stats["rest"]["calls"] == 1 + len(symbols), "markets, initial snapshots: no resync"
    for sym in symbols:
        assert_matches_truth(consumer, exchange, sym)
        assert_trades_match(consumer, exchange, sym)
