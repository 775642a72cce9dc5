"""A cryptofeed-style program: ``CcxtBackpackFeed`` with trade, book and status callbacks.

    python examples/callbacks.py                        # starts the embedded simulator
    python examples/callbacks.py --rest-url http://127.0.0.1:8765 --ws-url ws://127.0.0.1:8765

With URLs the feed runs the blocking way (``feed.run()``, like cryptofeed's ``FeedHandler``);
without, it runs inside a trio program next to the embedded simulator (``feed.run_async()``).
Callbacks may be plain functions or coroutines; they receive ``(event, receipt_timestamp)``.
Trades and books have cryptofeed's field names as well as the feed's own (``trade.id`` and
``trade.trade_id``; ``book.book.bids`` is the maintained book, ``book.delta`` is None after a
snapshot). With cryptofeed installed, examples/cryptofeed_style.py uses its ``FeedHandler``.
"""

from __future__ import annotations

import argparse
from contextlib import suppress

import trio

from backpack_actors.cf_shapes import BookDeltaView, BookSnapshotView, TradeView
from backpack_actors.config import L2_BOOK, TRADES
from backpack_actors.core.events import StatusEvent
from backpack_actors.feed import STATUS, CcxtBackpackFeed
from backpack_actors.sim import open_simulator


class Printer:
    """The callbacks: print trades and status news, count book updates."""

    def __init__(self) -> None:
        self.book_updates = 0
        self.trades = 0

    def on_trade(self, trade: TradeView, receipt: float) -> None:
        self.trades += 1
        print(f"trade {trade.symbol} #{trade.id} {trade.side} {trade.amount} @ {trade.price}")

    async def on_book(self, book: BookSnapshotView | BookDeltaView, receipt: float) -> None:
        self.book_updates += 1
        if book.delta is None:
            best = max(book.book.bids) if book.book.bids else None
            print(
                f"book {book.symbol} snapshot at update {book.sequence_number} "
                f"({book.reason}), best bid {best}",
                flush=True,
            )

    def on_status(self, event: StatusEvent, receipt: float) -> None:
        print(f"status {event.symbol} {event.kind.value}: {event.reason}", flush=True)


def make_feed(symbols: list[str], printer: Printer, rest_url: str, ws_url: str) -> CcxtBackpackFeed:
    return CcxtBackpackFeed(
        symbols=symbols,
        channels=[TRADES, L2_BOOK],
        callbacks={TRADES: printer.on_trade, L2_BOOK: printer.on_book, STATUS: printer.on_status},
        rest_url=rest_url,
        ws_url=ws_url,
    )


async def with_simulator(symbols: list[str], printer: Printer, max_events: int | None) -> None:
    async with open_simulator(port=0, rate=50) as sim:
        await make_feed(symbols, printer, sim.rest_url, sim.ws_url).run_async(max_events=max_events)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", nargs="+", default=["BTC-USDC"])
    parser.add_argument("--rest-url", help="REST URL (default: start the embedded simulator)")
    parser.add_argument("--ws-url", help="WebSocket URL (default: derived from --rest-url)")
    parser.add_argument("--max-events", type=int, default=0, help="stop after N events (0 = never)")
    args = parser.parse_args()
    printer = Printer()
    limit = args.max_events or None
    with suppress(KeyboardInterrupt):
        if args.rest_url:
            ws_url = args.ws_url or args.rest_url.replace("http", "ws", 1)
            make_feed(args.symbols, printer, args.rest_url, ws_url).run(max_events=limit)
        else:
            trio.run(with_simulator, args.symbols, printer, limit)
    print(f"done: {printer.trades} trades, {printer.book_updates} book updates", flush=True)
