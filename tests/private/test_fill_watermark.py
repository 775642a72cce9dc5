"""Fill history reads and pruning against the simulator (virtual time).

A backlog longer than the history pages a reconciliation may read leaves the read's watermark far
behind the newest fill the stream delivered; pruning must stay behind where the next read starts,
or that read returns pruned fills and they are emitted twice. The page limits and the prune
horizon are scaled down so a handful of fills make the backlog.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import attrs
import pytest
import trio

import backpack_actors.private.feed as private_feed
from backpack_actors.private import Fill, open_private_feed
from backpack_actors.testing import sim_memory_connector
from tests.private.test_private_feed import _setup


async def test_a_cut_backlog_is_read_on_and_never_emitted_twice(
    autojump_clock: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(private_feed, "_MAX_PAGES", 2)
    monkeypatch.setattr(private_feed, "_FILL_PAGE", 3)
    monkeypatch.setattr(private_feed, "_PRUNE_AT", 5)
    monkeypatch.setattr(private_feed, "_PRUNE_HORIZON_MS", 60_000)
    exchange, config, rest = _setup(seed=12)
    config = attrs.evolve(config, poll_interval=100_000.0)
    engine = exchange.engine
    market = {"symbol": "ETH_USDC", "side": "Bid", "orderType": "Market", "quantity": "1"}
    fills: list[Fill] = []
    with trio.fail_after(600):  # virtual seconds (autojump)
        async with trio.open_nursery() as nursery:
            await nursery.start(exchange.run)
            async with open_private_feed(
                config, rest=rest, connect=sim_memory_connector(exchange)
            ) as feed:
                streamed = trio.Event()

                async def consume() -> None:
                    async for event in feed:
                        if isinstance(event, Fill):
                            fills.append(event)
                            if not event.reconciled:
                                streamed.set()

                nursery.start_soon(consume)
                # Twelve orders the stream loses, 20 s apart (four minutes of backlog) ...
                for _ in range(12):
                    engine.faults.drop_next = 1_000_000
                    engine.execute(market)
                    engine.faults.drop_next = 0
                    await trio.sleep(20)
                # ... then one it delivers: the newest fill seen is far ahead of any read.
                engine.execute(market)
                await streamed.wait()
                truth = {f.trade_id for f in engine.fills}
                for _ in range(40):  # each read reaches six fills further
                    await feed.reconcile("test")
                    await trio.sleep(0.1)
                    if {f.trade_id for f in fills} >= truth:
                        break
            nursery.cancel_scope.cancel()
    counts = Counter(f.trade_id for f in fills)
    assert {t: n for t, n in counts.items() if n > 1} == {}
    truth = {f.trade_id: (f.order_id, f.price, f.quantity) for f in engine.fills}
    assert {f.trade_id: (f.order_id, f.price, f.quantity) for f in fills} == truth
