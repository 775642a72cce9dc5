"""Every script in examples/ runs against the embedded simulator and prints what it promises."""

from __future__ import annotations

import re
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import trio

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
RUNS = {
    "ccxt_pro_style.py": ["--duration", "3"],
    "book_at_a_glance.py": ["--duration", "1.5"],
    "cryptofeed_style.py": ["--duration", "4"],
    "callbacks.py": ["--max-events", "200"],
    "top_of_book.py": ["--max-events", "50"],
}
GLANCE = re.compile(
    r"^(\S+): bid (\S+) @ (\S+)  ask (\S+) @ (\S+)  spread (\S+)  mid (\S+)  bids .* \| asks .*$"
)


async def test_every_example_runs_against_the_embedded_simulator() -> None:
    # An example not run here must be run by a test of its own.
    here = Path(__file__).name
    for script in sorted(EXAMPLES.glob("*.py")):
        if script.name not in RUNS:
            tested = [
                t for t in ROOT.glob("tests/**/test_*.py")
                if t.name != here and script.name in t.read_text()
            ]  # fmt: skip
            assert tested, f"examples/{script.name} is run by no test"
    results: dict[str, subprocess.CompletedProcess[bytes]] = {}

    async def run(name: str) -> None:
        results[name] = await trio.run_process(
            [sys.executable, str(EXAMPLES / name), *RUNS[name]],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            cwd=ROOT,
        )

    with trio.fail_after(90):
        async with trio.open_nursery() as nursery:
            for name in RUNS:
                nursery.start_soon(run, name)
    for name, result in results.items():
        assert result.returncode == 0, (name, result.stderr.decode()[-2000:])
        assert "Traceback" not in result.stderr.decode(), name
    out = {name: result.stdout.decode().splitlines() for name, result in results.items()}

    books = [line for line in out["ccxt_pro_style.py"] if " BTC/USDC #" in line]
    assert books
    nonces = [int(line.split("#")[1].split()[0]) for line in books]
    assert nonces == sorted(nonces)
    assert any(" BTC/USDC trade " in line for line in out["ccxt_pro_style.py"])
    assert out["ccxt_pro_style.py"][-1].startswith("ticker BTC/USDC bid ")

    glance = [GLANCE.match(line) for line in out["book_at_a_glance.py"]]
    assert glance
    assert all(glance), out["book_at_a_glance.py"]
    for match in glance:
        assert match is not None
        bid, ask = Decimal(match[3]), Decimal(match[5])
        assert Decimal(match[6]) == ask - bid > 0
        assert Decimal(match[7]) == (bid + ask) / 2
    assert {match[1] for match in glance if match} == {"BTC-USDC", "ETH-USDC"}

    cryptofeed = out["cryptofeed_style.py"]
    assert any(line.startswith("book BTC-USDC reset at ") for line in cryptofeed)
    assert any(line.startswith("book BTC-USDC #") for line in cryptofeed)
    assert any(line.startswith("ticker BTC-USDC bid ") for line in cryptofeed)

    assert out["callbacks.py"][-1].startswith("done: ")
    assert any(line.startswith("book BTC-USDC snapshot at update ") for line in out["callbacks.py"])
    assert len(out["top_of_book.py"]) == 50
    assert all(" spread " in line for line in out["top_of_book.py"])
