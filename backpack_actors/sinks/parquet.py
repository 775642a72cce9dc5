"""A live Parquet sink: the feed's events as hourly Parquet files (needs the ``parquet`` extra).

Layout as the export's (``docs/export.md``): ``DIR/channel=<c>/symbol=<s>/date=<YYYY-MM-DD>/``,
one file per hour of local receipt time, ``HH-<run>.parquet``, where ``<run>`` names the sink's
start (UTC) so a restarted feed never overwrites an earlier file. Decimal columns are
``decimal128(38, 18)`` (markets may join at runtime with any tick; 20 integer digits, and text
columns for a value that does not fit).

Crash safety: rows are buffered and written as one row group per flush, each to its own complete
file (``HH-<run>.part-NNNNN.parquet``: a Parquet file is only readable once its footer is written),
under a hidden temporary name renamed once whole. A flush happens when a partition holds
``row_group_rows`` rows or ``flush_interval`` seconds after the previous flush. When the hour is
over, and on :meth:`close`, an hour's parts are merged into its hourly file (written beside it,
renamed into place, then the parts removed; a new sink in the same directory removes parts that a
merged file already holds, and half-written temporaries). So SIGTERM or Ctrl-C leave every event
in valid files; SIGKILL loses only the rows not yet flushed, and the next start says so.

Like every sink, it runs in worker threads off the trio thread (``run_sink``), behind its own
subscription with the feed's per-subscriber policy.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Any, Final
from urllib.parse import parse_qs

from backpack_actors.core.events import (
    BookDelta,
    BookSnapshot,
    Event,
    IntervalSnapshot,
    ProtocolErrorEvent,
    StatusEvent,
    Trade,
)
from backpack_actors.export.columns import (
    CHANNELS,
    GENERIC,
    UNATTRIBUTED,
    Columns,
    Partitioner,
    PartitionKey,
    at_ns,
    received_at_ns,
)
from backpack_actors.export.parquet import (
    META_PREFIX,
    PartitionWriter,
    metadata_json,
    schema,
)

__all__ = ["SCALE", "ParquetSink", "recover"]

SCALE: Final = 18
"""Decimal places of the live sink's price and size columns."""
_PARTS_KEY = f"{META_PREFIX}parts"


def _hour_of(ns: int) -> str:
    moment = dt.datetime(1970, 1, 1) + dt.timedelta(microseconds=ns // 1000)
    return moment.strftime("%Y-%m-%dT%H")


def hourly_partition(event: Event) -> PartitionKey | None:
    """``(channel, symbol, "YYYY-MM-DDTHH")`` by local receipt time (local time for status)."""
    if isinstance(event, Trade):
        return "trades", event.symbol, _hour_of(received_at_ns(event))
    if isinstance(event, BookSnapshot | BookDelta):
        return "book", event.symbol, _hour_of(received_at_ns(event))
    if isinstance(event, IntervalSnapshot):
        return "interval_snapshots", event.symbol, _hour_of(received_at_ns(event))
    if isinstance(event, StatusEvent | ProtocolErrorEvent):
        return "status", event.symbol or UNATTRIBUTED, _hour_of(at_ns(event))
    channel = GENERIC.get(type(event))
    if channel is None:
        return None
    return channel, event.symbol, _hour_of(event.received_at_ns)


def _read_parts(path: Path) -> list[str]:
    import pyarrow.parquet as pq

    meta = pq.read_schema(path).metadata or {}
    raw = meta.get(_PARTS_KEY.encode())
    return [] if raw is None else [str(name) for name in json.loads(raw)]


def recover(directory: str | Path) -> list[Path]:
    """Remove files a killed sink left half-written, and part files that a merged hourly file
    already holds (a stop between its rename and the parts' removal); returns the parts that
    remain, i.e. hours a killed sink left unmerged (each part a valid file)."""
    remaining = []
    for torn in Path(directory).glob("channel=*/symbol=*/date=*/.*.tmp"):
        torn.unlink(missing_ok=True)
    for hourly in sorted(Path(directory).glob("channel=*/symbol=*/date=*/*.parquet")):
        if ".part-" in hourly.name:
            continue
        for name in _read_parts(hourly):
            (hourly.parent / name).unlink(missing_ok=True)
    for part in sorted(Path(directory).glob("channel=*/symbol=*/date=*/*.part-*.parquet")):
        remaining.append(part)
    return remaining


class _Hour:
    """One partition-hour: its flushed part files so far."""

    __slots__ = ("folder", "parts", "stem")

    def __init__(self, folder: Path, stem: str) -> None:
        self.folder = folder
        self.stem = stem
        self.parts: list[Path] = []


class ParquetSink:
    """Writes events to hourly Parquet files under ``directory``; a sink for ``run_sink``."""

    name = "parquet"

    def __init__(
        self,
        directory: str | Path,
        *,
        row_group_rows: int = 65_536,
        flush_interval: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        stderr: IO[str] | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.row_group_rows = row_group_rows
        self.flush_interval = flush_interval
        self._clock = clock
        self._err = stderr if stderr is not None else sys.stderr
        self.directory.mkdir(parents=True, exist_ok=True)
        leftover = recover(self.directory)
        if leftover:
            print(
                f"warning: parquet: {len(leftover)} part files under {self.directory} were left "
                "by a sink that did not stop cleanly (its unflushed rows are lost); they stay "
                "readable as they are",
                file=self._err,
                flush=True,
            )
        started = dt.datetime.now(dt.UTC)
        self.run = f"{started:%Y%m%dT%H%M%SZ}-{os.getpid()}"
        metadata = {"format": "1", "source": metadata_json({"sink": "live", "run": self.run})}
        self._schemas = {c: schema(c, SCALE, SCALE, metadata) for c in CHANNELS}
        self._rows = Partitioner(SCALE, SCALE, key=hourly_partition)
        self._hours: dict[PartitionKey, _Hour] = {}
        self._merged: dict[PartitionKey, int] = {}
        self._last_flush = clock()
        self._current_hour = ""
        self.events = 0
        self.rows_written = 0
        self.files: list[Path] = []
        self._closed = False

    def write(self, events: Iterable[Event]) -> int:
        """Buffer a batch; flush row groups and merge finished hours as due. Returns events."""
        batch = list(events)
        touched = self._rows.add(batch)
        self.events += len(batch)
        self._current_hour = max((key[2] for key in touched), default=self._current_hour)
        due = self._clock() - self._last_flush >= self.flush_interval
        for key in list(self._rows.parts) if due else touched:
            columns = self._rows.parts[key]
            if len(columns) >= self.row_group_rows or (due and len(columns)):
                self._flush(key, columns)
        if due:
            self._last_flush = self._clock()
        for key in sorted(set(self._rows.parts) | set(self._hours)):
            if key[2] < self._current_hour:
                self._finish(key)
        return len(batch)

    def _flush(self, key: PartitionKey, columns: Columns) -> None:
        hour = self._hours.get(key)
        channel, symbol, stamp = key
        if hour is None:
            date, hh = stamp.split("T")
            folder = self.directory / f"channel={channel}" / f"symbol={symbol}" / f"date={date}"
            # Rows arriving for an hour already merged (a late status) go to a second file.
            merged = self._merged.get(key, 0)
            suffix = f"-{merged}" if merged else ""
            hour = self._hours[key] = _Hour(folder, f"{hh}-{self.run}{suffix}")
        path = hour.folder / f"{hour.stem}.part-{len(hour.parts) + 1:05d}.parquet"
        # Written under a hidden name and renamed once whole: a kill mid-write leaves no torn
        # file where readers look.
        temporary = hour.folder / f".{path.name}.tmp"
        writer = PartitionWriter(temporary, self._schemas[channel])
        try:
            self.rows_written += writer.write(columns)
        finally:
            writer.close()
        os.replace(temporary, path)
        hour.parts.append(path)

    def _finish(self, key: PartitionKey) -> None:
        """Flush a partition-hour's rows and merge its parts into its hourly file."""
        columns = self._rows.parts.pop(key, None)
        if columns is not None and len(columns):
            self._flush(key, columns)
        hour = self._hours.pop(key, None)
        if hour is None or not hour.parts:
            return
        import pyarrow.parquet as pq

        final = hour.folder / f"{hour.stem}.parquet"
        temporary = hour.folder / f".{hour.stem}.parquet.tmp"
        arrow_schema = self._schemas[key[0]]
        names = [part.name for part in hour.parts]
        merged_schema = arrow_schema.with_metadata(
            {**(arrow_schema.metadata or {}), _PARTS_KEY.encode(): metadata_json(names).encode()}
        )
        with pq.ParquetWriter(
            str(temporary), merged_schema, compression="zstd", use_dictionary=True
        ) as writer:
            for part in hour.parts:
                # Each part is one row group: they stay row groups of the hourly file.
                table: Any = pq.read_table(part, schema=arrow_schema)
                table = table.replace_schema_metadata(merged_schema.metadata)
                writer.write_table(table, row_group_size=max(1, table.num_rows))
        os.replace(temporary, final)
        self._merged[key] = self._merged.get(key, 0) + 1
        for part in hour.parts:
            part.unlink(missing_ok=True)
        self.files.append(final)

    def close(self) -> None:
        """Flush everything and merge every open hour (idempotent)."""
        if self._closed:
            return
        self._closed = True
        for key in sorted(set(self._rows.parts) | set(self._hours)):
            self._finish(key)
        print(
            f"parquet: {self.events} events, {self.rows_written} rows in {len(self.files)} "
            f"hourly files under {self.directory}",
            file=self._err,
            flush=True,
        )

    @classmethod
    def from_spec(cls, spec: str) -> ParquetSink:
        """``parquet:DIR`` with optional ``?rows=N&flush=SECONDS`` (row group size, interval)."""
        kind, _, target = spec.partition(":")
        if kind != "parquet" or not target:
            raise ValueError(f"sink {spec!r}: expected parquet:DIR[?rows=N&flush=SECONDS]")
        directory, _, query = target.partition("?")
        options = {k: v[-1] for k, v in parse_qs(query, strict_parsing=bool(query)).items()}
        unknown = set(options) - {"rows", "flush"}
        if unknown:
            raise ValueError(f"sink {spec!r}: unknown option {sorted(unknown)[0]!r} (rows, flush)")
        try:
            rows = int(options.get("rows", 65_536))
            flush = float(options.get("flush", 10.0))
        except ValueError:
            raise ValueError(f"sink {spec!r}: rows must be an integer, flush a number") from None
        if rows < 1 or not flush > 0:
            raise ValueError(f"sink {spec!r}: rows must be >= 1 and flush > 0")
        return cls(directory, row_group_rows=rows, flush_interval=flush)
