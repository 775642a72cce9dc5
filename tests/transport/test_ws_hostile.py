"""Hostile WebSocket servers (issue 12): bounded memory, bounded time, violations reported as such,
and no URL password in any message."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import trio
import trio.testing
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, CloseConnection, Request, TextMessage

from backpack_actors.errors import (
    ExchangeUnavailableError,
    RegionRestrictedError,
    WsProtocolViolation,
)
from backpack_actors.transport.ws import MAX_HANDSHAKE_HEAD, open_ws, wsproto_client
from backpack_actors.transport.wsframes import MAX_FRAGMENTS, FrameReader, WsProtocolError

PASSWORD = "Pw-51d0e8b2-UNIQUE"
URL = f"ws://user:{PASSWORD}@ws.example/stream"
SHOWN = "ws://user:***@ws.example/stream"

Server = Callable[[trio.abc.Stream], Awaitable[None]]


def _no_password(exc: BaseException) -> None:
    assert PASSWORD not in str(exc)
    assert PASSWORD not in repr(exc)


async def _read_request(stream: trio.abc.Stream) -> WSConnection:
    server = WSConnection(ConnectionType.SERVER)
    while True:
        server.receive_data(bytes(await stream.receive_some(65536)))
        for event in server.events():
            if isinstance(event, Request):
                # The Host header carries host[:port] only, never the userinfo.
                assert event.host == "ws.example"
                return server


async def _connect(serve: Server, *, deadline: float = 3.0) -> BaseException:
    """Run the client handshake against ``serve``; returns what it raised."""
    client_stream, server_stream = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve, server_stream)
        try:
            async with wsproto_client(client_stream, URL, connect_timeout=deadline):
                pass
        except ExchangeUnavailableError as exc:
            nursery.cancel_scope.cancel()
            return exc
        except RegionRestrictedError as exc:
            nursery.cancel_scope.cancel()
            return exc
    raise AssertionError("the handshake succeeded")


async def test_a_silent_server_times_out_with_the_deadline_in_the_message(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def silent(stream: trio.abc.Stream) -> None:
        await _read_request(stream)
        await trio.sleep_forever()

    with trio.fail_after(30):
        exc = await _connect(silent, deadline=3)
    assert type(exc) is ExchangeUnavailableError
    assert str(exc) == f"WebSocket handshake to {SHOWN} timed out after 3 s"
    _no_password(exc)


async def test_a_server_dripping_its_answer_is_cut_off_at_the_deadline(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def drip(stream: trio.abc.Stream) -> None:
        await _read_request(stream)
        # The client hangs up at its deadline.
        with contextlib.suppress(trio.BrokenResourceError):
            while True:
                await stream.send_all(b"HTTP/1.1 101 Switching Protocols\r\nX-Slow: ")
                await trio.sleep(0.5)

    with trio.fail_after(30):
        start = trio.current_time()
        exc = await _connect(drip, deadline=2.5)
        assert trio.current_time() - start == pytest.approx(2.5)
    assert "timed out after 2.5 s" in str(exc)


async def test_an_endless_answer_head_is_refused_at_its_bound() -> None:
    sent = 0

    async def endless(stream: trio.abc.Stream) -> None:
        nonlocal sent
        await _read_request(stream)
        line = b"X-Filler: " + b"f" * 1000 + b"\r\n"
        await stream.send_all(b"HTTP/1.1 101 Switching Protocols\r\n")
        while True:
            await stream.send_all(line)
            sent += len(line)
            await trio.testing.wait_all_tasks_blocked()

    with trio.fail_after(10):
        exc = await _connect(endless)
    assert f"HTTP head exceeds {MAX_HANDSHAKE_HEAD} bytes" in str(exc)
    # Refused as soon as the bound was passed, not after reading whatever the server sent.
    assert sent <= MAX_HANDSHAKE_HEAD + 2 * 1011
    _no_password(exc)


async def test_refusals_never_show_the_password() -> None:
    for status in (451, 500):

        async def refuse(stream: trio.abc.Stream, status: int = status) -> None:
            await _read_request(stream)
            await stream.send_all(f"HTTP/1.1 {status} No\r\ncontent-length: 0\r\n\r\n".encode())

        with trio.fail_after(10):
            exc = await _connect(refuse)
        assert f"HTTP {status}" in str(exc)
        assert SHOWN in str(exc)
        _no_password(exc)


async def test_a_closed_handshake_never_shows_the_password() -> None:
    async def hang_up(stream: trio.abc.Stream) -> None:
        await _read_request(stream)
        await stream.aclose()

    with trio.fail_after(10):
        exc = await _connect(hang_up)
    assert str(exc) == f"WebSocket {SHOWN}: closed during the handshake"


async def test_tcp_connect_timeout_names_the_phase_and_deadline(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def never(host: str, port: int, **kwargs: Any) -> trio.abc.Stream:
        await trio.sleep_forever()
        raise AssertionError

    monkeypatch.setattr(trio, "open_tcp_stream", never)
    with trio.fail_after(30), pytest.raises(ExchangeUnavailableError) as info:
        async with open_ws(f"wss://user:{PASSWORD}@ws.example:9443/", connect_timeout=4):
            pass
    assert str(info.value) == (
        "cannot reach wss://user:***@ws.example:9443/: TCP connect to the server timed out "
        "after 4 s"
    )
    _no_password(info.value)


async def test_not_a_websocket_url_never_shows_the_password() -> None:
    for url in (f"https://user:{PASSWORD}@ws.example/", f"ws://user:{PASSWORD}@[::1/"):
        with trio.fail_after(5), pytest.raises(ExchangeUnavailableError) as info:
            async with open_ws(url):
                pass
        assert "not a WebSocket URL" in str(info.value)
        _no_password(info.value)


# --- framing violations -----------------------------------------------------------------------


def _frame(first: int, payload: bytes = b"", masked: bool = False) -> bytes:
    assert len(payload) < 126
    return (
        bytes([first, (0x80 if masked else 0) | len(payload)])
        + (b"\0\0\0\0" if masked else b"")
        + payload
    )


FLOOD = _frame(0x01, b"a") + _frame(0x00) * (MAX_FRAGMENTS + 1)

VIOLATIONS = [
    (_frame(0x81, b"x", masked=True), "masked"),
    (_frame(0xC1, b"x"), "reserved bits"),
    (_frame(0x83), "unknown opcode"),
    (bytes([0x81, 127]) + (1 << 40).to_bytes(8, "big"), "exceeds"),
    (FLOOD, f"more than {MAX_FRAGMENTS} frames"),
    (_frame(0x09, b"p" * 10)[:1] + bytes([126]) + (200).to_bytes(2, "big") + b"p" * 200, "control"),
    (_frame(0x09), "control frame"),  # a ping without FIN
]


@pytest.mark.parametrize(("wire", "reason"), VIOLATIONS, ids=[r for _, r in VIOLATIONS])
async def test_a_framing_violation_ends_the_connection_as_a_violation(
    wire: bytes, reason: str
) -> None:
    client_stream, server_stream = trio.testing.memory_stream_pair()
    closes: list[int] = []

    async def serve() -> None:
        server = await _read_request(server_stream)
        await server_stream.send_all(
            server.send(AcceptConnection()) + server.send(TextMessage(data="ok")) + wire
        )
        while True:
            data = await server_stream.receive_some(65536)
            if not data:
                return
            server.receive_data(bytes(data))
            closes.extend(e.code for e in server.events() if isinstance(e, CloseConnection))

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve)
            async with wsproto_client(client_stream, URL) as conn:
                batch = await conn.receive_batch()
                assert batch == ["ok"]
                with pytest.raises(WsProtocolViolation) as info:
                    await conn.receive_batch()
                assert reason in info.value.reason
                assert isinstance(info.value, ExchangeUnavailableError)
                assert str(info.value).startswith(f"WebSocket {SHOWN}: protocol error")
                _no_password(info.value)
                # Framing cannot resume: every later call fails the same way.
                with pytest.raises(WsProtocolViolation):
                    await conn.receive_batch()
            await trio.testing.wait_all_tasks_blocked()
    # The server was told why (1002: protocol error).
    assert closes == [1002]


# --- fragment bounds of the reader ---------------------------------------------------------------


def test_endless_empty_continuations_are_refused_by_count() -> None:
    reader = FrameReader(max_message=1 << 30)
    reader.feed(_frame(0x01, b"a"))
    reader.feed(_frame(0x00) * (MAX_FRAGMENTS - 1))
    with pytest.raises(WsProtocolError, match=f"more than {MAX_FRAGMENTS} frames"):
        reader.feed(_frame(0x00))


def test_fragment_headers_count_toward_the_message_bound() -> None:
    # 600 empty continuations carry no payload but 1200 bytes on the wire.
    reader = FrameReader(max_message=1000, max_fragments=10_000)
    with pytest.raises(WsProtocolError, match="exceeds 1000 bytes"):
        reader.feed(_frame(0x01, b"a") + _frame(0x00) * 600)


def test_a_message_in_the_most_fragments_allowed_comes_out_whole() -> None:
    reader = FrameReader(max_message=1 << 20)
    wire = _frame(0x01, b"<") + _frame(0x00, b"x") * (MAX_FRAGMENTS - 2) + _frame(0x80, b">")
    messages, pings, close = reader.feed(wire)
    assert messages == ["<" + "x" * (MAX_FRAGMENTS - 2) + ">"]
    assert (list(pings), close) == ([], None)
