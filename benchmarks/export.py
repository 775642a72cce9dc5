"""Export throughput and size: a recorded faulty simulator run to Parquet and Tardis CSV.

One recording of two markets (a dropped delta, a malformed frame, a disconnect), made under
trio's MockClock; then, timed (median of interleaved repetitions): the replay alone, the Parquet
export, the Tardis CSV export, and the live Parquet sink fed the replayed events. Every export's
rows are checked against the replayed events (a wrong export fails the run). Reported: rows/s,
events/s, and bytes per million events (the recording itself for comparison).
"""

from __future__ import annotations

import io
import statistics
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

import trio
import trio.testing

from backpack_actors.core.events import (
    BookDelta,
    BookSnapshot,
    Event,
    ProtocolErrorEvent,
    StatusEvent,
    Trade,
)
from backpack_actors.export import export_recording
from backpack_actors.recording import replay_events
from backpack_actors.sinks.parquet import ParquetSink
from backpack_actors.testing import simulate_feed

__all__ = ["run"]


def _faults(exchange: Any) -> None:
    exchange.faults.drop_delta("BTC_USDC")
    exchange.faults.malformed_frame("ETH_USDC")
    exchange.faults.disconnect_after(frames=500, connections=1)


def _record(path: Path, events: int, seed: int) -> list[Event]:
    async def record() -> list[Event]:
        return await simulate_feed(
            ["BTC-USDC", "ETH-USDC"],
            seed=seed,
            levels=100,
            events=events,
            on_ready=_faults,
            record_to=path,
            time_limit=3600,
        )

    trio.run(record, clock=trio.testing.MockClock(autojump_threshold=0))
    return trio.run(replay_events, path)


def _expected_rows(events: list[Event]) -> dict[str, int]:
    trades = sum(isinstance(e, Trade) for e in events)
    book = sum(
        len(e.raw_bids) + len(e.raw_asks) for e in events if isinstance(e, BookSnapshot | BookDelta)
    )
    return {"trades": trades, "book": book}


def _size(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())


def run(report: Any, *, quick: bool, seed: int = 1) -> dict[str, Any]:
    """Measure, add a section to ``report``, return the numbers."""
    n = 5_000 if quick else 40_000
    reps = 3 if quick else 5
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        recording = root / "bench.jsonl.gz"
        events = _record(recording, n, seed)
        expected = _expected_rows(events)
        status = sum(isinstance(e, StatusEvent | ProtocolErrorEvent) for e in events)
        rows = expected["trades"] + expected["book"] + status
        tardis_rows = 0
        times: dict[str, list[float]] = {"replay": [], "parquet": [], "tardis": [], "sink": []}
        sizes: dict[str, int] = {}
        for rep in range(reps):
            started = time.perf_counter()
            trio.run(replay_events, recording)
            times["replay"].append(time.perf_counter() - started)
            for fmt, key in (("parquet", "parquet"), ("tardis-csv", "tardis")):
                out = root / f"{key}-{rep}"
                started = time.perf_counter()
                summary = trio.run(partial(export_recording, recording, out, format=fmt))
                times[key].append(time.perf_counter() - started)
                if key == "parquet":
                    got = {k: summary.rows[k] for k in ("trades", "book")}
                    assert got == expected, (got, expected)
                else:
                    assert summary.rows["trades"] == expected["trades"]
                    tardis_rows = sum(summary.rows.values())
                sizes[key] = _size(out)
            out = root / f"sink-{rep}"
            sink = ParquetSink(out, flush_interval=3600, stderr=io.StringIO())
            started = time.perf_counter()
            for i in range(0, len(events), 1000):
                sink.write(events[i : i + 1000])
            sink.close()
            times["sink"].append(time.perf_counter() - started)
            sizes["sink"] = _size(out)
        sizes["recording"] = recording.stat().st_size
    med = {k: statistics.median(v) for k, v in times.items()}
    per_million = 1_000_000 / len(events)
    result = {
        "events": len(events),
        "rows": rows,
        "seconds": med,
        "rows_per_s": {
            "parquet": rows / med["parquet"],
            "sink": rows / med["sink"],
            "tardis": tardis_rows / med["tardis"],
        },
        "events_per_s": {k: len(events) / v for k, v in med.items()},
        "mb_per_million_events": {k: v * per_million / 1e6 for k, v in sizes.items()},
    }
    lines = [
        f"A recorded faulty simulator run: {len(events)} events (2 markets, 100 levels; "
        f"{expected['trades']} trades, {expected['book']} book level rows), median of {reps} "
        "interleaved repetitions, one process. Export times include the replay. Parquet rows: "
        f"{rows} (trades, book levels, status); Tardis rows: {tardis_rows} (all its data types).",
        "",
        "| path | seconds | events/s | rows/s | MB per million events |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    labels = {
        "replay": "replay only (the baseline)",
        "parquet": "export --format parquet",
        "tardis": "export --format tardis-csv",
        "sink": "live Parquet sink (events in, files closed)",
    }
    for key, label in labels.items():
        count = tardis_rows if key == "tardis" else rows
        rate = f"{count / med[key]:,.0f}" if key != "replay" else "—"
        size = result["mb_per_million_events"].get(key)
        size_text = f"{size:.1f}" if size is not None else "—"
        lines.append(
            f"| {label} | {med[key]:.2f} | {len(events) / med[key]:,.0f} | {rate} | {size_text} |"
        )
    recording_mb = result["mb_per_million_events"]["recording"]
    lines.append(f"| the recording (.jsonl.gz) | — | — | — | {recording_mb:.1f} |")
    report.section("Export: Parquet and Tardis CSV", "\n".join(lines))
    return result
