"""Full stack over real sockets: N markets x R msg/s, ours and ccxt.pro against the same server.

Each run is three processes: a fresh :mod:`benchmarks.multiblaster` (N markets, R frames/s per
market, 15% of them trades), and one client process (``python -m benchmarks.scale --client
ours|ccxt --cmd JSON``) that subscribes every market, consumes for ``duration`` seconds and prints
``RESULT {json}``. Runs alternate ours / ccxt.pro, the order flipping every repetition.

- ours: ``open_feed(FeedConfig.from_kwargs(symbols=..., snapshot_interval=0[,
  connection_group_size=K]))``, consuming ``feed.batches()``.
- ccxt.pro: ``ccxt.pro.backpack`` with ``urls`` pointed at the server, one ``watch_order_book``
  loop and one ``watch_trades`` loop per market, all concurrent on one asyncio loop (ccxt
  multiplexes them onto one connection); its defaults otherwise (``snapshotDelay`` 10 messages,
  its REST rate limiter).

Per run: CPU per event (process user+sys from ``getrusage`` over the steady window divided by
the deltas and trades delivered in it), lag = delivery to the consumer - ``T`` (the server sets
``T`` = ``E`` = the frame's due wall-clock time), latency = delivery - receipt (ours: the
event's ``received_at``; ccxt.pro: stamped when aiohttp hands the message to ccxt's client),
time until every book is ready (first book per market, from just before ``open_feed`` /
``load_markets``), peak RSS, restarts/reconnects/resyncs/degradations, events/s, server CPU.
The steady window starts 2 s after every book is ready (or at half the duration if they are
not all ready by then).
"""

from __future__ import annotations

import argparse
import array
import asyncio
import collections
import json
import os
import resource
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Row", "health_counts", "main", "run_rows"]

ROOT = Path(__file__).resolve().parent.parent
SETTLE_S = 2.0
"""The steady window starts this long after the last book is ready."""
TICK_S = 0.005
"""The multiblaster's default write tick."""
HEALTH_KINDS = ("resyncing", "reconnecting", "stale", "degraded_rest_only", "consumer_overflow")


@dataclass(frozen=True)
class Row:
    markets: int
    rate: float
    duration: float
    tick: float = TICK_S
    """How often the server writes what is due; a frame waits up to this long at the server."""

    @property
    def label(self) -> str:
        tick = "" if self.tick == TICK_S else f", {self.tick * 1e3:g} ms tick"
        return f"{self.markets} x {self.rate:g}/s{tick}"

    @classmethod
    def parse(cls, text: str) -> Row:
        """``N:R:seconds[:tick_ms]``."""
        n, r, d, *tick = text.split(":")
        return cls(int(n), float(r), float(d), float(tick[0]) / 1e3 if tick else TICK_S)


# The 5 ms server tick batches ~6 frames per write at 50 x 20/s and adds up to 5 ms to every
# frame's lag, for both clients alike: at 50 markets that floor is most of the p99. The 1 ms row
# writes 1-2 frames at a time (the read sizes real markets give) and leaves the client's own lag
# visible; at 1,000 markets a 1 ms tick would make the server the bottleneck, so those rows keep 5.
FULL_ROWS = (
    Row(50, 20, 20),
    Row(50, 20, 20, tick=0.001),
    Row(200, 20, 20),
    Row(1000, 20, 60),
    Row(50, 200, 20),
)
QUICK_ROWS = (Row(50, 20, 8), Row(200, 20, 8))


# -- shared --------------------------------------------------------------------------------------


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def peak_rss_mib() -> float:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _num(value: object) -> int:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0


def _items(node: object) -> list[Any]:
    if isinstance(node, dict):
        return list(node.values())
    if isinstance(node, list | tuple):
        return list(node)
    return []


def health_counts(stats: dict[str, Any]) -> dict[str, int]:
    """Restarts, reconnects, resyncs and REST-only degradations summed from ``statistics()``.

    Tolerant of the shape: per-connection actors (``connections[...]``, a dict or a list) or,
    without them, per-symbol streams (``streams[sym]``); the reconciler's per-symbol book
    counters; supervisor children (objects or dicts with ``restarts``).
    """
    out = {"reconnects": 0, "degradations": 0, "resyncs": 0, "restarts": 0}
    # With connection actors, ``streams[sym]`` repeats its connection's counters for every
    # symbol on it: count the connections then, the streams only when there are none.
    group = "connections" if _items(stats.get("connections")) else "streams"
    for item in _items(stats.get(group)):
        if isinstance(item, dict):
            out["reconnects"] += _num(item.get("reconnects"))
            out["degradations"] += _num(item.get("degradations"))
            out["restarts"] += _num(item.get("restarts"))
    symbols = (stats.get("reconciler") or {}).get("symbols") or {}
    for item in _items(symbols):
        if isinstance(item, dict):
            book = item.get("book")
            out["resyncs"] += _num(book.get("resyncs") if isinstance(book, dict) else None)
            out["resyncs"] += _num(item.get("resyncs"))
    for sup in _items(stats.get("supervisors")):
        children = sup.get("children") if isinstance(sup, dict) else getattr(sup, "children", ())
        for child in children or ():
            value = (
                child.get("restarts") if isinstance(child, dict) else getattr(child, "restarts", 0)
            )
            out["restarts"] += _num(value)
    return out


def _pct(values: Any, points: tuple[float, ...]) -> list[float]:
    if not len(values):
        return [float("nan")] * len(points)
    ordered = sorted(values)
    n = len(ordered)
    return [ordered[min(n - 1, max(0, round(p / 100 * n) - 1))] for p in points]


class _Tally:
    """What a client saw; lag and latency samples kept from the steady window on."""

    def __init__(self, cmd: dict[str, Any]) -> None:
        self.cmd = cmd
        self.duration = float(cmd["duration"])
        self.n = len(cmd["symbols"])
        self.t0 = time.time()
        self.cpu0 = cpu_s()
        self.ready: dict[str, float] = {}
        self.steady_at = 0.0
        self.steady_due = 0.0
        self.steady_cpu = 0.0
        self.startup_cpu: float | None = None
        self.steady_events = 0
        self.events = 0
        self.lag = array.array("d")
        self.lat = array.array("d")
        self.status: collections.Counter[str] = collections.Counter()
        self.errors: list[str] = []
        self.error_count = 0

    def book_ready(self, symbol: str, now: float) -> None:
        if symbol not in self.ready:
            self.ready[symbol] = now - self.t0
            if len(self.ready) == self.n and self.startup_cpu is None:
                self.startup_cpu = cpu_s() - self.cpu0
            if len(self.ready) == self.n and not self.steady_at:
                # Frames buffered while the last snapshots loaded arrive late: skip them.
                self.steady_due = now + SETTLE_S

    def mark(self, now: float) -> None:
        self.steady_at = now
        self.steady_cpu = cpu_s()
        self.steady_events = self.events
        del self.lag[:]
        del self.lat[:]

    def check_half(self, now: float) -> None:
        if self.steady_at:
            return
        if (self.steady_due and now >= self.steady_due) or now - self.t0 >= self.duration / 2:
            self.mark(now)

    def result(self, extra: dict[str, Any]) -> dict[str, Any]:
        end = time.time()
        cpu_end = cpu_s()
        if not self.steady_at:
            self.mark(end)
        events = self.events - self.steady_events
        seconds = end - self.steady_at
        lag = _pct(self.lag, (50, 99, 100))
        lat = _pct(self.lat, (50, 99, 99.9))
        ready_all = max(self.ready.values()) if len(self.ready) == self.n else None
        return {
            "markets": self.n,
            "events": events,
            "events_total": self.events,
            "window_s": seconds,
            "events_per_s": events / seconds if seconds > 0 else float("nan"),
            "cpu_us_per_event": 1e6 * (cpu_end - self.steady_cpu) / events if events else None,
            "cpu_pct": 100 * (cpu_end - self.steady_cpu) / seconds if seconds > 0 else None,
            "cpu_total_s": cpu_end - self.cpu0,
            "startup_cpu_s": self.startup_cpu,
            "lag_ms": [1e3 * x for x in lag],
            "lat_us": [1e6 * x for x in lat],
            "samples": len(self.lat),
            "ready_all_s": ready_all,
            "ready_count": len(self.ready),
            "ready_p50_s": _pct(list(self.ready.values()), (50,))[0],
            "rss_mib": peak_rss_mib(),
            "status": dict(self.status),
            "errors": self.errors[:5],
            "error_count": self.error_count,
            **extra,
        }


# -- ours ----------------------------------------------------------------------------------------


async def _ours(cmd: dict[str, Any]) -> dict[str, Any]:
    import attrs
    import trio

    from backpack_actors.config import FeedConfig
    from backpack_actors.core.events import (
        BookDelta,
        BookSnapshot,
        ProtocolErrorEvent,
        StatusEvent,
        Trade,
    )
    from backpack_actors.feed import open_feed

    kwargs: dict[str, Any] = {
        "symbols": [s.replace("_", "-") for s in cmd["symbols"]],
        "rest_url": cmd["rest_url"],
        "ws_url": cmd["ws_url"],
        "snapshot_interval": 0,
    }
    fields = {f.name for f in attrs.fields(FeedConfig)}
    group = cmd.get("group")
    if group and "connection_group_size" in fields:
        kwargs["connection_group_size"] = group
    config = FeedConfig.from_kwargs(**kwargs)
    tally = _Tally(cmd)
    clock = time.time
    lag, lat = tally.lag, tally.lat
    health = HEALTH_KINDS
    extra: dict[str, Any] = {"group": kwargs.get("connection_group_size")}
    ready = tally.ready
    with trio.fail_after(tally.duration + 120):
        async with open_feed(config) as feed:
            extra["entered_s"] = clock() - tally.t0
            with trio.move_on_after(max(tally.duration - extra["entered_s"], 1.0)):
                async for events in feed.batches():
                    now = clock()
                    for event in events:
                        kind = type(event)
                        if kind is BookDelta or kind is Trade:
                            lag.append(now - event.engine_time_us * 1e-6)  # type: ignore[union-attr]
                            lat.append(now - event.received_at)  # type: ignore[union-attr]
                            tally.events += 1
                        elif kind is BookSnapshot:
                            if event.exchange_symbol not in ready:  # type: ignore[union-attr]
                                tally.book_ready(event.exchange_symbol, now)  # type: ignore[union-attr]
                        elif kind is StatusEvent:
                            value = str(event.kind)  # type: ignore[union-attr]
                            tally.status[value] += 1
                            if value in health and len(tally.errors) < 5:
                                tally.errors.append(f"{value} {event.symbol}: {event.reason}")  # type: ignore[union-attr]
                        elif kind is ProtocolErrorEvent:
                            tally.status["protocol_error"] += 1
                    tally.check_half(now)
            stats = feed.statistics()
            extra["health"] = health_counts(stats)
            queue = stats.get("queue", {})
            extra["queue"] = {
                k: queue.get(k) for k in ("max_depth", "conflated", "dropped", "producer_waits")
            }
            result = tally.result(extra)
    return result


# -- ccxt.pro ------------------------------------------------------------------------------------


async def _ccxt(cmd: dict[str, Any]) -> dict[str, Any]:
    import ccxt.pro

    rest, ws = cmd["rest_url"], cmd["ws_url"]
    tally = _Tally(cmd)
    exchange = ccxt.pro.backpack(
        {"urls": {"api": {"public": rest, "private": rest, "ws": {"public": ws, "private": ws}}}}
    )
    clock = time.time
    lag, lat = tally.lag, tally.lat
    pending: dict[str, collections.deque[tuple[int, int, float]]] = {}
    trade_stamps: dict[tuple[str, int], tuple[int, float]] = {}
    stamp = [0.0]
    try:
        await exchange.load_markets()
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
                    q = pending.get(data["s"])
                    if q is not None:
                        q.append((data["u"], data["T"], stamp[0]))
                elif e == "trade":
                    trade_stamps[(data["s"], data["t"])] = (data["T"], stamp[0])
            on_message(c, message)

        client.handle_text_or_binary_message = stamped
        client.on_message_callback = counting

        async def books(market_id: str) -> None:
            symbol = exchange.safe_symbol(market_id)
            q = pending[market_id]
            while True:
                try:
                    book = await exchange.watch_order_book(symbol)
                except Exception as exc:  # ccxt reconnects on the next call
                    tally.error_count += 1
                    if len(tally.errors) < 5:
                        tally.errors.append(repr(exc)[:160])
                    await asyncio.sleep(0.1)
                    continue
                now = clock()
                tally.book_ready(market_id, now)
                nonce = book["nonce"]
                while q and q[0][0] <= nonce:
                    _u, t, received = q.popleft()
                    lag.append(now - t * 1e-6)
                    lat.append(now - received)
                    tally.events += 1
                tally.check_half(now)

        async def trades(market_id: str) -> None:
            symbol = exchange.safe_symbol(market_id)
            while True:
                try:
                    got = await exchange.watch_trades(symbol)
                except Exception as exc:
                    tally.error_count += 1
                    if len(tally.errors) < 5:
                        tally.errors.append(repr(exc)[:160])
                    await asyncio.sleep(0.1)
                    continue
                now = clock()
                for trade in got:
                    hit = trade_stamps.pop((market_id, int(trade["id"])), None)
                    if hit is not None:
                        lag.append(now - hit[0] * 1e-6)
                        lat.append(now - hit[1])
                        tally.events += 1

        tasks = []
        for market_id in cmd["symbols"]:
            pending[market_id] = collections.deque()
            tasks.append(asyncio.ensure_future(books(market_id)))
            tasks.append(asyncio.ensure_future(trades(market_id)))
        remaining = max(tally.duration - (clock() - tally.t0), 1.0)
        done, _ = await asyncio.wait(tasks, timeout=remaining)
        for task in done:
            if task.exception() is not None:
                tally.errors.append(repr(task.exception())[:160])
        result = tally.result({"health": {"restarts": tally.error_count}})
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        await exchange.close()
    return result


def _client_main(kind: str, cmd: dict[str, Any]) -> int:
    if kind == "ours":
        import trio

        result = trio.run(_ours, cmd)
    else:
        result = asyncio.run(_ccxt(cmd))
    print("RESULT " + json.dumps(result), flush=True)
    return 0


# -- driver --------------------------------------------------------------------------------------


def _get_json(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=10) as response:
        data: dict[str, Any] = json.loads(response.read())
    return data


@contextmanager
def server(
    markets: int, rate: float, frames: int, seed: int, tick: float = TICK_S
) -> Iterator[dict[str, Any]]:
    command = [
        sys.executable,
        "-m",
        "benchmarks.multiblaster",
        "--markets",
        str(markets),
        "--rate",
        str(rate),
        "--frames",
        str(frames),
        "--seed",
        str(seed),
        "--tick",
        str(tick),
    ]
    proc = subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError("the multiblaster exited before printing its URLs")
        yield json.loads(line)
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run_client(kind: str, row: Row, *, seed: int, group: int) -> dict[str, Any]:
    """One run: a fresh server, one client process; the client's result plus server figures."""
    frames = int(row.rate * (row.duration + 90)) + 500
    with server(row.markets, row.rate, frames, seed, row.tick) as urls:
        cmd = {
            "rest_url": urls["rest_url"],
            "ws_url": urls["ws_url"],
            "symbols": urls["symbols"],
            "duration": row.duration,
            "group": group,
        }
        before = _get_json(f"{urls['rest_url']}/bench/stats")
        command = [
            sys.executable,
            "-m",
            "benchmarks.scale",
            "--client",
            kind,
            "--cmd",
            json.dumps(cmd),
        ]
        try:
            done = subprocess.run(
                command, capture_output=True, text=True, cwd=ROOT, timeout=row.duration + 150
            )
        except subprocess.TimeoutExpired:
            return {"failed": f"{kind} client timed out"}
        try:
            after = _get_json(f"{urls['rest_url']}/bench/stats")
        except OSError as exc:  # the server died: the client's figures still stand
            after = {**before, "cpu_s": float("nan"), "error": repr(exc)}
    result: dict[str, Any] = {}
    for line in done.stdout.splitlines():
        if line.startswith("RESULT "):
            result = json.loads(line[len("RESULT ") :])
    if not result:
        tail = (done.stderr or "").strip().splitlines()[-6:]
        return {"failed": f"{kind} client exited {done.returncode}: {' | '.join(tail)}"}
    if "error" in after:
        result.setdefault("errors", []).append(f"server: {after['error']}")
    wall = after["wall"] - before["wall"]
    result["server"] = {
        "cpu_pct": 100 * (after["cpu_s"] - before["cpu_s"]) / wall if wall > 0 else None,
        "frames": after["frames"] - before["frames"],
        "max_late_ms": after["max_late_ms"],
        "connections": after["connections"],
        "depth_requests": after["depth_requests"],
        "exhausted": after["exhausted"],
    }
    return result


def _brief(kind: str, row: Row, r: dict[str, Any]) -> str:
    if "failed" in r:
        return f"  {row.label} {kind}: FAILED {r['failed']}"
    lag = r["lag_ms"]
    cpu = r["cpu_us_per_event"]
    ready = r["ready_all_s"]
    return (
        f"  {row.label} {kind}: {r['events_per_s']:.0f} ev/s, cpu {cpu or float('nan'):.1f} us/ev"
        f" ({r['cpu_pct'] or float('nan'):.0f}%), lag p50/p99/max {lag[0]:.1f}/{lag[1]:.1f}/"
        f"{lag[2]:.0f} ms, ready {ready if ready is None else round(ready, 1)} s"
        f" ({r['ready_count']}/{r['markets']}), rss {r['rss_mib']:.0f} MiB,"
        f" health {r.get('health')} status {r.get('status')}, server cpu"
        f" {r['server']['cpu_pct']:.0f}% late {r['server']['max_late_ms']:.0f} ms"
    )


def run_rows(rows: tuple[Row, ...], *, reps: int, seed: int, group: int) -> dict[str, Any]:
    """Every row, ``reps`` interleaved repetitions of ours and ccxt.pro."""
    out: dict[str, Any] = {"rows": [], "reps": reps, "group": group}
    for row in rows:
        runs: dict[str, list[dict[str, Any]]] = {"ours": [], "ccxt": []}
        for rep in range(reps):
            order = ("ours", "ccxt") if rep % 2 == 0 else ("ccxt", "ours")
            for kind in order:
                try:
                    result = run_client(kind, row, seed=seed + rep, group=group)
                except (OSError, RuntimeError, ValueError, KeyError) as exc:
                    result = {"failed": f"{kind}: {exc!r}"[:300]}
                print(_brief(kind, row, result), flush=True)
                runs[kind].append(result)
        out["rows"].append({"row": row.__dict__, "runs": runs})
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scale")
    parser.add_argument("--client", choices=("ours", "ccxt"))
    parser.add_argument("--cmd", help="JSON run command (client mode)")
    parser.add_argument("--rows", help="driver mode: N:R:seconds[:tick_ms],... (e.g. 50:20:10:1)")
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--group", type=int, default=50)
    args = parser.parse_args(argv)
    if args.client:
        return _client_main(args.client, json.loads(args.cmd))
    rows = tuple(Row.parse(x) for x in (args.rows or "50:20:10").split(","))
    print(json.dumps(run_rows(rows, reps=args.reps, seed=1, group=args.group), indent=1))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
