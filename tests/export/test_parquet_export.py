"""Parquet export of a faulty simulator run: rows equal the replayed events, exactly."""

from __future__ import annotations

import importlib.util
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
import trio
import trio.testing

from backpack_actors.cli import main
from backpack_actors.core.book import OrderBook
from backpack_actors.core.events import (
    BookDelta,
    BookSnapshot,
    Event,
    ProtocolErrorEvent,
    Side,
    StatusEvent,
    StatusKind,
    Trade,
)
from backpack_actors.export import export_recording
from backpack_actors.export.columns import GENERIC, GENERIC_KINDS
from backpack_actors.recording import replay_events
from backpack_actors.testing import simulate_feed

Recorded = tuple[Path, list[Event]]


def _ns(seconds: float) -> int:
    # Ground truth for float-second times: the float's shortest decimal, in ns.
    return int(Decimal(repr(seconds)) * 1_000_000_000)


def _received_ns(event: Trade | BookSnapshot | BookDelta) -> int:
    """The event's own integer receipt time where it carries one, else its float seconds."""
    ns = getattr(event, "received_at_ns", None)
    return ns if isinstance(ns, int) else _ns(event.received_at)


def _read(out: Path, channel: str) -> list[dict[str, Any]]:
    """A channel's rows from the whole dataset, in event order (a stable sort by ``seq``)."""
    dataset = ds.dataset(out / f"channel={channel}", format="parquet", partitioning="hive")
    table = dataset.to_table()
    table = table.take(pc.sort_indices(table, [("seq", "ascending")]))
    rows: list[dict[str, Any]] = table.to_pylist()
    return rows


def _expected_trades(events: list[Event]) -> list[dict[str, Any]]:
    return [
        {
            "seq": seq,
            "symbol": e.symbol,
            "exchange_symbol": e.exchange_symbol,
            "trade_id": e.trade_id,
            "price": Decimal(e.raw_price),
            "amount": Decimal(e.raw_amount),
            "side": e.side.value,
            "event_time_us": e.event_time_us,
            "engine_time_us": e.engine_time_us,
            "received_at_ns": _received_ns(e),
            "backfilled": e.backfilled,
        }
        for seq, e in enumerate(events)
        if isinstance(e, Trade)
    ]


def _expected_book(events: list[Event]) -> list[dict[str, Any]]:
    rows = []
    for seq, e in enumerate(events):
        if not isinstance(e, BookSnapshot | BookDelta):
            continue
        snapshot = isinstance(e, BookSnapshot)
        for side, levels in (("bid", e.raw_bids), ("ask", e.raw_asks)):
            for price, size in levels:
                rows.append(
                    {
                        "seq": seq,
                        "symbol": e.symbol,
                        "is_snapshot": snapshot,
                        "side": side,
                        "price": Decimal(price),
                        "size": Decimal(size),
                        "first_update_id": None if snapshot else e.first_update_id,  # type: ignore[union-attr]
                        "update_id": e.update_id if snapshot else e.last_update_id,  # type: ignore[union-attr]
                        "event_time_us": None if snapshot else e.event_time_us,  # type: ignore[union-attr]
                        "engine_time_us": e.engine_time_us,
                        "received_at_ns": _received_ns(e),
                        "reason": e.reason if snapshot else None,  # type: ignore[union-attr]
                    }
                )
    return rows


def _project(rows: list[dict[str, Any]], keys: list[str]) -> list[dict[str, Any]]:
    return [{k: row[k] for k in keys} for row in rows]


async def test_rows_equal_the_replayed_events(faulty_recording: Recorded, tmp_path: Path) -> None:
    path, events = faulty_recording
    kinds = {e.kind for e in events if isinstance(e, StatusEvent)}
    assert {StatusKind.GAP_DETECTED, StatusKind.RECONNECTING} <= kinds
    assert any(isinstance(e, ProtocolErrorEvent) for e in events)
    out = tmp_path / "out"
    with trio.fail_after(60):
        summary = await export_recording(path, out, format="parquet", row_group_rows=1000)
    assert summary.events == len(events)

    trades = _expected_trades(events)
    assert len(trades) > 50
    got_trades = _read(out, "trades")
    assert _project(got_trades, list(trades[0])) == trades
    assert all(r["price_text"] is None and r["amount_text"] is None for r in got_trades)

    book = _expected_book(events)
    got_book = _read(out, "book")
    # One row per level change and per snapshot level, every price, size and time exact.
    assert _project(got_book, list(book[0])) == book
    reasons = {r["reason"] for r in got_book if r["is_snapshot"]}
    assert {"initial", "resync"} <= reasons
    # The exchange's scale survives: the decimal's digits read back as the text sent.
    snap = next(e for e in events if isinstance(e, BookSnapshot))
    first = next(r for r in got_book if r["seq"] == events.index(snap))
    assert format(first["price"], "f").rstrip("0") == snap.raw_bids[0][0].rstrip("0")

    statuses = [e for e in events if isinstance(e, StatusEvent | ProtocolErrorEvent)]
    got_status = _read(out, "status")
    assert [r["kind"] for r in got_status] == [
        e.kind.value if isinstance(e, StatusEvent) else "protocol_error" for e in statuses
    ]
    assert [r["at_ns"] for r in got_status] == [_ns(e.at) for e in statuses]
    written = {channel: n for channel, n in summary.rows.items() if n}
    assert written == {"trades": len(trades), "book": len(book), "status": len(statuses)}


async def test_schema_types_and_metadata(faulty_recording: Recorded, tmp_path: Path) -> None:
    path, _ = faulty_recording
    out = tmp_path / "out"
    with trio.fail_after(60):
        summary = await export_recording(path, out, row_group_rows=500)
    book_file = next(p for p in summary.files if "channel=book" in str(p))
    assert book_file.relative_to(out).parts[:2] == ("channel=book", "symbol=BTC-USDC")
    assert book_file.parent.name.startswith("date=2")
    parquet = pq.ParquetFile(book_file)
    arrow = parquet.schema_arrow
    # One scale for every symbol: the finest tick (ETH_USDC's 0.01; BTC_USDC's is 0.1).
    assert arrow.field("price").type == pa.decimal128(38, 2)
    assert pa.types.is_dictionary(arrow.field("side").type)
    assert pa.types.is_dictionary(arrow.field("exchange_symbol").type)
    assert arrow.field("received_at_ns").type == pa.int64()
    assert parquet.metadata.num_row_groups > 1
    assert parquet.metadata.row_group(0).column(0).compression == "ZSTD"
    meta = arrow.metadata
    source = json.loads(meta[b"backpack_actors.source"])
    assert source["recording"] == path.name
    assert len(source["sha256"]) == 64
    markets = json.loads(meta[b"backpack_actors.markets"])
    assert {m["exchange_id"] for m in markets} >= {"BTC_USDC", "ETH_USDC"}


async def test_two_exports_are_byte_identical(faulty_recording: Recorded, tmp_path: Path) -> None:
    path, _ = faulty_recording
    for fmt in ("parquet", "tardis-csv"):
        a, b = tmp_path / f"{fmt}-a", tmp_path / f"{fmt}-b"
        with trio.fail_after(60):
            first = await export_recording(path, a, format=fmt)  # type: ignore[arg-type]
            await export_recording(path, b, format=fmt)  # type: ignore[arg-type]
        files_a = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
        files_b = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
        assert files_a == files_b
        assert len(files_a) == len(first.files) > 3
        for rel in files_a:
            assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel


async def test_duckdb_reads_it_back(faulty_recording: Recorded, tmp_path: Path) -> None:
    path, events = faulty_recording
    out = tmp_path / "out"
    with trio.fail_after(60):
        await export_recording(path, out)
    trades = [e for e in events if isinstance(e, Trade)]
    db = duckdb.connect()
    glob = str(out / "channel=trades" / "*" / "*" / "*.parquet")
    rows = db.execute(
        "select symbol, count(*), sum(price * amount), max(trade_id) from "
        f"read_parquet('{glob}', hive_partitioning = true) group by symbol order by symbol"
    ).fetchall()
    expected = []
    for symbol in sorted({t.symbol for t in trades}):
        mine = [t for t in trades if t.symbol == symbol]
        notional = sum((t.price * t.amount for t in mine), Decimal(0))
        expected.append((symbol, len(mine), notional, max(t.trade_id for t in mine)))
    assert rows == expected
    db.close()


async def test_cli_export(faulty_recording: Recorded, tmp_path: Path) -> None:
    path, events = faulty_recording
    out = tmp_path / "cli"

    async def cli(*argv: str) -> int:
        with trio.fail_after(60):
            return await trio.to_thread.run_sync(main, list(argv), abandon_on_cancel=True)

    assert await cli("export", str(path), "--format", "parquet", "--out", str(out)) == 0
    assert len(_read(out, "trades")) == sum(isinstance(e, Trade) for e in events)
    # An export never mixes with an older one's files.
    assert await cli("export", str(path), "--format", "tardis-csv", "--out", str(out)) == 2


def test_a_value_finer_than_the_scale_is_kept_as_text() -> None:
    from backpack_actors.export.columns import Partitioner
    from backpack_actors.export.parquet import schema, table_of

    trade = Trade(
        symbol="BTC-USDC",
        exchange_symbol="BTC_USDC",
        trade_id=7,
        raw_price="106815.55",  # one place past a 0.1 tick (the exchange may send up to 8)
        raw_amount="0.00100",
        side=Side.SELL,
        event_time_us=1_767_225_600_000_001,
        engine_time_us=1_767_225_600_000_000,
        received_at_ns=1_767_225_600_000_002_003,
    )
    rows = Partitioner(1, 5)
    (key,) = rows.add([trade])
    table = table_of(rows.parts[key], schema("trades", 1, 5))
    (row,) = table.to_pylist()
    assert row["price"] is None
    assert row["price_text"] == "106815.55"
    assert row["amount"] == Decimal("0.00100")
    assert row["amount_text"] is None
    assert row["received_at_ns"] == 1_767_225_600_000_002_003
    assert row["side"] == "sell"


def _example() -> Any:
    path = Path(__file__).resolve().parents[2] / "examples" / "parquet_book_at.py"
    spec = importlib.util.spec_from_file_location("parquet_book_at", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _time_us(event: BookSnapshot | BookDelta) -> int:
    if event.engine_time_us is not None:
        return event.engine_time_us
    return _received_ns(event) // 1000


async def test_the_reader_example_rebuilds_books_at_moments(
    faulty_recording: Recorded, tmp_path: Path
) -> None:
    path, events = faulty_recording
    out = tmp_path / "out"
    with trio.fail_after(60):
        await export_recording(path, out)
    book_at = _example().book_at
    mine = [e for e in events if isinstance(e, BookSnapshot | BookDelta) and e.symbol == "BTC-USDC"]
    for index in (len(mine) // 5, len(mine) // 2, len(mine) - 1):
        moment = _time_us(mine[index])
        stop = max(i for i, e in enumerate(mine) if _time_us(e) <= moment)
        book = OrderBook()
        for event in mine[: stop + 1]:
            if isinstance(event, BookSnapshot):
                book.load(event.raw_bids, event.raw_asks)
            else:
                book.apply(event.raw_bids, event.raw_asks)
        bids, asks = book.depth()
        got_bids, got_asks = book_at(out, "BTC-USDC", moment)
        assert got_bids == [(Decimal(p), Decimal(s)) for p, s in bids]
        assert got_asks == [(Decimal(p), Decimal(s)) for p, s in asks]


ALL_CHANNELS = ["trades", "l2_book", "book_ticker", "ticker", "candles:1m"]
ALL_CHANNELS += ["mark_price", "open_interest", "liquidations"]


@pytest.fixture(scope="module")
def every_channel(tmp_path_factory: pytest.TempPathFactory) -> Recorded:
    path = tmp_path_factory.mktemp("channels") / "all.jsonl.gz"

    async def record() -> list[Event]:
        with trio.fail_after(120):
            return await simulate_feed(
                ["BTC-USDC", "BTC-USDC-PERP"],
                seed=3,
                levels=30,
                events=1500,
                record_to=path,
                config={"channels": ALL_CHANNELS},
            )

    trio.run(record, clock=trio.testing.MockClock(autojump_threshold=0))
    return path, trio.run(replay_events, path)


async def test_stateless_channels_have_their_datasets(
    every_channel: Recorded, tmp_path: Path
) -> None:
    path, events = every_channel
    out = tmp_path / "out"
    with trio.fail_after(60):
        await export_recording(path, out)
    for cls, channel in GENERIC.items():
        mine = [(seq, e) for seq, e in enumerate(events) if type(e) is cls]
        assert mine, channel
        rows = _read(out, channel)
        assert [r["seq"] for r in rows] == [seq for seq, _ in mine]
        for row, (_, event) in zip(rows, mine, strict=True):
            assert row["symbol"] == event.symbol
            for field, column, kind in GENERIC_KINDS[channel]:
                value = getattr(event, field)
                if kind == "decimal":
                    exact = row[column] if row[column] is not None else row[f"{column}_text"]
                    assert (exact is None) == (value is None), (channel, column)
                    if value is not None:
                        assert Decimal(exact) == Decimal(value), (channel, column)
                else:
                    assert row[column] == (value.value if isinstance(value, Side) else value)
