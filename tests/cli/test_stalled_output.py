"""A stalled stdout never freezes the process (issue 11 point 4), and `--symbols all` filters.

The old runner wrote and flushed JSONL on the trio thread: `demo --duration 5 | sleep 20` ran
20.5 s with pings, stale timers and the deadline frozen. Here the reader never reads at all; the
run must still end by itself (the hard cap is the test's bound) and say what it could not write.
"""

from __future__ import annotations

import json
import subprocess
from functools import partial

import trio

from tests.cli.helpers import CLI, ROOT, run_cli


async def test_demo_with_a_stdout_nobody_reads_exits_and_reports_the_unwritten() -> None:
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            process: trio.Process = await nursery.start(
                partial(
                    trio.run_process,
                    # Enough output to fill a pipe buffer (64 KiB) within the run.
                    [*CLI, "demo", "--duration", "4", "--rate", "200", "--book-depth", "0"],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    check=False,
                    cwd=ROOT,
                )
            )
            assert process.stderr is not None
            err = b""
            # Read stderr only; stdout stays unread, so the pipe fills and writes block.
            while True:
                chunk = await process.stderr.receive_some(65536)
                if not chunk:
                    break
                err += chunk
            await process.wait()
    text = err.decode()
    assert process.returncode == 0, text
    assert "output stalled" in text, text
    assert "not written" in text, text
    summary = next(line for line in text.splitlines() if line.startswith("summary:"))
    assert "stopped by --duration 4" in summary
    assert "unwritten" in summary


async def test_symbols_all_with_filters_streams_exactly_the_matching_markets() -> None:
    result = await run_cli(
        ["demo", "--symbols", "all", "--market-type", "perp", "--quote", "USDC",
         "--duration", "3", "--book-depth", "1"],
        cap=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr.decode()
    symbols = {json.loads(line)["symbol"] for line in result.stdout.decode().splitlines()}
    assert symbols == {"BTC-USDC-PERP", "ETH-USDC-PERP", "SOL-USDC-PERP"}
