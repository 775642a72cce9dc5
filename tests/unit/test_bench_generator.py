"""The benchmark generator's stream is realistic and its ground truth is exact."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest

from benchmarks.common import BenchmarkFailure, check_book
from benchmarks.generator import Workload, make_workload

FRAMES = 20_000


@pytest.fixture(scope="module")
def workload() -> Workload:
    return make_workload(7, FRAMES)


def _ordered(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    assert keys == sorted(keys), f"keys not in exchange (sorted) order: {keys}"
    return dict(pairs)


def test_replaying_the_frames_independently_gives_the_ground_truth(workload: Workload) -> None:
    snapshot = json.loads(workload.snapshot_json, object_pairs_hook=_ordered)
    assert 480 <= len(snapshot["bids"]) <= 520
    assert 480 <= len(snapshot["asks"]) <= 520
    bids = {Decimal(p): Decimal(s) for p, s in snapshot["bids"]}
    asks = {Decimal(p): Decimal(s) for p, s in snapshot["asks"]}
    last_u = int(snapshot["lastUpdateId"])
    last_trade: int | None = None
    depth = trades = merged = changes = absent = 0
    for raw in workload.frames:
        frame = json.loads(raw, object_pairs_hook=_ordered)
        assert json.dumps(frame, separators=(",", ":")) == raw, "frames must be compact JSON"
        data = frame["data"]
        assert frame["stream"] == f"{data['e']}.{workload.symbol}"
        if data["e"] == "trade":
            trades += 1
            if last_trade is not None:
                assert data["t"] == last_trade + 1
            last_trade = data["t"]
            assert Decimal(data["p"]) in (max(bids), min(asks))
            continue
        depth += 1
        assert data["U"] == last_u + 1
        assert data["u"] >= data["U"]
        merged += data["u"] > data["U"]
        last_u = data["u"]
        for side, levels in ((bids, data["b"]), (asks, data["a"])):
            prices = [p for p, _ in levels]
            assert len(set(prices)) == len(prices)
            for p, s in levels:
                changes += 1
                price, size = Decimal(p), Decimal(s)
                assert price == price.quantize(Decimal("0.01"))
                assert size == size.quantize(Decimal("0.0001"))
                if size:
                    side[price] = size
                elif price in side:
                    del side[price]
                else:
                    assert s == "0.00000"
                    absent += 1
        assert max(bids) < min(asks), "the generated book crossed"
    truth = workload.truth
    assert bids == truth.bids
    assert asks == truth.asks
    assert last_u == truth.last_update_id
    assert last_trade == truth.last_trade_id
    assert (depth, trades, merged, changes, absent) == (
        truth.depth_frames,
        truth.trade_frames,
        truth.merged_deltas,
        truth.level_changes,
        truth.absent_removals,
    )


def test_the_mix_matches_the_reference_workload(workload: Workload) -> None:
    t = workload.truth
    assert t.frames == FRAMES
    assert 0.83 <= t.depth_frames / FRAMES <= 0.87
    assert 1.55 <= t.level_changes / t.depth_frames <= 1.75
    assert 0.17 <= t.merged_deltas / t.depth_frames <= 0.23
    assert t.absent_removals > 0
    assert 170 <= t.frame_bytes / FRAMES <= 200


def test_the_seed_determines_the_stream() -> None:
    a = make_workload(3, 500)
    b = make_workload(3, 500)
    c = make_workload(4, 500)
    assert a.frames == b.frames
    assert a.snapshot_json == b.snapshot_json
    assert a.truth == b.truth
    assert a.frames != c.frames


def test_a_wrong_book_fails_the_check(workload: Workload) -> None:
    truth = workload.truth
    check_book("same", dict(truth.bids), dict(truth.asks), truth.bids, truth.asks)
    wrong = dict(truth.bids)
    best = max(wrong)
    wrong[best] += Decimal("0.0001")
    with pytest.raises(BenchmarkFailure, match="wrong sizes"):
        check_book("wrong", wrong, truth.asks, truth.bids, truth.asks)
    del wrong[best]
    with pytest.raises(BenchmarkFailure, match="missing"):
        check_book("missing", wrong, truth.asks, truth.bids, truth.asks)
