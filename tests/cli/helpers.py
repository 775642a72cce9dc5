"""Subprocess plumbing and ground-truth checks for the CLI tests."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import trio

from backpack_actors.sim import SimConfig, SimExchange

ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "backpack_actors"]


async def run_cli(args: Sequence[str], *, cap: float = 30.0) -> subprocess.CompletedProcess[bytes]:
    """Run ``python -m backpack_actors ARGS`` to completion (capped), capturing both streams."""
    with trio.fail_after(cap):
        return await trio.run_process(
            [*CLI, *args], capture_stdout=True, capture_stderr=True, check=False, cwd=ROOT
        )


class LineReader:
    """Lines from a subprocess pipe, read as they come."""

    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self._stream = stream
        self._buffer = b""
        self.lines: list[str] = []

    async def next_line(self) -> str | None:
        """The next line (without the newline), or None at end of stream."""
        while b"\n" not in self._buffer:
            chunk = await self._stream.receive_some(65536)
            if not chunk:
                if self._buffer:
                    line, self._buffer = self._buffer, b""
                    self.lines.append(line.decode())
                    return self.lines[-1]
                return None
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        self.lines.append(line.decode())
        return self.lines[-1]

    async def until(self, predicate: Callable[[str], bool]) -> str:
        """Read lines until one satisfies ``predicate``; returns it."""
        while True:
            line = await self.next_line()
            if line is None:
                raise AssertionError(f"stream ended before the expected line; got {self.lines}")
            if predicate(line):
                return line

    async def drain(self) -> None:
        """Read to the end of the stream."""
        while await self.next_line() is not None:
            pass


def parse_jsonl(text: str) -> list[dict[str, Any]]:
    """Every line must be one complete JSON object; the text must end with a newline."""
    assert text.endswith("\n"), f"torn last line: {text[-200:]!r}"
    return [json.loads(line) for line in text.splitlines()]


def _side(levels: Sequence[tuple[Decimal, Decimal]]) -> dict[Decimal, Decimal]:
    return {price: size for price, size in levels}


def replay_books(
    events: list[dict[str, Any]],
) -> dict[str, tuple[int, dict[Decimal, Decimal], dict[Decimal, Decimal]]]:
    """Per exchange symbol: (last update id, bids, asks) rebuilt from snapshots and deltas.

    Asserts the deltas after each snapshot are contiguous (no missed or repeated update id).
    """
    books: dict[str, tuple[int, dict[Decimal, Decimal], dict[Decimal, Decimal]]] = {}
    for event in events:
        sym = str(event.get("exchange_symbol"))
        if event["type"] == "book_snapshot":
            bids = {Decimal(p): Decimal(q) for p, q in event["bids"]}
            asks = {Decimal(p): Decimal(q) for p, q in event["asks"]}
            books[sym] = (event["update_id"], bids, asks)
        elif event["type"] == "book_delta" and sym in books:
            last, bids, asks = books[sym]
            assert event["first_update_id"] == last + 1, (sym, last, event["first_update_id"])
            for levels, side in ((event["bids"], bids), (event["asks"], asks)):
                for p, q in levels:
                    if Decimal(q) == 0:
                        side.pop(Decimal(p), None)
                    else:
                        side[Decimal(p)] = Decimal(q)
            books[sym] = (event["last_update_id"], bids, asks)
    return books


def truth_exchange(seed: int, markets: Sequence[str]) -> SimExchange:
    """A paused simulator with the same seed: its books are the ground truth by update id."""
    return SimExchange(seed=seed, markets=list(markets), config=SimConfig(autostart=False))


def assert_matches_truth(exchange: SimExchange, events: list[dict[str, Any]], symbol: str) -> int:
    """The replayed book of ``symbol`` and every trade equal the seeded simulator's.

    Call from trio context (generation reads trio time). Returns the last update id checked.
    """
    books = replay_books(events)
    assert symbol in books, f"no book for {symbol}"
    last, bids, asks = books[symbol]
    while exchange.last_update_id(symbol) < last:
        exchange.generate(200, symbol)
    true_bids, true_asks = exchange.book_at(symbol, last)
    assert bids == _side(true_bids)
    assert asks == _side(true_asks)
    truth = {t.id: t for t in exchange.trades(symbol)}
    trades = [e for e in events if e["type"] == "trade" and e["exchange_symbol"] == symbol]
    for trade in trades:
        real = truth[trade["trade_id"]]
        assert Decimal(trade["price"]) == real.price
        assert Decimal(trade["amount"]) == real.quantity
        assert trade["side"] == ("sell" if real.is_buyer_maker else "buy")
    return last
