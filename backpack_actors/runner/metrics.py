"""Prometheus metrics for a running feed (``--metrics-port``), on a registry of their own.

Counters that the feed already keeps (frames, gaps, resyncs, REST calls, ...) are exported by a
collector that reads a snapshot taken in the trio thread (:meth:`FeedMetrics.update`), so the HTTP
server thread never touches live actor state. Per-event metrics (events by type, the lag
histogram) are observed directly as events pass.

Metric names (``backpack_`` prefix, Prometheus conventions): ``events_total{type}``,
``frames_received_total{symbol}``, ``decode_errors_total{symbol}``, ``book_gaps_total{symbol}``,
``trade_gaps_total{symbol}``, ``resyncs_total{symbol}``, ``reconnects_total{symbol}``,
``rest_only_degradations_total{symbol}``, ``rest_requests_total``, ``rest_rate_limited_total``,
``rest_retries_total``, ``queue_depth``, ``queue_max_depth``, ``events_dropped_total``,
``books_conflated_total{symbol}``, ``book_ready{symbol}``, ``rest_only{symbol}``,
``event_lag_seconds{symbol}`` (histogram of receipt − ``T``).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from backpack_actors.core.events import BookDelta, Event, Trade
from backpack_actors.core.symbols import normalize
from backpack_actors.errors import BackpackActorsError
from backpack_actors.runner.jsonl import EVENT_TYPES

__all__ = ["LAG_BUCKETS", "FeedMetrics", "MetricsListenError", "MetricsSnapshot"]

LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""Lag histogram buckets in seconds: sub-millisecond loopback up to a badly stalled stream."""

_PER_SYMBOL_COUNTERS = {
    "frames_received": ("frames", "WebSocket (or REST-poll) frames received"),
    "decode_errors": ("decode_errors", "frames that did not decode"),
    "book_gaps": ("book_gaps", "order book sequence gaps detected"),
    "trade_gaps": ("trade_gaps", "trade id gaps detected"),
    "resyncs": ("resyncs", "order book resynchronizations"),
    "reconnects": ("reconnects", "WebSocket reconnects"),
    "rest_only_degradations": ("degradations", "switches to REST-only mode"),
    "books_conflated": ("conflated", "book events absorbed by conflation for a slow consumer"),
}


class MetricsListenError(BackpackActorsError):
    """The metrics server could not listen on ``host:port`` (``error`` says why: in use, ...)."""

    def __init__(self, host: str, port: int, error: OSError) -> None:
        self.host = host
        self.port = port
        self.error = error
        super().__init__(f"cannot serve metrics on {host}:{port}: {error.strerror or error}")


@dataclass(frozen=True)
class MetricsSnapshot:
    """Plain numbers copied out of ``feed.statistics()``."""

    per_symbol: dict[str, dict[str, int]] = field(default_factory=dict)
    rest: dict[str, int] = field(default_factory=dict)
    queue_depth: int = 0
    queue_max_depth: int = 0
    dropped: int = 0

    @classmethod
    def from_statistics(cls, stats: Mapping[str, Any]) -> MetricsSnapshot:
        """Copy the numbers (never references to live dicts) out of a statistics mapping."""
        per_symbol: dict[str, dict[str, int]] = {}

        def row(exchange_id: str) -> dict[str, int]:
            return per_symbol.setdefault(normalize(exchange_id), {})

        for exchange_id, stream in stats.get("streams", {}).items():
            values = row(exchange_id)
            for key in ("frames", "decode_errors", "reconnects", "degradations"):
                values[key] = int(stream.get(key, 0))
            values["rest_only"] = int(stream.get("mode") == "rest")
        for exchange_id, sync in stats.get("reconciler", {}).get("symbols", {}).items():
            values = row(exchange_id)
            book = sync.get("book", {})
            values["book_gaps"] = int(book.get("gaps", 0))
            values["resyncs"] = int(book.get("resyncs", 0))
            values["trade_gaps"] = int(sync.get("trades", {}).get("gaps", 0))
            values["book_ready"] = int(sync.get("state") == "live")
        queue = stats.get("queue", {})
        # Every subscriber (the consumer, each sink, the CLI's observer) conflates on its own;
        # the counter is their sum, and every known symbol has a series from the first scrape
        # (a rate() over a series that appears only at the first conflation misses that one).
        conflated: dict[str, int] = {}
        sources = [sub.get("conflated", {}) for sub in stats.get("subscriptions", [])]
        if not sources:
            sources = [queue.get("conflated", {})]
        for counts in sources:
            for symbol, count in dict(counts).items():
                key = normalize(symbol)
                conflated[key] = conflated.get(key, 0) + int(count)
        for symbol, count in conflated.items():
            row(symbol)["conflated"] = count
        for values in per_symbol.values():
            values.setdefault("conflated", 0)
        rest = {key: int(value) for key, value in stats.get("rest", {}).items()}
        return cls(
            per_symbol=per_symbol,
            rest=rest,
            queue_depth=int(queue.get("depth", 0)),
            queue_max_depth=int(queue.get("max_depth", 0)),
            dropped=int(queue.get("dropped", 0)),
        )


class _StatsCollector(Collector):
    def __init__(self, owner: FeedMetrics) -> None:
        self._owner = owner

    def collect(self) -> Iterator[Metric]:
        snap = self._owner.snapshot  # one reference read: consistent within a scrape
        ns = self._owner.namespace
        for name, (key, doc) in _PER_SYMBOL_COUNTERS.items():
            counter = CounterMetricFamily(f"{ns}_{name}", doc, labels=["symbol"])
            for symbol, values in sorted(snap.per_symbol.items()):
                if key in values:
                    counter.add_metric([symbol], values[key])
            yield counter
        for name, key, doc in (
            ("book_ready", "book_ready", "1 while the symbol's book is in sync"),
            ("rest_only", "rest_only", "1 while the symbol is served by REST polling"),
        ):
            gauge = GaugeMetricFamily(f"{ns}_{name}", doc, labels=["symbol"])
            for symbol, values in sorted(snap.per_symbol.items()):
                gauge.add_metric([symbol], values.get(key, 0))
            yield gauge
        for name, key, doc in (
            ("rest_requests", "calls", "REST requests made (including retries)"),
            ("rest_rate_limited", "rate_limited", "REST answers with HTTP 429"),
            ("rest_server_errors", "server_errors", "REST failures: 5xx and network errors"),
            ("rest_retries", "retries", "REST requests retried"),
        ):
            yield CounterMetricFamily(f"{ns}_{name}", doc, value=snap.rest.get(key, 0))
        yield GaugeMetricFamily(
            f"{ns}_queue_depth", "events waiting in the consumer queue", value=snap.queue_depth
        )
        yield GaugeMetricFamily(
            f"{ns}_queue_max_depth", "highest consumer queue depth", value=snap.queue_max_depth
        )
        yield CounterMetricFamily(
            f"{ns}_events_dropped", "trades dropped (drop_oldest policy)", value=snap.dropped
        )


class FeedMetrics:
    """The feed's metrics on an own :class:`CollectorRegistry`; :meth:`serve` exposes them."""

    def __init__(self, namespace: str = "backpack") -> None:
        self.namespace = namespace
        self.registry = CollectorRegistry(auto_describe=True)
        self.snapshot = MetricsSnapshot()
        self._events = Counter(
            "events", "events delivered, by type", ["type"], namespace=namespace,
            registry=self.registry,
        )  # fmt: skip
        self._lag = Histogram(
            "event_lag_seconds",
            "receipt time minus matching-engine time T of trades and book deltas",
            ["symbol"],
            namespace=namespace,
            buckets=LAG_BUCKETS,
            registry=self.registry,
        )
        self._event_children = {name: self._events.labels(name) for name in EVENT_TYPES.values()}
        self._lag_children: dict[str, Any] = {}
        self.registry.register(_StatsCollector(self))
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self.port: int | None = None

    def observe(self, event: Event) -> None:
        """Count one event and, for trades and deltas, record its lag."""
        self._event_children[EVENT_TYPES[type(event)]].inc()
        if isinstance(event, Trade | BookDelta):
            child = self._lag_children.get(event.symbol)
            if child is None:
                child = self._lag_children[event.symbol] = self._lag.labels(event.symbol)
            child.observe(max(0.0, event.received_at - event.engine_time_us / 1_000_000))

    def update(self, stats: Mapping[str, Any]) -> None:
        """Take a new snapshot of ``feed.statistics()`` (call from the trio thread)."""
        self.snapshot = MetricsSnapshot.from_statistics(stats)

    def serve(self, port: int, addr: str = "127.0.0.1") -> int:
        """Serve ``/metrics`` on ``addr:port`` (0 = any free port) in a daemon thread; the port."""
        try:
            server, thread = start_http_server(port, addr=addr, registry=self.registry)
        except OSError as exc:
            raise MetricsListenError(addr, port, exc) from exc
        self._server, self._thread = server, thread
        self.port = int(server.server_port)
        return self.port

    def close(self) -> None:
        """Stop the HTTP server (if serving)."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
