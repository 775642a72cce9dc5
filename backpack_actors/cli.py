"""Command line: ``python -m backpack_actors`` / ``backpack-actors``.

Exit codes: 0 ok, 1 internal error, 2 configuration error, 3 region restricted, 4 exchange
unreachable.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

__all__ = ["main"]


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="backpack-actors",
        description="Backpack market data as supervised trio actors.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    from backpack_actors.sim.server import add_sim_arguments

    sim = sub.add_parser("sim", help="run the Backpack exchange simulator (REST + WebSocket)")
    add_sim_arguments(sim)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments and run one command; returns the process exit code."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    if args.command == "sim":
        from backpack_actors.sim.server import run_sim

        return run_sim(args)
    parser.error(f"unknown command {args.command!r}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
