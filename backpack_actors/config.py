"""Feed configuration: the :class:`FeedConfig` record, YAML loading, ``${ENV}`` interpolation.

The YAML format is cryptofeed's (``exchanges: {<name>: {class: CcxtBackpackFeed, ...}}``) plus our
own tunables in the same mapping; :meth:`FeedConfig.from_kwargs` takes the same keys from Python.
Every problem raises :class:`~backpack_actors.errors.ConfigError` naming the key path (e.g.
``exchanges.ccxt_backpack.snapshot_interval``) and what was expected.

Environment interpolation: ``${VAR}`` and ``${VAR:-default}`` inside string values. An unset
variable without a default is an error (a typo in a variable name must not silently drop a
setting). An *empty* ``api_key``/``api_secret`` (the variable set to ``""``, or ``${VAR:-}``) means
"no credentials": public market data needs none, so CI can export empty variables.

Credentials are wrapped in :class:`Secret`, which never prints its value; error messages never
show a credential's value either, nor a URL's password, and show at most ~80 characters of any
other wrong value.

Hostile input is bounded: a file over :data:`MAX_CONFIG_BYTES`, YAML anchors and aliases (the
"billion laughs" expansion; a config file has no use for them) and nesting deeper than
:data:`MAX_YAML_DEPTH` are refused before anything is built.
"""

from __future__ import annotations

import difflib
import hmac
import math
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, cast
from urllib.parse import urlsplit

import attrs
import yaml

from backpack_actors.core.restart import Backoff, RestartWindow
from backpack_actors.errors import ConfigError, redact_url

__all__ = [
    "CHANNELS",
    "EXCHANGE",
    "FEED_CLASS",
    "L2_BOOK",
    "MAX_CONFIG_BYTES",
    "MAX_YAML_DEPTH",
    "TRADES",
    "BookPolicy",
    "BookSnapshots",
    "FeedConfig",
    "Secret",
    "TradePolicy",
    "config_from_mapping",
    "load_config",
]

TRADES = "trades"
L2_BOOK = "l2_book"
CHANNELS = (TRADES, L2_BOOK)
FEED_CLASS = "CcxtBackpackFeed"
EXCHANGE = "backpack"

TradePolicy = Literal["drop_newest", "drop_oldest"]
BookPolicy = Literal["conflate"]
# "block" was accepted before subscribers had their own queues; nothing may block the feed now,
# so it means the default of each (trades lossless up to the queue bound, then reported).
_TRADE_POLICIES = ("drop_newest", "drop_oldest", "block")
_BOOK_POLICIES = ("conflate", "block")
_POLICY_ALIASES = {"trade_policy": {"block": "drop_newest"}, "book_policy": {"block": "conflate"}}
MARKET_TYPES = ("spot", "perp")
ALL_SYMBOLS = ("all",)
DEPTH_STREAMS = ("realtime", "200ms", "600ms", "1000ms")
"""``symbols: all``: every listed market (filtered by ``market_types`` and ``quotes``)."""
# Keys of the cryptofeed format that only identify the feed; checked, not stored.
_IDENTITY_KEYS = ("class", "exchange")
# A real config is a few hundred bytes; 1 MiB leaves room for thousands of symbols while a
# mistaken or hostile path (a log, /dev/zero) is refused without being read whole.
MAX_CONFIG_BYTES = 1 << 20
# The format nests four levels (exchanges → feed → key → list); 32 is generous and keeps
# PyYAML's recursive composer far from Python's recursion limit.
MAX_YAML_DEPTH = 32
# An interpolated number or boolean is a few characters; longer values are kept as text rather
# than parsed (parsing is where a short ${VAR} could expand).
_MAX_ENV_SCALAR = 100


class Secret:
    """A credential that prints as ``***``; :meth:`reveal` returns the value."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The secret value itself; only for the code that signs requests."""
        return self._value

    def __repr__(self) -> str:
        return "***"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash((Secret, self._value))


@attrs.frozen
class BookSnapshots:
    """``book_snapshots``: a top-``depth`` book (0 = whole) every ``interval_ms`` exchange time."""

    depth: int
    interval_ms: int


@attrs.frozen(kw_only=True)
class FeedConfig:
    """Everything a Backpack feed needs; every default carries its reason.

    Construct with :meth:`from_kwargs` (lenient: accepts lists, channel names in any case, plain
    strings for secrets) or the constructor (the same validation runs either way).
    """

    # Required: there is no sensible default market. ``all`` (ALL_SYMBOLS) follows the listing.
    symbols: tuple[str, ...]
    # Filters of ``symbols: all`` (ignored for an explicit list): market types and quote assets;
    # empty = every one.
    market_types: tuple[str, ...] = MARKET_TYPES
    quotes: tuple[str, ...] = ()
    # Both channels: a book without trades (or the reverse) is rarely what a market-data user wants.
    channels: tuple[str, ...] = CHANNELS
    # The real-time depth stream carries every update; the aggregated ones (200ms, 600ms, 1000ms)
    # shed load, and whether they keep the update-id chain is not documented: the book sync
    # detects a broken chain like any gap (docs/protocol.md §4.3).
    depth_stream: str = "realtime"
    # 30 s bounds how long a silently wrong book could survive; 0 disables periodic snapshots
    # (books are still resynced on every gap or reconnect).
    snapshot_interval: float = 30.0
    # WebSocket is the only way to get every delta; REST-only is the degraded mode.
    websocket: bool = True
    # Explicit REST-only switch (the seed's name); either this or ``websocket: false`` selects it.
    rest_only: bool = False
    # Public market data needs no credentials.
    api_key: Secret | None = None
    api_secret: Secret | None = None
    # Production endpoints; override for proxies, alternate hosts or the simulator.
    rest_url: str = "https://api.backpack.exchange"
    ws_url: str = "wss://ws.backpack.exchange"
    # Depth streams of liquid markets tick many times a second; 30 s of silence means a dead link.
    stale_timeout: float = 30.0
    # Five consecutive WS failures (with backoff, about a minute) before serving a symbol by REST.
    max_ws_failures: int = 5
    # A connection that delivered data for 5 s was healthy: its failure starts a new count
    # (a server closing healthy connections every few seconds is not a WebSocket outage).
    ws_healthy_after: float = 5.0
    # Markets per WebSocket. Backpack documents no per-connection stream limit (unknown, see
    # docs/protocol.md §4.1); 50 markets × 2 streams make every socket read carry several frames
    # at realistic rates (the per-read cost is the scheduler's), while a dropped connection
    # resyncs at most 50 books. 1000 markets = 20 connections.
    connection_group_size: int = 50
    # WebSocket connects and (re)subscribes per second across the feed, and their burst: the
    # exchange's limits are unknown; this opens 1000 markets' 20 connections within ~2 s.
    subscribe_rate_per_s: float = 5.0
    # Probe WS once a minute while degraded: cheap, and recovery within a minute is fine.
    promote_probe_interval: float = 60.0
    # A probe must stay healthy 30 s before the symbol moves back to WS (avoids flapping).
    promote_healthy_after: float = 30.0
    # Reconnect backoff: 0.5 s first retry, doubling, capped at 30 s, ±20 % jitter so that many
    # streams do not reconnect in lockstep; the attempt counter resets after 30 s healthy.
    reconnect_base: float = 0.5
    reconnect_factor: float = 2.0
    reconnect_cap: float = 30.0
    reconnect_jitter: float = 0.2
    reconnect_stable_after: float = 30.0
    # OTP's restart window: more than 10 restarts within 60 s means retrying no longer helps.
    restart_intensity: int = 10
    restart_period: float = 60.0
    # Obsolete (the reconciler has no inbox any more: connection actors call it directly);
    # accepted so existing configs still load.
    reconciler_inbox: int = 4096
    # Per subscriber (the consumer, each sink): a few seconds of full-rate events; past it books
    # conflate and trades are dropped with an in-band consumer_overflow report.
    consumer_queue: int = 10_000
    # Backpack publishes 2000 requests/min per account on standard REST routes (its support
    # FAQ, docs/protocol.md §6): 30/s is 90 % of that, so 1000 books are ready in ~35 s; the
    # burst of 50 serves a resync storm of a few connections at once.
    rest_rate_per_s: float = 30.0
    rest_burst: int = 50
    # Calls in flight at once (the budget, not this, sets the rate; more hides a slow server).
    rest_concurrency: int = 8
    # Total deadline of one REST call, body included (a trickled body cannot hold a worker).
    rest_timeout: float = 10.0
    # Snapshot failures in a row before consumers get snapshot_failed; retries then slow down
    # to every 30 s (doubling up to 300 s) for that symbol only.
    snapshot_attempts: int = 4
    snapshot_retry_slow: float = 30.0
    # REST-only books and trades are polled about once a second per symbol (within the budget).
    rest_poll_interval: float = 1.0
    # Historical routes (trade backfill) are limited to 30 requests/min by Backpack.
    history_rate_per_min: float = 30.0
    # Markets (tick sizes, listings) change rarely; hourly is plenty. 0 disables refreshing.
    metadata_refresh_interval: float = 3600.0
    # Levels per side in published snapshots; 0 = the whole book (exactness first).
    book_depth: int = 0
    # Fixed-depth snapshots on exchange-time boundaries, for research (off unless asked for).
    book_snapshots: BookSnapshots | None = None
    # A REST depth answer holds at most this many levels per side (Backpack: 1000); a side that
    # long may be truncated, so the book is vouched for only inside its range (valid window).
    snapshot_side_levels: int = 1000
    # A subscriber past its bound: drop the arriving trades (keep what it has not read yet), each
    # drop reported in-band; "drop_oldest" drops its oldest queued trades instead.
    trade_policy: TradePolicy = "drop_newest"
    # A book is a state: a slow subscriber gets the latest one; every conflation is counted.
    book_policy: BookPolicy = "conflate"

    def __attrs_post_init__(self) -> None:
        clean = _normalize(attrs.asdict(self, recurse=False), prefix="")
        for name, value in clean.items():
            if getattr(self, name) != value or type(getattr(self, name)) is not type(value):
                # Frozen attrs classes allow this in __attrs_post_init__ only.
                object.__setattr__(self, name, value)

    @classmethod
    def from_kwargs(cls, **kwargs: object) -> FeedConfig:
        """Build and validate from keyword arguments (the YAML keys, ``class``/``exchange`` too)."""
        return cls(**_normalize(kwargs, prefix=""))

    @property
    def use_websocket(self) -> bool:
        """False when the feed starts REST-only (``rest_only`` or ``websocket: false``)."""
        return self.websocket and not self.rest_only

    def make_backoff(self) -> Backoff:
        """A fresh reconnect :class:`Backoff` with this config's parameters."""
        return Backoff(
            base=self.reconnect_base,
            factor=self.reconnect_factor,
            cap=self.reconnect_cap,
            jitter=self.reconnect_jitter,
            stable_after=self.reconnect_stable_after,
        )

    def make_restart_window(self) -> RestartWindow:
        """A fresh :class:`RestartWindow` with this config's intensity and period."""
        return RestartWindow(self.restart_intensity, self.restart_period)


# --- loading ---------------------------------------------------------------------------------


def load_config(
    path: str | os.PathLike[str],
    *,
    env: Mapping[str, str] | None = None,
    name: str | None = None,
) -> FeedConfig:
    """Load a YAML config file; see :func:`config_from_mapping`."""
    source = str(path)
    try:
        with Path(path).open("rb") as file:
            # One byte more than allowed tells "too large" from "exactly the limit".
            raw = file.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(source, f"a readable config file ({exc.strerror or exc})") from exc
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(source, f"a config file of at most {MAX_CONFIG_BYTES} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        where = f"invalid byte at offset {exc.start}"
        raise ConfigError(source, f"a UTF-8 text file ({where})") from None
    try:
        mapping = yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        # Only the problem and the position: the snippet could show a credential.
        raise ConfigError(source, f"valid YAML ({exc.problem or 'syntax error'}{where})") from None
    except yaml.YAMLError as exc:
        raise ConfigError(source, f"valid YAML ({type(exc).__name__})") from None
    except (ValueError, RecursionError) as exc:
        # E.g. an integer of more than 4300 digits, which Python refuses to convert.
        raise ConfigError(source, f"valid YAML (a value that cannot be loaded: {exc})") from None
    return config_from_mapping(mapping, source=source, env=env, name=name)


def config_from_mapping(
    mapping: object,
    *,
    source: str = "<config>",
    env: Mapping[str, str] | None = None,
    name: str | None = None,
) -> FeedConfig:
    """Build a FeedConfig from the parsed cryptofeed-style mapping.

    ``env`` feeds ``${VAR}`` interpolation (default ``os.environ``). ``name`` selects the entry
    under ``exchanges``; without it there must be exactly one.
    """
    environ: Mapping[str, str] = os.environ if env is None else env
    if not isinstance(mapping, Mapping):
        raise ConfigError(source, "a mapping with an 'exchanges' section", _type_name(mapping))
    _reject_unknown(mapping, ("exchanges",), prefix="")
    exchanges = mapping.get("exchanges")
    if not isinstance(exchanges, Mapping) or not exchanges:
        raise ConfigError(
            "exchanges", "a mapping of feed name -> feed settings", _type_name(exchanges)
        )
    if name is None:
        if len(exchanges) != 1:
            # At most ten names of 40 characters: a message, not a copy of the file.
            listed = sorted(str(feed)[:40] for feed in exchanges)
            more = f" and {len(listed) - 10} more" if len(listed) > 10 else ""
            names = ", ".join(listed[:10]) + more
            raise ConfigError("exchanges", f"exactly one feed, or a name to pick one of: {names}")
        name = str(next(iter(exchanges)))
    elif name not in exchanges:
        raise ConfigError(f"exchanges.{name}", f"a feed entry{_suggest(name, map(str, exchanges))}")
    prefix = f"exchanges.{name}."
    entry = exchanges[name]
    if not isinstance(entry, Mapping):
        raise ConfigError(prefix[:-1], "a mapping of feed settings", _type_name(entry))
    values = {
        str(key): _interpolate(value, prefix + str(key), environ) for key, value in entry.items()
    }
    return FeedConfig(**_normalize(values, prefix=prefix))


class _SafeComposeLoader(yaml.SafeLoader):
    """SafeLoader that refuses anchors, aliases and deep nesting while composing.

    Composing is the first step that could blow up (aliases are expanded when the document is
    constructed, walked and printed), so the refusal comes before anything is built; the error is
    a MarkedYAMLError and so reports its line and column like any syntax error.
    """

    _depth = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        event = self.peek_event()  # type: ignore[no-untyped-call]
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise yaml.composer.ComposerError(
                None,
                None,
                "anchors and aliases (&name, *name) are not allowed in a config file",
                event.start_mark,
            )
        if self._depth >= MAX_YAML_DEPTH:
            raise yaml.composer.ComposerError(
                None, None, f"nesting deeper than {MAX_YAML_DEPTH} levels", event.start_mark
            )
        self._depth += 1
        try:
            node: yaml.Node | None = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        return node


class _UniqueKeyLoader(_SafeComposeLoader):
    """The config file loader: also refuses duplicate keys (PyYAML silently keeps the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[object] = set()
        for key_node, _value_node in node.value:
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, str | int | float | bool | None):
                continue  # SafeLoader itself reports unhashable keys
            if key in seen:
                mark = key_node.start_mark
                raise ConfigError(
                    str(key),
                    f"a key that appears once (duplicate at line {mark.line + 1}, "
                    f"column {mark.column + 1})",
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


# --- interpolation ---------------------------------------------------------------------------

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class _Interpolated(str):
    """A string that came (partly) from the environment: numbers and booleans may be parsed."""

    __slots__ = ()


def _interpolate(value: object, path: str, env: Mapping[str, str]) -> object:
    if isinstance(value, str):
        return _substitute(value, path, env)
    if isinstance(value, list):
        return [_interpolate(item, f"{path}[{i}]", env) for i, item in enumerate(value)]
    if isinstance(value, Mapping):
        return {key: _interpolate(item, f"{path}.{key}", env) for key, item in value.items()}
    return value


def _substitute(text: str, path: str, env: Mapping[str, str]) -> str:
    if "${" not in text:
        return text

    def replace(match: re.Match[str]) -> str:
        variable, default = match.group(1), match.group(2)
        if variable in env:
            return env[variable]
        if default is not None:
            return default
        raise ConfigError(
            path,
            f"environment variable {variable} to be set (or a default: ${{{variable}:-…}})",
        )

    result = _VAR.sub(replace, text)
    if "${" in _VAR.sub("", text):
        raise ConfigError(path, "${NAME} or ${NAME:-default} references with a valid NAME")
    return _Interpolated(result)


# --- validation ------------------------------------------------------------------------------


def _normalize(values: Mapping[str, object], *, prefix: str) -> dict[str, Any]:
    """Check and canonicalize every key; returns the FeedConfig constructor arguments."""
    field_names = [field.name for field in attrs.fields(FeedConfig)]
    _reject_unknown(values, (*field_names, *_IDENTITY_KEYS), prefix=prefix)
    _check_identity(values, prefix)
    if "symbols" not in values:
        raise ConfigError(prefix + "symbols", "a non-empty list of symbols, e.g. ['BTC-USDC']")
    clean: dict[str, Any] = {}
    for name in field_names:
        if name in values:
            clean[name] = _PARSERS[name](values[name], prefix + name)
    _check_cross_fields(clean, prefix)
    return clean


def _check_identity(values: Mapping[str, object], prefix: str) -> None:
    for key, wanted in (("class", FEED_CLASS), ("exchange", EXCHANGE)):
        if key in values and values[key] != wanted:
            raise ConfigError(prefix + key, repr(wanted), values[key])


def _check_cross_fields(clean: dict[str, Any], prefix: str) -> None:
    has_key = clean.get("api_key") is not None
    has_secret = clean.get("api_secret") is not None
    if has_key != has_secret:
        missing = "api_secret" if has_key else "api_key"
        raise ConfigError(prefix + missing, "api_key and api_secret together, or neither")
    private = [c for c in clean.get("channels", ()) if c in ("orders", "positions")]
    from_env = bool(os.environ.get("BACKPACK_KEY") and os.environ.get("BACKPACK_SECRET"))
    if private and not has_key and not from_env:
        raise ConfigError(
            prefix + "api_key",
            f"credentials for the account channels {private} "
            "(api_key and api_secret, or BACKPACK_KEY and BACKPACK_SECRET in the environment)",
        )
    fields = attrs.fields(FeedConfig)
    base = cast(float, clean.get("reconnect_base", fields.reconnect_base.default))
    cap = cast(float, clean.get("reconnect_cap", fields.reconnect_cap.default))
    if cap < base:
        raise ConfigError(prefix + "reconnect_cap", f"a number >= reconnect_base ({base:g})", cap)


def _reject_unknown(values: Mapping[Any, object], known: tuple[str, ...], *, prefix: str) -> None:
    for key in values:
        if key not in known:
            raise ConfigError(prefix + str(key), f"a known key{_suggest(str(key), known)}")


def _suggest(word: str, options: Any) -> str:
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _type_name(value: object) -> str:
    return type(value).__name__


def _from_env(value: object) -> object:
    """An interpolated scalar is parsed as YAML would have parsed it in place."""
    if isinstance(value, _Interpolated):
        text = str(value)
        if len(text) > _MAX_ENV_SCALAR:
            return text
        try:
            parsed: object = yaml.load(text, Loader=_SafeComposeLoader)
        except (yaml.YAMLError, ValueError, RecursionError):
            return text
        # Only a scalar replaces a scalar; anything else stays the text it was.
        return parsed if isinstance(parsed, int | float | str | None) else text
    return value


def _seconds(*, allow_zero: bool, meaning: str = "") -> Any:
    floor = ">= 0" if allow_zero else "> 0"
    expected = f"a number of seconds {floor}{meaning}"

    def parse(value: object, path: str) -> float:
        value = _from_env(value)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(path, expected, value)
        number = float(value)
        if not math.isfinite(number) or number < 0 or (number == 0 and not allow_zero):
            raise ConfigError(path, expected, value)
        return number

    return parse


def _number(low: float, high: float | None, expected: str) -> Any:
    def parse(value: object, path: str) -> float:
        value = _from_env(value)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(path, expected, value)
        number = float(value)
        if not math.isfinite(number) or number < low or (high is not None and number >= high):
            raise ConfigError(path, expected, value)
        return number

    return parse


def _integer(minimum: int, expected: str) -> Any:
    def parse(value: object, path: str) -> int:
        value = _from_env(value)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ConfigError(path, expected, value)
        return value

    return parse


def _boolean(value: object, path: str) -> bool:
    value = _from_env(value)
    if not isinstance(value, bool):
        raise ConfigError(path, "true or false", value)
    return value


def _url(schemes: tuple[str, ...]) -> Any:
    expected = " or ".join(f"a {scheme}:// URL" for scheme in schemes)

    def parse(value: object, path: str) -> str:
        if not isinstance(value, str):
            raise ConfigError(path, expected, value)
        url = value.strip().rstrip("/")
        scheme, sep, host = url.partition("://")
        if not sep or scheme.lower() not in schemes or not host or not _hostname(url):
            raise ConfigError(path, expected, _url_for_message(value))
        return url

    return parse


def _hostname(url: str) -> str | None:
    try:
        return urlsplit(url).hostname
    except ValueError:  # e.g. an unclosed "[" of an IPv6 address
        return None


def _url_for_message(value: str) -> str:
    """A wrong URL as an error may show it: no password, even without a ``scheme://``."""
    if "://" in value:
        return redact_url(value)
    userinfo, at, rest = value.rpartition("@")
    # "user:pass@host" without a scheme: everything before the "@" may be a credential.
    return f"***@{rest}" if at and userinfo else value


def _choice(options: tuple[str, ...]) -> Any:
    expected = " or ".join(repr(option) for option in options)

    def parse(value: object, path: str) -> str:
        if not isinstance(value, str) or value.lower() not in options:
            raise ConfigError(path, expected, value)
        return value.lower()

    return parse


def _symbols(value: object, path: str) -> tuple[str, ...]:
    expected = "a non-empty list of symbols, e.g. ['BTC-USDC']"
    if isinstance(value, str) or not isinstance(value, list | tuple) or not value:
        raise ConfigError(path, expected, value)
    symbols: list[str] = []
    # A set for the duplicate check: a list's ``in`` made 100k symbols take minutes (O(n²)).
    seen: set[str] = set()
    for i, item in enumerate(value):
        if not isinstance(item, str) or not item.strip():
            raise ConfigError(f"{path}[{i}]", "a symbol such as 'BTC-USDC'", item)
        symbol = item.strip()
        if symbol in seen:
            raise ConfigError(f"{path}[{i}]", "each symbol once", symbol)
        seen.add(symbol)
        symbols.append(symbol)
    return tuple(symbols)


def _channels(value: object, path: str) -> tuple[str, ...]:
    # The registry knows the names (backpack_actors.channels); imported here because it imports
    # the event and wire modules, which config users need not load.
    from backpack_actors.channels import ChannelError, parse_channel

    expected = "a non-empty list of channels, e.g. [trades, l2_book]"
    if isinstance(value, str) or not isinstance(value, list | tuple) or not value:
        raise ConfigError(path, expected, value)
    channels: list[str] = []
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise ConfigError(f"{path}[{i}]", "a channel name such as 'trades'", item)
        try:
            name = parse_channel(item)
        except ChannelError as exc:
            raise ConfigError(f"{path}[{i}]", exc.expected, item) from None
        if name not in channels:  # a repeated channel subscribes once
            channels.append(name)
    return tuple(channels)


def _book_snapshots(value: object, path: str) -> BookSnapshots | None:
    if value is None or isinstance(value, BookSnapshots):
        return value
    expected = "{depth: N, interval_ms: M} (N >= 0, 0 = whole book; M >= 1)"
    if not isinstance(value, Mapping):
        raise ConfigError(path, expected, value)
    _reject_unknown(value, ("depth", "interval_ms"), prefix=path + ".")
    for key in ("depth", "interval_ms"):
        if key not in value:
            raise ConfigError(f"{path}.{key}", expected)
    depth = _integer(0, "an integer >= 0 (0 = the whole book)")(value["depth"], path + ".depth")
    interval = _integer(1, "milliseconds >= 1")(value["interval_ms"], path + ".interval_ms")
    return BookSnapshots(depth, interval)


def _secret(value: object, path: str) -> Secret | None:
    if value is None or isinstance(value, Secret):
        return value if not (isinstance(value, Secret) and not value.reveal()) else None
    if not isinstance(value, str):
        # Never echo the value: it may be a credential typed without quotes.
        raise ConfigError(path, f"a string (got a {_type_name(value)})")
    return Secret(str(value)) if value else None


def _symbols_or_all(value: object, path: str) -> tuple[str, ...]:
    if isinstance(value, str) and value.strip().lower() == "all":
        return ALL_SYMBOLS
    if isinstance(value, list | tuple) and len(value) == 1 and str(value[0]).lower() == "all":
        return ALL_SYMBOLS
    return _symbols(value, path)


def _names(
    value: object, path: str, options: tuple[str, ...], *, allow_empty: bool
) -> tuple[str, ...]:
    expected = "a list of " + " / ".join(options)
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list | tuple) or (not items and not allow_empty):
        raise ConfigError(path, expected, _short(value))
    names: list[str] = []
    for i, item in enumerate(items):
        name = item.lower() if isinstance(item, str) else None
        if name not in options:
            raise ConfigError(f"{path}[{i}]", " or ".join(options), _short(item))
        assert name is not None
        if name not in names:
            names.append(name)
    return tuple(names)


def _quotes(value: object, path: str) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list | tuple):
        raise ConfigError(path, "a list of quote assets, e.g. [USDC]", _short(value))
    quotes: list[str] = []
    for i, item in enumerate(items):
        if not isinstance(item, str) or not item.strip().isalnum():
            raise ConfigError(f"{path}[{i}]", "an asset symbol such as USDC", _short(item))
        if item.strip().upper() not in quotes:
            quotes.append(item.strip().upper())
    return tuple(quotes)


def _policy(value: object, path: str, key: str, options: tuple[str, ...]) -> str:
    chosen: str = _choice(options)(value, path)
    return _POLICY_ALIASES[key].get(chosen, chosen)


def _short(value: object) -> object:
    text = repr(value)
    return value if len(text) <= 80 else text[:77] + "..."


_PARSERS: dict[str, Any] = {
    "symbols": lambda value, path: _symbols_or_all(value, path),
    "market_types": lambda value, path: _names(value, path, MARKET_TYPES, allow_empty=False),
    "quotes": lambda value, path: _quotes(value, path),
    "ws_healthy_after": _seconds(allow_zero=True),
    "connection_group_size": _integer(1, "an integer >= 1 (markets per WebSocket connection)"),
    "subscribe_rate_per_s": _number(0.001, None, "a rate > 0 per second"),
    "rest_concurrency": _integer(1, "an integer >= 1"),
    "rest_timeout": _seconds(allow_zero=False),
    "snapshot_attempts": _integer(1, "an integer >= 1"),
    "snapshot_retry_slow": _seconds(allow_zero=False),
    "rest_poll_interval": _seconds(allow_zero=False),
    "channels": _channels,
    "depth_stream": lambda value, path: _choice(DEPTH_STREAMS)(value, path),
    "snapshot_interval": _seconds(allow_zero=True, meaning=" (0 disables periodic snapshots)"),
    "websocket": _boolean,
    "rest_only": _boolean,
    "api_key": _secret,
    "api_secret": _secret,
    "rest_url": _url(("https", "http")),
    "ws_url": _url(("wss", "ws")),
    "stale_timeout": _seconds(allow_zero=False),
    "max_ws_failures": _integer(1, "an integer >= 1"),
    "promote_probe_interval": _seconds(allow_zero=False),
    "promote_healthy_after": _seconds(allow_zero=True),
    "reconnect_base": _seconds(allow_zero=True),
    "reconnect_factor": _number(1.0, None, "a number >= 1"),
    "reconnect_cap": _seconds(allow_zero=True),
    "reconnect_jitter": _number(0.0, 1.0, "a number in [0, 1)"),
    "reconnect_stable_after": _seconds(allow_zero=True),
    "restart_intensity": _integer(0, "an integer >= 0"),
    "restart_period": _seconds(allow_zero=False),
    "reconciler_inbox": _integer(1, "an integer >= 1 (a bounded channel size)"),
    "consumer_queue": _integer(1, "an integer >= 1 (a bounded channel size)"),
    "rest_rate_per_s": _number(0.001, None, "a rate > 0 requests per second"),
    "rest_burst": _integer(1, "an integer >= 1"),
    "history_rate_per_min": _number(0.001, None, "a rate > 0 requests per minute"),
    "metadata_refresh_interval": _seconds(allow_zero=True, meaning=" (0 disables refreshing)"),
    "book_depth": _integer(0, "an integer >= 0 (0 = the whole book)"),
    "book_snapshots": lambda value, path: _book_snapshots(value, path),
    "snapshot_side_levels": _integer(1, "an integer >= 1 (levels per side of a REST snapshot)"),
    "trade_policy": lambda value, path: _policy(value, path, "trade_policy", _TRADE_POLICIES),
    "book_policy": lambda value, path: _policy(value, path, "book_policy", _BOOK_POLICIES),
}
assert set(_PARSERS) == {field.name for field in attrs.fields(FeedConfig)}
