"""core.wire: malformed input becomes ProtocolError; valid events survive round trips.

Depth and trade values (level text, U <= u) are kept as sent: BookSync/TradeSync check them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backpack_actors.core import wire
from backpack_actors.core.wire import DepthEvent, TradeEvent, UnknownEvent, WsFrame
from backpack_actors.errors import ProtocolError

D = Decimal
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

DEPTH = {
    "e": "depth",
    "E": 1754903057555305,
    "T": 1754903057554352,
    "s": "ETH_USDC",
    "U": 1345937436,
    "u": 1345937437,
    "a": [["3667.50", "0.4087"]],
    "b": [["3667.49", "0.0020"], ["3667.40", "0"]],
}
TRADE = {
    "e": "trade",
    "E": 1754601477746429,
    "T": 1754601477744000,
    "s": "ETH_USDC_PERP",
    "p": "3870.25",
    "q": "0.0008",
    "b": "5121861755",
    "a": "5121860761",
    "t": 10782547,
    "m": False,
}
SNAPSHOT = {
    "asks": [["179.65", "38.09"]],
    "bids": [["179.64", "0.20"]],
    "lastUpdateId": "94978271",
    "timestamp": 1694687965941000,
}
REST_TRADE = {
    "id": 355822333,
    "isBuyerMaker": True,
    "price": "167.4",
    "quantity": "0.13",
    "quoteQuantity": "21.762",
    "timestamp": 1747849978470,
}


def frame(data: Any, stream: str = "depth.ETH_USDC") -> bytes:
    return json.dumps({"stream": stream, "data": data}).encode()


def assert_protocol_error(
    call: Callable[[], object], stream: str, raw: bytes | str | None = None
) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        call()
    err = info.value
    assert err.stream == stream
    assert err.reason
    assert str(err).startswith(f"{stream}: ")
    if raw:
        assert err.excerpt
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
        assert text.replace("\n", " ").startswith(err.excerpt.rstrip("…"))
    return err


def outcome(call: Callable[[], object]) -> object:
    """The call's result, or the ProtocolError it raised (any other exception propagates)."""
    try:
        return call()
    except ProtocolError as err:
        return err


# --------------------------------------------------------------------------------------------------
# Happy path details the contract relies on.


def test_depth_frame_decodes_with_exact_types() -> None:
    got = wire.decode_ws_frame(frame(DEPTH))
    assert got == WsFrame(
        stream="depth.ETH_USDC",
        data=DepthEvent(
            event_time=1754903057555305,
            engine_time=1754903057554352,
            symbol="ETH_USDC",
            first_update_id=1345937436,
            last_update_id=1345937437,
            asks=(("3667.50", "0.4087"),),
            bids=(
                ("3667.49", "0.0020"),
                ("3667.40", "0"),
            ),
        ),
    )
    assert isinstance(got.data, DepthEvent)
    price, size = got.data.asks[0]
    assert type(price) is str
    assert type(size) is str


@pytest.mark.parametrize("key", ["E", "T", "U", "u"])
def test_integer_fields_accept_strings_but_not_fractions(key: str) -> None:
    as_string = wire.decode_ws_frame(frame({**DEPTH, key: str(DEPTH[key])}))
    assert as_string == wire.decode_ws_frame(frame(DEPTH))
    raw = frame({**DEPTH, key: "1345937436.5"})
    assert_protocol_error(lambda: wire.decode_ws_frame(raw), "depth.ETH_USDC", raw)
    raw = frame({**DEPTH, key: True})
    assert_protocol_error(lambda: wire.decode_ws_frame(raw), "depth.ETH_USDC", raw)


def test_decimal_fields_never_pass_through_float() -> None:
    # A JSON number in a Decimal field keeps its exact text (0.1 would not survive a float).
    liquidation = {"e": "liquidation", "E": 1, "T": 1, "s": "X", "p": 0.1, "q": 1.10, "S": "Bid"}
    got = wire.decode_ws_frame(frame(liquidation, "liquidation"))
    assert isinstance(got.data, wire.LiquidationEvent)
    assert got.data.price == D("0.1")
    assert type(got.data.price) is Decimal
    assert str(got.data.quantity) == "1.1"
    unknown = wire.decode_ws_frame(frame({"e": "stockPrice", "p": 0.1}, "stockPrice.SPCX"))
    assert unknown.data == UnknownEvent(
        event_type="stockPrice", payload={"e": "stockPrice", "p": D("0.1")}
    )


@pytest.mark.parametrize(
    ("stream", "data"),
    [
        ("trade.ETH_USDC_PERP", {**TRADE, "p": 0.1}),
        ("trade.ETH_USDC_PERP", {**TRADE, "q": 1}),
        ("depth.ETH_USDC", {**DEPTH, "a": [[3667.5, "0.4087"]]}),
        ("depth.ETH_USDC", {**DEPTH, "b": [["3667.49", 0]]}),
    ],
)
def test_hot_path_numbers_must_be_json_strings(stream: str, data: dict[str, Any]) -> None:
    # Depth and trade events keep the exchange's text; a JSON number has none to keep.
    raw = frame(data, stream)
    err = assert_protocol_error(lambda: wire.decode_ws_frame(raw), stream, raw)
    assert "Expected `str`" in err.reason


def test_unknown_event_type_decodes_as_unknown_event() -> None:
    data = {"e": "externalTicker", "s": "SPCX.US_USDC", "n": 3}
    got = wire.decode_ws_frame(frame(data, "externalTicker.SPCX.US_USDC"))
    assert got.stream == "externalTicker.SPCX.US_USDC"
    assert got.data == UnknownEvent(event_type="externalTicker", payload=data)


def test_event_without_e_decodes_as_unknown_event_on_public_stream() -> None:
    got = wire.decode_ws_frame(frame({"s": "ETH_USDC", "x": "1"}, "depth.ETH_USDC"))
    assert got.data == UnknownEvent(event_type=None, payload={"s": "ETH_USDC", "x": "1"})


def test_position_snapshot_without_e() -> None:
    data = {"s": "SOL_USDC_PERP", "q": "-2.5", "i": "77", "B": "150.1", "E": 1754943862040486}
    got = wire.decode_ws_frame(frame(data, "account.positionUpdate.SOL_USDC_PERP"))
    assert isinstance(got.data, wire.PositionSnapshot)
    assert (got.data.symbol, got.data.net_quantity, got.data.position_id) == (
        "SOL_USDC_PERP",
        D("-2.5"),
        77,
    )
    assert (got.data.entry_price, got.data.event_time) == (D("150.1"), 1754943862040486)
    assert got.data.event_type == "?positionSnapshot"
    # A list of positions (shape undocumented) is kept raw rather than rejected.
    listed = wire.decode_ws_frame(frame([data], "account.positionUpdate"))
    assert listed.data == UnknownEvent(event_type=None, payload=[data])


def test_balance_update_event() -> None:
    data = {"e": "balanceUpdate", "E": "1754943862040486", "a": "USDC", "A": "10.5", "L": "0"}
    got = wire.decode_ws_frame(frame(data, "account.balanceUpdate"))
    assert got.data == wire.BalanceUpdateEvent(
        event_time=1754943862040486, asset="USDC", available=D("10.5"), locked=D("0")
    )


def test_frame_without_data_or_error_is_ignorable_noise() -> None:
    assert wire.decode_ws_frame(b'{"result":null,"id":1}') == WsFrame(id=1)


def test_error_frame_decodes_with_either_helper() -> None:
    raw = b'{"id":null,"error":{"code":4006,"message":"Invalid stream"}}'
    assert wire.decode_ws_frame(raw).error == wire.WsError(4006, "Invalid stream")
    assert wire.decode_ws_error(raw).error.code == 4006


def test_ticker_percent_and_rest_text_helpers() -> None:
    assert wire.decode_time(b"1753131712992\n") == 1753131712992
    assert wire.decode_ping("pong") == "pong"
    err = wire.decode_rest_error(b'{"message":"bad interval"}', "/api/v1/klines")
    assert (err.code, err.message, err.plain_text) == (None, "bad interval", False)
    text = wire.decode_rest_error(b"<html>403 Forbidden</html>", "/api/v1/depth")
    assert (text.code, text.message, text.plain_text) == (None, "<html>403 Forbidden</html>", True)


# --------------------------------------------------------------------------------------------------
# Malformed WebSocket frames.


@pytest.mark.parametrize(
    ("raw", "stream"),
    [
        (b"", "ws"),
        (b"not json", "ws"),
        (b"[1, 2]", "ws"),
        (b'"depth"', "ws"),
        (b'{"stream": "depth.ETH_USDC", "data": ', "ws"),
        (b'{"stream": 5, "data": {}}', "ws"),
        (b"\xff\xfe\x00garbage", "ws"),
        (b'{"stream":"depth.ETH_USDC","data":{"e":"depth","s":"\xff"}}', "depth.ETH_USDC"),
        ('{"stream":"trade.X","data":{"e":"trade","s":"\ud800"}}', "ws"),
        (b'{"stream":"depth.ETH_USDC"}', "depth.ETH_USDC"),
        (b'{"stream":"depth.ETH_USDC","data":null}', "depth.ETH_USDC"),
        (b'{"stream":"depth.ETH_USDC","data":[1]}', "depth.ETH_USDC"),
        (b'{"stream":"depth.ETH_USDC","data":{"e":5}}', "depth.ETH_USDC"),
        (b'{"id":null,"error":{"code":"x","message":"Invalid stream"}}', "ws"),
        (b'{"id":null,"error":{"code":4006}}', "ws"),
        (b'{"stream":"x","data":' + b"[" * 5000 + b"]" * 5000 + b"}", "ws"),
    ],
)
def test_malformed_frames_raise_protocol_error(raw: bytes | str, stream: str) -> None:
    assert_protocol_error(lambda: wire.decode_ws_frame(raw), stream, raw)


@pytest.mark.parametrize(
    ("patch", "reason"),
    [
        ({"a": [["1", "2", "3"]]}, "length 2"),
        ({"a": [["1"]]}, "length 2"),
        ({"a": "3667.50"}, "array"),
        ({"a": [[None, "1"]]}, "Expected `str`, got `null`"),
        ({"b": [["1", True]]}, "Expected `str`, got `bool`"),
        ({"E": -1}, ">= 0"),
        ({"E": 10**30}, "<="),
        ({"E": "9" * 5000}, "out of range"),
        ({"u": 1.5}, "int"),
        ({"s": None}, "str"),
    ],
)
def test_invalid_depth_values_raise_protocol_error(patch: dict[str, Any], reason: str) -> None:
    raw = frame({**DEPTH, **patch})
    err = assert_protocol_error(lambda: wire.decode_ws_frame(raw), "depth.ETH_USDC", raw)
    assert reason in err.reason


@pytest.mark.parametrize(
    "patch",
    [
        {"U": 1345937438, "u": 1345937437},
        {"a": [["3667.50", "-0.1"]]},
        {"b": [["0", "1"]]},
        {"b": [["-1", "1"]]},
        {"a": [["NaN", "1"]]},
        {"a": [["1", "Infinity"]]},
        {"a": [["sNaN", "1"]]},
        {"a": [["abc", "1"]]},
        {"b": [["1e3", ""]]},
    ],
)
def test_depth_values_are_kept_as_sent_for_book_sync_to_check(patch: dict[str, Any]) -> None:
    # Decoding is the hot path: values are checked (and bad frames reported) by BookSync.
    got = wire.decode_ws_frame(frame({**DEPTH, **patch}))
    assert isinstance(got.data, DepthEvent)
    merged = {**DEPTH, **patch}
    assert (got.data.first_update_id, got.data.last_update_id) == (merged["U"], merged["u"])
    assert got.data.asks == tuple(tuple(level) for level in merged["a"])
    assert got.data.bids == tuple(tuple(level) for level in merged["b"])


@pytest.mark.parametrize("key", sorted(set(DEPTH) - {"e"}))  # no "e": UnknownEvent, see above
def test_depth_missing_key_raises_protocol_error(key: str) -> None:
    raw = frame({k: v for k, v in DEPTH.items() if k != key})
    assert_protocol_error(lambda: wire.decode_ws_frame(raw), "depth.ETH_USDC", raw)


@pytest.mark.parametrize("key", sorted(set(TRADE) - {"e"}))
def test_trade_missing_key_raises_protocol_error(key: str) -> None:
    raw = frame({k: v for k, v in TRADE.items() if k != key}, "trade.ETH_USDC_PERP")
    assert_protocol_error(lambda: wire.decode_ws_frame(raw), "trade.ETH_USDC_PERP", raw)


@pytest.mark.parametrize(
    "patch", [{"t": "12.5"}, {"m": "maybe"}, {"b": 5}, {"t": -3}, {"p": None}, {"q": ["1"]}]
)
def test_invalid_trade_values_raise_protocol_error(patch: dict[str, Any]) -> None:
    raw = frame({**TRADE, **patch}, "trade.ETH_USDC_PERP")
    assert_protocol_error(lambda: wire.decode_ws_frame(raw), "trade.ETH_USDC_PERP", raw)


@pytest.mark.parametrize(
    "patch", [{"p": "0"}, {"p": "x"}, {"p": "NaN"}, {"q": "-1"}, {"q": "Infinity"}, {"p": ""}]
)
def test_trade_values_are_kept_as_sent_for_trade_sync_to_check(patch: dict[str, Any]) -> None:
    # Decoding is the hot path: price and quantity are checked (and reported) by TradeSync.
    got = wire.decode_ws_frame(frame({**TRADE, **patch}, "trade.ETH_USDC_PERP"))
    assert isinstance(got.data, TradeEvent)
    merged = {**TRADE, **patch}
    assert (got.data.price, got.data.quantity) == (merged["p"], merged["q"])
    assert got.data.trade_id == 10782547


def test_excerpt_of_a_huge_frame_is_short() -> None:
    raw = frame({**DEPTH, "a": [["1", None]] + [["1", "1"]] * 5000})
    err = assert_protocol_error(lambda: wire.decode_ws_frame(raw), "depth.ETH_USDC", raw)
    assert len(err.excerpt) <= 121


json_leaf = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
)
json_values = st.recursive(
    json_leaf,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=4)
    ),
    max_leaves=12,
)


@FAST
@given(st.binary(max_size=200))
def test_garbage_bytes_never_raise_anything_but_protocol_error(raw: bytes) -> None:
    got = outcome(lambda: wire.decode_ws_frame(raw))
    if isinstance(got, ProtocolError):
        assert got.stream
        assert got.excerpt or not raw
    else:
        assert isinstance(got, WsFrame)


@FAST
@given(st.sampled_from([DEPTH, TRADE]), st.data())
def test_any_field_set_to_any_json_value_is_decoded_or_protocol_error(
    base: dict[str, Any], data: st.DataObject
) -> None:
    key = data.draw(st.sampled_from(sorted(base)), label="key")
    value = data.draw(json_values, label="value")
    stream = f"{base['e']}.X"
    raw = frame({**base, key: value}, stream)
    got = outcome(lambda: wire.decode_ws_frame(raw))
    if isinstance(got, ProtocolError):
        assert got.stream == stream
        assert got.excerpt
        return
    assert isinstance(got, WsFrame)
    # Accepted only when the value is still meaningful for that field.
    assert got.stream == stream
    if key == "e":
        assert isinstance(got.data, UnknownEvent | DepthEvent | TradeEvent)
    else:
        assert type(got.data) is (DepthEvent if base is DEPTH else TradeEvent)
    # Price and size text is kept exactly as sent (checked later, by BookSync/TradeSync).
    if isinstance(got.data, TradeEvent) and key in ("p", "q"):
        assert (got.data.price if key == "p" else got.data.quantity) == value
    if isinstance(got.data, DepthEvent) and key in ("a", "b"):
        assert isinstance(value, list)
        sent = tuple(tuple(level) for level in value)
        assert (got.data.asks if key == "a" else got.data.bids) == sent


@FAST
@given(json_values, st.text(max_size=20))
def test_rest_decoders_only_raise_protocol_error(value: Any, symbol: str) -> None:
    raw = json.dumps(value).encode()
    calls: list[tuple[Callable[[], object], str]] = [
        (lambda: wire.decode_depth_snapshot(raw, symbol), "/api/v1/depth"),
        (lambda: wire.convert_depth_snapshot(value, symbol), "/api/v1/depth"),
        (lambda: wire.decode_trades(raw, symbol), "/api/v1/trades"),
        (lambda: wire.convert_trades(value, symbol), "/api/v1/trades"),
        (lambda: wire.decode_markets(raw), "/api/v1/markets"),
        (lambda: wire.decode_tickers(raw), "/api/v1/tickers"),
        (lambda: wire.decode_status(raw), "/api/v1/status"),
        (lambda: wire.decode_time(raw), "/api/v1/time"),
        (lambda: wire.decode_rest_error(raw, "/api/v1/order"), "/api/v1/order"),
        (lambda: wire.decode_ws_request(raw), "ws-request"),
    ]
    for call, where in calls:
        got = outcome(call)
        if isinstance(got, ProtocolError):
            assert got.stream.startswith(where)


@pytest.mark.parametrize(
    "body",
    [
        {**SNAPSHOT, "lastUpdateId": "12.5"},
        {**SNAPSHOT, "lastUpdateId": None},
        {k: v for k, v in SNAPSHOT.items() if k != "lastUpdateId"},
        {k: v for k, v in SNAPSHOT.items() if k != "asks"},
        {**SNAPSHOT, "asks": [["179.65", "-1"]]},
        {**SNAPSHOT, "bids": [["NaN", "1"]]},
        {**SNAPSHOT, "timestamp": "soon"},
        [SNAPSHOT],
    ],
)
def test_bad_depth_snapshot(body: Any) -> None:
    raw = json.dumps(body).encode()
    where = "/api/v1/depth?symbol=SOL_USDC"
    assert_protocol_error(lambda: wire.decode_depth_snapshot(raw, "SOL_USDC"), where, raw)
    assert_protocol_error(lambda: wire.convert_depth_snapshot(body, "SOL_USDC"), where)


def test_depth_snapshot_accepts_both_last_update_id_forms() -> None:
    as_string = wire.decode_depth_snapshot(json.dumps(SNAPSHOT), "SOL_USDC")
    as_int = wire.convert_depth_snapshot({**SNAPSHOT, "lastUpdateId": 94978271}, "SOL_USDC")
    assert as_string == as_int
    assert as_string.last_update_id == 94978271
    assert as_string.asks == [(D("179.65"), D("38.09"))]


@pytest.mark.parametrize(
    "body",
    [
        [{**REST_TRADE, "id": "abc"}],
        [{**REST_TRADE, "timestamp": 1.5}],
        [{**REST_TRADE, "price": "-1"}],
        [{k: v for k, v in REST_TRADE.items() if k != "isBuyerMaker"}],
        REST_TRADE,
        None,
    ],
)
def test_bad_trades(body: Any) -> None:
    raw = json.dumps(body).encode()
    where = "/api/v1/trades?symbol=SOL_USDC"
    assert_protocol_error(lambda: wire.decode_trades(raw, "SOL_USDC"), where, raw)
    assert_protocol_error(lambda: wire.convert_trades(body, "SOL_USDC"), where)


@pytest.mark.parametrize("raw", [b"", b"abc", b"-1", b"1.5", b"1e3", b"\xff", b"9" * 30])
def test_bad_time_body(raw: bytes) -> None:
    assert_protocol_error(lambda: wire.decode_time(raw), "/api/v1/time")


@pytest.mark.parametrize("raw", [b"", b"  ", b'{"code":"X"}', b'{"message":5}', b"{not json"])
def test_bad_rest_error_body(raw: bytes) -> None:
    assert_protocol_error(lambda: wire.decode_rest_error(raw, "/api/v1/order"), "/api/v1/order")


# --------------------------------------------------------------------------------------------------
# Round trips.

prices = st.decimals(min_value=D("0.00000001"), max_value=D("10000000"), places=8)
sizes = st.decimals(min_value=D(0), max_value=D("100000000"), places=8)
# Hot-path events carry text: every spelling must survive, including ones Decimal would rewrite.
price_texts = prices.map(str) | st.from_regex(r"[0-9]{1,6}(\.[0-9]{0,8})?", fullmatch=True)
size_texts = sizes.map(str) | st.from_regex(r"[0-9]{1,6}(\.[0-9]{0,8})?", fullmatch=True)
ids = st.integers(min_value=0, max_value=2**63 - 1)
levels = st.lists(st.tuples(price_texts, size_texts), max_size=5)
symbols = st.from_regex(r"[A-Z]{2,6}_USDC(_PERP)?", fullmatch=True)


@st.composite
def depth_events(draw: st.DrawFn) -> DepthEvent:
    first = draw(ids)
    last = draw(st.integers(min_value=first, max_value=2**63 - 1))
    return DepthEvent(
        event_time=draw(ids),
        engine_time=draw(ids),
        symbol=draw(symbols),
        first_update_id=first,
        last_update_id=last,
        asks=tuple(draw(levels)),
        bids=tuple(draw(levels)),
    )


trade_events = st.builds(
    TradeEvent,
    event_time=ids,
    engine_time=ids,
    symbol=symbols,
    price=price_texts,
    quantity=size_texts,
    buyer_order_id=st.from_regex(r"[0-9]{1,19}", fullmatch=True),
    seller_order_id=st.from_regex(r"[0-9]{1,19}", fullmatch=True),
    trade_id=ids,
    buyer_is_maker=st.booleans(),
)


@FAST
@given(st.one_of(depth_events(), trade_events), st.booleans())
def test_events_round_trip_through_the_wire(
    event: DepthEvent | TradeEvent, stringify: bool
) -> None:
    stream = f"{type(event).__struct_config__.tag}.{event.symbol}"
    encoded = json.loads(wire.encode_json(WsFrame(stream=stream, data=event)))
    assert set(encoded) == {"stream", "data"}
    if stringify:
        # ccxt-style recordings: big integers arrive as strings; the result must not change.
        for key in ("E", "T", "U", "u", "t"):
            if key in encoded["data"]:
                encoded["data"][key] = str(encoded["data"][key])
    got = wire.decode_ws_frame(json.dumps(encoded))
    assert got == WsFrame(stream=stream, data=event)
    assert msgspec.json.decode(wire.encode_json(got)) == msgspec.json.decode(
        wire.encode_json(WsFrame(stream=stream, data=event))
    )


@FAST
@given(st.lists(st.tuples(prices, sizes), max_size=8), ids)
def test_rest_snapshot_round_trip(asks: list[tuple[Decimal, Decimal]], update_id: int) -> None:
    snap = wire.DepthSnapshot(asks=asks, bids=asks[::-1], last_update_id=update_id, timestamp=None)
    body = json.loads(wire.encode_json(snap))
    body["lastUpdateId"] = str(body["lastUpdateId"])  # as the exchange sends it
    assert wire.decode_depth_snapshot(json.dumps(body), "X_USDC") == snap
    assert wire.convert_depth_snapshot(body, "X_USDC") == snap


def test_encode_json_sorts_keys_like_the_exchange() -> None:
    got = wire.encode_json(wire.decode_ws_frame(frame(DEPTH)))
    assert got.startswith(b'{"data":{"E":1754903057555305,"T":1754903057554352,"U":1345937436,"a":')
    assert got.endswith(b'"e":"depth","s":"ETH_USDC","u":1345937437},"stream":"depth.ETH_USDC"}')
