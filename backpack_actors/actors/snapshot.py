"""The snapshot actor: depth snapshots and trade backfills, on request and on a timer.

Requests arrive with ``send_nowait`` from the reconciler (which keeps at most one outstanding per
symbol and kind). Resync snapshots are served before periodic ones and before backfills, so a
desynced book waits as little as possible. Everything goes through the shared :class:`RestGateway`.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence

import trio

from backpack_actors.actors.messages import (
    BackfillDone,
    BackfillRequest,
    InboxMessage,
    RestRequest,
    SnapshotFailed,
    SnapshotReady,
    SnapshotRequest,
)
from backpack_actors.actors.rest_gateway import RestGateway
from backpack_actors.core.wire import RestTrade
from backpack_actors.errors import (
    ExchangeRequestError,
    ExchangeUnavailableError,
    ProtocolError,
    RateLimitedError,
)
from backpack_actors.transport.rest import RestClient

__all__ = ["INTERVAL_REASON", "backfill_trades", "run_snapshot_actor"]

log = logging.getLogger(__name__)

INTERVAL_REASON = "interval"
# /api/v1/trades returns at most this many of the newest trades; older ones need /trades/history.
RECENT_LIMIT = 1000
# History pages per backfill (each costs one of ~30 history requests a minute).
MAX_HISTORY_PAGES = 20


def _priority(request: RestRequest) -> int:
    if isinstance(request, SnapshotRequest):
        return 1 if request.reason == INTERVAL_REASON else 0
    return 2


async def backfill_trades(
    gateway: RestGateway, client: RestClient, symbol: str, first_id: int, last_id: int
) -> list[RestTrade]:
    """Trades ``first_id..last_id`` (what REST still has of them), ascending by id.

    ``/trades`` covers the newest 1000; older ids are paged from ``/trades/history``, whose offset
    counts back from the newest trade *at the time of the call*. Trades printed in between shift
    that window, so each page re-anchors the newest id on what it actually returned.
    """
    found: dict[int, RestTrade] = {}

    def take(trades: list[RestTrade]) -> None:
        for trade in trades:
            if first_id <= trade.id <= last_id:
                found[trade.id] = trade

    recent = await gateway.call(
        f"trades {symbol}", lambda: client.recent_trades(symbol, RECENT_LIMIT), max_attempts=5
    )
    take(recent)
    if not recent:
        return []
    newest = max(t.id for t in recent)
    drift = 0  # trades printed between two calls, as last observed
    for _ in range(MAX_HISTORY_PAGES):
        upper = next((i for i in range(last_id, first_id - 1, -1) if i not in found), None)
        if upper is None:
            break
        limit = min(RECENT_LIMIT, upper - first_id + 1)
        # Aim the page's newest trade at `upper`, allowing for the trades printed meanwhile.
        offset = max(0, newest + drift - upper)
        page = await gateway.call(
            f"trades/history {symbol}",
            functools.partial(client.trade_history, symbol, limit, offset),
            history=True,
            max_attempts=5,
        )
        if not page:
            break
        take(page)
        observed = max(t.id for t in page) + offset
        drift = max(0, observed - newest)
        newest = observed
    return [found[i] for i in sorted(found)]


async def run_snapshot_actor(
    *,
    requests: trio.MemoryReceiveChannel[RestRequest],
    inbox: trio.MemorySendChannel[InboxMessage],
    gateway: RestGateway,
    client: RestClient,
    symbols: Sequence[str],
    snapshot_interval: float,
    wall_clock: Callable[[], float],
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve snapshot and backfill requests until cancelled."""
    pending: list[RestRequest] = []
    wakeup = trio.Event()

    def enqueue(request: RestRequest) -> None:
        nonlocal wakeup
        if request not in pending:
            pending.append(request)
        wakeup.set()

    async def take_requests() -> None:
        async for request in requests:
            enqueue(request)

    async def timer() -> None:
        while True:
            await trio.sleep(snapshot_interval)
            for symbol in symbols:
                enqueue(SnapshotRequest(symbol, INTERVAL_REASON))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(take_requests)
        if snapshot_interval > 0:
            nursery.start_soon(timer)
        task_status.started()
        while True:
            if not pending:
                await wakeup.wait()
                wakeup = trio.Event()
                continue
            pending.sort(key=_priority)
            request = pending.pop(0)
            await _serve(request, inbox, gateway, client, wall_clock)


async def _serve(
    request: RestRequest,
    inbox: trio.MemorySendChannel[InboxMessage],
    gateway: RestGateway,
    client: RestClient,
    wall_clock: Callable[[], float],
) -> None:
    symbol = request.symbol
    if isinstance(request, SnapshotRequest):
        try:
            snapshot = await gateway.call(
                f"depth {symbol}", lambda: client.depth(symbol), max_attempts=None
            )
        except (RateLimitedError, ExchangeUnavailableError, ProtocolError) as exc:
            await inbox.send(SnapshotFailed(symbol, str(exc)))
            return
        await inbox.send(SnapshotReady(symbol, snapshot, request.reason, wall_clock()))
        return
    assert isinstance(request, BackfillRequest)
    try:
        trades = await backfill_trades(gateway, client, symbol, request.first_id, request.last_id)
        error = None
    except (RateLimitedError, ExchangeUnavailableError, ProtocolError, ExchangeRequestError) as exc:
        # A failed backfill is reported in-band (TradeSync counts the ids as unrecoverable);
        # it must not take the snapshot actor, and with it every book, down.
        trades, error = [], str(exc)
    await inbox.send(BackfillDone(symbol, trades, error, wall_clock()))
