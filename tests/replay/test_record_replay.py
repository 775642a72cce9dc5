"""Recording a live in-memory run and replaying it reproduces the delivered events exactly."""

from __future__ import annotations

import gzip
import itertools
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from backpack_actors.actors.messages import FrameBatch
from backpack_actors.cli import main
from backpack_actors.core.events import ProtocolErrorEvent, StatusEvent, StatusKind
from backpack_actors.core.wire import decode_ws_frame
from backpack_actors.errors import ProtocolError
from backpack_actors.recording import (
    FrameErrorRecord,
    FramesRecord,
    Recording,
    load_recording,
    replay_batches,
    replay_events,
)
from backpack_actors.testing import simulate_feed
from tests.replay.make_golden import encode_events


def _faults(exchange: Any) -> None:
    exchange.faults.drop_delta("BTC_USDC")
    exchange.faults.malformed_frame("BTC_USDC")
    exchange.faults.disconnect_after(frames=25, connections=1)


@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.gz"])
async def test_replay_of_a_live_recording_reproduces_its_events(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, suffix: str
) -> None:
    path = tmp_path / f"session{suffix}"
    with trio.fail_after(300):
        live = await simulate_feed(
            ["BTC-USDC", "ETH-USDC"],
            seed=5,
            levels=30,
            events=800,
            on_ready=_faults,
            record_to=path,
            config={"snapshot_interval": 3},
        )
        replayed = await replay_events(path)
    kinds = [e.kind for e in live if isinstance(e, StatusEvent)]
    assert StatusKind.GAP_DETECTED in kinds
    assert StatusKind.RECONNECTING in kinds
    assert any(isinstance(e, ProtocolErrorEvent) for e in live)
    assert encode_events(replayed) == encode_events(live)
    if suffix == ".jsonl.gz":
        with gzip.open(path, "rb") as stream:
            assert stream.readline().startswith(b'{"kind":"header"')


async def test_every_wall_clock_reading_is_reproduced(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    # A clock that never returns the same value twice (like time.time()): events built while
    # handling one message must still carry that message's recorded time.
    ticks = itertools.count()

    def clock() -> float:
        return 1_700_000_000 + next(ticks) / 1024

    path = tmp_path / "session.jsonl"
    with trio.fail_after(300):
        live = await simulate_feed(
            ["BTC-USDC"],
            seed=9,
            levels=20,
            events=400,
            on_ready=lambda ex: ex.faults.drop_delta(),
            record_to=path,
            wall_clock=clock,
        )
        replayed = await replay_events(path)
    statuses = [e for e in live if isinstance(e, StatusEvent)]
    assert len({s.at for s in statuses}) > 1
    assert encode_events(replayed) == encode_events(live)


async def test_raw_frames_are_recorded_and_redecoded(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    path = tmp_path / "session.jsonl"
    with trio.fail_after(300):
        await simulate_feed(
            ["BTC-USDC"],
            seed=2,
            levels=20,
            events=200,
            on_ready=lambda ex: ex.faults.malformed_frame(),
            record_to=path,
        )
    recording = load_recording(path)
    frames = [line for line in recording.lines if isinstance(line, FramesRecord)]
    errors = [line for line in recording.lines if isinstance(line, FrameErrorRecord)]
    assert len(errors) == 1
    # A read's frames are recorded per market, exactly as received; the undecodable one is its
    # own frame_error line (what the reconciler was told), not part of any market's frames.
    texts = [r for f in frames for r in f.raw]
    assert all(_decodes(r) for r in texts)
    assert errors[0].excerpt
    assert errors[0].reason
    assert len(texts) > 150


def _decodes(raw: str | bytes | Any) -> bool:
    try:
        decode_ws_frame(raw)
    except ProtocolError:
        return False
    return True


async def test_recorded_pace_sleeps_the_recorded_gaps(
    autojump_clock: trio.testing.MockClock,
) -> None:
    recording = load_recording(Path(__file__).parent.parent / "data/golden/clean.jsonl.gz")
    recording = Recording(recording.header, recording.lines[:300])
    start = trio.current_time()
    paced: list[bytes] = []
    with trio.fail_after(600):
        async for batch in replay_batches(recording, pace="recorded"):
            paced.extend(encode_events(batch))
    elapsed = trio.current_time() - start
    span = recording.lines[-1].now - recording.header.now
    assert span > 1.0
    assert elapsed == pytest.approx(span, abs=1e-6)
    assert paced == encode_events(await replay_events(recording))


async def test_a_truncated_recording_replays_its_whole_lines(tmp_path: Path) -> None:
    source = Path(__file__).parent.parent / "data/golden/faults.jsonl.gz"
    with gzip.open(source, "rb") as stream:
        text = stream.read()
    full = await replay_events(source)
    cut = text[: len(text) * 2 // 3]
    assert not cut.endswith(b"\n")
    torn = tmp_path / "torn.jsonl"
    torn.write_bytes(cut)
    partial = await replay_events(torn)
    assert 0 < len(partial) < len(full)
    assert encode_events(partial) == encode_events(full[: len(partial)])
    # A gzip file cut short (a killed recorder) also ends at its last whole line.
    raw_gz = source.read_bytes()
    short_gz = tmp_path / "short.jsonl.gz"
    short_gz.write_bytes(raw_gz[: len(raw_gz) // 2])
    half = await replay_events(short_gz)
    assert 0 < len(half) < len(full)
    assert encode_events(half) == encode_events(full[: len(half)])


def test_frame_batch_carries_no_raw_unless_recording() -> None:
    assert FrameBatch("BTC_USDC", 1, [], 0.0).raw == ()


def test_cli_record_demo_then_replay_is_identical(tmp_path: Path) -> None:
    # Real sockets and real time against the embedded simulator, with faults injected.
    recording = tmp_path / "demo.jsonl.gz"
    live = tmp_path / "live.jsonl"
    replayed = tmp_path / "replayed.jsonl"
    argv = ["record", "--demo", "--seed", "4", "--rate", "50", "--duration", "2.5"]
    argv += ["--fault", "drop@0.8", "--fault", "malformed@1.2"]
    argv += ["--output", str(recording), "--events", str(live)]
    assert main(argv) == 0
    assert main(["replay", str(recording), "--output", str(replayed)]) == 0
    lines = live.read_bytes().splitlines()
    assert len(lines) > 50
    assert any(b'"kind":"gap_detected"' in line for line in lines)
    assert any(line.startswith(b'{"type":"protocol_error"') for line in lines)
    assert replayed.read_bytes() == live.read_bytes()
