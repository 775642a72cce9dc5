"""What a broken peer produces in-band (issue 12): a WebSocket framing violation is a protocol
error event plus a reconnect — the old code only reconnected, while the README promised
protocol-error events — and the books are right afterwards."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio

from backpack_actors.config import FeedConfig
from backpack_actors.core.events import ProtocolErrorEvent, StatusKind
from backpack_actors.errors import WsProtocolViolation
from backpack_actors.sim import SimConfig, SimExchange
from backpack_actors.testing import sim_memory_connector
from tests.pipeline_helpers import assert_matches_truth, run_pipeline


class BreaksFraming:
    """The first connection delivers a few reads, then the server breaks the framing rules."""

    def __init__(self, conn: Any, fail: bool) -> None:
        self.conn = conn
        self.reads = 0
        self.fail = fail

    async def send(self, text: str) -> None:
        await self.conn.send(text)

    async def receive_batch(self) -> list[str | bytes]:
        self.reads += 1
        if self.fail and self.reads > 20:
            raise WsProtocolViolation("ws://sim.invalid", "the server masked a frame")
        batch: list[str | bytes] = await self.conn.receive_batch()
        return batch


def breaking_connector(exchange: SimExchange) -> Any:
    inner = sim_memory_connector(exchange)
    connections = 0

    @asynccontextmanager
    async def connect() -> AsyncIterator[BreaksFraming]:
        nonlocal connections
        connections += 1
        async with inner() as conn:
            yield BreaksFraming(conn, fail=connections == 1)

    return connect


async def test_a_framing_violation_is_reported_and_the_connection_replaced(
    autojump_clock: trio.testing.MockClock,
) -> None:
    exchange = SimExchange(seed=71, markets=["BTC_USDC", "ETH_USDC"], config=SimConfig(rate=100))
    config = FeedConfig.from_kwargs(
        symbols=["BTC-USDC", "ETH-USDC"],
        rest_url="http://sim.invalid",
        ws_url="ws://sim.invalid",
        snapshot_interval=0,
    )
    with trio.fail_after(300):
        consumer, stats = await run_pipeline(
            exchange, config, deltas_after=300, ws_connect=breaking_connector(exchange)
        )
    errors = [e for e in consumer.events if isinstance(e, ProtocolErrorEvent)]
    (error,) = errors
    assert "framing violation" in error.reason
    assert "masked a frame" in error.reason
    assert error.symbol == "", "a connection shared by two markets owns the report"
    (connection,) = stats["connections"]  # type: ignore[misc]
    assert (connection["frame_violations"], connection["reconnects"]) == (1, 1)
    kinds = consumer.kinds()
    assert kinds.count(StatusKind.RECONNECTING) == 2, "both markets of the connection are told"
    for symbol in ("BTC_USDC", "ETH_USDC"):
        assert_matches_truth(consumer, exchange, symbol)


async def test_a_silent_websocket_at_startup_is_reported_as_the_websocket(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The old CLI said "could not reach the exchange at <rest_url>" whatever failed; here REST
    answers and the WebSocket handshake never completes: the error names the WebSocket."""
    import io

    import pytest

    from backpack_actors.feed import Feed
    from backpack_actors.runner.app import ExchangeUnreachableError, RunOptions, run_feed
    from backpack_actors.testing import SimRestClient

    exchange = SimExchange(seed=72, markets=["BTC_USDC"], config=SimConfig(rate=50))

    @asynccontextmanager
    async def silent() -> AsyncIterator[Any]:
        await trio.sleep_forever()
        yield None  # pragma: no cover - never reached

    config = FeedConfig.from_kwargs(
        symbols=["BTC-USDC"], rest_url="http://sim.invalid", ws_url="ws://sim.invalid"
    )
    options = RunOptions(connect_timeout=5, install_signal_handlers=False)
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await nursery.start(exchange.run)
            with pytest.raises(ExchangeUnreachableError) as caught:
                await run_feed(
                    config,
                    options,
                    stdout=io.BytesIO(),
                    stderr=io.StringIO(),
                    feed_factory=lambda cfg: Feed(
                        cfg, rest_client=SimRestClient(exchange), ws_connect=silent, consume=False
                    ),
                )
            nursery.cancel_scope.cancel()
    message = str(caught.value)
    assert "no WebSocket connection to ws://sim.invalid came up within 5 s" in message, message
    assert "markets loaded from http://sim.invalid" in message


async def test_a_failing_silence_check_is_not_a_websocket_failure(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Issue 11 point 9: the old reader awaited REST for its silence check, so a REST failure
    there counted as a WebSocket failure and reconnected a healthy, quiet stream. Now the check
    runs beside the reader and a REST failure says nothing about the WebSocket."""
    from backpack_actors.feed import open_feed
    from backpack_actors.testing import SimRestClient

    exchange = SimExchange(seed=73, markets=["BTC_USDC"], config=SimConfig(rate=50))
    config = FeedConfig.from_kwargs(
        symbols=["BTC-USDC"],
        rest_url="http://sim.invalid",
        ws_url="ws://sim.invalid",
        snapshot_interval=0,
        stale_timeout=5,
    )
    kinds: list[StatusKind] = []
    with trio.fail_after(300):
        async with trio.open_nursery() as nursery:
            await nursery.start(exchange.run)
            async with open_feed(
                config,
                rest_client=SimRestClient(exchange),
                ws_connect=sim_memory_connector(exchange),
            ) as feed:
                async for event in feed:
                    if getattr(event, "kind", None) is StatusKind.BOOK_READY:
                        break
                # A quiet market, and every REST call fails while it is quiet.
                exchange.pause()
                exchange.faults.http_5xx(count=1000, status=503)
                calls = feed.rest.stats.calls
                await trio.sleep(60)  # twelve stale periods of silence
                checks = feed.rest.stats.calls - calls
                failed = feed.rest.stats.server_errors
                exchange.faults.http_5xx(count=0)
                while (event := feed.queue.get_nowait()) is not None:  # type: ignore[union-attr]
                    kinds.append(getattr(event, "kind", None))  # type: ignore[arg-type]
                stats = feed.statistics()
            nursery.cancel_scope.cancel()
    assert checks > 0, "the silence checks did ask REST"
    assert failed > 0, "and REST failed them"
    (connection,) = stats["connections"]
    assert connection["reconnects"] == 0, connection
    assert StatusKind.RECONNECTING not in kinds
    assert StatusKind.STALE not in kinds
