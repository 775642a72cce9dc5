"""The public entry points: :func:`open_feed` (trio-native) and :class:`CcxtBackpackFeed`.

The actor tree (ARCHITECTURE §1)::

    root supervisor (rest_for_one)
     ├─ metadata    ccxt load_markets → MarketTable; resolves the configured symbols; refreshes
     ├─ snapshot    depth snapshots + trade backfills through one rate budget
     ├─ reconciler  one inbox; every symbol's BookSync/TradeSync; events to the consumer queue
     └─ streams     supervisor (one_for_one): one child per symbol (WebSocket, or REST-only)

Channels (sizes from config): streams → reconciler inbox (overflow restarts the stream and forces a
resync), reconciler → snapshot requests (``send_nowait``, one outstanding per symbol and kind),
reconciler → consumer :class:`EventQueue` (trades lossless, books conflated).
"""

from __future__ import annotations

import inspect
import itertools
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import trio

from backpack_actors.actors.emitter import EventQueue
from backpack_actors.actors.messages import InboxMessage, RestRequest
from backpack_actors.actors.reconciler import Reconciler
from backpack_actors.actors.rest_gateway import RestGateway
from backpack_actors.actors.snapshot import run_snapshot_actor
from backpack_actors.actors.stream import (
    StreamContext,
    StreamSettings,
    SymbolHealth,
    run_symbol_stream,
)
from backpack_actors.config import L2_BOOK, TRADES, FeedConfig, load_config
from backpack_actors.core.budget import TokenBucket
from backpack_actors.core.events import (
    BookDelta,
    BookSnapshot,
    Event,
    ProtocolErrorEvent,
    StatusEvent,
    Trade,
)
from backpack_actors.core.symbols import MarketInfo, MarketTable
from backpack_actors.supervisor import ChildSpec, Supervisor, SupervisorEvent, leaf_exceptions
from backpack_actors.transport.rest import CcxtRestClient, RestClient
from backpack_actors.transport.ws import WsConnector, ws_connector

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
    ) -> None:
        self.config = config
        self._recorder = recorder
        self._owns_client = rest_client is None
        self._client: RestClient = rest_client or CcxtRestClient(config.rest_url)
        self._connect: WsConnector = ws_connect or ws_connector(config.ws_url)
        self._wall_clock = wall_clock
        self._rng = rng or random.Random()
        self.markets: dict[str, MarketInfo] = {}
        self.table: MarketTable | None = None
        self._health: dict[str, SymbolHealth] = {}
        self._epochs = itertools.count(1)
        self._reconciler: Reconciler | None = None
        self.queue = EventQueue(
            config.consumer_queue,
            self._conflated_snapshot,
            trade_policy=config.trade_policy,
            book_policy=config.book_policy,
        )
        self._inbox_send, self._inbox_recv = trio.open_memory_channel[InboxMessage](
            config.reconciler_inbox
        )
        self._req_send, self._req_recv = trio.open_memory_channel[RestRequest](
            # One outstanding snapshot and one backfill per symbol, plus slack.
            2 * len(config.symbols) + 4
        )
        per_s = config.rest_rate_per_s
        self.gateway = RestGateway(
            general=TokenBucket(per_s, config.rest_burst),
            history=TokenBucket(config.history_rate_per_min / 60.0, 1),
            rng=self._rng,
        )
        self._root: Supervisor | None = None
        self._streams: Supervisor | None = None
        self.supervisor_events: list[SupervisorEvent] = []

    def __repr__(self) -> str:
        return f"Feed(symbols={list(self.config.symbols)!r})"

    async def aclose(self) -> None:
        """Release what the feed created itself (ccxt's HTTP connection pool)."""
        if self._owns_client:
            with trio.CancelScope(shield=True), trio.move_on_after(5):
                await self._client.aclose()

    # -- consumer side --------------------------------------------------------------------------

    def __aiter__(self) -> Feed:
        return self

    async def __anext__(self) -> Event:
        try:
            return await self.queue.get()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None

    async def batches(self, limit: int = 4096) -> AsyncIterator[list[Event]]:
        """The same events as ``async for event in feed``, a list at a time (every event queued
        when the consumer asks, up to ``limit``): one queue call per list instead of per event,
        for consumers that want the last microsecond."""
        while True:
            try:
                yield await self.queue.get_batch(limit)
            except trio.EndOfChannel:
                return

    def _conflated_snapshot(self, symbol: str) -> BookSnapshot | None:
        reconciler = self._reconciler
        return None if reconciler is None else reconciler.snapshot_event(symbol, "conflated")

    @property
    def reconciler(self) -> Reconciler:
        """The live reconciler (books and sync state per symbol)."""
        if self._reconciler is None:
            raise RuntimeError("the feed is not running")
        return self._reconciler

    def book(self, symbol: str) -> Any:
        """The current :class:`~backpack_actors.core.book.OrderBook` of ``symbol`` (any form)."""
        info = self._resolve(symbol)
        return self.reconciler.book_sync(info.exchange_id).book

    def _resolve(self, symbol: str) -> MarketInfo:
        if self.table is None:
            raise RuntimeError("markets are not loaded yet")
        return self.table.resolve(symbol)

    def statistics(self) -> dict[str, Any]:
        """Counters of every actor: frames, gaps, resyncs, drops and conflations, REST calls."""
        stats: dict[str, Any] = {
            "queue": {
                "depth": len(self.queue),
                "max_depth": self.queue.max_depth,
                "conflated": self.queue.conflated,
                "dropped": self.queue.dropped,
                "producer_waits": self.queue.blocked,
            },
            "rest": {
                "calls": self.gateway.stats.calls,
                "rate_limited": self.gateway.stats.rate_limited,
                "server_errors": self.gateway.stats.server_errors,
                "protocol_errors": self.gateway.stats.protocol_errors,
                "retries": self.gateway.stats.retries,
            },
            "streams": {
                sym: {
                    "mode": "rest" if h.rest_only else "ws",
                    "frames": h.frames,
                    "decode_errors": h.decode_errors,
                    "reconnects": h.reconnects,
                    "degradations": h.degradations,
                    "promotions": h.promotions,
                    "consecutive_failures": h.consecutive_failures,
                }
                for sym, h in self._health.items()
            },
        }
        if self._reconciler is not None:
            stats["reconciler"] = self._reconciler.statistics()
        if self._root is not None:
            stats["supervisors"] = [self._root.statistics()]
            if self._streams is not None:
                stats["supervisors"].append(self._streams.statistics())
        return stats

    # -- the actor tree -------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run every actor until cancelled; ready once markets are loaded and streams run."""
        cfg = self.config
        backoff = cfg.make_backoff()
        root = Supervisor(
            "root",
            [
                ChildSpec("metadata", self._run_metadata),
                ChildSpec("snapshot", self._run_snapshot),
                ChildSpec("reconciler", self._run_reconciler),
                ChildSpec("streams", self._run_streams),
            ],
            strategy="rest_for_one",
            intensity=cfg.restart_intensity,
            period=cfg.restart_period,
            backoff=backoff,
            rng=self._rng,
            on_event=self._on_supervisor_event,
        )
        self._root = root
        try:
            await root.run(task_status=task_status)
        finally:
            self.queue.close()

    def _on_supervisor_event(self, event: SupervisorEvent) -> None:
        self.supervisor_events.append(event)
        if len(self.supervisor_events) > 1000:
            del self.supervisor_events[:500]

    async def _load_markets(self) -> None:
        table = await self.gateway.call("load_markets", self._client.load_markets)
        markets: dict[str, MarketInfo] = {}
        for symbol in self.config.symbols:
            info = table.resolve(symbol)
            markets[info.exchange_id] = info
        self.table = table
        if not self.markets:
            self.markets = markets
        elif set(markets) != set(self.markets):
            log.warning("market listing changed under a running feed: %s", sorted(markets))

    async def _run_metadata(self, *, task_status: trio.TaskStatus[None]) -> None:
        await self._load_markets()
        task_status.started()
        interval = self.config.metadata_refresh_interval
        if interval <= 0:
            await trio.sleep_forever()
        while True:
            await trio.sleep(interval)
            await self._load_markets()

    async def _run_snapshot(self, *, task_status: trio.TaskStatus[None]) -> None:
        await run_snapshot_actor(
            requests=self._req_recv,
            inbox=self._inbox_send,
            gateway=self.gateway,
            client=self._client,
            symbols=[] if self._rest_only() else list(self.markets),
            snapshot_interval=self.config.snapshot_interval,
            wall_clock=self._wall_clock,
            task_status=task_status,
        )

    def _rest_only(self) -> bool:
        return self.config.rest_only or not self.config.websocket

    async def _run_reconciler(self, *, task_status: trio.TaskStatus[None]) -> None:
        wall_clock = self._wall_clock
        record = None
        if self._recorder is not None:
            # Recording latches the reconciler's clock per message, so replay is exact.
            wall_clock, record = self._recorder.attach(self.markets, self.config)
        reconciler = Reconciler(
            markets=self.markets,
            out=self.queue,
            requests=self._req_send,
            wall_clock=wall_clock,
            book_depth=self.config.book_depth,
            trades=TRADES in self.config.channels,
            books=L2_BOOK in self.config.channels,
            recorder=record,
        )
        self._reconciler = reconciler
        await reconciler.run(self._inbox_recv, task_status=task_status)

    async def _run_streams(self, *, task_status: trio.TaskStatus[None]) -> None:
        cfg = self.config
        settings = StreamSettings(
            trades=TRADES in cfg.channels,
            book=L2_BOOK in cfg.channels,
            stale_timeout=cfg.stale_timeout,
            max_ws_failures=cfg.max_ws_failures,
            stable_after=cfg.reconnect_stable_after,
            websocket=not self._rest_only(),
            snapshot_interval=cfg.snapshot_interval,
            promote_probe_interval=cfg.promote_probe_interval,
            promote_healthy_after=cfg.promote_healthy_after,
            record_raw=self._recorder is not None,
        )
        children = []
        for symbol in self.markets:
            health = self._health.setdefault(symbol, SymbolHealth(symbol))
            if not settings.websocket:
                health.rest_only = True
            children.append(ChildSpec(symbol, self._stream_starter(symbol, settings, health)))
        streams = Supervisor(
            "streams",
            children,
            strategy="one_for_one",
            # The window is per supervisor (OTP), but each stream fails independently: the budget
            # is restart_intensity per symbol, so an outage that sends every symbol through its
            # max_ws_failures reconnects (then to REST-only) does not escalate the whole feed.
            intensity=cfg.restart_intensity * max(1, len(children)),
            period=cfg.restart_period,
            backoff=cfg.make_backoff(),
            rng=self._rng,
            on_event=self._on_supervisor_event,
        )
        self._streams = streams
        await streams.run(task_status=task_status)

    def _stream_starter(
        self, symbol: str, settings: StreamSettings, health: SymbolHealth
    ) -> Callable[..., Awaitable[None]]:
        ctx = StreamContext(
            symbol=symbol,
            connector=self._connect,
            inbox=self._inbox_send,
            gateway=self.gateway,
            client=self._client,
            settings=settings,
            health=health,
            epochs=self._epochs,
            wall_clock=self._wall_clock,
        )

        async def start(*, task_status: trio.TaskStatus[None]) -> None:
            await run_symbol_stream(ctx, task_status=task_status)

        return start


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
    protocol-error events. An exception raised by a callback stops the feed and is raised by
    ``run()`` — never swallowed.
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
                        result = callback(event, _receipt_time(event))
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
