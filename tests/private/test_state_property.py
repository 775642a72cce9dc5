"""Property: whatever the stream loses or delivers late, stream events plus reconciliations leave
the consumer with the simulator's truth, every fill exactly once and no order state going back."""

from __future__ import annotations

import random
from collections import deque
from typing import Any

import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from backpack_actors.core import wire
from backpack_actors.private import OrderUpdate, PrivateState
from backpack_actors.sim import SimConfig, SimExchange
from backpack_actors.sim.orders import OrderEngine, OrderRejected
from tests.private.helpers import Account
from tests.private.test_private_feed import MARKETS, _random_order


def _snapshot(engine: OrderEngine, read_us: int) -> dict[str, Any]:
    return {
        "open_orders": [o.rest_json() for o in engine.open_orders()],
        "orders": [o.rest_json(iso_time=True) for o in engine.orders.values()],
        "fills": [f.rest_json() for f in engine.fills],
        "positions": [engine._position_json(p) for p in engine.positions().values()],
        "capital": {
            a: {"available": str(v[0]), "locked": str(v[1]), "staked": "0"}
            for a, v in engine.balances().items()
        },
        "read_us": read_us,
    }


async def _scenario(seed: int, steps: int, drop: float, lag: int, every: int) -> None:
    rng = random.Random(seed)
    exchange = SimExchange(seed=seed, markets=MARKETS, config=SimConfig(autostart=False))
    engine = exchange.engine
    in_flight: deque[str] = deque()
    # Capture the private frames as a connection would carry them (the all-symbols streams).
    exchange.publish_private = lambda stream, frame: (  # type: ignore[method-assign]
        in_flight.append(frame) if stream.count(".") == 1 else None
    )
    state = PrivateState()
    account = Account()
    orders_seen: dict[str, Any] = {}

    def deliver(keep: int) -> None:
        while len(in_flight) > keep:
            frame = in_flight.popleft()
            if rng.random() < drop:
                continue
            for event in state.on_event(wire.decode_ws_frame(frame).data):
                take(event)

    def take(event: Any) -> None:
        if isinstance(event, OrderUpdate):
            last = orders_seen.get(event.order_id)
            if last is not None:
                assert (event.executed_quantity or 0) >= (last.executed_quantity or 0)
            orders_seen[event.order_id] = event
        account.apply(event)

    for step in range(steps):
        open_orders = engine.open_orders()
        try:
            if open_orders and rng.random() < 0.2:
                engine.cancel(rng.choice(open_orders))
            else:
                engine.execute(_random_order(rng, exchange))
        except OrderRejected:
            pass
        exchange.generate(rng.randint(0, 40))  # the market's own trades fill resting orders
        await trio.sleep(0.01)
        deliver(keep=rng.randint(0, lag))
        if step % every == every - 1:
            events, _ = state.reconcile(**_snapshot(engine, exchange.now_us()))
            for event in events:
                take(event)
    deliver(keep=0)
    await trio.sleep(0.01)
    events, _ = state.reconcile(**_snapshot(engine, exchange.now_us()))
    for event in events:
        take(event)
    account.assert_matches(engine)


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(min_value=0, max_value=2**32 - 1),
    steps=st.integers(min_value=1, max_value=40),
    drop=st.sampled_from([0.0, 0.1, 0.3, 0.6]),
    lag=st.integers(min_value=0, max_value=6),
    every=st.integers(min_value=1, max_value=10),
)
def test_stream_plus_reconciliation_converges_to_truth(
    seed: int, steps: int, drop: float, lag: int, every: int
) -> None:
    clock = trio.testing.MockClock(autojump_threshold=0)
    trio.run(_scenario, seed, steps, drop, lag, every, clock=clock)
