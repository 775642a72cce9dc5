"""TokenBucket / RestBudget: waits, fairness, 429 penalties, and the never-over-limit property."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backpack_actors.core.budget import Priority, RestBudget, TokenBucket


def test_burst_then_paced() -> None:
    bucket = TokenBucket(2.0, 3)
    assert [bucket.reserve(10.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    # Reservations commit: the next callers queue 0.5 s apart, in order.
    assert bucket.reserve(10.0) == pytest.approx(0.5)
    assert bucket.reserve(10.0) == pytest.approx(1.0)
    # Time passing pays the debt back; the bucket never refills beyond its burst.
    assert bucket.reserve(11.0) == pytest.approx(0.5)
    assert bucket.available(100.0) == pytest.approx(3.0)


def test_try_reserve_never_waits() -> None:
    bucket = TokenBucket(1.0, 2)
    assert bucket.try_reserve(0.0)
    assert bucket.try_reserve(0.0)
    assert not bucket.try_reserve(0.0)
    assert not bucket.try_reserve(0.5)
    assert bucket.try_reserve(1.0)


def test_keep_reserves_headroom_for_high_priority() -> None:
    bucket = TokenBucket(1.0, 4)
    assert bucket.reserve(0.0, keep=2) == 0.0  # 3 left
    assert bucket.reserve(0.0, keep=2) == 0.0  # 2 left
    assert bucket.reserve(0.0, keep=2) == pytest.approx(1.0)  # would leave 1 < 2
    with pytest.raises(ValueError, match="exceeds the burst"):
        bucket.reserve(0.0, cost=3, keep=2)


def test_penalize_blocks_until_retry_after() -> None:
    bucket = TokenBucket(10.0, 5)
    bucket.penalize(0.0, 3.0)
    assert bucket.reserve(1.0) == pytest.approx(2.0)
    assert bucket.reserve(1.0) == pytest.approx(2.1)
    assert not bucket.try_reserve(2.9)
    # A shorter penalty never shortens a longer one.
    bucket.penalize(1.0, 0.5)
    assert bucket.reserve(1.5) >= 1.5


def test_rest_budget_buckets_and_priorities() -> None:
    budget = RestBudget(general_per_min=60, general_burst=4, history_per_min=30, history_burst=2)
    assert budget.reserve(0.0, history=True) == 0.0
    assert budget.reserve(0.0, history=True) == 0.0
    assert budget.reserve(0.0, history=True) == pytest.approx(2.0)
    # The general bucket is independent of the history bucket.
    assert budget.reserve(0.0) == 0.0
    assert budget.reserve(0.0) == 0.0
    # Low priority may not take the last half of the burst; high priority may.
    assert not budget.try_reserve(0.0, priority=Priority.LOW)
    assert budget.reserve(0.0, priority=Priority.LOW) == pytest.approx(1.0)
    assert budget.try_reserve(0.0, priority=Priority.HIGH)
    budget.penalize(0.0, None)
    assert budget.reserve(0.0) >= 1.0


def test_invalid_parameters() -> None:
    with pytest.raises(ValueError, match="rate_per_s"):
        TokenBucket(0, 1)
    with pytest.raises(ValueError, match="burst"):
        TokenBucket(1, 0.5)
    with pytest.raises(ValueError, match="low_priority_keep"):
        RestBudget(low_priority_keep=1.0)


ops = st.lists(
    st.tuples(
        st.floats(0, 2, allow_nan=False),
        st.sampled_from(["high", "low", "try", "penalize"]),
        st.floats(0, 3, allow_nan=False),
    ),
    min_size=1,
    max_size=80,
)


@settings(max_examples=300, deadline=None)
@given(st.floats(0.2, 20), st.integers(1, 8), ops)
def test_grants_never_exceed_burst_plus_rate_times_window(
    rate: float, burst: int, script: list[tuple[float, str, float]]
) -> None:
    bucket = TokenBucket(rate, burst)
    now = 0.0
    grants: list[float] = []
    blocked_until = 0.0
    keep = burst / 2 if burst > 1 else 0.0
    for step, op, retry_after in script:
        now += step
        if op == "penalize":
            bucket.penalize(now, retry_after)
            blocked_until = max(blocked_until, now + retry_after)
        elif op == "try":
            if bucket.try_reserve(now, keep=keep):
                assert now >= blocked_until
                grants.append(now)
        else:
            wait = bucket.reserve(now, keep=keep if op == "low" else 0.0)
            assert wait >= 0
            assert now + wait >= blocked_until - 1e-9
            grants.append(now + wait)
    grants.sort()
    for i in range(len(grants)):
        for j in range(i, len(grants)):
            window = grants[j] - grants[i]
            assert j - i + 1 <= burst + rate * window + 1e-6
