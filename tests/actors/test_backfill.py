"""Trade backfill from REST pages through history while new trades keep shifting its window."""

from __future__ import annotations

import random

import trio

from backpack_actors.actors.rest import RestActor, RestSettings, backfill_trades
from backpack_actors.sim import SimConfig, SimExchange
from backpack_actors.testing import SimRestClient


async def test_backfill_far_behind_while_trades_keep_printing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    exchange = SimExchange(
        seed=3, markets=["BTC_USDC"], config=SimConfig(rate=1000, trade_probability=0.5)
    )
    client = SimRestClient(exchange)
    rest = RestActor(
        client,
        lambda _message: None,
        settings=RestSettings(rate_per_s=10, burst=20, history_per_min=30),
        wall_clock=lambda: 0.0,
        rng=random.Random(1),
    )
    with trio.fail_after(600):
        async with trio.open_nursery() as nursery:
            await nursery.start(exchange.run)
            await trio.sleep(15)  # thousands of trades
            trades = exchange.trades("BTC_USDC")
            assert len(trades) > 5000
            # A gap 1200..3500 trades behind the newest: beyond /trades' newest 1000.
            first, last = trades[-3500].id, trades[-1200].id
            got = await backfill_trades(rest, client, "BTC_USDC", first, last)
            # The history bucket (0.5/s) made pages wait while the market kept trading.
            assert len(exchange.trades("BTC_USDC")) > len(trades) + 500
            nursery.cancel_scope.cancel()
    truth = {t.id: t for t in exchange.trades("BTC_USDC")}
    assert [t.id for t in got] == list(range(first, last + 1))
    for trade in got:
        assert (trade.price, trade.quantity) == (truth[trade.id].price, truth[trade.id].quantity)
