"""REST-only mode on a market that had not traded yet when the feed started.

Fails on the current library (see the final report): the first trade poll's answer is taken as
history only when it contains trades; an *empty* first answer leaves the start unmarked, so the
first poll that does see trades is taken as history too and those trades, printed after the feed
started, are never published nor reported."""

from __future__ import annotations

import trio

from backpack_actors.config import FeedConfig
from backpack_actors.core.events import Trade
from backpack_actors.feed import open_feed
from backpack_actors.sim import SimConfig, SimExchange
from backpack_actors.testing import SimRestClient, sim_memory_connector


async def test_trades_after_an_empty_first_poll_are_published(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The market is quiet (no trade ever) when the REST-only feed starts; 5 s later it starts
    trading: every trade it prints is published, from the very first one."""
    exchange = SimExchange(
        seed=61, markets=["BTC_USDC"], config=SimConfig(rate=40, autostart=False)
    )
    config = FeedConfig.from_kwargs(
        symbols=["BTC-USDC"],
        rest_url="http://sim.invalid",
        ws_url="ws://sim.invalid",
        rest_only=True,
    )
    published: list[int] = []
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            await nursery.start(exchange.run)
            async with open_feed(
                config,
                rest_client=SimRestClient(exchange),
                ws_connect=sim_memory_connector(exchange),
            ) as feed:
                assert not exchange.trades("BTC_USDC"), "no trade before the feed started"
                resumed = False
                async for event in feed:
                    if isinstance(event, Trade):
                        published.append(event.trade_id)
                    if not resumed and trio.current_time() >= 5:
                        resumed = True
                        exchange.resume()
                    if trio.current_time() >= 20:
                        break
            nursery.cancel_scope.cancel()
    truth = [t.id for t in exchange.trades("BTC_USDC")]
    assert len(truth) > 50
    assert published, "trades are published"
    assert published[0] == truth[0], (published[0], truth[0])
    assert published == truth[: len(published)]
