"""Coverage-guided fuzz targets: one per parser and state machine (issue 12).

Each target takes one input (``bytes``) and raises ``AssertionError`` when an invariant breaks;
any exception other than the documented ones is a finding too. Targets never import atheris:
``tests/fuzz/test_targets.py`` runs them in the regular suite over their seed corpus
(``tests/fuzz/corpus/<name>/``) plus generated inputs, and ``python -m tests.fuzz.targets.run``
runs them under atheris (``nox -s fuzz``). docs/fuzzing.md lists the invariants.
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["TARGETS", "load"]

TARGETS: dict[str, str] = {
    "ws_frame": "tests.fuzz.targets.wire_targets",
    "rest_body": "tests.fuzz.targets.wire_targets",
    "dectext": "tests.fuzz.targets.dectext_target",
    "frame_reader": "tests.fuzz.targets.ws_targets",
    "ws_handshake": "tests.fuzz.targets.ws_targets",
    "config_yaml": "tests.fuzz.targets.config_target",
    "book_sync": "tests.fuzz.targets.sync_targets",
    "trade_sync": "tests.fuzz.targets.sync_targets",
    "rest_depth": "tests.fuzz.targets.sync_targets",
    "rest_trades": "tests.fuzz.targets.sync_targets",
}
"""Target name -> the module defining a function of that name."""


def load(name: str) -> Callable[[bytes], None]:
    """The target function ``name`` (importing its module)."""
    import importlib

    module = importlib.import_module(TARGETS[name])
    target: Callable[[bytes], None] = getattr(module, name)
    return target
