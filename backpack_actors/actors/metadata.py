"""The metadata actor: the market table, the feed's symbol set, and listing changes.

At start it loads the markets (ccxt's ``load_markets`` through the REST actor's budget and
deadline, retried until it works — the CLI bounds startup with ``--connect-timeout``) and resolves
the configured symbols; an unknown symbol there is a configuration error with suggestions. Then it
refreshes every ``metadata_refresh_interval`` seconds: a tracked market that is no longer listed
leaves the feed with a ``delisted`` status (the other markets go on); with ``symbols: all`` a new
listing that passes the filters joins with a ``listed`` status. A refresh that fails is logged and
tried again next time: nothing the exchange says about the listing stops the feed — except a
listing that leaves no symbol at all, which ends it with :class:`NoSymbolsLeftError`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import trio

from backpack_actors.actors.rest import RestActor
from backpack_actors.config import ALL_SYMBOLS, FeedConfig
from backpack_actors.core.events import StatusKind
from backpack_actors.core.symbols import MarketInfo, MarketTable
from backpack_actors.errors import (
    BackpackActorsError,
    ExchangeRequestError,
    ProtocolError,
    TransientError,
)
from backpack_actors.transport.rest import RestClient

__all__ = ["MetadataActor", "NoSymbolsLeftError", "select_markets"]

log = logging.getLogger(__name__)


class NoSymbolsLeftError(BackpackActorsError):
    """Every symbol of the feed was delisted: there is nothing left to stream."""


def select_markets(table: MarketTable, config: FeedConfig) -> list[MarketInfo]:
    """The markets ``config`` asks for: its symbols resolved, or every listed market that passes
    the ``market_types``/``quotes`` filters for ``symbols: all``."""
    if tuple(config.symbols) == ALL_SYMBOLS:
        return [m for m in table if _passes(m, config)]
    return [table.resolve(symbol) for symbol in config.symbols]


def _passes(market: MarketInfo, config: FeedConfig) -> bool:
    if market.market_type not in config.market_types:
        return False
    return not config.quotes or market.quote.upper() in config.quotes


class MetadataActor:
    """See the module docstring; ``on_listed``/``on_delisted`` change the feed's symbol set."""

    def __init__(
        self,
        config: FeedConfig,
        client: RestClient,
        rest: RestActor,
        *,
        tracked: Callable[[], Sequence[str]],
        on_listed: Callable[[list[MarketInfo]], None],
        on_delisted: Callable[[str, StatusKind, str], None],
    ) -> None:
        self.config = config
        self._client = client
        self._rest = rest
        self._tracked = tracked
        self._on_listed = on_listed
        self._on_delisted = on_delisted
        self.table: MarketTable | None = None
        self.initial: list[MarketInfo] = []
        # Markets the consumer unsubscribed at runtime: with ``symbols: all`` a refresh must not
        # add them back (a sharded bus publisher gives most markets up on purpose).
        self.declined: set[str] = set()
        self.refreshes = 0
        self.refresh_failures = 0

    async def load(self) -> list[MarketInfo]:
        """Load the table and resolve the configured symbols (raises UnknownSymbolError)."""
        table = await self._rest.call("load_markets", self._client.load_markets, max_attempts=None)
        self.table = table
        self.initial = select_markets(table, self.config)
        if not self.initial:
            raise NoSymbolsLeftError(
                "no listed market matches symbols: all with market_types "
                f"{list(self.config.market_types)} and quotes {list(self.config.quotes) or 'any'}"
            )
        return self.initial

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Refresh the listing until cancelled (the first load is :meth:`load`)."""
        if self.table is None:
            await self.load()
        task_status.started()
        interval = self.config.metadata_refresh_interval
        if interval <= 0:
            await trio.sleep_forever()
        while True:
            await trio.sleep(interval)
            await self.refresh()

    async def refresh(self) -> None:
        """One refresh: apply listings and delistings (a failed load changes nothing)."""
        try:
            table = await self._rest.call("load_markets", self._client.load_markets)
        except (TransientError, ExchangeRequestError, ProtocolError) as exc:
            self.refresh_failures += 1
            log.warning("market refresh failed (%s); keeping the current listing", exc)
            return
        self.refreshes += 1
        self.table = table
        listed = {m.exchange_id: m for m in table}
        delisted = 0
        for symbol in list(self._tracked()):
            if symbol not in listed:
                delisted += 1
                self._on_delisted(
                    symbol, StatusKind.DELISTED, f"{symbol} is no longer listed by the exchange"
                )
        if tuple(self.config.symbols) == ALL_SYMBOLS:
            tracked = set(self._tracked())
            new = [
                m
                for m in table
                if m.exchange_id not in tracked
                and m.exchange_id not in self.declined
                and _passes(m, self.config)
            ]
            if new:
                self._on_listed(new)
        if delisted and not self._tracked():
            # (A feed the consumer unsubscribed from everything is not dead: it may subscribe.)
            raise NoSymbolsLeftError(
                "every symbol of the feed was delisted; nothing is left to stream"
            )
