"""Symbols shared across publishers through leases in Redis, each with a fencing epoch.

Every publisher registers itself (a sorted set of ids scored by their registration's expiry) and,
every ``ttl / 4`` seconds, renews what it owns, counts the live publishers, and takes or gives
back symbols so that each owns about ``ceil(symbols / publishers)``. A lease is the key
``{prefix}:lease:{symbol}`` set with ``NX PX ttl`` to ``"{publisher}:{epoch}"``; taking one
increments ``{prefix}:epoch:{symbol}`` in the same script, so each owner of a symbol has a larger
epoch than every owner before it. Renewing and releasing compare the value first (scripts), so a
publisher can never extend or delete a lease it lost.

The epoch is written into every entry; readers ignore entries of an older epoch than the newest
they saw. A publisher stops writing a symbol on its own once its last renewal is older than 80 %
of the TTL (its lease may have expired at Redis), before anyone else can have taken it over.
When a publisher dies, its leases expire after the TTL and the others take its symbols at their
next heartbeat: within ``ttl * 1.25`` of its last renewal.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import socket
import time
import uuid
import zlib
from collections.abc import Callable, Iterable

import coredis
import trio

from backpack_actors.bus.schema import Keys

__all__ = ["ShardCoordinator"]

log = logging.getLogger(__name__)

_ACQUIRE = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  local epoch = redis.call('INCR', KEYS[2])
  redis.call('SET', KEYS[1], ARGV[1] .. ':' .. epoch, 'PX', ARGV[2])
  return epoch
end
return 0
"""

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


def default_publisher_id() -> str:
    """``host:pid:random``: unique per process, readable in ``bus status``."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class ShardCoordinator:
    """This publisher's share of ``symbols`` (normalized, ``BTC-USDC``); an
    :class:`~backpack_actors.sinks.redis.Ownership` for the sink. Run :meth:`run` in a nursery."""

    def __init__(
        self,
        client: coredis.Redis[bytes],
        symbols: Iterable[str],
        *,
        keys: Keys | None = None,
        publisher_id: str | None = None,
        ttl: float = 3.0,
        on_change: Callable[[str, int | None], None] | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.client = client
        self.keys = keys or Keys()
        self.symbols = sorted(set(symbols))
        self.publisher_id = publisher_id or default_publisher_id()
        self.ttl = ttl
        self.ttl_ms = max(1, int(ttl * 1000))
        self._on_change = on_change
        self._wall = wall_clock
        self.owned: dict[str, int] = {}
        self.taken_at: dict[str, float] = {}
        """Per symbol, the trio time this publisher last took its lease (handover timing)."""
        self._valid_until: dict[str, float] = {}
        self.live_publishers = 0
        self.acquired = 0
        self.lost = 0
        self.released = 0
        self.errors = 0

    # -- Ownership ------------------------------------------------------------------------------

    async def ensure(self, client: coredis.Redis[bytes], symbols: set[str]) -> None:
        """Leases are taken by the heartbeat, not on demand."""

    def epoch_of(self, symbol: str) -> int | None:
        epoch = self.owned.get(symbol)
        if epoch is None or trio.current_time() >= self._valid_until.get(symbol, 0.0):
            return None
        return epoch

    # -- heartbeat ------------------------------------------------------------------------------

    def _token(self, epoch: int) -> str:
        return f"{self.publisher_id}:{epoch}"

    def _set(self, symbol: str, epoch: int | None) -> None:
        if epoch is None:
            self.owned.pop(symbol, None)
            self._valid_until.pop(symbol, None)
        else:
            self.owned[symbol] = epoch
        if self._on_change is not None:
            self._on_change(symbol, epoch)

    async def tick(self) -> None:
        """One heartbeat: register, renew, then give back or take symbols toward a fair share."""
        started = trio.current_time()
        now_ms = int(self._wall() * 1000)
        client, keys = self.client, self.keys
        await client.zadd(keys.publishers, {self.publisher_id: now_ms + self.ttl_ms})
        await client.zremrangebyscore(keys.publishers, float("-inf"), now_ms)
        if self.symbols:
            await client.sadd(keys.symbols, self.symbols)
        self.live_publishers = max(1, int(await client.zcard(keys.publishers)))
        target = math.ceil(len(self.symbols) / self.live_publishers)
        valid_until = started + 0.8 * self.ttl
        for symbol, epoch in sorted(self.owned.items()):
            renewed = await client.eval(
                _RENEW, [keys.lease(symbol)], [self._token(epoch), self.ttl_ms]
            )
            if renewed:
                self._valid_until[symbol] = valid_until
            else:
                self.lost += 1
                log.warning("bus: lost the lease of %s (epoch %d)", symbol, epoch)
                self._set(symbol, None)
        # Give back the surplus from the end of this publisher's own order, so that the symbols
        # it keeps are the ones it would take first.
        order = self._preference()
        for symbol in reversed(order):
            if len(self.owned) <= target:
                break
            if symbol in self.owned:
                await self._release(symbol)
        for symbol in order:
            if len(self.owned) >= target:
                break
            if symbol in self.owned:
                continue
            taken = await client.eval(
                _ACQUIRE,
                [keys.lease(symbol), keys.epoch(symbol)],
                [self.publisher_id, self.ttl_ms],
            )
            if isinstance(taken, int) and taken > 0:
                epoch = taken
                self.acquired += 1
                self._valid_until[symbol] = valid_until
                self.taken_at[symbol] = trio.current_time()
                log.info("bus: took %s at epoch %d", symbol, epoch)
                self._set(symbol, epoch)

    def _preference(self) -> list[str]:
        # A per-publisher rotation: publishers starting together reach for different symbols.
        if not self.symbols:
            return []
        offset = zlib.crc32(self.publisher_id.encode()) % len(self.symbols)
        return self.symbols[offset:] + self.symbols[:offset]

    async def _release(self, symbol: str) -> None:
        epoch = self.owned[symbol]
        self._set(symbol, None)
        self.released += 1
        await self.client.eval(_RELEASE, [self.keys.lease(symbol)], [self._token(epoch)])

    async def release_all(self) -> None:
        """Give every lease back and deregister (a clean exit hands over without waiting)."""
        for symbol in list(self.owned):
            await self._release(symbol)
        await self.client.zrem(self.keys.publishers, [self.publisher_id])

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Heartbeat every ``ttl / 4`` until cancelled; on the way out, release everything."""
        from backpack_actors.sinks.redis import REDIS_ERRORS

        started = False
        try:
            while True:
                try:
                    with trio.fail_after(self.ttl / 2):
                        await self.tick()
                except REDIS_ERRORS as exc:
                    self.errors += 1
                    log.warning("bus: heartbeat failed: %s: %s", type(exc).__name__, exc)
                if not started:
                    started = True
                    task_status.started()
                await trio.sleep(self.ttl / 4)
        finally:
            # Best effort: a lease not released expires after the TTL anyway.
            with trio.move_on_after(1.0, shield=True), contextlib.suppress(*REDIS_ERRORS):
                await self.release_all()

    def statistics(self) -> dict[str, object]:
        return {
            "publisher": self.publisher_id,
            "owned": dict(self.owned),
            "live_publishers": self.live_publishers,
            "acquired": self.acquired,
            "lost": self.lost,
            "released": self.released,
            "errors": self.errors,
        }
