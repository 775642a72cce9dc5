"""``sim --replay``: a recording served back as Backpack to this feed and to ccxt.pro."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Sequence
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import Any

import ccxt.pro
import msgspec
import pytest
import trio
import trio.testing

from backpack_actors.actors.messages import CandlePoll
from backpack_actors.config import FeedConfig
from backpack_actors.core.book import OrderBook
from backpack_actors.core.events import (
    BookDelta,
    BookSnapshot,
    Candle,
    Event,
    MarkPrice,
    OpenInterest,
    StatusEvent,
    StatusKind,
    Ticker,
)
from backpack_actors.core.symbols import MarketInfo
from backpack_actors.core.wire import Kline
from backpack_actors.core.wire import MarkPrice as WireMarkPrice
from backpack_actors.core.wire import OpenInterest as WireOpenInterest
from backpack_actors.core.wire import Ticker as WireTicker
from backpack_actors.feed import open_feed
from backpack_actors.recording import (
    Recording,
    RecordingHeader,
    RestChannelsRecord,
    StreamStartedRecord,
    load_recording,
    replay_events,
)
from backpack_actors.sim import SimExchange
from backpack_actors.sim.replay import ReplayExchange, open_replay_server
from backpack_actors.testing import SimRestClient, simulate_feed

ROOT = Path(__file__).resolve().parents[2]


def _local_time(key: str) -> bool:
    """Receipt and status times (float s, ns, monotonic ns) and REST-only ages are local."""
    return key in ("at", "age_us") or key.startswith(("received_", "at_"))


def _record(path: Path, symbols: list[str], **kwargs: Any) -> list[Event]:
    async def record() -> list[Event]:
        return await simulate_feed(symbols, record_to=path, time_limit=120, **kwargs)

    trio.run(record, clock=trio.testing.MockClock(autojump_threshold=0))
    return trio.run(replay_events, path)


def _comparable(events: list[Event]) -> dict[str, list[dict[str, Any]]]:
    """Each symbol's events in order, without local times (the replaying client's own clock).

    Per symbol: the feed orders a symbol's events; how two symbols interleave is timing.
    """
    out: dict[str, list[dict[str, Any]]] = {}
    for event in events:
        body = msgspec.to_builtins(event)
        for key in [k for k in body if _local_time(k)]:
            del body[key]
        if isinstance(event, StatusEvent) and event.kind is StatusKind.RECONNECTING:
            # Names the server's URL, its close reason and the jittered delay: the replay's own.
            del body["reason"]
        out.setdefault(event.symbol, []).append({"type": type(event).__name__, **body})
    return out


def _faults(exchange: Any) -> None:
    exchange.faults.drop_delta("BTC_USDC")
    exchange.faults.disconnect_after(frames=150, connections=1)


@pytest.fixture(scope="module")
def gap_recording(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Event]]:
    path = tmp_path_factory.mktemp("replay") / "gap.jsonl.gz"
    events = _record(
        path,
        ["BTC-USDC", "ETH-USDC"],
        seed=21,
        levels=40,
        events=800,
        on_ready=_faults,
        config={"snapshot_interval": 0},
    )
    return path, events


async def test_the_feed_against_the_replay_emits_the_recorded_events(
    gap_recording: tuple[Path, list[Event]],
) -> None:
    path, recorded = gap_recording
    kinds = {e.kind for e in recorded if isinstance(e, StatusEvent)}
    assert {StatusKind.GAP_DETECTED, StatusKind.RECONNECTING} <= kinds
    got: list[Event] = []
    with trio.fail_after(90):
        async with open_replay_server(path, speed=0, subscribe_wait=3, request_wait=3) as server:
            config = FeedConfig.from_kwargs(
                symbols=["BTC-USDC", "ETH-USDC"],
                rest_url=server.rest_url,
                ws_url=server.ws_url,
                snapshot_interval=0,
            )
            async with open_feed(config) as feed:
                with trio.move_on_after(30):
                    async for event in feed:
                        got.append(event)
                        if len(got) >= len(recorded):
                            break
            stats = dict(server.exchange.stats)
    # Every recorded snapshot (two initial, the gap's resync, two after the reconnect) answered a
    # request (one arriving after the timeline moved on gets the last recorded answer).
    assert stats.get("depth_served", 0) + stats.get("depth_fallbacks", 0) == 5, stats
    assert stats["disconnects"] == 1, stats  # the recorded reconnect of the shared connection
    want = _comparable(recorded)
    assert set(want) == {"BTC-USDC", "ETH-USDC"}
    assert _comparable(got) == want


def _final_book(events: list[Event], symbol: str) -> tuple[int, OrderBook]:
    book = OrderBook()
    last = 0
    for e in events:
        if isinstance(e, BookSnapshot) and e.exchange_symbol == symbol:
            book.load(e.raw_bids, e.raw_asks)
            last = e.update_id
        elif isinstance(e, BookDelta) and e.exchange_symbol == symbol:
            book.apply(e.raw_bids, e.raw_asks)
            last = e.last_update_id
    return last, book


async def _watch(urls: dict[str, Any], final: int) -> dict[str, Any]:
    pro = ccxt.pro.backpack(urls)
    try:
        await pro.load_markets()
        while True:
            book = await asyncio.wait_for(pro.watch_order_book("SOL/USDC"), 30)
            if book["nonce"] >= final:
                return {
                    "nonce": book["nonce"],
                    "bids": [list(lv[:2]) for lv in book["bids"]],
                    "asks": [list(lv[:2]) for lv in book["asks"]],
                }
    finally:
        await pro.close()


@pytest.fixture(scope="module")
def sol_recording(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Event]]:
    path = tmp_path_factory.mktemp("replay") / "sol.jsonl.gz"
    return path, _record(path, ["SOL-USDC"], seed=4, levels=30, events=300)


async def test_ccxt_pro_watch_order_book_ends_on_the_recorded_book(
    sol_recording: tuple[Path, list[Event]],
) -> None:
    path, events = sol_recording
    final, book = _final_book(events, "SOL_USDC")
    async with open_replay_server(path, speed=0, subscribe_wait=1, request_wait=5) as server:
        api = {"public": server.rest_url, "private": server.rest_url}
        ws = {"public": server.ws_url, "private": server.ws_url}
        urls = {"urls": {"api": {**api, "ws": ws}}}
        with trio.fail_after(60):
            result = await trio.to_thread.run_sync(lambda: asyncio.run(_watch(urls, final)))
    bids, asks = book.depth()
    assert result["nonce"] == final
    assert result["bids"] == [[float(p), float(s)] for p, s in bids]
    assert result["asks"] == [[float(p), float(s)] for p, s in asks]


async def test_cli_sim_replay_serves_the_recorded_snapshot(
    sol_recording: tuple[Path, list[Event]],
) -> None:
    path, events = sol_recording
    first = next(e for e in events if isinstance(e, BookSnapshot))
    argv = [sys.executable, "-m", "backpack_actors", "sim", "--replay", str(path)]
    argv += ["--port", "0", "--speed", "0"]
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            process: trio.Process = await nursery.start(
                partial(trio.run_process, argv, cwd=ROOT, check=False, stdout=subprocess.PIPE)
            )
            assert process.stdout is not None
            banner = b""
            while b"\n" not in banner:
                chunk = await process.stdout.receive_some(4096)
                assert chunk, "sim --replay exited before printing its URLs"
                banner += chunk
            assert banner.startswith(b"backpack replay: REST http://127.0.0.1:")
            rest = banner.split()[3].decode()
            url = f"{rest}/api/v1/depth?symbol=SOL_USDC&limit=1000"
            body = await trio.to_thread.run_sync(
                lambda: urllib.request.urlopen(url, timeout=20).read()
            )
            depth = json.loads(body)
            assert depth["lastUpdateId"] == str(first.update_id)
            assert [tuple(lv) for lv in reversed(depth["bids"])] == list(first.raw_bids)
            process.send_signal(signal.SIGINT)
            assert await process.wait() == 0


# --- REST-only channel polls: tickers, mark prices, open interest -----------------------------

REST_ONLY = {
    "rest_only": True,
    "channels": ["l2_book", "trades", "ticker", "mark_price", "open_interest"],
    "rest_poll_interval": 0.25,
}
POLLED = (Ticker, MarkPrice, OpenInterest)


@pytest.fixture(scope="module")
def rest_only_recording(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Event]]:
    path = tmp_path_factory.mktemp("replay") / "rest_only.jsonl.gz"
    symbols = ["ETH-USDC", "ETH-USDC-PERP"]
    return path, _record(path, symbols, seed=8, levels=30, rate=5, events=60, config=REST_ONLY)


def _polled(events: list[Event]) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """Each symbol's ticker, mark-price and open-interest events in order, without local times.

    REST answers carry no emit time, so the feed stamps a REST-built ticker's ``event_time_us``
    and a mark price's ``event_time_us``/``engine_time_us`` with its receipt time (local too);
    open interest keeps the exchange's ``timestamp``.
    """
    out: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for event in events:
        if not isinstance(event, POLLED):
            continue
        body = msgspec.to_builtins(event)
        for key in [k for k in body if _local_time(k)]:
            del body[key]
        if not isinstance(event, OpenInterest):
            del body["event_time_us"]
            body.pop("engine_time_us", None)
        out.setdefault((event.symbol, type(event).__name__), []).append(body)
    return out


async def test_the_feed_against_the_replay_gets_the_recorded_rest_channel_polls(
    rest_only_recording: tuple[Path, list[Event]],
) -> None:
    path, recorded = rest_only_recording
    want = _polled(recorded)
    # Both markets' tickers, the perp's mark prices and open interest, over several poll rounds.
    assert {key: len(rows) >= 1 for key, rows in want.items()} == {
        ("ETH-USDC", "Ticker"): True,
        ("ETH-USDC-PERP", "Ticker"): True,
        ("ETH-USDC-PERP", "MarkPrice"): True,
        ("ETH-USDC-PERP", "OpenInterest"): True,
    }
    assert len(want["ETH-USDC", "Ticker"]) >= 4
    # The rounds differ (trades move the 24 h statistics): equal contents are not a repeat.
    assert len({json.dumps(t, sort_keys=True) for t in want["ETH-USDC", "Ticker"]}) > 2
    expected = sum(isinstance(e, POLLED) for e in recorded)
    got: list[Event] = []
    with trio.fail_after(60):
        async with open_replay_server(path, speed=0, subscribe_wait=3, request_wait=3) as server:
            config = FeedConfig.from_kwargs(
                symbols=["ETH-USDC", "ETH-USDC-PERP"],
                rest_url=server.rest_url,
                ws_url=server.ws_url,
                **REST_ONLY,
            )
            async with open_feed(config) as feed:
                with trio.move_on_after(30):
                    async for event in feed:
                        got.append(event)
                        if sum(isinstance(e, POLLED) for e in got) >= expected:
                            break
            stats = dict(server.exchange.stats)
    assert _polled(got) == want
    assert stats.get("polls_served", 0) >= len(want["ETH-USDC", "Ticker"]), stats


def _round(
    tickers: Sequence[WireTicker] = (),
    marks: Sequence[WireMarkPrice] = (),
    interest: Sequence[WireOpenInterest] = (),
) -> RestChannelsRecord:
    return RestChannelsRecord(1.0, list(tickers), list(marks), list(interest))


def _wire(items: Sequence[Any]) -> list[Any]:
    """Items as the exchange's JSON sends them."""
    return list(msgspec.json.decode(msgspec.json.encode(items)))


async def test_poll_rounds_follow_the_clients_own_schedule(
    rest_only_recording: tuple[Path, list[Event]], autojump_clock: trio.testing.MockClock
) -> None:
    """The client's clock decides when it polls: open interest asked for in a round that has none
    gets an empty list; one recorded in a round the client skipped it in comes with its next
    request, together with that round's own (each market's newest); several connection groups'
    shares of a round come in one answer."""
    path, _ = rest_only_recording
    recording = load_recording(path)
    recorded = [line for line in recording.lines if isinstance(line, RestChannelsRecord)]
    assert len(recorded) >= 4
    spot = [t for t in recorded[-1].tickers if t.symbol == "ETH_USDC"]
    perp = [t for t in recorded[-1].tickers if t.symbol == "ETH_USDC_PERP"]
    marks = recorded[-1].mark_prices
    oi = [WireOpenInterest("ETH_USDC_PERP", Decimal("12.5"), 1_767_225_660_000)]
    later_oi = [WireOpenInterest("ETH_USDC_PERP", Decimal("13.75"), 1_767_225_720_000)]
    newest_oi = [WireOpenInterest("ETH_USDC_PERP", Decimal("14.125"), 1_767_225_780_000)]
    r0, r1, r2, r3 = recorded[:4]
    lines: list[Any] = [
        _round(r0.tickers, r0.mark_prices, r0.open_interest),
        _round(r1.tickers, r1.mark_prices),
        _round(r2.tickers, r2.mark_prices, oi),
        _round(r3.tickers, r3.mark_prices),
        _round(r0.tickers, r0.mark_prices, later_oi),  # r0's items again: r3's differ
        # Two connection groups' shares of one round (disjoint markets, an older recording).
        _round(spot),
        _round(perp, marks, newest_oi),
    ]
    exchange = ReplayExchange(Recording(recording.header, lines), request_wait=5.0)

    async def get(route: str) -> list[Any]:
        answer = await exchange.handle_http("GET", f"/api/v1/{route}")
        assert answer.status == 200
        return list(msgspec.json.decode(answer.body))

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await nursery.start(exchange.run)
            assert await get("tickers") == _wire(r0.tickers)
            assert await get("markPrices") == _wire(r0.mark_prices)
            assert await get("openInterest") == _wire(r0.open_interest)
            # Open interest asked for earlier than recorded: nothing (no event), as recorded.
            assert await get("tickers") == _wire(r1.tickers)
            assert await get("markPrices") == _wire(r1.mark_prices)
            assert await get("openInterest") == []
            # A round without the client's open-interest request: the next round's tickers
            # request moves the timeline on, and the skipped answer comes with the next request.
            assert await get("tickers") == _wire(r2.tickers)
            assert await get("markPrices") == _wire(r2.mark_prices)
            assert await get("tickers") == _wire(r3.tickers)
            assert await get("markPrices") == _wire(r3.mark_prices)
            assert await get("openInterest") == _wire(oi)
            # Skipped again, and the round it is asked in has its own: the newer one.
            assert await get("tickers") == _wire(r0.tickers)
            assert await get("markPrices") == _wire(r0.mark_prices)
            assert await get("tickers") == _wire([*spot, *perp])
            assert await get("markPrices") == _wire(marks)
            assert await get("openInterest") == _wire(newest_oi)
            await exchange.finished.wait()
            assert await get("tickers") == []
            assert await get("openInterest") == []
            # One market's ticker: its latest recorded one.
            answer = await exchange.handle_http("GET", "/api/v1/ticker", "symbol=ETH_USDC")
            assert msgspec.json.decode(answer.body) == _wire(spot)[0]
            nursery.cancel_scope.cancel()
    assert exchange.stats["polls_deferred"] == 2


def _rest(symbol: str) -> StreamStartedRecord:
    return StreamStartedRecord(symbol, 1, "rest", 1.0)


def _with_perps(header: RecordingHeader, *symbols: str) -> RecordingHeader:
    """``header`` with the perp markets ``symbols`` listed too."""
    step = Decimal("0.01")
    infos = [
        MarketInfo(s, s, s.replace("_", "-"), s[:1], "USDC", "perp", step, step, step, True)
        for s in symbols
    ]
    return msgspec.structs.replace(header, markets=[*header.markets, *infos])


def _mark(symbol: str, price: str) -> WireMarkPrice:
    return WireMarkPrice(symbol, Decimal(price))


def _interest(symbol: str, value: str) -> WireOpenInterest:
    return WireOpenInterest(symbol, Decimal(value), 1)


async def test_an_older_recordings_group_lines_are_one_round_for_the_feeds_one_poller(
    rest_only_recording: tuple[Path, list[Event]], autojump_clock: trio.testing.MockClock
) -> None:
    """Before one poller served the whole feed, each connection group wrote its own line a round,
    and polled open interest on its own 60 s clock (here out of phase with the other group). The
    feed asks each route once a round for all its groups now: each request gets every group's
    items of that round, and open interest, asked every second round, each market's newest."""
    path, _ = rest_only_recording
    a, b = "A_USDC_PERP", "B_USDC_PERP"
    header = _with_perps(load_recording(path).header, a, b)
    lines: list[Any] = [_rest(a), _rest(b)]
    for r in range(6):
        a_oi = [_interest(a, f"{r}.1")] if r % 2 == 0 else []
        b_oi = [_interest(b, f"{r}.2")] if r % 2 == 1 else []
        lines += [_round((), [_mark(a, f"10{r}")], a_oi), _round((), [_mark(b, f"20{r}")], b_oi)]
    exchange = ReplayExchange(Recording(header, lines), request_wait=5.0)

    async def get(route: str) -> list[tuple[str, str]]:
        body = msgspec.json.decode((await exchange.handle_http("GET", route)).body)
        return [(item["symbol"], item.get("markPrice") or item["openInterest"]) for item in body]

    marks: list[list[tuple[str, str]]] = []
    interest: list[list[tuple[str, str]]] = []
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await nursery.start(exchange.run)
            for r in range(6):
                marks.append(await get("/api/v1/markPrices"))
                if r % 2 == 1:
                    interest.append(await get("/api/v1/openInterest"))
            nursery.cancel_scope.cancel()
    assert marks == [[(a, f"10{r}"), (b, f"20{r}")] for r in range(6)]
    assert interest == [[(a, f"{r - 1}.1"), (b, f"{r}.2")] for r in (1, 3, 5)]


async def test_rounds_of_other_markets_one_after_the_other_stay_apart(
    rest_only_recording: tuple[Path, list[Event]], autojump_clock: trio.testing.MockClock
) -> None:
    """One line a round (the feed's one poller): market A's group recovers, B's fails. B's
    first round shares no market with A's last, and is not a share of it: A's round already
    held every REST-only market."""
    path, _ = rest_only_recording
    a, b = "A_USDC_PERP", "B_USDC_PERP"
    header = _with_perps(load_recording(path).header, a, b)
    lines: list[Any] = [
        _rest(a),
        _round((), [_mark(a, "100")]),
        _round((), [_mark(a, "101")]),
        StreamStartedRecord(a, 2, "ws", 1.0),
        _rest(b),
        _round((), [_mark(b, "200")]),
        _round((), [_mark(b, "201")]),
    ]
    exchange = ReplayExchange(Recording(header, lines), request_wait=5.0)
    got: list[list[Any]] = []
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await nursery.start(exchange.run)
            for _ in range(4):
                answer = await exchange.handle_http("GET", "/api/v1/markPrices")
                got.append(
                    [(m["symbol"], m["markPrice"]) for m in msgspec.json.decode(answer.body)]
                )
            nursery.cancel_scope.cancel()
    assert got == [[(a, "100")], [(a, "101")], [(b, "200")], [(b, "201")]]


# --- REST-only candles: /api/v1/klines from the recorded klines answers -----------------------

CANDLES = {
    "rest_only": True,
    "channels": ["l2_book", "ticker", "candles:1m"],
    "rest_poll_interval": 1.0,
    # Two groups, one poller: one rest_channels line a round for both (since e75382e).
    "connection_group_size": 1,
}
CANDLE_MARKETS = ["ETH-USDC", "ETH-USDC-PERP"]


@pytest.fixture(scope="module")
def candles_recording(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, list[Event], SimExchange]:
    """About four minutes REST-only with 1m candles (and tickers, whose rounds come between the
    klines polls), the events, and the simulator that answered."""
    path = tmp_path_factory.mktemp("replay") / "candles.jsonl.gz"
    simulators: list[SimExchange] = []

    async def record() -> list[Event]:
        return await simulate_feed(
            CANDLE_MARKETS,
            seed=25,
            rate=5.0,
            levels=30,
            events=1000,
            on_ready=simulators.append,
            record_to=path,
            config=CANDLES,
            time_limit=900,
        )

    trio.run(record, clock=trio.testing.MockClock(autojump_threshold=0))
    return path, trio.run(replay_events, path), simulators[0]


def _closed_candles(events: list[Event]) -> dict[str, list[dict[str, Any]]]:
    """Each market's closed candles in order, without local times: a REST candle's
    ``event_time_us`` is its receipt time."""
    out: dict[str, list[dict[str, Any]]] = {}
    for event in events:
        if isinstance(event, Candle) and event.closed:
            body = msgspec.to_builtins(event)
            for key in [k for k in body if _local_time(k)]:
                del body[key]
            del body["event_time_us"]
            out.setdefault(event.symbol, []).append(body)
    return out


async def test_the_feed_against_the_replay_gets_the_recorded_rest_only_candles(
    candles_recording: tuple[Path, list[Event], SimExchange],
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The replay, in process and in virtual time at the recorded pace, serves a REST-only feed
    (its wall clock the timeline's) the recorded klines answers: it publishes the recorded closed
    candles, every field but the local times equal, and the recorded tickers. Each klines answer
    is byte for byte the simulator's for the same request."""
    path, recorded, simulator = candles_recording
    want = _closed_candles(recorded)
    assert set(want) == set(CANDLE_MARKETS)
    for rows in want.values():
        assert len(rows) >= 3
        assert len({(r["raw_open"], r["raw_close"], r["raw_volume"]) for r in rows}) == len(rows)
    recording = load_recording(path)
    polls = [
        p for line in recording.lines if isinstance(line, RestChannelsRecord) for p in line.candles
    ]
    exchange = ReplayExchange(recording, speed=1, request_wait=5)
    config = FeedConfig.from_kwargs(
        symbols=CANDLE_MARKETS,
        rest_url="http://replay.invalid",
        ws_url="ws://replay.invalid",
        **CANDLES,
    )
    got: list[Event] = []
    with trio.fail_after(recording.lines[-1].now - recording.header.now + 120):
        async with trio.open_nursery() as nursery:
            await nursery.start(exchange.run)
            async with (
                open_feed(
                    config, rest_client=SimRestClient(exchange), wall_clock=exchange.recorded_now
                ) as feed,
                trio.open_nursery() as consumer,
            ):

                async def consume() -> None:
                    async for event in feed:
                        got.append(event)

                consumer.start_soon(consume)
                await exchange.finished.wait()
                await trio.sleep(10)  # nothing more comes: no candle beyond the recorded ones
                consumer.cancel_scope.cancel()
            nursery.cancel_scope.cancel()
    assert _closed_candles(got) == want
    # The tickers' poll rounds, one line each between the klines polls, are the recorded ones too.
    assert _polled(got) == _polled(recorded)
    assert len(_polled(recorded)["ETH-USDC-PERP", "Ticker"]) >= 200
    assert exchange.stats["klines_polls_played"] == len(polls)
    for poll in polls:
        query = {
            "symbol": poll.symbol,
            "interval": poll.interval,
            "startTime": str(poll.start_s),
            "endTime": str(poll.end_s),
        }
        live = await simulator.handle_http("GET", "/api/v1/klines", query)
        replayed = await exchange.handle_http("GET", "/api/v1/klines", query)
        assert (replayed.status, replayed.body) == (200, live.body)


def _kline(minute: int, close: str, *, quote_volume: str = "24.8650") -> Kline:
    return Kline(
        f"2026-01-01 00:{minute:02d}:00",
        f"2026-01-01 00:{minute + 1:02d}:00",
        Decimal("2486.50"),
        Decimal("2487"),
        Decimal("2486.1"),
        Decimal(close),
        Decimal("0.0100"),
        Decimal(quote_volume),
        3,
    )


async def test_klines_are_answered_by_range_from_the_polls_the_timeline_played(
    candles_recording: tuple[Path, list[Event], SimExchange],
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A klines request gets the recorded candles in its range, as the exchange's JSON, among
    the polls played: one reaching past them waits for the timeline (up to ``request_wait``)
    and never gets a candle recorded later. The timeline never waits for klines requests."""
    path, _, _ = candles_recording
    header = load_recording(path).header
    h = int(header.now)  # 2026-01-01 00:00:00 UTC
    k0, k1 = _kline(0, "2486.9", quote_volume="1E-7"), _kline(1, "2487")
    partial = _kline(2, "2488")  # reaches past its poll's endTime
    lines: list[Any] = [
        RestChannelsRecord(h + 62, candles=[CandlePoll("ETH_USDC", "1m", h, h + 60, [k0])]),
        # Nobody asks for this one: the timeline goes on at the recorded pace all the same.
        RestChannelsRecord(h + 100, candles=[CandlePoll("ETH_USDC_PERP", "1m", h, h + 60, [k0])]),
        RestChannelsRecord(
            h + 122, candles=[CandlePoll("ETH_USDC", "1m", h + 60, h + 150, [k1, partial])]
        ),
        StreamStartedRecord("ETH_USDC", 1, "rest", h + 200),
    ]
    exchange = ReplayExchange(Recording(header, lines), speed=1, request_wait=70)

    async def klines(start: int, end: int, symbol: str = "ETH_USDC") -> tuple[float, list[Any]]:
        query = f"symbol={symbol}&interval=1m&startTime={start}&endTime={end}"
        answer = await exchange.handle_http("GET", "/api/v1/klines", query)
        assert answer.status == 200
        return trio.current_time(), list(msgspec.json.decode(answer.body))

    json0 = {
        "close": "2486.9",
        "end": "2026-01-01 00:01:00",
        "high": "2487",
        "low": "2486.1",
        "open": "2486.50",
        "quoteVolume": "0.0000001",
        "start": "2026-01-01 00:00:00",
        "trades": "3",
        "volume": "0.0100",
    }
    json1 = {**json0, "close": "2487", "quoteVolume": "24.8650"}
    json1 |= {"start": "2026-01-01 00:01:00", "end": "2026-01-01 00:02:00"}
    with trio.fail_after(400):
        async with trio.open_nursery() as nursery:
            await nursery.start(exchange.run)
            t0 = trio.current_time()
            # Past every poll played: waits; at 70 s only the first one is played.
            assert await klines(h, h + 180) == (pytest.approx(t0 + 70), [json0])
            # The next poll of the market is recorded at 122 s: answered then.
            assert await klines(h + 60, h + 120) == (pytest.approx(t0 + 122), [json1])
            await exchange.finished.wait()
            assert trio.current_time() == pytest.approx(t0 + 200)
            assert exchange.recorded_now() == h + 200
            # Behind the timeline: at once; the partial bucket was never published, nor served.
            now = trio.current_time()
            assert await klines(h, h + 300) == (now, [json0, json1])
            assert await klines(h, h + 60, "ETH_USDC_PERP") == (now, [json0])
            assert await klines(h + 180, h + 240) == (now, [])
            # A request the exchange refuses gets the simulator's error.
            bad = await exchange.handle_http("GET", "/api/v1/klines", "symbol=ETH_USDC&interval=2m")
            assert bad.status == 400
            nursery.cancel_scope.cancel()
    assert exchange.stats["klines_waited"] == 2
