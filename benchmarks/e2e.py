"""End to end over loopback against :mod:`benchmarks.blaster`: sustained rate, latency, startup.

Three processes: the blaster (server), and one long-lived worker per client
(``python -m benchmarks.e2e --client ours|ccxt``) that runs one connection per command read from
stdin and prints ``RESULT {json}``. Each run connects afresh and gets the same seeded stream from
its start at the offered rate; the worker checks everything it got against the blaster's ground
truth for exactly the frames sent:

- ours (``open_feed``): every ``BookDelta`` continues the previous one (``first`` = previous
  ``last`` + 1, from the first ``BookSnapshot``), every trade id in order from the first, no
  status event but ``book_ready``, no conflation, drop, gap or resync in ``statistics()``, last
  ids reached, final book equal to the ground truth.
- ccxt.pro (``watch_order_book`` + ``watch_trades``, ``snapshotDelay`` 0): every frame handed to
  ``handle_message``, every trade id delivered by ``watch_trades`` in order, book nonce at the last
  ``u``, final (float) book equal to the ground truth.

Lag is delivery to the consumer − ``E`` (the frame's due time at the server), over the frames
after the warm-up. Latency is delivery − receipt: ours stamps ``received_at`` when a socket read
completes; for ccxt.pro the worker stamps each message when aiohttp hands it to ccxt's client
(before ccxt's JSON parse) and a frame counts as delivered when a ``watch_*`` call returns with it.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import cProfile
import io
import json
import os
import pstats
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import trio

from benchmarks.blaster import schedule_seconds
from benchmarks.common import BenchmarkFailure, check_book
from benchmarks.report import Report

__all__ = ["E2EConfig", "main", "run"]

SYMBOL = "BTC_USDC"
LAG_LIMIT_MS = 250.0
GRACE_S = 1.0
"""A run is incomplete if its last frame is not delivered this long after it was due."""
ROOT = Path(__file__).resolve().parent.parent
FRAME_GRID = 10_000


@dataclass(frozen=True)
class E2EConfig:
    """The schedule of one e2e benchmark run."""

    rates: tuple[int, ...]
    step_seconds: float
    max_step_frames: int
    warm: int = 2000
    latency_rate: int = 2000
    latency_seconds: float = 5.0
    latency_reps: int = 2
    tick: float = 0.005
    """Seconds of frames per server write on the ladder (the server is never the bottleneck)."""
    latency_tick: float = 0.0005
    """At the fixed load, a write per frame or two (the sleep resolution is about 1 ms)."""
    attempts: int = 2
    refine: int = 2
    profile_frames: int = 60_000
    extra: dict[str, Any] = field(default_factory=dict)

    def step_frames(self, rate: int) -> int:
        """Frames of a run at ``rate``: the warm-up, then ``step_seconds`` rounded up to a grid."""
        grid = -(-int(rate * self.step_seconds) // FRAME_GRID) * FRAME_GRID
        return self.warm + min(grid, self.max_step_frames)

    def checkpoints(self) -> list[int]:
        """Every frame count a run may use (the server computes the ground truth at each)."""
        grid = range(FRAME_GRID, self.max_step_frames + 1, FRAME_GRID)
        return [self.warm, self.latency_frames, *(self.warm + n for n in grid)]

    @property
    def latency_frames(self) -> int:
        return self.warm + int(self.latency_rate * self.latency_seconds)


FULL = E2EConfig(
    rates=(5000, 10_000, 15_000, 20_000, 25_000, 30_000, 40_000, 50_000, 60_000, 80_000, 120_000),
    step_seconds=2.5,
    max_step_frames=150_000,
)
QUICK = E2EConfig(
    rates=(5000, 10_000, 20_000, 40_000, 80_000),
    step_seconds=1.0,
    max_step_frames=60_000,
    latency_seconds=2.0,
    latency_reps=1,
    attempts=1,
    refine=1,
    profile_frames=30_000,
)


# -- worker side ---------------------------------------------------------------------------------


def _get_json(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=10) as response:
        data: dict[str, Any] = json.loads(response.read())
    return data


def _ws_url(cmd: dict[str, Any]) -> str:
    return (
        f"{cmd['ws_url']}/?rate={cmd['rate']}&frames={cmd['frames']}"
        f"&warm={cmd['warm']}&tick={cmd['tick']}&tag={cmd['tag']}"
    )


def _pct(values: list[float], points: tuple[float, ...]) -> list[float]:
    """Nearest-rank percentiles (NaN for no samples)."""
    if not values:
        return [float("nan")] * len(points)
    ordered = sorted(values)
    n = len(ordered)
    return [ordered[min(n - 1, max(0, round(p / 100 * n) - 1))] for p in points]


class _Run:
    """What one client run saw: checks, lag and latency samples (target phase only)."""

    def __init__(self, cmd: dict[str, Any]) -> None:
        base = cmd["rest_url"]
        self.cmd = cmd
        self.truth = _get_json(f"{base}/bench/truth?frames={cmd['frames']}")
        warm = _get_json(f"{base}/bench/truth?frames={cmd['warm']}")
        self.warm_uid: int = warm["last_update_id"]
        self.warm_tid: int = warm["last_trade_id"]
        self.last_uid: int = self.truth["last_update_id"]
        self.last_tid: int = self.truth["last_trade_id"]
        self.next_tid: int = self.truth["first_trade_id"]
        self.deadline = schedule_seconds(cmd["rate"], cmd["frames"], cmd["warm"]) + GRACE_S
        self.problems: list[str] = []
        self.lags: list[float] = []
        self.lats: list[float] = []
        self.deltas = 0
        self.trades = 0
        self.ready_ms = float("nan")
        self.cpu_s = 0.0
        self.wall_s = 0.0
        self.wrong_book = False
        self.complete = False

    def problem(self, text: str) -> None:
        if len(self.problems) < 6:
            self.problems.append(text)

    def trade(self, trade_id: int) -> None:
        if trade_id != self.next_tid:
            self.problem(f"trade {trade_id} delivered, expected {self.next_tid}")
        self.next_tid = trade_id + 1
        self.trades += 1

    def truth_sides(self) -> tuple[dict[Decimal, Decimal], dict[Decimal, Decimal]]:
        def side(levels: list[list[str]]) -> dict[Decimal, Decimal]:
            return {Decimal(p): Decimal(s) for p, s in levels}

        return side(self.truth["bids"]), side(self.truth["asks"])

    def check_book(
        self, path: str, bids: dict[Any, Any], asks: dict[Any, Any], *, floats: bool
    ) -> None:
        want_bids, want_asks = self.truth_sides()
        if floats:
            want_bids = {float(p): float(s) for p, s in want_bids.items()}  # type: ignore[misc]
            want_asks = {float(p): float(s) for p, s in want_asks.items()}  # type: ignore[misc]
        try:
            check_book(path, bids, asks, want_bids, want_asks)
        except BenchmarkFailure as exc:
            self.wrong_book = True
            self.problem(str(exc))

    def result(self, extra: dict[str, Any]) -> dict[str, Any]:
        lag = _pct(self.lags, (50, 99, 100))
        lat = _pct(self.lats, (50, 99, 99.9))
        expected = self.truth["depth_frames"] + self.truth["trade_frames"]
        ok = self.complete and not self.problems and lag[1] * 1e3 < LAG_LIMIT_MS
        return {
            "ok": ok,
            "complete": self.complete,
            "wrong_book": self.wrong_book,
            "problems": self.problems,
            "frames": expected,
            "deltas": self.deltas,
            "trades": self.trades,
            "lag_ms": [1e3 * x for x in lag],
            "lat_us": [1e6 * x for x in lat],
            "samples": len(self.lats),
            "ready_ms": self.ready_ms,
            "cpu_s": self.cpu_s,
            "wall_s": self.wall_s,
            **extra,
        }


async def _ours(cmd: dict[str, Any]) -> dict[str, Any]:
    from backpack_actors.config import FeedConfig
    from backpack_actors.core.events import BookDelta, BookSnapshot, StatusEvent, StatusKind, Trade
    from backpack_actors.feed import open_feed

    run = _Run(cmd)
    config = FeedConfig(
        symbols=("BTC-USDC",),
        rest_url=cmd["rest_url"],
        ws_url=_ws_url(cmd),
        snapshot_interval=0,
    )
    profiler = cProfile.Profile() if cmd.get("profile") else None
    next_uid = -1
    warm_uid, warm_tid, last_uid, last_tid = run.warm_uid, run.warm_tid, run.last_uid, run.last_tid
    lags, lats = run.lags, run.lats
    clock = time.time
    extra: dict[str, Any] = {}
    with trio.fail_after(run.deadline + 30):
        async with open_feed(config) as feed:
            entered = time.perf_counter()
            cpu0 = time.process_time()
            if profiler is not None:
                profiler.enable()
            with trio.move_on_after(run.deadline):
                async for event in feed:
                    now = clock()
                    kind = type(event)
                    if kind is BookDelta:
                        assert isinstance(event, BookDelta)
                        if event.first_update_id != next_uid:
                            run.problem(f"delta {event.first_update_id}, expected {next_uid}")
                        next_uid = event.last_update_id + 1
                        run.deltas += 1
                        if event.first_update_id > warm_uid:
                            lags.append(now - event.event_time_us / 1e6)
                            lats.append(now - event.received_at)
                    elif kind is Trade:
                        assert isinstance(event, Trade)
                        run.trade(event.trade_id)
                        if event.trade_id > warm_tid:
                            lags.append(now - event.event_time_us / 1e6)
                            lats.append(now - event.received_at)
                    elif kind is BookSnapshot:
                        assert isinstance(event, BookSnapshot)
                        if next_uid < 0:
                            next_uid = event.update_id + 1
                            run.ready_ms = 1e3 * (time.perf_counter() - entered)
                        else:
                            run.problem(f"unexpected snapshot ({event.reason})")
                    elif not (
                        isinstance(event, StatusEvent) and event.kind is StatusKind.BOOK_READY
                    ):
                        run.problem(f"unexpected event {event!r:.120}")
                    if next_uid > last_uid and run.next_tid > last_tid:
                        run.complete = True
                        break
            if profiler is not None:
                profiler.disable()
                profiler.dump_stats(cmd["profile"])
            run.cpu_s = time.process_time() - cpu0
            run.wall_s = time.perf_counter() - entered
            stats = feed.statistics()
            extra["stats"] = _ours_stats(stats, run)
            if run.complete:
                bids, asks = feed.book("BTC-USDC").as_dicts()
                run.check_book("ours", bids, asks, floats=False)
    if not run.complete:
        run.problem(
            f"incomplete {run.deadline:.1f} s after start: book at {next_uid - 1}"
            f" of {last_uid}, trade {run.next_tid - 1} of {last_tid}"
        )
    return run.result(extra)


def _ours_stats(stats: dict[str, Any], run: _Run) -> dict[str, Any]:
    """The counters that must stay zero for a lossless run; problems recorded on ``run``.

    Tolerant of the shape of ``statistics()`` (it changes as the library is reshaped).
    """
    from benchmarks.scale import health_counts

    queue = stats.get("queue") or {}
    conflated = queue.get("conflated") or 0
    if isinstance(conflated, dict):
        conflated = sum(conflated.values())
    if conflated or queue.get("dropped"):
        run.problem(f"queue conflated {conflated} dropped {queue.get('dropped')}")
    health = health_counts(stats)
    if any(health.values()):
        run.problem(f"health counters {health}")
    for sym, s in (stats.get("streams") or {}).items():
        if isinstance(s, dict) and (s.get("decode_errors") or s.get("mode", "ws") != "ws"):
            run.problem(f"stream {sym}: {s}")
    book = stats.get("reconciler", {}).get("symbols", {}).get(SYMBOL, {}).get("book", {})
    bad = {
        k: v
        for k, v in book.items()
        if v and k in ("gaps", "buffer_gaps", "buffer_overflows", "resyncs", "crossed")
    }
    if bad:
        run.problem(f"book sync counters {bad}")
    return {"max_queue": queue.get("max_depth"), "producer_waits": queue.get("producer_waits")}


async def _ccxt(cmd: dict[str, Any]) -> dict[str, Any]:
    import ccxt.pro

    run = _Run(cmd)
    rest, ws = cmd["rest_url"], _ws_url(cmd)
    exchange = ccxt.pro.backpack(
        {
            "urls": {"api": {"public": rest, "private": rest, "ws": {"public": ws, "private": ws}}},
            "options": {"watchOrderBook": {"snapshotDelay": 0}},
        }
    )
    pending: collections.deque[tuple[int, int, float]] = collections.deque()
    trade_stamps: dict[int, tuple[int, float]] = {}
    handled = [0]
    stamp = [0.0]
    clock = time.time
    warm_uid, warm_tid, last_uid, last_tid = run.warm_uid, run.warm_tid, run.last_uid, run.last_tid
    lags, lats = run.lags, run.lats
    try:
        await exchange.load_markets()
        loaded = time.perf_counter()
        cpu0 = time.process_time()
        symbol = exchange.safe_symbol(SYMBOL)
        client = exchange.client(ws)
        text_handler = client.handle_text_or_binary_message
        on_message = client.on_message_callback

        def stamped(data: Any) -> None:
            stamp[0] = clock()
            text_handler(data)

        def counting(c: Any, message: Any) -> None:
            data = message.get("data") if isinstance(message, dict) else None
            if data is not None:
                e = data.get("e")
                if e == "depth":
                    handled[0] += 1
                    pending.append((data["u"], data["E"], stamp[0]))
                elif e == "trade":
                    handled[0] += 1
                    trade_stamps[data["t"]] = (data["E"], stamp[0])
            on_message(c, message)

        client.handle_text_or_binary_message = stamped
        client.on_message_callback = counting

        async def books() -> None:
            while True:
                book = await exchange.watch_order_book(symbol)
                now = clock()
                if run.ready_ms != run.ready_ms:
                    run.ready_ms = 1e3 * (time.perf_counter() - loaded)
                nonce = book["nonce"]
                while pending and pending[0][0] <= nonce:
                    u, e, received = pending.popleft()
                    run.deltas += 1
                    if u > warm_uid:
                        lags.append(now - e / 1e6)
                        lats.append(now - received)
                if nonce >= last_uid:
                    return

        async def trades() -> None:
            while True:
                got = await exchange.watch_trades(symbol)
                now = clock()
                for trade in got:
                    tid = int(trade["id"])
                    run.trade(tid)
                    e, received = trade_stamps.pop(tid, (0, 0.0))
                    if tid > warm_tid:
                        lags.append(now - e / 1e6)
                        lats.append(now - received)
                if run.next_tid > last_tid:
                    return

        try:
            await asyncio.wait_for(asyncio.gather(books(), trades()), run.deadline)
            run.complete = True
        except TimeoutError:
            run.problem(
                f"incomplete {run.deadline:.1f} s after start: {handled[0]} of"
                f" {run.truth['depth_frames'] + run.truth['trade_frames']} frames handled,"
                f" trade {run.next_tid - 1} of {last_tid}"
            )
        run.cpu_s = time.process_time() - cpu0
        run.wall_s = time.perf_counter() - loaded
        if run.complete:
            book = exchange.orderbooks[symbol]
            if book["nonce"] != last_uid:
                run.problem(f"book nonce {book['nonce']}, want {last_uid}")
            frames = run.truth["depth_frames"] + run.truth["trade_frames"]
            if handled[0] != frames:
                run.problem(f"{handled[0]} frames handled of {frames}")
            bids = {price: size for price, size in book["bids"]}
            asks = {price: size for price, size in book["asks"]}
            run.check_book("ccxt.pro", bids, asks, floats=True)
    finally:
        await exchange.close()
    return run.result({})


def _worker(kind: str) -> int:
    """Serve run commands from stdin, one ``RESULT {json}`` line each."""
    for line in sys.stdin:
        if not line.strip():
            continue
        cmd = json.loads(line)
        try:
            result = trio.run(_ours, cmd) if kind == "ours" else asyncio.run(_ccxt(cmd))
        except (OSError, trio.TooSlowError, RuntimeError, ValueError, KeyError) as exc:
            # Reported to the driver as a failed run; the worker stays up for the next command.
            result = {"ok": False, "complete": False, "wrong_book": False, "crashed": repr(exc)}
            result["problems"] = [f"crashed: {exc!r}"]
        print("RESULT " + json.dumps(result), flush=True)
    return 0


# -- driver side ---------------------------------------------------------------------------------


class _Worker:
    def __init__(self, kind: str) -> None:
        self.kind = kind
        command = [sys.executable, "-m", "benchmarks.e2e", "--client", kind]
        self.proc = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT
        )

    def run(self, cmd: dict[str, Any]) -> dict[str, Any]:
        stdin, stdout = self.proc.stdin, self.proc.stdout
        assert stdin is not None
        assert stdout is not None
        stdin.write(json.dumps(cmd) + "\n")
        stdin.flush()
        for line in stdout:
            if line.startswith("RESULT "):
                result: dict[str, Any] = json.loads(line[len("RESULT ") :])
                if result.get("wrong_book"):
                    raise BenchmarkFailure(f"{self.kind} at {cmd['rate']}/s: {result['problems']}")
                return result
        raise RuntimeError(f"the {self.kind} worker exited (code {self.proc.wait()})")

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@contextmanager
def _blaster(checkpoints: list[int], seed: int) -> Iterator[dict[str, Any]]:
    points = ",".join(str(n) for n in sorted(set(checkpoints)))
    command = [sys.executable, "-m", "benchmarks.blaster", "--frames", points, "--seed", str(seed)]
    proc = subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError("the blaster exited before printing its URLs")
        yield json.loads(line)
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _raw_reader(urls: dict[str, Any], frames: int) -> tuple[int, float]:
    """Read a ``rate=0`` connection to EOF with a bare socket: bytes and seconds."""
    port = int(urls["rest_url"].rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        request = (
            f"GET /?rate=0&frames={frames}&tag=ceiling HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        sock.sendall(request.encode())
        head = b""
        while b"\r\n\r\n" not in head:
            head += sock.recv(4096)
        payload = b'{"method":"SUBSCRIBE","params":["depth.BTC_USDC"]}'
        mask = os.urandom(4)
        masked = bytes(c ^ mask[i % 4] for i, c in enumerate(payload))
        start = time.perf_counter()
        sock.sendall(bytes((0x81, 0x80 | len(payload))) + mask + masked)
        total = len(head.split(b"\r\n\r\n", 1)[1])
        while chunk := sock.recv(1 << 20):
            total += len(chunk)
        return total, time.perf_counter() - start


def _depth_round_trip(rest_url: str) -> float:
    times = []
    for _ in range(5):
        start = time.perf_counter()
        with urllib.request.urlopen(f"{rest_url}/api/v1/depth?symbol={SYMBOL}", timeout=10) as r:
            r.read()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _fmt_rate(rate: float) -> str:
    return f"{rate / 1000:g}k"


def _profile_table(path: str) -> tuple[str, str]:
    """Top functions by own time, and own time summed by layer."""
    out = io.StringIO()
    stats = pstats.Stats(path, stream=out)
    stats.sort_stats("tottime").print_stats(22)
    layers = {
        "idle: waiting for the socket (epoll)": ("epoll",),
        "wsproto (frame parsing)": ("wsproto",),
        "msgspec decode + our wire layer": ("core/wire.py", "msgspec", "transport/ws.py"),
        "order book + sync (core)": ("core/book.py", "core/sync.py", "core/trades.py"),
        "reconciler + events": ("actors/reconciler.py", "core/events.py"),
        "stream actor": ("actors/stream.py",),
        "consumer queue (conflation, EventQueue)": ("core/conflation.py", "actors/emitter.py"),
        "trio (scheduling, I/O, channels)": ("/trio/",),
        "benchmark consumer": ("benchmarks/",),
    }
    totals: dict[str, float] = dict.fromkeys(layers, 0.0)
    totals["other (builtins, Decimal, ...)"] = 0.0
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    grand = 0.0
    for (filename, _line, name), (_cc, _nc, tottime, _ct, _callers) in raw.items():
        grand += tottime
        where = f"{filename}:{name}"
        for label, needles in layers.items():
            if any(n in where for n in needles):
                totals[label] += tottime
                break
        else:
            totals["other (builtins, Decimal, ...)"] += tottime
    rows = "\n".join(
        f"| {label} | {1e3 * t:.0f} | {100 * t / grand:.0f}% |"
        for label, t in sorted(totals.items(), key=lambda kv: -kv[1])
    )
    lines = [line for line in out.getvalue().splitlines() if line.strip()]
    return rows, "\n".join(lines)


def run(report: Report, *, quick: bool, seed: int = 1) -> None:
    """Blaster ceiling, latency + startup at a fixed load, the sustained-rate ladder."""
    cfg = QUICK if quick else FULL
    checkpoints = cfg.checkpoints()
    with ExitStack() as stack:
        urls = stack.enter_context(_blaster(checkpoints, seed))
        workers = {kind: _Worker(kind) for kind in ("ours", "ccxt")}
        for worker in workers.values():
            stack.callback(worker.close)
        print(f"  blaster: {urls}", flush=True)
        pool = int(urls["frames"])
        raw_bytes, raw_s = _raw_reader(urls, pool)
        ceiling = _get_json(f"{urls['rest_url']}/bench/stats?tag=ceiling")
        print(f"  blaster ceiling: {ceiling} (reader {raw_bytes / raw_s / 1e6:.0f} MB/s)")
        rtt = _depth_round_trip(urls["rest_url"])

        def step(kind: str, rate: int, frames: int, tag: str, **more: Any) -> dict[str, Any]:
            cmd = {
                "tick": cfg.tick,
                "rest_url": urls["rest_url"],
                "ws_url": urls["ws_url"],
                "rate": rate,
                "frames": frames,
                "warm": cfg.warm,
                "tag": tag,
                **more,
            }
            result = workers[kind].run(cmd)
            try:
                sent = _get_json(f"{urls['rest_url']}/bench/stats?tag={tag}")
            except urllib.error.HTTPError:
                sent = {}  # the client never subscribed (its run failed before)
            result["server"] = sent
            lag = result.get("lag_ms", [float("nan")] * 3)
            print(
                f"  {tag}: ok={result['ok']} lag p99 {lag[1]:.0f} ms max {lag[2]:.0f} ms,"
                f" server slip {sent.get('max_slip_ms', float('nan')):.0f} ms"
                + (f" problems {result['problems'][:2]}" if result["problems"] else ""),
                flush=True,
            )
            return result

        # Latency and startup at a fixed, realistic load; order alternates per repetition.
        latency: dict[str, list[dict[str, Any]]] = {"ours": [], "ccxt": []}
        for rep in range(cfg.latency_reps):
            order = ("ours", "ccxt") if rep % 2 == 0 else ("ccxt", "ours")
            for kind in order:
                tag = f"latency-{kind}-{rep}"
                result = step(
                    kind, cfg.latency_rate, cfg.latency_frames, tag, tick=cfg.latency_tick
                )
                latency[kind].append(result)

        # The ladder: each client climbs until it fails a rate `attempts` times in a row, then
        # the gap between its highest pass and that rate is bisected `refine` times.
        ladder: list[tuple[int, str, int, dict[str, Any]]] = []
        best = {"ours": 0, "ccxt": 0}
        failed_at: dict[str, int] = {}

        def attempt(kind: str, rate: int) -> bool:
            for n in range(1, cfg.attempts + 1):
                result = step(kind, rate, cfg.step_frames(rate), f"step-{kind}-{rate}-{n}")
                ladder.append((rate, kind, n, result))
                if result["ok"]:
                    best[kind] = max(best[kind], rate)
                    return True
            failed_at[kind] = min(failed_at.get(kind, rate), rate)
            return False

        for index, rate in enumerate(cfg.rates):
            order = ("ours", "ccxt") if index % 2 == 0 else ("ccxt", "ours")
            for kind in order:
                if kind not in failed_at:
                    attempt(kind, rate)
            if len(failed_at) == 2:
                break
        for index in range(cfg.refine):
            order = ("ccxt", "ours") if index % 2 == 0 else ("ours", "ccxt")
            for kind in order:
                if kind not in failed_at or not best[kind]:
                    continue
                rate = round((best[kind] + failed_at[kind]) / 2 / 500) * 500
                if best[kind] < rate < failed_at[kind]:
                    attempt(kind, rate)

        ratio = best["ours"] / best["ccxt"] if best["ccxt"] else float("inf")
        profile: tuple[str, str, int] | None = None
        # Always profiled (the margin over the target is thin on a noisy machine).
        if ratio < report_target() or not quick:
            rate = failed_at.get("ours", cfg.rates[-1])
            frames = min(cfg.warm + cfg.profile_frames, cfg.step_frames(rate))
            with tempfile.TemporaryDirectory() as tmp:
                path = str(Path(tmp) / "ours.prof")
                step("ours", rate, frames, f"profile-ours-{rate}", profile=path)
                if Path(path).exists():
                    rows, text = _profile_table(path)
                    profile = (rows, text, rate)

    report.e2e(
        {
            "ceiling": ceiling,
            "rtt_s": rtt,
            "latency": latency,
            "ladder": ladder,
            "best": best,
            "failed_at": failed_at,
            "ratio": ratio,
            "profile": profile,
            "cfg": cfg,
            "pool": pool,
            "generated_s": urls["generated_s"],
        }
    )


def report_target() -> float:
    from benchmarks.report import E2E_TARGET

    return E2E_TARGET


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.e2e")
    parser.add_argument("--client", choices=("ours", "ccxt"), required=True)
    args = parser.parse_args(argv)
    return _worker(args.client)


if __name__ == "__main__":
    sys.exit(main())
