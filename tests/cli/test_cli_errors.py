"""Every user-facing failure: its exit code and one ``error:`` line naming the fix, no traceback."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import trio

from backpack_actors.sim import open_simulator
from tests.cli.helpers import ROOT, run_cli


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def _single_error(result: subprocess.CompletedProcess[bytes]) -> str:
    stderr = result.stderr.decode()
    assert "Traceback" not in stderr
    lines = stderr.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: ")
    assert result.stdout == b""
    return lines[0]


async def test_each_error_gives_its_exit_code_and_one_line(tmp_path: Path) -> None:
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("exchanges:\n  x:\n    symbols: [BTC-USDC\n    channels: [TRADES]\n")
    unknown_key = tmp_path / "unknown.yaml"
    unknown_key.write_text("exchanges:\n  x:\n    symbols: [BTC-USDC]\n    snapshot_intervall: 5\n")
    seed_yaml = str(ROOT / "examples" / "seed.yaml")
    dead = f"127.0.0.1:{_closed_port()}"
    results: dict[str, subprocess.CompletedProcess[bytes]] = {}

    async def case(name: str, *args: str) -> None:
        results[name] = await run_cli(args, cap=40)

    with trio.fail_after(60):
        async with (
            open_simulator(port=0, markets=["BTC_USDC", "ETH_USDC"]) as sim,
            open_simulator(port=0, markets=["BTC_USDC"]) as restricted,
        ):
            restricted.faults.http_451()
            urls = ["--rest-url", sim.rest_url, "--ws-url", sim.ws_url]
            async with trio.open_nursery() as nursery:
                nursery.start_soon(case, "yaml", "run", "--config", str(bad_yaml))
                nursery.start_soon(case, "key", "run", "--config", str(unknown_key))
                nursery.start_soon(case, "env", "run", "--config", seed_yaml)
                nursery.start_soon(case, "nosym", "run")
                nursery.start_soon(case, "symbol", "run", "--symbols", "BTC-USDT", *urls)
                nursery.start_soon(
                    case, "region", "run", "--symbols", "BTC-USDC",
                    "--rest-url", restricted.rest_url, "--ws-url", restricted.ws_url,
                )  # fmt: skip
                nursery.start_soon(
                    case, "dead", "run", "--symbols", "BTC-USDC", "--rest-url", f"http://{dead}",
                    "--ws-url", f"ws://{dead}", "--connect-timeout", "2",
                )  # fmt: skip

    assert results["yaml"].returncode == 2
    line = _single_error(results["yaml"])
    assert "invalid YAML" in line
    assert "line 4" in line
    assert "near key 'channels'" in line

    assert results["key"].returncode == 2
    line = _single_error(results["key"])
    assert "unknown key 'exchanges.x.snapshot_intervall'" in line
    assert "did you mean 'snapshot_interval'" in line

    assert results["env"].returncode == 2
    line = _single_error(results["env"])
    assert "BACKPACK_KEY is not set" in line
    assert "export BACKPACK_KEY=" in line

    assert results["nosym"].returncode == 2
    assert "--symbols" in _single_error(results["nosym"])

    assert results["symbol"].returncode == 2
    line = _single_error(results["symbol"])
    assert "'BTC-USDT' is not listed" in line
    assert "closest: BTC-USDC" in line
    assert "USDC-quoted" in line

    assert results["region"].returncode == 3
    line = _single_error(results["region"])
    assert "HTTP 451" in line
    assert "--rest-url/--ws-url" in line

    assert results["dead"].returncode == 4
    line = _single_error(results["dead"])
    assert f"could not reach the exchange at http://{dead} within 2 s" in line
    assert "python -m backpack_actors demo" in line


async def test_debug_log_level_adds_the_traceback(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("exchanges:\n  x:\n    symbols: [BTC-USDC]\n    stale_timeout: -1\n")
    result = await run_cli(["run", "--config", str(config), "--log-level", "debug"])
    assert result.returncode == 2
    stderr = result.stderr.decode()
    assert "Traceback" in stderr
    assert stderr.splitlines()[-1].startswith("error: ")
    assert "stale_timeout" in stderr.splitlines()[-1]
