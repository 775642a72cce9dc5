"""Issue 14 wired into the main feed: ``channels: [trades, l2_book, orders, positions]``.

The account's events reach the same consumer as the market data, equal to the simulator's truth
after drops and cuts; a refused key is reported in-band and the public streams go on; account
channels without credentials are a config error naming the key.
"""

from __future__ import annotations

import random
from typing import Any

import pytest
import trio

from backpack_actors.auth import Signer, generate_keypair
from backpack_actors.config import FeedConfig
from backpack_actors.core.events import BookDelta, StatusEvent, Trade
from backpack_actors.errors import ConfigError
from backpack_actors.feed import open_feed
from backpack_actors.private import Fill, OrderUpdate, SimPrivateRest
from backpack_actors.sim import SimConfig, SimExchange
from backpack_actors.sinks.jsonl import encode_event
from backpack_actors.testing import SimRestClient, sim_memory_connector
from tests.private.helpers import Account
from tests.private.test_private_feed import _settle, _trade

MARKETS = ["ETH_USDC", "SOL_USDC_PERP"]


def _feed_config(public: str, secret: str, **extra: Any) -> FeedConfig:
    return FeedConfig.from_kwargs(
        symbols=["ETH-USDC", "SOL-USDC-PERP"],
        channels=["trades", "l2_book", "orders", "positions"],
        api_key=public,
        api_secret=secret,
        rest_url="http://sim.invalid",
        ws_url="ws://sim.invalid",
        snapshot_interval=0,
        **extra,
    )


async def test_account_events_reach_the_main_feed_equal_to_truth(autojump_clock: Any) -> None:
    public, secret = generate_keypair()
    exchange = SimExchange(seed=31, markets=MARKETS, config=SimConfig(api_keys=(public,)))
    signer = Signer(public, secret, clock=lambda: int(trio.current_time() * 1000))
    account = Account()
    public_events: list[Any] = []
    with trio.fail_after(600):
        async with trio.open_nursery() as nursery:
            await nursery.start(exchange.run)
            async with open_feed(
                _feed_config(public, secret),
                rest_client=SimRestClient(exchange),
                ws_connect=sim_memory_connector(exchange),
                wall_clock=lambda: exchange.now_us() / 1e6,
                private_rest=SimPrivateRest(exchange, signer),
            ) as feed:

                async def consume() -> None:
                    async for event in feed:
                        if isinstance(event, Trade | BookDelta):
                            public_events.append(event)
                        else:
                            account.apply(event)
                        # Every event the feed delivers has a JSON Lines form.
                        encode_event(event)

                nursery.start_soon(consume)
                await _trade(random.Random(11), exchange, steps=60, faults=True)
                await _settle(feed.tree.private, exchange)
                # The account events travel through the emitter and this consumer's queue after
                # the reconciliation that found them: give the consumer (virtual) time to apply
                # them, then compare.
                for _ in range(60):
                    try:
                        account.assert_matches(exchange.engine)
                        break
                    except AssertionError:
                        await trio.sleep(0.5)
                account.assert_matches(exchange.engine)
            nursery.cancel_scope.cancel()
    assert exchange.engine.faults.dropped > 0
    assert any(isinstance(e, Fill) and e.reconciled for e in account.events)
    assert any(isinstance(e, OrderUpdate) for e in account.events)
    assert public_events, "market data flowed beside the account channels"


async def test_a_refused_key_is_reported_and_the_public_streams_go_on(autojump_clock: Any) -> None:
    public, secret = generate_keypair()
    other, _ = generate_keypair()
    # The exchange knows another key only: every signed call is refused.
    exchange = SimExchange(seed=2, markets=MARKETS, config=SimConfig(api_keys=(other,)))
    signer = Signer(public, secret, clock=lambda: int(trio.current_time() * 1000))
    statuses: list[StatusEvent] = []
    deltas = 0
    with trio.fail_after(300):
        async with trio.open_nursery() as nursery:
            await nursery.start(exchange.run)
            async with open_feed(
                _feed_config(public, secret),
                rest_client=SimRestClient(exchange),
                ws_connect=sim_memory_connector(exchange),
                wall_clock=lambda: exchange.now_us() / 1e6,
                private_rest=SimPrivateRest(exchange, signer),
            ) as feed:
                async for event in feed:
                    if isinstance(event, StatusEvent):
                        statuses.append(event)
                    elif isinstance(event, BookDelta):
                        deltas += 1
                        if deltas >= 300:
                            break
            nursery.cancel_scope.cancel()
    account = [s for s in statuses if s.symbol == "account"]
    assert account, "the refusal is reported in-band"
    text = " ".join(s.reason for s in account).lower()
    assert "key" in text
    assert secret.reveal() not in text
    assert deltas >= 300


def test_account_channels_need_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BACKPACK_KEY", raising=False)
    monkeypatch.delenv("BACKPACK_SECRET", raising=False)
    with pytest.raises(ConfigError, match="api_key"):
        FeedConfig.from_kwargs(symbols=["ETH-USDC"], channels=["trades", "orders"])
