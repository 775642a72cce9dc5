"""The private feed: signed ``account.*`` streams, reconciled over REST, under a supervisor.

Tree (one :class:`~backpack_actors.supervisor.Supervisor`, ``one_for_one``)::

    private
     ├─ stream   one WebSocket: a freshly signed SUBSCRIBE for account.orderUpdate and
     │           account.positionUpdate (all symbols, or per symbol) on every (re)connect, then a
     │           reconciliation, then the stream's events
     └─ poller   every ``poll_interval``: balances (no balance stream is confirmed) and the same
                 reconciliation, so an update the stream lost is found without a reconnect

A reconciliation reads open orders, order and fill history since the previous read, positions
and ``/api/v1/capital``; :class:`~backpack_actors.private.state.PrivateState` turns the answers
into events that were not emitted yet (``reconciled=True``), and a ``StatusEvent`` (symbol
``account``, kind ``resynced``) says what it found. A dropped connection is a ``reconnecting``
status and a restart with backoff. An authentication failure (bad key, bad signature, expired
window) is :class:`~backpack_actors.auth.AuthError`: never retried, raised to the consumer, or —
with ``on_auth_error="report"`` — reported as one ``StatusEvent`` (kind ``snapshot_failed``,
reason naming the cause) while the rest of the program, such as a public feed, goes on.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, Literal

import attrs
import msgspec
import trio

from backpack_actors.auth import DEFAULT_WINDOW_MS, AuthError, Signer
from backpack_actors.config import FeedConfig, Secret
from backpack_actors.core import wire
from backpack_actors.core.events import StatusEvent, StatusKind
from backpack_actors.core.restart import Backoff
from backpack_actors.errors import (
    ConfigError,
    ExchangeRequestError,
    ProtocolError,
)
from backpack_actors.private.events import PrivateEvent
from backpack_actors.private.rest import HttpPrivateRest, PrivateRest, measure_offset
from backpack_actors.private.state import PrivateState, parse_time_ms
from backpack_actors.supervisor import (
    ChildSpec,
    Supervisor,
    SupervisorEvent,
    SupervisorEventKind,
    leaf_exceptions,
)
from backpack_actors.transport.ws import WsConnector, ws_connector

__all__ = [
    "ACCOUNT",
    "PRIVATE_CHANNELS",
    "PrivateConfig",
    "PrivateFeed",
    "open_private_feed",
]

log = logging.getLogger(__name__)

PRIVATE_CHANNELS = ("orders", "positions")
_STREAMS = {"orders": "account.orderUpdate", "positions": "account.positionUpdate"}
ACCOUNT = "account"
"""The ``symbol`` of the private feed's status events."""
_AUTH_WORDS = ("signature", "expired", "api key", "unauthorized", "authentication")
# Fill history is read from a little before the newest fill the previous read returned: a fill
# of that moment may reach history late, and every trade id is emitted once anyway.
_FILL_MARGIN_MS = 2_000
# Fill history is filtered by time on the server (big pages); order history is read newest first
# until it reaches the watermark (small pages: usually one).
_FILL_PAGE = 1000
_ORDER_PAGE = 100
_MAX_PAGES = 50
# Fills and finished orders older than this before the last fill can no longer come back from
# history reads; past _PRUNE_AT remembered ids they are forgotten (bounded memory).
_PRUNE_HORIZON_MS = 600_000
_PRUNE_AT = 50_000


@attrs.frozen(kw_only=True)
class PrivateConfig:
    """Settings of the private feed; the secret is a :class:`Secret` and never prints."""

    api_key: Secret
    api_secret: Secret
    rest_url: str = "https://api.backpack.exchange"
    ws_url: str = "wss://ws.backpack.exchange"
    # Exchange ids (ETH_USDC); empty follows every symbol of the account.
    symbols: tuple[str, ...] = ()
    channels: tuple[str, ...] = attrs.field(default=PRIVATE_CHANNELS)
    window_ms: int = DEFAULT_WINDOW_MS
    # Balances are only polled; every poll also reconciles orders, fills and positions, which
    # bounds how long an update lost by the stream can stay unseen.
    poll_interval: float = 10.0
    connect_timeout: float = 10.0
    reconnect_base: float = 0.5
    reconnect_cap: float = 30.0
    restart_intensity: int = 30
    restart_period: float = 60.0
    on_auth_error: Literal["raise", "report"] = "raise"

    @channels.validator
    def _check_channels(self, _attribute: object, value: tuple[str, ...]) -> None:
        bad = [c for c in value if c not in PRIVATE_CHANNELS]
        if bad or not value:
            raise ConfigError("channels", f"some of {list(PRIVATE_CHANNELS)}", bad or value)

    @classmethod
    def from_feed_config(cls, config: FeedConfig, **overrides: Any) -> PrivateConfig:
        """Credentials and endpoints of a :class:`FeedConfig`, else ``BACKPACK_KEY``/``_SECRET``."""
        key = config.api_key or _env_secret("BACKPACK_KEY")
        secret = config.api_secret or _env_secret("BACKPACK_SECRET")
        if key is None or secret is None:
            raise ConfigError(
                "api_key/api_secret", "credentials (config, or BACKPACK_KEY and BACKPACK_SECRET)"
            )
        values: dict[str, Any] = {
            "api_key": key,
            "api_secret": secret,
            "rest_url": config.rest_url,
            "ws_url": config.ws_url,
            **overrides,
        }
        return cls(**values)


def _env_secret(name: str) -> Secret | None:
    value = os.environ.get(name)
    return Secret(value) if value else None


class PrivateFeed:
    """The private feed's actors and the queue its consumer reads (see the module docstring)."""

    def __init__(
        self,
        config: PrivateConfig,
        *,
        rest: PrivateRest | None = None,
        connect: WsConnector | None = None,
        clock: Callable[[], float] = time.time,
        emit: Callable[[PrivateEvent | StatusEvent], None] | None = None,
    ) -> None:
        self.config = config
        # ``emit`` hands every event to a host (e.g. the main feed's emitter) instead of the
        # feed's own queue; it is called synchronously, in order, and must not block.
        self._sink = emit
        signer = (
            rest.signer
            if rest is not None
            else Signer(config.api_key, config.api_secret, window_ms=config.window_ms)
        )
        self._rest: PrivateRest = rest or HttpPrivateRest(config.rest_url, signer)
        self._connect = connect or ws_connector(
            config.ws_url, connect_timeout=config.connect_timeout
        )
        self._clock = clock
        self.state = PrivateState(config.symbols, clock=clock)
        # Private events are few and none may be lost: the queue is not bounded.
        self._send, self._receive = trio.open_memory_channel[PrivateEvent | StatusEvent](math.inf)
        self._lock = trio.Lock()
        self._start_ms: int | None = None
        # How far fill history has been read: every fill before it reached the consumer. It is not
        # the newest fill the stream delivered (that may be newer than one the stream dropped).
        self._fills_read_ms: int | None = None
        self._connects = 0
        self.stats: dict[str, int] = {
            "connects": 0,
            "reconnects": 0,
            "reconciliations": 0,
            "reconciled_fills": 0,
            "reconciled_orders": 0,
            "stream_events": 0,
            "protocol_errors": 0,
        }
        self.auth_error: AuthError | None = None
        self._waiters: list[tuple[int, trio.Event]] = []
        self.error: Exception | None = None
        backoff = Backoff(
            base=config.reconnect_base, cap=max(config.reconnect_cap, config.reconnect_base)
        )
        self.supervisor = Supervisor(
            "private",
            [ChildSpec("stream", self._stream), ChildSpec("poller", self._poller)],
            intensity=config.restart_intensity,
            period=config.restart_period,
            backoff=backoff,
            on_event=self._on_supervisor_event,
        )

    def __repr__(self) -> str:
        symbols = list(self.config.symbols) or "all"
        return f"PrivateFeed(symbols={symbols}, channels={list(self.config.channels)})"

    def statistics(self) -> dict[str, Any]:
        """Counters (no credentials): connects, reconnects, reconciliations, suppressed repeats."""
        return {
            **self.stats,
            "duplicates_suppressed": self.state.duplicates_suppressed,
            "open_orders": len(self.state.open_order_ids()),
            "auth_error": None if self.auth_error is None else self.auth_error.cause,
            "supervisor": self.supervisor.statistics(),
        }

    # ------------------------------------------------------------------ consumer side
    def __aiter__(self) -> AsyncIterator[PrivateEvent | StatusEvent]:
        return self._receive.__aiter__()

    def _emit(self, event: PrivateEvent | StatusEvent) -> None:
        if self._sink is not None:
            self._sink(event)
        else:
            self._send.send_nowait(event)

    def _status(self, kind: StatusKind, reason: str, counts: dict[str, int] | None = None) -> None:
        self._emit(
            StatusEvent(
                symbol=ACCOUNT, kind=kind, reason=reason, counts=counts or {}, at=self._clock()
            )
        )

    def _on_supervisor_event(self, event: SupervisorEvent) -> None:
        if event.kind is SupervisorEventKind.RESTARTING and event.child == "stream":
            self.stats["reconnects"] += 1
            self._status(StatusKind.RECONNECTING, f"private stream: {event.error}")

    # ------------------------------------------------------------------ running
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the tree until cancelled; an :class:`AuthError` ends it (see ``on_auth_error``)."""
        status = _OnceStatus(task_status)
        try:
            await self.supervisor.run(task_status=status)
        except (AuthError, ExchangeRequestError) as exc:
            # Neither is retried: refused credentials, or a refused subscription (bad symbol).
            if isinstance(exc, AuthError):
                self.auth_error = exc
            self.error = exc
            log.error("private feed stopped: %s", exc)
            if self.config.on_auth_error == "raise":
                raise
            self._status(StatusKind.SNAPSHOT_FAILED, f"private feed stopped: {exc}")
            # Reported, not raised: whoever waits for the start goes on (and reads the report).
            status.started()
        finally:
            self._send.close()

    def _streams(self) -> list[str]:
        bases = [_STREAMS[c] for c in self.config.channels]
        if not self.config.symbols:
            return bases
        return [f"{b}.{s}" for b in bases for s in self.config.symbols]

    async def _stream(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        if not self._rest.signer.offset.measured:
            await measure_offset(self._rest)
        async with self._connect() as conn:
            frame = {
                "method": "SUBSCRIBE",
                "params": self._streams(),
                # Signed now: a signature from an earlier connection may have expired.
                "signature": self._rest.signer.ws_signature(),
            }
            await conn.send(msgspec.json.encode(frame).decode())
            self._connects += 1
            self.stats["connects"] += 1
            await self.reconcile("connected" if self._connects == 1 else "reconnected")
            task_status.started()
            while True:
                for raw in await conn.receive_batch():
                    self._on_frame(raw)

    def _on_frame(self, raw: str | bytes) -> None:
        try:
            frame = wire.decode_ws_frame(raw)
        except ProtocolError as exc:
            self.stats["protocol_errors"] += 1
            log.warning("private stream: %s", exc)
            return
        if frame.error is not None:
            message = frame.error.message
            if any(word in message.lower() for word in _AUTH_WORDS):
                raise AuthError(message, f"private subscription refused (code {frame.error.code})")
            raise ExchangeRequestError(self.config.ws_url, 0, str(frame.error.code), message)
        if frame.data is None:
            return
        self.stats["stream_events"] += 1
        for event in self.state.on_event(frame.data):
            self._emit(event)

    async def _poller(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        task_status.started()
        while True:
            await trio.sleep(self.config.poll_interval)
            await self.reconcile("poll")

    async def reconcile(self, reason: str) -> dict[str, int]:
        """Bring the consumer up to date from REST (one at a time); returns what was found."""
        async with self._lock:
            return await self._reconcile(reason)

    async def _reconcile(self, reason: str) -> dict[str, int]:
        rest, state = self._rest, self.state
        read_ms = rest.signer.now_ms()
        if self._start_ms is None:
            # History from before the feed started is not news; open orders, positions and
            # balances are (they are the starting state).
            self._start_ms = read_ms
        since = max(self._start_ms, (self._fills_read_ms or self._start_ms) - _FILL_MARGIN_MS)
        open_orders = await rest.request("GET", "/api/v1/orders", {})
        fills = await self._pages(
            "/wapi/v1/history/fills", {"from": since, "sortDirection": "Asc"}, _FILL_PAGE, None
        )
        # The newest fill history returned bounds what it covered, in the exchange's own clock (a
        # client clock may be skewed); a page cut short at _MAX_PAGES is covered up to there too.
        times = [t for t in (parse_time_ms(f.get("timestamp")) for f in fills) if t is not None]
        fills_read_ms = max(times, default=self._fills_read_ms)
        horizon = since - _FILL_MARGIN_MS
        orders = [
            o
            for o in await self._pages("/wapi/v1/history/orders", {}, _ORDER_PAGE, horizon)
            # A page may reach further back than the watermark; older orders are not news.
            if (parse_time_ms(o.get("createdAt")) or horizon) >= horizon
        ]
        known = {o.get("id") for o in [*open_orders, *orders]}
        for order_id, symbol in state.open_order_ids().items():
            if order_id not in known:
                # Open when last heard of, gone from the open list: its final state was missed.
                found = await rest.request(
                    "GET", "/wapi/v1/history/orders", {"orderId": order_id, "symbol": symbol}
                )
                orders.extend(found)
        positions = None
        if "positions" in self.config.channels:
            positions = await rest.request("GET", "/api/v1/position", {})
        capital = await rest.request("GET", "/api/v1/capital", {})
        events, counts = state.reconcile(
            open_orders=open_orders,
            orders=orders,
            fills=fills,
            positions=positions,
            capital=capital,
            read_us=read_ms * 1000,
        )
        for event in events:
            self._emit(event)
        self._fills_read_ms = fills_read_ms
        if len(state.fill_ids) + len(state.orders) > _PRUNE_AT and state.last_fill_ms is not None:
            # Behind both the newest fill and where history reads start (a read cut at _MAX_PAGES
            # leaves that far behind the stream): a pruned id must never be read again.
            reach = min(state.last_fill_ms, since - _FILL_MARGIN_MS)
            state.prune(reach - _PRUNE_HORIZON_MS)
        self.stats["reconciliations"] += 1
        done = self.stats["reconciliations"]
        for target, waiter in list(self._waiters):
            if done >= target:
                self._waiters.remove((target, waiter))
                waiter.set()
        self.stats["reconciled_fills"] += counts["fills"]
        self.stats["reconciled_orders"] += counts["orders"]
        found = counts["fills"] + counts["orders"] + counts["positions"]
        if reason != "poll" or found:
            summary = ", ".join(f"{v} {k}" for k, v in counts.items())
            self._status(
                StatusKind.RESYNCED, f"private reconciliation ({reason}): {summary}", counts
            )
        return counts

    async def wait_reconciliations(self, count: int = 1) -> None:
        """Wait until ``count`` more reconciliations (by the stream or the poller) are done."""
        event = trio.Event()
        self._waiters.append((self.stats["reconciliations"] + count, event))
        await event.wait()

    async def _pages(
        self, path: str, params: dict[str, object], size: int, stop_before_ms: int | None
    ) -> list[Any]:
        out: list[Any] = []
        for page in range(_MAX_PAGES):
            items = await self._rest.request(
                "GET", path, {**params, "limit": size, "offset": page * size}
            )
            out.extend(items)
            if len(items) < size:
                break
            if stop_before_ms is not None:
                # Newest first: stop once a page reaches orders created before the watermark.
                oldest = parse_time_ms(items[-1].get("createdAt"))
                if oldest is not None and oldest < stop_before_ms:
                    break
        return out


class _OnceStatus(trio.TaskStatus[None]):
    """Forwards the first ``started()`` only (the feed may report a start it never reached)."""

    def __init__(self, inner: trio.TaskStatus[None]) -> None:
        self._inner = inner
        self.done = False

    def started(self, value: None = None) -> None:
        if not self.done:
            self.done = True
            self._inner.started()


@asynccontextmanager
async def open_private_feed(
    config: PrivateConfig | FeedConfig,
    *,
    rest: PrivateRest | None = None,
    connect: WsConnector | None = None,
) -> AsyncIterator[PrivateFeed]:
    """Run a private feed for the block: ``async for event in feed`` reads its events.

    The block starts once the stream is subscribed and the first reconciliation is done; an
    authentication failure at that point raises :class:`AuthError` here.
    """
    if isinstance(config, FeedConfig):
        config = PrivateConfig.from_feed_config(config)
    feed = PrivateFeed(config, rest=rest, connect=connect)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(feed.run)
            try:
                yield feed
            finally:
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        # An authentication failure reaches the caller as itself, not inside task groups.
        auth = [e for e in leaf_exceptions(group) if isinstance(e, AuthError)]
        if auth:
            raise auth[0] from None
        raise
