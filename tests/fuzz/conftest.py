"""Prints how many fuzzed cases ran and their outcome (``nox -s fuzz`` reads it)."""

from __future__ import annotations

import pytest

from tests.fuzz.test_pipeline_fuzz import TALLY


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, exitstatus: int) -> None:
    if not TALLY.examples:
        return
    frames = sum(TALLY.ws_frames.values())
    kinds = ", ".join(f"{kind} {n}" for kind, n in sorted(TALLY.ws_frames.items()))
    outcome = "all properties held" if exitstatus == 0 else f"FAILED (exit status {exitstatus})"
    terminalreporter.write_line(
        f"fuzz: {frames + TALLY.rest_bodies} cases in {TALLY.examples} pipeline runs "
        f"({frames} WS frames: {kinds}; {TALLY.rest_bodies} REST bodies): {outcome}"
    )
