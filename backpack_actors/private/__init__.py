"""Private (account) streams: signed order and position updates that survive reconnects.

``open_private_feed(config)`` runs the feed; its events are :class:`OrderUpdate`, :class:`Fill`,
:class:`PositionUpdate`, :class:`Balance` and ``StatusEvent``s (symbol ``account``). Needs the
``[private]`` extra (Ed25519 signing). docs/private.md describes the behaviour.
"""

from __future__ import annotations

from backpack_actors.private.events import (
    Balance,
    Fill,
    OrderKind,
    OrderUpdate,
    PositionKind,
    PositionUpdate,
    PrivateEvent,
)
from backpack_actors.private.feed import (
    ACCOUNT,
    PRIVATE_CHANNELS,
    PrivateConfig,
    PrivateFeed,
    open_private_feed,
)
from backpack_actors.private.jsonl import (
    PRIVATE_EVENT_TYPES,
    encode_private_event,
    private_event_to_dict,
)
from backpack_actors.private.rest import HttpPrivateRest, PrivateRest, SimPrivateRest
from backpack_actors.private.state import PrivateState

__all__ = [
    "ACCOUNT",
    "PRIVATE_CHANNELS",
    "PRIVATE_EVENT_TYPES",
    "Balance",
    "Fill",
    "HttpPrivateRest",
    "OrderKind",
    "OrderUpdate",
    "PositionKind",
    "PositionUpdate",
    "PrivateConfig",
    "PrivateEvent",
    "PrivateFeed",
    "PrivateRest",
    "PrivateState",
    "SimPrivateRest",
    "encode_private_event",
    "open_private_feed",
    "private_event_to_dict",
]
