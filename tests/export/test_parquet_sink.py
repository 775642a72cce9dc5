"""The live Parquet sink: hourly files, valid after SIGTERM; after SIGKILL, every flushed row."""

from __future__ import annotations

import io
import json
import signal
import subprocess
import sys
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import trio

from backpack_actors.core.events import Side, Trade
from backpack_actors.sinks.parquet import ParquetSink

ROOT = Path(__file__).resolve().parents[2]


def _trade(trade_id: int, received_at: float) -> Trade:
    us = int(received_at * 1_000_000)
    # Events carry their receipt time as integer ns (received_at_ns) or, before, float seconds.
    if "received_at_ns" in Trade.__struct_fields__:
        receipt: dict[str, Any] = {"received_at_ns": us * 1000}
    else:
        receipt = {"received_at": received_at}
    return Trade(
        symbol="BTC-USDC",
        exchange_symbol="BTC_USDC",
        trade_id=trade_id,
        raw_price="106815.5",
        raw_amount="0.001",
        side=Side.BUY,
        event_time_us=us,
        engine_time_us=us,
        **receipt,
    )


def _rows(directory: Path) -> list[dict[str, Any]]:
    """Every row of every file (each must be a valid Parquet file), in event order."""
    rows = []
    for path in sorted(directory.rglob("*.parquet")):
        channel = path.relative_to(directory).parts[0].removeprefix("channel=")
        table = pq.read_table(path, partitioning=None)
        for row in table.to_pylist():
            row["channel"] = channel
            rows.append(row)
    return sorted(rows, key=lambda r: r["seq"])


def test_hourly_files_rollover_and_late_rows(tmp_path: Path) -> None:
    now = [0.0]
    err = io.StringIO()
    sink = ParquetSink(
        tmp_path, row_group_rows=2, flush_interval=60, clock=lambda: now[0], stderr=err
    )
    hour = 1767225600.0  # 2026-01-01T00:00Z
    sink.write([_trade(1, hour + 1), _trade(2, hour + 2)])
    sink.write([_trade(3, hour + 3)])
    folder = tmp_path / "channel=trades" / "symbol=BTC-USDC" / "date=2026-01-01"
    parts = sorted(p.name for p in folder.iterdir())
    assert len(parts) == 1  # two rows reached a row group; the third is buffered
    assert ".part-00001" in parts[0]
    sink.write([_trade(4, hour + 3600.5)])  # the next hour: hour 00 is merged
    names = sorted(p.name for p in folder.iterdir())
    assert [n for n in names if ".part-" not in n] == [f"00-{sink.run}.parquet"]
    merged = pq.ParquetFile(folder / f"00-{sink.run}.parquet")
    assert merged.metadata.num_rows == 3
    assert merged.metadata.num_row_groups == 2
    sink.write([_trade(5, hour + 10)])  # late for hour 00: its own file, nothing overwritten
    now[0] = 61.0
    sink.write([])
    sink.close()
    assert [r["trade_id"] for r in _rows(tmp_path)] == [1, 2, 3, 4, 5]
    assert not list(tmp_path.rglob("*.part-*"))
    assert "5 events" in err.getvalue()


@pytest.mark.parametrize("spec", ["parquet:", "redis:x", "parquet:d?rows=0", "parquet:d?x=1"])
def test_bad_specs(spec: str) -> None:
    with pytest.raises(ValueError, match="sink"):
        ParquetSink.from_spec(spec)


def _jsonl(path: Path) -> list[dict[str, Any]]:
    # After SIGKILL the JSONL sink's last write may have stopped inside a line: not an event.
    lines = path.read_text().split("\n")
    return [json.loads(line) for line in lines[:-1]]


def _has_rows(event: dict[str, Any]) -> bool:
    """Book events without levels (an empty delta) have no rows."""
    return not event["type"].startswith("book_") or bool(event["bids"] or event["asks"])


def _check_prefix(
    rows: list[dict[str, Any]], events: list[dict[str, Any]], received: int | None
) -> int:
    """Rows are exactly the first events: every event up to the last flushed one that has rows,
    each row matching the JSONL event at its position (the JSONL sink is a second subscriber of
    the same feed; at a stop the two may end a batch apart, and after SIGKILL the JSONL file may
    hold fewer events than the Parquet files: ``received`` None). Returns the events covered."""
    seqs = sorted({r["seq"] for r in rows})
    if received is not None:
        assert seqs[-1] < received
    covered = min(seqs[-1] + 1, len(events))
    assert [s for s in seqs if s < covered] == [i for i in range(covered) if _has_rows(events[i])]
    checked = 0
    for row in rows:
        if row["seq"] >= covered:
            continue
        event = events[row["seq"]]
        if row["channel"] == "trades":
            assert event["type"] == "trade"
            assert (row["trade_id"], row["price"], row["amount"]) == (
                event["trade_id"],
                Decimal(event["price"]),
                Decimal(event["amount"]),
            )
            checked += 1
        elif row["channel"] == "book" and not row["is_snapshot"]:
            assert event["type"] == "book_delta"
            levels = event["bids"] if row["side"] == "bid" else event["asks"]
            assert [Decimal(row["price"]), Decimal(row["size"])] in [
                [Decimal(p), Decimal(s)] for p, s in levels
            ]
            assert row["update_id"] == event["last_update_id"]
            checked += 1
    assert checked > len([s for s in seqs if s < covered]) // 2
    return covered


def _sink_events(err: str) -> int:
    line = next(line for line in err.splitlines() if line.startswith("parquet: "))
    return int(line.split()[1])


async def _run_demo(tmp_path: Path, stop: signal.Signals) -> tuple[int, Path, Path, str]:
    out, events = tmp_path / "pq", tmp_path / "events.jsonl"
    argv = [sys.executable, "-m", "backpack_actors", "demo", "--seed", "3", "--rate", "40"]
    argv += ["--symbols", "BTC-USDC", "ETH-USDC", "--duration", "60", "--output", str(events)]
    argv += ["--sink", f"parquet:{out}?flush=0.2"]
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            process: trio.Process = await nursery.start(
                partial(
                    trio.run_process,
                    argv,
                    cwd=ROOT,
                    check=False,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                )
            )
            # Wait (bounded) until several flushes have written part files of one book.
            book = out / "channel=book" / "symbol=BTC-USDC"
            while len(list(book.glob("*/*.part-*.parquet"))) < 4:  # noqa: ASYNC110
                await trio.sleep(0.05)
            process.send_signal(stop)
            assert process.stderr is not None
            err = b""
            while chunk := await process.stderr.receive_some(65536):
                err += chunk
            code = await process.wait()
    return code, out, events, err.decode()


async def test_sigkill_leaves_every_flushed_row_readable(tmp_path: Path) -> None:
    code, out, events, _ = await _run_demo(tmp_path, signal.SIGKILL)
    assert code == -signal.SIGKILL
    rows = _rows(out)  # every file left behind opens
    written = _jsonl(events)
    assert _check_prefix(rows, written, received=None) > 20
    assert {r["channel"] for r in rows} >= {"trades", "book", "status"}
    # A sink started on that directory says what it found.
    err = io.StringIO()
    ParquetSink(out, stderr=err).close()
    assert "did not stop cleanly" in err.getvalue()


async def test_sigterm_leaves_everything(tmp_path: Path) -> None:
    code, out, events, err = await _run_demo(tmp_path, signal.SIGTERM)
    assert code == 0, err
    assert "stopped by SIGTERM" in err
    assert not list(out.rglob("*.part-*"))  # every hour merged
    rows = _rows(out)
    written = _jsonl(events)
    received = _sink_events(err)
    assert abs(received - len(written)) < 200
    # Everything the sink received is in its files: the rows reach its last events.
    covered = _check_prefix(rows, written, received=received)
    assert covered > 20
    last = max(r["seq"] for r in rows)
    assert last >= received - 1 or not any(_has_rows(e) for e in written[last + 1 : received])
