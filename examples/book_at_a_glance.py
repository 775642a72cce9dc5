"""The book at a glance: ``feed.book(symbol)`` read twice a second, exact ``Decimal``s.

    python examples/book_at_a_glance.py --duration 5      # starts the embedded simulator
    python examples/book_at_a_glance.py --rest-url http://127.0.0.1:8765 --ws-url ws://127.0.0.1:8765

``feed.book(symbol)`` is the feed's own live book (no copy, no events to apply): ``best_bid()``,
``best_ask()``, ``spread()``, ``mid()`` and ``depth(n)`` answer in ``Decimal``; ``.text`` is the
same book as the exchange's decimal text.
"""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress

import trio

from backpack_actors.config import L2_BOOK, FeedConfig
from backpack_actors.core.events import StatusEvent, StatusKind
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
        async with open_feed(config) as feed:
            ready: set[str] = set()
            async for event in feed:  # wait until every book is in sync
                if isinstance(event, StatusEvent) and event.kind is StatusKind.BOOK_READY:
                    ready.add(event.symbol)
                    if len(ready) == len(args.symbols):
                        break
            with trio.move_on_after(args.duration or float("inf")):
                while True:
                    for symbol in args.symbols:
                        book = feed.book(symbol)
                        bid, ask = book.best_bid(), book.best_ask()
                        if bid is None or ask is None:
                            continue
                        bids, asks = book.depth(3)
                        print(
                            f"{symbol}: bid {bid[1]} @ {bid[0]}  ask {ask[1]} @ {ask[0]}  "
                            f"spread {book.spread()}  mid {book.mid()}  "
                            f"bids {' '.join(str(p) for p, _ in bids)} | "
                            f"asks {' '.join(str(p) for p, _ in asks)}",
                            flush=True,
                        )
                    await trio.sleep(0.5)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", nargs="+", default=["BTC-USDC", "ETH-USDC"])
    parser.add_argument("--rest-url", help="REST URL (default: start the embedded simulator)")
    parser.add_argument("--ws-url", help="WebSocket URL (default: derived from --rest-url)")
    parser.add_argument("--duration", type=float, default=0, help="stop after SECONDS (0 = never)")
    with suppress(KeyboardInterrupt):
        trio.run(main, parser.parse_args())
