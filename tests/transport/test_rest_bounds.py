"""REST bodies are read under a total deadline and a size bound (issue 12): a body trickled a
byte at a time used to hold the single REST lane forever (requests' timeout is per read)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import trio

from backpack_actors.errors import ExchangeUnavailableError, ProtocolError
from backpack_actors.transport import rest
from backpack_actors.transport.rest import CcxtRestClient

DEPTH = b'{"asks":[["1.0","2"]],"bids":[["0.9","1"]],"lastUpdateId":"7","timestamp":1}'


@contextmanager
def server(trickle: float, body: bytes = DEPTH) -> Iterator[str]:
    """Serve ``body`` for every GET, one byte every ``trickle`` seconds (0: all at once)."""
    stop = threading.Event()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if not trickle:
                self.wfile.write(body)
                return
            for byte in body:
                if stop.wait(trickle):
                    return
                self.wfile.write(bytes([byte]))
                self.wfile.flush()

        def log_message(self, format: str, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        stop.set()
        httpd.shutdown()
        httpd.server_close()


async def test_a_trickled_body_ends_at_the_total_deadline() -> None:
    # 80 bytes at 0.2 s each would take 16 s; every read is well within requests' 1 s timeout.
    with server(trickle=0.2) as url:
        client = CcxtRestClient(url, timeout=1.0)
        started = time.monotonic()
        with trio.fail_after(10), pytest.raises(ExchangeUnavailableError, match="not complete"):
            await client.depth("BTC_USDC")
        # The deadline is the client's (1 s), checked between reads; the test's cap is 10 s.
        assert time.monotonic() - started < 10
        await client.aclose()


async def test_a_body_over_the_size_bound_is_a_protocol_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(rest, "MAX_BODY_BYTES", 64)
    with server(trickle=0, body=DEPTH + b" " * 200) as url:
        client = CcxtRestClient(url, timeout=5.0)
        with trio.fail_after(10), pytest.raises(ProtocolError, match="larger than 64 bytes"):
            await client.depth("BTC_USDC")
        await client.aclose()


async def test_a_normal_body_still_decodes() -> None:
    with server(trickle=0) as url:
        client = CcxtRestClient(url, timeout=5.0)
        with trio.fail_after(10):
            snapshot = await client.depth("BTC_USDC")
        await client.aclose()
    assert snapshot.last_update_id == 7
    assert [str(p) for p, _ in snapshot.asks] == ["1.0"]
