"""Issue 12: BookSync against a hostile or broken peer (buffer memory by size, crossed snapshots).

The buffer budget is asserted in levels the test controls, never by measuring memory.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from backpack_actors.core.events import StatusKind
from backpack_actors.core.sync import (
    MAX_BUFFER_LEVELS,
    Action,
    BookSync,
    Malformed,
    PublishSnapshot,
    RequestSnapshot,
    Status,
    SyncState,
)

D = Decimal
SYM = "BTC_USDC"
Lv = tuple[str, str]


@dataclass(frozen=True)
class Delta:
    first_update_id: int
    last_update_id: int
    bids: list[Lv] = field(default_factory=list)
    asks: list[Lv] = field(default_factory=list)
    engine_time: int = 0


@dataclass(frozen=True)
class Snap:
    last_update_id: int
    bids: list[tuple[Decimal, Decimal]] = field(default_factory=list)
    asks: list[tuple[Decimal, Decimal]] = field(default_factory=list)
    timestamp: int | None = 7


def wide(u: int, levels: int) -> Delta:
    """A delta of ``levels`` bid levels (distinct prices, so a snapshot can tell them apart)."""
    return Delta(u, u, bids=[(str(1000 + i), str(u)) for i in range(levels)], engine_time=u)


# -- 2. the pending-delta buffer is bounded by levels, not only by deltas -------------------------


def test_buffer_drops_the_oldest_deltas_beyond_its_level_budget() -> None:
    # Each delta costs its levels + 1: 100 levels -> 101. A budget of 350 holds three of them.
    sync: BookSync[Delta] = BookSync(SYM, max_buffer_levels=350)
    sync.stream_started(1)
    for u in range(11, 16):
        assert sync.on_delta(1, wide(u, 100)) == []
    assert sync.buffered == 3
    assert sync.buffered_levels == 303
    assert sync.counters["buffer_overflows"] == 2
    # The oldest two (11, 12) are gone: a snapshot at 10 no longer bridges and is re-requested,
    assert sync.on_snapshot(Snap(10)) == [
        RequestSnapshot(SYM, "snapshot older than stream", retry=True)
    ]
    # while one at 12 bridges the kept 13..15 exactly, and the book holds what 15 set.
    acts = sync.on_snapshot(Snap(12))
    assert acts[0] == PublishSnapshot(SYM, 15, "initial", 15)
    assert sync.book.depth(1)[0] == (("1099", "15"),)
    assert sync.buffered_levels == 0


def test_default_level_budget_bounds_the_buffer_below_the_count_bound() -> None:
    # 10,000 deltas of 200 levels each would be 2,000,000 levels; the default keeps the newest.
    sync: BookSync[Delta] = BookSync(SYM)
    sync.stream_started(1)
    per = 200
    for u in range(1, 10_001):
        sync.on_delta(1, Delta(u, u, bids=[("1", "1")] * per))
    assert sync.buffered_levels <= MAX_BUFFER_LEVELS
    assert sync.buffered == MAX_BUFFER_LEVELS // (per + 1)
    assert sync.counters["buffer_overflows"] == 10_000 - sync.buffered


def test_one_delta_over_the_whole_budget_is_still_held_alone() -> None:
    sync: BookSync[Delta] = BookSync(SYM, max_buffer_levels=50)
    sync.stream_started(1)
    sync.on_delta(1, wide(11, 10))
    sync.on_delta(1, wide(12, 80))
    assert sync.buffered == 1
    assert sync.buffered_levels == 81
    assert sync.on_snapshot(Snap(11))[0] == PublishSnapshot(SYM, 12, "initial", 12)


@settings(max_examples=200, deadline=None)
@given(
    st.integers(20, 400),
    st.lists(st.tuples(st.integers(0, 60), st.booleans()), min_size=1, max_size=80),
)
def test_buffer_level_accounting_is_exact(budget: int, plan: list[tuple[int, bool]]) -> None:
    # Whatever arrives (gaps restart the buffer), buffered_levels equals the held deltas' cost,
    # stays within the budget unless one delta alone exceeds it, and the held deltas are the
    # newest contiguous run.
    sync: BookSync[Delta] = BookSync(SYM, max_buffer_levels=budget)
    sync.stream_started(1)
    u = 0
    for levels, skip in plan:
        u += 2 if skip else 1
        sync.on_delta(1, wide(u, levels))
        held = list(sync._buffer)
        assert sync.buffered_levels == sum(len(d.bids) + 1 for d in held)
        assert sync.buffered_levels <= budget or len(held) == 1
        assert held[-1].last_update_id == u
        assert [d.last_update_id for d in held] == list(range(u - len(held) + 1, u + 1))


def test_desync_while_live_resets_the_level_count_too() -> None:
    sync: BookSync[Delta] = BookSync(SYM, max_buffer_levels=1000)
    sync.stream_started(1)
    sync.on_snapshot(Snap(10, bids=[(D(1), D(1))], asks=[(D(2), D(1))]))
    assert sync.state is SyncState.LIVE
    sync.on_delta(1, wide(20, 5))  # a gap: resync, the delta is buffered
    assert sync.buffered == 1
    assert sync.buffered_levels == 6
    sync.stream_started(2)
    assert sync.buffered_levels == 0


# -- 3. a crossed REST snapshot is never adopted or published -------------------------------------

GOOD = Snap(10, bids=[(D("99"), D("1")), (D("100"), D("2"))], asks=[(D("101"), D("3"))])
CROSSED_AT_10 = Snap(10, bids=[(D("102"), D("1"))], asks=[(D("101"), D("3"))])


def live_sync() -> BookSync[Delta]:
    sync: BookSync[Delta] = BookSync(SYM)
    sync.stream_started(1)
    acts = sync.on_snapshot(GOOD)
    assert sync.state is SyncState.LIVE, acts
    return sync


def published(actions: list[Action[Delta]]) -> list[PublishSnapshot]:
    return [a for a in actions if isinstance(a, PublishSnapshot)]


def test_periodic_check_refuses_a_crossed_snapshot_at_the_books_id() -> None:
    sync = live_sync()
    before = sync.book.depth()
    acts = sync.on_snapshot(CROSSED_AT_10)
    assert published(acts) == []
    assert [type(a) for a in acts] == [Malformed, RequestSnapshot]
    bad = acts[0]
    assert isinstance(bad, Malformed)
    assert bad.stream == f"/api/v1/depth?symbol={SYM}"
    assert bad.reason == (
        "REST snapshot at update 10 refused: crossed: best bid 102 >= best ask 101"
    )
    assert bad.frame is CROSSED_AT_10
    assert acts[1] == RequestSnapshot(SYM, bad.reason, retry=True)
    assert sync.book.depth() == before
    assert sync.state is SyncState.LIVE
    assert sync.counters["snapshots_rejected"] == 1
    assert sync.counters["resyncs"] == 0
    # The retried snapshot, when sound, is adopted as usual.
    fixed = Snap(10, bids=[(D("100"), D("5"))], asks=[(D("101"), D("3"))])
    acts = sync.on_snapshot(fixed)
    assert [a.kind if isinstance(a, Status) else type(a) for a in acts] == [
        StatusKind.RESYNCING,
        PublishSnapshot,
        StatusKind.RESYNCED,
    ]
    assert sync.book.depth() == ((("100", "5"),), (("101", "3"),))


def test_periodic_check_refuses_a_crossed_newer_snapshot_when_the_book_reaches_it() -> None:
    sync = live_sync()
    newer = Snap(11, bids=[(D("103"), D("1"))], asks=[(D("101"), D("3"))])
    assert sync.on_snapshot(newer) == [PublishSnapshot(SYM, 10, "check", 7)]
    acts = sync.on_delta(1, Delta(11, 11, bids=[("100", "4")], engine_time=11))
    assert [type(a).__name__ for a in acts] == ["PublishDelta", "Malformed", "RequestSnapshot"]
    assert sync.book.depth() == ((("100", "4"), ("99", "1")), (("101", "3"),))


def test_rest_only_mode_never_publishes_a_crossed_snapshot() -> None:
    sync: BookSync[Delta] = BookSync(SYM)
    sync.enter_rest_mode(1)
    # Before any book: refused, and asked for again at once.
    acts = sync.on_rest_snapshot(CROSSED_AT_10)
    assert published(acts) == []
    assert [type(a) for a in acts] == [Malformed, RequestSnapshot]
    assert sync.last_update_id is None
    assert len(sync.book) == 0
    # A good one is published; a later crossed one is refused and the good book stays.
    acts = sync.on_rest_snapshot(GOOD)
    assert published(acts) == [PublishSnapshot(SYM, 10, "rest_only", 7)]
    crossed_later = Snap(12, bids=[(D("102"), D("1"))], asks=[(D("101"), D("3"))])
    acts = sync.on_rest_snapshot(crossed_later)
    assert published(acts) == []
    assert [type(a) for a in acts] == [Malformed]
    assert sync.last_update_id == 10
    assert sync.book.depth() == ((("100", "2"), ("99", "1")), (("101", "3"),))
    assert sync.counters["snapshots_rejected"] == 2
