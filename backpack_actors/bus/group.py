"""Work-sharing readers: a Redis consumer group over the bus's streams.

Readers that split the work (each trade handled by one of them, e.g. writing it to a database)
join one group: every entry goes to one member, who acknowledges it after processing
(:meth:`BusGroupReader.ack`). A member that dies leaves its entries pending; another member
claims them once they were idle for ``claim_after`` seconds (``XAUTOCLAIM``), so each entry is
processed at least once. A member that restarts under the same name first gets its own pending
entries again.

Each member sees only part of a stream, so the continuity checks of
:func:`~backpack_actors.bus.open_bus_feed` (which needs every entry) do not apply here; the epoch
rule does: an entry of an older epoch than the newest this member has seen in its stream is
acknowledged and skipped. Checkpoints are not work items (acknowledged and skipped too).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import cast

import coredis
import coredis.exceptions
import msgspec
import trio

from backpack_actors.bus.reader import bus_symbol
from backpack_actors.bus.schema import Keys, decode_payload, parse_meta
from backpack_actors.core.events import Event

__all__ = ["BusGroupReader", "GroupEntry", "open_bus_group"]


class GroupEntry(msgspec.Struct, frozen=True):
    """One work item: the event, and where to acknowledge it."""

    stream: str
    entry_id: str
    epoch: int
    event: Event


class BusGroupReader:
    """One member of a consumer group; iterate it for :class:`GroupEntry` items."""

    def __init__(
        self,
        client: coredis.Redis[bytes],
        symbols: Iterable[str],
        group: str,
        consumer: str,
        *,
        keys: Keys | None = None,
        streams: Iterable[str] = ("trades",),
        claim_after: float = 5.0,
        block: float = 1.0,
        count: int = 100,
    ) -> None:
        self.client = client
        self.keys = keys or Keys()
        self.group = group
        self.consumer = consumer
        self.claim_after = claim_after
        self.block_ms = max(1, int(block * 1000))
        self.count = count
        names = list(streams)
        self.streams: list[str] = []
        for symbol in (bus_symbol(s) for s in symbols):
            if "book" in names:
                self.streams.append(self.keys.book(symbol))
            if "trades" in names:
                self.streams.append(self.keys.trades(symbol))
        self._epochs: dict[str, int] = {}
        self._own_pending = True
        self._last_claim = -float("inf")
        self.acked = 0
        self.claimed = 0
        self.skipped = 0

    async def start(self) -> None:
        """Create the group on every stream (from its first entry) unless it exists."""
        for key in self.streams:
            # Another member created it already: fine.
            with contextlib.suppress(coredis.exceptions.StreamDuplicateConsumerGroupError):
                await self.client.xgroup_create(key, self.group, "0", mkstream=True)

    async def ack(self, item: GroupEntry) -> None:
        """Processed: the entry leaves this group's pending list."""
        await self.client.xack(item.stream, self.group, [item.entry_id])
        self.acked += 1

    async def read_batch(self) -> list[GroupEntry]:
        """The next work items: this member's own pending ones first (after a restart), then
        entries idle too long at dead members, then new ones (empty after ``block``)."""
        raw: list[tuple[str, object]] = []
        if self._own_pending:
            reply = await self.client.xreadgroup(
                self.group, self.consumer, dict.fromkeys(self.streams, "0"), count=self.count
            )
            raw = _entries(reply)
            if not raw:
                self._own_pending = False
        if not raw and trio.current_time() - self._last_claim >= self.claim_after / 2:
            self._last_claim = trio.current_time()
            for key in self.streams:
                claimed = await self.client.xautoclaim(
                    key,
                    self.group,
                    self.consumer,
                    int(self.claim_after * 1000),
                    "0-0",
                    count=self.count,
                )
                for entry in claimed[1]:
                    raw.append((key, entry))
                    self.claimed += 1
        if not raw:
            reply = await self.client.xreadgroup(
                self.group,
                self.consumer,
                dict.fromkeys(self.streams, ">"),
                count=self.count,
                block=self.block_ms,
            )
            raw = _entries(reply)
        items: list[GroupEntry] = []
        for key, entry in raw:
            item = self._item(key, entry)
            if item is None:
                self.skipped += 1
                ident = entry.identifier  # type: ignore[attr-defined]
                await self.client.xack(key, self.group, [ident])
                continue
            items.append(item)
        return items

    def _item(self, key: str, entry: object) -> GroupEntry | None:
        fields = cast(dict[bytes, bytes], entry.field_values)  # type: ignore[attr-defined]
        ident = entry.identifier  # type: ignore[attr-defined]
        try:
            epoch, _seq, kind, codec, _written = parse_meta(fields)
            event = decode_payload(fields[b"d"], codec)
        except (KeyError, ValueError, msgspec.ValidationError, msgspec.DecodeError):
            return None
        if epoch < self._epochs.get(key, 0) or kind == b"c":
            return None
        self._epochs[key] = epoch
        entry_id = ident.decode() if isinstance(ident, bytes) else str(ident)
        return GroupEntry(key, entry_id, epoch, event)

    def __aiter__(self) -> AsyncIterator[GroupEntry]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[GroupEntry]:
        while True:
            for item in await self.read_batch():
                yield item


def _entries(reply: object) -> list[tuple[str, object]]:
    if not reply:
        return []
    out: list[tuple[str, object]] = []
    for raw_key, entries in cast(dict[bytes, tuple[object, ...]], reply).items():
        key = raw_key.decode() if isinstance(raw_key, bytes) else str(raw_key)
        out.extend((key, entry) for entry in entries)
    return out


@asynccontextmanager
async def open_bus_group(
    redis_url: str,
    symbols: Iterable[str],
    group: str,
    consumer: str,
    *,
    prefix: str = "bpa",
    streams: Iterable[str] = ("trades",),
    claim_after: float = 5.0,
    block: float = 1.0,
) -> AsyncIterator[BusGroupReader]:
    """A member ``consumer`` of ``group`` on the streams of ``symbols`` (``streams``: "trades"
    and/or "book"), for the block."""
    client: coredis.Redis[bytes] = coredis.Redis.from_url(redis_url, stream_timeout=block + 10.0)
    async with client:
        reader = BusGroupReader(
            client,
            symbols,
            group,
            consumer,
            keys=Keys(prefix),
            streams=streams,
            claim_after=claim_after,
            block=block,
        )
        await reader.start()
        yield reader
