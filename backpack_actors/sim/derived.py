"""The simulator's derived public streams: candles, mark price, open interest, liquidations.

Everything here is computed from a market model's own state — its trades and its book — so each
stream has ground truth a test can recompute independently:

* ``kline.<interval>.<symbol>``: the candle of the current bucket, built from the model's trades,
  sent at most once a tick (the exchange says "at most once per second") when it changed, and a
  final ``X: true`` copy once the bucket is over — to whoever is subscribed then: a bucket that
  ends while nobody listens is never sent. A closed candle equals the REST ``/klines`` answer for
  its bucket. Buckets start at multiples of the interval since the Unix epoch; with
  ``calendar=True`` (``SimConfig.kline_calendar``) ``1w`` buckets start on Mondays and ``1month``
  ones on the 1st, 00:00 UTC, as many exchanges cut them (:func:`kline_bucket`).
* ``markPrice.<symbol>`` (perps): mark = the book's mid, index = the last trade price, estimated
  funding = (mark − index) / index clamped to ±0.0005 at 8 decimals, next funding on the next 8 h
  boundary. Sent every tick; :func:`mark_price_fields` gives the same numbers at any moment.
* ``openInterest.<symbol>`` (perps): the base volume traded so far, every 60 s.
* ``liquidation``: every 37th trade of a perp is also reported as a liquidation (an aggressive
  trade, as liquidations are), once, on the one stream for all markets.

Integer arithmetic throughout (ticks and steps), so the wire text is exact.
"""

from __future__ import annotations

import calendar as _calendar
import time
from collections.abc import Callable, Iterable
from typing import Any

import attrs

from backpack_actors.sim.market import MarketModel, SimTrade, format_stripped

__all__ = [
    "FUNDING_INTERVAL_MS",
    "KLINE_SECONDS",
    "LIQUIDATION_EVERY",
    "OPEN_INTEREST_INTERVAL_US",
    "DerivedStreams",
    "candle_fields",
    "derived_stream_names",
    "is_liquidation",
    "kline_bucket",
    "mark_price_fields",
]

# The simulator keeps its own interval table, not the client's CANDLE_SECONDS: an independent
# peer must not share the names and numbers of the client it checks.
KLINE_SECONDS: dict[str, int] = {
    "1s": 1,
    "1m": 60,
    "3m": 180,
    "5m": 300,
    "15m": 900,
    "30m": 1800,
    "1h": 3600,
    "2h": 7200,
    "4h": 14400,
    "6h": 21600,
    "8h": 28800,
    "12h": 43200,
    "1d": 86400,
    "3d": 259200,
    "1w": 604800,
    "1month": 2592000,
}
FUNDING_INTERVAL_MS = 8 * 3600 * 1000
OPEN_INTEREST_INTERVAL_US = 60_000_000
LIQUIDATION_EVERY = 37
_FUNDING_CAP = 50_000  # 0.0005 at 8 decimals
_FUNDING_DECIMALS = 8


def _iso(seconds: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))


def is_liquidation(model: MarketModel, trade: SimTrade) -> bool:
    """Whether ``trade`` is also reported as a liquidation (perps only, every 37th id)."""
    return model.spec.market_type == "PERP" and trade.id % LIQUIDATION_EVERY == 0


_MONDAY_S = 4 * 86_400
"""1970-01-05, the first Monday of the Unix epoch: calendar weeks start on its multiples."""


def kline_bucket(seconds: int, moment_s: int, *, calendar: bool = False) -> tuple[int, int]:
    """The start and end (s) of the ``seconds`` bucket holding ``moment_s``: on the epoch grid, or
    (``calendar``) for ``1w`` from Monday and for ``1month`` from the 1st, 00:00 UTC."""
    if calendar and seconds == KLINE_SECONDS["1w"]:
        start = moment_s - (moment_s - _MONDAY_S) % seconds
        return start, start + seconds
    if calendar and seconds == KLINE_SECONDS["1month"]:
        day = time.gmtime(moment_s)
        start = _calendar.timegm((day.tm_year, day.tm_mon, 1, 0, 0, 0))
        year, month = (day.tm_year + 1, 1) if day.tm_mon == 12 else (day.tm_year, day.tm_mon + 1)
        return start, _calendar.timegm((year, month, 1, 0, 0, 0))
    start = moment_s - moment_s % seconds
    return start, start + seconds


def candle_fields(
    model: MarketModel,
    seconds: int,
    bucket: int,
    until_us: int | None = None,
    *,
    end: int | None = None,
) -> dict[str, Any] | None:
    """The candle of ``bucket`` (start, in seconds; ``end``, by default ``bucket + seconds``)
    from the model's trades up to ``until_us``.

    None when no trade fell in it. Values are wire strings, trailing zeros stripped.
    """
    pd, sd = model.price_decimals, model.size_decimals
    end_s = bucket + seconds if end is None else end
    start_us, end_us = bucket * 1_000_000, end_s * 1_000_000
    o = h = lo = c = None
    volume = count = 0
    picked: list[SimTrade] = []
    # Trades are in time order: walk back from the newest until the bucket's start.
    for trade in reversed(model.trades):
        t = trade.engine_time_us
        if t < start_us:
            break
        if t < end_us and (until_us is None or t <= until_us):
            picked.append(trade)
    for trade in reversed(picked):
        p = int(trade.price.scaleb(pd))
        q = int(trade.quantity.scaleb(sd))
        if o is None:
            o = h = lo = p
        assert h is not None
        assert lo is not None
        h, lo, c = max(h, p), min(lo, p), p
        volume += q
        count += 1
    if o is None or c is None or h is None or lo is None:
        return None
    return {
        "o": format_stripped(o, pd),
        "h": format_stripped(h, pd),
        "l": format_stripped(lo, pd),
        "c": format_stripped(c, pd),
        "v": format_stripped(volume, sd),
        "n": count,
        "t": _iso(bucket),
        "T": _iso(end_s),
    }


def _traded_buckets(
    model: MarketModel, seconds: int, first: int, until: int, calendar: bool
) -> list[tuple[int, int]]:
    """The ``seconds`` buckets (start, end) from ``first`` to before ``until`` with a trade."""
    buckets: set[tuple[int, int]] = set()
    for trade in reversed(model.trades):
        t = trade.engine_time_us // 1_000_000
        if t < first:
            break
        if t < until:
            buckets.add(kline_bucket(seconds, t, calendar=calendar))
    return sorted(buckets)


def mark_price_fields(model: MarketModel, now_us: int) -> dict[str, Any]:
    """``p`` mark, ``i`` index, ``f`` funding estimate, ``n`` next funding (ms) at ``now_us``."""
    pd = model.price_decimals
    bid, ask = model.best_bid(), model.best_ask()
    tick = model.spec.tick_size
    # Book prices are in ticks; the mid gets one more decimal so it stays exact.
    scale = int(tick.scaleb(pd))
    mid_x2 = (bid + ask) * scale  # 2 × mid, in units of 10^-pd
    mark_text = format_stripped(mid_x2 * 5, pd + 1)
    index_units = model.last_price  # units of 10^-pd
    index_text = format_stripped(index_units, pd)
    # (mark - index) / index at 8 decimals, half away from zero, clamped.
    num = (mid_x2 * 5 - index_units * 10) * 10**_FUNDING_DECIMALS
    den = index_units * 10
    rate = (abs(num) + den // 2) // den if den else 0
    rate = min(rate, _FUNDING_CAP)
    rate_text = format_stripped(rate if num >= 0 else -rate, _FUNDING_DECIMALS)
    now_ms = now_us // 1000
    next_ms = (now_ms // FUNDING_INTERVAL_MS + 1) * FUNDING_INTERVAL_MS
    return {"p": mark_text, "i": index_text, "f": rate_text, "n": next_ms}


def derived_stream_names(symbols: Iterable[str], perps: Iterable[str]) -> set[str]:
    """Every derived stream name the simulator accepts."""
    names = {"liquidation"}
    for sym in symbols:
        names.update(f"kline.{iv}.{sym}" for iv in KLINE_SECONDS)
    for sym in perps:
        names.update({f"markPrice.{sym}", f"openInterest.{sym}"})
    return names


@attrs.define
class _Kline:
    bucket: int | None = None
    last_sent: dict[str, Any] | None = None


class DerivedStreams:
    """Publishes the derived streams of a :class:`~backpack_actors.sim.exchange.SimExchange`.

    ``subscribed(stream)`` says whether anybody listens, ``emit(symbol, stream, data)`` sends.
    """

    def __init__(
        self,
        models: dict[str, MarketModel],
        subscribed: Callable[[str], bool],
        emit: Callable[[str, str, dict[str, Any]], None],
        *,
        calendar: bool = False,
    ) -> None:
        self._models = models
        self._calendar = calendar
        self._subscribed = subscribed
        self._emit = emit
        self._klines: dict[str, _Kline] = {}
        self._next_open_interest: dict[str, int] = {}
        self.liquidations: dict[str, list[SimTrade]] = {}
        self.mark_prices: dict[str, list[dict[str, Any]]] = {}

    def on_trades(self, symbol: str, trades: Iterable[SimTrade]) -> None:
        """Report the liquidations among a message's trades (before anybody may miss them)."""
        model = self._models[symbol]
        for trade in trades:
            if not is_liquidation(model, trade):
                continue
            self.liquidations.setdefault(symbol, []).append(trade)
            if self._subscribed("liquidation"):
                self._emit(
                    symbol,
                    "liquidation",
                    {
                        "E": trade.event_time_us,
                        "S": "Ask" if trade.is_buyer_maker else "Bid",
                        "T": trade.engine_time_us,
                        "e": "liquidation",
                        "p": trade.price_str,
                        "q": trade.quantity_str,
                        "s": symbol,
                    },
                )

    def tick(self, now_us: int) -> None:
        """Once a ticker interval: candles that changed or closed, mark prices, open interest."""
        for symbol, model in self._models.items():
            for interval, seconds in KLINE_SECONDS.items():
                stream = f"kline.{interval}.{symbol}"
                if self._subscribed(stream):
                    self._kline(symbol, model, stream, seconds, now_us)
                else:
                    # Nobody listened: a later subscriber starts with the bucket in progress
                    # then, as on the exchange, not with the final of one that ended unheard.
                    self._klines.pop(stream, None)
            if model.spec.market_type != "PERP":
                continue
            stream = f"markPrice.{symbol}"
            if self._subscribed(stream):
                fields = mark_price_fields(model, now_us)
                self.mark_prices.setdefault(symbol, []).append({**fields, "E": now_us})
                data = {"E": now_us, "T": now_us, "e": "markPrice", "s": symbol, **fields}
                self._emit(symbol, stream, data)
            stream = f"openInterest.{symbol}"
            if self._subscribed(stream) and now_us >= self._next_open_interest.get(symbol, 0):
                self._next_open_interest[symbol] = now_us + OPEN_INTEREST_INTERVAL_US
                oi = format_stripped(model.volume, model.size_decimals)
                self._emit(symbol, stream, {"E": now_us, "e": "openInterest", "o": oi, "s": symbol})

    def _kline(
        self, symbol: str, model: MarketModel, stream: str, seconds: int, now_us: int
    ) -> None:
        state = self._klines.setdefault(stream, _Kline())
        bucket, end = kline_bucket(seconds, now_us // 1_000_000, calendar=self._calendar)
        if state.bucket is not None and state.bucket != bucket:
            # Every bucket that ended since the last tick gets its final — more than one when a
            # tick came later than a whole bucket (1s candles; ticks drift past the second).
            for start, stop in _traded_buckets(
                model, seconds, state.bucket, bucket, self._calendar
            ):
                final = candle_fields(model, seconds, start, end=stop)
                if final is not None:
                    data = self._kline_data(symbol, final, now_us, closed=True)
                    self._emit(symbol, stream, data)
            state.last_sent = None
        state.bucket = bucket
        current = candle_fields(model, seconds, bucket, until_us=now_us, end=end)
        if current is not None and current != state.last_sent:
            state.last_sent = current
            self._emit(symbol, stream, self._kline_data(symbol, current, now_us, closed=False))

    @staticmethod
    def _kline_data(
        symbol: str, fields: dict[str, Any], now_us: int, *, closed: bool
    ) -> dict[str, Any]:
        return {"E": now_us, "X": closed, "e": "kline", "s": symbol, **fields}
