"""The handshake answer and the first frames in one read (issue 12): the frame stream starts
exactly after the answer's head, whatever the split, and messages come out whole and in order."""

from __future__ import annotations

import pytest
import trio
import trio.testing
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    Ping,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)

from backpack_actors.errors import ExchangeUnavailableError, RegionRestrictedError
from backpack_actors.transport.ws import wsproto_client

BIG = "b" * 300  # the 16-bit length form
EXPECTED: list[str | bytes] = ["first", BIG, "fragmented", b"\x00\x01\x02", "last"]


async def _accept(stream: trio.abc.Stream) -> WSConnection:
    """Read the client's request with a server-side wsproto; returns it ready to accept."""
    server = WSConnection(ConnectionType.SERVER)
    while True:
        server.receive_data(bytes(await stream.receive_some(65536)))
        if any(isinstance(event, Request) for event in server.events()):
            return server


def _frames(server: WSConnection) -> bytes:
    wire = server.send(TextMessage(data="first"))
    wire += server.send(TextMessage(data=BIG))
    wire += server.send(TextMessage(data="frag", message_finished=False))
    wire += server.send(Ping(payload=b"p"))  # a control frame inside a fragmented message
    wire += server.send(TextMessage(data="mented", message_finished=True))
    wire += server.send(BytesMessage(data=b"\x00\x01\x02"))
    wire += server.send(TextMessage(data="last"))
    return wire


async def _one_split(split: int | None) -> tuple[list[str | bytes], int, int]:
    """Messages and pings answered when the server's bytes arrive cut at ``split``.

    ``split=None`` sends answer and frames in one piece. Returns (messages, pings answered,
    length of the handshake answer).
    """
    client_stream, server_stream = trio.testing.memory_stream_pair()
    head_length = 0

    async def serve() -> None:
        nonlocal head_length
        server = await _accept(server_stream)
        head = server.send(AcceptConnection())
        head_length = len(head)
        wire = head + _frames(server)
        cut = len(wire) if split is None else split
        await server_stream.send_all(wire[:cut])
        # The client reads the first piece on its own before the rest arrives.
        await trio.testing.wait_all_tasks_blocked()
        if wire[cut:]:
            await server_stream.send_all(wire[cut:])

    got: list[str | bytes] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve)
        async with wsproto_client(client_stream, "ws://sim.memory/") as conn:
            while len(got) < len(EXPECTED):
                got.extend(await conn.receive_batch())
            answered = conn.pings_answered
    return got, answered, head_length


async def test_every_split_of_answer_and_frames_gives_whole_messages_in_order() -> None:
    with trio.fail_after(60):
        got, answered, head_length = await _one_split(None)
        assert got == EXPECTED
        assert answered == 1
        total = head_length + 5 + 304 + 6 + 3 + 8 + 5 + 6
        # Every cut: inside the head, right after it, inside every frame header and payload.
        for split in range(1, total):
            got, answered, _ = await _one_split(split)
            assert got == EXPECTED, split
            assert answered == 1, split


@pytest.mark.parametrize(
    ("status", "body", "error", "words"),
    [
        (451, b"", RegionRestrictedError, "HTTP 451"),
        (403, b"<html>blocked by CDN</html>", RegionRestrictedError, "HTTP 403"),
        (500, b"oops, a long body " * 30, ExchangeUnavailableError, "HTTP 500: oops"),
    ],
)
async def test_a_refusal_whose_body_arrives_with_the_head_and_later(
    status: int, body: bytes, error: type[Exception], words: str
) -> None:
    client_stream, server_stream = trio.testing.memory_stream_pair()

    async def serve() -> None:
        server = await _accept(server_stream)
        headers = [(b"content-length", str(len(body)).encode())]
        wire = server.send(RejectConnection(status_code=status, headers=headers, has_body=True))
        wire += server.send(RejectData(data=body, body_finished=True))
        cut = len(wire) - len(body) // 2
        await server_stream.send_all(wire[:cut])
        await trio.testing.wait_all_tasks_blocked()
        await server_stream.send_all(wire[cut:])

    caught: list[Exception] = []
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve)
            try:
                async with wsproto_client(client_stream, "ws://sim.memory/"):
                    pass
            except Exception as exc:  # checked below: the type is the test's parameter
                caught.append(exc)
    assert len(caught) == 1
    assert isinstance(caught[0], error)
    message = str(caught[0])
    assert words in message
    if body and status == 500:
        # The first 200 bytes of the body say what the server said.
        assert message.endswith(": " + body[:200].decode().strip())
