"""Receipt clocks: integer nanoseconds on the wall clock and on the monotonic clock.

The feed takes its wall clock as a float-seconds callable (``time.time`` by default; tests and
the simulator pass their own). Receipt stamps are integers: :func:`wall_ns_of` gives the matching
nanosecond clock — ``time.time_ns`` itself for the default, so no precision is lost to a float
(which at today's epoch resolves ~240 ns) — and monotonic stamps come from ``time.monotonic_ns``.
"""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["mono_ns", "wall_ns_of"]

mono_ns: Callable[[], int] = time.monotonic_ns
"""The monotonic receipt clock (orders receipts and measures latency; not wall time)."""


def wall_ns_of(wall_clock: Callable[[], float]) -> Callable[[], int]:
    """The integer-nanosecond form of a float-seconds wall clock."""
    if wall_clock is time.time:
        return time.time_ns

    def wall_ns() -> int:
        return round(wall_clock() * 1_000_000_000)

    return wall_ns
