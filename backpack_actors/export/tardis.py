"""Tardis-style gzip CSV: ``incremental_book_L2``, ``trades``, ``book_snapshot_25/5``, ``quotes``.

Files are named as Tardis's downloads are, ``backpack_<data type>_<YYYY-MM-DD>_<SYMBOL>.csv.gz``
(the exchange's symbol id, the date of the rows' exchange timestamps, UTC), with Tardis's column
names. Times are µs since the epoch: ``timestamp`` is the exchange's (trades: engine time ``T``;
deltas: emit time ``E``; snapshots: the book's engine time, else the receipt time) and
``local_timestamp`` the receipt time. Prices and sizes are the exchange's text, unchanged.

Book rows follow Tardis's rule: a run of ``is_snapshot=true`` rows replaces the book (so a resync
after a gap or a reconnect resets a reader's book), other rows set a level's absolute size (zero
removes it). A snapshot that directly follows another (no delta rows between) or is empty could
not reset a reader that way; it is written as the level changes from the book before it
(``is_snapshot=false``), which rebuilds the same book. ``book_snapshot_N`` and ``quotes`` rows are
written whenever the top N levels (or the best bid/ask) change, from the book those rows rebuild.

Interval snapshots (config ``book_snapshots {depth: N, interval_ms: M}``) are written as
``book_snapshot_N_Mms``, the name tardis-machine and tardis-dev give top-N snapshots taken every
M ms, with the ``book_snapshot_N`` columns: one row per snapshot, ``timestamp`` its boundary,
``local_timestamp`` the receipt of the update that closed the interval. Whole-book ones (N = 0)
have no fixed column count and are left out (the Parquet export has them).
gzip headers carry no name or time, so the bytes depend only on the rows.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterable
from decimal import Decimal
from pathlib import Path
from typing import IO, Final

from backpack_actors.core.book import OrderBook
from backpack_actors.core.events import (
    BookDelta,
    BookSnapshot,
    Event,
    IntervalSnapshot,
    RawLevel,
    Trade,
)
from backpack_actors.export.columns import received_at_ns, utc_date

__all__ = ["DATA_TYPES", "EXCHANGE", "TardisWriter", "tardis_header"]

EXCHANGE: Final = "backpack"
DATA_TYPES: Final = (
    "incremental_book_L2",
    "trades",
    "book_snapshot_25",
    "book_snapshot_5",
    "quotes",
)
_PREFIX = ("exchange", "symbol", "timestamp", "local_timestamp")


def tardis_header(data_type: str) -> list[str]:
    """The CSV columns of one data type, as Tardis names them."""
    if data_type == "incremental_book_L2":
        return [*_PREFIX, "is_snapshot", "side", "price", "amount"]
    if data_type == "trades":
        return [*_PREFIX, "id", "side", "price", "amount"]
    if data_type == "quotes":
        return [*_PREFIX, "ask_amount", "ask_price", "bid_price", "bid_amount"]
    # book_snapshot_<N> (on every change) or book_snapshot_<N>_<M>ms (every M ms).
    depth = int(data_type.removeprefix("book_snapshot_").split("_")[0])
    levels = []
    for i in range(depth):
        levels += [f"asks[{i}].price", f"asks[{i}].amount", f"bids[{i}].price", f"bids[{i}].amount"]
    return [*_PREFIX, *levels]


class _Book:
    __slots__ = ("after_snapshot", "book", "quote", "tops")

    def __init__(self) -> None:
        self.book = OrderBook()
        self.after_snapshot = False
        """The symbol's last incremental_book_L2 row was a snapshot row."""
        self.tops: dict[int, tuple[tuple[RawLevel, ...], tuple[RawLevel, ...]]] = {}
        self.quote: tuple[RawLevel | None, RawLevel | None] | None = None


class TardisWriter:
    """Writes events as Tardis CSV files under ``out``; :meth:`close` finishes them."""

    def __init__(
        self, out: Path, *, compresslevel: int = 6, interval_ms: int | None = None
    ) -> None:
        self.out = out
        self.compresslevel = compresslevel
        self.interval_ms = interval_ms
        """The ``book_snapshots`` interval the interval snapshots were taken at (their file name
        says it; the events do not carry it)."""
        self.rows: dict[str, int] = dict.fromkeys(DATA_TYPES, 0)
        self.skipped_whole_books = 0
        """Whole-book interval snapshots, left out (see the module docstring)."""
        self.files: list[Path] = []
        self._open: dict[tuple[str, str, str], tuple[IO[bytes], gzip.GzipFile]] = {}
        self._books: dict[str, _Book] = {}

    def _file(self, data_type: str, symbol: str, date: str) -> gzip.GzipFile:
        key = (data_type, symbol, date)
        opened = self._open.get(key)
        if opened is None:
            path = self.out / f"{EXCHANGE}_{data_type}_{date}_{symbol}.csv.gz"
            self.out.mkdir(parents=True, exist_ok=True)
            # No file name and mtime 0 in the gzip header: two exports are byte-identical.
            raw = open(path, "wb")  # noqa: SIM115  (closed with the gzip stream, in close())
            stream = gzip.GzipFile(
                filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=self.compresslevel
            )
            stream.write((",".join(tardis_header(data_type)) + "\n").encode())
            opened = self._open[key] = (raw, stream)
            self.files.append(path)
        return opened[1]

    def _emit(self, data_type: str, symbol: str, us: int, lines: list[str]) -> None:
        if lines:
            self._file(data_type, symbol, utc_date(us)).write("".join(lines).encode())
            self.rows[data_type] = self.rows.get(data_type, 0) + len(lines)

    def write(self, events: Iterable[Event]) -> None:
        """Write the rows of ``events`` (in order)."""
        for event in events:
            if isinstance(event, Trade):
                self._trade(event)
            elif isinstance(event, BookSnapshot | BookDelta):
                self._book(event)
            elif isinstance(event, IntervalSnapshot):
                self._interval(event)

    def _interval(self, view: IntervalSnapshot) -> None:
        depth = view.depth
        if depth is None:
            self.skipped_whole_books += 1
            return
        if self.interval_ms is None:
            raise ValueError("interval snapshots need the writer's interval_ms (book_snapshots)")
        symbol = view.exchange_symbol
        us = view.engine_time_us
        local = received_at_ns(view) // 1000
        line = f"{EXCHANGE},{symbol},{us},{local}," + _levels((view.raw_bids, view.raw_asks), depth)
        self._emit(f"book_snapshot_{depth}_{self.interval_ms}ms", symbol, us, [line])

    def _trade(self, trade: Trade) -> None:
        local = received_at_ns(trade) // 1000
        us = trade.engine_time_us
        line = (
            f"{EXCHANGE},{trade.exchange_symbol},{us},{local},{trade.trade_id},"
            f"{trade.side.value},{trade.raw_price},{trade.raw_amount}\n"
        )
        self._emit("trades", trade.exchange_symbol, us, [line])

    def _book(self, event: BookSnapshot | BookDelta) -> None:
        symbol = event.exchange_symbol
        local = received_at_ns(event) // 1000
        state = self._books.get(symbol)
        if state is None:
            state = self._books[symbol] = _Book()
        if isinstance(event, BookSnapshot):
            us = event.engine_time_us if event.engine_time_us is not None else local
            bids: tuple[RawLevel, ...] = event.raw_bids
            asks: tuple[RawLevel, ...] = event.raw_asks
            if state.after_snapshot or not (bids or asks):
                # A run of snapshot rows right after another would merge with it for a Tardis
                # reader, and an empty one has no rows to reset with: write the change instead.
                flag = "false"
                bids, asks = _difference(state.book, event)
            else:
                flag = "true"
            state.book.load(event.raw_bids, event.raw_asks)
        else:
            us = event.event_time_us
            flag = "false"
            bids, asks = event.raw_bids, event.raw_asks
            state.book.apply(bids, asks)
        head = f"{EXCHANGE},{symbol},{us},{local},{flag},"
        lines = [f"{head}bid,{p},{s}\n" for p, s in bids]
        lines += [f"{head}ask,{p},{s}\n" for p, s in asks]
        if lines:
            state.after_snapshot = flag == "true"
        self._emit("incremental_book_L2", symbol, us, lines)
        prefix = f"{EXCHANGE},{symbol},{us},{local},"
        for depth in (25, 5):
            top = state.book.depth(depth)
            if state.tops.get(depth) != top:
                state.tops[depth] = top
                self._emit(f"book_snapshot_{depth}", symbol, us, [prefix + _levels(top, depth)])
        quote = (state.book.best_ask(), state.book.best_bid())
        if quote != state.quote:
            state.quote = quote
            ask, bid = quote
            ask_price, ask_size = ask if ask is not None else ("", "")
            bid_price, bid_size = bid if bid is not None else ("", "")
            line = f"{prefix}{ask_size},{ask_price},{bid_price},{bid_size}\n"
            self._emit("quotes", symbol, us, [line])

    def close(self) -> None:
        """Finish every file (idempotent)."""
        streams, self._open = self._open, {}
        for raw, stream in streams.values():
            try:
                stream.close()
            finally:
                raw.close()


def _difference(
    book: OrderBook, snapshot: BookSnapshot
) -> tuple[tuple[RawLevel, ...], tuple[RawLevel, ...]]:
    """The level changes (absolute sizes, ``0`` removes) that turn ``book`` into ``snapshot``."""
    current_bids, current_asks = book.depth()
    sides = []
    for current, target in ((current_bids, snapshot.raw_bids), (current_asks, snapshot.raw_asks)):
        wanted = {Decimal(p): (p, s) for p, s in target}
        held = {Decimal(p): (p, s) for p, s in current}
        changes = [(p, "0") for value, (p, _) in held.items() if value not in wanted]
        for value, (p, s) in wanted.items():
            old = held.get(value)
            if old is None or Decimal(old[1]) != Decimal(s):
                changes.append((p, s))
        sides.append(tuple(changes))
    return sides[0], sides[1]


def _levels(top: tuple[tuple[RawLevel, ...], tuple[RawLevel, ...]], depth: int) -> str:
    bids, asks = top
    cells = []
    for i in range(depth):
        ask = asks[i] if i < len(asks) else ("", "")
        bid = bids[i] if i < len(bids) else ("", "")
        cells += [ask[0], ask[1], bid[0], bid[1]]
    return ",".join(cells) + "\n"
