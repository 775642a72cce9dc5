"""REST access to Backpack: ccxt's sync client in a worker thread, or the simulator in-process.

Both clients return the wire layer's exact types (decimal strings kept exact, ``lastUpdateId`` as an
int) and raise the project's error tree, mapped in one place (:func:`raise_for_status`):

=========================  ===========================================================
HTTP 429                   :class:`RateLimitedError` (``Retry-After`` seconds when sent)
HTTP 451, non-JSON 403     :class:`RegionRestrictedError` (terminal, never retried)
HTTP 5xx, network errors   :class:`ExchangeUnavailableError` (retryable)
other 4xx                  :class:`ExchangeRequestError`
=========================  ===========================================================

The rate budget is kept by the caller in trio time; ccxt's own sleeping throttle is disabled.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, TypeVar
from urllib.parse import urlencode

import msgspec
import trio

from backpack_actors.core.symbols import MarketTable
from backpack_actors.core.wire import (
    DepthSnapshot,
    DepthSnapshotText,
    Kline,
    MarkPrice,
    OpenInterest,
    RestTrade,
    Ticker,
    decode_depth_snapshot_text,
    decode_klines,
    decode_mark_prices,
    decode_open_interest,
    decode_tickers,
    decode_trades,
)
from backpack_actors.errors import (
    ExchangeRequestError,
    ExchangeUnavailableError,
    ProtocolError,
    RateLimitedError,
    RegionRestrictedError,
    redact_url,
    redact_urls,
)

__all__ = [
    "CcxtRestClient",
    "RestClient",
    "SimRestClient",
    "raise_for_status",
]

log = logging.getLogger(__name__)

_T = TypeVar("_T")

# What the pipeline relies on in ccxt's Backpack class; a missing flag is worth a warning.
_REQUIRED_HAS = ("fetchMarkets", "fetchOrderBook", "fetchTrades")


class RestClient(Protocol):
    """What the actors need from REST."""

    async def load_markets(self) -> MarketTable: ...

    async def depth(self, exchange_symbol: str) -> DepthSnapshotText | DepthSnapshot:
        """Ours give text levels; a client giving ``Decimal`` ones works the same."""
        ...

    async def recent_trades(self, exchange_symbol: str, limit: int) -> list[RestTrade]: ...

    async def trade_history(
        self, exchange_symbol: str, limit: int, offset: int
    ) -> list[RestTrade]: ...

    async def tickers(self) -> list[Ticker]: ...

    async def mark_prices(self) -> list[MarkPrice]: ...

    async def open_interest(self) -> list[OpenInterest]: ...

    async def klines(
        self, exchange_symbol: str, interval: str, start_s: int, end_s: int
    ) -> list[Kline]:
        """``/api/v1/klines`` from ``start_s`` to ``end_s`` (seconds): REST-only candles."""
        ...

    async def aclose(self) -> None: ...


# The range a server's Retry-After is clamped to (see _retry_after).
RETRY_AFTER_MIN = 0.5
RETRY_AFTER_MAX = 60.0


def _retry_after(headers: Mapping[str, str] | None) -> float | None:
    """The ``Retry-After`` seconds, clamped to [0.5 s, 60 s]; None means "use our own backoff".

    None when the header is absent, unparsable (also the legal HTTP-date form, which Backpack
    does not use), NaN, infinite or <= 0. The clamp keeps a hostile or broken server from
    pausing the feed indefinitely (``1e9``) or making it hammer the server (``0.001``); the
    actors' own limits still apply on top.
    """
    if not headers:
        return None
    for key, value in headers.items():
        if key.lower() == "retry-after":
            try:
                seconds = float(str(value).strip())
            except ValueError:
                return None
            if not math.isfinite(seconds) or seconds <= 0:
                return None
            return min(max(seconds, RETRY_AFTER_MIN), RETRY_AFTER_MAX)
    return None


def raise_for_status(
    status: int, headers: Mapping[str, str] | None, body: str | bytes, url: str
) -> None:
    """Raise the project's error for a non-2xx answer; return quietly for a 2xx."""
    if 200 <= status < 300:
        return
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else (body or "")
    parsed: Any = None
    if text.lstrip().startswith(("{", "[")):
        try:
            parsed = msgspec.json.decode(text)
        except msgspec.DecodeError:
            parsed = None
    if status == 429:
        raise RateLimitedError(url, _retry_after(headers))
    if status == 451 or (status == 403 and not isinstance(parsed, dict)):
        raise RegionRestrictedError(url, status)
    if status >= 500:
        raise ExchangeUnavailableError(f"Backpack answered HTTP {status} for {url}")
    code = parsed.get("code") if isinstance(parsed, dict) else None
    message = parsed.get("message") if isinstance(parsed, dict) else None
    raise ExchangeRequestError(url, status, code, str(message or text[:200] or "no body"))


def _make_ccxt_client(rest_url: str, timeout_ms: int) -> Any:
    import ccxt

    class _Backpack(ccxt.backpack):  # type: ignore[misc]
        """ccxt's client with HTTP failures mapped onto our error tree before ccxt's own mapping."""

        def handle_errors(
            self,
            code: int,
            reason: str,
            url: str,
            method: str,
            headers: dict[str, str],
            body: str,
            response: object,
            request_headers: object,
            request_body: object,
        ) -> Any:
            if code is not None and not 200 <= code < 300:
                raise_for_status(code, headers, body or "", url)
            return super().handle_errors(
                code, reason, url, method, headers, body, response, request_headers, request_body
            )

    base = rest_url.rstrip("/")
    exchange = _Backpack(
        {
            "urls": {"api": {"public": base, "private": base}},
            # Our token bucket runs in trio time; ccxt's sleeping throttle would block the thread.
            "enableRateLimit": False,
            "timeout": timeout_ms,
        }
    )
    exchange.session = _bounded_session(timeout_ms / 1000, MAX_BODY_BYTES)
    return exchange


MAX_BODY_BYTES = 32 * 1024 * 1024
"""Largest REST body read: /depth with 1000 levels a side is ~50 KB, /markets a few hundred KB."""


def _bounded_session(deadline: float, max_bytes: int) -> Any:
    """A ``requests`` session whose every response is read under a total deadline and a size
    bound (requests' own timeout is per read: a body trickled a byte at a time never ends)."""
    import time as _time

    import requests

    class _BoundedSession(requests.Session):
        def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
            started = _time.monotonic()
            kwargs["stream"] = True
            response = super().request(method, url, *args, **kwargs)
            chunks: list[bytes] = []
            size = 0
            try:
                # read1: whatever one socket read brought (iter_content would block until a
                # whole 64 KiB chunk arrived, which a trickled body never completes).
                while chunk := response.raw.read1(65536, decode_content=True):
                    size += len(chunk)
                    if size > max_bytes:
                        raise ProtocolError(
                            f"rest:{redact_url(url)}",
                            f"response body larger than {max_bytes} bytes",
                        )
                    if _time.monotonic() - started > deadline:
                        raise ExchangeUnavailableError(
                            f"{redact_url(url)}: body not complete within {deadline:g} s"
                        )
                    chunks.append(chunk)
            finally:
                response.close()
            response._content = b"".join(chunks)
            response._content_consumed = True
            return response

    return _BoundedSession()


class CcxtRestClient:
    """Backpack's REST API: ccxt's sync client for metadata, direct bounded GETs for data.

    Market metadata goes through ccxt (its market model is what the symbol table is built
    from). The data routes (depth, trades) are fetched with the same bounded ``requests``
    session and decoded by msgspec straight from the body's bytes into the wire types (depth
    levels kept as text, :class:`~backpack_actors.core.wire.DepthSnapshotText`), with the same
    checks: ccxt would parse the JSON into Python objects first and run its request machinery
    around it, and ``Decimal`` levels cost the book a second parse. At startup the feed fetches
    a snapshot per market, so this was most of its CPU (``benchmarks/startup.py``).
    """

    def __init__(self, rest_url: str, *, timeout: float = 10.0) -> None:
        self.rest_url = rest_url.rstrip("/")
        self._timeout = timeout
        self._timeout_ms = int(timeout * 1000)
        # The metadata calls' own client (it keeps ccxt's market state).
        self._exchange = _make_ccxt_client(self.rest_url, self._timeout_ms)
        # ccxt's sync client has one requests session: one call at a time per client.
        self._limiter = trio.CapacityLimiter(1)
        # Data calls take a session from this pool, one per call in flight, so the REST actor's
        # concurrency is real; a session whose call was abandoned (its deadline passed) is not
        # given back: its thread may still be reading, bounded by the session itself.
        self._idle: list[Any] = []
        self._threads = trio.CapacityLimiter(64)
        self.calls = 0

    def __repr__(self) -> str:
        return f"CcxtRestClient(rest_url={redact_url(self.rest_url)!r})"

    async def _call(self, what: str, fn: Callable[[], _T]) -> _T:
        import ccxt

        self.calls += 1
        try:
            return await trio.to_thread.run_sync(fn, limiter=self._limiter, abandon_on_cancel=True)
        except (RateLimitedError, RegionRestrictedError, ExchangeRequestError):
            raise
        except ExchangeUnavailableError:
            raise
        except ccxt.NetworkError as exc:
            raise ExchangeUnavailableError(f"{what}: {type(exc).__name__}: {exc}") from exc
        except ccxt.ExchangeNotAvailable as exc:
            raise ExchangeUnavailableError(f"{what}: {exc}") from exc

    async def _get(self, what: str, path: str, params: Sequence[tuple[str, str]]) -> bytes:
        """The body of one GET of a data route (2xx), read by a pooled bounded session."""
        import requests
        import urllib3

        self.calls += 1
        url = f"{self.rest_url}{path}?{urlencode(params)}"
        session = (
            self._idle.pop() if self._idle else _bounded_session(self._timeout, MAX_BODY_BYTES)
        )
        timeout = self._timeout

        def get() -> bytes:
            response = session.get(url, timeout=timeout)
            body: bytes = response.content
            raise_for_status(response.status_code, response.headers, body, redact_url(url))
            return body

        try:
            body = await trio.to_thread.run_sync(get, limiter=self._threads, abandon_on_cancel=True)
        except (RateLimitedError, RegionRestrictedError, ExchangeRequestError, ProtocolError):
            self._idle.append(session)
            raise
        except ExchangeUnavailableError:
            self._idle.append(session)
            raise
        except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
            # Also what urllib3 raises from inside the bounded body read (a reset, a timeout).
            self._idle.append(session)
            raise ExchangeUnavailableError(
                f"{what}: {type(exc).__name__}: {redact_urls(str(exc))}"
            ) from exc
        self._idle.append(session)
        return body

    async def aclose(self) -> None:
        """Close the pooled HTTP connections (they would outlive the feed otherwise)."""
        sessions, self._idle = [getattr(self._exchange, "session", None), *self._idle], []
        for session in sessions:
            if session is not None:
                await trio.to_thread.run_sync(session.close, limiter=self._threads)

    async def load_markets(self) -> MarketTable:
        """The listed markets; a peer that does not answer like Backpack raises ProtocolError.

        That covers a 4xx on a market-loading route (public, parameterless: refused only by a
        server that is not Backpack's API), an answer ccxt cannot parse (an HTML page with 200),
        metadata out of bounds (see :mod:`~backpack_actors.core.symbols`) and an empty listing.
        ProtocolError is retried like a server error; rate limits, region restriction and
        network failures keep their own errors.
        """
        ex = self._exchange

        def not_backpack(detail: str) -> ProtocolError:
            return ProtocolError(
                "rest:/api/v1/markets",
                f"{self.rest_url} did not answer like the Backpack exchange: {detail}",
            )

        try:
            markets = await self._call("load_markets", lambda: ex.load_markets(reload=True))
            table = MarketTable.from_ccxt_markets(markets)
        except ExchangeRequestError as exc:
            raise not_backpack(f"HTTP {exc.status} for {exc.url}") from exc
        except ProtocolError as exc:
            raise not_backpack(exc.reason) from exc
        except (RateLimitedError, RegionRestrictedError, ExchangeUnavailableError):
            raise
        except Exception as exc:  # ccxt parsing what is not Backpack's JSON: any error at all
            raise not_backpack(f"an unreadable answer ({type(exc).__name__})") from exc
        missing = [flag for flag in _REQUIRED_HAS if not ex.has.get(flag)]
        if missing:
            log.warning("ccxt's backpack class lacks %s; some features may fail", missing)
        if not len(table):
            raise not_backpack("no spot or perp market listed")
        return table

    async def depth(self, exchange_symbol: str) -> DepthSnapshotText:
        body = await self._get("depth", "/api/v1/depth", [("symbol", exchange_symbol)])
        return decode_depth_snapshot_text(body, exchange_symbol)

    async def recent_trades(self, exchange_symbol: str, limit: int) -> list[RestTrade]:
        params = [("symbol", exchange_symbol), ("limit", str(limit))]
        body = await self._get("trades", "/api/v1/trades", params)
        return decode_trades(body, exchange_symbol)

    async def trade_history(self, exchange_symbol: str, limit: int, offset: int) -> list[RestTrade]:
        params = [("symbol", exchange_symbol), ("limit", str(limit)), ("offset", str(offset))]
        body = await self._get("trades/history", "/api/v1/trades/history", params)
        return decode_trades(body, exchange_symbol)

    # Every market in one call each: what REST-only mode polls for the ticker, mark-price and
    # open-interest channels (docs/protocol.md §3).
    async def tickers(self) -> list[Ticker]:
        return decode_tickers(await self._get("tickers", "/api/v1/tickers", []))

    async def mark_prices(self) -> list[MarkPrice]:
        return decode_mark_prices(await self._get("markPrices", "/api/v1/markPrices", []))

    async def open_interest(self) -> list[OpenInterest]:
        return decode_open_interest(await self._get("openInterest", "/api/v1/openInterest", []))

    async def klines(
        self, exchange_symbol: str, interval: str, start_s: int, end_s: int
    ) -> list[Kline]:
        body = await self._get(
            "klines", "/api/v1/klines", _klines_query(exchange_symbol, interval, start_s, end_s)
        )
        return decode_klines(body, exchange_symbol)


class _InProcessExchange(Protocol):
    def handle_http(self, method: str, path: str, query: Mapping[str, str]) -> Any: ...


class SimRestClient:
    """The simulator's REST API called in-process: no sockets, no threads, virtual-time friendly.

    Responses still go through the exchange's real request handler and our real decoders, so this
    exercises everything but HTTP framing. Use :class:`CcxtRestClient` for over-the-wire tests.
    """

    def __init__(self, exchange: _InProcessExchange, *, rest_url: str = "sim://in-process") -> None:
        self._exchange = exchange
        self.rest_url = rest_url
        self.calls = 0

    def __repr__(self) -> str:
        return f"SimRestClient(rest_url={self.rest_url!r})"

    async def _get(self, path: str, query: Sequence[tuple[str, str]]) -> bytes:
        self.calls += 1
        answer = self._exchange.handle_http("GET", path, dict(query))
        if hasattr(answer, "__await__"):
            answer = await answer
        # A checkpoint per call, as a socket round trip would have.
        await trio.lowlevel.checkpoint()
        url = f"{self.rest_url}{path}?{urlencode(list(query))}"
        raise_for_status(answer.status, dict(answer.headers), answer.body, url)
        body: bytes = answer.body
        return body

    async def aclose(self) -> None:
        """Nothing to release in-process."""

    async def load_markets(self) -> MarketTable:
        body = await self._get("/api/v1/markets", [])
        try:
            items = msgspec.json.decode(body)
        except msgspec.DecodeError as exc:
            raise ProtocolError("rest:/api/v1/markets", str(exc), body) from exc
        return MarketTable.from_markets_json(items)

    async def depth(self, exchange_symbol: str) -> DepthSnapshotText:
        body = await self._get("/api/v1/depth", [("symbol", exchange_symbol)])
        return decode_depth_snapshot_text(body, exchange_symbol)

    async def recent_trades(self, exchange_symbol: str, limit: int) -> list[RestTrade]:
        body = await self._get(
            "/api/v1/trades", [("symbol", exchange_symbol), ("limit", str(limit))]
        )
        return decode_trades(body, exchange_symbol)

    async def trade_history(self, exchange_symbol: str, limit: int, offset: int) -> list[RestTrade]:
        query = [("symbol", exchange_symbol), ("limit", str(limit)), ("offset", str(offset))]
        body = await self._get("/api/v1/trades/history", query)
        return decode_trades(body, exchange_symbol)

    async def tickers(self) -> list[Ticker]:
        return decode_tickers(await self._get("/api/v1/tickers", []))

    async def mark_prices(self) -> list[MarkPrice]:
        return decode_mark_prices(await self._get("/api/v1/markPrices", []))

    async def open_interest(self) -> list[OpenInterest]:
        return decode_open_interest(await self._get("/api/v1/openInterest", []))

    async def klines(
        self, exchange_symbol: str, interval: str, start_s: int, end_s: int
    ) -> list[Kline]:
        body = await self._get(
            "/api/v1/klines", _klines_query(exchange_symbol, interval, start_s, end_s)
        )
        return decode_klines(body, exchange_symbol)


def _klines_query(symbol: str, interval: str, start_s: int, end_s: int) -> list[tuple[str, str]]:
    return [
        ("symbol", symbol),
        ("interval", interval),
        ("startTime", str(start_s)),
        ("endTime", str(end_s)),
    ]
