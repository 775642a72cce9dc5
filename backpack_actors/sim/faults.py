"""Fault injection plan for the simulator, scriptable from tests and from ``--fault`` specs.

Semantics (each fault is counted in ``Faults.injected[kind]`` when it actually takes effect):

* ``drop`` — the next depth message of ``depth.<symbol>`` is applied by the exchange but not sent:
  subscribers see a ``U`` gap of exactly one message. ``count`` repeats it on later messages.
* ``duplicate`` — the next depth message is sent twice.
* ``reorder`` — the next two consecutive depth messages are sent swapped.
* ``stall`` — every WS frame of the symbol (or all symbols) is held for ``seconds`` of trio time and
  then sent, in order (held, not dropped: a stall looks like a silent, then bursty, stream).
* ``disconnect`` — each WS connection (open now or opened while armed) is closed by the server
  (code 1011) after sending ``frames`` more data frames; ``connections`` bounds how many are closed.
* ``malformed`` — an extra truncated JSON text frame is sent just before the next data frame of
  the symbol (the real frame still follows, so no data is lost).
* ``refuse_handshake`` — the next ``count`` WS handshakes are answered with HTTP ``status``.
* ``http_429`` / ``http_5xx`` / ``slow`` — the next ``count`` REST requests get a 429 (with
  ``Retry-After``), a 5xx, or are delayed by ``delay`` seconds of trio time.
* ``http_451`` — every REST request (and WS handshake) gets 451 until disabled.

Depth faults apply to the real-time ``depth.<symbol>`` stream only (not to the aggregated
``depth.<window>.<symbol>`` streams) and are consumed only by messages that have subscribers.

CLI spec grammar: ``KIND[:key=value[,key=value...]][@SECONDS]`` — ``@SECONDS`` arms the fault that
many seconds after start (default 0). Examples: ``drop:symbol=BTC_USDC@10``, ``stall:seconds=5@20``,
``disconnect:frames=200``, ``http429:count=3,retry_after=2``, ``http451``, ``slow:delay=2,count=5``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["FAULT_KINDS", "FaultSpec", "Faults", "parse_fault_spec"]

FAULT_KINDS = (
    "drop",
    "duplicate",
    "reorder",
    "stall",
    "disconnect",
    "malformed",
    "refuse_handshake",
    "http_429",
    "http_451",
    "http_5xx",
    "slow",
)

_SPEC_METHODS = {
    "drop": "drop_delta",
    "duplicate": "duplicate_delta",
    "reorder": "reorder_deltas",
    "stall": "stall",
    "disconnect": "disconnect_after",
    "malformed": "malformed_frame",
    "refuse": "refuse_handshake",
    "refuse_handshake": "refuse_handshake",
    "http429": "http_429",
    "http_429": "http_429",
    "http451": "http_451",
    "http_451": "http_451",
    "http5xx": "http_5xx",
    "http_5xx": "http_5xx",
    "slow": "slow_responses",
}


@dataclass(frozen=True, slots=True)
class FaultSpec:
    """A parsed ``--fault`` spec: which ``Faults`` method, its keyword arguments, and when."""

    method: str
    kwargs: dict[str, Any]
    at: float = 0.0


def parse_fault_spec(text: str) -> FaultSpec:
    """Parse ``KIND[:k=v,...][@SECONDS]``; raises ``ValueError`` with the reason."""
    body, _, at_text = text.partition("@")
    kind, _, args_text = body.partition(":")
    method = _SPEC_METHODS.get(kind.strip().lower())
    if method is None:
        raise ValueError(f"unknown fault kind {kind!r}; expected one of {sorted(_SPEC_METHODS)}")
    params = inspect.signature(getattr(Faults, method)).parameters
    kwargs: dict[str, Any] = {}
    for item in filter(None, (a.strip() for a in args_text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or key not in params or key == "self":
            raise ValueError(f"fault {kind!r}: bad argument {item!r}; known: {list(params)[1:]}")
        default = params[key].default
        if isinstance(default, bool):
            kwargs[key] = value.lower() in {"1", "true", "yes", "on"}
        elif isinstance(default, int):
            kwargs[key] = int(value)
        elif isinstance(default, float) or params[key].annotation in {"float", float}:
            kwargs[key] = float(value)
        else:
            kwargs[key] = value
    at = float(at_text) if at_text else 0.0
    return FaultSpec(method, kwargs, at)


@dataclass
class _DepthFault:
    symbol: str | None
    remaining: int


@dataclass
class Faults:
    """Armed faults plus the ``injected`` counters; the exchange consults it while publishing."""

    now: Callable[[], float] = field(default=lambda: 0.0, repr=False)
    injected: dict[str, int] = field(default_factory=lambda: dict.fromkeys(FAULT_KINDS, 0))
    drops: list[_DepthFault] = field(default_factory=list)
    duplicates: list[_DepthFault] = field(default_factory=list)
    reorders: list[_DepthFault] = field(default_factory=list)
    malformed: list[_DepthFault] = field(default_factory=list)
    stalls: dict[str | None, float] = field(default_factory=dict)
    disconnect_frames: int | None = None
    disconnect_connections: int = 0
    disconnect_epoch: int = 0
    refuse_remaining: int = 0
    refuse_status: int = 503
    http429_remaining: int = 0
    retry_after: int = 1
    http451: bool = False
    http5xx_remaining: int = 0
    http5xx_status: int = 503
    slow_remaining: int = 0
    slow_delay: float = 0.0

    # ------------------------------------------------------------------ scripting API
    def drop_delta(self, symbol: str | None = None, count: int = 1) -> None:
        """Apply but do not send the next ``count`` depth messages (each a one-message gap)."""
        self.drops.append(_DepthFault(symbol, count))

    def duplicate_delta(self, symbol: str | None = None, count: int = 1) -> None:
        """Send the next ``count`` depth messages twice."""
        self.duplicates.append(_DepthFault(symbol, count))

    def reorder_deltas(self, symbol: str | None = None, count: int = 1) -> None:
        """Swap the next two consecutive depth messages (``count`` times)."""
        self.reorders.append(_DepthFault(symbol, count))

    def stall(self, seconds: float = 5.0, symbol: str | None = None) -> None:
        """Hold every WS frame of ``symbol`` (None: all) for ``seconds``, then send them."""
        self.stalls[symbol] = self.now() + seconds
        self.injected["stall"] += 1

    def disconnect_after(self, frames: int = 100, connections: int = 1) -> None:
        """Close up to ``connections`` WS connections, each after ``frames`` more data frames."""
        self.disconnect_frames = frames
        self.disconnect_connections = connections
        self.disconnect_epoch += 1

    def malformed_frame(self, symbol: str | None = None, count: int = 1) -> None:
        """Send a truncated JSON frame before the next data frame of ``symbol``."""
        self.malformed.append(_DepthFault(symbol, count))

    def refuse_handshake(self, count: int = 1, status: int = 503) -> None:
        """Reject the next ``count`` WS handshakes with HTTP ``status``."""
        self.refuse_remaining = count
        self.refuse_status = status

    def http_429(self, count: int = 1, retry_after: int = 1) -> None:
        """Answer the next ``count`` REST requests with 429 and ``Retry-After``."""
        self.http429_remaining = count
        self.retry_after = retry_after

    def http_451(self, enabled: bool = True) -> None:
        """Answer every REST request and WS handshake with 451 while enabled."""
        self.http451 = enabled

    def http_5xx(self, count: int = 1, status: int = 503) -> None:
        """Answer the next ``count`` REST requests with ``status`` (500..599)."""
        if not 500 <= status <= 599:
            raise ValueError(f"http_5xx status must be 5xx, got {status}")
        self.http5xx_remaining = count
        self.http5xx_status = status

    def slow_responses(self, delay: float = 1.0, count: int = 1) -> None:
        """Delay the next ``count`` REST responses by ``delay`` seconds."""
        self.slow_remaining = count
        self.slow_delay = delay

    def apply(self, spec: FaultSpec | str) -> None:
        """Arm a parsed (or textual) CLI spec now."""
        if isinstance(spec, str):
            spec = parse_fault_spec(spec)
        getattr(self, spec.method)(**spec.kwargs)

    def clear(self) -> None:
        """Disarm every fault (counters are kept)."""
        self.drops.clear()
        self.duplicates.clear()
        self.reorders.clear()
        self.malformed.clear()
        self.stalls.clear()
        self.disconnect_frames = None
        self.disconnect_connections = 0
        self.refuse_remaining = 0
        self.http429_remaining = 0
        self.http451 = False
        self.http5xx_remaining = 0
        self.slow_remaining = 0

    # ------------------------------------------------------------------ used by the exchange
    @staticmethod
    def take(pending: list[_DepthFault], symbol: str) -> bool:
        """Consume one armed depth fault matching ``symbol``."""
        for fault in pending:
            if fault.symbol is None or fault.symbol == symbol:
                fault.remaining -= 1
                if fault.remaining <= 0:
                    pending.remove(fault)
                return True
        return False

    def stalled_until(self, symbol: str) -> float | None:
        """Deadline of an active stall covering ``symbol``, if any."""
        deadline = max(self.stalls.get(symbol, 0.0), self.stalls.get(None, 0.0))
        return deadline if deadline > self.now() else None
