"""A seeded generator of a realistic Backpack public stream with an exact ground-truth book.

The workload is the one in the project's reference benchmark: a ``/api/v1/depth`` snapshot with
about 500 levels a side (tick 0.01, step 0.0001), then frames exactly as the exchange sends them
(compact JSON, keys sorted, prices and sizes as strings, ``"0.00000"`` for a removal): 85% depth
deltas with 1-5 level changes (1.65 on average; ``U`` = previous ``u`` + 1, ``u > U`` on 20%;
some removals of levels the book does not hold) and 15% trades.

The generator keeps the book in integer ticks and steps, so its ground truth is exact; it never
crosses the book. Frames are produced lazily, so a million-frame run holds no frame list.
"""

from __future__ import annotations

import json
import random
from bisect import bisect_left, insort
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal

__all__ = ["GroundTruth", "StreamGenerator", "Workload", "make_workload"]

_TICKS_PER_UNIT = 100
_STEPS_PER_UNIT = 10_000
_LEVEL_WEIGHTS = (0.57, 0.25, 0.11, 0.05, 0.02)
"""Level changes per delta, 1..5 (mean 1.70 drawn; about 1.65 after the few that do not fit)."""


def _price(ticks: int) -> str:
    return f"{ticks // _TICKS_PER_UNIT}.{ticks % _TICKS_PER_UNIT:02d}"


def _size(steps: int) -> str:
    # The exchange drops trailing zeros of sizes ("0.695") and writes a removal as "0.00000".
    if steps == 0:
        return "0.00000"
    text = f"{steps // _STEPS_PER_UNIT}.{steps % _STEPS_PER_UNIT:04d}".rstrip("0")
    return text + "0" if text.endswith(".") else text


@dataclass(frozen=True)
class GroundTruth:
    """What every correct consumer of the stream must end with."""

    bids: dict[Decimal, Decimal]
    asks: dict[Decimal, Decimal]
    last_update_id: int
    last_trade_id: int | None
    depth_frames: int
    trade_frames: int
    level_changes: int
    merged_deltas: int
    absent_removals: int
    frame_bytes: int

    @property
    def frames(self) -> int:
        return self.depth_frames + self.trade_frames

    def float_sides(self) -> tuple[dict[float, float], dict[float, float]]:
        """The book as floats (how ccxt stores it), for comparing ccxt's final book."""
        return (
            {float(p): float(s) for p, s in self.bids.items()},
            {float(p): float(s) for p, s in self.asks.items()},
        )


class StreamGenerator:
    """Seeded Backpack stream: call :meth:`snapshot_json` once, then iterate :meth:`frames`."""

    def __init__(
        self,
        seed: int,
        *,
        symbol: str = "BTC_USDC",
        levels: int = 500,
        mid_ticks: int = 387_025,
        first_update_id: int = 1_345_937_435,
        first_trade_id: int = 10_782_548,
        start_us: int = 1_754_903_057_555_305,
        trade_share: float = 0.15,
        merged_share: float = 0.20,
        absent_removal_share: float = 0.05,
    ) -> None:
        self.symbol = symbol
        self._rng = random.Random(seed)
        self._target = levels
        self._trade_share = trade_share
        self._merged_share = merged_share
        self._absent_share = absent_removal_share
        self._bids: dict[int, int] = {}
        self._asks: dict[int, int] = {}
        # Ascending tick lists: the best bid is the last bid tick, the best ask the first.
        self._bid_ticks: list[int] = []
        self._ask_ticks: list[int] = []
        self._update_id = first_update_id
        self._trade_id = first_trade_id
        self._last_trade_id: int | None = None
        self._order_id = 5_121_857_125
        self._now_us = start_us
        self._depth_frames = 0
        self._trade_frames = 0
        self._level_changes = 0
        self._merged = 0
        self._absent = 0
        self._bytes = 0
        self._seed_book(mid_ticks)
        self._depth_stream = f"depth.{symbol}"
        self._trade_stream = f"trade.{symbol}"

    # -- book --------------------------------------------------------------------------------

    def _seed_book(self, mid: int) -> None:
        rng = self._rng
        # About 74% of ticks near the top hold a level, as in the recorded sample.
        tick = mid
        while len(self._bids) < self._target:
            if rng.random() < 0.74:
                self._bids[tick] = self._random_size()
            tick -= 1
        tick = mid + 1
        while len(self._asks) < self._target:
            if rng.random() < 0.74:
                self._asks[tick] = self._random_size()
            tick += 1
        self._bid_ticks = sorted(self._bids)
        self._ask_ticks = sorted(self._asks)

    def _random_size(self) -> int:
        rng = self._rng
        if rng.random() < 0.15:
            return rng.randint(10 * _STEPS_PER_UNIT, 150 * _STEPS_PER_UNIT)
        return rng.randint(1, 20 * _STEPS_PER_UNIT)

    def snapshot(self) -> dict[str, object]:
        """The REST depth body as the exchange sends it (both sides ascending by price)."""
        return {
            "asks": [[_price(t), _size(self._asks[t])] for t in self._ask_ticks],
            "bids": [[_price(t), _size(self._bids[t])] for t in self._bid_ticks],
            "lastUpdateId": str(self._update_id),
            "timestamp": self._now_us,
        }

    def snapshot_json(self) -> str:
        return json.dumps(self.snapshot(), separators=(",", ":"))

    def _index_from_top(self, count: int) -> int:
        # Activity concentrates near the top of the book.
        return min(count - 1, int(self._rng.expovariate(1 / 25)))

    def _change(self, is_bid: bool, taken: set[int]) -> tuple[int, int] | None:
        """One level change on one side as ``(tick, new size steps)``; None if none fits."""
        rng = self._rng
        sizes = self._bids if is_bid else self._asks
        ticks = self._bid_ticks if is_bid else self._ask_ticks
        count = len(ticks)
        roll = rng.random()
        if roll < self._absent_share:
            # A removal of a level the book does not hold (the exchange sends these).
            for _ in range(8):
                off = int(rng.expovariate(1 / 40))
                tick = ticks[-1] - off if is_bid else ticks[0] + off
                if tick not in sizes and tick not in taken and not self._crosses(is_bid, tick):
                    self._absent += 1
                    return tick, 0
            return None
        kind = "update"
        if roll < 0.27:
            kind = "insert"
        elif roll < 0.45:
            kind = "remove"
        if kind == "remove" and count <= self._target - 20:
            kind = "insert"
        elif kind == "insert" and count >= self._target + 20:
            kind = "remove"
        if kind == "insert":
            best_other = self._ask_ticks[0] if is_bid else self._bid_ticks[-1]
            for _ in range(8):
                off = int(rng.expovariate(1 / 12))
                tick = best_other - 1 - off if is_bid else best_other + 1 + off
                if tick not in sizes and tick not in taken:
                    return self._set(is_bid, tick, self._random_size())
            kind = "update"
        for _ in range(8):
            index = self._index_from_top(count)
            tick = ticks[count - 1 - index] if is_bid else ticks[index]
            if tick in taken:
                continue
            if kind == "remove" and count > 1:
                return self._set(is_bid, tick, 0)
            return self._set(is_bid, tick, self._random_size())
        return None

    def _crosses(self, is_bid: bool, tick: int) -> bool:
        return tick >= self._ask_ticks[0] if is_bid else tick <= self._bid_ticks[-1]

    def _set(self, is_bid: bool, tick: int, steps: int) -> tuple[int, int]:
        sizes = self._bids if is_bid else self._asks
        ticks = self._bid_ticks if is_bid else self._ask_ticks
        if steps:
            if tick not in sizes:
                insort(ticks, tick)
            sizes[tick] = steps
        else:
            del sizes[tick]
            del ticks[bisect_left(ticks, tick)]
        return tick, steps

    # -- frames ------------------------------------------------------------------------------

    def _depth_frame(self) -> str:
        rng = self._rng
        n = rng.choices((1, 2, 3, 4, 5), _LEVEL_WEIGHTS)[0]
        bids: list[tuple[int, int]] = []
        asks: list[tuple[int, int]] = []
        taken_bids: set[int] = set()
        taken_asks: set[int] = set()
        for _ in range(n):
            is_bid = rng.random() < 0.5
            taken = taken_bids if is_bid else taken_asks
            change = self._change(is_bid, taken)
            if change is None:
                continue
            taken.add(change[0])
            (bids if is_bid else asks).append(change)
        self._level_changes += len(bids) + len(asks)
        first = self._update_id + 1
        last = first
        if rng.random() < self._merged_share:
            last = first + rng.randint(1, 3)
            self._merged += 1
        self._update_id = last
        self._now_us += rng.randint(50, 1500)
        engine = self._now_us - rng.randint(200, 2000)
        a = ",".join(f'["{_price(t)}","{_size(s)}"]' for t, s in sorted(asks))
        b = ",".join(f'["{_price(t)}","{_size(s)}"]' for t, s in sorted(bids))
        self._depth_frames += 1
        return (
            f'{{"data":{{"E":{self._now_us},"T":{engine},"U":{first},"a":[{a}],"b":[{b}],'
            f'"e":"depth","s":"{self.symbol}","u":{last}}},"stream":"{self._depth_stream}"}}'
        )

    def _trade_frame(self) -> str:
        rng = self._rng
        maker_buys = rng.random() < 0.5
        # The aggressor sold into the best bid when the buyer was the maker.
        tick = self._bid_ticks[-1] if maker_buys else self._ask_ticks[0]
        qty = rng.randint(1, 5 * _STEPS_PER_UNIT)
        self._now_us += rng.randint(50, 1500)
        engine = self._now_us - rng.randint(200, 2000)
        trade_id = self._trade_id
        self._trade_id += 1
        self._last_trade_id = trade_id
        self._order_id += rng.randint(1, 900)
        buyer = self._order_id
        seller = self._order_id - rng.randint(1, 5000)
        self._trade_frames += 1
        return (
            f'{{"data":{{"E":{self._now_us},"T":{engine},"a":"{seller}","b":"{buyer}",'
            f'"e":"trade","m":{"true" if maker_buys else "false"},"p":"{_price(tick)}",'
            f'"q":"{_size(qty)}","s":"{self.symbol}","t":{trade_id}}},'
            f'"stream":"{self._trade_stream}"}}'
        )

    def frames(self, count: int) -> Iterator[str]:
        """The next ``count`` frames (text, as the WebSocket delivers them)."""
        rng = self._rng
        share = self._trade_share
        for _ in range(count):
            frame = self._trade_frame() if rng.random() < share else self._depth_frame()
            self._bytes += len(frame)
            yield frame

    def truth(self) -> GroundTruth:
        """The exact book and counters after every frame produced so far."""

        def side(sizes: dict[int, int]) -> dict[Decimal, Decimal]:
            return {Decimal(t).scaleb(-2): Decimal(s).scaleb(-4) for t, s in sizes.items() if s}

        return GroundTruth(
            bids=side(self._bids),
            asks=side(self._asks),
            last_update_id=self._update_id,
            last_trade_id=self._last_trade_id,
            depth_frames=self._depth_frames,
            trade_frames=self._trade_frames,
            level_changes=self._level_changes,
            merged_deltas=self._merged,
            absent_removals=self._absent,
            frame_bytes=self._bytes,
        )


@dataclass(frozen=True)
class Workload:
    """A snapshot, the frames after it, and the ground truth after the last frame."""

    symbol: str
    snapshot_json: str
    frames: list[str]
    truth: GroundTruth


def make_workload(seed: int, frames: int, *, symbol: str = "BTC_USDC") -> Workload:
    """Generate a whole workload in memory."""
    gen = StreamGenerator(seed, symbol=symbol)
    snapshot = gen.snapshot_json()
    texts = list(gen.frames(frames))
    return Workload(symbol, snapshot, texts, gen.truth())
