"""FrameReader against wsproto as the reference: frames a real server-side wsproto writes, split
at arbitrary points across reads, parse to the same messages, pings and close."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    Request,
    TextMessage,
)

from backpack_actors.transport.wsframes import FrameReader, WsProtocolError


def _server() -> WSConnection:
    """A server-side wsproto connection past its handshake."""
    client = WSConnection(ConnectionType.CLIENT)
    server = WSConnection(ConnectionType.SERVER)
    server.receive_data(client.send(Request(host="x", target="/")))
    next(server.events())
    server.send(AcceptConnection())
    return server


messages = st.one_of(
    st.text(max_size=300).map(lambda t: ("text", t)),
    st.binary(max_size=300).map(lambda b: ("bytes", b)),
    st.binary(max_size=125).map(lambda b: ("ping", b)),
    # Past 65535 bytes: the 64-bit length form.
    st.integers(min_value=65_536, max_value=70_000).map(lambda n: ("text", "x" * n)),
)


@given(
    st.lists(messages, max_size=12),
    st.lists(st.integers(min_value=1, max_value=5000), max_size=20),
    st.booleans(),
    st.booleans(),
)
def test_same_messages_as_wsproto_whatever_the_reads(
    items: list[tuple[str, object]], cuts: list[int], fragment: bool, close: bool
) -> None:
    server = _server()
    wire = b""
    for kind, value in items:
        if kind == "text":
            assert isinstance(value, str)
            if fragment and len(value) > 1:
                half = len(value) // 2
                wire += server.send(TextMessage(data=value[:half], message_finished=False))
                wire += server.send(TextMessage(data=value[half:], message_finished=True))
            else:
                wire += server.send(TextMessage(data=value))
        elif kind == "bytes":
            assert isinstance(value, bytes)
            wire += server.send(BytesMessage(data=value))
        else:
            assert isinstance(value, bytes)
            wire += server.send(Ping(payload=value))
    if close:
        wire += server.send(CloseConnection(code=1001, reason="going away"))
    reader = FrameReader(max_message=1 << 20)
    got: list[object] = []
    pings: list[bytes] = []
    closed = None
    pos = 0
    for cut in [*cuts, len(wire)]:
        chunk = wire[pos : pos + cut]
        pos += len(chunk)
        if not chunk or closed:
            continue
        batch, ping, closed = reader.feed(chunk)
        got.extend(batch)
        pings.extend(ping)
    assert pos == len(wire)
    assert got == [v for k, v in items if k in ("text", "bytes")]
    assert pings == [v for k, v in items if k == "ping"]
    assert closed == ((1001, "going away") if close else None)


def test_invalid_utf8_text_comes_back_as_bytes_for_the_decoder_to_report() -> None:
    frame = bytes([0x81, 2, 0xFF, 0xFE])
    assert FrameReader(1024).feed(frame)[0] == [b"\xff\xfe"]


@pytest.mark.parametrize(
    ("frame", "problem"),
    [
        (bytes([0x81, 0x82, 1, 2, 3, 4, 0, 0]), "masked"),
        (bytes([0xC1, 1, 0x61]), "reserved bits"),
        (bytes([0x83, 0]), "unknown opcode"),
        (bytes([0x80, 1, 0x61]), "continuation frame without"),
        (bytes([0x09, 0]), "control frame"),
        (bytes([0x81, 127]) + (1 << 40).to_bytes(8, "big"), "exceeds"),
    ],
)
def test_framing_violations_are_refused(frame: bytes, problem: str) -> None:
    with pytest.raises(WsProtocolError, match=problem):
        FrameReader(1 << 20).feed(frame)


def test_the_single_frame_fast_path_keeps_the_message_bound() -> None:
    # A whole text frame in the 16-bit length form, larger than the bound: refused, not passed.
    payload = b"x" * 300
    frame = bytes([0x81, 126]) + len(payload).to_bytes(2, "big") + payload
    with pytest.raises(WsProtocolError, match="exceeds 200"):
        FrameReader(max_message=200).feed(frame)
    assert FrameReader(max_message=300).feed(frame)[0] == ["x" * 300]


def test_a_large_frame_arriving_in_pieces_comes_out_once_whole() -> None:
    payload = ("y" * 100_000).encode()
    frame = bytes([0x81, 127]) + len(payload).to_bytes(8, "big") + payload
    reader = FrameReader(max_message=1 << 20)
    outputs = [reader.feed(frame[i : i + 1000]) for i in range(0, len(frame), 1000)]
    assert [m for messages, _, _ in outputs for m in messages] == ["y" * 100_000]
    # Only the read completing the frame produced it; the ones before returned nothing.
    assert all(not messages for messages, _, _ in outputs[:-1])
