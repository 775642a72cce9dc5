"""REST-only fallback after repeated WebSocket failures, promotion back to WS, forced REST-only."""

from __future__ import annotations

import trio

from backpack_actors.config import FeedConfig
from backpack_actors.core.events import BookDelta, StatusEvent, StatusKind
from backpack_actors.feed import open_feed
from backpack_actors.sim import SimConfig, SimExchange
from backpack_actors.testing import SimRestClient, sim_memory_connector
from tests.pipeline_helpers import ConsumerBooks, assert_matches_truth, assert_trades_match


def _config(**overrides: object) -> FeedConfig:
    settings: dict[str, object] = {
        "symbols": ["BTC-USDC"],
        "rest_url": "http://sim.invalid",
        "ws_url": "ws://sim.invalid",
        "snapshot_interval": 5,
        "max_ws_failures": 4,
        "promote_probe_interval": 60,
        "promote_healthy_after": 30,
    }
    settings.update(overrides)
    return FeedConfig.from_kwargs(**settings)


async def test_degrades_to_rest_only_then_promotes_back(
    autojump_clock: trio.testing.MockClock,
) -> None:
    exchange = SimExchange(seed=4, markets=["BTC_USDC"], config=SimConfig(rate=100))
    # 4 refusals degrade the symbol; the probes at +60 s and +120 s are refused too.
    exchange.faults.refuse_handshake(count=6, status=503)
    consumer = ConsumerBooks()
    times: dict[StatusKind, float] = {}
    deltas_after_recovery = 0
    with trio.fail_after(900):
        async with trio.open_nursery() as nursery:
            await nursery.start(exchange.run)
            start = trio.current_time()
            async with open_feed(
                _config(),
                rest_client=SimRestClient(exchange),
                ws_connect=sim_memory_connector(exchange),
            ) as feed:
                async for event in feed:
                    consumer.apply(event)
                    if isinstance(event, StatusEvent):
                        times.setdefault(event.kind, trio.current_time() - start)
                    if StatusKind.RECOVERED_WS in times and isinstance(event, BookDelta):
                        deltas_after_recovery += 1
                        if deltas_after_recovery >= 300:
                            break
                stats = feed.statistics()
            nursery.cancel_scope.cancel()
    kinds = consumer.kinds()
    assert kinds.count(StatusKind.RECONNECTING) == 3
    assert kinds.index(StatusKind.DEGRADED_REST_ONLY) < kinds.index(StatusKind.BOOK_READY)
    assert kinds.index(StatusKind.RECOVERED_WS) < kinds.index(StatusKind.RESYNCED)
    assert exchange.faults.injected["refuse_handshake"] == 6
    # Third probe (~+180 s after degrading) succeeds, then must stay healthy for 30 s.
    recovered_after = times[StatusKind.RECOVERED_WS] - times[StatusKind.DEGRADED_REST_ONLY]
    assert 200 <= recovered_after <= 230, recovered_after
    # While REST-only, books came as whole snapshots every snapshot_interval.
    assert consumer.snapshots["BTC_USDC"] >= 30
    health = stats["streams"]["BTC_USDC"]  # type: ignore[index]
    assert (health["mode"], health["degradations"], health["promotions"]) == ("ws", 1, 1)
    assert_matches_truth(consumer, exchange, "BTC_USDC")
    assert assert_trades_match(consumer, exchange, "BTC_USDC") > 1000


async def test_rest_only_from_the_start(autojump_clock: trio.testing.MockClock) -> None:
    exchange = SimExchange(seed=8, markets=["BTC_USDC"], config=SimConfig(rate=100))
    consumer = ConsumerBooks()
    with trio.fail_after(300):
        async with trio.open_nursery() as nursery:
            await nursery.start(exchange.run)
            async with open_feed(
                _config(rest_only=True, snapshot_interval=2),
                rest_client=SimRestClient(exchange),
                ws_connect=sim_memory_connector(exchange),
            ) as feed:
                async for event in feed:
                    consumer.apply(event)
                    if consumer.snapshots.get("BTC_USDC", 0) >= 20:
                        break
                stats = feed.statistics()
            nursery.cancel_scope.cancel()
    assert "BTC_USDC" not in consumer.deltas, "no WebSocket at all"
    assert stats["streams"]["BTC_USDC"]["mode"] == "rest"  # type: ignore[index]
    assert_matches_truth(consumer, exchange, "BTC_USDC")
    assert assert_trades_match(consumer, exchange, "BTC_USDC") > 100
