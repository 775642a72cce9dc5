"""A ccxt.pro-style program on the trio feed: ``await feed.watch_order_book(symbol)``.

    python examples/ccxt_pro_style.py --duration 5        # starts the embedded simulator
    python examples/ccxt_pro_style.py --rest-url http://127.0.0.1:8765 --ws-url ws://127.0.0.1:8765

``watch_order_book`` returns ccxt's order book structure (``bids``/``asks`` as ``[price,
amount]`` lists best first, ``nonce``, ``timestamp``, ``datetime``, ``symbol`` as ``BTC/USDC``),
``watch_trades`` the trades since the previous call, ``watch_ticker`` the top of book and the
last trade — with exact ``Decimal``s where ccxt.pro has floats.
"""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress

import trio

from backpack_actors.config import FeedConfig
from backpack_actors.feed import Feed, open_feed
from backpack_actors.sim import open_simulator


@asynccontextmanager
async def endpoints(rest_url: str | None, ws_url: str | None) -> AsyncIterator[tuple[str, str]]:
    """The given URLs, or those of an embedded simulator started for the block."""
    if rest_url is not None:
        yield rest_url, ws_url or rest_url.replace("http", "ws", 1)
        return
    async with open_simulator(port=0) as sim:
        yield sim.rest_url, sim.ws_url


async def books(feed: Feed, symbol: str) -> None:
    while True:
        book = await feed.watch_order_book(symbol, limit=5)
        (bid, bid_size), (ask, ask_size) = book["bids"][0], book["asks"][0]
        print(
            f"{book['datetime']} {book['symbol']} #{book['nonce']} "
            f"bid {bid_size} @ {bid}  ask {ask_size} @ {ask}",
            flush=True,
        )


async def trades(feed: Feed, symbol: str) -> None:
    while True:
        for trade in await feed.watch_trades(symbol):
            print(
                f"{trade['datetime']} {trade['symbol']} trade {trade['id']} {trade['side']} "
                f"{trade['amount']} @ {trade['price']} (cost {trade['cost']})",
                flush=True,
            )


async def main(args: argparse.Namespace) -> None:
    async with endpoints(args.rest_url, args.ws_url) as (rest_url, ws_url):
        config = FeedConfig.from_kwargs(symbols=[args.symbol], rest_url=rest_url, ws_url=ws_url)
        async with open_feed(config) as feed, trio.open_nursery() as nursery:
            nursery.start_soon(books, feed, args.symbol)
            nursery.start_soon(trades, feed, args.symbol)
            if args.duration:
                await trio.sleep(args.duration)
                ticker = await feed.watch_ticker(args.symbol)
                print(
                    f"ticker {ticker['symbol']} bid {ticker['bid']} ask {ticker['ask']} "
                    f"last {ticker['last']}",
                    flush=True,
                )
                nursery.cancel_scope.cancel()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbol", default="BTC/USDC", help="any form: BTC/USDC, BTC-USDC, ...")
    parser.add_argument("--rest-url", help="REST URL (default: start the embedded simulator)")
    parser.add_argument("--ws-url", help="WebSocket URL (default: derived from --rest-url)")
    parser.add_argument("--duration", type=float, default=0, help="stop after SECONDS (0 = never)")
    with suppress(KeyboardInterrupt):
        trio.run(main, parser.parse_args())
