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
* recorded klines answers (``rest_channels`` candles) answer ``/api/v1/klines`` by range: a
  request gets the recorded candles of its market and interval inside its range among the polls
  the timeline has played; one asking past them, while the recording polls that market again
  later, waits (up to ``request_wait``) for the timeline to get there. The timeline never waits
  for a klines request (see :meth:`ReplayExchange.recorded_now` for the client's clock);
* a recorded ``reconnecting`` drops the connections carrying that symbol, so the client
  reconnects where the recorded one did; an undecodable frame is sent as its recorded excerpt;
* the markets (``/api/v1/markets``, ``/assets``...) come from the recording's market table.

Pacing: the recorded wall-time gaps divided by ``speed`` (1 = as recorded), or none (``speed``
None or 0: as fast as the client keeps up). A feed run against the replay with the recorded
settings re-creates the recorded events, local times aside.
"""

from __future__ import annotations

import argparse
import bisect
import datetime
import logging
import math
import sys
from collections import Counter, defaultdict, deque
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import Any, cast
from urllib.parse import parse_qs

import msgspec
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve

from backpack_actors.actors.messages import CandlePoll
from backpack_actors.core.events import StatusKind
from backpack_actors.core.symbols import MarketInfo
from backpack_actors.core.wire import Kline, MarkPrice, OpenInterest, Ticker
from backpack_actors.recording import (
    BackfillRecord,
    FrameErrorRecord,
    FramesRecord,
    NewsRecord,
    ReconcilerStartedRecord,
    Recording,
    RestChannelsRecord,
    RestTradesRecord,
    SnapshotRecord,
    StreamStartedRecord,
    SymbolAddedRecord,
    SymbolRemovedRecord,
    load_recording,
)
from backpack_actors.sim.exchange import KLINE_INTERVALS, HttpResponse, SimConfig, SimExchange
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
_KLINES = "/api/v1/klines"
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


def _params(
    path: str, query: str | Mapping[str, str | Sequence[str]] | None
) -> dict[str, list[str]]:
    """A request's parameters, from ``path?...`` and ``query`` (text, as the ASGI app passes it,
    or a mapping, as the in-process :class:`~backpack_actors.transport.rest.SimRestClient`)."""
    params: dict[str, list[str]] = parse_qs(path.partition("?")[2], keep_blank_values=True)
    pairs: Mapping[str, str | Sequence[str]] = (
        parse_qs(query, keep_blank_values=True) if isinstance(query, str) else query or {}
    )
    for key, value in pairs.items():
        params.setdefault(key, []).extend([value] if isinstance(value, str) else value)
    return params


def _first(params: Mapping[str, list[str]], name: str) -> str | None:
    values = params.get(name)
    return values[0] if values else None


def _utc_s(text: str) -> int:
    # Kline times are naive UTC, "YYYY-MM-DD HH:MM:SS" over REST, read as channels.py reads them.
    moment = datetime.datetime.fromisoformat(text.replace(" ", "T"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return math.floor(moment.timestamp())


def _plain(value: Decimal | None) -> str | None:
    # The recorded digits and scale, in the plain notation the exchange uses (never 1E-7).
    return None if value is None else format(value, "f")


def _kline_json(kline: Kline) -> dict[str, str | None]:
    """One candle as the exchange's ``/klines`` sends it (sim/exchange.py ``_klines``): its
    field names in sorted order, decimals and the trade count as strings, times as recorded."""
    return {
        "close": _plain(kline.close),
        "end": kline.end,
        "high": _plain(kline.high),
        "low": _plain(kline.low),
        "open": _plain(kline.open),
        "quoteVolume": _plain(kline.quote_volume),
        "start": kline.start,
        "trades": None if kline.trades is None else str(kline.trades),
        "volume": _plain(kline.volume),
    }


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

    The feed's one :class:`~backpack_actors.actors.connection.ChannelPoller` asks ``/tickers``,
    ``/markPrices`` and (every 60 s of its clock) ``/openInterest`` once a round for every
    REST-only market, whatever the number of connection groups, so a round takes one request per
    route it has items for: the first gets them, and a further request for the same route is the
    client's next round. ``pending`` are the routes with items not asked for yet.
    """

    items: dict[str, list[PollItem]]
    pending: set[str] = field(default_factory=set)
    moved_on: bool = False
    """A request for a route this round already answered came: the client polls the next one."""


def _poll_body(route: str, rounds: Sequence[_Round], symbol: str = "") -> bytes:
    """The route's answer from ``rounds`` (oldest first): each market's newest item, as the
    exchange answers with what is current; ``symbol`` narrows it as the exchange's ``?symbol=``
    does."""
    newest: dict[str, PollItem] = {}
    for poll in rounds:
        for item in poll.items[route]:
            if not symbol or item.symbol == symbol:
                newest[item.symbol] = item
    return msgspec.json.encode(list(newest.values()))


def _rounds(recording: Recording) -> dict[int, _Round]:
    """The poll rounds by the index of their first ``rest_channels`` line.

    A recording made since the poller is one for the whole feed (commit e75382e) has one line per
    round, every REST-only market's items. Older ones have one line per connection group and
    round, the group's own markets: the shares of a round are consecutive lines of disjoint
    markets. So a line starts a new round when it shares a market with the current round, or when
    the current round already holds every market that was REST-only at its last line (the
    ``stream_started`` lines say which; a round without tickers needs only the perps). The second
    rule keeps a later round of other markets (one group recovered, another failed) from being
    taken for a share of the last one: answered with it, it would reach the client a round early
    and leave the next request without it. A recording that names no REST-only market is grouped
    by the first rule alone. Lines with candles only are no round (``/klines`` is answered by
    range, :class:`_Candles`).
    """
    perps = {m.exchange_id for m in recording.header.markets if m.market_type == "perp"}
    rest_only: set[str] = set()
    out: dict[int, _Round] = {}
    current: _Round | None = None
    markets: set[str] = set()
    complete = False
    for index, line in enumerate(recording.lines):
        if isinstance(line, StreamStartedRecord):
            if line.mode == "rest":
                rest_only.add(line.symbol)
            else:
                rest_only.discard(line.symbol)
        elif isinstance(line, SymbolRemovedRecord):
            rest_only.discard(line.symbol)
        elif isinstance(line, SymbolAddedRecord | ReconcilerStartedRecord):
            infos = [line.info] if isinstance(line, SymbolAddedRecord) else line.markets
            perps |= {m.exchange_id for m in infos if m.market_type == "perp"}
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
        if current is None or complete or symbols & markets:
            current = out[index] = _Round({route: [] for route in lists})
            markets = set()
        markets |= symbols
        for route, items in lists.items():
            current.items[route].extend(items)
            if items:
                # Only a route with items takes a request: a round without open interest (asked
                # every 60 s) polled none, and a request for it then gets [] (_poll_answer).
                current.pending.add(route)
        needed = rest_only if current.items["tickers"] else rest_only & perps
        complete = bool(needed) and needed <= markets
    return out


@dataclass
class _Candles:
    """One market's and interval's recorded klines answers, as far as the timeline has played.

    Only candles lying wholly inside their poll's range are kept: the bucket holding its
    ``endTime`` may be partial, and the feed took nothing else either (docs/channels.md).
    """

    ahead: int = 0
    """Recorded polls the timeline has not played yet."""
    polled_to: int | None = None
    """The furthest ``endTime`` (s) of a played poll."""
    by_start: dict[int, Kline] = field(default_factory=dict)
    starts: list[int] = field(default_factory=list)
    """``by_start``'s keys, sorted."""

    def add(self, poll: CandlePoll) -> None:
        self.ahead -= 1
        self.polled_to = poll.end_s if self.polled_to is None else max(self.polled_to, poll.end_s)
        for kline in poll.klines:
            try:
                start, end = _utc_s(kline.start), _utc_s(kline.end)
            except ValueError:
                continue  # no place in time: the recorded feed could not publish it either
            if not poll.start_s <= start < end <= poll.end_s:
                continue
            if start not in self.by_start:
                bisect.insort(self.starts, start)
            # A bucket polled twice (a catch-up overlapping a poll): the later answer stands.
            self.by_start[start] = kline

    def between(self, start_s: int, end_s: int) -> list[Kline]:
        """The candles whose bucket starts from ``start_s`` up to before ``end_s``, oldest first:
        for a range on bucket boundaries, as the feed asks, the simulator's answer (it counts the
        trades at ``startTime <= t < endTime``)."""
        low = bisect.bisect_left(self.starts, start_s)
        high = bisect.bisect_left(self.starts, end_s)
        return [self.by_start[s] for s in self.starts[low:high]]


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
        self._rounds = _rounds(recording)
        self._rounds_left = len(self._rounds)
        self._round: _Round | None = None
        """The poll round the timeline offers now (None between rounds)."""
        self._deferred: dict[str, deque[_Round]] = defaultdict(deque)
        """Rounds whose route the client had not asked for when the timeline left them."""
        self._tickers: dict[str, Ticker] = {}
        self._candles: dict[tuple[str, str], _Candles] = defaultdict(_Candles)
        for line in recording.lines:
            if isinstance(line, RestChannelsRecord):
                for poll in line.candles:
                    self._candles[poll.symbol, poll.interval].ahead += 1
        # The timeline's clock (recorded_now): the recorded time it is at, and, while it waits
        # for the next line's time, that time and the trio time the wait began.
        self._at = recording.header.now
        self._until = recording.header.now
        self._since = 0.0

    @staticmethod
    def _answer_key(line: object) -> tuple[str, str] | None:
        if isinstance(line, SnapshotRecord):
            return "depth", line.symbol
        if isinstance(line, RestTradesRecord | BackfillRecord):
            return "trades", line.symbol
        return None

    # --- the timeline -------------------------------------------------------------------------

    def recorded_now(self) -> float:
        """The recorded wall time (s) the timeline is at: the time of the line it is playing,
        running on at ``speed`` while it waits for the next line's, never past that.

        A client's time-driven requests match the recorded ones when its clock is this one: the
        feed asks ``/klines`` for the buckets closed two seconds ago by its wall clock, so a feed
        replaying REST-only candles needs ``wall_clock=exchange.recorded_now`` (in process), or a
        clock on the recording's dates. With another clock it asks for other minutes, which the
        recording has no candles of.
        """
        if self.speed is None or self._until <= self._at:
            return self._at
        return min(self._until, self._at + (trio.current_time() - self._since) * self.speed)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Walk the recording, then keep serving the last answers until cancelled."""
        task_status.started()
        previous = self.recording.header.now
        for index, line in enumerate(self.recording.lines):
            if self.speed is not None and line.now > previous:
                self._until, self._since = line.now, trio.current_time()
                await trio.sleep((line.now - previous) / self.speed)
            previous = max(previous, line.now)
            self._at = self._until = previous
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
            if line.candles:
                for candles in line.candles:
                    self._candles[candles.symbol, candles.interval].add(candles)
                self.stats["klines_polls_played"] += len(line.candles)
                self._notify()  # klines requests waiting for the timeline to get here
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
            while poll.pending and not poll.moved_on:
                await self._changed.wait()
        self._round = None
        for route in poll.pending:
            # The client's own clock decides when it polls (open interest: every 60 s of it), so
            # a route it asks for later than recorded gets this answer then.
            self._deferred[route].append(poll)
            self.stats["polls_deferred"] += 1
        poll.pending.clear()
        self._notify()
        # The client handles the round before the lines recorded after it arrive.
        await trio.sleep(self.settle)

    async def _poll_answer(self, route: str, symbol: str) -> bytes:
        """A REST channel route's answer: the rounds deferred for it and the offered round, if
        it has the route, in one answer (each market's newest item). One answer for them all:
        a client polling less often than recorded (an old recording's groups, each on its own
        open-interest clock) would otherwise fall a round further behind at every request."""
        while True:
            taken = list(self._deferred.pop(route, ()))
            poll = self._round
            if poll is not None and route in poll.pending:
                poll.pending.discard(route)
                taken.append(poll)
                self._notify()
            if taken:
                self.stats["polls_served"] += len(taken)
                return _poll_body(route, taken, symbol)
            if poll is not None:
                if not poll.items[route]:
                    # The recorded round has no such answer (open interest not due then, or
                    # nothing for the REST-only markets): an empty list makes no events either.
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
        query: str | Mapping[str, str | Sequence[str]] | None = "",
        *,
        client: str = "replay",
        headers: Mapping[str, str] | None = None,
        body: bytes = b"",
    ) -> HttpResponse:
        """Depth, trades, the REST channel polls and klines from the timeline; everything else
        from the market table. ``query`` as :meth:`SimExchange.handle_http` takes it."""
        params = _params(path, query)
        route = path.partition("?")[0]
        symbol = _first(params, "symbol") or ""
        klines = self._klines_request(params) if route == _KLINES else None
        if route == _DEPTH:
            key = ("depth", symbol)
        elif route in _TRADES:
            key = ("trades", symbol)
        elif route in _POLLS:
            body = await self._poll_answer(_POLLS[route], symbol)
            return HttpResponse(200, dict(_JSON), body)
        elif klines is not None:
            return HttpResponse(200, dict(_JSON), await self._klines_answer(*klines))
        elif route == _TICKER and symbol in self._tickers:
            return HttpResponse(200, dict(_JSON), msgspec.json.encode(self._tickers[symbol]))
        elif route == _TICKER and symbol in self.static.models:
            # Not the simulator's made-up prices: the recording has no ticker of it (yet).
            message = f"no ticker of {symbol} recorded up to this point of the replay"
            body = msgspec.json.encode({"code": "RESOURCE_NOT_FOUND", "message": message})
            return HttpResponse(404, dict(_JSON), body)
        else:
            # A klines request the exchange would refuse gets the simulator's error for it.
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

    def _klines_request(self, params: Mapping[str, list[str]]) -> tuple[str, str, int, int] | None:
        """``(symbol, interval, startTime, endTime)`` of a klines request the exchange takes
        (the simulator's checks), else None. ``endTime`` defaults to the timeline's time."""
        symbol, interval = _first(params, "symbol"), _first(params, "interval")
        start, end = _first(params, "startTime"), _first(params, "endTime")
        if symbol not in self.static.models or interval not in KLINE_INTERVALS or start is None:
            return None
        try:
            return (
                symbol,
                interval,
                int(start),
                math.floor(self.recorded_now()) + 1 if end is None else int(end),
            )
        except ValueError:
            return None

    async def _klines_answer(self, symbol: str, interval: str, start_s: int, end_s: int) -> bytes:
        """The recorded candles of ``symbol``/``interval`` in ``[start_s, end_s)`` that the
        timeline has played.

        A request reaching past the polls played, while the recording polls that market again
        later, waits for the timeline (up to ``request_wait``): a client whose clock runs a little
        ahead of the timeline would otherwise get no candle for a range it then takes as empty
        and never asks again. The timeline does not wait for klines requests: the request names
        the candles it wants, so one that comes late is answered all the same.
        """
        candles = self._candles.get((symbol, interval))

        def behind() -> bool:
            assert candles is not None
            return candles.ahead > 0 and (candles.polled_to is None or candles.polled_to < end_s)

        if candles is not None and behind():
            self.stats["klines_waited"] += 1
            with trio.move_on_after(self.request_wait):
                while behind():
                    await self._changed.wait()
        self.stats["klines_served"] += 1
        found = [] if candles is None else candles.between(start_s, end_s)
        return msgspec.json.encode([_kline_json(kline) for kline in found])

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
