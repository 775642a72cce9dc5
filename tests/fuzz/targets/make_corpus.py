"""Write the seed corpus: ``python -m tests.fuzz.targets.make_corpus``.

Seeds come from the recorded and documented payloads in ``tests/data/`` (the same files as the
shared protocol fixtures), the example configs, a few hand-made hostile inputs, and for the
structured targets deterministic pseudo-random bytes. The output, ``tests/fuzz/corpus/<target>/``,
is committed; rerun this after changing an input layout.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
from pathlib import Path
from typing import Any

from tests.fuzz.targets import TARGETS
from tests.fuzz.targets.wire_targets import REST_KINDS

ROOT = Path(__file__).resolve().parents[3]
DATA = ROOT / "tests" / "data"
CORPUS = ROOT / "tests" / "fuzz" / "corpus"


FINDINGS: dict[str, list[bytes]] = {
    # An unknown event's payload kept unbounded Decimals (tests/fuzz/test_findings.py).
    "ws_frame": [
        b'{"stream":"x.y","data":{"e":"foo","v":1e999999999}}',
        b'{"stream":"x.y","data":{"e":"foo","v":[5E+67]}}',
    ],
}
"""Inputs that made a target fail once, kept as seeds so every run replays them."""


def _json(name: str) -> Any:
    return json.loads((DATA / name).read_text())


def _dumps(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def _ws_frames() -> list[bytes]:
    frames = []
    for path in sorted(DATA.glob("ws_*.json")):
        if path.name == "ws_requests.json":
            continue
        samples = _json(path.name)
        if "error" in samples:
            frames.append(_dumps(samples))
            continue
        for sample in samples.values():
            if "data" not in sample:
                kind = sample.get("e", "x")
                sample = {"stream": f"{kind}.{sample.get('s', 'X')}", "data": sample}
            frames.append(_dumps(sample))
    return frames


def _depth_bodies() -> list[bytes]:
    sdk = _json("depth_response_official_sdk_tests.json")
    excerpt = _json("depth_response_sol_usdc_recorded_excerpt.json")
    excerpt = {k: v for k, v in excerpt.items() if not k.startswith("_")}
    excerpt |= {"lastUpdateId": "94978271", "timestamp": 1694687965941000}
    return [
        _dumps(_json("depth_response_docs_example.json")),
        *(_dumps(body) for body in sdk.values()),
        _dumps(excerpt),
        b'{"asks":[["1e999999999","1"]],"bids":[],"lastUpdateId":"1"}',
        b'{"asks":[["100.123456789012","1"]],"bids":[["99","1"]],"lastUpdateId":"2"}',
    ]


def _trade_bodies() -> list[bytes]:
    return [
        _dumps(_json("trades_response_ccxt_comment.json")),
        _dumps(_json("trades_response_ccxt_static.json")["httpResponse"]),
        _dumps(_json("trades_response_sol_usdc_recorded_excerpt.json")["trades"]),
        b'[{"id":1,"price":"1e999999999","quantity":"1","quoteQuantity":"1",'
        b'"timestamp":1,"isBuyerMaker":true}]',
    ]


def _rest_bodies() -> list[bytes]:
    by_kind: dict[str, list[bytes]] = {
        "depth": _depth_bodies(),
        "trades": _trade_bodies(),
        "markets": [
            _dumps(_json("markets_response.json")),
            _dumps(_json("markets_response_ccxt_comment.json")),
        ],
        "market": [_dumps(m) for m in _json("market_examples_official_sdk_tests.json").values()],
        "ticker": [_dumps(t) for t in _json("ticker_response.json").values()],
        "tickers": [_dumps(_json("tickers_response_recorded_subset.json")["tickers"])],
        "status": [_dumps(_json("status_response.json"))],
        "time": [(DATA / "time_response.txt").read_bytes()],
        "ping": [(DATA / "ping_response.txt").read_bytes()],
        "assets": [_dumps(_json("assets_response_ccxt_comment.json"))],
        "klines": [_dumps(k) for k in _json("klines_response.json").values()],
        "mark_prices": [_dumps(k) for k in _json("mark_prices_response.json").values()],
        "open_interest": [_dumps(k) for k in _json("open_interest_response.json").values()],
        "funding_rates": [_dumps(_json("funding_rates_response.json"))],
        "rest_error": [
            _dumps(v) if not isinstance(v, str) else v.encode()
            for k, v in _json("rest_error_examples.json").items()
            if not k.startswith("_")
        ],
        "market_table": [
            _dumps(_json("markets_response.json")),
            _dumps(list(_json("market_examples_official_sdk_tests.json").values())),
        ],
    }
    return [bytes([REST_KINDS.index(kind)]) + body for kind in REST_KINDS for body in by_kind[kind]]


def _frame(opcode: int, payload: bytes, *, fin: bool = True) -> bytes:
    size = len(payload)
    first = (0x80 if fin else 0) | opcode
    if size < 126:
        return bytes([first, size]) + payload
    return bytes([first, 126]) + size.to_bytes(2, "big") + payload


def _frame_streams() -> list[bytes]:
    # Layout (ws_targets.frame_reader): max_message (2 bytes), max_fragments, cut-seed length,
    # the cut seed, then the server's bytes.
    messages = _ws_frames()
    whole = b"".join(_frame(0x1, m) for m in messages)
    fragmented = b"".join(
        _frame(0x1, m[: len(m) // 2], fin=False) + _frame(0x9, b"p") + _frame(0x0, m[len(m) // 2 :])
        for m in messages
    )
    flood = _frame(0x1, b"{", fin=False) + _frame(0x0, b"", fin=False) * 200
    control = _frame(0x9, b"x" * 125) + _frame(0xA, b"") + _frame(0x8, b"\x03\xe8bye")
    bad = [_frame(0x9, b"x" * 126), bytes([0x81, 0x85]) + b"mask!", bytes([0xC1, 0]), b"\x83\x00"]
    streams = [whole, fragmented, flood, control, *bad]
    seeds = []
    for index, stream in enumerate(streams):
        cut = bytes([index * 37 % 256, 3, 200, 1, 90]) * 4
        seeds.append((4095).to_bytes(2, "big") + bytes([63, len(cut)]) + cut + stream)
    return seeds


def _configs() -> list[bytes]:
    secret = b"api_secret: ${BP_SECRET}\n    api_key: ${BP_SECRET}\n"
    base = b"exchanges:\n  bp:\n    class: CcxtBackpackFeed\n    exchange: backpack\n"
    return [
        (ROOT / "examples" / "backpack.yaml").read_bytes(),
        (ROOT / "examples" / "seed.yaml").read_bytes(),
        base + b"    symbols: [${BP_SYMBOLS}]\n    " + secret,
        base + b"    symbols: [BTC-USDC]\n    book_depth: ${BP_DEPTH}\n    " + secret,
        base + b"    symbols: &a [BTC-USDC]\n    channels: *a\n",
        b"exchanges:\n" + b"  - [" * 40 + b"]" * 40 + b"\n",
        base + b"    unknown_key: " + b"x" * 5000 + b"\n",
    ]


def _texts() -> list[bytes]:
    texts = [
        "179.70",
        "0.00000",
        "117357.0",
        "1e999999999",
        "1E-100000",
        "0E+100000",
        "9" * 40,
        "1." + "1" * 45,
        "-0",
        "NaN",
        " 1",
        "1_000",
        "１",
        "100.12345678901",
        "1" * 13,
    ]
    seeds = [b"\0" + t.encode() for t in texts]
    rng = random.Random(12)
    seeds += [bytes([mode]) + rng.randbytes(16) for mode in (1, 2) for _ in range(4)]
    return seeds


def _random(name: str, count: int, size: int) -> list[bytes]:
    rng = random.Random(name)
    return [rng.randbytes(rng.randrange(8, size)) for _ in range(count)]


def seeds() -> dict[str, list[bytes]]:
    """The seed inputs of every target."""
    return {
        "ws_frame": [*_ws_frames(), b'{"stream":"depth.X","data":{"e":"depth","b":[["1e9"]]}}'],
        "rest_body": _rest_bodies(),
        "dectext": _texts(),
        "frame_reader": _frame_streams(),
        "ws_handshake": _random("ws_handshake", 12, 400),
        "config_yaml": _configs(),
        "book_sync": _random("book_sync", 16, 600),
        "trade_sync": _random("trade_sync", 16, 600),
        "rest_depth": _depth_bodies(),
        "rest_trades": _trade_bodies(),
    }


def main() -> None:
    all_seeds = seeds()
    assert set(all_seeds) == set(TARGETS)
    for name, inputs in all_seeds.items():
        inputs = inputs + FINDINGS.get(name, [])
        folder = CORPUS / name
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        for data in inputs:
            (folder / hashlib.sha1(data).hexdigest()).write_bytes(data)
        print(f"{name}: {len(inputs)} seeds")


if __name__ == "__main__":
    main()
