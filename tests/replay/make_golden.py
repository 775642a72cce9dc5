"""Regenerate the golden record/replay fixtures: ``python -m tests.replay.make_golden``.

Each session runs the in-memory pipeline against a seeded simulator in virtual time, records it to
``tests/data/golden/<name>.jsonl.gz`` and writes the events the feed delivered to
``<name>.events.jsonl.gz`` (the JSONL ``run`` writes). Regenerate only when a change of the events
is intended, and review the diff of the decoded events.

``--events-only`` keeps the committed recordings and rewrites only the events their replay gives:
for a change of the events' encoding, whose diff is then exactly that change (a fresh recording is
a different run: trio shuffles its run queue, so sessions are not reproducible).
"""

from __future__ import annotations

import gzip
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio
import trio.testing

from backpack_actors.core.events import Event
from backpack_actors.recording import replay_events
from backpack_actors.runner.jsonl import encode_event
from backpack_actors.testing import simulate_feed

GOLDEN = Path(__file__).resolve().parent.parent / "data" / "golden"


def _faults(exchange: Any) -> None:
    faults = exchange.faults
    faults.drop_delta("BTC_USDC")
    faults.malformed_frame("ETH_USDC")
    faults.duplicate_delta("ETH_USDC")
    faults.reorder_deltas("BTC_USDC")
    faults.disconnect_after(frames=40, connections=1)


def _ws_outage(exchange: Any) -> None:
    exchange.faults.refuse_handshake(count=4)
    exchange.faults.disconnect_after(frames=5, connections=1)


@dataclass(frozen=True)
class Session:
    """One golden session: simulator seed and model, feed settings, faults armed once ready."""

    symbols: tuple[str, ...]
    seed: int
    events: int
    on_ready: Callable[[Any], None] | None = None
    config: dict[str, Any] = field(default_factory=dict)
    rate: float = 20.0
    levels: int = 20


_BASE = {"snapshot_interval": 5, "book_depth": 10}

SESSIONS: dict[str, Session] = {
    "clean": Session(("BTC-USDC", "ETH-USDC"), seed=11, events=1200, config=_BASE),
    "faults": Session(
        ("BTC-USDC", "ETH-USDC"), seed=12, events=1200, on_ready=_faults, config=_BASE
    ),
    "ws_outage": Session(
        ("SOL-USDC",),
        seed=13,
        events=900,
        on_ready=_ws_outage,
        config={
            **_BASE,
            "max_ws_failures": 2,
            "reconnect_base": 0.1,
            "reconnect_cap": 0.5,
            "promote_probe_interval": 3,
            "promote_healthy_after": 2,
        },
    ),
}


def recording_path(name: str) -> Path:
    return GOLDEN / f"{name}.jsonl.gz"


def events_path(name: str) -> Path:
    return GOLDEN / f"{name}.events.jsonl.gz"


def encode_events(events: list[Event]) -> list[bytes]:
    """The JSONL lines of ``events`` (each with its newline)."""
    return [encode_event(event) for event in events]


def read_events(name: str) -> list[bytes]:
    with gzip.open(events_path(name), "rb") as stream:
        return list(stream)


async def record_session(name: str, session: Session, path: Path) -> list[Event]:
    """Run ``session`` (needs virtual time to be quick), recording to ``path``."""
    return await simulate_feed(
        session.symbols,
        seed=session.seed,
        rate=session.rate,
        levels=session.levels,
        events=session.events,
        on_ready=session.on_ready,
        record_to=path,
        config=session.config,
    )


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args not in ([], ["--events-only"]):
        print("usage: python -m tests.replay.make_golden [--events-only]", file=sys.stderr)
        return 2
    GOLDEN.mkdir(parents=True, exist_ok=True)
    for name, session in SESSIONS.items():
        if args:
            events = trio.run(replay_events, recording_path(name))
        else:
            events = trio.run(
                record_session,
                name,
                session,
                recording_path(name),
                clock=trio.testing.MockClock(autojump_threshold=0),
            )
        # mtime=0: regenerating identical events gives an identical file.
        with gzip.GzipFile(events_path(name), "wb", mtime=0) as stream:
            stream.write(b"".join(encode_events(events)))
        size = recording_path(name).stat().st_size + events_path(name).stat().st_size
        print(f"{name}: {len(events)} events, {size} bytes", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
