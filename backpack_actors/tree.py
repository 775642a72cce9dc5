"""The actor tree, built in one place.

::

    root supervisor (one_for_one; only bugs and HTTP 451 escalate, everything else is handled
     │                 where it happens and reported in-band)
     ├─ metadata      market table; resolves symbols; listings/delistings at each refresh
     ├─ rest          every REST call: per-symbol fair queues, priorities, one budget, deadlines
     └─ connections   one ConnectionActor per group of ``connection_group_size`` symbols, and
                   the feed's one ChannelPoller of the REST-only channels (per route, not group)

    reconciler        every symbol's BookSync/TradeSync, called synchronously by connections
                      and by the REST actor (no task, no inbox)
    emitter           publishes to every subscription; each has its own bounded queue/policy

Data path per socket read: connection actor → ``Reconciler.on_frames`` → ``Emitter.publish`` →
each subscriber's queue — one await (the socket read), no channel hop. REST answers take the same
synchronous path. Nothing upstream ever waits for a subscriber.
"""

from __future__ import annotations

import itertools
import logging
import random
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import trio

from backpack_actors.actors.connection import (
    ChannelPoller,
    ConnectionActor,
    Connections,
    ConnectionSettings,
)
from backpack_actors.actors.emitter import Emitter
from backpack_actors.actors.messages import SymbolAdded, SymbolRemoved
from backpack_actors.actors.metadata import MetadataActor
from backpack_actors.actors.reconciler import Reconciler
from backpack_actors.actors.rest import RestActor, RestSettings
from backpack_actors.channels import private_channels
from backpack_actors.config import L2_BOOK, TRADES, FeedConfig
from backpack_actors.core.budget import TokenBucket
from backpack_actors.core.events import BookSnapshot, StatusKind
from backpack_actors.core.symbols import MarketInfo
from backpack_actors.supervisor import ChildSpec, Supervisor, SupervisorEvent
from backpack_actors.transport.rest import RestClient
from backpack_actors.transport.ws import WsConnector

if TYPE_CHECKING:
    from backpack_actors.recording import Recorder

__all__ = ["ActorTree"]

log = logging.getLogger(__name__)


class ActorTree:
    """Every component of a running feed, wired together; :meth:`run` runs the supervisor."""

    def __init__(
        self,
        config: FeedConfig,
        *,
        client: RestClient,
        connector: WsConnector,
        wall_clock: Callable[[], float],
        rng: random.Random,
        recorder: Recorder | None = None,
        private_rest: object = None,
    ) -> None:
        self.config = config
        self.client = client
        # Signed REST for the account channels (None: HTTP to config.rest_url; the simulator's
        # in-process account in tests). Typed loosely: the private package is an optional extra.
        self._private_rest = private_rest
        self.private: Any = None
        self._connector = connector
        self._wall_clock = wall_clock
        self._rng = rng
        self._recorder = recorder
        self.emitter = Emitter(self._snapshot_of, now=wall_clock)
        self.rest = RestActor(
            client,
            self._deliver,
            settings=RestSettings(
                rate_per_s=config.rest_rate_per_s,
                burst=config.rest_burst,
                history_per_min=config.history_rate_per_min,
                # REST-only candles get two thirds of the historical budget; backfills keep the
                # rest even when candle polls for many markets would take it all.
                klines_per_min=config.history_rate_per_min * 2 / 3,
                concurrency=config.rest_concurrency,
                timeout=config.rest_timeout,
                snapshot_attempts=config.snapshot_attempts,
                snapshot_retry_slow=config.snapshot_retry_slow,
                snapshot_interval=0.0 if self.rest_only else config.snapshot_interval,
            ),
            wall_clock=wall_clock,
            rng=rng,
            symbols=lambda: self.symbols,
            refresh=self._refresh,
        )
        self.metadata = MetadataActor(
            config,
            client,
            self.rest,
            tracked=lambda: self.symbols,
            on_listed=self.add_markets,
            on_delisted=self.remove_symbol,
        )
        self.reconciler: Reconciler | None = None
        self.connections: Connections | None = None
        self.root: Supervisor | None = None
        self.supervisor_events: list[SupervisorEvent] = []
        self.markets: dict[str, MarketInfo] = {}
        self._epochs = itertools.count(1)
        self._subscribe_budget = TokenBucket(
            config.subscribe_rate_per_s, max(1, round(config.subscribe_rate_per_s * 2))
        )

    @property
    def rest_only(self) -> bool:
        return self.config.rest_only or not self.config.websocket

    @property
    def symbols(self) -> list[str]:
        return list(self.markets)

    # -- wiring ----------------------------------------------------------------------------------

    def _snapshot_of(self, symbol: str) -> BookSnapshot | None:
        reconciler = self.reconciler
        return None if reconciler is None else reconciler.snapshot_event(symbol, "conflated")

    def _deliver(self, message: object) -> None:
        if self.reconciler is not None:
            self.reconciler.handle(message)  # type: ignore[arg-type]

    def _refresh(self, symbol: str) -> None:
        if self.reconciler is not None:
            self.reconciler.request_refresh(symbol)

    def _build(self, markets: list[MarketInfo]) -> None:
        cfg = self.config
        self.markets = {m.exchange_id: m for m in markets}
        wall_clock = self._wall_clock
        record = None
        if self._recorder is not None:
            # Recording latches the reconciler's clock per message, so replay is exact.
            wall_clock, record = self._recorder.attach(self.markets, cfg)
        self.reconciler = Reconciler(
            markets=self.markets,
            publish=self.emitter.publish,
            request=self.rest.request,
            wall_clock=wall_clock,
            book_depth=cfg.book_depth,
            trades=TRADES in cfg.channels,
            books=L2_BOOK in cfg.channels,
            channels=cfg.channels,
            book_snapshots=(
                None
                if cfg.book_snapshots is None
                else (cfg.book_snapshots.depth, cfg.book_snapshots.interval_ms)
            ),
            snapshot_side_levels=cfg.snapshot_side_levels,
            depth_stream=cfg.depth_stream,
            on_depth_fallback=self._depth_fallback,
            recorder=record,
        )
        settings = ConnectionSettings(
            channels=cfg.channels,
            depth_stream=cfg.depth_stream,
            group_size=cfg.connection_group_size,
            stale_timeout=cfg.stale_timeout,
            max_ws_failures=cfg.max_ws_failures,
            healthy_after=cfg.ws_healthy_after,
            websocket=not self.rest_only,
            rest_poll_interval=cfg.rest_poll_interval,
            promote_probe_interval=cfg.promote_probe_interval,
            promote_healthy_after=cfg.promote_healthy_after,
            record_raw=self._recorder is not None,
        )
        reconciler = self.reconciler
        # One poller of the REST-only channels for every group (one call per route per round).
        poller = ChannelPoller(
            reconciler=reconciler, rest=self.rest, settings=settings, wall_clock=self._wall_clock
        )

        def make_actor(group_id: str, symbols: list[str]) -> ConnectionActor:
            return ConnectionActor(
                group_id,
                symbols,
                connector=self._connector,
                reconciler=reconciler,
                rest=self.rest,
                settings=settings,
                epochs=self._epochs,
                wall_clock=self._wall_clock,
                backoff=cfg.make_backoff(),
                rng=self._rng,
                subscribe_budget=self._subscribe_budget,
                poller=poller,
            )

        self.connections = Connections(
            self.markets,
            make_actor=make_actor,
            group_size=cfg.connection_group_size,
            poller=poller,
        )

    # -- runtime changes of the symbol set --------------------------------------------------------

    def add_markets(self, markets: list[MarketInfo], reason: str = "newly listed") -> None:
        """Start streaming ``markets`` (not yet in the feed) without disturbing the others."""
        reconciler, connections = self.reconciler, self.connections
        assert reconciler is not None
        assert connections is not None
        for market in markets:
            if market.exchange_id in self.markets:
                continue
            self.markets[market.exchange_id] = market
            reconciler.handle(SymbolAdded(market.exchange_id, market, reason))
            connections.add(market.exchange_id)

    def remove_symbol(self, symbol: str, kind: StatusKind, reason: str) -> None:
        """Stop streaming ``symbol``: unsubscribed on its connection, forgotten everywhere."""
        reconciler, connections = self.reconciler, self.connections
        if symbol not in self.markets or reconciler is None or connections is None:
            return
        del self.markets[symbol]
        connections.remove(symbol)
        self.rest.forget(symbol)
        reconciler.handle(SymbolRemoved(symbol, kind, reason))

    # -- running -------------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Load markets, build, and supervise until cancelled; ready once every group started."""
        cfg = self.config
        markets = await self.metadata.load()
        self._build(markets)

        async def run_rest(*, task_status: trio.TaskStatus[None]) -> None:
            # A restarted REST actor asks again for what the reconciler still waits for.
            assert self.reconciler is not None
            await self.rest.run(
                outstanding=self.reconciler.outstanding_requests(), task_status=task_status
            )

        async def run_connections(*, task_status: trio.TaskStatus[None]) -> None:
            assert self.connections is not None
            await self.connections.run(task_status=task_status)

        children = [
            ChildSpec("metadata", self.metadata.run),
            ChildSpec("rest", run_rest),
            ChildSpec("connections", run_connections),
        ]
        private = private_channels(cfg.channels)
        if private:
            children.append(ChildSpec("private", self._private_child(private), restart="temporary"))
        self.root = Supervisor(
            "root",
            children,
            strategy="one_for_one",
            intensity=cfg.restart_intensity,
            period=cfg.restart_period,
            backoff=cfg.make_backoff(),
            rng=self._rng,
            on_event=self._on_supervisor_event,
        )
        try:
            await self.root.run(task_status=task_status)
        finally:
            self.emitter.close()

    def _depth_fallback(self, symbol: str) -> None:
        if self.connections is not None:
            self.connections.use_realtime_depth(symbol)

    def _private_child(self, channels: tuple[str, ...]) -> Any:
        """The account channels' feed (its own supervisor), publishing through the emitter.

        An authentication failure is reported in-band and ends only this child: the public
        streams go on (``restart="temporary"``).
        """
        from backpack_actors.private.feed import PrivateConfig, PrivateFeed

        cfg = self.config
        symbols = () if cfg.symbols == ("all",) else tuple(self.markets)
        private_config = PrivateConfig.from_feed_config(
            cfg, channels=channels, symbols=symbols, on_auth_error="report"
        )
        emitter = self.emitter
        self.private = PrivateFeed(
            private_config,
            rest=self._private_rest,  # type: ignore[arg-type]
            connect=self._connector,
            clock=self._wall_clock,
            emit=lambda event: emitter.publish([event]),  # type: ignore[list-item]
        )
        return self.private.run

    def _on_supervisor_event(self, event: SupervisorEvent) -> None:
        self.supervisor_events.append(event)
        if len(self.supervisor_events) > 1000:
            del self.supervisor_events[:500]
