"""The Redis Streams bus: the feed's events fanned out to other processes, guarantees included.

Publishers write with :class:`~backpack_actors.sinks.redis.RedisStreamsSink` (stream layout in
:mod:`backpack_actors.bus.schema`), sharing the symbols through leases
(:mod:`backpack_actors.bus.lease`) and, given their feed, streaming only the symbols they lease
(:mod:`backpack_actors.bus.shard`); readers use :func:`open_bus_feed`, which re-verifies
continuity, trade ids and publisher epochs (:mod:`backpack_actors.bus.reader`), or share the work
in a consumer group with :func:`open_bus_group`. Needs the
``redis`` extra (coredis). docs/bus.md is the guide.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from backpack_actors.bus.group import BusGroupReader, GroupEntry, open_bus_group
    from backpack_actors.bus.reader import BusFeed, BusStats, open_bus_feed
    from backpack_actors.bus.schema import Keys

# Imported on first use: the CLI imports ``backpack_actors.bus.cli`` for its options, and that
# must not need coredis (the ``redis`` extra) unless a bus command runs.
_WHERE = {
    "BusGroupReader": "group",
    "GroupEntry": "group",
    "open_bus_group": "group",
    "BusFeed": "reader",
    "BusStats": "reader",
    "open_bus_feed": "reader",
    "Keys": "schema",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


__all__ = [
    "BusFeed",
    "BusGroupReader",
    "BusStats",
    "GroupEntry",
    "Keys",
    "open_bus_feed",
    "open_bus_group",
]
