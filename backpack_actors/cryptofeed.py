"""A cryptofeed drop-in: ``FeedHandler().add_feed(CcxtBackpackFeed(...))``, cryptofeed's types.

Needs the ``[cryptofeed]`` extra. The feed looks to cryptofeed like one of its own::

    from cryptofeed import FeedHandler
    from cryptofeed.defines import L2_BOOK, TRADES
    from backpack_actors.cryptofeed import CcxtBackpackFeed

    fh = FeedHandler()
    fh.add_feed(CcxtBackpackFeed(symbols=["BTC-USDC"], channels=[TRADES, L2_BOOK],
                                 callbacks={TRADES: on_trade, L2_BOOK: on_book}))
    fh.run()

Callbacks (and cryptofeed's backends: its Redis, socket, ZMQ, ... callbacks) receive cryptofeed's
own ``Trade``, ``OrderBook``, ``Ticker``, ``Funding``, ``OpenInterest``, ``Liquidation`` and
``Candle`` objects, with ``Decimal`` prices and sizes, ``exchange`` ``"BACKPACK"`` and symbols in
cryptofeed's form (``BTC-USDC``, ``BTC-USDC-PERP``). Channel names map as
:data:`backpack_actors.cf_shapes.CF_CHANNELS` says: ``TICKER`` is the best bid/ask (Backpack's
``bookTicker``), ``FUNDING`` the mark price with its funding rate, ``CANDLES`` the
``candle_interval`` candles. ``L2_BOOK`` callbacks get one maintained ``OrderBook`` per symbol:
after a snapshot ``delta`` is None (a reset; also what follows a gap's resync), after an update
``delta`` holds the changed levels and ``sequence_number`` the last update id.

The bridge: the trio feed runs in a thread of its own (its own ``trio.run``); one asyncio task in
cryptofeed's loop asks it for the next batch of events (a worker thread waits on
``trio.from_thread.run``), converts them and awaits the callbacks in order. The feed's
subscriber queue is bounded as always: if the callbacks are slower than the market, books are
conflated and dropped trades are reported in-band, and nothing upstream waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import msgspec
import trio

try:
    from cryptofeed.defines import BUY, FILLED, SELL
    from cryptofeed.types import Candle as CfCandle
    from cryptofeed.types import Funding as CfFunding
    from cryptofeed.types import Liquidation as CfLiquidation
    from cryptofeed.types import OpenInterest as CfOpenInterest
    from cryptofeed.types import OrderBook as CfOrderBook
    from cryptofeed.types import Ticker as CfTicker
    from cryptofeed.types import Trade as CfTrade
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        "backpack_actors.cryptofeed needs cryptofeed: pip install 'backpack-actors[cryptofeed]'"
    ) from exc

from backpack_actors.actors.emitter import Subscription
from backpack_actors.cf_shapes import CF_CHANNELS, EXCHANGE, BookKeeper, feed_channels
from backpack_actors.config import FeedConfig, load_config
from backpack_actors.core.events import (
    BookDelta,
    BookSnapshot,
    BookTicker,
    Candle,
    Event,
    Liquidation,
    MarkPrice,
    OpenInterest,
    ProtocolErrorEvent,
    Side,
    StatusEvent,
    Trade,
)
from backpack_actors.feed import STATUS, open_feed
from backpack_actors.transport.rest import RestClient
from backpack_actors.transport.ws import WsConnector

__all__ = ["STATUS", "CcxtBackpackFeed"]

log = logging.getLogger(__name__)

_BATCH = 4096
_CHANNEL_OF: dict[type, str] = {
    Trade: "trades",
    BookSnapshot: "l2_book",
    BookDelta: "l2_book",
    BookTicker: "ticker",
    MarkPrice: "funding",
    OpenInterest: "open_interest",
    Liquidation: "liquidations",
    Candle: "candles",
    StatusEvent: STATUS,
    ProtocolErrorEvent: STATUS,
}
# The feed's canonical channel names written by a seed YAML, read with cryptofeed's meaning.
_FROM_FEED = {"ticker": "book_ticker"}


def _seconds(us: int | None) -> float | None:
    return None if us is None else us / 1_000_000


def _side(side: Side) -> str:
    return str(BUY if side is Side.BUY else SELL)


class CcxtBackpackFeed:
    """The Backpack feed as a cryptofeed feed (``FeedHandler.add_feed``), on the trio feed."""

    id = EXCHANGE

    def __init__(
        self,
        symbols: Sequence[str] | None = None,
        channels: Sequence[str] | None = None,
        callbacks: Mapping[str, Any] | None = None,
        *,
        config: FeedConfig | None = None,
        candle_interval: str = "1m",
        max_depth: int = 0,
        rest_client: RestClient | None = None,
        ws_connect: WsConnector | None = None,
        **options: Any,
    ) -> None:
        if config is None:
            kwargs: dict[str, Any] = dict(options)
            if symbols is not None:
                kwargs["symbols"] = list(symbols)
            kwargs["channels"] = feed_channels(channels or ("trades", "l2_book"), candle_interval)
            config = FeedConfig.from_kwargs(**kwargs)
        self.config = config
        self.max_depth = max_depth
        self.callbacks: dict[str, list[Any]] = {}
        for key, value in (callbacks or {}).items():
            name = key.lower()
            if name not in CF_CHANNELS and name != STATUS:
                raise ValueError(f"no such cryptofeed channel for a callback: {key!r}")
            self.callbacks[name] = list(value) if isinstance(value, list | tuple) else [value]
        self._rest_client = rest_client
        self._ws_connect = ws_connect
        self._books: BookKeeper[Any] = BookKeeper(self._new_book)
        self._thread: threading.Thread | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._scope: trio.CancelScope | None = None
        self._queue: Subscription | None = None
        self._ready = threading.Event()
        self._task: asyncio.Task[None] | None = None
        self.error: BaseException | None = None
        """What ended the trio feed, if it failed (also raised by the pump task)."""
        self.events = 0

    def __repr__(self) -> str:
        return f"CcxtBackpackFeed(symbols={list(self.config.symbols)!r})"

    @classmethod
    def from_yaml(
        cls,
        path: str | Path,
        callbacks: Mapping[str, Any] | None = None,
        *,
        env: Mapping[str, str] | None = None,
        **overrides: Any,
    ) -> CcxtBackpackFeed:
        """From the seed's YAML format; ``overrides`` replace config keys (e.g. ``rest_url``).

        Channel names keep cryptofeed's meaning: ``TICKER`` there is the best bid/ask."""
        extra = {k: overrides.pop(k) for k in ("rest_client", "ws_connect") if k in overrides}
        config = load_config(path, env=env)
        channels = tuple(_FROM_FEED.get(c, c) for c in config.channels)
        config = attrs.evolve(config, channels=channels, **overrides)
        return cls(config=config, callbacks=callbacks, **extra)

    def _new_book(self, symbol: str) -> Any:
        return CfOrderBook(self.id, symbol, max_depth=self.max_depth)

    # -- cryptofeed's feed protocol -----------------------------------------------------------

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start the backends, the trio feed's thread and the task that calls the callbacks."""
        for callbacks in self.callbacks.values():
            for callback in callbacks:
                if hasattr(callback, "start"):
                    callback.start(loop, multiprocess=False)
        self._thread = threading.Thread(target=self._run_trio, name="backpack-trio", daemon=True)
        self._thread.start()
        self._task = loop.create_task(self._pump(loop))

    def stop(self) -> None:
        """Ask the trio feed to stop (FeedHandler calls this first, then ``shutdown``)."""
        token, scope = self._token, self._scope
        if token is not None and scope is not None:
            with contextlib.suppress(trio.RunFinishedError):
                trio.from_thread.run_sync(scope.cancel, trio_token=token)

    async def shutdown(self) -> None:
        """Stop the feed, wait for its thread, stop the backends (flushing them)."""
        self.stop()
        loop = asyncio.get_running_loop()
        if self._thread is not None:
            await loop.run_in_executor(None, self._thread.join, 10.0)
        if self._task is not None and not self._task.done():
            self._task.cancel()
        for callbacks in self.callbacks.values():
            for callback in callbacks:
                if hasattr(callback, "stop"):
                    await callback.stop()

    # -- the trio side -------------------------------------------------------------------------

    def _run_trio(self) -> None:
        try:
            trio.run(self._trio_main)
        except BaseException as exc:  # handed to the asyncio side, which raises it there
            self.error = exc
        finally:
            self._ready.set()

    async def _trio_main(self) -> None:
        with trio.CancelScope() as scope:
            self._scope = scope
            async with open_feed(
                self.config, rest_client=self._rest_client, ws_connect=self._ws_connect
            ) as feed:
                self._queue = feed.queue
                self._token = trio.lowlevel.current_trio_token()
                self._ready.set()
                await trio.sleep_forever()

    def _next_batch(self) -> list[Event] | None:
        """In a worker thread: the next events, or None once the feed has ended."""
        self._ready.wait()
        token, queue = self._token, self._queue
        if token is None or queue is None:
            return None
        try:
            return trio.from_thread.run(queue.get_batch, _BATCH, trio_token=token)
        except (trio.EndOfChannel, trio.RunFinishedError, trio.Cancelled):
            return None

    # -- the asyncio side ----------------------------------------------------------------------

    async def _pump(self, loop: asyncio.AbstractEventLoop) -> None:
        while True:
            batch = await loop.run_in_executor(None, self._next_batch)
            if batch is None:
                break
            for event in batch:
                await self._dispatch(event)
        if self.error is not None:
            raise self.error

    async def _dispatch(self, event: Event) -> None:
        channel = _CHANNEL_OF.get(type(event))
        if channel is None:
            return
        callbacks = self.callbacks.get(channel)
        if not callbacks:
            return
        self.events += 1
        obj = self._convert(event)
        if obj is None:
            return
        receipt = getattr(event, "received_at", None) or getattr(event, "at", 0.0)
        for callback in callbacks:
            result = callback(obj, receipt)
            if inspect.isawaitable(result):
                await result

    def _convert(self, event: Event) -> Any:
        if isinstance(event, Trade):
            return CfTrade(
                self.id, event.symbol, _side(event.side), event.amount, event.price,
                event.engine_time_us / 1_000_000, id=str(event.trade_id), type=None, raw=event,
            )  # fmt: skip
        if isinstance(event, BookSnapshot | BookDelta):
            return self._books.apply(event)
        if isinstance(event, BookTicker):
            return CfTicker(
                self.id, event.symbol, event.bid_price, event.ask_price,
                event.engine_time_us / 1_000_000, raw=event,
            )  # fmt: skip
        if isinstance(event, MarkPrice):
            return CfFunding(
                self.id, event.symbol, event.mark_price, event.funding_rate,
                _seconds(event.next_funding_time_us), event.engine_time_us / 1_000_000,
                predicted_rate=None, raw=event,
            )  # fmt: skip
        if isinstance(event, OpenInterest):
            # cryptofeed types this one's ``raw`` as a dict: the event's fields.
            return CfOpenInterest(
                self.id, event.symbol, event.open_interest, event.event_time_us / 1_000_000,
                raw=msgspec.structs.asdict(event),
            )  # fmt: skip
        if isinstance(event, Liquidation):
            return CfLiquidation(
                self.id, event.symbol, _side(event.side), event.amount, event.price, None,
                FILLED, event.engine_time_us / 1_000_000, raw=msgspec.structs.asdict(event),
            )  # fmt: skip
        if isinstance(event, Candle):
            return CfCandle(
                self.id, event.symbol, event.start_us / 1_000_000, event.end_us / 1_000_000,
                event.interval, event.trade_count, event.open, event.close, event.high,
                event.low, event.volume, event.closed, event.event_time_us / 1_000_000,
                raw=event,
            )  # fmt: skip
        return event
