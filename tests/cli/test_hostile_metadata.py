"""A peer that is not the exchange (issue 12): market loading from an HTML page, a 404 or absurd
tick metadata exits 4 with one ``error:`` line, never "internal error" with a traceback."""

from __future__ import annotations

import subprocess
from contextlib import ExitStack

import pytest
import trio

from tests.cli.helpers import run_cli
from tests.cli.hostile_http import hostile_http, markets_with

PEERS = {
    "html": (200, b"<html><body><h1>Welcome to nginx!</h1></body></html>", "text/html"),
    "404": (404, b"<html><body>404 Not Found</body></html>", "text/html"),
    "tick40": (200, markets_with({"tickSize": "0." + "0" * 39 + "1"}), "application/json"),
}


def _single_error(result: subprocess.CompletedProcess[bytes]) -> str:
    stderr = result.stderr.decode()
    assert "Traceback" not in stderr
    lines = stderr.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: ")
    assert "internal error" not in lines[0]
    assert result.stdout == b""
    return lines[0]


async def test_run_and_markets_against_peers_that_are_not_the_exchange() -> None:
    results: dict[str, subprocess.CompletedProcess[bytes]] = {}
    urls: dict[str, str] = {}

    async def case(name: str, *args: str) -> None:
        results[name] = await run_cli(args, cap=25)

    with ExitStack() as stack, trio.fail_after(40):
        for name, (status, body, content_type) in PEERS.items():
            urls[name] = stack.enter_context(hostile_http(status, body, content_type))
        async with trio.open_nursery() as nursery:
            for name, url in urls.items():
                ws = url.replace("http://", "ws://")
                nursery.start_soon(
                    case, f"run-{name}", "run", "--symbols", "BTC-USDC", "--rest-url", url,
                    "--ws-url", ws, "--connect-timeout", "5",
                )  # fmt: skip
                nursery.start_soon(
                    case, f"markets-{name}", "markets", "--rest-url", url, "--connect-timeout", "5"
                )

    for name, url in urls.items():
        run = results[f"run-{name}"]
        assert run.returncode == 4, (name, run.stderr.decode())
        line = _single_error(run)
        assert url in line, line

        markets = results[f"markets-{name}"]
        assert markets.returncode == 4, (name, markets.stderr.decode())
        line = _single_error(markets)
        # Without a feed's retries the direct answer is reported: what the peer did wrong.
        assert f"{url} did not answer like the Backpack exchange" in line, line
    assert "HTTP 404 for" in _single_error(results["markets-404"])
    assert "an unreadable answer" in _single_error(results["markets-html"])
    tick = _single_error(results["markets-tick40"])
    assert "market 'BTC_USDC': tick size (precision.price)" in tick
    assert "at most 10 integer and 18 fractional digits" in tick


@pytest.mark.parametrize("symbol", ["BTC-USDC"])
async def test_a_sane_peer_still_loads(symbol: str) -> None:
    # The same server with a Backpack-shaped answer: the listing works (the test server is fine).
    with hostile_http(200, markets_with(), "application/json") as url, trio.fail_after(30):
        result = await run_cli(["markets", "--rest-url", url, "--json"], cap=25)
    assert result.returncode == 0, result.stderr.decode()
    assert symbol in result.stdout.decode()
