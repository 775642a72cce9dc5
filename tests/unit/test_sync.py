"""BookSync: every transition of the continuity state machine, then a model-based fuzz."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from decimal import Decimal

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from backpack_actors.core.book import OrderBook
from backpack_actors.core.events import StatusKind
from backpack_actors.core.sync import (
    Action,
    BookSync,
    Malformed,
    PublishDelta,
    PublishSnapshot,
    RequestSnapshot,
    Status,
    SyncState,
)

D = Decimal
SYM = "BTC_USDC"
Lv = tuple[str, str]
SnapLv = tuple[Decimal, Decimal]


@dataclass(frozen=True)
class Delta:
    first_update_id: int
    last_update_id: int
    bids: list[Lv] = field(default_factory=list)
    asks: list[Lv] = field(default_factory=list)
    engine_time: int = 0
    event_time: int = 0
    symbol: str = SYM


@dataclass(frozen=True)
class Snap:
    """A REST snapshot: its levels are ``Decimal``, as ``wire.DepthSnapshot`` holds them."""

    last_update_id: int
    bids: list[SnapLv] = field(default_factory=list)
    asks: list[SnapLv] = field(default_factory=list)
    timestamp: int | None = 1_700_000_000_000_000


def d(
    u0: int, u1: int | None = None, bids: list[Lv] | None = None, asks: list[Lv] | None = None
) -> Delta:
    return Delta(u0, u0 if u1 is None else u1, bids or [], asks or [], engine_time=u0 * 10)


def kinds(actions: list[Action[Delta]]) -> list[object]:
    return [a.kind if isinstance(a, Status) else type(a).__name__ for a in actions]


BASE_SNAP = Snap(10, bids=[(D("99"), D("1")), (D("100"), D("2"))], asks=[(D("101"), D("3"))])


def live_sync(snapshot: Snap = BASE_SNAP) -> BookSync[Delta]:
    sync: BookSync[Delta] = BookSync(SYM)
    sync.stream_started(1)
    sync.on_delta(1, d(snapshot.last_update_id + 1))
    acts = sync.on_snapshot(snapshot, epoch=1)
    assert sync.state is SyncState.LIVE, acts
    return sync


# -- table tests -------------------------------------------------------------------------------


def test_initial_stream_requests_snapshot_immediately() -> None:
    sync: BookSync[Delta] = BookSync(SYM)
    assert sync.state is SyncState.WAITING_FOR_STREAM
    assert sync.stream_started(1) == [RequestSnapshot(SYM, "initial")]
    assert sync.state.value == "buffering"
    assert sync.on_delta(1, d(5)) == []
    assert sync.buffered == 1


def test_frames_before_any_stream_are_stale_and_snapshots_ignored() -> None:
    sync: BookSync[Delta] = BookSync(SYM)
    assert sync.on_delta(0, d(5)) == []
    assert sync.on_snapshot(BASE_SNAP) == []
    assert sync.counters["stale_epoch_frames"] == 1
    assert sync.counters["ignored_snapshots"] == 1
    assert sync.state is SyncState.WAITING_FOR_STREAM


def test_snapshot_older_than_stream_is_retried() -> None:
    sync: BookSync[Delta] = BookSync(SYM)
    sync.stream_started(1)
    sync.on_delta(1, d(20))
    acts = sync.on_snapshot(Snap(18), epoch=1)
    assert acts == [RequestSnapshot(SYM, "snapshot older than stream", retry=True)]
    assert sync.state is SyncState.BUFFERING
    assert sync.buffered == 1
    # S + 1 == U bridges exactly.
    acts = sync.on_snapshot(Snap(19, bids=[(D("1"), D("1"))]), epoch=1)
    assert acts[0] == PublishSnapshot(SYM, 20, "initial", 200)
    assert isinstance(acts[1], Status)
    assert acts[1].kind is StatusKind.BOOK_READY
    assert acts[1].reason == "book ready at update 20"
    assert sync.last_update_id == 20


def test_bridge_drops_old_deltas_and_applies_merged_bridge() -> None:
    sync: BookSync[Delta] = BookSync(SYM)
    sync.stream_started(1)
    sync.on_delta(1, d(8, 9, bids=[("50", "9")]))
    # A merged message 10..12 straddles S = 11: re-applying absolute levels 10..11 is harmless.
    sync.on_delta(1, d(10, 12, bids=[("99", "0")], asks=[("102", "4")]))
    sync.on_delta(1, d(13, 13, asks=[("101", "0")]))
    acts = sync.on_snapshot(Snap(11, bids=BASE_SNAP.bids, asks=BASE_SNAP.asks), epoch=1)
    assert kinds(acts) == ["PublishSnapshot", StatusKind.BOOK_READY]
    assert acts[0] == PublishSnapshot(SYM, 13, "initial", 130)
    assert sync.state is SyncState.LIVE
    assert sync.book.depth() == ((("100", "2"),), (("102", "4"),))


def test_empty_buffer_snapshot_goes_live_and_next_delta_must_bridge() -> None:
    sync: BookSync[Delta] = BookSync(SYM)
    sync.stream_started(1)
    acts = sync.on_snapshot(BASE_SNAP, epoch=1)
    assert acts[0] == PublishSnapshot(SYM, 10, "initial", BASE_SNAP.timestamp)
    assert sync.state is SyncState.LIVE
    # Bridging accepts a merged message containing S + 1.
    acts = sync.on_delta(1, d(9, 12, asks=[("105", "1")]))
    assert kinds(acts) == ["PublishDelta"]
    assert sync.last_update_id == 12
    # After the bridge, continuity is strict again.
    acts = sync.on_delta(1, d(12, 14))
    assert kinds(acts) == [StatusKind.GAP_DETECTED, StatusKind.RESYNCING, "RequestSnapshot"]


def test_empty_buffer_snapshot_then_bridge_failure_is_a_gap() -> None:
    sync: BookSync[Delta] = BookSync(SYM)
    sync.stream_started(1)
    sync.on_snapshot(BASE_SNAP, epoch=1)
    acts = sync.on_delta(1, d(13))
    assert isinstance(acts[0], Status)
    assert acts[0].reason == "gap: expected U <= 11 <= u, got U=13 u=13"


def test_live_continuity_duplicates_and_gap() -> None:
    sync = live_sync()
    assert kinds(sync.on_delta(1, d(12, bids=[("100", "5")]))) == ["PublishDelta"]
    assert sync.on_delta(1, d(12)) == []
    assert sync.on_delta(1, d(11)) == []
    assert sync.counters["duplicates"] == 2
    assert sync.counters["gaps"] == 0
    acts = sync.on_delta(1, d(15, 16))
    assert kinds(acts) == [StatusKind.GAP_DETECTED, StatusKind.RESYNCING, "RequestSnapshot"]
    gap, resyncing, request = acts
    assert isinstance(gap, Status)
    assert gap.reason == "gap: expected U == 13, got U=15 u=16"
    assert gap.counts["gaps"] == 1
    assert isinstance(resyncing, Status)
    assert resyncing.reason == gap.reason
    assert request == RequestSnapshot(SYM, "resync: " + gap.reason)
    assert sync.state is SyncState.BUFFERING
    # Nothing is published until the resync completes.
    assert sync.on_delta(1, d(17, 17, asks=[("101", "7")])) == []
    acts = sync.on_snapshot(Snap(16, bids=[(D("98"), D("1"))], asks=[(D("101"), D("1"))]))
    assert kinds(acts) == ["PublishSnapshot", StatusKind.RESYNCED]
    assert acts[0] == PublishSnapshot(SYM, 17, "resync", 170)
    resynced = acts[1]
    assert isinstance(resynced, Status)
    assert resynced.reason == f"resynced at update 17 after {gap.reason}"
    assert resynced.counts["resyncs"] == 1
    assert resynced.counts["gaps"] == 1
    assert resynced.counts["duplicates"] == 2
    assert sync.book.depth() == ((("98", "1"),), (("101", "7"),))


def test_overlapping_delta_while_live_is_a_gap() -> None:
    sync = live_sync()
    acts = sync.on_delta(1, d(10, 12))
    assert isinstance(acts[0], Status)
    assert acts[0].reason == "gap: expected U == 12, got U=10 u=12"


def test_crossed_book_desyncs() -> None:
    sync = live_sync()
    acts = sync.on_delta(1, d(12, bids=[("101.5", "1")]))
    assert kinds(acts) == [StatusKind.GAP_DETECTED, StatusKind.RESYNCING, "RequestSnapshot"]
    assert isinstance(acts[0], Status)
    assert acts[0].reason == ("book crossed after update 12..12: best bid 101.5 >= best ask 101")
    assert sync.counters["crossed"] == 1
    assert sync.buffered == 1


def test_reconnect_while_live_and_stale_epoch_frames() -> None:
    sync = live_sync()
    acts = sync.stream_started(2)
    assert acts == [
        Status(SYM, StatusKind.RESYNCING, "reconnect", sync.counts()),
        RequestSnapshot(SYM, "resync: reconnect"),
    ]
    assert sync.on_delta(1, d(12)) == []
    assert sync.counters["stale_epoch_frames"] == 1
    assert sync.buffered == 0
    sync.on_delta(2, d(14))
    acts = sync.on_snapshot(Snap(13), epoch=2)
    assert kinds(acts) == ["PublishSnapshot", StatusKind.RESYNCED]
    assert isinstance(acts[1], Status)
    assert acts[1].reason == "resynced at update 14 after reconnect"


def test_reconnect_while_buffering_only_requests_again() -> None:
    sync: BookSync[Delta] = BookSync(SYM)
    sync.stream_started(1)
    sync.on_delta(1, d(3))
    assert sync.stream_started(2) == [RequestSnapshot(SYM, "initial")]
    assert sync.buffered == 0


def test_live_snapshot_older_publishes_current_book_without_rewind() -> None:
    sync = live_sync()
    sync.on_delta(1, d(12, bids=[("100", "9")]))
    before = sync.book.copy()
    acts = sync.on_snapshot(BASE_SNAP)
    assert acts == [PublishSnapshot(SYM, 12, "check", 120)]
    assert sync.book == before


def test_live_snapshot_at_same_id_is_verified() -> None:
    sync = live_sync()
    sync.on_delta(1, d(12, bids=[("100", "9")]))
    good = Snap(12, bids=[(D("99"), D("1")), (D("100"), D("9"))], asks=[(D("101"), D("3"))])
    assert sync.on_snapshot(good) == [PublishSnapshot(SYM, 12, "check", 120)]
    assert sync.counters["snapshot_checks"] == 1
    bad = Snap(12, bids=[(D("100"), D("8"))], asks=[(D("101"), D("3"))])
    acts = sync.on_snapshot(bad)
    assert kinds(acts) == [StatusKind.RESYNCING, "PublishSnapshot", StatusKind.RESYNCED]
    assert acts[1] == PublishSnapshot(SYM, 12, "resync", 120)
    assert isinstance(acts[0], Status)
    assert acts[0].reason == "book differs from REST snapshot at update 12"
    assert sync.book.depth() == ((("100", "8"),), (("101", "3"),))
    assert sync.state is SyncState.LIVE


def test_live_snapshot_newer_is_checked_when_the_book_reaches_it() -> None:
    sync = live_sync()
    newer = Snap(13, bids=[(D("99"), D("1")), (D("100"), D("2"))], asks=[(D("101"), D("4"))])
    assert sync.on_snapshot(newer) == [PublishSnapshot(SYM, 11, "check", 110)]
    assert kinds(sync.on_delta(1, d(12))) == ["PublishDelta"]
    acts = sync.on_delta(1, d(13, asks=[("101", "5")]))
    assert kinds(acts) == [
        "PublishDelta",
        StatusKind.RESYNCING,
        "PublishSnapshot",
        StatusKind.RESYNCED,
    ]
    assert sync.book.best_ask() == ("101", "4")
    assert sync.counters["snapshot_mismatches"] == 1


def test_live_snapshot_newer_and_matching_stays_quiet() -> None:
    sync = live_sync()
    newer = Snap(12, bids=BASE_SNAP.bids, asks=[(D("101"), D("4"))])
    sync.on_snapshot(newer)
    assert kinds(sync.on_delta(1, d(12, asks=[("101", "4")]))) == ["PublishDelta"]
    assert sync.counters["snapshot_checks"] == 1
    assert sync.counters["snapshot_mismatches"] == 0


def test_snapshot_failure_and_refresh() -> None:
    sync: BookSync[Delta] = BookSync(SYM)
    assert sync.request_refresh() == []
    sync.stream_started(1)
    assert sync.on_snapshot_failed("HTTP 503") == [
        RequestSnapshot(SYM, "snapshot failed: HTTP 503", retry=True)
    ]
    sync.on_snapshot(BASE_SNAP)
    assert sync.on_snapshot_failed("timeout") == []
    assert sync.request_refresh() == [RequestSnapshot(SYM, "interval")]
    assert sync.counters["snapshots_failed"] == 2


def test_buffer_overflow_drops_oldest_and_forces_a_newer_snapshot() -> None:
    sync: BookSync[Delta] = BookSync(SYM, max_buffer=3)
    sync.stream_started(1)
    for u in range(11, 16):
        sync.on_delta(1, d(u))
    assert sync.buffered == 3
    assert sync.counters["buffer_overflows"] == 2
    acts = sync.on_snapshot(Snap(10))
    assert acts == [RequestSnapshot(SYM, "snapshot older than stream", retry=True)]
    acts = sync.on_snapshot(Snap(12))
    assert acts[0] == PublishSnapshot(SYM, 15, "initial", 150)


def test_gap_inside_buffer_restarts_the_buffer() -> None:
    sync: BookSync[Delta] = BookSync(SYM)
    sync.stream_started(1)
    for u in (1, 2, 3, 6, 6, 7):
        sync.on_delta(1, d(u))
    assert sync.buffered == 2
    assert sync.counters["buffer_gaps"] == 1
    assert sync.counters["duplicates"] == 1
    assert sync.on_snapshot(Snap(2))[0] == RequestSnapshot(
        SYM, "snapshot older than stream", retry=True
    )
    assert sync.on_snapshot(Snap(5))[0] == PublishSnapshot(SYM, 7, "initial", 70)


def test_crossed_snapshot_is_rejected() -> None:
    sync: BookSync[Delta] = BookSync(SYM)
    sync.stream_started(1)
    acts = sync.on_snapshot(Snap(5, bids=[(D("2"), D("1"))], asks=[(D("1"), D("1"))]))
    assert acts == [RequestSnapshot(SYM, "book crossed after snapshot 5", retry=True)]
    assert sync.state is SyncState.BUFFERING


def test_wire_structs_fit_the_protocols() -> None:
    from backpack_actors.core import wire

    snap_t = getattr(wire, "DepthSnapshot", None)
    event_t = getattr(wire, "DepthEvent", None)
    assert snap_t is not None
    assert event_t is not None
    sync: BookSync[wire.DepthEvent] = BookSync(SYM)
    sync.stream_started(1)
    ev = event_t(
        event_time=1,
        engine_time=2,
        symbol=SYM,
        first_update_id=11,
        last_update_id=11,
        asks=(("101", "1"),),
        bids=(),
    )
    sync.on_delta(1, ev)
    snap = snap_t(
        asks=[(D("101"), D("3"))],
        bids=[(D("99"), D("1")), (D("100"), D("2"))],
        last_update_id=10,
        timestamp=5,
    )
    acts = sync.on_snapshot(snap, epoch=1)
    assert acts[0] == PublishSnapshot(SYM, 11, "initial", 2)
    assert sync.book.depth() == ((("100", "2"), ("99", "1")), (("101", "1"),))


# -- malformed frames (checked here since decode keeps levels as text) ------------------------

NEED = "need price > 0, size >= 0"
BAD_DELTAS = [
    pytest.param([("abc", "1")], [], f"bad bid level ['abc', '1']: {NEED}", id="abc"),
    pytest.param([("1", "NaN")], [], f"bad bid level ['1', 'NaN']: {NEED}", id="nan-size"),
    pytest.param([("1", "-1")], [], f"bad bid level ['1', '-1']: {NEED}", id="negative-size"),
    pytest.param([("0", "1")], [], f"bad bid level ['0', '1']: {NEED}", id="zero-price"),
    pytest.param([("-1", "1")], [], f"bad bid level ['-1', '1']: {NEED}", id="negative-price"),
    pytest.param([], [("NaN", "1")], f"bad ask level ['NaN', '1']: {NEED}", id="nan-price"),
    pytest.param([], [("sNaN", "1")], f"bad ask level ['sNaN', '1']: {NEED}", id="snan-price"),
    pytest.param([], [("1", "Infinity")], f"bad ask level ['1', 'Infinity']: {NEED}", id="inf"),
    pytest.param([], [("102", "²")], f"bad ask level ['102', '²']: {NEED}", id="superscript"),
    pytest.param([], [(".", "1")], f"bad ask level ['.', '1']: {NEED}", id="dot"),
    # The bad level follows good ones: nothing of the frame may be applied.
    pytest.param(
        [("100", "5"), ("99.5", "1")],
        [("101", "6"), ("102", "-0.1")],
        f"bad ask level ['102', '-0.1']: {NEED}",
        id="after-good-levels",
    ),
]


@pytest.mark.parametrize(("bids", "asks", "reason"), BAD_DELTAS)
def test_malformed_delta_while_live_is_reported_and_dropped(
    bids: list[Lv], asks: list[Lv], reason: str
) -> None:
    sync = live_sync()
    before = sync.book.depth()
    bad = d(12, bids=bids, asks=asks)
    assert sync.on_delta(1, bad) == [Malformed(SYM, "depth.BTC_USDC", reason, bad)]
    assert sync.book.depth() == before
    assert sync.state is SyncState.LIVE
    assert sync.last_update_id == 11
    assert sync.buffered == 0
    assert sync.counters["malformed"] == 1
    assert sync.counters["gaps"] == 0
    # Treated as never received: the next frame finds update 12 missing.
    acts = sync.on_delta(1, d(13))
    assert kinds(acts) == [StatusKind.GAP_DETECTED, StatusKind.RESYNCING, "RequestSnapshot"]
    assert isinstance(acts[0], Status)
    assert acts[0].reason == "gap: expected U == 12, got U=13 u=13"
    assert acts[0].counts["malformed"] == 1


@pytest.mark.parametrize(("bids", "asks", "reason"), BAD_DELTAS)
def test_malformed_delta_while_buffering_is_not_buffered(
    bids: list[Lv], asks: list[Lv], reason: str
) -> None:
    sync: BookSync[Delta] = BookSync(SYM)
    sync.stream_started(1)
    sync.on_delta(1, d(11, asks=[("101", "2")]))
    bad = d(12, bids=bids, asks=asks)
    # Through the fast entry too: off the steady path it must answer exactly as on_delta.
    assert sync.on_delta_fast(1, bad) == [Malformed(SYM, "depth.BTC_USDC", reason, bad)]
    assert sync.buffered == 1
    sync.on_delta(1, d(12, bids=[("100", "4")]))
    acts = sync.on_snapshot(BASE_SNAP)
    assert acts[0] == PublishSnapshot(SYM, 12, "initial", 120)
    assert sync.book.depth() == ((("100", "4"), ("99", "1")), (("101", "2"),))


def test_first_id_above_last_id_is_malformed() -> None:
    sync: BookSync[Delta] = BookSync(SYM)
    sync.stream_started(1)
    sync.on_delta(1, d(5))
    bad = d(7, 6, bids=[("100", "9")])
    assert sync.on_delta(1, bad) == [Malformed(SYM, "depth.BTC_USDC", "U=7 > u=6", bad)]
    # The buffer still continues from 5: 6 follows without a buffer gap.
    sync.on_delta(1, d(6))
    assert sync.buffered == 2
    assert sync.counters["buffer_gaps"] == 0
    sync.on_snapshot(Snap(5, bids=[(D("100"), D("1"))], asks=[(D("101"), D("1"))]))
    assert sync.state is SyncState.LIVE
    assert sync.last_update_id == 6
    # LIVE, through the fast entry: U = last + 1 but u < U cannot be the steady case.
    bad = d(7, 3, asks=[("101", "0")])
    assert sync.on_delta_fast(1, bad) == [Malformed(SYM, "depth.BTC_USDC", "U=7 > u=3", bad)]
    assert sync.book.depth() == ((("100", "1"),), (("101", "1"),))
    assert sync.last_update_id == 6
    assert sync.counters["malformed"] == 2


@pytest.mark.parametrize(
    ("level", "problem"),
    [
        (("abc", "1"), "bad level ['abc', '1']: price 'abc' is not a decimal number"),
        (("102", "NaN"), "bad level ['102', 'NaN']: size 'NaN' must be a finite decimal >= 0"),
        (("102", "-1"), "bad level ['102', '-1']: size '-1' must be a finite decimal >= 0"),
        (("0", "1"), "bad level ['0', '1']: price '0' must be a finite decimal > 0"),
        # A price the book holds, with a bad size.
        (("101", "x"), "bad level ['101', 'x']: size 'x' is not a decimal number"),
    ],
)
def test_fast_path_bad_level_after_good_ones_desyncs(level: Lv, problem: str) -> None:
    sync = live_sync()
    assert sync.on_delta_fast(1, d(12, bids=[("100", "4")])) is None, "the steady path"
    # The hot path checks while applying: the good levels before the bad one are already in.
    bad = d(13, bids=[("100", "5"), ("99.5", "1")], asks=[("101", "6"), level])
    acts = sync.on_delta_fast(1, bad)
    assert acts is not None
    assert kinds(acts) == [
        "Malformed",
        StatusKind.GAP_DETECTED,
        StatusKind.RESYNCING,
        "RequestSnapshot",
    ]
    reason = f"malformed update 13..13 left the book unknown: {problem}"
    assert acts[0] == Malformed(SYM, "depth.BTC_USDC", problem, bad)
    gap, resyncing = acts[1], acts[2]
    assert isinstance(gap, Status)
    assert isinstance(resyncing, Status)
    assert gap.reason == resyncing.reason == reason
    assert gap.counts["malformed"] == 1
    assert acts[3] == RequestSnapshot(SYM, f"resync: {reason}")
    assert sync.state is SyncState.BUFFERING
    assert sync.buffered == 0, "the bad frame is not kept for the bridge"
    # Nothing is published until the resync ends, whichever entry point the frames take.
    assert sync.on_delta_fast(1, d(14, bids=[("100", "14")])) == []
    assert sync.on_delta(1, d(15, asks=[("101", "15")])) == []
    assert sync.on_delta_fast(1, d(16, bids=[("98", "0")])) == []
    assert sync.buffered == 3
    truth = Snap(13, bids=[(D("99"), D("1")), (D("100"), D("5"))], asks=[(D("101"), D("6"))])
    acts = sync.on_snapshot(truth)
    assert kinds(acts) == ["PublishSnapshot", StatusKind.RESYNCED]
    assert acts[0] == PublishSnapshot(SYM, 16, "resync", 160)
    assert isinstance(acts[1], Status)
    assert acts[1].reason == f"resynced at update 16 after {reason}"
    # The half-applied frame left no trace: the book is the snapshot plus 14..16.
    assert sync.book.depth() == ((("100", "14"), ("99", "1")), (("101", "15"),))
    assert sync.on_delta_fast(1, d(17, asks=[("101", "17")])) is None
    assert sync.book.best_ask() == ("101", "17")


@pytest.mark.parametrize("side", ["bids", "asks"])
def test_fast_path_bad_first_level_is_dropped_without_resync(side: str) -> None:
    sync = live_sync()
    assert sync.on_delta_fast(1, d(12, bids=[("100", "4")])) is None
    before = sync.book.depth()
    # Refused at its first level, the frame changed nothing: report it, keep the book live.
    bad = d(13, **{side: [("100", "x"), ("99", "2")]})
    problem = "bad level ['100', 'x']: size 'x' is not a decimal number"
    assert sync.on_delta_fast(1, bad) == [Malformed(SYM, "depth.BTC_USDC", problem, bad)]
    assert sync.state is SyncState.LIVE
    assert sync.book.depth() == before
    assert sync.last_update_id == 12
    assert sync.counters["malformed"] == 1
    # Its ids are now a gap, found by the next frame, as for an undecodable frame.
    acts = sync.on_delta_fast(1, d(14, bids=[("100", "5")]))
    assert acts is not None
    assert kinds(acts)[:2] == [StatusKind.GAP_DETECTED, StatusKind.RESYNCING]


@pytest.mark.parametrize(
    ("patch", "reason"),
    [
        ({"U": 1345937438, "u": 1345937437}, "U=1345937438 > u=1345937437"),
        ({"a": [["3667.50", "-0.1"]]}, f"bad ask level ['3667.50', '-0.1']: {NEED}"),
        ({"b": [["0", "1"]]}, f"bad bid level ['0', '1']: {NEED}"),
        ({"b": [["-1", "1"]]}, f"bad bid level ['-1', '1']: {NEED}"),
        ({"a": [["NaN", "1"]]}, f"bad ask level ['NaN', '1']: {NEED}"),
        ({"a": [["1", "Infinity"]]}, f"bad ask level ['1', 'Infinity']: {NEED}"),
        ({"a": [["sNaN", "1"]]}, f"bad ask level ['sNaN', '1']: {NEED}"),
        ({"a": [["abc", "1"]]}, f"bad ask level ['abc', '1']: {NEED}"),
    ],
)
def test_decoded_frame_with_bad_values_is_malformed_at_the_sync(
    patch: dict[str, object], reason: str
) -> None:
    # Decoding no longer checks level text or U <= u; BookSync must catch what it let through.
    from backpack_actors.core import wire

    data = {
        "e": "depth",
        "E": 1754903057555305,
        "T": 1754903057554352,
        "s": "ETH_USDC",
        "U": 1345937436,
        "u": 1345937437,
        "a": [["3667.50", "0.4087"]],
        "b": [["3667.49", "0.0020"]],
        **patch,
    }
    decoded = wire.decode_ws_frame(json.dumps({"stream": "depth.ETH_USDC", "data": data}))
    event = decoded.data
    assert isinstance(event, wire.DepthEvent)
    sync: BookSync[wire.DepthEvent] = BookSync("ETH_USDC")
    sync.stream_started(1)
    assert sync.on_delta(1, event) == [Malformed("ETH_USDC", "depth.ETH_USDC", reason, event)]
    assert sync.buffered == 0


# -- model-based fuzz --------------------------------------------------------------------------


def spell(touched: dict[Decimal, Decimal], update_id: int) -> list[Lv]:
    """Levels as exchange text; odd ids spell prices with two decimals (one level either way)."""
    places = 2 if update_id % 2 else 0
    return [(f"{price:.{places}f}", str(size)) for price, size in sorted(touched.items())]


BID_PRICES = [D(p) for p in range(90, 100)]
ASK_PRICES = [D(p) for p in range(100, 110)]
level_changes = st.lists(
    st.tuples(st.booleans(), st.integers(0, 9), st.integers(0, 3)), min_size=0, max_size=4
)


class BookSyncMachine(RuleBasedStateMachine):
    """Drive BookSync against an exchange model and a consumer that only sees published actions."""

    def __init__(self) -> None:
        super().__init__()
        self.sync: BookSync[Delta] = BookSync(SYM, max_buffer=8)
        self.bids: dict[Decimal, Decimal] = {D(95): D(1)}
        self.asks: dict[Decimal, Decimal] = {D(105): D(1)}
        self.cur = 100
        self.history: dict[int, tuple[dict[Decimal, Decimal], dict[Decimal, Decimal]]] = {
            100: (dict(self.bids), dict(self.asks))
        }
        self.epoch = 0
        self.wire: list[Delta] = []
        self.sent: list[Delta] = []
        self.old_wire: list[Delta] = []
        # The consumer's view, rebuilt only from published actions.
        self.consumer: OrderBook | None = None
        self.consumer_last: int | None = None
        self.in_resync = False

    # exchange
    @rule(changes=st.lists(level_changes, min_size=1, max_size=3))
    def exchange_updates(self, changes: list[list[tuple[bool, int, int]]]) -> None:
        first = self.cur + 1
        touched_b: dict[Decimal, Decimal] = {}
        touched_a: dict[Decimal, Decimal] = {}
        for update in changes:
            self.cur += 1
            for is_bid, idx, size in update:
                side, touched, price = (
                    (self.bids, touched_b, BID_PRICES[idx])
                    if is_bid
                    else (self.asks, touched_a, ASK_PRICES[idx])
                )
                if size:
                    side[price] = D(size)
                else:
                    side.pop(price, None)
                touched[price] = D(size)
            self.history[self.cur] = (dict(self.bids), dict(self.asks))
        msg = Delta(
            first,
            self.cur,
            spell(touched_b, self.cur),
            spell(touched_a, self.cur),
            engine_time=self.cur,
        )
        if self.epoch:
            self.wire.append(msg)

    # network
    @precondition(lambda self: self.wire)
    @rule(
        modes=st.lists(
            st.sampled_from(["ok"] * 5 + ["drop", "dup", "swap", "corrupt"]),
            min_size=1,
            max_size=6,
        ),
        fast=st.booleans(),
    )
    def deliver(self, modes: list[str], fast: bool) -> None:
        for mode in modes:
            if not self.wire:
                return
            if mode == "drop":
                self.wire.pop(0)
                continue
            if mode == "corrupt":
                self.send_corrupt(self.wire.pop(0), fast)
                continue
            if mode == "dup" and self.sent:
                self.send(self.sent[-1], fast)
                continue
            if mode == "swap" and len(self.wire) >= 2:
                self.wire[0], self.wire[1] = self.wire[1], self.wire[0]
            self.send(self.wire.pop(0), fast)

    def deliver_to_sync(self, msg: Delta, fast: bool) -> list[Action[Delta]]:
        if not fast:
            return self.sync.on_delta(self.epoch, msg)
        # The shell's hot path: None means "applied in order, publish it".
        acts = self.sync.on_delta_fast(self.epoch, msg)
        return [PublishDelta(SYM, msg)] if acts is None else acts

    def send_corrupt(self, msg: Delta, fast: bool) -> None:
        """The frame arrives with a bad level after its good ones: as if it were lost."""
        bad = replace(msg, asks=[*msg.asks, ("NaN", "1")])
        acts = self.deliver_to_sync(bad, fast)
        malformed = [a for a in acts if isinstance(a, Malformed)]
        assert len(malformed) == 1, acts
        assert (malformed[0].stream, malformed[0].frame) == (f"depth.{SYM}", bad)
        assert "'NaN'" in malformed[0].reason
        assert "PublishDelta" not in kinds(acts)
        self.consume(acts)

    def send(self, msg: Delta, fast: bool = False) -> None:
        self.sent.append(msg)
        live_before = self.sync.state is SyncState.LIVE
        bridging = self.sync.bridging
        last = self.sync.last_update_id
        acts = self.deliver_to_sync(msg, fast)
        if live_before and last is not None and msg.last_update_id > last:
            gap = msg.first_update_id > last + 1 or (
                not bridging and msg.first_update_id != last + 1
            )
            if gap:
                assert any(
                    isinstance(a, Status) and a.kind is StatusKind.GAP_DETECTED for a in acts
                ), (msg, last, acts)
        self.consume(acts)

    @rule(dice=st.integers(0, 5))
    def maybe_reconnect(self, dice: int) -> None:
        if dice == 0 or not self.epoch:
            self.reconnect()

    def reconnect(self) -> None:
        self.old_wire = self.wire + self.old_wire[:3]
        self.wire = []
        self.epoch += 1
        self.consume(self.sync.stream_started(self.epoch))

    @precondition(lambda self: self.old_wire and self.epoch)
    @rule()
    def stale_frame(self) -> None:
        before = self.sync.counters["stale_epoch_frames"]
        assert self.sync.on_delta(self.epoch - 1, self.old_wire.pop()) == []
        assert self.sync.counters["stale_epoch_frames"] == before + 1

    @rule(back=st.one_of(st.just(0), st.integers(0, 6)))
    def snapshot(self, back: int) -> None:
        s = max(100, self.cur - back)
        bids, asks = self.history[s]
        snap = Snap(s, sorted(bids.items()), sorted(asks.items()))
        self.consume(self.sync.on_snapshot(snap, epoch=self.epoch))

    @rule(dice=st.integers(0, 5))
    def snapshot_failed(self, dice: int) -> None:
        if dice:
            return
        self.consume(self.sync.on_snapshot_failed("HTTP 503"))

    @rule()
    def heal(self) -> None:
        """Deliver everything cleanly, then a fresh snapshot must bring the book live."""
        if not self.epoch:
            self.reconnect()
        while self.wire:
            self.send(self.wire.pop(0))
        self.exchange_updates([[(True, 0, 1)]])
        self.send(self.wire.pop(0))
        self.snapshot(0)
        assert self.sync.state is SyncState.LIVE
        assert self.sync.last_update_id == self.cur
        assert self.sync.book.as_dicts() == self.history[self.cur]
        assert not self.in_resync
        # One bridging delta more leaves the sync on its steady (fast) path.
        self.exchange_updates([[(False, 9, 2)]])
        self.send(self.wire.pop(0), fast=True)
        assert self.sync.book.as_dicts() == self.history[self.cur]

    @precondition(lambda self: self.wire)
    @rule(fast=st.booleans())
    def corrupt_next(self, fast: bool) -> None:
        self.send_corrupt(self.wire.pop(0), fast)

    def consume(self, acts: list[Action[Delta]]) -> None:
        for act in acts:
            if isinstance(act, Malformed):
                # Reported as a protocol error; nothing reaches the consumer's book.
                continue
            if isinstance(act, Status):
                if act.kind in (StatusKind.GAP_DETECTED, StatusKind.RESYNCING):
                    self.in_resync = True
            elif isinstance(act, PublishSnapshot):
                if act.reason == "check":
                    assert not self.in_resync
                else:
                    self.in_resync = False
                assert self.consumer_last is None or act.update_id >= self.consumer_last
                assert self.sync.book.as_dicts() == self.history[act.update_id]
                self.consumer = self.sync.book.copy()
                self.consumer_last = act.update_id
            elif isinstance(act, PublishDelta):
                assert not self.in_resync
                assert self.consumer is not None
                assert self.consumer_last is not None
                delta = act.delta
                assert delta.first_update_id <= self.consumer_last + 1 <= delta.last_update_id
                self.consumer.apply(delta.bids, delta.asks)
                self.consumer_last = delta.last_update_id
                assert self.consumer.as_dicts() == self.history[self.consumer_last]

    @invariant()
    def live_book_matches_exchange_at_last(self) -> None:
        sync = self.sync
        if sync.state is SyncState.LIVE:
            assert sync.last_update_id is not None
            assert sync.book.as_dicts() == self.history[sync.last_update_id]
        assert sync.counters["crossed"] == 0
        assert sync.counters["snapshot_mismatches"] == 0


BookSyncMachine.TestCase.settings = settings(
    max_examples=150, stateful_step_count=50, deadline=None
)
TestBookSyncMachine = BookSyncMachine.TestCase


def test_a_bogus_far_future_frame_cannot_wedge_the_symbol() -> None:
    # Found by the pipeline fuzzer: one well-formed frame with ids far ahead used to start the
    # resync buffer, every real frame after it looked like a duplicate, and every snapshot looked
    # older than the stream, forever.
    sync: BookSync[Delta] = BookSync("SOL_USDC")
    sync.stream_started(1)
    sync.on_snapshot(BASE_SNAP)
    assert sync.state is SyncState.LIVE
    acts = sync.on_delta(1, d(2**50))
    assert StatusKind.GAP_DETECTED in kinds(acts)
    for u in range(11, 40):
        sync.on_delta(1, d(u, bids=[("100", str(u))]))
    acts = sync.on_snapshot(Snap(20, bids=[(D("100"), D("20"))], asks=[(D("101"), D("3"))]))
    assert kinds(acts) == ["PublishSnapshot", StatusKind.RESYNCED]
    assert sync.state is SyncState.LIVE
    assert sync.last_update_id == 39
    assert sync.book.best_bid() == ("100", "39")


def test_update_ids_going_backwards_resync_instead_of_freezing() -> None:
    # Found in review: after a sequence reset every delta looked like a duplicate, the book froze
    # silently, and after a reconnect every snapshot was "older than the published book".
    sync: BookSync[Delta] = BookSync("SOL_USDC")
    sync.stream_started(1)
    sync.on_snapshot(Snap(1_000_000, bids=[(D("99"), D("1"))], asks=[(D("101"), D("3"))]))
    acts: list[Action[Delta]] = []
    after = 1_700_000_000_000_000  # the snapshot's engine time: a reset brings newer events
    for u in range(1, 200):
        acts += sync.on_delta(1, replace(d(u, bids=[("99", str(u))]), engine_time=after + u))
    assert StatusKind.GAP_DETECTED in kinds(acts)
    assert sync.counters["sequence_resets"] == 1
    acts = sync.on_snapshot(Snap(199, bids=[(D("99"), D("199"))], asks=[(D("101"), D("3"))]))
    assert kinds(acts) == ["PublishSnapshot", StatusKind.RESYNCED]
    assert sync.last_update_id == 199
    assert kinds(sync.on_delta(1, d(200, bids=[("99", "200")]))) == ["PublishDelta"]


def test_a_few_duplicates_are_just_dropped() -> None:
    sync: BookSync[Delta] = BookSync("SOL_USDC")
    sync.stream_started(1)
    sync.on_snapshot(BASE_SNAP)
    sync.on_delta(1, d(11))
    for _ in range(5):
        assert sync.on_delta(1, d(11)) == []
    assert kinds(sync.on_delta(1, d(12))) == ["PublishDelta"]
    assert sync.counters["duplicates"] == 5
    assert sync.counters["sequence_resets"] == 0


def test_frames_older_than_the_snapshot_are_stale_duplicates_not_a_reset() -> None:
    """Over real sockets the REST answer can overtake WebSocket frames still in flight: a
    snapshot at 1000 is followed by hundreds of frames below it, all older (engine time) than
    the snapshot. The old code took 100 of them for an id reset and resynced, again and again."""
    sync: BookSync[Delta] = BookSync("SOL_USDC")
    sync.stream_started(1)
    snapshot = Snap(1000, bids=[(D("99"), D("1"))], asks=[(D("101"), D("3"))], timestamp=10_000)
    assert kinds(sync.on_snapshot(snapshot)) == ["PublishSnapshot", StatusKind.BOOK_READY]
    for u in range(700, 1001):
        assert sync.on_delta(1, d(u, bids=[("99", "7")])) == [], u  # engine time u * 10 < 10_000
    assert sync.counters["stale_duplicates"] == 301
    assert sync.counters["sequence_resets"] == 0
    assert sync.book.best_bid() == ("99", "1"), "stale frames change nothing"
    assert kinds(sync.on_delta(1, d(1001, bids=[("99", "2")]))) == ["PublishDelta"]
