"""Interval snapshots (``book_snapshots``) in the Parquet export, the live sink and Tardis CSV:
rows equal the replayed :class:`IntervalSnapshot` events, every level, exactly."""

from __future__ import annotations

import csv
import gzip
import io
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

from backpack_actors.core.events import Event, IntervalSnapshot
from backpack_actors.export import export_recording
from backpack_actors.export.columns import Partitioner
from backpack_actors.export.parquet import schema, table_of
from backpack_actors.export.tardis import TardisWriter, tardis_header
from backpack_actors.recording import replay_events
from backpack_actors.sinks.parquet import ParquetSink
from backpack_actors.testing import simulate_feed

Recorded = tuple[Path, list[Event]]
DEPTH, INTERVAL_MS = 10, 250
KEYS = ["seq", "symbol", "exchange_symbol", "side", "level", "price", "size", "update_id"]
KEYS += ["engine_time_us", "received_at_ns", "depth", "valid_bid_floor", "valid_ask_ceiling"]


@pytest.fixture(scope="module")
def interval_recording(tmp_path_factory: pytest.TempPathFactory) -> Recorded:
    """Two markets with top-10 snapshots every 250 ms; REST snapshots capped at 25 levels a
    side, so every view carries a valid window."""
    path = tmp_path_factory.mktemp("interval") / "interval.jsonl.gz"
    config = {
        "book_snapshots": {"depth": DEPTH, "interval_ms": INTERVAL_MS},
        "snapshot_side_levels": 25,
    }

    async def record() -> list[Event]:
        with trio.fail_after(120):
            return await simulate_feed(
                ["BTC-USDC", "ETH-USDC"],
                seed=5,
                levels=40,
                events=800,
                record_to=path,
                config=config,
            )

    trio.run(record, clock=trio.testing.MockClock(autojump_threshold=0))
    return path, trio.run(replay_events, path)


def _views(events: list[Event]) -> list[tuple[int, IntervalSnapshot]]:
    return [(seq, e) for seq, e in enumerate(events) if isinstance(e, IntervalSnapshot)]


def _dec(text: str | None) -> Decimal | None:
    return None if text is None else Decimal(text)


def _expected(events: list[Event]) -> list[dict[str, Any]]:
    """One row per level of every view, from the events' own text (the ground truth)."""
    rows = []
    for seq, view in _views(events):
        for side, levels in (("bid", view.raw_bids), ("ask", view.raw_asks)):
            for rank, (price, size) in enumerate(levels):
                rows.append(
                    {
                        "seq": seq,
                        "symbol": view.symbol,
                        "exchange_symbol": view.exchange_symbol,
                        "side": side,
                        "level": rank,
                        "price": Decimal(price),
                        "size": Decimal(size),
                        "update_id": view.update_id,
                        "engine_time_us": view.engine_time_us,
                        "received_at_ns": view.received_at_ns,
                        "depth": view.depth,
                        "valid_bid_floor": _dec(view.valid_bid_floor),
                        "valid_ask_ceiling": _dec(view.valid_ask_ceiling),
                    }
                )
    return rows


def _sorted(table: Any) -> list[dict[str, Any]]:
    """Rows in event order: a stable sort by ``seq`` keeps each view's levels as written."""
    rows: list[dict[str, Any]] = table.take(
        pc.sort_indices(table, [("seq", "ascending")])
    ).to_pylist()
    return rows


async def test_parquet_rows_equal_the_interval_snapshots(
    interval_recording: Recorded, tmp_path: Path
) -> None:
    path, events = interval_recording
    views = _views(events)
    assert len(views) > 20
    assert {v.symbol for _, v in views} == {"BTC-USDC", "ETH-USDC"}
    assert all(v.valid_bid_floor is not None for _, v in views)
    expected = _expected(events)
    assert len(expected) == sum(len(v.raw_bids) + len(v.raw_asks) for _, v in views)
    out = tmp_path / "out"
    with trio.fail_after(60):
        summary = await export_recording(path, out, row_group_rows=200)
    assert summary.rows["interval_snapshots"] == len(expected)

    folder = out / "channel=interval_snapshots"
    table = ds.dataset(folder, format="parquet", partitioning="hive").to_table()
    rows = _sorted(table)
    assert [{k: row[k] for k in KEYS} for row in rows] == expected
    spill = ("price_text", "size_text", "valid_bid_floor_text", "valid_ask_ceiling_text")
    assert all(row[k] is None for row in rows for k in spill)
    # Dated by the boundary, exchange time.
    dates = {row["date"] for row in rows}
    assert dates == {"2026-01-01"}

    file = next(p for p in summary.files if "channel=interval_snapshots" in str(p))
    arrow = pq.ParquetFile(file).schema_arrow
    # The export's one price scale (the finest tick: ETH_USDC's 0.01) holds every level exactly.
    assert arrow.field("price").type == pa.decimal128(38, 2)
    assert arrow.field("valid_bid_floor").type == pa.decimal128(38, 2)
    assert arrow.field("level").type == pa.int32()
    assert pa.types.is_dictionary(arrow.field("side").type)

    db = duckdb.connect()
    glob = str(folder / "*" / "*" / "*.parquet")
    # DuckDB reads the same rows back, with the levels' Decimals exact.
    got = db.execute(
        "select seq, symbol, side, level, price, size, update_id, engine_time_us, "
        "received_at_ns, depth, valid_bid_floor, valid_ask_ceiling "
        f"from read_parquet('{glob}', hive_partitioning = true) "
        "order by seq, side desc, level"
    ).fetchall()
    db.close()
    assert got == [
        (
            r["seq"],
            r["symbol"],
            r["side"],
            r["level"],
            r["price"],
            r["size"],
            r["update_id"],
            r["engine_time_us"],
            r["received_at_ns"],
            r["depth"],
            r["valid_bid_floor"],
            r["valid_ask_ceiling"],
        )
        for r in expected
    ]


def _csv_rows(out: Path, data_type: str, symbol: str) -> list[dict[str, str]]:
    """The one file of a data type and symbol, checked for Tardis's header."""
    (file,) = out.glob(f"backpack_{data_type}_*_{symbol}.csv.gz")
    with gzip.open(file, "rt", newline="") as stream:
        reader = csv.DictReader(stream)
        assert reader.fieldnames == tardis_header(data_type)
        return list(reader)


async def test_tardis_book_snapshot_interval_rows_are_the_views(
    interval_recording: Recorded, tmp_path: Path
) -> None:
    path, events = interval_recording
    with trio.fail_after(60):
        summary = await export_recording(path, tmp_path, format="tardis-csv")
    data_type = f"book_snapshot_{DEPTH}_{INTERVAL_MS}ms"
    views = [v for _, v in _views(events)]
    assert summary.rows[data_type] == len(views)
    for symbol in ("BTC_USDC", "ETH_USDC"):
        rows = _csv_rows(tmp_path, data_type, symbol)
        mine = [v for v in views if v.exchange_symbol == symbol]
        assert len(rows) == len(mine) > 10
        for row, view in zip(rows, mine, strict=True):
            assert row["exchange"] == "backpack"
            assert row["symbol"] == symbol
            assert row["timestamp"] == str(view.engine_time_us)
            assert row["local_timestamp"] == str(view.received_at_ns // 1000)
            for i in range(DEPTH):
                # The exchange's text, unchanged.
                assert (row[f"bids[{i}].price"], row[f"bids[{i}].amount"]) == view.raw_bids[i]
                assert (row[f"asks[{i}].price"], row[f"asks[{i}].amount"]) == view.raw_asks[i]


async def test_the_live_sink_writes_interval_snapshots(
    interval_recording: Recorded, tmp_path: Path
) -> None:
    _, events = interval_recording
    sink = ParquetSink(tmp_path, row_group_rows=300, stderr=io.StringIO())

    def run() -> None:
        # In batches, off the trio thread, as run_sink drives a sink.
        for start in range(0, len(events), 97):
            sink.write(events[start : start + 97])
        sink.close()

    with trio.fail_after(60):
        await trio.to_thread.run_sync(run, abandon_on_cancel=True)
    files = sorted((tmp_path / "channel=interval_snapshots").rglob("*.parquet"))
    assert files
    assert not [f for f in files if ".part-" in f.name]  # every hour merged at close
    table = pa.concat_tables([pq.read_table(f, partitioning=None) for f in files])
    rows = _sorted(table)
    expected = _expected(events)
    keys = [k for k in KEYS if k != "symbol"]  # the symbol is the file's partition
    assert [{k: row[k] for k in keys} for row in rows] == [
        {k: r[k] for k in keys} for r in expected
    ]
    assert pq.read_schema(files[0]).field("price").type == pa.decimal128(38, 18)


def _view(**changes: Any) -> IntervalSnapshot:
    fields: dict[str, Any] = {
        "symbol": "BTC-USDC",
        "exchange_symbol": "BTC_USDC",
        "update_id": 7,
        "raw_bids": (("106815.4", "0.00839"), ("106815.1", "0.01495")),
        "raw_asks": (("106815.8", "0.00518"),),
        "engine_time_us": 1_767_225_600_250_000,
        "received_at_ns": 1_767_225_600_251_002_003,
        "depth": 3,
        "valid_bid_floor": None,
        "valid_ask_ceiling": "106816.05",  # finer than the 0.1 scale below: kept as text
    }
    fields.update(changes)
    return IntervalSnapshot(**fields)


def test_short_and_whole_book_views(tmp_path: Path) -> None:
    short, whole = _view(), _view(depth=None)
    rows = Partitioner(1, 5)
    (key,) = rows.add([short, whole])
    assert key == ("interval_snapshots", "BTC-USDC", "2026-01-01")
    got = table_of(rows.parts[key], schema("interval_snapshots", 1, 5)).to_pylist()
    assert [(r["seq"], r["side"], r["level"], r["depth"]) for r in got] == [
        (0, "bid", 0, 3),
        (0, "bid", 1, 3),
        (0, "ask", 0, 3),
        (1, "bid", 0, None),
        (1, "bid", 1, None),
        (1, "ask", 0, None),
    ]
    assert {
        (r["valid_bid_floor"], r["valid_ask_ceiling"], r["valid_ask_ceiling_text"]) for r in got
    } == {(None, None, "106816.05")}

    writer = TardisWriter(tmp_path, interval_ms=INTERVAL_MS)
    writer.write([short, whole])
    writer.close()
    (file,) = tmp_path.glob("backpack_book_snapshot_3_250ms_2026-01-01_BTC_USDC.csv.gz")
    with gzip.open(file, "rt") as stream:
        header, line = stream.read().splitlines()
    assert header.split(",") == tardis_header("book_snapshot_3_250ms")
    # Missing levels are empty cells, as Tardis writes them; the whole book has no fixed columns.
    assert line == (
        "backpack,BTC_USDC,1767225600250000,1767225600251002,"
        "106815.8,0.00518,106815.4,0.00839,,,106815.1,0.01495,,,,"
    )
    assert writer.skipped_whole_books == 1
    with pytest.raises(ValueError, match="interval_ms"):
        TardisWriter(tmp_path / "other").write([short])
