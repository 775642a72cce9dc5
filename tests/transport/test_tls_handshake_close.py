"""Issue 11 point 9: a failed or slow TLS handshake closes its TCP socket (nothing leaks).

A real TCP server on loopback plays the broken peer; that the client closed its socket is seen
from the server's side as end-of-file, which a leaked socket would never give.
"""

from __future__ import annotations

import pytest
import trio
import trio.testing

from backpack_actors.errors import ExchangeUnavailableError
from backpack_actors.transport.ws import open_ws


async def _serve_one(
    listener: trio.SocketListener, behaviour: str, seen: list[bytes], closed: trio.Event
) -> None:
    stream = await listener.accept()
    async with stream:
        if behaviour == "garbage":
            await stream.send_all(b"HTTP/1.1 400 Bad Request\r\n\r\nthis is not TLS\r\n")
        # Read until the client closes: EOF (b"") proves its socket was closed.
        while True:
            try:
                data = await stream.receive_some(65536)
            except trio.BrokenResourceError:
                data = b""
            if not data:
                closed.set()
                return
            seen.append(data)


async def _run(behaviour: str, connect_timeout: float) -> tuple[str, list[bytes]]:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    listener = listeners[0]
    assert isinstance(listener, trio.SocketListener)
    port = listener.socket.getsockname()[1]
    seen: list[bytes] = []
    closed = trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_serve_one, listener, behaviour, seen, closed)
        with pytest.raises(ExchangeUnavailableError) as caught:
            async with open_ws(f"wss://127.0.0.1:{port}/", connect_timeout=connect_timeout):
                pass
        with trio.fail_after(connect_timeout + 5):
            await closed.wait()
        await listener.aclose()
    return str(caught.value), seen


async def test_a_peer_that_answers_tls_with_garbage_gets_its_socket_closed() -> None:
    with trio.fail_after(30):
        message, seen = await _run("garbage", connect_timeout=10.0)
    assert "cannot reach" in message
    # The client did start a TLS handshake (a ClientHello: record type 22) before giving up.
    assert seen
    assert seen[0][0] == 22


async def test_a_silent_tls_peer_times_out_and_gets_its_socket_closed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(60):
        message, seen = await _run("silent", connect_timeout=5.0)
    assert "TLS handshake" in message
    assert "timed out after 5 s" in message
    assert seen
    assert seen[0][0] == 22
