"""``demo``: the embedded simulator and a feed against it, in one process, fully offline.

The feed's clock is the simulator's exchange clock, so ``received_at`` and the lag (receipt − ``T``)
are meaningful in the demo. With ``faults`` a built-in schedule injects one fault every
``fault_interval`` seconds (gaps, reorders, disconnects, malformed frames, stalls, 429s and a
WebSocket outage that forces REST-only fallback and recovery) so resyncs and fallback show live;
``fault_specs`` adds the simulator's own ``KIND[:k=v,...][@SECONDS]`` specs.
"""

from __future__ import annotations

import itertools
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import IO, Any, Protocol

import attrs
import trio
from rich.console import Console

from backpack_actors.config import FeedConfig
from backpack_actors.feed import Feed
from backpack_actors.runner.app import RunOptions, RunSummary, run_feed
from backpack_actors.runner.live import LiveState
from backpack_actors.sim import Faults, open_simulator, parse_fault_spec
from backpack_actors.sim.faults import FaultSpec

__all__ = ["DEMO_SYMBOLS", "FAULT_CYCLE", "DemoOptions", "run_demo", "run_fault_schedule"]

DEMO_SYMBOLS = ("BTC-USDC", "ETH-USDC")


def _gap_then_429(faults: Faults, symbols: int) -> None:
    faults.drop_delta()
    faults.http_429(count=2)


def _ws_outage(faults: Faults, symbols: int) -> None:
    # Per connection (the demo's markets share connections of up to 50): the drop and two
    # refused handshakes are max_ws_failures (3 with --faults) failures in a row; the next probe
    # finds the WebSocket healthy again, during the quiet steps that follow in FAULT_CYCLE.
    connections = -(-symbols // 50)
    faults.refuse_handshake(count=2 * connections)
    faults.disconnect_after(frames=1, connections=connections)


FAULT_CYCLE: tuple[tuple[str, Callable[[Faults, int], None]], ...] = (
    ("drop a depth delta (gap -> resync)", lambda f, n: f.drop_delta()),
    ("reorder two deltas", lambda f, n: f.reorder_deltas()),
    ("malformed frame", lambda f, n: f.malformed_frame()),
    ("drop a delta, then HTTP 429 on the resync", _gap_then_429),
    ("server disconnect", lambda f, n: f.disconnect_after(frames=5, connections=n)),
    ("stall every stream 2 s", lambda f, n: f.stall(seconds=2.0)),
    ("WebSocket outage (REST-only fallback, later recovery)", _ws_outage),
    # Quiet steps: the promotion probe needs a few seconds of clean frames to move back to
    # WebSocket (it refuses gaps and bad frames, which the steps above inject).
    ("", lambda f, n: None),
    ("", lambda f, n: None),
)
"""The ``--faults`` schedule: (description, arm(faults, symbol_count))."""


@dataclass
class DemoOptions:
    """Simulator side of the demo."""

    seed: int = 1
    rate: float = 20.0
    faults: bool = False
    fault_interval: float = 4.0
    fault_specs: Sequence[str] = field(default_factory=tuple)


def demo_config(config: FeedConfig, rest_url: str, ws_url: str, *, faults: bool) -> FeedConfig:
    """Point ``config`` at the simulator; with faults, quicker fallback and recovery to watch."""
    changes: dict[str, Any] = {"rest_url": rest_url, "ws_url": ws_url}
    if faults:
        changes.update(
            max_ws_failures=3,
            reconnect_base=0.1,
            reconnect_cap=1.0,
            promote_probe_interval=5.0,
            promote_healthy_after=2.0,
            stale_timeout=10.0,
        )
    return attrs.evolve(config, **changes)


async def run_fault_schedule(
    faults: Faults,
    symbols: int,
    *,
    interval: float,
    cycle: bool,
    specs: Sequence[FaultSpec],
    report: TextSink | None = None,
) -> None:
    """Arm ``specs`` at their times and, with ``cycle``, one of :data:`FAULT_CYCLE` per interval."""
    async with trio.open_nursery() as nursery:
        for spec in specs:
            nursery.start_soon(_arm_at, faults, spec)
        if cycle:
            for description, arm in itertools.cycle(FAULT_CYCLE):
                await trio.sleep(interval)
                arm(faults, symbols)
                if report is not None and description:
                    print(f"demo: injecting fault: {description}", file=report, flush=True)


async def _arm_at(faults: Faults, spec: FaultSpec) -> None:
    await trio.sleep(spec.at)
    faults.apply(spec)


class TextSink(Protocol):
    """Where announcements are printed: a text file or the live view's announcements."""

    def write(self, text: str, /) -> int: ...

    def flush(self) -> None: ...


class _Announcements:
    """A text stream into the ``--live`` view's announcements: written to stderr while the view
    redraws stdout, a fault announcement would shift the redrawn area (and be overwritten)."""

    def __init__(self, state: LiveState) -> None:
        self._state = state

    def write(self, text: str) -> int:
        for line in text.splitlines():
            if line.strip():
                self._state.announce(line)
        return len(text)

    def flush(self) -> None:
        """Nothing is buffered."""


@asynccontextmanager
async def demo_exchange(
    config: FeedConfig,
    demo: DemoOptions,
    err: IO[str],
    *,
    label: str = "demo",
    report: TextSink | None = None,
) -> AsyncIterator[tuple[FeedConfig, Callable[[], float]]]:
    """The embedded simulator with ``demo``'s fault schedule running.

    Yields the config pointed at it and the simulator's clock in seconds (so lag reads true).
    Fault announcements go to ``report`` (default ``err``).
    """
    specs = [parse_fault_spec(text) for text in demo.fault_specs]
    # Every built-in market is listed, so an unknown symbol gets the feed's own suggestions.
    async with open_simulator(port=0, seed=demo.seed, rate=demo.rate) as sim:
        print(f"{label}: simulator at REST {sim.rest_url}  WS {sim.ws_url}", file=err, flush=True)
        cfg = demo_config(config, sim.rest_url, sim.ws_url, faults=demo.faults)
        exchange = sim.exchange
        async with trio.open_nursery() as nursery:
            if demo.faults or specs:
                nursery.start_soon(
                    lambda: run_fault_schedule(
                        sim.faults,
                        len(cfg.symbols),
                        interval=demo.fault_interval,
                        cycle=demo.faults,
                        specs=specs,
                        report=report if report is not None else err,
                    )
                )
            yield cfg, lambda: exchange.now_us() / 1_000_000
            nursery.cancel_scope.cancel()
        injected = {kind: n for kind, n in sim.faults.injected.items() if n}
        if injected:
            print(f"{label}: faults injected: {injected}", file=err, flush=True)


async def run_demo(
    config: FeedConfig,
    options: RunOptions,
    demo: DemoOptions,
    *,
    stdout: IO[bytes] | None = None,
    stderr: IO[str] | None = None,
    console: Console | None = None,
    on_started: Callable[[Feed], None] | None = None,
) -> RunSummary:
    """Start the simulator on 127.0.0.1 (any free port) and run ``config`` against it."""
    err = stderr if stderr is not None else sys.stderr
    live = LiveState(config.symbols, levels=options.live_levels) if options.live else None
    report = _Announcements(live) if live is not None else None
    async with demo_exchange(config, demo, err, report=report) as (cfg, clock):
        return await run_feed(
            cfg,
            options,
            stdout=stdout,
            stderr=err,
            console=console,
            wall_clock=clock,
            on_started=on_started,
            live_state=live,
        )
