"""Restart window (OTP intensity/period) and jittered capped backoff."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from backpack_actors.core.restart import Backoff, RestartWindow

# --- RestartWindow ---------------------------------------------------------------------------


def test_window_allows_intensity_restarts_then_refuses() -> None:
    window = RestartWindow(intensity=3, period=10.0)
    assert [window.record(t) for t in (0.0, 1.0, 2.0)] == [True, True, True]
    assert window.record(3.0) is False


def test_window_forgets_restarts_older_than_period() -> None:
    window = RestartWindow(intensity=2, period=10.0)
    assert window.record(0.0)
    assert window.record(5.0)
    # t=0 is 10.5 s old at 10.5: outside the window, so only 5.0 and 10.5 remain.
    assert window.record(10.5)
    assert window.count(10.5) == 2
    # t=5 is exactly 10 s old at 15: still inside (OTP: inclusive), three in the window.
    assert window.record(15.0) is False


def test_window_zero_intensity_refuses_first_restart() -> None:
    assert RestartWindow(intensity=0, period=1.0).record(0.0) is False


def test_window_rejects_bad_parameters() -> None:
    with pytest.raises(ValueError, match="intensity"):
        RestartWindow(intensity=-1, period=1.0)
    with pytest.raises(ValueError, match="period"):
        RestartWindow(intensity=1, period=0.0)


@given(
    intensity=st.integers(0, 6),
    period=st.floats(0.5, 20.0),
    gaps=st.lists(st.floats(0.0, 10.0), min_size=1, max_size=40),
)
def test_window_matches_naive_model(intensity: int, period: float, gaps: list[float]) -> None:
    window = RestartWindow(intensity=intensity, period=period)
    now = 0.0
    history: list[float] = []
    for gap in gaps:
        now += gap
        history.append(now)
        in_window = [t for t in history if now - t <= period]
        assert window.record(now) is (len(in_window) <= intensity)


# --- Backoff ---------------------------------------------------------------------------------


def test_backoff_sequence_without_jitter_is_exponential_and_capped() -> None:
    backoff = Backoff(base=0.5, factor=2.0, cap=5.0, jitter=0.0, stable_after=30.0)
    rng = random.Random(1)
    delays = [backoff.next_delay(float(i), rng) for i in range(7)]
    assert delays == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0, 5.0]


def test_backoff_does_not_reset_merely_on_connect() -> None:
    backoff = Backoff(base=1.0, factor=2.0, cap=100.0, jitter=0.0, stable_after=30.0)
    rng = random.Random(0)
    assert backoff.next_delay(0.0, rng) == 1.0
    backoff.mark_connected(1.0)
    # Connected, then dead 29 s later: not stable yet, so the counter keeps growing.
    assert backoff.next_delay(30.0, rng) == 2.0
    backoff.mark_connected(32.0)
    assert backoff.next_delay(33.0, rng) == 4.0


def test_backoff_resets_after_stable_period() -> None:
    backoff = Backoff(base=1.0, factor=2.0, cap=100.0, jitter=0.0, stable_after=30.0)
    rng = random.Random(0)
    for t in range(4):
        backoff.next_delay(float(t), rng)
    assert backoff.attempt == 4
    backoff.mark_connected(10.0)
    # Exactly stable_after seconds healthy is enough.
    assert backoff.next_delay(40.0, rng) == 1.0
    assert backoff.attempt == 1


def test_mark_healthy_resets_only_after_stable_period() -> None:
    backoff = Backoff(base=1.0, factor=2.0, cap=100.0, jitter=0.0, stable_after=5.0)
    rng = random.Random(0)
    backoff.next_delay(0.0, rng)
    backoff.next_delay(0.0, rng)
    assert backoff.mark_healthy(100.0) is False  # never connected: nothing to vouch for
    backoff.mark_connected(100.0)
    assert backoff.mark_healthy(104.9) is False
    assert backoff.attempt == 2
    assert backoff.mark_healthy(105.0) is True
    assert backoff.attempt == 0


def test_backoff_fresh_copies_parameters_not_state() -> None:
    backoff = Backoff(base=0.25, factor=3.0, cap=9.0, jitter=0.1, stable_after=7.0)
    backoff.next_delay(0.0, random.Random(0))
    fresh = backoff.fresh()
    assert (fresh.base, fresh.factor, fresh.cap, fresh.jitter, fresh.stable_after) == (
        0.25,
        3.0,
        9.0,
        0.1,
        7.0,
    )
    assert fresh.attempt == 0
    assert backoff.attempt == 1


def test_backoff_rejects_bad_parameters() -> None:
    with pytest.raises(ValueError, match="factor"):
        Backoff(factor=0.5)
    with pytest.raises(ValueError, match="jitter"):
        Backoff(jitter=1.0)
    with pytest.raises(ValueError, match="cap"):
        Backoff(base=10.0, cap=1.0)


def test_huge_attempt_counts_do_not_overflow() -> None:
    backoff = Backoff(base=1.0, factor=10.0, cap=60.0, jitter=0.0)
    assert backoff.raw_delay(10_000) == 60.0


@given(
    base=st.floats(0.01, 5.0),
    factor=st.floats(1.0, 4.0),
    extra_cap=st.floats(0.0, 100.0),
    jitter=st.floats(0.0, 0.99),
    seed=st.integers(0, 2**32),
    failures=st.integers(1, 60),
)
def test_backoff_delays_stay_within_jitter_band_and_cap(
    base: float, factor: float, extra_cap: float, jitter: float, seed: int, failures: int
) -> None:
    cap = base + extra_cap
    backoff = Backoff(base=base, factor=factor, cap=cap, jitter=jitter, stable_after=30.0)
    rng = random.Random(seed)
    for n in range(failures):
        delay = backoff.next_delay(float(n), rng)
        raw = min(cap, base * factor**n) if n < 500 else cap
        assert raw * (1 - jitter) - 1e-9 <= delay <= raw * (1 + jitter) + 1e-9
        assert delay <= cap * (1 + jitter)
        assert delay >= 0


@given(seed=st.integers(0, 2**32), jitter=st.floats(0.05, 0.5))
def test_jitter_actually_spreads_delays(seed: int, jitter: float) -> None:
    delays = set()
    for i in range(20):
        backoff = Backoff(base=1.0, factor=2.0, cap=10.0, jitter=jitter)
        delays.add(backoff.next_delay(0.0, random.Random(seed + i)))
    assert len(delays) > 1
    assert all(1 - jitter <= d <= 1 + jitter for d in delays)


@given(
    stable_after=st.floats(0.0, 100.0),
    healthy_for=st.floats(0.0, 200.0),
    prior_failures=st.integers(1, 10),
)
def test_reset_happens_iff_healthy_for_stable_period(
    stable_after: float, healthy_for: float, prior_failures: int
) -> None:
    backoff = Backoff(base=1.0, factor=2.0, cap=1e6, jitter=0.0, stable_after=stable_after)
    rng = random.Random(0)
    for _ in range(prior_failures):
        backoff.next_delay(0.0, rng)
    backoff.mark_connected(1000.0)
    failed_at = 1000.0 + healthy_for
    delay = backoff.next_delay(failed_at, rng)
    # Compare the uptime as the float subtraction sees it, not the drawn value.
    expected = 1.0 if failed_at - 1000.0 >= stable_after else 2.0**prior_failures
    assert delay == expected


def test_window_len_counts_remembered_restarts() -> None:
    window = RestartWindow(intensity=5, period=10.0)
    window.record(0.0)
    window.record(1.0)
    assert len(window) == 2
    window.reset()
    assert len(window) == 0
