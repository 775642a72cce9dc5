"""The REST client's data routes over real loopback HTTP: bodies decoded straight into the wire
types (depth levels as text), the same refusals, and the HTTP errors mapped as before."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import trio

from backpack_actors.core.wire import DepthSnapshotText, decode_depth_snapshot_text, decode_klines
from backpack_actors.errors import (
    ExchangeRequestError,
    ExchangeUnavailableError,
    ProtocolError,
    RateLimitedError,
    RegionRestrictedError,
)
from backpack_actors.transport.rest import CcxtRestClient

DEPTH = (
    b'{"asks":[["101.50","2"],["102","0.5"]],"bids":[["99.9","1.25"],["100.00","3"]],'
    b'"lastUpdateId":"42","timestamp":1700000000000000}'
)
TRADES = (
    b'[{"id":11,"price":"100.5","quantity":"0.1","quoteQuantity":"10.05","timestamp":1,'
    b'"isBuyerMaker":true},{"id":10,"price":"100.4","quantity":"0.2","quoteQuantity":"20.08",'
    b'"timestamp":1,"isBuyerMaker":false}]'
)


@contextmanager
def server(
    status: int, body: bytes, headers: dict[str, str] | None = None
) -> Iterator[tuple[str, list[str]]]:
    """Answer every GET with ``status`` and ``body``; yields the URL and the paths asked for."""
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.path)
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", seen
    finally:
        httpd.shutdown()
        httpd.server_close()


async def test_depth_comes_back_as_text_levels_exactly_as_sent() -> None:
    with server(200, DEPTH) as (url, seen):
        client = CcxtRestClient(url, timeout=5.0)
        with trio.fail_after(10):
            snapshot = await client.depth("BTC_USDC")
        await client.aclose()
    assert snapshot == DepthSnapshotText(
        asks=[("101.50", "2"), ("102", "0.5")],
        bids=[("99.9", "1.25"), ("100.00", "3")],
        last_update_id=42,
        timestamp=1700000000000000,
    )
    assert seen == ["/api/v1/depth?symbol=BTC_USDC"]


async def test_trades_and_history_decode_and_ask_the_right_route() -> None:
    with server(200, TRADES) as (url, seen):
        client = CcxtRestClient(url, timeout=5.0)
        with trio.fail_after(10):
            recent = await client.recent_trades("SOL_USDC", 1000)
            history = await client.trade_history("SOL_USDC", 100, 2500)
        await client.aclose()
    assert [(t.id, str(t.price), t.is_buyer_maker) for t in recent] == [
        (11, "100.5", True),
        (10, "100.4", False),
    ]
    assert history == recent
    assert seen == [
        "/api/v1/trades?symbol=SOL_USDC&limit=1000",
        "/api/v1/trades/history?symbol=SOL_USDC&limit=100&offset=2500",
    ]


@pytest.mark.parametrize(
    ("status", "body", "headers", "error", "check"),
    [
        (429, b"", {"Retry-After": "3"}, RateLimitedError, lambda e: e.retry_after == 3.0),
        (451, b"", {}, RegionRestrictedError, lambda e: e.status == 451),
        (403, b"<html>blocked</html>", {}, RegionRestrictedError, lambda e: e.status == 403),
        (503, b"", {}, ExchangeUnavailableError, lambda e: "503" in str(e)),
        (
            400,
            b'{"code":"INVALID_SYMBOL","message":"no such market"}',
            {},
            ExchangeRequestError,
            lambda e: e.code == "INVALID_SYMBOL" and e.status == 400,
        ),
    ],
)
async def test_http_errors_map_onto_the_error_tree(
    status: int,
    body: bytes,
    headers: dict[str, str],
    error: type[Exception],
    check: Callable[[Any], bool],
) -> None:
    with server(status, body, headers) as (url, _):
        client = CcxtRestClient(url, timeout=5.0)
        with trio.fail_after(10), pytest.raises(error) as info:
            await client.depth("BTC_USDC")
        await client.aclose()
    assert check(info.value)


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b'{"asks":[["-1","2"]],"bids":[],"lastUpdateId":1}', "bad ask level"),
        (b'{"asks":[],"bids":[["1e999999999","2"]],"lastUpdateId":1}', "bad bid level"),
        (b'{"asks":[["1","NaN"]],"bids":[],"lastUpdateId":1}', "bad ask level"),
        (b'{"asks":[],"bids":[],"lastUpdateId":-5}', "lastUpdateId"),
        (b"<html>not json</html>", "JSON"),
    ],
)
async def test_an_unusable_depth_body_is_a_protocol_error(body: bytes, problem: str) -> None:
    with server(200, body) as (url, _):
        client = CcxtRestClient(url, timeout=5.0)
        with trio.fail_after(10), pytest.raises(ProtocolError, match=problem):
            await client.depth("BTC_USDC")
        await client.aclose()


async def test_a_refused_connection_is_exchange_unavailable() -> None:
    with server(200, DEPTH) as (url, _):
        pass  # closed again: nothing listens on its port now
    client = CcxtRestClient(url, timeout=2.0)
    with trio.fail_after(10), pytest.raises(ExchangeUnavailableError, match="depth"):
        await client.depth("BTC_USDC")
    await client.aclose()


def test_text_levels_keep_the_exchange_spelling_and_refuse_what_decimal_refused() -> None:
    snapshot = decode_depth_snapshot_text(DEPTH, "BTC_USDC")
    assert snapshot.bids[-1] == ("100.00", "3")
    with pytest.raises(ProtocolError, match="need a bounded decimal price > 0"):
        decode_depth_snapshot_text(b'{"asks":[["0","1"]],"bids":[],"lastUpdateId":1}', "X")


async def test_klines_decode_the_recorded_body_and_ask_the_range() -> None:
    recorded = json.loads((Path(__file__).parents[1] / "data" / "klines_response.json").read_text())
    body = json.dumps(recorded["ccxt_static_ETH_USDC_1m"]).encode()
    with server(200, body) as (url, seen):
        client = CcxtRestClient(url, timeout=5.0)
        with trio.fail_after(10):
            candles = await client.klines("ETH_USDC", "1m", 1_700_000_000, 1_700_000_600)
        await client.aclose()
    assert [(c.start, c.end, c.open, c.close, c.volume, c.trades) for c in candles] == [
        ("2025-09-11 15:33:00", "2025-09-11 15:34:00", Decimal("4422.62"), Decimal("4422.62"),
         Decimal("0.0176"), 2),
    ]  # fmt: skip
    assert candles == decode_klines(body)
    assert seen == [
        "/api/v1/klines?symbol=ETH_USDC&interval=1m&startTime=1700000000&endTime=1700000600"
    ]
