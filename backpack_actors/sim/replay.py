"""A recording served back as Backpack: recorded WebSocket frames and REST bodies, in order.

``backpack-actors sim --replay RECORDING [--speed N]`` serves, on one port like the simulator
(the same hypercorn/ASGI plumbing, :func:`~backpack_actors.sim.server.make_asgi_app`), what a
feed once received, so an unmodified client (ccxt.pro, or this feed) sees the recorded period.

The recording is one total order (the reconciler's inbox), and the server walks it as a timeline:

* a recorded read's frames go, unchanged, to the connections subscribed to their stream; a frame
  waits (up to ``subscribe_wait`` seconds) for a first subscriber of its stream, after which the
  stream's frames are dropped until somebody subscribes;
* a recorded REST depth snapshot (or trades answer) is the answer to the next request for that
  symbol: the timeline waits (up to ``request_wait``) for the request, answers it, lets the client
  take it in (``settle``), and goes on; a request the recording has no answer for left gets the
  last answer served for the symbol (an empty list for trades);
* a recorded REST-only channel poll (``rest_channels``: tickers, mark prices, open interest) is
  one poll round, offered to the next ``/api/v1/tickers``, ``/markPrices`` and ``/openInterest``
  requests (see :class:`_Round`); ``/api/v1/ticker?symbol=`` answers the symbol's latest recorded
  ticker;
* a recorded ``reconnecting`` drops the connections carrying that symbol, so the client
  reconnects where the recorded one did; an undecodable frame is sent as its recorded excerpt;
* the markets (``/api/v1/markets``, ``/assets``...) come from the recording's market table.

Pacing: the recorded wall-time gaps divided by ``speed`` (1 = as recorded), or none (``speed``
None or 0: as fast as the client keeps up). A feed run against the replay with the recorded
settings re-creates the recorded events, local times aside.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
from collections import Counter, defaultdict, deque
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, cast
from urllib.parse import parse_qs

import msgspec
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve

from backpack_actors.core.events import StatusKind
from backpack_actors.core.symbols import MarketInfo
from backpack_actors.core.wire import MarkPrice, OpenInterest, Ticker
from backpack_actors.recording import (
    BackfillRecord,
    FrameErrorRecord,
    FramesRecord,
    NewsRecord,
    Recording,
    RestChannelsRecord,
    RestTradesRecord,
    SnapshotRecord,
    load_recording,
)
from backpack_actors.sim.exchange import HttpResponse, SimConfig, SimExchange
from backpack_actors.sim.market import MarketSpec
from backpack_actors.sim.server import make_asgi_app

__all__ = [
    "ReplayExchange",
    "ReplayServer",
    "add_replay_arguments",
    "open_replay_server",
    "run_replay_server",
]

_log = logging.getLogger(__name__)
_JSON = {"content-type": "application/json; charset=utf-8"}
_STREAM = msgspec.json.Decoder(dict[str, Any])
_DEPTH = "/api/v1/depth"
_TRADES = ("/api/v1/trades", "/api/v1/trades/history")
_TICKER = "/api/v1/ticker"
# The REST-only channel routes, each answered from its list in the recorded polls.
_POLLS = {
    "/api/v1/tickers": "tickers",
    "/api/v1/markPrices": "mark_prices",
    "/api/v1/openInterest": "open_interest",
}
_CLOSE = "\x00close"  # the writer's cue: a recorded disconnect


def _spec(info: MarketInfo) -> MarketSpec:
    # Only /markets and /assets are answered from these; the model's prices are never served.
    return MarketSpec(
        info.exchange_id,
        info.base,
        info.quote,
        info.market_type.upper(),
        info.tick_size,
        info.step_size,
        info.min_size,
        info.tick_size * 10_000,
        info.step_size * 100,
    )


def _stream_of(raw: str | bytes) -> str | None:
    try:
        frame = _STREAM.decode(raw)
    except msgspec.DecodeError:
        return None
    stream = frame.get("stream")
    return stream if isinstance(stream, str) else None


def _level(level: Any) -> list[str]:
    # Text levels as recorded; Decimal levels via str(), exact with the exchange's scale kept.
    return [str(level[0]), str(level[1])]


def _depth_body(line: SnapshotRecord) -> bytes:
    snapshot = line.snapshot
    body: dict[str, Any] = {
        "asks": [_level(lv) for lv in snapshot.asks],
        "bids": [_level(lv) for lv in snapshot.bids],
        # Backpack sends the id as a string.
        "lastUpdateId": str(snapshot.last_update_id),
        "timestamp": snapshot.timestamp,
    }
    return msgspec.json.encode(body)


def _trades_body(line: RestTradesRecord | BackfillRecord) -> bytes:
    return msgspec.json.encode(line.trades)


class _Session:
    """One client connection: its subscriptions and outgoing queue."""

    def __init__(self, exchange: ReplayExchange) -> None:
        self.exchange = exchange
        self.streams: set[str] = set()
        self._send, self._recv = trio.open_memory_channel[str | bytes](math.inf)
        self._scope = trio.CancelScope()
        self.closing = False

    def offer(self, frame: str | bytes) -> None:
        self._send.send_nowait(frame)

    def kill(self) -> bool:
        """Close the connection once the frames offered before are sent (recorded order);
        False when it was already being closed."""
        if self.closing:
            return False
        self.closing = True
        self._send.send_nowait(_CLOSE)
        return True

    async def run(self, transport: Any) -> None:
        """Serve the connection until the client leaves or the timeline drops it."""
        try:
            with self._scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._reader, transport, nursery.cancel_scope)
                    nursery.start_soon(self._writer, transport)
        finally:
            self.exchange._leave(self)
            if self._scope.cancelled_caught:
                with trio.move_on_after(1.0) as scope:
                    scope.shield = True
                    await transport.close(1011, "recorded disconnect")

    async def _reader(self, transport: Any, scope: trio.CancelScope) -> None:
        while True:
            message = await transport.receive()
            if message is None:
                scope.cancel()
                return
            self.exchange._request(self, message)

    async def _writer(self, transport: Any) -> None:
        async for frame in self._recv:
            if frame is _CLOSE:
                self._scope.cancel()
                return
            if isinstance(frame, bytes):
                frame = frame.decode("utf-8", "replace")
            await transport.send(frame)


@dataclass
class _Waiter:
    event: trio.Event
    body: bytes | None = None


PollItem = Ticker | MarkPrice | OpenInterest


@dataclass
class _Round:
    """One REST-only poll round of the REST channels, as recorded.

    A connection group polls ``/tickers``, ``/markPrices`` and (every 60 s of its own clock)
    ``/openInterest`` once a round and records what it kept, its own markets' items, as one
    ``rest_channels`` line. Consecutive lines of disjoint markets are the groups' shares of one
    round: every request of the round gets their union (a group keeps its own markets), and each
    route with items takes one request per line. ``left`` counts the requests a route still
    takes; once a route's are taken, a further request for it is the client's next round.
    """

    items: dict[str, list[PollItem]]
    left: dict[str, int] = field(default_factory=dict)
    moved_on: bool = False
    """A request for a route this round already answered came: the client polls the next one."""

    def body(self, route: str, symbol: str = "") -> bytes:
        """The route's answer; ``symbol`` narrows it as the exchange's ``?symbol=`` does."""
        items = self.items[route]
        if symbol:
            items = [item for item in items if item.symbol == symbol]
        return msgspec.json.encode(items)


def _rounds(lines: Sequence[object]) -> dict[int, _Round]:
    """The poll rounds by the index of their first ``rest_channels`` line."""
    out: dict[int, _Round] = {}
    current: _Round | None = None
    markets: set[str] = set()
    lines_in_round = 0
    for index, line in enumerate(lines):
        if not isinstance(line, RestChannelsRecord):
            continue
        lists: dict[str, list[PollItem]] = {
            "tickers": list(line.tickers),
            "mark_prices": list(line.mark_prices),
            "open_interest": list(line.open_interest),
        }
        symbols = {item.symbol for items in lists.values() for item in items}
        if not symbols:
            continue  # nothing these routes answered: no poll of them to offer
        if current is None or symbols & markets:
            current = out[index] = _Round({route: [] for route in lists})
            markets, lines_in_round = set(), 0
        markets |= symbols
        lines_in_round += 1
        for route, items in lists.items():
            current.items[route].extend(items)
        # Every group of a round polls tickers and mark prices (one channel list for the feed):
        # those take one request per line. Open interest is polled on each group's own 60 s
        # clock, so only the lines that carry it took a request for it (a group that asked and
        # kept nothing cannot be told from one that did not ask: its request finds the round
        # answered and moves on, as a next round's would).
        for route in lists:
            if route == "open_interest":
                if lists[route]:
                    current.left[route] = current.left.get(route, 0) + 1
            elif current.items[route]:
                current.left[route] = lines_in_round
    return out


class ReplayExchange:
    """What the ASGI app serves in replay: the recording's timeline (see the module docstring)."""

    def __init__(
        self,
        recording: Recording,
        *,
        speed: float | None = None,
        subscribe_wait: float = 5.0,
        request_wait: float = 5.0,
        settle: float = 0.05,
    ) -> None:
        self.recording = recording
        self.speed = speed or None
        self.subscribe_wait = subscribe_wait
        self.request_wait = request_wait
        self.settle = settle
        markets = [_spec(info) for info in recording.header.markets]
        self.static = SimExchange(markets=markets, config=SimConfig(levels=1))
        self.finished = trio.Event()
        """Set once every recorded line has been served (or skipped)."""
        self.stats: Counter[str] = Counter()
        self._subs: dict[str, dict[_Session, None]] = defaultdict(dict)
        self._given_up: set[str] = set()
        self._changed = trio.Event()
        self._waiting: dict[tuple[str, str], list[_Waiter]] = defaultdict(list)
        self._last: dict[tuple[str, str], bytes] = {}
        self._left: Counter[tuple[str, str]] = Counter()
        for line in recording.lines:
            key = self._answer_key(line)
            if key is not None:
                self._left[key] += 1
        self._rounds = _rounds(recording.lines)
        self._rounds_left = len(self._rounds)
        self._round: _Round | None = None
        """The poll round the timeline offers now (None between rounds)."""
        self._deferred: dict[str, deque[_Round]] = defaultdict(deque)
        """Rounds whose route the client had not asked for when the timeline left them."""
        self._tickers: dict[str, Ticker] = {}

    @staticmethod
    def _answer_key(line: object) -> tuple[str, str] | None:
        if isinstance(line, SnapshotRecord):
            return "depth", line.symbol
        if isinstance(line, RestTradesRecord | BackfillRecord):
            return "trades", line.symbol
        return None

    # --- the timeline -------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Walk the recording, then keep serving the last answers until cancelled."""
        task_status.started()
        previous = self.recording.header.now
        for index, line in enumerate(self.recording.lines):
            if self.speed is not None and line.now > previous:
                await trio.sleep((line.now - previous) / self.speed)
            previous = max(previous, line.now)
            await self._play(line, index)
        self.finished.set()
        self._notify()
        _log.info("replay: every recorded line served (%s)", dict(self.stats))
        await trio.sleep_forever()

    async def _play(self, line: object, index: int) -> None:
        if isinstance(line, FramesRecord):
            for item in line.raw:
                raw = item if isinstance(item, str) else item.b
                await self._deliver(_stream_of(raw), raw)
        elif isinstance(line, SnapshotRecord):
            await self._answer(("depth", line.symbol), _depth_body(line))
        elif isinstance(line, RestTradesRecord | BackfillRecord):
            await self._answer(("trades", line.symbol), _trades_body(line))
        elif isinstance(line, RestChannelsRecord):
            poll = self._rounds.get(index)
            if poll is not None:  # a later group's share of a round was offered with its first
                await self._offer(poll)
        elif isinstance(line, NewsRecord) and line.status is StatusKind.RECONNECTING:
            self._drop_connections(line.symbol)
        elif isinstance(line, FrameErrorRecord):
            sessions = self._sessions_of(line.symbol)
            for session in sessions:
                session.offer(line.excerpt)
            self.stats["frame_errors_sent"] += bool(sessions)

    def _sessions_of(self, symbol: str) -> list[_Session]:
        found: dict[_Session, None] = {}
        for stream, sessions in self._subs.items():
            if not symbol or stream.endswith(f".{symbol}"):
                found.update(sessions)
        return list(found)

    def _drop_connections(self, symbol: str) -> None:
        # The markets of one connection each have their reconnect news: it closes once.
        for session in self._sessions_of(symbol):
            self.stats["disconnects"] += session.kill()

    async def _deliver(self, stream: str | None, raw: str | bytes) -> None:
        if stream is None:
            self.stats["frames_dropped"] += 1
            return
        if not self._subs.get(stream) and stream not in self._given_up:
            with trio.move_on_after(self.subscribe_wait):
                while not self._subs.get(stream):
                    await self._changed.wait()
        sessions = self._subs.get(stream)
        if not sessions:
            self._given_up.add(stream)
            self.stats["frames_dropped"] += 1
            return
        for session in sessions:
            session.offer(raw)
        self.stats["frames_sent"] += 1

    async def _answer(self, key: tuple[str, str], body: bytes) -> None:
        self._left[key] -= 1
        self._last[key] = body
        if not self._waiting[key]:
            with trio.move_on_after(self.request_wait):
                while not self._waiting[key]:
                    await self._changed.wait()
        if not self._waiting[key]:
            self.stats[f"{key[0]}_unrequested"] += 1
            return
        waiter = self._waiting[key].pop(0)
        waiter.body = body
        waiter.event.set()
        self.stats[f"{key[0]}_served"] += 1
        # The client handles the answer before the frames recorded after it arrive.
        await trio.sleep(self.settle)

    async def _offer(self, poll: _Round) -> None:
        """Offer a poll round until the client took it, moved on to its next round, or
        ``request_wait`` passed; what it did not take waits for the route's next request."""
        self._rounds_left -= 1
        self._round = poll
        for item in poll.items["tickers"]:
            assert isinstance(item, Ticker)
            self._tickers[item.symbol] = item
        self._notify()
        with trio.move_on_after(self.request_wait):
            while any(poll.left.values()) and not poll.moved_on:
                await self._changed.wait()
        self._round = None
        for route, left in poll.left.items():
            # The client's own clock decides when it polls (open interest: every 60 s of it), so
            # a route it asks for later than recorded gets this answer then, in recorded order.
            self._deferred[route].extend([poll] * left)
            self.stats["polls_deferred"] += left
        self._notify()
        # The client handles the round before the lines recorded after it arrive.
        await trio.sleep(self.settle)

    async def _poll_answer(self, route: str, symbol: str) -> bytes:
        """A REST channel route's answer: a deferred one first, else the offered round's."""
        while True:
            deferred = self._deferred[route]
            if deferred:
                self.stats["polls_served"] += 1
                return deferred.popleft().body(route, symbol)
            poll = self._round
            if poll is not None:
                if poll.left.get(route, 0) > 0:
                    poll.left[route] -= 1
                    self._notify()
                    self.stats["polls_served"] += 1
                    return poll.body(route, symbol)
                if route not in poll.left:
                    # The recorded round has no such answer (open interest not due then, or
                    # nothing for the group's markets): an empty list makes no events either.
                    self.stats["polls_empty"] += 1
                    return b"[]"
                poll.moved_on = True
                self._notify()
            elif self._rounds_left <= 0 or self.finished.is_set():
                self.stats["polls_empty"] += 1
                return b"[]"
            await self._changed.wait()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    # --- the ASGI app's side ------------------------------------------------------------------

    def new_session(self) -> _Session:
        """A connection's session (called by the ASGI app)."""
        return _Session(self)

    def take_handshake_refusal(self) -> int | None:
        """The replay accepts every handshake (recorded refusals are not replayed)."""
        return None

    def _request(self, session: _Session, message: str | bytes) -> None:
        try:
            request = msgspec.json.decode(message)
        except msgspec.DecodeError:
            return
        if not isinstance(request, dict) or not isinstance(request.get("params"), list):
            return
        method = request.get("method")
        for stream in request["params"]:
            if not isinstance(stream, str):
                continue
            if method == "SUBSCRIBE":
                session.streams.add(stream)
                self._subs[stream][session] = None
                self._given_up.discard(stream)
            elif method == "UNSUBSCRIBE":
                session.streams.discard(stream)
                self._subs[stream].pop(session, None)
        self._notify()

    def _leave(self, session: _Session) -> None:
        for stream in session.streams:
            self._subs[stream].pop(session, None)
        session.streams.clear()

    async def handle_http(
        self,
        method: str,
        path: str,
        query: str = "",
        *,
        client: str = "replay",
        headers: Mapping[str, str] | None = None,
        body: bytes = b"",
    ) -> HttpResponse:
        """Depth, trades and the REST channel polls from the timeline; everything else from
        the market table."""
        params = parse_qs(query)
        symbol = (params.get("symbol") or [""])[0]
        if path == _DEPTH:
            key = ("depth", symbol)
        elif path in _TRADES:
            key = ("trades", symbol)
        elif path in _POLLS:
            body = await self._poll_answer(_POLLS[path], symbol)
            return HttpResponse(200, dict(_JSON), body)
        elif path == _TICKER and symbol in self._tickers:
            return HttpResponse(200, dict(_JSON), msgspec.json.encode(self._tickers[symbol]))
        elif path == _TICKER and symbol in self.static.models:
            # Not the simulator's made-up prices: the recording has no ticker of it (yet).
            message = f"no ticker of {symbol} recorded up to this point of the replay"
            body = msgspec.json.encode({"code": "RESOURCE_NOT_FOUND", "message": message})
            return HttpResponse(404, dict(_JSON), body)
        else:
            return await self.static.handle_http(
                method, path, query, client=client, headers=headers, body=body
            )
        if self._left[key] <= 0 or self.finished.is_set():
            return self._fallback(key)
        waiter = _Waiter(trio.Event())
        self._waiting[key].append(waiter)
        self._notify()
        await waiter.event.wait()
        assert waiter.body is not None
        return HttpResponse(200, dict(_JSON), waiter.body)

    def _fallback(self, key: tuple[str, str]) -> HttpResponse:
        self.stats[f"{key[0]}_fallbacks"] += 1
        body = self._last.get(key)
        if body is None:
            body = b"[]" if key[0] == "trades" else b'{"asks":[],"bids":[],"lastUpdateId":"0"}'
        return HttpResponse(200, dict(_JSON), body)


@dataclass(frozen=True, slots=True)
class ReplayServer:
    """A running replay: base URLs and the timeline behind them."""

    rest_url: str
    ws_url: str
    exchange: ReplayExchange
    port: int


@asynccontextmanager
async def open_replay_server(
    recording: str | Path | Recording,
    host: str = "127.0.0.1",
    port: int = 0,
    **options: Any,
) -> AsyncIterator[ReplayServer]:
    """Serve ``recording`` on ``host:port`` (0 = any free port) for the duration of the block.

    ``options`` are :class:`ReplayExchange`'s (``speed``, ``subscribe_wait``, ``request_wait``,
    ``settle``).
    """
    loaded = recording if isinstance(recording, Recording) else load_recording(recording)
    exchange = ReplayExchange(loaded, **options)
    hconfig = HypercornConfig()
    hconfig.bind = [f"{host}:{port}"]
    hconfig.accesslog = None
    hconfig.errorlog = logging.getLogger("backpack_actors.sim.hypercorn")
    hconfig.graceful_timeout = 0.5
    async with trio.open_nursery() as nursery:
        app = make_asgi_app(cast(SimExchange, exchange))  # the same duck-typed interface
        binds: list[str] = await nursery.start(partial(serve, cast(Any, app), hconfig))
        bound = binds[0].removeprefix("http://")
        actual_port = int(bound.rsplit(":", 1)[1])
        await nursery.start(exchange.run)
        url_host = f"[{host}]" if ":" in host else host
        yield ReplayServer(
            rest_url=f"http://{url_host}:{actual_port}",
            ws_url=f"ws://{url_host}:{actual_port}",
            exchange=exchange,
            port=actual_port,
        )
        nursery.cancel_scope.cancel()


def add_replay_arguments(parser: argparse.ArgumentParser) -> None:
    """``sim --replay FILE [--speed N]``."""
    group = parser.add_argument_group("replay a recording (instead of simulating)")
    group.add_argument(
        "--replay", metavar="RECORDING", help="serve a .jsonl[.gz] recording's frames and bodies"
    )
    group.add_argument(
        "--speed",
        type=float,
        default=1.0,
        metavar="N",
        help="with --replay: N times the recorded pace, 0 = as fast as the client takes it "
        "(default 1)",
    )


def run_replay_server(args: argparse.Namespace) -> int:
    """``sim --replay``: serve until the recording is done and Ctrl-C; returns the exit code."""
    options: Mapping[str, Any] = {"speed": args.speed}

    async def main() -> None:
        async with open_replay_server(args.replay, args.host, args.port, **options) as server:
            print(f"backpack replay: REST {server.rest_url}  WS {server.ws_url}", flush=True)
            markets = " ".join(m.exchange_id for m in server.exchange.recording.header.markets)
            print(f"markets: {markets}", flush=True)
            await server.exchange.finished.wait()
            print(f"replay: done ({dict(server.exchange.stats)})", file=sys.stderr, flush=True)
            await trio.sleep_forever()

    try:
        trio.run(main)
    except KeyboardInterrupt:
        return 0
    except BaseExceptionGroup as group:
        _, rest = group.split(KeyboardInterrupt)
        if rest is not None:
            raise
    return 0
