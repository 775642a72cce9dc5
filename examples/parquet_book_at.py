"""Rebuild an order book at a moment from a Parquet export, with DuckDB.

    python -m backpack_actors export session.jsonl.gz --format parquet --out data/
    python examples/parquet_book_at.py data/ BTC-USDC 1767225605000000

The book at time T (engine time, µs) is the last snapshot at or before T, plus every delta after
it up to T: one query for those rows, then absolute sizes applied in order (zero removes a level).
Prices and sizes come back as exact ``Decimal``s (``decimal128`` columns).
"""

from __future__ import annotations

import sys
from decimal import Decimal
from pathlib import Path

import duckdb

QUERY = """
with book as (
    select * from read_parquet(?, hive_partitioning = true) where symbol = ?
),
start as (
    select max(seq) as seq from book
    where is_snapshot and coalesce(engine_time_us, received_at_ns // 1000) <= ?
),
stop as (
    select max(seq) as seq from book where coalesce(engine_time_us, received_at_ns // 1000) <= ?
)
select book.seq, is_snapshot, side, price, size from book, start, stop
where book.seq >= start.seq and book.seq <= stop.seq
  and (book.seq = start.seq or not book.is_snapshot)
order by book.seq
"""


def book_at(
    export: str | Path, symbol: str, at_us: int
) -> tuple[list[tuple[Decimal, Decimal]], list[tuple[Decimal, Decimal]]]:
    """Bids (best first) and asks (best first) of ``symbol`` at engine time ``at_us``."""
    files = str(Path(export) / "channel=book" / "*" / "*" / "*.parquet")
    rows = duckdb.execute(QUERY, [files, symbol, at_us, at_us]).fetchall()
    sides: dict[str, dict[Decimal, Decimal]] = {"bid": {}, "ask": {}}
    for _seq, _snapshot, side, price, size in rows:
        if size == 0:
            sides[side].pop(price, None)
        else:
            sides[side][price] = size
    bids = sorted(sides["bid"].items(), reverse=True)
    asks = sorted(sides["ask"].items())
    return bids, asks


def main(argv: list[str]) -> int:
    export, symbol, at = argv
    bids, asks = book_at(export, symbol, int(at))
    for (bid_price, bid_size), (ask_price, ask_size) in zip(bids[:10], asks[:10], strict=False):
        print(f"{bid_size:>14} {bid_price:>14} | {ask_price:<14} {ask_size:<14}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
