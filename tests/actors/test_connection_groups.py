"""Markets multiplexed on connections (issue 10): a dropped connection resyncs exactly its own
markets; the others, on another connection, see nothing."""

from __future__ import annotations

import trio

from backpack_actors.config import FeedConfig
from backpack_actors.core.events import StatusKind
from backpack_actors.sim import SimConfig, SimExchange
from tests.pipeline_helpers import assert_matches_truth, assert_trades_match, run_pipeline

SYMBOLS = ("BTC_USDC", "ETH_USDC", "SOL_USDC", "BTC_USDC_PERP")


async def test_a_dropped_connection_resyncs_exactly_its_markets(
    autojump_clock: trio.testing.MockClock,
) -> None:
    exchange = SimExchange(seed=31, markets=list(SYMBOLS), config=SimConfig(rate=100))
    config = FeedConfig.from_kwargs(
        symbols=[s.replace("_", "-") for s in SYMBOLS],
        rest_url="http://sim.invalid",
        ws_url="ws://sim.invalid",
        snapshot_interval=0,
        connection_group_size=2,
    )
    consumer, stats = await run_pipeline(
        exchange,
        config,
        after_ready=lambda ex: ex.faults.disconnect_after(frames=40, connections=1),
        symbols=SYMBOLS,
        deltas_after=600,
    )
    assert exchange.faults.injected["disconnect"] == 1
    connections = stats["connections"]
    assert [len(c["symbols"]) for c in connections] == [2, 2]  # type: ignore[union-attr]
    (dropped,) = [c for c in connections if c["reconnects"]]  # type: ignore[index]
    (kept,) = [c for c in connections if not c["reconnects"]]  # type: ignore[index]
    assert dropped["reconnects"] == 1
    for symbol in dropped["symbols"]:  # type: ignore[index]
        kinds = consumer.kinds(symbol.replace("_", "-"))
        assert kinds.count(StatusKind.RECONNECTING) == 1, (symbol, kinds)
        assert kinds.count(StatusKind.RESYNCED) == 1, (symbol, kinds)
    for symbol in kept["symbols"]:  # type: ignore[index]
        assert consumer.kinds(symbol.replace("_", "-")) == [StatusKind.BOOK_READY]
    for symbol in SYMBOLS:
        assert_matches_truth(consumer, exchange, symbol)
        assert_trades_match(consumer, exchange, symbol)
