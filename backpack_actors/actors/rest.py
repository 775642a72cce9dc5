"""The REST actor: every REST call of the feed, fair per symbol, prioritised, budgeted, deadlined.

Requests arrive through :meth:`RestActor.request` (synchronous, never blocks; at most one queued
or in flight per symbol and kind). Workers take them in priority order, round-robin across the
symbols waiting at that priority, so one symbol's trouble never queues another symbol behind it:

====  =====================================  ============================================
prio  request                                why
====  =====================================  ============================================
0     resync / initial depth snapshot        a book is unknown until it arrives
1     REST-only book poll                    a consumer's book is only as fresh as this
2     REST-only trade poll
3     trade backfill (own lane: history)     history routes have their own, smaller limit
4     periodic snapshot check, silence check  nothing is wrong; fill spare budget only
====  =====================================  ============================================

Every call draws from one token bucket sized from Backpack's published limit (2000 requests per
minute per account on standard routes, 30 per minute on historical routes — the exchange's
support FAQ, docs/protocol.md §6) and has a total deadline (``rest_timeout``), not only a per-read
timeout. Calls of a historical route (``/trades/history`` for backfills, ``/klines`` for REST-only
candles) also draw from the historical bucket, and ``/klines`` calls from a third one of their own
(``klines_per_min``, two thirds of the historical budget by default) so candle polls for many
markets never take the whole historical budget from trade backfills (docs/channels.md).

A failing call is retried with jittered backoff as a *delayed job*, so it never holds a worker;
after ``snapshot_attempts`` failures the reconciler gets :class:`SnapshotFailed` (a
``snapshot_failed`` status for consumers) and the symbol keeps being retried on a slower schedule
(``snapshot_retry_slow``, doubling up to ten times that). A 4xx about one symbol is that symbol's
failure. Only HTTP 451 (region restriction) is terminal for the feed: it is about the location,
not a symbol. HTTP 429 pauses the whole bucket for ``Retry-After`` (clamped, docs/protocol.md §6).
"""

from __future__ import annotations

import functools
import heapq
import itertools
import logging
import math
import random
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Iterable
from typing import TypeVar

import attrs
import trio

from backpack_actors.actors.messages import (
    BackfillDone,
    BackfillRequest,
    InboxMessage,
    PollRequest,
    RestRequest,
    RestTrades,
    SnapshotFailed,
    SnapshotReady,
    SnapshotRequest,
)
from backpack_actors.core.budget import TokenBucket
from backpack_actors.core.clock import mono_ns, wall_ns_of
from backpack_actors.core.wire import (
    DepthSnapshot,
    DepthSnapshotText,
    Kline,
    RestTrade,
)
from backpack_actors.errors import (
    ExchangeRequestError,
    ExchangeUnavailableError,
    ProtocolError,
    RateLimitedError,
)
from backpack_actors.transport.rest import RestClient

__all__ = [
    "INTERVAL_REASON",
    "RestActor",
    "RestSettings",
    "RestStats",
    "backfill_trades",
    "fetch_klines",
]

log = logging.getLogger(__name__)

_T = TypeVar("_T")

INTERVAL_REASON = "interval"
# /api/v1/trades returns at most this many of the newest trades; older ones need /trades/history.
RECENT_LIMIT = 1000
# History pages per backfill (each costs one of ~30 history requests a minute).
MAX_HISTORY_PAGES = 20
_RETRYABLE = (ExchangeUnavailableError, ProtocolError, RateLimitedError)


@attrs.frozen
class RestSettings:
    """Tunables of the REST actor (from FeedConfig; reasons beside the config defaults)."""

    rate_per_s: float = 30.0
    burst: int = 50
    history_per_min: float = 30.0
    klines_per_min: float = 20.0
    """REST-only candle polls (``/klines``), within the historical budget (module docstring)."""
    concurrency: int = 8
    timeout: float = 10.0
    snapshot_attempts: int = 4
    snapshot_retry_slow: float = 30.0
    backoff_base: float = 0.5
    backoff_cap: float = 10.0
    snapshot_interval: float = 30.0
    interval_share: float = 0.25
    """Periodic checks may use at most this share of the budget (they are never urgent)."""


@attrs.define
class RestStats:
    """Counters of the REST layer (read through the feed's ``statistics()``)."""

    calls: int = 0
    rate_limited: int = 0
    server_errors: int = 0
    protocol_errors: int = 0
    request_errors: int = 0
    timeouts: int = 0
    retries: int = 0
    snapshot_failures: int = 0
    waited_for_budget: float = 0.0


def _priority(request: RestRequest) -> int:
    if isinstance(request, SnapshotRequest):
        return 4 if request.reason == INTERVAL_REASON else 0
    if isinstance(request, PollRequest):
        return 1 if request.what == "book" else 2
    return 3


def _key(request: RestRequest) -> tuple[str, str]:
    if isinstance(request, SnapshotRequest):
        return ("snapshot", request.symbol)
    if isinstance(request, PollRequest):
        return (f"poll_{request.what}", request.symbol)
    return ("backfill", request.symbol)


@attrs.define(eq=False)
class _Job:
    request: RestRequest
    attempts: int = 0


_LEVELS = 5


class RestActor:
    """See the module docstring. ``deliver`` is the reconciler's synchronous ``handle``."""

    def __init__(
        self,
        client: RestClient,
        deliver: Callable[[InboxMessage], None],
        *,
        settings: RestSettings | None = None,
        wall_clock: Callable[[], float],
        rng: random.Random | None = None,
        symbols: Callable[[], Iterable[str]] = tuple,
        refresh: Callable[[str], None] | None = None,
    ) -> None:
        self.client = client
        self._deliver = deliver
        self.settings = settings or RestSettings()
        self._wall_clock = wall_clock
        self._wall_ns = wall_ns_of(wall_clock)
        self._rng = rng or random.Random()
        self._symbols = symbols
        self._refresh = refresh
        cfg = self.settings
        self.general = TokenBucket(cfg.rate_per_s, cfg.burst)
        self.history = TokenBucket(cfg.history_per_min / 60.0, 1)
        self.klines = TokenBucket(cfg.klines_per_min / 60.0, 1)
        self.stats = RestStats()
        # The last call's failure (for startup errors that must say what went wrong).
        self.last_failure: BaseException | None = None
        # Per priority: symbol -> its jobs at that priority, oldest symbol first (round-robin).
        self._queues: list[OrderedDict[str, deque[_Job]]] = [OrderedDict() for _ in range(_LEVELS)]
        self._known: set[tuple[str, str]] = set()
        self._delayed: list[tuple[float, int, _Job]] = []
        self._seq = itertools.count()
        self._wake = trio.Event()
        self._delay_wake = trio.Event()
        # Consecutive snapshot failures per symbol: past snapshot_attempts, retries go slow.
        self._failures: dict[str, int] = {}

    # -- the request side (synchronous) ----------------------------------------------------------

    def request(self, request: RestRequest) -> None:
        """Queue ``request`` unless the same kind is already queued or in flight for its symbol."""
        key = _key(request)
        if key in self._known:
            return
        self._known.add(key)
        job = _Job(request)
        failures = self._failures.get(request.symbol, 0)
        if isinstance(request, SnapshotRequest) and failures >= self.settings.snapshot_attempts:
            job.attempts = failures
            self._delay(job, self._slow_delay(failures))
            return
        self._enqueue(job)

    def forget(self, symbol: str) -> None:
        """Drop everything queued for ``symbol`` (it left the feed)."""
        for queue in self._queues:
            queue.pop(symbol, None)
        self._known = {key for key in self._known if key[1] != symbol}
        self._failures.pop(symbol, None)

    def queued(self) -> int:
        return sum(len(jobs) for queue in self._queues for jobs in queue.values())

    def _enqueue(self, job: _Job) -> None:
        queue = self._queues[_priority(job.request)]
        jobs = queue.get(job.request.symbol)
        if jobs is None:
            queue[job.request.symbol] = jobs = deque()
        jobs.append(job)
        self._wake.set()

    def _delay(self, job: _Job, seconds: float) -> None:
        heapq.heappush(self._delayed, (trio.current_time() + seconds, next(self._seq), job))
        self._delay_wake.set()

    def _take(self, levels: range) -> _Job | None:
        for level in levels:
            queue = self._queues[level]
            if not queue:
                continue
            symbol, jobs = next(iter(queue.items()))
            job = jobs.popleft()
            del queue[symbol]
            if jobs:
                queue[symbol] = jobs  # to the back: the next symbol goes first next time
            return job
        return None

    def _done(self, job: _Job) -> None:
        self._known.discard(_key(job.request))

    def _slow_delay(self, failures: int) -> float:
        over = failures - self.settings.snapshot_attempts
        slow = self.settings.snapshot_retry_slow
        return float(min(slow * 10, slow * 2 ** max(0, over)))

    def _backoff(self, attempt: int) -> float:
        cfg = self.settings
        delay = min(cfg.backoff_cap, cfg.backoff_base * (2 ** (attempt - 1)))
        return float(delay * self._rng.uniform(0.8, 1.2))

    # -- calls ----------------------------------------------------------------------------------

    async def _budget(self, *, history: bool = False, klines: bool = False) -> None:
        if klines:
            buckets: tuple[TokenBucket, ...] = (self.klines, self.history, self.general)
        elif history:
            buckets = (self.history, self.general)
        else:
            buckets = (self.general,)
        for bucket in buckets:
            wait = bucket.reserve(trio.current_time())
            if wait > 0:
                self.stats.waited_for_budget += wait
                await trio.sleep(wait)

    async def call_once(
        self,
        what: str,
        fn: Callable[[], Awaitable[_T]],
        *,
        history: bool = False,
        klines: bool = False,
    ) -> _T:
        """One attempt within the budget and the total deadline; errors are the project's.

        ``history``: a historical route; ``klines``: ``/klines`` (its own bucket besides).
        """
        await self._budget(history=history, klines=klines)
        self.stats.calls += 1
        try:
            return await self._attempt(what, fn)
        except Exception as exc:
            self.last_failure = exc
            raise

    @property
    def last_error(self) -> str | None:
        return None if self.last_failure is None else str(self.last_failure)

    async def _attempt(self, what: str, fn: Callable[[], Awaitable[_T]]) -> _T:
        try:
            with trio.fail_after(self.settings.timeout):
                return await fn()
        except trio.TooSlowError:
            self.stats.timeouts += 1
            raise ExchangeUnavailableError(
                f"{what}: no complete answer within {self.settings.timeout:g} s"
            ) from None
        except RateLimitedError as exc:
            self.stats.rate_limited += 1
            delay = exc.retry_after if exc.retry_after is not None else self._backoff(1)
            now = trio.current_time()
            self.general.penalize(now, delay)
            self.history.penalize(now, delay)
            self.klines.penalize(now, delay)
            log.warning("%s: rate limited (HTTP 429); pausing REST for %.2f s", what, delay)
            raise
        except ExchangeUnavailableError:
            self.stats.server_errors += 1
            raise
        except ProtocolError:
            self.stats.protocol_errors += 1
            raise
        except ExchangeRequestError:
            self.stats.request_errors += 1
            raise

    async def call(
        self,
        what: str,
        fn: Callable[[], Awaitable[_T]],
        *,
        history: bool = False,
        klines: bool = False,
        max_attempts: int | None = 3,
    ) -> _T:
        """:meth:`call_once` retried (with backoff, in this task) on retryable errors."""
        attempt = 0
        while True:
            attempt += 1
            try:
                return await self.call_once(what, fn, history=history, klines=klines)
            except _RETRYABLE as exc:
                if max_attempts is not None and attempt >= max_attempts:
                    raise
                self.stats.retries += 1
                if not isinstance(exc, RateLimitedError):
                    delay = self._backoff(attempt)
                    log.info("%s failed (%s); retrying in %.2f s", what, exc, delay)
                    await trio.sleep(delay)

    # -- the actor ------------------------------------------------------------------------------

    async def run(
        self,
        *,
        outstanding: Iterable[RestRequest] = (),
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve requests until cancelled; ``outstanding`` are re-queued first (a restart)."""
        for request in outstanding:
            self.request(request)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._delays)
            for _ in range(self.settings.concurrency):
                nursery.start_soon(self._worker, range(0, 3))
            # One lane for backfills: they page through the history route's small budget.
            nursery.start_soon(self._worker, range(3, 4))
            nursery.start_soon(self._worker, range(0, 5))
            if self.settings.snapshot_interval > 0 and self._refresh is not None:
                nursery.start_soon(self._interval_timer)
            task_status.started()

    async def _delays(self) -> None:
        while True:
            now = trio.current_time()
            while self._delayed and self._delayed[0][0] <= now:
                _, _, job = heapq.heappop(self._delayed)
                self._enqueue(job)
            due = self._delayed[0][0] if self._delayed else math.inf
            self._delay_wake = trio.Event()
            with trio.move_on_at(due):
                await self._delay_wake.wait()

    async def _worker(self, levels: range) -> None:
        while True:
            job = self._take(levels)
            if job is None:
                self._wake = trio.Event() if self._wake.is_set() else self._wake
                await self._wake.wait()
                continue
            await self._serve(job)
            # Every worker shares one wake event; give others their turn.
            await trio.lowlevel.checkpoint()

    async def _interval_timer(self) -> None:
        # Spread the periodic checks evenly, and keep them within their share of the budget.
        cfg = self.settings
        assert self._refresh is not None
        while True:
            symbols = list(self._symbols())
            if not symbols:
                await trio.sleep(cfg.snapshot_interval)
                continue
            cycle = max(cfg.snapshot_interval, len(symbols) / (cfg.rate_per_s * cfg.interval_share))
            step = cycle / len(symbols)
            for symbol in symbols:
                await trio.sleep(step)
                self._refresh(symbol)

    async def _serve(self, job: _Job) -> None:
        request = job.request
        symbol = request.symbol
        if isinstance(request, BackfillRequest):
            await self._serve_backfill(job, request)
            return
        what = _describe(request)
        try:
            if isinstance(request, PollRequest) and request.what == "trades":
                trades = await self.call_once(
                    what, lambda: self.client.recent_trades(symbol, RECENT_LIMIT)
                )
                self._done(job)
                self._deliver(RestTrades(symbol, trades, self._wall_ns(), mono_ns()))
                return
            snapshot: DepthSnapshotText | DepthSnapshot = await self.call_once(
                what, lambda: self.client.depth(symbol)
            )
        except (*_RETRYABLE, ExchangeRequestError) as exc:
            self._failed(job, exc)
            return
        self._done(job)
        reason = "rest_only" if isinstance(request, PollRequest) else request.reason
        if isinstance(request, SnapshotRequest):
            self._failures.pop(symbol, None)
        self._deliver(SnapshotReady(symbol, snapshot, reason, self._wall_ns(), mono_ns()))

    def _failed(self, job: _Job, exc: Exception) -> None:
        request = job.request
        if isinstance(exc, RateLimitedError):
            # The budget's failure, not the symbol's: the bucket is paused for Retry-After, so
            # queue it again without counting an attempt (a 429 burst must not make every
            # symbol "snapshot_failed").
            self.stats.retries += 1
            self._enqueue(job)
            return
        job.attempts += 1
        if isinstance(request, PollRequest):
            # The poller asks again on its own schedule.
            self._done(job)
            log.info("%s failed: %s", _describe(request), exc)
            return
        assert isinstance(request, SnapshotRequest)
        attempts = self.settings.snapshot_attempts
        if isinstance(exc, ExchangeRequestError):
            # The exchange refused this request (4xx): retrying at once will not help.
            job.attempts = max(job.attempts, attempts)
        self._failures[request.symbol] = job.attempts
        if job.attempts < attempts:
            self.stats.retries += 1
            delay = self._backoff(job.attempts)
            log.info("%s failed (%s); retrying in %.2f s", _describe(request), exc, delay)
            self._delay(job, delay)
            return
        self._done(job)
        self.stats.snapshot_failures += 1
        retry_in = self._slow_delay(job.attempts)
        log.warning(
            "%s failed %d times (%s); retrying every %g s",
            _describe(request),
            job.attempts,
            exc,
            retry_in,
        )
        self._deliver(SnapshotFailed(request.symbol, str(exc), job.attempts, retry_in))

    async def _serve_backfill(self, job: _Job, request: BackfillRequest) -> None:
        symbol = request.symbol
        try:
            trades = await backfill_trades(
                self, self.client, symbol, request.first_id, request.last_id
            )
            error = None
        except (*_RETRYABLE, ExchangeRequestError) as exc:
            # A failed backfill is reported in-band (TradeSync counts the ids as unrecoverable).
            trades, error = [], str(exc)
        self._done(job)
        self._deliver(BackfillDone(symbol, trades, error, self._wall_ns(), mono_ns()))


def _describe(request: RestRequest) -> str:
    if isinstance(request, SnapshotRequest):
        return f"depth {request.symbol} ({request.reason})"
    if isinstance(request, PollRequest):
        return f"REST-only {request.what} poll {request.symbol}"
    return f"trade backfill {request.symbol} {request.first_id}..{request.last_id}"


async def backfill_trades(
    rest: RestActor, client: RestClient, symbol: str, first_id: int, last_id: int
) -> list[RestTrade]:
    """Trades ``first_id..last_id`` (what REST still has of them), ascending by id.

    ``/trades`` covers the newest 1000; older ids are paged from ``/trades/history``, whose offset
    counts back from the newest trade *at the time of the call*. Trades printed in between shift
    that window, so each page re-anchors the newest id on what it actually returned.
    """
    found: dict[int, RestTrade] = {}

    def take(trades: list[RestTrade]) -> None:
        for trade in trades:
            if first_id <= trade.id <= last_id:
                found[trade.id] = trade

    recent = await rest.call(
        f"trades {symbol}", lambda: client.recent_trades(symbol, RECENT_LIMIT), max_attempts=3
    )
    take(recent)
    if not recent:
        return []
    newest = max(t.id for t in recent)
    # Nothing newer than the newest trade exists (a bogus far-future id can ask for 2**63).
    last_id = min(last_id, newest)
    drift = 0  # trades printed between two calls, as last observed
    for _ in range(MAX_HISTORY_PAGES):
        upper = next((i for i in range(last_id, first_id - 1, -1) if i not in found), None)
        if upper is None:
            break
        limit = min(RECENT_LIMIT, upper - first_id + 1)
        # Aim the page's newest trade at `upper`, allowing for the trades printed meanwhile.
        offset = max(0, newest + drift - upper)
        page = await rest.call(
            f"trades/history {symbol}",
            functools.partial(client.trade_history, symbol, limit, offset),
            history=True,
            max_attempts=3,
        )
        if not page:
            break
        take(page)
        observed = max(t.id for t in page) + offset
        drift = max(0, observed - newest)
        newest = observed
    return [found[i] for i in sorted(found)]


async def fetch_klines(
    client: RestClient, symbol: str, interval: str, start_s: int, end_s: int
) -> list[Kline]:
    """``GET /api/v1/klines`` for ``symbol`` from ``start_s`` to ``end_s`` (seconds).

    A client of the program's own that predates ``RestClient.klines`` is named in the error.
    """
    method = getattr(client, "klines", None)
    if method is None:
        raise NotImplementedError(
            f"{type(client).__name__} has no klines(symbol, interval, start_s, end_s): "
            "REST-only candles need it"
        )
    klines: list[Kline] = await method(symbol, interval, start_s, end_s)
    return klines
