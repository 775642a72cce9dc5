"""The simulator's order engine: unmodified ccxt trades against it; fills hit the public streams.

ccxt.pro runs with asyncio in a thread of its own (the only asyncio here), as in
tests/integration/test_ccxt_fidelity.py.
"""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal
from typing import Any

import ccxt
import ccxt.pro
import pytest
import trio

from backpack_actors.auth import Signer, generate_keypair
from backpack_actors.sim import SimConfig, SimExchange, open_simulator
from backpack_actors.sim.orders import INSTRUCTIONS


def _ccxt(rest_url: str, key: str, secret: str) -> Any:
    api = {"public": rest_url, "private": rest_url}
    return ccxt.backpack({"urls": {"api": api}, "apiKey": key, "secret": secret})


async def test_ccxt_private_calls_match_ground_truth() -> None:
    public, secret = generate_keypair()
    with trio.fail_after(60):
        async with open_simulator(seed=4, api_keys=(public,)) as sim:
            engine = sim.exchange.engine
            ex = _ccxt(sim.rest_url, public, secret.reveal())
            run = trio.to_thread.run_sync
            await run(ex.load_markets)
            bought = await run(lambda: ex.create_order("ETH/USDC", "market", "buy", 0.5))
            truth = engine.orders[bought["id"]]
            assert (bought["status"], truth.status) == ("closed", "Filled")
            assert Decimal(str(bought["filled"])) == truth.executed_quantity == Decimal("0.5")

            model = sim.exchange.models["ETH_USDC"]
            far_bid = model._level(model.best_bid() - 40, 1)[0]
            resting = await run(
                lambda: ex.create_order(
                    "ETH/USDC", "limit", "buy", 0.3, float(far_bid), {"postOnly": True}
                )
            )
            assert resting["status"] == "open"
            open_orders = await run(lambda: ex.fetch_open_orders("ETH/USDC"))
            assert [o["id"] for o in open_orders] == [o.id for o in engine.open_orders()]
            cancelled = await run(lambda: ex.cancel_order(resting["id"], "ETH/USDC"))
            assert cancelled["status"] == "canceled"
            assert engine.orders[resting["id"]].status == "Cancelled"
            assert await run(lambda: ex.fetch_open_orders("ETH/USDC")) == []

            await run(lambda: ex.create_order("SOL/USDC:USDC", "market", "sell", 3))
            await run(lambda: ex.create_order("SOL/USDC:USDC", "market", "buy", 1))

            mine = await run(lambda: ex.fetch_my_trades("ETH/USDC"))
            eth_fills = [f for f in engine.fills if f.symbol == "ETH_USDC"]
            assert sorted((t["id"], t["amount"], t["price"]) for t in mine) == sorted(
                (str(f.trade_id), float(f.quantity), float(f.price)) for f in eth_fills
            )
            balance = await run(ex.fetch_balance)
            raw = await run(ex.privateGetApiV1Capital)
            for asset, (available, locked) in engine.balances().items():
                # ccxt's parsed balances are floats; its raw call gives the exact text.
                assert Decimal(raw[asset]["available"]) == available
                assert Decimal(raw[asset]["locked"]) == locked
                assert balance[asset]["free"] == pytest.approx(float(available))
                assert balance[asset]["used"] == pytest.approx(float(locked))
            positions = await run(ex.fetch_positions)
            truth_positions = engine.positions()
            assert [p["symbol"] for p in positions] == ["SOL/USDC:USDC"]
            sol = truth_positions["SOL_USDC_PERP"]
            assert sol.net_quantity == Decimal(-2)
            assert positions[0]["side"] == "short"
            assert Decimal(str(positions[0]["contracts"])) == sol.net_quantity
            assert Decimal(str(positions[0]["entryPrice"])) == sol.entry_price

            # ccxt's own signer with the wrong secret is refused with Backpack's body.
            wrong = _ccxt(sim.rest_url, public, generate_keypair()[1].reveal())
            with pytest.raises(ccxt.BadRequest, match="Invalid signature"):
                await run(wrong.fetch_balance)


async def _signed(
    ex: SimExchange, signer: Signer, method: str, path: str, params: dict[str, Any]
) -> Any:
    headers = signer.headers(INSTRUCTIONS[(method, path)], params)
    if method == "GET":
        query = {k: str(v) for k, v in params.items()}
        response = await ex.handle_http(method, path, query, headers=headers)
    else:
        body = json.dumps(params).encode()
        response = await ex.handle_http(method, path, None, headers=headers, body=body)
    return response.status, response.json()


def _in_process() -> tuple[SimExchange, Signer]:
    public, secret = generate_keypair()
    ex = SimExchange(
        seed=9, markets=["BTC_USDC", "ETH_USDC_PERP"], config=SimConfig(api_keys=(public,))
    )
    signer = Signer(public, secret, clock=lambda: ex.now_us() // 1000)
    return ex, signer


async def test_taker_fills_are_public_trades_and_book_changes() -> None:
    with trio.fail_after(30):
        ex, signer = _in_process()
        model = ex.models["BTC_USDC"]
        before_ask, before_size = model.best_ask(), model.asks[model.best_ask()]
        status, body = await _signed(
            ex, signer, "POST", "/api/v1/order",
            {"symbol": "BTC_USDC", "side": "Bid", "orderType": "Market", "quantity": "0.5"},
        )  # fmt: skip
        assert status == 200
        assert body["status"] == "Filled"
        fills = ex.engine.fills
        assert sum(f.quantity for f in fills) == Decimal("0.5")
        public = {t.id: t for t in ex.trades("BTC_USDC")}
        for fill in fills:
            trade = public[fill.trade_id]
            assert (trade.price, trade.quantity, trade.is_buyer_maker) == (
                fill.price,
                fill.quantity,
                False,
            )
        _bids, asks = ex.book_at("BTC_USDC", ex.last_update_id("BTC_USDC"))
        assert asks[0][0] > fills[0].price or asks[0][1] < before_size * model.spec.step_size
        assert before_ask * model.spec.tick_size == fills[0].price

        # A post-only order that would take is refused; a resting one joins its book level.
        touch = model._level(model.best_ask(), 1)[0]
        status, body = await _signed(
            ex, signer, "POST", "/api/v1/order",
            {"symbol": "BTC_USDC", "side": "Bid", "orderType": "Limit", "quantity": "0.01",
             "price": touch, "postOnly": True},
        )  # fmt: skip
        assert (status, body["code"]) == (400, "INVALID_ORDER")
        bid_price = model._level(model.best_bid(), 1)[0]
        level_before = dict(ex.book_at("BTC_USDC", ex.last_update_id("BTC_USDC"))[0])
        status, body = await _signed(
            ex, signer, "POST", "/api/v1/order",
            {"symbol": "BTC_USDC", "side": "Bid", "orderType": "Limit", "quantity": "0.01",
             "price": bid_price, "postOnly": True},
        )  # fmt: skip
        assert status == 200
        assert body["status"] == "New"
        level_after = dict(ex.book_at("BTC_USDC", ex.last_update_id("BTC_USDC"))[0])
        price = Decimal(bid_price)
        assert level_after[price] == level_before[price] + Decimal("0.01")
        usdc = ex.engine.balances()["USDC"]
        assert usdc[1] == price * Decimal("0.01")

        # The market's own trades fill the resting order at its level (a maker fill).
        order_id = body["id"]
        for _ in range(20_000):
            if not ex.engine.orders[order_id].open:
                break
            ex.generate(1, "BTC_USDC")
        order = ex.engine.orders[order_id]
        assert order.status == "Filled"
        maker = [f for f in ex.engine.fills if f.order_id == order_id]
        assert all(f.is_maker and f.price == price for f in maker)
        assert sum(f.quantity for f in maker) == Decimal("0.01")
        public = {t.id: t for t in ex.trades("BTC_USDC")}
        assert all(public[f.trade_id].is_buyer_maker for f in maker)
        assert ex.engine.balances()["USDC"][1] == 0


async def test_perp_positions_and_cancel_all() -> None:
    with trio.fail_after(30):
        ex, signer = _in_process()
        sym = "ETH_USDC_PERP"
        for side, qty in (("Bid", "2"), ("Bid", "1"), ("Ask", "4")):
            status, _ = await _signed(
                ex, signer, "POST", "/api/v1/order",
                {"symbol": sym, "side": side, "orderType": "Market", "quantity": qty},
            )  # fmt: skip
            assert status == 200
        fills = [f for f in ex.engine.fills if f.symbol == sym]
        net = sum((f.quantity if f.side == "Bid" else -f.quantity) for f in fills)
        position = ex.engine.positions()[sym]
        assert position.net_quantity == net == Decimal(-1)
        status, body = await _signed(ex, signer, "GET", "/api/v1/position", {})
        assert [(p["symbol"], p["netQuantity"]) for p in body] == [(sym, "-1")]
        model = ex.models[sym]
        for offset in (30, 40):
            price = model._level(model.best_bid() - offset, 1)[0]
            await _signed(
                ex, signer, "POST", "/api/v1/order",
                {"symbol": sym, "side": "Bid", "orderType": "Limit", "quantity": "1",
                 "price": price},
            )  # fmt: skip
        assert len(ex.engine.open_orders()) == 2
        status, body = await _signed(ex, signer, "DELETE", "/api/v1/orders", {"symbol": sym})
        assert status == 200
        assert [o["status"] for o in body] == ["Cancelled", "Cancelled"]
        assert ex.engine.open_orders() == []
        status, body = await _signed(
            ex, signer, "DELETE", "/api/v1/order", {"symbol": sym, "orderId": "1"}
        )
        assert (status, body["code"]) == (404, "RESOURCE_NOT_FOUND")


async def _pro_orders(config: dict[str, Any]) -> list[dict[str, Any]]:
    pro = ccxt.pro.backpack(config)
    try:
        await pro.load_markets()
        watcher = asyncio.ensure_future(pro.watch_orders("ETH/USDC"))
        # ccxt.pro subscribes on the first watch; give the frame time to reach the server.
        await asyncio.sleep(0.5)
        placed = await pro.create_order("ETH/USDC", "market", "buy", 0.2)
        seen: list[dict[str, Any]] = list(await asyncio.wait_for(watcher, 20))
        while not any(o["id"] == placed["id"] and o["status"] == "closed" for o in seen):
            seen.extend(await asyncio.wait_for(pro.watch_orders("ETH/USDC"), 20))
        return [o for o in seen if o["id"] == placed["id"]]
    finally:
        await pro.close()


async def test_ccxt_pro_watch_orders_accepts_the_private_stream() -> None:
    public, secret = generate_keypair()
    with trio.fail_after(60):
        async with open_simulator(seed=6, markets=["ETH_USDC"], api_keys=(public,)) as sim:
            api = {"public": sim.rest_url, "private": sim.rest_url}
            ws = {"public": sim.ws_url, "private": sim.ws_url}
            config = {
                "urls": {"api": {**api, "ws": ws}},
                "apiKey": public,
                "secret": secret.reveal(),
            }
            orders = await trio.to_thread.run_sync(lambda: asyncio.run(_pro_orders(config)))
            truth = next(iter(sim.exchange.engine.orders.values()))
            assert orders[-1]["id"] == truth.id
            assert orders[-1]["status"] == "closed"
            assert Decimal(str(orders[-1]["filled"])) == truth.executed_quantity == Decimal("0.2")
