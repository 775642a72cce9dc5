"""Unsubscribing every market is the consumer's choice, not a delisting.

Fails on the current library (see the final report): ``MetadataActor.refresh`` raises
NoSymbolsLeftError ("every symbol of the feed was delisted") whenever the feed tracks no symbol
after a refresh, even when nothing was delisted, so a feed whose consumer unsubscribed everything
(e.g. to subscribe other markets next) dies at the next metadata refresh; and ``Feed.symbols``
falls back to the configured symbols when none is left."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio

from backpack_actors.config import FeedConfig
from backpack_actors.core.events import StatusEvent, StatusKind
from backpack_actors.feed import Feed, open_feed
from backpack_actors.sim import SimConfig, SimExchange
from backpack_actors.testing import SimRestClient, sim_memory_connector
from tests.pipeline_helpers import ConsumerBooks, assert_matches_truth


async def test_unsubscribe_everything_then_subscribe_another(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Unsubscribe BTC (the only market), let two metadata refreshes pass, subscribe SOL: the
    feed is still running, ``feed.symbols`` is ``[]`` meanwhile, and SOL's book equals the
    truth."""
    exchange = SimExchange(seed=64, markets=["BTC_USDC", "SOL_USDC"], config=SimConfig(rate=40))
    config = FeedConfig.from_kwargs(
        symbols=["BTC-USDC"],
        rest_url="http://sim.invalid",
        ws_url="ws://sim.invalid",
        snapshot_interval=0,
        metadata_refresh_interval=10,
    )
    consumer = ConsumerBooks()
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
                    if isinstance(event, StatusEvent) and event.kind is StatusKind.BOOK_READY:
                        break
                assert await feed.unsubscribe("BTC-USDC") == ["BTC_USDC"]
                await trio.sleep(25)
                assert feed.symbols == []
                assert await feed.subscribe("SOL-USDC") == ["SOL_USDC"]
                async for event in feed:
                    consumer.apply(event)
                    if consumer.deltas.get("SOL_USDC", 0) >= 300:
                        break
            nursery.cancel_scope.cancel()
    assert StatusKind.UNSUBSCRIBED in consumer.kinds("BTC-USDC")
    assert consumer.kinds("SOL-USDC")[:2] == [StatusKind.LISTED, StatusKind.BOOK_READY]
    assert_matches_truth(consumer, exchange, "SOL_USDC")


@asynccontextmanager
async def _sim_feed(
    markets: list[str], seed: int, *, consume: bool = True, **settings: Any
) -> AsyncIterator[Feed]:
    """A feed on the in-memory simulator of ``markets`` (``settings``: FeedConfig keys)."""
    exchange = SimExchange(seed=seed, markets=markets, config=SimConfig(rate=40))
    config = FeedConfig.from_kwargs(
        rest_url="http://sim.invalid", ws_url="ws://sim.invalid", snapshot_interval=0, **settings
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(exchange.run)
        async with open_feed(
            config,
            rest_client=SimRestClient(exchange),
            ws_connect=sim_memory_connector(exchange),
            consume=consume,
        ) as feed:
            yield feed
        nursery.cancel_scope.cancel()


async def test_symbols_is_empty_once_everything_is_unsubscribed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """No metadata refresh at all: after unsubscribing the only market, ``feed.symbols`` is
    ``[]``, not the configured list."""
    with trio.fail_after(60):
        async with _sim_feed(
            ["BTC_USDC"], 65, symbols=["BTC-USDC"], metadata_refresh_interval=0
        ) as feed:
            assert feed.symbols == ["BTC_USDC"]
            await feed.unsubscribe("BTC-USDC")
            assert feed.markets == {}
            assert feed.symbols == []


async def test_subscribe_and_unsubscribe_take_lists_and_name_a_bad_argument(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """ccxt habits pass lists (``watch_order_book_for_symbols``): they work like separate
    arguments; an argument that is no symbol is a TypeError that says what a symbol is."""
    markets = ["BTC_USDC", "ETH_USDC", "SOL_USDC"]
    with trio.fail_after(60):
        async with _sim_feed(
            markets, 66, symbols=["BTC-USDC"], metadata_refresh_interval=0
        ) as feed:
            assert await feed.subscribe(["ETH-USDC", "SOL/USDC"]) == ["ETH_USDC", "SOL_USDC"]
            assert sorted(feed.symbols) == markets
            assert await feed.unsubscribe(["ETH-USDC"], "SOL-USDC") == ["ETH_USDC", "SOL_USDC"]
            assert feed.symbols == ["BTC_USDC"]
            with pytest.raises(TypeError, match="a symbol is a string"):
                await feed.subscribe(42)  # type: ignore[arg-type]
            with pytest.raises(TypeError, match="a symbol is a string"):
                await feed.unsubscribe([None])  # type: ignore[list-item]


async def test_a_refresh_of_symbols_all_does_not_add_back_what_was_unsubscribed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """``symbols: all``: the markets the consumer unsubscribed stay out across metadata refreshes
    (a sharded bus publisher gives most of them up on purpose); subscribing one again works."""
    markets = ["BTC_USDC", "SOL_USDC", "ETH_USDC"]
    with trio.fail_after(120):
        async with _sim_feed(
            markets, 67, consume=False, symbols="all", metadata_refresh_interval=10
        ) as feed:
            assert sorted(feed.symbols) == ["BTC_USDC", "ETH_USDC", "SOL_USDC"]
            await feed.unsubscribe("SOL-USDC", "ETH-USDC")
            await trio.sleep(25)  # two refreshes
            assert feed.tree.metadata.refreshes >= 2
            assert feed.symbols == ["BTC_USDC"]
            assert await feed.subscribe("ETH-USDC") == ["ETH_USDC"]
            await trio.sleep(15)
            assert sorted(feed.symbols) == ["BTC_USDC", "ETH_USDC"]
