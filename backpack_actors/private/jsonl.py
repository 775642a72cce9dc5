"""JSON Lines for private events: ``type`` is ``order_update``, ``fill``, ``position_update`` or
``balance``; decimals are written as exact text, enums as their values, never a credential."""

from __future__ import annotations

from typing import Any

import msgspec

from backpack_actors.core.events import StatusEvent
from backpack_actors.private.events import Balance, Fill, OrderUpdate, PositionUpdate, PrivateEvent

__all__ = ["PRIVATE_EVENT_TYPES", "encode_private_event", "private_event_to_dict"]

PRIVATE_EVENT_TYPES: dict[type, str] = {
    OrderUpdate: "order_update",
    Fill: "fill",
    PositionUpdate: "position_update",
    Balance: "balance",
    StatusEvent: "status",
}
"""The ``"type"`` value of each private event class."""

_encoder = msgspec.json.Encoder(decimal_format="string")


def private_event_to_dict(event: PrivateEvent | StatusEvent) -> dict[str, Any]:
    """The JSON object of one private event."""
    return {"type": PRIVATE_EVENT_TYPES[type(event)], **msgspec.to_builtins(event)}


def encode_private_event(event: PrivateEvent | StatusEvent) -> bytes:
    """One JSON line (with its trailing newline)."""
    return _encoder.encode(private_event_to_dict(event)) + b"\n"
