"""The command-line runner: JSONL sink, live terminal view, Prometheus metrics, demo, markets.

``backpack_actors.cli`` parses arguments; everything it runs lives here so that programs (and tests)
can reuse the pieces: :func:`run_feed` drives a feed into a :class:`JsonlSink`, a
:class:`LiveView` and :class:`FeedMetrics`; :func:`run_demo` does the same against an embedded
simulator; :func:`list_markets` prints every symbol form.
"""

from __future__ import annotations

from backpack_actors.runner.app import ExitCode, RunOptions, RunSummary, run_feed
from backpack_actors.runner.demo import DemoOptions, run_demo
from backpack_actors.runner.jsonl import JsonlSink, encode_event, event_to_dict
from backpack_actors.runner.live import LiveState, LiveView, render_live
from backpack_actors.runner.markets import list_markets, markets_rows
from backpack_actors.runner.metrics import FeedMetrics

__all__ = [
    "DemoOptions",
    "ExitCode",
    "FeedMetrics",
    "JsonlSink",
    "LiveState",
    "LiveView",
    "RunOptions",
    "RunSummary",
    "encode_event",
    "event_to_dict",
    "list_markets",
    "markets_rows",
    "render_live",
    "run_demo",
    "run_feed",
]
