"""A WebSocket outage across many symbols degrades each to REST-only; it never kills the feed.

Found in review: the streams supervisor's single restart window (10 in 60 s) was shared by every
symbol, so with 3 symbols x 5 failures before REST-only it escalated first.
"""

from __future__ import annotations

import trio

from backpack_actors.config import FeedConfig
from backpack_actors.core.events import StatusEvent, StatusKind
from backpack_actors.feed import open_feed
from backpack_actors.sim import SimConfig, SimExchange
from backpack_actors.testing import SimRestClient, sim_memory_connector
from tests.pipeline_helpers import ConsumerBooks, assert_matches_truth

SYMBOLS = ["BTC_USDC", "ETH_USDC", "SOL_USDC", "BTC_USDC_PERP"]


async def test_outage_on_every_symbol_degrades_each_to_rest_only(
    autojump_clock: trio.testing.MockClock,
) -> None:
    exchange = SimExchange(seed=5, markets=SYMBOLS, config=SimConfig(rate=50))
    exchange.faults.refuse_handshake(count=10_000, status=503)
    config = FeedConfig.from_kwargs(
        symbols=[s.replace("_", "-") for s in SYMBOLS],
        rest_url="http://sim.invalid",
        ws_url="ws://sim.invalid",
        snapshot_interval=5,
        promote_probe_interval=600,
    )
    consumer = ConsumerBooks()
    degraded: set[str] = set()
    with trio.fail_after(300):
        async with trio.open_nursery() as nursery:
            await nursery.start(exchange.run)
            async with open_feed(
                config,
                rest_client=SimRestClient(exchange),
                ws_connect=sim_memory_connector(exchange),
            ) as feed:
                async for event in feed:
                    consumer.apply(event)
                    if (
                        isinstance(event, StatusEvent)
                        and event.kind is StatusKind.DEGRADED_REST_ONLY
                    ):
                        degraded.add(event.symbol)
                    if len(degraded) == len(SYMBOLS) and all(
                        consumer.snapshots.get(s, 0) >= 3 for s in SYMBOLS
                    ):
                        break
                stats = feed.statistics()
            nursery.cancel_scope.cancel()
    assert all(stats["streams"][s]["mode"] == "rest" for s in SYMBOLS)  # type: ignore[index]
    for sym in SYMBOLS:
        assert_matches_truth(consumer, exchange, sym)
