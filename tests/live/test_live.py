"""Opt-in tests against the real Backpack exchange: `pytest -m live --run-live`.

Deselected by default and in CI (no machine here can reach Backpack). They check what only the real
exchange can tell: the listing loads through ccxt, a live book bridges and stays continuous.
"""

from __future__ import annotations

import pytest
import trio

from backpack_actors.config import FeedConfig
from backpack_actors.core.events import StatusKind
from backpack_actors.feed import open_feed
from backpack_actors.transport.rest import CcxtRestClient
from tests.pipeline_helpers import ConsumerBooks

pytestmark = pytest.mark.live


async def test_real_listing_has_usdc_markets() -> None:
    client = CcxtRestClient("https://api.backpack.exchange")
    try:
        with trio.fail_after(30):
            table = await client.load_markets()
    finally:
        await client.aclose()
    info = table.resolve("BTC-USDC")
    assert info.exchange_id == "BTC_USDC"
    assert info.tick_size > 0


async def test_real_book_bridges_and_stays_continuous() -> None:
    consumer = ConsumerBooks()
    config = FeedConfig.from_kwargs(symbols=["SOL-USDC"], snapshot_interval=10)
    with trio.fail_after(120):
        async with open_feed(config) as feed:
            async for event in feed:
                # ConsumerBooks asserts delta continuity and uncrossed books as events arrive.
                consumer.apply(event)
                if consumer.deltas.get("SOL_USDC", 0) >= 200:
                    break
    assert StatusKind.BOOK_READY in consumer.kinds()
    assert StatusKind.GAP_DETECTED not in consumer.kinds()
