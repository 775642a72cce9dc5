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

from backpack_actors.config import FeedConfig
from backpack_actors.core.book import OrderBook
from backpack_actors.core.events import (
    BookDelta,
    BookSnapshot,
    Event,
    MarkPrice,
    OpenInterest,
    StatusEvent,
    StatusKind,
    Ticker,
)
from backpack_actors.core.wire import MarkPrice as WireMarkPrice
from backpack_actors.core.wire import OpenInterest as WireOpenInterest
from backpack_actors.core.wire import Ticker as WireTicker
from backpack_actors.feed import open_feed
from backpack_actors.recording import (
    Recording,
    RestChannelsRecord,
    load_recording,
    replay_events,
)
from backpack_actors.sim.replay import ReplayExchange, open_replay_server
from backpack_actors.testing import simulate_feed

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
    request; several connection groups' shares of a round reach every group."""
    path, _ = rest_only_recording
    recording = load_recording(path)
    recorded = [line for line in recording.lines if isinstance(line, RestChannelsRecord)]
    assert len(recorded) >= 4
    spot = [t for t in recorded[-1].tickers if t.symbol == "ETH_USDC"]
    perp = [t for t in recorded[-1].tickers if t.symbol == "ETH_USDC_PERP"]
    marks = recorded[-1].mark_prices
    oi = [WireOpenInterest("ETH_USDC_PERP", Decimal("12.5"), 1_767_225_660_000)]
    later_oi = [WireOpenInterest("ETH_USDC_PERP", Decimal("13.75"), 1_767_225_720_000)]
    r0, r1, r2, r3 = recorded[:4]
    lines: list[Any] = [
        _round(r0.tickers, r0.mark_prices, r0.open_interest),
        _round(r1.tickers, r1.mark_prices),
        _round(r2.tickers, r2.mark_prices, oi),
        _round(r3.tickers, r3.mark_prices, later_oi),
        # Two connection groups' shares of one round (disjoint markets).
        _round(spot),
        _round(perp, marks),
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
            # Each group's requests get both shares (a feed keeps its own group's markets).
            for _group in range(2):
                assert await get("tickers") == _wire([*spot, *perp])
                assert await get("markPrices") == _wire(marks)
            assert await get("openInterest") == _wire(later_oi)
            await exchange.finished.wait()
            assert await get("tickers") == []
            assert await get("openInterest") == []
            # One market's ticker: its latest recorded one.
            answer = await exchange.handle_http("GET", "/api/v1/ticker", "symbol=ETH_USDC")
            assert msgspec.json.decode(answer.body) == _wire(spot)[0]
            nursery.cancel_scope.cancel()
    assert exchange.stats["polls_deferred"] == 2


async def test_groups_with_open_interest_clocks_out_of_phase_each_get_their_own(
    rest_only_recording: tuple[Path, list[Event]], autojump_clock: trio.testing.MockClock
) -> None:
    """Two groups poll open interest on their own 60 s clocks, out of phase: each round's line of
    one group carries it, the other's does not. Every group's request gets its own round's value,
    none is deferred, lost or repeated."""
    path, _ = rest_only_recording
    header = load_recording(path).header
    a, b = "A_USDC_PERP", "B_USDC_PERP"

    def line(symbol: str, interest: str | None) -> RestChannelsRecord:
        oi = [] if interest is None else [WireOpenInterest(symbol, Decimal(interest), 1)]
        return _round((), [WireMarkPrice(symbol, Decimal("100"))], oi)

    rounds = [(r % 2 == 0, r % 2 == 1) for r in range(6)]
    lines: list[Any] = []
    for r, (a_due, b_due) in enumerate(rounds):
        lines += [line(a, f"{r}.1" if a_due else None), line(b, f"{r}.2" if b_due else None)]
    exchange = ReplayExchange(Recording(header, lines), request_wait=5.0)

    async def get(route: str) -> list[Any]:
        return list(msgspec.json.decode((await exchange.handle_http("GET", route)).body))

    kept: list[tuple[str, str]] = []
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await nursery.start(exchange.run)
            for a_due, b_due in rounds:
                for mine, due in ((a, a_due), (b, b_due)):
                    await get("/api/v1/markPrices")
                    if due:
                        body = await get("/api/v1/openInterest")
                        kept += [
                            (o["symbol"], o["openInterest"]) for o in body if o["symbol"] == mine
                        ]
            nursery.cancel_scope.cancel()
    want = [(a if r % 2 == 0 else b, f"{r}.{1 if r % 2 == 0 else 2}") for r in range(6)]
    assert kept == want
    assert exchange.stats["polls_deferred"] == 0
