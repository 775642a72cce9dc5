"""JSON Lines (kept here for existing imports; the sink lives in :mod:`backpack_actors.sinks`)."""

from __future__ import annotations

from backpack_actors.sinks.jsonl import EVENT_TYPES, JsonlSink, encode_event, event_to_dict

__all__ = ["EVENT_TYPES", "JsonlSink", "encode_event", "event_to_dict"]
