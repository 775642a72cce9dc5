"""Tardis CSV export: the incremental book rebuilds the feed's books; trades are the trades."""

from __future__ import annotations

import csv
import gzip
from decimal import Decimal
from pathlib import Path

import trio

from backpack_actors.core.book import OrderBook
from backpack_actors.core.events import BookDelta, BookSnapshot, Event, Trade
from backpack_actors.export import export_recording
from backpack_actors.export.tardis import tardis_header

Recorded = tuple[Path, list[Event]]


def _rows(out: Path, data_type: str, symbol: str) -> list[dict[str, str]]:
    rows: list[dict[str, str]] = []
    for path in sorted(out.glob(f"backpack_{data_type}_*_{symbol}.csv.gz")):
        with gzip.open(path, "rt", newline="") as stream:
            reader = csv.DictReader(stream)
            assert reader.fieldnames == tardis_header(data_type)
            rows.extend(reader)
    return rows


def _received_us(trade: Trade) -> int:
    ns = getattr(trade, "received_at_ns", None)
    if isinstance(ns, int):
        return ns // 1000
    return int(Decimal(repr(trade.received_at)) * 1_000_000)


def _levels(book: OrderBook) -> tuple[dict[Decimal, Decimal], dict[Decimal, Decimal]]:
    return book.as_dicts()


async def test_incremental_book_rebuilds_the_books_at_every_snapshot(
    faulty_recording: Recorded, tmp_path: Path
) -> None:
    path, events = faulty_recording
    with trio.fail_after(60):
        await export_recording(path, tmp_path, format="tardis-csv")
    for symbol in ("BTC_USDC", "ETH_USDC"):
        mine = [
            e
            for e in events
            if isinstance(e, BookSnapshot | BookDelta) and e.exchange_symbol == symbol
        ]
        # The feed's books, from its events, just before each snapshot written as a run of
        # snapshot rows (one not right after another, and not empty), and at the end.
        feed_books = []
        runs = []
        book = OrderBook()
        after_snapshot = False
        for event in mine:
            if isinstance(event, BookSnapshot):
                if not after_snapshot and (event.raw_bids or event.raw_asks):
                    feed_books.append(_levels(book))
                    runs.append(event)
                    after_snapshot = True
                book.load(event.raw_bids, event.raw_asks)
            else:
                book.apply(event.raw_bids, event.raw_asks)
                after_snapshot = after_snapshot and not (event.raw_bids or event.raw_asks)
        feed_books.append(_levels(book))
        snapshots = [e for e in mine if isinstance(e, BookSnapshot)]
        assert any(s.reason == "resync" for s in runs)
        assert len(runs) < len(snapshots)  # the run has snapshots written as changes too

        # Tardis's rule: a snapshot row after a non-snapshot row starts a new book.
        csv_books = []
        csv_snapshots: list[list[tuple[str, str, str]]] = []
        rebuilt = OrderBook()
        previous_snapshot = False
        for row in _rows(tmp_path, "incremental_book_L2", symbol):
            snapshot = row["is_snapshot"] == "true"
            level = [(row["price"], row["amount"])]
            if snapshot and not previous_snapshot:
                csv_books.append(_levels(rebuilt))
                rebuilt.clear()
                csv_snapshots.append([])
            if snapshot:
                csv_snapshots[-1].append((row["side"], row["price"], row["amount"]))
            if row["side"] == "bid":
                rebuilt.apply(level, [])
            else:
                rebuilt.apply([], level)
            previous_snapshot = snapshot
        csv_books.append(_levels(rebuilt))
        assert len(csv_snapshots) == len(runs) > 2
        assert csv_books == feed_books
        for got, snap in zip(csv_snapshots, runs, strict=True):
            want = [("bid", p, s) for p, s in snap.raw_bids] + [
                ("ask", p, s) for p, s in snap.raw_asks
            ]
            assert got == want


async def test_trades_quotes_and_top_levels(faulty_recording: Recorded, tmp_path: Path) -> None:
    path, events = faulty_recording
    with trio.fail_after(60):
        summary = await export_recording(path, tmp_path, format="tardis-csv")
    for symbol in ("BTC_USDC", "ETH_USDC"):
        trades = [e for e in events if isinstance(e, Trade) and e.exchange_symbol == symbol]
        rows = _rows(tmp_path, "trades", symbol)
        assert [
            (r["id"], r["side"], r["price"], r["amount"], r["timestamp"], r["local_timestamp"])
            for r in rows
        ] == [
            (
                str(t.trade_id),
                t.side.value,
                t.raw_price,
                t.raw_amount,
                str(t.engine_time_us),
                str(_received_us(t)),
            )
            for t in trades
        ]
        book = OrderBook()
        tops: list[tuple[str, ...]] = []
        for e in events:
            if isinstance(e, BookSnapshot | BookDelta) and e.exchange_symbol == symbol:
                if isinstance(e, BookSnapshot):
                    book.load(e.raw_bids, e.raw_asks)
                else:
                    book.apply(e.raw_bids, e.raw_asks)
                ask, bid = book.best_ask(), book.best_bid()
                assert ask is not None
                assert bid is not None
                quote = (ask[1], ask[0], bid[0], bid[1])
                if not tops or tops[-1] != quote:
                    tops.append(quote)
        quotes = _rows(tmp_path, "quotes", symbol)
        got = [(q["ask_amount"], q["ask_price"], q["bid_price"], q["bid_amount"]) for q in quotes]
        assert got == tops
        bids, asks = book.depth(5)
        last = _rows(tmp_path, "book_snapshot_5", symbol)[-1]
        assert [(last[f"bids[{i}].price"], last[f"bids[{i}].amount"]) for i in range(5)] == list(
            bids
        )
        assert [(last[f"asks[{i}].price"], last[f"asks[{i}].amount"]) for i in range(5)] == list(
            asks
        )
        assert len(_rows(tmp_path, "book_snapshot_25", symbol)) >= len(
            _rows(tmp_path, "book_snapshot_5", symbol)
        )
    assert summary.rows["trades"] == sum(isinstance(e, Trade) for e in events)
