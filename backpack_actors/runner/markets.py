"""``markets``: every listed market with each symbol form and its tick/step sizes.

Works against the exchange or any compatible endpoint (``--rest-url`` of a simulator); uses the
same ccxt-backed loader as the feed, so what it lists is exactly what a feed can resolve.
"""

from __future__ import annotations

import sys
from typing import IO

import msgspec
import trio
from rich.console import Console
from rich.table import Table

from backpack_actors.core.symbols import MarketInfo, MarketTable
from backpack_actors.runner.app import ExchangeUnreachableError
from backpack_actors.transport.rest import CcxtRestClient

__all__ = ["COLUMNS", "fetch_markets", "list_markets", "markets_rows"]

COLUMNS = ("exchange_id", "ccxt", "normalized", "type", "tick_size", "step_size", "min_size")


def markets_rows(
    markets: MarketTable | list[MarketInfo], quote: str | None = None
) -> list[dict[str, str]]:
    """One row per market (sorted by exchange id), every value a string; ``quote`` filters."""
    rows = []
    for info in sorted(markets, key=lambda m: m.exchange_id):
        if quote is not None and info.quote.upper() != quote.upper():
            continue
        rows.append(
            {
                "exchange_id": info.exchange_id,
                "ccxt": info.ccxt_symbol,
                "normalized": info.normalized,
                "type": info.market_type,
                "tick_size": format(info.tick_size, "f"),
                "step_size": format(info.step_size, "f"),
                "min_size": format(info.min_size, "f"),
            }
        )
    return rows


async def fetch_markets(rest_url: str, *, deadline: float = 15.0) -> MarketTable:
    """Load the markets of ``rest_url``; :class:`ExchangeUnreachableError` after ``deadline`` s."""
    client = CcxtRestClient(rest_url, timeout=deadline)
    try:
        with trio.move_on_after(deadline):
            return await client.load_markets()
        raise ExchangeUnreachableError(rest_url, deadline, 1)
    finally:
        with trio.CancelScope(shield=True), trio.move_on_after(5):
            await client.aclose()


def list_markets(
    rows: list[dict[str, str]],
    *,
    as_json: bool = False,
    stdout: IO[str] | None = None,
    console: Console | None = None,
) -> None:
    """Print ``rows``: JSON Lines, a rich table on a terminal, aligned plain text otherwise."""
    out = stdout if stdout is not None else sys.stdout
    if as_json:
        encoder = msgspec.json.Encoder()
        out.write("".join(encoder.encode(row).decode() + "\n" for row in rows))
        out.flush()
        return
    console = console or Console(file=out)
    if console.is_terminal:
        table = Table(title=f"{len(rows)} markets")
        for column in COLUMNS:
            table.add_column(column, justify="right" if column.endswith("size") else "left")
        for row in rows:
            table.add_row(*(row[c] for c in COLUMNS))
        console.print(table)
        return
    widths = {c: max([len(c)] + [len(row[c]) for row in rows]) for c in COLUMNS}
    lines = ["  ".join(c.ljust(widths[c]) for c in COLUMNS).rstrip()]
    lines += ["  ".join(row[c].ljust(widths[c]) for c in COLUMNS).rstrip() for row in rows]
    out.write("\n".join(lines) + "\n")
    out.flush()
