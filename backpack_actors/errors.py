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
     │   │   └─ WsProtocolViolation   the server broke WebSocket framing (``reason`` says how)
     │   ├─ StreamStaleError        a stream stayed silent longer than its timeout
     │   └─ StreamOverflowError     a stream's outbound channel was full (forces a resync)
     └─ EscalationError             a supervisor's restart window was exceeded

Only :class:`TransientError` subclasses are restarted (``is_retryable``); anything else is a bug or
a configuration problem and escalates at once.

No message of this tree shows a URL's password: every message passes through :func:`redact_urls`
(``http://user:pass@host`` prints as ``http://user:***@host``), and :class:`ConfigError` shows at
most :data:`ECHO_LIMIT` characters of a wrong value and never a credential's value.
"""

from __future__ import annotations

import re
import reprlib

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
    "WsProtocolViolation",
    "echo",
    "excerpt",
    "is_retryable",
    "redact_url",
    "redact_urls",
]

_EXCERPT_LIMIT = 120
# A wrong value is shown to say what was wrong, not to reproduce it: 80 characters identify it,
# and a value parsed from a short ${VAR} (or a hostile file) may be hundreds of MB.
ECHO_LIMIT = 80
# Keys whose values are credentials: never echoed, whatever the value.
_CREDENTIAL_KEY = re.compile(r"(^|[.\[])(api_key|api_secret)\b")
# scheme://userinfo@ — the userinfo runs to the last "@" before the host part ends (/ ? # or
# whitespace), as urllib.parse splits it, so a password containing "@" is still covered.
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<userinfo>[^\s/?#]*)@")
# reprlib bounds the walk as well as the text: a huge nested value is never rendered whole.
_REPR = reprlib.Repr()
_REPR.maxlevel = 3
_REPR.maxstring = ECHO_LIMIT
_REPR.maxother = ECHO_LIMIT
_REPR.maxlong = ECHO_LIMIT
for _name in ("maxtuple", "maxlist", "maxarray", "maxdict", "maxset", "maxfrozenset", "maxdeque"):
    setattr(_REPR, _name, 6)


def _redact_userinfo(match: re.Match[str]) -> str:
    user, colon, _password = match.group("userinfo").partition(":")
    return f"{match.group('scheme')}{user}{':***' if colon else ''}@"


def redact_url(url: str) -> str:
    """``url`` with the password of its userinfo replaced by ``***``; the rest is kept.

    ``http://user:pass@host:8080/p`` -> ``http://user:***@host:8080/p``. A URL without a
    password comes back unchanged (also when it does not parse: this never raises).
    """
    return _USERINFO.sub(_redact_userinfo, url, count=1)


def redact_urls(text: str) -> str:
    """:func:`redact_url` applied to every URL inside ``text`` (an error message)."""
    return _USERINFO.sub(_redact_userinfo, text) if "://" in text else text


def echo(value: object, limit: int = ECHO_LIMIT) -> str:
    """A bounded ``repr`` of a wrong value for an error message (``…`` marks a cut).

    The cost is bounded too: long strings are cut before ``repr``, containers are walked only a
    few levels and elements deep, and an int too large to print is described instead.
    """
    if isinstance(value, str):
        text = repr(str(value[: limit + 1]))
        if len(value) > limit:
            text = text[:limit] + "…"
    else:
        try:
            text = _REPR.repr(value)
        except (ValueError, RecursionError):
            # int → str refuses more than 4300 digits; such a value is its own description.
            text = f"<a {type(value).__name__} too large to show>"
    text = redact_urls(text)
    return text if len(text) <= limit else text[:limit] + "…"


def excerpt(raw: bytes | str, limit: int = _EXCERPT_LIMIT) -> str:
    """A short, printable excerpt of a payload for error messages."""
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes | bytearray) else str(raw)
    text = text.replace("\n", " ")
    return text if len(text) <= limit else text[:limit] + "…"


class BackpackActorsError(Exception):
    """Base of every error raised by this library; its messages never show a URL's password."""

    def __init__(self, *args: object) -> None:
        # Redacted here, once for the whole tree: messages embed URLs from configs, ccxt and
        # servers, and a credential in one must not reach a log or an ``error:`` line.
        super().__init__(*(redact_urls(arg) if isinstance(arg, str) else arg for arg in args))


class ConfigError(BackpackActorsError):
    """A configuration value is missing or wrong."""

    def __init__(self, key: str, expected: str, got: object = None) -> None:
        self.key = key
        self.expected = expected
        # The key too is bounded: an unknown key is whatever the file holds.
        message = f"config key {echo(key)}: expected {expected}"
        if got is not None and not _CREDENTIAL_KEY.search(key):
            message += f", got {echo(got)}"
        super().__init__(message)


class UnknownSymbolError(ConfigError):
    """A symbol that the exchange does not list."""

    def __init__(self, symbol: str, suggestions: list[str]) -> None:
        self.symbol = symbol
        self.suggestions = suggestions
        hint = ", ".join(suggestions) if suggestions else "none close"
        expected = (
            f"a listed market; {echo(symbol)} is not listed (closest: {hint}). "
            "Backpack lists mostly USDC-quoted markets, e.g. BTC-USDC"
        )
        super().__init__("symbols", expected)


class ProtocolError(BackpackActorsError):
    """A payload that does not decode as the Backpack protocol says it should."""

    def __init__(self, stream: str, reason: str, raw: bytes | str = b"") -> None:
        self.stream = stream
        self.reason = reason = redact_urls(reason)
        self.excerpt = redact_urls(excerpt(raw)) if raw else ""
        message = f"{stream}: {reason}"
        if self.excerpt:
            message += f" in {self.excerpt!r}"
        super().__init__(message)


class RegionRestrictedError(BackpackActorsError):
    """The exchange refuses service from this location (HTTP 451, or a non-JSON 403)."""

    def __init__(self, url: str, status: int) -> None:
        self.url = url = redact_url(url)
        self.status = status
        super().__init__(
            f"Backpack answered HTTP {status} for {url}: the exchange is not available from this "
            "location. Point rest_url/ws_url at an alternate endpoint or a proxy you are allowed "
            "to use; retrying will not help."
        )


class ExchangeRequestError(BackpackActorsError):
    """The exchange refused a request (4xx but 429/451); retrying the same request won't help."""

    def __init__(self, url: str, status: int, code: str | None, message: str) -> None:
        self.url = url = redact_url(url)
        self.status = status
        self.code = code
        label = f"{code}: " if code else ""
        super().__init__(f"Backpack answered HTTP {status} for {url}: {label}{message}")


class TransientError(BackpackActorsError):
    """A failure that a supervisor may retry."""


class RateLimitedError(TransientError):
    """HTTP 429: too many requests."""

    def __init__(self, url: str, retry_after: float | None) -> None:
        self.url = url = redact_url(url)
        self.retry_after = retry_after
        wait = f"; retry after {retry_after:g} s" if retry_after is not None else ""
        super().__init__(f"rate limited by Backpack (HTTP 429) on {url}{wait}")


class ExchangeUnavailableError(TransientError):
    """A server error, a network failure or a refused WebSocket handshake."""


class WsProtocolViolation(ExchangeUnavailableError):
    """The server broke the WebSocket framing rules; the connection was ended.

    A masked frame, reserved bits, an unknown opcode, an oversized frame or message, a flood of
    fragments or a bad control frame: framing cannot be resynchronised after any of them, so the
    connection ends (a reconnect may help: it stays retryable). ``reason`` says which rule.
    """

    def __init__(self, url: str, reason: str) -> None:
        self.url = url = redact_url(url)
        self.reason = reason
        super().__init__(f"WebSocket {url}: protocol error from the server: {reason}")


class StreamStaleError(TransientError):
    """A stream was silent for longer than its stale timeout."""


class StreamOverflowError(TransientError):
    """A stream could not hand frames on without blocking its reader."""


class EscalationError(BackpackActorsError):
    """A supervisor gave up: too many restarts within its window."""


def is_retryable(exc: BaseException) -> bool:
    """True when a supervisor should restart the failed child."""
    return isinstance(exc, TransientError)
