"""Shared pytest setup: live tests are opt-in."""

from __future__ import annotations

from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--run-live", action="store_true", help="run tests against real Backpack")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--run-live"):
        return
    # Deselect (not skip) live tests so CI never reports skipped tests.
    kept = [item for item in items if "live" not in item.keywords]
    deselected = [item for item in items if "live" in item.keywords]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = kept
