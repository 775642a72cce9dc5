"""``sim --replay``: a recording served back as Backpack to this feed and to ccxt.pro."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import urllib.request
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
from backpack_actors.core.events import BookDelta, BookSnapshot, Event, StatusEvent, StatusKind
from backpack_actors.feed import open_feed
from backpack_actors.recording import replay_events
from backpack_actors.sim.replay import open_replay_server
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
