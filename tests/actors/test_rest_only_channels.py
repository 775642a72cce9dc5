"""Issue 13, the channels' REST-only forms: candles over REST, the liquidation carrier handed over,
and one poller per route for the whole feed.

Outages are injected per connection (a connector whose connections the test cuts and whose
handshakes it refuses), in virtual time against the in-memory simulator; every comparison is with
the simulator's truth (its trades, ``candle_fields``, ``derived.liquidations``, its REST log).
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import trio
import trio.testing

from backpack_actors.actors.messages import CandlePoll, RestChannels
from backpack_actors.actors.reconciler import Reconciler
from backpack_actors.config import FeedConfig
from backpack_actors.core.events import (
    Candle,
    Event,
    Liquidation,
    MarkPrice,
    Side,
    StatusEvent,
    StatusKind,
    Ticker,
)
from backpack_actors.core.symbols import MarketInfo
from backpack_actors.core.wire import MARKET_DATA_DECODER, Kline
from backpack_actors.errors import ExchangeUnavailableError
from backpack_actors.feed import open_feed
from backpack_actors.recording import RestChannelsRecord, load_recording, replay_events
from backpack_actors.sim import SimConfig, SimExchange
from backpack_actors.sim.derived import candle_fields, mark_price_fields
from backpack_actors.testing import SimRestClient, sim_memory_connector, simulate_feed
from backpack_actors.transport.rest import RestClient
from backpack_actors.transport.ws import WsConnection, WsConnector
from tests.pipeline_helpers import ConsumerBooks

MINUTE_US = 60_000_000


# --- helpers ------------------------------------------------------------------------------------


class _CuttableConnection:
    """A simulator connection the test can cut: the pending read fails at once."""

    def __init__(self, inner: WsConnection) -> None:
        self._inner = inner
        self._scope: trio.CancelScope | None = None
        self.cut = False

    async def send(self, text: str) -> None:
        if self.cut:
            raise ExchangeUnavailableError("test outage: connection cut")
        await self._inner.send(text)

    async def receive_batch(self) -> list[str | bytes]:
        if not self.cut:
            with trio.CancelScope() as scope:
                self._scope = scope
                return await self._inner.receive_batch()
        raise ExchangeUnavailableError("test outage: connection cut")

    def kill(self) -> None:
        self.cut = True
        if self._scope is not None:
            self._scope.cancel()


class Outage:
    """Connects to the simulator; ``refusing`` refuses every new handshake (probes included)."""

    def __init__(self, exchange: SimExchange) -> None:
        self._connect = sim_memory_connector(exchange)
        self.refusing = False
        self.refused = 0

    def connector(self) -> WsConnector:
        @asynccontextmanager
        async def connect() -> AsyncIterator[WsConnection]:
            if self.refusing:
                self.refused += 1
                raise ExchangeUnavailableError("test outage: WebSocket handshake refused")
            async with self._connect() as conn:
                yield _CuttableConnection(conn)

        return connect


def cut(actor: Any) -> None:
    """End ``actor``'s live WebSocket session now."""
    session = actor._session
    assert session is not None, f"{actor.id} has no live session"
    session.conn.kill()


def _config(symbols: list[str], **overrides: object) -> FeedConfig:
    settings: dict[str, object] = {
        "symbols": symbols,
        "rest_url": "http://sim.invalid",
        "ws_url": "ws://sim.invalid",
        "snapshot_interval": 0,
        "reconnect_jitter": 0.0,
    }
    settings.update(overrides)
    return FeedConfig.from_kwargs(**settings)


@asynccontextmanager
async def running(
    exchange: SimExchange,
    config: FeedConfig,
    connector: WsConnector | None = None,
    *,
    rest: RestClient | None = None,
    warmup: float = 0.0,
) -> AsyncIterator[tuple[Any, ConsumerBooks, list[Event]]]:
    """A feed on ``exchange`` (its wall clock the exchange's), opened ``warmup`` seconds after
    the exchange started, with a consumer task logging."""
    consumer = ConsumerBooks()
    log: list[Event] = []
    async with trio.open_nursery() as outer:
        await outer.start(exchange.run)
        await trio.sleep(warmup)
        async with (
            open_feed(
                config,
                rest_client=rest or SimRestClient(exchange),
                ws_connect=connector or sim_memory_connector(exchange),
                wall_clock=lambda: exchange.now_us() / 1_000_000,
            ) as feed,
            trio.open_nursery() as nursery,
        ):

            async def consume() -> None:
                async for event in feed:
                    consumer.apply(event)
                    log.append(event)

            nursery.start_soon(consume)
            yield feed, consumer, log
            nursery.cancel_scope.cancel()
        outer.cancel_scope.cancel()


def _closed_candles(log: list[Event], sym: str) -> list[Candle]:
    return [e for e in log if isinstance(e, Candle) and e.exchange_symbol == sym and e.closed]


def _truth_buckets(exchange: SimExchange, sym: str) -> list[int]:
    """Start (µs) of every minute that had a trade."""
    return sorted({t.engine_time_us - t.engine_time_us % MINUTE_US for t in exchange.trades(sym)})


def _assert_candle_is_truth(exchange: SimExchange, candle: Candle) -> None:
    model = exchange.models[candle.exchange_symbol]
    truth = candle_fields(model, 60, candle.start_us // 1_000_000)
    assert truth is not None, candle
    got = (candle.open, candle.high, candle.low, candle.close, candle.volume, candle.trade_count)
    want = (*(Decimal(truth[k]) for k in "ohlcv"), truth["n"])
    assert got == want, (candle, truth)
    assert (candle.interval, candle.end_us - candle.start_us) == ("1m", MINUTE_US)


def _by_rest(candles: list[Candle]) -> list[Candle]:
    """The candles that came over REST: the stream sends a final within a tick of the close,
    a REST poll asks CANDLE_GRACE_S (2 s) after it."""
    return [c for c in candles if c.received_at_ns - c.end_us * 1000 >= 2_000_000_000]


def _assert_no_update_after_close(log: list[Event], sym: str) -> None:
    closed: set[int] = set()
    for event in log:
        if isinstance(event, Candle) and event.exchange_symbol == sym:
            assert event.start_us not in closed, f"{sym}: candle {event.start_us} after its close"
            if event.closed:
                closed.add(event.start_us)


# --- the reconciler keeps one copy of each closed candle ----------------------------------------


def _info(symbol: str) -> MarketInfo:
    base, quote = symbol.split("_")[:2]
    return MarketInfo(
        symbol, f"{base}/{quote}", f"{base}-{quote}", base, quote, "spot",
        Decimal("0.01"), Decimal("0.0001"), Decimal("0.0001"), True,
    )  # fmt: skip


def _ws_kline(start_s: int, close: str, *, closed: bool) -> Any:
    t = f"2026-01-01T00:{start_s // 60:02d}:00"
    end = f"2026-01-01T00:{start_s // 60 + 1:02d}:00"
    flag = "true" if closed else "false"
    frame = (
        f'{{"data":{{"E":1,"X":{flag},"e":"kline","s":"SOL_USDC","t":"{t}","T":"{end}",'
        f'"o":"1","c":"{close}","h":"9","l":"1","v":"2","n":3}},"stream":"kline.1m.SOL_USDC"}}'
    )
    return MARKET_DATA_DECODER.decode(frame).data


def _rest_kline(start_s: int, close: str) -> Kline:
    return Kline(
        f"2026-01-01 00:{start_s // 60:02d}:00",
        f"2026-01-01 00:{start_s // 60 + 1:02d}:00",
        Decimal(1), Decimal(9), Decimal(1), Decimal(close), Decimal(2), Decimal(18), 3,
    )  # fmt: skip


def test_a_closed_candle_is_published_once_whoever_delivers_it() -> None:
    out: list[Event] = []
    reconciler = Reconciler(
        markets={"SOL_USDC": _info("SOL_USDC")},
        publish=out.extend,
        request=lambda _request: None,
        wall_clock=lambda: 0.0,
        channels=["candles:1m"],
    )
    base = 1_767_225_600  # 2026-01-01T00:00:00Z

    def rest(*klines: Kline, start: int = base, end: int = base + 600) -> None:
        poll = CandlePoll("SOL_USDC", "1m", start, end, list(klines))
        reconciler.handle(RestChannels(candles=[poll], received_ns=5_000_000_000))

    def ws(frame: Any) -> None:
        reconciler.on_frames("SOL_USDC", 1, [frame], 0)

    ws(_ws_kline(0, "2", closed=False))
    ws(_ws_kline(0, "3", closed=True))
    rest(_rest_kline(0, "3"), _rest_kline(60, "4"))  # 00:00 came by WS: only 00:01 is new
    ws(_ws_kline(60, "4", closed=True))  # the stream's copy of 00:01 after REST's
    ws(_ws_kline(60, "5", closed=False))  # an update of a closed candle
    ws(_ws_kline(180, "6", closed=True))
    rest(_rest_kline(120, "7"))  # a catch-up landing after a newer candle: still published
    # A bucket reaching past the poll's end may be partial; one before its start is not asked.
    rest(_rest_kline(240, "8"), start=base + 240, end=base + 270)
    rest(_rest_kline(300, "9"), start=base + 360)
    got = [(c.start_us // 1_000_000 - base, c.raw_close, c.closed) for c in out]
    assert got == [
        (0, "2", False),
        (0, "3", True),
        (60, "4", True),
        (180, "6", True),
        (120, "7", True),
    ]
    assert all(isinstance(c, Candle) for c in out)
    assert reconciler.last_closed_candle_end("SOL_USDC", "1m") == (base + 240) * 1_000_000


# --- 1. candles keep arriving, over REST, through a WebSocket outage ----------------------------


async def test_candles_through_a_websocket_outage_equal_truth_once_each(
    autojump_clock: trio.testing.MockClock,
) -> None:
    symbols = ["BTC_USDC", "ETH_USDC_PERP"]
    exchange = SimExchange(seed=21, markets=symbols, config=SimConfig(rate=10.0))
    outage = Outage(exchange)
    config = _config(
        ["BTC-USDC", "ETH-USDC-PERP"],
        channels=["candles:1m"],
        connection_group_size=1,
        max_ws_failures=2,
        promote_probe_interval=60,
        promote_healthy_after=20,
    )
    with trio.fail_after(900):
        async with running(exchange, config, outage.connector()) as (feed, consumer, log):
            actors = list(feed.tree.connections.actors)
            await trio.sleep(150.5)
            outage.refusing = True
            for actor in actors:
                cut(actor)
            await trio.sleep(200)
            assert all(a.health.rest_only for a in actors)
            rest_only_candles = len(log)
            outage.refusing = False
            await trio.sleep(200)
            assert not any(a.health.rest_only for a in actors)
            exchange.pause()
            await trio.sleep(70)  # the last minute closes, unchanged
    for sym in symbols:
        candles = _closed_candles(log, sym)
        starts = [c.start_us for c in candles]
        assert len(starts) == len(set(starts)), f"{sym}: a closed candle published twice"
        for candle in candles:
            _assert_candle_is_truth(exchange, candle)
        # Every minute that traded, none missing: by WS, then REST, then WS again.
        assert sorted(starts) == _truth_buckets(exchange, sym)
        _assert_no_update_after_close(log, sym)
        assert len(_by_rest(candles)) >= 3, f"{sym}: the outage's minutes came over REST"
        kinds = consumer.kinds(sym.replace("_", "-"))
        assert kinds.count(StatusKind.DEGRADED_REST_ONLY) == 1
        assert StatusKind.RECOVERED_WS in kinds
    assert rest_only_candles < len(log), "candles from the stream again after the promotion"
    assert outage.refused >= 2


async def test_a_reconnect_across_a_candle_close_fills_that_candle_over_rest(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The stream's final of a minute that closed while the connection was down never comes:
    the new subscription asks REST for it. Reconnected 1.5 s before the next close, that minute
    is due too (its close might miss the new subscription) — but the stream delivered it, so
    REST is not asked again: one klines call, for the missed minute only."""
    exchange = SimExchange(seed=22, markets=["SOL_USDC"], config=SimConfig(rate=10.0))
    outage = Outage(exchange)
    config = _config(["SOL-USDC"], channels=["candles:1m"], max_ws_failures=1000, reconnect_cap=0.5)
    with trio.fail_after(600):
        async with running(exchange, config, outage.connector()) as (feed, consumer, log):
            (actor,) = feed.tree.connections.actors
            await trio.sleep(115.5)
            outage.refusing = True
            cut(actor)
            await trio.sleep(63)  # 02:00 closes during the reconnects
            outage.refusing = False
            await trio.sleep(1)
            assert actor.streaming, "back on the WebSocket before 03:00"
            await trio.sleep(75)
            exchange.pause()
            await trio.sleep(70)
    candles = _closed_candles(log, "SOL_USDC")
    starts = [c.start_us for c in candles]
    assert len(starts) == len(set(starts)), "a closed candle published twice"
    assert sorted(starts) == _truth_buckets(exchange, "SOL_USDC")
    for candle in candles:
        _assert_candle_is_truth(exchange, candle)
    _assert_no_update_after_close(log, "SOL_USDC")
    by_rest = {c.start_us % 3_600_000_000 // MINUTE_US for c in _by_rest(candles)}
    assert by_rest == {1}, "the minute the stream missed came over REST"
    assert exchange.http_calls["/api/v1/klines"] == 1
    assert StatusKind.RECONNECTING in consumer.kinds()
    assert StatusKind.DEGRADED_REST_ONLY not in consumer.kinds()


async def test_rest_only_candles_are_recorded_and_replay_identically(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    path = tmp_path / "candles.jsonl"
    with trio.fail_after(600):
        live = await simulate_feed(
            ["ETH-USDC"],
            seed=25,
            rate=10.0,
            events=400,
            record_to=path,
            config={"channels": ["l2_book", "candles:1m"], "rest_only": True},
        )
        replayed = await replay_events(path)
    candles = [e for e in live if isinstance(e, Candle)]
    assert len(candles) >= 3
    assert all(c.closed for c in candles)
    assert replayed == live
    polls = [
        line
        for line in load_recording(path).lines
        if isinstance(line, RestChannelsRecord) and line.candles
    ]
    assert polls, "klines answers are recorded as they came"


# --- 2. liquidations go on while their carrier connection is down -------------------------------


def _liquidation_truth(exchange: SimExchange, sym: str) -> list[tuple[str, str, Side, int]]:
    return [
        (t.price_str, t.quantity_str, Side.SELL if t.is_buyer_maker else Side.BUY, t.engine_time_us)
        for t in exchange.derived.liquidations.get(sym, [])
    ]


async def test_liquidations_continue_through_the_carriers_outage_and_handovers(
    autojump_clock: trio.testing.MockClock,
) -> None:
    symbols = ["BTC_USDC_PERP", "ETH_USDC_PERP", "SOL_USDC_PERP"]
    exchange = SimExchange(seed=23, markets=symbols, config=SimConfig(rate=20.0, autostart=False))
    outage = Outage(exchange)
    config = _config(
        [s.replace("_", "-") for s in symbols],
        channels=["trades", "liquidations"],
        connection_group_size=1,
        max_ws_failures=3,
        promote_probe_interval=30,
        promote_healthy_after=20,
    )
    carriers: list[str] = []
    with trio.fail_after(900):
        async with running(exchange, config, outage.connector()) as (feed, consumer, log):
            connections = feed.tree.connections
            first = connections.carrier
            start = trio.current_time()
            exchange.resume()
            # Cut between two simulator ticks (every 0.05 s): the handover is then instant in
            # virtual time, so every liquidation must arrive.
            await trio.sleep_until(start + 40.025)
            outage.refusing = True
            cut(first)
            await trio.sleep(0.01)  # the group notices; still before the next tick
            carriers.append(connections.carrier.id)
            await trio.sleep_until(start + 120)
            assert first.health.rest_only
            outage.refusing = False
            await trio.sleep_until(start + 200.025)
            assert not first.health.rest_only, "promoted back"
            second = connections.carrier
            outage.refusing = True
            cut(second)
            await trio.sleep(0.01)
            carriers.append(connections.carrier.id)
            await trio.sleep_until(start + 260)
            outage.refusing = False
            await trio.sleep_until(start + 300)
            exchange.pause()
            await trio.sleep(2)
            handovers = connections.handovers
    assert carriers == ["c2", "c1"], "to the first group on the WebSocket, and back"
    assert handovers == 2
    got = [e for e in log if isinstance(e, Liquidation)]
    for sym in symbols:
        mine = [
            (e.raw_price, e.raw_amount, e.side, e.engine_time_us)
            for e in got
            if e.exchange_symbol == sym
        ]
        truth = _liquidation_truth(exchange, sym)
        assert len(truth) >= 10
        assert mine == truth, f"{sym}: liquidations lost or repeated"
    assert StatusKind.DEGRADED_REST_ONLY in consumer.kinds("BTC-USDC-PERP")


# --- 3. one poller per route for every REST-only group ------------------------------------------


def _call_times(exchange: SimExchange, route: str) -> list[float]:
    return [at for at, path in exchange.http_log if path == route]


async def test_many_rest_only_groups_share_one_poller_per_route(
    autojump_clock: trio.testing.MockClock,
) -> None:
    exchange = SimExchange(seed=24, config=SimConfig(rate=5.0))
    symbols = exchange.symbols
    perps = [s for s in symbols if s.endswith("_PERP")]
    config = _config(
        [s.replace("_", "-") for s in symbols],
        channels=["ticker", "mark_price", "candles:1m"],
        connection_group_size=1,
        rest_only=True,
        # 2 klines calls a minute for 8 markets' 1m candles: the candles fall behind.
        history_rate_per_min=3,
    )
    with trio.fail_after(900):
        async with running(exchange, config) as (feed, consumer, log):
            assert len(feed.tree.connections.actors) == len(symbols)
            await trio.sleep(400)
            exchange.pause()
            paused_at, paused_us = trio.current_time(), exchange.now_us()
            await trio.sleep(5)
    ends = paused_at + 5
    for route in ("/api/v1/tickers", "/api/v1/markPrices"):
        times = [t for t in _call_times(exchange, route) if t <= ends]
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert min(gaps) >= 0.999, f"{route}: more than one call a second"
        assert len(times) >= ends - times[0] - 1, f"{route}: a round skipped"
    # Each round's answer served every group's markets.
    rounds: dict[int, set[str]] = {}
    for event in log:
        if isinstance(event, Ticker):
            rounds.setdefault(event.received_at_ns, set()).add(event.exchange_symbol)
    assert len(rounds) >= 390
    assert all(seen == set(symbols) for seen in rounds.values())
    # Contents: each ticker is the exchange's statistics over the trades it had counted.
    for event in log:
        if isinstance(event, Ticker):
            trades = exchange.trades(event.exchange_symbol)
            n = event.trade_count
            assert event.volume == sum(t.quantity for t in trades[:n])
            if n:
                assert event.last == trades[n - 1].price
    # Once the market stood still, the answers are the exchange's state exactly.
    still = paused_us * 1000 + 500_000_000
    after = [e for e in log if isinstance(e, Ticker | MarkPrice) and e.received_at_ns > still]
    assert {e.exchange_symbol for e in after if isinstance(e, MarkPrice)} == set(perps)
    for event in after:
        model = exchange.models[event.exchange_symbol]
        if isinstance(event, Ticker):
            fields = model.ticker_fields()
            assert (event.raw_last, event.volume, event.trade_count) == (
                fields["lastPrice"],
                Decimal(fields["volume"]),
                int(fields["trades"]),
            )
        else:
            mark = mark_price_fields(model, paused_us)
            assert (event.raw_mark_price, event.raw_index_price, event.raw_funding_rate) == (
                mark["p"],
                mark["i"],
                mark["f"],
            )
    # Candles: late but each closed minute once, equal to truth, oldest first per market.
    for sym in symbols:
        candles = _closed_candles(log, sym)
        starts = [c.start_us for c in candles]
        assert starts == sorted(set(starts))
        assert starts == _truth_buckets(exchange, sym)[: len(starts)]
        assert len(starts) >= 2
        for candle in candles:
            _assert_candle_is_truth(exchange, candle)
    # ... and the feed said how far behind they were.
    behind = [
        s
        for s in consumer.statuses
        if s.kind is StatusKind.DEGRADED_REST_ONLY and "behind" in s.reason
    ]
    assert {s.symbol for s in behind} == {s.replace("_", "-") for s in symbols}
    assert all(s.counts["candles_behind_s"] > 60 for s in behind)
    assert max(s.counts["candles_behind_s"] for s in behind) >= 180
    assert all(isinstance(s, StatusEvent) for s in behind)
