"""Secrets: every output of the private feed — debug logs, errors, JSONL, reprs, statistics —
and a recording of a feed configured with credentials, driven with distinctive credentials, and
the credentials found nowhere."""

from __future__ import annotations

import base64
import logging
import random
from pathlib import Path
from typing import Any

import pytest
import trio

from backpack_actors.auth import AuthError, Signer, generate_keypair
from backpack_actors.config import FeedConfig, Secret
from backpack_actors.private import (
    PrivateConfig,
    PrivateFeed,
    SimPrivateRest,
    encode_private_event,
    open_private_feed,
)
from backpack_actors.sim import SimConfig, SimExchange
from backpack_actors.testing import sim_memory_connector, simulate_feed
from tests.private.test_private_feed import MARKETS, _trade


def _needles(public: str, secret: Secret) -> list[str]:
    raw = secret.reveal()
    seed = base64.b64decode(raw)
    # The secret as given, its bytes in other spellings, and the public key.
    return [raw, raw[:16], seed.hex(), base64.urlsafe_b64encode(seed).decode(), public, public[:16]]


async def test_credentials_reach_no_output(
    autojump_clock: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    public, secret = generate_keypair()
    needles = _needles(public, secret)
    outputs: list[str] = []
    exchange = SimExchange(seed=8, markets=MARKETS, config=SimConfig(api_keys=(public,)))
    signer = Signer(Secret(public), secret, clock=lambda: int(trio.current_time() * 1000))
    rest = SimPrivateRest(exchange, signer)
    config = PrivateConfig(
        api_key=Secret(public), api_secret=secret, poll_interval=0.5, reconnect_base=0.05
    )
    with trio.fail_after(300):
        async with trio.open_nursery() as nursery:
            await nursery.start(exchange.run)
            async with open_private_feed(
                config, rest=rest, connect=sim_memory_connector(exchange)
            ) as feed:

                async def consume() -> None:
                    async for event in feed:
                        outputs.append(encode_private_event(event).decode())
                        outputs.append(repr(event))

                nursery.start_soon(consume)
                await _trade(random.Random(2), exchange, steps=25, faults=True)
                await trio.sleep(1.0)
                outputs += [repr(feed), repr(config), repr(signer), repr(rest)]
                outputs.append(str(feed.statistics()))
            nursery.cancel_scope.cancel()

        # Refusals: a key the exchange does not know, a wrong secret, unusable secrets.
        stranger, stranger_secret = generate_keypair()
        needles += _needles(stranger, stranger_secret)
        bad = SimPrivateRest(exchange, Signer(stranger, stranger_secret, clock=signer.clock))
        with pytest.raises(AuthError) as refused:
            async with open_private_feed(
                PrivateConfig(api_key=Secret(stranger), api_secret=stranger_secret),
                rest=bad,
                connect=sim_memory_connector(exchange),
            ):
                pass
        outputs += [str(refused.value), repr(refused.value)]
        for key, wrong in ((public, stranger_secret), (public, Secret("A" * 10))):
            with pytest.raises(AuthError) as mismatch:
                PrivateFeed(PrivateConfig(api_key=Secret(key), api_secret=wrong))
            outputs += [str(mismatch.value), repr(mismatch.value)]
        feed_config = FeedConfig.from_kwargs(
            symbols=["ETH-USDC"], api_key=public, api_secret=secret.reveal()
        )
        outputs += [
            repr(feed_config),
            str(feed_config),
            repr(PrivateConfig.from_feed_config(feed_config)),
        ]

    outputs += [record.getMessage() for record in caplog.records]
    outputs += [str(record.args) for record in caplog.records]
    outputs += [caplog.text]
    assert len(outputs) > 50
    assert any("reconciliation" in text for text in outputs)
    leaks = [(needle, text[:80]) for text in outputs for needle in needles if needle in text]
    assert leaks == []


async def test_recordings_of_a_feed_with_credentials_hold_none(
    autojump_clock: Any, tmp_path: Path
) -> None:
    public, secret = generate_keypair()
    path = tmp_path / "session.jsonl"
    with trio.fail_after(300):
        events = await simulate_feed(
            ["ETH-USDC"],
            events=200,
            record_to=path,
            config={"api_key": public, "api_secret": secret.reveal()},
        )
    assert len(events) >= 200
    recorded = path.read_text()
    assert recorded.count("\n") > 10
    assert [n for n in _needles(public, secret) if n in recorded] == []
