"""The exception tree of backpack_actors.

::

    BackpackActorsError
     ├─ ConfigError                 bad configuration; names the key and what was expected
     │   └─ UnknownSymbolError      symbol not listed; suggests the closest listed ones
     ├─ ProtocolError               an undecodable payload; names the stream, shows an excerpt
     ├─ RegionRestrictedError       HTTP 451 / non-JSON 403: terminal, never retried
     ├─ ExchangeRequestError        any other 4xx answer (a request the exchange refuses)
     ├─ TransientError              retryable by supervisors
     │   ├─ RateLimitedError        HTTP 429 (retry_after seconds when the server said so)
     │   ├─ ExchangeUnavailableError  5xx, network failures, refused handshakes
     │   ├─ StreamStaleError        a stream stayed silent longer than its timeout
     │   └─ StreamOverflowError     a stream's outbound channel was full (forces a resync)
     └─ EscalationError             a supervisor's restart window was exceeded

Only :class:`TransientError` subclasses are restarted (``is_retryable``); anything else is a bug or
a configuration problem and escalates at once.
"""

from __future__ import annotations

__all__ = [
    "BackpackActorsError",
    "ConfigError",
    "EscalationError",
    "ExchangeRequestError",
    "ExchangeUnavailableError",
    "ProtocolError",
    "RateLimitedError",
    "RegionRestrictedError",
    "StreamOverflowError",
    "StreamStaleError",
    "TransientError",
    "UnknownSymbolError",
    "excerpt",
    "is_retryable",
]

_EXCERPT_LIMIT = 120


def excerpt(raw: bytes | str, limit: int = _EXCERPT_LIMIT) -> str:
    """A short, printable excerpt of a payload for error messages."""
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes | bytearray) else str(raw)
    text = text.replace("\n", " ")
    return text if len(text) <= limit else text[:limit] + "…"


class BackpackActorsError(Exception):
    """Base of every error raised by this library."""


class ConfigError(BackpackActorsError):
    """A configuration value is missing or wrong."""

    def __init__(self, key: str, expected: str, got: object = None) -> None:
        self.key = key
        self.expected = expected
        message = f"config key {key!r}: expected {expected}"
        if got is not None:
            message += f", got {got!r}"
        super().__init__(message)


class UnknownSymbolError(ConfigError):
    """A symbol that the exchange does not list."""

    def __init__(self, symbol: str, suggestions: list[str]) -> None:
        self.symbol = symbol
        self.suggestions = suggestions
        hint = ", ".join(suggestions) if suggestions else "none close"
        expected = (
            f"a listed market; {symbol!r} is not listed (closest: {hint}). "
            "Backpack lists mostly USDC-quoted markets, e.g. BTC-USDC"
        )
        super().__init__("symbols", expected)


class ProtocolError(BackpackActorsError):
    """A payload that does not decode as the Backpack protocol says it should."""

    def __init__(self, stream: str, reason: str, raw: bytes | str = b"") -> None:
        self.stream = stream
        self.reason = reason
        self.excerpt = excerpt(raw) if raw else ""
        message = f"{stream}: {reason}"
        if self.excerpt:
            message += f" in {self.excerpt!r}"
        super().__init__(message)


class RegionRestrictedError(BackpackActorsError):
    """The exchange refuses service from this location (HTTP 451, or a non-JSON 403)."""

    def __init__(self, url: str, status: int) -> None:
        self.url = url
        self.status = status
        super().__init__(
            f"Backpack answered HTTP {status} for {url}: the exchange is not available from this "
            "location. Point rest_url/ws_url at an alternate endpoint or a proxy you are allowed "
            "to use; retrying will not help."
        )


class ExchangeRequestError(BackpackActorsError):
    """The exchange refused a request (4xx but 429/451); retrying the same request won't help."""

    def __init__(self, url: str, status: int, code: str | None, message: str) -> None:
        self.url = url
        self.status = status
        self.code = code
        label = f"{code}: " if code else ""
        super().__init__(f"Backpack answered HTTP {status} for {url}: {label}{message}")


class TransientError(BackpackActorsError):
    """A failure that a supervisor may retry."""


class RateLimitedError(TransientError):
    """HTTP 429: too many requests."""

    def __init__(self, url: str, retry_after: float | None) -> None:
        self.url = url
        self.retry_after = retry_after
        wait = f"; retry after {retry_after:g} s" if retry_after is not None else ""
        super().__init__(f"rate limited by Backpack (HTTP 429) on {url}{wait}")


class ExchangeUnavailableError(TransientError):
    """A server error, a network failure or a refused WebSocket handshake."""


class StreamStaleError(TransientError):
    """A stream was silent for longer than its stale timeout."""


class StreamOverflowError(TransientError):
    """A stream could not hand frames on without blocking its reader."""


class EscalationError(BackpackActorsError):
    """A supervisor gave up: too many restarts within its window."""


def is_retryable(exc: BaseException) -> bool:
    """True when a supervisor should restart the failed child."""
    return isinstance(exc, TransientError)
