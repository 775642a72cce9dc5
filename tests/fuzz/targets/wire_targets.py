"""Targets for ``core.wire``: WebSocket frames and every REST body decoder.

Invariants: the only exception is ``ProtocolError``, with a bounded message; every ``Decimal``
a decoder returns lies inside ``core.dectext``'s global bounds, so it can be written out; a frame
the hot-path decoder takes decodes to the same event with the full one; market metadata that the
market table accepts gives bounded per-market bounds.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import msgspec

from backpack_actors.core import wire
from backpack_actors.core.dectext import bounds_problem, decimal_text
from backpack_actors.core.symbols import MarketTable
from backpack_actors.errors import ProtocolError
from tests.fuzz.targets._input import Input

__all__ = ["rest_body", "ws_frame"]

# A ProtocolError names its stream (bounded by the decoder) and a 120-character excerpt.
MAX_MESSAGE = 600
# The longest plain text a bounded Decimal writes out: 40 digits, 40 zeros of scale, sign, point.
MAX_PLAIN = 90


def _check_error(exc: ProtocolError) -> None:
    assert len(str(exc)) <= MAX_MESSAGE, len(str(exc))


def _walk(value: object, depth: int = 0) -> None:
    # Every Decimal in a decoded object is bounded and can be written out.
    assert depth < 64
    if isinstance(value, Decimal):
        if value.is_finite():
            assert bounds_problem(value) is None, value
            assert len(decimal_text(value)) <= MAX_PLAIN
    elif isinstance(value, msgspec.Struct):
        for name in value.__struct_fields__:
            _walk(getattr(value, name), depth + 1)
    elif isinstance(value, list | tuple):
        for item in value:
            _walk(item, depth + 1)
    elif isinstance(value, dict):
        for key, item in value.items():
            _walk(key, depth + 1)
            _walk(item, depth + 1)


def ws_frame(data: bytes) -> None:
    """One WebSocket text frame through both decoders."""
    try:
        fast = wire.MARKET_DATA_DECODER.decode(data)
    except (msgspec.DecodeError, UnicodeError, ArithmeticError, RecursionError):
        # Documented: anything the hot path rejects goes to decode_ws_frame.
        fast = None
    try:
        frame = wire.decode_ws_frame(data)
    except ProtocolError as exc:
        _check_error(exc)
        return
    _walk(frame)
    event = frame.data
    if isinstance(event, wire.DepthEvent):
        for price, size in (*event.bids, *event.asks):
            assert type(price) is str
            assert type(size) is str
    if fast is not None and isinstance(event, wire.DepthEvent | wire.TradeEvent):
        assert fast.data == event, (fast.data, event)


_REST: list[tuple[str, Any]] = [
    ("depth", lambda raw: wire.decode_depth_snapshot(raw, "BTC_USDC")),
    ("trades", lambda raw: wire.decode_trades(raw, "BTC_USDC")),
    ("markets", wire.decode_markets),
    ("market", wire.decode_market),
    ("ticker", wire.decode_ticker),
    ("tickers", wire.decode_tickers),
    ("status", wire.decode_status),
    ("time", wire.decode_time),
    ("ping", wire.decode_ping),
    ("assets", wire.decode_assets),
    ("klines", wire.decode_klines),
    ("mark_prices", wire.decode_mark_prices),
    ("open_interest", wire.decode_open_interest),
    ("funding_rates", wire.decode_funding_rates),
    ("rest_error", wire.decode_rest_error),
    ("market_table", None),
]
"""The first byte of a REST input picks its decoder (the corpus names them in this order)."""

REST_KINDS = [name for name, _ in _REST]


_ANY = msgspec.json.Decoder(float_hook=Decimal)


def _market_table(raw: bytes) -> None:
    try:
        body = _ANY.decode(raw)
    except (msgspec.DecodeError, UnicodeError, ArithmeticError, RecursionError):
        return
    try:
        table = MarketTable.from_markets_json(body)
    except ProtocolError as exc:
        _check_error(exc)
        return
    for market in table:
        # Metadata the table accepts always gives bounds (never a ValueError), and bounds that
        # are no wider than the global ones.
        bounds = market.bounds
        assert bounds.price_places <= 40
        assert bounds.size_places <= 40
        assert bounds.price_digits <= 41
        assert bounds.size_digits <= 41


def rest_body(data: bytes) -> None:
    """One REST body through the decoder its first byte picks."""
    source = Input(data)
    name, decode = source.pick(_REST)
    raw = source.rest()
    if decode is None:
        _market_table(raw)
        return
    try:
        result = decode(raw)
    except ProtocolError as exc:
        _check_error(exc)
        return
    _walk(result)
    if name == "ticker":
        # Kept as raw text; the value is bounded (or absent) too.
        _walk(result.price_change_percent)
    elif name == "tickers":
        for ticker in result:
            _walk(ticker.price_change_percent)
