"""The hot path like for like WITH each library's event-loop plumbing, k frames per socket read.

One client process per library (``python -m benchmarks.plumbing --client ours|ccxt``). In it, a
small server thread (plain blocking sockets) answers REST (markets, the depth snapshot of the
seeded stream) and the WebSocket handshake and subscriptions; the library connects to it over
real loopback TCP exactly as it would to Backpack:

- ours: ``open_feed`` -> our WebSocket reader -> core -> a consumer iterating ``feed.batches()``;
- ccxt.pro: ``ccxt.pro.backpack`` -> aiohttp's reader -> ``handle_message`` -> resolved futures ->
  consumers awaiting ``watch_order_book`` and ``watch_trades``.

The stream (:class:`benchmarks.blaster.FramePool`, pre-encoded) is written by the *consumer*, in a
closed loop: the next block of k frames goes onto the socket only once every frame of the
previous block has reached the consumer (last update id and trade id seen), so every socket read
the library makes returns exactly k frames, and the whole path from the read to the consumer is
paid per read. The server's part per block is one ``sendall`` of prepared bytes.

After a warm-up (snapshot, book ready) each k in ``--ks`` gets ``--frames`` frames. Between phases
the process calls ``binascii.crc_hqx``: under ``valgrind --tool=callgrind
--dump-before=*crc_hqx*`` every phase is its own dump, so instructions per frame exclude start-up.
The worker prints ``RESULT {json}`` with wall and CPU seconds per k.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import glob
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from benchmarks.blaster import FIRST_TRADE_ID, FramePool
from benchmarks.common import ccxt_market, median
from benchmarks.generator import StreamGenerator

__all__ = ["main", "run"]

ROOT = Path(__file__).resolve().parent.parent
SYMBOL = "BTC_USDC"
WARM_FRAMES = 600
_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def marker() -> None:
    """A phase boundary for callgrind (``--dump-before=*crc_hqx*``); nearly free otherwise."""
    binascii.crc_hqx(b"phase", 0)


# -- the in-process server -----------------------------------------------------------------------


class LocalServer:
    """REST + WebSocket handshake on a thread; the consumer writes the stream itself."""

    def __init__(self, snapshot: bytes) -> None:
        self.routes = {
            "/api/v1/assets": b"[]",
            "/api/v1/securities": b"[]",
            "/api/v1/trades": b"[]",
            "/api/v1/markets": json.dumps([ccxt_market(SYMBOL)]).encode(),
            "/api/v1/depth": snapshot,
        }
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.streams: set[str] = set()
        self.ready = threading.Event()
        self.ws: socket.socket | None = None
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def send(self, block: bytes) -> None:
        assert self.ws is not None
        with self.lock:
            self.ws.sendall(block)

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        buf = b""
        try:
            while True:
                while b"\r\n\r\n" not in buf:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buf += data
                end = buf.index(b"\r\n\r\n") + 4
                head, buf = buf[:end], buf[end:]
                lines = head.decode("latin-1").split("\r\n")
                target = lines[0].split(" ")[1]
                headers = {
                    k.strip().lower(): v.strip()
                    for k, _, v in (line.partition(":") for line in lines[1:] if line)
                }
                if headers.get("upgrade", "").lower() == "websocket":
                    self._websocket(conn, headers, buf)
                    return
                path = target.split("?", 1)[0]
                body = self.routes.get(path)
                status = b"200 OK" if body is not None else b"404 Not Found"
                body = body if body is not None else b'{"code":"RESOURCE_NOT_FOUND"}'
                conn.sendall(
                    b"HTTP/1.1 " + status + b"\r\ncontent-type: application/json\r\n"
                    b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body
                )
        except OSError:
            return

    def _websocket(self, conn: socket.socket, headers: dict[str, str], rest: bytes) -> None:
        key = headers["sec-websocket-key"].encode()
        accept = base64.b64encode(hashlib.sha1(key + _GUID).digest())
        conn.sendall(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n"
        )
        self.ws = conn
        buf = rest
        while True:
            while True:
                frame = _parse_client_frame(buf)
                if frame is None:
                    break
                opcode, payload, buf = frame
                if opcode == 1:
                    try:
                        params = json.loads(payload).get("params") or []
                    except ValueError:
                        params = []
                    self.streams.update(str(p) for p in params)
                    if {f"depth.{SYMBOL}", f"trade.{SYMBOL}"} <= self.streams:
                        self.ready.set()
                elif opcode == 9:
                    with self.lock:
                        conn.sendall(bytes((0x8A, len(payload))) + payload)
                elif opcode == 8:
                    return
            try:
                data = conn.recv(65536)
            except OSError:
                return
            if not data:
                return
            buf += data


def _parse_client_frame(buf: bytes) -> tuple[int, bytes, bytes] | None:
    """One masked client frame from ``buf``: (opcode, payload, rest), or None if incomplete."""
    if len(buf) < 2:
        return None
    opcode = buf[0] & 0x0F
    length = buf[1] & 0x7F
    pos = 2
    if length == 126:
        if len(buf) < 4:
            return None
        length = int.from_bytes(buf[2:4], "big")
        pos = 4
    elif length == 127:
        if len(buf) < 10:
            return None
        length = int.from_bytes(buf[2:10], "big")
        pos = 10
    masked = buf[1] & 0x80
    mask = buf[pos : pos + 4] if masked else b"\0\0\0\0"
    pos += 4 if masked else 0
    if len(buf) < pos + length:
        return None
    raw = buf[pos : pos + length]
    payload = bytes(c ^ mask[i % 4] for i, c in enumerate(raw))
    return opcode, payload, buf[pos + length :]


# -- the stream, cut into blocks -----------------------------------------------------------------


class Plan:
    """The blocks to write (warm-up, then ``frames`` per k) and the ids that end each block."""

    def __init__(self, seed: int, frames: int, ks: list[int]) -> None:
        total = WARM_FRAMES + frames * len(ks)
        self.pool = FramePool(seed, [total])
        gen = StreamGenerator(seed, first_trade_id=FIRST_TRADE_ID)
        gen.snapshot_json()
        last_u = int(json.loads(self.pool.snapshot)["lastUpdateId"])
        last_t = FIRST_TRADE_ID - 1
        marks: list[tuple[int, int]] = []
        for text in gen.frames(total):
            data = json.loads(text)["data"]
            if data["e"] == "depth":
                last_u = data["u"]
            else:
                last_t = data["t"]
            marks.append((last_u, last_t))
        stamp = int(time.time() * 1e6)
        # phases: (k, blocks, marks at the end of each block)
        self.phases: list[tuple[int, list[bytes], list[tuple[int, int]]]] = []
        start = 0
        for k, count in [(8, WARM_FRAMES), *((k, frames) for k in ks)]:
            blocks, ends = [], []
            stop = start + count
            for i in range(start, stop, k):
                j = min(i + k, stop)
                blocks.append(self.pool.block(i, j, [stamp] * (j - i)))
                ends.append(marks[j - 1])
            self.phases.append((k, blocks, ends))
            start = stop


class Driver:
    """Closed loop: the consumer calls :meth:`progress` with what it has seen."""

    def __init__(self, server: LocalServer, plan: Plan, notify: Any) -> None:
        self.server = server
        self.plan = plan
        self.phase = -1
        self.block = 0
        self.want = (0, 0)
        self.results: list[dict[str, Any]] = []
        self.done = False
        self.notify = notify
        self._t = 0.0
        self._cpu = 0.0
        self.seen_u = 0
        self.seen_t = FIRST_TRADE_ID - 1

    def start(self) -> None:
        self.phase = 0
        self.block = 0
        self._send()

    def _send(self) -> None:
        _k, blocks, ends = self.plan.phases[self.phase]
        self.want = ends[self.block]
        self.server.send(blocks[self.block])

    def progress(self, u: int, t: int) -> None:
        if u > self.seen_u:
            self.seen_u = u
        if t > self.seen_t:
            self.seen_t = t
        want_u, want_t = self.want
        if self.done or self.seen_u < want_u or self.seen_t < want_t:
            return
        k, blocks, _ends = self.plan.phases[self.phase]
        self.block += 1
        if self.block < len(blocks):
            self._send()
            return
        # Phase complete.
        now, cpu = time.perf_counter(), time.process_time()
        if self.phase > 0:
            self.results.append(
                {"k": k, "wall_s": now - self._t, "cpu_s": cpu - self._cpu, "blocks": len(blocks)}
            )
        marker()
        self._t, self._cpu = time.perf_counter(), time.process_time()
        self.phase += 1
        self.block = 0
        if self.phase < len(self.plan.phases):
            self._send()
        else:
            self.done = True
            self.notify()


# -- the two clients -----------------------------------------------------------------------------


async def _ours(cmd: dict[str, Any], server: LocalServer, plan: Plan) -> list[dict[str, Any]]:
    import trio

    from backpack_actors.config import FeedConfig
    from backpack_actors.core.events import BookDelta, BookSnapshot, Trade
    from backpack_actors.feed import open_feed

    url = f"http://127.0.0.1:{server.port}"
    config = FeedConfig.from_kwargs(
        symbols=["BTC-USDC"],
        rest_url=url,
        ws_url=f"ws://127.0.0.1:{server.port}",
        snapshot_interval=0,
    )
    finished = trio.Event()
    driver = Driver(server, plan, finished.set)
    with trio.fail_after(cmd.get("timeout", 600)):
        async with open_feed(config) as feed:
            await trio.to_thread.run_sync(server.ready.wait)
            # Our feed asks for its snapshot once the first frame is buffered.
            driver.start()
            async for events in feed.batches():
                u = t = 0
                for event in events:
                    kind = type(event)
                    if kind is BookDelta:
                        u = event.last_update_id  # type: ignore[union-attr]
                    elif kind is Trade:
                        t = event.trade_id  # type: ignore[union-attr]
                    elif kind is BookSnapshot:
                        u = max(u, event.update_id)  # type: ignore[union-attr]
                driver.progress(u, t)
                if driver.done:
                    break
    return driver.results


async def _ccxt(cmd: dict[str, Any], server: LocalServer, plan: Plan) -> list[dict[str, Any]]:
    import ccxt.pro

    rest = f"http://127.0.0.1:{server.port}"
    ws = f"ws://127.0.0.1:{server.port}"
    exchange = ccxt.pro.backpack(
        {
            "urls": {"api": {"public": rest, "private": rest, "ws": {"public": ws, "private": ws}}},
            "options": {"watchOrderBook": {"snapshotDelay": 0}},
        }
    )
    loop = asyncio.get_running_loop()
    finished = asyncio.Event()
    driver = Driver(server, plan, finished.set)
    try:
        await exchange.load_markets()
        symbol = exchange.safe_symbol(SYMBOL)

        async def books() -> None:
            while not driver.done:
                book = await exchange.watch_order_book(symbol)
                if driver.phase >= 0:
                    driver.progress(book["nonce"], 0)

        async def trades() -> None:
            while not driver.done:
                got = await exchange.watch_trades(symbol)
                if driver.phase >= 0:
                    driver.progress(0, int(got[-1]["id"]))

        async def kick() -> None:
            await loop.run_in_executor(None, server.ready.wait)
            # The first delta makes ccxt fetch its snapshot (snapshotDelay 0); the warm-up
            # blocks are consumed once the book is live.
            driver.start()

        tasks = [asyncio.ensure_future(c) for c in (books(), trades(), kick())]
        await asyncio.wait_for(finished.wait(), cmd.get("timeout", 600))
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        await exchange.close()
    return driver.results


def _client_main(kind: str, cmd: dict[str, Any]) -> int:
    plan = Plan(cmd["seed"], cmd["frames"], cmd["ks"])
    server = LocalServer(plan.pool.snapshot)
    if kind == "ours":
        import trio

        results = trio.run(_ours, cmd, server, plan)
    else:
        results = asyncio.run(_ccxt(cmd, server, plan))
    for r in results:
        r["frames"] = cmd["frames"]
    print("RESULT " + json.dumps(results), flush=True)
    os._exit(0)  # the server threads are daemons blocked in recv


# -- driver side ---------------------------------------------------------------------------------


def _client(kind: str, cmd: dict[str, Any], *, valgrind_out: str | None = None) -> Any:
    command = [
        sys.executable,
        "-m",
        "benchmarks.plumbing",
        "--client",
        kind,
        "--cmd",
        json.dumps(cmd),
    ]
    if valgrind_out is not None:
        command = [
            "valgrind",
            "--tool=callgrind",
            f"--callgrind-out-file={valgrind_out}",
            "--dump-before=*crc_hqx*",
            *command,
        ]
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=3000)
    for line in done.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    tail = " | ".join((done.stderr or "").strip().splitlines()[-6:])
    raise RuntimeError(f"plumbing {kind} client exited {done.returncode}: {tail}")


def _callgrind_parts(prefix: str) -> list[int]:
    """Instructions of each dump part (``prefix.1``, ``prefix.2``, ... in order)."""
    parts = []
    for path in sorted(glob.glob(prefix + ".*"), key=lambda p: int(p.rsplit(".", 1)[1])):
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("summary:") or line.startswith("totals:"):
                    parts.append(int(line.split()[1]))
                    break
    return parts


def _callgrind(kind: str, cmd: dict[str, Any]) -> dict[int, float]:
    """Instructions per frame per k under callgrind (one process; a dump per phase)."""
    with tempfile.TemporaryDirectory() as tmp:
        prefix = str(Path(tmp) / "cg.out")
        _client(kind, cmd, valgrind_out=prefix)
        parts = _callgrind_parts(prefix)
    # Dump 1 = start-up + warm-up, then one dump per k (the marker after each phase).
    ks = cmd["ks"]
    if len(parts) != 1 + len(ks):
        raise RuntimeError(f"callgrind gave {len(parts)} phase dumps, want {1 + len(ks)}")
    return {k: parts[1 + i] / cmd["frames"] for i, k in enumerate(ks)}


def run(*, frames: int, reps: int, ks: list[int], cg_frames: int, seed: int = 1) -> dict[str, Any]:
    """Paired wall runs (``reps``, interleaved) and one callgrind run per library."""
    walls: dict[str, dict[int, list[float]]] = {"ours": {}, "ccxt": {}}
    cpus: dict[str, dict[int, list[float]]] = {"ours": {}, "ccxt": {}}
    cmd = {"seed": seed, "frames": frames, "ks": ks}
    for rep in range(reps):
        order = ("ours", "ccxt") if rep % 2 == 0 else ("ccxt", "ours")
        for kind in order:
            for r in _client(kind, cmd):
                walls[kind].setdefault(r["k"], []).append(r["wall_s"] / frames * 1e6)
                cpus[kind].setdefault(r["k"], []).append(r["cpu_s"] / frames * 1e6)
        print(
            f"  plumbing rep {rep + 1}/{reps}: "
            + ", ".join(
                f"k={k} ours {walls['ours'][k][-1]:.1f} ccxt {walls['ccxt'][k][-1]:.1f} us/frame"
                for k in ks
            ),
            flush=True,
        )
    out: dict[str, Any] = {"frames": frames, "reps": reps, "ks": ks, "rows": []}
    instr: dict[str, dict[int, float]] = {}
    if cg_frames and shutil.which("valgrind"):
        cg_cmd = {"seed": seed, "frames": cg_frames, "ks": ks, "timeout": 2400}
        # The two callgrind runs in parallel: instruction counts do not depend on load.
        import concurrent.futures

        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            futures = {kind: pool.submit(_callgrind, kind, cg_cmd) for kind in ("ours", "ccxt")}
            for kind, fut in futures.items():
                try:
                    instr[kind] = fut.result()
                except (RuntimeError, subprocess.TimeoutExpired) as exc:
                    out.setdefault("callgrind_errors", []).append(f"{kind}: {exc}")
        out["cg_frames"] = cg_frames
    elif cg_frames:
        out["callgrind_errors"] = ["valgrind not found"]
    for k in ks:
        ratios = [c / o for o, c in zip(walls["ours"][k], walls["ccxt"][k], strict=True)]
        row = {
            "k": k,
            "ours_us": median(walls["ours"][k]),
            "ccxt_us": median(walls["ccxt"][k]),
            "ours_cpu_us": median(cpus["ours"][k]),
            "ccxt_cpu_us": median(cpus["ccxt"][k]),
            "ratios": ratios,
            "ratio": median(ratios),
        }
        if "ours" in instr and "ccxt" in instr:
            row["ours_instr"] = instr["ours"][k]
            row["ccxt_instr"] = instr["ccxt"][k]
            row["instr_ratio"] = instr["ccxt"][k] / instr["ours"][k]
        out["rows"].append(row)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.plumbing")
    parser.add_argument("--client", choices=("ours", "ccxt"))
    parser.add_argument("--cmd")
    parser.add_argument("--frames", type=int, default=20_000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--ks", default="1,4,64")
    parser.add_argument("--callgrind-frames", type=int, default=10_000)
    args = parser.parse_args(argv)
    if args.client:
        return _client_main(args.client, json.loads(args.cmd))
    ks = [int(x) for x in args.ks.split(",")]
    result = run(frames=args.frames, reps=args.reps, ks=ks, cg_frames=args.callgrind_frames)
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
