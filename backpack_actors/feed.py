"""The public entry points: :func:`open_feed` (trio-native) and :class:`CcxtBackpackFeed`.

:class:`Feed` is the consumer API over the actor tree that :mod:`backpack_actors.tree` builds:
iterate it (``async for event in feed`` or ``feed.batches()``), ask for more subscriptions
(``feed.subscribe_events()``, one bounded queue each, e.g. for a sink), read a live book
(``feed.book(symbol)``, ``Decimal`` answers), watch it the ccxt.pro way
(``await feed.watch_order_book(symbol)``, ``watch_trades``, ``watch_ticker``:
:mod:`backpack_actors.ccxt_api`), add or remove markets at runtime (``await feed.subscribe(...)`` /
``await feed.unsubscribe(...)``), and read counters (``feed.statistics()``).
"""

from __future__ import annotations

import inspect
import logging
import random
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import trio

from backpack_actors.actors.emitter import Subscription
from backpack_actors.ccxt_api import BookView, CcxtWatcher
from backpack_actors.cf_shapes import StandaloneBooks, TradeView
from backpack_actors.config import L2_BOOK, TRADES, FeedConfig, load_config
from backpack_actors.core.conflation import TradePolicy
from backpack_actors.core.events import (
    BookDelta,
    BookSnapshot,
    Event,
    ProtocolErrorEvent,
    StatusEvent,
    StatusKind,
    Trade,
)
from backpack_actors.core.symbols import MarketInfo, MarketTable
from backpack_actors.supervisor import SupervisorEvent, leaf_exceptions
from backpack_actors.transport.rest import CcxtRestClient, RestClient
from backpack_actors.transport.ws import WsConnector, ws_connector
from backpack_actors.tree import ActorTree

if TYPE_CHECKING:
    from backpack_actors.recording import Recorder

__all__ = ["STATUS", "CcxtBackpackFeed", "Feed", "open_feed"]

log = logging.getLogger(__name__)

STATUS = "status"
"""Callback key for status and protocol-error events in :class:`CcxtBackpackFeed`."""


class Feed:
    """A running feed: iterate it for events; ``statistics()`` for counters."""

    def __init__(
        self,
        config: FeedConfig,
        *,
        rest_client: RestClient | None = None,
        ws_connect: WsConnector | None = None,
        wall_clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        recorder: Recorder | None = None,
        consume: bool = True,
        private_rest: object = None,
    ) -> None:
        self.config = config
        self._owns_client = rest_client is None
        self._client: RestClient = rest_client or CcxtRestClient(
            config.rest_url, timeout=config.rest_timeout
        )
        self.tree = ActorTree(
            config,
            client=self._client,
            connector=ws_connect or ws_connector(config.ws_url),
            wall_clock=wall_clock,
            rng=rng or random.Random(),
            recorder=recorder,
            private_rest=private_rest,
        )
        # The consumer's own subscription exists from the start, so nothing published before
        # the first ``async for`` is missed. ``consume=False`` (e.g. a CLI writing only sinks)
        # leaves it out: an unread queue would only fill and report drops.
        self.queue: Subscription | None = (
            self.tree.emitter.subscribe(
                "consumer", config.consumer_queue, trade_policy=config.trade_policy
            )
            if consume
            else None
        )
        self._watcher: CcxtWatcher | None = None

    def __repr__(self) -> str:
        return f"Feed(symbols={self.symbols!r})"

    async def aclose(self) -> None:
        """Release what the feed created itself (ccxt's HTTP connection pool)."""
        if self._owns_client:
            with trio.CancelScope(shield=True), trio.move_on_after(5):
                await self._client.aclose()

    # -- consumer side --------------------------------------------------------------------------

    def _queue(self) -> Subscription:
        if self.queue is None:
            raise RuntimeError("this feed was opened with consume=False: use subscribe_events()")
        return self.queue

    def __aiter__(self) -> Feed:
        return self

    async def __anext__(self) -> Event:
        try:
            return await self._queue().get()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None

    def batches(self, limit: int = 4096) -> AsyncIterator[list[Event]]:
        """The same events as ``async for event in feed``, a list at a time (every event queued
        when the consumer asks, up to ``limit``): one queue call per list instead of per event."""
        return self._queue().batches(limit)

    def subscribe_events(
        self,
        name: str,
        capacity: int | None = None,
        *,
        trade_policy: TradePolicy | None = None,
    ) -> Subscription:
        """Another subscriber with its own bounded queue (a sink, a second consumer): it gets
        every event published from now on, and its slowness costs only itself."""
        return self.tree.emitter.subscribe(
            name,
            capacity or self.config.consumer_queue,
            trade_policy=trade_policy or self.config.trade_policy,
        )

    # -- books and markets -----------------------------------------------------------------------

    @property
    def markets(self) -> dict[str, MarketInfo]:
        """The markets in the feed now, by exchange id."""
        return dict(self.tree.markets)

    @property
    def symbols(self) -> list[str]:
        return self.tree.symbols if self.tree.reconciler is not None else list(self.config.symbols)

    @property
    def table(self) -> MarketTable | None:
        """Every listed market (from the last metadata refresh)."""
        return self.tree.metadata.table

    @property
    def reconciler(self) -> Any:
        """The live reconciler (books and sync state per symbol)."""
        if self.tree.reconciler is None:
            raise RuntimeError("the feed is not running")
        return self.tree.reconciler

    def book(self, symbol: str) -> BookView:
        """The live book of ``symbol`` (any form): ``best_bid()``, ``best_ask()``, ``depth(n)``,
        ``spread()``, ``mid()`` as ``Decimal``s; ``.text`` is the
        :class:`~backpack_actors.core.book.OrderBook` of exchange text."""
        info = self._resolve(symbol)
        return BookView(self.reconciler.book_sync(info.exchange_id).book, info)

    # -- ccxt.pro-shaped (backpack_actors.ccxt_api) --------------------------------------------

    def _watch(self) -> CcxtWatcher:
        if self._watcher is None:
            self._watcher = CcxtWatcher(self)
        return self._watcher

    async def watch_order_book(self, symbol: str, limit: int | None = None) -> dict[str, Any]:
        """ccxt.pro's ``watch_order_book``: the next in-sync book, ``Decimal`` levels."""
        return await self._watch().order_book(symbol, limit)

    async def watch_trades(
        self, symbol: str, since: int | None = None, limit: int | None = None
    ) -> list[dict[str, Any]]:
        """ccxt.pro's ``watch_trades``: the trades since the previous call, ``Decimal``s."""
        return await self._watch().trades(symbol, since, limit)

    async def watch_ticker(self, symbol: str) -> dict[str, Any]:
        """ccxt.pro's ``watch_ticker``, from the book's best levels and the last trade."""
        return await self._watch().ticker(symbol)

    def _resolve(self, symbol: str) -> MarketInfo:
        table = self.table
        if table is None:
            raise RuntimeError("markets are not loaded yet")
        return table.resolve(symbol)

    async def subscribe(self, *symbols: str | Iterable[str]) -> list[str]:
        """Add markets at runtime (any symbol form, or lists of them); the others are not
        disturbed. Returns the exchange ids added; an unknown symbol raises UnknownSymbolError
        with suggestions."""
        infos = [self._resolve(symbol) for symbol in _flat(symbols)]
        new = list(
            {i.exchange_id: i for i in infos if i.exchange_id not in self.tree.markets}.values()
        )
        self.tree.metadata.declined.difference_update(info.exchange_id for info in infos)
        self.tree.add_markets(new, reason="subscribed at runtime")
        await trio.lowlevel.checkpoint()
        return [info.exchange_id for info in new]

    async def unsubscribe(self, *symbols: str | Iterable[str]) -> list[str]:
        """Remove markets at runtime (symbols or lists of them); each gets a final
        ``unsubscribed`` status event."""
        removed = []
        for symbol in _flat(symbols):
            info = self._resolve(symbol)
            if info.exchange_id in self.tree.markets:
                self.tree.remove_symbol(
                    info.exchange_id, StatusKind.UNSUBSCRIBED, "unsubscribed at runtime"
                )
                removed.append(info.exchange_id)
            self.tree.metadata.declined.add(info.exchange_id)
        await trio.lowlevel.checkpoint()
        return removed

    # -- statistics ------------------------------------------------------------------------------

    @property
    def supervisor_events(self) -> list[SupervisorEvent]:
        return self.tree.supervisor_events

    @property
    def rest(self) -> Any:
        return self.tree.rest

    def statistics(self) -> dict[str, Any]:
        """Counters of every actor: frames, gaps, resyncs, drops and conflations, REST calls."""
        tree = self.tree
        rest = tree.rest.stats
        queue = self.queue
        stats: dict[str, Any] = {
            "queue": {
                "depth": len(queue) if queue is not None else 0,
                "max_depth": queue.max_depth if queue is not None else 0,
                "conflated": queue.conflated if queue is not None else {},
                "dropped": queue.dropped if queue is not None else 0,
                "dropped_trades": queue.dropped_trades if queue is not None else {},
            },
            "subscriptions": [sub.statistics() for sub in tree.emitter.subscriptions],
            "rest": {**attrs.asdict(rest), "queued": tree.rest.queued()},
            "metadata": {
                "refreshes": tree.metadata.refreshes,
                "refresh_failures": tree.metadata.refresh_failures,
            },
            "connections": [],
            "streams": {},
        }
        if tree.connections is not None:
            connections = tree.connections.statistics()
            stats["connections"] = connections
            for connection in connections:
                for symbol in connection["symbols"]:  # type: ignore[attr-defined]
                    stats["streams"][symbol] = {
                        "connection": connection["id"],
                        "mode": "rest" if connection["rest_only"] else "ws",
                        "frames": connection["frames"],
                        "decode_errors": connection["decode_errors"],
                        "reconnects": connection["reconnects"],
                        "degradations": connection["degradations"],
                        "promotions": connection["promotions"],
                        "consecutive_failures": connection["consecutive_failures"],
                    }
        if tree.reconciler is not None:
            stats["reconciler"] = tree.reconciler.statistics()
        if tree.root is not None:
            stats["supervisors"] = [tree.root.statistics()]
        return stats

    # -- running --------------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run every actor until cancelled; ready once markets are loaded and streams run."""
        await self.tree.run(task_status=task_status)


def _single_error(group: BaseExceptionGroup[BaseException]) -> BaseException | None:
    leaves = [e for e in leaf_exceptions(group) if not isinstance(e, trio.Cancelled)]
    return leaves[0] if len(leaves) == 1 else None


@asynccontextmanager
async def open_feed(
    config: FeedConfig,
    *,
    rest_client: RestClient | None = None,
    ws_connect: WsConnector | None = None,
    wall_clock: Callable[[], float] = time.time,
    rng: random.Random | None = None,
    recorder: Recorder | None = None,
    consume: bool = True,
    private_rest: object = None,
) -> AsyncIterator[Feed]:
    """Run a feed for the duration of the ``async with`` block::

        async with open_feed(FeedConfig(symbols=["BTC-USDC"])) as feed:
            async for event in feed:
                ...

    Markets are loaded and symbols resolved before the block starts (an unknown symbol raises
    :class:`~backpack_actors.errors.UnknownSymbolError` here). A terminal failure of the feed
    (region restriction, escalation) cancels the block and is raised from ``async with`` unwrapped.
    Leaving the block cancels every actor and closes every socket. With a
    :class:`~backpack_actors.recording.Recorder` every reconciler inbox message is recorded
    (closing the recorder is the caller's job).
    """
    feed = Feed(
        config,
        rest_client=rest_client,
        ws_connect=ws_connect,
        wall_clock=wall_clock,
        rng=rng,
        recorder=recorder,
        consume=consume,
        private_rest=private_rest,
    )
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(feed.run)
            try:
                yield feed
            finally:
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        single = _single_error(group)
        if single is None:
            raise
        raise single from None
    finally:
        await feed.aclose()


Callback = Callable[[Any, float], Any]


def _receipt_time(event: Event) -> float:
    """cryptofeed's ``receipt_timestamp``: local receipt time (status events: when issued)."""
    if isinstance(event, StatusEvent | ProtocolErrorEvent):
        return event.at
    return event.received_at


class CcxtBackpackFeed:
    """A cryptofeed-style feed: symbols, channels and callbacks; ``run()`` blocks.

    Callbacks take ``(event, receipt_timestamp)`` like cryptofeed's and may be sync or async;
    ``callbacks[TRADES]`` gets :class:`Trade`, ``callbacks[L2_BOOK]`` gets :class:`BookSnapshot`
    (``force=True``) and :class:`BookDelta`, ``callbacks[STATUS]`` (optional) gets status and
    protocol-error events. Trades and books also have cryptofeed's field names
    (:mod:`backpack_actors.cf_shapes`: ``trade.id``, ``trade.exchange``, ``book.book.bids`` — the
    maintained book —, ``book.delta``, ``book.sequence_number``). With cryptofeed installed,
    :mod:`backpack_actors.cryptofeed` is the drop-in for its ``FeedHandler``. An exception raised
    by a callback stops the feed and is raised by ``run()`` — never swallowed.
    """

    def __init__(
        self,
        symbols: Sequence[str] | None = None,
        channels: Sequence[str] | None = None,
        callbacks: Mapping[str, Callback] | None = None,
        *,
        config: FeedConfig | None = None,
        rest_client: RestClient | None = None,
        ws_connect: WsConnector | None = None,
        **options: Any,
    ) -> None:
        if config is None:
            kwargs: dict[str, Any] = dict(options)
            if symbols is not None:
                kwargs["symbols"] = list(symbols)
            if channels is not None:
                kwargs["channels"] = list(channels)
            config = FeedConfig.from_kwargs(**kwargs)
        self.config = config
        self.callbacks: dict[str, Callback] = {k.lower(): v for k, v in (callbacks or {}).items()}
        self._rest_client = rest_client
        self._ws_connect = ws_connect
        self._cancel: trio.CancelScope | None = None
        self._books = StandaloneBooks()
        self.feed: Feed | None = None

    def __repr__(self) -> str:
        return f"CcxtBackpackFeed(symbols={list(self.config.symbols)!r})"

    @classmethod
    def from_yaml(
        cls,
        path: str | Path,
        callbacks: Mapping[str, Callback] | None = None,
        *,
        env: Mapping[str, str] | None = None,
        rest_client: RestClient | None = None,
        ws_connect: WsConnector | None = None,
        **overrides: Any,
    ) -> CcxtBackpackFeed:
        """Build from the seed's YAML format (``exchanges: ccxt_backpack: …``).

        ``overrides`` replace config keys after loading (e.g. ``rest_url=`` for a simulator).
        """
        config = load_config(path, env=env)
        if overrides:
            config = attrs.evolve(config, **overrides)
        return cls(
            config=config, callbacks=callbacks, rest_client=rest_client, ws_connect=ws_connect
        )

    def _callback_for(self, event: Event) -> Callback | None:
        if isinstance(event, Trade):
            return self.callbacks.get(TRADES)
        if isinstance(event, BookSnapshot | BookDelta):
            return self.callbacks.get(L2_BOOK)
        if isinstance(event, StatusEvent | ProtocolErrorEvent):
            return self.callbacks.get(STATUS)
        return None

    async def run_async(
        self,
        *,
        max_events: int | None = None,
        task_status: trio.TaskStatus[Feed] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Run inside an existing trio program until ``stop()``, cancellation or ``max_events``."""
        with trio.CancelScope() as scope:
            self._cancel = scope
            async with open_feed(
                self.config, rest_client=self._rest_client, ws_connect=self._ws_connect
            ) as feed:
                self.feed = feed
                task_status.started(feed)
                seen = 0
                async for event in feed:
                    callback = self._callback_for(event)
                    if callback is not None:
                        shaped: Event = event
                        if isinstance(event, Trade):
                            shaped = TradeView.of(event)
                        elif isinstance(event, BookSnapshot | BookDelta):
                            shaped = self._books.view(event)
                        result = callback(shaped, _receipt_time(event))
                        if inspect.isawaitable(result):
                            await result
                    seen += 1
                    if max_events is not None and seen >= max_events:
                        return

    def stop(self) -> None:
        """Stop a running feed (from a callback or another task)."""
        if self._cancel is not None:
            self._cancel.cancel()

    def run(self, *, max_events: int | None = None) -> None:
        """Block running the feed until ``stop()``, Ctrl-C or ``max_events``."""
        trio.run(lambda: self.run_async(max_events=max_events))


def _flat(symbols: tuple[str | Iterable[str], ...]) -> list[str]:
    # ccxt habits pass lists (watch_order_book_for_symbols); anything else is named clearly.
    out: list[str] = []
    for item in symbols:
        group = [item] if isinstance(item, str) else item
        if not isinstance(group, Iterable):
            raise TypeError(f"a symbol is a string such as 'BTC-USDC', not {item!r}")
        for symbol in group:
            if not isinstance(symbol, str):
                raise TypeError(f"a symbol is a string such as 'BTC-USDC', not {symbol!r}")
            out.append(symbol)
    return out
