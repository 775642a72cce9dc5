"""Private events: JSONL types and exact decimals; credentials from config or the environment;
the state's rules (each fill once, order states only forward) on the recorded wire events."""

from __future__ import annotations

import json
from decimal import Decimal

import msgspec
import pytest

from backpack_actors.config import FeedConfig, Secret
from backpack_actors.core import wire
from backpack_actors.errors import ConfigError
from backpack_actors.private import (
    Balance,
    Fill,
    OrderKind,
    OrderUpdate,
    PositionKind,
    PositionUpdate,
    PrivateConfig,
    PrivateState,
    encode_private_event,
)
from tests.conftest import DATA

ORDERS = json.loads((DATA / "ws_order_update_events.json").read_text())
POSITION = json.loads((DATA / "ws_position_update_event.json").read_text())


def _decode(frame: object) -> object:
    return wire.decode_ws_frame(json.dumps(frame)).data


def test_recorded_order_events_become_order_updates_and_one_fill() -> None:
    state = PrivateState(clock=lambda: 1.5)
    accepted = _decode(ORDERS["ccxt_recorded_orderAccepted"])
    filled = _decode(
        {"stream": "account.orderUpdate", "data": ORDERS["ccxt_recorded_orderFill_data"]}
    )
    first = state.on_event(accepted)
    second = state.on_event(filled)
    assert [type(e) for e in first] == [OrderUpdate]
    assert [type(e) for e in second] == [OrderUpdate, Fill]
    new, done, fill = first[0], second[0], second[1]
    assert isinstance(new, OrderUpdate)
    assert isinstance(done, OrderUpdate)
    assert isinstance(fill, Fill)
    assert (new.kind, new.status, new.symbol) == (OrderKind.NEW, "New", "ETH-USDC")
    assert done.kind is OrderKind.FILLED
    assert (done.quantity, done.quote_quantity) == (Decimal("0.0010"), Decimal("4.30"))
    assert done.executed_quote_quantity == Decimal("4.299160")
    assert (done.engine_time_us, done.event_time_us) == (1754939110174705, 1754939110175879)
    assert (done.origin, done.self_trade_prevention, done.reduce_only) == (
        "USER",
        "RejectTaker",
        False,
    )
    assert (fill.trade_id, fill.price, fill.quantity) == (
        2888471,
        Decimal("4299.16"),
        Decimal("0.0010"),
    )
    assert (fill.fee, fill.fee_symbol, fill.is_maker) == (Decimal("0.000001"), "ETH", False)
    # The same frames again (a replayed stream): nothing is emitted twice.
    assert state.on_event(filled) == []
    assert state.on_event(accepted) == []
    line = json.loads(encode_private_event(fill))
    assert line["type"] == "fill"
    assert (line["price"], line["quantity"], line["fee"]) == ("4299.16", "0.0010", "0.000001")
    assert json.loads(encode_private_event(done))["type"] == "order_update"


def test_recorded_position_event_and_jsonl() -> None:
    state = PrivateState()
    (update,) = state.on_event(_decode(POSITION["ccxt_recorded"]))
    assert isinstance(update, PositionUpdate)
    assert update.kind is PositionKind.OPENED
    assert (update.net_quantity, update.entry_price) == (Decimal("0.0010"), Decimal("4236.36"))
    assert update.mark_price == Decimal("4235.88650933")
    assert update.position_id == 5411399049
    line = json.loads(encode_private_event(update))
    assert (line["type"], line["net_quantity"], line["kind"]) == (
        "position_update",
        "0.0010",
        "opened",
    )
    balance = Balance(asset="USDC", available=Decimal("1.50"), locked=Decimal(0), staked=Decimal(0))
    assert json.loads(encode_private_event(balance)) == {
        "type": "balance", "asset": "USDC", "available": "1.50", "locked": "0", "staked": "0",
        "source": "polled", "received_at": 0.0,
    }  # fmt: skip


def test_order_state_never_goes_backwards() -> None:
    state = PrivateState()
    body = {"id": "7", "symbol": "SOL_USDC", "status": "PartiallyFilled", "executedQuantity": "2",
            "quantity": "5", "price": "100", "createdAt": 1_700_000_000_000}  # fmt: skip
    events, counts = state.reconcile(
        open_orders=[body], orders=[], fills=[], positions=None, capital=None, read_us=0
    )
    assert counts["orders"] == 1
    assert events[0].reconciled  # type: ignore[union-attr]
    older = {**body, "status": "New", "executedQuantity": "0"}
    assert (
        state.reconcile(
            open_orders=[older], orders=[], fills=[], positions=None, capital=None, read_us=0
        )[0]
        == []
    )
    done = {**body, "status": "Filled", "executedQuantity": "5"}
    (final,), _ = state.reconcile(
        open_orders=[], orders=[done], fills=[], positions=None, capital=None, read_us=0
    )
    assert isinstance(final, OrderUpdate)
    assert final.kind is OrderKind.FILLED
    assert state.open_order_ids() == {}


def test_credentials_from_config_or_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BACKPACK_KEY", raising=False)
    monkeypatch.delenv("BACKPACK_SECRET", raising=False)
    bare = FeedConfig.from_kwargs(symbols=["ETH-USDC"])
    with pytest.raises(ConfigError):
        PrivateConfig.from_feed_config(bare)
    monkeypatch.setenv("BACKPACK_KEY", "key-from-env")
    monkeypatch.setenv("BACKPACK_SECRET", "secret-from-env")
    config = PrivateConfig.from_feed_config(bare, poll_interval=2.0)
    assert (config.api_key, config.api_secret) == (
        Secret("key-from-env"),
        Secret("secret-from-env"),
    )
    assert config.poll_interval == 2.0
    assert "secret-from-env" not in repr(config)
    given = FeedConfig.from_kwargs(symbols=["ETH-USDC"], api_key="k", api_secret="s")
    assert PrivateConfig.from_feed_config(given).api_key == Secret("k")
    with pytest.raises(ConfigError):
        PrivateConfig(api_key=Secret("k"), api_secret=Secret("s"), channels=("trades",))
    assert (
        msgspec.json.decode(
            encode_private_event(
                Balance(asset="A", available=Decimal(1), locked=Decimal(0), staked=Decimal(0))
            )
        )["source"]
        == "polled"
    )


def test_prune_forgets_only_what_history_cannot_return() -> None:
    state = PrivateState()
    fills = [
        {"tradeId": i, "symbol": "SOL_USDC", "price": "1", "quantity": "1", "orderId": str(i),
         "timestamp": 1_000_000 + i * 1000}
        for i in range(10)
    ]  # fmt: skip
    orders = [
        {"id": str(i), "symbol": "SOL_USDC", "status": "Filled", "executedQuantity": "1",
         "createdAt": 1_000_000 + i * 1000}
        for i in range(10)
    ]  # fmt: skip
    state.reconcile(
        open_orders=[], orders=orders, fills=fills, positions=None, capital=None, read_us=0
    )
    assert state.prune(1_005_000) == 10
    assert sorted(state.fill_ids) == [5, 6, 7, 8, 9]
    assert sorted(state.orders) == ["5", "6", "7", "8", "9"]
    again, _ = state.reconcile(
        open_orders=[], orders=orders[5:], fills=fills[5:], positions=None, capital=None, read_us=0
    )
    assert again == []
