"""The soak in virtual time: the full fault mix against the in-process simulator in seconds, with
every checkpoint comparing books and trades with ground truth; and the soak's own detectors."""

from __future__ import annotations

import subprocess
import sys
from decimal import Decimal

import trio
import trio.testing

from backpack_actors.config import FeedConfig
from backpack_actors.core.events import BookDelta, BookSnapshot
from backpack_actors.sim import SimConfig, SimExchange
from backpack_actors.soak import FAULT_MIX, SoakConsumer, SoakReport, run_soak
from backpack_actors.testing import SimRestClient, sim_memory_connector

SYMBOLS = ("BTC_USDC", "ETH_USDC")


async def test_fault_mix_soak_keeps_books_equal_to_truth(
    autojump_clock: trio.testing.MockClock,
) -> None:
    exchange = SimExchange(seed=3, markets=list(SYMBOLS), config=SimConfig(rate=50))
    config = FeedConfig.from_kwargs(
        symbols=["BTC-USDC", "ETH-USDC"],
        rest_url="http://sim.invalid",
        ws_url="ws://sim.invalid",
        snapshot_interval=10,
        stale_timeout=5.0,
    )
    with trio.fail_after(3600):
        async with trio.open_nursery() as nursery:
            await nursery.start(exchange.run)
            report = await run_soak(
                exchange,
                config,
                duration=240,
                seed=7,
                rest_client_factory=lambda: SimRestClient(exchange),
                ws_connect=sim_memory_connector(exchange),
                fault_interval=2.0,
                checkpoint_interval=12.0,
            )
            nursery.cancel_scope.cancel()
    print(report.format())
    assert report.ok(), report.format()
    injected = [kind for kind in FAULT_MIX if report.faults_injected.get(kind, 0) > 0]
    assert len(injected) >= 8, report.format()
    assert report.checkpoints >= 12
    assert report.books_compared == report.checkpoints * len(SYMBOLS)
    assert report.trades_compared > 100
    assert report.gaps_detected > 0
    assert report.resyncs > 0
    assert report.protocol_errors > 0


def _delta(first: int, last: int) -> BookDelta:
    return BookDelta(
        symbol="BTC-USDC",
        exchange_symbol="BTC_USDC",
        first_update_id=first,
        last_update_id=last,
        raw_bids=(("99", "1"),),
        raw_asks=(),
        event_time_us=0,
        engine_time_us=0,
        received_at_ns=0,
    )


def test_consumer_counts_a_published_delta_that_skips_ids() -> None:
    consumer = SoakConsumer()
    consumer.apply(
        BookSnapshot(
            symbol="BTC-USDC",
            exchange_symbol="BTC_USDC",
            update_id=10,
            raw_bids=(("98", "1"),),
            raw_asks=(("101", "1"),),
            engine_time_us=0,
            received_at_ns=0,
            reason="initial",
        )
    )
    consumer.apply(_delta(11, 12))
    assert consumer.undetected_gaps == 0
    consumer.apply(_delta(14, 14))
    assert consumer.undetected_gaps == 1
    assert consumer.depth("BTC_USDC")[0] == (
        (Decimal("99"), Decimal("1")),
        (Decimal("98"), Decimal("1")),
    )


def test_report_verdict_fails_on_any_mismatch_gap_or_crash() -> None:
    assert SoakReport().ok()
    for field in ("book_mismatches", "trade_mismatches", "undetected_gaps", "crashes"):
        report = SoakReport()
        setattr(report, field, 1)
        assert not report.ok(), field
        assert "verdict: FAILED" in report.format()


def test_soak_module_runs_as_a_program_over_loopback() -> None:
    # The nox session and the README run it with -m: module-level order matters there, not
    # when the module is imported by the tests above.
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "backpack_actors.soak",
            "--duration",
            "6",
            "--checkpoint-interval",
            "2",
            "--fault-interval",
            "1",
            "--quiet",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "book mismatches: 0" in result.stdout
    assert "verdict: OK" in result.stdout
