"""cryptofeed's own FeedHandler running our feed against the simulator.

FeedHandler runs in a thread with its own asyncio loop (as a cryptofeed program's main thread
would); our trio feed runs in the thread the drop-in starts. Trades and maintained books are
checked against the simulator's ground truth, a dropped delta must reach the book callback as a
reset, and cryptofeed's socket backend must carry the trades out.
"""

from __future__ import annotations

import asyncio
import json
import threading
from decimal import Decimal
from pathlib import Path
from typing import Any

import trio
from cryptofeed import FeedHandler
from cryptofeed.backends.socket import TradeSocket
from cryptofeed.defines import L2_BOOK, TICKER, TRADES
from cryptofeed.types import OrderBook, Ticker, Trade

from backpack_actors.cryptofeed import CcxtBackpackFeed
from backpack_actors.sim import open_simulator

ROOT = Path(__file__).resolve().parents[2]
FH_CONFIG = {"uvloop": False, "log": {"disabled": True}}


class Collector:
    """Callbacks: every trade, every book callback's kind, and a copy of each book's state."""

    def __init__(self) -> None:
        self.trades: list[Trade] = []
        self.tickers: list[Ticker] = []
        self.resets: dict[str, list[int]] = {}
        self.books: dict[str, tuple[int, dict[Decimal, Decimal], dict[Decimal, Decimal]]] = {}
        self.deltas = 0
        self.lock = threading.Lock()
        self.token = trio.lowlevel.current_trio_token()
        self.changed = trio.Event()

    def _notify(self) -> None:
        # Called from cryptofeed's thread: wake the trio test, in its own thread.
        self.token.run_sync_soon(self._wake)

    def _wake(self) -> None:
        self.changed.set()
        self.changed = trio.Event()

    async def wait_for(self, predicate: Any) -> None:
        while not predicate():
            await self.changed.wait()

    async def on_trade(self, trade: Trade, receipt: float) -> None:
        assert isinstance(trade, Trade)
        with self.lock:
            self.trades.append(trade)
        self._notify()

    async def on_book(self, book: OrderBook, receipt: float) -> None:
        assert isinstance(book, OrderBook)
        with self.lock:
            if book.delta is None:
                self.resets.setdefault(book.symbol, []).append(book.sequence_number)
            else:
                self.deltas += 1
                assert set(book.delta) == {"bid", "ask"}
            self.books[book.symbol] = (
                book.sequence_number,
                dict(book.book.bids.to_dict()),
                dict(book.book.asks.to_dict()),
            )
        self._notify()

    def on_ticker(self, ticker: Ticker, receipt: float) -> None:
        with self.lock:
            self.tickers.append(ticker)
        self._notify()


class Handler:
    """A FeedHandler in a thread of its own, as a cryptofeed program's main thread runs it."""

    def __init__(self, feed: CcxtBackpackFeed) -> None:
        self.feed = feed
        self.loop: asyncio.AbstractEventLoop | None = None
        self.started = threading.Event()
        self.thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(self.started.set)
        _run_feedhandler(self.feed)

    async def stop(self) -> None:
        """Stop it as its signal handler would, and wait for the thread."""
        await trio.to_thread.run_sync(self.started.wait, 30)
        assert self.loop is not None
        _stop(self.loop)
        await trio.to_thread.run_sync(self.thread.join, 30)
        assert not self.thread.is_alive()


def _run_feedhandler(feed: CcxtBackpackFeed) -> None:
    handler = FeedHandler(config=FH_CONFIG)
    handler.add_feed(feed)
    handler.run(install_signal_handlers=False)


def _stop(loop: asyncio.AbstractEventLoop) -> None:
    def exit_loop() -> None:
        raise SystemExit  # what FeedHandler's own signal handler raises

    loop.call_soon_threadsafe(exit_loop)


def _decode_stream(data: bytes) -> list[dict[str, Any]]:
    decoder, text, out, index = json.JSONDecoder(), data.decode(), [], 0
    while index < len(text):
        obj, index = decoder.raw_decode(text, index)
        out.append(obj)
    return out


async def test_feedhandler_runs_our_feed_with_cryptofeed_types_and_backend() -> None:
    collector = Collector()
    received = bytearray()

    async def backend_server(listener: trio.SocketListener) -> None:
        stream = await listener.accept()
        async with stream:
            async for chunk in stream:
                received.extend(chunk)

    with trio.fail_after(90):
        async with open_simulator(seed=21, markets=["BTC_USDC", "ETH_USDC"], rate=40) as sim:
            listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
            port = listeners[0].socket.getsockname()[1]
            feed = CcxtBackpackFeed(
                symbols=["BTC-USDC", "ETH-USDC"],
                channels=[TRADES, L2_BOOK, TICKER],
                callbacks={
                    TRADES: [collector.on_trade, TradeSocket("tcp://127.0.0.1", port=port)],
                    L2_BOOK: collector.on_book,
                    TICKER: collector.on_ticker,
                },
                rest_url=sim.rest_url,
                ws_url=sim.ws_url,
            )
            handler = Handler(feed)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(backend_server, listeners[0])
                handler.thread.start()
                try:
                    await collector.wait_for(
                        lambda: "BTC-USDC" in collector.resets and collector.deltas > 20
                    )
                    first = collector.resets["BTC-USDC"][0]
                    sim.faults.drop_delta(symbol="BTC_USDC")
                    await collector.wait_for(
                        lambda: (
                            len(collector.resets["BTC-USDC"]) >= 2
                            and len(collector.trades) >= 20
                            and len(collector.tickers) >= 3
                        )
                    )
                finally:
                    await handler.stop()
                nursery.cancel_scope.cancel()

            # The dropped delta reached the book callback as a reset (a snapshot, delta None).
            assert sim.faults.injected["drop"] == 1
            resets = collector.resets["BTC-USDC"]
            assert resets[0] == first
            assert resets[1] > first
            # Every maintained book equals the simulator's book at its sequence number.
            for symbol in ("BTC_USDC", "ETH_USDC"):
                sequence, bids, asks = collector.books[symbol.replace("_", "-")]
                true_bids, true_asks = sim.exchange.book_at(symbol, sequence)
                assert bids == dict(true_bids)
                assert asks == dict(true_asks)
            truth = {
                (sym, t.id): t for sym in ("BTC_USDC", "ETH_USDC") for t in sim.exchange.trades(sym)
            }

    assert feed.error is None
    for trade in collector.trades:
        assert trade.exchange == "BACKPACK"
        assert isinstance(trade.price, Decimal)
        real = truth[(trade.symbol.replace("-", "_"), int(trade.id))]
        assert (trade.price, trade.amount) == (real.price, real.quantity)
        assert trade.side == ("sell" if real.is_buyer_maker else "buy")
    for ticker in collector.tickers:
        assert isinstance(ticker, Ticker)
        assert ticker.bid < ticker.ask
    # cryptofeed's socket backend wrote the trades it was given (its floats).
    sent = [m["data"] for m in _decode_stream(bytes(received)) if m["type"] == "trades"]
    assert sent
    ours = {trade.id: trade for trade in collector.trades}
    for message in sent:
        assert message["exchange"] == "BACKPACK"
        assert float(ours[message["id"]].price) == message["price"]


async def test_the_seed_yaml_starts_it_unchanged() -> None:
    collector = Collector()
    with trio.fail_after(60):
        async with open_simulator(seed=22, rate=60) as sim:
            feed = CcxtBackpackFeed.from_yaml(
                ROOT / "examples" / "seed.yaml",
                callbacks={TRADES: collector.on_trade, L2_BOOK: collector.on_book},
                env={"BACKPACK_KEY": "", "BACKPACK_SECRET": ""},
                rest_url=sim.rest_url,
                ws_url=sim.ws_url,
            )
            assert feed.config.symbols == ("BTC-USDT", "ETH-USDT")
            handler = Handler(feed)
            handler.thread.start()
            try:
                await collector.wait_for(
                    lambda: (
                        len(collector.books) == 2 and len({t.symbol for t in collector.trades}) == 2
                    )
                )
            finally:
                await handler.stop()
    assert set(collector.books) == {"BTC-USDT", "ETH-USDT"}
    assert {t.symbol for t in collector.trades} == {"BTC-USDT", "ETH-USDT"}
    assert feed.error is None
