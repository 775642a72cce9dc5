"""Shared pieces of the bus tests: isolated key prefixes on the real Redis, event generation
against the seeded simulator, a private redis-server, and per-stream event grouping."""

from __future__ import annotations

import shutil
import socket
import subprocess
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import coredis
import trio
import trio.testing

from backpack_actors.bus.schema import TRADE_STATUS_KINDS
from backpack_actors.core.book import OrderBook
from backpack_actors.core.events import (
    BookDelta,
    BookSnapshot,
    Event,
    ProtocolErrorEvent,
    StatusEvent,
    Trade,
)
from backpack_actors.testing import simulate_feed

REDIS_URL = "redis://127.0.0.1:6379/0"


def new_prefix() -> str:
    return f"bpatest:{uuid.uuid4().hex[:10]}"


@asynccontextmanager
async def isolated_prefix(url: str = REDIS_URL) -> AsyncIterator[str]:
    """A fresh key prefix, its keys deleted afterwards."""
    prefix = new_prefix()
    try:
        yield prefix
    finally:
        with trio.move_on_after(10, shield=True):
            client: coredis.Redis[bytes] = coredis.Redis.from_url(url)
            async with client:
                keys = [k async for k in client.scan_iter(match=f"{prefix}:*")]
                if keys:
                    await client.delete(keys)


def stream_of(event: Event) -> tuple[str, str]:
    """(symbol, "book" | "trades" | "channels"): the per-symbol stream an event travels in."""
    if isinstance(event, Trade) or (
        isinstance(event, StatusEvent) and event.kind in TRADE_STATUS_KINDS
    ):
        return event.symbol, "trades"
    if isinstance(event, (BookSnapshot, BookDelta, StatusEvent)):
        return event.symbol, "book"
    return event.symbol, "channels"


def per_stream(events: Sequence[Event]) -> dict[tuple[str, str], list[Event]]:
    out: dict[tuple[str, str], list[Event]] = {}
    for event in events:
        if event.symbol and not isinstance(event, ProtocolErrorEvent):
            out.setdefault(stream_of(event), []).append(event)
    return out


def generate(
    symbols: Sequence[str],
    *,
    events: int,
    seed: int = 7,
    rate: float = 50.0,
    on_ready: Callable[[Any], None] | None = None,
) -> tuple[list[Event], Any]:
    """Events of a seeded simulator run (virtual time, in its own trio run) and its exchange."""
    captured: list[Any] = []

    def ready(exchange: Any) -> None:
        captured.append(exchange)
        if on_ready is not None:
            on_ready(exchange)

    async def run() -> list[Event]:
        return await simulate_feed(
            symbols,
            seed=seed,
            rate=rate,
            events=events,
            on_ready=ready,
            config={"snapshot_interval": 0},
        )

    result = trio.run(run, clock=trio.testing.MockClock(autojump_threshold=0))
    return result, captured[0]


class Books:
    """A reader's books, applied as a user would (snapshots load, deltas apply)."""

    def __init__(self) -> None:
        self.books: dict[str, OrderBook] = {}
        self.last_id: dict[str, int] = {}

    def apply(self, event: Event) -> None:
        sym = getattr(event, "exchange_symbol", "")
        if isinstance(event, BookSnapshot):
            book = self.books.setdefault(sym, OrderBook())
            book.load(event.raw_bids, event.raw_asks)
            self.last_id[sym] = event.update_id
        elif isinstance(event, BookDelta):
            self.books[sym].apply(event.raw_bids, event.raw_asks)
            self.last_id[sym] = event.last_update_id

    def assert_truth(self, exchange: Any, sym: str) -> int:
        """The book equals the simulator's at the book's last update id."""
        last = self.last_id[sym]
        bids, asks = exchange.book_at(sym, last)
        got_bids, got_asks = self.books[sym].depth()
        assert _values(got_bids) == _values(bids), f"{sym} bids differ at {last}"
        assert _values(got_asks) == _values(asks), f"{sym} asks differ at {last}"
        return last


def _values(levels: Any) -> list[tuple[Any, Any]]:
    from decimal import Decimal

    return [(Decimal(str(p)), Decimal(str(s))) for p, s in levels]


class Watch:
    """Wakes waiters whenever a reader made progress; :meth:`until` waits for a condition."""

    def __init__(self) -> None:
        self._event = trio.Event()

    def poke(self) -> None:
        self._event.set()

    async def until(self, condition: Callable[[], bool]) -> None:
        while not condition():
            self._event = trio.Event()
            await self._event.wait()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PrivateRedis:
    """A redis-server of this test's own on a free port, keeping nothing on disk."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        binary = shutil.which("redis-server")
        assert binary is not None, "redis-server is on every machine of this project"
        self.process = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    async def wait_up(self) -> None:
        with trio.fail_after(10):
            while True:
                try:
                    stream = await trio.open_tcp_stream("127.0.0.1", self.port)
                except OSError:
                    await trio.sleep(0.02)
                    continue
                await stream.aclose()
                return

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait(timeout=10)
        self.process = None

    def stop(self) -> None:
        if self.process is not None:
            self.kill()
