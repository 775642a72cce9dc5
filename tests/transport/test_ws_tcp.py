"""The plain-TCP read path (the socket read directly, waiting first unless the last read filled
the buffer) over real loopback sockets: bursts larger than one read, a large message trickled in
small pieces, pings and the close come out exactly as a server-side wsproto sent them."""

from __future__ import annotations

import functools

import pytest
import trio
import trio.lowlevel
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    CloseConnection,
    Ping,
    Pong,
    Request,
    TextMessage,
)

from backpack_actors.errors import ExchangeUnavailableError
from backpack_actors.transport.ws import RECEIVE_BYTES, WsprotoConnection, open_ws

BURST = [f'{{"n":{i},"pad":"{"x" * 180}"}}' for i in range(2000)]  # ~400 KB: many full reads
LARGE = "L" * 200_000


async def _serve(stream: trio.SocketStream, pongs: list[bytes]) -> None:
    server = WSConnection(ConnectionType.SERVER)
    while True:
        server.receive_data(bytes(await stream.receive_some(65536)))
        if any(isinstance(event, Request) for event in server.events()):
            break
    await stream.send_all(server.send(AcceptConnection()))
    # One write far larger than one read.
    await stream.send_all(b"".join(server.send(TextMessage(data=text)) for text in BURST))
    await stream.send_all(server.send(Ping(payload=b"are you there")))
    # A large message in 1 KB writes, each a separate read on the client's side.
    wire = server.send(TextMessage(data=LARGE))
    for start in range(0, len(wire), 1024):
        await stream.send_all(wire[start : start + 1024])
        await trio.lowlevel.checkpoint()
    await stream.send_all(server.send(TextMessage(data="last")))
    # The pong arrives before the close goes out.
    while not pongs:
        server.receive_data(bytes(await stream.receive_some(65536)))
        pongs.extend(bytes(e.payload) for e in server.events() if isinstance(e, Pong))
    await stream.send_all(server.send(CloseConnection(code=1001, reason="bye")))
    await trio.sleep_forever()


async def _read_until_closed(
    conn: WsprotoConnection, got: list[str | bytes], batches: list[int]
) -> None:
    """Read until the connection ends (it raises then), counting the batches."""
    while True:
        got.extend(await conn.receive_batch())
        batches[0] += 1


async def test_messages_pings_and_close_over_a_real_socket() -> None:
    pongs: list[bytes] = []
    got: list[str | bytes] = []
    counter = [0]
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(
                functools.partial(trio.serve_tcp, host="127.0.0.1"),
                lambda stream: _serve(stream, pongs),
                0,
            )
            port = listeners[0].socket.getsockname()[1]
            async with open_ws(f"ws://127.0.0.1:{port}/") as conn:
                assert isinstance(conn, WsprotoConnection)
                with pytest.raises(ExchangeUnavailableError, match="code 1001 bye"):
                    await _read_until_closed(conn, got, counter)
                batches = counter[0]
                answered = conn.pings_answered
            nursery.cancel_scope.cancel()
    assert got == [*BURST, LARGE, "last"]
    assert pongs == [b"are you there"]
    assert answered == 1
    # The burst needed several reads that filled the whole buffer, each handing over everything
    # it completed (far fewer batches than messages).
    assert len("".join(BURST)) > 4 * RECEIVE_BYTES
    assert batches < len(BURST) / 10
