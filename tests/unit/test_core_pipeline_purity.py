"""The pipeline core modules stay pure: no I/O frameworks, clocks or randomness of their own."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import backpack_actors.core as core

CORE = Path(core.__file__).parent
FORBIDDEN = {"trio", "trio_websocket", "ccxt", "asyncio", "time", "random", "socket", "threading"}


@pytest.mark.parametrize("module", ["book", "sync", "trades", "budget", "symbols"])
def test_module_imports_nothing_impure(module: str) -> None:
    tree = ast.parse((CORE / f"{module}.py").read_text())
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert imported, "the parser found the imports"
    assert not imported & FORBIDDEN, imported & FORBIDDEN
    assert (
        "float"
        not in {
            n.func.id
            for n in ast.walk(tree)
            if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)
        }
        or module == "budget"
    )
