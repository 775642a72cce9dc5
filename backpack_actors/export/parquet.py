"""Arrow schemas and Parquet files for the export and the live sink (needs the ``parquet`` extra).

Every dataset is laid out ``channel=<c>/symbol=<s>/date=<YYYY-MM-DD>/`` (Hive partitioning: the
symbol and date come from the path). Prices and sizes are ``decimal128(38, scale)``; a value not
exact at that scale is null there and kept as text in ``price_text``/``size_text``/``amount_text``
(null everywhere else). Interval snapshots (``book_snapshots``) have one row per level with its
rank (``level``), the view's ``depth`` and its valid window (prices, same spill). The stateless
channels (book ticker, ticker, candles, mark price, open interest, liquidations) have one column
per event field, decimals at scale 18 with the same ``*_text`` spill. Exchange times are int64
µs, local times int64 ns. ``exchange_symbol``, ``side``, ``reason`` and ``kind`` are
dictionary-encoded; files are zstd-compressed, and the schema metadata names the source and the
market table.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from backpack_actors.export.columns import (
    COLUMNS,
    GENERIC_KINDS,
    GENERIC_SCALE,
    PRECISION,
    Columns,
)

try:
    import pyarrow as pa
    import pyarrow.parquet as pq
except ImportError as exc:  # the optional extra is missing
    raise ImportError(
        "Parquet output needs pyarrow: pip install 'backpack-actors[parquet]'"
    ) from exc

__all__ = ["META_PREFIX", "PartitionWriter", "metadata_json", "schema", "table_of"]

META_PREFIX: Final = "backpack_actors."
"""Prefix of this library's keys in the Parquet schema metadata."""

_DICT = pa.dictionary(pa.int32(), pa.string())


def _types(price_scale: int, size_scale: int) -> dict[str, Any]:
    price = pa.decimal128(PRECISION, price_scale)
    size = pa.decimal128(PRECISION, size_scale)
    return {
        "seq": pa.int64(),
        "exchange_symbol": _DICT,
        "trade_id": pa.int64(),
        "price": price,
        "amount": size,
        "size": size,
        "price_text": pa.string(),
        "amount_text": pa.string(),
        "size_text": pa.string(),
        "side": _DICT,
        "is_snapshot": pa.bool_(),
        "first_update_id": pa.int64(),
        "update_id": pa.int64(),
        "event_time_us": pa.int64(),
        "engine_time_us": pa.int64(),
        "received_at_ns": pa.int64(),
        "backfilled": pa.bool_(),
        "reason": _DICT,
        "kind": _DICT,
        "stream": pa.string(),
        "excerpt": pa.string(),
        "counts": pa.string(),
        "at_ns": pa.int64(),
        "level": pa.int32(),
        "depth": pa.int32(),
        "valid_bid_floor": price,
        "valid_ask_ceiling": price,
        "valid_bid_floor_text": pa.string(),
        "valid_ask_ceiling_text": pa.string(),
    }


_NOT_NULL = {"seq", "exchange_symbol", "trade_id", "side", "is_snapshot", "update_id"}
_NOT_NULL |= {"received_at_ns", "backfilled", "kind", "reason", "at_ns", "counts", "level"}


def _generic_fields(channel: str) -> list[Any]:
    kinds = {
        "decimal": pa.decimal128(PRECISION, GENERIC_SCALE),
        "dict": _DICT,
        "bool": pa.bool_(),
        "text": pa.string(),
        "int": pa.int64(),
    }
    fields = [pa.field("seq", pa.int64(), nullable=False)]
    for _name, column, kind in GENERIC_KINDS[channel]:
        fields.append(pa.field(column, kinds[kind]))
        if kind == "decimal":
            fields.append(pa.field(f"{column}_text", pa.string()))
    return fields


def schema(
    channel: str, price_scale: int, size_scale: int, metadata: Mapping[str, str] | None = None
) -> Any:
    """The Arrow schema of one channel's files."""
    meta = {f"{META_PREFIX}{k}": v for k, v in (metadata or {}).items()}
    meta[f"{META_PREFIX}channel"] = channel
    if channel in GENERIC_KINDS:
        return pa.schema(_generic_fields(channel), metadata=meta)
    types = _types(price_scale, size_scale)
    nullable_reason = channel == "book"  # deltas have no reason
    fields = [
        pa.field(
            name,
            types[name],
            nullable=name not in _NOT_NULL or (name == "reason" and nullable_reason),
        )
        for name in COLUMNS[channel]
    ]
    return pa.schema(fields, metadata=meta)


def table_of(columns: Columns, arrow_schema: Any) -> Any:
    """An Arrow table of ``columns``' rows (emptying the buffer)."""
    data = columns.take()
    arrays = []
    for field in arrow_schema:
        values = data[field.name]
        if pa.types.is_decimal(field.type):
            # Arrow's string -> decimal cast is exact, and fast; fits() already kept out any text
            # that would need rounding.
            arrays.append(pa.array(values, pa.string()).cast(field.type))
        elif pa.types.is_dictionary(field.type):
            arrays.append(pa.array(values, pa.string()).dictionary_encode())
        else:
            arrays.append(pa.array(values, field.type))
    return pa.Table.from_arrays(arrays, schema=arrow_schema)


class PartitionWriter:
    """One Parquet file written a row group at a time; valid (footer written) once closed."""

    def __init__(self, path: Path, arrow_schema: Any) -> None:
        self.path = path
        self.schema = arrow_schema
        self.rows = 0
        self.row_groups = 0
        path.parent.mkdir(parents=True, exist_ok=True)
        self._writer: Any = pq.ParquetWriter(
            str(path),
            arrow_schema,
            compression="zstd",
            use_dictionary=True,
            write_statistics=True,
        )

    def write(self, columns: Columns) -> int:
        """Write the buffered rows as one row group; returns the rows written."""
        if not len(columns):
            return 0
        table = table_of(columns, self.schema)
        self._writer.write_table(table, row_group_size=table.num_rows)
        self.rows += table.num_rows
        self.row_groups += 1
        return int(table.num_rows)

    def close(self) -> None:
        """Write the footer (idempotent)."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def metadata_json(value: object) -> str:
    """Metadata values are JSON text, keys sorted (byte-identical exports)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))
