"""Sharded publishers: two ``backpack-actors run --bus`` processes share the symbols; one is
killed with SIGKILL mid-run; the other takes its symbols over within the lease TTL (plus one
heartbeat), starting with a checkpoint; the reader reports the handover and its books equal the
simulator's afterwards."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import trio

from backpack_actors.bus import open_bus_feed
from backpack_actors.bus.cli import bus_status
from backpack_actors.bus.schema import parse_meta
from backpack_actors.core.events import BookDelta, Event, StatusEvent, StatusKind
from backpack_actors.sim.server import open_simulator
from tests.bus.helpers import REDIS_URL, Books, Watch, isolated_prefix

TTL = 1.5
ROOT = Path(__file__).resolve().parents[2]


async def _status_when(prefix: str, ready: Any) -> dict[str, Any]:
    while True:
        status = await bus_status(REDIS_URL, prefix)
        if ready(status):
            return status
        await trio.sleep(0.1)


def _owners(status: dict[str, Any]) -> dict[str, str | None]:
    return {symbol: row["owner"] for symbol, row in status["symbols"].items()}


async def test_sigkilled_publisher_is_replaced_within_the_lease_ttl() -> None:
    events: list[Event] = []
    books = Books()
    watch = Watch()
    deltas: dict[str, int] = {}
    processes: list[trio.Process] = []
    with trio.fail_after(120):
        async with (
            isolated_prefix() as prefix,
            open_simulator(markets=["BTC_USDC", "ETH_USDC"], rate=40) as sim,
            open_bus_feed(REDIS_URL, ["BTC-USDC", "ETH-USDC"], prefix=prefix, block=0.1) as bus,
            trio.open_nursery() as nursery,
        ):

            async def read() -> None:
                async for batch in bus.batches():
                    for event in batch:
                        books.apply(event)
                        if isinstance(event, BookDelta):
                            deltas[event.symbol] = deltas.get(event.symbol, 0) + 1
                    events.extend(batch)
                    watch.poke()

            nursery.start_soon(read)
            command = [
                sys.executable, "-m", "backpack_actors", "run",
                "--symbols", "BTC-USDC", "ETH-USDC",
                "--rest-url", sim.rest_url, "--ws-url", sim.ws_url,
                "--snapshot-interval", "0",
                "--bus", REDIS_URL, "--bus-prefix", prefix,
                "--bus-lease-ttl", str(TTL), "--bus-checkpoint-interval", "1",
            ]  # fmt: skip
            for _ in range(2):
                processes.append(
                    await trio.lowlevel.open_process(
                        command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
                    )
                )
            status = await _status_when(
                prefix,
                lambda s: len(s["symbols"]) == 2 and len(set(_owners(s).values()) - {None}) == 2,
            )
            owners = _owners(status)
            await watch.until(lambda: min(deltas.get(s, 0) for s in owners) >= 50)
            victim = owners["BTC-USDC"]
            assert victim is not None
            victim_pid = int(victim.split(":")[1])
            old_epoch = status["symbols"]["BTC-USDC"]["epoch"]
            process = next(p for p in processes if p.pid == victim_pid)
            killed_at = trio.current_time()
            process.send_signal(signal.SIGKILL)

            def handed_over() -> bool:
                return any(
                    isinstance(e, StatusEvent)
                    and e.symbol == "BTC-USDC"
                    and e.kind is StatusKind.RESYNCING
                    and "handover" in e.reason
                    for e in events
                )

            await watch.until(handed_over)
            handover_after = trio.current_time() - killed_at
            at_handover = deltas["BTC-USDC"]
            await watch.until(lambda: deltas["BTC-USDC"] >= at_handover + 50)
            status = await bus_status(REDIS_URL, prefix)
            survivor = owners["ETH-USDC"]
            assert _owners(status) == {"BTC-USDC": survivor, "ETH-USDC": survivor}
            new_epoch = status["symbols"]["BTC-USDC"]["epoch"]
            sim.exchange.pause()
            # The survivor exits cleanly on SIGTERM (leases released, flushed).
            alive = next(p for p in processes if p.pid != victim_pid)
            alive.send_signal(signal.SIGTERM)
            with trio.fail_after(20):
                code = await alive.wait()
            raw_btc = await _raw_epochs(prefix)
            nursery.cancel_scope.cancel()
    for p in processes:
        if p.returncode is None:
            p.kill()
    assert code == 0
    assert handover_after <= TTL * 1.25 + 1.0, f"handover took {handover_after:.2f} s"
    assert new_epoch > old_epoch
    assert bus.stats.handovers >= 1
    resyncs = [
        e
        for e in events
        if isinstance(e, StatusEvent) and e.kind is StatusKind.RESYNCED and e.symbol == "BTC-USDC"
    ]
    assert resyncs, "the reader resynced from the new owner's checkpoint"
    for sym in ("BTC_USDC", "ETH_USDC"):
        books.assert_truth(sim.exchange, sym)
    # The new owner's first BTC book entry is a resync point; after it, no older epoch.
    first_new = next(i for i, (epoch, _) in enumerate(raw_btc) if epoch == new_epoch)
    assert raw_btc[first_new][1] in (b"c", b"snapshot")
    assert all(epoch >= new_epoch for epoch, _ in raw_btc[first_new:])


async def _raw_epochs(prefix: str) -> list[tuple[int, bytes]]:
    """(epoch, kind) of every BTC book entry still in the stream, oldest first."""
    import coredis

    client: coredis.Redis[bytes] = coredis.Redis.from_url(REDIS_URL)
    async with client:
        entries = await client.xrange(f"{prefix}:book:BTC-USDC")
    out = []
    for entry in entries:
        fields = entry.field_values
        meta = parse_meta(fields)
        kind = meta.kind
        if kind == b"e" and b'"type":"book_snapshot"' in fields[b"d"][:40]:
            kind = b"snapshot"
        out.append((meta.epoch, kind))
    return out
