"""backpack_actors: Backpack exchange trades and exact L2 books as supervised trio actors."""

from __future__ import annotations

from backpack_actors.config import L2_BOOK, TRADES, FeedConfig, Secret, load_config
from backpack_actors.core.events import (
    BookDelta,
    BookSnapshot,
    Event,
    Level,
    ProtocolErrorEvent,
    RawLevel,
    Side,
    StatusEvent,
    StatusKind,
    Trade,
)
from backpack_actors.errors import (
    BackpackActorsError,
    ConfigError,
    ProtocolError,
    RateLimitedError,
    RegionRestrictedError,
    UnknownSymbolError,
)
from backpack_actors.feed import STATUS, CcxtBackpackFeed, Feed, open_feed

__all__ = [
    "L2_BOOK",
    "STATUS",
    "TRADES",
    "BackpackActorsError",
    "BookDelta",
    "BookSnapshot",
    "CcxtBackpackFeed",
    "ConfigError",
    "Event",
    "Feed",
    "FeedConfig",
    "Level",
    "ProtocolError",
    "ProtocolErrorEvent",
    "RateLimitedError",
    "RawLevel",
    "RegionRestrictedError",
    "Secret",
    "Side",
    "StatusEvent",
    "StatusKind",
    "Trade",
    "UnknownSymbolError",
    "load_config",
    "open_feed",
]
__version__ = "0.1.0"
