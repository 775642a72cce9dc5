"""Print the best bid and ask of each symbol as its book changes: an embedded trio program.

    python examples/top_of_book.py                      # starts the embedded simulator
    python examples/top_of_book.py --rest-url http://127.0.0.1:8765 --ws-url ws://127.0.0.1:8765
    python examples/top_of_book.py --symbols BTC-USDC --rest-url https://api.backpack.exchange \
        --ws-url wss://ws.backpack.exchange

The book is rebuilt from the events themselves (snapshot, then deltas), the way any consumer of
``open_feed`` or of the JSONL output would do it. It is fed the levels' text (``raw_bids`` and
``raw_asks``), the fast path: no ``Decimal`` per level.
"""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from decimal import Decimal

import trio

from backpack_actors.config import L2_BOOK, FeedConfig
from backpack_actors.core.book import OrderBook
from backpack_actors.core.events import BookDelta, BookSnapshot
from backpack_actors.feed import open_feed
from backpack_actors.sim import open_simulator


@asynccontextmanager
async def endpoints(rest_url: str | None, ws_url: str | None) -> AsyncIterator[tuple[str, str]]:
    """The given URLs, or those of an embedded simulator started for the block."""
    if rest_url is not None:
        yield rest_url, ws_url or rest_url.replace("http", "ws", 1)
        return
    async with open_simulator(port=0) as sim:
        yield sim.rest_url, sim.ws_url


async def main(args: argparse.Namespace) -> None:
    async with endpoints(args.rest_url, args.ws_url) as (rest_url, ws_url):
        config = FeedConfig.from_kwargs(
            symbols=args.symbols, channels=[L2_BOOK], rest_url=rest_url, ws_url=ws_url
        )
        books: dict[str, OrderBook] = {}
        printed = 0
        async with open_feed(config) as feed:
            async for event in feed:
                if isinstance(event, BookSnapshot):
                    book = books[event.symbol] = OrderBook()
                    book.load(event.raw_bids, event.raw_asks)
                elif isinstance(event, BookDelta) and event.symbol in books:
                    book = books[event.symbol]
                    book.apply(event.raw_bids, event.raw_asks)
                else:
                    continue
                bid, ask = book.best_bid(), book.best_ask()
                if bid is None or ask is None:
                    continue
                # Levels are the exchange's text; only the spread needs arithmetic.
                spread = Decimal(ask[0]) - Decimal(bid[0])
                print(
                    f"{event.symbol} bid {bid[1]} @ {bid[0]}  ask {ask[1]} @ {ask[0]}  "
                    f"spread {spread}",
                    flush=True,
                )
                printed += 1
                if args.max_events and printed >= args.max_events:
                    return


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", nargs="+", default=["BTC-USDC", "ETH-USDC"])
    parser.add_argument("--rest-url", help="REST URL (default: start the embedded simulator)")
    parser.add_argument("--ws-url", help="WebSocket URL (default: derived from --rest-url)")
    parser.add_argument("--max-events", type=int, default=0, help="stop after N lines (0 = never)")
    arguments = parser.parse_args()
    with suppress(KeyboardInterrupt):
        trio.run(main, arguments)
