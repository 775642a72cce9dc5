"""The public API over real sockets: CcxtBackpackFeed with callbacks, the seed YAML, and a clean
shutdown that leaves no socket open."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import trio

from backpack_actors.config import L2_BOOK, TRADES, FeedConfig
from backpack_actors.core.events import BookDelta, BookSnapshot, StatusEvent, StatusKind, Trade
from backpack_actors.feed import STATUS, CcxtBackpackFeed, open_feed
from backpack_actors.sim import open_simulator
from tests.pipeline_helpers import ConsumerBooks, assert_matches_truth

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _client_sockets(server_port: int) -> set[str]:
    """Inodes of this process's TCP sockets that are not the simulator's own (server) side."""
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    client = set()
    for table in ("/proc/self/net/tcp", "/proc/self/net/tcp6"):
        with open(table) as fh:
            next(fh)
            for line in fh:
                cols = line.split()
                local_port = int(cols[1].rsplit(":", 1)[1], 16)
                if cols[9] in inodes and local_port != server_port and cols[3] != "0A":
                    client.add(cols[9])
    return client


async def test_callbacks_sync_and_async_get_every_kind_of_event() -> None:
    consumer = ConsumerBooks()
    seen: dict[str, int] = {"trades": 0, "book": 0, "status": 0}

    def on_trade(trade: Trade, receipt: float) -> None:
        assert isinstance(trade, Trade)
        assert receipt > 0
        consumer.apply(trade)
        seen["trades"] += 1

    async def on_book(book: BookSnapshot | BookDelta, receipt: float) -> None:
        await trio.lowlevel.checkpoint()
        consumer.apply(book)
        seen["book"] += 1
        if seen["book"] >= 2000 and seen["trades"] >= 50:
            feed.stop()

    def on_status(event: StatusEvent, at: float) -> None:
        consumer.apply(event)
        seen["status"] += 1

    with trio.fail_after(120):
        async with open_simulator(
            port=0, seed=9, markets=["BTC_USDT", "ETH_USDT"], rate=300
        ) as sim:
            feed = CcxtBackpackFeed(
                symbols=["BTC-USDT", "ETH-USDT"],
                channels=[TRADES, L2_BOOK],
                callbacks={TRADES: on_trade, L2_BOOK: on_book, STATUS: on_status},
                snapshot_interval=30,
                websocket=True,
                rest_only=False,
                api_key=None,
                api_secret=None,
                rest_url=sim.rest_url,
                ws_url=sim.ws_url,
            )
            await feed.run_async()
            for sym in ("BTC_USDT", "ETH_USDT"):
                assert_matches_truth(consumer, sim.exchange, sym)
    assert consumer.kinds().count(StatusKind.BOOK_READY) == 2
    assert seen["status"] >= 2


async def test_an_exception_in_a_callback_surfaces() -> None:
    class Boom(Exception):
        pass

    def on_trade(trade: Trade, receipt: float) -> None:
        raise Boom(f"consumer bug on trade {trade.trade_id}")

    with trio.fail_after(60):
        async with open_simulator(port=0, seed=9, markets=["BTC_USDC"], rate=300) as sim:
            feed = CcxtBackpackFeed(
                symbols=["BTC-USDC"],
                channels=[TRADES],
                callbacks={TRADES: on_trade},
                rest_url=sim.rest_url,
                ws_url=sim.ws_url,
            )
            with pytest.raises(Boom, match="consumer bug"):
                await feed.run_async()


async def test_seed_yaml_runs_against_the_simulator() -> None:
    trades: list[Trade] = []
    books: list[BookSnapshot | BookDelta] = []

    def on_book(book: BookSnapshot | BookDelta, receipt: float) -> None:
        books.append(book)

    with trio.fail_after(60):
        async with open_simulator(port=0, seed=2, rate=300) as sim:
            feed = CcxtBackpackFeed.from_yaml(
                EXAMPLES / "seed.yaml",
                callbacks={TRADES: lambda t, r: trades.append(t), L2_BOOK: on_book},
                env={"BACKPACK_KEY": "", "BACKPACK_SECRET": ""},
                rest_url=sim.rest_url,
                ws_url=sim.ws_url,
            )
            assert feed.config.symbols == ("BTC-USDT", "ETH-USDT")
            assert feed.config.snapshot_interval == 30
            await feed.run_async(max_events=1500)
    assert {t.symbol for t in trades} == {"BTC-USDT", "ETH-USDT"}
    assert {b.symbol for b in books if isinstance(b, BookSnapshot) and b.force} == {
        "BTC-USDT",
        "ETH-USDT",
    }


async def test_cancellation_closes_every_socket_and_task() -> None:
    with trio.fail_after(60):
        async with open_simulator(
            port=0, seed=3, markets=["BTC_USDC", "ETH_USDC"], rate=200
        ) as sim:
            before = _client_sockets(sim.port)
            config = FeedConfig.from_kwargs(
                symbols=["BTC-USDC", "ETH-USDC"], rest_url=sim.rest_url, ws_url=sim.ws_url
            )
            ready = 0
            async with trio.open_nursery() as nursery:
                async with open_feed(config) as feed:
                    during = _client_sockets(sim.port)
                    async for event in feed:
                        if isinstance(event, StatusEvent) and event.kind is StatusKind.BOOK_READY:
                            ready += 1
                            if ready == 2:
                                break
                    during = _client_sockets(sim.port)
                    exit_started = trio.current_time()
                exit_took = trio.current_time() - exit_started
                assert not nursery.child_tasks, "the feed left a task behind"
            after = _client_sockets(sim.port)
    assert len(during - before) >= 2, "two WebSocket connections (and REST) were open"
    assert after == before, "every socket the feed opened is closed"
    assert exit_took < 5
