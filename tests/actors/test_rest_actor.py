"""Issue 11, the REST actor (unit level, fake client): priorities, per-symbol fairness, and one
symbol's failures retried as delayed jobs that never hold a worker another symbol needs.

The old design had one snapshot worker taking requests from a list sorted by priority and retrying
a failing depth call in-line with ``max_attempts=None``: a symbol whose snapshot kept failing held
the only worker forever, and REST-only polls did not go through it at all (each stream polled on
its own, outside any queue)."""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable

import msgspec
import pytest
import trio

from backpack_actors.actors.messages import (
    BackfillDone,
    BackfillRequest,
    InboxMessage,
    PollRequest,
    RestTrades,
    SnapshotFailed,
    SnapshotReady,
    SnapshotRequest,
)
from backpack_actors.actors.rest import RestActor, RestSettings
from backpack_actors.core.symbols import MarketTable
from backpack_actors.core.wire import DepthSnapshot, RestTrade, decode_depth_snapshot
from backpack_actors.errors import ExchangeRequestError, ExchangeUnavailableError


class FakeClient:
    """Every call takes ``latency`` virtual seconds and is logged as (start, kind, symbol)."""

    def __init__(self, latency: float = 1.0) -> None:
        self.latency = latency
        self.calls: list[tuple[float, str, str]] = []
        self.failing: dict[str, Callable[[], Exception]] = {}
        self.update_id = 1000

    async def _call(self, kind: str, symbol: str) -> None:
        self.calls.append((trio.current_time(), kind, symbol))
        await trio.sleep(self.latency)
        if symbol in self.failing:
            raise self.failing[symbol]()

    async def load_markets(self) -> MarketTable:
        return MarketTable([])

    async def depth(self, exchange_symbol: str) -> DepthSnapshot:
        await self._call("depth", exchange_symbol)
        self.update_id += 1
        return decode_depth_snapshot(
            msgspec.json.encode(
                {
                    "asks": [["101.0", "1.0"]],
                    "bids": [["100.0", "1.0"]],
                    "lastUpdateId": str(self.update_id),
                    "timestamp": None,
                }
            ),
            exchange_symbol,
        )

    async def recent_trades(self, exchange_symbol: str, limit: int) -> list[RestTrade]:
        await self._call("trades", exchange_symbol)
        return []

    async def trade_history(self, exchange_symbol: str, limit: int, offset: int) -> list[RestTrade]:
        await self._call("history", exchange_symbol)
        return []

    async def aclose(self) -> None:
        pass

    def depth_calls(self, symbol: str) -> list[float]:
        return [t for t, kind, s in self.calls if kind == "depth" and s == symbol]


def _actor(
    client: FakeClient, delivered: list[tuple[float, InboxMessage]], **settings: object
) -> RestActor:
    defaults: dict[str, object] = {"concurrency": 1, "snapshot_interval": 0.0}
    defaults.update(settings)
    return RestActor(
        client,
        lambda message: delivered.append((trio.current_time(), message)),
        settings=RestSettings(**defaults),  # type: ignore[arg-type]
        wall_clock=trio.current_time,
        rng=random.Random(7),
    )


async def test_resync_snapshot_is_served_before_queued_polls_and_backfill(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Every worker is busy, a backfill and twelve REST-only polls (six symbols) are queued; a
    resync SnapshotRequest for ETH arriving after them is the next call made, and the backfill
    runs on its own lane meanwhile."""
    client = FakeClient(latency=1.0)
    delivered: list[tuple[float, InboxMessage]] = []
    rest = _actor(client, delivered)
    polled = [f"P{i}_USDC" for i in range(6)]
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            await nursery.start(rest.run)
            # Occupy both workers that serve priorities 0..2 (concurrency 1 + the spare one).
            rest.request(PollRequest("BUSY1_USDC", "book"))
            rest.request(PollRequest("BUSY2_USDC", "book"))
            await trio.sleep(0.1)
            assert len(client.calls) == 2
            rest.request(BackfillRequest("BTC_USDC", 10, 20))
            for symbol in polled:
                rest.request(PollRequest(symbol, "trades"))
                rest.request(PollRequest(symbol, "book"))
            requested_at = trio.current_time()
            rest.request(SnapshotRequest("ETH_USDC", "gap detected", True))
            await trio.sleep(30)
            nursery.cancel_scope.cancel()
    after = [(t, kind, s) for t, kind, s in client.calls if t >= requested_at]
    backfill = [c for c in after if c[2] == "BTC_USDC"]
    others = [c for c in after if c[2] != "BTC_USDC"]
    assert others[0][1:] == ("depth", "ETH_USDC"), others[:3]
    assert others[0][0] - requested_at <= 1.0, "served as soon as a worker was free"
    assert backfill
    assert backfill[0][0] - requested_at < 0.5, "the backfill has its own lane"
    # Then book polls (priority 1) before trade polls (priority 2).
    kinds = [kind for _, kind, s in others[1:] if s in polled]
    assert kinds == ["depth"] * 6 + ["trades"] * 6, kinds
    ready = [m for _, m in delivered if isinstance(m, SnapshotReady) and m.symbol == "ETH_USDC"]
    assert [m.reason for m in ready] == ["gap detected"]
    assert any(isinstance(m, BackfillDone) for _, m in delivered)
    assert sum(isinstance(m, RestTrades) for _, m in delivered) == 6


async def test_symbols_at_one_priority_are_served_round_robin(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Four symbols keep asking for a book poll the moment the last one is answered; with two
    workers, the calls go round-robin: at every point no symbol is more than one call ahead of
    another, whoever asked first."""
    client = FakeClient(latency=0.5)
    delivered: list[tuple[float, InboxMessage]] = []
    symbols = ["A_USDC", "B_USDC", "C_USDC", "D_USDC"]

    def deliver(message: InboxMessage) -> None:
        delivered.append((trio.current_time(), message))
        # Each symbol asks again the moment it is answered (A, asked for first, stays eager).
        rest.request(PollRequest(message.symbol, "book"))

    rest = RestActor(
        client,
        deliver,
        settings=RestSettings(concurrency=1, snapshot_interval=0.0),
        wall_clock=trio.current_time,
        rng=random.Random(8),
    )
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            for symbol in symbols:
                rest.request(PollRequest(symbol, "book"))
            await nursery.start(rest.run)
            await trio.sleep(30)
            nursery.cancel_scope.cancel()
    order = [s for _, kind, s in client.calls]
    assert len(order) >= 100
    counts = dict.fromkeys(symbols, 0)
    for symbol in order:
        counts[symbol] += 1
        assert max(counts.values()) - min(counts.values()) <= 1, (counts, order[:20])


@pytest.mark.parametrize(
    "error",
    [
        lambda: ExchangeUnavailableError("HTTP 503"),
        lambda: ExchangeRequestError("http://x/api/v1/depth", 400, "INVALID_SYMBOL", "bad"),
    ],
    ids=["5xx", "400"],
)
async def test_failing_symbols_never_delay_another(
    autojump_clock: trio.testing.MockClock, error: Callable[[], Exception]
) -> None:
    """Three symbols' snapshots fail forever while B asks for a snapshot again on every answer:
    each of B's requests is served within a call's latency (the failures are retried as delayed
    jobs, never holding a worker), the failing ones get SnapshotFailed after
    ``snapshot_attempts`` and then slow down to one call per 30..300 s."""
    client = FakeClient(latency=0.5)
    failing = ["X_USDC", "Y_USDC", "Z_USDC"]
    for symbol in failing:
        client.failing[symbol] = error
    delivered: list[tuple[float, InboxMessage]] = []
    asked: list[float] = []

    def deliver(message: InboxMessage) -> None:
        delivered.append((trio.current_time(), message))
        if message.symbol == "B_USDC":
            asked.append(trio.current_time())
            rest.request(SnapshotRequest("B_USDC", "resync", True))
        elif isinstance(message, SnapshotFailed):
            # The reconciler asks again after a failure (BookSync.on_snapshot_failed).
            rest.request(SnapshotRequest(message.symbol, "snapshot failed", True))

    rest = RestActor(
        client,
        deliver,
        settings=RestSettings(concurrency=1, snapshot_interval=0.0),
        wall_clock=trio.current_time,
        rng=random.Random(9),
    )
    with trio.fail_after(900):
        async with trio.open_nursery() as nursery:
            for symbol in failing:
                rest.request(SnapshotRequest(symbol, "initial"))
            asked.append(0.0)
            rest.request(SnapshotRequest("B_USDC", "initial"))
            await nursery.start(rest.run)
            await trio.sleep(600)
            nursery.cancel_scope.cancel()
    b_calls = client.depth_calls("B_USDC")
    # B is never queued behind a failing symbol for more than one call in flight.
    waits = [call - ask for ask, call in zip(asked, b_calls, strict=False)]
    assert len(b_calls) > 500
    assert max(waits) <= 0.5 + 1e-6, max(waits)
    for symbol in failing:
        failed = [m for _, m in delivered if isinstance(m, SnapshotFailed) and m.symbol == symbol]
        assert failed
        assert failed[0].attempts >= rest.settings.snapshot_attempts
        calls = client.depth_calls(symbol)
        first_failed_at = next(
            t for t, m in delivered if isinstance(m, SnapshotFailed) and m.symbol == symbol
        )
        later = [t for t in calls if t > first_failed_at]
        gaps = [b - a for a, b in itertools.pairwise(calls) if a >= first_failed_at - 1]
        assert 3 <= len(later) <= 21, later
        assert all(29 <= gap <= 301 for gap in gaps), gaps
