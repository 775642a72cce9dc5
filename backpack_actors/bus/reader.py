"""Reading the bus in another process, with the feed's guarantees re-verified.

:func:`open_bus_feed` yields the feed's own event types from the Redis streams that
:class:`~backpack_actors.sinks.redis.RedisStreamsSink` writes, and checks again what the feed
checked, so a consumer on the far side of Redis is never silently wrong either:

* **one publisher epoch at a time**: entries of an older epoch than the newest seen are ignored
  (a publisher that lost its lease and still writes); a newer epoch is a handover, reported as a
  ``resyncing`` status and followed by the new owner's checkpoint;
* **no lost entries**: each stream's sequence numbers must be contiguous; a hole (entries trimmed
  before this reader got to them, or lost by a Redis restart) is reported in-band
  (``gap_detected`` for a book, ``trade_gap`` for trades, reasons starting with ``bus:``) and the
  book resumes from the next checkpoint (``resynced``);
* **delta continuity**: each delta continues the book (``first_update_id <= previous + 1 <=
  last_update_id``, the feed's rule); otherwise the same as a hole;
* **trade ids**: no id twice; a jump the feed did not announce is reported as a ``trade_gap``.

A reader starts at the newest resync point of each book stream (a checkpoint, or a snapshot the
feed published), so it needs no REST call, and reads the trade stream from the same moment.
Checkpoints met while in sync are checked, not delivered: what a reader yields is what the feed
emitted, in order per symbol and stream.
"""

from __future__ import annotations

import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import cast

import coredis
import msgspec
import trio

from backpack_actors.bus.schema import Keys, decode_payload, is_resync_point, parse_meta
from backpack_actors.core.events import (
    BookDelta,
    BookSnapshot,
    Event,
    ProtocolErrorEvent,
    StatusEvent,
    StatusKind,
    Trade,
)

__all__ = ["BusFeed", "BusStats", "bus_symbol", "open_bus_feed", "previous_id"]

_ANNOUNCING = frozenset(
    {StatusKind.TRADE_GAP, StatusKind.TRADE_ID_RESET, StatusKind.CONSUMER_OVERFLOW}
)


def bus_symbol(symbol: str) -> str:
    """The symbol as stream keys spell it: ``btc_usdc``, ``BTC/USDC`` -> ``BTC-USDC``."""
    return "-".join(
        part
        for part in symbol.strip().upper().replace("/", "-").replace("_", "-").split("-")
        if part
    )


def previous_id(entry_id: bytes | str) -> str:
    """The stream id just before ``entry_id`` (``XREAD`` from it returns ``entry_id`` first)."""
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    ms, _, seq = text.partition("-")
    if int(seq) > 0:
        return f"{ms}-{int(seq) - 1}"
    if int(ms) == 0:
        return "0-0"
    return f"{int(ms) - 1}-18446744073709551615"


class BusStats(msgspec.Struct):
    """What a reader met: entries read, and everything it reported or ignored."""

    entries: int = 0
    events: int = 0
    holes: int = 0
    discontinuities: int = 0
    handovers: int = 0
    stale_epoch: int = 0
    duplicates: int = 0
    resyncs: int = 0
    checkpoints_checked: int = 0
    skipped_unsynced: int = 0
    undecodable: int = 0
    unannounced_trade_jumps: int = 0
    reconnects: int = 0
    channel_holes: int = 0


class _Book:
    __slots__ = ("epoch", "last_seq", "resync_pending", "synced", "update_id")

    def __init__(self) -> None:
        self.epoch = 0
        self.last_seq: int | None = None
        self.synced = False
        self.update_id = 0
        self.resync_pending = False


class _Trades:
    __slots__ = ("announced", "epoch", "last_seq", "newest", "seen", "seen_order")

    def __init__(self) -> None:
        self.epoch = 0
        self.last_seq: int | None = None
        self.newest: int | None = None
        self.announced = False
        self.seen: set[int] = set()
        self.seen_order: deque[int] = deque()

    def remember(self, trade_id: int, bound: int = 100_000) -> None:
        self.seen.add(trade_id)
        self.seen_order.append(trade_id)
        if len(self.seen_order) > bound:
            self.seen.discard(self.seen_order.popleft())


class BusFeed:
    """The reader; iterate it (``async for event in bus``) or read lists with :meth:`batches`."""

    def __init__(
        self,
        client: coredis.Redis[bytes],
        symbols: Sequence[str],
        *,
        keys: Keys | None = None,
        block: float = 1.0,
        count: int = 1000,
        wall_clock: object = time.time,
        name: str | None = None,
    ) -> None:
        self.client = client
        self.keys = keys or Keys()
        self.symbols = [bus_symbol(s) for s in symbols]
        self.block_ms = max(1, int(block * 1000))
        self.count = count
        self._wall = wall_clock if callable(wall_clock) else time.time
        self.stats = BusStats()
        self._books = {s: _Book() for s in self.symbols}
        self._trades = {s: _Trades() for s in self.symbols}
        self._positions: dict[str, str] = {}
        self._channels: dict[str, tuple[int, int]] = {}
        self._kind: dict[str, tuple[str, str]] = {}
        for s in self.symbols:
            self._kind[self.keys.book(s)] = ("book", s)
            self._kind[self.keys.trades(s)] = ("trades", s)
            self._kind[self.keys.channels(s)] = ("channels", s)
        self.last_error: str | None = None
        self.name = name
        """Named readers publish their position for ``bus status`` (lag) every second."""
        self._reported = -float("inf")
        self.last_entry_us: dict[str, int] = {}
        """Per stream, the publisher's write time of the newest entry read (µs)."""

    async def start(self) -> None:
        """Position every stream: at the newest resync point of each book, trades from there."""
        for symbol in self.symbols:
            book_key, trade_key = self.keys.book(symbol), self.keys.trades(symbol)
            point = await self._newest_resync_point(book_key)
            start = previous_id(point) if point is not None else "0-0"
            self._positions[book_key] = start
            self._positions[trade_key] = start
            self._positions[self.keys.channels(symbol)] = start

    async def _newest_resync_point(self, key: str) -> bytes | None:
        end: bytes | str = "+"
        while True:
            entries = await self.client.xrevrange(key, end=end, start="-", count=200)
            if not entries:
                return None
            for entry in entries:
                fields = cast(dict[bytes, bytes], entry.field_values)
                try:
                    meta = parse_meta(fields)
                except (KeyError, ValueError):
                    continue
                if meta.kind == b"c" or b'"type":"book_snapshot"' in fields.get(b"d", b"")[:40]:
                    return bytes(entry.identifier)  # type: ignore[arg-type]
                if meta.codec == b"m":
                    try:
                        event = decode_payload(fields[b"d"], b"m")
                    except (msgspec.ValidationError, msgspec.DecodeError, KeyError):
                        continue
                    if is_resync_point(meta.kind, event):
                        return bytes(entry.identifier)  # type: ignore[arg-type]
            last = entries[-1].identifier
            end = "(" + (last.decode() if isinstance(last, bytes) else str(last))

    async def read_batch(self) -> list[Event]:
        """The events of the next entries (empty when none came within ``block``)."""
        if not self._positions:
            await self.start()
        reply = await self.client.xread(
            dict(self._positions), count=self.count, block=self.block_ms
        )
        out: list[Event] = []
        if not reply:
            return out
        for raw_key, entries in reply.items():
            key = raw_key.decode() if isinstance(raw_key, bytes) else str(raw_key)
            kind, symbol = self._kind[key]
            for entry in entries:
                self._positions[key] = (
                    entry.identifier.decode()
                    if isinstance(entry.identifier, bytes)
                    else str(entry.identifier)
                )
                self.stats.entries += 1
                fields = cast(dict[bytes, bytes], entry.field_values)
                if kind == "book":
                    self._book_entry(key, symbol, fields, out)
                elif kind == "trades":
                    self._trade_entry(key, symbol, fields, out)
                else:
                    self._channel_entry(key, symbol, fields, out)
        self.stats.events += len(out)
        return out

    async def batches(self) -> AsyncIterator[list[Event]]:
        """Lists of events as they come (never empty); rides out Redis outages, retrying with
        capped backoff (what was lost meanwhile is reported as holes once Redis answers)."""
        from backpack_actors.sinks.redis import REDIS_ERRORS

        failures = 0
        while True:
            try:
                events = await self.read_batch()
            except REDIS_ERRORS as exc:
                failures += 1
                self.stats.reconnects += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
                await trio.sleep(min(2.0, 0.05 * 2 ** min(failures, 6)))
                continue
            failures = 0
            if self.name is not None and trio.current_time() - self._reported >= 1.0:
                with contextlib.suppress(*REDIS_ERRORS):
                    await self.report_position()
            if events:
                yield events

    async def report_position(self) -> None:
        """Record, under ``{prefix}:readers``, the publisher time of the newest entry this
        reader has read per stream, and when it said so (``bus status`` turns it into lag)."""
        if self.name is None:
            return
        self._reported = trio.current_time()
        position = {"seen_ms": int(self._wall() * 1000), "streams": self.last_entry_us}
        await self.client.hset(self.keys.readers, {self.name: msgspec.json.encode(position)})

    def __aiter__(self) -> AsyncIterator[Event]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Event]:
        async for batch in self.batches():
            for event in batch:
                yield event

    # -- verification -----------------------------------------------------------------------------

    def _status(self, symbol: str, kind: StatusKind, reason: str, **counts: int) -> StatusEvent:
        return StatusEvent(
            symbol=symbol, kind=kind, reason=f"bus: {reason}", counts=counts, at=self._wall()
        )

    def _decode(
        self, key: str, symbol: str, fields: dict[bytes, bytes], out: list[Event]
    ) -> tuple[int, int, bytes, Event] | None:
        try:
            epoch, seq, kind, codec, written_us = parse_meta(fields)
            event = decode_payload(fields[b"d"], codec)
            self.last_entry_us[key] = written_us
        except (KeyError, ValueError, msgspec.ValidationError, msgspec.DecodeError) as exc:
            self.stats.undecodable += 1
            excerpt = repr(fields.get(b"d", b""))[:120]
            out.append(
                ProtocolErrorEvent(
                    symbol=symbol,
                    stream=key,
                    reason=f"bus entry did not decode: {type(exc).__name__}",
                    excerpt=excerpt,
                    count=self.stats.undecodable,
                    at=self._wall(),
                )
            )
            return None
        return epoch, seq, kind, event

    def _book_entry(
        self, key: str, symbol: str, fields: dict[bytes, bytes], out: list[Event]
    ) -> None:
        decoded = self._decode(key, symbol, fields, out)
        state = self._books[symbol]
        if decoded is None:
            state.synced = False
            state.resync_pending = True
            return
        epoch, seq, kind, event = decoded
        if epoch < state.epoch:
            self.stats.stale_epoch += 1
            return
        if epoch > state.epoch:
            if state.epoch:
                self.stats.handovers += 1
                out.append(
                    self._status(
                        symbol,
                        StatusKind.RESYNCING,
                        f"publisher handover, epoch {state.epoch} -> {epoch}; resyncing from "
                        "the new publisher's checkpoint",
                        epoch=epoch,
                    )
                )
                state.synced = False
                state.resync_pending = True
            state.epoch = epoch
            state.last_seq = None
        elif state.last_seq is not None:
            if seq <= state.last_seq:
                self.stats.duplicates += 1
                return
            if seq != state.last_seq + 1:
                missing = seq - state.last_seq - 1
                self.stats.holes += 1
                out.append(
                    self._status(
                        symbol,
                        StatusKind.GAP_DETECTED,
                        f"{missing} book entries missing (trimmed before this reader got to "
                        "them, or lost by Redis); resyncing from the next checkpoint",
                        missing_entries=missing,
                    )
                )
                state.synced = False
                state.resync_pending = True
        state.last_seq = seq
        if not state.synced:
            if isinstance(event, BookSnapshot) and is_resync_point(kind, event):
                state.synced = True
                state.update_id = event.update_id
                out.append(event)
                if state.resync_pending:
                    state.resync_pending = False
                    self.stats.resyncs += 1
                    out.append(
                        self._status(
                            symbol,
                            StatusKind.RESYNCED,
                            f"resynced from a bus checkpoint at update {event.update_id}",
                        )
                    )
            elif isinstance(event, BookDelta):
                self.stats.skipped_unsynced += 1
            else:
                out.append(event)
            return
        if kind == b"c":
            self.stats.checkpoints_checked += 1
            assert isinstance(event, BookSnapshot)
            if event.update_id != state.update_id:
                # The publisher's book moved on without entries for it: deliver its book.
                self.stats.discontinuities += 1
                state.update_id = event.update_id
                out.append(event)
            return
        if isinstance(event, BookSnapshot):
            state.update_id = event.update_id
        elif isinstance(event, BookDelta):
            if not event.first_update_id <= state.update_id + 1 <= event.last_update_id:
                self.stats.discontinuities += 1
                out.append(
                    self._status(
                        symbol,
                        StatusKind.GAP_DETECTED,
                        f"delta {event.first_update_id}..{event.last_update_id} does not "
                        f"continue update {state.update_id}; resyncing from the next checkpoint",
                    )
                )
                state.synced = False
                state.resync_pending = True
                return
            state.update_id = event.last_update_id
        out.append(event)

    def _channel_entry(
        self, key: str, symbol: str, fields: dict[bytes, bytes], out: list[Event]
    ) -> None:
        """Tickers, candles, ...: latest values, delivered in order; only the epoch rule and
        duplicates apply (a hole is counted, not reported: the next value replaces the lost)."""
        decoded = self._decode(key, symbol, fields, out)
        if decoded is None:
            return
        epoch, seq, _kind, event = decoded
        last = self._channels.get(key)
        if last is not None:
            last_epoch, last_seq = last
            if epoch < last_epoch:
                self.stats.stale_epoch += 1
                return
            if epoch == last_epoch:
                if seq <= last_seq:
                    self.stats.duplicates += 1
                    return
                if seq != last_seq + 1:
                    self.stats.channel_holes += 1
        self._channels[key] = (epoch, seq)
        out.append(event)

    def _trade_entry(
        self, key: str, symbol: str, fields: dict[bytes, bytes], out: list[Event]
    ) -> None:
        decoded = self._decode(key, symbol, fields, out)
        state = self._trades[symbol]
        if decoded is None:
            state.announced = True
            return
        epoch, seq, _kind, event = decoded
        if epoch < state.epoch:
            self.stats.stale_epoch += 1
            return
        if epoch > state.epoch:
            if state.epoch:
                # Trades between the old publisher's last entry and the new one's first may be
                # missing: a jump there is reported below as the handover's.
                state.announced = True
            state.epoch = epoch
            state.last_seq = None
        elif state.last_seq is not None:
            if seq <= state.last_seq:
                self.stats.duplicates += 1
                return
            if seq != state.last_seq + 1:
                missing = seq - state.last_seq - 1
                self.stats.holes += 1
                out.append(
                    self._status(
                        symbol,
                        StatusKind.TRADE_GAP,
                        f"{missing} trade-stream entries missing (trimmed before this reader "
                        "got to them, or lost by Redis)",
                        missing_entries=missing,
                    )
                )
                state.announced = True
        state.last_seq = seq
        if isinstance(event, Trade):
            if event.trade_id in state.seen:
                self.stats.duplicates += 1
                return
            newest = state.newest
            if (
                newest is not None
                and not event.backfilled
                and event.trade_id > newest + 1
                and not state.announced
            ):
                self.stats.unannounced_trade_jumps += 1
                out.append(
                    self._status(
                        symbol,
                        StatusKind.TRADE_GAP,
                        f"trade id jump {newest} -> {event.trade_id} not announced by the feed",
                        missing=event.trade_id - newest - 1,
                    )
                )
                state.announced = True
            if newest is None or event.trade_id > newest:
                state.newest = event.trade_id
            state.remember(event.trade_id)
        elif isinstance(event, StatusEvent) and event.kind in _ANNOUNCING:
            state.announced = True
        out.append(event)


@asynccontextmanager
async def open_bus_feed(
    redis_url: str,
    symbols: Iterable[str],
    *,
    prefix: str = "bpa",
    block: float = 1.0,
    count: int = 1000,
    name: str | None = None,
) -> AsyncIterator[BusFeed]:
    """A :class:`BusFeed` on ``redis_url`` for ``symbols`` (any form), positioned and open for
    the block: ``async with open_bus_feed(url, ["BTC-USDC"]) as bus: async for event in bus``.
    A ``name`` makes the reader's lag visible in ``bus status``."""
    client: coredis.Redis[bytes] = coredis.Redis.from_url(redis_url, stream_timeout=block + 10.0)
    async with client:
        bus = BusFeed(client, list(symbols), keys=Keys(prefix), block=block, count=count, name=name)
        await bus.start()
        yield bus
