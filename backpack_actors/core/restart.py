"""Restart maths for supervisors: the OTP restart window and a jittered, capped backoff.

Pure: the time ``now`` (seconds, any monotonic domain) and the ``rng`` are always parameters.
"""

from __future__ import annotations

import collections
import math
import random

import attrs

__all__ = ["Backoff", "RestartWindow"]


@attrs.define
class RestartWindow:
    """OTP restart intensity: at most ``intensity`` restarts within any ``period`` seconds.

    ``record(now)`` notes one restart and answers whether it is still allowed; it answers False
    once more than ``intensity`` restarts fall within the last ``period`` seconds (both ends
    inclusive, as in OTP's ``supervisor:add_restart``), and the supervisor must then give up.
    """

    intensity: int = attrs.field()
    period: float = attrs.field()
    _times: collections.deque[float] = attrs.field(factory=collections.deque, init=False)

    @intensity.validator
    def _check_intensity(self, _attribute: object, value: int) -> None:
        if value < 0:
            raise ValueError(f"intensity must be >= 0, got {value}")

    @period.validator
    def _check_period(self, _attribute: object, value: float) -> None:
        if not value > 0:
            raise ValueError(f"period must be > 0, got {value}")

    def record(self, now: float) -> bool:
        """Record a restart at ``now``; False when the window is exceeded."""
        while self._times and now - self._times[0] > self.period:
            self._times.popleft()
        self._times.append(now)
        return len(self._times) <= self.intensity

    def count(self, now: float) -> int:
        """Restarts recorded within the last ``period`` seconds."""
        return sum(1 for t in self._times if now - t <= self.period)

    def __len__(self) -> int:
        """Restarts remembered so far (pruned only when ``record`` looks at the window)."""
        return len(self._times)

    def reset(self) -> None:
        """Forget every recorded restart."""
        self._times.clear()


@attrs.define
class Backoff:
    """Exponential, jittered, capped reconnect delays with a stability-gated reset.

    The n-th consecutive failure (n counted from 0) waits ``min(cap, base * factor**n)`` times a
    uniform jitter factor in ``[1 - jitter, 1 + jitter]``. The attempt counter resets only once the
    child has stayed healthy for ``stable_after`` seconds after :meth:`mark_connected`: a child
    that connects and dies at once keeps backing off (a counter that resets on connect hammers a
    flapping server at ``base`` forever).
    """

    base: float = attrs.field(default=0.5)
    factor: float = attrs.field(default=2.0)
    cap: float = attrs.field(default=30.0)
    jitter: float = attrs.field(default=0.2)
    stable_after: float = attrs.field(default=30.0)
    attempt: int = attrs.field(default=0, init=False)
    connected_at: float | None = attrs.field(default=None, init=False)

    def __attrs_post_init__(self) -> None:
        if not self.base >= 0:
            raise ValueError(f"base must be >= 0, got {self.base}")
        if not self.factor >= 1:
            raise ValueError(f"factor must be >= 1, got {self.factor}")
        if not self.cap >= self.base:
            raise ValueError(f"cap must be >= base, got cap={self.cap} base={self.base}")
        if not 0 <= self.jitter < 1:
            raise ValueError(f"jitter must be in [0, 1), got {self.jitter}")
        if not self.stable_after >= 0:
            raise ValueError(f"stable_after must be >= 0, got {self.stable_after}")

    def fresh(self) -> Backoff:
        """A new Backoff with the same parameters and a zero attempt counter."""
        return Backoff(self.base, self.factor, self.cap, self.jitter, self.stable_after)

    @property
    def max_delay(self) -> float:
        """Upper bound of any delay: ``cap * (1 + jitter)``."""
        return self.cap * (1 + self.jitter)

    def raw_delay(self, attempt: int) -> float:
        """The un-jittered delay of the given attempt number."""
        try:
            return min(self.cap, self.base * self.factor**attempt)
        except OverflowError:
            return self.cap

    def next_delay(self, now: float, rng: random.Random) -> float:
        """Delay before the next attempt after a failure at ``now``; advances the counter."""
        self.mark_healthy(now)
        self.connected_at = None
        raw = self.raw_delay(self.attempt)
        self.attempt += 1
        factor = rng.uniform(1 - self.jitter, 1 + self.jitter) if self.jitter else 1.0
        # uniform() may round a hair past its bounds; the documented bound is a hard promise.
        return min(raw * factor, self.max_delay) if math.isfinite(raw) else self.max_delay

    def mark_connected(self, now: float) -> None:
        """The child is up (connected, subscribed, ready) since ``now``."""
        self.connected_at = now

    def mark_healthy(self, now: float) -> bool:
        """Reset the counter if the child has been up for ``stable_after`` seconds; True if so."""
        if self.connected_at is not None and now - self.connected_at >= self.stable_after:
            self.attempt = 0
            return True
        return False

    def reset(self) -> None:
        """Forget every failure (e.g. after an operator intervention)."""
        self.attempt = 0
        self.connected_at = None
