"""Acceptance: orders placed with unmodified ccxt against the simulator over real sockets while the
private feed runs; private updates dropped and the connection cut at random; at the end the
consumer's orders, fills (each exactly once), positions and balances equal the simulator's truth.
"""

from __future__ import annotations

import contextlib
import random
import time
from typing import Any

import ccxt
import pytest
import trio

from backpack_actors.auth import AuthError, ClockOffset, Signer, generate_keypair
from backpack_actors.config import FeedConfig, Secret
from backpack_actors.core.events import StatusEvent, StatusKind, Trade
from backpack_actors.feed import open_feed
from backpack_actors.private import Fill, HttpPrivateRest, PrivateConfig, open_private_feed
from backpack_actors.sim import SimServer, open_simulator
from tests.private.helpers import Account

MARKETS = ["ETH_USDC", "SOL_USDC_PERP"]
UNIFIED = {"ETH_USDC": "ETH/USDC", "SOL_USDC_PERP": "SOL/USDC:USDC"}


def _ccxt(sim: SimServer, key: str, secret: str) -> Any:
    api = {"public": sim.rest_url, "private": sim.rest_url}
    return ccxt.backpack({"urls": {"api": api}, "apiKey": key, "secret": secret})


def _config(sim: SimServer, key: str, secret: Secret, **extra: Any) -> PrivateConfig:
    return PrivateConfig(
        api_key=Secret(key),
        api_secret=secret,
        rest_url=sim.rest_url,
        ws_url=sim.ws_url,
        poll_interval=0.5,
        reconnect_base=0.05,
        reconnect_cap=0.3,
        **extra,
    )


def _action(rng: random.Random, sim: SimServer, client: Any) -> Any:
    engine = sim.exchange.engine
    open_orders = engine.open_orders()
    if open_orders and rng.random() < 0.25:
        order = rng.choice(open_orders)
        return lambda: client.cancel_order(order.id, UNIFIED[order.symbol])
    symbol = rng.choice(MARKETS)
    model = sim.exchange.models[symbol]
    side = rng.choice(["buy", "sell"])
    amount = float(model.spec.min_quantity * rng.randint(1, 300))
    if rng.random() < 0.35:
        return lambda: client.create_order(UNIFIED[symbol], "market", side, amount)
    best = model.best_bid() if side == "buy" else model.best_ask()
    ticks = best + rng.randint(-2, 4) * (-1 if side == "buy" else 1)
    price = float(model._level(ticks, 1)[0])
    params = {"timeInForce": "IOC"} if rng.random() < 0.2 else {}
    return lambda: client.create_order(UNIFIED[symbol], "limit", side, amount, price, params)


async def test_ccxt_orders_while_private_stream_drops_and_reconnects() -> None:
    public, secret = generate_keypair()
    account = Account()
    rng = random.Random(14)
    with trio.fail_after(120):
        async with (
            open_simulator(seed=14, markets=MARKETS, api_keys=(public,)) as sim,
            open_private_feed(_config(sim, public, secret)) as feed,
            trio.open_nursery() as nursery,
        ):

            async def consume() -> None:
                async for event in feed:
                    account.apply(event)

            nursery.start_soon(consume)
            client = _ccxt(sim, public, secret.reveal())
            await trio.to_thread.run_sync(client.load_markets)
            engine = sim.exchange.engine
            for _ in range(40):
                # Refused orders, or an order that filled before its cancel arrived.
                with contextlib.suppress(
                    ccxt.InsufficientFunds, ccxt.InvalidOrder, ccxt.ExchangeNotAvailable
                ):
                    await trio.to_thread.run_sync(_action(rng, sim, client))
                if rng.random() < 0.25:
                    engine.drop_updates(rng.randint(1, 3))
                if rng.random() < 0.12:
                    engine.disconnect_private()
            engine.disconnect_private()
            sim.exchange.pause()
            # The feed's own polls (every 0.5 s) find what the stream lost: two complete ones
            # after the market stopped, nothing called by hand.
            await feed.wait_reconciliations(2)
            account.assert_matches(engine)
            assert len(engine.fills) > 5
            assert engine.faults.dropped > 0
            assert feed.stats["reconnects"] >= 1
            assert any(isinstance(e, Fill) and e.reconciled for e in account.events)
            nursery.cancel_scope.cancel()


async def test_auth_failure_is_named_and_not_retried() -> None:
    public, secret = generate_keypair()
    stranger, stranger_secret = generate_keypair()
    with trio.fail_after(60):
        async with open_simulator(seed=2, markets=MARKETS, api_keys=(public,)) as sim:
            with pytest.raises(AuthError) as caught:
                async with open_private_feed(_config(sim, stranger, stranger_secret)):
                    pass
            assert caught.value.cause == "UNAUTHORIZED: Invalid API key"
            # A clock a minute late whose offset was (wrongly) taken as measured: expired.
            late = Signer(public, secret, offset=ClockOffset(offset_ms=-60_000, measured=True))
            rest = HttpPrivateRest(sim.rest_url, late)
            with pytest.raises(AuthError) as expired:
                async with open_private_feed(_config(sim, public, secret), rest=rest):
                    pass
            assert expired.value.cause == "INVALID_CLIENT_REQUEST: Request has expired"
            # The same clock with its offset measured from /api/v1/time is accepted.
            skewed = Signer(public, secret, clock=lambda: time.time_ns() // 1_000_000 - 3_600_000)
            rest = HttpPrivateRest(sim.rest_url, skewed)
            async with open_private_feed(_config(sim, public, secret), rest=rest) as feed:
                assert feed.stats["reconciliations"] == 1
            assert abs(skewed.offset.offset_ms - 3_600_000) < 5_000


async def test_public_feed_goes_on_when_private_auth_fails() -> None:
    public, _secret = generate_keypair()
    stranger, stranger_secret = generate_keypair()
    with trio.fail_after(60):
        async with open_simulator(seed=2, markets=MARKETS, api_keys=(public,)) as sim:
            config = FeedConfig.from_kwargs(
                symbols=["ETH-USDC"], rest_url=sim.rest_url, ws_url=sim.ws_url
            )
            private_events: list[Any] = []
            async with open_feed(config) as public_feed:
                async with open_private_feed(
                    _config(sim, stranger, stranger_secret, on_auth_error="report")
                ) as private_feed:
                    async for event in private_feed:
                        private_events.append(event)
                assert private_feed.auth_error is not None
                trades = 0
                async for event in public_feed:
                    if isinstance(event, Trade):
                        trades += 1
                        if trades == 5:
                            break
            assert private_events == [private_events[0]]
            status = private_events[0]
            assert isinstance(status, StatusEvent)
            assert status.kind is StatusKind.SNAPSHOT_FAILED
            assert "Invalid API key" in status.reason
