"""Pipeline fuzzing harness: a WebSocket proxy and a REST wrapper that interleave adversarial input
with the simulator's real traffic, and hypothesis strategies for that input.

Each fuzzed WS frame has a *kind* that says what the pipeline must do with it:

``undecodable``  fails to decode, or decodes with unusable content (a depth level's price or size
                 text is not a valid decimal): counted and reported as one ``ProtocolErrorEvent``
                 each. Bad level text is found by the book's sync, not the decoder; one met on the
                 live fast path also resyncs the book (``FuzzFrame.bad_level`` marks those frames).
``ignorable``    well-formed frame the feed does not consume (unknown stream or event, ack, or
                 ``e``-less data): no event, no error, no effect on the book.
``stale``        a well-formed depth frame for this symbol whose ids lie far in the past: dropped as
                 a duplicate (or while buffering), never applied.
``future``       a well-formed depth frame of this symbol far in the future: must be a detected
                 gap, never published, and the symbol must resync afterwards. (The same frame for
                 another market is refused as a protocol error: ``undecodable``.)
"""

from __future__ import annotations

import json
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, cast

import msgspec
import trio
import trio.testing
import trio_websocket
from hypothesis import strategies as st

from backpack_actors.core.symbols import MarketTable
from backpack_actors.core.wire import (
    DepthSnapshot,
    RestTrade,
    decode_depth_snapshot,
    decode_trades,
)
from backpack_actors.transport.ws import TrioWsConnection, WsConnection, WsConnector

__all__ = [
    "FUZZ_KINDS",
    "FuzzFrame",
    "FuzzPlan",
    "FuzzRestClient",
    "fuzz_frames",
    "fuzzing_connector",
    "rest_bodies",
]

FUZZ_KINDS = ("undecodable", "ignorable", "stale", "future")

# Far enough that no real id can be near it, small enough to stay a valid int64.
FAR_FUTURE = 2**50


@dataclass(frozen=True)
class FuzzFrame:
    """One adversarial frame; ``build(symbol, other, last_u)`` renders it for a connection."""

    kind: str
    build: Callable[[str, str, int], str | bytes]
    label: str
    # A depth frame that decodes (every level is a pair of strings) but has a bad level's text.
    bad_level: bool = False


@dataclass
class FuzzPlan:
    """Frames to inject per symbol, one after every ``every`` real frames; counts what was sent."""

    frames: dict[str, deque[FuzzFrame]]
    every: int = 3
    sent: Counter[tuple[str, str]] = field(default_factory=Counter)
    labels: Counter[str] = field(default_factory=Counter)
    # Per symbol: frames sent with ``bad_level`` set.
    bad_levels: Counter[str] = field(default_factory=Counter)

    def pending(self) -> int:
        return sum(len(q) for q in self.frames.values())

    def take(self, symbol: str) -> FuzzFrame | None:
        queue = self.frames.get(symbol)
        return queue.popleft() if queue else None


# -- the WebSocket proxy ---------------------------------------------------------------------------


def fuzzing_connector(exchange: Any, plan: FuzzPlan, other: Callable[[str], str]) -> WsConnector:
    """Connections through a proxy that forwards the simulator's frames and interleaves fuzz."""

    @asynccontextmanager
    async def connect() -> AsyncIterator[WsConnection]:
        async with trio.open_nursery() as nursery:
            client_stream, server_stream = trio.testing.memory_stream_pair()
            nursery.start_soon(_proxy, exchange, plan, other, server_stream, nursery)
            # trio-websocket is typed for sockets but works over any trio Stream.
            stream = cast(Any, client_stream)
            ws = await trio_websocket.wrap_client_stream(nursery, stream, "fuzz.local", "/")
            try:
                yield TrioWsConnection(ws)
            finally:
                nursery.cancel_scope.cancel()

    def factory() -> AbstractAsyncContextManager[WsConnection]:
        return connect()

    return factory


async def _proxy(
    exchange: Any,
    plan: FuzzPlan,
    other: Callable[[str], str],
    server_stream: trio.abc.Stream,
    nursery: trio.Nursery,
) -> None:
    request = await trio_websocket.wrap_server_stream(nursery, server_stream)
    down = await request.accept()
    symbol: list[str] = []
    try:
        async with trio.open_nursery() as inner:
            up = await exchange.connect_memory_ws(inner)

            async def client_to_exchange() -> None:
                while True:
                    message = await down.get_message()
                    params = json.loads(message).get("params", [])
                    for stream in params:
                        symbol.append(str(stream).rsplit(".", 1)[-1])
                    await up.send_message(message)

            inner.start_soon(client_to_exchange)
            forwarded = 0
            last_u = 0
            while True:
                message = await up.get_message()
                await down.send_message(message)
                forwarded += 1
                if '"depth"' in message:
                    last_u = int(json.loads(message)["data"]["u"])
                if symbol and forwarded % plan.every == 0:
                    frame = plan.take(symbol[0])
                    if frame is not None:
                        plan.sent[(symbol[0], frame.kind)] += 1
                        plan.labels[frame.label] += 1
                        if frame.bad_level:
                            plan.bad_levels[symbol[0]] += 1
                        await down.send_message(frame.build(symbol[0], other(symbol[0]), last_u))
    except trio_websocket.ConnectionClosed:
        return


# -- frame strategies ------------------------------------------------------------------------------


def _envelope(stream: str, data: Any) -> str:
    return json.dumps({"stream": stream, "data": data}, separators=(",", ":"))


def _depth(sym: str, first: int, last: int, bids: Any, asks: Any) -> dict[str, Any]:
    return {
        "e": "depth", "E": 1_700_000_000_000_000, "T": 1_700_000_000_000_000, "s": sym,
        "U": first, "u": last, "b": bids, "a": asks,
    }  # fmt: skip


def _trade(sym: str, trade_id: int, price: Any, qty: Any) -> dict[str, Any]:
    return {
        "e": "trade", "E": 1_700_000_000_000_000, "T": 1_700_000_000_000_000, "s": sym,
        "p": price, "q": qty, "b": "111", "a": "222", "t": trade_id, "m": True,
    }  # fmt: skip


_decimal_text = st.decimals(min_value=1, max_value=10**6, places=4, allow_nan=False).map(str)
_level = st.tuples(_decimal_text, _decimal_text).map(list)
_levels = st.lists(_level, max_size=5)
_junk_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=6,
)
# Values that are not a valid non-negative int64 id.
_bad_id: st.SearchStrategy[Any] = st.one_of(
    st.integers(max_value=-1),
    st.integers(min_value=2**63),
    st.sampled_from(["abc", "1.5", "", "NaN", None, True, [], {}]),
    st.integers(min_value=20_000, max_value=300_000).map(lambda n: "9" * n),
)
# Values that are not a valid size (negative, non-numeric, non-finite) or price (also zero).
_bad_size: st.SearchStrategy[Any] = st.one_of(
    st.decimals(max_value=Decimal("-0.0001"), allow_nan=False, allow_infinity=False, places=4).map(
        str
    ),
    st.sampled_from(["abc", "", "NaN", "Infinity", "-Infinity", "1,5", None, [], {}, True]),
)
_bad_price: st.SearchStrategy[Any] = st.one_of(_bad_size, st.just("0"), st.just("-1"))
_DEPTH_KEYS = ("E", "T", "s", "U", "u", "a", "b")
_TRADE_KEYS = ("E", "T", "s", "p", "q", "b", "a", "t", "m")


@st.composite
def _undecodable(draw: st.DrawFn) -> FuzzFrame:
    variant = draw(
        st.sampled_from(
            [
                "truncated", "not_json", "invalid_utf8", "wrong_type", "missing_key", "bad_id",
                "u_lt_U", "bad_size", "bad_price", "bad_level_shape", "huge_array_bad",
                "oversized", "trade_bad", "data_not_object", "not_an_object",
            ]
        )
    )  # fmt: skip
    levels = draw(_levels)
    bad_level = False
    if variant == "truncated":
        cut = draw(st.floats(min_value=0.0, max_value=0.99))

        def build(s: str, o: str, u: int) -> str | bytes:
            text = _envelope(f"depth.{s}", _depth(s, u + 1, u + 1, levels, []))
            return text[: int(len(text) * cut)]
    elif variant == "not_json":
        blob = draw(st.binary(min_size=1, max_size=64))

        def build(s: str, o: str, u: int) -> str | bytes:
            return b"\x00" + blob
    elif variant == "invalid_utf8":
        bad = draw(st.sampled_from([b"\xff", b"\xc3\x28", b"\xe2\x82", b"\xed\xa0\x80", b"\x80"]))

        def build(s: str, o: str, u: int) -> str | bytes:
            head = _envelope(f"depth.{s}", _depth(s, u + 1, u + 1, levels, [])).encode()
            return head.replace(s.encode(), s.encode() + bad, 2)
    elif variant == "wrong_type":
        key = draw(st.sampled_from(["E", "T", "U", "u", "a", "b"]))
        value: Any = draw(st.sampled_from(["abc", "1.5", None, {}, [[1]], {"x": 1}, -5]))

        def build(s: str, o: str, u: int) -> str | bytes:
            data = _depth(s, u + 1, u + 1, levels, [])
            data[key] = value
            return _envelope(f"depth.{s}", data)
    elif variant == "missing_key":
        key = draw(st.sampled_from(_DEPTH_KEYS))

        def build(s: str, o: str, u: int) -> str | bytes:
            data = _depth(s, u + 1, u + 1, levels, [])
            del data[key]
            return _envelope(f"depth.{s}", data)
    elif variant == "bad_id":
        key = draw(st.sampled_from(["U", "u", "E", "T"]))
        value = draw(_bad_id)

        def build(s: str, o: str, u: int) -> str | bytes:
            data = _depth(s, u + 1, u + 1, levels, [])
            data[key] = value
            return _envelope(f"depth.{s}", data)
    elif variant == "u_lt_U":
        span = draw(st.integers(min_value=1, max_value=10**6))

        def build(s: str, o: str, u: int) -> str | bytes:
            return _envelope(f"depth.{s}", _depth(s, u + 1 + span, u + 1, levels, []))
    elif variant in ("bad_size", "bad_price"):
        bad = draw(_bad_size if variant == "bad_size" else _bad_price)
        # Non-strings fail to decode; strings decode and are refused by the book's sync.
        bad_level = isinstance(bad, str)
        side = draw(st.sampled_from(["a", "b"]))
        at = draw(st.integers(min_value=0, max_value=len(levels)))

        def build(s: str, o: str, u: int) -> str | bytes:
            data = _depth(s, u + 1, u + 1, [], [])
            good = [list(level) for level in levels]
            level = ["100", bad] if variant == "bad_size" else [bad, "1"]
            data[side] = [*good[:at], level, *good[at:]]
            return _envelope(f"depth.{s}", data)
    elif variant == "bad_level_shape":
        shape = draw(st.sampled_from([["1"], ["1", "2", "3"], "1", 1, None, {"p": "1"}, []]))

        def build(s: str, o: str, u: int) -> str | bytes:
            return _envelope(f"depth.{s}", _depth(s, u + 1, u + 1, [shape], []))
    elif variant == "huge_array_bad":
        n = draw(st.integers(min_value=1_000, max_value=20_000))

        def build(s: str, o: str, u: int) -> str | bytes:
            return _envelope(f"depth.{s}", _depth(s, u + 1, u + 1, [["1", "1"]] * n + [["1"]], []))
    elif variant == "oversized":
        n = draw(st.integers(min_value=100_000, max_value=600_000))
        bad_level = True

        def build(s: str, o: str, u: int) -> str | bytes:
            data = _depth(s, u + 1, u + 1, [], [])
            data["b"] = [["1", "x" * n]]
            return _envelope(f"depth.{s}", data)
    elif variant == "trade_bad":
        mutation = draw(st.sampled_from(["missing", "qty", "price", "id"]))
        key = draw(st.sampled_from(_TRADE_KEYS))
        bad_trade: Any = draw(_bad_size)
        bad_id = draw(_bad_id)

        def build(s: str, o: str, u: int) -> str | bytes:
            data = _trade(s, 1, "100", "1")
            if mutation == "missing":
                del data[key]
            elif mutation == "qty":
                data["q"] = bad_trade
            elif mutation == "price":
                data["p"] = "0" if bad_trade is None else bad_trade
            else:
                data["t"] = bad_id
            return _envelope(f"trade.{s}", data)
    elif variant == "data_not_object":
        not_object: Any = draw(st.sampled_from([[1], 1, "x", True, [], [{}]]))

        def build(s: str, o: str, u: int) -> str | bytes:
            return _envelope(f"depth.{s}", not_object)
    else:
        text: str = draw(
            st.sampled_from(["[]", "null", '"x"', "1", "[1,2]", "true", '""', "", " "])
        )

        def build(s: str, o: str, u: int) -> str | bytes:
            return text

    return FuzzFrame("undecodable", build, variant, bad_level)


@st.composite
def _ignorable(draw: st.DrawFn) -> FuzzFrame:
    variant = draw(st.sampled_from(["unknown_stream", "unknown_event", "ack", "no_event_tag"]))
    junk = draw(_junk_json)
    name = draw(st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=12))

    def build(s: str, o: str, u: int) -> str | bytes:
        if variant == "unknown_stream":
            return _envelope(f"{name}.{s}", {"e": f"zz{name}", "v": junk})
        if variant == "unknown_event":
            return _envelope(f"depth.{s}", {"e": f"zz{name}", "v": junk})
        if variant == "ack":
            return json.dumps({"id": 1, "result": junk})
        return _envelope(f"depth.{s}", {"x": junk})

    return FuzzFrame("ignorable", build, variant)


@st.composite
def _stale(draw: st.DrawFn) -> FuzzFrame:
    back = draw(st.integers(min_value=0, max_value=10**9))
    width = draw(st.integers(min_value=0, max_value=50))
    bids, asks = draw(_levels), draw(_levels)

    def build(s: str, o: str, u: int) -> str | bytes:
        last = max(0, u - back)
        return _envelope(f"depth.{s}", _depth(s, max(0, last - width), last, bids, asks))

    return FuzzFrame("stale", build, "stale_depth")


@st.composite
def _future(draw: st.DrawFn) -> FuzzFrame:
    ahead = draw(st.integers(min_value=0, max_value=2**60))
    width = draw(st.integers(min_value=0, max_value=50))
    foreign = draw(st.booleans())
    bids, asks = draw(_levels), draw(_levels)
    many = draw(st.booleans())

    def build(s: str, o: str, u: int) -> str | bytes:
        sym = o if foreign else s
        first = FAR_FUTURE + ahead
        levels = [[str(100 + i), "1"] for i in range(5_000)] if many else bids
        return _envelope(f"depth.{sym}", _depth(sym, first, first + width, levels, asks))

    # Another market's frame on this connection is refused and reported like an undecodable one.
    if foreign:
        return FuzzFrame("undecodable", build, "foreign_future")
    return FuzzFrame("future", build, "future_depth")


def fuzz_frames(*, far_future: bool = True) -> st.SearchStrategy[FuzzFrame]:
    """Any adversarial frame, weighted towards the undecodable.

    ``far_future`` adds depth frames (this symbol or another) with ids far ahead of the stream.
    (They once wedged a symbol for good, found by this fuzzer; ``BookSync`` now restarts its
    resync buffer when the stream does not continue it.)
    """
    kinds = [_undecodable(), _undecodable(), _undecodable(), _ignorable(), _stale()]
    if far_future:
        kinds.append(_future())
    return st.one_of(*kinds)


# -- REST ------------------------------------------------------------------------------------------


def rest_bodies() -> st.SearchStrategy[bytes]:
    """Bodies that ``/api/v1/depth`` and ``/api/v1/trades`` decoders must reject."""
    good_depth = {"asks": [["101", "1"]], "bids": [["99", "1"]], "lastUpdateId": 5, "timestamp": 1}
    good_trade = {
        "id": 1, "price": "100", "quantity": "1", "quoteQuantity": "100", "timestamp": 1,
        "isBuyerMaker": True,
    }  # fmt: skip

    def mutate(base: dict[str, Any], key: str, value: Any) -> bytes:
        body = dict(base)
        if value == "<missing>":
            del body[key]
        else:
            body[key] = value
        return msgspec.json.encode(body)

    missing = st.just("<missing>")
    bad_levels: st.SearchStrategy[Any] = st.sampled_from(
        ["x", 1, None, {}, [["1"]], [["-1", "1"]], [["1", "abc"]], [[1, 2, 3]]]
    )
    bad_ids = _bad_id.filter(lambda v: not isinstance(v, str) or len(v) < 50)
    depth_values = {"asks": bad_levels, "bids": bad_levels, "lastUpdateId": bad_ids}
    trade_values = {
        "id": bad_ids, "timestamp": bad_ids, "price": _bad_price, "quantity": _bad_size,
        "quoteQuantity": _bad_size, "isBuyerMaker": st.sampled_from(["x", 2, None, [], "maybe"]),
    }  # fmt: skip
    depth_keys = st.sampled_from(sorted(depth_values)).flatmap(
        lambda k: st.tuples(st.just(k), missing | depth_values[k])
    )
    trade_keys = st.sampled_from(sorted(trade_values)).flatmap(
        lambda k: st.tuples(st.just(k), missing | trade_values[k])
    )
    return st.one_of(
        st.binary(max_size=64).map(lambda b: b"\x00" + b),
        st.sampled_from([b"", b"null", b"{}", b'"x"', b"1", b"\xff\xfe"]),
        depth_keys.map(lambda kv: mutate(good_depth, *kv)),
        trade_keys.map(lambda kv: b"[" + mutate(good_trade, *kv) + b"]"),
        st.integers(min_value=1, max_value=60).map(
            lambda n: msgspec.json.encode(good_depth)[: n % len(msgspec.json.encode(good_depth))]
        ),
    )


class FuzzRestClient:
    """Wraps a real client; serves queued bad bodies through the real decoders before the truth."""

    def __init__(self, inner: Any, depth_bodies: list[bytes], trade_bodies: list[bytes]) -> None:
        self._inner = inner
        self._depth = deque(depth_bodies)
        self._trades = deque(trade_bodies)
        self.served = 0

    def pending(self) -> int:
        """Bad bodies not served yet."""
        return len(self._depth) + len(self._trades)

    async def load_markets(self) -> MarketTable:
        table: MarketTable = await self._inner.load_markets()
        return table

    async def depth(self, exchange_symbol: str) -> DepthSnapshot:
        if self._depth:
            # Taken before the checkpoint: the REST actor runs several calls at once.
            body = self._depth.popleft()
            self.served += 1
            await trio.lowlevel.checkpoint()
            return decode_depth_snapshot(body, exchange_symbol)
        snapshot: DepthSnapshot = await self._inner.depth(exchange_symbol)
        return snapshot

    async def recent_trades(self, exchange_symbol: str, limit: int) -> list[RestTrade]:
        if self._trades:
            body = self._trades.popleft()
            self.served += 1
            await trio.lowlevel.checkpoint()
            return decode_trades(body, exchange_symbol)
        trades: list[RestTrade] = await self._inner.recent_trades(exchange_symbol, limit)
        return trades

    async def trade_history(self, exchange_symbol: str, limit: int, offset: int) -> list[RestTrade]:
        trades: list[RestTrade] = await self._inner.trade_history(exchange_symbol, limit, offset)
        return trades

    async def aclose(self) -> None:
        await self._inner.aclose()
