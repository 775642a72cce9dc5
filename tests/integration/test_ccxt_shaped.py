"""The ccxt.pro-shaped calls on the trio feed return what ccxt.pro itself returns.

ccxt.pro (unmodified; asyncio in a thread of its own, as in test_ccxt_fidelity.py) and our feed
watch the same simulator at the same time; books are compared at the update ids both saw, trades
by id, and every structure has ccxt's keys. Ours carry ``Decimal``s where ccxt has floats.
"""

from __future__ import annotations

import asyncio
import threading
from decimal import Decimal
from typing import Any

import ccxt.pro
import trio

from backpack_actors.config import FeedConfig
from backpack_actors.feed import open_feed
from backpack_actors.sim import SimServer, open_simulator

SYMBOL = "SOL/USDC"


def _urls(sim: SimServer) -> dict[str, Any]:
    api = {"public": sim.rest_url, "private": sim.rest_url}
    return {"urls": {"api": {**api, "ws": {"public": sim.ws_url, "private": sim.ws_url}}}}


def _levels(levels: list[list[Any]]) -> list[list[Any]]:
    return [list(level[:2]) for level in levels]


async def _pro_session(urls: dict[str, Any], stop: threading.Event) -> dict[str, Any]:
    pro = ccxt.pro.backpack(urls)
    books: dict[int, dict[str, Any]] = {}
    trades: list[dict[str, Any]] = []
    try:
        await pro.load_markets()
        # Its first book is the REST snapshot with the cached deltas applied, stamped with the
        # snapshot's time: compared from the next one on.
        first = await asyncio.wait_for(pro.watch_order_book(SYMBOL), 30)
        first_nonce = first["nonce"]
        while len(books) < 40:
            book = await asyncio.wait_for(pro.watch_order_book(SYMBOL), 30)
            if book["nonce"] == first_nonce:
                continue
            # ccxt mutates its book in place: copy it at the instant it resolves.
            books[book["nonce"]] = {
                **{k: book[k] for k in ("symbol", "timestamp", "datetime", "nonce")},
                "bids": _levels(book["bids"]),
                "asks": _levels(book["asks"]),
            }
        while len(trades) < 15:
            trades.extend(dict(t) for t in await asyncio.wait_for(pro.watch_trades(SYMBOL), 30))
        ticker = dict(await asyncio.wait_for(pro.watch_ticker(SYMBOL), 30))
        return {"books": books, "trades": trades, "ticker": ticker}
    finally:
        stop.set()
        await pro.close()


def _as_floats(book: dict[str, Any]) -> dict[str, Any]:
    assert all(isinstance(v, Decimal) for side in ("bids", "asks") for lv in book[side] for v in lv)
    return {
        **book,
        "bids": [[float(p), float(a)] for p, a in book["bids"]],
        "asks": [[float(p), float(a)] for p, a in book["asks"]],
    }


async def test_watch_calls_equal_what_ccxt_pro_returns() -> None:
    stop = threading.Event()
    ours: dict[int, dict[str, Any]] = {}
    our_trades: list[dict[str, Any]] = []
    result: dict[str, Any] = {}

    async def run_pro(urls: dict[str, Any]) -> None:
        result.update(await trio.to_thread.run_sync(lambda: asyncio.run(_pro_session(urls, stop))))

    with trio.fail_after(90):
        async with open_simulator(seed=11, markets=["SOL_USDC", "BTC_USDC"], rate=30) as sim:
            config = FeedConfig.from_kwargs(
                symbols=["SOL-USDC"], rest_url=sim.rest_url, ws_url=sim.ws_url
            )
            async with open_feed(config) as feed, trio.open_nursery() as nursery:
                nursery.start_soon(run_pro, _urls(sim))
                first_ticker = await feed.watch_ticker(SYMBOL)

                async def collect_trades() -> None:
                    while not stop.is_set():
                        our_trades.extend(await feed.watch_trades("SOL-USDC"))

                nursery.start_soon(collect_trades)
                # The first book may come straight from the REST snapshot, stamped with the
                # snapshot's time where ccxt.pro, at the same update id, has a delta's T.
                first = await feed.watch_order_book(SYMBOL)
                while not stop.is_set():
                    book = await feed.watch_order_book("SOL_USDC")
                    ours[book["nonce"]] = _as_floats(book)
                    limited = await feed.watch_order_book(SYMBOL, limit=5)
                    assert len(limited["bids"]) == len(limited["asks"]) == 5
                    ours[limited["nonce"]] = ours.get(limited["nonce"]) or {}
                view = feed.book("SOL-USDC")
                bid, ask = view.best_bid(), view.best_ask()
                assert bid is not None
                assert ask is not None
                assert view.spread() == ask[0] - bid[0]
                assert view.mid() == (bid[0] + ask[0]) / 2
                bids, asks = view.depth(3)
                assert bids[0] == bid
                assert asks[0] == ask
                assert [(str(p), str(s)) for p, s in bids] == list(view.text.depth(3)[0])
                last_ticker = await feed.watch_ticker(SYMBOL)
                nursery.cancel_scope.cancel()

    pro_books: dict[int, dict[str, Any]] = result["books"]
    common = sorted(n for n in set(pro_books) & set(ours) if ours[n] and n > first["nonce"])
    assert len(common) >= 10, (len(pro_books), len(ours))
    for nonce in common:
        assert ours[nonce] == pro_books[nonce], nonce

    pro_trades = {t["id"]: t for t in result["trades"]}
    mine = {t["id"]: t for t in our_trades}
    shared = sorted(set(pro_trades) & set(mine))
    assert len(shared) >= 10
    for trade_id in shared:
        theirs, ours_trade = pro_trades[trade_id], mine[trade_id]
        assert set(ours_trade) == set(theirs)
        assert isinstance(ours_trade["price"], Decimal)
        assert ours_trade["cost"] == ours_trade["price"] * ours_trade["amount"]
        for key in theirs:
            if key in ("info", "order"):
                continue  # the raw frame; order ids are not in the feed's trades (None)
            value = ours_trade[key]
            expected = theirs[key]
            if isinstance(value, Decimal):
                assert float(value) == expected, (key, value, expected)
            else:
                assert value == expected, (key, value, expected)

    # The ticker: ccxt's keys; ccxt.pro reads Backpack's 24 h ticker stream, ours is the book's
    # touch and the last trade, so only the shape and the symbol can be the same.
    pro_ticker = result["ticker"]
    for ticker in (first_ticker, last_ticker):
        assert set(ticker) == set(pro_ticker)
        assert ticker["symbol"] == pro_ticker["symbol"] == SYMBOL
    assert last_ticker["bid"] < last_ticker["ask"]
    assert isinstance(last_ticker["last"], Decimal)
    assert last_ticker["last"] == last_ticker["info"].price
    assert last_ticker["last"] in {t["price"] for t in our_trades}


async def _pro_tickers(urls: dict[str, Any], count: int) -> list[dict[str, Any]]:
    pro = ccxt.pro.backpack(urls)
    try:
        await pro.load_markets()
        return [dict(await asyncio.wait_for(pro.watch_ticker(SYMBOL), 30)) for _ in range(count)]
    finally:
        await pro.close()


# ccxt divides with 18 decimals then makes a float; ours divide exactly: the floats may differ
# in the last place.
_DIVIDED = {"percentage", "vwap"}
_DAILY = ("open", "high", "low", "close", "last", "change", "average", "baseVolume")


async def test_watch_ticker_with_the_ticker_channel_equals_ccxt_pro() -> None:
    ours: dict[int, dict[str, Any]] = {}
    theirs: list[dict[str, Any]] = []

    async def run_pro(urls: dict[str, Any]) -> None:
        theirs.extend(await trio.to_thread.run_sync(lambda: asyncio.run(_pro_tickers(urls, 3))))

    with trio.fail_after(60):
        async with open_simulator(seed=12, markets=["SOL_USDC"], rate=30) as sim:
            config = FeedConfig.from_kwargs(
                symbols=["SOL-USDC"],
                channels=["trades", "l2_book", "ticker"],
                rest_url=sim.rest_url,
                ws_url=sim.ws_url,
            )
            async with open_feed(config) as feed, trio.open_nursery() as nursery:
                nursery.start_soon(run_pro, _urls(sim))
                while not theirs or max(t["timestamp"] for t in theirs) not in ours:
                    ticker = await feed.watch_ticker(SYMBOL)
                    ours[ticker["timestamp"]] = ticker
                nursery.cancel_scope.cancel()
    common = [t for t in theirs if t["timestamp"] in ours]
    assert common
    for pro_ticker in common:
        mine = ours[pro_ticker["timestamp"]]
        assert set(mine) == set(pro_ticker)
        assert (mine["symbol"], mine["datetime"]) == (pro_ticker["symbol"], pro_ticker["datetime"])
        for key in _DAILY:
            assert isinstance(mine[key], Decimal), key
            assert float(mine[key]) == pro_ticker[key], (key, mine[key], pro_ticker[key])
        assert float(mine["quoteVolume"]) == pro_ticker["quoteVolume"]
        for key in _DIVIDED:
            assert abs(float(mine[key]) - pro_ticker[key]) <= 1e-12 * abs(pro_ticker[key]), key
        # What ccxt.pro's Backpack ticker leaves out, ours has: the book's touch.
        assert pro_ticker["bid"] is None
        assert mine["bid"] < mine["ask"]
