"""Every simulator fault against the whole pipeline, in virtual time: the documented reaction, the
status events, and books equal to the exchange's ground truth afterwards."""

from __future__ import annotations

import pytest
import trio

from backpack_actors.config import FeedConfig
from backpack_actors.core.events import StatusKind
from backpack_actors.errors import RegionRestrictedError
from backpack_actors.feed import open_feed
from backpack_actors.sim import SimConfig, SimExchange
from backpack_actors.testing import SimRestClient, sim_memory_connector
from tests.pipeline_helpers import (
    assert_matches_truth,
    assert_trades_match,
    run_pipeline,
)

SYMBOLS = ("BTC_USDC", "ETH_USDC")


def _exchange(seed: int = 11) -> SimExchange:
    return SimExchange(seed=seed, markets=list(SYMBOLS), config=SimConfig(rate=100))


def _config(**overrides: object) -> FeedConfig:
    settings: dict[str, object] = {
        "symbols": ["BTC-USDC", "ETH-USDC"],
        "rest_url": "http://sim.invalid",
        "ws_url": "ws://sim.invalid",
        "snapshot_interval": 0,
        "stale_timeout": 5.0,
    }
    settings.update(overrides)
    return FeedConfig.from_kwargs(**settings)


def _check_truth(consumer: object, exchange: SimExchange) -> None:
    for sym in SYMBOLS:
        assert_matches_truth(consumer, exchange, sym)  # type: ignore[arg-type]
        assert_trades_match(consumer, exchange, sym)  # type: ignore[arg-type]


async def test_gap_resyncs_that_symbol_only(autojump_clock: trio.testing.MockClock) -> None:
    exchange = _exchange()
    consumer, _ = await run_pipeline(
        exchange, _config(), after_ready=lambda ex: ex.faults.drop_delta("BTC_USDC")
    )
    assert exchange.faults.injected["drop"] == 1
    assert consumer.kinds("BTC-USDC")[1:] == [
        StatusKind.GAP_DETECTED,
        StatusKind.RESYNCING,
        StatusKind.RESYNCED,
    ]
    assert consumer.kinds("ETH-USDC") == [StatusKind.BOOK_READY], "other symbols are untouched"
    _check_truth(consumer, exchange)


async def test_duplicate_is_dropped_without_resync(autojump_clock: trio.testing.MockClock) -> None:
    exchange = _exchange()
    consumer, stats = await run_pipeline(
        exchange, _config(), after_ready=lambda ex: ex.faults.duplicate_delta("BTC_USDC", count=3)
    )
    assert exchange.faults.injected["duplicate"] == 3
    assert consumer.kinds().count(StatusKind.RESYNCING) == 0
    book_counts = stats["reconciler"]["symbols"]["BTC_USDC"]["book"]  # type: ignore[index]
    assert book_counts["duplicates"] == 3
    _check_truth(consumer, exchange)


async def test_reorder_is_a_gap_and_resyncs(autojump_clock: trio.testing.MockClock) -> None:
    exchange = _exchange()
    consumer, _ = await run_pipeline(
        exchange, _config(), after_ready=lambda ex: ex.faults.reorder_deltas("ETH_USDC")
    )
    assert exchange.faults.injected["reorder"] == 1
    assert StatusKind.GAP_DETECTED in consumer.kinds("ETH-USDC")
    assert consumer.kinds("ETH-USDC")[-1] is StatusKind.RESYNCED
    assert consumer.kinds("BTC-USDC") == [StatusKind.BOOK_READY]
    _check_truth(consumer, exchange)


@pytest.mark.parametrize("group_size", [1, 50])
async def test_stall_is_detected_as_stale_and_recovers(
    autojump_clock: trio.testing.MockClock, group_size: int
) -> None:
    exchange = _exchange()
    consumer, stats = await run_pipeline(
        exchange,
        _config(connection_group_size=group_size),
        after_ready=lambda ex: ex.faults.stall(seconds=12, symbol="BTC_USDC"),
    )
    kinds = consumer.kinds("BTC-USDC")
    # After 5 s of silence REST shows the book moved on: the stream is stale. Alone on its
    # connection (group size 1) the connection is replaced; sharing one with ETH (group size 50),
    # only BTC is resubscribed and the connection stays. Either way the next check comes later
    # (10 s), after the stall (12 s) ended, so there is exactly one stale spell.
    streams = stats["streams"]
    assert kinds.count(StatusKind.STALE) == 1
    assert streams["BTC_USDC"]["reconnects"] == (1 if group_size == 1 else 0)  # type: ignore[index]
    if group_size == 1:
        assert streams["ETH_USDC"]["reconnects"] == 0  # type: ignore[index]
    assert kinds[-1] is StatusKind.RESYNCED
    assert consumer.kinds("ETH-USDC") == [StatusKind.BOOK_READY]
    _check_truth(consumer, exchange)


async def test_disconnect_reconnects_resyncs_and_backfills_trades(
    autojump_clock: trio.testing.MockClock,
) -> None:
    exchange = _exchange()
    consumer, stats = await run_pipeline(
        exchange,
        _config(),
        after_ready=lambda ex: ex.faults.disconnect_after(frames=50, connections=2),
        deltas_after=1500,
    )
    assert exchange.faults.injected["disconnect"] == 2
    kinds = consumer.kinds()
    # Both markets share one connection (group size 50): each drop reconnects it once and
    # resyncs exactly its two markets.
    (connection,) = stats["connections"]  # type: ignore[misc]
    assert connection["reconnects"] == 2
    assert kinds.count(StatusKind.RECONNECTING) == 2 * len(SYMBOLS)
    assert kinds.count(StatusKind.RESYNCED) == 2 * len(SYMBOLS)
    # ConsumerBooks asserted id-consecutive trades as they arrived: whatever the reconnect missed
    # was backfilled from REST and delivered in order.
    backfilled = [t for sym in SYMBOLS for t in consumer.trades[sym] if t.backfilled]
    assert backfilled, "trades missed during the reconnect come back flagged as backfilled"
    _check_truth(consumer, exchange)


async def test_malformed_frame_is_reported_and_nothing_lost(
    autojump_clock: trio.testing.MockClock,
) -> None:
    exchange = _exchange()
    consumer, stats = await run_pipeline(
        exchange, _config(), after_ready=lambda ex: ex.faults.malformed_frame("BTC_USDC", count=2)
    )
    assert exchange.faults.injected["malformed"] == 2
    # Truncated JSON cuts the frame before its symbol: on a connection shared by several
    # markets it is reported against the connection (symbol ""), never dropped silently.
    errors = stats["reconciler"]["protocol_errors"]  # type: ignore[index]
    assert sum(errors.values()) == 2, errors
    assert set(errors) <= {"BTC_USDC", ""}, errors
    assert StatusKind.RESYNCING not in consumer.kinds()
    _check_truth(consumer, exchange)


async def test_refused_handshakes_are_retried(autojump_clock: trio.testing.MockClock) -> None:
    exchange = _exchange()
    exchange.faults.refuse_handshake(count=3, status=503)
    consumer, stats = await run_pipeline(exchange, _config())
    assert exchange.faults.injected["refuse_handshake"] == 3
    (connection,) = stats["connections"]  # type: ignore[misc]
    assert connection["reconnects"] == 3
    assert consumer.kinds().count(StatusKind.BOOK_READY) == 2
    _check_truth(consumer, exchange)


async def test_429_honours_retry_after(autojump_clock: trio.testing.MockClock) -> None:
    exchange = _exchange()
    exchange.faults.http_429(count=2, retry_after=7)
    start = trio.current_time()
    consumer, stats = await run_pipeline(exchange, _config())
    assert exchange.faults.injected["http_429"] == 2
    assert stats["rest"]["rate_limited"] == 2  # type: ignore[index]
    first_ready = min(s.at for s in consumer.statuses if s.kind is StatusKind.BOOK_READY)
    del first_ready  # wall-clock stamped; the virtual delay is checked below
    assert trio.current_time() - start >= 14, "two Retry-After: 7 pauses were honoured"
    _check_truth(consumer, exchange)


async def test_5xx_is_retried_with_backoff(autojump_clock: trio.testing.MockClock) -> None:
    exchange = _exchange()
    exchange.faults.http_5xx(count=3, status=502)
    consumer, stats = await run_pipeline(exchange, _config())
    assert exchange.faults.injected["http_5xx"] == 3
    assert stats["rest"]["server_errors"] == 3  # type: ignore[index]
    _check_truth(consumer, exchange)


async def test_451_is_terminal_with_no_retries(autojump_clock: trio.testing.MockClock) -> None:
    exchange = _exchange()
    exchange.faults.http_451()
    client = SimRestClient(exchange)

    async def start_feed() -> None:
        async with open_feed(
            _config(), rest_client=client, ws_connect=sim_memory_connector(exchange)
        ):
            raise AssertionError("the feed cannot start from a restricted region")

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await nursery.start(exchange.run)
            with pytest.raises(RegionRestrictedError, match="not available from this location"):
                await start_feed()
            nursery.cancel_scope.cancel()
    assert client.calls == 1, "a region restriction is never retried"
