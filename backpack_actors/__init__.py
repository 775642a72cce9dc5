"""backpack_actors: Backpack exchange trades and exact L2 books as supervised trio actors."""

from __future__ import annotations

from backpack_actors.core.events import (
    BookDelta,
    BookSnapshot,
    Event,
    Level,
    ProtocolErrorEvent,
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

__all__ = [
    "BackpackActorsError",
    "BookDelta",
    "BookSnapshot",
    "ConfigError",
    "Event",
    "Level",
    "ProtocolError",
    "ProtocolErrorEvent",
    "RateLimitedError",
    "RegionRestrictedError",
    "Side",
    "StatusEvent",
    "StatusKind",
    "Trade",
    "UnknownSymbolError",
]
__version__ = "0.1.0"
