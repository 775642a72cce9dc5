"""Events to Redis Streams: per symbol a book stream and a trade stream, plus a status stream.

:class:`RedisStreamsSink` is a :class:`~backpack_actors.sinks.Sink` (run it with
:func:`~backpack_actors.sinks.run_sink` on its own ``feed.subscribe_events("redis")``): its
``write`` runs in run_sink's worker thread and hands the batch to the trio thread, where coredis
(built on anyio, so it runs under trio as it is) writes it as one pipeline. A slow or unreachable
Redis blocks only that worker thread: the sink's own subscription fills and applies the feed's
per-subscriber policy (books conflate; trades are kept up to the bound, then dropped with an
in-band ``consumer_overflow`` entry written when the sink catches up); the feed never waits.

The sink keeps each symbol's book (from the events it is given), so it can write a *checkpoint*
entry — the whole book — whenever a reader may need one: every ``checkpoint_deltas`` book entries
or ``checkpoint_interval`` seconds, first after a reconnect (the entries of the failed write are
replaced by it: Redis may have lost them, and readers report the hole), and first in a new epoch
(a publisher that just took a symbol over). Book streams are trimmed (``MAXLEN ~``) to three
checkpoint spans, so at least two checkpoints are always in the window. The entry layout is in
:mod:`backpack_actors.bus.schema`.
"""

from __future__ import annotations

import contextlib
import logging
import random
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, Protocol

import anyio
import coredis
import coredis.exceptions
import trio
from coredis.retry import NoRetryPolicy

from backpack_actors.bus.schema import Codec, Keys, encode_meta, encode_payload
from backpack_actors.core.book import OrderBook
from backpack_actors.core.events import (
    BookDelta,
    BookSnapshot,
    Event,
    ProtocolErrorEvent,
    StatusEvent,
    Trade,
)
from backpack_actors.errors import redact_urls

__all__ = [
    "Ownership",
    "RedisStreamsSink",
    "StaticOwnership",
    "open_redis_sink",
    "redis_client",
]

log = logging.getLogger(__name__)

# What a Redis outage looks like to coredis: the socket failed, or it did not answer in time.
REDIS_ERRORS: tuple[type[BaseException], ...] = (
    coredis.exceptions.ConnectionError,
    coredis.exceptions.BusyLoadingError,
    TimeoutError,
    OSError,
    trio.TooSlowError,
    # A connection that closed under a command (Redis restarted, the socket reset).
    anyio.ClosedResourceError,
    anyio.BrokenResourceError,
)


_SNAPSHOT_FIELDS = frozenset(BookSnapshot.__struct_fields__)

# One batch as one script call. It writes only while this sink's marker key exists, so a Redis
# that restarted empty is noticed before anything lands in the new, empty streams (the client
# itself reconnects without an error). And it fences: an entry whose epoch is older than its
# symbol's epoch key (another publisher took the symbol over) is not written. ARGV: the count,
# then per entry its key, maxlen, epoch key ('' for none), epoch, field count and fields; last the
# marker's TTL. Returns the number of entries fenced off, or -1 when the marker is gone.
_WRITE_SCRIPT = """
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
local n = tonumber(ARGV[1])
local i = 2
local fenced = 0
local epochs = {}
for _ = 1, n do
  local fence, epoch, fields = ARGV[i + 2], tonumber(ARGV[i + 3]), tonumber(ARGV[i + 4])
  local allowed = true
  if fence ~= '' then
    local current = epochs[fence]
    if current == nil then
      current = tonumber(redis.call('GET', fence) or '0')
      epochs[fence] = current
    end
    allowed = current <= epoch
  end
  if allowed then
    local args = {ARGV[i], 'MAXLEN', '~', ARGV[i + 1], '*'}
    for j = 5, 4 + 2 * fields do
      args[#args + 1] = ARGV[i + j]
    end
    redis.call('XADD', unpack(args))
  else
    fenced = fenced + 1
  end
  i = i + 5 + 2 * fields
end
redis.call('PEXPIRE', KEYS[1], ARGV[i])
return fenced
"""
_ALIVE_TTL_MS = 3_600_000


class Ownership(Protocol):
    """Which symbols this publisher may write, and under which fencing epoch."""

    async def ensure(self, client: coredis.Redis[bytes], symbols: set[str]) -> None:
        """Make :meth:`epoch_of` answer for ``symbols`` (may talk to Redis)."""

    def epoch_of(self, symbol: str) -> int | None:
        """The symbol's epoch while this publisher owns it, else None (its entries are skipped)."""


class StaticOwnership:
    """One publisher owns every symbol it sees: each gets a fresh epoch (``INCR``) when first
    written, so readers tell this run's entries from an earlier run's."""

    def __init__(self, keys: Keys) -> None:
        self._keys = keys
        self._epochs: dict[str, int] = {}

    async def ensure(self, client: coredis.Redis[bytes], symbols: set[str]) -> None:
        for symbol in symbols - self._epochs.keys():
            self._epochs[symbol] = int(await client.incr(self._keys.epoch(symbol)))

    def epoch_of(self, symbol: str) -> int | None:
        return self._epochs.get(symbol)


class _Entry:
    __slots__ = ("book_data", "epoch", "fields", "key", "maxlen", "symbol")

    def __init__(
        self,
        key: str,
        fields: dict[str, bytes],
        maxlen: int,
        symbol: str,
        epoch: int,
        book_data: bool,
    ) -> None:
        self.key = key
        self.fields = fields
        self.maxlen = maxlen
        self.symbol = symbol
        self.epoch = epoch
        # A book snapshot, delta or checkpoint: replaced by a checkpoint if its write fails.
        self.book_data = book_data


class _Symbol:
    __slots__ = (
        "book",
        "engine_time_us",
        "epoch_started",
        "exchange_symbol",
        "known",
        "last_checkpoint",
        "last_event",
        "need_checkpoint",
        "since_checkpoint",
        "update_id",
    )

    def __init__(self, exchange_symbol: str) -> None:
        self.exchange_symbol = exchange_symbol
        self.book = OrderBook()
        self.known = False
        self.last_event: BookSnapshot | BookDelta | None = None
        self.update_id = 0
        self.engine_time_us: int | None = None
        self.epoch_started: int | None = None
        self.need_checkpoint = True
        self.since_checkpoint = 0
        self.last_checkpoint = -float("inf")


class RedisStreamsSink:
    """Writes events to Redis Streams (see the module docstring); make it with
    :func:`open_redis_sink`, or give it a coredis client that stays open while it is used."""

    name = "redis"

    def __init__(
        self,
        client: coredis.Redis[bytes],
        *,
        keys: Keys | None = None,
        codec: Codec = "json",
        ownership: Ownership | None = None,
        checkpoint_deltas: int = 500,
        checkpoint_interval: float = 5.0,
        trades_maxlen: int = 100_000,
        status_maxlen: int = 10_000,
        channels_maxlen: int = 10_000,
        batching: bool = True,
        write_timeout: float = 5.0,
        backoff: tuple[float, float] = (0.05, 2.0),
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        if checkpoint_deltas < 1:
            raise ValueError("checkpoint_deltas must be at least 1")
        self.client = client
        self.keys = keys or Keys()
        self.codec: Codec = codec
        self._codec_tag = b"m" if codec == "msgpack" else b"j"
        self.ownership: Ownership = ownership or StaticOwnership(self.keys)
        self.checkpoint_deltas = checkpoint_deltas
        self.checkpoint_interval = checkpoint_interval
        # Three checkpoint spans (plus room for status entries): `~` trims only whole macro
        # nodes and never below the threshold, so two checkpoints always stay in the window.
        self.book_maxlen = 3 * checkpoint_deltas + 100
        self.trades_maxlen = trades_maxlen
        self.status_maxlen = status_maxlen
        self.channels_maxlen = channels_maxlen
        self.batching = batching
        self.write_timeout = write_timeout
        self._backoff = backoff
        self._wall = wall_clock
        self._symbols: dict[str, _Symbol] = {}
        self._seq: dict[str, int] = {}
        self.entries = 0
        self.events = 0
        self.checkpoints = 0
        self.failures = 0
        self.restarts = 0
        self.fenced = 0
        self._streak = 0
        # This sink's marker: present while Redis still holds what the sink wrote.
        self._alive_key = f"{self.keys.prefix}:alive:{uuid.uuid4().hex}"
        self._alive_set = False
        self.reconnects = 0
        self.last_error: str | None = None

    # -- the Sink protocol (worker thread) -------------------------------------------------------

    def write(self, events: list[Event]) -> None:
        """Write one batch from run_sink's worker thread (blocks while Redis is down)."""
        trio.from_thread.run(self.publish, events)

    def close(self) -> None:
        """Nothing is buffered (every write finished before it returned); drops the marker."""
        trio.from_thread.run(self.aclose)

    async def aclose(self) -> None:
        """Drop this sink's marker key (best effort: it expires on its own)."""
        if self._alive_set:
            with trio.move_on_after(1.0), contextlib.suppress(*REDIS_ERRORS):
                await self.client.delete([self._alive_key])

    # -- trio side --------------------------------------------------------------------------------

    def forget(self, symbol: str) -> None:
        """Drop what this sink knows of ``symbol``'s book (it is no longer streamed here): a
        later retried write or epoch must never turn that stale book into a checkpoint."""
        self._symbols.pop(symbol, None)

    async def publish(self, events: list[Event]) -> None:
        """Write ``events`` (in order, with any checkpoints due); retries until written."""
        entries: list[_Entry] = []
        symbols = {symbol for e in events if (symbol := getattr(e, "symbol", ""))}
        await self._retrying(lambda: self.ownership.ensure(self.client, symbols))
        for event in events:
            self._absorb(event, entries)
        self.events += len(events)
        await self._write(entries)

    def statistics(self) -> dict[str, object]:
        return {
            "events": self.events,
            "entries": self.entries,
            "checkpoints": self.checkpoints,
            "failures": self.failures,
            "reconnects": self.reconnects,
            "restarts": self.restarts,
            "fenced": self.fenced,
            "last_error": self.last_error,
        }

    def _entry(
        self, key: str, event: Event, kind: bytes, epoch: int, symbol: str, book_data: bool
    ) -> _Entry:
        seq = self._seq.get(key, 0) + 1
        self._seq[key] = seq
        fields = {
            "m": encode_meta(epoch, seq, kind, self._codec_tag, int(self._wall() * 1_000_000)),
            "d": encode_payload(event, self.codec),
        }
        if key == self.keys.status:
            maxlen = self.status_maxlen
        elif key.startswith(f"{self.keys.prefix}:trades:"):
            maxlen = self.trades_maxlen
        elif key.startswith(f"{self.keys.prefix}:channels:"):
            maxlen = self.channels_maxlen
        else:
            maxlen = self.book_maxlen
        return _Entry(key, fields, maxlen, symbol, epoch, book_data)

    def _checkpoint(self, symbol: str, state: _Symbol, epoch: int) -> _Entry:
        bids, asks = state.book.depth()
        # The checkpoint carries the receipt stamps of the newest book event it contains.
        last = state.last_event
        base: dict[str, Any] = {}
        if last is not None:
            shared = _SNAPSHOT_FIELDS.intersection(type(last).__struct_fields__)
            base = {name: getattr(last, name) for name in shared}
        base.update(
            symbol=symbol,
            exchange_symbol=state.exchange_symbol,
            update_id=state.update_id,
            raw_bids=bids,
            raw_asks=asks,
            engine_time_us=state.engine_time_us,
            reason="checkpoint",
            force=True,
            age_us=None,
        )
        snapshot = BookSnapshot(**base)
        state.need_checkpoint = False
        state.since_checkpoint = 0
        state.last_checkpoint = trio.current_time()
        self.checkpoints += 1
        return self._entry(self.keys.book(symbol), snapshot, b"c", epoch, symbol, True)

    def _absorb(self, event: Event, out: list[_Entry]) -> None:
        symbol: str = getattr(event, "symbol", "")
        epoch = self.ownership.epoch_of(symbol) if symbol else 0
        if isinstance(event, (StatusEvent, ProtocolErrorEvent)):
            out.append(self._entry(self.keys.status, event, b"e", epoch or 0, symbol, False))
        if not symbol:
            return
        state = self._symbols.get(symbol)
        if state is None:
            exchange_symbol = getattr(event, "exchange_symbol", symbol.replace("-", "_"))
            state = self._symbols[symbol] = _Symbol(exchange_symbol)
        if isinstance(event, (BookSnapshot, BookDelta)):
            self._apply(state, event)
        if epoch is None:
            # Not ours (yet): the book is kept so a takeover can start with a checkpoint.
            state.epoch_started = None
            return
        if state.epoch_started != epoch:
            state.epoch_started = epoch
            state.need_checkpoint = True
        if isinstance(event, Trade):
            out.append(self._entry(self.keys.trades(symbol), event, b"e", epoch, symbol, False))
        elif isinstance(event, StatusEvent):
            key = self.keys.stream_of(event)
            assert key is not None
            out.append(self._entry(key, event, b"e", epoch, symbol, False))
        elif isinstance(event, BookSnapshot):
            out.append(self._entry(self.keys.book(symbol), event, b"e", epoch, symbol, True))
            state.need_checkpoint = False
            state.since_checkpoint = 0
            state.last_checkpoint = trio.current_time()
        elif isinstance(event, BookDelta):
            if not state.known:
                return
            if state.need_checkpoint:
                # The checkpoint already contains this delta.
                out.append(self._checkpoint(symbol, state, epoch))
                return
            out.append(self._entry(self.keys.book(symbol), event, b"e", epoch, symbol, True))
            state.since_checkpoint += 1
            if (
                state.since_checkpoint >= self.checkpoint_deltas
                or trio.current_time() - state.last_checkpoint >= self.checkpoint_interval
            ):
                out.append(self._checkpoint(symbol, state, epoch))
        elif not isinstance(event, ProtocolErrorEvent):
            # The other channels (tickers, candles, mark prices, ...): in order, unchecked.
            key = self.keys.stream_of(event)
            if key is not None:
                out.append(self._entry(key, event, b"e", epoch, symbol, False))

    @staticmethod
    def _apply(state: _Symbol, event: BookSnapshot | BookDelta) -> None:
        state.last_event = event
        if isinstance(event, BookSnapshot):
            state.book.load(event.raw_bids, event.raw_asks)
            state.update_id = event.update_id
            state.known = True
        elif state.known:
            state.book.apply(event.raw_bids, event.raw_asks)
            state.update_id = event.last_update_id
        state.engine_time_us = event.engine_time_us

    async def _write(self, entries: list[_Entry]) -> None:
        while entries:
            try:
                with trio.fail_after(self.write_timeout):
                    intact = await self._send(entries)
            except REDIS_ERRORS as exc:
                self.failures += 1
                self.last_error = redact_urls(f"{type(exc).__name__}: {exc}")
                log.warning("redis sink: write failed (%s); retrying", self.last_error)
                await self._sleep_backoff()
                await self._retrying(self.client.ping)
                entries = self._restart_with_checkpoints(entries)
                continue
            if not intact:
                # Redis lost its data since the last write (restarted empty, flushed), though
                # the client reconnected without an error: nothing of this batch was written.
                self.restarts += 1
                await self._retrying(self._mark_alive)
                entries = self._restart_with_checkpoints(entries)
                continue
            self.entries += len(entries)
            self._streak = 0
            return

    async def _mark_alive(self) -> None:
        await self.client.set(self._alive_key, b"1", px=_ALIVE_TTL_MS)

    async def _send(self, entries: list[_Entry]) -> bool:
        """Write the entries; False (and nothing written) when Redis lost this sink's marker."""
        if not self._alive_set:
            await self._mark_alive()
            self._alive_set = True
        groups = [entries] if self.batching else [[entry] for entry in entries]
        for group in groups:
            args: list[bytes | str | int] = [len(group)]
            for entry in group:
                fence = self.keys.epoch(entry.symbol) if entry.key != self.keys.status else ""
                args += [entry.key, entry.maxlen, fence, entry.epoch, len(entry.fields)]
                for name, value in entry.fields.items():
                    args += [name, value]
            fenced = await self.client.eval(
                _WRITE_SCRIPT, [self._alive_key], [*args, _ALIVE_TTL_MS]
            )
            if fenced == -1:
                return False
            if isinstance(fenced, int) and fenced > 0:
                self.fenced += fenced
                log.warning(
                    "redis sink: %d entries refused: a newer publisher owns their symbols", fenced
                )
        return True

    def _restart_with_checkpoints(self, entries: list[_Entry]) -> list[_Entry]:
        """The retry starts with a checkpoint of every book this sink writes (what Redis had may
        be gone: readers see the hole and resync there); the batch's book entries are in those
        checkpoints, its other entries follow in order."""
        self.reconnects += 1
        fresh: list[_Entry] = []
        for symbol, state in sorted(self._symbols.items()):
            epoch = self.ownership.epoch_of(symbol)
            state.need_checkpoint = True
            if epoch is not None and state.known:
                state.epoch_started = epoch
                fresh.append(self._checkpoint(symbol, state, epoch))
        return fresh + [e for e in entries if not e.book_data]

    async def _retrying(self, call: Callable[[], Awaitable[object]]) -> None:
        while True:
            try:
                with trio.fail_after(self.write_timeout):
                    await call()
                return
            except REDIS_ERRORS as exc:
                self.failures += 1
                self.last_error = redact_urls(f"{type(exc).__name__}: {exc}")
                await self._sleep_backoff()

    async def _sleep_backoff(self) -> None:
        low, high = self._backoff
        self._streak += 1
        delay = min(high, low * 2 ** min(self._streak, 16))
        await trio.sleep(delay * random.uniform(0.5, 1.0))


@asynccontextmanager
async def open_redis_sink(url: str, **options: object) -> AsyncIterator[RedisStreamsSink]:
    """A :class:`RedisStreamsSink` on its own coredis client for ``url`` (``redis://host:port/db``),
    open for the block; ``options`` are the sink's keyword arguments."""
    async with redis_client(url) as client:
        yield RedisStreamsSink(client, **options)  # type: ignore[arg-type]


def redis_client(url: str, *, stream_timeout: float = 5.0) -> coredis.Redis[bytes]:
    """A coredis client for a publisher: commands are not retried behind its back, so the sink
    sees every failure (and knows to start again with checkpoints); enter it with ``async with``.
    """
    client: coredis.Redis[bytes] = coredis.Redis.from_url(
        url, stream_timeout=stream_timeout, retry_policy=NoRetryPolicy()
    )
    return client
