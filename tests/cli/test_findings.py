"""Issue 17's findings, one test each: what a new user ran into, fixed and kept fixed."""

from __future__ import annotations

import io
import itertools
import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
import yaml
from prometheus_client import generate_latest
from rich.console import Console

import backpack_actors
from backpack_actors.runner import live as live_module
from backpack_actors.runner.app import RunSummary
from backpack_actors.runner.live import LiveState, LiveView, render_live
from backpack_actors.runner.metrics import FeedMetrics
from backpack_actors.sim import SimConfig, SimExchange, open_simulator
from tests.cli.helpers import CLI, ROOT, parse_jsonl

# What the real exchange lists (docs/protocol.md §2.2): the simulator adds two USDT markets.
LISTED_QUOTES = {"USDC"}


def _fresh_env() -> dict[str, str]:
    """The environment of a fresh shell: nothing of ours set."""
    return {k: v for k, v in os.environ.items() if not k.startswith("BACKPACK_")}


async def _cli(args: list[str], *, cap: float = 30.0) -> subprocess.CompletedProcess[bytes]:
    with trio.fail_after(cap):
        return await trio.run_process(
            [*CLI, *args],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            cwd=ROOT,
            env=_fresh_env(),
        )


def _one_error(result: subprocess.CompletedProcess[bytes]) -> str:
    lines = result.stderr.decode().splitlines()
    assert "Traceback" not in result.stderr.decode()
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1, lines
    assert lines[-1] == errors[0], lines
    return errors[0]


def _busy_socket() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock


async def test_example_config_runs_in_a_fresh_shell_on_listed_markets() -> None:
    example = ROOT / "examples" / "backpack.yaml"
    entry = yaml.safe_load(example.read_text())["exchanges"]["ccxt_backpack"]
    assert entry["symbols"], entry
    assert {s.split("-")[1] for s in entry["symbols"]} <= LISTED_QUOTES
    with trio.fail_after(40):
        async with open_simulator(port=0, seed=4, rate=50) as sim:
            urls = ["--rest-url", sim.rest_url, "--ws-url", sim.ws_url]
            result = await _cli(["run", "--config", str(example), *urls, "--max-events", "300"])
    assert result.returncode == 0, result.stderr.decode()
    events = parse_jsonl(result.stdout.decode())
    assert {e["symbol"] for e in events if e["type"] == "trade"} == set(entry["symbols"])


async def test_one_url_without_the_other_is_a_clear_error() -> None:
    results: dict[str, subprocess.CompletedProcess[bytes]] = {}

    async def case(name: str, *args: str) -> None:
        results[name] = await _cli(["run", "--symbols", "BTC-USDC", *args])

    async with trio.open_nursery() as nursery:
        nursery.start_soon(case, "rest", "--rest-url", "http://127.0.0.1:8765")
        nursery.start_soon(case, "ws", "--ws-url", "ws://127.0.0.1:8765")
    for given, missing in (("rest", "--ws-url"), ("ws", "--rest-url")):
        result = results[given]
        assert result.returncode == 2, result.stderr.decode()
        line = _one_error(result)
        assert f"pass {missing} too" in line, line
        assert "production" in line, line
        assert result.stdout == b""


async def test_sim_on_a_busy_port_is_one_error_line_exit_2() -> None:
    with _busy_socket() as busy:
        port = busy.getsockname()[1]
        result = await _cli(["sim", "--port", str(port)])
    assert result.returncode == 2
    line = _one_error(result)
    assert f"cannot listen on 127.0.0.1:{port}" in line
    assert "already in use" in line
    assert "choose another --port" in line
    assert len(result.stderr.decode().splitlines()) == 1


async def test_busy_metrics_port_names_the_port_not_a_path() -> None:
    with _busy_socket() as busy:
        port = busy.getsockname()[1]
        result = await _cli(["demo", "--duration", "5", "--metrics-port", str(port)], cap=40)
    assert result.returncode == 2, result.stderr.decode()
    line = _one_error(result)
    assert f"cannot listen on 127.0.0.1:{port}" in line
    assert "choose another --metrics-port" in line
    assert "path" not in line


async def test_version() -> None:
    result = await _cli(["--version"])
    assert result.returncode == 0
    assert result.stdout.decode().strip() == f"backpack-actors {backpack_actors.__version__}"


async def test_run_against_sim_shows_a_real_lag() -> None:
    # `sim` and `run` in two processes: the simulator's clock is the wall clock.
    with trio.fail_after(50):
        async with trio.open_nursery() as nursery:
            sim = await trio.lowlevel.open_process(
                [*CLI, "sim", "--port", "0", "--rate", "50", "--markets", "BTC_USDC"],
                stdout=subprocess.PIPE,
                cwd=ROOT,
            )
            assert sim.stdout is not None
            banner = b""
            while b"\n" not in banner:
                banner += await sim.stdout.receive_some(4096)
            rest_url, ws_url = banner.decode().split()[3], banner.decode().split()[5]
            try:
                urls = ["--rest-url", rest_url, "--ws-url", ws_url]
                result = await _cli(
                    ["run", "--symbols", "BTC-USDC", *urls, "--max-events", "200"], cap=40
                )
            finally:
                sim.terminate()
                await sim.wait()
            nursery.cancel_scope.cancel()
    assert result.returncode == 0, result.stderr.decode()
    timed = [e for e in parse_jsonl(result.stdout.decode()) if e["type"] in ("trade", "book_delta")]
    assert timed
    lags = [e["received_at_ns"] / 1e9 - e["engine_time_us"] / 1e6 for e in timed]
    assert max(abs(lag) for lag in lags) < 5.0, (min(lags), max(lags))


def _terminal() -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, force_terminal=True, width=100, height=60), out


async def test_live_view_keeps_announcements_and_log_lines_above_it(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # stderr on the same terminal as the view (pytest captures it, so say so).
    monkeypatch.setattr(live_module, "_stderr_is_terminal", lambda: True)
    state = LiveState(["BTC-USDC"], levels=2)
    console, out = _terminal()
    view = LiveView(state, console)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(view.run)
        await trio.sleep(0.35)
        state.announce("demo: injecting fault: server disconnect")
        # A log line written while the view is up goes through the console, above the view.
        print("WARNING backpack_actors: reconnecting", file=sys.stderr)
        await trio.sleep(0.35)
        nursery.cancel_scope.cancel()
    text = out.getvalue()
    # Printed once, above the redrawn area (not drawn over), and kept in the view.
    assert text.count("demo: injecting fault: server disconnect\n") == 1
    assert "WARNING backpack_actors: reconnecting" in text
    plain = Console(record=True, width=100, color_system=None)
    plain.print(render_live(state))
    rendered = plain.export_text()
    assert "demo: injecting fault: server disconnect" in rendered
    assert rendered.count("backpack_actors  events") == 1


async def test_live_view_leaves_a_redirected_stderr_alone(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(live_module, "_stderr_is_terminal", lambda: False)
    console, out = _terminal()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(LiveView(LiveState(["BTC-USDC"]), console).run)
        await trio.sleep(0.25)
        print("WARNING backpack_actors: to the log file", file=sys.stderr)
        await trio.sleep(0.25)
        nursery.cancel_scope.cancel()
    assert "to the log file" not in out.getvalue()


async def test_demo_live_announces_faults_in_the_view_not_on_stderr() -> None:
    result = await _cli(
        ["demo", "--live", "--faults", "--fault-interval", "0.5", "--duration", "3"], cap=40
    )
    assert result.returncode == 0, result.stderr.decode()
    stdout, stderr = result.stdout.decode(), result.stderr.decode()
    assert "demo: injecting fault: drop a depth delta (gap -> resync)" in stdout
    assert "injecting fault" not in stderr
    assert stderr.splitlines()[-1].startswith("summary: ")


async def test_stall_releases_held_frames_before_fresh_ones(
    autojump_clock: trio.testing.MockClock,
) -> None:
    ex = SimExchange(seed=1, markets=["SOL_USDC"], config=SimConfig(rate=40))
    frames: list[dict[str, Any]] = []
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await nursery.start(ex.run)
            ws = await ex.connect_memory_ws(nursery)
            await ws.send_message(json.dumps({"method": "SUBSCRIBE", "params": ["depth.SOL_USDC"]}))
            await trio.sleep(0.5)
            # Ends between two generator ticks (every 0.05 s), so the held frames are still
            # held when the next fresh ones are generated.
            ex.faults.stall(1.025, symbol="SOL_USDC")
            await trio.sleep(0.98)
            ex.generate(3, "SOL_USDC")  # held: the stall is still on
            await trio.sleep(0.05)
            assert ex.faults.stalled_until("SOL_USDC") is None
            ex.generate(3, "SOL_USDC")  # the stall has ended, before the generator's next tick
            last = ex.last_update_id("SOL_USDC")
            while not frames or frames[-1]["u"] < last:
                frames.append(json.loads(await ws.get_message())["data"])
            nursery.cancel_scope.cancel()
    assert ex.faults.injected["stall"] == 1
    assert len(frames) > 10
    assert all(b["U"] == a["u"] + 1 for a, b in itertools.pairwise(frames))


def test_summary_keeps_book_and_trade_gaps_apart() -> None:
    summary = RunSummary()
    summary.absorb(
        {
            "reconciler": {
                "symbols": {
                    "BTC_USDC": {"book": {"gaps": 3, "resyncs": 3}, "trades": {"gaps": 1}},
                    "ETH_USDC": {"book": {"gaps": 1, "resyncs": 1}, "trades": {"gaps": 0}},
                }
            }
        }
    )
    line = summary.line()
    assert "book gaps 4, trade gaps 1, resyncs 4" in line
    assert " gaps 5" not in line


def test_books_conflated_has_a_series_from_the_start() -> None:
    metrics = FeedMetrics()
    metrics.update(
        {
            "streams": {"BTC_USDC": {"mode": "ws", "frames": 1}},
            "reconciler": {"symbols": {"ETH_USDC": {"state": "live", "book": {}, "trades": {}}}},
            "subscriptions": [{"name": "jsonl", "conflated": {}}],
        }
    )
    text = generate_latest(metrics.registry).decode()
    assert 'backpack_books_conflated_total{symbol="BTC-USDC"} 0.0' in text
    assert 'backpack_books_conflated_total{symbol="ETH-USDC"} 0.0' in text
    metrics.update(
        {
            "streams": {"BTC_USDC": {"mode": "ws", "frames": 1}},
            "subscriptions": [
                {"name": "jsonl", "conflated": {"BTC-USDC": 2}},
                {"name": "observer", "conflated": {"BTC-USDC": 3}},
            ],
        }
    )
    text = generate_latest(metrics.registry).decode()
    assert 'backpack_books_conflated_total{symbol="BTC-USDC"} 5.0' in text


def test_readme_documents_replay_batches_where_it_lives() -> None:
    import backpack_actors.recording as recording

    readme = (ROOT / "README.md").read_text()
    assert "`replay_batches(...)` (in `recording`)" in readme
    assert callable(recording.replay_batches)


def test_no_citation_of_files_outside_the_repository() -> None:
    texts = [ROOT / "README.md", *sorted((ROOT / "backpack_actors").rglob("*.py"))]
    texts += sorted((ROOT / "examples").iterdir())
    for path in texts:
        text = Path(path).read_text()
        for name in ("REFERENCE.md", "REFERENCE §", "ARCHITECTURE.md", "CCXT_NOTES", "/work/"):
            assert name not in text, (path, name)
