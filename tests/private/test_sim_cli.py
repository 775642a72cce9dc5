"""``sim --api-key KEY --api-secret SECRET``: the simulator process accepts exactly that key pair;
without them it generates a pair and prints it."""

from __future__ import annotations

import re
import signal
import subprocess
from typing import Any

import pytest
import trio

from backpack_actors.auth import AuthError, Signer, generate_keypair, public_key_of
from backpack_actors.config import Secret
from backpack_actors.core.events import StatusEvent, StatusKind
from backpack_actors.private import Fill, OrderUpdate, PrivateConfig, open_private_feed
from backpack_actors.private.rest import HttpPrivateRest
from backpack_actors.sim.orders import PrivateFaultSpec, parse_private_fault, sim_api_keys
from tests.cli.helpers import CLI, ROOT, LineReader


async def _sim_lines(args: list[str], until: str) -> tuple[trio.Process, list[str]]:
    sim = await trio.lowlevel.open_process(
        [*CLI, "sim", "--port", "0", "--markets", "ETH_USDC", *args],
        stdout=subprocess.PIPE,
        cwd=ROOT,
    )
    assert sim.stdout is not None
    reader = LineReader(sim.stdout)
    lines = [await reader.until(lambda line: "backpack simulator" in line)]
    lines.append(await reader.until(lambda line: until in line))
    return sim, lines


async def _balance(rest_url: str, signer: Signer) -> object:
    return await HttpPrivateRest(rest_url, signer).request("GET", "/api/v1/capital", {})


async def test_sim_process_takes_a_key_pair() -> None:
    public, secret = generate_keypair()
    with trio.fail_after(40):
        sim, lines = await _sim_lines(
            ["--api-key", public, "--api-secret", secret.reveal()], "api key:"
        )
        try:
            rest_url = re.findall(r"http://[\d.]+:\d+", lines[0])[0]
            assert lines[1].strip() == f"api key: {public}"
            assert secret.reveal() not in "".join(lines)
            balance = await _balance(rest_url, Signer(public, secret))
            assert isinstance(balance, dict)
            assert balance["USDC"]["available"] == "1000000"
            stranger, stranger_secret = generate_keypair()
            with pytest.raises(AuthError, match="Invalid API key"):
                await _balance(rest_url, Signer(stranger, stranger_secret))
        finally:
            sim.send_signal(signal.SIGINT)
            await sim.wait()


async def test_sim_process_generates_and_prints_a_pair() -> None:
    with trio.fail_after(40):
        sim, lines = await _sim_lines([], "api secret (generated")
        try:
            rest_url = re.findall(r"http://[\d.]+:\d+", lines[0])[0]
            secret = lines[1].rsplit(" ", 1)[1].strip()
            signer = Signer(public_key_of(secret), secret)
            balance = await _balance(rest_url, signer)
            assert isinstance(balance, dict)
        finally:
            sim.send_signal(signal.SIGINT)
            await sim.wait()


def test_half_a_pair_is_refused() -> None:
    public, _ = generate_keypair()
    with pytest.raises(ValueError, match="go together"):
        sim_api_keys(public, None)
    with pytest.raises(ValueError, match="not the public key"):
        sim_api_keys(public, generate_keypair()[1].reveal())


async def test_sim_process_private_faults() -> None:
    public, secret = generate_keypair()
    args = ["--api-key", public, "--api-secret", secret.reveal()]
    args += ["--fault", "private_drop:count=50", "--fault", "private_disconnect@2"]
    with trio.fail_after(40):
        sim, lines = await _sim_lines(args, "api key:")
        try:
            rest_url, ws_url = re.findall(r"(?:http|ws)://[\d.]+:\d+", lines[0])
            config = PrivateConfig(
                api_key=Secret(public), api_secret=secret, rest_url=rest_url, ws_url=ws_url,
                poll_interval=0.3, reconnect_base=0.05,
            )  # fmt: skip
            seen: list[Any] = []
            async with open_private_feed(config) as feed:
                placed = await HttpPrivateRest(rest_url, Signer(public, secret)).request(
                    "POST", "/api/v1/order",
                    {"symbol": "ETH_USDC", "side": "Ask", "orderType": "Market", "quantity": "1"},
                )  # fmt: skip
                async for event in feed:
                    seen.append(event)
                    if isinstance(event, StatusEvent) and event.kind is StatusKind.RECONNECTING:
                        break
            # The order's frames were dropped: its state and fills came from reconciliation.
            mine = [e for e in seen if isinstance(e, OrderUpdate) and e.order_id == placed["id"]]
            assert mine
            assert all(e.reconciled for e in mine)
            assert mine[-1].status == "Filled"
            fills = [e for e in seen if isinstance(e, Fill)]
            assert fills
            assert all(f.reconciled for f in fills)
        finally:
            sim.send_signal(signal.SIGINT)
            await sim.wait()


def test_private_fault_specs() -> None:
    assert parse_private_fault("private_drop:count=3@2.5") == PrivateFaultSpec(
        "private_drop", 3, 2.5
    )
    assert parse_private_fault("private_disconnect") == PrivateFaultSpec("private_disconnect")
    for bad in (
        "private_drop:count=0",
        "private_disconnect:count=2",
        "private_x",
        "private_drop@x",
    ):
        with pytest.raises(ValueError, match="private"):
            parse_private_fault(bad)
