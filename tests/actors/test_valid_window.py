"""Issue 13: books that say how far they can be trusted, and interval snapshots.

A REST snapshot holds at most ``snapshot_side_levels`` per side; past its last level the local
book may be missing levels while looking complete. The simulator here truncates snapshots at 20
levels of a 300-level book, and the price walks: every depth-limited snapshot published must
equal the exchange's true top levels (ground truth), which needs refetches once the requested
depth leaves the window; interval snapshots fall on exchange-time boundaries and replay exactly.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import trio

from backpack_actors.core.book import OrderBook
from backpack_actors.core.events import IntervalSnapshot
from backpack_actors.core.sync import BookSync, PublishSnapshot, RequestSnapshot, Status
from backpack_actors.core.wire import DepthEvent, DepthSnapshot
from backpack_actors.recording import Recorder, replay_events
from backpack_actors.sim import SimConfig, SimExchange
from backpack_actors.testing import SimRestClient, sim_memory_connector
from tests.actors.test_multiplexing import _config, _exchange_clock, running, wait_for

DEPTH = 10
CAP = 20


def _levels(raw: tuple[tuple[str, str], ...]) -> list[tuple[Decimal, Decimal]]:
    return [(Decimal(p), Decimal(q)) for p, q in raw]


def _truth_top(exchange: SimExchange, sym: str, update_id: int, n: int) -> tuple[list, list]:
    bids, asks = exchange.book_at(sym, update_id)
    return bids[:n], asks[:n]


async def test_depth_limited_books_never_leave_the_valid_window(
    autojump_clock: trio.testing.MockClock,
) -> None:
    exchange = SimExchange(seed=5, markets=["SOL_USDC"], config=SimConfig(rate=40.0, depth_cap=CAP))
    config = _config(
        ["SOL-USDC"],
        book_snapshots={"depth": DEPTH, "interval_ms": 1000},
        snapshot_side_levels=CAP,
    )
    with trio.fail_after(900):
        async with running(exchange, config) as (feed, _consumer, log):
            sync = feed.reconciler.book_sync("SOL_USDC")
            await wait_for(lambda: sync.counters["window_refetches"] >= 3, within=800)
            await wait_for(
                lambda: sum(1 for _, e in log if _interval(e)) >= 200,
                within=800,
            )
    snapshots = [e for _, e in log if _interval(e)]
    assert snapshots
    full = 0
    for snap in snapshots:
        assert isinstance(snap, IntervalSnapshot)
        truth_bids, truth_asks = _truth_top(exchange, "SOL_USDC", snap.update_id, DEPTH)
        # What was published is the exchange's true best levels, as many as were vouched for.
        assert _levels(snap.raw_bids) == truth_bids[: len(snap.raw_bids)]
        assert _levels(snap.raw_asks) == truth_asks[: len(snap.raw_asks)]
        floor = None if snap.valid_bid_floor is None else Decimal(snap.valid_bid_floor)
        ceiling = None if snap.valid_ask_ceiling is None else Decimal(snap.valid_ask_ceiling)
        assert all(floor is None or Decimal(p) >= floor for p, _ in snap.raw_bids)
        assert all(ceiling is None or Decimal(p) <= ceiling for p, _ in snap.raw_asks)
        full += len(snap.raw_bids) == DEPTH and len(snap.raw_asks) == DEPTH
        assert not snap.force  # a fixed-depth view, not a book replacement
        assert snap.engine_time_us is not None
        assert snap.engine_time_us % 1_000_000 == 0  # on the exchange-time boundary
    # The refetches kept the requested depth available nearly all the time.
    assert full >= len(snapshots) * 0.9
    assert sync.counters["window_refetches"] >= 3
    # Boundaries strictly increase: one snapshot per interval at most.
    times = [s.engine_time_us for s in snapshots]
    assert times == sorted(set(times))


def _interval(event: object) -> bool:
    return isinstance(event, IntervalSnapshot)


async def test_interval_snapshots_are_identical_across_two_replays(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    exchange = SimExchange(seed=9, markets=["BTC_USDC"], config=SimConfig(rate=30.0, depth_cap=CAP))
    config = _config(
        ["BTC-USDC"],
        book_snapshots={"depth": 5, "interval_ms": 500},
        snapshot_side_levels=CAP,
        book_depth=5,
    )
    path = tmp_path / "rec.jsonl"
    from backpack_actors.feed import open_feed

    live: list[object] = []
    with trio.fail_after(300):
        async with trio.open_nursery() as nursery:
            await nursery.start(exchange.run)
            with Recorder(path, wall_clock=_exchange_clock(exchange)) as recorder:
                async with open_feed(
                    config,
                    rest_client=SimRestClient(exchange),
                    ws_connect=sim_memory_connector(exchange),
                    wall_clock=_exchange_clock(exchange),
                    recorder=recorder,
                ) as feed:
                    async for event in feed:
                        live.append(event)
                        if sum(1 for e in live if _interval(e)) >= 40:
                            break
            nursery.cancel_scope.cancel()
    first = [e for e in await replay_events(path) if _interval(e)]
    second = [e for e in await replay_events(path) if _interval(e)]
    assert len(first) >= 40
    assert first == second
    assert first[:40] == [e for e in live if _interval(e)][:40]


# --- the state machine on its own ---------------------------------------------------------------


def _snap(last: int, bids: list[tuple[str, str]], asks: list[tuple[str, str]]) -> DepthSnapshot:
    return DepthSnapshot(
        last_update_id=last,
        timestamp=last,
        bids=[(Decimal(p), Decimal(q)) for p, q in bids],
        asks=[(Decimal(p), Decimal(q)) for p, q in asks],
    )


def _delta(first: int, last: int, bids=(), asks=()) -> DepthEvent:  # type: ignore[no-untyped-def]
    return DepthEvent(
        event_time=last, engine_time=last, symbol="X", first_update_id=first,
        last_update_id=last, asks=tuple(asks), bids=tuple(bids),
    )  # fmt: skip


def _live(cap: int) -> BookSync[DepthEvent]:
    sync: BookSync[DepthEvent] = BookSync("X", side_cap=cap)
    sync.stream_started(1)
    bids = [(str(100 - i), "1") for i in range(1, 4)]  # 99 98 97
    asks = [(str(100 + i), "1") for i in range(1, 4)]  # 101 102 103
    acts = sync.on_snapshot(_snap(10, bids, asks))
    assert any(isinstance(a, PublishSnapshot) for a in acts)
    return sync


def test_a_truncated_side_has_a_window_and_a_short_one_none() -> None:
    truncated = _live(cap=3)
    assert (truncated.bid_floor, truncated.ask_ceiling) == (Decimal(97), Decimal(103))
    complete = _live(cap=4)
    assert (complete.bid_floor, complete.ask_ceiling) == (None, None)
    # Deltas prove levels, not the absence of others: the window does not move.
    assert truncated.on_delta(1, _delta(11, 11, bids=[("96", "5")])) != []
    assert truncated.bid_floor == Decimal(97)
    assert truncated.book.levels_within(truncated.bid_floor, truncated.ask_ceiling) == (3, 3)
    assert not truncated.book.within(4, truncated.bid_floor, truncated.ask_ceiling)


def test_a_window_refetch_older_than_the_book_is_brought_up_and_renews_the_window() -> None:
    sync = _live(cap=3)
    assert sync.request_window() == [RequestSnapshot("X", "window")]
    assert sync.request_window() == []  # one refetch at a time
    # Prices walk down: 99 and 98 go, 96 and 95 arrive (the book's own view).
    sync.on_delta(1, _delta(11, 11, bids=[("99", "0"), ("96", "2")]))
    sync.on_delta(1, _delta(12, 12, bids=[("98", "0"), ("95", "2")]))
    # The answer was taken at update 11 (older than the book, which is at 12), down to 94.
    asks = [("101", "1"), ("102", "1"), ("103", "1")]
    answer = _snap(11, [("98", "1"), ("97", "1"), ("96", "2"), ("94", "7")], asks)
    actions = sync.on_snapshot(answer)
    # Brought up to 12 it holds 97, 96, 95, 94 — the book lacked 94, below its old window (97):
    # it is replaced and republished, but it was never wrong where it claimed to be exact, so no
    # resync is reported.
    assert actions == [PublishSnapshot("X", 12, "window", sync.last_engine_time_us)]
    assert sync.counters["resyncs"] == 0
    assert sync.counters["window_adoptions"] == 1
    assert sync.bid_floor == Decimal(94)
    want = OrderBook()
    want.load([("97", "1"), ("96", "2"), ("95", "2"), ("94", "7")], [("101", "1")])
    assert sync.book.as_dicts()[0] == want.as_dicts()[0]
    assert sync.last_update_id == 12


def test_a_refetch_differing_inside_the_old_window_is_a_resync() -> None:
    sync = _live(cap=3)
    sync.request_window()
    sync.on_delta(1, _delta(11, 11, bids=[("99", "0"), ("96", "2")]))
    # Taken at 10, brought up to 11: 98 has size 5 on the exchange, 1 in the book — inside the
    # window the book vouched for (down to 97), so the book was wrong: a resync.
    answer = _snap(10, [("99", "1"), ("98", "5"), ("97", "1"), ("95", "3")], [("101", "1")])
    actions = sync.on_snapshot(answer)
    assert [a.reason for a in actions if isinstance(a, PublishSnapshot)] == ["resync"]
    assert sync.counters["resyncs"] == 1
    assert sync.counters["window_adoptions"] == 0
    assert sync.book.as_dicts()[0][Decimal(98)] == Decimal(5)


def test_a_periodic_check_differing_only_beyond_the_window_adopts_it_quietly() -> None:
    sync = _live(cap=3)
    # A delta adds 90 below the window (97). A check snapshot at 11 reaching deeper (four bids)
    # shows 93 there and no 90: the book was exact where it said so, and only wrong beyond.
    sync.on_delta(1, _delta(11, 11, bids=[("90", "4")]))
    asks = [("101", "1"), ("102", "1"), ("103", "1")]
    deeper = _snap(11, [("99", "1"), ("98", "1"), ("97", "1"), ("93", "2")], asks)
    actions = sync.on_snapshot(deeper)
    assert [a.reason for a in actions if isinstance(a, PublishSnapshot)] == ["window"]
    assert not any(isinstance(a, Status) for a in actions)
    assert sync.counters["resyncs"] == 0
    assert sync.bid_floor == Decimal(93)
    assert sync.book.as_dicts()[0] == {
        Decimal(99): Decimal(1),
        Decimal(98): Decimal(1),
        Decimal(97): Decimal(1),
        Decimal(93): Decimal(2),
    }


def test_a_matching_refetch_renews_the_window_quietly() -> None:
    sync = _live(cap=3)
    sync.request_window()
    sync.on_delta(1, _delta(11, 11, bids=[("99", "0")], asks=[("104", "1")]))
    # Taken at 10 (before the delta), reaching one level deeper: brought up to 11 it agrees with
    # the book inside its range, so nothing is published and the window is its range.
    answer = _snap(
        10, [("99", "1"), ("98", "1"), ("97", "1")], [("101", "1"), ("102", "1"), ("103", "1")]
    )
    assert sync.on_snapshot(answer) == []
    assert (sync.bid_floor, sync.ask_ceiling) == (Decimal(97), Decimal(103))
    assert sync.counters["resyncs"] == 0


def test_a_mismatching_whole_side_is_a_resync() -> None:
    sync = _live(cap=3)
    sync.request_window()
    sync.on_delta(1, _delta(11, 11, bids=[("99", "0")]))
    # Two asks, fewer than the cap: the whole side — and the book holds a third one.
    answer = _snap(10, [("99", "1"), ("98", "1"), ("97", "1")], [("101", "1"), ("102", "1")])
    actions = sync.on_snapshot(answer)
    assert [a.reason for a in actions if isinstance(a, PublishSnapshot)] == ["resync"]
    assert sync.ask_ceiling is None
    assert sync.book.as_dicts()[1] == {Decimal(101): Decimal(1), Decimal(102): Decimal(1)}
