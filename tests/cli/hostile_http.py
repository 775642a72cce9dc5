"""A peer that is not the exchange: a tiny HTTP server answering every path one scripted way."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# One real-looking market (the simulator's BTC_USDC) whose tick size the tests may replace.
MARKET: dict[str, object] = {
    "baseSymbol": "BTC",
    "quoteSymbol": "USDC",
    "symbol": "BTC_USDC",
    "marketType": "SPOT",
    "orderBookState": "Open",
    "visible": True,
    "createdAt": "2025-01-21T06:34:54.691858",
    "filters": {
        "price": {"minPrice": "0.1", "maxPrice": None, "tickSize": "0.1"},
        "quantity": {"minQuantity": "0.00001", "maxQuantity": None, "stepSize": "0.00001"},
    },
}


def markets_with(price: dict[str, object] | None = None, **fields: object) -> bytes:
    """The /api/v1/markets body of MARKET with some filters or fields replaced."""
    market = json.loads(json.dumps(MARKET))
    if price:
        market["filters"]["price"].update(price)
    market.update(fields)
    return json.dumps([market]).encode()


@contextmanager
def hostile_http(status: int, body: bytes, content_type: str) -> Iterator[str]:
    """Serve ``status``/``body`` on every GET at 127.0.0.1:<free port>; yields the base URL."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass  # the test's output is the CLI's stderr, not this server's

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
