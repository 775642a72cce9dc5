"""Issue 13: unmodified ccxt / ccxt.pro read the simulator's other public channels, and agree
with its truth (tickers, best bid/ask, candles, funding) — the simulator is a faithful peer.

ccxt parses to floats; every comparison converts the exact truth the same way.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qs, urlsplit

import ccxt
import ccxt.pro
import trio

from backpack_actors.sim import SimServer, open_simulator
from backpack_actors.sim.derived import candle_fields, mark_price_fields
from backpack_actors.sim.market import SimTrade


def _urls(sim: SimServer) -> dict[str, Any]:
    api = {"public": sim.rest_url, "private": sim.rest_url}
    return {"urls": {"api": {**api, "ws": {"public": sim.ws_url, "private": sim.ws_url}}}}


def _prefix_index(trades: list[SimTrade], last: float, volume: float) -> int | None:
    """The k for which trades[:k] end at ``last`` with base volume ``volume`` (None: none)."""
    total = Decimal(0)
    for k, trade in enumerate(trades, start=1):
        total += trade.quantity
        if float(trade.price) == last and float(total) == volume:
            return k
    return None


async def _pro_session(urls: dict[str, Any]) -> dict[str, Any]:
    pro = ccxt.pro.backpack(urls)
    try:
        await pro.load_markets()
        ticker = await asyncio.wait_for(pro.watch_ticker("SOL/USDC"), 30)
        ticker = dict(ticker)
        bids_asks = await asyncio.wait_for(pro.watch_bids_asks(["SOL/USDC"]), 30)
        quote = dict(bids_asks["SOL/USDC"])
        candles = await asyncio.wait_for(pro.watch_ohlcv("SOL/USDC", "1m"), 30)
        return {"ticker": ticker, "quote": quote, "candle": list(candles[-1])}
    finally:
        await pro.close()


async def test_ccxt_pro_ticker_bids_asks_and_ohlcv_agree_with_truth() -> None:
    with trio.fail_after(90):
        async with open_simulator(seed=13, markets=["SOL_USDC"], rate=40) as sim:
            urls = _urls(sim)
            result = await trio.to_thread.run_sync(lambda: asyncio.run(_pro_session(urls)))
            trades = sim.exchange.trades("SOL_USDC")
            model = sim.exchange.models["SOL_USDC"]
    ticker = result["ticker"]
    # The ticker is the 24 h stats over a prefix of the trades (the stream sends one a second).
    assert _prefix_index(trades, ticker["last"], ticker["baseVolume"]) is not None
    quote = result["quote"]
    bids, asks = sim.exchange.book_at("SOL_USDC", int(quote["info"]["u"]))
    assert (quote["bid"], quote["bidVolume"]) == (float(bids[0][0]), float(bids[0][1]))
    assert (quote["ask"], quote["askVolume"]) == (float(asks[0][0]), float(asks[0][1]))
    ts, o, h, low, c, v = result["candle"]
    # ccxt.pro stamps a streamed candle with its close time ``T`` (its REST candles use the
    # start): docs/ccxt.md §7.
    bucket = ts // 1000 - 60
    # The current candle is its bucket's trades so far: equal to one of its prefixes.
    in_bucket = [t for t in trades if bucket * 1_000_000 <= t.engine_time_us < (bucket + 60) * 1e6]
    states = [candle_fields(model, 60, bucket, until_us=t.engine_time_us) for t in in_bucket]
    assert [float(x) for x in (o, h, low, c, v)] in [
        [float(s[k]) for k in ("o", "h", "l", "c", "v")] for s in states if s is not None
    ]


async def test_ccxt_rest_tickers_ohlcv_and_funding_agree_with_truth() -> None:
    with trio.fail_after(90):
        async with open_simulator(seed=17, markets=["SOL_USDC", "SOL_USDC_PERP"], rate=40) as sim:
            ex = ccxt.backpack(_urls(sim))
            await trio.to_thread.run_sync(ex.load_markets)
            await trio.sleep(2.0)
            sim.exchange.pause()
            exchange = sim.exchange
            tickers = await trio.to_thread.run_sync(ex.fetch_tickers)
            ohlcv = await trio.to_thread.run_sync(ex.fetch_ohlcv, "SOL/USDC", "1m")
            # ccxt bounds the query with its own clock (endTime, seconds, exclusive): the truth
            # of the newest candle must stop there too.
            query = parse_qs(urlsplit(ex.last_request_url).query)
            end_us = int(query["endTime"][0]) * 1_000_000 - 1
            funding = await trio.to_thread.run_sync(ex.fetch_funding_rate, "SOL/USDC:USDC")
            truth_funding = mark_price_fields(exchange.models["SOL_USDC_PERP"], exchange.now_us())
            trades = exchange.trades("SOL_USDC")
            model = exchange.models["SOL_USDC"]
    spot = tickers["SOL/USDC"]
    assert spot["last"] == float(trades[-1].price)
    assert spot["baseVolume"] == float(sum(t.quantity for t in trades))
    assert ohlcv
    for ts, o, h, low, c, v in ohlcv:
        truth = candle_fields(model, 60, ts // 1000, until_us=end_us)
        assert truth is not None
        assert [o, h, low, c, v] == [float(truth[k]) for k in ("o", "h", "l", "c", "v")]
    assert funding["fundingRate"] == float(truth_funding["f"])
    assert funding["markPrice"] == float(truth_funding["p"])
    assert funding["indexPrice"] == float(truth_funding["i"])
