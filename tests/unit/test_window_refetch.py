"""Review findings on the valid window and on latest-value conflation, each pinned by a test.

- A requested depth the REST snapshots cannot reach never spins the REST budget: refetches are
  spaced on engine time (1 s, doubling).
- A failed refetch ends its delta shadow at once (the fast path comes back).
- A periodic check whose snapshot side is shorter than the cap (the whole side) is a
  confirmation only if the book holds exactly those levels.
- A refresh timer the recording does not see never changes what a replay does.
- Latest-value conflation never lets a newer value overtake an older event of its symbol.
"""

from __future__ import annotations

from decimal import Decimal

from backpack_actors.actors.messages import FrameBatch, SnapshotReady, StreamStarted
from backpack_actors.actors.reconciler import Reconciler
from backpack_actors.core.conflation import SubscriberQueue
from backpack_actors.core.events import BookTicker, Event, Side, Trade
from backpack_actors.core.symbols import MarketInfo
from backpack_actors.core.sync import BookSync, PublishSnapshot, RequestSnapshot
from backpack_actors.core.wire import DepthEvent, DepthSnapshot

SYM = "SOL_USDC"
INFO = MarketInfo(
    exchange_id=SYM, ccxt_symbol="SOL/USDC", normalized="SOL-USDC", base="SOL", quote="USDC",
    market_type="spot", tick_size=Decimal("1"), step_size=Decimal("1"), min_size=Decimal("1"),
    active=True,
)  # fmt: skip


def _snap(last: int, bids: list[tuple[str, str]], asks: list[tuple[str, str]]) -> DepthSnapshot:
    return DepthSnapshot(
        last_update_id=last,
        timestamp=last,
        bids=[(Decimal(p), Decimal(q)) for p, q in bids],
        asks=[(Decimal(p), Decimal(q)) for p, q in asks],
    )


def _delta(u: int, bids: tuple[tuple[str, str], ...] = (), t_us: int = 0) -> DepthEvent:
    return DepthEvent(
        event_time=t_us or u, engine_time=t_us or u, symbol=SYM, first_update_id=u,
        last_update_id=u, asks=(), bids=bids,
    )  # fmt: skip


def _reconciler(**kwargs: object) -> tuple[Reconciler, list[Event], list[object]]:
    events: list[Event] = []
    requests: list[object] = []
    reconciler = Reconciler(
        markets={SYM: INFO},
        publish=events.extend,
        request=requests.append,
        wall_clock=lambda: 1.0,
        **kwargs,  # type: ignore[arg-type]
    )
    reconciler.handle(StreamStarted(SYM, 1))
    requests.clear()
    return reconciler, events, requests


def test_a_depth_beyond_the_snapshots_reach_refetches_spaced_out() -> None:
    reconciler, _events, requests = _reconciler(book_depth=5, snapshot_side_levels=3)
    three = [(str(100 - i), "1") for i in range(1, 4)]
    reconciler.handle(SnapshotReady(SYM, _snap(10, three, [("101", "1")]), "initial", 1))
    asked = 0
    # 200 reads over 20 s of engine time (one every 100 ms); every answer exact but short.
    for i in range(200):
        u = 11 + i
        frame = _delta(u, (("50", str(i + 1)),), t_us=1_000_000 + i * 100_000)
        reconciler.handle(FrameBatch(SYM, 1, [frame], 1, (), 1))
        if requests:
            asked += len(requests)
            requests.clear()
            bids, _ = reconciler.book_sync(SYM).book.depth(3)
            answer = _snap(u, list(bids), [("101", "1")])
            reconciler.handle(SnapshotReady(SYM, answer, "window", 1))
    # 1 s, 2 s, 4 s, 8 s spacing over 20 s: a handful, not one per read.
    assert 1 <= asked <= 5
    assert reconciler.book_sync(SYM).counters["window_refetches"] == asked


def test_a_failed_refetch_ends_its_shadow() -> None:
    sync: BookSync[DepthEvent] = BookSync("X", side_cap=3)
    sync.stream_started(1)
    sync.on_snapshot(_snap(10, [("99", "1"), ("98", "1"), ("97", "1")], [("101", "1")]))
    sync.on_delta(1, _delta(11, (("96", "1"),)))  # bridged: the book is steady now
    assert sync.on_delta_fast(1, _delta(12, (("95", "1"),))) is None
    assert sync.request_window() == [RequestSnapshot("X", "window")]
    assert sync.on_delta_fast(1, _delta(13, (("94", "1"),))) is not None  # kept for the answer
    sync.on_snapshot_failed("HTTP 500")
    assert sync._shadow is None
    # The fast path is back: an in-order delta needs no action list.
    assert sync.on_delta_fast(1, _delta(14, (("93", "1"),))) is None


def test_a_whole_side_check_with_levels_the_exchange_lacks_is_a_resync() -> None:
    sync: BookSync[DepthEvent] = BookSync("X", side_cap=10)
    sync.stream_started(1)
    sync.on_snapshot(_snap(10, [("99", "1"), ("98", "1"), ("97", "1")], [("101", "1")]))
    sync.on_delta(1, _delta(11, (("50", "1"),)))
    # The exchange's whole bid side at 11: 99, 98, 97 — our book also holds 50.
    acts = sync.on_snapshot(_snap(11, [("99", "1"), ("98", "1"), ("97", "1")], [("101", "1")]))
    assert [a.reason for a in acts if isinstance(a, PublishSnapshot)] == ["resync"]
    assert Decimal(50) not in sync.book.as_dicts()[0]
    assert sync.bid_floor is None


def test_an_unrecorded_refresh_never_changes_a_replay() -> None:
    def run(refresh: bool) -> list[str]:
        reconciler, events, _requests = _reconciler(book_depth=2, snapshot_side_levels=3)
        three = [("99", "1"), ("98", "1"), ("97", "1")]
        reconciler.handle(SnapshotReady(SYM, _snap(10, three, [("101", "1")]), "initial", 1))
        if refresh:
            reconciler.request_refresh(SYM)  # the REST actor's timer: not in a recording
        for u, bids in ((11, (("99", "0"),)), (12, (("98", "0"),))):
            reconciler.handle(FrameBatch(SYM, 1, [_delta(u, bids, t_us=u * 1_000_000)], 1, (), 1))
        answer = _snap(11, [("98", "1"), ("97", "1"), ("96", "2")], [("101", "1")])
        reconciler.handle(SnapshotReady(SYM, answer, "window", 1))
        return [f"{type(e).__name__}:{getattr(e, 'reason', '')}" for e in events]

    assert run(refresh=True) == run(refresh=False)


def _ticker(u: int, mono: int) -> BookTicker:
    return BookTicker("SOL-USDC", SYM, u, "1", "1", "2", "1", u, u, mono, mono)


def _trade(i: int, mono: int) -> Trade:
    return Trade("SOL-USDC", SYM, i, "1", "1", Side.BUY, mono, mono, mono, False, mono)


def test_latest_value_conflation_keeps_each_symbols_order() -> None:
    queue = SubscriberQueue(8, lambda _symbol: None)
    queue.offer_many([_trade(1, 1), _trade(2, 2), _trade(3, 3), _trade(4, 4)])
    queue.offer_many([_ticker(100, 5)])  # past half: a marker
    queue.offer_many([_trade(5, 6)])  # then a trade of the same symbol
    queue.offer_many([_ticker(101, 7)])  # must not overtake that trade
    queue.offer_many([_ticker(102, 8)])  # conflated into the new marker
    out = queue.pop_many(100)
    monos = [e.received_mono_ns for e in out]  # type: ignore[union-attr]
    assert monos == sorted(monos)
    assert [e.update_id for e in out if isinstance(e, BookTicker)] == [100, 102]
