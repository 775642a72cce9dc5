"""Signing: byte-identical to every vector; the verifier accepts exactly our signatures."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backpack_actors.auth import (
    AuthError,
    ClockOffset,
    Signer,
    generate_keypair,
    public_key_of,
    signing_string,
    verify_signature,
)
from backpack_actors.config import Secret
from backpack_actors.sim import SimConfig, SimExchange
from tests.conftest import DATA

VECTORS = json.loads((DATA / "signing_vectors.json").read_text())
KEY = VECTORS["key"]
PUBLIC = KEY["public_key_b64 (X-API-Key)"]
SECRET_64 = KEY["secret_b64_as_in_ccxt_tests"]
SEED = KEY["seed_b64"]


def _signer(secret: str = SEED) -> Signer:
    return Signer(PUBLIC, secret)


@pytest.mark.parametrize("vector", VECTORS["vectors"], ids=lambda v: v["name"])
def test_vectors_byte_identical(vector: dict[str, Any]) -> None:
    text = vector["signing_string"]
    if "params" in vector:
        ts, window = int(vector["x_timestamp"]), int(vector["x_window"])
        assert signing_string(vector["instruction"], vector["params"], ts, window) == text
        headers = _signer().headers(vector["instruction"], vector["params"], timestamp_ms=ts)
        assert headers == {
            "X-API-Key": vector["x_api_key"],
            "X-Signature": vector["x_signature"],
            "X-Timestamp": vector["x_timestamp"],
            "X-Window": vector["x_window"],
        }
    if "frame" in vector:
        ts = int(vector["frame"]["signature"][2])
        assert _signer().ws_signature(timestamp_ms=ts) == vector["frame"]["signature"]
        return
    # Both the 32-byte seed and ccxt's 64-byte test secret sign identically.
    for secret in (SEED, SECRET_64):
        assert _signer(secret).sign_text(text) == vector["x_signature"]
    assert verify_signature(PUBLIC, text, vector["x_signature"])


def test_batch_signing_string_matches_docs_example() -> None:
    vector = next(v for v in VECTORS["vectors"] if v["name"].endswith("batch order execution"))
    orders = [
        {"symbol": "SOL_USDC_PERP", "side": "Bid", "orderType": "Limit", "price": "141",
         "quantity": "12"},
        {"symbol": "SOL_USDC_PERP", "side": "Bid", "orderType": "Limit", "price": "140",
         "quantity": "11"},
    ]  # fmt: skip
    assert signing_string("orderExecute", orders, 1750793021519, 5000) == vector["signing_string"]


def test_booleans_lower_case_and_none_omitted() -> None:
    text = signing_string("orderExecute", {"postOnly": True, "b": False, "x": None}, 1, 5000)
    assert text == "instruction=orderExecute&b=false&postOnly=true&timestamp=1&window=5000"
    with pytest.raises(TypeError):
        signing_string("orderExecute", {"price": 1.5}, 1, 5000)


def test_secret_never_in_repr_or_errors() -> None:
    signer = Signer(Secret(PUBLIC), Secret(SEED))
    assert SEED not in repr(signer)
    assert SEED[:12] not in repr(signer)
    other_public, other_secret = generate_keypair()
    with pytest.raises(AuthError) as exc:
        Signer(other_public, SEED)
    assert exc.value.cause == "bad key"
    assert SEED not in str(exc.value)
    with pytest.raises(AuthError) as bad:
        Signer(PUBLIC, "not base64!!")
    assert bad.value.cause == "bad secret"
    assert "not base64" not in str(bad.value)
    assert public_key_of(other_secret) == other_public
    assert repr(other_secret) == "***"


def test_clock_offset_corrects_a_skewed_clock() -> None:
    offset = ClockOffset()
    signer = Signer(PUBLIC, SEED, clock=lambda: 1_000, offset=offset)
    offset.update(1_000, 61_000, 1_000)
    assert signer.now_ms() == 61_000
    assert signer.ws_signature()[2] == "61000"


# --------------------------------------------------------------------------- verifier property
_EXCHANGE_KEYS = (PUBLIC, generate_keypair()[0])
_NOW_MS = 1_767_225_600_000
_params = st.dictionaries(
    st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCXYZ", min_size=1, max_size=8),
    st.one_of(
        st.booleans(),
        st.integers(min_value=0, max_value=2**63 - 1),
        st.text(alphabet="0123456789._-ABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=1, max_size=12),
    ),
    max_size=6,
)


def _engine() -> Any:
    exchange = SimExchange(seed=1, markets=["BTC_USDC"], config=SimConfig(api_keys=_EXCHANGE_KEYS))
    exchange.engine.auth_clock_ms = lambda: _NOW_MS
    return exchange.engine


@settings(max_examples=60, deadline=None)
@given(
    params=_params,
    instruction=st.sampled_from(["orderExecute", "balanceQuery", "subscribe", "orderCancel"]),
    age=st.integers(min_value=0, max_value=4_999),
    window=st.integers(min_value=5_000, max_value=60_000),
    tamper=st.sampled_from(
        ["none", "key", "window", "timestamp", "param", "instruction", "signature"]
    ),
)
def test_verifier_accepts_exactly_the_signers_signatures(
    params: dict[str, Any], instruction: str, age: int, window: int, tamper: str
) -> None:
    engine = _engine()
    signer = Signer(PUBLIC, SEED, window_ms=window)
    ts = _NOW_MS - age
    headers = signer.headers(instruction, params, timestamp_ms=ts)
    key, sig, ts_text, win = (
        headers["X-API-Key"],
        headers["X-Signature"],
        headers["X-Timestamp"],
        headers["X-Window"],
    )
    checked: dict[str, Any] = dict(params)
    if tamper == "key":
        key = _EXCHANGE_KEYS[1]  # a configured key, but not the one that signed
    elif tamper == "window":
        win = str(window - 1)
    elif tamper == "timestamp":
        ts_text = str(ts - 1)
    elif tamper == "param":
        name = next(iter(checked), "extra")
        checked[name] = "tampered" if checked.get(name) != "tampered" else "other"
    elif tamper == "instruction":
        instruction += "X"
    elif tamper == "signature":
        sig = signer.sign_text("instruction=something&timestamp=1&window=5000")
    result = engine.verify(instruction, checked, key, sig, ts_text, win)
    if tamper == "none":
        assert result is None
    else:
        assert result == (401, {"code": "INVALID_CLIENT_REQUEST", "message": "Invalid signature"})


def test_verifier_window_and_key_errors_are_backpacks() -> None:
    engine = _engine()
    signer = Signer(PUBLIC, SEED)
    old = signer.headers("balanceQuery", {}, timestamp_ms=_NOW_MS - 5_001)
    args = (old["X-API-Key"], old["X-Signature"], old["X-Timestamp"], old["X-Window"])
    expired = (401, {"code": "INVALID_CLIENT_REQUEST", "message": "Request has expired"})
    assert engine.verify("balanceQuery", {}, *args) == expired
    fresh = signer.headers("balanceQuery", {}, timestamp_ms=_NOW_MS)
    unknown_key = generate_keypair()[0]
    assert engine.verify(
        "balanceQuery", {}, unknown_key, fresh["X-Signature"], fresh["X-Timestamp"], "5000"
    ) == (401, {"code": "UNAUTHORIZED", "message": "Invalid API key"})
    assert engine.verify(
        "balanceQuery", {}, PUBLIC, fresh["X-Signature"], fresh["X-Timestamp"], "60001"
    ) == (400, {"code": "INVALID_CLIENT_REQUEST", "message": "Invalid X-Window header"})
