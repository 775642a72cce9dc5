"""Golden regression fixtures: each committed recording replays into its committed events.

Regenerate with ``python -m tests.replay.make_golden`` when a change of the events is intended.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
import trio

from backpack_actors.cli import main
from backpack_actors.core.events import BookSnapshot, StatusEvent, StatusKind
from backpack_actors.recording import RestTradesRecord, load_recording, replay_events
from tests.pipeline_helpers import ConsumerBooks
from tests.replay.make_golden import SESSIONS, encode_events, read_events, recording_path


def _first_difference(got: list[bytes], want: list[bytes]) -> str:
    for index, (a, b) in enumerate(zip(got, want, strict=False)):
        if a != b:
            return f"event {index} differs:\n got  {a[:400]!r}\n want {b[:400]!r}"
    return f"lengths differ: got {len(got)} events, want {len(want)}"


@pytest.mark.parametrize("name", sorted(SESSIONS))
async def test_golden_replay_is_identical(name: str) -> None:
    with trio.fail_after(20):
        got = encode_events(await replay_events(recording_path(name)))
    want = read_events(name)
    assert got == want, _first_difference(got, want)


@pytest.mark.parametrize("name", sorted(SESSIONS))
async def test_golden_events_are_consistent_books_and_trades(name: str) -> None:
    # The expected output itself must be a valid feed: continuous deltas, contiguous trades.
    with trio.fail_after(20):
        events = await replay_events(recording_path(name))
    consumer = ConsumerBooks()
    for event in events:
        consumer.apply(event)
    for symbol in SESSIONS[name].symbols:
        exchange_id = symbol.replace("-", "_")
        assert consumer.deltas[exchange_id] > 100
        assert len(consumer.trades[exchange_id]) > 50


def _kinds(name: str) -> list[StatusKind]:
    lines = [json.loads(line) for line in read_events(name)]
    return [StatusKind(line["kind"]) for line in lines if line["type"] == "status"]


def test_golden_sessions_cover_their_faults() -> None:
    # A fixture that stopped exercising its faults would silently weaken the regression test.
    assert _kinds("clean") == [StatusKind.BOOK_READY, StatusKind.BOOK_READY]
    faults = _kinds("faults")
    for kind in (
        StatusKind.GAP_DETECTED,
        StatusKind.RESYNCED,
        StatusKind.RECONNECTING,
        StatusKind.TRADE_GAP,
        StatusKind.TRADES_BACKFILLED,
    ):
        assert kind in faults
    assert any(line.startswith(b'{"type":"protocol_error"') for line in read_events("faults"))
    outage = _kinds("ws_outage")
    assert outage.index(StatusKind.DEGRADED_REST_ONLY) < outage.index(StatusKind.RECOVERED_WS)
    lines = load_recording(recording_path("ws_outage")).lines
    assert any(isinstance(line, RestTradesRecord) for line in lines)


async def test_golden_snapshots_respect_the_recorded_book_depth() -> None:
    recording = load_recording(recording_path("faults"))
    assert recording.header.settings.book_depth == 10
    with trio.fail_after(20):
        events = await replay_events(recording)
    snapshots = [e for e in events if isinstance(e, BookSnapshot)]
    assert snapshots
    assert all(len(s.bids) == 10 and len(s.asks) == 10 for s in snapshots)
    assert not any(
        isinstance(e, StatusEvent) and e.kind is StatusKind.BOOK_CONFLATED for e in events
    )


def test_cli_replay_writes_the_golden_events(tmp_path: Path) -> None:
    out = tmp_path / "events.jsonl"
    assert main(["replay", str(recording_path("faults")), "--output", str(out)]) == 0
    with gzip.open(recording_path("faults").with_name("faults.events.jsonl.gz"), "rb") as f:
        want = f.read()
    assert out.read_bytes() == want
