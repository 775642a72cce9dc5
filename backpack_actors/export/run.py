"""Export a recording: replay it (the same replay as ``replay``) and write Parquet or Tardis CSV.

An export is a function of the recording alone: rows come in replay order, files are named from
their partition, metadata is sorted JSON and gzip headers carry no time, so two exports of one
recording are byte-identical (with the same pyarrow version: its name is in the Parquet footer).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Literal

from backpack_actors.core.symbols import MarketInfo
from backpack_actors.errors import redact_url
from backpack_actors.export.columns import CHANNELS, Columns, Partitioner, PartitionKey
from backpack_actors.recording import (
    ReconcilerStartedRecord,
    Recording,
    SymbolAddedRecord,
    load_recording,
    replay_batches,
)

__all__ = ["ExportFormat", "ExportSummary", "export_recording", "market_table", "scales_of"]

ExportFormat = Literal["parquet", "tardis-csv"]
ROW_GROUP_ROWS = 131_072
"""Rows per Parquet row group in an export (~1-4 MB per column chunk before compression)."""


@dataclass
class ExportSummary:
    """What an export wrote."""

    events: int = 0
    rows: dict[str, int] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)

    @property
    def bytes(self) -> int:
        """Total size of the files written."""
        return sum(path.stat().st_size for path in self.files)

    def line(self, out: str | Path) -> str:
        rows = ", ".join(f"{name} {n}" for name, n in self.rows.items() if n)
        return f"export: {self.events} events -> {rows} rows in {len(self.files)} files under {out}"


def _places(value: Decimal) -> int:
    exponent = value.as_tuple().exponent
    return max(0, -exponent) if isinstance(exponent, int) else 0


def _all_markets(recording: Recording) -> list[MarketInfo]:
    seen = {m.exchange_id: m for m in recording.header.markets}
    for line in recording.lines:
        if isinstance(line, ReconcilerStartedRecord):
            seen.update({m.exchange_id: m for m in line.markets})
        elif isinstance(line, SymbolAddedRecord):
            seen[line.info.exchange_id] = line.info
    return [seen[key] for key in sorted(seen)]


def scales_of(markets: Iterable[MarketInfo]) -> tuple[int, int]:
    """The decimal scales of the price and size columns: the finest tick and step among markets.

    One scale per column for the whole export (not per symbol file): readers that scan several
    symbols at once cast every file to one type, and DuckDB silently rounds a finer-scaled file's
    values to the first file's scale.
    """
    markets = list(markets)
    price = max((_places(m.tick_size) for m in markets), default=8)
    size = max((_places(m.step_size) for m in markets), default=8)
    return price, size


def market_table(markets: Iterable[MarketInfo]) -> list[dict[str, str | bool]]:
    """The market table stored in each file's metadata (ticks and steps as exact text)."""
    return [
        {
            "exchange_id": m.exchange_id,
            "symbol": m.normalized,
            "ccxt_symbol": m.ccxt_symbol,
            "market_type": m.market_type,
            "tick_size": str(m.tick_size),
            "step_size": str(m.step_size),
            "min_size": str(m.min_size),
            "active": m.active,
        }
        for m in markets
    ]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _check_out(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"--out {out} exists and is not an empty directory: choose a new one")


async def export_recording(
    source: str | Path,
    out: str | Path,
    *,
    format: ExportFormat = "parquet",
    row_group_rows: int = ROW_GROUP_ROWS,
) -> ExportSummary:
    """Replay the recording at ``source`` and write its events under ``out`` (a new directory)."""
    path, out = Path(source), Path(out)
    _check_out(out)
    recording = load_recording(path)
    if format == "tardis-csv":
        return await _tardis(recording, out)
    if format != "parquet":
        raise ValueError(f"unknown export format {format!r}: parquet or tardis-csv")
    return await _parquet(recording, path, out, row_group_rows)


async def _tardis(recording: Recording, out: Path) -> ExportSummary:
    from backpack_actors.export.tardis import TardisWriter

    summary = ExportSummary()
    snapshots = recording.header.settings.book_snapshots
    writer = TardisWriter(out, interval_ms=None if snapshots is None else snapshots[1])
    try:
        async for batch in replay_batches(recording):
            summary.events += len(batch)
            writer.write(batch)
    finally:
        writer.close()
    summary.rows = dict(writer.rows)
    summary.files = sorted(writer.files)
    return summary


async def _parquet(
    recording: Recording, path: Path, out: Path, row_group_rows: int
) -> ExportSummary:
    from backpack_actors.export.parquet import PartitionWriter, metadata_json, schema

    markets = _all_markets(recording)
    price_scale, size_scale = scales_of(markets)
    source = recording.header.source
    metadata = {
        "format": "1",
        "source": metadata_json(
            {
                "recording": path.name,
                "sha256": _sha256(path),
                "rest_url": redact_url(source.get("rest_url", "")),
                "ws_url": redact_url(source.get("ws_url", "")),
            }
        ),
        "markets": metadata_json(market_table(markets)),
    }
    schemas = {c: schema(c, price_scale, size_scale, metadata) for c in CHANNELS}
    partitioner = Partitioner(price_scale, size_scale)
    writers: dict[PartitionKey, PartitionWriter] = {}
    summary = ExportSummary(rows=dict.fromkeys(CHANNELS, 0))

    def flush(key: PartitionKey, columns: Columns) -> None:
        writer = writers.get(key)
        if writer is None:
            channel, symbol, date = key
            folder = out / f"channel={channel}" / f"symbol={symbol}" / f"date={date}"
            file = folder / "part-0.parquet"
            writer = writers[key] = PartitionWriter(file, schemas[channel])
        summary.rows[key[0]] += writer.write(columns)

    try:
        async for batch in replay_batches(recording):
            summary.events += len(batch)
            for key in partitioner.add(batch):
                columns = partitioner.parts[key]
                if len(columns) >= row_group_rows:
                    flush(key, columns)
        for key in sorted(partitioner.parts):
            flush(key, partitioner.parts[key])
    finally:
        for writer in writers.values():
            writer.close()
    summary.files = sorted(w.path for w in writers.values())
    return summary
