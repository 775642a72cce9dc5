"""A cryptofeed program, unchanged but for the feed class: ``FeedHandler`` and its callbacks.

    pip install 'backpack-actors[cryptofeed]'
    python examples/cryptofeed_style.py --duration 5      # starts the embedded simulator
    python examples/cryptofeed_style.py --rest-url http://127.0.0.1:8765 --ws-url ws://127.0.0.1:8765

The callbacks get cryptofeed's own ``Trade``, ``OrderBook`` (a maintained book: ``book.book.bids``,
``book.delta`` — None after a snapshot, i.e. a reset —, ``book.sequence_number``) and ``Ticker``
objects with ``Decimal`` prices. Without URLs the embedded simulator runs in a thread of its own.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import threading
from collections.abc import Callable
from typing import Any

import trio
from cryptofeed import FeedHandler
from cryptofeed.defines import L2_BOOK, TICKER, TRADES

from backpack_actors.cryptofeed import CcxtBackpackFeed
from backpack_actors.sim import open_simulator


async def on_trade(trade: Any, receipt: float) -> None:
    print(
        f"trade {trade.symbol} {trade.id} {trade.side} {trade.amount} @ {trade.price}", flush=True
    )


async def on_book(book: Any, receipt: float) -> None:
    if book.delta is None:  # a snapshot: the first book, or a reset after a resync
        print(f"book {book.symbol} reset at {book.sequence_number}")
        return
    bid = book.book.bids.index(0)
    ask = book.book.asks.index(0)
    print(
        f"book {book.symbol} #{book.sequence_number} bid {bid[1]} @ {bid[0]}  "
        f"ask {ask[1]} @ {ask[0]}"
    )


async def on_ticker(ticker: Any, receipt: float) -> None:
    print(f"ticker {ticker.symbol} bid {ticker.bid} ask {ticker.ask}")


def simulator_in_a_thread() -> tuple[str, str, Callable[[], None]]:
    """Start the embedded simulator in a thread; its URLs and how to stop it."""
    found: list[tuple[str, str]] = []
    started = threading.Event()
    tokens: list[trio.lowlevel.TrioToken] = []
    scope = trio.CancelScope()

    async def serve() -> None:
        with scope:
            async with open_simulator(port=0) as sim:
                found.append((sim.rest_url, sim.ws_url))
                tokens.append(trio.lowlevel.current_trio_token())
                started.set()
                await trio.sleep_forever()

    thread = threading.Thread(target=trio.run, args=(serve,), daemon=True)
    thread.start()
    started.wait(30)

    def stop() -> None:
        trio.from_thread.run_sync(scope.cancel, trio_token=tokens[0])
        thread.join(10)

    return found[0][0], found[0][1], stop


def _nothing() -> None:
    """No simulator to stop."""


def main(args: argparse.Namespace) -> None:
    if args.rest_url is None:
        rest_url, ws_url, stop_sim = simulator_in_a_thread()
    else:
        rest_url, ws_url = args.rest_url, args.ws_url or args.rest_url.replace("http", "ws", 1)
        stop_sim = _nothing
    # cryptofeed's defaults would switch the asyncio policy to uvloop and log to feedhandler.log.
    handler = FeedHandler(config={"uvloop": False, "log": {"disabled": True}})
    handler.add_feed(
        CcxtBackpackFeed(
            symbols=args.symbols,
            channels=[TRADES, L2_BOOK, TICKER],
            callbacks={TRADES: on_trade, L2_BOOK: on_book, TICKER: on_ticker},
            rest_url=rest_url,
            ws_url=ws_url,
        )
    )
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    if args.duration:

        def leave() -> None:
            raise SystemExit  # what FeedHandler's own Ctrl-C handler raises

        loop.call_later(args.duration, leave)
    try:
        handler.run()
    finally:
        stop_sim()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", nargs="+", default=["BTC-USDC"])
    parser.add_argument("--rest-url", help="REST URL (default: start the embedded simulator)")
    parser.add_argument("--ws-url", help="WebSocket URL (default: derived from --rest-url)")
    parser.add_argument("--duration", type=float, default=0, help="stop after SECONDS (0 = never)")
    # Output is line-buffered so that each callback's line shows at once in a pipe too.
    sys.stdout.reconfigure(line_buffering=True)
    main(parser.parse_args())
