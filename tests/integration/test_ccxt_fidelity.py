"""Unmodified ccxt (sync REST and ccxt.pro WS) against the simulator over real sockets.

Only the URLs are overridden (docs/ccxt.md). Sync ccxt runs in a worker thread; ccxt.pro runs
with asyncio in a thread of its own (the only place asyncio is used in this project).
"""

from __future__ import annotations

import asyncio
from typing import Any

import ccxt
import ccxt.pro
import trio

from backpack_actors.sim import SimServer, open_simulator


def _urls(sim: SimServer) -> dict[str, Any]:
    api = {"public": sim.rest_url, "private": sim.rest_url}
    return {"urls": {"api": {**api, "ws": {"public": sim.ws_url, "private": sim.ws_url}}}}


def _floats(levels: list[tuple[Any, Any]]) -> list[list[float]]:
    return [[float(p), float(s)] for p, s in levels]


async def test_ccxt_rest_matches_ground_truth() -> None:
    with trio.fail_after(60):
        async with open_simulator(seed=5, rate=50) as sim:
            ex = ccxt.backpack(_urls(sim))
            markets = await trio.to_thread.run_sync(ex.load_markets)
            assert {"BTC/USDC", "ETH/USDC", "SOL/USDC", "BTC/USDC:USDC", "BTC/USDT"} <= set(markets)
            btc = markets["BTC/USDC"]
            assert btc["precision"]["price"] == 0.1
            assert btc["precision"]["amount"] == 0.00001
            assert btc["limits"]["amount"]["min"] == 0.00001
            assert btc["active"] is True
            assert markets["SOL/USDC:USDC"]["swap"] is True

            # Generation keeps running: the snapshot must equal the truth at its own nonce.
            book = await trio.to_thread.run_sync(ex.fetch_order_book, "ETH/USDC")
            bids, asks = sim.exchange.book_at("ETH_USDC", book["nonce"])
            assert book["bids"] == _floats(bids)
            assert book["asks"] == _floats(asks)
            limited = await trio.to_thread.run_sync(ex.fetch_order_book, "SOL/USDC", 7)
            bids, asks = sim.exchange.book_at("SOL_USDC", limited["nonce"])
            assert limited["bids"] == _floats(bids[:7])
            assert limited["asks"] == _floats(asks[:7])

            sim.exchange.pause()
            trades = await trio.to_thread.run_sync(ex.fetch_trades, "BTC/USDC")
            truth = sim.exchange.trades("BTC_USDC")[-len(trades) :]
            assert len(trades) == min(100, len(sim.exchange.trades("BTC_USDC")))
            assert [t["id"] for t in trades] == [str(t.id) for t in truth]
            assert [t["price"] for t in trades] == [float(t.price) for t in truth]
            assert [t["amount"] for t in trades] == [float(t.quantity) for t in truth]
            assert [t["side"] for t in trades] == [
                "sell" if t.is_buyer_maker else "buy" for t in truth
            ]
            assert [t["timestamp"] for t in trades] == [t.engine_time_us // 1000 for t in truth]

            ticker = await trio.to_thread.run_sync(ex.fetch_ticker, "BTC/USDC")
            all_truth = sim.exchange.trades("BTC_USDC")
            assert ticker["last"] == float(all_truth[-1].price)
            assert ticker["baseVolume"] == float(sum(t.quantity for t in all_truth))
            status = await trio.to_thread.run_sync(ex.fetch_status)
            assert status["status"] == "ok"


def _copy_book(book: Any) -> dict[str, Any]:
    # ccxt mutates its level lists in place on later updates: copy every level now.
    return {
        "nonce": book["nonce"],
        "bids": [list(lv) for lv in book["bids"]],
        "asks": [list(lv) for lv in book["asks"]],
    }


async def _pro_session(urls: dict[str, Any]) -> dict[str, Any]:
    pro = ccxt.pro.backpack(urls)
    try:
        await pro.load_markets()
        book = await asyncio.wait_for(pro.watch_order_book("SOL/USDC"), 30)
        first = _copy_book(book)
        # A few more updates on the live book, copied at the instant they resolve.
        for _ in range(5):
            book = await asyncio.wait_for(pro.watch_order_book("SOL/USDC"), 30)
        later = _copy_book(book)
        trades: list[dict[str, Any]] = []
        while len(trades) < 20:
            batch = await asyncio.wait_for(pro.watch_trades("SOL/USDC"), 30)
            trades.extend(batch)
        return {"books": [first, later], "trades": trades}
    finally:
        await pro.close()


async def test_ccxt_pro_book_and_trades_match_ground_truth() -> None:
    with trio.fail_after(90):
        async with open_simulator(seed=9, markets=["SOL_USDC", "BTC_USDC"], rate=40) as sim:
            urls = _urls(sim)
            result = await trio.to_thread.run_sync(lambda: asyncio.run(_pro_session(urls)))
            assert result["books"][1]["nonce"] > result["books"][0]["nonce"]
            for book in result["books"]:
                bids, asks = sim.exchange.book_at("SOL_USDC", book["nonce"])
                assert [lv[:2] for lv in book["bids"]] == _floats(bids)
                assert [lv[:2] for lv in book["asks"]] == _floats(asks)
            truth = {t.id: t for t in sim.exchange.trades("SOL_USDC")}
            ids = [int(t["id"]) for t in result["trades"]]
            assert ids == list(range(ids[0], ids[0] + len(ids)))
            for t in result["trades"]:
                exact = truth[int(t["id"])]
                assert t["price"] == float(exact.price)
                assert t["amount"] == float(exact.quantity)
                assert t["side"] == ("sell" if exact.is_buyer_maker else "buy")
                assert t["timestamp"] == exact.event_time_us // 1000
