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
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, Any

import trio
from rich.console import Console

from backpack_actors.actors.emitter import EventQueue
from backpack_actors.config import FeedConfig
from backpack_actors.core.events import Event
from backpack_actors.errors import BackpackActorsError
from backpack_actors.feed import Feed
from backpack_actors.runner.jsonl import EVENT_TYPES, JsonlSink
from backpack_actors.runner.live import LiveState, LiveView
from backpack_actors.runner.metrics import FeedMetrics
from backpack_actors.testing import unwrap_group

__all__ = [
    "ExchangeUnreachableError",
    "ExitCode",
    "RunOptions",
    "RunSummary",
    "drain_queued",
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
    """The feed did not start within the startup deadline (markets never loaded)."""

    def __init__(self, rest_url: str, timeout: float, failures: int) -> None:
        self.rest_url = rest_url
        self.timeout = timeout
        self.failures = failures
        super().__init__(
            f"could not reach the exchange at {rest_url} within {timeout:g} s "
            f"({failures} failed REST attempts)"
        )


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


@dataclass
class RunSummary:
    """What a run did; :meth:`line` is the one-line summary printed on exit."""

    events: int = 0
    by_type: dict[str, int] = field(default_factory=lambda: dict.fromkeys(EVENT_TYPES.values(), 0))
    gaps: int = 0
    resyncs: int = 0
    reconnects: int = 0
    rest_only_symbols: int = 0
    elapsed: float = 0.0
    stopped_by: str = "end of feed"

    def absorb(self, stats: dict[str, Any]) -> None:
        """Take the gap/resync/reconnect totals from ``feed.statistics()``."""
        gaps = resyncs = 0
        for sync in stats.get("reconciler", {}).get("symbols", {}).values():
            gaps += int(sync["book"].get("gaps", 0)) + int(sync["trades"].get("gaps", 0))
            resyncs += int(sync["book"].get("resyncs", 0))
        streams = stats.get("streams", {}).values()
        self.gaps, self.resyncs = gaps, resyncs
        self.reconnects = sum(int(s.get("reconnects", 0)) for s in streams)
        self.rest_only_symbols = sum(1 for s in streams if s.get("mode") == "rest")

    def line(self) -> str:
        """``summary: 1234 events (trades 10, ...), gaps 0, resyncs 0, reconnects 0 in 5.0 s``."""
        kinds = ", ".join(f"{name.replace('_', ' ')} {n}" for name, n in self.by_type.items())
        return (
            f"summary: {self.events} events ({kinds}), gaps {self.gaps}, resyncs {self.resyncs}, "
            f"reconnects {self.reconnects} in {self.elapsed:.1f} s; stopped by {self.stopped_by}"
        )


def _stdout_binary() -> IO[bytes]:
    return sys.stdout.buffer


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


def drain_queued(
    queue: EventQueue, remaining: int | None, take: Callable[[list[Event]], object]
) -> int | None:
    """Hand ``take`` every event still queued, at most ``remaining`` (None: all); returns what
    is left of ``remaining``.

    Used when --duration or a signal stops a run: the events of every message the reconciler
    handled are queued already, and writing them keeps the output equal to a replay of the
    recording, without going past --max-events.
    """
    while remaining is None or remaining > 0:
        batch = queue.get_batch_nowait(_BATCH if remaining is None else min(_BATCH, remaining))
        if not batch:
            break
        if remaining is not None:
            remaining -= len(batch)
        take(batch)
    return remaining


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
) -> RunSummary:
    """Run ``config`` per ``options`` until done; raises the feed's terminal error, unwrapped.

    ``on_started(feed)`` is called once the feed is up (markets loaded, streams running).
    """
    err = stderr if stderr is not None else sys.stderr
    feed = feed_factory(config) if feed_factory is not None else Feed(config, wall_clock=wall_clock)
    summary = RunSummary()
    sink: JsonlSink | None = None
    if options.output is not None:
        sink = JsonlSink.open(options.output, book_depth=options.book_depth)
    elif not options.live:
        sink = JsonlSink(stdout or _stdout_binary(), book_depth=options.book_depth)
    metrics = FeedMetrics() if options.metrics_port is not None else None
    live = LiveState(config.symbols, levels=options.live_levels) if options.live else None
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

    def account(batch: list[Event]) -> None:
        summary.events += len(batch)
        for event in batch:
            summary.by_type[EVENT_TYPES[type(event)]] += 1
            if metrics is not None:
                metrics.observe(event)
            if live is not None:
                live.observe(event)

    # What stops the run without an error; only then are the queued events written out.
    orderly_stops = {signal.Signals.SIGINT.name, signal.Signals.SIGTERM.name}
    # Events still allowed by --max-events (None: no limit); shared by consume and drain.
    remaining = options.max_events

    def take(batch: list[Event]) -> None:
        account(batch)
        if sink is not None:
            sink.write(batch)

    async def consume() -> None:
        nonlocal remaining
        queue = feed.queue
        while remaining is None or remaining > 0:
            try:
                batch = await queue.get_batch(
                    _BATCH if remaining is None else min(_BATCH, remaining)
                )
            except trio.EndOfChannel:
                return
            if remaining is not None:
                remaining -= len(batch)
            take(batch)
            if trio.current_time() - last_stats >= _STATS_EVERY:
                refresh_stats()
            # get_batch() returns without a checkpoint while events are queued: let others run.
            await trio.lowlevel.checkpoint()
        summary.stopped_by = f"--max-events {options.max_events}"

    def drain() -> None:
        nonlocal remaining
        remaining = drain_queued(feed.queue, remaining, take)

    try:
        async with trio.open_nursery() as nursery:
            if options.install_signal_handlers:
                await nursery.start(_watch_signals, nursery.cancel_scope, summary)
            if metrics is not None:
                host = options.metrics_host
                port = metrics.serve(options.metrics_port or 0, host)
                print(f"metrics: http://{host}:{port}/metrics", file=err, flush=True)
            with trio.move_on_after(options.connect_timeout) as startup:
                await nursery.start(feed.run)
            if startup.cancelled_caught:
                raise ExchangeUnreachableError(
                    config.rest_url, options.connect_timeout, feed.gateway.stats.server_errors
                )
            if on_started is not None:
                on_started(feed)
            refresh_stats()
            nursery.start_soon(stats_ticker)
            if live is not None:
                view = LiveView(live, console or Console())
                nursery.start_soon(view.run, refresh_stats)
            duration = math.inf if options.duration is None else options.duration
            with trio.move_on_after(duration) as timer:
                await consume()
            if timer.cancelled_caught:
                summary.stopped_by = f"--duration {options.duration:g}"
                orderly_stops.add(summary.stopped_by)
            nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        single = unwrap_group(group)
        if single is group:
            raise
        raise single from None
    finally:
        with trio.CancelScope(shield=True):
            try:
                if summary.stopped_by in orderly_stops:
                    drain()
            finally:
                # Even when the sink fails while draining: release the feed and the files.
                await feed.aclose()
                refresh_stats()
                summary.elapsed = trio.current_time() - started
                if sink is not None:
                    sink.close()
                if metrics is not None:
                    metrics.close()
    return summary
