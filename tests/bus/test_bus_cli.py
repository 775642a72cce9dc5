"""The ``bus`` commands: ``bus status --json`` shows the streams, the owner and named readers'
lag, ``bus read`` prints the verified events as the feed's JSON Lines, an unreachable Redis is
exit 4."""

from __future__ import annotations

import json
import subprocess
import sys
from functools import partial
from pathlib import Path

import trio

from backpack_actors.bus.cli import bus_status, format_status
from backpack_actors.bus.lease import ShardCoordinator
from backpack_actors.bus.reader import BusFeed
from backpack_actors.bus.schema import Keys
from backpack_actors.sinks.jsonl import encode_event
from backpack_actors.sinks.redis import RedisStreamsSink, redis_client
from tests.bus.helpers import REDIS_URL, free_port, generate, isolated_prefix, per_stream

ROOT = Path(__file__).resolve().parents[2]


async def _cli(*args: str) -> subprocess.CompletedProcess[bytes]:
    command = [sys.executable, "-m", "backpack_actors", "bus", *args]
    with trio.fail_after(60):
        return await trio.run_process(command, cwd=ROOT, capture_stdout=True, check=True)


async def test_bus_status_and_bus_read() -> None:
    emitted, _ = await trio.to_thread.run_sync(partial(generate, ["BTC-USDC"], events=400))
    with trio.fail_after(90):
        async with isolated_prefix() as prefix, redis_client(REDIS_URL) as client:
            keys = Keys(prefix)
            leases = ShardCoordinator(client, ["BTC-USDC"], keys=keys, publisher_id="pub-1", ttl=30)
            await leases.tick()
            sink = RedisStreamsSink(client, keys=keys, ownership=leases)
            await sink.publish(emitted)
            status = json.loads((await _cli("status", "--json", "--redis", REDIS_URL, "--prefix",
                                            prefix)).stdout)  # fmt: skip
            row = status["symbols"]["BTC-USDC"]
            assert row["owner"] == "pub-1"
            assert row["epoch"] == leases.owned["BTC-USDC"]
            assert row["book_length"] == await client.xlen(keys.book("BTC-USDC"))
            assert row["trades_length"] == await client.xlen(keys.trades("BTC-USDC"))
            assert "pub-1" in status["publishers"]
            book = per_stream(emitted)[("BTC-USDC", "book")]
            read = await _cli("read", "--redis", REDIS_URL, "--prefix", prefix, "--symbols",
                              "btc_usdc", "--max-events", "20")  # fmt: skip
            lines = read.stdout.splitlines(keepends=True)
            assert len(lines) == 20
            # The reader starts at the newest resync point: the stream's last snapshot.
            got_book = [line for line in lines if b'"type":"book_' in line]
            start = len(book) - 1 - [type(e).__name__ for e in book][::-1].index("BookSnapshot")
            want = [line for e in book[start:] if b'"type":"book_' in (line := encode_event(e))]
            assert got_book == want[: len(got_book)]
            assert len(got_book) > 5
            await leases.release_all()


async def test_unreachable_redis_is_exit_4_without_the_password() -> None:
    url = f"redis://:hunter2@127.0.0.1:{free_port()}/0"
    command = [sys.executable, "-m", "backpack_actors", "bus", "status", "--redis", url]
    with trio.fail_after(60):
        done = await trio.run_process(
            command, cwd=ROOT, capture_stdout=True, capture_stderr=True, check=False
        )
    assert done.returncode == 4
    assert b"could not reach Redis at redis://:***@127.0.0.1" in done.stderr
    assert b"hunter2" not in done.stderr + done.stdout


async def test_bus_status_shows_a_named_readers_lag() -> None:
    emitted, _ = await trio.to_thread.run_sync(partial(generate, ["BTC-USDC"], events=400))
    with trio.fail_after(90):
        async with isolated_prefix() as prefix, redis_client(REDIS_URL) as client:
            keys = Keys(prefix)
            sink = RedisStreamsSink(client, keys=keys)
            reader = BusFeed(client, ["BTC-USDC"], keys=keys, block=0.05, count=50, name="r1")
            await reader.start()
            await sink.publish(emitted[:200])
            assert await reader.read_batch()
            await reader.report_position()
            await sink.publish(emitted[200:])
            behind = (await bus_status(REDIS_URL, prefix))["readers"]["r1"]
            assert behind["lag_ms"]["book:BTC-USDC"] > 0, behind
            while await reader.read_batch():
                pass
            await reader.report_position()
            caught_up = (await bus_status(REDIS_URL, prefix))["readers"]["r1"]
            assert caught_up["lag_ms"] == {"book:BTC-USDC": 0, "trades:BTC-USDC": 0}
            assert "r1" in format_status(await bus_status(REDIS_URL, prefix))
