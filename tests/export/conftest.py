"""One faulty simulator run, recorded once per session, shared by the export tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from backpack_actors.core.events import Event
from backpack_actors.recording import replay_events
from backpack_actors.testing import simulate_feed


def _faults(exchange: Any) -> None:
    exchange.faults.drop_delta("BTC_USDC")
    exchange.faults.malformed_frame("ETH_USDC")
    exchange.faults.reorder_deltas("ETH_USDC")
    exchange.faults.disconnect_after(frames=40, connections=1)


@pytest.fixture(scope="session")
def faulty_recording(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Event]]:
    """A recording of two markets with a gap, a malformed frame, a reorder and a disconnect,
    and the events the feed emitted while it was recorded (the ground truth)."""
    path = tmp_path_factory.mktemp("recording") / "faulty.jsonl.gz"

    async def record() -> list[Event]:
        with trio.fail_after(120):
            return await simulate_feed(
                ["BTC-USDC", "ETH-USDC"],
                seed=11,
                levels=40,
                events=1500,
                on_ready=_faults,
                record_to=path,
                config={"snapshot_interval": 2},
            )

    live = trio.run(record, clock=trio.testing.MockClock(autojump_threshold=0))
    replayed = trio.run(replay_events, path)
    assert len(replayed) == len(live)
    return path, replayed
