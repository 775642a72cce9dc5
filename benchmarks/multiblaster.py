"""A fast local stand-in for Backpack with many markets (run in its own process).

``python -m benchmarks.multiblaster --markets N --rate R [--frames F] [--seed S]`` listens on
``127.0.0.1:0`` and prints ``{"rest_url": ..., "ws_url": ..., "symbols": [...]}`` as one JSON
line; it serves until stdin closes.

The stream: one seeded :class:`~benchmarks.generator.StreamGenerator` run of ``F`` frames (85%
depth deltas, 15% trades) is the *template*; every market replays the template under its own
symbol (so every market has the same, exact book history and its own update/trade ids starting at
the template's). Frames are pre-encoded per template frame as byte pieces around the symbol and
the two timestamps, so sending a frame is a ``join`` of nine byte strings; ``E`` and ``T`` are
both set to the wall-clock µs at which the frame was *due*, so ``receipt - T`` is the real lag
(including any delay a full socket or a slow sender causes).

WebSocket (any path): ``{"method":"SUBSCRIBE","params":["depth.X","trade.X",...]}`` on any
number of connections, in any number of messages. A market's clock starts when one of its streams
is first subscribed on any connection: template frame ``j`` is due at ``start + phase + j / R``
(a per-market phase spreads the markets over one period). A connection gets, from the frame due
after its subscription on, every frame of the kinds it subscribed to, in template order; each
connection's sender writes everything due in one ``send_all`` per tick (default 5 ms).
``UNSUBSCRIBE`` stops a stream on that connection.

REST (HTTP/1.1 keep-alive; any request may be the WebSocket upgrade, as aiohttp reuses its pooled
connection): ``/api/v1/markets`` (every market, Backpack's JSON), ``/api/v1/assets`` and
``/api/v1/securities`` (``[]``), ``/api/v1/trades`` (``[]``), ``/api/v1/depth?symbol=X``: the
market's book after every frame due so far (``lastUpdateId`` that frame's ``u``, as a string;
``timestamp`` µs; asks ascending, bids ascending with the best last) -- every frame after it has
``U`` = ``lastUpdateId`` + 1 on that market. Built from a stored book every 256 frames plus the
changes since (about a millisecond). ``/bench/stats``: what the server did (frames, bytes,
writes, CPU seconds, worst lateness of a write).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import heapq
import json
import sys
import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

import h11
import trio
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, CloseConnection, Ping, Request, TextMessage

from benchmarks.common import ccxt_market
from benchmarks.generator import StreamGenerator

__all__ = ["Template", "main", "symbol_names"]

TICK = 0.005
CHECKPOINT = 256
TEMPLATE_SYMBOL = "M0000_USDC"
FIRST_TRADE_ID = 10_782_548
_E_PREFIX = b'{"data":{"E":'
_T_SEP = b',"T":'
_DIGITS = 16


def symbol_names(markets: int) -> list[str]:
    """Exchange ids of the benchmark markets (all the same length: frame sizes stay fixed)."""
    return [f"M{i:04d}_USDC" for i in range(markets)]


def _ws_header(length: int) -> bytes:
    if length < 126:
        return bytes((0x81, length))
    if length < 65536:
        return bytes((0x81, 126)) + length.to_bytes(2, "big")
    return bytes((0x81, 127)) + length.to_bytes(8, "big")


class Template:
    """The pre-encoded template stream and its book history (for REST snapshots)."""

    def __init__(self, seed: int, frames: int) -> None:
        gen = StreamGenerator(seed, symbol=TEMPLATE_SYMBOL, first_trade_id=FIRST_TRADE_ID)
        snap = gen.snapshot()
        bids = {int(p.replace(".", "")): (p, s) for p, s in snap["bids"]}  # type: ignore[union-attr]
        asks = {int(p.replace(".", "")): (p, s) for p, s in snap["asks"]}  # type: ignore[union-attr]
        uid = int(snap["lastUpdateId"])  # type: ignore[arg-type]
        self.initial_uid = uid
        # Per frame: (ws header + '{"data":{"E":', piece before symbol, between symbols, end).
        self.pieces: list[tuple[bytes, bytes, bytes, bytes]] = []
        self.is_trade: list[bool] = []
        # Per frame: the level changes ((is_bid, tick, price, size) list) and u after the frame.
        self.changes: list[list[tuple[bool, int, str, str]]] = []
        self.uid_after: list[int] = []
        self.checkpoints: list[tuple[dict[int, tuple[str, str]], dict[int, tuple[str, str]]]] = []
        sym = TEMPLATE_SYMBOL.encode()
        for j, text in enumerate(gen.frames(frames)):
            if j % CHECKPOINT == 0:
                self.checkpoints.append((dict(bids), dict(asks)))
            raw = text.encode()
            data = json.loads(text)["data"]
            head_len = len(_E_PREFIX)
            if not raw.startswith(_E_PREFIX) or raw[
                head_len + _DIGITS : head_len + _DIGITS + 5
            ] != (_T_SEP):
                raise ValueError(f"unexpected frame layout: {text[:60]}")
            rest = raw[head_len + _DIGITS + len(_T_SEP) + _DIGITS :]
            mid1, mid2, end = rest.split(sym)
            total = len(raw)  # E and T keep 16 digits, the symbol keeps its length
            self.pieces.append((_ws_header(total) + _E_PREFIX, mid1, mid2, end))
            trade = data["e"] == "trade"
            self.is_trade.append(trade)
            changes: list[tuple[bool, int, str, str]] = []
            if not trade:
                for key, side, is_bid in (("b", bids, True), ("a", asks, False)):
                    for p, s in data[key]:
                        tick = int(p.replace(".", ""))
                        changes.append((is_bid, tick, p, s))
                        if float(s) == 0.0:
                            side.pop(tick, None)
                        else:
                            side[tick] = (p, s)
                uid = int(data["u"])
            self.changes.append(changes)
            self.uid_after.append(uid)
        self.frames = len(self.pieces)

    def snapshot(self, position: int, now_us: int) -> bytes:
        """The depth body after the first ``position`` frames."""
        position = min(position, self.frames)
        index = min(position // CHECKPOINT, len(self.checkpoints) - 1)
        bids, asks = (dict(x) for x in self.checkpoints[index])
        for j in range(index * CHECKPOINT, position):
            for is_bid, tick, p, s in self.changes[j]:
                side = bids if is_bid else asks
                if float(s) == 0.0:
                    side.pop(tick, None)
                else:
                    side[tick] = (p, s)
        uid = self.uid_after[position - 1] if position else self.initial_uid
        body = {
            "asks": [list(asks[t]) for t in sorted(asks)],
            "bids": [list(bids[t]) for t in sorted(bids)],
            "lastUpdateId": str(uid),
            "timestamp": now_us,
        }
        return json.dumps(body, separators=(",", ":")).encode()


class Market:
    """One market's clock: frame ``j`` is due at ``start + j / rate``."""

    __slots__ = ("index", "start", "symbol")

    def __init__(self, index: int, symbol: bytes) -> None:
        self.index = index
        self.symbol = symbol
        self.start = 0.0

    def position(self, now: float, rate: float) -> int:
        """Frames due at ``now`` (0 before the clock starts)."""
        if not self.start or now < self.start:
            return 0
        return int((now - self.start) * rate) + 1


class Server:
    def __init__(self, template: Template, symbols: list[str], rate: float, tick: float) -> None:
        self.template = template
        self.rate = rate
        self.tick = tick
        self.markets = {s: Market(i, s.encode()) for i, s in enumerate(symbols)}
        self.routes = {
            "/api/v1/assets": b"[]",
            "/api/v1/securities": b"[]",
            "/api/v1/trades": b"[]",
            "/api/v1/markets": json.dumps([ccxt_market(s) for s in symbols]).encode(),
        }
        self.frames = 0
        self.bytes = 0
        self.writes = 0
        self.max_late = 0.0
        self.depth_requests = 0
        self.connections = 0
        self.subscribed = 0
        self.exhausted = 0

    def start_market(self, market: Market, now: float) -> None:
        if not market.start:
            # A phase per market spreads the markets over one period (golden-ratio sequence).
            phase = ((market.index * 0.6180339887) % 1.0) / self.rate
            market.start = now + phase

    # -- HTTP ----------------------------------------------------------------------------------

    async def handle(self, stream: trio.SocketStream) -> None:
        try:
            await self._serve(stream)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError, h11.ProtocolError):
            return
        finally:
            await trio.aclose_forcefully(stream)

    async def _serve(self, stream: trio.SocketStream) -> None:
        buf = b""
        while True:
            while b"\r\n\r\n" not in buf:
                data = await stream.receive_some(65536)
                if not data:
                    return
                buf += data
            end = buf.index(b"\r\n\r\n") + 4
            head, rest = buf[:end], buf[end:]
            lowered = head.lower()
            if b"upgrade: websocket" in lowered:
                await self._websocket(stream, head + rest)
                return
            conn = h11.Connection(h11.SERVER)
            conn.receive_data(head)
            request = conn.next_event()
            if not isinstance(request, h11.Request):
                return
            status, body = self._route(request.target.decode())
            headers = [("content-type", "application/json"), ("content-length", str(len(body)))]
            out = conn.send(h11.Response(status_code=status, headers=headers)) or b""
            out += conn.send(h11.Data(data=body)) or b""
            out += conn.send(h11.EndOfMessage()) or b""
            await stream.send_all(out)
            if b"connection: close" in lowered:
                return
            buf = rest

    def _route(self, target: str) -> tuple[int, bytes]:
        parts = urlsplit(target)
        if parts.path in self.routes:
            return 200, self.routes[parts.path]
        query = parse_qs(parts.query)
        if parts.path == "/api/v1/depth":
            market = self.markets.get(query.get("symbol", [""])[0])
            if market is not None:
                self.depth_requests += 1
                now = time.time()
                return 200, self.template.snapshot(market.position(now, self.rate), int(now * 1e6))
        if parts.path == "/bench/stats":
            return 200, json.dumps(self.stats()).encode()
        print(f"multiblaster: 404 for {target}", file=sys.stderr, flush=True)
        return 404, b'{"code":"RESOURCE_NOT_FOUND","message":"Not found"}'

    def stats(self) -> dict[str, Any]:
        usage = time.process_time()
        return {
            "cpu_s": usage,
            "wall": time.time(),
            "frames": self.frames,
            "bytes": self.bytes,
            "writes": self.writes,
            "max_late_ms": 1e3 * self.max_late,
            "depth_requests": self.depth_requests,
            "connections": self.connections,
            "subscribed_streams": self.subscribed,
            "exhausted": self.exhausted,
        }

    # -- WebSocket -----------------------------------------------------------------------------

    async def _websocket(self, stream: trio.SocketStream, buf: bytes) -> None:
        ws = WSConnection(ConnectionType.SERVER)
        ws.receive_data(buf)
        accepted = False
        for event in ws.events():
            if isinstance(event, Request):
                await stream.send_all(ws.send(AcceptConnection()))
                accepted = True
        if not accepted:
            return
        self.connections += 1
        sender = _Sender(self, stream)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sender.run, nursery.cancel_scope)
            try:
                while True:
                    data = await stream.receive_some(65536)
                    if not data:
                        break
                    ws.receive_data(data)
                    for event in ws.events():
                        if isinstance(event, TextMessage):
                            sender.command(event.data)
                        elif isinstance(event, Ping):
                            sender.control.append(ws.send(event.response()))
                            sender.wake.set()
                        elif isinstance(event, CloseConnection):
                            nursery.cancel_scope.cancel()
                            return
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                pass
            nursery.cancel_scope.cancel()


class _Sub:
    """One market on one connection: which kinds, and the next template frame to send."""

    __slots__ = ("depth", "market", "next", "trade")

    def __init__(self, market: Market, next_frame: int) -> None:
        self.market = market
        self.next = next_frame
        self.depth = False
        self.trade = False


class _Sender:
    def __init__(self, server: Server, stream: trio.SocketStream) -> None:
        self.server = server
        self.stream = stream
        self.subs: dict[str, _Sub] = {}
        self.heap: list[tuple[float, int, _Sub]] = []
        self.control: list[bytes] = []
        self.wake = trio.Event()
        self._seq = 0

    def command(self, text: str) -> None:
        try:
            msg = json.loads(text)
            method = msg.get("method")
            params = msg.get("params") or []
        except (ValueError, AttributeError):
            return
        now = time.time()
        server = self.server
        for name in params:
            kind, _, symbol = str(name).partition(".")
            market = server.markets.get(symbol)
            if market is None or kind not in ("depth", "trade"):
                continue
            sub = self.subs.get(symbol)
            if method == "SUBSCRIBE":
                if sub is None:
                    server.start_market(market, now)
                    sub = _Sub(market, market.position(now, server.rate))
                    self.subs[symbol] = sub
                    self._push(sub)
                if not getattr(sub, kind):
                    server.subscribed += 1
                setattr(sub, kind, True)
            elif method == "UNSUBSCRIBE" and sub is not None:
                setattr(sub, kind, False)
        self.wake.set()

    def _push(self, sub: _Sub) -> None:
        due = sub.market.start + sub.next / self.server.rate
        self._seq += 1
        heapq.heappush(self.heap, (due, self._seq, sub))

    async def run(self, scope: trio.CancelScope) -> None:
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            await self._run()  # until the client goes away
        scope.cancel()

    async def _run(self) -> None:
        server = self.server
        template = server.template
        pieces = template.pieces
        is_trade = template.is_trade
        limit = template.frames
        rate = server.rate
        heap = self.heap
        clock = time.time
        tick = server.tick
        pop, push = heapq.heappop, heapq.heappush
        t_sep = _T_SEP
        while True:
            now = clock()
            parts: list[bytes] = []
            extend = parts.extend
            count = 0
            oldest = now
            while heap and heap[0][0] <= now:
                due, seq, sub = pop(heap)
                if due < oldest:
                    oldest = due
                j = sub.next
                if j >= limit:
                    server.exhausted += 1
                    continue
                if sub.trade if is_trade[j] else sub.depth:
                    stamp = b"%d" % int(due * 1e6)
                    head, mid1, mid2, end = pieces[j]
                    sym = sub.market.symbol
                    extend((head, stamp, t_sep, stamp, mid1, sym, mid2, sym, end))
                    count += 1
                sub.next = j + 1
                push(heap, (sub.market.start + (j + 1) / rate, seq, sub))
            if self.control:
                parts[:0] = self.control
                self.control.clear()
            if parts:
                block = b"".join(parts)
                await self.stream.send_all(block)
                server.frames += count
                server.bytes += len(block)
                server.writes += 1
                late = clock() - oldest
                if late > server.max_late:
                    server.max_late = late
            nxt = heap[0][0] if heap else now + 1.0
            wait = max(nxt - clock(), 0.0)
            # Batch about a tick of frames per write; when behind, write again at once.
            if wait > 0 or not parts:
                self.wake = trio.Event()
                with trio.move_on_after(max(wait, tick) if heap else 1.0):
                    await self.wake.wait()
            else:
                await trio.lowlevel.checkpoint()


async def serve(args: argparse.Namespace) -> None:
    t0 = time.perf_counter()
    template = Template(args.seed, args.frames)
    symbols = symbol_names(args.markets)
    server = Server(template, symbols, args.rate, args.tick)
    generated = time.perf_counter() - t0
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            functools.partial(trio.serve_tcp, server.handle, 0, host="127.0.0.1", backlog=4096)
        )
        port = listeners[0].socket.getsockname()[1]
        info = {
            "rest_url": f"http://127.0.0.1:{port}",
            "ws_url": f"ws://127.0.0.1:{port}",
            "symbols": symbols,
            "generated_s": generated,
            "template_frames": template.frames,
        }
        print(json.dumps(info), flush=True)
        stdin = trio.lowlevel.FdStream(sys.stdin.fileno())
        while await stdin.receive_some():
            pass
        nursery.cancel_scope.cancel()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.multiblaster")
    parser.add_argument("--markets", type=int, required=True)
    parser.add_argument("--rate", type=float, required=True, help="frames/s per market")
    parser.add_argument("--frames", type=int, default=20_000, help="template length")
    parser.add_argument("--tick", type=float, default=TICK)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    trio.run(serve, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
