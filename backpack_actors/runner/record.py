"""``record`` and ``replay``: a feed's reconciler inbox to a file, and that file back to events.

:func:`run_record` runs a feed (against ``--rest-url``/``--ws-url`` or, with ``demo``, the embedded
simulator) with a :class:`~backpack_actors.recording.Recorder`; :func:`run_replay` replays a
recording into the same JSON Lines ``run`` writes, as fast as possible or at the recorded pace.
"""

from __future__ import annotations

import io
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from backpack_actors.config import FeedConfig
from backpack_actors.core.events import Event
from backpack_actors.feed import Feed
from backpack_actors.recording import Pace, Recorder, load_recording, replay_batches
from backpack_actors.runner.app import RunOptions, RunSummary, run_feed
from backpack_actors.runner.demo import DemoOptions, demo_exchange
from backpack_actors.runner.jsonl import EVENT_TYPES, JsonlSink

__all__ = ["ReplaySummary", "run_record", "run_replay"]

_BATCH = 1000


class _Discard(io.BytesIO):
    """Where ``record`` sends events nobody asked for."""

    def write(self, data: object) -> int:
        return len(data) if isinstance(data, bytes | bytearray) else 0


async def run_record(
    config: FeedConfig,
    options: RunOptions,
    recording: str | Path,
    *,
    demo: DemoOptions | None = None,
    stderr: IO[str] | None = None,
    on_started: Callable[[Feed], None] | None = None,
) -> RunSummary:
    """Run ``config`` per ``options`` while recording to ``recording``; events go to
    ``options.output`` (discarded when None)."""
    err = stderr if stderr is not None else sys.stderr
    with _Discard() as devnull:
        if demo is None:
            return await _record(config, options, recording, devnull, err, None, on_started)
        async with demo_exchange(config, demo, err, label="record") as (cfg, clock):
            return await _record(cfg, options, recording, devnull, err, clock, on_started)


async def _record(
    config: FeedConfig,
    options: RunOptions,
    path: str | Path,
    devnull: IO[bytes],
    err: IO[str],
    wall_clock: Callable[[], float] | None,
    on_started: Callable[[Feed], None] | None,
) -> RunSummary:
    recorder = Recorder(path) if wall_clock is None else Recorder(path, wall_clock=wall_clock)
    try:
        summary = await run_feed(
            config,
            options,
            stdout=devnull,
            stderr=err,
            feed_factory=lambda cfg: Feed(
                cfg, wall_clock=recorder.wall_clock, recorder=recorder, consume=False
            ),
            on_started=on_started,
        )
    finally:
        recorder.close()
        print(f"record: {recorder.records} inbox messages to {path}", file=err, flush=True)
    return summary


@dataclass
class ReplaySummary:
    """What a replay emitted."""

    records: int
    events: int
    by_type: dict[str, int]

    def line(self, path: str | Path) -> str:
        kinds = ", ".join(f"{name.replace('_', ' ')} {n}" for name, n in self.by_type.items())
        return f"replay: {self.events} events ({kinds}) from {self.records} records of {path}"


async def run_replay(
    path: str | Path,
    *,
    pace: Pace = "fast",
    output: str | None = None,
    stdout: IO[bytes] | None = None,
) -> ReplaySummary:
    """Replay ``path`` as JSON Lines to ``output`` (appended) or ``stdout``."""
    recording = load_recording(path)
    depth = recording.header.settings.book_depth
    if output is not None:
        sink = JsonlSink.open(output, book_depth=depth)
    else:
        sink = JsonlSink(stdout if stdout is not None else sys.stdout.buffer, book_depth=depth)
    summary = ReplaySummary(len(recording), 0, dict.fromkeys(EVENT_TYPES.values(), 0))
    pending: list[Event] = []
    try:
        async for batch in replay_batches(recording, pace=pace):
            for event in batch:
                summary.by_type[EVENT_TYPES[type(event)]] += 1
            summary.events += len(batch)
            pending.extend(batch)
            if pace == "recorded" or len(pending) >= _BATCH:
                sink.write(pending)
                pending = []
        sink.write(pending)
    finally:
        sink.close()
    return summary
