"""The live view rendered to a recording console, the JSONL encoding and the metrics registry."""

from __future__ import annotations

import io
import json
from typing import Any

import trio
from prometheus_client import generate_latest
from rich.console import Console

from backpack_actors.core.events import (
    BookDelta,
    BookSnapshot,
    ProtocolErrorEvent,
    Side,
    StatusEvent,
    StatusKind,
    Trade,
)
from backpack_actors.runner import FeedMetrics, LiveState, LiveView, encode_event, render_live
from backpack_actors.runner.live import plain_lines

T0 = 1_767_225_600_000_000


def _snapshot(symbol: str = "BTC-USDC") -> BookSnapshot:
    return BookSnapshot(
        symbol=symbol,
        exchange_symbol=symbol.replace("-", "_"),
        update_id=100,
        raw_bids=(("100.5", "1.25"), ("100.4", "2"), ("100.1", "7")),
        raw_asks=(("100.7", "0.5"), ("100.9", "3")),
        engine_time_us=T0,
        received_at_ns=T0 * 1000,
        reason="initial",
    )


def _delta() -> BookDelta:
    return BookDelta(
        symbol="BTC-USDC",
        exchange_symbol="BTC_USDC",
        first_update_id=101,
        last_update_id=101,
        raw_bids=(("100.6", "0.75"), ("100.4", "0")),
        raw_asks=(),
        event_time_us=T0 + 1_000,
        engine_time_us=T0 + 1_000,
        received_at_ns=(T0 + 4_000) * 1000,  # 3 ms lag
    )


def _trade(trade_id: int, price: str, side: Side) -> Trade:
    return Trade(
        symbol="BTC-USDC",
        exchange_symbol="BTC_USDC",
        trade_id=trade_id,
        raw_price=price,
        raw_amount="0.01",
        side=side,
        event_time_us=T0 + 2_000,
        engine_time_us=T0 + 2_000,
        received_at_ns=(T0 + 5_000) * 1000,
    )


def _stats(frames: int, *, mode: str = "ws", state: str = "live") -> dict[str, Any]:
    return {
        "queue": {"depth": 3, "max_depth": 9, "conflated": {"BTC_USDC": 4}, "dropped": 0},
        "rest": {"calls": 5, "rate_limited": 2, "server_errors": 0, "retries": 2},
        "streams": {
            "BTC_USDC": {"mode": "ws", "frames": frames, "decode_errors": 1, "reconnects": 2},
            "ETH_USDC": {"mode": mode, "frames": 7, "decode_errors": 0, "reconnects": 0},
        },
        "reconciler": {
            "symbols": {
                "BTC_USDC": {
                    "state": "live",
                    "book": {"gaps": 3, "resyncs": 4},
                    "trades": {"gaps": 1},
                },
                "ETH_USDC": {"state": state, "book": {"gaps": 0, "resyncs": 0}, "trades": {}},
            }
        },
    }


def _state() -> LiveState:
    state = LiveState(["BTC-USDC", "ETH-USDC"], levels=2)
    for event in (
        _snapshot(),
        _delta(),
        _trade(11, "100.6", Side.BUY),
        _trade(12, "100.5", Side.SELL),
    ):
        state.observe(event)
    state.update_stats(_stats(100, mode="rest", state="buffering"), now=10.0)
    state.update_stats(_stats(150, mode="rest", state="buffering"), now=12.0)
    return state


def test_live_view_shows_books_trades_rates_and_health() -> None:
    console = Console(record=True, width=110, force_terminal=False, color_system=None)
    console.print(render_live(_state()))
    text = console.export_text()
    assert "events 4  uptime 2 s" in text
    assert "BTC-USDC  [WS]" in text
    assert "ETH-USDC  [REST-only]" in text
    btc = text[text.index("BTC-USDC  [WS]") : text.index("ETH-USDC  [REST-only]")]
    # Top 2 levels after the delta: bids 100.6 (new) and 100.5; 100.4 was removed.
    rows = [line for line in btc.splitlines() if "100." in line and "buy" not in line]
    assert "0.75" in rows[0]
    assert "100.6" in rows[0]
    assert "100.7" in rows[0]
    assert "0.5" in rows[0]
    assert "1.25" in rows[1]
    assert "100.5" in rows[1]
    assert "100.9" in rows[1]
    assert "100.4" not in btc
    assert "100.1" not in btc  # only --levels 2 shown
    # Newest trade first.
    assert btc.index("sell") < btc.index("buy")
    assert "12" in btc
    # 50 frames over 2 s, median lag of 3 ms and 3 ms = 3.0, counters from statistics.
    assert (
        "frames/s 25.0  lag 3.0 ms  book gaps 3  trade gaps 1  resyncs 4  reconnects 2  "
        "decode errors 1"
    ) in btc
    eth = text[text.index("ETH-USDC  [REST-only]") :]
    assert "waiting for the ETH-USDC book" in eth


def test_plain_lines_when_not_a_terminal() -> None:
    lines = plain_lines(_state())
    assert lines[0] == (
        "BTC-USDC ws ready bid 0.75@100.6 ask 0.5@100.7 frames/s 25.0 lag 3.0ms book gaps 3 "
        "trade gaps 1 resyncs 4 reconnects 2"
    )
    assert lines[1].startswith("ETH-USDC rest syncing bid - ask -")


async def test_live_view_redraws_at_most_ten_times_a_second(autojump_clock: Any) -> None:
    terminal = Console(file=io.StringIO(), force_terminal=True, width=100)
    view = LiveView(_state(), terminal, max_fps=50)
    with trio.move_on_after(2.0):
        await view.run()
    assert 15 <= view.redraws <= 21
    plain_out = io.StringIO()
    plain = LiveView(_state(), Console(file=plain_out, width=200), plain_interval=1.0)
    with trio.move_on_after(2.5):
        await plain.run()
    assert plain.redraws == 2
    assert plain_out.getvalue().count("BTC-USDC ws ready bid 0.75@100.6") == 2


def test_jsonl_schema_exact_decimals_and_types() -> None:
    trade = json.loads(encode_event(_trade(11, "100.60", Side.BUY)))
    assert trade == {
        "type": "trade",
        "symbol": "BTC-USDC",
        "exchange_symbol": "BTC_USDC",
        "trade_id": 11,
        "price": "100.60",
        "amount": "0.01",
        "side": "buy",
        "event_time_us": T0 + 2_000,
        "engine_time_us": T0 + 2_000,
        "received_at_ns": (T0 + 5_000) * 1000,
        "backfilled": False,
        "received_mono_ns": 0,
    }
    snap = json.loads(encode_event(_snapshot(), book_depth=2))
    assert snap["type"] == "book_snapshot"
    assert snap["bids"] == [["100.5", "1.25"], ["100.4", "2"]]
    assert snap["asks"] == [["100.7", "0.5"], ["100.9", "3"]]
    delta = json.loads(encode_event(_delta()))
    assert delta["type"] == "book_delta"
    assert delta["bids"] == [["100.6", "0.75"], ["100.4", "0"]]
    status = StatusEvent(
        symbol="BTC-USDC", kind=StatusKind.RESYNCED, reason="gap", counts={"gaps": 1}
    )
    assert json.loads(encode_event(status))["kind"] == "resynced"
    error = ProtocolErrorEvent(
        symbol="BTC-USDC", stream="depth", reason="bad", excerpt="{", count=1
    )
    assert json.loads(encode_event(error))["type"] == "protocol_error"
    assert encode_event(_delta()).count(b"\n") == 1


def test_metrics_names_and_values() -> None:
    metrics = FeedMetrics()
    for event in (_snapshot(), _delta(), _trade(11, "100.6", Side.BUY)):
        metrics.observe(event)
    metrics.update(_stats(150, mode="rest", state="buffering"))
    text = generate_latest(metrics.registry).decode()
    expected = [
        'backpack_events_total{type="book_delta"} 1.0',
        'backpack_events_total{type="trade"} 1.0',
        'backpack_frames_received_total{symbol="BTC-USDC"} 150.0',
        'backpack_decode_errors_total{symbol="BTC-USDC"} 1.0',
        'backpack_book_gaps_total{symbol="BTC-USDC"} 3.0',
        'backpack_trade_gaps_total{symbol="BTC-USDC"} 1.0',
        'backpack_resyncs_total{symbol="BTC-USDC"} 4.0',
        'backpack_reconnects_total{symbol="BTC-USDC"} 2.0',
        'backpack_books_conflated_total{symbol="BTC-USDC"} 4.0',
        'backpack_book_ready{symbol="BTC-USDC"} 1.0',
        'backpack_book_ready{symbol="ETH-USDC"} 0.0',
        'backpack_rest_only{symbol="ETH-USDC"} 1.0',
        "backpack_rest_requests_total 5.0",
        "backpack_rest_rate_limited_total 2.0",
        "backpack_queue_depth 3.0",
        "backpack_queue_max_depth 9.0",
        'backpack_event_lag_seconds_bucket{le="0.0025",symbol="BTC-USDC"} 0.0',
        'backpack_event_lag_seconds_bucket{le="0.005",symbol="BTC-USDC"} 2.0',
        'backpack_event_lag_seconds_count{symbol="BTC-USDC"} 2.0',
    ]
    for line in expected:
        assert line in text, line


def test_live_view_shows_the_other_channels_and_the_account() -> None:
    from decimal import Decimal

    from backpack_actors.core.events import BookTicker, Candle, MarkPrice, Ticker
    from backpack_actors.private import (
        Balance,
        OrderKind,
        OrderUpdate,
        PositionKind,
        PositionUpdate,
    )

    state = LiveState(["BTC-USDC-PERP"], levels=2)
    state.observe(
        BookTicker("BTC-USDC-PERP", "BTC_USDC_PERP", 7, "100.5", "1.25", "100.7", "0.5", T0, T0, 0)
    )
    state.observe(
        Ticker("BTC-USDC-PERP", "BTC_USDC_PERP", "99", "101", "98", "100.6", "12", "1200", 5, T0, 0)
    )
    state.observe(
        Candle(
            "BTC-USDC-PERP", "BTC_USDC_PERP", "1m", T0, T0 + 60_000_000, "100", "101", "99",
            "100.6", "3", 4, False, T0, 0,
        )
    )  # fmt: skip
    state.observe(
        MarkPrice("BTC-USDC-PERP", "BTC_USDC_PERP", "100.55", "100.5", "0.0001", T0, T0, T0, 0)
    )
    order = OrderUpdate(
        symbol="BTC-USDC-PERP", exchange_symbol="BTC_USDC_PERP", order_id="o1",
        kind=OrderKind.NEW, event_type="orderAccepted", status="New", side="Bid",
        quantity=Decimal("2"), executed_quantity=Decimal("0"), price=Decimal("99.5"),
    )  # fmt: skip
    state.observe(order)
    state.observe(
        PositionUpdate(
            symbol="BTC-USDC-PERP", exchange_symbol="BTC_USDC_PERP", kind=PositionKind.OPENED,
            net_quantity=Decimal("-0.5"), entry_price=Decimal("100.2"),
        )
    )  # fmt: skip
    state.observe(
        Balance(asset="USDC", available=Decimal("900"), locked=Decimal("199"), staked=Decimal(0))
    )
    console = Console(record=True, width=200, force_terminal=False, color_system=None)
    console.print(render_live(state))
    text = console.export_text()
    assert "touch 1.25@100.5 / 0.5@100.7" in text
    assert "24h last 100.6 high 101 low 98 vol 12" in text
    assert "candle 1m O 100 H 101 L 99 C 100.6 V 3 (open)" in text
    assert "mark 100.55 index 100.5 funding 0.0001" in text
    assert "open orders 1" in text
    assert "BTC-USDC-PERP Bid 0/2 @99.5 New" in text
    assert "BTC-USDC-PERP -0.5 entry 100.2" in text
    assert "USDC 900 (+199)" in text
    # A filled order leaves the open orders.
    import msgspec

    state.observe(msgspec.structs.replace(order, status="Filled", kind=OrderKind.FILLED))
    console = Console(record=True, width=200, force_terminal=False, color_system=None)
    console.print(render_live(state))
    assert "open orders 0" in console.export_text()


def test_every_channel_has_its_events_counter_from_the_start() -> None:
    from backpack_actors.core.events import BookTicker

    metrics = FeedMetrics()
    metrics.observe(
        BookTicker("BTC-USDC", "BTC_USDC", 7, "100.5", "1.25", "100.7", "0.5", T0, T0, 0)
    )
    text = generate_latest(metrics.registry).decode()
    assert 'backpack_events_total{type="book_ticker"} 1.0' in text
    for kind in ("ticker", "candle", "mark_price", "open_interest", "liquidation", "fill"):
        assert f'backpack_events_total{{type="{kind}"}} 0.0' in text, kind
