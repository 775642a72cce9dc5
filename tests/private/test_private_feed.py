"""The private feed against the in-process simulator (virtual time): drops, cuts, reconciliation."""

from __future__ import annotations

import random
from decimal import Decimal
from typing import Any

import attrs
import trio

from backpack_actors.auth import Signer, generate_keypair
from backpack_actors.config import Secret
from backpack_actors.core.events import StatusKind
from backpack_actors.private import (
    Fill,
    OrderKind,
    OrderUpdate,
    PrivateConfig,
    PrivateFeed,
    SimPrivateRest,
    open_private_feed,
)
from backpack_actors.sim import SimConfig, SimExchange
from backpack_actors.sim.orders import OrderEngine, OrderRejected
from backpack_actors.testing import sim_memory_connector
from tests.private.helpers import Account

MARKETS = ["ETH_USDC", "SOL_USDC_PERP"]


def _setup(seed: int) -> tuple[SimExchange, PrivateConfig, SimPrivateRest]:
    public, secret = generate_keypair()
    exchange = SimExchange(seed=seed, markets=MARKETS, config=SimConfig(api_keys=(public,)))
    # The signer's local clock is trio's (virtual) clock; the offset to the exchange's 2026
    # epoch is measured from /api/v1/time like against a real server.
    signer = Signer(public, secret, clock=lambda: int(trio.current_time() * 1000))
    config = PrivateConfig(
        api_key=Secret(public),
        api_secret=secret,
        poll_interval=1.0,
        reconnect_base=0.05,
        reconnect_cap=0.5,
    )
    return exchange, config, SimPrivateRest(exchange, signer)


def _random_order(rng: random.Random, exchange: SimExchange) -> dict[str, Any]:
    symbol = rng.choice(MARKETS)
    model = exchange.models[symbol]
    side = rng.choice(["Bid", "Ask"])
    qty = str(model.spec.min_quantity * rng.randint(1, 400))
    kind = rng.random()
    if kind < 0.35:
        return {"symbol": symbol, "side": side, "orderType": "Market", "quantity": qty}
    best = model.best_bid() if side == "Bid" else model.best_ask()
    # Around the touch: some cross (partial fills, IOC remainders), some rest and fill later.
    ticks = best + rng.randint(-3, 3) * (1 if side == "Ask" else -1) + rng.choice([0, 0, 2, -2])
    order = {
        "symbol": symbol,
        "side": side,
        "orderType": "Limit",
        "quantity": qty,
        "price": model._level(ticks, 1)[0],
    }
    if kind > 0.8:
        order["timeInForce"] = "IOC"
    return order


async def _trade(rng: random.Random, exchange: SimExchange, steps: int, faults: bool) -> None:
    engine = exchange.engine
    for _ in range(steps):
        roll = rng.random()
        open_orders = engine.open_orders()
        try:
            if roll < 0.2 and open_orders:
                engine.cancel(rng.choice(open_orders))
            else:
                engine.execute(_random_order(rng, exchange))
        except OrderRejected:  # refused orders (funds, post-only) are part of trading
            pass
        if faults and rng.random() < 0.2:
            engine.drop_updates(rng.randint(1, 3))
        if faults and rng.random() < 0.08:
            engine.disconnect_private()
        await trio.sleep(rng.uniform(0.02, 0.4))


async def _settle(feed: PrivateFeed, exchange: SimExchange) -> None:
    # Freeze the market (no more maker fills); the feed's own polls find what the stream lost.
    exchange.pause()
    await feed.wait_reconciliations(2)


async def test_feed_equals_truth_despite_dropped_updates_and_cuts(autojump_clock: Any) -> None:
    exchange, config, rest = _setup(seed=21)
    account = Account()
    with trio.fail_after(600):
        async with trio.open_nursery() as nursery:
            await nursery.start(exchange.run)
            async with open_private_feed(
                config, rest=rest, connect=sim_memory_connector(exchange)
            ) as feed:

                async def consume() -> None:
                    async for event in feed:
                        account.apply(event)

                nursery.start_soon(consume)
                await _trade(random.Random(7), exchange, steps=120, faults=True)
                await _settle(feed, exchange)
                account.assert_matches(exchange.engine)
                assert exchange.engine.faults.dropped > 0
                assert exchange.engine.faults.disconnects > 0
                assert feed.stats["reconnects"] > 0
                reconciled = [e for e in account.events if isinstance(e, Fill) and e.reconciled]
                assert reconciled, "dropped updates must come back as reconciled fills"
                kinds = {s.kind for s in account.statuses}
                assert {StatusKind.RESYNCED, StatusKind.RECONNECTING} <= kinds
            nursery.cancel_scope.cancel()


async def test_a_dropped_fill_followed_by_a_delivered_one_is_still_reconciled(
    autojump_clock: Any,
) -> None:
    # The stream loses every frame of one order's fill, then delivers a later order's fill. Fill
    # history must still be read from before the lost one: the newest fill the stream delivered
    # is not how far history was read (CI saw a fill lost for good this way).
    exchange, config, rest = _setup(seed=8)
    config = attrs.evolve(config, poll_interval=3600.0)
    events: list[Any] = []
    engine = exchange.engine
    market = {"symbol": "ETH_USDC", "side": "Bid", "orderType": "Market", "quantity": "1"}
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            await nursery.start(exchange.run)
            async with open_private_feed(
                config, rest=rest, connect=sim_memory_connector(exchange)
            ) as feed:
                streamed_fill = trio.Event()

                async def consume() -> None:
                    async for event in feed:
                        events.append(event)
                        if isinstance(event, Fill) and not event.reconciled:
                            streamed_fill.set()

                nursery.start_soon(consume)
                engine.faults.drop_next = 1_000_000
                lost = engine.execute(market)
                engine.faults.drop_next = 0
                await trio.sleep(10)
                seen = engine.execute(market)
                await streamed_fill.wait()
                assert {e.order_id for e in events if isinstance(e, Fill)} == {seen.id}
                assert not any(getattr(e, "order_id", None) == lost.id for e in events)
                await feed.reconcile("test")
                await trio.sleep(0.1)
            nursery.cancel_scope.cancel()
    fills = {e.trade_id: e for e in events if isinstance(e, Fill)}
    truth = {f.trade_id: f for f in engine.fills}
    assert {t: (f.order_id, f.price, f.quantity) for t, f in fills.items()} == {
        t: (f.order_id, f.price, f.quantity) for t, f in truth.items()
    }
    assert {f.order_id for f in truth.values()} == {lost.id, seen.id}
    assert all(fills[t].reconciled for t, f in truth.items() if f.order_id == lost.id)


async def test_stream_events_carry_every_wire_field(autojump_clock: Any) -> None:
    exchange, config, rest = _setup(seed=3)
    events: list[Any] = []
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            await nursery.start(exchange.run)
            async with open_private_feed(
                config, rest=rest, connect=sim_memory_connector(exchange)
            ) as feed:

                async def consume() -> None:
                    async for event in feed:
                        events.append(event)

                nursery.start_soon(consume)
                order = exchange.engine.execute(
                    {"symbol": "ETH_USDC", "side": "Bid", "orderType": "Market", "quantity": "2"}
                )
                await trio.sleep(0.5)
            nursery.cancel_scope.cancel()
    updates = [e for e in events if isinstance(e, OrderUpdate) and e.order_id == order.id]
    assert updates[0].kind == OrderKind.NEW
    assert updates[-1].kind == OrderKind.FILLED
    assert all(not u.reconciled for u in updates)
    fills = [e for e in events if isinstance(e, Fill)]
    truth = exchange.engine.fills
    assert [(f.trade_id, f.price, f.quantity, f.fee) for f in fills] == [
        (f.trade_id, f.price, f.quantity, f.fee) for f in truth
    ]
    assert sum(f.quantity for f in fills) == Decimal(2)
    last = updates[-1]
    assert last.executed_quantity == Decimal(2)
    assert last.engine_time_us == truth[-1].engine_time_us
    assert last.order_type == "MARKET"
    assert last.origin == "USER"
    assert last.self_trade_prevention == "RejectTaker"


async def test_balances_polled_and_order_engine_is_truth(autojump_clock: Any) -> None:
    exchange, config, rest = _setup(seed=5)
    account = Account()
    with trio.fail_after(300):
        async with trio.open_nursery() as nursery:
            await nursery.start(exchange.run)
            async with open_private_feed(
                config, rest=rest, connect=sim_memory_connector(exchange)
            ) as feed:

                async def consume() -> None:
                    async for event in feed:
                        account.apply(event)

                nursery.start_soon(consume)
                await _trade(random.Random(3), exchange, steps=30, faults=False)
                await _settle(feed, exchange)
                account.assert_matches(exchange.engine)
                assert isinstance(exchange.engine, OrderEngine)
            nursery.cancel_scope.cancel()


async def test_per_symbol_subscription_sees_only_that_symbol(autojump_clock: Any) -> None:
    exchange, config, rest = _setup(seed=4)
    config = attrs.evolve(config, symbols=("ETH_USDC",))
    events: list[Any] = []
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            await nursery.start(exchange.run)
            async with open_private_feed(
                config, rest=rest, connect=sim_memory_connector(exchange)
            ) as feed:

                async def consume() -> None:
                    async for event in feed:
                        events.append(event)

                nursery.start_soon(consume)
                for symbol in ("SOL_USDC_PERP", "ETH_USDC"):
                    exchange.engine.execute(
                        {"symbol": symbol, "side": "Bid", "orderType": "Market", "quantity": "1"}
                    )
                await feed.wait_reconciliations(1)
                streams = {s for session in exchange._sessions for s in session.streams}
                assert streams == {
                    "account.orderUpdate.ETH_USDC",
                    "account.positionUpdate.ETH_USDC",
                }
            nursery.cancel_scope.cancel()
    fills = [e for e in events if isinstance(e, Fill)]
    assert fills
    assert {f.exchange_symbol for f in fills} == {"ETH_USDC"}
    assert [f.trade_id for f in fills] == [
        f.trade_id for f in exchange.engine.fills if f.symbol == "ETH_USDC"
    ]
    assert all(not f.reconciled for f in fills)
