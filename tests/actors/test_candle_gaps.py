"""Candles the stream missed are filled over REST, whatever the stream delivered meanwhile.

Regressions of the review of REST-only candles (docs/channels.md, "Candles over REST"): a gap
filled from where candles may be missing, not from the newest published one (a promotion with a
REST backlog, a reconnect at ``1s``); a silent connection's gap starts at its last close, not
when it was declared stale; the reconciler's memory refuses an old candle only where none is
missing; ``3d``/``1w``/``1month`` candles cut off the epoch grid are published; a market whose
klines calls fail backs off behind the others; an answer for a market removed meanwhile is
dropped. Virtual time against the simulator, every candle compared with its truth.
"""

from __future__ import annotations

import calendar
import datetime
from decimal import Decimal
from typing import Any

import trio
import trio.testing

from backpack_actors.actors.messages import CandlePoll, RestChannels, StreamStarted
from backpack_actors.actors.reconciler import CANDLE_GAPS_KEPT, CLOSED_CANDLES_KEPT, Reconciler
from backpack_actors.core.events import Candle, Event
from backpack_actors.core.wire import MARKET_DATA_DECODER, Kline
from backpack_actors.errors import ExchangeUnavailableError
from backpack_actors.sim import SimConfig, SimExchange
from backpack_actors.sim.derived import KLINE_SECONDS, candle_fields, kline_bucket
from backpack_actors.testing import SimRestClient
from tests.actors.test_rest_only_channels import (
    Outage,
    _assert_candle_is_truth,
    _closed_candles,
    _config,
    _info,
    _truth_buckets,
    cut,
    running,
)


def _assert_truth(exchange: SimExchange, candles: list[Candle], *, calendar: bool = False) -> None:
    """Each candle is the simulator's candle of its bucket, and none comes twice."""
    starts = [(c.interval, c.start_us) for c in candles]
    assert len(starts) == len(set(starts)), "a closed candle published twice"
    for candle in candles:
        model = exchange.models[candle.exchange_symbol]
        seconds = KLINE_SECONDS[candle.interval]
        start, end = kline_bucket(seconds, candle.start_us // 1_000_000, calendar=calendar)
        assert (start, end) == (candle.start_us // 1_000_000, candle.end_us // 1_000_000)
        truth = candle_fields(model, seconds, start, end=end)
        assert truth is not None, candle
        got = (candle.open, candle.high, candle.low, candle.close, candle.volume)
        assert got == tuple(Decimal(truth[k]) for k in "ohlcv"), (candle, truth)
        assert candle.trade_count == truth["n"]


# --- 1. a gap is filled from where it begins ----------------------------------------------------


async def test_a_promotion_fills_the_rest_backlog_though_the_stream_is_ahead(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """REST-only with one klines call a minute for three markets' 1m candles: each falls up to
    three minutes behind. Promoted back, the stream's first close is newer than the backlog —
    the catch-up still fills it (it used to start after the newest close and drop the rest)."""
    symbols = ["BTC_USDC", "ETH_USDC", "SOL_USDC"]
    exchange = SimExchange(seed=31, markets=symbols, config=SimConfig(rate=5.0))
    outage = Outage(exchange)
    config = _config(
        [s.replace("_", "-") for s in symbols],
        channels=["candles:1m"],
        connection_group_size=1,
        max_ws_failures=2,
        promote_probe_interval=60,
        promote_healthy_after=20,
        history_rate_per_min=1.5,  # klines: 1 call a minute
    )
    with trio.fail_after(1200):
        async with running(exchange, config, outage.connector()) as (feed, _consumer, log):
            actors = list(feed.tree.connections.actors)
            await trio.sleep(90.5)
            outage.refusing = True
            for actor in actors:
                cut(actor)
            await trio.sleep(300)
            assert all(a.health.rest_only for a in actors)
            outage.refusing = False
            await trio.sleep(120)
            assert not any(a.health.rest_only for a in actors)
            await trio.sleep(240)  # the backlog drains at a call a minute
            exchange.pause()
            await trio.sleep(70)
    for sym in symbols:
        candles = _closed_candles(log, sym)
        for candle in candles:
            _assert_candle_is_truth(exchange, candle)
        starts = sorted(c.start_us for c in candles)
        assert starts == _truth_buckets(exchange, sym), f"{sym}: minutes lost"
        assert len(set(starts)) == len(starts)


async def test_a_reconnect_at_1s_fills_every_second_the_stream_missed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """With 1s candles the new subscription streams closes before the catch-up is askable: the
    seconds just before it used to be dropped."""
    exchange = SimExchange(seed=22, markets=["SOL_USDC"], config=SimConfig(rate=10.0))
    outage = Outage(exchange)
    config = _config(["SOL-USDC"], channels=["candles:1s"], max_ws_failures=1000, reconnect_cap=0.5)
    with trio.fail_after(600):
        async with running(exchange, config, outage.connector()) as (feed, _consumer, log):
            (actor,) = feed.tree.connections.actors
            await trio.sleep(30.3)
            outage.refusing = True
            cut(actor)
            await trio.sleep(10)
            outage.refusing = False
            await trio.sleep(1)
            assert actor.streaming
            await trio.sleep(30)
            exchange.pause()
            await trio.sleep(5)
    candles = _closed_candles(log, "SOL_USDC")
    _assert_truth(exchange, candles)
    got = sorted(c.start_us // 1_000_000 for c in candles)
    truth = sorted({t.engine_time_us // 1_000_000 for t in exchange.trades("SOL_USDC")})
    assert got == truth
    assert exchange.http_calls["/api/v1/klines"] <= 3


# --- 3. a silent connection's gap starts at its last close --------------------------------------


async def test_a_silent_connection_gets_the_candles_of_its_silence(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Half-open from 01:50 until stale at about 02:20: the 02:00 close never came. The gap
    starts after the last close streamed (it used to start at the session's end, 02:20, as if
    the stream had delivered until then)."""
    exchange = SimExchange(seed=22, markets=["SOL_USDC"], config=SimConfig(rate=10.0))
    outage = Outage(exchange)
    config = _config(
        ["SOL-USDC"],
        channels=["l2_book", "candles:1m"],
        max_ws_failures=1000,
        reconnect_cap=0.5,
        stale_timeout=30,
    )
    with trio.fail_after(600):
        async with running(exchange, config, outage.connector()) as (feed, _consumer, log):
            (actor,) = feed.tree.connections.actors
            await trio.sleep(110)
            connection = actor._session.conn

            async def silent() -> list[str | bytes]:
                await trio.sleep_forever()
                raise AssertionError("unreachable")

            connection._inner.receive_batch = silent
            await trio.sleep(120)
            assert actor.health.stale >= 1
            await trio.sleep(60)
            exchange.pause()
            await trio.sleep(70)
    candles = _closed_candles(log, "SOL_USDC")
    for candle in candles:
        _assert_candle_is_truth(exchange, candle)
    starts = sorted(c.start_us for c in candles)
    assert starts == _truth_buckets(exchange, "SOL_USDC")
    assert len(set(starts)) == len(starts)
    assert exchange.http_calls["/api/v1/klines"] == 1


# --- 2. the reconciler's memory -----------------------------------------------------------------

_BASE = 1_767_225_600  # 2026-01-01T00:00:00Z


def _iso(seconds: int, sep: str = "T") -> str:
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC).strftime(f"%Y-%m-%d{sep}%H:%M:%S")


def _ws_close(minute: int) -> Any:
    start = _BASE + 60 * minute
    frame = (
        f'{{"data":{{"E":1,"X":true,"e":"kline","s":"SOL_USDC","t":"{_iso(start)}",'
        f'"T":"{_iso(start + 60)}","o":"1","c":"{minute}","h":"9","l":"1","v":"2","n":3}},'
        '"stream":"kline.1m.SOL_USDC"}'
    )
    return MARKET_DATA_DECODER.decode(frame).data


def _rest_kline(minute: int) -> Kline:
    start = _BASE + 60 * minute
    one = Decimal(1)
    return Kline(_iso(start, " "), _iso(start + 60, " "), one, one, one, one, one, one, 3)


def test_a_gap_older_than_the_remembered_candles_is_still_filled() -> None:
    """Minute 10 missed across a reconnect, then 70 minutes streamed: more candles than the
    reconciler remembers by start. REST's minute 10 is published (it used to count as published:
    below the floor), once; REST copies of streamed minutes, old or new, are not."""
    out: list[Event] = []
    now = [0.0]
    reconciler = Reconciler(
        markets={"SOL_USDC": _info("SOL_USDC")},
        publish=out.extend,
        request=lambda _request: None,
        wall_clock=lambda: now[0],
        channels=["candles:1m"],
    )

    def subscribed(epoch: int, at_minute: float) -> None:
        now[0] = _BASE + 60 * at_minute
        reconciler.handle(StreamStarted("SOL_USDC", epoch, "ws"))

    def rest(*minutes: int, start: int, end: int) -> None:
        klines = [_rest_kline(m) for m in minutes]
        poll = CandlePoll("SOL_USDC", "1m", _BASE + 60 * start, _BASE + 60 * end, klines)
        reconciler.handle(RestChannels(candles=[poll], received_ns=1))

    subscribed(1, 0)
    for minute in range(10):
        reconciler.on_frames("SOL_USDC", 1, [_ws_close(minute)], 0)
    subscribed(2, 11.1)  # reconnected after minute 10 closed: its close never came
    for minute in range(11, 81):
        reconciler.on_frames("SOL_USDC", 2, [_ws_close(minute)], 0)
    assert CLOSED_CANDLES_KEPT < 80 - 11
    assert reconciler.first_missing_candle("SOL_USDC", "1m", _BASE) == _BASE + 600
    rest(9, 10, 11, start=9, end=12)  # the catch-up, late
    rest(10, start=10, end=11)  # asked again: still one copy
    rest(79, 80, start=79, end=81)
    minutes = [(c.start_us // 1_000_000 - _BASE) // 60 for c in out if isinstance(c, Candle)]
    assert sorted(minutes) == list(range(81))
    assert minutes[-1] == 10
    assert reconciler.first_missing_candle("SOL_USDC", "1m", _BASE) == _BASE + 81 * 60


# --- 4. candles off the epoch grid --------------------------------------------------------------

_MONTH_START = calendar.timegm((2027, 2, 1, 0, 0, 0))
"""2027-02-01, a Monday, the 1st, and a multiple of 3 days since the epoch: a 3d, 1w and 1month
candle close together."""


async def test_weekly_and_monthly_candles_cut_on_the_calendar_are_published(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Weeks from Monday and months from the 1st (the simulator's ``kline_calendar``), not the
    epoch grid the poller once assumed: a WebSocket outage across the close still publishes each
    closed candle once, over REST, equal to truth (they used to be refused, as straddling the
    assumed grid, and skipped). The candle under way, seen on the stream, says when to ask:
    one call per market and interval after the close, none for the reconnects or the
    promotion."""
    epoch_us = (_MONTH_START - 300) * 1_000_000  # 5 minutes before the close
    exchange = SimExchange(
        seed=32,
        markets=["BTC_USDC", "ETH_USDC"],
        config=SimConfig(rate=5.0, epoch_us=epoch_us, kline_calendar=True),
    )
    outage = Outage(exchange)
    config = _config(
        ["BTC-USDC", "ETH-USDC"],
        channels=["candles:3d", "candles:1w", "candles:1month"],
        connection_group_size=1,
        max_ws_failures=2,
        promote_probe_interval=60,
        promote_healthy_after=20,
    )
    with trio.fail_after(1200):
        async with running(exchange, config, outage.connector()) as (feed, _consumer, log):
            actors = list(feed.tree.connections.actors)
            await trio.sleep(120)
            outage.refusing = True
            for actor in actors:
                cut(actor)
            await trio.sleep(300)  # the close at 05:00 comes during the outage
            assert all(a.health.rest_only for a in actors)
            outage.refusing = False
            await trio.sleep(200)
            assert not any(a.health.rest_only for a in actors)
    for sym in ("BTC_USDC", "ETH_USDC"):
        candles = _closed_candles(log, sym)
        _assert_truth(exchange, candles, calendar=True)
        spans = sorted(
            (c.interval, c.start_us // 1_000_000, c.end_us // 1_000_000) for c in candles
        )
        assert spans == [
            ("1month", calendar.timegm((2027, 1, 1, 0, 0, 0)), _MONTH_START),
            ("1w", _MONTH_START - 7 * 86_400, _MONTH_START),
            ("3d", _MONTH_START - 3 * 86_400, _MONTH_START),
        ]
    assert exchange.http_calls["/api/v1/klines"] == 6


async def test_rest_only_from_the_start_publishes_the_calendar_candles_under_way(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """REST-only from the join, 4 minutes before the close: the candles then under way began
    before the join (and off the epoch grid); they are published once closed, and the poller
    asks again when the answer said they close — not a day later."""
    epoch_us = (_MONTH_START - 300) * 1_000_000
    exchange = SimExchange(
        seed=33,
        markets=["SOL_USDC"],
        config=SimConfig(rate=5.0, epoch_us=epoch_us, kline_calendar=True),
    )
    config = _config(["SOL-USDC"], channels=["candles:1w", "candles:1month"], rest_only=True)
    with trio.fail_after(600):
        # The market traded before the join: the first answers show the candles under way.
        async with running(exchange, config, warmup=60) as (_feed, _consumer, log):
            await trio.sleep(250)
    candles = _closed_candles(log, "SOL_USDC")
    _assert_truth(exchange, candles, calendar=True)
    assert sorted(c.interval for c in candles) == ["1month", "1w"]
    assert all(c.end_us // 1_000_000 == _MONTH_START for c in candles)
    # Once at the join and once after the close, per interval.
    assert exchange.http_calls["/api/v1/klines"] == 4


# --- low: failing calls, removals ---------------------------------------------------------------


class _FailingKlines(SimRestClient):
    """The simulator's REST, but ``/klines`` for ``broken`` always fails."""

    def __init__(self, exchange: SimExchange, broken: str) -> None:
        super().__init__(exchange)
        self.broken = broken
        self.broken_calls = 0

    async def klines(self, symbol: str, interval: str, start_s: int, end_s: int) -> list[Kline]:
        if symbol == self.broken:
            self.broken_calls += 1
            raise ExchangeUnavailableError("test: klines of this market keep failing")
        return await super().klines(symbol, interval, start_s, end_s)


async def test_a_market_whose_klines_keep_failing_backs_off_behind_the_others(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Four REST-only markets, four klines calls a minute, one market's calls always failing:
    it used to stay the most overdue and take a call every 30 s, half the budget, leaving the
    others' candles up to 107 s late. Now it backs off (30 s, doubling) and ranks last: with a
    call every 15 s, the others' candles come at most 2 + 5 × 15 s after their close (the three
    markets and, at worst, two retries in between), all of them, equal to truth."""
    symbols = ["BTC_USDC", "ETH_USDC", "SOL_USDC", "BTC_USDT"]
    exchange = SimExchange(seed=34, markets=symbols, config=SimConfig(rate=5.0))
    rest = _FailingKlines(exchange, broken="BTC_USDT")
    config = _config(
        [s.replace("_", "-") for s in symbols],
        channels=["candles:1m"],
        connection_group_size=1,
        rest_only=True,
        history_rate_per_min=6,  # klines: 4 calls a minute
    )
    with trio.fail_after(1200):
        async with running(exchange, config, rest=rest) as (_feed, _consumer, log):
            await trio.sleep(600)
            exchange.pause()
            await trio.sleep(70)
    for sym in symbols[:3]:
        candles = _closed_candles(log, sym)
        for candle in candles:
            _assert_candle_is_truth(exchange, candle)
        assert sorted(c.start_us for c in candles) == _truth_buckets(exchange, sym)
        delays = [c.received_at_ns / 1e9 - c.end_us / 1e6 for c in candles]
        assert max(delays) <= 77, f"{sym}: candles fell behind ({max(delays):.0f} s)"
    assert not _closed_candles(log, "BTC_USDT")
    # Retried after 30, 60, 120, 240 s (two attempts a call): not every 30 s (20 attempts).
    assert rest.broken_calls <= 2 * 5


class _SlowKlines(SimRestClient):
    """The simulator's REST; a ``/klines`` call for ``slow`` takes ``delay`` seconds, once."""

    def __init__(self, exchange: SimExchange, slow: str, delay: float) -> None:
        super().__init__(exchange)
        self.slow, self.delay = slow, delay

    async def klines(self, symbol: str, interval: str, start_s: int, end_s: int) -> list[Kline]:
        answer = await super().klines(symbol, interval, start_s, end_s)
        if symbol == self.slow and self.delay:
            delay, self.delay = self.delay, 0.0
            await trio.sleep(delay)
        return answer


async def test_an_answer_for_a_market_removed_meanwhile_is_dropped(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Removed while its klines call is out, and added again before the answer: the answer
    (candles from before the removal) is dropped; the market's candles start again from its
    new join."""
    exchange = SimExchange(seed=35, markets=["SOL_USDC", "ETH_USDC"], config=SimConfig(rate=5.0))
    rest = _SlowKlines(exchange, slow="SOL_USDC", delay=30.0)
    config = _config(
        ["SOL-USDC", "ETH-USDC"], channels=["candles:1m"], connection_group_size=1, rest_only=True
    )
    with trio.fail_after(600):
        async with running(exchange, config, rest=rest) as (feed, _consumer, log):
            await trio.sleep(70)  # SOL's first call (minute 0) is out until 01:32
            assert await feed.unsubscribe("SOL-USDC") == ["SOL_USDC"]
            await trio.sleep(5)
            rejoined = exchange.now_us() // 1_000_000
            assert await feed.subscribe("SOL-USDC") == ["SOL_USDC"]
            await trio.sleep(200)
            exchange.pause()
            await trio.sleep(70)
    candles = [c for c in _closed_candles(log, "SOL_USDC") if c.received_at_ns > rejoined * 10**9]
    for candle in candles:
        _assert_candle_is_truth(exchange, candle)
    starts = sorted(c.start_us for c in candles)
    owed = [
        t for t in _truth_buckets(exchange, "SOL_USDC") if t >= (rejoined - rejoined % 60) * 10**6
    ]
    assert starts == owed, "only the candles since the market joined again"


def test_beyond_the_gaps_remembered_the_oldest_counts_as_filled() -> None:
    """Every other minute missed, each across a reconnect: CANDLE_GAPS_KEPT gaps are kept open
    for REST; one more and the oldest is given up (its REST copy refused), not a newer one."""
    out: list[Event] = []
    now = [0.0]
    reconciler = Reconciler(
        markets={"SOL_USDC": _info("SOL_USDC")},
        publish=out.extend,
        request=lambda _request: None,
        wall_clock=lambda: now[0],
        channels=["candles:1m"],
    )
    gaps = CANDLE_GAPS_KEPT + 1
    for epoch, minute in enumerate(range(0, 2 * gaps + 1, 2), start=1):
        now[0] = _BASE + 60 * minute - 1  # subscribed after the minute before closed
        reconciler.handle(StreamStarted("SOL_USDC", epoch, "ws"))
        reconciler.on_frames("SOL_USDC", epoch, [_ws_close(minute)], 0)
    assert reconciler.first_missing_candle("SOL_USDC", "1m", _BASE) == _BASE + 3 * 60
    for minute in (1, 3, 2 * gaps - 1):
        poll = CandlePoll("SOL_USDC", "1m", _BASE + 60 * minute, _BASE + 60 * (minute + 1), [])
        poll.klines.append(_rest_kline(minute))
        reconciler.handle(RestChannels(candles=[poll], received_ns=1))
    filled = [(c.start_us // 1_000_000 - _BASE) // 60 for c in out if isinstance(c, Candle)]
    assert filled[-2:] == [3, 2 * gaps - 1], "the newer gaps are filled"
    assert 1 not in filled, "the oldest gap was given up"
