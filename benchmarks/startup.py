"""Startup CPU: what one REST depth snapshot costs the client, ccxt's path against ours.

At startup the feed fetches one ``/api/v1/depth`` snapshot per market (1,000 at 1,000 markets)
and builds a book from each. This measures the client's CPU per snapshot, fetch to ready book,
over real loopback HTTP, the server in its own process (``python -m benchmarks.startup
--serve``) so its CPU is not counted:

- ``ccxt``: what the feed did before: ccxt's ``publicGetApiV1Depth`` (its request machinery and
  JSON parse into Python objects) on the same bounded session, ``msgspec.convert`` into
  :class:`~backpack_actors.core.wire.DepthSnapshot` (``Decimal`` levels), then the book;
- ``ours``: :meth:`CcxtRestClient.depth <backpack_actors.transport.rest.CcxtRestClient.depth>`
  now: one bounded GET, msgspec decoding the body's bytes straight into
  :class:`~backpack_actors.core.wire.DepthSnapshotText` (levels kept as text), then the book.

The book is built as the reconciler does (``BookSync.on_snapshot`` with the market's bounds:
level checks, bounds, crossed-book refusal), and must come out ready with the served top.

Both run ``calls`` snapshots ``concurrency`` at a time in trio worker threads, as the REST actor
does; the body is the seeded generator's snapshot (~500 levels a side), every answer is checked
against it. CPU = process user+sys (``getrusage``) over the calls; medians of ``reps`` interleaved
repetitions.
"""

# ruff: noqa: E501  (Markdown table rows)

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from benchmarks.common import median
from benchmarks.generator import StreamGenerator

__all__ = ["main", "run", "run_report"]

ROOT = Path(__file__).resolve().parent.parent


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _body(seed: int) -> bytes:
    return StreamGenerator(seed).snapshot_json().encode()


def _serve(seed: int) -> None:
    body = _body(seed)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as Backpack's API answers

        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    print(f"PORT {httpd.server_address[1]}", flush=True)
    httpd.serve_forever()


async def _measure(kind: str, url: str, calls: int, concurrency: int, body: bytes) -> float:
    import trio

    from backpack_actors.core import sync as bsync
    from backpack_actors.core.dectext import MarketBounds
    from backpack_actors.core.wire import convert_depth_snapshot, decode_depth_snapshot
    from backpack_actors.transport import rest

    served = decode_depth_snapshot(body, "BTC_USDC")
    expected = (str(served.bids[-1][0]), str(served.asks[0][0]))
    bounds = MarketBounds.for_increments(Decimal("0.01"), Decimal("0.0001"))
    client = rest.CcxtRestClient(url, timeout=10.0)
    pool: list[Any] = []

    async def ccxt_depth() -> Any:
        exchange = pool.pop() if pool else rest._make_ccxt_client(url, 10_000)
        try:
            raw = await trio.to_thread.run_sync(
                lambda: exchange.publicGetApiV1Depth({"symbol": "BTC_USDC"})
            )
        finally:
            pool.append(exchange)
        return convert_depth_snapshot(raw, "BTC_USDC")

    async def depth() -> tuple[str, str] | None:
        snapshot = await (ccxt_depth() if kind == "ccxt" else client.depth("BTC_USDC"))
        book = bsync.BookSync("BTC_USDC", bounds=bounds)
        book.stream_started(1)
        if not any(isinstance(a, bsync.PublishSnapshot) for a in book.on_snapshot(snapshot)):
            return None
        bid, ask = book.book.best_bid(), book.book.best_ask()
        return None if bid is None or ask is None else (bid[0], ask[0])

    # Warm-up: connections opened, code paths loaded, one client per lane.
    async with trio.open_nursery() as nursery:
        for _ in range(concurrency):
            nursery.start_soon(depth)
    remaining = calls
    wrong = 0

    async def lane() -> None:
        nonlocal remaining, wrong
        while remaining > 0:
            remaining -= 1
            if await depth() != expected:
                wrong += 1

    cpu0 = _cpu_s()
    async with trio.open_nursery() as nursery:
        for _ in range(concurrency):
            nursery.start_soon(lane)
    cpu = _cpu_s() - cpu0
    await client.aclose()
    for exchange in pool:
        exchange.session.close()
    if wrong:
        raise RuntimeError(f"{kind}: {wrong} books not ready on the served top")
    return cpu


def _client_main(cmd: dict[str, Any]) -> None:
    import trio

    body = _body(cmd["seed"])
    started = time.perf_counter()
    cpu = trio.run(_measure, cmd["kind"], cmd["url"], cmd["calls"], cmd["concurrency"], body)
    wall = time.perf_counter() - started
    print("RESULT " + json.dumps({"cpu_s": cpu, "wall_s": wall, "bytes": len(body)}), flush=True)


def _client(cmd: dict[str, Any]) -> dict[str, Any]:
    command = [sys.executable, "-m", "benchmarks.startup", "--client", json.dumps(cmd)]
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=600)
    for line in done.stdout.splitlines():
        if line.startswith("RESULT "):
            result: dict[str, Any] = json.loads(line[len("RESULT ") :])
            return result
    tail = " | ".join((done.stderr or "").strip().splitlines()[-6:])
    raise RuntimeError(f"startup client exited {done.returncode}: {tail}")


def run(*, calls: int = 1000, reps: int = 3, concurrency: int = 8, seed: int = 1) -> dict[str, Any]:
    """CPU ms per snapshot for ``ccxt`` and ``ours`` (medians of interleaved reps)."""
    server = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.startup", "--serve", str(seed)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline().split()[1])
        url = f"http://127.0.0.1:{port}"
        cpu: dict[str, list[float]] = {"ccxt": [], "ours": []}
        size = 0
        for rep in range(reps):
            for kind in ("ccxt", "ours") if rep % 2 == 0 else ("ours", "ccxt"):
                cmd = {"kind": kind, "url": url, "calls": calls, "concurrency": concurrency}
                result = _client({**cmd, "seed": seed})
                cpu[kind].append(1e3 * result["cpu_s"] / calls)
                size = result["bytes"]
            print(
                f"  startup rep {rep + 1}/{reps}: ccxt {cpu['ccxt'][-1]:.2f} ms, "
                f"ours {cpu['ours'][-1]:.2f} ms CPU per snapshot",
                flush=True,
            )
    finally:
        server.kill()
        server.wait()
    ccxt_ms, ours_ms = median(cpu["ccxt"]), median(cpu["ours"])
    return {
        "calls": calls,
        "reps": reps,
        "concurrency": concurrency,
        "body_bytes": size,
        "ccxt_ms": ccxt_ms,
        "ours_ms": ours_ms,
        "ccxt_reps": cpu["ccxt"],
        "ours_reps": cpu["ours"],
        "ratio": ccxt_ms / ours_ms,
    }


def run_report(report: Any, *, quick: bool = False, seed: int = 1) -> dict[str, Any]:
    """Run (fewer calls when ``quick``); add its section to ``report`` (``benchmarks.report``)."""
    data = run(calls=200 if quick else 1000, reps=1 if quick else 3, seed=seed)
    n = data["calls"]
    reps = {k: ", ".join(f"{v:.2f}" for v in data[f"{k}_reps"]) for k in ("ccxt", "ours")}
    ccxt_ms, ours_ms = data["ccxt_ms"], data["ours_ms"]
    body = f"""
At startup the feed fetches one REST depth snapshot per market and builds a book from it. Client
CPU (user+sys) per snapshot from the request to a ready book (`BookSync.on_snapshot` with the
market's bounds), {n:,} snapshots of {data["body_bytes"]:,} bytes (~500 levels a side) per rep,
{data["concurrency"]} at a time in worker threads as the REST actor calls them, over loopback HTTP
to a server in its own process (`benchmarks/startup.py`); medians of {data["reps"]} interleaved
reps.

| path | CPU ms per snapshot (each rep) | for 1,000 markets |
|---|---:|---:|
| ccxt's `publicGetApiV1Depth` → `DepthSnapshot` → book | {ccxt_ms:.2f} ({reps["ccxt"]}) | {ccxt_ms:.1f} s |
| **ours**: bounded GET → msgspec → `DepthSnapshotText` → book | {ours_ms:.2f} ({reps["ours"]}) | {ours_ms:.1f} s |

Ours costs **{1 / data["ratio"]:.2f}×** ccxt's path ({data["ratio"]:.1f}× less CPU per snapshot).
"""
    report.section("Startup: a REST depth snapshot to a ready book", body)
    return data


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.startup")
    parser.add_argument("--serve", type=int, metavar="SEED")
    parser.add_argument("--client")
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args(argv)
    if args.serve is not None:
        _serve(args.serve)
        return 0
    if args.client:
        _client_main(json.loads(args.client))
        return 0
    print(json.dumps(run(calls=args.calls, reps=args.reps, concurrency=args.concurrency), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
