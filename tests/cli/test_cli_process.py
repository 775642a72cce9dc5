"""``python -m backpack_actors`` as users run it: subprocesses, real sockets, ground truth."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import urllib.request
from decimal import Decimal
from pathlib import Path

import trio

from backpack_actors.sim import DEFAULT_MARKETS, open_simulator
from tests.cli.helpers import (
    CLI,
    ROOT,
    LineReader,
    assert_matches_truth,
    parse_jsonl,
    run_cli,
    truth_exchange,
)

NUMBER = re.compile(r"^-?\d+(\.\d+)?$")


async def test_demo_prints_jsonl_matching_the_simulator() -> None:
    result = await run_cli(["demo", "--duration", "5", "--book-depth", "0"], cap=40)
    assert result.returncode == 0, result.stderr.decode()
    events = parse_jsonl(result.stdout.decode())
    types = {event["type"] for event in events}
    assert {"trade", "book_snapshot", "book_delta", "status"} <= types
    for event in events:
        if event["type"] in ("trade", "book_delta"):
            assert isinstance(event["engine_time_us"], int)
            assert isinstance(event["event_time_us"], int)
            # The demo stamps receipt on the simulator's clock: lag is real and small.
            lag = event["received_at_ns"] / 1e9 - event["engine_time_us"] / 1e6
            assert 0 <= lag < 2, event
        if event["type"] == "trade":
            assert NUMBER.match(event["price"])
            assert NUMBER.match(event["amount"])
        if event["type"] == "book_delta":
            assert all(
                NUMBER.match(p) and NUMBER.match(q) for p, q in event["bids"] + event["asks"]
            )
    stderr = result.stderr.decode()
    assert "Traceback" not in stderr
    summary = [line for line in stderr.splitlines() if line.startswith("summary:")]
    assert summary == [summary[0]]
    assert f"summary: {len(events)} events" in summary[0]
    assert "stopped by --duration 5" in summary[0]
    exchange = truth_exchange(1, ["BTC_USDC", "ETH_USDC"])
    for symbol in ("BTC_USDC", "ETH_USDC"):
        assert_matches_truth(exchange, events, symbol)


def _metric(text: str, name: str, labels: str = "") -> float:
    pattern = re.compile(rf"^{re.escape(name + labels)} (\S+)$", re.MULTILINE)
    match = pattern.search(text)
    assert match, f"{name}{labels} missing from metrics"
    return float(match.group(1))


def _scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        return str(response.read().decode())


async def test_run_against_a_sim_process_metrics_and_sigterm(tmp_path: Path) -> None:
    output = tmp_path / "events.jsonl"
    output.write_text("")  # --output appends: existing content must stay whole lines
    with trio.fail_after(50):
        async with trio.open_nursery() as nursery:
            sim = await trio.lowlevel.open_process(
                [*CLI, "sim", "--port", "0", "--seed", "3", "--rate", "60"],
                stdout=subprocess.PIPE,
                cwd=ROOT,
            )
            try:
                assert sim.stdout is not None
                banner = await LineReader(sim.stdout).until(
                    lambda line: "backpack simulator" in line
                )
                rest_url, ws_url = re.findall(r"(?:http|ws)://[\d.]+:\d+", banner)
                run = await trio.lowlevel.open_process(
                    [*CLI, "run", "--symbols", "BTC-USDC", "--rest-url", rest_url, "--ws-url",
                     ws_url, "--output", str(output), "--metrics-port", "0"],
                    stderr=subprocess.PIPE,
                    cwd=ROOT,
                )  # fmt: skip
                assert run.stderr is not None
                err = LineReader(run.stderr)
                metrics_line = await err.until(lambda line: line.startswith("metrics: "))
                url = metrics_line.split()[1]
                text = ""
                # Poll the endpoint until the feed has produced trades and deltas.
                while True:
                    text = await trio.to_thread.run_sync(_scrape, url)
                    if (
                        'backpack_events_total{type="trade"}' in text
                        and _metric(text, "backpack_events_total", '{type="trade"}') > 0
                        and _metric(text, "backpack_events_total", '{type="book_delta"}') > 20
                        and "backpack_frames_received_total" in text
                    ):
                        break
                    await trio.sleep(0.1)
                sym = '{symbol="BTC-USDC"}'
                assert _metric(text, "backpack_frames_received_total", sym) > 0
                assert _metric(text, "backpack_book_ready", sym) == 1
                assert _metric(text, "backpack_rest_requests_total") >= 2
                assert _metric(text, "backpack_event_lag_seconds_count", sym) > 0
                assert _metric(text, "backpack_resyncs_total", sym) == 0
                assert _metric(text, "backpack_book_gaps_total", sym) == 0
                assert _metric(text, "backpack_reconnects_total", sym) == 0
                assert _metric(text, "backpack_decode_errors_total", sym) == 0
                assert _metric(text, "backpack_rest_rate_limited_total") == 0
                assert "backpack_queue_depth " in text
                assert "backpack_books_conflated_total" in text

                run.send_signal(signal.SIGTERM)
                await err.drain()
                assert await run.wait() == 0
            finally:
                sim.send_signal(signal.SIGINT)
                await sim.wait()
            nursery.cancel_scope.cancel()
    stderr = "\n".join(err.lines)
    assert "Traceback" not in stderr
    assert re.search(r"summary: \d+ events .*stopped by SIGTERM", stderr), stderr
    events = parse_jsonl(output.read_text())
    assert {"trade", "book_snapshot", "book_delta"} <= {e["type"] for e in events}
    assert_matches_truth(truth_exchange(3, ["BTC_USDC"]), events, "BTC_USDC")


async def test_markets_lists_every_symbol_form() -> None:
    with trio.fail_after(30):
        async with open_simulator(port=0) as sim:
            as_json = await run_cli(["markets", "--rest-url", sim.rest_url, "--json"])
            table = await run_cli(["markets", "--rest-url", sim.rest_url, "--quote", "USDT"])
    assert as_json.returncode == 0, as_json.stderr.decode()
    rows = {
        row["exchange_id"]: row for row in map(json.loads, as_json.stdout.decode().splitlines())
    }
    assert set(rows) == {spec.symbol for spec in DEFAULT_MARKETS}
    for spec in DEFAULT_MARKETS:
        row = rows[spec.symbol]
        perp = spec.symbol.endswith("_PERP")
        ccxt = f"{spec.base}/{spec.quote}" + (f":{spec.quote}" if perp else "")
        assert row["ccxt"] == ccxt
        assert row["normalized"] == spec.symbol.replace("_", "-")
        assert row["type"] == ("perp" if perp else "spot")
        assert row["tick_size"] == format(spec.tick_size, "f")
        assert row["step_size"] == format(spec.step_size, "f")
    assert table.returncode == 0
    lines = table.stdout.decode().splitlines()
    assert lines[0].split() == ["exchange_id", "ccxt", "normalized", "type", "tick_size",
                                "step_size", "min_size"]  # fmt: skip
    assert [line.split()[0] for line in lines[1:]] == ["BTC_USDT", "ETH_USDT"]
    assert lines[1].split()[1:6] == ["BTC/USDT", "BTC-USDT", "spot", "0.1", "0.00001"]


async def test_examples_run_against_their_embedded_simulator() -> None:
    results: dict[str, subprocess.CompletedProcess[bytes]] = {}

    async def example(name: str) -> None:
        with trio.fail_after(40):
            results[name] = await trio.run_process(
                [sys.executable, str(ROOT / "examples" / name), "--max-events", "15"],
                capture_stdout=True,
                capture_stderr=True,
                check=False,
            )

    async with trio.open_nursery() as nursery:
        nursery.start_soon(example, "top_of_book.py")
        nursery.start_soon(example, "callbacks.py")
    top = results["top_of_book.py"]
    assert top.returncode == 0, top.stderr.decode()
    lines = top.stdout.decode().splitlines()
    assert len(lines) == 15
    seen = set()
    for line in lines:
        match = re.match(r"(\S+) bid \S+ @ (\S+)  ask \S+ @ (\S+)  spread (\S+)$", line)
        assert match, line
        symbol, bid, ask, spread = match.groups()
        seen.add(symbol)

        assert Decimal(bid) < Decimal(ask)
        assert Decimal(ask) - Decimal(bid) == Decimal(spread)
    assert seen == {"BTC-USDC", "ETH-USDC"}
    callbacks = results["callbacks.py"]
    assert callbacks.returncode == 0, callbacks.stderr.decode()
    out = callbacks.stdout.decode()
    assert "status BTC-USDC book_ready" in out
    assert re.search(r"book BTC-USDC snapshot at update \d+ \(initial\)", out)
    done = re.search(r"done: (\d+) trades, (\d+) book updates", out)
    assert done
    assert int(done.group(1)) + int(done.group(2)) + 1 == 15
    assert len(re.findall(r"^trade BTC-USDC #\d+ (buy|sell) ", out, re.MULTILINE)) == int(
        done.group(1)
    )
