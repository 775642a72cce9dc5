"""Hypothesis over recordings and over recorded simulator runs (the README's example, runnable)."""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path
from typing import Any

import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backpack_actors.core.book import OrderBook
from backpack_actors.core.events import BookDelta, BookSnapshot, Event, Trade
from backpack_actors.recording import Recording, load_recording, replay_events
from backpack_actors.testing import simulate_feed
from tests.replay.make_golden import SESSIONS, encode_events, recording_path


@functools.cache
def _recording(name: str) -> Recording:
    return load_recording(recording_path(name))


@functools.cache
def _full(name: str) -> list[bytes]:
    return encode_events(trio.run(replay_events, _recording(name)))


def check_invariants(events: list[Event]) -> None:
    """Books never cross; book update ids increase per symbol; a trade id is never delivered
    twice (trades are in arrival order: a gap's trades may come after higher ids)."""
    books: dict[str, OrderBook] = {}
    last_update: dict[str, int] = {}
    seen_trades: set[tuple[str, int]] = set()
    for event in events:
        if isinstance(event, BookSnapshot):
            book = books.setdefault(event.symbol, OrderBook())
            book.load(event.bids, event.asks)
            assert event.update_id >= last_update.get(event.symbol, -1)
            last_update[event.symbol] = event.update_id
        elif isinstance(event, BookDelta):
            previous = last_update[event.symbol]
            assert event.first_update_id <= previous + 1 <= event.last_update_id
            books[event.symbol].apply(event.bids, event.asks)
            last_update[event.symbol] = event.last_update_id
        elif isinstance(event, Trade):
            key = (event.symbol, event.trade_id)
            assert key not in seen_trades, f"trade {key} delivered twice"
            seen_trades.add(key)
        else:
            continue
        if event.symbol in books:
            assert not books[event.symbol].is_crossed()


@settings(max_examples=40, deadline=None)
@given(name=st.sampled_from(sorted(SESSIONS)), data=st.data())
def test_any_prefix_of_a_recording_replays_to_a_prefix_of_its_events(
    name: str, data: st.DataObject
) -> None:
    recording = _recording(name)
    cut = data.draw(st.integers(0, len(recording)), label="records kept")
    events = trio.run(replay_events, Recording(recording.header, recording.lines[:cut]))
    check_invariants(events)
    full = _full(name)
    assert encode_events(events) == full[: len(events)]


def _arm(fault: str, exchange: Any) -> None:
    faults = exchange.faults
    if fault == "drop":
        faults.drop_delta()
    elif fault == "malformed":
        faults.malformed_frame()
    elif fault == "disconnect":
        faults.disconnect_after(frames=10)
    elif fault == "reorder":
        faults.reorder_deltas()


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**16),
    fault=st.sampled_from(["none", "drop", "malformed", "disconnect", "reorder"]),
)
def test_recorded_simulator_runs_replay_exactly(seed: int, fault: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "run.jsonl.gz"

        async def run() -> tuple[list[Event], list[Event]]:
            with trio.fail_after(300):
                live = await simulate_feed(
                    ["BTC-USDC"],
                    seed=seed,
                    levels=20,
                    events=300,
                    on_ready=functools.partial(_arm, fault),
                    record_to=path,
                )
                return live, await replay_events(path)

        live, replayed = trio.run(run, clock=trio.testing.MockClock(autojump_threshold=0))
    check_invariants(live)
    assert encode_events(replayed) == encode_events(live)
