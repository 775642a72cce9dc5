"""The simulator over real loopback sockets (hypercorn on trio, one port for REST and WS)."""

from __future__ import annotations

import itertools
import json
import urllib.error
import urllib.request
from decimal import Decimal

import pytest
import trio
import trio_websocket

from backpack_actors.sim import open_simulator
from backpack_actors.sim.server import add_sim_arguments


def _get(url: str) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


async def test_plain_http_depth_and_ws_on_one_port() -> None:
    with trio.fail_after(30):
        async with open_simulator(seed=2, markets=["BTC_USDC"], rate=50) as sim:
            assert sim.rest_url.startswith("http://127.0.0.1:")
            assert sim.ws_url == sim.rest_url.replace("http://", "ws://")
            url = f"{sim.rest_url}/api/v1/depth?symbol=BTC_USDC"
            status, headers, body = await trio.to_thread.run_sync(_get, url)
            assert status == 200
            assert headers["content-type"].startswith("application/json")
            depth = json.loads(body)
            nonce = int(depth["lastUpdateId"])
            bids, asks = sim.exchange.book_at("BTC_USDC", nonce)
            assert [(Decimal(p), Decimal(s)) for p, s in reversed(depth["bids"])] == bids
            assert [(Decimal(p), Decimal(s)) for p, s in depth["asks"]] == asks

            async with trio_websocket.open_websocket_url(sim.ws_url) as ws:
                sub = {"method": "SUBSCRIBE", "params": ["depth.BTC_USDC"]}
                await ws.send_message(json.dumps(sub))
                frames = [json.loads(await ws.get_message()) for _ in range(5)]
            for prev, cur in itertools.pairwise(frames):
                assert cur["data"]["U"] == prev["data"]["u"] + 1
            assert frames[0]["stream"] == "depth.BTC_USDC"

            sim.faults.http_429(count=1, retry_after=3)
            status, headers, body = await trio.to_thread.run_sync(_get, url)
            assert status == 429
            assert headers["retry-after"] == "3"
            assert json.loads(body)["code"] == "TOO_MANY_REQUESTS"

            sim.faults.refuse_handshake(count=1, status=503)
            with pytest.raises(trio_websocket.ConnectionRejected) as info:
                async with trio_websocket.open_websocket_url(sim.ws_url):
                    pass
            assert info.value.status_code == 503
            assert sim.faults.injected["refuse_handshake"] == 1


def test_cli_arguments_parse() -> None:
    import argparse

    parser = argparse.ArgumentParser()
    add_sim_arguments(parser)
    args = parser.parse_args(
        ["--port", "0", "--markets", "BTC_USDC", "--fault", "drop:symbol=BTC_USDC@2"]
    )
    assert args.port == 0
    assert args.markets == ["BTC_USDC"]
    assert args.fault == ["drop:symbol=BTC_USDC@2"]
    assert "disconnect" in parser.format_help()
