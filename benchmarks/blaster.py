"""A fast local Backpack stand-in for the end-to-end benchmarks (run in its own process).

``python -m benchmarks.blaster --frames N1,N2,...`` generates one seeded stream
(:class:`~benchmarks.generator.StreamGenerator`, ``BTC_USDC``) of ``max(N)`` frames, pre-encodes
every frame as a WebSocket frame, listens on ``127.0.0.1:0`` and prints
``{"rest_url": ..., "ws_url": ..., "generated_s": ...}`` as one JSON line. It serves until stdin
closes.

WebSocket (any path): the query ``rate``, ``frames``, ``warm``, ``tick`` and ``tag`` set the run.
After the client's first text message (its SUBSCRIBE, content ignored) the server sends frames
``0..frames`` from the start of the stream: the first ``warm`` at ``min(rate, 4000)`` per second,
the rest at ``rate`` per second, in one socket write per ``tick`` (default 5 ms) of frames. ``E``
of every frame is rewritten to the wall-clock time (µs) the frame was *due*, so
``receive time - E`` also counts any delay a full socket causes. ``rate=0`` sends everything as
fast as possible and then closes (the server's own ceiling). Every connection starts a fresh copy
of the same stream, so the depth snapshot is always the stream's initial one (``lastUpdateId`` =
first ``U`` - 1).

REST (HTTP/1.1 GETs, keep-alive; h11 parses each request head): ``/api/v1/assets`` and
``/api/v1/securities`` (``[]``), ``/api/v1/markets``, ``/api/v1/depth``, ``/api/v1/trades``
(``[]``); for the benchmark driver ``/bench/truth?frames=N`` (the exact book and last ids after the
first N frames, N one of the checkpoints) and ``/bench/stats?tag=T`` (what the sender did for that
connection).
"""

from __future__ import annotations

import argparse
import functools
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
from benchmarks.generator import GroundTruth, StreamGenerator

__all__ = ["FIRST_TRADE_ID", "WARM_RATE", "FramePool", "main", "schedule_seconds"]

FIRST_TRADE_ID = 10_782_548
WARM_RATE = 4000.0
"""Frames per second of the warm-up prefix (lets each client load its snapshot unhurried)."""
TICK = 0.005
MAX_BLOCK = 4096
E_PREFIX = b'{"data":{"E":'
E_DIGITS = 16


def schedule_seconds(rate: float, frames: int, warm: int) -> float:
    """How long the server takes to offer ``frames`` (``warm`` of them at the warm-up rate)."""
    warm_rate = min(rate, WARM_RATE)
    return warm / warm_rate + max(frames - warm, 0) / rate


def _ws_header(length: int) -> bytes:
    if length < 126:
        return bytes((0x81, length))
    if length < 65536:
        return bytes((0x81, 126)) + length.to_bytes(2, "big")
    return bytes((0x81, 127)) + length.to_bytes(8, "big")


def _truth_json(truth: GroundTruth, frames: int, snapshot_update_id: int) -> bytes:
    def side(levels: dict[Any, Any]) -> list[list[str]]:
        return [[str(p), str(s)] for p, s in sorted(levels.items())]

    return json.dumps(
        {
            "frames": frames,
            "bids": side(truth.bids),
            "asks": side(truth.asks),
            "last_update_id": truth.last_update_id,
            "last_trade_id": truth.last_trade_id,
            "first_trade_id": FIRST_TRADE_ID,
            "snapshot_update_id": snapshot_update_id,
            "depth_frames": truth.depth_frames,
            "trade_frames": truth.trade_frames,
        },
        separators=(",", ":"),
    ).encode()


class FramePool:
    """The pre-encoded stream: per frame the bytes before and after the 16 digits of ``E``."""

    def __init__(self, seed: int, checkpoints: list[int]) -> None:
        gen = StreamGenerator(seed, first_trade_id=FIRST_TRADE_ID)
        self.snapshot = gen.snapshot_json().encode()
        snapshot_update_id = int(json.loads(self.snapshot)["lastUpdateId"])
        self.heads: list[bytes] = []
        self.tails: list[bytes] = []
        self.truths: dict[int, bytes] = {}
        for point in sorted(set(checkpoints)):
            for text in gen.frames(point - len(self.heads)):
                raw = text.encode()
                if not raw.startswith(E_PREFIX) or raw[len(E_PREFIX) + E_DIGITS] != ord(","):
                    raise ValueError(f"frame without a 16-digit leading E: {text[:60]}")
                self.heads.append(_ws_header(len(raw)) + E_PREFIX)
                self.tails.append(raw[len(E_PREFIX) + E_DIGITS :])
            self.truths[point] = _truth_json(gen.truth(), point, snapshot_update_id)

    def block(self, start: int, stop: int, stamps: list[int]) -> bytes:
        """Frames ``start..stop`` as one write, ``E`` set from ``stamps`` (one per frame)."""
        heads, tails = self.heads, self.tails
        parts: list[bytes] = []
        append = parts.append
        for i, stamp in zip(range(start, stop), stamps, strict=True):
            append(heads[i])
            append(b"%d" % stamp)
            append(tails[i])
        return b"".join(parts)


class _Plan:
    """When each frame of one connection is due (wall-clock seconds)."""

    def __init__(self, t0: float, rate: float, warm: int) -> None:
        self.t0 = t0
        self.rate = rate
        self.warm = warm
        self.warm_rate = min(rate, WARM_RATE)
        self.warm_end = t0 + warm / self.warm_rate

    def due(self, i: int) -> float:
        if i < self.warm:
            return self.t0 + i / self.warm_rate
        return self.warm_end + (i - self.warm) / self.rate

    def count_due(self, now: float) -> int:
        """How many frames are due at ``now`` (frame ``i`` is due at ``due(i)``)."""
        if now < self.warm_end:
            return min(self.warm, int((now - self.t0) * self.warm_rate) + 1)
        return self.warm + int((now - self.warm_end) * self.rate) + 1

    def stamps(self, start: int, stop: int) -> list[int]:
        return [int(self.due(i) * 1e6) for i in range(start, stop)]


class Blaster:
    """The server: one trio task per TCP connection."""

    def __init__(self, pool: FramePool) -> None:
        self.pool = pool
        self.stats: dict[str, dict[str, float]] = {}
        markets = [ccxt_market("BTC_USDC")]
        self.routes: dict[str, bytes] = {
            "/api/v1/assets": b"[]",
            "/api/v1/securities": b"[]",
            "/api/v1/trades": b"[]",
            "/api/v1/markets": json.dumps(markets).encode(),
            "/api/v1/depth": pool.snapshot,
        }

    async def handle(self, stream: trio.SocketStream) -> None:
        try:
            await self._serve(stream)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError, h11.ProtocolError):
            # The client went away (the benchmark ends each run by dropping its connection).
            return
        finally:
            await trio.aclose_forcefully(stream)

    async def _serve(self, stream: trio.SocketStream) -> None:
        """HTTP/1.1 keep-alive GETs until one asks for a WebSocket upgrade.

        aiohttp (ccxt.pro) reuses a pooled REST connection for ``ws_connect``, so any request on
        a connection may be the upgrade.
        """
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

    # -- REST ----------------------------------------------------------------------------------

    def _route(self, target: str) -> tuple[int, bytes]:
        parts = urlsplit(target)
        query = parse_qs(parts.query)
        if parts.path in self.routes:
            return 200, self.routes[parts.path]
        if parts.path == "/bench/truth":
            body = self.pool.truths.get(int(query.get("frames", ["0"])[0]))
            if body is not None:
                return 200, body
        if parts.path == "/bench/stats":
            stats = self.stats.get(query.get("tag", [""])[0])
            if stats is not None:
                return 200, json.dumps(stats).encode()
        print(f"blaster: 404 for {target}", file=sys.stderr, flush=True)
        return 404, b'{"code":"RESOURCE_NOT_FOUND","message":"Not found"}'

    # -- WebSocket -----------------------------------------------------------------------------

    async def _websocket(self, stream: trio.SocketStream, buf: bytes) -> None:
        ws = WSConnection(ConnectionType.SERVER)
        ws.receive_data(buf)
        target = None
        for event in ws.events():
            if isinstance(event, Request):
                target = event.target
                await stream.send_all(ws.send(AcceptConnection()))
        if target is None:
            return
        query = {k: v[0] for k, v in parse_qs(urlsplit(target).query).items()}
        rate = float(query.get("rate", "2000"))
        frames = min(int(query.get("frames", "0")) or len(self.pool.heads), len(self.pool.heads))
        warm = min(int(query.get("warm", "0")), frames)
        tag = query.get("tag", "")
        tick = float(query.get("tick", str(TICK)))
        subscribed = trio.Event()
        pongs: list[bytes] = []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._reader, stream, ws, subscribed, pongs, nursery.cancel_scope)
            await subscribed.wait()
            if rate <= 0:
                await self._send_max(stream, frames, tag)
                nursery.cancel_scope.cancel()
                return
            plan = _Plan(time.time(), rate, warm)
            await self._send_paced(stream, plan, frames, tag, pongs, tick)
            while True:
                await trio.sleep(0.05)
                await self._flush(stream, pongs)

    async def _reader(
        self,
        stream: trio.SocketStream,
        ws: WSConnection,
        subscribed: trio.Event,
        pongs: list[bytes],
        scope: trio.CancelScope,
    ) -> None:
        try:
            while True:
                data = await stream.receive_some(65536)
                if not data:
                    break
                ws.receive_data(data)
                for event in ws.events():
                    if isinstance(event, TextMessage):
                        subscribed.set()
                    elif isinstance(event, Ping):
                        pongs.append(ws.send(event.response()))
                    elif isinstance(event, CloseConnection):
                        scope.cancel()
                        return
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
        scope.cancel()

    @staticmethod
    async def _flush(stream: trio.SocketStream, pongs: list[bytes]) -> None:
        while pongs:
            await stream.send_all(pongs.pop(0))

    async def _send_paced(
        self,
        stream: trio.SocketStream,
        plan: _Plan,
        frames: int,
        tag: str,
        pongs: list[bytes],
        tick: float,
    ) -> None:
        pool = self.pool
        clock = time.time
        sent = 0
        writes = 0
        max_slip = 0.0
        cpu0 = time.process_time()
        while sent < frames:
            upto = min(frames, plan.count_due(clock()), sent + MAX_BLOCK)
            if upto > sent:
                await stream.send_all(pool.block(sent, upto, plan.stamps(sent, upto)))
                writes += 1
                max_slip = max(max_slip, clock() - plan.due(upto - 1))
                sent = upto
                await self._flush(stream, pongs)
            if sent < frames:
                wait = plan.due(sent) - clock()
                # Batch about a tick of frames per write; when behind, write again at once.
                await trio.sleep(max(wait, tick) if wait > -tick else 0)
        self.stats[tag] = {
            "frames": sent,
            "writes": writes,
            "max_slip_ms": 1e3 * max_slip,
            "seconds": clock() - plan.t0,
            "cpu_s": time.process_time() - cpu0,
        }

    async def _send_max(self, stream: trio.SocketStream, frames: int, tag: str) -> None:
        pool = self.pool
        start = time.time()
        cpu0 = time.process_time()
        sent = 0
        total = 0
        while sent < frames:
            upto = min(frames, sent + 2048)
            stamp = int(time.time() * 1e6)
            block = pool.block(sent, upto, [stamp] * (upto - sent))
            await stream.send_all(block)
            total += len(block)
            sent = upto
        seconds = time.time() - start
        self.stats[tag] = {
            "frames": sent,
            "bytes": total,
            "seconds": seconds,
            "frames_per_s": sent / seconds,
            "cpu_s": time.process_time() - cpu0,
        }


async def serve(seed: int, checkpoints: list[int]) -> None:
    """Generate the pool, listen, print the URLs; serve until stdin closes."""
    start = time.perf_counter()
    pool = FramePool(seed, checkpoints)
    generated = time.perf_counter() - start
    blaster = Blaster(pool)
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            functools.partial(trio.serve_tcp, blaster.handle, 0, host="127.0.0.1")
        )
        port = listeners[0].socket.getsockname()[1]
        info = {
            "rest_url": f"http://127.0.0.1:{port}",
            "ws_url": f"ws://127.0.0.1:{port}",
            "generated_s": generated,
            "frames": len(pool.heads),
        }
        print(json.dumps(info), flush=True)
        stdin = trio.lowlevel.FdStream(sys.stdin.fileno())
        while await stdin.receive_some():
            pass
        nursery.cancel_scope.cancel()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.blaster")
    parser.add_argument("--frames", required=True, help="checkpoints: frame counts, a,b,c")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    checkpoints = [int(x) for x in args.frames.split(",") if x]
    trio.run(serve, args.seed, checkpoints)
    return 0


if __name__ == "__main__":
    sys.exit(main())
