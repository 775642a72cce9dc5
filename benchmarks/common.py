"""Shared pieces: the benchmark market, machine facts, RSS, statistics and book checks."""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

from backpack_actors.core.symbols import MarketInfo, MarketTable

__all__ = [
    "BenchmarkFailure",
    "ccxt_market",
    "ccxt_markets",
    "check_book",
    "decimal_sides",
    "machine",
    "market_info",
    "median",
    "percentiles",
    "rss_kib",
]


class BenchmarkFailure(AssertionError):
    """A benchmarked path produced a wrong answer: its numbers mean nothing."""


def ccxt_market(symbol: str = "BTC_USDC") -> dict[str, Any]:
    """A raw ``/api/v1/markets`` item for ``symbol`` (tick 0.01, step 0.0001), as ccxt parses it."""
    base, quote = symbol.split("_")[:2]
    return {
        "baseSymbol": base,
        "createdAt": "2025-01-21T06:34:54.691858",
        "filters": {
            "price": {
                "maxPrice": None,
                "minPrice": "0.01",
                "tickSize": "0.01",
            },
            "quantity": {"maxQuantity": None, "minQuantity": "0.0001", "stepSize": "0.0001"},
        },
        "fundingInterval": None,
        "marketType": "SPOT",
        "orderBookState": "Open",
        "quoteSymbol": quote,
        "symbol": symbol,
    }


def ccxt_markets(symbol: str = "BTC_USDC") -> dict[str, Any]:
    """ccxt's parsed ``markets`` holding just ``symbol`` (no network)."""
    import ccxt

    exchange = ccxt.backpack()
    exchange.set_markets(exchange.parse_markets([ccxt_market(symbol)]))
    markets: dict[str, Any] = exchange.markets
    return markets


def market_info(ccxt_markets: Mapping[str, Mapping[str, Any]], symbol: str) -> MarketInfo:
    """Our :class:`MarketInfo` for ``symbol``, built from ccxt's parsed markets like the feed."""
    return MarketTable.from_ccxt_markets(ccxt_markets).resolve(symbol)


def rss_kib() -> int:
    """Resident set size of this process in KiB (``VmRSS``)."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("VmRSS not found in /proc/self/status")


def percentiles(samples_ns: Sequence[int], points: Sequence[float]) -> list[float]:
    """Nearest-rank percentiles of nanosecond samples, in microseconds."""
    ordered = sorted(samples_ns)
    n = len(ordered)
    out = []
    for p in points:
        index = min(n - 1, max(0, round(p / 100 * n) - 1))
        out.append(ordered[index] / 1000)
    return out


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def check_book(
    path: str,
    bids: Mapping[Any, Any],
    asks: Mapping[Any, Any],
    truth_bids: Mapping[Any, Any],
    truth_asks: Mapping[Any, Any],
) -> None:
    """Raise :class:`BenchmarkFailure` unless both sides equal the ground truth exactly."""
    for side, got, want in (("bids", bids, truth_bids), ("asks", asks, truth_asks)):
        if dict(got) != dict(want):
            missing = sorted(set(want) - set(got))[:3]
            extra = sorted(set(got) - set(want))[:3]
            wrong = sorted(p for p in set(got) & set(want) if got[p] != want[p])[:3]
            raise BenchmarkFailure(
                f"{path}: final {side} differ from the ground truth "
                f"({len(got)} vs {len(want)} levels; missing {missing}, extra {extra}, "
                f"wrong sizes at {wrong})"
            )


def decimal_sides(
    levels_bids: Sequence[Sequence[str]], levels_asks: Sequence[Sequence[str]]
) -> tuple[dict[Decimal, Decimal], dict[Decimal, Decimal]]:
    bids = {Decimal(p): Decimal(s) for p, s in levels_bids if Decimal(s)}
    asks = {Decimal(p): Decimal(s) for p, s in levels_asks if Decimal(s)}
    return bids, asks


def machine() -> dict[str, str]:
    """Facts about this machine for the report."""
    model = "unknown"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=False,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    import ccxt
    import msgspec
    import trio

    return {
        "cpus": str(os.cpu_count()),
        "cpu": model,
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "platform": platform.platform(),
        "versions": f"msgspec {msgspec.__version__}, trio {trio.__version__}, "
        f"ccxt {ccxt.__version__}",
        "commit": commit or "unknown",
        "command": "python -m benchmarks " + " ".join(sys.argv[1:]),
    }
