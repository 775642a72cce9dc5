"""Run a feed into JSON Lines, the live view and metrics, with a startup deadline and clean exit.

:func:`run_feed` is what ``run`` and ``demo`` share: it starts the actor tree (giving up with
:class:`ExchangeUnreachableError` when it is not up within ``connect_timeout``), drains events in
batches (each batch written and flushed as whole lines), stops on ``duration``, ``max_events``,
SIGINT or SIGTERM, closes every socket, and returns a :class:`RunSummary`.
"""

from __future__ import annotations

import enum
import math
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import IO, TYPE_CHECKING, Any

import trio
from rich.console import Console

from backpack_actors.actors.emitter import Subscription
from backpack_actors.config import FeedConfig
from backpack_actors.core.events import Event
from backpack_actors.errors import BackpackActorsError, redact_urls
from backpack_actors.feed import Feed
from backpack_actors.runner.jsonl import EVENT_TYPES, JsonlSink
from backpack_actors.runner.live import LiveState, LiveView
from backpack_actors.runner.metrics import FeedMetrics
from backpack_actors.sinks import Sink, SinkStats, run_sink
from backpack_actors.testing import unwrap_group

if TYPE_CHECKING:
    from backpack_actors.bus.publisher import BusOptions

__all__ = [
    "ExchangeUnreachableError",
    "ExitCode",
    "RunOptions",
    "RunSummary",
    "run_feed",
]

_BATCH = 1000
_STATS_EVERY = 0.25


class ExitCode(enum.IntEnum):
    """The documented process exit codes."""

    OK = 0
    INTERNAL = 1
    CONFIG = 2
    REGION_RESTRICTED = 3
    UNREACHABLE = 4


class ExchangeUnreachableError(BackpackActorsError):
    """The feed did not start within the startup deadline: the markets never loaded (REST),
    or they did and no WebSocket connection came up (``ws_url`` set)."""

    def __init__(
        self,
        rest_url: str,
        timeout: float,
        failures: int,
        *,
        ws_url: str | None = None,
        last_error: str | None = None,
    ) -> None:
        self.rest_url = rest_url
        self.timeout = timeout
        self.failures = failures
        self.ws_url = ws_url
        last = f"; last error: {last_error}" if last_error else ""
        if ws_url is not None:
            message = (
                f"the markets loaded from {rest_url}, but no WebSocket connection to {ws_url} "
                f"came up within {timeout:g} s{last}"
            )
        else:
            message = (
                f"could not reach the exchange at {rest_url} within {timeout:g} s "
                f"({failures} failed REST attempts{last})"
            )
        super().__init__(redact_urls(message))


@dataclass
class RunOptions:
    """How to run: where events go, when to stop, what else to show."""

    output: str | None = None
    """Append JSONL here; None writes to stdout (unless ``live`` owns stdout)."""
    duration: float | None = None
    max_events: int | None = None
    book_depth: int = 0
    """Levels per side written in book snapshots (0 = all the feed publishes)."""
    live: bool = False
    live_levels: int = 5
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"
    connect_timeout: float = 15.0
    install_signal_handlers: bool = True
    bus: BusOptions | None = None
    """Also publish to the Redis Streams bus (``run --bus``); JSONL then only goes to ``output``."""
    sinks: tuple[str, ...] = ()
    """More sinks as ``KIND:TARGET`` specs (``parquet:DIR``), each its own subscriber."""


_CORE_TYPES = ("trade", "book_snapshot", "book_delta", "status", "protocol_error")


@dataclass
class RunSummary:
    """What a run did; :meth:`line` is the one-line summary printed on exit."""

    events: int = 0
    by_type: dict[str, int] = field(default_factory=lambda: dict.fromkeys(EVENT_TYPES.values(), 0))
    book_gaps: int = 0
    trade_gaps: int = 0
    resyncs: int = 0
    reconnects: int = 0
    rest_only_symbols: int = 0
    dropped: int = 0
    unwritten: int = 0
    elapsed: float = 0.0
    stopped_by: str = "end of feed"

    @property
    def gaps(self) -> int:
        """Book and trade gaps together."""
        return self.book_gaps + self.trade_gaps

    def absorb(self, stats: dict[str, Any]) -> None:
        """Take the gap/resync/reconnect totals from ``feed.statistics()``."""
        book_gaps = trade_gaps = resyncs = 0
        for sync in stats.get("reconciler", {}).get("symbols", {}).values():
            book_gaps += int(sync["book"].get("gaps", 0))
            trade_gaps += int(sync["trades"].get("gaps", 0))
            resyncs += int(sync["book"].get("resyncs", 0))
        self.book_gaps, self.trade_gaps, self.resyncs = book_gaps, trade_gaps, resyncs
        connections = stats.get("connections", [])
        self.reconnects = sum(int(c.get("reconnects", 0)) for c in connections)
        self.rest_only_symbols = sum(
            len(c.get("symbols", ())) for c in connections if c.get("rest_only")
        )
        self.dropped = sum(
            sum(sub.get("dropped_trades", {}).values()) + int(sub.get("dropped_status", 0))
            for sub in stats.get("subscriptions", [])
        )

    def line(self) -> str:
        """``summary: 1234 events (trades 10, ...), gaps 0, resyncs 0, reconnects 0 in 5.0 s``."""
        # The five core types always (a zero says something); the other channels when seen.
        kinds = ", ".join(
            f"{name.replace('_', ' ')} {n}"
            for name, n in self.by_type.items()
            if n or name in _CORE_TYPES
        )
        lost = f", dropped {self.dropped} (reported)" if self.dropped else ""
        unwritten = f", unwritten {self.unwritten}" if self.unwritten else ""
        return (
            f"summary: {self.events} events ({kinds}), book gaps {self.book_gaps}, trade gaps "
            f"{self.trade_gaps}, resyncs {self.resyncs}, reconnects {self.reconnects}{lost}"
            f"{unwritten} in {self.elapsed:.1f} s; stopped by {self.stopped_by}"
        )


async def _watch_signals(
    scope: trio.CancelScope,
    summary: RunSummary,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        task_status.started()
        async for signum in signals:
            summary.stopped_by = signal.Signals(signum).name
            scope.cancel()
            return


async def run_feed(
    config: FeedConfig,
    options: RunOptions,
    *,
    stdout: IO[bytes] | None = None,
    stderr: IO[str] | None = None,
    console: Console | None = None,
    wall_clock: Callable[[], float] = time.time,
    feed_factory: Callable[[FeedConfig], Feed] | None = None,
    on_started: Callable[[Feed], None] | None = None,
    live_state: LiveState | None = None,
) -> RunSummary:
    """Run ``config`` per ``options`` until done; raises the feed's terminal error, unwrapped.

    Every output is its own subscriber of the feed: the JSONL sink (written off the trio thread,
    so a stalled pipe never freezes the feed) and an observer for the summary, the live view and
    the metrics. ``on_started(feed)`` is called once the feed is up. ``live_state`` is the
    ``--live`` view's model when the caller wants to announce things in it (the demo's faults).
    """
    err = stderr if stderr is not None else sys.stderr
    feed = (
        feed_factory(config)
        if feed_factory is not None
        else Feed(config, wall_clock=wall_clock, consume=False)
    )
    summary = RunSummary()
    sink: JsonlSink | None = None
    if options.output is not None:
        sink = JsonlSink.open(options.output, book_depth=options.book_depth)
    elif not options.live and options.bus is None:
        sink = (
            JsonlSink(stdout, book_depth=options.book_depth)
            if stdout is not None
            else JsonlSink.stdout(book_depth=options.book_depth)
        )
    sink_stats = SinkStats()
    sink_sub = feed.subscribe_events("jsonl") if sink is not None else None
    bus_sub = feed.subscribe_events("redis") if options.bus is not None else None
    metrics = FeedMetrics() if options.metrics_port is not None else None
    live = live_state
    if live is None and options.live:
        live = LiveState(config.symbols, levels=options.live_levels)
    observer = feed.subscribe_events("observer") if sink is None or metrics or live else None
    extra_sinks = [(_open_sink(spec), feed.subscribe_events(spec)) for spec in options.sinks]
    observed: dict[str, int] = dict.fromkeys(EVENT_TYPES.values(), 0)
    started = trio.current_time()
    last_stats = -math.inf

    def refresh_stats() -> None:
        nonlocal last_stats
        last_stats = trio.current_time()
        stats = feed.statistics()
        summary.absorb(stats)
        if metrics is not None:
            metrics.update(stats)
        if live is not None:
            live.update_stats(stats, last_stats)

    async def stats_ticker() -> None:
        while True:
            await trio.sleep(1.0)
            refresh_stats()

    def stop(reason: str) -> None:
        summary.stopped_by = reason
        nursery_scope.cancel()

    async def observe(subscription: Subscription) -> None:
        remaining = options.max_events if sink is None else None
        async for batch in _batches(subscription):
            for event in batch:
                observed[EVENT_TYPES[type(event)]] += 1
                if metrics is not None:
                    metrics.observe(event)
                if live is not None:
                    live.observe(event)
            if remaining is not None:
                remaining -= len(batch)
                if remaining <= 0:
                    stop(f"--max-events {options.max_events}")
            if trio.current_time() - last_stats >= _STATS_EVERY:
                refresh_stats()

    nursery_scope = trio.CancelScope()
    try:
        with nursery_scope:
            async with trio.open_nursery() as nursery:
                if options.install_signal_handlers:
                    await nursery.start(_watch_signals, nursery_scope, summary)
                if metrics is not None:
                    host = options.metrics_host
                    port = metrics.serve(options.metrics_port or 0, host)
                    print(f"metrics: http://{host}:{port}/metrics", file=err, flush=True)
                if sink is not None and sink_sub is not None:
                    nursery.start_soon(
                        partial(
                            run_sink,
                            sink,
                            sink_sub,
                            stats=sink_stats,
                            max_events=options.max_events,
                            on_limit=lambda: stop(f"--max-events {options.max_events}"),
                            stderr=err,
                        )
                    )
                if observer is not None:
                    nursery.start_soon(observe, observer)
                for extra, extra_sub in extra_sinks:
                    # A Parquet sink merges its open hours on close: give it time for that.
                    nursery.start_soon(
                        partial(run_sink, extra, extra_sub, flush_timeout=30.0, stderr=err)
                    )
                with trio.move_on_after(options.connect_timeout) as startup:
                    await nursery.start(feed.run)
                if startup.cancelled_caught:
                    raise _unreachable(feed, config, options.connect_timeout)
                if bus_sub is not None and options.bus is not None:
                    await _start_bus(nursery, feed, bus_sub, options.bus)
                if on_started is not None:
                    on_started(feed)
                refresh_stats()
                nursery.start_soon(stats_ticker)
                if live is not None:
                    view = LiveView(live, console or Console())
                    nursery.start_soon(view.run, refresh_stats)
                if options.duration is not None:
                    await trio.sleep(options.duration)
                    summary.stopped_by = f"--duration {options.duration:g}"
                    nursery.cancel_scope.cancel()
                else:
                    await trio.sleep_forever()
    except BaseExceptionGroup as group:
        single = unwrap_group(group)
        if single is group:
            raise
        raise single from None
    finally:
        with trio.CancelScope(shield=True):
            try:
                await feed.aclose()
            finally:
                refresh_stats()
                summary.elapsed = trio.current_time() - started
                if sink is not None:
                    summary.events = sink_stats.events
                    summary.by_type = dict(sink.by_type)
                    summary.unwritten = sink_stats.unwritten
                else:
                    summary.events = sum(observed.values())
                    summary.by_type = dict(observed)
                if sink is not None and not sink_stats.unwritten:
                    sink.close()  # run_sink closed it already unless it never ran
                if metrics is not None:
                    metrics.close()
    return summary


async def _start_bus(
    nursery: trio.Nursery, feed: Feed, subscription: Subscription, bus: BusOptions
) -> None:
    """The bus publisher (imported here: it needs the ``redis`` extra) for the feed's symbols."""
    from backpack_actors.bus.publisher import run_bus_publisher
    from backpack_actors.core.symbols import normalize

    symbols = [normalize(symbol) for symbol in feed.symbols]
    # Given the feed, the publisher shards the exchange connections: it streams only the
    # symbols it leases (docs/bus.md, "Connection sharding").
    await nursery.start(partial(run_bus_publisher, subscription, bus, symbols, feed=feed))


def _unreachable(feed: Feed, config: FeedConfig, timeout: float) -> ExchangeUnreachableError:
    """Why startup did not finish: REST (no markets) or the WebSocket (markets, no stream)."""
    rest = feed.rest
    stats = rest.stats
    failures = (
        stats.server_errors
        + stats.protocol_errors
        + stats.timeouts
        + stats.request_errors
        + stats.rate_limited
    )
    error = ExchangeUnreachableError(
        config.rest_url,
        timeout,
        failures,
        ws_url=config.ws_url if feed.table is not None else None,
        last_error=_last_ws_error(feed) if feed.table is not None else rest.last_error,
    )
    if rest.last_failure is not None and feed.table is None:
        error.__cause__ = rest.last_failure
    return error


def _last_ws_error(feed: Feed) -> str | None:
    connections = feed.tree.connections
    if connections is None:
        return None
    return next((a.health.last_error for a in connections.actors if a.health.last_error), None)


def _open_sink(spec: str) -> Sink:
    """A sink from its ``--sink`` spec; ValueError names the kinds known."""
    kind = spec.partition(":")[0]
    if kind == "parquet":
        from backpack_actors.sinks.parquet import ParquetSink

        return ParquetSink.from_spec(spec)
    raise ValueError(f"--sink {spec!r}: unknown sink kind {kind!r}; known: parquet:DIR")


async def _batches(subscription: Subscription) -> AsyncIterator[list[Event]]:
    while True:
        try:
            yield await subscription.get_batch(_BATCH)
        except trio.EndOfChannel:
            return
