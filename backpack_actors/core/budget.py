"""REST rate budgets as token buckets in caller-supplied time (``now`` in seconds, any clock).

A reservation commits its tokens at once and returns how long the caller must wait before
sending, so concurrent callers queue in reservation order and never together exceed
``burst + rate * window`` requests in any window. Backpack allows ~2000 requests/min on standard
routes and ~30/min on historical market-data routes (docs/protocol.md §6); HTTP 429 pauses a bucket.
"""

from __future__ import annotations

import enum

__all__ = ["Priority", "RestBudget", "TokenBucket"]


class TokenBucket:
    """``rate_per_s`` tokens per second, holding at most ``burst``; starts full."""

    __slots__ = ("_at", "_tokens", "burst", "rate")

    def __init__(self, rate_per_s: float, burst: float) -> None:
        if rate_per_s <= 0:
            raise ValueError("rate_per_s must be positive")
        if burst < 1:
            raise ValueError("burst must be at least 1")
        self.rate = rate_per_s
        self.burst = burst
        # The bucket holds ``_tokens`` at time ``_at`` (negative: that much is already promised;
        # ``_at`` in the future: paused by a penalty until then).
        self._tokens = float(burst)
        self._at: float | None = None

    def _advance(self, now: float) -> None:
        if self._at is None:
            self._at = now
        elif now > self._at:
            self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
            self._at = now

    def available(self, now: float) -> float:
        """Tokens a reservation could take at ``now`` without waiting (may be negative)."""
        self._advance(now)
        assert self._at is not None
        return self._tokens if self._at <= now else min(self._tokens, 0.0)

    def reserve(self, now: float, cost: float = 1, *, keep: float = 0.0) -> float:
        """Commit ``cost`` tokens; return the seconds to wait before using them (0: go now).

        ``keep`` makes a low-priority caller wait until the bucket would still hold ``keep``
        tokens after it, so higher-priority callers keep some headroom.
        """
        if cost <= 0:
            raise ValueError("cost must be positive")
        if cost + keep > self.burst:
            raise ValueError(f"cost + keep ({cost + keep}) exceeds the burst ({self.burst})")
        self._advance(now)
        assert self._at is not None
        self._tokens -= cost
        start = self._at
        shortfall = keep - self._tokens if self._tokens < keep else 0.0
        return max(0.0, start - now) + shortfall / self.rate

    def try_reserve(self, now: float, cost: float = 1, *, keep: float = 0.0) -> bool:
        """Commit ``cost`` tokens only if that needs no waiting and leaves ``keep`` tokens."""
        if cost <= 0:
            raise ValueError("cost must be positive")
        self._advance(now)
        assert self._at is not None
        if self._at > now or self._tokens - cost < keep:
            return False
        self._tokens -= cost
        return True

    def penalize(self, now: float, retry_after: float) -> None:
        """HTTP 429: grant nothing before ``now + retry_after``, then restart from one token.

        Reservations already granted keep their slots; the caller that was refused reserves
        again after penalizing.
        """
        self._advance(now)
        assert self._at is not None
        until = now + max(0.0, retry_after)
        if until <= self._at:
            return
        # Tokens promised earlier stay promised; otherwise the bucket reopens nearly empty
        # so the server is not hit with a full burst right after it complained.
        self._tokens = min(self._tokens, 1.0)
        self._at = until


class Priority(enum.IntEnum):
    """Who goes first when the budget is tight: resync work before periodic refreshes."""

    HIGH = 0
    LOW = 1


class RestBudget:
    """The shared REST budget: a general bucket and a historical-data bucket.

    ``Priority.LOW`` reservations (periodic snapshots, REST polls) leave ``low_priority_keep`` of
    the bucket's burst untouched so resync snapshots and backfills are not starved by them.
    """

    __slots__ = ("_keep", "general", "history")

    def __init__(
        self,
        *,
        general_per_min: float = 2000,
        general_burst: float = 10,
        history_per_min: float = 30,
        history_burst: float = 2,
        low_priority_keep: float = 0.5,
    ) -> None:
        if not 0 <= low_priority_keep < 1:
            raise ValueError("low_priority_keep is a fraction of the burst in [0, 1)")
        self.general = TokenBucket(general_per_min / 60, general_burst)
        self.history = TokenBucket(history_per_min / 60, history_burst)
        self._keep = low_priority_keep

    def bucket(self, *, history: bool = False) -> TokenBucket:
        """The bucket a request draws from."""
        return self.history if history else self.general

    def _keep_for(self, bucket: TokenBucket, priority: Priority) -> float:
        if priority is Priority.HIGH:
            return 0.0
        return min(bucket.burst - 1, bucket.burst * self._keep)

    def reserve(
        self, now: float, *, history: bool = False, priority: Priority = Priority.HIGH
    ) -> float:
        """Commit one request; return the seconds to wait before sending it."""
        bucket = self.bucket(history=history)
        return bucket.reserve(now, keep=self._keep_for(bucket, priority))

    def try_reserve(
        self, now: float, *, history: bool = False, priority: Priority = Priority.LOW
    ) -> bool:
        """Commit one request only if it can go now (for work that may simply be skipped)."""
        bucket = self.bucket(history=history)
        return bucket.try_reserve(now, keep=self._keep_for(bucket, priority))

    def penalize(self, now: float, retry_after: float | None, *, history: bool = False) -> None:
        """HTTP 429 on a route: pause its bucket (one second when the server named no delay)."""
        self.bucket(history=history).penalize(now, 1.0 if retry_after is None else retry_after)
